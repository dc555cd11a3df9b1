"""The cost protocol: reading costs, limits, horizons and the threshold conversion."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from sb3_safe.common.costs import (
    EpisodeCostTracker,
    MissingCostError,
    cost_limit_to_q_threshold,
    episode_length_of,
    step_cost,
    step_costs,
    validate_cost_limit,
)


@pytest.mark.parametrize(
    ("limit", "horizon", "gamma", "expected"),
    [(20.0, 300, 0.99, 6.3397), (10.0, 400, 0.99, 2.455), (10.0, 300, 0.97, 1.1110)],
)
def test_threshold_conversion_matches_the_reference_check_values(limit, horizon, gamma, expected):
    assert cost_limit_to_q_threshold(limit, gamma, horizon) == pytest.approx(expected, abs=5e-4)


def test_threshold_is_the_discounted_return_of_a_constant_cost():
    limit, gamma, horizon = 25.0, 0.99, 1000
    per_step = limit / horizon
    discounted = sum(per_step * gamma**t for t in range(horizon))
    assert cost_limit_to_q_threshold(limit, gamma, horizon) == pytest.approx(discounted, rel=1e-10)
    assert cost_limit_to_q_threshold(limit, 1.0, horizon) == pytest.approx(limit)


def test_threshold_per_constraint():
    thresholds = cost_limit_to_q_threshold([20.0, 10.0], 0.99, 300)
    assert isinstance(thresholds, np.ndarray)
    np.testing.assert_allclose(thresholds, [6.3397, 3.16985], atol=5e-4)


def test_threshold_refuses_an_unknown_horizon_and_bad_limits():
    with pytest.raises(ValueError, match="fixed episode length"):
        cost_limit_to_q_threshold(25.0, 0.99, None)
    with pytest.raises(ValueError, match=">= 0"):
        cost_limit_to_q_threshold(-1.0, 0.99, 1000)
    with pytest.raises(ValueError, match="gamma"):
        cost_limit_to_q_threshold(1.0, 1.5, 1000)
    with pytest.raises(ValueError, match="positive integer"):
        cost_limit_to_q_threshold(1.0, 0.99, 0)


def test_negative_or_mismatched_cost_limit_is_rejected():
    with pytest.raises(ValueError, match=r"finite and >= 0.*Use 0 to forbid"):
        validate_cost_limit(-5.0)
    with pytest.raises(ValueError, match="one per constraint"):
        validate_cost_limit([1.0, 2.0, 3.0], n_costs=2)
    np.testing.assert_array_equal(validate_cost_limit(3.0, n_costs=2), [3.0, 3.0])


def test_episode_length_from_spec_or_explicit(toy_env_id):
    env = gym.make(toy_env_id)
    assert episode_length_of(env) == 20
    assert episode_length_of(env, episode_length=7) == 7


def test_episode_length_from_a_time_limit_wrapper_without_spec():
    from stable_baselines3.common.vec_env import DummyVecEnv

    env = gym.wrappers.TimeLimit(gym.make("ToyNoHorizon-v0").unwrapped, max_episode_steps=33)
    assert env.spec is None or env.spec.max_episode_steps in (None, 33)
    assert episode_length_of(env) == 33
    assert episode_length_of(DummyVecEnv([lambda: env])) == 33


def test_episode_length_unknown_is_a_clear_error():
    env = gym.make("ToyNoHorizon-v0")
    with pytest.raises(ValueError, match=r"ToyNoHorizon-v0.*not known.*max_episode_steps.*episode_length=T"):
        episode_length_of(env)


def test_step_cost_reads_info_and_names_a_missing_cost():
    assert step_cost({"cost": 1}) == 1.0
    assert step_cost({"costs": np.array([0.5, 0.25])}) == 0.75
    with pytest.raises(
        MissingCostError, match=r"'Pendulum-v1' did not report a cost.*info\['cost'\].*keys at this step: x"
    ):
        step_cost({"x": 1}, env_name="Pendulum-v1")


def test_step_costs_for_several_constraints():
    np.testing.assert_array_equal(step_costs({"cost": 1.0, "costs": [1.0, 0.0]}, 2), [1.0, 0.0])
    with pytest.raises(MissingCostError, match="n_costs=3"):
        step_costs({"cost": 1.0, "costs": [1.0, 0.0]}, 3)
    with pytest.raises(MissingCostError, match=r"info\['costs'\]"):
        step_costs({"cost": 1.0}, 2)


def test_episode_cost_tracker_restarts_finished_episodes():
    tracker = EpisodeCostTracker(n_envs=2)
    assert tracker.update(np.array([[1.0], [2.0]]), [False, False]) == {}
    finished = tracker.update(np.array([[1.0], [0.5]]), [True, False])
    assert list(finished) == [0] and finished[0][0] == 2.0
    finished = tracker.update(np.array([[3.0], [0.5]]), [True, True])
    assert finished[0][0] == 3.0 and finished[1][0] == 3.0
