"""Nothing lost, nothing silent: NaN/inf data from the env, invalid costs, and set_env's episode costs."""

from __future__ import annotations

import copy
import csv
import re
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv
from toy_env import TOY_ID, TRADEOFF_ID

from sb3_safe import CVPO, UnconstrainedSAC, evaluate_safe_policy, make_vec_env
from sb3_safe.common.buffers import CostNStepReplayBuffer, CostReplayBuffer, CostRolloutBuffer
from sb3_safe.common.costs import (
    NONFINITE_KEY,
    InvalidCostError,
    MissingCostError,
    NonFiniteDataError,
    step_cost,
    step_costs,
)
from sb3_safe.common.evaluation import SafeEvaluationResult
from sb3_safe.common.monitor import SafeMonitor
from sb3_safe.experiment.config import accepted_arguments
from sb3_safe.lagrangian import PPOLag, SACLag, TD3Lag

OFF_POLICY = {"batch_size": 16, "buffer_size": 200, "learning_starts": 10, "policy_kwargs": {"net_arch": [8]}}
KWARGS: dict[type, dict[str, Any]] = {
    CVPO: {**OFF_POLICY, "train_freq": 5, "n_samples": 4},
    SACLag: OFF_POLICY,
    TD3Lag: OFF_POLICY,
    UnconstrainedSAC: OFF_POLICY,
    PPOLag: {"n_steps": 16, "batch_size": 16, "n_epochs": 1, "policy_kwargs": {"net_arch": [8]}},
}


class Inject(gym.Wrapper):
    """Puts a bad value into one field at chosen steps (1-based count of this env's ``step`` calls).

    ``field`` is ``"reward"``, ``"cost"``, ``"obs"`` (entry 0 of the observation; at the last step of an episode
    that is the terminal observation) or ``"reset"`` (entry 0 of the first observation).
    """

    def __init__(self, env: gym.Env, field: str, at: tuple[int, ...] = (), value: float = np.nan) -> None:
        super().__init__(env)
        self.field, self.at, self.value, self.steps = field, set(at), value, 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        if self.field == "reset":
            obs = obs.copy()
            obs[0] = self.value
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        if self.steps in self.at:
            if self.field == "reward":
                reward = self.value
            elif self.field == "cost":
                info = {**info, "cost": self.value}
            elif self.field == "obs":
                obs = obs.copy()
                obs[0] = self.value
        return obs, reward, terminated, truncated, info


def _env(*injections: tuple[str, tuple[int, ...], float], env_id: str = TOY_ID, n_envs: int = 1, bad_env: int = 0):
    """A VecEnv of monitored toy envs; env ``bad_env`` gets the injections (field, steps, value)."""

    def build(rank: int) -> gym.Env:
        env: gym.Env = gym.make(env_id)
        for field, at, value in injections if rank == bad_env else ():
            env = Inject(env, field, at, value)
        return SafeMonitor(env)

    vec_env = DummyVecEnv([lambda rank=rank: build(rank) for rank in range(n_envs)])
    vec_env.seed(0)
    return vec_env


def _model(algorithm: type, env: Any, **kwargs: Any) -> Any:
    # SB3 writes into policy_kwargs: every model gets its own copy.
    return algorithm("MlpPolicy", env, cost_limit=1.0, seed=0, **copy.deepcopy({**KWARGS[algorithm], **kwargs}))


def _all_finite(model: Any) -> bool:
    return all(bool(th.isfinite(p).all()) for p in model.policy.parameters())


# --- raise (the default) ----------------------------------------------------------------------------------------

