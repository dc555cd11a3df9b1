"""The core's plumbing on a real safety-gymnasium task (the plugin's own tests cover every registered task)."""

from __future__ import annotations

import numpy as np
import pytest

import sb3_safe
from sb3_safe.common.buffers import CostReplayBuffer

TASK = "SafetyPointGoal1-v0"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:stable_baselines3.*")


def test_plugin_tasks_are_listed_with_their_provider():
    providers = sb3_safe.env_providers()
    assert TASK in providers and providers[TASK].startswith("safety_gymnasium")
    assert {"SafetyCarButton2-v0", "SafetyAntCircle0-v0", "SafetyHalfCheetahVelocity-v1"} <= set(providers)


def test_off_policy_training_and_evaluation_on_a_real_task():
    env = sb3_safe.make_vec_env(TASK, n_envs=2, seed=0, env_kwargs={"fast_reset": True, "max_episode_steps": 100})
    model = sb3_safe.UnconstrainedSAC(
        "MlpPolicy", env, cost_limit=5.0, learning_starts=100, batch_size=64, policy_kwargs={"net_arch": [32, 32]}
    )
    model.learn(400)
    assert isinstance(model.replay_buffer, CostReplayBuffer)
    stored = model.replay_buffer.costs[: model.replay_buffer.pos]
    assert stored.shape == (200, 2, 1) and np.all(stored >= 0)
    assert model.cumulative_cost == pytest.approx(float(stored.sum()), rel=1e-5)
    assert len(model.ep_info_buffer) == 4 and all("c" in info for info in model.ep_info_buffer)
    result = sb3_safe.evaluate_safe_policy(model, sb3_safe.make_env(TASK, fast_reset=True, max_episode_steps=100), 2)
    assert result.lengths.tolist() == [100, 100] and np.all(result.costs >= 0)


def test_threshold_from_the_task_horizon():
    env = sb3_safe.make_env(TASK)
    assert sb3_safe.episode_length_of(env) == 1000
    assert sb3_safe.cost_limit_to_q_threshold(25.0, 0.99, sb3_safe.episode_length_of(env)) == pytest.approx(
        2.4998, abs=1e-3
    )
