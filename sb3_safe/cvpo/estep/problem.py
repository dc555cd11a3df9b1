"""The E-step dual problem: its inputs checked and prepared, its data types, and one vectorised pass.

See :mod:`sb3_safe.cvpo.estep` for the problem and its dual; here the Q matrices are validated (shapes, finite
values, thresholds, bounds), shifted row by row by their first sample (an exact reformulation), and
:class:`_DualPass` evaluates the dual g(eta, lambda), its gradient and Hessian in one pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th

SOLVERS: tuple[str, ...] = ("newton", "slsqp", "cvxpy")
"""Valid values of the ``solver`` argument."""

DEFAULT_ETA_BOUNDS: tuple[float, float] = (1e-6, 1e5)
DEFAULT_LAM_BOUNDS: tuple[float, float] = (0.0, 1e5)
COLD_START_ETA = 1.0
"""Cold start of the Newton solver: (eta, lambda) = (1, 0)."""
SLSQP_COLD_START = 0.1
"""Cold start of the SLSQP solver for eta and every lambda_j, as in the paper's code."""


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
    """Where the next E-step dual solve starts, plus whether the last step was infeasible.

    Plain Python values only, so it pickles (and saves with a model) exactly.

    Attributes:
        eta: Last finite temperature eta (> 0).
        lam: Last finite multipliers, one per constraint.
        infeasible: Whether the previous step was infeasible; if so the next solve always runs the c_min check.
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
            infeasible: the recovery ``softmax_i(-Q_c,V / eta)`` with V the violated constraints; degenerate:
            uniform.
        eta: Temperature. In the infeasible case, the temperature eta_c of the recovery weights on Q_c,V.
        lam: Multipliers, shape (m,). In the infeasible case, the upper bound for the violated constraints and the
            lower bound for the others.
        iterations: Iterations of the main dual solver (Newton / SLSQP / interior-point iterations).
        kkt_residual: Projected-gradient residual of the main dual at its final iterate,
            ``max(|dg/deta|/eps, max_j |dg/dlambda_j|/(1 + |eps1_j|))`` over the coordinates not held at a bound.
        converged: Whether the main dual solver met its tolerance.
        infeasible: no reweighting within the KL ball meets every threshold (weights are the recovery weights).
        degenerate: Every row of Q_r and of every Q_c is constant: weights are uniform and no solver ran.
        estep_kl: ``mean_s sum_i w log(K w)`` under the returned weights.
        qc_mean: ``mean_{s,i} Q_c,j`` under pi_old's samples (uniform weights), shape (m,).
        qc_weighted: ``mean_s sum_i w Q_c,j`` under the returned weights, shape (m,).
        dual_objective: g at the main solver's final iterate, in the units of the inputs (for the infeasible case,
            the value at the box bound the solver ran to).
        solver: Name of the main dual solver.
        c_min: Smallest reachable ``E_q[Q_c,j]`` inside the KL ball, shape (m,), when the feasibility check ran;
            else None.
        warm_start: What to pass as ``init`` next time (the last finite (eta, lambda) when infeasible).
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
    """Validate the inputs, move them to float64 and shift every row by its first sample (the dual is kept
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

    With ``w = softmax_i(Qt / eta)`` and the per-state moments under w:

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
