"""LSVI-UCB on the frozen-lake plugin's real environments (finite actions, and star-convex feature sets)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from stable_baselines3.common.logger import configure

import sb3_safe
from sb3_safe.linear import LSVIUCB, linear_mdp_spec

pytest.importorskip("sb3_safe_frozen_lake")


def test_frozen_lake_spec_is_pooled_and_the_oracle_never_violates():
    model = LSVIUCB(sb3_safe.make_env("FrozenLake10x10Safe-v0"), safety="known", seed=0)
    assert model.spec.kind == "finite" and model.share_across_h and model.stats.n_groups == 1
    assert (model.spec.n_states, model.spec.n_candidates, model.spec.feature_dim) == (100, 4, 100)
    assert len(model.spec.boundary_states()) == 6
    model.learn(2 * 1000, log_interval=0)
    assert model.violations == 0 and model.episodes == 2  # K = 2 episodes, shorter if a slip ends one in a hole
    assert model.stats.n[0] == model.num_timesteps <= 2000


def test_unconstrained_lsvi_ucb_violates_on_frozen_lake_and_logs_the_three_return_scales(tmp_path):
    model = LSVIUCB(sb3_safe.make_env("FrozenLake10x10Safe-v0"), seed=0)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(1000)
    assert model.violations > 0
    with open(tmp_path / "progress.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    summary = model._episode_summaries[-1]
    assert float(row["rollout/ep_return_task"]) == pytest.approx(summary["return_task"])
    # CISR scale: 6 on success, -0.01 per step before the goal or a hole (here the agent fails or wanders)
    steps = summary["steps"]
    assert -0.01 * steps - 1e-9 <= float(row["rollout/ep_return_cisr"]) <= 6.0
    assert float(row["rollout/ep_return"]) == pytest.approx(float(row["rollout/ep_rew_mean"]))


def test_synthetic_segments_per_step_statistics_and_actions_on_the_segments():
    env = sb3_safe.make_env("LinearMDPSynthetic-v0", seed=1)
    spec = linear_mdp_spec(env)
    assert spec.kind == "segments" and not spec.time_homogeneous
    assert spec.candidates.shape == (spec.n_states, 101, spec.feature_dim)
    oracle = LSVIUCB(env, safety="known", c_beta=0.01, seed=0).learn(300 * spec.horizon, log_interval=0)
    assert oracle.stats.n_groups == spec.horizon and oracle.violations == 0
    free = LSVIUCB(sb3_safe.make_env("LinearMDPSynthetic-v0", seed=1), c_beta=0.01, seed=0)
    free.learn(300 * spec.horizon, log_interval=0)
    assert free.violations > 0
    # every planned action is a point of D(s): phi_0 + alpha (x_i - phi_0) with alpha in [0, 1]
    plan = oracle.policy.plan.numpy()  # (H, n_states, d)
    for h in range(spec.horizon):
        for s in range(spec.n_states):
            direction = spec.candidates[s, 1:] - spec.safe_features[s]
            offset = plan[h, s] - spec.safe_features[s]
            alphas = (direction @ offset) / np.maximum((direction**2).sum(-1), 1e-300)
            residual = np.linalg.norm(offset[None] - alphas[:, None] * direction, axis=1)
            on_segment = (residual < 1e-9) & (alphas > -1e-9) & (alphas < 1 + 1e-9)
            assert on_segment.any() or np.linalg.norm(offset) < 1e-12
