"""SAC-Lag and TD3-Lag: the multiplier follows the episodes or the cost critic, logs, save/load and bad input."""

from __future__ import annotations

import csv
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_safe import make_vec_env
from sb3_safe.lagrangian import SACLag, TD3Lag

th.set_num_threads(1)

FAST: dict[str, Any] = {
    "batch_size": 32,
    "buffer_size": 2000,
    "learning_starts": 40,
    "policy_kwargs": {"net_arch": [16, 16]},
}
ALGORITHMS = [SACLag, TD3Lag]
TRAIN_KEYS = (
    "train/lambda",
    "train/qc_mean",
    "train/qc_threshold",
    "train/cost_critic_loss",
    "train/critic_loss",
    "train/actor_loss",
    "rollout/ep_cost_mean",
    "rollout/early_terminations",
    "safety/cost_rate",
    "safety/cost_limit",
    "safety/episodes_over_limit",
)


class AlwaysCost(gym.Wrapper):
    """Every step costs 1: the cost critic's estimate climbs far above any small threshold."""

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, float(reward), terminated, truncated, {**info, "cost": 1.0}


def _csv_keys(folder) -> set[str]:
    with open(folder / "progress.csv") as handle:
        return set(next(csv.reader(handle)))


def _set_cost_critic_output(model: SACLag | TD3Lag, value: float) -> None:
    """Make every cost critic (and target) output ``value`` for any input: zero last weights, bias ``value``."""
    with th.no_grad():
        for critics in (model.cost_critics, model.cost_critics_target):
            for critic in critics.ensembles():
                for q_net in critic.q_networks:
                    q_net[-1].weight.zero_()  # type: ignore[index]
                    q_net[-1].bias.fill_(value)  # type: ignore[index]


@pytest.mark.parametrize("cls", ALGORITHMS)
@pytest.mark.parametrize("method", ["pid", "gradient"])
def test_lambda_rises_above_the_threshold_and_stays_zero_far_below(toy_env_id, cls, method):
    critic = {"lagrange_cost_source": "critic", "lagrange_method": method}
    model = cls("MlpPolicy", toy_env_id, cost_limit=1.0, seed=0, **critic, **FAST)
    model.learn(60)  # fills the buffer past learning_starts
    assert model.cost_threshold[0] == pytest.approx(1.0 * (1 - 0.99**20) / (0.01 * 20))
    below = cls("MlpPolicy", toy_env_id, cost_limit=1.0, seed=0, **critic, **FAST)
    below.learn(60)
    # Far below: Q_c = -50 against eps = 0.91 -> lambda stays 0 for PID and for the projected gradient.
    for _ in range(3):
        _set_cost_critic_output(below, -50.0)
        below.train(gradient_steps=2, batch_size=16)
        assert below.duals["lambda"][0] == 0.0
    # Above: Q_c = 10 > eps -> lambda grows with every train() call.
    values = []
    for _ in range(3):
        _set_cost_critic_output(model, 10.0)
        model.train(gradient_steps=2, batch_size=16)
        values.append(model.duals["lambda"][0])
    assert values[0] > 0 and values[0] < values[1] < values[2]
    # The signal is mean Q_c(s, pi(s)) (one small Adam step away from 10) against eps.
    assert model.logger.name_to_value["train/qc_mean"] == pytest.approx(10.0, abs=0.1)
    assert model.logger.name_to_value["train/qc_threshold"] == pytest.approx(model.cost_threshold[0])


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_forced_costs_raise_lambda_through_the_learned_cost_critic(toy_env_id, cls):
    env = DummyVecEnv([lambda: AlwaysCost(gym.make(toy_env_id)) for _ in range(2)])
    critic = {"lagrange_cost_source": "critic"}
    model = cls(
        "MlpPolicy", env, cost_limit=0.5, seed=3, learning_rate=3e-3, **critic, **{**FAST, "learning_starts": 20}
    )
    model.learn(200)
    # Each step costs 1, so Q_c >= 1 > eps = 0.46 once the critic has learnt the immediate cost.
    assert model.logger.name_to_value["train/qc_mean"] > model.cost_threshold[0]
    assert model.duals["lambda"][0] > 0.0
    far = cls("MlpPolicy", make_vec_env(toy_env_id, n_envs=2, seed=3), cost_limit=1000.0, seed=3, **critic, **FAST)
    far.learn(200)
    assert far.duals["lambda"][0] == 0.0


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_episode_source_updates_lambda_from_the_episodes_finished_since_the_last_update(toy_env_id, cls):
    model = cls("MlpPolicy", toy_env_id, cost_limit=5.0, lagrange_kwargs={"kp": 0.1, "ki": 0.01, "kd": 0.0}, **FAST)
    model.learn(60)
    model.lagrange = type(model.lagrange)(1, method="pid", kp=0.1, ki=0.01, kd=0.0)  # a fresh multiplier
    window = model.episode_cost_window
    window.pending = [np.array([10.0]), np.array([20.0])]  # mean 15 against the limit 5: error 10
    model.train(gradient_steps=2, batch_size=16)
    assert model.duals["lambda"][0] == pytest.approx(0.1 * 10 + 0.01 * 10)
    assert model.logger.name_to_value["train/ep_cost_for_lambda"] == pytest.approx(15.0)
    assert window.pending == []
    model.train(gradient_steps=2, batch_size=16)  # no episode finished since: no update
    assert model.duals["lambda"][0] == pytest.approx(1.1)
    window.pending = [np.array([0.0])]  # error -5: the integral shrinks to 5, lambda = max(0, -0.5 + 0.05)
    model.train(gradient_steps=2, batch_size=16)
    assert model.duals["lambda"][0] == 0.0


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_finished_training_episodes_reach_the_multiplier(toy_env_id, cls):
    model = cls("MlpPolicy", make_vec_env(toy_env_id, n_envs=2, seed=0), cost_limit=1.0, seed=0, **FAST)
    model.learn(40)  # 20 steps per env, horizon 20: each env finishes one episode, before any training
    costs = sorted(float(c[0]) for c in model.episode_cost_window.pending)
    assert costs == pytest.approx(sorted(info["c"] for info in model.ep_info_buffer)) and len(costs) == 2


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_utd_ratio_scales_the_gradient_steps_and_critics_take_their_own_learning_rate(toy_env_id, cls):
    env = make_vec_env(toy_env_id, n_envs=2, seed=0)
    model = cls("MlpPolicy", env, cost_limit=1.0, train_freq=10, utd_ratio=0.15, critic_learning_rate=2e-3, **FAST)
    model.learn(200)  # 10 collections of 20 env steps; training starts after the first two (learning_starts 40)
    assert model._n_updates == int(0.15 * 20 * 8)  # 3 per collection, the 0.0 carry never reaching a 4th
    assert model.critic.optimizer.param_groups[0]["lr"] == pytest.approx(2e-3)
    assert model.cost_critics.optimizer.param_groups[0]["lr"] == pytest.approx(2e-3)
    assert model.actor.optimizer.param_groups[0]["lr"] == pytest.approx(model.learning_rate)
    assert model.logger.name_to_value["train/critic_learning_rate"] == pytest.approx(2e-3)