CASES = {
    "nan reward": (("reward", (23,), np.nan), r"reward is nan"),
    "inf cost": (("cost", (23,), np.inf), r"cost info\['cost'\] is inf"),
    "nan observation": (("obs", (23,), np.nan), r"observation entries \[0\] of shape \(2,\) are nan"),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("algorithm", [CVPO, SACLag, TD3Lag, PPOLag, UnconstrainedSAC])
def test_nonfinite_data_raises_at_the_step_it_happens(algorithm, case):
    injection, field = CASES[case]
    model = _model(algorithm, _env(injection))
    with pytest.raises(NonFiniteDataError) as caught:
        model.learn(40)
    message = str(caught.value)
    assert re.search(field, message), message
    assert "'ToyConstrained-v0' (env index 0) at num_timesteps=23" in message
    assert "nonfinite='skip'" in message and "Fix the environment" in message
    assert model.num_timesteps == 22  # stopped inside the 23rd step, before anything stored or counted it
    assert _all_finite(model)
    if hasattr(model, "replay_buffer"):
        assert np.isfinite(model.replay_buffer.rewards).all() and np.isfinite(model.replay_buffer.costs).all()
    if hasattr(model, "duals"):
        assert all(np.isfinite(value).all() for value in model.duals.values())


def test_the_message_names_the_env_index_and_a_terminal_observation():
    model = _model(SACLag, _env(("reward", (7,), np.nan), n_envs=2, bad_env=1))
    with pytest.raises(NonFiniteDataError, match=r"\(env index 1\) at num_timesteps=14: reward is nan"):
        model.learn(40)
    model = _model(TD3Lag, _env(("obs", (20,), -np.inf)))  # step 20 ends the episode (time limit)
    with pytest.raises(NonFiniteDataError, match=r"terminal observation \(info\['terminal_observation'\]\) entries"):
        model.learn(40)


def test_a_nonfinite_first_observation_raises_at_reset():
    model = _model(UnconstrainedSAC, _env(("reset", (), np.nan)))
    with pytest.raises(
        NonFiniteDataError, match=r"at reset, num_timesteps=0: observation from env.reset\(\) entries \[0\]"
    ):
        model.learn(10)


def test_nonfinite_option_is_checked_and_is_a_hyperparameter_through_kwargs():
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        _model(SACLag, _env(), nonfinite="ignore")
    for algorithm in (CVPO, SACLag, TD3Lag, PPOLag, UnconstrainedSAC):
        assert "nonfinite" in accepted_arguments(algorithm)
    model = _model(PPOLag, _env())
    model.nonfinite = "drop"
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        model.learn(16)


# --- skip ---------------------------------------------------------------------------------------------------------


def _skip_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if "nonfinite='skip'" in str(w.message)]


