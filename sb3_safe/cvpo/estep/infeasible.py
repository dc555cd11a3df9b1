"""The infeasible E-step: when no reweighting inside the KL ball meets a cost threshold, the cost-minimising weights.

c_min = min_q E_q[Q_c] over the KL ball is the dual with Q_r := -Q_c and no multiplier; when it exceeds a
threshold, the step uses ``softmax(-Q_c,V / eta_c)`` over the violated constraints V instead of the reward
weights, and is flagged infeasible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch as th

from sb3_safe.cvpo.estep.newton import _newton
from sb3_safe.cvpo.estep.problem import Array, Bounds, _DualPass, _Problem

# --------------------------------------------------------------------------------------------------------------------
# Feasibility
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class _CostOnly:
    eta: float  # eta_c, the temperature of the cost-minimising weights
    c_min: float  # min E_q[Q_c] inside the KL ball, in the row-shifted units of the Q_c it was given
    iterations: int


def _cost_only(problem: _Problem, q_cost: th.Tensor, eta_bounds: Bounds, tol: float, max_iter: int) -> _CostOnly:
    """Minimise E_q[Q_c] over the KL ball: the dual with Q_r := -Q_c and no multiplier.

    c_min = min_q E_q[Q_c] s.t. mean_s KL <= eps, attained by w = softmax(-Q_c/eta_c) with eta_c minimising
    eta*eps + eta*mean_s log mean_i exp(-Q_c/eta). Newton starts from the second-order estimate
    KL ~ Var(Q_c)/(2 eta^2), i.e. eta_0 = sqrt(Var(Q_c) / (2 eps)).
    """
    dual = _DualPass(th.neg(q_cost).unsqueeze(0), None, problem.eps, [])
    lo, hi = [float(eta_bounds[0])], [float(eta_bounds[1])]
    # rows are shifted by their first sample: E[(q - q_0)^2] = 2 Var(q) on average
    variance = 0.5 * q_cost.square().mean().item()
    result = _newton(dual, [math.sqrt(variance / (2.0 * problem.eps))], lo, hi, [problem.eps], tol, max_iter)
    eta_c = result.x[0]
    return _CostOnly(eta_c, -result.e_qt, result.iterations)  # Qt = -Q_c


def _recovery(
    problem: _Problem,
    violated: Array,
    solves: list[_CostOnly],
    eta_bounds: Bounds,
    slack: Array,
    tol: float,
    max_iter: int,
) -> tuple[Array, th.Tensor, float]:
    """Recovery: the weights ``softmax(-Q_c,V / eta_c)`` minimising E_q[Q_c,V] over the KL ball, where Q_c,V is
    the sum of the violated constraints' Q_c.

    With m > 1, V starts from the individually infeasible constraints and those whose multiplier reached its bound,
    and grows by every constraint the recovery weights themselves violate, until it is stable (at most m rounds):
    the recovery minimises the sum of the constraints it would otherwise break.

    Returns:
        The final violated mask, the summed row-shifted Q_c,V and eta_c.
    """
    while True:
        index = np.flatnonzero(violated).tolist()
        if len(index) == 1:
            recovery, eta_c = problem.qc[index[0]], solves[index[0]].eta
        else:
            recovery = problem.qc[index].sum(dim=0)
            eta_c = _cost_only(problem, recovery, eta_bounds, tol, max_iter).eta
        if problem.n_constraints == 1:
            return violated, recovery, eta_c
        weights = th.softmax(recovery * (-1.0 / eta_c), dim=1)
        expected = ((problem.qc * weights).sum(dim=(1, 2)) / problem.batch).cpu().numpy()
        grown = violated | (expected > problem.eps1_shifted + slack)
        if (grown == violated).all():
            return violated, recovery, eta_c
        violated = grown
