"""Every Bullet-Safety-Gym task on this stack: reset, step, float costs, SB3's checker, bounded episodes."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import sb3_safe_bullet_safety_gym as plugin
from stable_baselines3.common.env_checker import check_env

from sb3_safe.common.costs import episode_length_of

ALL_TASKS = plugin.task_ids()
# The paper's tasks and their registered episode lengths; Car and Ball robots never end early.
PAPER_LENGTHS = {
    "SafetyCarCircle-v0": 300,
    "SafetyBallCircle-v0": 200,
    "SafetyCarRun-v0": 200,
    "SafetyBallRun-v0": 100,
    "SafetyAntRun-v0": 200,
    "SafetyDroneCircle-v0": 300,
}
NEVER_FALL = ("SafetyCarCircle-v0", "SafetyBallCircle-v0", "SafetyCarRun-v0", "SafetyBallRun-v0")


@pytest.mark.parametrize("task", ALL_TASKS)
def test_resets_steps_and_reports_a_float_cost(task: str) -> None:
    env = gym.make(task)
    observation, _ = env.reset(seed=0)
    assert env.observation_space.contains(observation)
    env.action_space.seed(0)
    for _ in range(50):
        observation, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert type(info["cost"]) is float and info["cost"] >= 0.0
        assert np.isfinite(float(reward))
        if terminated or truncated:
            observation, _ = env.reset()
    env.close()


@pytest.mark.parametrize("task", ALL_TASKS)
def test_passes_sb3_check_env(task: str) -> None:
    env = gym.make(task)
    check_env(env, warn=False)
    env.close()


@pytest.mark.parametrize(("task", "length"), PAPER_LENGTHS.items())
def test_episodes_end_by_truncation_at_the_registered_length(task: str, length: int) -> None:
    """Car and Ball robots cannot fail, and the Run tasks do not end when the robot leaves the safe area (that
    only costs), so their random episodes always run to the limit. Ant and Drone end early when they fall over
    (Ant torso on the ground, Drone rolled or pitched past 90 degrees): most random DroneCircle episodes and about
    one AntRun episode in 40 do; held still, they too run to the limit."""
    env = gym.make(task)
    assert env.spec is not None and env.spec.max_episode_steps == length == episode_length_of(env)
    env.reset(seed=0)
    env.action_space.seed(0)
    hold_still = np.zeros(env.action_space.shape, env.action_space.dtype)
    steps, terminated, truncated = 0, False, False
    while not (terminated or truncated):
        action = env.action_space.sample() if task in NEVER_FALL else hold_still
        _, _, terminated, truncated, _ = env.step(action)
        steps += 1
    assert (steps, truncated, terminated) == (length, True, False)
    env.close()


@pytest.mark.parametrize("task", PAPER_LENGTHS)
def test_seeded_resets_are_reproducible(task: str) -> None:
    """bullet-safety-gym ignores reset's seed (global RNGs); SeededReset makes equal seeds give equal episodes.

    The paper's tasks have no obstacles; on tasks with obstacles (Reach, Push, Gather) the obstacles' orientation
    and motion phase are drawn once when the env is built, which a reset seed cannot reach (see SeededReset).
    """

    def first_observations(seed: int) -> np.ndarray:
        env = gym.make(task)
        observation, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        observations = [observation]
        for _ in range(5):
            observations.append(env.step(env.action_space.sample())[0])
        observations.append(env.reset()[0])  # an unseeded reset continues the seeded stream
        env.close()
        return np.stack(observations)

    np.testing.assert_array_equal(first_observations(3), first_observations(3))
    assert not np.array_equal(first_observations(3)[0], first_observations(4)[0])


REUSED_RESET_TASKS = ("SafetyBallCircle-v0", "SafetyCarCircle-v0", "SafetyCarRun-v0", "SafetyDroneGather-v0")


@pytest.mark.parametrize("task", REUSED_RESET_TASKS)
def test_a_used_env_resets_with_a_seed_like_a_fresh_one(task: str) -> None:
    """State of earlier episodes (last actions, motors, moving obstacles) must not leak into a seeded reset."""
    action = np.full(gym.make(task).action_space.shape, 0.5, dtype=np.float32)

    def seeded_start(env: gym.Env) -> np.ndarray:
        observations = [env.reset(seed=3)[0]]
        observations += [env.step(action)[0] for _ in range(3)]
        return np.stack(observations)

    used = gym.make(task)
    first = seeded_start(used)
    used.action_space.seed(0)
    for _ in range(20):
        used.step(used.action_space.sample())
    again = seeded_start(used)
    fresh = seeded_start(gym.make(task))
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(again, fresh)
    used.step(action)  # the rebuilt simulator works on


def test_float_cost_wrapper_converts_integer_costs() -> None:
    class IntegerCost(gym.Env):
        observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

        def reset(self, *, seed=None, options=None):
            return np.zeros(1, np.float32), {}

        def step(self, action):
            return np.zeros(1, np.float32), 0.0, False, False, {"cost": 1}

    env = plugin.FloatCost(IntegerCost())
    env.reset()
    info = env.step(env.action_space.sample())[4]
    assert type(info["cost"]) is float and info["cost"] == 1.0
