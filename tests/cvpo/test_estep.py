"""CVPO E-step dual solvers (sb3_safe.cvpo.estep; docs/cvpo.md, 'E-step' to 'Infeasible E-step')."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch as th
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp, softmax

from sb3_safe.cvpo import estep
from sb3_safe.cvpo.estep import (
    EStepSolution,
    EStepWarmStart,
    NonFiniteQError,
    estep_dual_objective,
    reference,
    solve_estep,
    solve_estep_dual,
)

EPS = 0.05
B, K = 48, 12  # small enough for the cvxpy reference (~50 ms a solve)


def make_instance(
    seed: int, kind: str | tuple[str, ...], m: int = 1, batch: int = B, n_samples: int = K
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float64 (Q_r (B, K), Q_c (m, B, K), thresholds (m,)) with per-state offsets and correlated costs.

    ``kind`` per constraint: "slack" (no reweighting can exceed the threshold), "active" (the reward-optimal
    weights exceed it, the uniform weights meet it) or "infeasible" (even the cost-minimising weights in the KL ball
    exceed it).
    """
    rng = np.random.default_rng(seed)
    kinds = (kind,) * m if isinstance(kind, str) else kind
    advantage = rng.normal(size=(batch, n_samples))
    q_reward = 3.0 * rng.normal(size=(batch, 1)) + advantage
    q_cost = np.empty((m, batch, n_samples))
    thresholds = np.empty(m)
    for j, which in enumerate(kinds):
        rho = 0.7 - 0.2 * j
        within = rho * advantage + math.sqrt(1 - rho**2) * rng.normal(size=(batch, n_samples))
        q_cost[j] = 2.0 + 0.3 * rng.normal(size=(batch, 1)) + within
        mean = q_cost[j].mean()
        thresholds[j] = {"slack": q_cost[j].max() + 1.0, "active": mean + 0.05, "infeasible": mean - 1.0}[which]
    return q_reward, q_cost, thresholds


def softmax_weights(q_reward: np.ndarray, q_cost: np.ndarray, eta: float, lam: np.ndarray) -> np.ndarray:
    """softmax_i((Q_r - sum_j lam_j Q_c,j) / eta), computed independently in numpy."""
    return softmax((q_reward - np.tensordot(np.atleast_1d(lam), q_cost, axes=1)) / eta, axis=1)


def cost_only_reference(q_cost: np.ndarray, eps: float) -> tuple[float, np.ndarray]:
    """eta_c = argmin_eta eta*eps + eta*mean_s log mean_i exp(-Q_c/eta) and its weights (independent of estep)."""

    def dual(log_eta: float) -> float:
        eta = math.exp(log_eta)
        return eta * eps + eta * float(np.mean(logsumexp(-q_cost / eta, axis=1) - math.log(q_cost.shape[1])))

    res = minimize_scalar(dual, bounds=(math.log(1e-6), math.log(1e5)), method="bounded", options={"xatol": 1e-12})
    eta_c = math.exp(res.x)
    return eta_c, softmax(-q_cost / eta_c, axis=1)


def assert_close_rel(actual: np.ndarray | float, expected: np.ndarray | float, rel: float, atol: float) -> None:
    actual, expected = np.atleast_1d(actual), np.atleast_1d(expected)
    assert np.all(np.abs(actual - expected) <= rel * np.abs(expected) + atol), (actual, expected)


# --------------------------------------------------------------------------------------------------------------------
# Agreement with the exact exponential-cone program and KKT conditions
# --------------------------------------------------------------------------------------------------------------------

REFERENCE_CASES = [
    (0, "slack", 1),
    (1, "active", 1),
    (2, "active", 1),
    (3, "active", 2),
    (4, ("active", "slack"), 2),
    (5, ("slack", "active"), 2),
]


@pytest.mark.parametrize(("seed", "kind", "m"), REFERENCE_CASES)
def test_newton_matches_cvxpy(seed: int, kind: str | tuple[str, ...], m: int) -> None:
    q_reward, q_cost, thresholds = make_instance(seed, kind, m)
    eta, lam, info = solve_estep_dual(q_reward, q_cost, EPS, thresholds, return_info=True)
    eta_ref, lam_ref, ref = solve_estep_dual(q_reward, q_cost, EPS, thresholds, "cvxpy", return_info=True)
    kinds = (kind,) * m if isinstance(kind, str) else kind
    for which, value in zip(kinds, np.atleast_1d(lam_ref), strict=True):
        assert (value > 1e-3) == (which == "active"), "the instance is not of the intended kind"
    assert info.converged and not info.infeasible and ref.solver == "cvxpy"
    assert_close_rel(eta, eta_ref, 1e-5, 0.0)
    assert_close_rel(lam, lam_ref, 1e-5, 1e-6)
    assert info.dual_objective <= ref.dual_objective + 1e-9 * abs(ref.dual_objective)
    assert info.dual_objective == pytest.approx(ref.dual_objective, rel=1e-8)
    # the reported objective is g at the returned point
    assert info.dual_objective == pytest.approx(estep_dual_objective(q_reward, q_cost, EPS, thresholds, eta, lam))


