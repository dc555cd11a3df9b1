"""PPO-Lagrangian: the multiplier follows the episode costs, the Lagrangian surrogate, logging and save/load."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.logger import configure

from sb3_safe import make_vec_env
from sb3_safe.common.buffers import CostRolloutBufferSamples
from sb3_safe.lagrangian.ppo_lag import PPOLag

th.set_num_threads(1)

FAST = {"n_steps": 20, "batch_size": 20, "n_epochs": 1, "policy_kwargs": {"net_arch": [16]}, "seed": 0}


def _toy_model(env_id: str, n_envs: int = 2, **kwargs) -> PPOLag:
    return PPOLag("MlpPolicy", make_vec_env(env_id, n_envs=n_envs, seed=0), **{**FAST, **kwargs})


def _read_csv(folder) -> list[dict[str, str]]:
    with open(folder / "progress.csv") as handle:
        return list(csv.DictReader(handle))


def test_lambda_rises_above_the_limit_and_stays_zero_far_below(toy_env_id):
    over = _toy_model(toy_env_id, cost_limit=0.0, lagrange_lr=0.1).learn(600)
    under = _toy_model(toy_env_id, cost_limit=100.0, lagrange_lr=0.1).learn(600)
    assert over.cumulative_cost > 0  # the random walk crosses the hazard
    assert over.duals["lambda"][0] > 0.3
    np.testing.assert_array_equal(under.duals["lambda"], [0.0])


def test_lambda_returns_to_zero_when_costs_are_far_below_the_limit(toy_env_id):
    model = _toy_model(toy_env_id, cost_limit=100.0, lagrange_init=1.0, lagrange_lr=0.2)
    np.testing.assert_array_equal(model.duals["lambda"], [1.0])
    model.learn(800)
    np.testing.assert_array_equal(model.duals["lambda"], [0.0])


def test_update_hook_uses_this_rollouts_episodes_then_the_recent_window(toy_env_id):
    model = _toy_model(toy_env_id, cost_limit=5.0)
    assert model._update_lambda() is None  # no episode yet: no step
    np.testing.assert_array_equal(model.duals["lambda"], [0.0])
    window = model.episode_cost_window
    window.recent.extend([np.array([30.0])] * 3)
    window.pending = [np.array([10.0]), np.array([20.0])]
    np.testing.assert_allclose(model._update_lambda(), [15.0])
    assert window.pending == []  # used once
    for _ in range(30):
        model._update_lambda()
    risen = model.duals["lambda"][0]
    assert risen == pytest.approx(31 * 0.035, rel=0.05)  # Adam: about lr per step while the sign holds
    window.recent.clear()  # none ended: the window (cost 0 now) is used
    window.recent.append(np.array([0.0]))
    np.testing.assert_allclose(model._update_lambda(), [0.0])
    for _ in range(200):
        model._update_lambda()
    np.testing.assert_array_equal(model.duals["lambda"], [0.0])


def test_rollout_episode_costs_match_the_episode_infos(toy_env_id):
    model = _toy_model(toy_env_id, cost_limit=1.0)
    model.learn(40)  # one rollout of 20 steps x 2 envs: both episodes (horizon 20) end in it
    window = list(model.episode_cost_window.recent)
    assert len(window) == 2
    costs_from_infos = sorted(info["c"] for info in model.ep_info_buffer)
    assert sorted(float(c[0]) for c in window) == pytest.approx(costs_from_infos)


def test_combined_advantage_formula(toy_env_id):
    model = _toy_model(toy_env_id, n_envs=1, cost_limit=1.0, n_costs=1)
    adv_r = th.tensor([1.0, -1.0, 3.0, 0.0])
    adv_c = th.tensor([[2.0], [0.0], [1.0], [5.0]])
    zeros = th.zeros(4)
    data = CostRolloutBufferSamples(zeros, zeros, zeros, zeros, adv_r, zeros, adv_c, adv_c, adv_c)
    lam = th.tensor([0.5])
    model.normalize_advantage = False
    np.testing.assert_allclose(model._combined_advantage(data, lam), (adv_r - 0.5 * adv_c[:, 0]) / 1.5, rtol=1e-6)
    model.normalize_advantage = True
    expected = ((adv_r - adv_r.mean()) / (adv_r.std() + 1e-8) - 0.5 * (adv_c[:, 0] - adv_c.mean())) / 1.5
    np.testing.assert_allclose(model._combined_advantage(data, lam), expected, rtol=1e-5)


def test_two_constraints_and_discrete_actions(tmp_path):
    model = _toy_model("ToyTwoCosts-v0", n_costs=2, cost_limit=[0.0, 100.0], lagrange_lr=0.1)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(200)
    lam = model.duals["lambda"]
    assert lam.shape == (2,) and lam[0] > 0 and lam[1] == 0
    row = _read_csv(tmp_path)[-1]
    assert {"train/lambda_0", "train/lambda_1", "train/ep_cost_for_lambda_1"} <= set(row)
    discrete = _toy_model("ToyDiscrete-v0", cost_limit=0.0, lagrange_method="pid").learn(100)
    assert discrete.duals["lambda"][0] > 0


def test_safety_point_goal_logs_the_lagrangian_keys(tmp_path):
    env = make_vec_env("SafetyPointGoal1-v0", n_envs=2, seed=0, env_kwargs={"fast_reset": True})
    model = PPOLag("MlpPolicy", env, cost_limit=25.0, n_steps=100, batch_size=100, n_epochs=1, seed=0,
                   policy_kwargs={"net_arch": [16]})  # fmt: skip
    model.set_logger(configure(str(tmp_path), ["csv"]))
    # Episodes last 1000 steps: the first ones end at 2000 steps, whose lambda update is logged at the next dump.
    model.learn(2200)
    rows = _read_csv(tmp_path)
    last = rows[-1]
    for key in ("train/lambda", "train/cost_value_loss", "train/ep_cost_for_lambda", "rollout/ep_cost_mean",
                "safety/cost_rate", "safety/cost_limit", "safety/episodes_over_limit"):  # fmt: skip
        assert last.get(key, "") != "", key
    assert float(last["train/cost_value_loss"]) >= 0
    assert float(last["train/ep_cost_for_lambda"]) == pytest.approx(float(last["rollout/ep_cost_mean"]))


def test_save_load_restores_policy_and_multiplier(toy_env_id, tmp_path):
    model = _toy_model(toy_env_id, cost_limit=0.0, lagrange_lr=0.1).learn(200)
    assert model.duals["lambda"][0] > 0
    model.save(tmp_path / "ppo_lag")
    loaded = PPOLag.load(tmp_path / "ppo_lag", env=make_vec_env(toy_env_id, n_envs=2, seed=1))
    np.testing.assert_array_equal(loaded.duals["lambda"], model.duals["lambda"])
    assert loaded.lagrange.updates == model.lagrange.updates
    adam_step = loaded.lagrange.optimizer.state_dict()["state"][0]["step"]
    assert float(adam_step) == float(model.lagrange.optimizer.state_dict()["state"][0]["step"])
    np.testing.assert_array_equal(loaded.cost_limit, [0.0])
    obs = np.array([[0.0, 5.0], [2.5, 2.5], [4.0, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    loaded.learn(40, reset_num_timesteps=False)
    assert loaded.num_timesteps == 240


def test_cost_limit_is_required_and_non_negative(toy_env_id):
    with pytest.raises(ValueError, match="needs a per-episode cost_limit"):
        PPOLag("MlpPolicy", toy_env_id, **FAST)
    with pytest.raises(ValueError, match=">= 0"):
        PPOLag("MlpPolicy", toy_env_id, cost_limit=-1.0, **FAST)
    with pytest.raises(ValueError, match="lagrange_lr"):
        PPOLag("MlpPolicy", toy_env_id, cost_limit=1.0, lagrange_kwargs={"learning_rate": 0.1}, **FAST)


def test_with_lambda_zero_the_update_is_sb3_ppo(toy_env_id):
    """lambda = 0 and no cost value loss: the same parameters as SB3's PPO after the same rollouts."""
    from stable_baselines3 import PPO

    from sb3_safe.common.on_policy import SafeOnPolicyAlgorithm
    from sb3_safe.common.policies import SafeActorCriticPolicy

    class CostPPO(SafeOnPolicyAlgorithm, PPO):
        pass

    kwargs = {**FAST, "n_epochs": 3, "batch_size": 10, "clip_range_vf": 0.3, "cost_limit": 100.0}
    reference = CostPPO(SafeActorCriticPolicy, make_vec_env(toy_env_id, n_envs=2, seed=0), **kwargs).learn(120)
    model = _toy_model(toy_env_id, cost_vf_coef=0.0, **kwargs).learn(120)
    assert model.duals["lambda"][0] == 0.0
    theirs = reference.policy.state_dict()
    for name, ours in model.policy.state_dict().items():
        th.testing.assert_close(ours, theirs[name], rtol=1e-5, atol=1e-6, msg=name)
