"""Lockstep runs of one method on B instances of the synthetic star-convex linear MDP (the Figure-1 engine).

:class:`BatchedSyntheticRun` runs SLUCB-QVI, the oracle LSVI-UCB (``safety="known"``) or the penalised LSVI-UCB on B
instances of ``LinearMDPSynthetic-v0`` at once, vectorised with numpy over instances, states and segments. It
implements the same mathematics as the single-instance agents (:class:`~sb3_safe.linear.slucb_qvi.SLUCBQVI`,
:class:`~sb3_safe.linear.lsvi_ucb.LSVIUCB` through the adapter, per-step statistics, ``share_across_h=False``) with
their defaults, and :class:`SyntheticBatch` simulates the instances from their own ground truth (see
docs/linear_agents.md, 'The two environments'). Per episode: plan with the statistics of the past episodes, act H
steps, then one rank-one update per step.

Notation (per instance b and step h; docs/linear_agents.md): M = A_h^{-1}; for a state s, phi_0 = phi_0(s), the
segment directions v_i = x_i(s) - phi_0 and the candidate y_i = phi_0 + alpha_i v_i. Everything the plan needs from M is
kept as quadratic forms, updated by the rank-one rule ``a^T M' b = a^T M b - (a.m)(b.m) / (1 + phi.m)`` with
m = M phi (Sherman-Morrison) and recomputed from scratch at every refactorisation:

- SLUCB-QVI: ``q_vv = v^T M v``, ``r = 2 phi_0^T M v`` and ``p = phi_0^T M phi_0``. With gammahat = M b_z and
  e = (<phi_0, gammahat> - tau_h(s)) / p, the projection model gives
  ``chat(x_i) - tau_h(s) = <v_i, gammahat> - e r_i / 2 + beta sqrt(q_vv - r_i^2 / (4 p))``
  (since <phi_0, gamma_{h,s}> = tau_h(s) and x^T M_s x = v^T M_s v), hence the certified end
  ``alpha_i = gap / max(chat(x_i) - tau_h(s), gap)`` with gap = tau - tau_h(s), and
  ``||y_i||_M^2 = p + alpha_i (r_i + alpha_i q_vv)``.
- LSVI-UCB: the candidates y (phi_0 and the oracle's certified ends, or the raw ends when penalised) are fixed, so
  ``q_yy = y^T M y`` itself is kept.

Then ``Q_h(s, y) = <w_h, y> + kappa_h(s) beta ||y||_M`` with ``w_h = M (b_r - lambda' b_z + B V_{h+1})``, the
greedy maximiser with ties to phi_0, and ``V_h = min(max Q_h, H)``. The step-0 plan is only needed at the initial
state of the episode, which does not depend on the plan, so it is drawn first and the step-0 quadratic forms are
computed directly at that state only (``plan_points`` computes them at every state).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sb3_safe.linear.lsvi_ucb import certified_segment_points
from sb3_safe.linear.planning import value_clip_levels
from sb3_safe.linear.safety import BETA_MODES, BETA_SAFE_FORMS, beta_safe, kappa

METHODS = ("slucb", "known", "penalized")
"""SLUCB-QVI, LSVI-UCB knowing gamma* (the oracle), LSVI-UCB regressing on r - lambda' z."""

PHASES = ("regression", "safe_sets", "backward", "simulation")

VIOLATION_TOLERANCE = 1e-9
"""A step violates the constraint when its true cost exceeds tau by more than this (as in the adapter)."""


@dataclass
class BatchedResult:
    """Per-episode outcomes of a :meth:`BatchedSyntheticRun.run`.

    Attributes:
        returns: The return of every episode, ``(B, K)``.
        violations: Steps per episode whose true cost <x, gamma_h*> exceeded tau + 1e-9, ``(B, K)``.
        phase_seconds: Seconds spent per phase: ``regression`` (rank-one updates, quadratic forms,
            refactorisations), ``safe_sets`` (SLUCB's certified segment ends), ``backward`` (bonuses and the value
            recursion) and ``simulation``.
        beta_q: The value-bonus scale beta_Q of the run.
        beta_safe: The last safety radius per instance ``(B,)`` (zeros for the LSVI-UCB baselines).
        kappa_max: max_{h,s} kappa_h(s) per instance ``(B,)`` (ones for the baselines).
    """

    returns: np.ndarray
    violations: np.ndarray
    phase_seconds: dict[str, float]
    beta_q: float
    beta_safe: np.ndarray
    kappa_max: np.ndarray