@pytest.mark.parametrize(("seed", "kind", "m"), REFERENCE_CASES)
def test_kkt_conditions(seed: int, kind: str | tuple[str, ...], m: int) -> None:
    q_reward, q_cost, thresholds = make_instance(seed, kind, m)
    solution = solve_estep(th.as_tensor(q_reward), th.as_tensor(q_cost), EPS, thresholds)
    assert 1e-6 < solution.eta < 1e5  # interior: the trust region binds
    assert abs(solution.estep_kl - EPS) <= 1e-6 * EPS
    for j in range(m):
        tol = 1e-6 * (1 + abs(thresholds[j]))
        if solution.lam[j] > 0:
            assert abs(solution.qc_weighted[j] - thresholds[j]) <= tol
        else:
            assert solution.qc_weighted[j] <= thresholds[j] + tol
    assert solution.kkt_residual <= 1e-6


def test_slsqp_is_close_with_its_loose_tolerance() -> None:
    """The faithful SLSQP (finite differences, absolute ftol 1e-3, 10 iterations) lands near the optimum."""
    for seed in (1, 2, 3):
        q_reward, q_cost, thresholds = make_instance(seed, "active")
        _, lam_exact, exact = solve_estep_dual(q_reward, q_cost, EPS, thresholds, return_info=True)
        _, lam, info = solve_estep_dual(q_reward, q_cost, EPS, thresholds, "slsqp", return_info=True)
        assert info.solver == "slsqp" and info.iterations <= 10 and not info.infeasible
        gap = (info.dual_objective - exact.dual_objective) / max(abs(exact.dual_objective), q_reward.std())
        assert -1e-12 <= gap <= 1e-3
        assert_close_rel(lam, lam_exact, 3e-2, 0.0)
        # warm-started at the exact solution it stays there
        warm = solve_estep_dual(q_reward, q_cost, EPS, thresholds, "slsqp", init=exact.warm_start, return_info=True)
        assert warm[2].dual_objective - exact.dual_objective <= 1e-6 * abs(exact.dual_objective)


def test_cvxpy_program_is_compiled_once_per_shape() -> None:
    q_reward, q_cost, thresholds = make_instance(1, "active")
    solve_estep_dual(q_reward, q_cost, EPS, thresholds, "cvxpy")
    program = reference._EXP_CONE_CACHE[(B, K, 1)]
    assert program.problem.is_dpp()
    solve_estep_dual(q_reward + 1.0, q_cost, EPS, thresholds, "cvxpy")
    assert reference._EXP_CONE_CACHE[(B, K, 1)] is program


def test_derivatives_match_finite_differences() -> None:
    q_reward, q_cost, thresholds = make_instance(3, "active", m=2)
    problem = estep._prepare(q_reward, q_cost, EPS, thresholds, (1e-6, 1e5), (0.0, 1e5), 1e-6, 50)
    dual = estep._DualPass(problem.features, problem.qr, problem.eps, problem.eps1_shifted)
    x = [1.3, 0.4, 0.7]

    def g(point: list[float]) -> float:
        return estep_dual_objective(q_reward, q_cost, EPS, thresholds, point[0], point[1:])

    dual.value(x)
    grad, _ = dual.gradient(x)
    hess = np.array(dual.hessian(x))
    h = 1e-5
    for a in range(3):
        step = np.eye(3)[a] * h
        numeric = (g(list(x + step)) - g(list(x - step))) / (2 * h)
        assert grad[a] == pytest.approx(numeric, rel=1e-6, abs=1e-8)
        dual.value(list(x + step))
        grad_plus, _ = dual.gradient(list(x + step))
        dual.value(list(x - step))
        grad_minus, _ = dual.gradient(list(x - step))
        np.testing.assert_allclose(
            hess[a], (np.array(grad_plus) - np.array(grad_minus)) / (2 * h), rtol=1e-5, atol=1e-8
        )
    assert np.all(np.linalg.eigvalsh(hess) >= 0)


