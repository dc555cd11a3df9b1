"""The exact linear model of the safe 10x10 Frozen Lake: transitions, features, cost, reward, a_0.

Construction (see also the plugin README), with d = n_states = 100:

- P(.|s,a): the intended move w.p. ``slip[0]``, the orthogonal moves (a-1)%4 and (a+1)%4 w.p. ``slip[1]``,
  ``slip[2]``; moves into a wall stay put; holes and the goal are absorbing self-loops (so phi exists everywhere).
- M* = [mu*(s')]_{s'} (d x n_S) with every column ~ N(0, I_d) from ``default_rng(mu_seed)``.
- phi(s,a) = solve(M*^T, P(.|s,a)), so phi(s,a) @ M* = P(.|s,a) up to floating point (~1e-14).
- gamma* = sum over holes of mu*(h), so c(s,a) = <phi(s,a), gamma*> = P(hole | s,a).
- r_target(s,a) = 1 if the intended next cell of a is closest to the goal in Manhattan distance among the four
  actions (ties all get 1), else 0.01; 1 at the goal, 0 at holes. theta* = least-squares fit over all pairs.
- a_0(s) = argmin_a c(s,a), ties (within 1e-12) toward the goal, then the lowest action index.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sb3_safe_frozen_lake.protocol import FloatArray, read_only

LEFT, DOWN, RIGHT, UP = 0, 1, 2, 3
"""Gymnasium's FrozenLake action convention."""
N_ACTIONS = 4

MAP_10X10_SAFE: tuple[str, ...] = (
    "SFFFFFFFFF",
    "FFFFFFFFFF",
    "HFFFFFFFFF",
    "FFHFFFFFFF",
    "HFFFFHFFFF",
    "FFHFFFHFFF",
    "HFFFFHFFFF",
    "FFHFFFFFFF",
    "HFFFFFFFFF",
    "FFFGFFFFFF",
)
"""CISR's small map: start (0,0), goal (9,3), 10 holes. Rows top to bottom, Gymnasium ``desc`` format."""

DEFAULT_SLIP = (0.9, 0.05, 0.05)
"""(intended, orthogonal (a-1)%4, orthogonal (a+1)%4) move probabilities."""

TOWARD_GOAL_REWARD = 1.0
OTHER_REWARD = 0.01
COST_TIE_TOLERANCE = 1e-12
"""Costs closer than this are ties when choosing a_0(s) and when finding the boundary states."""


def state_of(row: int, col: int, n_cols: int = 10) -> int:
    """Row-major state index of the cell (row, col), as in Gymnasium's FrozenLake."""
    return row * n_cols + col


def cell_of(state: int, n_cols: int = 10) -> tuple[int, int]:
    """(row, col) of a state index."""
    row, col = divmod(state, n_cols)
    return row, col


def intended_cell(state: int, action: int, n_rows: int, n_cols: int) -> int:
    """The cell that ``action`` moves to from ``state`` without slipping (a wall keeps the agent in place)."""
    row, col = divmod(state, n_cols)
    if action == LEFT:
        col = max(col - 1, 0)
    elif action == DOWN:
        row = min(row + 1, n_rows - 1)
    elif action == RIGHT:
        col = min(col + 1, n_cols - 1)
    elif action == UP:
        row = max(row - 1, 0)
    else:
        raise ValueError(f"action must be in 0..3, got {action!r}")
    return row * n_cols + col


@dataclass(frozen=True)
class FrozenLakeModel:
    """The ground-truth tables of the safe Frozen Lake (all arrays read-only).

    Attributes:
        desc: The map, one string per row.
        n_rows: Number of rows.
        n_cols: Number of columns.
        start: The start state.
        goal: The goal state.
        holes: The hole states, sorted.
        transitions: P(s'|s,a), (n_S, 4, n_S); absorbing self-loops at holes and the goal.
        cost: c(s,a) = P(hole | s,a), (n_S, 4), computed from ``transitions`` (the exact values the linear
            model reproduces to ~1e-14).
        reward_target: r_target(s,a), the paper's reward rule, (n_S, 4).
        mu_star: M* = [mu*(s')], (d, n_S).
        features: phi(s,a), (n_S, 4, d).
        gamma_star: (d,), the sum of mu*(s) over holes.
        theta_star: (d,), the least-squares fit of ``reward_target`` on ``features``.
        feature_scale: phi was divided (and mu* multiplied) by this, 1.0 unless normalised.
        safe_actions: a_0(s), (n_S,) ints.
        goal_distance: Manhattan distance of every cell to the goal, (n_S,).
    """

    desc: tuple[str, ...]
    n_rows: int
    n_cols: int
    start: int
    goal: int
    holes: tuple[int, ...]
    transitions: FloatArray
    cost: FloatArray
    reward_target: FloatArray
    mu_star: FloatArray
    features: FloatArray
    gamma_star: FloatArray
    theta_star: FloatArray
    feature_scale: float
    safe_actions: npt.NDArray[np.int64]
    goal_distance: npt.NDArray[np.int64]

    @property
    def n_states(self) -> int:
        """Number of cells."""
        return self.n_rows * self.n_cols

    @property
    def safe_costs(self) -> FloatArray:
        """tau(s) = c(s, a_0(s)), (n_S,)."""
        return self.cost[np.arange(self.n_states), self.safe_actions]


