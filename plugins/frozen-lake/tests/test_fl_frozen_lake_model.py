"""The safe Frozen Lake is an exact linear MDP with the costs, safe actions and reward fit of the plugin README."""

from __future__ import annotations

import numpy as np
import pytest
from _fl_helpers import BOUNDARY_COSTS, GOAL_CELL, HOLE_CELLS, gymnasium_reference, state

from sb3_safe_frozen_lake import FrozenLakeSafeEnv
from sb3_safe_frozen_lake.frozen_lake_model import DOWN, LEFT, RIGHT, UP

HOLES = sorted(state(*cell) for cell in HOLE_CELLS)
GOAL = state(*GOAL_CELL)
NON_TERMINAL = [s for s in range(100) if s not in HOLES and s != GOAL]


@pytest.fixture(scope="module")
def lake() -> FrozenLakeSafeEnv:
    return FrozenLakeSafeEnv()


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, np.ndarray]:
    return gymnasium_reference()


def test_map_and_protocol_constants(lake):
    assert (lake.n_states, lake.n_actions, lake.feature_dim, lake.horizon) == (100, 4, 100, 1000)
    assert lake.cost_threshold == 0.1 and lake.time_homogeneous
    assert lake.start_state == 0 and lake.goal_state == GOAL and list(lake.hole_states) == HOLES
    assert lake.mu_star.shape == (1, 100, 100)
    assert lake.theta_star.shape == lake.gamma_star.shape == (1, 100)
    assert lake.feature_table().shape == (100, 4, 100) and lake.feature_table().dtype == np.float64
    assert lake.features(7).shape == (4, 100)
    np.testing.assert_array_equal(lake.features(7), lake.feature_table()[7])
    assert lake.cost_noise_sigma == 0.5 and lake.min_safety_gap == pytest.approx(0.05, abs=1e-12)


def test_transitions_match_gymnasium_and_phi_reproduces_them(lake, reference):
    expected, _ = reference
    # Gymnasium makes holes/goal terminal with a self-loop; ours are absorbing self-loops: the same rows.
    np.testing.assert_allclose(lake.transition_table(), expected, atol=1e-15)
    linear = lake.feature_table() @ lake.mu_star[0]  # (S, A, S')
    assert np.abs(linear - expected).max() < 1e-10
    assert np.all(linear > -1e-10) and np.abs(linear.sum(axis=2) - 1).max() < 1e-10
    for s, a in [(0, RIGHT), (34, UP), (GOAL, LEFT), (HOLES[0], DOWN)]:
        np.testing.assert_allclose(lake.transition_probabilities(s, a, 5), expected[s, a], rtol=0, atol=1e-15)


def test_mu_star_is_a_gaussian_draw_with_the_spec_conditioning(lake):
    mu = lake.mu_star[0]
    np.testing.assert_array_equal(mu, np.random.default_rng(0).standard_normal((100, 100)))
    assert 400 < np.linalg.cond(mu) < 600  # cond ~ 5e2 for seed 0
    norms = np.linalg.norm(lake.feature_table(), axis=2)
    assert np.median(norms) == pytest.approx(2.43, abs=0.01) and norms.max() == pytest.approx(7.04, abs=0.01)


def test_cost_is_linear_and_equals_the_hole_probability(lake, reference):
    _, hole_probability = reference
    np.testing.assert_allclose(lake.gamma_star[0], lake.mu_star[0][:, HOLES].sum(axis=1), atol=1e-12)
    linear_cost = lake.feature_table() @ lake.gamma_star[0]
    assert np.abs(linear_cost - hole_probability).max() < 1e-10
    np.testing.assert_allclose(lake.cost_table(), hole_probability, rtol=0, atol=1e-15)
    assert lake.true_cost(state(3, 0), RIGHT, 0) == 0.1  # exact, not 0.1 + rounding


def test_exactly_the_six_boundary_states_with_the_spec_costs(lake):
    cells = sorted(divmod(s, 10) for s in lake.boundary_states)
    assert cells == sorted(BOUNDARY_COSTS)
    for cell, costs in BOUNDARY_COSTS.items():
        np.testing.assert_allclose(lake.cost_table()[state(*cell)], costs, atol=1e-15)
        # (5,5): only LEFT costs 0.1. Corridors: LEFT and RIGHT cost 0.1, RIGHT's next cell is nearer the goal.
        assert lake.safe_action(state(*cell)) == (LEFT if cell == (5, 5) else RIGHT)
    best = lake.cost_table()[NON_TERMINAL].min(axis=1)
    assert np.sum(best == 0) == 81 and np.sum(np.isclose(best, 0.05)) == 2 and np.sum(np.isclose(best, 0.1)) == 6


