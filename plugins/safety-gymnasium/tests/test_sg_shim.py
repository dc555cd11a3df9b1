"""The compatibility shim: each patch is needed (the test fails if it stops working), and together they suffice."""

from __future__ import annotations

import importlib.util
import sys

import gymnasium
import numpy as np
import pytest
from _sg_helpers import LOAD_SHIM_COPY, NUMPY_SCALAR_DEPRECATION

from sb3_safe_safety_gymnasium import _shim

pytestmark = pytest.mark.filterwarnings(NUMPY_SCALAR_DEPRECATION)


def _pre_import_patches(*names: str) -> str:
    """Code that loads a private copy of the shim and applies only the given pre-import patches."""
    calls = "".join(f"shim.{name}()\n" for name in names)
    return LOAD_SHIM_COPY + calls


@pytest.mark.skipif(not _shim.needs_p1(), reason="P1 is only needed on Python >= 3.11")
def test_p1_is_needed(run_python):
    """Without P1 (but with P2, P3) loading the tasks hits the dataclass mutable-default ValueError.

    ``import safety_gymnasium`` itself then works: the geoms are first imported with ``safety_gymnasium.builder``
    (the entry point of every navigation task).
    """
    code = _pre_import_patches("patch_p2_multi_agent_stub", "patch_p3_gymnasium_aliases")
    code += "import safety_gymnasium\nprint('PACKAGE-IMPORTED')\nimport safety_gymnasium.builder\n"
    result = run_python(code)
    assert result.returncode != 0
    assert "PACKAGE-IMPORTED" in result.stdout
    assert "ValueError: mutable default <class 'numpy.ndarray'> for field color is not allowed" in result.stderr


@pytest.mark.parametrize(
    ("needed", "other_patches", "expected_error"),
    [
        # Without P2 the package __init__ fails on the multi-agent module's gymnasium_robotics import.
        (_shim.needs_p2(), ("patch_p1_colors", "patch_p3_gymnasium_aliases"), "No module named 'gymnasium_robotics'"),
        # Without P3 the package fails on the removed gymnasium.wrappers.compatibility module.
        (
            _shim.needs_p3(),
            ("patch_p1_colors", "patch_p2_multi_agent_stub"),
            "No module named 'gymnasium.wrappers.compatibility'",
        ),
    ],
    ids=["p2", "p3"],
)
def test_import_patch_is_needed(run_python, needed, other_patches, expected_error):
    """Each import-time patch is needed: with all the others applied, importing safety_gymnasium fails."""
    if not needed:
        pytest.skip("the installed versions do not need this patch")
    result = run_python(_pre_import_patches(*other_patches) + "import safety_gymnasium\n")
    assert result.returncode != 0
    assert expected_error in result.stderr


@pytest.mark.skipif(not (_shim.needs_p3() and _shim.needs_p4()), reason="needs gymnasium >= 1.0")
def test_p3_registration_and_p4_are_needed_and_work(run_python):
    """P1-P3 make the import work; safety_gymnasium.make then needs the EnvSpec factory, rendering needs P4."""
    code = _pre_import_patches("patch_p1_colors", "patch_p2_multi_agent_stub", "patch_p3_gymnasium_aliases")
    code += """
import warnings
warnings.simplefilter("ignore")
import safety_gymnasium
try:
    safety_gymnasium.make("SafetyPointGoal1-v0")
except TypeError as error:
    print("MAKE-FAILS-WITHOUT-FACTORY:", error)
shim.patch_p3_registration_envspec()
env = safety_gymnasium.make("SafetyPointGoal1-v0", render_mode="rgb_array", width=32, height=24)
env.reset(seed=0)
print("STEP-TUPLE:", len(env.step(env.action_space.sample())))
try:
    env.render()
except TypeError as error:
    print("RENDER-FAILS-WITHOUT-P4:", error)
shim.patch_p4_offscreen_viewer()
print("FRAME:", env.render().shape)
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert "MAKE-FAILS-WITHOUT-FACTORY:" in result.stdout
    assert "STEP-TUPLE: 6" in result.stdout
    assert "RENDER-FAILS-WITHOUT-P4:" in result.stdout and "'width' and 'height'" in result.stdout
    assert "FRAME: (24, 32, 3)" in result.stdout


def test_package_import_first_makes_safety_gymnasium_work(run_python):
    """Importing the plugin first patches everything: safety_gymnasium itself imports and makes 6-tuple envs."""
    code = """
