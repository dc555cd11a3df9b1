"""Finite-horizon safe value iteration on the true Frozen Lake model: why the goal is absorbing by default."""

from __future__ import annotations

import numpy as np
import pytest
from _fl_helpers import goal_statistics, safe_value_iteration

from sb3_safe_frozen_lake import FrozenLakeSafeEnv


def _solve(env: FrozenLakeSafeEnv, randomised: bool) -> tuple[np.ndarray, tuple[float, float, int | None]]:
    terminal = np.array([env.is_terminal(s) for s in range(env.n_states)])
    policies = safe_value_iteration(
        env.transition_table(),
        env.reward_table(),
        env.cost_table(),
        env.cost_threshold,
        env.horizon,
        terminal,
        randomised,
    )
    stats = goal_statistics(env.transition_table(), policies, env.start_state, env.goal_state, list(env.hole_states))
    return policies, stats


def test_optimal_deterministic_safe_policy_reaches_the_goal():
    env = FrozenLakeSafeEnv()  # linear reward, absorbing goal, H = 1000
    policies, (p_goal, p_hole, median) = _solve(env, randomised=False)
    assert p_goal > 0.9 and p_hole < 0.01 and median is not None and median < 40
    actions = policies.argmax(axis=2)
    assert np.all(policies.max(axis=2) == 1.0)
    chosen_costs = np.take_along_axis(env.cost_table()[None], actions[..., None], axis=2)[..., 0]
    acting = [s for s in range(env.n_states) if not env.is_terminal(s)]
    assert chosen_costs[:, acting].max() <= env.cost_threshold  # safe at every non-terminal state and step


def test_the_env_realises_the_value_iteration_prediction():
    env = FrozenLakeSafeEnv(horizon=60)
    policies, (p_goal, _, _) = _solve(env, randomised=False)
    successes = 0
    for episode in range(200):
        obs, _ = env.reset(seed=episode)
        done = False
        while not done:
            s, h = int(obs["state"]), int(obs["step"])
            obs, _, terminated, truncated, info = env.step(int(policies[h, s].argmax()))
            assert info["true_cost"] <= env.cost_threshold
            done = terminated or truncated
        successes += info["is_success"]
    assert successes / 200 == pytest.approx(p_goal, abs=4 * np.sqrt(0.25 / 200) + 0.01)


@pytest.mark.parametrize(
    ("reward_model", "goal_mode", "p_goal", "p_hole", "median"),
    [
        ("tabular", "terminal", 0.74, 0.04, (1000, 1000)),  # the goal entry is delayed to the end of the horizon
        ("tabular", "absorbing", 1.00, 0.00, (24, 26)),
        ("linear", "terminal", 0.00, 0.01, None),  # the goal is avoided
        ("linear", "absorbing", 1.00, 0.00, (24, 26)),
    ],
)
def test_goal_mode_table_of_the_spec(reward_model, goal_mode, p_goal, p_hole, median):
    env = FrozenLakeSafeEnv(reward_model=reward_model, goal_mode=goal_mode)
    policies, (reached, fell, median_time) = _solve(env, randomised=True)
    assert reached == pytest.approx(p_goal, abs=0.005) and fell == pytest.approx(p_hole, abs=0.005)
    if median is None:
        assert median_time is None
    else:
        assert median_time is not None and median[0] <= median_time <= median[1]
    expected_costs = np.einsum("hsa,sa->hs", policies, env.cost_table())
    assert expected_costs[:, [s for s in range(100) if not env.is_terminal(s)]].max() <= env.cost_threshold + 1e-12
