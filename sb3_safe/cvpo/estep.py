"""CVPO E-step: the dual over (eta, lambda) and the non-parametric weights it defines.

For each of the B states of a minibatch, K actions a_{s,i} are drawn from the anchor policy pi_old, and the
critics give the matrices ``Q_r[s, i]`` and ``Q_c,j[s, i]`` (one per constraint j = 1..m). The E-step of
Liu et al. (2022) reweights the samples: it solves, over per-state distributions w_s on the K samples,

    max_w  mean_s sum_i w_{s,i} Q_r[s,i]
    s.t.   mean_s KL(w_s || uniform_K) <= eps,     mean_s sum_i w_{s,i} Q_c,j[s,i] <= eps1_j   (j = 1..m)

whose solution is ``w = softmax_i((Q_r - sum_j lambda_j Q_c,j) / eta)`` with (eta, lambda) minimising the convex
dual (spec ``cvpo.md`` §2.2)

    g(eta, lambda) = eta*eps + sum_j lambda_j*eps1_j + eta * mean_s log((1/K) sum_i exp(Qt[s,i] / eta)),
    Qt = Q_r - sum_j lambda_j Q_c,j,

over the box ``eta_bounds x lam_bounds^m``. Three solvers are provided (spec §2.3-§2.4, decision D3):

* ``"newton"`` (default): projected damped Newton in float64 torch, one vectorised pass per iteration, warm-started,
  with a multiplicative trust region and Armijo backtracking.
* ``"slsqp"``: scipy SLSQP with the settings of the paper's code (finite differences, ``tol=ftol=1e-3``,
  ``maxiter=10``).
* ``"cvxpy"``: the exact exponential-cone program, solved by Clarabel; the correctness reference (about 0.1 s).

When no reweighting inside the KL ball meets a threshold, the dual is unbounded below; the solve then returns the
cost-minimising weights of decision D11 and flags the step infeasible.

Entry points: :func:`solve_estep` (what the CVPO algorithm calls once per gradient step, torch in and out) and
:func:`solve_estep_dual` (decision D4: numpy or torch in, ``(eta, lam)`` out).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np
import torch as th

__all__ = [
    "SOLVERS",
    "EStepSolution",
    "EStepWarmStart",
    "NonFiniteQError",
    "estep_dual_objective",
    "solve_estep",
    "solve_estep_dual",
]

SOLVERS: tuple[str, ...] = ("newton", "slsqp", "cvxpy")
"""Valid values of the ``solver`` argument."""

DEFAULT_ETA_BOUNDS: tuple[float, float] = (1e-6, 1e5)
DEFAULT_LAM_BOUNDS: tuple[float, float] = (0.0, 1e5)
COLD_START_ETA = 1.0
"""Cold start of the Newton solver: (eta, lambda) = (1, 0) (spec §2.4 step 7)."""
SLSQP_COLD_START = 0.1
"""Cold start of the SLSQP solver for eta and every lambda_j, as in the paper's code."""

_ARMIJO_C = 1e-4
_ARMIJO_HALVINGS = 40
_ETA_TRUST_FACTOR = 10.0
_LAM_TRUST_FACTOR = 10.0
_HESSIAN_RIDGE = 1e-12

Array = np.ndarray
QInput = th.Tensor | np.ndarray
Bounds = tuple[float, float]


class NonFiniteQError(ValueError):
    """The E-step Q values contain NaN or infinite entries.

    Raised before any solver runs, so the caller can skip the policy update instead of poisoning the model. The
    message says how many entries are non-finite and in which input.
    """


