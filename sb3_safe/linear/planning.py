"""Optimistic backward value recursion over finite candidate sets (docs/linear_agents.md, 'The value recursion').

For h = H-1 .. 0 (0-based), with the statistics of the group that step h regresses on:

    w_h     = M (b_r - lambda' b_z + B V_{h+1})                       (V_H = 0, and 0 at terminal states)
    Q_h(s,c) = <w_h, x_{s,c}> + kappa_h(s) * beta * ||x_{s,c}||_M      over the allowed candidates x_{s,c}
    V_h(s)  = min{ max_c Q_h(s,c), clip_h },   pi_h(s) = argmax_c Q_h(s,c)  (ties go to the safe candidate)

Q itself is not clipped and the policy comes from the unclipped maximiser, as in both papers. Vectorised over states
and candidates. The statistics do not change during a pass, so x^T M, the bonus norms and the map
V_{h+1} -> <x, M B V_{h+1}> are formed once per group: with pooled statistics each step then costs one
(n_states C) x n_states product.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sb3_safe.linear.gram import RidgeStatistics

VALUE_CLIPS = ("H", "H-h+1")


Maximiser = Callable[[int, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""``(h, q (n_states, C)) -> (decision, value (n_states,))``: the per-state maximisation of one step, with decision
a candidate index per state ``(n_states,)`` (deterministic policies) or a distribution ``(n_states, C)``."""


@dataclass
class Plan:
    """The maximisers and values of one backward pass.

    Attributes:
        decisions: The maximiser per (h, s): a candidate index ``(H, n_states)``, or a distribution over the
            candidates ``(H, n_states, C)`` for randomised policies.
        values: V_h(s) for h = 0..H, ``(H + 1, n_states)`` (the last row is 0).
        q_max: The maximised value before clipping, ``(H, n_states)``.
    """

    decisions: np.ndarray
    values: np.ndarray
    q_max: np.ndarray

    @property
    def choice(self) -> np.ndarray:
        """The chosen candidate per (h, s) (deterministic plans)."""
        return self.decisions


def greedy_maximiser(safe_index: np.ndarray) -> Maximiser:
    """argmax_c Q(s, c) per state, ties going to the safe candidate."""
    states = np.arange(len(safe_index))

    def maximise(step: int, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        best = q.argmax(axis=1)
        best_q = q[states, best]
        return np.where(q[states, safe_index] >= best_q, safe_index, best), best_q

    return maximise


def value_clip_levels(horizon: int, value_clip: str) -> np.ndarray:
    """The clip level of V_h per 0-based step: H everywhere (the paper), or the steps left, H - h."""
    if value_clip == "H":
        return np.full(horizon, float(horizon))
    if value_clip == "H-h+1":
        return np.arange(horizon, 0, -1, dtype=np.float64)
    raise ValueError(f"value_clip must be one of {VALUE_CLIPS}, got {value_clip!r}.")


def backward_pass(
    stats: RidgeStatistics,
    group_of: Callable[[int], int],
    candidates: np.ndarray,
    safe_index: np.ndarray,
    terminal: np.ndarray,
    bonus_scale: np.ndarray,
    clip_levels: np.ndarray,
    allowed: np.ndarray | None = None,
    cost_penalty: float = 0.0,
    maximiser: Maximiser | None = None,
) -> Plan:
    """Run the recursion for every step and state.

    Args:
        stats: The regression statistics.
        group_of: Statistics group of step h (h itself, or 0 when pooled).
        candidates: Candidate features ``(1 or H, n_states, C, d)`` (per step when the allowed points vary with h).
        safe_index: The safe candidate of each state ``(n_states,)``; ties go to it.
        terminal: Terminal states ``(n_states,)``: V = 0 there.
        bonus_scale: The multiplier of ``||x||_M`` in Q, e.g. ``kappa_h(s) * beta``, as ``(H, n_states)``
            (broadcastable).
        clip_levels: The clip of V_h per step ``(H,)``.
        allowed: Optional mask ``(1 or H, n_states, C)`` of the candidates that may be chosen (the safe one always).
        cost_penalty: lambda' of the penalised baseline: regress on r - lambda' z.
        maximiser: The per-step maximisation over the candidates (default: :func:`greedy_maximiser`).

    Returns:
        The plan.
    """
    horizon = len(clip_levels)
    n_states = candidates.shape[1]
    bonus_scale = np.broadcast_to(bonus_scale, (horizon, n_states))
    maximise = greedy_maximiser(safe_index) if maximiser is None else maximiser
    values = np.zeros((horizon + 1, n_states))
    decisions: list[np.ndarray] = [np.empty(0)] * horizon
    q_max = np.zeros((horizon, n_states))
    parts: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for h in range(horizon - 1, -1, -1):
        group, layer = group_of(h), h if candidates.shape[0] > 1 else 0
        if (group, layer) not in parts:
            parts[group, layer] = _q_parts(stats, group, candidates[layer], cost_penalty, allowed, layer)
        base, transfer, norms = parts[group, layer]
        # Q = <x, M (b_r - lambda' b_z)> + <x, M B V_{h+1}> + bonus: two products fixed for the pass, one per step.
        q = base + bonus_scale[h][:, None] * norms + (transfer @ values[h + 1]).reshape(base.shape)
        decisions[h], q_max[h] = maximise(h, q)
        values[h] = np.where(terminal, 0.0, np.minimum(q_max[h], clip_levels[h]))
    return Plan(decisions=np.stack(decisions), values=values, q_max=q_max)


def _q_parts(
    stats: RidgeStatistics,
    group: int,
    candidates: np.ndarray,
    cost_penalty: float,
    allowed: np.ndarray | None,
    layer: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For one group's statistics: the reward part of Q (-inf where not allowed) ``(n_states, C)``, the map from
    V_{h+1} to the bootstrap part ``(n_states * C, n_states)`` and the bonus norms ``(n_states, C)``."""
    flat = candidates.reshape(-1, candidates.shape[-1])
    projected = flat @ stats.M[group]  # x^T M, (n_states * C, d)
    base = (projected @ stats.weights_target(group, cost_penalty)).reshape(candidates.shape[:2])
    if allowed is not None:
        base = np.where(allowed[layer if allowed.shape[0] > 1 else 0], base, -np.inf)
    transfer = projected @ stats.B[group]
    norms = np.sqrt(np.maximum(np.einsum("nd,nd->n", projected, flat), 0.0)).reshape(candidates.shape[:2])
    return base, transfer, norms
