"""Replay and rollout buffers that store the per-step cost beside the reward.

They subclass SB3's buffers and add only the cost: observations, actions, rewards, n-step returns and
advantages are still SB3's. Costs are read from the ``infos`` every buffer already receives
(``info["cost"]``, or ``info["costs"]`` with several constraints).

Transitions flagged in ``info["nonfinite"]`` (by the safe algorithms' guard with ``nonfinite="skip"``) are left
out of training: replay buffers keep their slot (the layout is one slot per step for all environments) with
finite placeholders, never sample it and end n-step sums before it; rollout buffers give the step zero advantage
(see :class:`_RolloutCostStorage`).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch as th
from stable_baselines3.common.buffers import (
    DictReplayBuffer,
    DictRolloutBuffer,
    NStepReplayBuffer,
    ReplayBuffer,
    RolloutBuffer,
)
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.common.vec_env import VecNormalize

from sb3_safe.common.costs import NONFINITE_KEY, costs_from_infos

_MAX_RESAMPLE_ROUNDS = 1000


class CostReplayBufferSamples(NamedTuple):
    """SB3's replay samples plus ``costs``: shape ``(batch, n_costs)``, n-step discounted like ``rewards``."""

    observations: PyTorchObs
    actions: th.Tensor
    next_observations: PyTorchObs
    dones: th.Tensor
    rewards: th.Tensor
    costs: th.Tensor
    discounts: th.Tensor | None = None


class CostRolloutBufferSamples(NamedTuple):
    """SB3's rollout samples plus the cost value estimates, cost advantages and cost returns (``(batch, n_costs)``)."""

    observations: PyTorchObs
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    old_cost_values: th.Tensor
    cost_advantages: th.Tensor
    cost_returns: th.Tensor


def _finite(value: Any) -> Any:
    """A copy with NaN and +-inf entries replaced by 0 (arrays, dicts of arrays)."""
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    array = np.asarray(value)
    return np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0) if array.dtype.kind in "fc" else array


def _put_rows(
    samples: CostReplayBufferSamples, rows: np.ndarray, new: CostReplayBufferSamples
) -> CostReplayBufferSamples:
    """``samples`` with the batch rows ``rows`` taken from ``new`` (a batch of ``len(rows)`` samples)."""

    def put(old: Any, replacement: Any) -> Any:
        if old is None:
            return None
        if isinstance(old, Mapping):
            return {key: put(old[key], replacement[key]) for key in old}
        old[th.as_tensor(rows, dtype=th.long, device=old.device)] = replacement
        return old

    return type(samples)(*(put(a, b) for a, b in zip(samples, new, strict=True)))