# --------------------------------------------------------------------------------------------------------------------
# Public data types
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EStepWarmStart:
    """Where the next E-step dual solve starts, plus the infeasibility memory of D11.

    Plain Python values only, so it pickles (and saves with a model) exactly.

    Attributes:
        eta: Last finite temperature eta (> 0).
        lam: Last finite multipliers, one per constraint.
        infeasible: Whether the previous step was infeasible; if so the next solve always runs the c_min check
            (spec §2.2, last bullet).
    """

    eta: float = COLD_START_ETA
    lam: tuple[float, ...] = (0.0,)
    infeasible: bool = False

    @classmethod
    def initial(cls, eta: float = COLD_START_ETA, lam: float | Sequence[float] | Array = 0.0) -> EStepWarmStart:
        """A warm start from initial values (for example the algorithm's ``eta_init`` / ``lam_init``).

        Args:
            eta: Initial temperature (> 0).
            lam: Initial multiplier(s): a float, or one value per constraint.

        Returns:
            The warm start, with ``infeasible=False``.
        """
        return cls(float(eta), tuple(float(v) for v in np.atleast_1d(np.asarray(lam, dtype=np.float64))), False)

    @property
    def lam_array(self) -> Array:
        """The multipliers as a float64 array of shape (m,)."""
        return np.asarray(self.lam, dtype=np.float64)


@dataclass
class EStepSolution:
    """Result of one E-step (:func:`solve_estep`).

    Attributes:
        weights: Non-parametric E-step distribution q, shape (B, K), rows summing to 1, on the input device, in
            float32 (float64 when the Q values are float64). Feasible: ``softmax_i((Q_r - sum_j lam_j Q_c,j)/eta)``;
            infeasible: the D11 recovery ``softmax_i(-Q_c,V / eta)`` with V the violated constraints; degenerate:
            uniform.
        eta: Temperature. In the infeasible case, the temperature eta_c of the recovery weights on Q_c,V.
        lam: Multipliers, shape (m,). In the infeasible case, the upper bound for the violated constraints and the
            lower bound for the others.
        iterations: Iterations of the main dual solver (Newton / SLSQP / interior-point iterations).
        kkt_residual: Projected-gradient residual of the main dual at its final iterate,
            ``max(|dg/deta|/eps, max_j |dg/dlambda_j|/(1 + |eps1_j|))`` over the coordinates not held at a bound.
        converged: Whether the main dual solver met its tolerance.
        infeasible: D11: no reweighting within the KL ball meets every threshold (weights are the recovery weights).
        degenerate: Every row of Q_r and of every Q_c is constant: weights are uniform and no solver ran.
        estep_kl: ``mean_s sum_i w log(K w)`` under the returned weights.
        qc_mean: ``mean_{s,i} Q_c,j`` under pi_old's samples (uniform weights), shape (m,).
        qc_weighted: ``mean_s sum_i w Q_c,j`` under the returned weights, shape (m,).
        dual_objective: g at the main solver's final iterate, in the units of the inputs (for the infeasible case,
            the value at the box bound the solver ran to).
        solver: Name of the main dual solver.
        c_min: Smallest reachable ``E_q[Q_c,j]`` inside the KL ball, shape (m,), when the feasibility check ran;
            else None.
        warm_start: What to pass as ``init`` next time (D11: the last finite (eta, lambda) when infeasible).
    """

    weights: th.Tensor
    eta: float
    lam: Array
    iterations: int
    kkt_residual: float
    converged: bool
    infeasible: bool
    degenerate: bool
    estep_kl: float
    qc_mean: Array
    qc_weighted: Array
    dual_objective: float
    solver: str
    c_min: Array | None
    warm_start: EStepWarmStart

    @property
    def feasible(self) -> bool:
        """``not infeasible``."""
        return not self.infeasible


