"""Sherman-Morrison ridge statistics against direct linear algebra."""

from __future__ import annotations

import numpy as np
import pytest

from sb3_safe.linear.gram import NO_NEXT_STATE, RidgeStatistics


def _fill(stats: RidgeStatistics, n: int, seed: int = 0, group: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    dim, n_states = stats.A.shape[-1], stats.B.shape[-1]
    phis = rng.normal(size=(n, dim)) / np.sqrt(dim)
    rewards, costs = rng.uniform(size=n), rng.normal(size=n)
    next_states = rng.integers(-1, n_states, size=n)  # -1: no bootstrap
    for phi, r, z, s in zip(phis, rewards, costs, next_states, strict=True):
        stats.add(group, phi, r, z, int(s))
    return phis, rewards, costs, next_states


def test_sherman_morrison_state_equals_the_direct_inverse_after_many_updates():
    stats = RidgeStatistics(1, 8, 5, ridge=1.0, refactor_every=0)  # no refactorisation: pure rank-one updates
    phis, rewards, costs, next_states = _fill(stats, 10_000)
    gram = np.eye(8) + phis.T @ phis
    np.testing.assert_allclose(stats.A[0], gram, rtol=1e-10, atol=1e-8)
    assert np.abs(stats.M[0] @ gram - np.eye(8)).max() < 1e-8
    np.testing.assert_allclose(stats.b_r[0], phis.T @ rewards, atol=1e-9)
    np.testing.assert_allclose(stats.b_z[0], phis.T @ costs, atol=1e-9)
    values = np.arange(5.0)
    bootstrap = np.where(next_states >= 0, values[np.maximum(next_states, 0)], 0.0)
    np.testing.assert_allclose(stats.B[0] @ values, phis.T @ bootstrap, atol=1e-9)
    assert stats.n[0] == 10_000


def test_weights_are_the_ridge_solution_and_refactoring_keeps_the_inverse():
    stats = RidgeStatistics(2, 6, 4, ridge=0.5, refactor_every=7)
    phis, rewards, costs, next_states = _fill(stats, 50, group=1)
    values = np.array([0.3, -1.0, 2.0, 0.5])
    bootstrap = np.where(next_states >= 0, values[np.maximum(next_states, 0)], 0.0)
    gram = 0.5 * np.eye(6) + phis.T @ phis
    expected = np.linalg.solve(gram, phis.T @ (rewards - 0.8 * costs + bootstrap))
    np.testing.assert_allclose(stats.weights(1, values, cost_penalty=0.8), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(stats.cost_estimate(1), np.linalg.solve(gram, phis.T @ costs), atol=1e-12)
    assert stats.updates_since_refactor.numpy()[1] == 50 % 7
    # the untouched group is still lambda I
    np.testing.assert_array_equal(stats.M[0], np.eye(6) / 0.5)
    assert stats.n.tolist() == [0, 50]


def test_bonus_norms_are_the_quadratic_forms():
    stats = RidgeStatistics(1, 4, 3, ridge=1.0)
    _fill(stats, 20)
    features = np.random.default_rng(1).normal(size=(3, 5, 4))
    expected = np.sqrt(np.einsum("...d,de,...e->...", features, stats.M[0], features))
    np.testing.assert_allclose(stats.bonus_norms(0, features), expected, rtol=1e-12)


def test_statistics_live_in_the_state_dict():
    stats = RidgeStatistics(1, 3, 2, ridge=1.0)
    stats.add(0, np.array([1.0, 0.0, 0.5]), 1.0, 0.2, NO_NEXT_STATE)
    clone = RidgeStatistics(1, 3, 2, ridge=1.0)
    clone.load_state_dict(stats.state_dict())
    for name in ("A", "M", "b_r", "b_z", "B", "n"):
        np.testing.assert_array_equal(getattr(clone, name), getattr(stats, name))


def test_bad_ridge_is_rejected():
    with pytest.raises(ValueError, match="ridge"):
        RidgeStatistics(1, 3, 2, ridge=0.0)