# --------------------------------------------------------------------------------------------------------------------
# Warm starts, infeasibility, no lambda doubling
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "m"), [("active", 1), ("slack", 1), ("active", 2)])
def test_warm_start_converges_in_few_iterations(kind: str, m: int) -> None:
    q_reward, q_cost, thresholds = make_instance(7, kind, m, batch=256, n_samples=16)
    rng = np.random.default_rng(0)
    solution = solve_estep(th.as_tensor(q_reward), th.as_tensor(q_cost), EPS, thresholds)
    for _ in range(5):
        q_reward = q_reward + 0.01 * rng.normal(size=q_reward.shape)
        q_cost = q_cost + 0.01 * rng.normal(size=q_cost.shape)
        solution = solve_estep(th.as_tensor(q_reward), th.as_tensor(q_cost), EPS, thresholds, init=solution.warm_start)
        assert solution.converged and solution.iterations <= 5


def test_infeasible_instance_returns_cost_minimising_weights() -> None:
    q_reward, q_cost, thresholds = make_instance(11, "infeasible")
    init = EStepWarmStart.initial(2.5, 0.75)
    solution = solve_estep(th.as_tensor(q_reward), th.as_tensor(q_cost), EPS, thresholds, init=init)
    assert solution.infeasible and not solution.feasible and not solution.degenerate
    assert solution.lam.tolist() == [1e5]
    eta_c, weights_ref = cost_only_reference(q_cost[0], EPS)
    assert solution.eta == pytest.approx(eta_c, rel=1e-5)
    np.testing.assert_allclose(solution.weights.numpy(), weights_ref, rtol=1e-5, atol=1e-9)
    assert solution.c_min is not None and solution.c_min[0] > thresholds[0]
    assert solution.c_min[0] == pytest.approx(float(np.mean(np.sum(weights_ref * q_cost[0], axis=1))), rel=1e-6)
    # the recovery is the cost minimiser inside the KL ball
    assert solution.estep_kl == pytest.approx(EPS, rel=1e-5)
    assert solution.qc_weighted[0] == pytest.approx(solution.c_min[0], rel=1e-6)
    # Infeasible: the warm start keeps the last finite (eta, lambda) and remembers the infeasibility
    assert solution.warm_start == EStepWarmStart(2.5, (0.75,), True)
    assert all(math.isfinite(v) for v in (solution.eta, solution.kkt_residual, solution.dual_objective))


@pytest.mark.parametrize("solver", ["slsqp", "cvxpy"])
def test_other_solvers_flag_infeasibility(solver: str) -> None:
    q_reward, q_cost, thresholds = make_instance(11, "infeasible")
    reference = solve_estep(th.as_tensor(q_reward), th.as_tensor(q_cost), EPS, thresholds)
    solution = solve_estep(th.as_tensor(q_reward), th.as_tensor(q_cost), EPS, thresholds, solver)
    assert solution.infeasible and solution.solver == solver
    assert solution.eta == reference.eta  # the same cost-only recovery
    th.testing.assert_close(solution.weights, reference.weights, rtol=0, atol=0)


def test_cvxpy_failure_falls_back_to_newton(monkeypatch: pytest.MonkeyPatch) -> None:
    class SolverError(Exception):  # stands in for cvxpy.error.SolverError
        pass

    def fail(*args: object) -> None:
        raise SolverError("Solver 'CLARABEL' failed")

    q_reward, q_cost, thresholds = make_instance(1, "active")
    expected = solve_estep_dual(q_reward, q_cost, EPS, thresholds)
    solve_estep_dual(q_reward, q_cost, EPS, thresholds, "cvxpy")  # compile (and cache) the program
    monkeypatch.setattr(reference._ExpConeProgram, "solve", fail)
    with pytest.warns(RuntimeWarning, match=r"cvxpy/Clarabel failed .* falls back to the newton solver"):
        assert solve_estep_dual(q_reward, q_cost, EPS, thresholds, "cvxpy") == expected


