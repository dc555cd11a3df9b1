"""Every registered task: Gymnasium 5-tuple API, float cost, episode length, SB3's check_env; options and errors."""

from __future__ import annotations

import re
import warnings

import gymnasium
import numpy as np
import pytest
from _sg_helpers import NUMPY_SCALAR_DEPRECATION
from gymnasium.envs.registration import load_env_creator
from stable_baselines3.common.env_checker import check_env

import sb3_safe_safety_gymnasium
from sb3_safe_safety_gymnasium import TASKS, task_ids

pytestmark = [
    pytest.mark.filterwarnings(NUMPY_SCALAR_DEPRECATION),
    # gymnasium.make's own advice for the v0 velocity ids (v1 exists): expected here, useful to users
    pytest.mark.filterwarnings("ignore:.*is out of date. You should consider upgrading:DeprecationWarning"),
]

NAVIGATION = re.compile(r"^Safety(Point|Car|Racecar|Doggo|Ant)(Goal|Button|Push|Circle)[012]-v0$")
VELOCITY = re.compile(r"^Safety(HalfCheetah|Hopper|Swimmer|Walker2d|Ant|Humanoid)Velocity-v[01]$")


def expected_max_episode_steps(env_id: str) -> int:
    """500 for Circle and Run, 1000 for Goal, Button, Push and the velocity tasks."""
    return 500 if ("Circle" in env_id or "Run" in env_id) else 1000


def test_catalogue_covers_the_expected_tasks():
    """All 60 navigation x level combinations, Run0 for each robot and the 12 velocity tasks; nothing else."""
    ids = task_ids()
    assert sum(bool(NAVIGATION.match(env_id)) for env_id in ids) == 5 * 4 * 3
    assert sum(bool(VELOCITY.match(env_id)) for env_id in ids) == 6 * 2
    others = [env_id for env_id in ids if not (NAVIGATION.match(env_id) or VELOCITY.match(env_id))]
    assert sorted(others) == sorted(f"Safety{robot}Run0-v0" for robot in ("Point", "Car", "Racecar", "Doggo", "Ant"))
    assert not any(word in env_id for env_id in ids for word in ("Vision", "Debug", "Race0", "Race1", "Race2"))


@pytest.fixture(scope="module", params=task_ids())
def task_env(request: pytest.FixtureRequest):
    """One env per task, shared by the tests below (pytest groups the tests by task)."""
    env = gymnasium.make(request.param, fast_reset=True)
    yield request.param, env
    env.close()


def test_reset_step_cost_and_episode_length(task_env):
    """reset() then a few steps: 5-tuples of the right types, float cost, expected max_episode_steps."""
    env_id, env = task_env
    assert env.spec.max_episode_steps == expected_max_episode_steps(env_id)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert isinstance(info, dict)
    env.action_space.seed(0)
    for _ in range(5):
        result = env.step(env.action_space.sample())
        assert len(result) == 5
        obs, reward, terminated, truncated, info = result
        assert obs.shape == env.observation_space.shape
        assert isinstance(reward, float)
        assert isinstance(terminated, bool) and isinstance(truncated, bool)
        assert type(info["cost"]) is float and info["cost"] >= 0.0
        if terminated or truncated:
            env.reset()


def test_sb3_check_env(task_env):
    """SB3's env checker passes (its float64/asymmetric action-space advice is a warning, not a failure)."""
    _, env = task_env
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Your action space has dtype float64", UserWarning)
        warnings.filterwarnings("ignore", "We recommend you to use a symmetric and normalized Box", UserWarning)
        check_env(env, warn=True)


@pytest.mark.parametrize("env_id", [env_id for env_id, task in TASKS.items() if task.family == "navigation"])
def test_episode_length_matches_safety_gymnasium(env_id):
    """The registered max_episode_steps is the horizon safety-gymnasium's own task enforces internally."""
    task = TASKS[env_id]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        raw = load_env_creator(task.entry_point)(**task.kwargs)
    assert raw.task.num_steps == task.max_episode_steps


