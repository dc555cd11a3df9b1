"""Every Bullet-Safety-Gym task on this stack: reset, step, float costs, SB3's checker, bounded episodes."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import sb3_safe_bullet_safety_gym as plugin
from stable_baselines3.common.env_checker import check_env

from sb3_safe.common.costs import episode_length_of

ALL_TASKS = plugin.task_ids()
# The paper's tasks and their registered episode lengths; Car and Ball robots (and AntRun) never end early.
PAPER_LENGTHS = {
    "SafetyCarCircle-v0": 300,
    "SafetyBallCircle-v0": 200,
    "SafetyCarRun-v0": 200,
    "SafetyBallRun-v0": 100,
    "SafetyAntRun-v0": 200,
    "SafetyDroneCircle-v0": 300,
}
ALWAYS_FULL_LENGTH = ("SafetyCarCircle-v0", "SafetyBallCircle-v0", "SafetyCarRun-v0", "SafetyBallRun-v0")


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
def test_episodes_are_bounded_by_the_registered_length(task: str, length: int) -> None:
    env = gym.make(task)
    assert env.spec is not None and env.spec.max_episode_steps == length == episode_length_of(env)
    env.reset(seed=0)
    env.action_space.seed(0)
    steps, terminated, truncated = 0, False, False
    while not (terminated or truncated):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        steps += 1
    if task in ALWAYS_FULL_LENGTH:
        assert (steps, truncated, terminated) == (length, True, False)
    else:
        assert steps <= length
    env.close()


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
