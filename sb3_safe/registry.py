"""Plugin discovery: environments (entry-point group ``sb3_safe.envs``) and algorithms (``sb3_safe.algorithms``).

A plugin is an ordinary distribution that declares, in its ``pyproject.toml``::

    [project.entry-points."sb3_safe.envs"]
    my_plugin = "my_package:register"

where ``register()`` registers its environments with Gymnasium and returns their ids. Algorithms are
declared the same way in ``sb3_safe.algorithms``, each entry point naming the algorithm class. Plugins are
discovered lazily, the first time an id is looked up; a plugin that fails is reported in a warning naming
it, and the others still work.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import gymnasium as gym

ENV_GROUP = "sb3_safe.envs"
ALGORITHM_GROUP = "sb3_safe.algorithms"


class PluginWarning(UserWarning):
    """A plugin could not be loaded; its environments or algorithms are unavailable."""


class UnknownEnvironmentError(KeyError):
    """The environment id is provided by no installed plugin and is not a Gymnasium id."""

    def __str__(self) -> str:  # KeyError would show the message quoted on one line
        return str(self.args[0])


class UnknownAlgorithmError(KeyError):
    """The algorithm name is provided by no installed plugin."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class _Catalogue:
    """What the entry points of one group provide: ``name -> provider`` and the plugins that failed."""

    providers: dict[str, str] = field(default_factory=dict)
    entries: dict[str, metadata.EntryPoint] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


_catalogues: dict[str, _Catalogue] = {}