def test_single_time_limit_can_be_overridden_both_ways():
    """Gymnasium's TimeLimit is the only time limit: shorter and longer overrides both take effect."""
    env = gymnasium.make("SafetyPointCircle0-v0", max_episode_steps=3, fast_reset=True)
    env.reset(seed=0)
    flags = [env.step(env.action_space.sample())[3] for _ in range(3)]
    assert flags == [False, False, True]
    env = gymnasium.make("SafetyPointCircle0-v0", max_episode_steps=520, fast_reset=True)
    env.reset(seed=0)
    truncated_at = [
        step for step in range(1, 521) if env.step(np.zeros(env.action_space.shape))[3]
    ]  # the Circle task's own horizon is 500 steps
    assert truncated_at == [520]


def test_excluded_ids_explain_themselves():
    """Vision, Race and debug ids are registered with an error that names the problem and the alternative."""
    with pytest.raises(ValueError, match=r"vision task.*Fix: use SafetyPointGoal1-v0"):
        gymnasium.make("SafetyPointGoal1Vision-v0")
    with pytest.raises(ValueError, match=r"Race.*PNG textures"):
        gymnasium.make("SafetyCarRace1-v0")
    with pytest.raises(ValueError, match=r"debug task.*Fix: use SafetyCarGoal1-v0"):
        gymnasium.make("SafetyCarGoal1Debug-v0")
    with pytest.raises(ValueError, match=r"same task as SafetyAntGoal2-v0"):
        gymnasium.make("SafetyAntFadingHard2-v0")
    with pytest.raises(ValueError, match=r"unknown safety-gymnasium task"):
        sb3_safe_safety_gymnasium.make_env("SafetyPointGoal9-v0")


@pytest.mark.filterwarnings("ignore:.*not in the possible render_modes:UserWarning")  # gymnasium's, before ours
def test_unknown_options_explain_themselves():
    """Unknown keyword options and render modes are rejected with the list of valid ones."""
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['colour'\].*fast_reset"):
        gymnasium.make("SafetyPointGoal1-v0", colour="red")
    with pytest.raises(ValueError, match=r"unknown render_mode 'rgb'"):
        gymnasium.make("SafetyPointGoal1-v0", render_mode="rgb")
    with pytest.raises(TypeError, match=r"fast_reset must be a bool"):
        gymnasium.make("SafetyPointGoal1-v0", fast_reset="yes")


def test_construction_is_quiet():
    """The overflow-in-cast warning of safety-gymnasium's action Box is filtered at make."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gymnasium.make("SafetyPointGoal1-v0").close()
        gymnasium.make("SafetyHalfCheetahVelocity-v1").close()


@pytest.mark.slow
@pytest.mark.parametrize("env_id", task_ids())
def test_full_episode(env_id):
    """A whole episode with random actions: it ends at max_episode_steps unless the robot falls (terminated)."""
    env = gymnasium.make(env_id, fast_reset=True)
    env.reset(seed=0)
    env.action_space.seed(0)
    total_cost, steps = 0.0, 0
    terminated = truncated = False
    while not (terminated or truncated):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        total_cost += info["cost"]
        steps += 1
    assert steps <= env.spec.max_episode_steps
    assert terminated or steps == env.spec.max_episode_steps
    assert terminated != truncated
    assert np.isfinite(total_cost)
    env.close()


@pytest.mark.parametrize("env_id", ["SafetyPointGoal1-v0", "SafetyCarButton1-v0", "SafetyPointCircle1-v0"])
def test_navigation_tasks_pass_gymnasiums_own_env_checker(env_id: str) -> None:
    """Gymnasium's check_env needs a seeded reset to seed ``np_random`` (shim P6)."""
    from gymnasium.utils.env_checker import check_env as gymnasium_check_env

    env = gymnasium.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its advice on float64 bounds and the like is not under test here
        gymnasium_check_env(env, skip_render_check=True)
    env.reset(seed=5)
    first = env.unwrapped.np_random.random()
    env.reset(seed=5)
    assert env.unwrapped.np_random.random() == first


def test_a_task_survives_deepcopy_and_pickle() -> None:
    """Copies rebuild the env from its recorded arguments (shim P5): same task, same seeded episode."""
    import copy
    import pickle

    env = gymnasium.make("SafetyPointGoal1-v0")
    start = env.reset(seed=2)[0]
    for clone in (copy.deepcopy(env), pickle.loads(pickle.dumps(env))):
        assert clone.unwrapped.task_id == "SafetyPointGoal1-v0"
        np.testing.assert_array_equal(clone.reset(seed=2)[0], start)
        clone.step(clone.action_space.sample())