def test_td3_lag_takes_gaussian_exploration_noise_by_its_std(toy_env_id):
    model = TD3Lag("MlpPolicy", toy_env_id, cost_limit=1.0, action_noise_std=0.1, **FAST)
    assert np.allclose(model.action_noise._sigma, 0.1) and model.action_noise._sigma.shape == (1,)
    with pytest.raises(ValueError, match="action_noise_std or action_noise"):
        TD3Lag("MlpPolicy", toy_env_id, action_noise_std=0.1, action_noise=model.action_noise, **FAST)
    with pytest.raises(ValueError, match=r"action_noise_std must be > 0"):
        TD3Lag("MlpPolicy", toy_env_id, action_noise_std=0.0, **FAST)


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_two_envs_on_the_toy_env_log_every_key(toy_env_id, tmp_path, cls):
    model = cls("MlpPolicy", make_vec_env(toy_env_id, n_envs=2, seed=0), cost_limit=1.0, seed=0, **FAST)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(200, log_interval=1)
    missing = set(TRAIN_KEYS) - _csv_keys(tmp_path)
    assert not missing, missing
    assert set(model.duals) == {"lambda"} and model.duals["lambda"].shape == (1,)


@pytest.mark.parametrize("algorithm", [SACLag, TD3Lag], ids=lambda cls: cls.__name__)
def test_two_thousand_steps_on_a_real_task_with_two_envs(tmp_path, algorithm):
    env = make_vec_env("SafetyPointGoal1-v0", n_envs=2, seed=0, env_kwargs={"fast_reset": True})
    model = algorithm(
        "MlpPolicy",
        env,
        cost_limit=25.0,
        batch_size=64,
        learning_starts=200,
        train_freq=10,
        gradient_steps=5,
        policy_kwargs={"net_arch": [64, 64]},
        seed=0,
    )
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(2000, log_interval=1)
    assert model.num_timesteps == 2000
    assert model.episode_length == 1000
    missing = set(TRAIN_KEYS) - _csv_keys(tmp_path)
    assert not missing, missing
    assert len(model.ep_info_buffer) == 2


def _state(model: SACLag | TD3Lag) -> dict[str, Any]:
    modules = {"policy": model.policy, "cost": model.cost_critics, "cost_target": model.cost_critics_target}
    return {
        "params": {f"{n}.{k}": v.clone() for n, m in modules.items() for k, v in m.state_dict().items()},
        "lagrange": {k: v.clone() for k, v in model.lagrange.state_dict().items()},
        "optimizers": [
            o.state_dict()["state"]
            for o in (model.actor.optimizer, model.critic.optimizer, model.cost_critics.optimizer)
        ],
    }


