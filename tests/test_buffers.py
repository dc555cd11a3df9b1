"""Cost-aware buffers: costs line up with SB3's rewards, n-step and GAE treat costs like rewards."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_safe.common.buffers import (
    CostDictReplayBuffer,
    CostNStepReplayBuffer,
    CostReplayBuffer,
    CostRolloutBuffer,
    generalized_advantage_estimate,
)

OBS = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
ACT = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)


def _cost_of(reward: np.ndarray) -> np.ndarray:
    return 2.0 * reward + 1.0


def _fill(buffer, steps: int, n_envs: int, dones_at: dict[int, list[int]] | None = None, truncated_at=None):
    """Step t of env e has reward 10*t + e; its cost is _cost_of(reward); obs = (t, e)."""
    dones_at, truncated_at = dones_at or {}, truncated_at or {}
    for t in range(steps):
        rewards = np.array([10.0 * t + e for e in range(n_envs)], dtype=np.float32)
        obs = np.array([[t, e] for e in range(n_envs)], dtype=np.float32)
        dones = np.array([e in dones_at.get(t, []) or e in truncated_at.get(t, []) for e in range(n_envs)])
        infos = [
            {"cost": float(_cost_of(r)), "TimeLimit.truncated": e in truncated_at.get(t, [])}
            for e, r in enumerate(rewards)
        ]
        if isinstance(buffer, CostDictReplayBuffer):
            obs = {"x": obs}
        buffer.add(obs, obs, np.zeros((n_envs, 1), np.float32), rewards, dones, infos)


@pytest.mark.parametrize("optimize_memory_usage", [False, True])
def test_replay_costs_align_with_rewards(optimize_memory_usage):
    buffer = CostReplayBuffer(
        50,
        OBS,
        ACT,
        n_envs=3,
        optimize_memory_usage=optimize_memory_usage,
        handle_timeout_termination=not optimize_memory_usage,
    )
    _fill(buffer, 12, 3)
    np.random.seed(0)
    samples = buffer.sample(256)
    assert samples.costs.shape == (256, 1)
    th.testing.assert_close(samples.costs, _cost_of(samples.rewards))
    # The env index of the sample is in the observation: rewards encode it too, so both must agree.
    th.testing.assert_close(samples.rewards[:, 0] % 10, samples.observations[:, 1])
    assert len(th.unique(samples.observations[:, 1])) == 3


def test_dict_replay_costs_align_with_rewards():
    buffer = CostDictReplayBuffer(40, spaces.Dict({"x": OBS}), ACT, n_envs=2)
    _fill(buffer, 15, 2)
    samples = buffer.sample(128)
    th.testing.assert_close(samples.costs, _cost_of(samples.rewards))
    th.testing.assert_close(samples.rewards[:, 0] % 10, samples.observations["x"][:, 1])


def test_replay_buffer_with_several_constraints():
    buffer = CostReplayBuffer(10, OBS, ACT, n_envs=1, n_costs=2)
    for t in range(5):
        info = {"cost": 3.0 * t, "costs": np.array([t, 2.0 * t])}
        buffer.add(
            np.zeros((1, 2)), np.zeros((1, 2)), np.zeros((1, 1)), np.array([float(t)]), np.array([False]), [info]
        )
    samples = buffer.sample(64)
    assert samples.costs.shape == (64, 2)
    th.testing.assert_close(samples.costs[:, 1], 2.0 * samples.rewards[:, 0])


def test_replay_buffer_missing_cost_is_a_clear_error():
    buffer = CostReplayBuffer(10, OBS, ACT)
    with pytest.raises(ValueError, match=r"did not report a cost"):
        buffer.add(np.zeros((1, 2)), np.zeros((1, 2)), np.zeros((1, 1)), np.array([1.0]), np.array([False]), [{}])


def test_n_step_costs_match_a_hand_computation():
    gamma, n = 0.5, 3
    buffer = CostNStepReplayBuffer(20, OBS, ACT, n_envs=2, n_steps=n, gamma=gamma)
    # env 0 terminates at t=3; env 1 is truncated at t=4.
    _fill(buffer, 8, 2, dones_at={3: [0]}, truncated_at={4: [1]})

    def cost(t, e):
        return _cost_of(10.0 * t + e)

    expected = {
        (0, 0): cost(0, 0) + gamma * cost(1, 0) + gamma**2 * cost(2, 0),
        (2, 0): cost(2, 0) + gamma * cost(3, 0),  # stops at the termination
        (3, 0): cost(3, 0),
        (3, 1): cost(3, 1) + gamma * cost(4, 1),  # stops at the truncation
        (5, 1): cost(5, 1) + gamma * cost(6, 1) + gamma**2 * cost(7, 1),
        (6, 1): cost(6, 1) + gamma * cost(7, 1),  # t=7 is the newest transition: nothing after it
    }
    for (t, e), value in expected.items():
        got = buffer._sample_costs(np.array([t]), np.array([e]))
        assert got[0, 0] == pytest.approx(value), (t, e)


def test_n_step_costs_get_exactly_the_reward_treatment():
    """With cost == reward at every step, SB3's n-step reward and our n-step cost must be identical."""
    buffer = CostNStepReplayBuffer(16, OBS, ACT, n_envs=2, n_steps=4, gamma=0.9)
    rng = np.random.default_rng(0)
    for t in range(40):  # wraps around the buffer several times
        rewards = rng.normal(size=2).astype(np.float32)
        dones = rng.random(2) < 0.15
        truncated = dones & (rng.random(2) < 0.5)
        infos = [{"cost": float(rewards[e]), "TimeLimit.truncated": bool(truncated[e])} for e in range(2)]
        buffer.add(np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 1)), rewards, dones, infos)
        if t > 4:
            samples = buffer.sample(64)
            th.testing.assert_close(samples.costs, samples.rewards)
            assert samples.discounts is not None