def test_infeasible_detected_when_eta_reaches_its_bound_first() -> None:
    """Along the infeasible ray eta = lambda * eta_c: with eta_c > 1, eta hits 1e5 while lambda is still interior."""
    q_reward, q_cost, thresholds = make_instance(15, "infeasible")
    q_reward, q_cost, thresholds = 25 * q_reward, 25 * q_cost, 25 * thresholds
    eta_c, weights_ref = cost_only_reference(q_cost[0], EPS)
    assert eta_c > 1
    box = solve_estep_dual(q_reward, q_cost, EPS, thresholds, "cvxpy", return_info=True)[2]
    assert box.dual_objective > -np.inf and box.infeasible  # cvxpy's box corner is flagged by the same check
    problem = estep._prepare(q_reward, q_cost, EPS, thresholds, (1e-6, 1e5), (0.0, 1e5), 1e-6, 50)
    dual = estep._DualPass(problem.features, problem.qr, problem.eps, problem.eps1_shifted)
    corner = estep._newton(dual, [1.0, 0.0], [1e-6, 0.0], [1e5, 1e5], [EPS, 1 + abs(thresholds[0])], 1e-6, 50)
    assert corner.converged and corner.x[0] == 1e5 and corner.x[1] < 1e5  # the box-bounded dual: lambda interior
    solution = solve_estep(th.as_tensor(q_reward), th.as_tensor(q_cost), EPS, thresholds)
    assert solution.infeasible and solution.eta == pytest.approx(eta_c, rel=1e-5)
    np.testing.assert_allclose(solution.weights.numpy(), weights_ref, rtol=1e-5, atol=1e-9)
    assert solution.estep_kl == pytest.approx(EPS, rel=1e-5)  # inside the trust region, unlike the box solution


def test_newton_step_fixes_bound_coordinates_pointing_outwards() -> None:
    """A multiplier at 0 with a negative gradient but an outward Newton component must not distort the eta step."""
    rng = np.random.default_rng(0)
    batch, n_samples, scale, eps = 128, 64, 0.227, 0.1
    advantage = rng.normal(size=(batch, n_samples))
    q_reward = scale * (3 * rng.normal(size=(batch, 1)) + advantage)
    q_cost = np.stack(
        [
            scale * (1 + 0.3 * rng.normal(size=(batch, 1)) + rho * advantage)
            + scale * math.sqrt(1 - rho**2) * rng.normal(size=(batch, n_samples))
            for rho in (0.84, 0.83)
        ]
    )
    thresholds = q_cost.mean(axis=(1, 2)) - np.array([0.77, 1.40]) * math.sqrt(2 * eps) * scale * 0.9
    solution = solve_estep(th.as_tensor(q_reward), th.as_tensor(q_cost), eps, thresholds)
    assert solution.infeasible and solution.iterations <= 25  # 50 (the cap) without the fix


def test_infeasible_then_feasible_runs_the_check_and_recovers() -> None:
    q_reward, q_cost, thresholds = make_instance(12, "infeasible")
    first = solve_estep(th.as_tensor(q_reward), th.as_tensor(q_cost), EPS, thresholds)
    assert first.infeasible and first.warm_start.infeasible
    feasible = q_cost.mean() + 0.05
    second = solve_estep(th.as_tensor(q_reward), th.as_tensor(q_cost), EPS, feasible, init=first.warm_start)
    assert not second.infeasible and not second.warm_start.infeasible
    assert second.c_min is not None  # the previous step was infeasible, so the check ran
    assert second.c_min[0] < feasible
    third = solve_estep(th.as_tensor(q_reward), th.as_tensor(q_cost), EPS, feasible, init=second.warm_start)
    assert third.c_min is None  # a converged, interior solve does not run it
    assert third.iterations == 0


def test_feasibility_check_only_when_due() -> None:
    q_reward, q_cost, thresholds = make_instance(1, "active")
    calls = []
    original = estep._cost_only

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    estep._cost_only = spy  # type: ignore[assignment]
    try:
        solve_estep_dual(q_reward, q_cost, EPS, thresholds)
        assert not calls
        solve_estep_dual(q_reward, q_cost, EPS, thresholds, max_iter=1)  # not converged: checked
        assert calls
    finally:
        estep._cost_only = original


def test_infeasible_with_two_constraints_minimises_the_violated_sum() -> None:
    q_reward, q_cost, thresholds = make_instance(13, ("infeasible", "infeasible"), m=2)
    solution = solve_estep(th.as_tensor(q_reward), th.as_tensor(q_cost), EPS, thresholds)
    assert solution.infeasible and solution.lam.tolist() == [1e5, 1e5]
    eta_c, weights_ref = cost_only_reference(q_cost[0] + q_cost[1], EPS)
    assert solution.eta == pytest.approx(eta_c, rel=1e-5)
    np.testing.assert_allclose(solution.weights.numpy(), weights_ref, rtol=1e-5, atol=1e-9)
    # only the second violated: recovery on Q_c,2 alone, lambda_1 at its lower bound
    q_reward, q_cost, thresholds = make_instance(14, ("slack", "infeasible"), m=2)
    solution = solve_estep(th.as_tensor(q_reward), th.as_tensor(q_cost), EPS, thresholds)
    assert solution.infeasible and solution.lam.tolist() == [0.0, 1e5]
    np.testing.assert_allclose(solution.weights.numpy(), cost_only_reference(q_cost[1], EPS)[1], rtol=1e-5, atol=1e-9)