import sb3_safe_safety_gymnasium
import safety_gymnasium
env = safety_gymnasium.make("SafetyPointGoal1-v0")
env.reset(seed=0)
print("STEP-TUPLE:", len(env.step(env.action_space.sample())))
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert "STEP-TUPLE: 6" in result.stdout


def test_importing_safety_gymnasium_first_gives_clear_error(run_python):
    """A (failed) import of safety_gymnasium before the plugin leads to our RuntimeError naming the fix."""
    code = """
try:
    import safety_gymnasium
except Exception as error:
    print("PLAIN-IMPORT-FAILS:", type(error).__name__)
import sb3_safe_safety_gymnasium
"""
    result = run_python(code)
    assert result.returncode != 0
    assert "PLAIN-IMPORT-FAILS:" in result.stdout
    assert "RuntimeError: safety_gymnasium was imported" in result.stderr
    assert "Fix: import sb3_safe_safety_gymnasium before safety_gymnasium" in result.stderr


def test_safety_gymnasium_patched_elsewhere_first_gives_clear_error(run_python):
    """Even a successful import of safety_gymnasium (patched by someone else) before the plugin is refused."""
    code = _pre_import_patches("patch_p1_colors", "patch_p2_multi_agent_stub", "patch_p3_gymnasium_aliases")
    code += "import safety_gymnasium\nimport sb3_safe_safety_gymnasium\n"
    result = run_python(code)
    assert result.returncode != 0
    assert "RuntimeError: safety_gymnasium was imported" in result.stderr


def test_numpy_2_4_is_refused(monkeypatch):
    """numpy >= 2.4 breaks safety-gymnasium's hot path: the shim refuses it and names the fix."""
    monkeypatch.setattr(np, "__version__", "2.4.0")
    with pytest.raises(RuntimeError, match=r"numpy>=2.0,<2.4"):
        _shim.check_numpy()
    monkeypatch.setattr(np, "__version__", "2.3.5")
    _shim.check_numpy()


def test_apply_is_idempotent_across_module_copies():
    """apply() again, and from a second copy of the shim module, is a no-op (no error, no re-patching)."""
    import safety_gymnasium.bases.underlying as underlying

    viewer_class = underlying.OffScreenViewer
    _shim.apply()
    spec = importlib.util.spec_from_file_location("second_shim_copy", _shim.__file__)
    assert spec is not None and spec.loader is not None
    second = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(second)
    second.apply()
    assert second.is_applied()
    assert underlying.OffScreenViewer is viewer_class
    import sb3_safe_safety_gymnasium.factory  # noqa: F401  (re-applies the shim at import: still fine)


@pytest.mark.skipif(not _shim.needs_p1(), reason="P1 is only needed on Python >= 3.11")
def test_p1_colors_are_hashable_views_with_unchanged_values():
    """COLOR arrays are identity-hashed views; their values are safety-gymnasium's."""
    from safety_gymnasium.assets.color import COLOR
    from safety_gymnasium.assets.geoms.goal import Goal

    assert all(isinstance(color, _shim.HashableArray) for color in COLOR.values())
    np.testing.assert_array_equal(COLOR["goal"], [0, 1, 0, 1])
    np.testing.assert_array_equal(Goal().color, [0, 1, 0, 1])
    hash(COLOR["hazard"])


@pytest.mark.skipif(not _shim.needs_p2(), reason="P2 is only needed without gymnasium-robotics")
def test_p2_multi_agent_stub_explains():
    """The multi-agent entry point raises an ImportError that names gymnasium-robotics."""
    import safety_gymnasium

    with pytest.raises(ImportError, match="gymnasium-robotics"):
        safety_gymnasium.make_ma(["Ant"], "2x4")


