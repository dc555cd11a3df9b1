"""LinearMDPSynthetic-v0: a linear MDP with star-convex action sets, seeding, projection of actions."""

from __future__ import annotations

import numpy as np
import pytest

from sb3_safe_frozen_lake import LinearMDPSyntheticEnv
from sb3_safe_frozen_lake.synthetic_model import project_onto_segments


@pytest.fixture(scope="module")
def env() -> LinearMDPSyntheticEnv:
    return LinearMDPSyntheticEnv()


def _segment_point(env: LinearMDPSyntheticEnv, s: int, i: int, alpha: float) -> np.ndarray:
    phi0, endpoints = env.segments(s)
    return phi0 + alpha * (endpoints[i] - phi0)


def test_defaults_and_shapes(env):
    assert (env.feature_dim, env.horizon, env.n_states, env.n_segments) == (5, 3, 20, 100)
    assert env.cost_threshold == 0.5 and env.sigma == env.cost_noise_sigma == 0.01 and not env.time_homogeneous
    assert env.mu_star.shape == (3, 5, 20) and env.theta_star.shape == env.gamma_star.shape == (3, 5)
    phi0, endpoints = env.segment_table()
    assert phi0.shape == (20, 5) and endpoints.shape == (20, 100, 5)
    assert env.segments(4)[0].shape == (5,) and env.segments(4)[1].shape == (100, 5)
    np.testing.assert_array_equal(env.safe_action(4), phi0[4])
    assert env.action_space.shape == (5,) and env.action_space.dtype == np.float64
    assert env.min_safety_gap is None and not any(env.is_terminal(s) for s in range(20))


def test_features_lie_in_the_simplex_and_mu_rows_are_distributions(env):
    phi0, endpoints = env.segment_table()
    for points in (phi0, endpoints.reshape(-1, 5)):
        assert points.min() >= 0 and np.abs(points.sum(axis=1) - 1).max() < 1e-12
    assert env.mu_star.min() >= 0 and np.abs(env.mu_star.sum(axis=2) - 1).max() < 1e-12


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_transitions_and_costs_are_linear_on_every_segment(seed):
    env = LinearMDPSyntheticEnv(seed=seed)
    rng = np.random.default_rng(seed)
    for s in range(env.n_states):
        for h in range(env.horizon):
            for i in rng.integers(env.n_segments, size=5):
                x = _segment_point(env, s, int(i), float(rng.random()))
                probabilities = env.transition_probabilities(s, x, h)
                assert probabilities.min() >= -1e-12 and abs(probabilities.sum() - 1) < 1e-10
                # P_h(s'|s,x) = sum_j x_j mu_h^{(j)}(s'): the mixture of the rows of mu_h* by x.
                mixture = sum(x[j] * env.mu_star[h, j] for j in range(env.feature_dim))
                assert np.abs(probabilities - mixture).max() < 1e-10
                assert env.true_cost(s, x, h) == pytest.approx(float(np.dot(x, env.gamma_star[h])), abs=1e-12)
                assert env.true_reward(s, x, h) == pytest.approx(float(np.dot(x, env.theta_star[h])), abs=1e-12)


@pytest.mark.parametrize("seed", range(10))
def test_safe_action_is_strictly_safe(seed):
    env = LinearMDPSyntheticEnv(seed=seed)
    costs = np.array([[env.safe_cost(s, h) for h in range(env.horizon)] for s in range(env.n_states)])
    assert costs.max() < env.cost_threshold
    np.testing.assert_allclose(costs, env.segment_table()[0] @ env.gamma_star.T, atol=1e-12)