@dataclass
class EpisodeBatch:
    """The samples of one lockstep episode (what the rank-one updates consume).

    Attributes:
        states: s_h per step, ``(B, H)``.
        points: The feature points played, ``(B, H, d)``.
        rewards: ``(B, H)``.
        costs: Observed costs z, ``(B, H)``.
        true_costs: <x, gamma_h*>, ``(B, H)``.
        next_states: s_{h+1}, or -1 at the last step (no bootstrap), ``(B, H)``.
    """

    states: np.ndarray
    points: np.ndarray
    rewards: np.ndarray
    costs: np.ndarray
    true_costs: np.ndarray
    next_states: np.ndarray


@dataclass
class _Plan:
    """Decisions of one backward pass. ``choice[b, h, s]`` is the candidate index (0 = phi_0, i = segment i); the
    step-0 row is valid at ``states0`` (B, S0) only and stored as ``choice0`` (B, S0). SLUCB-QVI also keeps the
    certified ends: ``alpha[h - 1]`` (B, n_S, N) for h >= 1 and ``alpha0`` (B, S0, N)."""

    choice: np.ndarray
    choice0: np.ndarray
    states0: np.ndarray
    alpha: list[np.ndarray] | None = None
    alpha0: np.ndarray | None = None


class SyntheticBatch:
    """A vectorised simulator of B synthetic instances, built from each instance's ground truth.

    Reads ``mu_star (H, d, n_S)``, ``theta_star``, ``gamma_star (H, d)``, ``segment_table()``, ``safe_cost(s, h)``,
    ``cost_noise_sigma``, ``horizon`` and ``cost_threshold`` from every ``env.unwrapped`` (never redrawn). The
    distributions are the env's: s_0 uniform, r = <x, theta_h*>, z = <x, gamma_h*> + N(0, sigma^2),
    s' ~ x @ mu_h* (clipped at 0 and normalised, as the env does); the random stream is its own.

    Args:
        instances: Environments (or their ``unwrapped``) of identical sizes.

    Raises:
        ValueError: If the instances differ in size or threshold, or are not the per-step star-convex MDP.
    """

    def __init__(self, instances: Sequence[Any]) -> None:
        if not instances:
            raise ValueError("SyntheticBatch needs at least one instance.")
        envs = [getattr(env, "unwrapped", env) for env in instances]
        first = envs[0]
        for name in ("segment_table", "mu_star", "theta_star", "gamma_star", "safe_cost", "cost_noise_sigma"):
            if not hasattr(first, name):
                raise ValueError(f"{type(first).__name__} lacks {name!r}: SyntheticBatch needs LinearMDPSynthetic-v0.")
        sizes = {(e.feature_dim, e.n_states, e.n_segments, e.horizon, float(e.cost_threshold)) for e in envs}
        if len(sizes) != 1:
            raise ValueError(f"The instances must share (d, n_states, n_segments, horizon, tau); got {sorted(sizes)}.")
        if any(getattr(e, "time_homogeneous", False) for e in envs):
            raise ValueError("SyntheticBatch runs per-step statistics; the instances must not be time-homogeneous.")
        self.feature_dim, self.n_states, self.n_segments, self.horizon, self.cost_threshold = sizes.pop()
        self.batch_size = len(envs)
        self.theta = np.stack([np.asarray(e.theta_star, dtype=np.float64) for e in envs])  # (B, H, d)
        self.gamma = np.stack([np.asarray(e.gamma_star, dtype=np.float64) for e in envs])  # (B, H, d)
        self.mu = np.stack([np.asarray(e.mu_star, dtype=np.float64) for e in envs])  # (B, H, d, n_S)
        tables = [e.segment_table() for e in envs]
        self.phi0 = np.stack([np.asarray(t[0], dtype=np.float64) for t in tables])  # (B, n_S, d)
        self.ends = np.stack([np.asarray(t[1], dtype=np.float64) for t in tables])  # (B, n_S, N, d)
        states, steps = range(self.n_states), range(self.horizon)
        # tau_h(s) exactly as the agents read it (float(phi_0 @ gamma_h)), (B, H, n_S)
        self.safe_costs = np.array([[[float(e.safe_cost(s, h)) for s in states] for h in steps] for e in envs])
        self.sigma = np.array([float(e.cost_noise_sigma) for e in envs])
        self.min_safety_gap = [getattr(e, "min_safety_gap", None) for e in envs]

    def initial_states(self, rng: np.random.Generator) -> np.ndarray:
        """s_0 ~ uniform over the states, one per instance ``(B,)``."""
        return rng.integers(self.n_states, size=self.batch_size)

    def transition_probabilities(self, points: np.ndarray, step: int) -> np.ndarray:
        """P_h(.|s, x) = x @ mu_h* (clipped at 0: round-off of points on a segment) for ``points`` ``(B, d)``."""
        return np.maximum((points[:, None, :] @ self.mu[:, step])[:, 0], 0.0)

    def step(
        self, points: np.ndarray, step: int, rng: np.random.Generator, sample_next: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Play the feature points ``(B, d)`` at step h (the state only selects D(s); the model is linear in x).

        Returns:
            Rewards, true costs, observed costs and next states (all ``(B,)``; next states -1 if not sampled).
        """
        rewards = (points * self.theta[:, step]).sum(axis=1)
        true_costs = (points * self.gamma[:, step]).sum(axis=1)
        observed = true_costs + self.sigma * rng.standard_normal(self.batch_size)
        if not sample_next:
            return rewards, true_costs, observed, np.full(self.batch_size, -1)
        cumulative = np.cumsum(self.transition_probabilities(points, step), axis=1)
        threshold = rng.random(self.batch_size) * cumulative[:, -1]
        # the first state whose cumulative probability exceeds u * total (zero-probability states never qualify)
        next_states = np.minimum((cumulative <= threshold[:, None]).sum(axis=1), self.n_states - 1)
        return rewards, true_costs, observed, next_states


class BatchedSyntheticRun:
    """One method run in lockstep on B synthetic instances, vectorised with numpy.

    The defaults are the single-instance agents' (ridge 1, delta 0.01, beta_mode ``"single"``, beta_safe_form
    ``"default"``, safety_radius_scale 1, kappa_coef 2, value clip ``"H"``, refactor every 1000 updates).

    Layout: the maintained forms are step-major, ``(H - 1, B, n_S, N or C)``, so that every step's block is one
    contiguous array of about 40k numbers (numpy's element-wise loops run 2-3x slower on strided or broadcast
    operands, and blocks of that size stay in cache).

    Args:
        instances: ``LinearMDPSynthetic-v0`` environments (one per instance, e.g. ``make_env(..., seed=i)``).
        method: ``"slucb"`` (SLUCB-QVI, projection safety model), ``"known"`` (oracle LSVI-UCB with the exactly
            certified ends alpha*_i from gamma*, kappa = 1) or ``"penalized"`` (LSVI-UCB on r - lambda' z, alpha = 1).
        c_beta: Scale of beta_Q = c_beta d H sqrt(log(2 d T / delta)), T = K H.
        penalty: lambda' (``"penalized"`` only).
        safety_norm_bounds: S per instance in beta_safe (SLUCB-QVI; default sqrt(d)), ``(B,)`` or a scalar.
        seed: Seed of the simulator's random stream.
        ridge: lambda.
        delta: Confidence level.
        beta_mode: ``"single"`` (beta = max(beta_Q, beta_safe) everywhere) or ``"split"``.
        beta_safe_form: ``"default"`` or ``"ay11"``.
        safety_radius_scale: Multiplies beta_safe.
        kappa_coef: kappa_h(s) = kappa_coef H / (tau - tau_h(s)) + 1.
        value_clip: ``"H"`` or ``"H-h+1"``.
        refactor_every: Recompute M = inv(A) (and the quadratic forms) after this many updates (0: never).
    """

    def __init__(
        self,
        instances: Sequence[Any],
        method: str,
        c_beta: float = 1.0,
        penalty: float | None = None,
        safety_norm_bounds: np.ndarray | float | None = None,
        seed: int = 0,
        *,
        ridge: float = 1.0,
        delta: float = 0.01,
        beta_mode: str = "single",
        beta_safe_form: str = "default",
        safety_radius_scale: float = 1.0,
        kappa_coef: float = 2.0,
        value_clip: str = "H",
        refactor_every: int = 1000,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
        if (method == "penalized") != (penalty is not None):
            raise ValueError(
                f"penalty (lambda') is required by method='penalized' only; got {penalty!r} for {method!r}."
            )
        if beta_mode not in BETA_MODES or beta_safe_form not in BETA_SAFE_FORMS:
            raise ValueError(f"beta_mode must be in {BETA_MODES} and beta_safe_form in {BETA_SAFE_FORMS}.")
        if ridge <= 0 or not 0 < delta < 1 or c_beta < 0:
            raise ValueError(f"Need ridge > 0, 0 < delta < 1 and c_beta >= 0; got {ridge}, {delta}, {c_beta}.")
        self.sim = sim = SyntheticBatch(instances)
        self.method = method
        self.c_beta, self.penalty = float(c_beta), float(penalty or 0.0)
        self.ridge, self.delta, self.refactor_every = float(ridge), float(delta), int(refactor_every)
        self.beta_mode, self.beta_safe_form = beta_mode, beta_safe_form
        self.safety_radius_scale = float(safety_radius_scale)
        self.rng = np.random.default_rng(seed)
        B, H, d, nS, N = sim.batch_size, sim.horizon, sim.feature_dim, sim.n_states, sim.n_segments
        self.clip_levels = value_clip_levels(H, value_clip)
        self.tau = sim.cost_threshold
        self.gaps = self.tau - sim.safe_costs  # tau - tau_h(s), (B, H, n_S)
        bounds = math.sqrt(d) if safety_norm_bounds is None else safety_norm_bounds
        self.safety_norm_bounds = np.broadcast_to(np.asarray(bounds, dtype=np.float64), (B,)).copy()
        if method == "slucb":
            self.kappa = np.stack(
                [kappa(sim.safe_costs[b], self.tau, H, kappa_coef, sim.min_safety_gap[b]) for b in range(B)]
            )
        else:
            self.kappa = np.ones((B, H, nS))
        self.beta_q = 0.0
        self.beta_safe_values = np.zeros(B)
        self._b = np.arange(B)[:, None]  # instance index for (B, R) fancy indexing
        # ridge statistics per (instance, step): A, M = A^{-1}, b_r, b_z and B^T = sum_j e_{s'_j} phi_j^T (B, H, n_S, d)
        self.A = np.broadcast_to(np.eye(d) * self.ridge, (B, H, d, d)).copy()
        self.M = np.broadcast_to(np.eye(d) / self.ridge, (B, H, d, d)).copy()
        self.b_r = np.zeros((B, H, d))
        self.b_z = np.zeros((B, H, d))
        self.next_state_sum = np.zeros((B, H, nS, d))
        self.episodes = 0
        self._since_refactor = 0
        if method == "slucb":
            self._v = sim.ends - sim.phi0[:, :, None, :]  # v = x_i - phi_0, (B, n_S, N, d)
            self._v_t = np.ascontiguousarray(self._v.reshape(B, nS * N, d).transpose(0, 2, 1))  # (B, d, n_S N)
            self._phi0_t = np.ascontiguousarray(sim.phi0.transpose(0, 2, 1))  # (B, d, n_S)
            self._gaps_wide = np.repeat(self.gaps.transpose(1, 0, 2)[..., None], N, axis=-1)  # (H, B, n_S, N)
            width = nS * N
        else:
            self._points = self._candidate_points()  # (B, L, n_S, C, d), L = H (oracle) or 1
            L, C = self._points.shape[1], self._points.shape[3]
            self._points_t = np.ascontiguousarray(self._points.reshape(B, L, nS * C, d).transpose(0, 1, 3, 2))
            width = nS * C
        self._products = np.empty((H - 1, B, width))  # step-major products with mbar in the updates
        self.phase_seconds = dict.fromkeys(PHASES, 0.0)
        self._refresh_forms()

    # ----------------------------------------------------------------------------------------------------- set-up
    @property
    def batch_size(self) -> int:
        """B."""
        return self.sim.batch_size

    def _candidate_points(self) -> np.ndarray:
        """The fixed candidates of the LSVI-UCB baselines, phi_0 first: ``(B, H, n_S, N + 1, d)`` for the oracle
        (alpha*_i from the true costs, as ``LSVIUCB._candidate_sets``), ``(B, 1, n_S, N + 1, d)`` penalised."""
        sim = self.sim
        candidates = np.concatenate([sim.phi0[:, :, None, :], sim.ends], axis=2)  # (B, n_S, N + 1, d)
        if self.method == "penalized":
            return candidates[:, None]
        layers = []
        for b in range(sim.batch_size):
            costs = np.einsum("scd,hd->hsc", candidates[b], sim.gamma[b])
            per_step = [
                certified_segment_points(sim.phi0[b], sim.ends[b], sim.safe_costs[b, h], costs[h][:, 1:], self.tau)
                for h in range(sim.horizon)
            ]
            layers.append(np.stack([np.concatenate([sim.phi0[b][:, None], ends], axis=1) for ends in per_step]))
        return np.stack(layers)

    def _layer(self, step: int) -> int:
        """Candidate layer of step h (LSVI-UCB)."""
        return step if self._points.shape[1] > 1 else 0

    def start(self, episodes: int) -> None:
        """Set beta_Q for a run of K = ``episodes`` episodes, T = K H (as the adapter's ``_on_learn_start``)."""
        d, H = self.sim.feature_dim, self.sim.horizon
        iota = math.log(2.0 * d * max(episodes * H, H) / self.delta)
        self.beta_q = self.c_beta * d * H * math.sqrt(iota)

    # ------------------------------------------------------------------------------------------ quadratic forms
    def _segment_forms(self, step: int, states: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Directly from M_h: q_vv = v^T M v, r = 2 phi_0^T M v ``(B, R, N)`` and p = phi_0^T M phi_0 ``(B, R)`` at
        the states ``(B, R)``."""
        B, M = states.shape[0], self.M[:, step]
        v = self._v[self._b, states]  # (B, R, N, d)
        phi0 = self.sim.phi0[self._b, states]  # (B, R, d)
        vM = (v.reshape(B, -1, v.shape[-1]) @ M).reshape(v.shape)
        q_vv = np.einsum("brnd,brnd->brn", vM, v)  # (einsum: numpy's sums over a last axis of 5 are slow)
        return q_vv, 2.0 * (vM @ phi0[..., None])[..., 0], ((phi0 @ M) * phi0).sum(-1)

    def _point_forms(self, step: int, states: np.ndarray) -> np.ndarray:
        """Directly from M_h: q_yy = y^T M y of the fixed candidates at the states ``(B, R)``, ``(B, R, C)``."""
        y = self._points[self._b, self._layer(step), states]  # (B, R, C, d)
        return np.einsum(
            "brcd,brcd->brc", (y.reshape(y.shape[0], -1, y.shape[-1]) @ self.M[:, step]).reshape(y.shape), y
        )

    def _all_states(self) -> np.ndarray:
        return np.broadcast_to(np.arange(self.sim.n_states), (self.batch_size, self.sim.n_states))

    def _direct_forms(self) -> tuple[np.ndarray, ...]:
        """The maintained forms recomputed from M (steps h >= 1, every state), step-major: SLUCB-QVI's q_vv, r
        ``(H - 1, B, n_S, N)`` and p ``(H - 1, B, n_S)``, or LSVI-UCB's q_yy ``(H - 1, B, n_S, C)``."""
        states, steps = self._all_states(), range(1, self.sim.horizon)
        per_step: list[tuple[np.ndarray, ...]]
        if self.method == "slucb":
            per_step = [self._segment_forms(h, states) for h in steps]
        else:
            per_step = [(self._point_forms(h, states),) for h in steps]
        if not per_step:  # H = 1: nothing is maintained
            B, nS = self.batch_size, self.sim.n_states
            if self.method == "slucb":
                N = self.sim.n_segments
                return np.zeros((0, B, nS, N)), np.zeros((0, B, nS, N)), np.zeros((0, B, nS))
            return (np.zeros((0, B, nS, self._points.shape[3])),)
        return tuple(np.stack(forms) for forms in zip(*per_step, strict=True))

    def _refresh_forms(self) -> None:
        """Recompute the maintained quadratic forms from the current M."""
        if self.method == "slucb":
            self.q_vv, self.r, self.p = self._direct_forms()
        else:
            (self.q_yy,) = self._direct_forms()

    def forms_drift(self) -> float:
        """Largest gap between the maintained quadratic forms and a direct recomputation, relative to the largest
        form (a diagnostic: round-off of the rank-one updates since the last refactorisation)."""
        kept = (self.q_vv, self.r, self.p) if self.method == "slucb" else (self.q_yy,)
        pairs = zip(kept, self._direct_forms(), strict=True)
        return max(float(np.abs(a - b).max(initial=0.0) / max(np.abs(b).max(initial=0.0), 1e-300)) for a, b in pairs)

    # --------------------------------------------------------------------------------------------- regression
    def add_episode(self, batch: EpisodeBatch) -> None:
        """Fold one episode per instance into the statistics: one sample per (instance, step), rank-one updates.

        ``M <- M - m m^T / (1 + phi.m)`` with m = M phi, A += phi phi^T, b_r += r phi, b_z += z phi and
        B += phi e_{s'}^T (no column when s' = -1), then the maintained forms by the same rank-one rule, written
        with ``mbar = m / sqrt(1 + phi.m)``: ``a^T M' b = a^T M b - (a.mbar)(b.mbar)``. Every ``refactor_every``
        episodes M = inv(A) (symmetrised) and the forms are recomputed.
        """
        phi = batch.points
        m = (self.M @ phi[..., None])[..., 0]  # (B, H, d)
        denominator = 1.0 + (phi * m).sum(-1)
        self.M -= m[..., :, None] * m[..., None, :] / denominator[..., None, None]
        self.A += phi[..., :, None] * phi[..., None, :]
        self.b_r += batch.rewards[..., None] * phi
        self.b_z += batch.costs[..., None] * phi
        b, h = np.nonzero(batch.next_states >= 0)
        self.next_state_sum[b, h, batch.next_states[b, h]] += phi[b, h]  # the (b, h) pairs are distinct
        self.episodes += 1
        self._since_refactor += 1
        if self.refactor_every and self._since_refactor >= self.refactor_every:
            inverse = np.linalg.inv(self.A)
            self.M = 0.5 * (inverse + inverse.swapaxes(-1, -2))
            self._since_refactor = 0
            self._refresh_forms()
            return
        m_bar = m[:, 1:] / np.sqrt(denominator[:, 1:, None])  # (B, H - 1, d)
        products, shape = self._products, (self.batch_size, self.sim.n_states, -1)
        if self.method == "slucb":
            np.matmul(m_bar, self._v_t, out=products.transpose(1, 0, 2))  # <v, mbar>, step-major
            along_phi0 = (m_bar @ self._phi0_t).transpose(1, 0, 2)  # <phi_0, mbar>, (H - 1, B, n_S)
            for j in range(self.sim.horizon - 1):  # one step at a time: the blocks stay in cache
                vm, fm = products[j].reshape(shape), along_phi0[j]
                self.p[j] -= fm * fm
                cross = vm * (2.0 * fm)[..., None]
                self.r[j] -= cross
                vm *= vm
                self.q_vv[j] -= vm
        else:
            layers = slice(1, None) if self._points_t.shape[1] > 1 else slice(0, 1)
            np.matmul(m_bar[:, :, None, :], self._points_t[:, layers], out=products.transpose(1, 0, 2)[:, :, None])
            for j in range(self.sim.horizon - 1):
                ym = products[j].reshape(shape)
                ym *= ym
                self.q_yy[j] -= ym

    # ----------------------------------------------------------------------------------------------- planning
    def _radius_and_scale(self) -> tuple[np.ndarray, np.ndarray]:
        """SLUCB-QVI's safe-set radius per instance ``(B,)`` and Q-bonus scale ``(B, H, n_S)`` (``_beta_values``)."""
        sim = self.sim
        # beta_safe(n) = sigma sqrt(...) + sqrt(lambda) S: the first term once per noise level, the second per instance
        noise_term = {
            sigma: beta_safe(self.episodes, sim.feature_dim, sigma, self.ridge, self.delta, 0.0, self.beta_safe_form)
            for sigma in set(sim.sigma.tolist())
        }
        first = np.array([noise_term[sigma] for sigma in sim.sigma.tolist()])
        radius = self.safety_radius_scale * (first + math.sqrt(self.ridge) * self.safety_norm_bounds)
        self.beta_safe_values = radius
        if self.beta_mode == "single":
            beta = np.maximum(self.beta_q, radius)
            return beta, self.kappa * beta[:, None, None]
        return radius, self.beta_q + (self.kappa - 1.0) * radius[:, None, None]

    @staticmethod
    def _certified_alpha(
        q_vv: np.ndarray,
        r: np.ndarray,
        p: np.ndarray,
        v_gamma: np.ndarray,
        phi0_gamma: np.ndarray,
        safe_cost: np.ndarray,
        gap_wide: np.ndarray,
        radius: np.ndarray,
    ) -> np.ndarray:
        """The certified ends, ``alpha_i = gap / max(chat(x_i) - tau_h(s), gap)``, with
        ``chat(x_i) - tau_h(s) = <v_i, gammahat> - e r_i / 2 + beta sqrt(max(q_vv - r_i^2 / (4 p), 0))``.

        Args:
            q_vv: ``(B, S, N)``; r, v_gamma = <v_i, gammahat> (overwritten) and gap_wide = tau - tau_h(s) alike.
            p: ``(B, S)``; phi0_gamma = <phi_0, gammahat> and safe_cost = tau_h(s) alike.
            radius: beta of the safe sets ``(B,)``.
        """
        width = r * r
        width *= (0.25 / p)[..., None]
        np.subtract(q_vv, width, out=width)  # v^T M_s v, the projected norm
        np.maximum(width, 0.0, out=width)
        np.sqrt(width, out=width)
        width *= radius[:, None, None]
        excess = v_gamma
        excess -= r * ((phi0_gamma - safe_cost) / (2.0 * p))[..., None]
        excess += width
        np.maximum(excess, gap_wide, out=excess)
        return np.divide(gap_wide, excess, out=excess)

    @staticmethod
    def _segment_bonus(
        alpha: np.ndarray, q_vv: np.ndarray, r: np.ndarray, p: np.ndarray, scale: np.ndarray
    ) -> np.ndarray:
        """``scale ||y||_M``, ||y||_M^2 = p + alpha (r + alpha q_vv) (no clamp: y is on the simplex and M is PD, so
        ||y||_M^2 >= 1 / (d (lambda + n)), far above the round-off)."""
        bonus = alpha * q_vv
        bonus += r
        bonus *= alpha
        bonus += p[..., None]
        np.sqrt(bonus, out=bonus)
        bonus *= scale[..., None]
        return bonus

    def _weights(self, step: int, values: np.ndarray) -> np.ndarray:
        """w_h = M (b_r - lambda' b_z + B V_{h+1}) per instance ``(B, d)``."""
        target = self.b_r[:, step] - self.penalty * self.b_z[:, step] if self.penalty else self.b_r[:, step].copy()
        target += (values[:, None, :] @ self.next_state_sum[:, step])[:, 0]
        return (self.M[:, step] @ target[..., None])[..., 0]

    @staticmethod
    def _take_best(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """argmax over the last axis (the first maximum) and the maximum, for ``q`` ``(B, S, C)``."""
        best = q.argmax(axis=-1)
        return best, q[np.arange(q.shape[0])[:, None], np.arange(q.shape[1])[None, :], best]

    def _plan(self, states0: np.ndarray) -> _Plan:
        """Backward pass: every state at h >= 1, the rows ``states0`` ``(B, S0)`` at h = 0."""
        if self.method == "slucb":
            return self._plan_segments(states0)
        return self._plan_points(states0)

    def _plan_segments(self, states0: np.ndarray) -> _Plan:
        sim = self.sim
        B, H, nS = self.batch_size, sim.horizon, sim.n_states
        shape = (B, nS, -1)
        clock = time.perf_counter()
        radius, scale = self._radius_and_scale()
        gamma_hat = (self.M @ self.b_z[..., None])[..., 0]  # (B, H, d)
        v_gamma = np.empty((H - 1, B, self._v_t.shape[-1]))  # <v, gammahat_h>, step-major
        np.matmul(gamma_hat[:, 1:], self._v_t, out=v_gamma.transpose(1, 0, 2))
        phi0_gamma = (gamma_hat[:, 1:] @ self._phi0_t).transpose(1, 0, 2)
        choice = np.zeros((B, H, nS), dtype=np.int64)
        alphas: list[np.ndarray] = [np.empty(0)] * (H - 1)
        values = np.zeros((B, nS))
        safe_sets = backward = 0.0
        for h in range(H - 1, 0, -1):  # every state, from the maintained forms
            j = h - 1
            q_vv, r, p = self.q_vv[j], self.r[j], self.p[j]
            alphas[j] = alpha = self._certified_alpha(
                q_vv, r, p, v_gamma[j].reshape(shape), phi0_gamma[j], sim.safe_costs[:, h], self._gaps_wide[h], radius
            )
            now = time.perf_counter()
            safe_sets += now - clock
            clock = now
            w = self._weights(h, values)[:, None, :]
            q = (w @ self._v_t).reshape(shape)  # Q - <phi_0, w> = alpha <v, w> + kappa beta ||y||_M
            q *= alpha
            q += self._segment_bonus(alpha, q_vv, r, p, scale[:, h])
            choice[:, h], values = self._greedy(q, scale[:, h] * np.sqrt(p), (w @ self._phi0_t)[:, 0], h)
            now = time.perf_counter()
            backward += now - clock
            clock = now
        # h = 0 at the rows states0 only, from direct forms
        rows = self._b, states0
        q_vv0, r0, p0 = self._segment_forms(0, states0)
        v0, phi00 = self._v[rows], sim.phi0[rows]  # (B, S0, N, d), (B, S0, d)
        v_gamma0 = (v0 @ gamma_hat[:, 0, None, :, None])[..., 0]
        phi0_gamma0 = (phi00 * gamma_hat[:, :1]).sum(-1)
        costs0, scale0 = sim.safe_costs[:, 0][rows], scale[:, 0][rows]
        gaps0 = self._gaps_wide[0][rows]
        alpha0 = self._certified_alpha(q_vv0, r0, p0, v_gamma0, phi0_gamma0, costs0, gaps0, radius)
        now = time.perf_counter()
        safe_sets += now - clock
        w0 = self._weights(0, values)
        q0 = alpha0 * (v0 @ w0[:, None, :, None])[..., 0]
        q0 += self._segment_bonus(alpha0, q_vv0, r0, p0, scale0)
        choice0, _ = self._greedy(q0, scale0 * np.sqrt(p0), (phi00 * w0[:, None]).sum(-1), 0)
        self.phase_seconds["safe_sets"] += safe_sets
        self.phase_seconds["backward"] += backward + time.perf_counter() - now
        return _Plan(choice=choice, choice0=choice0, states0=states0, alpha=alphas, alpha0=alpha0)

    def _greedy(
        self, q_ends: np.ndarray, q_safe: np.ndarray, phi0_w: np.ndarray, step: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """SLUCB's maximiser per state from Q - <phi_0, w> of the ends ``(B, S, N)`` and of phi_0 ``(B, S)``: a
        segment only if strictly better than phi_0 (ties go to the safe candidate). Returns the choice and V_h."""
        best, q_best = self._take_best(q_ends)
        choice = np.where(q_safe >= q_best, 0, best + 1)
        return choice, np.minimum(phi0_w + np.maximum(q_safe, q_best), self.clip_levels[step])

    def _plan_points(self, states0: np.ndarray) -> _Plan:
        sim, clock = self.sim, time.perf_counter()
        B, H, nS = self.batch_size, sim.horizon, sim.n_states
        choice = np.zeros((B, H, nS), dtype=np.int64)
        values = np.zeros((B, nS))
        for h in range(H - 1, 0, -1):
            q = (self._weights(h, values)[:, None, :] @ self._points_t[:, self._layer(h)]).reshape(B, nS, -1)
            bonus = np.sqrt(self.q_yy[h - 1])  # no clamp: y^T M y >= 1 / (d (lambda + n)) on the simplex
            bonus *= self.beta_q
            q += bonus
            choice[:, h], q_best = self._take_best(q)  # the first maximum: ties go to phi_0 (index 0)
            values = np.minimum(q_best, self.clip_levels[h])
        w0 = self._weights(0, values)
        y0 = self._points[self._b, self._layer(0), states0]  # (B, S0, C, d)
        q0 = (y0 @ w0[:, None, :, None])[..., 0]
        q0 += self.beta_q * np.sqrt(np.maximum(self._point_forms(0, states0), 0.0))
        self.phase_seconds["backward"] += time.perf_counter() - clock
        return _Plan(choice=choice, choice0=self._take_best(q0)[0], states0=states0)

    def _gather_points(self, plan: _Plan, step: int, states: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """The planned points ``(B, R, d)`` at ``states`` ``(B, R)``; ``slots`` index the step-0 rows at h = 0."""
        b = self._b
        choice = plan.choice0[b, slots] if step == 0 else plan.choice[b, step, states]
        if self.method != "slucb":
            return self._points[b, self._layer(step), states, choice]
        assert plan.alpha is not None and plan.alpha0 is not None
        segment = np.maximum(choice - 1, 0)
        alpha = plan.alpha0[b, slots, segment] if step == 0 else plan.alpha[step - 1][b, states, segment]
        alpha = alpha * (choice > 0)  # phi_0 itself when the safe candidate is chosen
        return self.sim.phi0[b, states] + alpha[..., None] * self._v[b, states, segment]

    def plan_points(self) -> np.ndarray:
        """The plan under the current statistics at every (h, s): feature points ``(B, H, n_S, d)`` (as the single
        agents' ``policy.plan`` after ``_plan()``)."""
        states = self._all_states()
        plan = self._plan(states)
        return np.stack([self._gather_points(plan, h, states, states) for h in range(self.sim.horizon)], axis=1)

    # ------------------------------------------------------------------------------------------------ episodes
    def play_episode(self) -> EpisodeBatch:
        """Draw s_0, plan, act H steps on every instance, then fold the samples in. Returns the samples."""
        sim, rng = self.sim, self.rng
        B, H, d = self.batch_size, sim.horizon, sim.feature_dim
        states = sim.initial_states(rng)
        plan = self._plan(states[:, None])
        clock = time.perf_counter()
        batch = EpisodeBatch(
            states=np.zeros((B, H), dtype=np.int64),
            points=np.zeros((B, H, d)),
            rewards=np.zeros((B, H)),
            costs=np.zeros((B, H)),
            true_costs=np.zeros((B, H)),
            next_states=np.full((B, H), -1, dtype=np.int64),
        )
        slots = np.zeros((B, 1), dtype=np.int64)
        for h in range(H):
            points = self._gather_points(plan, h, states[:, None], slots)[:, 0]
            rewards, true_costs, costs, next_states = sim.step(points, h, rng, sample_next=h < H - 1)
            batch.states[:, h], batch.points[:, h] = states, points
            batch.rewards[:, h], batch.costs[:, h], batch.true_costs[:, h] = rewards, costs, true_costs
            batch.next_states[:, h] = states = next_states
        now = time.perf_counter()
        self.phase_seconds["simulation"] += now - clock
        self.add_episode(batch)
        self.phase_seconds["regression"] += time.perf_counter() - now
        return batch

    def run(self, episodes: int) -> BatchedResult:
        """K = ``episodes`` lockstep episodes (beta_Q for T = K H); the statistics continue from earlier calls."""
        if episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes}.")
        self.start(episodes)
        returns = np.zeros((self.batch_size, episodes))
        violations = np.zeros((self.batch_size, episodes), dtype=np.int64)
        for k in range(episodes):
            batch = self.play_episode()
            returns[:, k] = batch.rewards.sum(axis=1)
            violations[:, k] = (batch.true_costs > self.tau + VIOLATION_TOLERANCE).sum(axis=1)
        return BatchedResult(
            returns=returns,
            violations=violations,
            phase_seconds=dict(self.phase_seconds),
            beta_q=self.beta_q,
            beta_safe=self.beta_safe_values.copy(),
            kappa_max=self.kappa.max(axis=(1, 2)),
        )


__all__ = ["METHODS", "PHASES", "BatchedResult", "BatchedSyntheticRun", "EpisodeBatch", "SyntheticBatch"]
