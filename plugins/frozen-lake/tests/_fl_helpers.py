"""Helpers for the frozen-lake plugin tests: an independent reference model and finite-horizon safe value iteration."""

from __future__ import annotations

import itertools

import numpy as np
from gymnasium.envs.toy_text.frozen_lake import FrozenLakeEnv

from sb3_safe_frozen_lake.frozen_lake_model import MAP_10X10_SAFE

CELL = 10  # columns of the map


def state(row: int, col: int) -> int:
    """Row-major state index."""
    return row * CELL + col


HOLE_CELLS = [(2, 0), (3, 2), (4, 0), (4, 5), (5, 2), (5, 6), (6, 0), (6, 5), (7, 2), (8, 0)]
GOAL_CELL = (9, 3)

BOUNDARY_COSTS = {
    (3, 0): (0.10, 0.90, 0.10, 0.90),
    (4, 2): (0.10, 0.90, 0.10, 0.90),
    (5, 0): (0.10, 0.90, 0.10, 0.90),
    (6, 2): (0.10, 0.90, 0.10, 0.90),
    (7, 0): (0.10, 0.90, 0.10, 0.90),
    (5, 5): (0.10, 0.95, 1.00, 0.95),
}
"""The six boundary states whose best cost equals tau = 0.1, with the costs of (LEFT, DOWN, RIGHT, UP)."""


def gymnasium_reference() -> tuple[np.ndarray, np.ndarray]:
    """P(s'|s,a) and P(hole|s,a) from Gymnasium's own FrozenLake (success_rate 0.9): an independent reference."""
    lake = FrozenLakeEnv(desc=list(MAP_10X10_SAFE), is_slippery=True, success_rate=0.9)
    n_states = lake.observation_space.n
    transitions = np.zeros((n_states, 4, n_states))
    for s, a in itertools.product(range(n_states), range(4)):
        for probability, next_state, _, _ in lake.P[s][a]:
            transitions[s, a, next_state] += probability
    holes = [state(*cell) for cell in HOLE_CELLS]
    return transitions, transitions[:, :, holes].sum(axis=2)


def safe_value_iteration(
    transitions: np.ndarray,
    rewards: np.ndarray,
    costs: np.ndarray,
    tau: float,
    horizon: int,
    terminal: np.ndarray,
    randomised: bool,
) -> np.ndarray:
    """Optimal safe policies pi_h(a|s), (H, n_S, n_A), by backward induction on the true model.

    Deterministic: maximise Q over {a : c(s,a) <= tau}. Randomised: maximise E_theta Q over the exact safe set
    {theta : E_theta c <= tau}, an LP on the simplex with one constraint whose optimum is a feasible vertex or a
    mixture of two actions (a with c_a <= tau, b with c_b > tau) at E_theta c = tau. V = 0 at terminal states.
    """
    n_states, n_actions = costs.shape
    feasible = costs <= tau + 1e-12
    value = np.zeros(n_states)
    policies = np.zeros((horizon, n_states, n_actions))
    for h in range(horizon - 1, -1, -1):
        q = rewards + transitions @ value
        masked = np.where(feasible, q, -np.inf)
        best = masked.argmax(axis=1)
        policy = np.zeros((n_states, n_actions))
        policy[np.arange(n_states), best] = 1.0
        best_value = masked.max(axis=1)
        if randomised:
            for a, b in itertools.permutations(range(n_actions), 2):
                pair = feasible[:, a] & ~feasible[:, b]
                weight = np.zeros(n_states)
                weight[pair] = (tau - costs[pair, a]) / (costs[pair, b] - costs[pair, a])
                mixed = (1 - weight) * q[:, a] + weight * q[:, b]
                better = pair & (mixed > best_value + 1e-12)
                best_value = np.where(better, mixed, best_value)
                policy[better] = 0.0
                policy[better, a] = 1 - weight[better]
                policy[better, b] = weight[better]
        value = np.where(terminal, 0.0, best_value)
        policies[h] = policy
    return policies


def goal_statistics(
    transitions: np.ndarray, policies: np.ndarray, start: int, goal: int, holes: list[int]
) -> tuple[float, float, int | None]:
    """P(reach the goal within H), P(enter a hole), and the median first-entry time (in steps) given success."""
    distribution = np.zeros(transitions.shape[0])
    distribution[start] = 1.0
    first_entry = np.zeros(len(policies))
    p_hole = 0.0
    for h, policy in enumerate(policies):
        distribution = np.einsum("s,sa,sat->t", distribution, policy, transitions)
        first_entry[h] = distribution[goal]
        p_hole += distribution[holes].sum()
        distribution[goal] = 0.0  # track the mass that has not reached the goal yet
        distribution[holes] = 0.0
    cumulative = np.cumsum(first_entry)
    p_goal = float(cumulative[-1])
    median = int(np.searchsorted(cumulative, p_goal / 2) + 1) if p_goal > 0.01 else None
    return p_goal, float(p_hole), median
