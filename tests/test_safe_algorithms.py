"""The safe off-policy and on-policy base classes on SB3 algorithms: buffers filled, safety metrics logged."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.logger import configure

from sb3_safe import UnconstrainedSAC, make_vec_env
from sb3_safe.common.buffers import CostNStepReplayBuffer, CostReplayBuffer, CostRolloutBuffer
from sb3_safe.common.costs import MissingCostError
from sb3_safe.common.on_policy import SafeOnPolicyAlgorithm
from sb3_safe.common.policies import SafeActorCriticPolicy

SAC_KWARGS = {"learning_starts": 40, "batch_size": 32, "buffer_size": 1000, "policy_kwargs": {"net_arch": [16]}}


class CostPPO(SafeOnPolicyAlgorithm, PPO):
    """PPO on the safe on-policy plumbing (the cost is recorded, not optimised)."""


def _read_csv(folder) -> list[dict[str, str]]:
    with open(folder / "progress.csv") as handle:
        return list(csv.DictReader(handle))


def test_unconstrained_sac_fills_costs_and_logs_safety_metrics(toy_env_id, tmp_path):
    env = make_vec_env(toy_env_id, n_envs=2, seed=0)
    model = UnconstrainedSAC("MlpPolicy", env, cost_limit=1.0, seed=0, **SAC_KWARGS)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(200, log_interval=1)
    assert isinstance(model.replay_buffer, CostReplayBuffer)
    stored = model.replay_buffer.costs[: model.replay_buffer.pos]
    assert stored.shape == (100, 2, 1)
    assert set(np.unique(stored)) <= {0.0, 1.0}
    assert model.cumulative_cost == pytest.approx(stored.sum())
    assert model.cost_rate == pytest.approx(stored.sum() / 200)
    # Each training episode's cost in the info buffer equals the sum of its stored step costs (horizon 20).
    episode_costs = [info["c"] for info in model.ep_info_buffer]
    per_episode = stored[:, :, 0].T.reshape(2, -1, 20).sum(axis=2)
    assert sorted(episode_costs) == pytest.approx(sorted(per_episode.reshape(-1)))
    assert model.episodes_over_limit == int(np.sum(per_episode > 1.0))
    rows = _read_csv(tmp_path)
    last = next(row for row in reversed(rows) if row["rollout/ep_cost_mean"])
    assert float(last["rollout/ep_cost_mean"]) == pytest.approx(np.mean(episode_costs), rel=1e-4)
    assert float(last["safety/cost_rate"]) >= 0 and last["safety/episodes_over_limit"] != ""
    assert float(rows[-1]["safety/cost_limit"]) == 1.0
    samples = model.replay_buffer.sample(8)
    assert samples.costs.shape == (8, 1)


def test_string_env_ids_resolve_through_the_registry(toy_env_id):
    model = UnconstrainedSAC("MlpPolicy", toy_env_id, **SAC_KWARGS)
    assert model.get_env().envs[0].spec.id == toy_env_id


def test_n_step_uses_the_cost_n_step_buffer(toy_env_id, recwarn):
    model = UnconstrainedSAC("MlpPolicy", toy_env_id, n_steps=3, **SAC_KWARGS)
    assert isinstance(model.replay_buffer, CostNStepReplayBuffer)
    assert model.replay_buffer.n_steps == 3
    assert not [w for w in recwarn if "is ignored because a custom" in str(w.message)]
    model.learn(60)


def test_env_without_cost_fails_at_the_first_step():
    model = UnconstrainedSAC("MlpPolicy", "ToyNoCost-v0", **SAC_KWARGS)
    with pytest.raises(MissingCostError, match="did not report a cost"):
        model.learn(5)
    assert model.num_timesteps <= 1  # the monitor or the algorithm stops the very first step


def test_discrete_actions_rejected_by_continuous_only_algorithm():
    with pytest.raises(TypeError, match=r"UnconstrainedSAC works with continuous.*Box.*Discrete\(3\)"):
        UnconstrainedSAC("MlpPolicy", "ToyDiscrete-v0")


def test_non_cost_replay_buffer_rejected(toy_env_id):
    from stable_baselines3.common.buffers import ReplayBuffer

    with pytest.raises(TypeError, match="needs a replay buffer that stores costs"):
        UnconstrainedSAC("MlpPolicy", toy_env_id, replay_buffer_class=ReplayBuffer)


def test_negative_cost_limit_rejected(toy_env_id):
    with pytest.raises(ValueError, match=">= 0"):
        UnconstrainedSAC("MlpPolicy", toy_env_id, cost_limit=-1.0)


def test_several_constraints_flow_through(tmp_path):
    model = UnconstrainedSAC("MlpPolicy", "ToyTwoCosts-v0", n_costs=2, cost_limit=[1.0, 2.0], **SAC_KWARGS)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(60, log_interval=1)
    assert model.replay_buffer.sample(4).costs.shape == (4, 2)
    row = _read_csv(tmp_path)[-1]
    assert row["safety/cost_limit_0"] == "1.0" and row["safety/cost_limit_1"] == "2.0"


def test_save_load_keeps_the_safety_state(toy_env_id, tmp_path):
    model = UnconstrainedSAC("MlpPolicy", toy_env_id, cost_limit=2.0, seed=1, **SAC_KWARGS)
    model.learn(80)
    model.save(tmp_path / "model")
    loaded = UnconstrainedSAC.load(tmp_path / "model", env=make_vec_env(toy_env_id))
    assert loaded.cumulative_cost == model.cumulative_cost
    assert loaded.episodes_over_limit == model.episodes_over_limit
    np.testing.assert_array_equal(loaded.cost_limit, [2.0])
    obs = np.array([[0.0, 5.0], [2.5, 2.5]], dtype=np.float32)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    loaded.learn(40, reset_num_timesteps=False)
    assert loaded.num_timesteps == 120


def test_on_policy_base_fills_cost_values_and_advantages(toy_env_id, tmp_path):
    env = make_vec_env(toy_env_id, n_envs=2, seed=0)
    model = CostPPO(SafeActorCriticPolicy, env, n_steps=30, batch_size=20, n_epochs=1, cost_limit=1.0, seed=0)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(60)
    buffer = model.rollout_buffer
    assert isinstance(buffer, CostRolloutBuffer)
    # Buffer arrays are flattened by get() during training: (n_steps * n_envs, n_costs).
    assert buffer.costs.shape == (60, 1) and buffer.cost_advantages.shape == (60, 1)
    assert np.all(np.isfinite(buffer.cost_returns))
    assert np.any(buffer.cost_values != 0.0)
    np.testing.assert_allclose(buffer.cost_returns, buffer.cost_advantages + buffer.cost_values, rtol=1e-5, atol=1e-6)
    rows = _read_csv(tmp_path)
    assert any(row.get("rollout/ep_cost_mean") for row in rows)
    assert "safety/episodes_over_limit" in rows[-1]


def test_on_policy_cost_values_match_the_policy_before_training(toy_env_id):
    model = CostPPO(SafeActorCriticPolicy, make_vec_env(toy_env_id, seed=0), n_steps=20, batch_size=20, seed=0)
    model._setup_learn(20)
    from stable_baselines3.common.callbacks import CallbackList

    callback = CallbackList([])
    callback.init_callback(model)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, 20)
    buffer = model.rollout_buffer
    with th.no_grad():
        expected = model.policy.predict_cost_values(th.as_tensor(buffer.observations[:, 0])).numpy()
    np.testing.assert_allclose(buffer.cost_values[:, 0], expected, rtol=1e-5, atol=1e-6)
    # Horizon 20 = rollout length: the last step is a truncation, bootstrapped with gamma * V_c(terminal).
    assert np.all(buffer.costs[:-1, 0] <= 1.0)


def test_on_policy_rejects_a_policy_without_cost_head(toy_env_id):
    with pytest.raises(TypeError, match="cost value head"):
        CostPPO("MlpPolicy", toy_env_id, n_steps=16, batch_size=16, policy_kwargs={})
