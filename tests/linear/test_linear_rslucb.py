"""RSLUCB-QVI: zero violations in expectation on Frozen Lake, sampling, solvers agreeing, save/load, bad input."""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure
from toy_linear_mdp import ToyLinearMDP

import sb3_safe
from sb3_safe.linear.rslucb_qvi import RSLUCBQVI

pytest.importorskip("sb3_safe_frozen_lake")


class _ExpectedCosts(BaseCallback):
    """Records E_{a ~ theta_h(s)} c(s, a) of every decision from the environment's own cost table."""

    def __init__(self, cost_table: np.ndarray) -> None:
        super().__init__()
        self.cost_table, self.expected = cost_table, []

    def _on_step(self) -> bool:
        state, step = self.locals["state"], self.locals["step"]
        theta = self.model.policy.plan.numpy()[step, state]
        self.expected.append(float(theta @ self.cost_table[state]))
        return True


def test_no_expected_cost_above_tau_on_frozen_lake(tmp_path):
    env = sb3_safe.make_env("FrozenLake10x10Safe-v0")
    model = RSLUCBQVI(env, seed=0)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    recorder = _ExpectedCosts(env.unwrapped.cost_table())
    model.learn(2 * 1000, callback=recorder, log_interval=1)
    assert model.episodes == 2 and model.violations == 0
    assert len(recorder.expected) == model.num_timesteps and max(recorder.expected) <= 0.1 + 1e-9
    with open(tmp_path / "progress.csv") as handle:
        row = list(csv.DictReader(handle))[-1]
    for key in (
        "solver/greedy_frac",
        "solver/face_frac",
        "solver/cvxpy_fallbacks",
        "train/beta_safe",
        "train/kappa_max",
    ):
        assert key in row, key
    assert float(row["train/kappa_max"]) == pytest.approx(2 * 1000 / 0.05 + 1)
    assert model.solver_counts["fallbacks_to_safe"] == 0
    # every planned theta is a distribution
    plan = model.policy.plan.numpy()
    np.testing.assert_allclose(plan.sum(-1), 1.0, atol=1e-9)
    assert plan.min() >= 0.0


def test_predict_samples_from_the_plan_and_warns_once_when_asked_to_be_deterministic():
    model = RSLUCBQVI(ToyLinearMDP(), sigma=0.05, c_beta=0.01, seed=0).learn(100, log_interval=0)
    plan = model.policy.plan.numpy()
    obs = {"state": np.zeros(4000, dtype=int), "step": np.zeros(4000, dtype=int)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        actions, _ = model.predict(obs, deterministic=True)
        model.predict(obs, deterministic=True)
    assert sum("still samples" in str(w.message) for w in caught) == 1
    frequencies = np.bincount(actions, minlength=3) / len(actions)
    np.testing.assert_allclose(frequencies, plan[0, 0], atol=0.03)


def test_fast_and_cvxpy_solvers_give_the_same_values_on_the_same_statistics():
    model = RSLUCBQVI(ToyLinearMDP(horizon=3), sigma=0.05, c_beta=0.01, seed=0).learn(60, log_interval=0)
    values, plans = {}, {}
    for solver in ("fast", "cvxpy"):
        model.socp_solver = solver
        model._plan()
        values[solver], plans[solver] = model.planned_values, model.policy.plan.numpy().copy()
    np.testing.assert_allclose(values["fast"], values["cvxpy"], rtol=1e-6, atol=1e-6)
    assert np.abs(values["fast"]).max() > 0.1  # not a trivial comparison
    # both plans are certified: their pessimistic expected cost is at most tau (recomputed here)
    radius, _ = model._beta_values()
    model_cost = model._cost_model(0, 0, full=True)
    for plan in plans.values():
        theta = plan[0]
        spread = np.sqrt(np.maximum(np.einsum("sa,sab,sb->s", theta, model_cost.quadratic, theta), 0.0))
        assert (np.einsum("sa,sa->s", theta, model_cost.linear) + radius[0] * spread <= 0.5 + 1e-7).all()


def test_save_load_round_trip(tmp_path):
    model = RSLUCBQVI(ToyLinearMDP(), sigma=0.05, c_beta=0.01, seed=0).learn(50, log_interval=0)
    model.save(tmp_path / "rslucb.zip")
    loaded = RSLUCBQVI.load(tmp_path / "rslucb.zip")
    for name, tensor in model.policy.state_dict().items():
        np.testing.assert_array_equal(loaded.policy.state_dict()[name].numpy(), tensor.numpy(), err_msg=name)
    assert loaded.policy.randomized and loaded.socp_solver == "fast"
    assert loaded.rng.bit_generator.state == model.rng.bit_generator.state


def test_star_convex_environments_are_rejected():
    with pytest.raises(TypeError, match="SLUCBQVI"):
        RSLUCBQVI(sb3_safe.make_env("LinearMDPSynthetic-v0"))


def test_unknown_solver_is_rejected():
    with pytest.raises(ValueError, match="socp_solver"):
        RSLUCBQVI(ToyLinearMDP(), sigma=0.05, socp_solver="mosek")
