"""CVPO E-step: the dual over (eta, lambda) and the non-parametric weights it defines.

For each of the B states of a minibatch, K actions a_{s,i} are drawn from the anchor policy pi_old, and the
critics give the matrices ``Q_r[s, i]`` and ``Q_c,j[s, i]`` (one per constraint j = 1..m). The E-step of
Liu et al. (2022) reweights the samples: it solves, over per-state distributions w_s on the K samples,

    max_w  mean_s sum_i w_{s,i} Q_r[s,i]
    s.t.   mean_s KL(w_s || uniform_K) <= eps,     mean_s sum_i w_{s,i} Q_c,j[s,i] <= eps1_j   (j = 1..m)

whose solution is ``w = softmax_i((Q_r - sum_j lambda_j Q_c,j) / eta)`` with (eta, lambda) minimising the convex
dual (see docs/cvpo.md)

    g(eta, lambda) = eta*eps + sum_j lambda_j*eps1_j + eta * mean_s log((1/K) sum_i exp(Qt[s,i] / eta)),
    Qt = Q_r - sum_j lambda_j Q_c,j,

over the box ``eta_bounds x lam_bounds^m``. Three solvers are provided:

* ``"newton"`` (default): projected damped Newton in float64 torch, one vectorised pass per iteration, warm-started,
  with a multiplicative trust region and Armijo backtracking.
* ``"slsqp"``: scipy SLSQP with the settings of the paper's code (finite differences, ``tol=ftol=1e-3``,
  ``maxiter=10``).
* ``"cvxpy"``: the exact exponential-cone program, solved by Clarabel; the correctness reference (about 0.1 s).

When no reweighting inside the KL ball meets a threshold, the dual is unbounded below; the solve then returns the
cost-minimising weights inside the KL ball and flags the step infeasible.

Modules: :mod:`~sb3_safe.cvpo.estep.problem` (inputs, checks, data types, the vectorised dual pass),
:mod:`~sb3_safe.cvpo.estep.newton` (the default solver), :mod:`~sb3_safe.cvpo.estep.reference` (SLSQP and cvxpy),
:mod:`~sb3_safe.cvpo.estep.infeasible` (the cost-minimising recovery), and this package (orchestration and the
public API).

Entry points: :func:`solve_estep` (what the CVPO algorithm calls once per gradient step, torch in and out) and
:func:`solve_estep_dual` (numpy or torch in, ``(eta, lam)`` out).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np
import torch as th

from sb3_safe.cvpo.estep.infeasible import _cost_only, _recovery
from sb3_safe.cvpo.estep.newton import _newton
from sb3_safe.cvpo.estep.problem import (
    DEFAULT_ETA_BOUNDS,
    DEFAULT_LAM_BOUNDS,
    SLSQP_COLD_START,
    SOLVERS,
    Array,
    Bounds,
    EStepSolution,
    EStepWarmStart,
    NonFiniteQError,
    QInput,
    Vec,
    _DualPass,
    _initial_point,
    _prepare,
    _Problem,
)
from sb3_safe.cvpo.estep.reference import _cvxpy, _slsqp

__all__ = [
    "SOLVERS",
    "EStepSolution",
    "EStepWarmStart",
    "NonFiniteQError",
    "estep_dual_objective",
    "solve_estep",
    "solve_estep_dual",
]

# --------------------------------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class _Outcome:
    """Everything except the weights: the dual solution and how the weights are to be formed."""

    eta: float
    lam: Array
    iterations: int
    residual: float
    converged: bool
    infeasible: bool
    objective: float  # input units
    c_min: Array | None  # input units
    recovery: th.Tensor | None  # summed row-shifted Q_c of the violated constraints (infeasible case)
    warm_start: EStepWarmStart


def _check_solver(solver: str) -> None:
    if solver not in SOLVERS:
        raise ValueError(f"unknown E-step dual solver {solver!r}; valid solvers are {', '.join(map(repr, SOLVERS))}")


def _degenerate(problem: _Problem, start: EStepWarmStart, lo: Vec, hi: Vec, slack: Array) -> _Outcome:
    """All rows constant: g = eta*eps + sum_j lambda_j (eps1_j - qc_mean_j) + const, and the weights are uniform.

    eta goes to its lower bound; lambda_j to its lower bound when the uniform weights meet threshold j, else the
    constraint is infeasible (lambda_j at its upper bound). The warm start is left as it was.
    """
    violated = problem.qc_mean > problem.eps1 + slack
    lam = np.where(violated, hi[1:], lo[1:])
    objective = lo[0] * problem.eps + float(lam @ problem.eps1_shifted) + problem.qr_offset
    infeasible = bool(violated.any())
    warm = EStepWarmStart(start.eta, start.lam, infeasible)
    return _Outcome(lo[0], lam, 0, 0.0, True, infeasible, objective, problem.qc_mean.copy(), None, warm)


def _solve(
    problem: _Problem, solver: str, init: Any, eta_bounds: Bounds, lam_bounds: Bounds, tol: float, max_iter: int
) -> _Outcome:
    """Run the main dual solver, then the feasibility check when it is due."""
    m = problem.n_constraints
    start = _initial_point(init, m, float(lam_bounds[0]))
    lo = [float(eta_bounds[0])] + [float(lam_bounds[0])] * m
    hi = [float(eta_bounds[1])] + [float(lam_bounds[1])] * m
    if problem.degenerate:
        return _degenerate(problem, start, lo, hi, tol * (1.0 + np.abs(problem.eps1)))

    dual = _DualPass(problem.features, problem.qr, problem.eps, problem.eps1_shifted)
    scale = [problem.eps] + [1.0 + abs(v) for v in problem.eps1.tolist()]
    if solver == "newton":
        result = _newton(dual, [start.eta, *start.lam], lo, hi, scale, tol, max_iter)
    elif solver == "slsqp":
        x0 = [start.eta, *start.lam] if init is not None else [SLSQP_COLD_START] * (m + 1)
        result = _slsqp(problem, dual, [min(max(v, a), b) for v, a, b in zip(x0, lo, hi, strict=True)], lo, hi, scale)
    else:
        result = _cvxpy(problem, dual, [start.eta, *start.lam], lo, hi, scale, tol, max_iter)

    lam = np.array(result.x[1:])
    lam_at_bound = lam >= hi[1]
    objective = result.objective + problem.qr_offset
    warm = EStepWarmStart(result.x[0], tuple(result.x[1:]), False)
    # Along the infeasible ray eta grows with lambda, so eta can reach its bound first: that is checked too.
    if not (lam_at_bound.any() or result.x[0] >= hi[0] or not result.converged or start.infeasible):
        return _Outcome(
            result.x[0], lam, result.iterations, result.residual, result.converged, False, objective, None, None, warm
        )

    solves = [_cost_only(problem, problem.qc[j], eta_bounds, tol, max_iter) for j in range(m)]
    c_min_shifted = np.array([s.c_min for s in solves])
    c_min = c_min_shifted + problem.qc_offset  # back to input units
    slack = tol * (1.0 + np.abs(problem.eps1))  # the margin of the stopping test, in threshold units
    violated = c_min > problem.eps1 + slack
    if m > 1:  # feasible one by one but not jointly: a multiplier at its bound is itself infeasibility
        violated |= lam_at_bound
    if not violated.any():
        return _Outcome(
            result.x[0], lam, result.iterations, result.residual, result.converged, False, objective, c_min, None, warm
        )
    violated, recovery, eta_c = _recovery(problem, violated, solves, eta_bounds, slack, tol, max_iter)
    return _Outcome(
        eta=eta_c,
        lam=np.where(violated, hi[1], lo[1]),
        iterations=result.iterations,
        residual=result.residual,
        converged=result.converged,
        infeasible=True,
        objective=objective,
        c_min=c_min,
        recovery=recovery,
        warm_start=EStepWarmStart(start.eta, start.lam, True),  # the last finite (eta, lambda), for the next warm start
    )


def _weights(problem: _Problem, outcome: _Outcome) -> th.Tensor:
    """The E-step distribution, formed once from the (new, row-shifted float64) Q matrices; inputs are untouched."""
    if problem.degenerate:
        return th.full_like(problem.qr, 1.0 / problem.n_samples)
    if outcome.recovery is not None:
        z = outcome.recovery * (-1.0 / outcome.eta)
    else:
        z = problem.qr.clone()
        for j in range(problem.n_constraints):
            z.add_(problem.qc[j], alpha=-float(outcome.lam[j]))
        z.div_(outcome.eta)
    z = z - z.amax(dim=1, keepdim=True)
    z.exp_()
    return z.div_(z.sum(dim=1, keepdim=True))


def _kl_and_cost(problem: _Problem, weights: th.Tensor) -> tuple[float, Array]:
    """mean_s sum_i w log(K w) and mean_s sum_i w Q_c,j (input units)."""
    kl = th.xlogy(weights, weights).sum() / problem.batch
    qc_w = (problem.qc * weights).sum(dim=(1, 2)) / problem.batch
    flat = th.cat([kl.reshape(1), qc_w]).cpu().numpy()
    return float(flat[0]) + math.log(problem.n_samples), flat[1:] + problem.qc_offset


def _solution(problem: _Problem, outcome: _Outcome, solver: str) -> EStepSolution:
    """Form the weights once and assemble the :class:`EStepSolution` (call outside inference mode)."""
    with th.inference_mode():
        weights = _weights(problem, outcome)
        estep_kl, qc_weighted = _kl_and_cost(problem, weights)
    return EStepSolution(
        weights=weights.to(problem.out_dtype, copy=True),  # a normal tensor, usable in autograd graphs
        eta=outcome.eta,
        lam=outcome.lam,
        iterations=outcome.iterations,
        kkt_residual=outcome.residual,
        converged=outcome.converged,
        infeasible=outcome.infeasible,
        degenerate=problem.degenerate,
        estep_kl=estep_kl,
        qc_mean=problem.qc_mean,
        qc_weighted=qc_weighted,
        dual_objective=outcome.objective,
        solver=solver,
        c_min=outcome.c_min,
        warm_start=outcome.warm_start,
    )


# --------------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------------


def solve_estep(
    q_reward: th.Tensor,
    q_cost: th.Tensor,
    kl_bound: float,
    cost_threshold: Array | float | Sequence[float],
    solver: str = "newton",
    init: EStepWarmStart | None = None,
    *,
    eta_bounds: Bounds = DEFAULT_ETA_BOUNDS,
    lam_bounds: Bounds = DEFAULT_LAM_BOUNDS,
    tol: float = 1e-6,
    max_iter: int = 50,
) -> EStepSolution:
    """Solve the CVPO E-step: the dual over (eta, lambda), then the weights, once.

    The dual is ``g(eta, lambda) = eta*eps + sum_j lambda_j eps1_j
    + eta * mean_s log((1/K) sum_i exp((Q_r - sum_j lambda_j Q_c,j)[s,i] / eta))``, minimised over
    ``eta_bounds x lam_bounds^m`` in float64. The weights are ``softmax_i((Q_r - sum_j lambda_j Q_c,j) / eta)``,
    computed once from new tensors; the inputs are never modified (lambda is applied once).

    Infeasibility is checked when the solve ends with a multiplier or eta at its upper bound, fails to
    converge, or the previous step was infeasible (``init.infeasible``): if some c_min_j (the smallest
    E_q[Q_c,j] within the KL ball) exceeds eps1_j, or with m > 1 some lambda_j sits at its upper bound (jointly
    infeasible), the step is infeasible. The weights are then ``softmax_i(-Q_c,V / eta_c)``, the cost-minimising
    distribution inside the KL ball for the sum Q_c,V of the violated constraints: those infeasible alone or whose
    multiplier reached its bound, plus (m > 1) every constraint these recovery weights would still violate.
    ``eta`` reports eta_c, ``lam`` the upper bound for the violated constraints, and ``warm_start`` keeps the last
    finite (eta, lambda).

    Args:
        q_reward: Q_r of the K sampled actions per state, shape (B, K); any float dtype, any device.
        q_cost: Q_c, shape (m, B, K), or (B, K) for a single constraint; same device as ``q_reward``.
        kl_bound: eps > 0, bound on mean_s KL(q_s || pi_old_s).
        cost_threshold: eps1, a scalar (broadcast to every constraint) or shape (m,); any finite real.
        solver: ``"newton"`` (default), ``"slsqp"`` or ``"cvxpy"``.
        init: The previous step's ``warm_start``; None is a cold start ((1, 0) for Newton, (0.1, 0.1) for SLSQP).
        eta_bounds: Box for eta, 0 < low < high < inf.
        lam_bounds: Box for every lambda_j, 0 <= low < high < inf (the paper's code uses (1e-6, 1e5) with SLSQP;
            pass that to reproduce it exactly).
        tol: Stopping tolerance of the Newton solver and of the feasibility margin.
        max_iter: Newton iteration cap.

    Returns:
        The :class:`EStepSolution` (weights, duals, solver health, E-step statistics and the next warm start).

    Raises:
        NonFiniteQError: If any Q value is NaN or infinite (skip the update).
        ValueError: For a bad bound, shape, threshold or solver name.
    """
    _check_solver(solver)
    with th.inference_mode():  # internal buffers only; the returned weights are a normal tensor
        problem = _prepare(q_reward, q_cost, kl_bound, cost_threshold, eta_bounds, lam_bounds, tol, max_iter)
        outcome = _solve(problem, solver, init, eta_bounds, lam_bounds, tol, max_iter)
    return _solution(problem, outcome, solver)


@overload
def solve_estep_dual(
    q_reward: QInput,
    q_cost: QInput,
    kl_bound: float,
    cost_threshold: Array | float | Sequence[float],
    solver: str = ...,
    *,
    init: EStepWarmStart | tuple[float, Any] | None = ...,
    eta_bounds: Bounds = ...,
    lam_bounds: Bounds = ...,
    tol: float = ...,
    max_iter: int = ...,
    return_info: Literal[False] = ...,
) -> tuple[float, float | Array]: ...


@overload
def solve_estep_dual(
    q_reward: QInput,
    q_cost: QInput,
    kl_bound: float,
    cost_threshold: Array | float | Sequence[float],
    solver: str = ...,
    *,
    init: EStepWarmStart | tuple[float, Any] | None = ...,
    eta_bounds: Bounds = ...,
    lam_bounds: Bounds = ...,
    tol: float = ...,
    max_iter: int = ...,
    return_info: Literal[True],
) -> tuple[float, float | Array, EStepSolution]: ...


def solve_estep_dual(
    q_reward: QInput,
    q_cost: QInput,
    kl_bound: float,
    cost_threshold: Array | float | Sequence[float],
    solver: str = "newton",
    *,
    init: EStepWarmStart | tuple[float, Any] | None = None,
    eta_bounds: Bounds = DEFAULT_ETA_BOUNDS,
    lam_bounds: Bounds = DEFAULT_LAM_BOUNDS,
    tol: float = 1e-6,
    max_iter: int = 50,
    return_info: bool = False,
) -> tuple[float, float | Array] | tuple[float, float | Array, EStepSolution]:
    """Solve the CVPO E-step dual and return (eta, lambda).

    Minimises ``g(eta, lambda)`` over the box; see :func:`solve_estep` for the maths, the
    infeasibility handling and the meaning of every argument. numpy arrays and torch tensors are accepted.

    Args:
        q_reward: Shape (B, K).
        q_cost: Shape (B, K) or (m, B, K).
        kl_bound: eps > 0.
        cost_threshold: A scalar or shape (m,).
        solver: ``"newton"``, ``"slsqp"`` or ``"cvxpy"``.
        init: A previous :class:`EStepWarmStart` or a pair (eta, lam).
        eta_bounds: Box for eta.
        lam_bounds: Box for every lambda_j.
        tol: Newton stopping tolerance.
        max_iter: Newton iteration cap.
        return_info: Also return the full :class:`EStepSolution` (iterations, KKT residual, infeasible flag, E-step
            KL, E_q[Q_c], weights, next warm start, solver name).

    Returns:
        ``(eta, lam)``, or ``(eta, lam, info)`` with ``return_info=True``. ``lam`` is a float when ``q_cost`` has
        shape (B, K) and an array of shape (m,) when it has shape (m, B, K).
    """
    _check_solver(solver)
    with th.inference_mode():
        problem = _prepare(q_reward, q_cost, kl_bound, cost_threshold, eta_bounds, lam_bounds, tol, max_iter)
        outcome = _solve(problem, solver, init, eta_bounds, lam_bounds, tol, max_iter)
    lam: float | Array = float(outcome.lam[0]) if problem.cost_was_2d else outcome.lam.copy()
    if not return_info:
        return outcome.eta, lam
    return outcome.eta, lam, _solution(problem, outcome, solver)


def estep_dual_objective(
    q_reward: QInput,
    q_cost: QInput,
    kl_bound: float,
    cost_threshold: Array | float | Sequence[float],
    eta: float,
    lam: float | Sequence[float] | Array,
) -> float:
    """Evaluate the dual g(eta, lambda) in float64, in the units of the inputs.

    Args:
        q_reward: Shape (B, K).
        q_cost: Shape (B, K) or (m, B, K).
        kl_bound: eps > 0.
        cost_threshold: A scalar or shape (m,).
        eta: Temperature (> 0).
        lam: Multiplier(s), a float or shape (m,).

    Returns:
        g(eta, lambda).
    """
    if not (eta > 0 and math.isfinite(eta)):
        raise ValueError(f"eta must be a positive finite float; got {eta}")
    with th.inference_mode():
        problem = _prepare(q_reward, q_cost, kl_bound, cost_threshold, (1e-300, 1e300), (0.0, 1e300), 1e-6, 1)
        lam_values = np.broadcast_to(np.asarray(lam, dtype=np.float64).reshape(-1), (problem.n_constraints,))
        dual = _DualPass(problem.features, problem.qr, problem.eps, problem.eps1_shifted)
        return dual.value([float(eta), *(float(v) for v in lam_values)]) + problem.qr_offset
