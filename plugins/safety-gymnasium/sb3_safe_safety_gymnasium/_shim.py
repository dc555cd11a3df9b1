"""Import-time compatibility shim that lets safety-gymnasium 1.0.0 run on the current stack.

safety-gymnasium 1.0.0 was written for Python 3.10, gymnasium 0.28 and mujoco 2.3. On Python 3.11 with
gymnasium 1.x it does not even import. The patches below, numbered P1-P6 here and in the tests, make it work; each
one checks whether the installed versions need it and does nothing otherwise:

* P1 (Python >= 3.11): the dataclass geoms use numpy arrays as field defaults, which Python 3.11 rejects.
* P2 (gymnasium-robotics absent): the package ``__init__`` imports the multi-agent suite, which needs it.
* P3 (gymnasium >= 1.0): five ``gymnasium.wrappers`` modules and two ``EnvSpec`` fields were removed.
* P4 (gymnasium >= 1.0): ``OffScreenViewer`` requires ``width`` and ``height``.
* P5 (safety-gymnasium 1.0.0): ``Builder`` records only ``config`` for pickling (``EzPickle``), so ``copy.deepcopy``
  and ``pickle`` of an env fail with ``Builder.__init__() missing ... 'task_id'`` (fixed upstream after 1.0.0).
* P6 (safety-gymnasium 1.0.0): ``Builder.reset(seed=...)`` never seeds Gymnasium's ``np_random``, which
  Gymnasium's ``check_env`` requires.

P1-P3 must be in place before ``safety_gymnasium`` is first imported, so :func:`apply` refuses to run (with a
:class:`RuntimeError` that names the fix) if it was imported earlier. :func:`apply` is idempotent: the first call
imports ``safety_gymnasium`` and marks it, later calls (also from a second copy of this module) return at once.

The module has no package-relative imports, so tests can load it from its file to apply single patches.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import types
from typing import Any

import numpy as np

#: Attribute set on the ``safety_gymnasium`` module once the shim has been applied.
MARKER = "_sb3_safe_shim_applied"

_COLOR_MODULE = "safety_gymnasium.assets.color"
_MULTI_AGENT_MODULE = "safety_gymnasium.tasks.safe_multi_agent.safe_mujoco_multi"
_ALIAS_MARKER = "_sb3_safe_alias"
_INSTALL_HINT = "pip install --no-deps safety-gymnasium==1.0.0 && pip install xmltodict pyyaml imageio"


class HashableArray(np.ndarray):
    """An ndarray view with identity hashing, accepted by Python >= 3.11 as a dataclass field default.

    Python 3.11 rejects dataclass defaults whose class has ``__hash__ = None`` (a sign of mutability). The view
    shares memory and values with the original array; only the hash changes.
    """

    __hash__ = object.__hash__  # type: ignore[assignment]


class _UnavailableEnvCompatibility:
    """Stand-in for gymnasium 0.x ``EnvCompatibility``; safety-gymnasium only uses it on request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            "apply_api_compatibility=True is not supported with gymnasium >= 1.0 (EnvCompatibility was removed)."
        )


# ---------------------------------------------------------------------------------------------------------------
# Checks: which patches do the installed versions need?
# ---------------------------------------------------------------------------------------------------------------

_GYM_ALIASES: dict[str, dict[str, str]] = {
    # removed module -> {old name: "module:new name"} in gymnasium 1.x
    "gymnasium.wrappers.autoreset": {"AutoResetWrapper": "gymnasium.wrappers:Autoreset"},
    "gymnasium.wrappers.env_checker": {"PassiveEnvChecker": "gymnasium.wrappers:PassiveEnvChecker"},
    "gymnasium.wrappers.time_limit": {"TimeLimit": "gymnasium.wrappers:TimeLimit"},
    "gymnasium.wrappers.normalize": {
        "NormalizeObservation": "gymnasium.wrappers:NormalizeObservation",
        "NormalizeReward": "gymnasium.wrappers:NormalizeReward",
        "RunningMeanStd": "gymnasium.wrappers.utils:RunningMeanStd",
    },
    "gymnasium.wrappers.compatibility": {},  # EnvCompatibility: no 1.x equivalent, see _UnavailableEnvCompatibility
}


