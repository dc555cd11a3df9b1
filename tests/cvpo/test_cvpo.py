"""CVPO as an SB3 algorithm: runs, logs, saves, reloads, resumes bit-identically, and rejects bad input."""

from __future__ import annotations

import csv
from collections import defaultdict

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import CheckpointCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure

from sb3_safe import SafeEvalCallback, make_env, make_vec_env
from sb3_safe.common.costs import MissingCostError
from sb3_safe.cvpo import CVPO
from sb3_safe.cvpo import policies as cvpo_policies
from sb3_safe.cvpo.gaussian import WeightedMoments

FAST = {
    "batch_size": 32,
    "buffer_size": 2000,
    "learning_starts": 40,
    "train_freq": 20,
    "n_samples": 8,
    "policy_kwargs": {"net_arch": [16, 16]},
}
TRAIN_KEYS = (
    "train/eta",
    "train/lambda",
    "train/dual_iters",
    "train/dual_kkt_residual",
    "train/estep_infeasible",
    "train/estep_kl",
    "train/kl_mean",
    "train/kl_cov",
    "train/alpha_mean",
    "train/alpha_cov",
    "train/qc_mean",
    "train/qc_weighted",
    "train/qc_threshold",
    "train/critic_loss",
    "train/cost_critic_loss",
    "train/actor_loss",
    "time/critic_ms",
    "time/estep_q_ms",
    "time/dual_ms",
    "time/mstep_ms",
    "time/target_ms",
    "rollout/ep_cost_mean",
    "rollout/early_terminations",
    "safety/cost_rate",
    "safety/episodes_over_limit",
)


def _csv_keys(folder) -> set[str]:
    with open(folder / "progress.csv") as handle:
        return set(next(csv.reader(handle)))


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_learns_on_the_toy_env_with_two_envs_and_logs_every_key(toy_env_id, tmp_path, covariance):
    env = make_vec_env(toy_env_id, n_envs=2, seed=0)
    kwargs = {**FAST, "policy_kwargs": {"net_arch": [16, 16], "covariance": covariance}}
    model = CVPO("MlpPolicy", env, cost_limit=2.0, seed=0, **kwargs)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(200, log_interval=1)
    missing = set(TRAIN_KEYS) - _csv_keys(tmp_path)
    assert not missing, missing
    # utd 0.2: 200 env steps -> 32 gradient steps after learning_starts (the carry keeps the fraction).
    assert 30 <= model._n_updates <= 34
    duals = model.duals
    assert set(duals) == {"eta", "lambda", "alpha_mean", "alpha_cov"}
    assert np.isfinite(duals["eta"]) and duals["eta"] > 0 and duals["lambda"] >= 0
    # cost_limit 2 per 20-step episode, gamma 0.99: the Q_c threshold (docs/cvpo.md, 'Cost threshold').
    assert model.cost_threshold[0] == pytest.approx(2.0 * (1 - 0.99**20) / (0.01 * 20))


def test_buffer_keeps_raw_samples_and_the_env_gets_clipped_actions(toy_env_id):
    seen: list[np.ndarray] = []

    class RecordActions(gym.Wrapper):
        def step(self, action):
            seen.append(np.array(action))
            return self.env.step(action)

    env = RecordActions(make_env(toy_env_id))
    # A wide initial std makes raw samples fall outside [-1, 1].
    model = CVPO(
        "MlpPolicy",
        env,
        learning_starts=0,
        train_freq=60,
        seed=3,
        **{k: v for k, v in FAST.items() if k not in ("learning_starts", "train_freq")},
    )
    with th.no_grad():
        model.actor.scale_head.bias.fill_(1.5)
    model.learn(60)
    raw = model.replay_buffer.actions[:60, 0, 0]
    sent = np.array(seen)[:, 0]
    assert np.any(np.abs(raw) > 1.0)
    np.testing.assert_allclose(sent, np.clip(raw, -1.0, 1.0), rtol=0, atol=1e-6)
    assert np.all(np.abs(sent) <= 1.0)