# --------------------------------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class _Problem:
    """A validated E-step dual in float64, every row of Q shifted by its first sample (an exact reformulation).

    Shifting row s of Q_r by a constant c_s adds mean_s c_s to g; shifting row s of Q_c,j by d_s is the same as
    lowering eps1_j by mean_s d_s. The shift keeps magnitudes at the scale of the within-state spread (well
    conditioned for large offsets) and turns a constant row into exact zeros (the degeneracy test).
    """

    qr: th.Tensor  # (B, K), row-shifted
    qc: th.Tensor  # (m, B, K), row-shifted; a view of features[1:]
    features: th.Tensor  # (m+1, B, K): [solver slot, qc...]
    eps: float
    eps1: Array  # (m,) thresholds as given
    eps1_shifted: Array  # (m,) eps1 - qc_offset
    qc_offset: Array  # (m,) mean_s of the Q_c row shifts (E_q[Q_c] = E_q[shifted Q_c] + qc_offset)
    qc_mean: Array  # (m,) mean_{s,i} Q_c,j
    qr_offset: float  # mean_s of the Q_r row shifts (g = g_shifted + qr_offset)
    degenerate: bool
    cost_was_2d: bool
    out_dtype: th.dtype

    @property
    def batch(self) -> int:
        return int(self.qr.shape[0])

    @property
    def n_samples(self) -> int:
        return int(self.qr.shape[1])

    @property
    def n_constraints(self) -> int:
        return int(self.qc.shape[0])


def _as_tensor(value: Any, name: str, device: th.device | None) -> th.Tensor:
    if isinstance(value, th.Tensor):
        tensor = value.detach()
    else:
        try:
            tensor = th.as_tensor(np.asarray(value), device=device)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"{name} must be a numpy array or a torch tensor of Q values; got {type(value)}") from error
    if tensor.dtype == th.bool or tensor.is_complex():
        raise TypeError(f"{name} must hold real Q values; got dtype {tensor.dtype}")
    return tensor


def _shape_error(q_reward: th.Tensor, q_cost: th.Tensor) -> str:
    return (
        f"q_cost must have shape (batch, n_samples) or (n_constraints, batch, n_samples) with the same (batch, "
        f"n_samples) as q_reward {tuple(q_reward.shape)}; got {tuple(q_cost.shape)}. Samples go along the last axis."
    )


def _check_q_shapes(q_reward: th.Tensor, q_cost: th.Tensor) -> None:
    if q_reward.ndim != 2:
        raise ValueError(
            f"q_reward must have shape (batch, n_samples), one row of K sampled-action values per state; got shape "
            f"{tuple(q_reward.shape)}"
        )
    batch, n_samples = q_reward.shape
    if batch < 1:
        raise ValueError("q_reward has an empty batch (0 states); the E-step needs at least one state")
    if n_samples < 2:
        raise ValueError(
            f"n_samples K = {n_samples}: the E-step reweights K >= 2 actions sampled per state (got q_reward of shape "
            f"{tuple(q_reward.shape)}); sample at least 2 actions per state"
        )
    if q_cost.ndim == 2:
        if q_cost.shape != q_reward.shape:
            raise ValueError(_shape_error(q_reward, q_cost))
    elif q_cost.ndim == 3:
        if q_cost.shape[1:] != q_reward.shape:
            raise ValueError(_shape_error(q_reward, q_cost))
        if q_cost.shape[0] < 1:
            raise ValueError(f"q_cost has no constraint (shape {tuple(q_cost.shape)}); CVPO needs m >= 1 cost critic")
    else:
        raise ValueError(_shape_error(q_reward, q_cost))
    if q_cost.device != q_reward.device:
        raise ValueError(
            f"q_reward is on {q_reward.device} but q_cost is on {q_cost.device}; put both on the same device"
        )


def _check_scalars(kl_bound: float, eta_bounds: Bounds, lam_bounds: Bounds, tol: float, max_iter: int) -> float:
    eps = float(kl_bound)
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(
            f"kl_bound must be a positive finite float (the E-step KL trust region eps, e.g. 0.02); got {kl_bound}"
        )
    eta_lo, eta_hi = (float(v) for v in eta_bounds)
    if not (0 < eta_lo < eta_hi < math.inf):
        raise ValueError(f"eta_bounds must satisfy 0 < low < high < inf; got {tuple(eta_bounds)}")
    lam_lo, lam_hi = (float(v) for v in lam_bounds)
    if not (0 <= lam_lo < lam_hi < math.inf):
        raise ValueError(
            f"lam_bounds must satisfy 0 <= low < high < inf (a finite upper bound is what detects infeasibility); "
            f"got {tuple(lam_bounds)}"
        )
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive finite float; got {tol}")
    if int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1; got {max_iter}")
    return eps