def _module_exists(name: str) -> bool:
    """Whether ``name`` is importable without this shim's help (our aliases do not count); imports nothing."""
    if name in sys.modules:
        return not getattr(sys.modules[name], _ALIAS_MARKER, False)
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def needs_p1() -> bool:
    """P1 is needed when dataclasses reject unhashable defaults (Python >= 3.11)."""
    return sys.version_info >= (3, 11)


def needs_p2() -> bool:
    """P2 is needed when gymnasium-robotics (only used by the multi-agent suite) is not installed."""
    return not _module_exists("gymnasium_robotics")


def needs_p3() -> bool:
    """P3 is needed when gymnasium lacks the 0.x wrapper modules or ``EnvSpec`` fields (gymnasium >= 1.0)."""
    import dataclasses

    from gymnasium.envs.registration import EnvSpec

    missing_modules = any(not _module_exists(name) for name in _GYM_ALIASES)
    fields = {field.name for field in dataclasses.fields(EnvSpec)}  # unaffected by our class-level defaults
    return missing_modules or not {"apply_api_compatibility", "autoreset"} <= fields


def needs_p4() -> bool:
    """P4 is needed when gymnasium's ``OffScreenViewer`` has no default ``width``/``height`` (gymnasium >= 1.0)."""
    from gymnasium.envs.mujoco.mujoco_rendering import OffScreenViewer

    width = inspect.signature(OffScreenViewer.__init__).parameters.get("width")
    return width is not None and width.default is inspect.Parameter.empty


# ---------------------------------------------------------------------------------------------------------------
# Pre-import patches (P1-P3): they must run before ``import safety_gymnasium``.
# ---------------------------------------------------------------------------------------------------------------


def patch_p1_colors() -> None:
    """P1: pre-load ``safety_gymnasium.assets.color`` from its file and make its COLOR arrays hashable."""
    module: Any = sys.modules.get(_COLOR_MODULE)
    if module is None:
        spec = importlib.util.find_spec("safety_gymnasium")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"safety_gymnasium is not installed. Fix: {_INSTALL_HINT}")
        path = f"{next(iter(spec.submodule_search_locations))}/assets/color.py"
        color_spec = importlib.util.spec_from_file_location(_COLOR_MODULE, path)
        if color_spec is None or color_spec.loader is None:
            raise RuntimeError(f"cannot load {path}; is safety_gymnasium installed correctly? Fix: {_INSTALL_HINT}")
        module = importlib.util.module_from_spec(color_spec)
        color_spec.loader.exec_module(module)  # color.py only imports numpy, not the package
        sys.modules[_COLOR_MODULE] = module  # the later package import picks this module up
    # identity-hashed views pass the dataclass default check; values and memory are shared
    module.COLOR = {key: np.asarray(value).view(HashableArray) for key, value in module.COLOR.items()}


def patch_p2_multi_agent_stub() -> None:
    """P2: register a stub multi-agent module whose ``make_ma`` explains that gymnasium-robotics is missing."""
    if _MULTI_AGENT_MODULE in sys.modules:
        return

    def make_ma(*args: Any, **kwargs: Any) -> Any:
        """Raise: the multi-agent suite needs gymnasium-robotics, which is not installed."""
        raise ImportError(
            "safety-gymnasium's multi-agent tasks need gymnasium-robotics, which is not installed "
            "(and is not supported by sb3-safe). Use the single-agent tasks."
        )

    stub = types.ModuleType(_MULTI_AGENT_MODULE, "sb3-safe stub: gymnasium-robotics is not installed.")
    stub.make_ma = make_ma  # type: ignore[attr-defined]
    stub.SafeMAEnv = make_ma  # type: ignore[attr-defined]
    sys.modules[_MULTI_AGENT_MODULE] = stub