def test_save_load_keeps_predictions_duals_and_optimizers(toy_env_id, tmp_path):
    model = CVPO("MlpPolicy", make_vec_env(toy_env_id, n_envs=2, seed=1), cost_limit=1.0, seed=1, **FAST)
    model.learn(200)
    model.alpha_mean, model.alpha_cov = 0.03, 0.7  # make sure non-default values survive
    model.save(tmp_path / "cvpo")
    loaded = CVPO.load(tmp_path / "cvpo", env=make_vec_env(toy_env_id, n_envs=2, seed=1))
    obs = np.array([[0.0, 5.0], [2.5, 2.5], [4.0, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    assert loaded.duals["eta"] == model.duals["eta"] and loaded.duals["lambda"] == model.duals["lambda"]
    assert (loaded.alpha_mean, loaded.alpha_cov) == (0.03, 0.7)
    assert loaded.estep_warm_start == model.estep_warm_start
    np.testing.assert_array_equal(loaded.cost_threshold, model.cost_threshold)
    for name in ("actor", "critic", "cost_critics"):
        original = getattr(model, name).optimizer.state_dict()["state"]
        restored = getattr(loaded, name).optimizer.state_dict()["state"]
        assert original.keys() == restored.keys() and original
        for key in original:
            th.testing.assert_close(original[key]["exp_avg"], restored[key]["exp_avg"], rtol=0, atol=0)


def _snapshot(model: CVPO) -> dict:
    return {
        "params": {k: v.clone() for k, v in model.policy.state_dict().items()},
        "duals": dict(model.duals),
        "adam": [getattr(model, n).optimizer.state_dict()["state"] for n in ("actor", "critic", "cost_critics")],
    }


def test_next_gradient_step_after_save_load_is_bit_identical(toy_env_id, tmp_path):
    model = CVPO("MlpPolicy", make_vec_env(toy_env_id, seed=2), cost_limit=1.0, seed=2, **FAST)
    model.learn(120)
    model.save(tmp_path / "cvpo")
    model.save_replay_buffer(tmp_path / "buffer")
    loaded = CVPO.load(tmp_path / "cvpo", env=make_vec_env(toy_env_id, seed=2))
    loaded.load_replay_buffer(tmp_path / "buffer")
    loaded.set_logger(model.logger)
    snapshots = []
    for candidate in (model, loaded):
        np.random.seed(123)
        th.manual_seed(123)
        candidate.train(gradient_steps=5, batch_size=32)
        snapshots.append(_snapshot(candidate))
    original, resumed = snapshots
    assert original["duals"] == resumed["duals"]
    for key, value in original["params"].items():
        assert th.equal(value, resumed["params"][key]), key
    for state_a, state_b in zip(original["adam"], resumed["adam"], strict=True):
        for key in state_a:
            assert th.equal(state_a[key]["exp_avg_sq"], state_b[key]["exp_avg_sq"])


def test_same_seed_gives_identical_actions_and_losses(toy_env_id, tmp_path):
    results = []
    for run in range(2):
        model = CVPO("MlpPolicy", make_vec_env(toy_env_id, seed=5), cost_limit=1.0, seed=5, **FAST)
        model.set_logger(configure(str(tmp_path / str(run)), ["csv"]))
        model.learn(120, log_interval=1)
        obs = np.array([[1.0, 4.0]], dtype=np.float32)
        results.append((model.predict(obs, deterministic=True)[0], (tmp_path / str(run) / "progress.csv").read_text()))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    strip_times = [
        [line.split(",") for line in text.splitlines()] for _, text in results
    ]  # the CSV holds losses and duals; timings differ between runs
    header = strip_times[0][0]
    keep = [i for i, key in enumerate(header) if key.startswith("train/")]
    assert [[row[i] for i in keep] for row in strip_times[0][1:]] == [
        [row[i] for i in keep] for row in strip_times[1][1:]
    ]


def test_works_with_sb3_tools(toy_env_id, tmp_path):
    model = CVPO("MlpPolicy", toy_env_id, cost_limit=1.0, **FAST)
    checkpoint = CheckpointCallback(save_freq=50, save_path=str(tmp_path / "ckpt"), name_prefix="cvpo")
    safe_eval = SafeEvalCallback(make_env(toy_env_id), cost_limit=1.0, eval_freq=50, n_eval_episodes=2, verbose=0)
    model.learn(100, callback=[checkpoint, safe_eval])
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["cvpo_100_steps.zip", "cvpo_50_steps.zip"]
    assert safe_eval.last_result is not None
    mean_reward, _ = evaluate_policy(model, make_env(toy_env_id), n_eval_episodes=2)
    assert np.isfinite(mean_reward)
    reloaded = CVPO.load(tmp_path / "ckpt" / "cvpo_100_steps.zip")
    assert reloaded.num_timesteps == 100  # saved during step 100's callback, before that rollout's training
    assert np.isfinite(reloaded.duals["eta"]) and reloaded.predict(np.zeros((1, 2), np.float32))[0].shape == (1, 1)


def test_non_finite_q_values_skip_the_update(toy_env_id, tmp_path):
    model = CVPO("MlpPolicy", toy_env_id, cost_limit=1.0, **FAST)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(60)
    actor_before = {k: v.clone() for k, v in model.actor.state_dict().items()}
    duals_before = dict(model.duals)
    with th.no_grad():
        next(model.critic_target.parameters()).fill_(float("nan"))
    with pytest.warns(RuntimeWarning, match=r"skipped an E/M-step.*(NaN|non-finite)"):
        model._policy_step(model.replay_buffer.sample(16).observations, stats := defaultdict(list))
    assert model.duals == duals_before
    for key, value in model.actor.state_dict().items():
        assert th.equal(value, actor_before[key])
    assert stats["train/estep_skipped"] == [1.0]


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"env": "ToyDiscrete-v0"}, TypeError, r"CVPO works with continuous.*Box.*Discrete"),
        ({"cost_limit": -1.0}, ValueError, r">= 0"),
        ({"estep_kl": 0.0}, ValueError, r"KL bounds must be > 0"),
        ({"kl_mean": -1.0}, ValueError, r"KL bounds must be > 0"),
        ({"n_samples": 1}, ValueError, r"n_samples \(K\) must be >= 2"),
        ({"utd_ratio": 0.5, "gradient_steps": 3}, ValueError, r"either utd_ratio .* or gradient_steps"),
        ({"policy_kwargs": {"cost_critic_reduce": "min"}}, ValueError, r"optimistic.*unsafe"),
        ({"env": "ToyNoHorizon-v0"}, ValueError, r"episode length .* not known"),
        ({"old_policy": "copy"}, ValueError, r"old_policy must be one of"),
    ],
)
def test_bad_input_is_rejected_clearly(toy_env_id, kwargs, error, pattern):
    arguments = {"policy": "MlpPolicy", "env": toy_env_id, **kwargs}
    with pytest.raises(error, match=pattern):
        CVPO(**arguments)