def test_jointly_infeasible_constraints() -> None:
    """Each constraint is feasible alone, but not both: the multipliers run to their bound (m > 1)."""
    rng = np.random.default_rng(5)
    advantage = rng.normal(size=(B, K))
    q_reward = rng.normal(size=(B, 1)) + advantage + 0.5 * rng.normal(size=(B, K))
    q_cost = np.stack([advantage, -advantage]) + 1.0 + 0.3 * rng.normal(size=(2, B, K))  # lowering one raises the other
    thresholds = np.array([0.9, 0.9])  # each reachable alone (c_min ~ 0.67), not both (the sum needs ~1.87)
    solution = solve_estep(th.as_tensor(q_reward), th.as_tensor(q_cost), EPS, thresholds)
    assert solution.infeasible
    assert solution.c_min is not None and np.all(solution.c_min < thresholds)
    assert solution.lam.tolist() == [1e5, 1e5]
    eta_c, weights_ref = cost_only_reference(q_cost[0] + q_cost[1], EPS)
    assert solution.eta == pytest.approx(eta_c, rel=1e-5)
    np.testing.assert_allclose(solution.weights.numpy(), weights_ref, rtol=1e-5, atol=1e-9)
    assert solution.qc_weighted.sum() > thresholds.sum()


def test_collinear_critics_do_not_stall() -> None:
    """Q_c,1 = -Q_c,2 up to a constant, both proportional to the advantage: a singular Hessian."""
    rng = np.random.default_rng(5)
    advantage = rng.normal(size=(B, K))
    q_reward = rng.normal(size=(B, 1)) + advantage
    q_cost = np.stack([advantage, -advantage]) + 1.0
    solution = solve_estep(th.as_tensor(q_reward), th.as_tensor(q_cost), EPS, np.array([0.95, 0.95]))
    assert solution.infeasible  # E_q[Q_c,1] + E_q[Q_c,2] = 2 > 1.9 for every q
    th.testing.assert_close(solution.weights, th.full((B, K), 1 / K, dtype=th.float64))  # the summed cost is flat
    assert solution.iterations < 50


@pytest.mark.parametrize("m", [1, 2])
@pytest.mark.parametrize("repeats", [1, 3])
def test_no_lambda_doubling(m: int, repeats: int) -> None:
    """Weights are softmax((Q_r - lam Q_c)/eta) with the returned lam, however often the E-step runs: no doubling."""
    q_reward, q_cost, thresholds = make_instance(21, "active", m)
    q_reward_t, q_cost_t = th.as_tensor(q_reward), th.as_tensor(q_cost)
    reward_copy, cost_copy = q_reward_t.clone(), q_cost_t.clone()
    warm = None
    for _ in range(repeats):
        solution = solve_estep(q_reward_t, q_cost_t, EPS, thresholds, init=warm)
        warm = solution.warm_start
        assert solution.weights.dtype == th.float64
        assert np.all(solution.lam > 0)
        expected = softmax_weights(q_reward, q_cost, solution.eta, solution.lam)
        np.testing.assert_allclose(solution.weights.numpy(), expected, rtol=0, atol=1e-12)
    assert th.equal(q_reward_t, reward_copy) and th.equal(q_cost_t, cost_copy)


# --------------------------------------------------------------------------------------------------------------------
# Degenerate and extreme inputs
# --------------------------------------------------------------------------------------------------------------------


def check_weights(solution: EStepSolution, batch: int, n_samples: int) -> None:
    weights = solution.weights
    assert weights.shape == (batch, n_samples) and weights.dtype == th.float32
    assert th.isfinite(weights).all() and (weights >= 0).all()
    th.testing.assert_close(weights.sum(dim=1), th.ones(batch), rtol=0, atol=1e-6)
    values = [solution.eta, *solution.lam, solution.estep_kl, *solution.qc_weighted, solution.kkt_residual]
    assert all(math.isfinite(v) for v in values)


@pytest.mark.parametrize("threshold", [0.5, 2.0])
def test_all_q_equal(threshold: float) -> None:
    q_reward = th.full((8, 6), 3.0)
    q_cost = th.full((8, 6), 1.0)
    solution = solve_estep(q_reward, q_cost, EPS, threshold, init=EStepWarmStart.initial(4.0, 0.5))
    check_weights(solution, 8, 6)
    assert solution.degenerate and solution.iterations == 0
    th.testing.assert_close(solution.weights, th.full((8, 6), 1 / 6))
    assert solution.eta == 1e-6
    assert solution.infeasible == (threshold < 1.0)
    assert solution.lam.tolist() == ([1e5] if threshold < 1.0 else [0.0])
    assert solution.warm_start.eta == 4.0 and solution.warm_start.lam == (0.5,)  # left as it was