def test_safe_action_is_least_cost_and_safe(lake):
    for s in NON_TERMINAL:
        a0 = lake.safe_action(s)
        assert lake.cost_table()[s, a0] == lake.cost_table()[s].min()
        for h in (0, 999):
            tau_s = lake.safe_cost(s, h)
            assert tau_s == lake.true_cost(s, a0, h)
            assert abs(tau_s - lake.features(s)[a0] @ lake.gamma_star[0]) < 1e-12
            if s in lake.boundary_states:
                assert tau_s == lake.cost_threshold
            else:
                assert tau_s <= lake.cost_threshold - 0.05 + 1e-12


def test_safe_action_ties_break_toward_the_goal(lake):
    # At (0,0) every action costs 0; DOWN and RIGHT both approach the goal, DOWN has the lower index.
    assert lake.safe_action(0) == DOWN
    # At (0,9) everything costs 0; LEFT and DOWN approach the goal (9,3) equally, LEFT has the lower index.
    assert lake.safe_action(state(0, 9)) == LEFT
    # At (1,0) DOWN (into the hole (2,0)) costs 0.9, LEFT and RIGHT 0.05: only UP is free, away from the goal.
    assert lake.safe_action(state(1, 0)) == UP
    # (9,4): LEFT moves onto the goal itself.
    assert lake.safe_action(state(9, 4)) == LEFT
    assert lake.is_terminal(HOLES[3]) and not lake.is_terminal(GOAL) and not lake.is_terminal(0)


def test_linear_reward_is_the_least_squares_fit_of_the_target(lake):
    features = lake.feature_table().reshape(400, 100)
    target = lake.model.reward_target
    assert target[GOAL].tolist() == [1.0] * 4 and target[HOLES].max() == 0.0
    assert target[0].tolist() == [0.01, 1.0, 1.0, 0.01]  # DOWN and RIGHT approach the goal
    # Normal equations of the least-squares fit.
    residual = features @ lake.theta_star[0] - target.ravel()
    assert np.abs(features.T @ residual).max() < 1e-8
    assert np.abs(residual).max() == pytest.approx(0.85, abs=0.005)
    assert np.abs(residual).mean() == pytest.approx(0.40, abs=0.005)
    np.testing.assert_allclose(lake.reward_table(), lake.feature_table() @ lake.theta_star[0], atol=1e-12)
    toward = [target[s, np.argmax(lake.reward_table()[s])] == 1.0 for s in NON_TERMINAL]
    assert np.mean(toward) == pytest.approx(0.72, abs=0.005)
    assert lake.reward_is_linear


def test_tabular_reward_is_the_target():
    tabular = FrozenLakeSafeEnv(reward_model="tabular")
    np.testing.assert_array_equal(tabular.reward_table(), tabular.model.reward_target)
    assert not tabular.reward_is_linear
    assert tabular.true_reward(0, RIGHT, 3) == 1.0 and tabular.true_reward(0, UP, 3) == 0.01


def test_normalized_features_keep_the_model(lake):
    scaled = FrozenLakeSafeEnv(normalize_features=True)
    assert scaled.normalize_features and scaled.max_feature_norm == pytest.approx(1.0, abs=1e-12)
    assert scaled.feature_scale == pytest.approx(np.linalg.norm(lake.feature_table(), axis=2).max())
    np.testing.assert_allclose(scaled.feature_table() * scaled.feature_scale, lake.feature_table(), atol=1e-12)
    assert np.abs(scaled.feature_table() @ scaled.mu_star[0] - lake.transition_table()).max() < 1e-10
    assert np.abs(scaled.feature_table() @ scaled.gamma_star[0] - lake.cost_table()).max() < 1e-10
    np.testing.assert_allclose(scaled.reward_table(), lake.reward_table(), atol=1e-10)
    assert lake.feature_scale == 1.0 and lake.max_feature_norm > 7


def test_other_mu_seed_changes_features_not_dynamics(lake):
    other = FrozenLakeSafeEnv(mu_seed=1)
    assert not np.allclose(other.mu_star, lake.mu_star)
    assert np.abs(other.feature_table() @ other.mu_star[0] - lake.transition_table()).max() < 1e-10
    np.testing.assert_array_equal(other.cost_table(), lake.cost_table())
    assert other.boundary_states == lake.boundary_states


def test_asymmetric_slip_and_larger_tau():
    lake = FrozenLakeSafeEnv(slip=(0.8, 0.15, 0.05), tau=0.2)
    # RIGHT at (3,0): (a-1)%4 = DOWN into the hole (4,0) w.p. 0.15, (a+1)%4 = UP into (2,0) w.p. 0.05.
    assert lake.true_cost(state(3, 0), RIGHT, 0) == pytest.approx(0.2)
    assert lake.transition_probabilities(state(1, 1), RIGHT, 0)[state(1, 2)] == pytest.approx(0.8)
    assert np.abs(lake.feature_table() @ lake.mu_star[0] - lake.transition_table()).max() < 1e-10
    # The corridor cells now cost 0.15 + 0.05 = tau at best; (4,6) and (6,6) cost 0.05 at best.
    assert sorted(divmod(s, 10) for s in lake.boundary_states) == sorted(BOUNDARY_COSTS)
    assert lake.min_safety_gap == pytest.approx(0.15)