class _ReplayCostStorage:
    """Adds a ``costs`` array of shape ``(buffer_size, n_envs, n_costs)`` to an SB3 replay buffer.

    Also a ``skipped`` mask ``(buffer_size, n_envs)``: transitions flagged in ``info["nonfinite"]`` are stored
    with finite placeholders (the flagged environment's observations with non-finite entries set to 0, reward and
    cost 0), so that every slot still holds one step of every environment, and are never sampled: a sample that
    lands on one is drawn again, which keeps the samples uniform over the transitions that were not skipped.
    """

    buffer_size: int
    n_envs: int
    pos: int
    full: bool
    optimize_memory_usage: bool
    to_torch: Any

    def __init__(self, *args: Any, n_costs: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if n_costs < 1:
            raise ValueError(f"n_costs must be >= 1, got {n_costs}.")
        self.n_costs = n_costs
        self.costs = np.zeros((self.buffer_size, self.n_envs, n_costs), dtype=np.float32)
        self._clear_skipped()

    def _clear_skipped(self) -> None:
        self.skipped = np.zeros((self.buffer_size, self.n_envs), dtype=bool)
        self.n_skipped_stored = 0

    def reset(self) -> None:
        """Empty the buffer, and its record of skipped transitions."""
        super().reset()  # type: ignore[misc]
        self._clear_skipped()

    def add(
        self,
        obs: Any,
        next_obs: Any,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """Store a transition; its costs come from ``infos``, and ``info["nonfinite"]`` marks it skipped."""
        costs = costs_from_infos(infos, self.n_costs)
        skipped = np.array([NONFINITE_KEY in info for info in infos], dtype=bool)
        if not hasattr(self, "skipped"):  # a buffer saved before skipping existed
            self._clear_skipped()
        self.n_skipped_stored += int(skipped.sum()) - int(self.skipped[self.pos].sum())
        self.skipped[self.pos] = skipped
        if skipped.any():
            self._before_skipped(skipped)
            obs, next_obs = _finite(obs), _finite(next_obs)
            reward = np.where(skipped, 0.0, np.asarray(reward, dtype=np.float64)).astype(np.float32)
            costs[skipped] = 0.0
        self.costs[self.pos] = costs
        super().add(obs, next_obs, action, reward, done, infos)  # type: ignore[misc]

    def _before_skipped(self, skipped: np.ndarray) -> None:
        """Hook: the environments ``skipped`` have a skipped transition in slot ``pos`` (about to be written)."""

    def _peek_env_indices(self, n_samples: int) -> np.ndarray:
        # SB3 draws the env index of each sample inside _get_samples with the global numpy RNG, as its first
        # draw. Replaying that draw from a saved RNG state gives the same indices, so the costs line up with
        # SB3's own samples without re-implementing its sampling (tests check the alignment).
        state = np.random.get_state()
        env_indices = np.random.randint(0, self.n_envs, size=(n_samples,))
        np.random.set_state(state)
        return env_indices

    def _sample_costs(self, batch_inds: np.ndarray, env_indices: np.ndarray) -> np.ndarray:
        return self.costs[batch_inds, env_indices]

    def _gather(self, batch_inds: np.ndarray, env: VecNormalize | None) -> tuple[CostReplayBufferSamples, np.ndarray]:
        env_indices = self._peek_env_indices(len(batch_inds))
        samples = super()._get_samples(batch_inds, env)  # type: ignore[misc]
        cost_samples = CostReplayBufferSamples(
            observations=samples.observations,
            actions=samples.actions,
            next_observations=samples.next_observations,
            dones=samples.dones,
            rewards=samples.rewards,
            costs=self.to_torch(self._sample_costs(batch_inds, env_indices)),
            discounts=samples.discounts,
        )
        return cost_samples, env_indices

    def _draw_batch_inds(self, n_samples: int) -> np.ndarray:
        """Slot indices drawn as SB3's ``sample`` draws them."""
        if self.optimize_memory_usage and self.full:
            return (np.random.randint(1, self.buffer_size, size=n_samples) + self.pos) % self.buffer_size
        return np.random.randint(0, self.buffer_size if self.full else self.pos, size=n_samples)

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> CostReplayBufferSamples:
        samples, env_indices = self._gather(batch_inds, env)
        if not getattr(self, "n_skipped_stored", 0):
            return samples
        stored = (self.buffer_size if self.full else self.pos) * self.n_envs
        if self.n_skipped_stored >= stored:
            raise RuntimeError(
                "Every transition in the replay buffer was skipped for non-finite data (nonfinite='skip'): there is "
                "nothing to train on. The environment returns NaN or infinite rewards, costs or observations at "
                "every step: fix it, or wrap it so that it returns finite values."
            )
        bad = self.skipped[batch_inds, env_indices]
        for _ in range(_MAX_RESAMPLE_ROUNDS):
            rows = np.flatnonzero(bad)
            if rows.size == 0:
                return samples
            redrawn = self._draw_batch_inds(rows.size)
            replacement, redrawn_envs = self._gather(redrawn, env)
            samples = _put_rows(samples, rows, replacement)
            bad = np.zeros_like(bad)
            bad[rows] = self.skipped[redrawn, redrawn_envs]
        raise RuntimeError(
            f"Could not draw a batch of transitions that were not skipped in {_MAX_RESAMPLE_ROUNDS} rounds: "
            f"{self.n_skipped_stored} of the {stored} stored transitions were skipped for non-finite data."
        )


class CostReplayBuffer(_ReplayCostStorage, ReplayBuffer):  # type: ignore[misc]
    """SB3's :class:`ReplayBuffer` with per-step costs; samples are :class:`CostReplayBufferSamples`.

    Args:
        *args: Positional arguments of SB3's ReplayBuffer.
        n_costs: Number of constraints.
        **kwargs: Keyword arguments of SB3's ReplayBuffer.
    """


class CostDictReplayBuffer(_ReplayCostStorage, DictReplayBuffer):  # type: ignore[misc]
    """SB3's :class:`DictReplayBuffer` (dict observations) with per-step costs."""


class CostNStepReplayBuffer(_ReplayCostStorage, NStepReplayBuffer):  # type: ignore[misc]
    """SB3's :class:`NStepReplayBuffer` with per-step costs given the same n-step treatment as rewards.

    For a sample at t the cost is ``sum_{k=0}^{m-1} gamma^k c_{t+k}``, where m <= n_steps stops at the first
    termination or truncation, exactly like SB3's n-step reward; the bootstrap discount ``gamma^m`` in
    ``samples.discounts`` applies to the cost critic's target too.
    """

    n_steps: int
    gamma: float
    dones: np.ndarray
    timeouts: np.ndarray

    def _before_skipped(self, skipped: np.ndarray) -> None:
        # End the n-step sums of the previous slot's transitions there: mark them truncated (when they did not end
        # their episode), so they bootstrap from their own next observation instead of adding the skipped step.
        if self.pos == 0 and not self.full:
            return
        previous = (self.pos - 1) % self.buffer_size
        cut = skipped & (self.dones[previous] == 0)
        self.timeouts[previous, cut] = 1.0

    def _sample_costs(self, batch_inds: np.ndarray, env_indices: np.ndarray) -> np.ndarray:
        offsets = np.arange(self.n_steps)
        indices = (batch_inds[:, None] + offsets[None, :]) % self.buffer_size  # (batch, n)
        envs = env_indices[:, None]
        dones = self.dones[indices, envs].astype(bool)
        truncated = self.timeouts[indices, envs].astype(bool)
        # The newest transition may continue into the slot about to be overwritten: SB3 treats it as truncated.
        newest = (self.pos - 1) % self.buffer_size
        truncated |= (indices == newest) & ~dones
        ends = dones | truncated
        last = np.where(ends.any(axis=1), ends.argmax(axis=1), self.n_steps - 1)
        mask = offsets[None, :] <= last[:, None]
        weights = (self.gamma**offsets)[None, :] * mask  # (batch, n)
        costs = self.costs[indices, envs]  # (batch, n, n_costs)
        return np.einsum("bn,bnc->bc", weights, costs).astype(np.float32)


def generalized_advantage_estimate(
    rewards: np.ndarray,
    values: np.ndarray,
    episode_starts: np.ndarray,
    last_values: np.ndarray,
    last_dones: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> np.ndarray:
    """GAE(lambda) advantages (Schulman et al. 2016, eq. 16) over a rollout of shape ``(T, n_envs, ...)``.

    ``A_t = delta_t + gamma*lambda*(1 - d_{t+1}) A_{t+1}`` with ``delta_t = r_t + gamma*(1 - d_{t+1}) V_{t+1} - V_t``;
    ``episode_starts[t+1]`` (or ``last_dones`` after the last step) marks the episode boundary d_{t+1}.
    Trailing dimensions (e.g. one per constraint) are carried through.
    """
    advantages = np.zeros_like(values, dtype=np.float32)
    extra_dims = (1,) * (values.ndim - 2)
    running = np.zeros_like(values[0], dtype=np.float32)
    for step in reversed(range(values.shape[0])):
        if step == values.shape[0] - 1:
            not_done = 1.0 - np.asarray(last_dones, dtype=np.float32).reshape(-1, *extra_dims)
            next_values = last_values
        else:
            not_done = (1.0 - episode_starts[step + 1]).reshape(-1, *extra_dims)
            next_values = values[step + 1]
        delta = rewards[step] + gamma * next_values * not_done - values[step]
        running = delta + gamma * gae_lambda * not_done * running
        advantages[step] = running
    return advantages


_COST_ROLLOUT_ARRAYS = ("costs", "cost_values", "cost_advantages", "cost_returns")


class _RolloutCostStorage:
    """Adds per-constraint costs, cost values, cost advantages and cost returns to an SB3 rollout buffer.

    The algorithm hands each step's costs and cost values to :meth:`stage_costs` before SB3's ``add`` runs
    (see :class:`~sb3_safe.common.on_policy.SafeOnPolicyAlgorithm`), and calls
    :meth:`compute_cost_returns_and_advantage` once the rollout is complete.

    A step staged as ``skipped`` (non-finite data, ``nonfinite="skip"``) cannot leave the fixed layout: it is
    stored with its value estimates as reward and cost (``r = V(s)``, ``c = V_c(s)``) and an episode boundary
    after it, so its reward and cost advantages are 0 and its returns are the critics' own estimates, and the
    steps before it bootstrap from ``V(s)`` as at a time-limit truncation.
    """

    buffer_size: int
    n_envs: int
    pos: int
    gamma: float
    gae_lambda: float
    generator_ready: bool
    episode_starts: np.ndarray
    costs: np.ndarray
    cost_values: np.ndarray
    cost_advantages: np.ndarray
    cost_returns: np.ndarray
    to_torch: Any
    swap_and_flatten: Any

    def __init__(self, *args: Any, n_costs: int = 1, cost_gae_lambda: float | None = None, **kwargs: Any) -> None:
        if n_costs < 1:
            raise ValueError(f"n_costs must be >= 1, got {n_costs}.")
        self.n_costs = n_costs
        self._cost_gae_lambda = cost_gae_lambda
        self._staged: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None
        super().__init__(*args, **kwargs)

    @property
    def cost_gae_lambda(self) -> float:
        """GAE lambda of the cost advantages (defaults to the reward's ``gae_lambda``)."""
        return self.gae_lambda if self._cost_gae_lambda is None else self._cost_gae_lambda

    def reset(self) -> None:
        """Empty the buffer, including the cost arrays."""
        shape = (self.buffer_size, self.n_envs, self.n_costs)
        for name in _COST_ROLLOUT_ARRAYS:
            setattr(self, name, np.zeros(shape, dtype=np.float32))
        self._staged = None
        super().reset()  # type: ignore[misc]
        self.cut_after = np.zeros(self.n_envs, dtype=bool)  # the last added step of each env was skipped

    def stage_costs(self, costs: np.ndarray, cost_values: np.ndarray, skipped: np.ndarray | None = None) -> None:
        """Give the costs ``(n_envs, n_costs)`` and cost values ``(n_envs, n_costs)`` of the next ``add``.

        ``skipped`` (``(n_envs,)`` bools) marks the environments whose step is left out of training (see the class
        docstring).
        """
        shape = (self.n_envs, self.n_costs)
        self._staged = (
            np.asarray(costs, np.float32).reshape(shape),
            np.asarray(cost_values, np.float32).reshape(shape),
            None if skipped is None else np.asarray(skipped, dtype=bool).reshape(self.n_envs),
        )

    def add(
        self,
        obs: Any,
        action: np.ndarray,
        reward: np.ndarray,
        episode_start: np.ndarray,
        value: th.Tensor,
        log_prob: th.Tensor,
    ) -> None:
        """SB3's ``add``; the step's costs must have been staged with :meth:`stage_costs`."""
        if self._staged is None:
            raise RuntimeError(
                f"{type(self).__name__}.add() needs this step's costs and cost values: call stage_costs() first "
                "(SafeOnPolicyAlgorithm does it from the step's infos)."
            )
        costs, cost_values, skipped = self._staged
        self._staged = None
        episode_start = np.logical_or(episode_start, self.cut_after)
        if skipped is not None and skipped.any():
            values = value.detach().cpu().numpy().reshape(self.n_envs)
            reward = np.where(skipped, values, np.asarray(reward, dtype=np.float32).reshape(self.n_envs))
            costs = np.where(skipped[:, None], cost_values, costs)
            self.cut_after = skipped.copy()
        else:
            self.cut_after = np.zeros(self.n_envs, dtype=bool)
        self.costs[self.pos], self.cost_values[self.pos] = costs, cost_values
        super().add(obs, action, reward, episode_start, value, log_prob)  # type: ignore[misc]

    def compute_returns_and_advantage(self, last_values: th.Tensor, dones: np.ndarray) -> None:
        """SB3's GAE and returns, with an episode boundary after a skipped last step."""
        super().compute_returns_and_advantage(last_values, np.logical_or(dones, self.cut_after))  # type: ignore[misc]

    def compute_cost_returns_and_advantage(self, last_cost_values: th.Tensor | np.ndarray, dones: np.ndarray) -> None:
        """GAE cost advantages and TD(lambda) cost returns, as SB3 computes them for rewards."""
        if isinstance(last_cost_values, th.Tensor):
            last_cost_values = last_cost_values.detach().cpu().numpy()
        last = np.asarray(last_cost_values, np.float32).reshape(self.n_envs, self.n_costs)
        dones = np.logical_or(dones, self.cut_after)
        self.cost_advantages = generalized_advantage_estimate(
            self.costs, self.cost_values, self.episode_starts, last, dones, self.gamma, self.cost_gae_lambda
        )
        self.cost_returns = self.cost_advantages + self.cost_values

    def get(self, batch_size: int | None = None) -> Generator[CostRolloutBufferSamples, None, None]:
        """Minibatches of :class:`CostRolloutBufferSamples` (SB3's ``get``, with the cost arrays flattened too)."""
        if not self.generator_ready:
            for name in _COST_ROLLOUT_ARRAYS:
                setattr(self, name, self.swap_and_flatten(getattr(self, name)))
        yield from super().get(batch_size)  # type: ignore[misc]

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> CostRolloutBufferSamples:
        samples = super()._get_samples(batch_inds, env)  # type: ignore[misc]
        cost_arrays = (self.cost_values, self.cost_advantages, self.cost_returns)
        return CostRolloutBufferSamples(*samples, *(self.to_torch(array[batch_inds]) for array in cost_arrays))


class CostRolloutBuffer(_RolloutCostStorage, RolloutBuffer):  # type: ignore[misc]
    """SB3's :class:`RolloutBuffer` with costs, cost values, GAE cost advantages and cost returns.

    Args:
        *args: Positional arguments of SB3's RolloutBuffer.
        n_costs: Number of constraints.
        cost_gae_lambda: GAE lambda for the costs (``None``: the reward's ``gae_lambda``).
        **kwargs: Keyword arguments of SB3's RolloutBuffer.
    """


class CostDictRolloutBuffer(_RolloutCostStorage, DictRolloutBuffer):  # type: ignore[misc]
    """SB3's :class:`DictRolloutBuffer` (dict observations) with the cost arrays of :class:`CostRolloutBuffer`."""


COST_REPLAY_BUFFERS = (CostReplayBuffer, CostDictReplayBuffer, CostNStepReplayBuffer)
COST_ROLLOUT_BUFFERS = (CostRolloutBuffer, CostDictRolloutBuffer)
