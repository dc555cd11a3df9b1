"""Reference solvers of the E-step dual: scipy SLSQP (the paper code's settings) and the exact exponential-cone
program in cvxpy (Clarabel), the correctness reference."""

from __future__ import annotations

import warnings

import numpy as np

from sb3_safe.cvpo.estep.newton import _DualResult, _evaluate_at, _newton, _snap_to_bounds
from sb3_safe.cvpo.estep.problem import Array, Vec, _DualPass, _Problem


def _slsqp(problem: _Problem, dual: _DualPass, x0: Vec, lo: Vec, hi: Vec, scale: Vec) -> _DualResult:
    """scipy SLSQP with the paper's code settings: finite differences, tol = ftol = 1e-3, maxiter 10.

    g is evaluated in numpy as the paper's code does (max-shifted, no analytic gradient), on the box given by
    ``eta_bounds`` and ``lam_bounds`` (the paper's code: (1e-6, 1e5) for both). SLSQP's ftol is absolute, so with
    Q values far below 1 it stops early. ``res.success`` is not enforced (the paper's code ignores it); it only
    sets ``converged``, which triggers the feasibility check when False.
    """
    from scipy.optimize import minimize

    qr = problem.qr.cpu().numpy()
    qc = problem.qc.cpu().numpy()
    eps, eps1 = problem.eps, problem.eps1_shifted

    def g(x: Array) -> float:
        eta, lam = x[0], x[1:]
        qt = qr - np.tensordot(lam, qc, axes=1)
        q_max = qt.max(axis=1)
        mean_exp = np.mean(np.exp((qt - q_max[:, None]) / eta), axis=1)
        return float(eta * eps + lam @ eps1 + np.mean(q_max) + eta * np.mean(np.log(mean_exp)))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = minimize(
            g,
            np.array(x0),
            method="SLSQP",
            bounds=list(zip(lo, hi, strict=True)),
            tol=1e-3,
            options={"ftol": 1e-3, "maxiter": 10},
        )
    x = _snap_to_bounds(np.asarray(res.x, dtype=np.float64), lo, hi)
    return _evaluate_at(dual, x, lo, hi, scale, int(res.nit), bool(res.success))


class _ExpConeProgram:
    """The exponential-cone form of the dual, DPP-parametrised and compiled once per (B, K, m).

    minimise eta*eps + sum_j lambda_j eps1_j + (1/B) sum_s t_s
    s.t. (Qt[s,i] - t_s, eta, u[s,i]) in K_exp for all (s, i);  sum_i u[s,i] <= K eta for all s;  box bounds.

    Cone membership gives u >= eta exp((Qt - t)/eta); with the sum constraint, t_s >= eta log mean_i exp(Qt/eta),
    so the optimum over (t, u) is g(eta, lambda).
    """

    def __init__(self, batch: int, n_samples: int, m: int) -> None:
        import cvxpy as cp

        self.cp = cp
        self.qr = cp.Parameter((batch, n_samples))
        self.qc = [cp.Parameter((batch, n_samples)) for _ in range(m)]
        self.eps = cp.Parameter(nonneg=True)
        self.eps1 = cp.Parameter(m)
        self.lo = cp.Parameter(m + 1)
        self.hi = cp.Parameter(m + 1)
        self.eta = cp.Variable()
        self.lam = cp.Variable(m)
        t = cp.Variable(batch)
        u = cp.Variable((batch, n_samples))
        qt = self.qr - sum((self.lam[j] * self.qc[j] for j in range(m)), start=cp.Constant(0.0))
        cone_x = qt - cp.reshape(t, (batch, 1), order="C") @ np.ones((1, n_samples))
        cone_y = self.eta * np.ones((batch, n_samples))
        x_all = cp.hstack([cp.reshape(self.eta, (1,), order="C"), self.lam])
        constraints = [
            cp.constraints.ExpCone(cone_x, cone_y, u),
            cp.sum(u, axis=1) <= n_samples * self.eta,
            x_all >= self.lo,
            x_all <= self.hi,
        ]
        objective = cp.Minimize(self.eta * self.eps + self.eps1 @ self.lam + cp.sum(t) / batch)
        self.problem = cp.Problem(objective, constraints)

    def solve(self, problem: _Problem, lo: Vec, hi: Vec) -> tuple[Vec, int, bool]:
        """Set the parameters, solve with Clarabel and return (x, iterations, optimal)."""
        cp = self.cp
        self.qr.value = problem.qr.cpu().numpy()
        qc = problem.qc.cpu().numpy()
        for j, parameter in enumerate(self.qc):
            parameter.value = qc[j]
        self.eps.value = problem.eps
        self.eps1.value = problem.eps1_shifted
        self.lo.value, self.hi.value = np.array(lo), np.array(hi)
        with warnings.catch_warnings():  # an inaccurate solve is reported through ``converged``
            warnings.filterwarnings("ignore", message="Solution may be inaccurate")
            self.problem.solve(solver=cp.CLARABEL)
        status = self.problem.status
        if self.eta.value is None or self.lam.value is None:
            raise RuntimeError(f"cvxpy/Clarabel returned no solution for the E-step dual (status {status!r})")
        x = np.concatenate(([float(self.eta.value)], np.asarray(self.lam.value, dtype=np.float64).reshape(-1)))
        stats = self.problem.solver_stats
        iterations = int(stats.num_iters) if stats is not None and stats.num_iters is not None else 0
        return _snap_to_bounds(x, lo, hi), iterations, status == cp.OPTIMAL


_EXP_CONE_CACHE: dict[tuple[int, int, int], _ExpConeProgram] = {}
_EXP_CONE_CACHE_SIZE = 8


def _cvxpy(
    problem: _Problem, dual: _DualPass, x0: Vec, lo: Vec, hi: Vec, scale: Vec, tol: float, max_iter: int
) -> _DualResult:
    """Solve the exponential-cone program (compiled once per shape and cached).

    Clarabel can fail near the box corners of an infeasible instance (lambda at its bound, Qt of order 1e5); the
    step then falls back to the newton solver, with a warning.
    """
    key = (problem.batch, problem.n_samples, problem.n_constraints)
    program = _EXP_CONE_CACHE.get(key)
    if program is None:
        if len(_EXP_CONE_CACHE) >= _EXP_CONE_CACHE_SIZE:
            _EXP_CONE_CACHE.pop(next(iter(_EXP_CONE_CACHE)))
        program = _EXP_CONE_CACHE[key] = _ExpConeProgram(*key)
    try:
        x, iterations, optimal = program.solve(problem, lo, hi)
    except Exception as error:  # cvxpy.error.SolverError, without importing cvxpy at module level
        if type(error).__name__ != "SolverError":
            raise
        warnings.warn(
            f"cvxpy/Clarabel failed on the E-step dual ({error}); this step falls back to the newton solver",
            RuntimeWarning,
            stacklevel=4,
        )
        return _newton(dual, x0, lo, hi, scale, tol, max_iter)
    return _evaluate_at(dual, x, lo, hi, scale, iterations, optimal)