def _check_threshold(cost_threshold: Any, n_constraints: int) -> Array:
    if isinstance(cost_threshold, int | float) and not isinstance(cost_threshold, bool):
        thresholds = np.full(n_constraints, float(cost_threshold))
    else:
        if isinstance(cost_threshold, th.Tensor):
            cost_threshold = cost_threshold.detach().cpu().numpy()
        thresholds = np.asarray(cost_threshold, dtype=np.float64).reshape(-1)
        if thresholds.size == 1:
            thresholds = np.full(n_constraints, float(thresholds[0]))
    if thresholds.size != n_constraints:
        raise ValueError(
            f"cost_threshold must be a scalar or have shape ({n_constraints},), one Q_c threshold per constraint of "
            f"q_cost; got {thresholds.size} values"
        )
    if not all(math.isfinite(v) for v in thresholds.tolist()):
        raise ValueError(f"cost_threshold must be finite (any real value); got {thresholds.tolist()}")
    return thresholds


def _count_non_finite(tensors: dict[str, th.Tensor]) -> str:
    parts = []
    for name, tensor in tensors.items():
        bad = int((~th.isfinite(tensor)).sum().item())
        if bad:
            n_nan = int(th.isnan(tensor).sum().item())
            parts.append(
                f"{name} has {bad} non-finite entries ({n_nan} NaN, {bad - n_nan} inf) out of {tensor.numel()}"
            )
    return "; ".join(parts)


def _prepare(
    q_reward: Any,
    q_cost: Any,
    kl_bound: float,
    cost_threshold: Any,
    eta_bounds: Bounds,
    lam_bounds: Bounds,
    tol: float,
    max_iter: int,
) -> _Problem:
    """Validate the inputs, move them to float64 and shift every row by its first sample (spec D12: the dual is kept
    in float64). The inputs are never modified."""
    eps = _check_scalars(kl_bound, eta_bounds, lam_bounds, tol, max_iter)
    qr_in = _as_tensor(q_reward, "q_reward", None)
    qc_in = _as_tensor(q_cost, "q_cost", qr_in.device)
    _check_q_shapes(qr_in, qc_in)
    cost_was_2d = qc_in.ndim == 2
    qc_in = qc_in.unsqueeze(0) if cost_was_2d else qc_in
    eps1 = _check_threshold(cost_threshold, int(qc_in.shape[0]))
    out_dtype = th.promote_types(qr_in.dtype, th.float32) if qr_in.is_floating_point() else th.float32

    m, batch, n_samples = (int(v) for v in qc_in.shape)
    # One float64 buffer [Q_r, solver slot, Q_c,1..m], every row shifted by its first sample (the inputs are never
    # written to); buffer[1:] is the (m+1, B, K) feature block of the Newton passes.
    buffer = th.empty((m + 2, batch, n_samples), dtype=th.float64, device=qr_in.device)
    buffer.select(0, 0).copy_(qr_in)
    buffer.select(0, 1).zero_()
    buffer.narrow(0, 2, m).copy_(qc_in)
    shift = buffer.narrow(2, 0, 1).clone()
    buffer.sub_(shift)
    # ||Q - Q[:, :1]|| is NaN/inf exactly when some entry is (or the spread overflows), and 0 for constant rows.
    stats = th.cat([th.linalg.vector_norm(buffer).view(1), buffer.sum(dim=(1, 2)), shift.sum(dim=(1, 2))])
    values = stats.tolist()
    if not math.isfinite(sum(values)):  # NaN and inf propagate into the sum
        detail = _count_non_finite({"q_reward": qr_in, "q_cost": qc_in})
        if detail:
            raise NonFiniteQError(
                f"non-finite E-step Q values: {detail}. Skip this policy update (the critics may have diverged)."
            )
        raise ValueError(
            "the E-step Q values are too large for float64 (their spread overflows); rescale the rewards or costs"
        )
    # values: [norm, row-shifted sums (m+2), shift sums (m+2)], in buffer order [Q_r, slot, Q_c...]
    qc_offset = np.array(values[m + 5 :]) / batch
    return _Problem(
        qr=buffer.select(0, 0),
        qc=buffer.narrow(0, 2, m),
        features=buffer.narrow(0, 1, m + 1),
        eps=eps,
        eps1=eps1,
        eps1_shifted=eps1 - qc_offset,
        qc_offset=qc_offset,
        qc_mean=np.array(values[3 : 3 + m]) / (batch * n_samples) + qc_offset,
        qr_offset=values[m + 3] / batch,
        degenerate=values[0] == 0.0,
        cost_was_2d=cost_was_2d,
        out_dtype=out_dtype,
    )


