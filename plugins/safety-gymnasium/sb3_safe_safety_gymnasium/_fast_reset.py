"""Opt-in fast resets for the navigation tasks (``fast_reset=True``; not one of the shim's patches).

Every ``reset()`` of a navigation task rebuilds and recompiles the world XML (``safety_gymnasium.world.World.build``).
About 95% of those ~0.3 s go to decoding six 3259x3259 skybox PNGs, a little more to re-parsing
``configs/assets.yaml``. In fast mode the assets YAML is parsed once and cached, and its skybox entry is replaced
by MuJoCo's built-in gradient skybox. Physics, observations, rewards and costs are unchanged; only the rendered
sky looks different.

Mechanism: ``World.build`` reads the assets through the module-level name ``safety_gymnasium.world.yaml``.
:func:`install` replaces that name with :class:`_AssetsYamlProxy`, which behaves exactly like the ``yaml`` module
unless the current context is inside :func:`fast_assets` (entered by ``reset()`` of envs made with
``fast_reset=True``). Envs without ``fast_reset`` are therefore unaffected.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from types import ModuleType
from typing import IO, Any

#: MuJoCo's built-in gradient skybox, used instead of the six star_hd PNGs in fast mode.
GRADIENT_SKYBOX: dict[str, str] = {
    "@type": "skybox",
    "@builtin": "gradient",
    "@rgb1": "0.25 0.3 0.4",
    "@rgb2": "0 0 0",
    "@width": "128",  # a smooth gradient needs few texels; 128 compiles in ~1 ms
    "@height": "128",  # MuJoCo stacks the six cube faces itself (height becomes 6 x width)
}

_ACTIVE: contextvars.ContextVar[bool] = contextvars.ContextVar("sb3_safe_fast_assets", default=False)
_CACHE: dict[str, Any] = {}


def _copy_dicts(value: Any) -> Any:
    """Copy nested dicts (the assets config holds only dicts and strings/numbers), ~10x cheaper than deepcopy."""
    return {key: _copy_dicts(item) for key, item in value.items()} if isinstance(value, dict) else value


class _AssetsYamlProxy:
    """Stands in for the ``yaml`` module inside ``safety_gymnasium.world``; see the module docstring."""

    def __init__(self, real_yaml: ModuleType) -> None:
        """Wrap the real ``yaml`` module.

        Args:
            real_yaml: the ``yaml`` module that ``safety_gymnasium.world`` imported.
        """
        self._real_yaml = real_yaml

    def __getattr__(self, name: str) -> Any:
        """Forward everything else (``FullLoader``, ``safe_load``, ...) to the real module."""
        return getattr(self._real_yaml, name)

    def load(self, stream: IO[str], Loader: Any) -> Any:
        """Parse ``stream`` like ``yaml.load``; in fast mode return a copy of the cached, fast assets config.

        Args:
            stream: the open ``configs/assets.yaml`` file.
            Loader: the yaml loader class.

        Returns:
            The parsed document.
        """
        if not _ACTIVE.get():
            return self._real_yaml.load(stream, Loader=Loader)
        key = os.path.realpath(stream.name)
        if key not in _CACHE:
            config = self._real_yaml.load(stream, Loader=Loader)
            config["textures"]["skybox"] = dict(GRADIENT_SKYBOX)
            _CACHE[key] = config
        return _copy_dicts(_CACHE[key])  # World.build links these dicts into its XML tree: hand out a copy


def install() -> None:
    """Put :class:`_AssetsYamlProxy` in place of ``safety_gymnasium.world.yaml``. Idempotent.

    Must run after the compatibility shim has imported ``safety_gymnasium``.
    """
    import safety_gymnasium.world as world

    if not isinstance(world.yaml, _AssetsYamlProxy):
        world.yaml = _AssetsYamlProxy(world.yaml)


@contextlib.contextmanager
def fast_assets() -> Iterator[None]:
    """Context in which world builds use the cached assets and the gradient skybox."""
    install()
    token = _ACTIVE.set(True)
    try:
        yield
    finally:
        _ACTIVE.reset(token)