def test_env_without_cost_fails_at_the_first_step():
    model = CVPO("MlpPolicy", "ToyNoCost-v0", **FAST)
    with pytest.raises(MissingCostError, match="did not report a cost"):
        model.learn(10)


def test_explicit_episode_length_for_an_env_without_horizon():
    model = CVPO("MlpPolicy", "ToyNoHorizon-v0", episode_length=50, cost_limit=5.0, **FAST)
    assert model.episode_length == 50


def test_two_thousand_steps_on_a_real_task_with_two_envs(tmp_path):
    env = make_vec_env("SafetyPointGoal1-v0", n_envs=2, seed=0, env_kwargs={"fast_reset": True})
    model = CVPO(
        "MlpPolicy", env, cost_limit=25.0, batch_size=64, learning_starts=200, policy_kwargs={"net_arch": [64, 64]}
    )
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(2000, log_interval=1)
    assert model.num_timesteps == 2000
    assert model.episode_length == 1000
    missing = set(TRAIN_KEYS) - _csv_keys(tmp_path)
    assert not missing, missing
    assert len(model.ep_info_buffer) == 2


@pytest.mark.parametrize(("n_cost_critics", "rows_per_chunk"), [(1, 2048), (3, 2048), (1, 10), (3, 1)])
def test_estep_sample_evaluation_matches_the_plain_critics(toy_env_id, n_cost_critics, rows_per_chunk, monkeypatch):
    # rows_per_chunk 10 splits the 4 samples of 5 states into chunks of 2 samples; 1 gives one sample per chunk.
    monkeypatch.setattr(cvpo_policies, "SAMPLE_ROWS_PER_CHUNK", rows_per_chunk)
    kwargs = {**FAST, "policy_kwargs": {"net_arch": [16, 16], "n_cost_critics": n_cost_critics}}
    policy = CVPO("MlpPolicy", "ToyTwoCosts-v0", n_costs=2, cost_limit=[1.0, 1.0], **kwargs).policy
    obs = th.randn(5, 2)
    samples = th.randn(4, 5, 1)
    q_reward, q_cost = policy.evaluate_samples(obs, samples)
    flat_obs, flat_actions = obs.repeat(4, 1), samples.reshape(-1, 1)
    expected_reward = policy.reward_q(flat_obs, flat_actions, target=True).reshape(4, 5).T
    expected_cost = policy.cost_q(flat_obs, flat_actions, target=True).reshape(2, 4, 5).transpose(1, 2)
    assert not q_reward.requires_grad
    th.testing.assert_close(q_reward, expected_reward)
    th.testing.assert_close(q_cost, expected_cost)


