"""Episodes of FrozenLake10x10Safe-v0: goal modes, holes, truncation, costs, rewards, seeding, rendering, errors."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from _fl_helpers import GOAL_CELL, HOLE_CELLS, state
from gymnasium.error import DependencyNotInstalled

from sb3_safe_frozen_lake import FrozenLakeSafeEnv
from sb3_safe_frozen_lake.frozen_lake_model import DOWN, LEFT, RIGHT, UP

GOAL = state(*GOAL_CELL)
HOLES = {state(*cell) for cell in HOLE_CELLS}
INFO_KEYS = {"cost", "true_cost", "is_success", "failed", "task_reward", "cisr_reward"}
DETERMINISTIC = (1.0, 0.0, 0.0)
PATH_TO_GOAL = [RIGHT] * 3 + [DOWN] * 9  # column 3 has no holes


def _play(env: FrozenLakeSafeEnv, actions: list[int], seed: int = 0) -> list[tuple]:
    env.reset(seed=seed)
    return [env.step(a) for a in actions]


def test_absorbing_goal_records_success_and_continues_to_the_horizon():
    env = FrozenLakeSafeEnv(slip=DETERMINISTIC, horizon=20)
    steps = _play(env, [*PATH_TO_GOAL, LEFT, UP, RIGHT, DOWN, DOWN, LEFT, UP, UP])
    for h, (obs, reward, terminated, truncated, info) in enumerate(steps, start=1):
        assert set(info) == INFO_KEYS
        assert int(obs["step"]) == h and not terminated and truncated == (h == 20)
        assert not info["failed"] and info["cost"] == info["true_cost"] == 0.0
        assert info["is_success"] == (h >= 12)
        assert info["task_reward"] == (0.01 if h < 12 else 6.0 if h == 12 else 0.0)
        assert isinstance(reward, float)
    assert [int(obs["state"]) for obs, *_ in steps[11:]] == [GOAL] * 9  # every action at G stays at G
    assert steps[12][1] == pytest.approx(env.reward_table()[GOAL, LEFT])
    assert sum(info["task_reward"] for *_, info in steps) == pytest.approx(6 + 11 * 0.01)
    assert sum(info["cisr_reward"] for *_, info in steps) == pytest.approx(6 - 11 * 0.01)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(LEFT)


def test_terminal_goal_ends_the_episode():
    env = FrozenLakeSafeEnv(slip=DETERMINISTIC, goal_mode="terminal")
    steps = _play(env, PATH_TO_GOAL)
    obs, _, terminated, truncated, info = steps[-1]
    assert int(obs["state"]) == GOAL and terminated and not truncated and info["is_success"] and not info["failed"]
    assert not any(terminated for _, _, terminated, _, _ in steps[:-1])
    assert env.is_terminal(GOAL)


def test_a_hole_terminates_with_failure():
    env = FrozenLakeSafeEnv(slip=DETERMINISTIC)
    steps = _play(env, [DOWN, DOWN])
    obs, _, terminated, truncated, info = steps[-1]
    assert int(obs["state"]) == state(2, 0) and terminated and not truncated
    assert info["failed"] and not info["is_success"] and info["cost"] == 1.0 and info["true_cost"] == 1.0
    assert info["task_reward"] == 0.01
    assert [info["cisr_reward"] for *_, info in steps] == [-0.01, 0.0]  # 6 * 0 - 0.01 * (one step before failing)
    assert steps[0][4]["cost"] == 0.0 and not steps[0][4]["failed"]


def test_truncation_after_horizon_steps():
    env = FrozenLakeSafeEnv(horizon=5)
    obs, info = env.reset(seed=3)
    assert info == {} and {k: int(v) for k, v in obs.items()} == {"state": 0, "step": 0}
    flags = []
    for _ in range(5):
        obs, _, terminated, truncated, _ = env.step(env.safe_action(int(obs["state"])))
        flags.append((terminated, truncated))
    assert flags == [(False, False)] * 4 + [(False, True)] and int(obs["step"]) == 5
    assert env.observation_space.contains(obs)


def test_step_before_reset_and_bad_actions_raise():
    env = FrozenLakeSafeEnv()
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset(seed=0)
    for bad in (4, -1, 1.5, True, "up"):
        with pytest.raises(ValueError, match="LEFT, DOWN, RIGHT, UP"):
            env.step(bad)
    obs, *_ = env.step(np.array([RIGHT]))  # a one-element array (as from a VecEnv) is accepted
    assert int(obs["step"]) == 1


def test_sampled_transitions_follow_the_model():
    env = FrozenLakeSafeEnv(horizon=100_000)
    env.reset(seed=1)
    s, a = state(2, 1), DOWN  # to (3,1), slipping to (2,0) (a hole) or (2,2)
    counts = np.zeros(100)
    n = 20_000
    for _ in range(n):
        env.s = s
        obs, _, terminated, _, _ = env.step(a)
        counts[int(obs["state"])] += 1
        if terminated:
            env.reset()
    expected = env.transition_probabilities(s, a, 0)
    assert set(np.flatnonzero(counts)) <= set(np.flatnonzero(expected))
    np.testing.assert_allclose(counts / n, expected, atol=4 * np.sqrt(0.25 / n))


def test_bernoulli_cost_is_the_hole_indicator_and_unbiased():
    env = FrozenLakeSafeEnv(horizon=50)
    rng = np.random.default_rng(0)
    observed, expected = [], []
    for episode in range(300):
        env.reset(seed=episode)
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(int(rng.integers(4)))
            assert info["cost"] == float(int(obs["state"]) in HOLES) == float(info["failed"])
            observed.append(info["cost"])
            expected.append(info["true_cost"])
            done = terminated or truncated
    n = len(observed)
    assert np.mean(expected) > 0.02  # the random walk does risk the holes
    assert abs(np.mean(observed) - np.mean(expected)) < 4 * 0.5 / np.sqrt(n)


def test_gaussian_cost_noise():
    env = FrozenLakeSafeEnv(cost_noise="gaussian", cost_sigma=0.2, horizon=100)
    assert env.cost_noise_sigma == 0.2
    env.reset(seed=0)
    noise = []
    for _ in range(4000):
        _, _, terminated, truncated, info = env.step(env.safe_action(int(env.s)))
        noise.append(info["cost"] - info["true_cost"])
        if terminated or truncated:
            env.reset()
    assert abs(np.mean(noise)) < 4 * 0.2 / np.sqrt(4000) and np.std(noise) == pytest.approx(0.2, rel=0.05)


def test_same_seed_same_trajectory_and_different_seed_differs():
    def trajectory(seed: int) -> list[tuple]:
        env = FrozenLakeSafeEnv(cost_noise="gaussian", horizon=200)
        env.reset(seed=seed)
        actions = np.random.default_rng(123)
        out = []
        for _ in range(200):
            obs, reward, terminated, truncated, info = env.step(int(actions.integers(4)))
            out.append((int(obs["state"]), reward, info["cost"], terminated))
            if terminated or truncated:
                break
        return out

    assert trajectory(7) == trajectory(7)
    assert trajectory(7) != trajectory(8)


def test_gymnasium_transition_dict_matches_the_model():
    env = FrozenLakeSafeEnv(goal_mode="terminal")
    for s in (0, state(3, 0), GOAL):
        for a in range(4):
            table = np.zeros(100)
            for probability, next_state, reward, terminated in env.P[s][a]:
                table[next_state] += probability
                assert reward == env.true_reward(s, a, 0)
                assert terminated == env.is_terminal(next_state)
            np.testing.assert_array_equal(table, env.transition_probabilities(s, a, 0))


def test_ansi_rendering_and_missing_pygame():
    env = FrozenLakeSafeEnv(render_mode="ansi")
    env.reset(seed=0)
    env.step(RIGHT)
    text = env.render()
    assert isinstance(text, str) and "(Right)" in text and "FFFGFFFFFF" in text
    if importlib.util.find_spec("pygame") is None:
        for mode in ("rgb_array", "human"):
            with pytest.raises(DependencyNotInstalled, match="pip install pygame"):
                FrozenLakeSafeEnv(render_mode=mode)
    with pytest.raises(ValueError, match="render_mode"):
        FrozenLakeSafeEnv(render_mode="video")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"slip": 0.9}, r"slip must be three probabilities"),
        ({"slip": (0.9, 0.1)}, r"slip must be three probabilities"),
        ({"slip": (0.9, 0.1, 0.1)}, r"sum to 1.*sum 1\.1"),
        ({"slip": (1.1, -0.05, -0.05)}, r">= 0"),
        ({"tau": 0.0}, r"tau must be > 0"),
        ({"tau": float("nan")}, r"tau must be a finite real"),
        ({"tau": 0.09}, r"no safe action.*Use tau >= 0\.1"),
        ({"horizon": 0}, r"horizon must be an integer >= 1"),
        ({"horizon": 2.5}, r"horizon must be an integer >= 1"),
        ({"mu_seed": -1}, r"mu_seed must be an integer >= 0"),
        ({"reward_model": "cubic"}, r"reward_model='cubic'.*'linear', 'tabular'"),
        ({"goal_mode": "sticky"}, r"goal_mode='sticky'.*'absorbing', 'terminal'"),
        ({"cost_noise": "poisson"}, r"cost_noise='poisson'.*'bernoulli', 'gaussian'"),
        ({"cost_sigma": -0.1}, r"cost_sigma must be >= 0"),
        ({"normalize_features": "yes"}, r"normalize_features must be True or False"),
    ],
)
def test_bad_kwargs_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FrozenLakeSafeEnv(**kwargs)


def test_protocol_methods_validate_states_and_steps():
    env = FrozenLakeSafeEnv(horizon=10)
    with pytest.raises(ValueError, match=r"state must be an int in \[0, 100\)"):
        env.features(100)
    with pytest.raises(ValueError, match=r"step h must be an int in \[0, 10\)"):
        env.safe_cost(0, 10)
    with pytest.raises(ValueError, match="step h"):
        env.true_cost(0, RIGHT, -1)
    assert env.safe_cost(np.int64(5), np.int64(9)) == 0.0
