"""Base class of the safe on-policy algorithms: SB3's OnPolicyAlgorithm with a cost-aware rollout buffer."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from sb3_safe.common.buffers import COST_ROLLOUT_BUFFERS, CostDictRolloutBuffer, CostRolloutBuffer
from sb3_safe.common.costs import NONFINITE_KEY
from sb3_safe.common.safe_algorithm import SafeAlgorithmMixin


class SafeOnPolicyAlgorithm(SafeAlgorithmMixin, OnPolicyAlgorithm):
    """SB3's :class:`OnPolicyAlgorithm` whose rollout buffer also holds costs, cost values and cost advantages.

    The policy must provide ``predict_cost_values(obs) -> (batch, n_costs)``, as
    :class:`~sb3_safe.common.policies.SafeActorCriticPolicy` does. At every step the costs from the infos and
    the cost values of the current observations go to the buffer (with the same time-limit bootstrap SB3
    applies to rewards); at the end of the rollout the buffer computes GAE cost advantages and cost returns.

    Put this class first in the bases, e.g. ``class MyPPO(SafeOnPolicyAlgorithm, PPO)``. See
    :class:`SafeAlgorithmMixin` for ``cost_limit``, ``n_costs``, ``nonfinite`` and the logged safety metrics.

    With ``nonfinite="skip"`` a step with a NaN or infinite reward, cost or observation cannot be dropped from the
    fixed ``(n_steps, n_envs)`` rollout: the buffer stores it with its own value estimates V(s), V_c(s) as reward
    and cost and an episode boundary after it, so its advantages are 0 (before any minibatch normalisation of the
    advantages, which only shifts them), its value targets are the critics' own estimates, and the steps before it
    bootstrap from V(s) as at a time-limit truncation. No made-up reward or cost (such as 0) is learnt from.
    """

    rollout_buffer: RolloutBuffer
    _filling_buffer: RolloutBuffer | None = None

    def _setup_model(self) -> None:
        if self.rollout_buffer_class is None:
            is_dict = isinstance(self.observation_space, spaces.Dict)
            self.rollout_buffer_class = CostDictRolloutBuffer if is_dict else CostRolloutBuffer
        elif not issubclass(self.rollout_buffer_class, COST_ROLLOUT_BUFFERS):
            raise TypeError(
                f"{type(self).__name__} needs a rollout buffer that stores costs, got "
                f"{self.rollout_buffer_class.__name__}: use CostRolloutBuffer or CostDictRolloutBuffer "
                "(or leave rollout_buffer_class=None)."
            )
        if not callable(getattr(self.policy_class, "predict_cost_values", None)):
            raise TypeError(
                f"{type(self).__name__} needs a policy with a cost value head (predict_cost_values), got "
                f"{self.policy_class.__name__}: use sb3_safe.common.policies.SafeActorCriticPolicy or a subclass."
            )
        # Copies: never write into the caller's dicts.
        self.rollout_buffer_kwargs = {**self.rollout_buffer_kwargs, "n_costs": self.n_costs}
        self.policy_kwargs = {**self.policy_kwargs}
        self.policy_kwargs.setdefault("n_costs", self.n_costs)
        super()._setup_model()

    def _predict_cost_values(self, obs: Any) -> np.ndarray:
        """V_c of a batch of observations (or of one), as a numpy array ``(batch, n_costs)``."""
        with th.no_grad():
            values = self.policy.predict_cost_values(self.policy.obs_to_tensor(obs)[0])  # type: ignore[operator]
        return values.cpu().numpy().reshape(-1, self.n_costs)

    def _on_step_costs(self, costs: np.ndarray, infos: list[dict[str, Any]], dones: np.ndarray) -> None:
        buffer = self._filling_buffer
        if buffer is None:
            return
        costs = costs.copy()
        # Time-limit truncation: bootstrap the cost with V_c of the terminal observation, as SB3 does for rewards.
        for idx, done in enumerate(dones):
            terminal_obs = infos[idx].get("terminal_observation")
            if done and terminal_obs is not None and infos[idx].get("TimeLimit.truncated", False):
                costs[idx] += self.gamma * self._predict_cost_values(terminal_obs)[0]
        skipped = np.array([NONFINITE_KEY in info for info in infos], dtype=bool)  # flagged by the guard
        # SB3 stores the pre-step observation, still in self._last_obs at this point.
        buffer.stage_costs(  # type: ignore[attr-defined]
            costs, self._predict_cost_values(self._last_obs), skipped=skipped if skipped.any() else None
        )

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """SB3's rollout collection, plus costs, cost values and GAE cost advantages in the buffer."""
        self._filling_buffer = rollout_buffer
        try:
            complete = super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)
        finally:
            self._filling_buffer = None
        if complete:
            last_cost_values = self._predict_cost_values(self._last_obs)
            rollout_buffer.compute_cost_returns_and_advantage(last_cost_values, self._last_episode_starts)  # type: ignore[attr-defined]
        return complete

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_filling_buffer"]
