"""The default E-step dual solver: projected damped Newton with a multiplicative trust region and Armijo steps."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sb3_safe.cvpo.estep.problem import Array, Vec, _DualPass

_ARMIJO_C = 1e-4
_ARMIJO_HALVINGS = 40
_ETA_TRUST_FACTOR = 10.0
_LAM_TRUST_FACTOR = 10.0
_HESSIAN_RIDGE = 1e-12

# --------------------------------------------------------------------------------------------------------------------
# Solvers
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class _DualResult:
    x: Vec  # (eta, lambda_1..m)
    objective: float  # g at x, shifted units
    iterations: int
    residual: float
    converged: bool
    e_qt: float  # mean_s E_w[Qt] at x (gives E_w[Q_c] for the cost-only dual)


def _free_set(x: Vec, grad: Vec, lo: Vec, hi: Vec) -> list[bool]:
    """Coordinates not held at a bound: a bound coordinate whose gradient points out of the box is fixed."""
    return [not ((xi <= a and gi > 0) or (xi >= b and gi < 0)) for xi, gi, a, b in zip(x, grad, lo, hi, strict=True)]


def _residual(grad: Vec, free: list[bool], scale: Vec) -> float:
    """Stopping measure: max over free coordinates of |grad| / scale (0 if none is free)."""
    return max((abs(g) / s for g, f, s in zip(grad, free, scale, strict=True) if f), default=0.0)


def _solve_free_block(hess: list[Vec], g: Vec, idx: list[int]) -> Vec | None:
    """Solve ``(H_ff + 1e-12 tr(H_ff) I) d = -g_f``; None when H_ff is not usable (zero, singular, not finite)."""
    n = len(idx)
    trace = sum(hess[i][i] for i in idx)
    if not (math.isfinite(trace) and trace > 0):
        return None
    ridge = _HESSIAN_RIDGE * trace
    if n == 1:
        return [-g[0] / (hess[idx[0]][idx[0]] + ridge)]
    if n == 2:
        i, j = idx
        a, b, c = hess[i][i] + ridge, hess[i][j], hess[j][j] + ridge
        det = a * c - b * b
        if not (math.isfinite(det) and det > 0):
            return None
        return [-(c * g[0] - b * g[1]) / det, -(a * g[1] - b * g[0]) / det]
    block = np.array([[hess[i][j] for j in idx] for i in idx]) + ridge * np.eye(n)
    try:
        return [float(v) for v in -np.linalg.solve(block, np.array(g))]
    except np.linalg.LinAlgError:
        return None


def _newton_direction(grad: Vec, hess: list[Vec], free: list[bool], x: Vec, lo: Vec, hi: Vec) -> Vec:
    """``d_f = -(H_ff + 1e-12 tr(H_ff) I)^{-1} g_f`` on the free block.

    A free coordinate sitting on a bound whose Newton component points out of the box is moved to the fixed set and
    the block re-solved (otherwise the projection would silently drop that component and distort the others). The
    projected negative gradient is used if H_ff is unusable or the result is not a descent direction.
    """
    free = list(free)
    while True:
        idx = [i for i, f in enumerate(free) if f]
        g_free = [grad[i] for i in idx]
        d_free = _solve_free_block(hess, g_free, idx)
        if d_free is None or not (
            all(math.isfinite(v) for v in d_free) and sum(d * g for d, g in zip(d_free, g_free, strict=True)) < 0
        ):
            d_free = [-g for g in g_free]
            break
        outward = [
            i for i, d in zip(idx, d_free, strict=True) if (x[i] <= lo[i] and d < 0) or (x[i] >= hi[i] and d > 0)
        ]
        if not outward or len(outward) == len(idx):
            break
        for i in outward:
            free[i] = False
    step = [0.0] * len(grad)
    for i, d in zip(idx, d_free, strict=True):
        step[i] = d
    return step


def _trust_region(step: Vec, x: Vec) -> Vec:
    """Scale a step so eta changes by at most a factor 10 and |dlambda_j| <= 10 max(lambda_j, 1)."""
    factor = 1.0
    if step[0] > 0:
        factor = min(factor, (_ETA_TRUST_FACTOR - 1.0) * x[0] / step[0])
    elif step[0] < 0:
        factor = min(factor, (1.0 - 1.0 / _ETA_TRUST_FACTOR) * x[0] / -step[0])
    for d, lam in zip(step[1:], x[1:], strict=True):
        if d != 0:
            factor = min(factor, _LAM_TRUST_FACTOR * max(lam, 1.0) / abs(d))
    return [d * factor for d in step]


def _armijo(
    evaluate: Callable[[Vec], float], x: Vec, f: float, grad: Vec, step: Vec, lo: Vec, hi: Vec
) -> tuple[Vec, float] | None:
    """Backtrack on the projected point ``clip(x + t d)``: accept when
    ``g(x+) <= g(x) + 1e-4 grad^T (x+ - x)`` and ``g(x+) < g(x)``; halve t up to 40 times."""
    t = 1.0
    for _ in range(_ARMIJO_HALVINGS + 1):
        trial = [min(max(xi + t * di, a), b) for xi, di, a, b in zip(x, step, lo, hi, strict=True)]
        decrease = sum(g * (xt - xi) for g, xt, xi in zip(grad, trial, x, strict=True))
        if trial == x:
            return None
        f_trial = evaluate(trial)
        # strict decrease: a tie is rounding noise, and accepting it would let the iterates cycle
        if f_trial < f and f_trial <= f + _ARMIJO_C * decrease:
            return trial, f_trial
        t *= 0.5
    return None


def _newton(dual: _DualPass, x0: Vec, lo: Vec, hi: Vec, scale: Vec, tol: float, max_iter: int) -> _DualResult:
    """Projected damped Newton with a multiplicative trust region and Armijo line search.

    Each iteration is one vectorised pass (g, gradient, Hessian), a Newton step on the free coordinates scaled into
    the trust region, and a backtracking search on the projected point, retried along the negative gradient; when
    neither decreases g the point is optimal to machine precision and the loop stops.
    """
    x = [min(max(xi, a), b) for xi, a, b in zip(x0, lo, hi, strict=True)]
    f = dual.value(x)
    grad, e_qt = dual.gradient(x)
    iterations = 0
    while True:
        free = _free_set(x, grad, lo, hi)
        residual = _residual(grad, free, scale)
        if residual <= tol or iterations >= max_iter:
            break
        iterations += 1
        step = _trust_region(_newton_direction(grad, dual.hessian(x), free, x, lo, hi), x)
        accepted = _armijo(dual.value, x, f, grad, step, lo, hi)
        if accepted is None:  # retry along the projected negative gradient
            descent = [-g if fr else 0.0 for g, fr in zip(grad, free, strict=True)]
            accepted = _armijo(dual.value, x, f, grad, _trust_region(descent, x), lo, hi)
        if accepted is None:  # no decrease along either direction: optimal to machine precision
            break
        x, f = accepted
        grad, e_qt = dual.gradient(x)
    return _DualResult(x, f, iterations, residual, residual <= tol, e_qt)


def _snap_to_bounds(x: Array, lo: Vec, hi: Vec) -> Vec:
    """Clip, then put coordinates within a relative 1e-6 of a bound on it (interior-point and SLSQP iterates stop
    just inside the box, which would otherwise count a bound-held coordinate as free and hide a multiplier or eta
    at its upper bound from the feasibility check)."""
    snapped = []
    for xi, a, b in zip(x.tolist(), lo, hi, strict=True):
        xi = min(max(xi, a), b)
        if xi - a <= 1e-6 * max(abs(a), 1e-7 * (b - a)):
            xi = a
        elif b - xi <= 1e-6 * abs(b):
            xi = b
        snapped.append(xi)
    return snapped


def _evaluate_at(
    dual: _DualPass, x: Vec, lo: Vec, hi: Vec, scale: Vec, iterations: int, converged: bool
) -> _DualResult:
    """Objective, gradient and KKT residual at a point found by another solver."""
    f = dual.value(x)
    grad, e_qt = dual.gradient(x)
    return _DualResult(x, f, iterations, _residual(grad, _free_set(x, grad, lo, hi), scale), converged, e_qt)