def test_q_constant_per_state() -> None:
    rng = np.random.default_rng(0)
    q_reward = np.repeat(rng.normal(size=(10, 1)) * 100, 7, axis=1) + 0.1  # 0.1: inexact row means
    q_cost = np.repeat(rng.normal(size=(2, 10, 1)), 7, axis=2)
    solution = solve_estep(th.as_tensor(q_reward, dtype=th.float32), th.as_tensor(q_cost, dtype=th.float32), EPS, 5.0)
    check_weights(solution, 10, 7)
    assert solution.degenerate and not solution.infeasible
    assert solution.estep_kl == pytest.approx(0.0, abs=1e-12)


def test_constant_cost_with_varying_reward() -> None:
    q_reward, _, _ = make_instance(3, "slack")
    q_cost = np.full((1, B, K), 2.0)
    for threshold, infeasible in ((2.5, False), (1.5, True)):
        solution = solve_estep(th.as_tensor(q_reward), th.as_tensor(q_cost), EPS, threshold)
        assert not solution.degenerate and solution.infeasible == infeasible
        assert th.isfinite(solution.weights).all()
        if infeasible:  # nothing lowers a constant cost: uniform recovery weights
            th.testing.assert_close(solution.weights, th.full((B, K), 1 / K, dtype=th.float64))
        else:
            assert solution.lam.tolist() == [0.0] and abs(solution.estep_kl - EPS) <= 1e-6 * EPS


@pytest.mark.parametrize("scale", [1e6, 1e-8])
@pytest.mark.parametrize("kind", ["active", "slack", "infeasible"])
def test_extreme_scales(scale: float, kind: str) -> None:
    q_reward, q_cost, thresholds = make_instance(31, kind)
    solution = solve_estep(
        th.as_tensor(q_reward * scale, dtype=th.float32),
        th.as_tensor(q_cost * scale, dtype=th.float32),
        EPS,
        thresholds * scale,
    )
    check_weights(solution, B, K)
    if scale == 1e-8 and kind != "infeasible":  # the tiny Q barely move the weights: eta at its lower bound
        assert solution.eta == 1e-6 and solution.estep_kl < EPS


def test_kl_bound_beyond_log_k() -> None:
    """KL(w || uniform) <= log K always: the trust region cannot bind and eta goes to (or towards) its lower bound."""
    q_reward, q_cost, _ = make_instance(41, "slack")
    for kl_bound in (math.log(K), 10.0):
        solution = solve_estep(th.as_tensor(q_reward), th.as_tensor(q_cost), kl_bound, 1e3)
        if kl_bound > math.log(K):
            assert solution.eta == 1e-6
        else:  # dg/deta = log K - KL > 0 vanishes only as eta -> 0: stopped within tolerance
            assert solution.eta < 1e-2 and solution.converged
        assert th.isfinite(solution.weights).all()
        th.testing.assert_close(solution.weights.sum(dim=1), th.ones(B, dtype=th.float64))
        assert solution.weights.max(dim=1).values.min() > 0.99  # argmax-like, still a distribution
        assert solution.estep_kl == pytest.approx(math.log(K), rel=1e-3)


# --------------------------------------------------------------------------------------------------------------------
# Interfaces
# --------------------------------------------------------------------------------------------------------------------


def test_numpy_torch_and_cost_shapes_agree() -> None:
    q_reward, q_cost, thresholds = make_instance(51, "active")
    eta_np, lam_np = solve_estep_dual(q_reward, q_cost[0], EPS, float(thresholds[0]))
    eta_th, lam_th = solve_estep_dual(th.as_tensor(q_reward), th.as_tensor(q_cost[0]), EPS, thresholds[0])
    eta_3d, lam_3d = solve_estep_dual(q_reward, q_cost, EPS, thresholds)
    eta_f32, _ = solve_estep_dual(q_reward.astype(np.float32), q_cost.astype(np.float32), EPS, thresholds)
    assert isinstance(lam_np, float) and isinstance(lam_th, float)
    assert isinstance(lam_3d, np.ndarray) and lam_3d.shape == (1,)
    assert eta_np == eta_th == eta_3d and lam_np == lam_th == lam_3d[0]
    assert eta_f32 == pytest.approx(eta_np, rel=1e-5)
    q_reward_2, q_cost_2, thresholds_2 = make_instance(52, "active", m=2)
    _, lam_2 = solve_estep_dual(q_reward_2, q_cost_2, EPS, thresholds_2)
    assert isinstance(lam_2, np.ndarray) and lam_2.shape == (2,)


