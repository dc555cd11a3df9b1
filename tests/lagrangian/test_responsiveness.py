"""Each Lagrangian baseline responds to a violated limit: lambda rises and the episode cost comes down.

On the toy trade-off CMDP (reward a, cost max(a, 0) per step) the unconstrained optimum a = 1 costs the whole
horizon, 20 per episode. Each agent first learns it under a loose limit (lambda stays 0), then the limit drops to 4:
lambda must rise above 0 from the measured episode costs, and the episode cost must fall well below where it was.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch as th
from toy_env import TRADEOFF_ID

from sb3_safe import make_vec_env
from sb3_safe.common.callbacks import EpisodeHistoryCallback
from sb3_safe.common.costs import validate_cost_limit
from sb3_safe.lagrangian import PPOLag, SACLag, TD3Lag

th.set_num_threads(1)

GAINS = {"kp": 0.1, "ki": 0.01, "kd": 0.0}
OFF_POLICY: dict[str, Any] = {
    "batch_size": 64,
    "buffer_size": 10_000,
    "learning_starts": 100,
    "train_freq": 10,
    "utd_ratio": 0.5,
    "learning_rate": 1e-3,
    "lagrange_kwargs": GAINS,
}
CASES = {
    "SACLag": (SACLag, OFF_POLICY, 3000, 3000),
    "TD3Lag": (TD3Lag, {**OFF_POLICY, "action_noise_std": 0.1}, 3000, 3000),
    "PPOLag": (
        PPOLag,
        {"n_steps": 100, "batch_size": 100, "n_epochs": 4, "learning_rate": 1e-3, "lagrange_method": "pid",
         "lagrange_kwargs": GAINS},
        3000,
        6000,
    ),
}  # fmt: skip


def _mean_cost(history: list[dict[str, float]], last: int = 10) -> float:
    return float(np.mean([row["cost"] for row in history[-last:]]))


@pytest.mark.parametrize("name", list(CASES))
def test_lambda_rises_and_the_cost_falls_when_the_limit_is_violated(name):
    cls, kwargs, free_steps, constrained_steps = CASES[name]
    env = make_vec_env(TRADEOFF_ID, n_envs=2, seed=0)
    model = cls("MlpPolicy", env, cost_limit=100.0, seed=0, policy_kwargs={"net_arch": [32, 32]}, **kwargs)
    free = EpisodeHistoryCallback()
    model.learn(free_steps, callback=free)
    unconstrained_cost = _mean_cost(free.history)
    assert unconstrained_cost > 12.0  # it learnt to spend: far over the limit that comes next
    np.testing.assert_array_equal(model.duals["lambda"], [0.0])

    model.cost_limit = validate_cost_limit(4.0, 1)
    constrained = EpisodeHistoryCallback()
    model.learn(constrained_steps, callback=constrained, reset_num_timesteps=False)
    assert model.duals["lambda"][0] > 0.0
    assert _mean_cost(constrained.history) < 0.7 * unconstrained_cost