def _initial_point(init: Any, m: int, default_lam: float) -> EStepWarmStart:
    """Validate ``init`` (a warm start, a pair (eta, lam) or None) against m constraints."""
    if init is None:
        return EStepWarmStart(COLD_START_ETA, (default_lam,) * m, False)
    if isinstance(init, EStepWarmStart):
        start = init
    else:
        try:
            eta, lam = init
        except (TypeError, ValueError) as error:
            raise TypeError(f"init must be an EStepWarmStart or a pair (eta, lam); got {init!r}") from error
        start = EStepWarmStart.initial(eta, lam)
    lam_values = tuple(float(v) for v in start.lam)
    if len(lam_values) == 1 and m > 1:
        lam_values = lam_values * m
    if len(lam_values) != m:
        raise ValueError(f"init has {len(lam_values)} multipliers but q_cost has {m} constraints")
    eta = float(start.eta)
    if not (math.isfinite(eta) and eta > 0 and all(math.isfinite(v) for v in lam_values)):
        raise ValueError(
            f"init must hold a finite eta > 0 and finite multipliers; got eta={start.eta}, lam={start.lam}"
        )
    return EStepWarmStart(eta, lam_values, bool(start.infeasible))


# --------------------------------------------------------------------------------------------------------------------
# One vectorised pass: g, gradient and Hessian
# --------------------------------------------------------------------------------------------------------------------

Vec = list[float]
"""Small vectors over x = (eta, lambda_1..m) are plain lists: numpy's per-call cost dominates at this size."""