def test_return_info_fields() -> None:
    q_reward, q_cost, thresholds = make_instance(1, "active")
    eta, lam, info = solve_estep_dual(q_reward, q_cost[0], EPS, thresholds[0], return_info=True)
    assert isinstance(info, EStepSolution)
    assert info.eta == eta and info.lam.tolist() == [lam] and info.solver == "newton"
    assert info.iterations >= 1 and info.kkt_residual <= 1e-6 and info.converged
    assert not info.infeasible and info.feasible and not info.degenerate
    assert info.estep_kl == pytest.approx(EPS, rel=1e-6)
    weights = softmax_weights(q_reward, q_cost, eta, np.array([lam]))
    assert info.qc_weighted[0] == pytest.approx(float(np.mean(np.sum(weights * q_cost[0], axis=1))), rel=1e-9)
    assert info.qc_mean[0] == pytest.approx(float(q_cost.mean()), rel=1e-12)
    assert info.weights.dtype == th.float64 and info.weights.shape == (B, K)
    assert isinstance(lam, float) and info.warm_start == EStepWarmStart(eta, (lam,), False)
    assert info.c_min is None


def test_weights_are_usable_in_autograd() -> None:
    """The weights multiply log-likelihoods in the M-step: they must not be inference tensors."""
    q_reward, q_cost, thresholds = make_instance(2, "active")
    weights = solve_estep(th.as_tensor(q_reward, dtype=th.float32), th.as_tensor(q_cost), EPS, thresholds).weights
    assert not weights.is_inference() and not weights.requires_grad
    log_prob = th.zeros(B, K, requires_grad=True)
    (weights * log_prob).sum().backward()
    assert log_prob.grad is not None
    th.testing.assert_close(log_prob.grad, weights)


def test_weights_keep_device_and_float32() -> None:
    q_reward, q_cost, thresholds = make_instance(2, "active")
    solution = solve_estep(
        th.as_tensor(q_reward, dtype=th.float32), th.as_tensor(q_cost, dtype=th.float32), EPS, thresholds
    )
    assert solution.weights.dtype == th.float32 and solution.weights.device == th.device("cpu")
    half = solve_estep(
        th.as_tensor(q_reward, dtype=th.bfloat16), th.as_tensor(q_cost, dtype=th.bfloat16), EPS, thresholds
    )
    assert half.weights.dtype == th.float32


def test_warm_start_is_plain_and_pickles() -> None:
    warm = EStepWarmStart.initial(1.5, np.array([0.25, 0.5]))
    assert warm == EStepWarmStart(1.5, (0.25, 0.5), False)
    assert pickle.loads(pickle.dumps(warm)) == warm
    np.testing.assert_array_equal(warm.lam_array, [0.25, 0.5])
    q_reward, q_cost, thresholds = make_instance(3, "active", m=2)
    solution = solve_estep(th.as_tensor(q_reward), th.as_tensor(q_cost), EPS, thresholds, init=warm)
    restored = pickle.loads(pickle.dumps(solution.warm_start))
    again = solve_estep(th.as_tensor(q_reward), th.as_tensor(q_cost), EPS, thresholds, init=restored)
    assert again.iterations == 0 and again.eta == solution.eta
    assert type(solution.warm_start.eta) is float and all(type(v) is float for v in solution.warm_start.lam)
    # a pair works as init too, and a scalar multiplier is broadcast to every constraint
    assert solve_estep_dual(q_reward, q_cost, EPS, thresholds, init=(solution.eta, solution.lam))[0] == solution.eta
    solve_estep_dual(q_reward, q_cost, EPS, thresholds, init=(1.0, 0.0))


# --------------------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def instance() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return make_instance(0, "active")


