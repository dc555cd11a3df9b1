"""RSLUCB-QVI's per-state problems: a linear objective over the action simplex under one second-order-cone constraint.

For every state s, with n actions (docs/linear_agents.md, 'RSLUCB-QVI: randomised plans and the per-state SOCP'):

    maximise q^T theta   s.t.   theta >= 0,  1^T theta = 1,   g^T theta + ||Rb theta||_2 <= tau

where q_a = Q~_h(s,a), g_a = <phi(s,a), gamma_{h,s}>, Rb = beta G^{1/2} with G = Phi_s^T M_s Phi_s (built by the
caller with :func:`psd_sqrt`). The safe vertex e_{a0} is always feasible: its cost is known analytically
(g[a0] = tau_h(s) <= tau and Rb e_{a0} = 0), so it is never rejected on floating-point grounds.

Within an episode g, Rb and tau are fixed and only q changes with the step h, so :class:`SimplexSOCP` does all
q-independent work once per episode and :meth:`SimplexSOCP.solve` is a few batched numpy operations per call.

Fast exact path, vectorised over states and the 2^n - n - 1 faces F of the simplex with |F| >= 2:

1. Screening: if a maximiser of q over the simplex (a vertex) is feasible, it is optimal.
2. Otherwise the cone constraint is active at an optimum, which is a feasible vertex or lies in the relative interior
   of a face F. On F, theta = thetabar + N y (thetabar uniform on F, N an orthonormal basis of {1}^perp in R^F);
   with p = N^T q, e = Rb thetabar, Bf = Rb N, rho = tau - g^T thetabar, cf = N^T g the face problem is
   max p^T y s.t. ||e + Bf y|| <= rho - cf^T y. Squaring the active constraint gives y^T W y + 2 v^T y + k0 = 0 with
   W = Bf^T Bf - cf cf^T, v = Bf^T e + rho cf, k0 = ||e||^2 - rho^2, and stationarity gives y = W^{-1}(t p - v),
   t^2 = (v^T W^{-1} v - k0) / (p^T W^{-1} p). Only t > 0 can be a maximum (see :meth:`SimplexSOCP._enumerate`).
   Candidates must lie in the simplex and satisfy the original constraint; the best feasible vertex or face point
   wins, ties going to the safe vertex.
3. Faces with a flat direction z (Bf z = 0 and cf^T z = 0, e.g. Frozen Lake's corner states, where a mixture of two
   actions reproduces a0's transitions) need no candidates: an optimum inside slides along z to a smaller face.
4. A state falls back to cvxpy when a face that could beat the best candidate (max_{a in F} q_a above it) could not
   be resolved (W singular without a flat direction, or p = 0), or when the best candidate is a strictly feasible
   vertex although no maximiser of q is feasible (impossible at an optimum, so a candidate was lost to round-off).

Two additions to this enumeration, both only adding feasible candidates: the cone's apex on each face
(Rb theta = 0, g^T theta = tau; not a stationary point, so the formula misses it when Rb is rank-deficient), which
does not depend on q and is found once per episode; and a round-off repair: a candidate that misses the constraint by
at most ``REPAIR_RTOL`` (scaled) is moved towards the vertex with the most slack, by the convexity bound, instead of
being dropped.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

SOLVERS = ("fast", "cvxpy")

FEASIBILITY_RTOL = 1e-12
"""A candidate is feasible when g^T theta + ||Rb theta|| <= tau + FEASIBILITY_RTOL * scale(s)."""
NEGATIVE_TOL = 1e-9
"""Face candidates with a coordinate below -NEGATIVE_TOL are outside the simplex; smaller negatives are clipped."""
SINGULAR_RTOL = 1e-10
"""W is singular when its smallest |eigenvalue| is below SINGULAR_RTOL (||Bf||_F^2 + ||cf||^2)."""
FLAT_RTOL = 1e-12
"""A face has a flat direction when the smallest eigenvalue of [Bf; cf^T]^T [Bf; cf^T] is below FLAT_RTOL times its
trace (a singular value below 1e-6 of the norm: round-off of an exact null direction, e.g. Frozen Lake's corners)."""
OBJECTIVE_RTOL = 1e-9
"""An unresolved face matters when max_{a in F} q_a exceeds the best candidate by more than this times max(1, |q|)."""
SLACK_RTOL = 1e-7
"""Slack (scaled) above which an unscreened best vertex is taken as evidence of a lost candidate."""
REPAIR_RTOL = 1e-6
"""Largest violation (scaled) repaired by moving towards the vertex with the most slack."""
SUBSET_FRACTION = 0.3
"""Face enumeration runs on all active states (no gathers) unless at most this fraction is left after screening."""
CVXPY_SOLVER = "CLARABEL"
CVXPY_OPTIONS: dict[str, float] = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10}
"""Tighter than Clarabel's 1e-8 defaults (about as fast): theta must pass the 1e-12 feasibility check."""
CVXPY_MARGIN_RTOL = 1e-9
"""tau is lowered by this (scaled) for cvxpy, so that its ~1e-10 infeasibility still passes the 1e-12 check."""
SNAP_TOL = 1e-8
"""A cvxpy theta that fails the check but lies this close to the safe vertex is taken as the safe vertex."""
_CVXPY_OK = ("optimal", "optimal_inaccurate")


def psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of (a batch of) positive semi-definite matrices: S = V diag(sqrt(max(lambda, 0))) V^T.

    The input is symmetrised first. Negative eigenvalues are clipped to 0, and so are eigenvalues at the round-off
    level of the matrix (below n eps max|lambda|), so that an exact null vector of G stays closer to a null vector of
    S. Callers build Rb = beta * psd_sqrt(G); since G e_{a0} = 0 analytically (G = Phi_s^T M_s Phi_s, and
    M_s phi_0(s) = 0), they should also set Rb's row and column a0 to exactly 0.

    Args:
        matrix: ``(..., n, n)``.

    Returns:
        S ``(..., n, n)``, symmetric PSD with S @ S = G.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim < 2 or matrix.shape[-1] != matrix.shape[-2]:
        raise ValueError(f"psd_sqrt expects (..., n, n) matrices, got shape {matrix.shape}.")
    sym = 0.5 * (matrix + np.swapaxes(matrix, -1, -2))
    eigval, eigvec = np.linalg.eigh(sym)
    floor = matrix.shape[-1] * np.finfo(np.float64).eps * np.abs(eigval).max(axis=-1, keepdims=True, initial=0.0)
    root = np.sqrt(np.where(eigval > floor, eigval, 0.0))
    out = (eigvec * root[..., None, :]) @ np.swapaxes(eigvec, -1, -2)
    return 0.5 * (out + np.swapaxes(out, -1, -2))


@dataclass
class SOCPSolution:
    """Maximisers of one :meth:`SimplexSOCP.solve` call.

    Attributes:
        theta: The maximisers ``(n_states, n)``: nonnegative, summing to 1 (to round-off). Inactive states and
            states whose solver failed get the safe vertex (or, on the fast path, the best verified candidate).
        value: q^T theta ``(n_states,)`` (0 at inactive states).
        greedy: Number of states solved by screening (a feasible maximiser of q).
        face: Number of states solved by face enumeration.
        cvxpy: Number of states sent to cvxpy (all active states for ``solver="cvxpy"``); greedy + face + cvxpy is
            the number of active states.
        fallbacks_to_safe: Number of states where cvxpy failed and a verified fallback was returned.
        max_violation: max over active states of g^T theta + ||Rb theta|| - tau, where the safe vertex counts as
            feasible (min(its computed value, 0): Rb e_{a0} = 0 analytically); -inf when no state is active.
    """

    theta: np.ndarray
    value: np.ndarray
    greedy: int
    face: int
    cvxpy: int
    fallbacks_to_safe: int
    max_violation: float


@dataclass
class _Reference:
    """A DPP-parametrised cvxpy problem for one action count, compiled on its first solve and then re-solved."""

    problem: Any
    theta: Any
    q: Any
    g: Any
    rb: Any
    tau: Any


_REFERENCE_PROBLEMS: dict[int, _Reference] = {}


def _reference_problem(n: int) -> _Reference:
    """The module-wide cvxpy problem for n actions. Beta is folded into the Parameter Rb: ``b * cp.norm(M @ x)``
    with both b and M Parameters is not DPP (cvxpy's disciplined parametrized programming rules)."""
    if n not in _REFERENCE_PROBLEMS:
        import cvxpy as cp  # lazy: importing cvxpy costs ~0.6 s

        theta = cp.Variable(n, nonneg=True)
        q, g, rb, tau = cp.Parameter(n), cp.Parameter(n), cp.Parameter((n, n)), cp.Parameter()
        problem = cp.Problem(cp.Maximize(q @ theta), [cp.sum(theta) == 1, g @ theta + cp.norm(rb @ theta, 2) <= tau])
        _REFERENCE_PROBLEMS[n] = _Reference(problem, theta, q, g, rb, tau)
    return _REFERENCE_PROBLEMS[n]