def _load_attr(target: str) -> Any:
    """Resolve ``"module:attribute"``."""
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def patch_p3_gymnasium_aliases() -> None:
    """P3: alias the removed gymnasium 0.x wrapper modules and give ``EnvSpec`` its two removed fields."""
    import gymnasium.wrappers
    from gymnasium.envs.registration import EnvSpec

    for name, attrs in _GYM_ALIASES.items():
        if _module_exists(name):
            continue
        alias = types.ModuleType(name, "sb3-safe alias of a gymnasium 0.x module removed in gymnasium 1.0.")
        setattr(alias, _ALIAS_MARKER, True)
        for old_name, target in attrs.items():
            setattr(alias, old_name, _load_attr(target))
        if name.endswith(".compatibility"):
            alias.EnvCompatibility = _UnavailableEnvCompatibility  # type: ignore[attr-defined]
        sys.modules[name] = alias
        setattr(gymnasium.wrappers, name.rsplit(".", 1)[1], alias)
    # safety-gymnasium's make() reads these two 0.x fields from every spec; class-level defaults restore them
    for field_name in ("apply_api_compatibility", "autoreset"):
        if not hasattr(EnvSpec, field_name):
            setattr(EnvSpec, field_name, False)


# ---------------------------------------------------------------------------------------------------------------
# Post-import patches: they replace names inside safety_gymnasium modules, which are looked up at call time.
# ---------------------------------------------------------------------------------------------------------------


class _EnvSpecFactoryMeta(type):
    """Metaclass making :class:`_EnvSpecFactory` build real ``EnvSpec`` objects and pass ``isinstance`` checks."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        from gymnasium.envs.registration import EnvSpec

        kwargs.pop("apply_api_compatibility", None)  # removed in gymnasium 1.0
        kwargs.pop("autoreset", None)  # removed in gymnasium 1.0
        return EnvSpec(*args, **kwargs)

    def __instancecheck__(cls, instance: Any) -> bool:
        from gymnasium.envs.registration import EnvSpec

        return isinstance(instance, EnvSpec)


class _EnvSpecFactory(metaclass=_EnvSpecFactoryMeta):
    """Drop-in for ``EnvSpec`` inside ``safety_gymnasium.utils.registration`` (P3)."""


def patch_p3_registration_envspec() -> None:
    """P3: make safety-gymnasium's ``make()`` build ``EnvSpec`` without the two keywords gymnasium 1.x rejects."""
    registration: Any = importlib.import_module("safety_gymnasium.utils.registration")
    registration.EnvSpec = _EnvSpecFactory


def _make_offscreen_viewer_class() -> type:
    """Build the P4 viewer subclass (deferred so that importing this module does not import the renderer)."""
    from gymnasium.envs.mujoco.mujoco_rendering import OffScreenViewer

    class DefaultSizeOffScreenViewer(OffScreenViewer):
        """``OffScreenViewer`` whose ``width``/``height`` default to the model's offscreen buffer size."""

        def __init__(self, model: Any, data: Any, width: int | None = None, height: int | None = None) -> None:
            super().__init__(
                model,
                data,
                width=model.vis.global_.offwidth if width is None else width,
                height=model.vis.global_.offheight if height is None else height,
            )

    return DefaultSizeOffScreenViewer


def patch_p4_offscreen_viewer() -> None:
    """P4: safety-gymnasium creates ``OffScreenViewer(model, data)``; give width/height their 0.x defaults."""
    underlying: Any = importlib.import_module("safety_gymnasium.bases.underlying")
    if not getattr(underlying.OffScreenViewer, "_sb3_safe_default_size", False):
        viewer_class = _make_offscreen_viewer_class()
        viewer_class._sb3_safe_default_size = True  # type: ignore[attr-defined]
        underlying.OffScreenViewer = viewer_class


def _builder_class() -> Any:
    return importlib.import_module("safety_gymnasium.builder").Builder


def needs_p5() -> bool:
    """P5 is needed when ``Builder`` hands ``EzPickle`` its config only (safety-gymnasium 1.0.0)."""
    return "EzPickle.__init__(self, config=config)" in inspect.getsource(_builder_class().__init__)