class _DualPass:
    """Evaluates g(eta, lambda) and its derivatives on fixed (row-shifted, float64) Q matrices.

    :meth:`value` forms ``Qt = Q_r - sum_j lambda_j Q_c,j``, ``e = exp((Qt - max_i Qt) / eta)`` and g;
    :meth:`gradient` and then :meth:`hessian` continue from the same buffers (they must follow a :meth:`value` call
    at the same point), so an accepted line-search trial is reused, and the Hessian is only formed when another
    Newton step is needed. Each is a handful of vectorised passes over the (B, K) matrices and one host sync.

    With ``w = softmax_i(Qt / eta)`` and the per-state moments under w (spec §2.2):

        g             = eta*eps + sum_j lambda_j eps1_j + eta * mean_s lse_s - eta log K,
                        lse_s = log sum_i exp(Qt[s,i] / eta)
        dg/deta       = eps - mean_s KL_s,     KL_s = sum_i w log(K w) = E_w[Qt]/eta - lse_s + log K
        dg/dlambda_j  = eps1_j - mean_s E_w[Q_c,j]
        d2g/deta2     = mean_s Var_w(Qt) / eta^3,   d2g/deta dlambda_j = mean_s Cov_w(Qt, Q_c,j) / eta^2,
        d2g/dlambda_j dlambda_l = mean_s Cov_w(Q_c,j, Q_c,l) / eta.

    Args:
        features: (m+1, B, K) block ``[Qt slot, Q_c,1..m]`` (row-shifted). With m >= 1 the slot is overwritten
            with Qt on every evaluation; with m = 0 it holds the fixed Q_r (the cost-only dual).
        qr: Row-shifted Q_r, (B, K) (unused when m = 0).
        eps: KL bound.
        eps1: Row-shifted thresholds, m values.
    """

    def __init__(self, features: th.Tensor, qr: th.Tensor | None, eps: float, eps1: Sequence[float] | Array) -> None:
        self.features = features
        rows = features.unbind(0)
        self.qt, self.qc_rows = rows[0], rows[1:]
        self.qr = qr if qr is not None else self.qt
        self.m = len(self.qc_rows)
        self.batch, self.n_samples = int(features.shape[1]), int(features.shape[2])
        self.eps = eps
        self.eps1 = [float(v) for v in eps1]
        self.log_k = math.log(self.n_samples)
        self.e = th.empty_like(self.qt)
        self.scratch = th.empty_like(features)
        self.scratch_w: th.Tensor | None = None
        self.means = th.empty((self.m + 1, self.batch), dtype=th.float64, device=features.device)
        self.norm = th.empty((self.batch, 1), dtype=th.float64, device=features.device)
        # views reused on every pass (a view costs as much as a small kernel call)
        self.means_col = self.means.unsqueeze(2)
        self.norm_row = self.norm.view(1, -1)
        self.lse_mean = 0.0

    def value(self, x: Vec) -> float:
        """g(x) with x = (eta, lambda_1..m), via a max-shifted log-sum-exp."""
        eta = x[0]
        qt = self.qt
        if self.m:
            th.add(self.qr, self.qc_rows[0], alpha=-x[1], out=qt)
            for j in range(1, self.m):
                qt.add_(self.qc_rows[j], alpha=-x[1 + j])
        q_max = qt.amax(dim=1, keepdim=True)
        th.add(q_max * (-1.0 / eta), qt, alpha=1.0 / eta, out=self.e)
        self.e.exp_()
        th.sum(self.e, dim=1, keepdim=True, out=self.norm)
        self.lse_mean = self.norm.log().add_(q_max, alpha=1.0 / eta).sum().item() / self.batch
        lam_term = sum(lam * thr for lam, thr in zip(x[1:], self.eps1, strict=True))
        return eta * (self.eps + self.lse_mean - self.log_k) + lam_term

    def gradient(self, x: Vec) -> tuple[Vec, float]:
        """Gradient and mean_s E_w[Qt] at the point of the last :meth:`value` call."""
        th.mul(self.features, self.e, out=self.scratch)
        th.sum(self.scratch, dim=2, out=self.means)
        self.means.div_(self.norm_row)  # E_w[Qt], E_w[Q_c,j] per state
        flat = self.means.sum(dim=1).tolist()
        e_qt = flat[0] / self.batch
        grad = [self.eps - (e_qt / x[0] - self.lse_mean + self.log_k)]
        grad += [thr - v / self.batch for thr, v in zip(self.eps1, flat[1:], strict=True)]
        return grad, e_qt

    def hessian(self, x: Vec) -> list[Vec]:
        """Hessian at the point of the last :meth:`gradient` call."""
        m1 = self.m + 1
        w = self.e.div_(self.norm)
        if self.scratch_w is None:
            self.scratch_w = th.empty_like(self.features)
            self.centred_t = self.scratch.view(m1, -1).T
            self.weighted_flat = self.scratch_w.view(m1, -1)
        th.sub(self.features, self.means_col, out=self.scratch)  # centred per state
        th.mul(self.scratch, w, out=self.scratch_w)
        flat = th.mm(self.weighted_flat, self.centred_t).view(-1).tolist()
        eta = x[0]
        scale = [eta**-1.5] + [eta**-0.5] * self.m  # H = diag(scale) (sum_s Cov_w) diag(scale) / B
        return [[flat[m1 * a + b] * scale[a] * scale[b] / self.batch for b in range(m1)] for a in range(m1)]


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
    """Stopping measure of spec §2.4 step 3: max over free coordinates of |grad| / scale (0 if none is free)."""
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
    """``d_f = -(H_ff + 1e-12 tr(H_ff) I)^{-1} g_f`` on the free block (spec §2.4 step 4).

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
    """Scale a step so eta changes by at most a factor 10 and |dlambda_j| <= 10 max(lambda_j, 1) (§2.4 step 5)."""
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
    """Backtrack on the projected point ``clip(x + t d)`` (spec §2.4 step 6): accept when
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
    """Projected damped Newton with a multiplicative trust region and Armijo line search (spec §2.4).

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


def _slsqp(problem: _Problem, dual: _DualPass, x0: Vec, lo: Vec, hi: Vec, scale: Vec) -> _DualResult:
    """scipy SLSQP with the paper's code settings (spec §2.4): finite differences, tol = ftol = 1e-3, maxiter 10.

    g is evaluated in numpy as the paper's code does (max-shifted, no analytic gradient), on the box given by
    ``eta_bounds`` and ``lam_bounds`` (the paper's code: (1e-6, 1e5) for both). SLSQP's ftol is absolute, so with
    Q values far below 1 it stops early. ``res.success`` is not enforced (the paper's code ignores it); it only
    sets ``converged``, which triggers the D11 feasibility check when False.
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
    """The exponential-cone form of the dual (spec §2.3), DPP-parametrised and compiled once per (B, K, m).

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
    """Solve the exponential-cone program of spec §2.3 (compiled once per shape and cached).

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


# --------------------------------------------------------------------------------------------------------------------
# Feasibility (D11)
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class _CostOnly:
    eta: float  # eta_c, the temperature of the cost-minimising weights
    c_min: float  # min E_q[Q_c] inside the KL ball, in the row-shifted units of the Q_c it was given
    iterations: int


def _cost_only(problem: _Problem, q_cost: th.Tensor, eta_bounds: Bounds, tol: float, max_iter: int) -> _CostOnly:
    """Minimise E_q[Q_c] over the KL ball: the dual with Q_r := -Q_c and no multiplier (spec §2.2).

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
    """Run the main dual solver, then the D11 feasibility check when it is due (spec §2.2, last bullet)."""
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
        warm_start=EStepWarmStart(start.eta, start.lam, True),  # D11: keep the last finite (eta, lambda)
    )


def _recovery(
    problem: _Problem,
    violated: Array,
    solves: list[_CostOnly],
    eta_bounds: Bounds,
    slack: Array,
    tol: float,
    max_iter: int,
) -> tuple[Array, th.Tensor, float]:
    """D11 recovery: the weights ``softmax(-Q_c,V / eta_c)`` minimising E_q[Q_c,V] over the KL ball, where Q_c,V is
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
    """Solve the CVPO E-step: the dual over (eta, lambda), then the weights, once (spec §2.2-§2.4, D3, D11, D12).

    The dual (spec §2.2) is ``g(eta, lambda) = eta*eps + sum_j lambda_j eps1_j
    + eta * mean_s log((1/K) sum_i exp((Q_r - sum_j lambda_j Q_c,j)[s,i] / eta))``, minimised over
    ``eta_bounds x lam_bounds^m`` in float64. The weights are ``softmax_i((Q_r - sum_j lambda_j Q_c,j) / eta)``,
    computed once from new tensors; the inputs are never modified (no lambda doubling, spec §6 P1).

    Infeasibility (D11) is checked when the solve ends with a multiplier or eta at its upper bound, fails to
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
        tol: Stopping tolerance of the Newton solver (spec §2.4 step 3) and of the feasibility margin.
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
    """Solve the CVPO E-step dual (decision D4) and return (eta, lambda).

    Minimises ``g(eta, lambda)`` of spec §2.2 over the box; see :func:`solve_estep` for the maths, the
    infeasibility handling (D11) and the meaning of every argument. numpy arrays and torch tensors are accepted.

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
    """Evaluate the dual g(eta, lambda) of spec §2.2 in float64, in the units of the inputs.

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