def _greedy_mstep_run(alpha_mean_max: float, alpha_cov_max: float, iterations: int = 300) -> tuple[CVPO, dict]:
    """M-steps on one fixed batch whose weights put all mass on each state's largest sampled action."""
    th.manual_seed(0)
    model = CVPO(
        "MlpPolicy",
        "ToyConstrained-v0",
        learning_rate=1e-3,
        alpha_mean_max=alpha_mean_max,
        alpha_cov_max=alpha_cov_max,
        policy_kwargs={"net_arch": [32, 32]},
    )
    obs = th.randn(64, 2)
    with th.no_grad():
        old = model.actor_target.distribution(obs)
        samples = old.sample(16)
    weights = th.zeros(16, 64)
    weights[samples[..., 0].argmax(0), th.arange(64)] = 1.0
    stats: dict = defaultdict(list)
    moments = WeightedMoments.of(samples, weights, full=False)
    for _ in range(iterations):
        model._mstep(obs, old, old.precision_factor(), moments, stats)
    return model, stats


def test_mstep_keeps_the_kls_within_their_bounds_on_a_fixed_batch():
    model, stats = _greedy_mstep_run(alpha_mean_max=100.0, alpha_cov_max=1e4)
    assert max(stats["train/kl_mean"][-50:]) <= 1.1 * model.kl_mean
    assert max(stats["train/kl_cov"][-50:]) <= 1.1 * model.kl_cov
    assert all(0.0 <= a <= 100.0 for a in stats["train/alpha_mean"])
    assert all(0.0 <= a <= 1e4 for a in stats["train/alpha_cov"])
    # Without the trust-region multipliers the same pull leaves the bounds far behind.
    _, unconstrained = _greedy_mstep_run(alpha_mean_max=0.0, alpha_cov_max=0.0)
    assert max(unconstrained["train/kl_mean"][-50:]) > 10 * model.kl_mean


