"""Every safe deep-RL algorithm on every toy task, SB3 style: learn, log the multiplier, save/load identically."""

from __future__ import annotations

import numpy as np
import pytest
from stable_baselines3.common.logger import configure

import sb3_safe
from sb3_safe import CVPO
from sb3_safe.lagrangian import PPOLag, SACLag, TD3Lag

SMALL = {
    CVPO: {"batch_size": 32, "buffer_size": 1000, "learning_starts": 40, "train_freq": 20, "n_samples": 8},
    SACLag: {"batch_size": 32, "buffer_size": 1000, "learning_starts": 40, "train_freq": 20, "gradient_steps": 4},
    TD3Lag: {"batch_size": 32, "buffer_size": 1000, "learning_starts": 40, "train_freq": 20, "gradient_steps": 4},
    PPOLag: {"n_steps": 40, "batch_size": 20, "n_epochs": 2},
}
TASKS = {"ToyConstrained-v0": 1, "ToyTwoCosts-v0": 2}  # env id -> number of constraints


@pytest.mark.parametrize("algorithm", list(SMALL), ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("env_id", list(TASKS))
def test_learn_log_and_save_load(algorithm, env_id, tmp_path):
    n_costs = TASKS[env_id]
    env = sb3_safe.make_vec_env(env_id, n_envs=2, seed=0)
    model = algorithm(
        "MlpPolicy",
        env,
        cost_limit=[2.0] * n_costs if n_costs > 1 else 2.0,
        n_costs=n_costs,
        policy_kwargs={"net_arch": [16, 16]},
        seed=0,
        **SMALL[algorithm],
    )
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(240)
    header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    lambda_keys = ["train/lambda"] if n_costs == 1 else [f"train/lambda_{j}" for j in range(n_costs)]
    assert set(lambda_keys) <= set(header), header
    assert {"rollout/ep_cost_mean", "safety/cost_rate"} <= set(header)
    assert np.atleast_1d(model.duals["lambda"]).shape == (n_costs,)  # CVPO gives a float for one constraint

    model.save(tmp_path / "model.zip")
    loaded = algorithm.load(tmp_path / "model.zip", env=env)
    obs = env.reset()
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    np.testing.assert_array_equal(np.asarray(loaded.duals["lambda"]), np.asarray(model.duals["lambda"]))