def _helmert_basis(k: int) -> np.ndarray:
    """Orthonormal basis ``(k, k-1)`` of {x in R^k : 1^T x = 0} (Helmert): column j is (1,..,1, -(j+1), 0,..),
    normalised by sqrt((j+1)(j+2))."""
    basis = np.zeros((k, k - 1))
    for j in range(k - 1):
        basis[: j + 1, j] = 1.0
        basis[j + 1, j] = -(j + 1.0)
        basis[:, j] /= np.sqrt((j + 1.0) * (j + 2.0))
    return basis


class SimplexSOCP:
    """Per-state problems max q^T theta over the simplex with g^T theta + ||Rb theta|| <= tau, for many states.

    Construction does everything that does not depend on q (once per episode in RSLUCB-QVI):
    vertex feasibility and, for ``solver="fast"``, the face data of every (face, active state) (thetabar, N, e, Bf,
    rho, cf, W, W^{-1} or a singular flag, v, k0, folded into the few arrays a solve needs) and the cone's apex
    points. :meth:`solve` then handles one q per call.

    Args:
        g: g_a = <phi(s,a), gamma_{h,s}> ``(n_states, n)``; g[s, a0] is the analytic safe cost tau_h(s) <= tau.
        rb: Rb = beta G^{1/2} ``(n_states, n, n)`` (see :func:`psd_sqrt`); Rb e_{a0} = 0 in exact arithmetic.
        tau: The threshold.
        safe_index: a0(s) ``(n_states,)``.
        solver: ``"fast"`` (screening, face enumeration, rare cvxpy fallbacks) or ``"cvxpy"`` (the reference).
        active: Optional mask ``(n_states,)`` of the states to solve; the others (e.g. terminal states) get the
            safe vertex and their inputs are not read.

    Raises:
        ValueError: On bad shapes, an unknown solver, a non-finite g or Rb at an active state (naming the first
            one), or g[s, a0] > tau at an active state.
    """

    def __init__(
        self,
        g: np.ndarray,
        rb: np.ndarray,
        tau: float,
        safe_index: np.ndarray,
        solver: str = "fast",
        active: np.ndarray | None = None,
    ) -> None:
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}.")
        g, rb = np.asarray(g, dtype=np.float64), np.asarray(rb, dtype=np.float64)
        if g.ndim != 2 or g.shape[1] < 1:
            raise ValueError(f"g must have shape (n_states, n) with n >= 1, got {g.shape}.")
        n_states, n = g.shape
        if rb.shape != (n_states, n, n):
            raise ValueError(f"rb must have shape {(n_states, n, n)}, got {rb.shape}.")
        safe = np.asarray(safe_index)
        if safe.shape != (n_states,) or not np.issubdtype(safe.dtype, np.integer):
            raise ValueError(f"safe_index must be integers of shape {(n_states,)}, got {safe.dtype} {safe.shape}.")
        out_of_range = (safe < 0) | (safe >= n)
        if out_of_range.any():
            raise ValueError(f"safe_index must lie in [0, {n}): state {int(np.argmax(out_of_range))}.")
        active = np.ones(n_states, dtype=bool) if active is None else np.asarray(active)
        if active.shape != (n_states,) or active.dtype != np.bool_:
            raise ValueError(f"active must be booleans of shape {(n_states,)}, got {active.dtype} {active.shape}.")
        tau = float(tau)
        if not np.isfinite(tau):
            raise ValueError(f"tau must be finite, got {tau}.")
        bad = active & ~(np.isfinite(g).all(axis=1) & np.isfinite(rb).all(axis=(1, 2)))
        if bad.any():
            raise ValueError(f"Non-finite g or rb at state {int(np.argmax(bad))}.")

        self.n_states, self.n_actions, self.tau, self.solver = n_states, n, tau, solver
        self.safe_index = safe.astype(np.int64)
        self.active = active.copy()
        self._act = np.flatnonzero(active)
        # inactive states are zeroed so that no arithmetic sees their (possibly non-finite) data
        self.g = np.where(active[:, None], g, 0.0)
        self.rb = np.where(active[:, None, None], rb, 0.0)
        states = np.arange(n_states)
        safe_cost = self.g[states, self.safe_index]
        col_norm = np.linalg.norm(self.rb, axis=1)  # ||Rb e_a||, (S, n)
        self._scale = np.maximum(np.maximum(1.0, abs(tau)), np.maximum(np.abs(self.g).max(1), col_norm.max(1)))
        self._tol = FEASIBILITY_RTOL * self._scale
        unsafe = active & (safe_cost > tau + self._tol)
        if unsafe.any():
            s = int(np.argmax(unsafe))
            raise ValueError(f"The safe action needs g[a0] <= tau: state {s} has g[a0] = {safe_cost[s]} > tau = {tau}.")

        self._eye = np.eye(n)
        self._safe_onehot = self._eye[self.safe_index]
        self._vertex_violation = self.g + col_norm - tau
        # the safe vertex is feasible by assumption (Rb e_{a0} = 0 analytically): its violation is never positive
        self._safe_violation = np.minimum(self._vertex_violation[states, self.safe_index], 0.0)
        self._vertex_violation[states, self.safe_index] = self._safe_violation
        self._vertex_feasible = self._vertex_violation <= self._tol[:, None]
        # repair anchor: the feasible vertex with the most slack
        slack = np.where(self._vertex_feasible, -self._vertex_violation, -np.inf)
        self._anchor = slack.argmax(axis=1)
        self._anchor_slack = slack[states, self._anchor]
        self._g_t = np.ascontiguousarray(self.g.T)  # (n, S): action-major copies for the candidate checks
        self._rb_t = np.ascontiguousarray(self.rb.transpose(1, 2, 0))  # (n, n, S)
        self._warned = False
        if solver == "fast" and n >= 2 and len(self._act):
            self._prepare_faces()

    # ----------------------------------------------------------------------------------------------------------
    # per-episode preparation
    # ----------------------------------------------------------------------------------------------------------
    def _prepare_faces(self) -> None:
        """Face data for every (face, active state), folded so that a solve needs only q (module docstring, step 2):

        theta = c0 + t u with c0 = thetabar - N W^{-1} v, u = N W^{-1} N^T q (= N W^{-1} p), t^2 = num / (q^T u),
        num = v^T W^{-1} v - k0. Faces of fewer than n actions are zero-padded to n - 1 coordinates. Arrays used per
        solve are stored ``(n, ..., F, A)`` over the A active states, so that sums over actions are elementwise.
        """
        n, m, act = self.n_actions, self.n_actions - 1, self._act
        faces = [face for k in range(2, n + 1) for face in itertools.combinations(range(n), k)]
        members = np.zeros((len(faces), n), dtype=bool)
        thetabar = np.zeros((len(faces), n))
        basis = np.zeros((len(faces), n, m))
        padded = np.zeros((len(faces), m), dtype=bool)
        for f, face in enumerate(faces):
            idx = list(face)
            members[f, idx] = True
            thetabar[f, idx] = 1.0 / len(idx)
            basis[f, idx, : len(idx) - 1] = _helmert_basis(len(idx))
            padded[f, len(idx) - 1 :] = True

        g, rb, tau = self.g[act], self.rb[act], self.tau
        e = np.einsum("sij,fj->sfi", rb, thetabar)
        bf = np.einsum("sij,fjk->sfik", rb, basis)
        rho = tau - g @ thetabar.T
        cf = np.einsum("fjk,sj->sfk", basis, g)
        w = np.einsum("sfik,sfil->sfkl", bf, bf) - cf[..., :, None] * cf[..., None, :]
        v = np.einsum("sfik,sfi->sfk", bf, e) + rho[..., None] * cf
        k0 = (e**2).sum(-1) - rho**2
        gram = np.einsum("sfik,sfil->sfkl", bf, bf) + cf[..., :, None] * cf[..., None, :]  # [Bf; cf^T]^T [Bf; cf^T]
        w_scale = np.trace(gram, axis1=-2, axis2=-1)
        # padded coordinates get a well-conditioned identity block; p, v and N vanish there, so it never contributes
        pad = np.maximum(w_scale, 1.0)[..., None, None] * (padded[None, :, :, None] * np.eye(m))
        # a flat direction z (Bf z = 0, cf^T z = 0) leaves cost and constraint unchanged: any optimum inside the face
        # can slide along z to a smaller face, so the face needs no candidates
        flat = np.linalg.eigvalsh(gram + pad).min(axis=-1) <= FLAT_RTOL * w_scale
        eigval, eigvec = np.linalg.eigh(w + pad)
        singular = (np.abs(eigval).min(axis=-1) <= SINGULAR_RTOL * w_scale) & ~flat
        with np.errstate(divide="ignore"):
            inv_eig = np.where((singular | flat)[..., None], 0.0, 1.0 / eigval)
        w_inv = (eigvec * inv_eig[..., None, :]) @ np.swapaxes(eigvec, -1, -2)
        w_inv_v = np.einsum("sfkl,sfl->sfk", w_inv, v)
        v_w_inv_v = np.einsum("sfk,sfk->sf", v, w_inv_v)
        num = v_w_inv_v - k0
        # t = 0 (zero gradient on the face) is a genuine root; do not lose it to round-off
        num = np.where((num < 0) & (num > -1e-12 * (np.abs(v_w_inv_v) + np.abs(k0))), 0.0, num)
        num = np.where(singular | flat, np.nan, num)  # no candidates from these faces

        self._members = members
        self._singular = np.ascontiguousarray(singular.T)  # (F, A)
        self._resolvable = np.ascontiguousarray(~(singular | flat).T)
        self._num = np.ascontiguousarray(num.T)
        self._c0 = np.ascontiguousarray(thetabar.T[:, :, None] - np.einsum("fnk,sfk->nfs", basis, w_inv_v))
        self._n_w_inv_nt = np.ascontiguousarray(np.einsum("fnk,sfkl,fml->nmfs", basis, w_inv, basis))
        self._apex, self._apex_kept, self._apex_violation = self._apex_points(thetabar, basis, e, bf, rho, cf)
        self._has_apex = bool(self._apex_kept.any())
        # per-active-state copies, action-major
        self._g_act, self._rb_act = self._g_t[:, act], self._rb_t[:, :, act]
        self._vertex_feasible_act = np.ascontiguousarray(self._vertex_feasible[act].T)
        self._vertex_violation_act = np.ascontiguousarray(self._vertex_violation[act].T)

    def _apex_points(
        self, thetabar: np.ndarray, basis: np.ndarray, e: np.ndarray, bf: np.ndarray, rho: np.ndarray, cf: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The cone's apex on each face: the least-squares solution of Bf y = -e, cf^T y = rho (Rb theta = 0,
        g^T theta = tau). Kept where it is a feasible point of the simplex on the cone's boundary: a strictly
        feasible point inside a face is never the unique optimum of an unscreened state (only when q is constant on
        the face, which the fallback rule covers). Returns theta ``(n, F, A)``, the kept mask and the violation
        ``(F, A)``."""
        system = np.concatenate([bf, cf[..., None, :]], axis=-2)
        rhs = np.concatenate([-e, rho[..., None]], axis=-1)
        y = np.einsum("sfkr,sfr->sfk", np.linalg.pinv(system, rcond=np.sqrt(FLAT_RTOL)), rhs)
        theta = thetabar.T[:, :, None] + np.einsum("fnk,sfk->nfs", basis, y)
        shape = theta.shape
        states = np.broadcast_to(self._act, shape[1:])
        theta, feasible, violation = self._check(theta.reshape(self.n_actions, -1), states.ravel())
        violation = violation.reshape(shape[1:])
        # drop strictly feasible points and vertices (already candidates)
        theta = theta.reshape(shape)
        kept = feasible.reshape(shape[1:]) & (-violation <= SLACK_RTOL * self._scale[states])
        kept &= theta.max(axis=0) < 1.0 - NEGATIVE_TOL
        return np.ascontiguousarray(theta), kept, violation

    # ----------------------------------------------------------------------------------------------------------
    # candidate checks
    # ----------------------------------------------------------------------------------------------------------
    def _check(self, theta: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Project candidates ``(n, k)`` of ``states`` ``(k,)`` onto the simplex and check the constraint.

        Coordinates >= -NEGATIVE_TOL are clipped at 0 and theta renormalised; small violations are repaired
        (:meth:`_repair`). ``rho - cf^T y >= 0`` needs no check: it equals tau - g^T theta >= ||Rb theta||.

        Returns:
            The projected candidates, a feasibility mask ``(k,)`` and the violation g^T theta + ||Rb theta|| - tau.
        """
        with np.errstate(invalid="ignore", over="ignore"):
            ok = np.isfinite(theta).all(axis=0) & (theta.min(axis=0) >= -NEGATIVE_TOL)
            theta = np.where(ok, np.maximum(theta, 0.0), 0.0)
            total = theta.sum(axis=0)
            ok &= total > 0.5
            theta = theta / np.where(ok, total, 1.0)
        violation = self._violation(theta, self._g_t[:, states], self._rb_t[:, :, states])
        tol = self._tol[states]
        if (ok & (violation > tol)).any():
            theta, violation = self._repair(theta, violation, states)
        return theta, ok & (violation <= tol), violation

    def _repair(self, theta: np.ndarray, violation: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Move candidates ``(n, k)`` that miss the constraint by at most REPAIR_RTOL (scaled) towards the vertex with
        the most slack: theta <- (1 - alpha) theta + alpha e_anchor, alpha = viol / (viol + slack), feasible by
        convexity. Returns the candidates and their violations (unchanged where not repaired)."""
        slack = self._anchor_slack[states]
        repair = (violation > self._tol[states]) & (violation <= REPAIR_RTOL * self._scale[states]) & (slack > 0)
        if not repair.any():
            return theta, violation
        with np.errstate(divide="ignore", invalid="ignore"):
            alpha = np.where(repair, violation / (violation + slack), 0.0)
        anchor = np.arange(self.n_actions)[:, None] == self._anchor[states]
        theta = (1.0 - alpha) * theta + alpha * anchor
        repaired = self._violation(theta, self._g_t[:, states], self._rb_t[:, :, states])
        return theta, np.where(repair, repaired, violation)

    def _violation(self, theta: np.ndarray, g: np.ndarray, rb: np.ndarray) -> np.ndarray:
        """g^T theta + ||Rb theta|| - tau for candidates ``(n, k)``, with g ``(n, k)`` and Rb ``(n, n, k)``."""
        cone = np.einsum("imk,mk->ik", rb, theta)
        return np.einsum("nk,nk->k", g, theta) + np.sqrt(np.einsum("ik,ik->k", cone, cone)) - self.tau

    # ----------------------------------------------------------------------------------------------------------
    # per-step solve
    # ----------------------------------------------------------------------------------------------------------
    def solve(self, q: np.ndarray) -> SOCPSolution:
        """Solve every active state's problem for the objective q.

        Args:
            q: q_a = Q~_h(s,a) ``(n_states, n)`` (unclipped); only active states are read.

        Returns:
            The maximisers, values and route counts.

        Raises:
            ValueError: On a bad shape or a non-finite q at an active state (naming the first one).
        """
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (self.n_states, self.n_actions):
            raise ValueError(f"q must have shape {(self.n_states, self.n_actions)}, got {q.shape}.")
        act = self._act
        qa = q[act]
        finite = np.isfinite(qa).all(axis=1)
        if not finite.all():
            raise ValueError(f"Non-finite q at state {int(act[np.argmin(finite)])}.")
        theta = self._safe_onehot.copy()
        value = np.where(self.active, q[np.arange(self.n_states), self.safe_index], 0.0)
        violation = self._safe_violation.copy()
        greedy = face = 0
        if self.solver == "cvxpy":
            fallback = act
        else:
            # screening: a feasible maximiser of q over the simplex is optimal (ties go to the safe vertex)
            q_max = qa.max(axis=1)
            q_feasible = np.where(self._vertex_feasible[act], qa, -np.inf)
            screened = q_feasible.max(axis=1) == q_max
            safe = self.safe_index[act]
            vertex = np.where(qa[np.arange(len(act)), safe] == q_max, safe, q_feasible.argmax(axis=1))
            hit, a = act[screened], vertex[screened]
            theta[hit] = 0.0
            theta[hit, a] = 1.0
            value[hit] = q_max[screened]
            violation[hit] = self._vertex_violation[hit, a]
            greedy = int(screened.sum())
            fallback = act[:0]
            rest = np.flatnonzero(~screened)
            if len(rest):
                if len(rest) > SUBSET_FRACTION * len(act):  # all active states at once (no gathers)
                    enumerated = self._enumerate(qa, None, ~screened)
                    res_theta, res_value, res_violation, res_fallback = (x[rest] for x in enumerated)
                else:
                    enumerated = self._enumerate(qa[rest], rest, np.ones(len(rest), dtype=bool))
                    res_theta, res_value, res_violation, res_fallback = enumerated
                todo = act[rest]
                theta[todo], value[todo], violation[todo] = res_theta, res_value, res_violation
                fallback = todo[res_fallback]
                face = len(rest) - len(fallback)
        failures = 0
        for s in fallback:
            solved = self._solve_cvxpy(s, q[s])
            if solved is None:
                failures += 1
            elif self.solver == "cvxpy" or solved[1] > value[s]:
                theta[s], value[s], violation[s] = solved
        return SOCPSolution(
            theta=theta,
            value=value,
            greedy=greedy,
            face=face,
            cvxpy=len(fallback),
            fallbacks_to_safe=failures,
            max_violation=float(violation[act].max()) if len(act) else -np.inf,
        )

    def _enumerate(
        self, q: np.ndarray, local: np.ndarray | None, needed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Face enumeration with objectives q ``(R, n)`` for the active states ``local`` (positions among the active
        states; None: all of them), of which only the ``needed`` ones ``(R,)`` (unscreened) may fall back.

        Only t >= 0 is needed: with f(y) = ||e + Bf y|| + cf^T y - rho, on the cone's branch W y + v equals
        ||e + Bf y|| grad f, and a maximum has p = lambda grad f with lambda > 0, so t = ||e + Bf y|| / lambda > 0
        (t = 0 only at the apex, covered by the apex points).
        Stationary points theta = c0 + t u, with value q^T c0 + t q^T u, that lie in the simplex (to NEGATIVE_TOL), on
        the cone's branch (g^T theta <= tau) and beat the best feasible vertex or apex point are promising; the best
        promising point of each state gets the full check, and if it fails (rare) all its other promising points.

        Returns:
            The best candidate theta ``(R, n)``, its value and violation ``(R,)``, and the states that must fall
            back to cvxpy ``(R,)``.
        """
        rows = np.arange(len(q))
        states = self._act if local is None else self._act[local]

        def pick(x: np.ndarray) -> np.ndarray:  # the columns of these states (no copy for all active states)
            return x if local is None else x[..., local]

        q_t = np.ascontiguousarray(q.T)  # (n, R)
        # fixed candidates: the best feasible vertex, then the apex points
        vertex_value = np.where(pick(self._vertex_feasible_act), q_t, -np.inf)
        best = vertex_value.argmax(axis=0)
        best_value = vertex_value[best, rows]
        best_theta = self._eye[:, best]  # (n, R)
        best_violation = pick(self._vertex_violation_act)[best, rows]
        if self._has_apex:
            apex = pick(self._apex)
            apex_value = np.where(pick(self._apex_kept), np.einsum("nfr,nr->fr", apex, q_t), -np.inf)  # (F, R)
            top = apex_value.argmax(axis=0)
            better = apex_value[top, rows] > best_value
            best = np.where(better, -1, best)
            best_theta = np.where(better, apex[:, top, rows], best_theta)
            best_value = np.where(better, apex_value[top, rows], best_value)
            best_violation = np.where(better, pick(self._apex_violation)[top, rows], best_violation)

        # stationary points of every face
        u = np.einsum("nmfr,mr->nfr", pick(self._n_w_inv_nt), q_t)  # (n, F, R)
        p_w_inv_p = np.einsum("nfr,nr->fr", u, q_t)
        c0 = pick(self._c0)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            t = np.sqrt(pick(self._num) / p_w_inv_p)  # NaN or inf (never promising) where there is no real root
            cand = c0 + t * u
            cand_value = np.einsum("nfr,nr->fr", c0, q_t) + t * p_w_inv_p
        g_t, rb_t, tol = pick(self._g_act), pick(self._rb_act), self._tol[states]
        branch = np.einsum("nfr,nr->fr", cand, g_t) <= self.tau + tol
        promising = (cand.min(axis=0) >= -NEGATIVE_TOL) & branch & (cand_value > best_value)
        masked = np.where(promising, cand_value, -np.inf)
        # pass 1: the best promising point of every state
        top = masked.argmax(axis=0)
        has = masked[top, rows] > -np.inf
        theta = np.maximum(cand[:, top, rows], 0.0)
        theta /= theta.sum(axis=0)
        violation = self._violation(theta, g_t, rb_t)
        if (has & (violation > tol)).any():
            theta, violation = self._repair(theta, violation, states)
        ok = has & (violation <= tol)
        value = np.einsum("nr,nr->r", theta, q_t)
        won = ok & (value > best_value)
        best = np.where(won, -1, best)
        best_theta = np.where(won, theta, best_theta)
        best_value = np.where(won, value, best_value)
        best_violation = np.where(won, violation, best_violation)
        failed = has & ~ok
        if failed.any():
            # pass 2 (rare; e.g. near the apex of a state at equality): every other promising point of those states
            masked[top[failed], rows[failed]] = -np.inf
            face, r = np.nonzero(np.isfinite(masked) & failed)
            theta, ok, violation = self._check(cand[:, face, r], states[r])
            value = np.where(ok, np.einsum("nk,nk->k", theta, q_t[:, r]), -np.inf)
            dense = np.full(masked.shape, -np.inf)
            dense[face, r] = value
            position = np.zeros(masked.shape, dtype=np.int64)
            position[face, r] = np.arange(len(r))
            top = dense.argmax(axis=0)
            won = np.flatnonzero(dense[top, rows] > best_value)
            k = position[top[won], won]
            best[won], best_theta[:, won] = -1, theta[:, k]
            best_value[won], best_violation[won] = value[k], violation[k]

        safe = self.safe_index[states]
        tie = q[rows, safe] >= best_value  # ties go to the safe vertex
        best = np.where(tie, safe, best)
        best_theta = np.where(tie, self._safe_onehot[states].T, best_theta)
        best_value = np.where(tie, q[rows, safe], best_value)
        best_violation = np.where(tie, self._safe_violation[states], best_violation)

        # unresolved faces (W singular without a flat direction, or p = 0) that could still beat the best candidate
        fallback = np.zeros(len(q), dtype=bool)
        unresolved = (pick(self._singular) | (pick(self._resolvable) & ~(np.abs(p_w_inv_p) > 0))) & needed
        if unresolved.any():
            face_max = np.where(self._members[:, :, None], q_t[None], -np.inf).max(axis=1)  # (F, R)
            margin = OBJECTIVE_RTOL * np.maximum(1.0, np.abs(q).max(axis=1))
            fallback = (unresolved & (face_max > best_value + margin)).any(axis=0)
        # no maximiser of q is feasible here, so an optimum has the cone active: a best vertex with slack is suspect
        fallback |= needed & (best >= 0) & (-best_violation > SLACK_RTOL * self._scale[states])
        return best_theta.T, best_value, best_violation, fallback

    def _solve_cvxpy(self, s: int, q: np.ndarray) -> tuple[np.ndarray, float, float] | None:
        """The reference solve of state s; None (with a warning, once per object) when the solver fails or its
        theta cannot be verified feasible.

        Clarabel's theta misses the constraint by up to ~1e-10, so the problem is solved with tau lowered by
        CVXPY_MARGIN_RTOL (scaled) when the safe vertex keeps twice that slack; otherwise theta goes through the
        clip/renormalise/repair of :meth:`_check`, and a theta within SNAP_TOL of the safe vertex becomes it.
        """
        ref = _reference_problem(self.n_actions)
        margin = CVXPY_MARGIN_RTOL * self._scale[s]
        safe_slack = -self._vertex_violation[s, self.safe_index[s]]
        ref.q.value, ref.g.value, ref.rb.value = q, self.g[s], self.rb[s]
        ref.tau.value = self.tau - margin if safe_slack >= 2 * margin else self.tau
        status = "unknown"
        try:
            with warnings.catch_warnings():  # "solution may be inaccurate": theta is verified below
                warnings.simplefilter("ignore", UserWarning)
                ref.problem.solve(solver=CVXPY_SOLVER, warm_start=True, **CVXPY_OPTIONS)
            status = str(ref.problem.status)
            raw = ref.theta.value
        except Exception as exc:  # any solver error means the verified fallback
            status, raw = f"error: {type(exc).__name__}: {exc}", None
        if status in _CVXPY_OK and raw is not None:
            theta, feasible, violation = self._check(np.asarray(raw, dtype=np.float64)[:, None], np.array([s]))
            if feasible[0]:
                return theta[:, 0], float(theta[:, 0] @ q), float(violation[0])
            if np.abs(theta[:, 0] - self._safe_onehot[s]).max() <= SNAP_TOL:
                return self._safe_onehot[s].copy(), float(q[self.safe_index[s]]), float(self._safe_violation[s])
            status = f"{status}, but theta violates the constraint by {violation[0]:.3g}"
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"SimplexSOCP: cvxpy failed on state {s} (status {status}); using a verified fallback (the safe "
                "action, or the best fast-path candidate). Further failures of this object are counted silently.",
                RuntimeWarning,
                stacklevel=3,
            )
        return None