@pytest.mark.parametrize("algorithm", [SACLag, CVPO])
def test_skip_keeps_an_off_policy_learner_finite_and_never_samples_the_skipped(algorithm, tmp_path):
    injections = (("reward", (15,), np.nan), ("cost", (25,), np.inf), ("obs", (35,), np.nan))
    model = _model(algorithm, _env(*injections), nonfinite="skip")
    model.set_logger(configure(str(tmp_path), ["csv"]))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.learn(80, log_interval=1)
    (warning,) = _skip_warnings(record)  # once, then counted
    assert "reward is nan" in warning and "num_timesteps=15" in warning
    assert model.nonfinite_skipped == 4  # the reward, the cost, and the two transitions around the bad observation
    buffer = model.replay_buffer
    np.testing.assert_array_equal(np.flatnonzero(buffer.skipped[:, 0]), [14, 24, 34, 35])
    for array in (buffer.observations, buffer.next_observations, buffer.rewards, buffer.costs):
        assert np.isfinite(array).all()
    assert _all_finite(model) and all(np.isfinite(value).all() for value in model.duals.values())
    assert all(np.isfinite([info["r"], info["c"]]).all() for info in model.ep_info_buffer)
    with open(tmp_path / "progress.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert float(rows[-1]["safety/nonfinite_skipped"]) == 4


def test_skip_keeps_ppo_lag_finite_with_zero_advantage_at_the_skipped_steps():
    injections = (("reward", (5,), np.nan), ("cost", (9,), np.inf), ("obs", (12,), np.nan))
    model = _model(PPOLag, _env(*injections), nonfinite="skip")
    with pytest.warns(RuntimeWarning, match=r"reward is nan"):
        model.learn(16)
    assert model.nonfinite_skipped == 4
    buffer = model.rollout_buffer  # one env: the flattened rollout is in step order
    skipped = [4, 8, 11, 12]
    np.testing.assert_allclose(buffer.advantages[skipped], 0.0, atol=1e-6)
    np.testing.assert_allclose(buffer.cost_advantages[skipped], 0.0, atol=1e-6)
    np.testing.assert_allclose(buffer.rewards[skipped], buffer.values[skipped])
    assert np.isfinite(buffer.rewards).all() and np.isfinite(buffer.costs).all()
    assert np.isfinite(buffer.observations).all()
    assert _all_finite(model) and np.isfinite(model.duals["lambda"]).all()
    model.learn(16, reset_num_timesteps=False)  # goes on finite
    assert _all_finite(model)


def test_replay_buffer_samples_only_the_transitions_not_skipped():
    for n_envs in (1, 2):
        buffer = CostReplayBuffer(100, gym.spaces.Box(-50, 50, (1,)), gym.spaces.Box(-1, 1, (1,)), n_envs=n_envs)
        for t in range(12):
            flagged = [(t + i) % 3 == 0 for i in range(n_envs)]
            infos = [{"cost": np.nan, NONFINITE_KEY: ("reward", "cost")} if bad else {"cost": 1.0} for bad in flagged]
            obs = np.array([[10 * i + t] for i in range(n_envs)], dtype=np.float32)
            rewards = np.where(flagged, np.nan, 1.0)
            buffer.add(obs, obs + 1, np.zeros((n_envs, 1)), rewards, np.zeros(n_envs), infos)
        assert buffer.n_skipped_stored == int(buffer.skipped.sum()) > 0
        assert np.isfinite(buffer.rewards).all() and (buffer.costs[buffer.skipped] == 0).all()
        seen = set(buffer.sample(2000).observations.numpy().reshape(-1).astype(int).tolist())
        allowed = {10 * i + t for t in range(12) for i in range(n_envs) if (t + i) % 3 != 0}
        assert seen == allowed


def test_n_step_sums_end_before_a_skipped_transition():
    buffer = CostNStepReplayBuffer(10, gym.spaces.Box(-50, 50, (1,)), gym.spaces.Box(-1, 1, (1,)), n_steps=3, gamma=0.5)
    for t in range(5):
        info = {"cost": float(t + 1), **({NONFINITE_KEY: ("cost",)} if t == 2 else {})}
        obs = np.array([[t]], dtype=np.float32)
        buffer.add(obs, obs + 1, np.zeros((1, 1)), np.array([t + 1.0]), np.zeros(1), [info])
    samples = buffer._get_samples(np.array([0, 1, 3]))
    np.testing.assert_allclose(samples.rewards.numpy().reshape(-1), [1 + 0.5 * 2, 2, 4 + 0.5 * 5])
    np.testing.assert_allclose(samples.costs.numpy().reshape(-1), [1 + 0.5 * 2, 2, 4 + 0.5 * 5])
    np.testing.assert_allclose(samples.discounts.numpy().reshape(-1), [0.25, 0.5, 0.25])
    np.testing.assert_allclose(samples.next_observations.numpy().reshape(-1), [2, 2, 5])


def test_rollout_buffer_gives_a_skipped_step_zero_advantage_and_cuts_gae_there():
    buffer = CostRolloutBuffer(4, gym.spaces.Box(-1, 1, (1,)), gym.spaces.Box(-1, 1, (1,)), gamma=0.5, gae_lambda=1.0)
    values = [1.0, 2.0, 3.0, 4.0]
    for t, value in enumerate(values):
        buffer.stage_costs(np.array([[1.0]]), np.array([[value]]), skipped=np.array([t == 2]))
        buffer.add(
            np.zeros((1, 1)), np.zeros((1, 1)), np.array([1.0]), np.array([t == 0]), th.tensor([[value]]), th.zeros(1)
        )
    buffer.compute_returns_and_advantage(th.tensor([[10.0]]), np.array([False]))
    buffer.compute_cost_returns_and_advantage(np.array([[10.0]]), np.array([False]))
    for advantages in (buffer.advantages, buffer.cost_advantages):
        a = advantages.reshape(-1)
        assert a[2] == pytest.approx(0.0)  # the skipped step: r = V(s), then a boundary
        assert a[1] == pytest.approx(1 + 0.5 * 3 - 2)  # bootstraps from V(s_2), as at a truncation
        assert a[0] == pytest.approx(1 + 0.5 * (1 + 0.5 * 3) - 1)
        assert a[3] == pytest.approx(1 + 0.5 * 10 - 4)  # after the cut, the rollout goes on as usual


# --- evaluation ----------------------------------------------------------------------------------------------------


class _Still:
    def predict(self, obs: Any, state: Any = None, episode_start: Any = None, deterministic: bool = True):
        return np.zeros((len(obs), 1), dtype=np.float32), None


@pytest.mark.parametrize(
    ("injection", "field"),
    [(("cost", (3,), np.nan), r"cost info\['cost'\] is nan"), (("reward", (3,), np.inf), "reward is inf")],
)
def test_evaluation_refuses_nonfinite_rewards_and_costs(injection, field):
    with pytest.raises(NonFiniteDataError, match=rf"\(env index 0\) at step 3 of its evaluation episode 1: {field}"):
        evaluate_safe_policy(_Still(), _env(injection), n_eval_episodes=2)


def test_a_nan_cost_episode_is_never_within_the_limit():
    result = SafeEvaluationResult(np.zeros(3), np.array([np.nan, 1.0, np.inf]), np.full(3, 20))
    assert result.n_over_limit(5.0) == 2
    assert not result.is_feasible(5.0)
    assert SafeEvaluationResult(np.zeros(2), np.array([1.0, 2.0]), np.full(2, 20)).is_feasible(5.0)


# --- invalid costs ------------------------------------------------------------------------------------------------


def test_a_string_or_array_cost_is_named():
    with pytest.raises(
        InvalidCostError, match=r"info\['cost'\] of environment 'Toy-v9' holds a str: 'high', not a number"
    ):
        step_cost({"cost": "high"}, env_name="Toy-v9")
    with pytest.raises(InvalidCostError, match=r"info\['cost'\].*holds a numpy array of shape \(2,\).*info\['costs'\]"):
        step_costs({"cost": np.array([1.0, 2.0])})
    with pytest.raises(InvalidCostError, match=r"info\['costs'\].*list"):
        step_costs({"costs": ["a", "b"]}, 2)
    assert issubclass(InvalidCostError, MissingCostError)
    assert step_cost({"cost": np.array([0.5])}) == 0.5 and step_cost({"cost": np.float32(2)}) == 2.0
    model = _model(UnconstrainedSAC, DummyVecEnv([lambda: SafeMonitor(_StringCost(gym.make(TOY_ID)))]))
    with pytest.raises(InvalidCostError, match="must be one float per step"):
        model.learn(5)


class _StringCost(gym.Wrapper):
    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, {**info, "cost": "0.5"}


# --- set_env resets the per-episode cost ---------------------------------------------------------------------------


def test_set_env_with_force_reset_starts_episode_costs_afresh(tmp_path):
    kwargs = {"n_steps": 30, "batch_size": 30, "n_epochs": 1, "policy_kwargs": {"net_arch": [8]}, "seed": 0}
    model = PPOLag("MlpPolicy", make_vec_env(TRADEOFF_ID, seed=0), cost_limit=5.0, **kwargs)
    model.learn(30)  # horizon 20: the second episode is 10 steps in, with some cost
    assert model._episode_costs is not None and model._episode_costs.running.sum() > 0
    model.save(tmp_path / "model")
    continued_env = make_vec_env(TRADEOFF_ID, seed=1)
    model.set_env(continued_env, force_reset=True)
    before = len(model.ep_info_buffer)
    th.manual_seed(1)
    model.learn(30, reset_num_timesteps=False)
    continued = model.ep_info_buffer[before]["c"]
    loaded = PPOLag.load(tmp_path / "model", env=make_vec_env(TRADEOFF_ID, seed=1))
    th.manual_seed(1)
    loaded.learn(30, reset_num_timesteps=False)
    fresh = loaded.ep_info_buffer[-1]["c"]
    assert continued == pytest.approx(fresh)
    assert continued == pytest.approx(continued_env.envs[0].get_episode_costs()[0], abs=1e-5)  # the monitor's own sum
