"""The linear-MDP protocol an environment exposes on ``env.unwrapped``, read once into a :class:`LinearMDPSpec`.

Protocol (see docs/linear_agents.md, 'The linear-MDP protocol'; h is the 0-based step index, s an integer state):

- attributes ``horizon`` (H), ``feature_dim`` (d), ``n_states``, ``cost_threshold`` (tau), ``time_homogeneous``;
- a finite action set: ``n_actions``, ``feature_table() -> (n_states, n_actions, d)``, ``safe_action(s) -> int``;
  or a finite star-convex set: ``n_segments``, ``segment_table() -> ((n_states, d), (n_states, N, d))``
  (phi_0 and the segment end points), ``safe_action(s) -> phi_0(s)``;
- ``safe_cost(s, h)`` (tau_h(s), known to the agent) and ``is_terminal(s)``;
- for evaluation and the oracle baseline only: ``gamma_star`` ``(1 or H, d)`` and ``info["true_cost"]``;
- optional hints: ``cost_noise_sigma`` (sub-Gaussian scale of the observed cost), ``min_safety_gap``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

REQUIRED_ATTRIBUTES = ("horizon", "feature_dim", "n_states", "cost_threshold", "safe_cost", "is_terminal")
FINITE_ATTRIBUTES = ("n_actions", "feature_table", "safe_action")
SEGMENT_ATTRIBUTES = ("n_segments", "segment_table", "safe_action")
BOUNDARY_TOLERANCE = 1e-9
"""tau - tau_h(s) below this counts as a safe action certified at equality (see docs/linear_agents.md)."""


class LinearMDPProtocolError(TypeError):
    """The environment does not expose the linear-MDP protocol the agents need."""


@dataclass
class LinearMDPSpec:
    """Everything the agents may know about a linear MDP, read once from the environment.

    Attributes:
        horizon: Episode length H.
        feature_dim: Feature dimension d.
        n_states: Number of states.
        cost_threshold: Instantaneous cost threshold tau.
        time_homogeneous: One model for every step (the statistics may be pooled across h).
        kind: ``"finite"`` (a discrete action set) or ``"segments"`` (actions are feature points on star-convex
            segments).
        safe_features: phi_0(s) = phi(s, a_0(s)), ``(n_states, d)``.
        candidates: Candidate features per state, ``(n_states, C, d)``: every action (finite), or phi_0 followed by
            the N segment end points (segments; the value is convex along a segment, so its maximum over the
            segment is at an end).
        safe_index: Index of a_0(s) among the candidates, ``(n_states,)`` (always 0 for segments).
        safe_costs: tau_h(s), ``(H, n_states)``.
        terminal: Terminal states, ``(n_states,)`` (their value is 0 and no decision is made there).
        gamma_star: The true cost parameters ``(1 or H, d)`` if the environment exposes them (oracle baseline and
            violation accounting only), else ``None``.
        cost_noise_sigma: The environment's sub-Gaussian scale of the observed cost, if it states one.
        min_safety_gap: The environment's suggested floor on tau - tau_h(s) for kappa, if it states one.
    """

    horizon: int
    feature_dim: int
    n_states: int
    cost_threshold: float
    time_homogeneous: bool
    kind: str
    safe_features: np.ndarray
    candidates: np.ndarray
    safe_index: np.ndarray
    safe_costs: np.ndarray
    terminal: np.ndarray
    gamma_star: np.ndarray | None = None
    cost_noise_sigma: float | None = None
    min_safety_gap: float | None = None

    @property
    def n_candidates(self) -> int:
        """Candidates per state (C)."""
        return int(self.candidates.shape[1])

    @property
    def safety_gaps(self) -> np.ndarray:
        """tau - tau_h(s), ``(H, n_states)``."""
        return self.cost_threshold - self.safe_costs

    def boundary_states(self) -> np.ndarray:
        """Non-terminal states whose safe action costs tau itself at some step (kappa would be infinite there)."""
        at_boundary = (self.safety_gaps < BOUNDARY_TOLERANCE).any(axis=0) & ~self.terminal
        return np.flatnonzero(at_boundary)

    def action_of(self, state: int, index: int) -> Any:
        """The environment action for candidate ``index`` at ``state``."""
        if self.kind == "finite":
            return int(index)
        return self.candidates[state, index]


def _missing(unwrapped: Any, names: tuple[str, ...]) -> list[str]:
    return [name for name in names if not hasattr(unwrapped, name)]


def _check_finite(name: str, values: np.ndarray) -> None:
    if not np.all(np.isfinite(values)):
        bad = np.argwhere(~np.isfinite(values))
        raise ValueError(
            f"The environment's {name} contains {len(bad)} non-finite value(s) (first at index {tuple(bad[0])}): "
            "linear-MDP agents need finite features. Check how the features are constructed."
        )


def linear_mdp_spec(env: Any) -> LinearMDPSpec:
    """Read and validate the linear-MDP protocol of ``env`` (a Gymnasium env or a one-env VecEnv).

    Raises:
        LinearMDPProtocolError: If an attribute of the protocol is missing (all missing names are listed).
        ValueError: If a feature is not finite, a shape is wrong, H or d is not positive, or a safe action costs
            more than tau (tau_h(s) > tau: no certified action exists, so kappa_h(s) would be infinite).
    """
    unwrapped = _unwrapped(env)
    name = type(unwrapped).__name__
    missing = _missing(unwrapped, REQUIRED_ATTRIBUTES)
    finite, segments = not _missing(unwrapped, FINITE_ATTRIBUTES), not _missing(unwrapped, SEGMENT_ATTRIBUTES)
    if missing or not (finite or segments):
        action_part = (
            ""
            if finite or segments
            else f"; and either {', '.join(FINITE_ATTRIBUTES)} (finite action sets) or "
            f"{', '.join(SEGMENT_ATTRIBUTES)} (star-convex feature sets)"
        )
        raise LinearMDPProtocolError(
            f"{name} does not expose the linear-MDP protocol on env.unwrapped: missing "
            f"{', '.join(missing) or 'nothing of the common part'}{action_part}. Linear-MDP agents need an "
            "environment from a plugin that provides it (e.g. FrozenLake10x10Safe-v0 or LinearMDPSynthetic-v0 "
            "from the frozen-lake plugin); see sb3_safe/linear/features.py for the protocol."
        )
    horizon, dim, n_states = int(unwrapped.horizon), int(unwrapped.feature_dim), int(unwrapped.n_states)
    if horizon <= 0 or dim <= 0 or n_states <= 0:
        raise ValueError(f"{name}: horizon, feature_dim and n_states must be >= 1, got {horizon}, {dim}, {n_states}.")
    tau = float(unwrapped.cost_threshold)
    if finite:
        kind = "finite"
        candidates = np.asarray(unwrapped.feature_table(), dtype=np.float64)
        expected = (n_states, int(unwrapped.n_actions), dim)
        safe_index = np.array([int(unwrapped.safe_action(s)) for s in range(n_states)])
        if candidates.shape != expected:
            raise ValueError(f"{name}.feature_table() has shape {candidates.shape}, expected {expected}.")
        safe_features = candidates[np.arange(n_states), safe_index]
    else:
        kind = "segments"
        safe_features, ends = (np.asarray(a, dtype=np.float64) for a in unwrapped.segment_table())
        if safe_features.shape != (n_states, dim) or ends.shape[::2] != (n_states, dim):
            raise ValueError(
                f"{name}.segment_table() gave shapes {safe_features.shape} and {ends.shape}, expected "
                f"({n_states}, {dim}) and ({n_states}, N, {dim})."
            )
        candidates = np.concatenate([safe_features[:, None, :], ends], axis=1)
        safe_index = np.zeros(n_states, dtype=np.int64)
    _check_finite("features", candidates)
    terminal = np.array([bool(unwrapped.is_terminal(s)) for s in range(n_states)])
    safe_costs = np.array([[float(unwrapped.safe_cost(s, h)) for s in range(n_states)] for h in range(horizon)])
    _check_finite("safe costs tau_h(s)", safe_costs)
    above = (safe_costs > tau + BOUNDARY_TOLERANCE) & ~terminal
    if above.any():
        h, s = np.argwhere(above)[0]
        raise ValueError(
            f"{name}: the known safe action of state {s} costs tau_h(s) = {safe_costs[h, s]:.6g} > tau = {tau:g} at "
            f"step {h} ({int(above.sum())} (step, state) pairs in all). The safe-action assumption fails there; "
            "raise the threshold or give those states a cheaper safe action."
        )
    gamma_star = getattr(unwrapped, "gamma_star", None)
    sigma, gap = getattr(unwrapped, "cost_noise_sigma", None), getattr(unwrapped, "min_safety_gap", None)
    return LinearMDPSpec(
        horizon=horizon,
        feature_dim=dim,
        n_states=n_states,
        cost_threshold=tau,
        time_homogeneous=bool(getattr(unwrapped, "time_homogeneous", False)),
        kind=kind,
        safe_features=safe_features,
        candidates=candidates,
        safe_index=safe_index,
        safe_costs=safe_costs,
        terminal=terminal,
        gamma_star=None if gamma_star is None else np.atleast_2d(np.asarray(gamma_star, dtype=np.float64)),
        cost_noise_sigma=None if sigma is None else float(sigma),
        min_safety_gap=None if gap is None else float(gap),
    )


def _unwrapped(env: Any) -> Any:
    """``env.unwrapped`` of a Gymnasium env, or of the single env inside a VecEnv."""
    if hasattr(env, "envs"):  # DummyVecEnv
        if len(env.envs) != 1:
            raise ValueError(f"Linear-MDP agents run one environment at a time, got a VecEnv of {len(env.envs)}.")
        return env.envs[0].unwrapped
    if hasattr(env, "num_envs") and not hasattr(env, "unwrapped"):
        raise ValueError("Linear-MDP agents need a DummyVecEnv (or a plain env): they read the env's model.")
    return env.unwrapped
