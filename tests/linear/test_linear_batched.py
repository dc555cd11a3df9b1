"""The lockstep engine of Figure 1 (sb3_safe/linear/batched.py) against the env and the single-instance agents."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sb3_safe
from sb3_safe.linear import LSVIUCB, SLUCBQVI
from sb3_safe.linear.batched import BatchedSyntheticRun, SyntheticBatch

pytest.importorskip("sb3_safe_frozen_lake")

SMALL = {"n_states": 5, "n_segments": 20}
C_BETA = 0.01


def _envs(seeds, **sizes):
    return [sb3_safe.make_env("LinearMDPSynthetic-v0", seed=seed, **sizes) for seed in seeds]


def _norm_bound(env) -> float:
    """S >= max_h ||gamma_h*|| (Assumption 1), as the Figure-1 script uses by default."""
    return max(math.sqrt(env.unwrapped.feature_dim), float(np.linalg.norm(env.unwrapped.gamma_star, axis=1).max()))


def _single_agent(method: str, env, bound: float, c_beta: float):
    if method == "slucb":
        return SLUCBQVI(env, c_beta=c_beta, safety_norm_bound=bound, seed=0)
    if method == "known":
        return LSVIUCB(env, safety="known", c_beta=c_beta, seed=0)
    return LSVIUCB(env, cost_penalty=0.8, c_beta=c_beta, seed=0)


def _on_segment(point: np.ndarray, phi0: np.ndarray, ends: np.ndarray) -> bool:
    directions = ends - phi0
    alphas = directions @ (point - phi0) / (directions**2).sum(-1)
    residual = np.linalg.norm(point - phi0 - alphas[:, None] * directions, axis=1)
    return bool(((residual < 1e-9) & (alphas > -1e-9) & (alphas < 1 + 1e-9)).any())


# ------------------------------------------------------------------------------------------------- simulator
def test_simulator_distributions_equal_the_env():
    envs = _envs([0, 1, 2], **SMALL)
    sim = SyntheticBatch(envs)
    rng = np.random.default_rng(0)
    for env in envs:  # rewards, true costs and the probabilities of the env's own steps, at the states it visits
        env.reset(seed=1)
    observed_noise = []
    for _episode in range(20):
        observations = [env.reset()[0] for env in envs]
        for h in range(sim.horizon):
            states = [int(obs["state"]) for obs in observations]
            phi0 = sim.phi0[np.arange(3), states]
            ends = sim.ends[np.arange(3), states, rng.integers(sim.n_segments, size=3)]
            points = phi0 + rng.random(3)[:, None] * (ends - phi0)
            expected = np.stack(
                [
                    env.unwrapped.transition_probabilities(s, x, h)
                    for env, s, x in zip(envs, states, points, strict=True)
                ]
            )
            np.testing.assert_allclose(sim.transition_probabilities(points, h), expected, rtol=0, atol=1e-14)
            rewards, true_costs, costs, _ = sim.step(points, h, rng)
            observations = []
            for b, env in enumerate(envs):
                obs, reward, _, _, info = env.step(points[b])
                assert info["action_projection"] == 0.0  # the env plays exactly our point
                assert reward == pytest.approx(rewards[b], abs=1e-14)
                assert info["true_cost"] == pytest.approx(true_costs[b], abs=1e-14)
                observed_noise.append(info["cost"] - info["true_cost"])
                observations.append(obs)
            assert np.all(np.abs(costs - true_costs) < 10 * sim.sigma)
    assert np.std(observed_noise) == pytest.approx(sim.sigma[0], rel=0.3)

    # sampled next states, initial states and cost noise follow the exact distributions (many draws at once)
    env = envs[1]
    many = SyntheticBatch([env] * 4000)
    s, h = 3, 1
    point = many.phi0[0, s] + 0.6 * (many.ends[0, s, 7] - many.phi0[0, s])
    points = np.broadcast_to(point, (4000, many.feature_dim))
    probabilities = env.unwrapped.transition_probabilities(s, point, h)
    draws = np.concatenate([many.step(points, h, rng)[3] for _ in range(10)])
    frequencies = np.bincount(draws, minlength=many.n_states) / len(draws)
    assert np.all(
        np.abs(frequencies - probabilities) < 5 * np.sqrt(probabilities * (1 - probabilities) / len(draws)) + 1e-12
    )
    initial = np.bincount(many.initial_states(rng), minlength=many.n_states) / 4000
    assert np.all(np.abs(initial - 1 / many.n_states) < 5 * np.sqrt(0.2 * 0.8 / 4000))
    _, true_costs, costs, _ = many.step(points, h, rng)
    np.testing.assert_allclose(true_costs, point @ env.unwrapped.gamma_star[h], rtol=0, atol=1e-14)
    noise = costs - true_costs
    assert abs(noise.mean()) < 5 * many.sigma[0] / np.sqrt(4000)
    assert noise.std() == pytest.approx(many.sigma[0], rel=0.05)


# ----------------------------------------------------------------------------------------------- equivalence
def _compare_with_single_agents(
    method: str, envs, episodes: int, checkpoints: set[int], c_beta: float = C_BETA
) -> BatchedSyntheticRun:
    """Play ``episodes`` lockstep episodes and feed the same samples to single agents; compare the plans."""
    bounds = np.array([_norm_bound(env) for env in envs])
    run = BatchedSyntheticRun(
        envs, method, c_beta=c_beta, penalty=0.8 if method == "penalized" else None, safety_norm_bounds=bounds, seed=3
    )
    singles = [_single_agent(method, env, float(bound), c_beta) for env, bound in zip(envs, bounds, strict=True)]
    run.start(episodes)
    for model in singles:
        model._on_learn_start(episodes * model.spec.horizon)
        assert model.beta_q == run.beta_q
    for k in range(episodes + 1):
        planned = None
        if k in checkpoints:
            planned = run.plan_points()
            for b, model in enumerate(singles):
                model._plan()
                np.testing.assert_allclose(planned[b], model.policy.plan.numpy(), rtol=0, atol=1e-9)
                np.testing.assert_allclose(run.M[b], model.stats.M, rtol=0, atol=1e-10)
                if method == "slucb":
                    assert run.beta_safe_values[b] == model.beta_safe_values[0]
            assert run.forms_drift() < 1e-9  # incremental quadratic forms = direct recomputation
        if k == episodes:
            return run
        batch = run.play_episode()
        np.testing.assert_array_equal(batch.next_states[:, :-1], batch.states[:, 1:])
        assert (batch.next_states[:, -1] == -1).all()  # the episode ends: no bootstrap from the last step
        if planned is not None:  # the engine played its plan (step 0 computed at the initial state only)
            for h in range(run.sim.horizon):
                played = planned[np.arange(len(envs)), h, batch.states[:, h]]
                np.testing.assert_allclose(batch.points[:, h], played, rtol=0, atol=1e-12)
        for b, model in enumerate(singles):
            for h in range(run.sim.horizon):
                model.stats.add(
                    h, batch.points[b, h], batch.rewards[b, h], batch.costs[b, h], int(batch.next_states[b, h])
                )
    return run


@pytest.mark.parametrize("method", ["slucb", "known", "penalized"])
def test_plans_equal_the_single_agents_through_a_refactorisation(method):
    envs = _envs([4])  # the default instance size
    run = _compare_with_single_agents(method, envs, 1003, {0, 1, 2, 9, 999, 1000, 1001, 1003})
    assert run.episodes == 1003 and run._since_refactor == 3  # M was re-inverted after episode 1000
    if method == "slucb":  # the comparison covered shrunk segments and moves off phi_0
        _, ends = envs[0].unwrapped.segment_table()
        plan = run.plan_points()[0]
        assert any((alpha < 1).any() for alpha in run._plan(run._all_states()).alpha)
        assert np.abs(plan - envs[0].unwrapped.segment_table()[0][None]).max() > 1e-3
        assert all(
            _on_segment(plan[h, s], envs[0].unwrapped.segment_table()[0][s], ends[s])
            for h in range(3)
            for s in range(20)
        )


@pytest.mark.parametrize("c_beta", [C_BETA, 1.0])  # 1.0: the theory's bonus, values clipped at H
@pytest.mark.parametrize("method", ["slucb", "known", "penalized"])
def test_plans_equal_the_single_agents_on_a_batch_of_three(method, c_beta):
    run = _compare_with_single_agents(method, _envs([0, 1, 2], **SMALL), 120, {0, 3, 50, 120}, c_beta)
    assert run.batch_size == 3


@pytest.mark.parametrize("horizon", [1, 4])
@pytest.mark.parametrize("method", ["slucb", "known"])
def test_plans_equal_the_single_agents_at_other_horizons(method, horizon):
    _compare_with_single_agents(method, _envs([5, 6], **SMALL, horizon=horizon), 60, {0, 30, 60}, c_beta=0.1)


def test_ties_go_to_the_safe_candidate():
    run = BatchedSyntheticRun(_envs([0], **SMALL), "slucb")
    q_ends = np.array([[[0.5, 2.0, 2.0], [0.5, 1.0, 0.0]]])  # (B, S, N): Q - <phi_0, w> of the segment ends
    choice, values = run._greedy(q_ends, np.array([[2.0, 0.5]]), np.array([[0.5, 0.0]]), step=1)
    np.testing.assert_array_equal(choice, [[0, 2]])  # a tie keeps phi_0; else the first best segment (1-based)
    np.testing.assert_array_equal(values, [[2.5, 1.0]])
    best, q_best = run._take_best(np.array([[[1.0, 3.0, 3.0], [2.0, 2.0, 1.0]]]))  # LSVI-UCB: phi_0 is index 0
    np.testing.assert_array_equal(best, [[1, 0]])
    np.testing.assert_array_equal(q_best, [[3.0, 2.0]])


# ------------------------------------------------------------------------------------------------------ safety
def test_safe_methods_never_violate_and_the_penalised_baseline_does():
    envs = _envs([0, 1, 2, 3], **SMALL)
    bounds = np.array([_norm_bound(env) for env in envs])
    runs = {
        "slucb": BatchedSyntheticRun(envs, "slucb", c_beta=C_BETA, safety_norm_bounds=bounds, seed=0),
        "known": BatchedSyntheticRun(envs, "known", c_beta=C_BETA, seed=0),
        "penalized": BatchedSyntheticRun(envs, "penalized", c_beta=C_BETA, penalty=0.8, seed=0),
    }
    results = {name: run.run(400) for name, run in runs.items()}
    for result in results.values():
        assert result.returns.shape == result.violations.shape == (4, 400)
        assert set(result.phase_seconds) == {"regression", "safe_sets", "backward", "simulation"}
    assert results["slucb"].violations.sum() == 0 and results["known"].violations.sum() == 0
    assert results["penalized"].violations.sum() > 0
    assert results["slucb"].beta_safe.min() > results["slucb"].beta_q  # beta = beta_safe in the sets (c_beta small)


def test_arguments_are_checked():
    envs = _envs([0], **SMALL)
    with pytest.raises(ValueError, match="method must be one of"):
        BatchedSyntheticRun(envs, "rslucb")
    with pytest.raises(ValueError, match="penalty"):
        BatchedSyntheticRun(envs, "penalized")
    with pytest.raises(ValueError, match="penalty"):
        BatchedSyntheticRun(envs, "known", penalty=0.8)
    with pytest.raises(ValueError, match="share"):
        SyntheticBatch([envs[0], sb3_safe.make_env("LinearMDPSynthetic-v0", seed=0)])


def test_the_figure1_example_keeps_its_adapter_engine(tmp_path):
    """The example's default engine is this one (tests/linear/test_linear_examples.py); the adapter path still runs."""
    script = Path(__file__).resolve().parents[2] / "examples" / "figure1_synthetic.py"
    arguments = ["--engine", "adapter", "--seeds", "1", "--episodes", "12", "--window", "4", "--workers", "1"]
    result = subprocess.run(
        [sys.executable, str(script), *arguments, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "engine adapter" in result.stdout and "wall" in result.stdout
    with open(tmp_path / "figure1.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 * 12 and {row["episode"] for row in rows} == {str(k) for k in range(1, 13)}