@pytest.mark.skipif(not _shim.needs_p3(), reason="P3 is only needed on gymnasium >= 1.0")
def test_p3_aliases_resolve_to_gymnasium_1x_classes():
    """The five removed modules exist again and hold the gymnasium 1.x classes; EnvSpec has the two fields."""
    from gymnasium.envs.registration import EnvSpec
    from gymnasium.wrappers.autoreset import AutoResetWrapper
    from gymnasium.wrappers.compatibility import EnvCompatibility
    from gymnasium.wrappers.env_checker import PassiveEnvChecker
    from gymnasium.wrappers.normalize import NormalizeObservation, NormalizeReward, RunningMeanStd
    from gymnasium.wrappers.time_limit import TimeLimit
    from gymnasium.wrappers.utils import RunningMeanStd as RunningMeanStd1x

    assert AutoResetWrapper is gymnasium.wrappers.Autoreset
    assert PassiveEnvChecker is gymnasium.wrappers.PassiveEnvChecker
    assert TimeLimit is gymnasium.wrappers.TimeLimit
    assert NormalizeObservation is gymnasium.wrappers.NormalizeObservation
    assert NormalizeReward is gymnasium.wrappers.NormalizeReward
    assert RunningMeanStd is RunningMeanStd1x
    with pytest.raises(NotImplementedError):
        EnvCompatibility(None)
    assert EnvSpec.apply_api_compatibility is False and EnvSpec.autoreset is False
    for name in ("autoreset", "compatibility", "env_checker", "normalize", "time_limit"):
        assert f"gymnasium.wrappers.{name}" in sys.modules


@pytest.mark.skipif(not _shim.needs_p3(), reason="P3 is only needed on gymnasium >= 1.0")
def test_p3_envspec_factory_keeps_isinstance():
    """safety-gymnasium's EnvSpec stand-in builds real EnvSpec objects and passes isinstance checks."""
    import safety_gymnasium.utils.registration as registration
    from gymnasium.envs.registration import EnvSpec

    made = registration.EnvSpec(id="Dummy-v0", entry_point="x:y", autoreset=False, apply_api_compatibility=False)
    assert type(made) is EnvSpec
    assert isinstance(gymnasium.spec("CartPole-v1"), registration.EnvSpec)


def test_headless_rendering_without_mujoco_gl_set(run_python):
    """With MUJOCO_GL unset, the package selects EGL: non-constant (H, W, 3) uint8 frames, also after a reset."""
    code = """
import os
import gymnasium
import numpy as np
import sb3_safe_safety_gymnasium
print("MUJOCO_GL:", os.environ["MUJOCO_GL"])
for env_id, size in [("SafetyPointGoal1-v0", (48, 64)), ("SafetyHalfCheetahVelocity-v1", (40, 56))]:
    env = gymnasium.make(env_id, render_mode="rgb_array", height=size[0], width=size[1])
    for seed in (0, 1):
        env.reset(seed=seed)
        env.step(env.action_space.sample())
        frame = env.render()
        print("FRAME:", env_id, frame.shape, frame.dtype, bool(frame.std() > 1))
    env.close()
"""
    result = run_python(code, env_update={"MUJOCO_GL": None, "PYOPENGL_PLATFORM": None})
    assert result.returncode == 0, result.stderr
    assert "MUJOCO_GL: egl" in result.stdout
    for env_id, shape in [("SafetyPointGoal1-v0", (48, 64, 3)), ("SafetyHalfCheetahVelocity-v1", (40, 56, 3))]:
        assert result.stdout.count(f"FRAME: {env_id} {shape} uint8 True") == 2, result.stdout


def test_subproc_vec_env_with_module_syntax():
    """SB3's SubprocVecEnv (forkserver workers) builds envs via 'module:Id' and steps them, resets included."""
    from stable_baselines3.common.vec_env import SubprocVecEnv

    def make() -> gymnasium.Env:
        return gymnasium.make("sb3_safe_safety_gymnasium:SafetyPointGoal1-v0", max_episode_steps=10, fast_reset=True)

    vec_env = SubprocVecEnv([make, make])
    try:
        obs = vec_env.reset()
        assert obs.shape == (2, 60)
        dones = 0
        for _ in range(25):
            obs, _, done, infos = vec_env.step(np.stack([vec_env.action_space.sample() for _ in range(2)]))
            assert all(isinstance(info["cost"], float) for info in infos)
            dones += int(done.sum())
        assert dones == 4  # two episodes of 10 steps in each worker
    finally:
        vec_env.close()
