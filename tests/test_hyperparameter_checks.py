"""Bad hyperparameters are refused at construction, naming the valid range (before SB3 takes them silently)."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch as th

from sb3_safe import CVPO, make_vec_env
from sb3_safe.lagrangian import PPOLag, SACLag, TD3Lag

OFF_POLICY = [CVPO, SACLag, TD3Lag]
SMALL: dict[str, Any] = {"buffer_size": 100, "policy_kwargs": {"net_arch": [8]}}


@pytest.mark.parametrize("cls", OFF_POLICY, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"batch_size": 0}, r"batch_size must be an integer >= 1, got 0"),
        ({"batch_size": -5}, r"batch_size must be an integer >= 1, got -5"),
        ({"gamma": 1.5}, r"gamma must be in \(0, 1\]"),
        ({"gamma": 0.0}, r"gamma must be in \(0, 1\]"),
        ({"tau": 0.0}, r"tau must be in \(0, 1\] \(the Polyak step"),
        ({"tau": 2.0}, r"tau must be in \(0, 1\]"),
        ({"n_steps": 0}, r"n_steps must be an integer >= 1, got 0.*n-step return"),
        ({"learning_rate": -1e-3}, r"learning_rate must be > 0 .* got -0.001"),
        ({"critic_learning_rate": -1e-3}, r"critic_learning_rate must be > 0 .* climb its loss"),
        ({"critic_learning_rate": lambda progress: -progress}, r"critic_learning_rate must be > 0"),
        ({"buffer_size": 0}, r"buffer_size must be an integer >= 1"),
    ],
)
def test_off_policy_hyperparameters_are_refused_at_construction(toy_env_id, cls, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        cls("MlpPolicy", toy_env_id, cost_limit=1.0, **{**SMALL, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"batch_size": 0}, r"batch_size must be an integer >= 1, got 0"),
        ({"n_steps": 0}, r"n_steps must be an integer >= 1, got 0.*rollout length"),
        ({"n_epochs": 0}, r"n_epochs must be an integer >= 1, got 0"),
        ({"gamma": 1.01}, r"gamma must be in \(0, 1\]"),
        ({"gae_lambda": 0.0}, r"gae_lambda must be in \(0, 1\]"),
        ({"learning_rate": 0.0}, r"learning_rate must be > 0"),
        ({"lagrange_lr": -0.1}, r"lagrange_lr must be > 0"),
    ],
)
def test_ppo_lag_hyperparameters_are_refused_at_construction(toy_env_id, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        PPOLag("MlpPolicy", toy_env_id, cost_limit=1.0, **kwargs)


def test_valid_edges_are_accepted(toy_env_id):
    model = SACLag("MlpPolicy", toy_env_id, cost_limit=1.0, gamma=1.0, tau=1.0, n_steps=1, batch_size=1, **SMALL)
    assert model.gamma == 1.0 and model.tau == 1.0
    assert PPOLag("MlpPolicy", toy_env_id, cost_limit=1.0, gamma=1.0, n_steps=8, batch_size=8).n_epochs == 10


@pytest.mark.parametrize("n_envs", [0, -1, 1.5, True])
def test_make_vec_env_needs_at_least_one_env(toy_env_id, n_envs):
    with pytest.raises(ValueError, match=r"n_envs must be an integer >= 1 \(the number of parallel environments\)"):
        make_vec_env(toy_env_id, n_envs=n_envs)


@pytest.mark.parametrize("cls", [SACLag, TD3Lag], ids=lambda cls: cls.__name__)
def test_tensorboard_runs_are_named_after_the_safe_algorithm(toy_env_id, tmp_path, cls):
    model = cls("MlpPolicy", toy_env_id, cost_limit=1.0, learning_starts=10, tensorboard_log=str(tmp_path), **SMALL)
    model.learn(30)
    assert [path.name for path in tmp_path.iterdir()] == [f"{cls.__name__}_1"]


def test_ppo_lag_keeps_sb3s_advice_to_run_an_mlp_on_the_cpu(toy_env_id):
    model = PPOLag("MlpPolicy", toy_env_id, cost_limit=1.0, n_steps=8, batch_size=8)
    model.device = th.device("cuda")  # as it would be on a GPU machine; nothing runs on it here
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model._maybe_recommend_cpu()
    assert any("You are trying to run PPOLag on the GPU" in str(w.message) for w in caught)