def test_phi0_fallbacks_keep_the_safe_action_safe():
    # Seed 15 with tau = 0.05 needs both fallbacks of the construction: a gamma* redraw and a vertex phi_0(s) = e_j.
    env = LinearMDPSyntheticEnv(tau=0.05, seed=15)
    assert env.instance.gamma_redraws >= 1 and env.instance.vertex_fallbacks >= 1
    costs = np.array([[env.safe_cost(s, h) for h in range(3)] for s in range(20)])
    assert costs.max() < 0.05
    phi0 = env.segment_table()[0]
    vertices = [s for s in range(20) if np.isclose(phi0[s].max(), 1.0)]
    assert len(vertices) == env.instance.vertex_fallbacks
    j = int(np.argmin(env.gamma_star.max(axis=0)))
    assert all(phi0[s, j] == 1.0 for s in vertices)
    # With the default tau, seed 6 draws a gamma* whose safe set no Dirichlet sample or vertex reaches: redrawn.
    assert LinearMDPSyntheticEnv(seed=6).instance.gamma_redraws == 1


def test_instance_is_drawn_from_the_constructor_seed_only():
    a, b, c = LinearMDPSyntheticEnv(seed=3), LinearMDPSyntheticEnv(seed=3), LinearMDPSyntheticEnv(seed=4)
    for name in ("theta_star", "gamma_star", "mu_star"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert not np.allclose(getattr(a, name), getattr(c, name))
    np.testing.assert_array_equal(a.segment_table()[1], b.segment_table()[1])
    before = a.gamma_star.copy(), a.segment_table()[0].copy()
    a.reset(seed=123)
    np.testing.assert_array_equal(a.gamma_star, before[0])
    np.testing.assert_array_equal(a.segment_table()[0], before[1])


def _trajectory(env: LinearMDPSyntheticEnv, seed: int, episodes: int = 20) -> list[tuple]:
    out = []
    choices = np.random.default_rng(99)
    obs, _ = env.reset(seed=seed)
    for _ in range(episodes):
        done = False
        while not done:
            s = int(obs["state"])
            x = _segment_point(env, s, int(choices.integers(env.n_segments)), float(choices.random()))
            obs, reward, terminated, truncated, info = env.step(x)
            out.append((s, int(obs["state"]), reward, info["cost"]))
            done = terminated or truncated
        obs, _ = env.reset()
    return out


def test_same_episode_seed_same_trajectory():
    env = LinearMDPSyntheticEnv(seed=5)
    assert _trajectory(env, 11) == _trajectory(env, 11)
    assert _trajectory(env, 11) != _trajectory(env, 12)
    assert _trajectory(LinearMDPSyntheticEnv(seed=5), 11) == _trajectory(env, 11)


def test_episode_structure_and_info(env):
    obs, info = env.reset(seed=0)
    assert info == {} and int(obs["step"]) == 0
    for h in range(3):
        s = int(obs["state"])
        x = _segment_point(env, s, 17, 0.6)
        obs, reward, terminated, truncated, info = env.step(x)
        assert set(info) == {"cost", "true_cost", "is_success", "failed", "action_projection"}
        assert info["action_projection"] == 0.0 and not info["is_success"] and not info["failed"]
        assert info["true_cost"] == pytest.approx(x @ env.gamma_star[h], abs=1e-15)
        assert reward == pytest.approx(x @ env.theta_star[h], abs=1e-15)
        assert abs(info["cost"] - info["true_cost"]) < 6 * env.sigma
        assert not terminated and truncated == (h == 2) and int(obs["step"]) == h + 1
    with pytest.raises(RuntimeError, match="reset"):
        env.step(x)


def test_cost_noise_has_the_configured_scale():
    env = LinearMDPSyntheticEnv(sigma=0.3, horizon=1)
    noise = []
    for episode in range(2000):
        obs, _ = env.reset(seed=episode)
        *_, info = env.step(env.safe_action(int(obs["state"])))
        noise.append(info["cost"] - info["true_cost"])
    assert abs(np.mean(noise)) < 4 * 0.3 / np.sqrt(2000) and np.std(noise) == pytest.approx(0.3, rel=0.06)


def test_sampled_transitions_follow_phi_mu():
    env = LinearMDPSyntheticEnv(horizon=1, n_states=4, seed=1)
    env.reset(seed=0)
    counts = np.zeros((4, 4))
    n = 6000
    x = {s: _segment_point(env, s, 0, 0.5) for s in range(4)}
    for _ in range(n):
        obs, _ = env.reset()
        s = int(obs["state"])
        obs, *_ = env.step(x[s])
        counts[s, int(obs["state"])] += 1
    for s in range(4):
        frequencies = counts[s] / counts[s].sum()
        tolerance = 4 * np.sqrt(0.25 / counts[s].sum())
        np.testing.assert_allclose(frequencies, env.transition_probabilities(s, x[s], 0), atol=tolerance)
    assert np.all(counts.sum(axis=1) > n / 4 * 0.8)  # the initial state is uniform


def test_off_set_actions_are_projected_by_default(env):
    obs, _ = env.reset(seed=0)
    s = int(obs["state"])
    on_set = _segment_point(env, s, 3, 0.25)
    off_set = on_set + np.array([1e-3, -1e-3, 2e-3, 0.0, 0.0])
    nearest, distance = env.resolve_action(s, off_set)
    assert distance == pytest.approx(np.linalg.norm(nearest - off_set)) and 0 < distance <= np.linalg.norm(
        off_set - on_set
    )
    # Brute force over a fine grid of every segment: nothing is closer than the projection.
    phi0, endpoints = env.segments(s)
    alphas = np.linspace(0, 1, 1001)[:, None, None]
    grid = phi0 + alphas * (endpoints - phi0)[None]
    assert np.linalg.norm(grid - off_set, axis=2).min() >= distance - 1e-12
    *_, info = env.step(off_set)
    assert info["action_projection"] == pytest.approx(distance)
    assert info["true_cost"] == pytest.approx(nearest @ env.gamma_star[0], abs=1e-15)
    # Points within 1e-9 of a segment count as on the set and are played as given.
    obs, _ = env.reset(seed=0)
    nudged = on_set + 3e-10
    played, distance = env.resolve_action(s, nudged)
    assert distance == 0.0 and np.array_equal(played, nudged)


def test_strict_actions_raise_for_off_set_points():
    env = LinearMDPSyntheticEnv(strict_actions=True)
    obs, _ = env.reset(seed=0)
    s = int(obs["state"])
    with pytest.raises(ValueError, match=r"not in D\(s\).*strict_actions=False"):
        env.step(np.full(5, 0.2) + np.array([0.1, -0.1, 0.05, 0, -0.05]))
    *_, info = env.step(_segment_point(env, s, 42, 1.0))  # an endpoint is on the set
    assert info["action_projection"] == 0.0
    env.reset(seed=0)
    for bad in (np.ones(4) / 4, np.array([np.nan, 0, 0, 0, 1.0]), "phi"):
        with pytest.raises(ValueError, match=r"shape \(5,\)"):
            env.step(bad)


def test_projection_handles_degenerate_segments():
    phi0 = np.array([0.5, 0.5])
    endpoints = np.array([[0.5, 0.5], [1.0, 0.0]])  # the first segment is a single point
    point, distance = project_onto_segments(np.array([0.9, 0.3]), phi0, endpoints)
    np.testing.assert_allclose(point, [0.8, 0.2])
    assert distance == pytest.approx(np.sqrt(0.02))
    point, distance = project_onto_segments(np.array([0.5, 0.6]), phi0, endpoints)
    np.testing.assert_allclose(point, phi0)
    assert distance == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"d": 0}, r"d must be an integer >= 1"),
        ({"n_states": 2.0}, r"n_states must be an integer >= 1"),
        ({"n_segments": 0}, r"n_segments must be an integer >= 1"),
        ({"horizon": 0}, r"horizon must be an integer >= 1"),
        ({"tau": -0.5}, r"tau must be > 0"),
        ({"sigma": -1.0}, r"sigma must be >= 0"),
        ({"seed": -3}, r"seed must be an integer >= 0"),
        ({"seed": None}, r"seed must be an integer >= 0"),
        ({"strict_actions": 1}, r"strict_actions must be True or False"),
        ({"render_mode": "human"}, r"render_mode='human'.*'ansi'"),
    ],
)
def test_bad_kwargs_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LinearMDPSyntheticEnv(**kwargs)