@pytest.mark.parametrize(("cls", "method"), [(SACLag, "pid"), (TD3Lag, "gradient")])
def test_save_load_keeps_predictions_duals_optimizers_and_the_next_train_step(toy_env_id, tmp_path, cls, method):
    kwargs = {**FAST, "lagrange_method": method, "lagrange_kwargs": {"learning_rate": 0.05} if method != "pid" else {}}
    model = cls("MlpPolicy", make_vec_env(toy_env_id, n_envs=2, seed=1), cost_limit=0.0, seed=1, **kwargs)
    model.learn(200)
    assert model.duals["lambda"][0] > 0  # cost_limit 0: any cost estimate is a violation
    model.save(tmp_path / "model")
    model.save_replay_buffer(tmp_path / "buffer")
    loaded = cls.load(tmp_path / "model", env=make_vec_env(toy_env_id, n_envs=2, seed=1))
    loaded.load_replay_buffer(tmp_path / "buffer")
    loaded.set_logger(model.logger)
    obs = np.array([[0.0, 5.0], [2.5, 2.5], [4.0, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    np.testing.assert_array_equal(loaded.duals["lambda"], model.duals["lambda"])
    np.testing.assert_array_equal(loaded.cost_threshold, model.cost_threshold)
    assert loaded.lagrange_method == method
    if method == "gradient":
        assert loaded.lagrange.optimizer.state_dict()["state"]  # Adam's moments of lambda came back
        th.testing.assert_close(
            loaded.lagrange.optimizer.state_dict()["state"][0]["exp_avg"],
            model.lagrange.optimizer.state_dict()["state"][0]["exp_avg"],
            rtol=0,
            atol=0,
        )
    states = []
    for candidate in (model, loaded):
        np.random.seed(123)
        th.manual_seed(123)
        candidate.train(gradient_steps=3, batch_size=32)
        states.append(_state(candidate))
    original, resumed = states
    for key, value in original["params"].items():
        assert th.equal(value, resumed["params"][key]), key
    for key, value in original["lagrange"].items():
        assert th.equal(value, resumed["lagrange"][key]) or (
            th.isnan(value).all() and th.isnan(resumed["lagrange"][key]).all()
        ), key
    for state_a, state_b in zip(original["optimizers"], resumed["optimizers"], strict=True):
        assert state_a.keys() == state_b.keys() and state_a
        for key in state_a:
            assert th.equal(state_a[key]["exp_avg_sq"], state_b[key]["exp_avg_sq"])


@pytest.mark.parametrize("cls", ALGORITHMS)
@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"env": "ToyDiscrete-v0"}, TypeError, r"works with continuous.*Box.*Discrete"),
        ({"cost_limit": -1.0}, ValueError, r">= 0"),
        ({"env": "ToyNoHorizon-v0"}, ValueError, r"episode length .* not known"),
        ({"lagrange_method": "newton"}, ValueError, r"lagrange_method must be one of"),
        ({"lagrange_kwargs": {"method": "pid"}}, ValueError, r"lagrange_kwargs may not set"),
        ({"n_cost_critics": 0}, ValueError, r"n_cost_critics must be >= 1"),
        ({"lagrange_cost_source": "q"}, ValueError, r"lagrange_cost_source must be one of \('episodes', 'critic'\)"),
        ({"utd_ratio": 0.2, "gradient_steps": 4}, ValueError, r"either utd_ratio .* or gradient_steps"),
        ({"utd_ratio": 0.0}, ValueError, r"utd_ratio must be > 0"),
    ],
)
def test_bad_input_is_rejected_clearly(toy_env_id, cls, kwargs, error, pattern):
    arguments = {"policy": "MlpPolicy", "env": toy_env_id, **kwargs}
    with pytest.raises(error, match=pattern):
        cls(**arguments)


def test_explicit_episode_length_and_two_constraints(tmp_path):
    model = TD3Lag("MlpPolicy", "ToyNoHorizon-v0", episode_length=50, cost_limit=5.0, **FAST)
    assert model.episode_length == 50
    two = SACLag("MlpPolicy", "ToyTwoCosts-v0", n_costs=2, cost_limit=[1.0, 2.0], **FAST)
    two.set_logger(configure(str(tmp_path), ["csv"]))
    two.learn(100, log_interval=1)
    assert two.duals["lambda"].shape == (2,) and len(two.cost_critics) == 2
    assert {"train/lambda_0", "train/lambda_1", "train/qc_mean_1", "train/cost_critic_loss_0"} <= _csv_keys(tmp_path)