@pytest.mark.parametrize("kl_bound", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_kl_bound(instance: tuple[np.ndarray, np.ndarray, np.ndarray], kl_bound: float) -> None:
    q_reward, q_cost, thresholds = instance
    with pytest.raises(ValueError, match=r"kl_bound must be a positive finite float .*e\.g\. 0\.02"):
        solve_estep_dual(q_reward, q_cost, kl_bound, thresholds)


def test_too_few_samples() -> None:
    with pytest.raises(ValueError, match=r"n_samples K = 1: .* sample at least 2 actions per state"):
        solve_estep_dual(np.zeros((4, 1)), np.zeros((4, 1)), EPS, 0.0)


@pytest.mark.parametrize(
    ("q_reward_shape", "q_cost_shape", "message"),
    [
        ((4, 5, 1), (4, 5), r"q_reward must have shape \(batch, n_samples\).*got shape \(4, 5, 1\)"),
        ((4, 5), (4, 6), r"q_cost must have shape .* as q_reward \(4, 5\); got \(4, 6\)"),
        ((4, 5), (2, 5, 4), r"q_cost must have shape .*got \(2, 5, 4\)\. Samples go along the last axis"),
        ((4, 5), (5,), r"q_cost must have shape"),
        ((0, 5), (0, 5), r"empty batch"),
        ((4, 5), (0, 4, 5), r"q_cost has no constraint"),
    ],
)
def test_shape_errors(q_reward_shape: tuple[int, ...], q_cost_shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        solve_estep_dual(np.zeros(q_reward_shape), np.zeros(q_cost_shape), EPS, 0.0)


def test_threshold_errors(instance: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    q_reward, q_cost, _ = instance
    with pytest.raises(ValueError, match=r"cost_threshold must be finite \(any real value\); got \[nan\]"):
        solve_estep_dual(q_reward, q_cost, EPS, float("nan"))
    with pytest.raises(ValueError, match=r"cost_threshold must be a scalar or have shape \(1,\).*got 2 values"):
        solve_estep_dual(q_reward, q_cost, EPS, [1.0, 2.0])
    assert solve_estep_dual(q_reward, q_cost, EPS, -3.0)[0] > 0  # any real threshold is accepted


def test_non_finite_q_values(instance: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    q_reward, q_cost, thresholds = instance
    bad_reward = q_reward.copy()
    bad_reward[0, :3] = np.nan
    bad_reward[1, 0] = np.inf
    with pytest.raises(NonFiniteQError, match=r"q_reward has 4 non-finite entries \(3 NaN, 1 inf\) out of 576") as info:
        solve_estep(th.as_tensor(bad_reward), th.as_tensor(q_cost), EPS, thresholds)
    assert "Skip this policy update" in str(info.value) and "q_cost" not in str(info.value)
    assert isinstance(info.value, ValueError)
    bad_cost = q_cost.copy()
    bad_cost[0, 5, 5] = -np.inf
    with pytest.raises(NonFiniteQError, match=r"q_cost has 1 non-finite entries \(0 NaN, 1 inf\) out of 576"):
        solve_estep_dual(q_reward, bad_cost, EPS, thresholds)
    with pytest.raises(NonFiniteQError, match=r"q_reward has 4 .*; q_cost has 1 "):
        solve_estep_dual(bad_reward, bad_cost, EPS, thresholds)


def test_other_argument_errors(instance: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    q_reward, q_cost, thresholds = instance
    with pytest.raises(
        ValueError, match=r"unknown E-step dual solver 'adam'; valid solvers are 'newton', 'slsqp', 'cvxpy'"
    ):
        solve_estep_dual(q_reward, q_cost, EPS, thresholds, "adam")
    with pytest.raises(ValueError, match=r"eta_bounds must satisfy 0 < low < high < inf"):
        solve_estep_dual(q_reward, q_cost, EPS, thresholds, eta_bounds=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"lam_bounds must satisfy 0 <= low < high < inf \(a finite upper bound"):
        solve_estep_dual(q_reward, q_cost, EPS, thresholds, lam_bounds=(0.0, math.inf))
    with pytest.raises(ValueError, match=r"max_iter must be an integer >= 1"):
        solve_estep_dual(q_reward, q_cost, EPS, thresholds, max_iter=0)
    with pytest.raises(ValueError, match=r"tol must be a positive finite float"):
        solve_estep_dual(q_reward, q_cost, EPS, thresholds, tol=0.0)
    with pytest.raises(ValueError, match=r"init has 2 multipliers but q_cost has 1 constraints"):
        solve_estep_dual(q_reward, q_cost, EPS, thresholds, init=EStepWarmStart(1.0, (0.0, 0.0)))
    with pytest.raises(ValueError, match=r"init must hold a finite eta > 0"):
        solve_estep_dual(q_reward, q_cost, EPS, thresholds, init=EStepWarmStart(float("nan"), (0.0,)))
    with pytest.raises(TypeError, match=r"q_reward must hold real Q values"):
        solve_estep_dual(np.zeros((4, 5), dtype=bool), np.zeros((4, 5)), EPS, 0.0)