def test_bellman_targets_bootstrap_truncations_mask_terminations_and_reduce_cost_ensembles_by_max():
    from sb3_safe.common.buffers import CostReplayBufferSamples

    kwargs = {**FAST, "policy_kwargs": {"net_arch": [16, 16], "n_cost_critics": 3}}
    model = CVPO("MlpPolicy", "ToyTwoCosts-v0", n_costs=2, cost_limit=[1.0, 1.0], **kwargs)
    batch = 4
    data = CostReplayBufferSamples(
        observations=th.randn(batch, 2),
        actions=th.randn(batch, 1),
        next_observations=th.randn(batch, 2),
        dones=th.tensor([[1.0], [0.0], [0.0], [1.0]]),
        rewards=th.randn(batch, 1),
        costs=th.rand(batch, 2),
        discounts=th.tensor([[0.5], [0.25], [0.9], [0.9]]),
    )
    th.manual_seed(7)
    target_q, target_qc = model._bellman_targets(data)
    th.manual_seed(7)
    with th.no_grad():
        next_actions = model.actor(data.next_observations)
        q_next = (
            th.cat(model.critic_target(data.next_observations, next_actions), dim=1).min(dim=1, keepdim=True).values
        )
        qc_next = [
            th.cat(critic(data.next_observations, next_actions), dim=1).max(dim=1, keepdim=True).values
            for critic in model.cost_critics_target
        ]
    bootstrap = (1.0 - data.dones) * data.discounts
    th.testing.assert_close(target_q, data.rewards + bootstrap * q_next)
    for j in range(2):
        th.testing.assert_close(target_qc[j], data.costs[:, j : j + 1] + bootstrap * qc_next[j])
    th.testing.assert_close(target_q[[0, 3]], data.rewards[[0, 3]])  # terminated: no bootstrap


def test_two_constraints_train_with_one_multiplier_each(tmp_path):
    model = CVPO("MlpPolicy", "ToyTwoCosts-v0", n_costs=2, cost_limit=[1.0, 3.0], **FAST)
    assert "n_constraints" not in FAST["policy_kwargs"]  # the caller's dict is left alone
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(120, log_interval=1)
    assert model.duals["lambda"].shape == (2,)
    assert model.cost_threshold.shape == (2,) and model.cost_threshold[1] > model.cost_threshold[0]
    keys = _csv_keys(tmp_path)
    assert {
        "train/lambda_0",
        "train/lambda_1",
        "train/qc_mean_1",
        "train/qc_threshold_1",
        "train/cost_critic_loss_1",
    } <= keys


def test_multi_input_policy_on_dict_observations():
    space = gym.spaces.Dict({"x": gym.spaces.Box(-10.0, 10.0, (2,), np.float32)})
    env = gym.wrappers.TransformObservation(make_env("ToyConstrained-v0"), lambda obs: {"x": obs}, space)
    model = CVPO("MultiInputPolicy", env, **{**FAST, "policy_kwargs": {"net_arch": [16]}})
    model.learn(80)
    action, _ = model.predict({"x": np.zeros(2, np.float32)}, deterministic=True)
    assert action.shape == (1,) and model._n_updates > 0


def test_adam_is_fused_by_default_and_the_callers_choice_wins(toy_env_id, tmp_path):
    model = CVPO("MlpPolicy", toy_env_id, **FAST)
    for optimizer in (model.actor.optimizer, model.critic.optimizer, model.cost_critics.optimizer):
        assert optimizer.param_groups[0]["fused"] is True
    model.save(tmp_path / "model.zip")
    assert CVPO.load(tmp_path / "model.zip").actor.optimizer.param_groups[0]["fused"] is True
    unfused = CVPO("MlpPolicy", toy_env_id, **{**FAST, "policy_kwargs": {"optimizer_kwargs": {"foreach": False}}})
    assert not unfused.actor.optimizer.param_groups[0]["fused"]
    sgd = CVPO("MlpPolicy", toy_env_id, **{**FAST, "policy_kwargs": {"optimizer_class": th.optim.SGD}})
    assert "fused" not in sgd.policy.optimizer_kwargs
