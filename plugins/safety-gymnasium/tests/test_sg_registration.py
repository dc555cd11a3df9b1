"""register(): ids, idempotence, the sb3_safe.envs entry point, 'module:Id' syntax, safety_gymnasium.make intact."""

from __future__ import annotations

import importlib.metadata
import warnings

import gymnasium
import pytest
from _sg_helpers import NUMPY_SCALAR_DEPRECATION

import sb3_safe_safety_gymnasium
from sb3_safe_safety_gymnasium import register, task_ids
from sb3_safe_safety_gymnasium.registration import ENTRY_POINT

pytestmark = pytest.mark.filterwarnings(NUMPY_SCALAR_DEPRECATION)


def test_register_returns_the_supported_ids():
    """The returned ids are the catalogue's, sorted, each registered with our entry point and its time limit."""
    ids = register()
    assert ids == task_ids() == sorted(ids)
    assert len(ids) == 77
    for env_id in ids:
        env_spec = gymnasium.spec(env_id)
        assert env_spec.entry_point == ENTRY_POINT
        assert env_spec.max_episode_steps == sb3_safe_safety_gymnasium.TASKS[env_id].max_episode_steps


def test_register_is_idempotent():
    """Calling register() again neither raises nor warns, and changes nothing."""
    before = {env_id: gymnasium.spec(env_id) for env_id in task_ids()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = register()
        second = register()
    assert first == second
    assert all(gymnasium.spec(env_id) is before[env_id] for env_id in first)


def test_entry_point_group():
    """The distribution advertises register() in the sb3_safe.envs entry-point group."""
    (entry_point,) = [
        ep for ep in importlib.metadata.entry_points(group="sb3_safe.envs") if ep.name == "safety_gymnasium"
    ]
    assert entry_point.value == "sb3_safe_safety_gymnasium:register"
    assert entry_point.load()() == task_ids()


def test_module_syntax_registers_on_import(run_python):
    """In a fresh process, gymnasium.make('sb3_safe_safety_gymnasium:Id') works without calling register()."""
    code = """
import gymnasium
env = gymnasium.make("sb3_safe_safety_gymnasium:SafetyPointGoal1-v0")
env.reset(seed=0)
obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
print("OK", type(info["cost"]).__name__, env.spec.max_episode_steps)
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert "OK float 1000" in result.stdout


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # safety-gymnasium's own make
def test_safety_gymnasium_make_still_gives_its_own_envs():
    """safety_gymnasium.make keeps returning 6-tuple envs, also for ids that sb3-safe re-registered."""
    import safety_gymnasium

    env = safety_gymnasium.make("SafetyPointGoal1-v0")
    env.reset(seed=0)
    assert len(env.step(env.action_space.sample())) == 6
    env.close()