def _find(desc: Sequence[str], letter: str) -> list[int]:
    n_cols = len(desc[0])
    return [r * n_cols + c for r, line in enumerate(desc) for c, char in enumerate(line) if char == letter]


def build_transitions(desc: Sequence[str], slip: tuple[float, float, float]) -> FloatArray:
    """P(s'|s,a) of the slippery grid, (n_S, 4, n_S); holes and the goal are absorbing."""
    n_rows, n_cols = len(desc), len(desc[0])
    n_states = n_rows * n_cols
    absorbing = set(_find(desc, "H")) | set(_find(desc, "G"))
    transitions = np.zeros((n_states, N_ACTIONS, n_states))
    for s in range(n_states):
        for a in range(N_ACTIONS):
            if s in absorbing:
                transitions[s, a, s] = 1.0
                continue
            for move, probability in zip((a, (a - 1) % 4, (a + 1) % 4), slip, strict=True):
                transitions[s, a, intended_cell(s, move, n_rows, n_cols)] += probability
    return transitions


def build_reward_target(desc: Sequence[str]) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """r_target (the paper's reward rule), (n_S, 4), and the Manhattan distance of every cell to the goal, (n_S,)."""
    n_rows, n_cols = len(desc), len(desc[0])
    n_states = n_rows * n_cols
    (goal,) = _find(desc, "G")
    holes = set(_find(desc, "H"))
    goal_row, goal_col = divmod(goal, n_cols)
    rows, cols = np.divmod(np.arange(n_states), n_cols)
    distance = np.abs(rows - goal_row) + np.abs(cols - goal_col)
    target = np.full((n_states, N_ACTIONS), OTHER_REWARD)
    for s in range(n_states):
        if s in holes:
            target[s] = 0.0
        elif s == goal:
            target[s] = TOWARD_GOAL_REWARD  # every action "leads to the cell closest to the goal": G itself
        else:
            next_distance = np.array([distance[intended_cell(s, a, n_rows, n_cols)] for a in range(N_ACTIONS)])
            target[s, next_distance == next_distance.min()] = TOWARD_GOAL_REWARD
    return target, distance.astype(np.int64)


def choose_safe_actions(
    desc: Sequence[str], cost: FloatArray, goal_distance: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """a_0(s) = argmin_a c(s,a); ties toward the goal (intended next cell nearer), then the lowest index."""
    n_rows, n_cols = len(desc), len(desc[0])
    safe = np.empty(len(cost), dtype=np.int64)
    for s, row in enumerate(cost):
        tied = [a for a in range(N_ACTIONS) if row[a] <= row.min() + COST_TIE_TOLERANCE]
        safe[s] = min(tied, key=lambda a: (goal_distance[intended_cell(s, a, n_rows, n_cols)], a))
    return safe


def build_model(
    desc: Sequence[str] = MAP_10X10_SAFE,
    slip: tuple[float, float, float] = DEFAULT_SLIP,
    mu_seed: int = 0,
    normalize_features: bool = False,
) -> FrozenLakeModel:
    """Build the exact linear model (see the module docstring).

    Args:
        desc: The map (Gymnasium ``desc`` format, one 'S', one 'G').
        slip: (intended, orthogonal (a-1)%4, orthogonal (a+1)%4) move probabilities.
        mu_seed: Seed of mu*(s') ~ N(0, I_d).
        normalize_features: Rescale phi and mu* jointly (phi / c, mu* · c, c = max ||phi||) so that max ||phi|| = 1;
            transitions, costs and rewards are unchanged.

    Returns:
        The model, with every array read-only.
    """
    n_rows, n_cols = len(desc), len(desc[0])
    n_states = n_rows * n_cols
    transitions = build_transitions(desc, slip)
    holes = tuple(_find(desc, "H"))
    cost = transitions[:, :, list(holes)].sum(axis=2)
    target, distance = build_reward_target(desc)

    mu_star = np.random.default_rng(mu_seed).standard_normal((n_states, n_states))  # column s' is mu*(s')
    flat = np.linalg.solve(mu_star.T, transitions.reshape(-1, n_states).T).T  # rows phi(s,a): phi @ M* = P(.|s,a)
    scale = float(np.linalg.norm(flat, axis=1).max()) if normalize_features else 1.0
    flat /= scale
    mu_star *= scale
    theta_star = np.linalg.lstsq(flat, target.ravel(), rcond=None)[0]
    gamma_star = mu_star[:, list(holes)].sum(axis=1)

    return FrozenLakeModel(
        desc=tuple(desc),
        n_rows=n_rows,
        n_cols=n_cols,
        start=_find(desc, "S")[0],
        goal=_find(desc, "G")[0],
        holes=holes,
        transitions=read_only(transitions),
        cost=read_only(cost),
        reward_target=read_only(target),
        mu_star=read_only(mu_star),
        features=read_only(flat.reshape(n_states, N_ACTIONS, n_states)),
        gamma_star=read_only(gamma_star),
        theta_star=read_only(theta_star),
        feature_scale=scale,
        safe_actions=read_only(choose_safe_actions(desc, cost, distance)),
        goal_distance=read_only(distance),
    )


@functools.lru_cache(maxsize=8)
def cached_model(
    desc: tuple[str, ...], slip: tuple[float, float, float], mu_seed: int, normalize_features: bool
) -> FrozenLakeModel:
    """:func:`build_model`, memoised: the model is immutable, so environments with equal arguments share it."""
    return build_model(desc, slip, mu_seed, normalize_features)
