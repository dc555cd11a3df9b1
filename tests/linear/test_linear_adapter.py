"""LSVI-UCB through SB3's interface: learning loop, logging, callbacks, save/load and bad input."""

from __future__ import annotations

import copy
import csv
import warnings

import numpy as np
import pytest
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback
from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv
from toy_linear_mdp import ToyLinearMDP

import sb3_safe
from sb3_safe.common.costs import MissingCostError
from sb3_safe.linear import LSVIUCB, LinearMDPProtocolError

LOG_KEYS = {
    "rollout/ep_rew_mean",
    "rollout/ep_cost_mean",
    "rollout/ep_return",
    "rollout/success",
    "rollout/failed",
    "rollout/violations",
    "rollout/max_expected_cost",
    "safety/violations",
    "train/beta_q",
    "train/n_samples",
    "time/backward_ms",
    "time/per_state_us",
}


def _vec_env(seed: int = 0, **kwargs) -> DummyVecEnv:
    return sb3_make_vec_env(lambda: ToyLinearMDP(**kwargs), n_envs=1, seed=seed)


class _CountViolations(BaseCallback):
    """Counts steps whose true cost exceeds tau, independently of the algorithm."""

    def __init__(self, tau: float) -> None:
        super().__init__()
        self.tau, self.count, self.steps = tau, 0, 0

    def _on_step(self) -> bool:
        self.steps += 1
        self.count += int(self.locals["infos"][0]["true_cost"] > self.tau)
        return True