def patch_p5_pickle_arguments() -> None:
    """P5: record every constructor argument for ``EzPickle``, so that copies and pickles rebuild the env."""
    builder = _builder_class()
    original = builder.__init__
    if getattr(original, "_sb3_safe_p5", False):
        return

    def init_recording_arguments(self: Any, task_id: str, config: dict | None = None, **kwargs: Any) -> None:
        original(self, task_id, config, **kwargs)
        from gymnasium.utils import EzPickle

        EzPickle.__init__(self, task_id, config=config, **kwargs)

    init_recording_arguments._sb3_safe_p5 = True  # type: ignore[attr-defined]
    init_recording_arguments.__doc__ = original.__doc__
    builder.__init__ = init_recording_arguments


def needs_p6() -> bool:
    """P6 is needed when ``Builder.reset`` does not call Gymnasium's ``Env.reset`` (safety-gymnasium 1.0.0)."""
    return "super().reset(" not in inspect.getsource(_builder_class().reset)


def patch_p6_reset_seeds_np_random() -> None:
    """P6: a seeded reset also seeds Gymnasium's ``np_random`` (the task keeps its own generator, as before)."""
    builder = _builder_class()
    original = builder.reset
    if getattr(original, "_sb3_safe_p6", False):
        return
    from gymnasium import Env

    def reset(self: Any, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        if seed is not None:
            Env.reset(self, seed=seed)
        return original(self, seed=seed, options=options)

    reset._sb3_safe_p6 = True  # type: ignore[attr-defined]
    reset.__doc__ = original.__doc__
    builder.reset = reset


# ---------------------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------------------


def check_numpy() -> None:
    """Fail loudly on numpy >= 2.4, which removed ``int()``/``float()`` of 1-element arrays used by the package."""
    major, minor = (int(part) for part in np.__version__.split(".")[:2])
    if (major, minor) >= (2, 4):
        raise RuntimeError(
            f"numpy {np.__version__} is not supported by safety-gymnasium 1.0.0 (numpy 2.4 removed int()/float() "
            'of 1-element arrays, which it does on every step). Fix: pip install "numpy>=2.0,<2.4"'
        )


def is_applied() -> bool:
    """Whether the shim has already been applied in this process."""
    module = sys.modules.get("safety_gymnasium")
    return module is not None and getattr(module, MARKER, False)


def apply() -> None:
    """Apply P1-P6 as needed, import ``safety_gymnasium`` and mark it. Idempotent.

    Raises:
        RuntimeError: if numpy >= 2.4 is installed, or if ``safety_gymnasium`` was imported before the shim while
            the installed versions need it.
    """
    if is_applied():
        return
    check_numpy()
    pre_import = [needs_p1(), needs_p2(), needs_p3()]
    already_imported = sorted(
        name
        for name in sys.modules
        if (name == "safety_gymnasium" or name.startswith("safety_gymnasium."))
        and name not in (_COLOR_MODULE, _MULTI_AGENT_MODULE)
    )
    if already_imported and any(pre_import):
        raise RuntimeError(
            f"safety_gymnasium was imported (or an import of it was attempted) before the sb3-safe compatibility "
            f"shim (found {already_imported[0]!r} in sys.modules), so the shim cannot patch it. "
            "Fix: import sb3_safe_safety_gymnasium before "
            "safety_gymnasium (e.g. `import sb3_safe_safety_gymnasium` at the top of your script) and do not "
            "import safety_gymnasium directly before that."
        )
    if pre_import[0]:
        patch_p1_colors()
    if pre_import[1]:
        patch_p2_multi_agent_stub()
    if pre_import[2]:
        patch_p3_gymnasium_aliases()
    import safety_gymnasium

    if pre_import[2]:
        patch_p3_registration_envspec()
    if needs_p4():
        patch_p4_offscreen_viewer()
    if needs_p5():
        patch_p5_pickle_arguments()
    if needs_p6():
        patch_p6_reset_seeds_np_random()
    setattr(safety_gymnasium, MARKER, True)