def _provider_name(entry_point: metadata.EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    return f"{entry_point.name} ({dist.name})" if dist is not None else entry_point.name


def _warn_failure(group: str, entry_point: metadata.EntryPoint, error: BaseException) -> str:
    reason = f"{type(error).__name__}: {error}"
    warnings.warn(
        f"sb3-safe plugin '{_provider_name(entry_point)}' ({entry_point.value}, group {group}) failed to load: "
        f"{reason}. Its entries are unavailable; the other plugins still work. Reinstall or fix that plugin.",
        PluginWarning,
        stacklevel=3,
    )
    return reason


def _load_env_catalogue() -> _Catalogue:
    catalogue = _Catalogue()
    for entry_point in metadata.entry_points(group=ENV_GROUP):
        provider = _provider_name(entry_point)
        try:
            env_ids = list(entry_point.load()())
            if not all(isinstance(env_id, str) for env_id in env_ids):
                raise TypeError("register() must return the list of environment ids it registered")
        except Exception as error:
            catalogue.failures[provider] = _warn_failure(ENV_GROUP, entry_point, error)
            continue
        for env_id in env_ids:
            catalogue.providers[env_id] = provider
    return catalogue


def _load_algorithm_catalogue() -> _Catalogue:
    catalogue = _Catalogue()
    for entry_point in metadata.entry_points(group=ALGORITHM_GROUP):
        dist = getattr(entry_point, "dist", None)
        catalogue.providers[entry_point.name] = dist.name if dist is not None else entry_point.value
        catalogue.entries[entry_point.name] = entry_point
    return catalogue


def _catalogue(group: str) -> _Catalogue:
    if group not in _catalogues:
        _catalogues[group] = _load_env_catalogue() if group == ENV_GROUP else _load_algorithm_catalogue()
    return _catalogues[group]


def reload_plugins() -> None:
    """Forget what was discovered, so the next lookup scans the installed plugins again."""
    _catalogues.clear()


def list_envs() -> list[str]:
    """The ids of every environment the installed plugins provide, sorted."""
    return sorted(_catalogue(ENV_GROUP).providers)


def env_providers() -> dict[str, str]:
    """``env_id -> plugin`` for every environment the installed plugins provide."""
    return dict(sorted(_catalogue(ENV_GROUP).providers.items()))


def algorithm_providers() -> dict[str, str]:
    """``algorithm name -> plugin`` for every algorithm registered in the ``sb3_safe.algorithms`` group."""
    return dict(sorted(_catalogue(ALGORITHM_GROUP).providers.items()))


def plugin_failures() -> dict[str, str]:
    """``plugin -> reason`` for every entry point (algorithm or environment) that failed to load."""
    return {**_catalogue(ALGORITHM_GROUP).failures, **_catalogue(ENV_GROUP).failures}


def is_known_env(env_id: str) -> bool:
    """Whether ``env_id`` is provided by a plugin, registered with Gymnasium, or a ``"module:Id"`` Gymnasium loads."""
    return env_id in _catalogue(ENV_GROUP).providers or _is_gymnasium_id(env_id)


def list_algorithms() -> list[str]:
    """The names of every algorithm registered in the ``sb3_safe.algorithms`` entry-point group, sorted."""
    return sorted(_catalogue(ALGORITHM_GROUP).providers)


def _unknown_message(kind: str, name: str, catalogue: _Catalogue, hint: str) -> str:
    by_lower = {known.lower(): known for known in catalogue.providers}  # "cvpp" should suggest "CVPO"
    matches = [by_lower[m] for m in difflib.get_close_matches(name.lower(), list(by_lower), n=5, cutoff=0.6)]
    lines = [f"Unknown {kind} '{name}'."]
    if matches:
        lines.append(f"Did you mean: {', '.join(matches)}?")
    by_provider: dict[str, list[str]] = {}
    for known, provider in sorted(catalogue.providers.items()):
        by_provider.setdefault(provider, []).append(known)
    if by_provider:
        lines.append(f"Known {kind}s, by the plugin that provides them:")
        lines.extend(f"  {provider}: {', '.join(names)}" for provider, names in by_provider.items())
    else:
        lines.append(f"No installed plugin provides any {kind}.")
    lines.extend(f"  plugin {provider} failed to load ({reason})" for provider, reason in catalogue.failures.items())
    lines.append(hint)
    return "\n".join(lines)


def _is_gymnasium_id(env_id: str) -> bool:
    if ":" in env_id:  # "module:Id": Gymnasium imports the module, which registers the id
        return True
    return env_id in gym.registry


def make_env(env_id: str, *, monitor: bool = True, monitor_file: str | None = None, **kwargs: Any) -> gym.Env:
    """Create a cost-aware environment by id.

    The id is looked up among the installed plugins' environments (``list_envs()``); plain Gymnasium ids and
    ``"module:Id"`` also work, provided the environment reports ``info["cost"]``.

    Args:
        env_id: The environment id, e.g. ``"SafetyPointGoal1-v0"``.
        monitor: Wrap in :class:`~sb3_safe.common.monitor.SafeMonitor`, which puts the episode cost beside
            SB3's return and length in ``info["episode"]`` and fails at the first step if the cost is missing.
        monitor_file: Path of the monitor CSV (only with ``monitor=True``).
        **kwargs: Passed to ``gymnasium.make`` (e.g. ``render_mode="rgb_array"``).

    Returns:
        The environment.

    Raises:
        UnknownEnvironmentError: If no plugin provides the id and Gymnasium does not know it; the message
            lists close matches and every known id with its plugin.
    """
    catalogue = _catalogue(ENV_GROUP)
    if env_id not in catalogue.providers and not _is_gymnasium_id(env_id):
        raise UnknownEnvironmentError(
            _unknown_message(
                "environment",
                env_id,
                catalogue,
                "Install the plugin that provides it (e.g. `pip install -e plugins/safety-gymnasium`), "
                "or check the spelling.",
            )
        )
    env = gym.make(env_id, **kwargs)
    if monitor:
        from sb3_safe.common.monitor import SafeMonitor

        env = SafeMonitor(env, filename=monitor_file)
    return env


def get_algorithm(name: str) -> type:
    """The algorithm class registered under ``name`` in the ``sb3_safe.algorithms`` group.

    Raises:
        UnknownAlgorithmError: With close matches and the known names, if nothing provides ``name``.
    """
    catalogue = _catalogue(ALGORITHM_GROUP)
    if name not in catalogue.entries:
        raise UnknownAlgorithmError(
            _unknown_message(
                "algorithm", name, catalogue, "Install the package that provides it, or check the spelling."
            )
        )
    entry_point = catalogue.entries[name]
    try:
        return entry_point.load()
    except Exception as error:
        reason = _warn_failure(ALGORITHM_GROUP, entry_point, error)
        raise ImportError(f"Algorithm '{name}' is registered but could not be imported: {reason}") from error