def test_gae_matches_sb3_reward_advantages():
    """Cost GAE, fed the rewards and values, reproduces SB3's own reward advantages and returns."""
    n_envs, steps = 2, 9
    buffer = CostRolloutBuffer(steps, OBS, ACT, gamma=0.95, gae_lambda=0.8, n_envs=n_envs)
    rng = np.random.default_rng(1)
    episode_starts = np.ones(n_envs)
    for _ in range(steps):
        rewards = rng.normal(size=n_envs).astype(np.float32)
        values = th.tensor(rng.normal(size=(n_envs, 1)), dtype=th.float32)
        buffer.stage_costs(rewards[:, None], values.numpy())
        buffer.add(np.zeros((n_envs, 2)), np.zeros((n_envs, 1)), rewards, episode_starts, values, th.zeros(n_envs))
        episode_starts = (rng.random(n_envs) < 0.3).astype(np.float32)
    last_values = th.tensor(rng.normal(size=(n_envs, 1)), dtype=th.float32)
    last_dones = np.array([True, False])
    buffer.compute_returns_and_advantage(last_values, last_dones)
    buffer.compute_cost_returns_and_advantage(last_values.numpy(), last_dones)
    np.testing.assert_allclose(buffer.cost_advantages[..., 0], buffer.advantages, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(buffer.cost_returns[..., 0], buffer.returns, rtol=1e-5, atol=1e-6)

    batches = list(buffer.get(batch_size=6))
    assert sum(len(b.cost_advantages) for b in batches) == steps * n_envs
    for batch in batches:
        assert batch.cost_advantages.shape[1] == 1
        th.testing.assert_close(batch.cost_advantages[:, 0], batch.advantages)
        th.testing.assert_close(batch.old_cost_values[:, 0], batch.old_values)


def test_gae_hand_computation():
    gamma, lam = 0.9, 0.5
    costs = np.array([[1.0], [0.0], [2.0]], dtype=np.float32)
    values = np.array([[0.5], [0.2], [1.0]], dtype=np.float32)
    starts = np.array([[1.0], [0.0], [1.0]], dtype=np.float32)  # a new episode starts at t=2
    advantages = generalized_advantage_estimate(costs, values, starts, np.array([3.0]), np.array([False]), gamma, lam)
    delta2 = 2.0 + gamma * 3.0 - 1.0
    delta1 = 0.0 - 0.2  # episode ends after t=1: no bootstrap
    delta0 = 1.0 + gamma * 0.2 - 0.5
    expected = [delta0 + gamma * lam * delta1, delta1, delta2]
    np.testing.assert_allclose(advantages[:, 0], expected, rtol=1e-6)


def test_rollout_add_without_staged_costs_is_an_error():
    buffer = CostRolloutBuffer(4, OBS, ACT)
    with pytest.raises(RuntimeError, match="stage_costs"):
        buffer.add(np.zeros((1, 2)), np.zeros((1, 1)), np.zeros(1), np.ones(1), th.zeros((1, 1)), th.zeros(1))