def test_learn_logs_every_key_and_counts_violations(tmp_path):
    model = LSVIUCB(_vec_env(), c_beta=0.01)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    counter = _CountViolations(tau=0.5)
    model.learn(200, callback=counter, log_interval=5)
    assert model.num_timesteps == 200 and model.episodes == 40 and counter.steps == 200
    with open(tmp_path / "progress.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert set(rows[0]) >= LOG_KEYS, LOG_KEYS - set(rows[0])
    assert len(rows) == 8
    # the unconstrained agent takes the rewarding, unsafe action 0, and the count matches an independent one
    assert model.violations == counter.count > 0
    assert int(rows[-1]["safety/violations"]) == counter.count
    assert int(rows[-1]["train/n_samples"]) == 200


def test_oracle_never_violates_and_the_penalty_trades_reward_for_cost():
    known = LSVIUCB(_vec_env(), safety="known", c_beta=0.01).learn(300)
    assert known.violations == 0
    free = LSVIUCB(_vec_env(), c_beta=0.01).learn(300)
    heavy = LSVIUCB(_vec_env(), cost_penalty=5.0, c_beta=0.01).learn(300)
    assert heavy.safety == "penalized"
    assert heavy.violations < free.violations


def test_predict_reads_the_plan_and_works_with_evaluate_policy():
    model = LSVIUCB(_vec_env(), c_beta=0.01).learn(100)
    plan = model.policy.plan.numpy()
    obs = {"state": np.array([0, 1, 2, 3]), "step": np.array([0, 1, 4, 5])}
    actions, _ = model.predict(obs, deterministic=True)
    np.testing.assert_array_equal(actions, plan[[0, 1, 4, 4], [0, 1, 2, 3]])  # step H uses the last row
    mean_reward, _ = evaluate_policy(model, _vec_env(seed=1), n_eval_episodes=3)
    assert 0.0 < mean_reward <= 5.0


def test_save_load_restores_every_learned_quantity_and_continues_identically(tmp_path):
    env = _vec_env(seed=3)
    model = LSVIUCB(env, c_beta=0.05).learn(60)
    model.save(tmp_path / "lsvi.zip")
    env_copy = copy.deepcopy(env)
    loaded = LSVIUCB.load(tmp_path / "lsvi.zip", env=env_copy)
    for name, tensor in model.policy.state_dict().items():
        np.testing.assert_array_equal(loaded.policy.state_dict()[name].numpy(), tensor.numpy(), err_msg=name)
    assert loaded.episodes == model.episodes == 12 and loaded.beta_q == model.beta_q
    obs = {"state": np.repeat(np.arange(4), 6), "step": np.tile(np.arange(6), 4)}
    np.testing.assert_array_equal(loaded.predict(obs)[0], model.predict(obs)[0])
    # without an env, a loaded model still predicts from its plan
    np.testing.assert_array_equal(LSVIUCB.load(tmp_path / "lsvi.zip").predict(obs)[0], model.predict(obs)[0])
    model.learn(60, reset_num_timesteps=False)
    loaded.learn(60, reset_num_timesteps=False)
    for name, tensor in model.policy.state_dict().items():
        np.testing.assert_array_equal(loaded.policy.state_dict()[name].numpy(), tensor.numpy(), err_msg=name)
    assert loaded.violations == model.violations and loaded.num_timesteps == 120


class _StopAfter(BaseCallback):
    def __init__(self, steps: int) -> None:
        super().__init__()
        self.stop_at = steps

    def _on_step(self) -> bool:
        return self.num_timesteps < self.stop_at


def test_callbacks_checkpoint_stop_and_progress_bar(tmp_path):
    model = LSVIUCB(_vec_env(), c_beta=0.01)
    checkpoint = CheckpointCallback(save_freq=20, save_path=str(tmp_path), name_prefix="lsvi")
    model.learn(50, callback=[checkpoint, _StopAfter(33)], progress_bar=True)
    assert model.num_timesteps == 33
    assert model.episodes == 7  # six whole episodes and the partial one, whose samples are kept
    assert sorted(p.name for p in tmp_path.glob("lsvi_*.zip")) == ["lsvi_20_steps.zip"]
    assert LSVIUCB.load(tmp_path / "lsvi_20_steps.zip").num_timesteps == 20


def test_registered_as_an_algorithm():
    assert sb3_safe.get_algorithm("LSVIUCB") is LSVIUCB
    assert sb3_safe.LSVIUCB is LSVIUCB


# --- bad input -------------------------------------------------------------------------------------------------------


def test_env_without_the_protocol_names_what_is_missing(toy_env_id):
    with pytest.raises(LinearMDPProtocolError, match=r"horizon, feature_dim, n_states, cost_threshold"):
        LSVIUCB(toy_env_id)


def test_safe_action_costlier_than_tau_is_an_error():
    env = ToyLinearMDP(tau=0.01)  # the cheapest action costs more than 0.01 somewhere
    with pytest.raises(ValueError, match=r"tau_h\(s\) = .* > tau = 0.01"):
        LSVIUCB(env)


def test_non_finite_features_are_an_error(monkeypatch):
    env = ToyLinearMDP()
    table = env.feature_table()
    table[1, 2, 0] = np.nan
    monkeypatch.setattr(env, "feature_table", lambda: table)
    with pytest.raises(ValueError, match="non-finite"):
        LSVIUCB(env)


def test_more_than_one_env_is_rejected():
    with pytest.raises(ValueError, match="single vectorized environment"):
        LSVIUCB(sb3_make_vec_env(ToyLinearMDP, n_envs=2))


def test_zero_horizon_is_rejected(monkeypatch):
    env = ToyLinearMDP()
    env.horizon = 0
    with pytest.raises(ValueError, match="horizon"):
        LSVIUCB(env)


def test_env_without_cost_fails_at_the_first_step(monkeypatch):
    env = ToyLinearMDP()
    original = env.step

    def step_without_cost(action):
        obs, reward, terminated, truncated, info = original(action)
        info.pop("cost")
        return obs, reward, terminated, truncated, info

    monkeypatch.setattr(env, "step", step_without_cost)
    with pytest.raises(MissingCostError, match=r"did not report a cost.*info\['cost'\]"):
        LSVIUCB(env).learn(5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"safety": "sometimes"}, "safety must be one of"),
        ({"safety": "penalized"}, "cost_penalty >= 0"),
        ({"safety": "known", "cost_penalty": 0.8}, "only applies"),
        ({"ridge": 0.0}, "ridge"),
        ({"delta": 1.5}, "delta"),
        ({"value_clip": "never"}, "value_clip"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LSVIUCB(ToyLinearMDP(), **kwargs)


@pytest.mark.parametrize("total_timesteps", [0, -5])
def test_no_episodes_is_an_error(total_timesteps):
    with pytest.raises(ValueError, match="total_timesteps must be >= 1"):
        LSVIUCB(ToyLinearMDP()).learn(total_timesteps)


def test_oracle_needs_the_true_cost_parameters():
    env = ToyLinearMDP()
    del env.gamma_star
    with pytest.raises(ValueError, match="gamma_star"):
        LSVIUCB(env, safety="known")


def test_missing_true_cost_warns_once(monkeypatch):
    env = ToyLinearMDP()
    original = env.step

    def step(action):
        obs, reward, terminated, truncated, info = original(action)
        info.pop("true_cost")
        return obs, reward, terminated, truncated, info

    monkeypatch.setattr(env, "step", step)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LSVIUCB(env).learn(20)
    assert sum("true_cost" in str(w.message) for w in caught) == 1


def test_weights_and_biases_offline_run_holds_the_safety_keys(tmp_path, monkeypatch):
    from sb3_safe.common.wandb_logger import attach_wandb, finish_wandb
    from sb3_safe.common.wandb_offline import find_offline_runs, read_offline_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    model = LSVIUCB(ToyLinearMDP(), c_beta=0.01)
    attach_wandb(model, folder=str(tmp_path / "csv"), project="sb3-safe-tests", dir=str(tmp_path))
    model.learn(100, log_interval=5)
    finish_wandb(model)
    run = read_offline_run(find_offline_runs(tmp_path)[-1])
    assert len(run.history) == 4
    assert run.history[-1]["safety/violations"] == model.violations
    assert {"rollout/ep_cost_mean", "train/beta_q", "rollout/ep_return"} <= set(run.history[-1])
    assert run.config["algorithm"] == "LSVIUCB"
