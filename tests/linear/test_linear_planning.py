"""The backward recursion against brute-force value iteration on a tabular (one-hot) linear MDP."""

from __future__ import annotations

import numpy as np
import pytest

from sb3_safe.linear.gram import NO_NEXT_STATE, RidgeStatistics
from sb3_safe.linear.lsvi_ucb import certified_segment_points
from sb3_safe.linear.planning import backward_pass, value_clip_levels

S, A, H, RIDGE = 4, 3, 6, 1.0


def _tabular_data(seed: int = 0):
    """Random transitions of a tabular MDP, as counts and as ridge statistics on one-hot features."""
    rng = np.random.default_rng(seed)
    stats = RidgeStatistics(1, S * A, S, ridge=RIDGE)
    counts, reward_sums, next_counts = np.zeros((S, A)), np.zeros((S, A)), np.zeros((S, A, S))
    for _ in range(300):
        s, a = rng.integers(S), rng.integers(A)
        r = rng.uniform()
        s_next = int(rng.integers(-1, S))  # -1: terminal, no bootstrap
        stats.add(0, np.eye(S * A)[s * A + a], r, 0.0, s_next if s_next >= 0 else NO_NEXT_STATE)
        counts[s, a] += 1
        reward_sums[s, a] += r
        if s_next >= 0:
            next_counts[s, a, s_next] += 1
    return stats, counts, reward_sums, next_counts


def _brute_force(counts, reward_sums, next_counts, beta, clip, allowed, terminal, safe):
    values = np.zeros((H + 1, S))
    policy = np.zeros((H, S), dtype=int)
    for h in reversed(range(H)):
        for s in range(S):
            q = [
                (reward_sums[s, a] + next_counts[s, a] @ values[h + 1]) / (counts[s, a] + RIDGE)
                + beta / np.sqrt(counts[s, a] + RIDGE)
                if allowed[s, a]
                else -np.inf
                for a in range(A)
            ]
            best = int(np.argmax(q))
            policy[h, s] = safe[s] if q[safe[s]] >= q[best] else best
            values[h, s] = 0.0 if terminal[s] else min(q[best], clip[h])
    return policy, values


@pytest.mark.parametrize(("beta", "value_clip", "masked"), [(0.0, "H", False), (0.7, "H-h+1", True)])
def test_backward_pass_matches_brute_force_value_iteration(beta, value_clip, masked):
    stats, counts, reward_sums, next_counts = _tabular_data()
    candidates = np.eye(S * A).reshape(S, A, S * A)
    allowed = np.ones((S, A), dtype=bool)
    if masked:
        allowed[:, 0] = False
    safe = np.array([1, 2, 1, 2])
    terminal = np.array([False, False, False, True])
    clip = value_clip_levels(H, value_clip)
    plan = backward_pass(
        stats,
        lambda h: 0,
        candidates[None],
        safe,
        terminal,
        np.full((H, S), beta),
        clip,
        allowed=allowed[None] if masked else None,
    )
    policy, values = _brute_force(counts, reward_sums, next_counts, beta, clip, allowed, terminal, safe)
    np.testing.assert_allclose(plan.values, values, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(plan.choice[:, ~terminal], policy[:, ~terminal])
    if masked:
        assert not (plan.choice == 0).any()


def test_ties_go_to_the_safe_action():
    stats = RidgeStatistics(1, S * A, S, ridge=RIDGE)  # no data: every Q equals the bonus
    candidates = np.eye(S * A).reshape(1, S, A, S * A)
    safe = np.array([2, 1, 0, 2])
    plan = backward_pass(
        stats, lambda h: 0, candidates, safe, np.zeros(S, bool), np.ones((H, S)), value_clip_levels(H, "H")
    )
    np.testing.assert_array_equal(plan.choice, np.tile(safe, (H, 1)))


def test_value_clip_levels():
    np.testing.assert_array_equal(value_clip_levels(3, "H"), [3.0, 3.0, 3.0])
    np.testing.assert_array_equal(value_clip_levels(3, "H-h+1"), [3.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="value_clip"):
        value_clip_levels(3, "none")


def test_certified_segment_points_match_a_brute_force_grid():
    rng = np.random.default_rng(0)
    n_states, n_segments, dim, tau = 5, 7, 4, 0.5
    gamma = rng.normal(size=dim)
    safe = rng.dirichlet(np.ones(dim), size=n_states)
    ends = rng.dirichlet(np.ones(dim), size=(n_states, n_segments))
    safe_costs = np.minimum(safe @ gamma, tau - 0.05)  # the segment rule takes tau_h(s) < tau as given
    safe += np.outer((safe_costs - safe @ gamma) / (gamma @ gamma), gamma)  # move phi_0 to have that cost
    points = certified_segment_points(safe, ends, safe_costs, ends @ gamma, tau)
    grid = np.linspace(0.0, 1.0, 1001)
    for s in range(n_states):
        for i in range(n_segments):
            along = safe[s] + grid[:, None] * (ends[s, i] - safe[s])
            certified = grid[along @ gamma <= tau + 1e-12]
            alpha = np.linalg.norm(points[s, i] - safe[s]) / max(np.linalg.norm(ends[s, i] - safe[s]), 1e-300)
            assert certified.max() <= alpha + 1e-12 < certified.max() + 1e-3
            assert points[s, i] @ gamma <= tau + 1e-12
