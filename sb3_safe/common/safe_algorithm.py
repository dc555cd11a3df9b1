"""What every safe SB3 algorithm shares: reading the cost stream, episode costs and safety metrics."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.utils import safe_mean

from sb3_safe.common.costs import (
    EPISODE_COST_KEY,
    EpisodeCostTracker,
    MissingCostError,
    costs_from_infos,
    env_name_of,
    per_constraint_keys,
    validate_cost_limit,
)


def require_box_action_space(action_space: spaces.Space, component: str) -> None:
    """Raise a clear error when a continuous-only component is given a non-Box action space."""
    if not isinstance(action_space, spaces.Box):
        raise TypeError(
            f"{component} works with continuous (gymnasium.spaces.Box) action spaces only, but the environment's "
            f"action space is {action_space}. Use a continuous-control task (e.g. a safety-gymnasium robot "
            "task), or an algorithm that supports discrete actions."
        )


class SafeAlgorithmMixin:
    """Cost bookkeeping mixed into SB3 algorithms (placed before the SB3 class in the bases).

    - A string ``env`` is built with :func:`sb3_safe.make_env`, so plugin task names work directly.
    - Every environment step's cost is read from ``info["cost"]`` (a missing cost fails at the first step);
      the episode cost is added to ``info["episode"]`` as ``c`` before SB3 records the episode.
    - ``dump_logs`` adds ``rollout/ep_cost_mean``, ``rollout/early_terminations``, ``safety/cost_rate``
      (cumulative training cost / environment steps) and, with a ``cost_limit``, ``safety/cost_limit`` and
      ``safety/episodes_over_limit`` (training episodes whose cost exceeded the limit).

    Args:
        cost_limit: Per-episode, undiscounted cost limit (one per constraint, or a scalar); ``None`` for none.
        n_costs: Number of constraints reported by the environment.
    """

    continuous_actions_only: ClassVar[bool] = False
    """Set by subclasses that need a Box action space; checked with a clear error before SB3's setup."""

    # Provided by SB3's BaseAlgorithm.
    num_timesteps: int
    ep_info_buffer: Any
    logger: Any
    env: Any
    n_envs: int

    def __init__(self, policy: Any, env: Any, *args: Any, cost_limit: Any = None, n_costs: int = 1, **kwargs: Any):
        if n_costs < 1:
            raise ValueError(f"n_costs must be >= 1, got {n_costs}.")
        self.n_costs = n_costs
        self.cost_limit = None if cost_limit is None else validate_cost_limit(cost_limit, n_costs)
        self._reset_safety_counters()
        if isinstance(env, str):
            from sb3_safe.registry import make_env

            env = make_env(env)
        if env is not None and self.continuous_actions_only:
            require_box_action_space(env.action_space, type(self).__name__)
        super().__init__(policy, env, *args, **kwargs)  # type: ignore[call-arg]

    def _reset_safety_counters(self) -> None:
        self.cumulative_cost = 0.0
        self.episodes_over_limit = 0
        self.early_terminations = 0
        self._episode_costs: EpisodeCostTracker | None = None

    @property
    def cost_rate(self) -> float:
        """Cumulative training cost divided by the number of environment steps so far."""
        return self.cumulative_cost / self.num_timesteps if self.num_timesteps > 0 else 0.0

    def _setup_learn(self, total_timesteps: int, *args: Any, **kwargs: Any) -> Any:
        reset_num_timesteps = kwargs.get("reset_num_timesteps", args[1] if len(args) > 1 else True)
        if reset_num_timesteps or self._episode_costs is None:
            # SB3 resets the environments: episode costs restart, and so do the per-run counters.
            if reset_num_timesteps:
                self._reset_safety_counters()
            self._episode_costs = EpisodeCostTracker(self.n_envs, self.n_costs)
        return super()._setup_learn(total_timesteps, *args, **kwargs)  # type: ignore[misc]

    def _update_info_buffer(self, infos: list[dict[str, Any]], dones: np.ndarray | None = None) -> None:
        try:
            costs = costs_from_infos(infos, self.n_costs)
        except MissingCostError:
            # Only now look up the env's name (a SubprocVecEnv round trip) for the message.
            costs_from_infos(infos, self.n_costs, env_name_of(self.env))
            raise
        if dones is None:
            dones = np.zeros(len(infos), dtype=bool)
        if self._episode_costs is None:
            self._episode_costs = EpisodeCostTracker(len(infos), self.n_costs)
        self.cumulative_cost += float(costs.sum())
        for idx, episode_costs in self._episode_costs.update(costs, dones).items():
            self._on_episode_costs(episode_costs)
            episode = infos[idx].get("episode")
            if episode is not None:
                episode[EPISODE_COST_KEY] = float(episode_costs.sum())
            if self.cost_limit is not None and np.any(episode_costs > self.cost_limit):
                self.episodes_over_limit += 1
            if not infos[idx].get("TimeLimit.truncated", False):
                self.early_terminations += 1
        self._on_step_costs(costs, infos, dones)
        super()._update_info_buffer(infos, dones)  # type: ignore[misc]

    def _on_step_costs(self, costs: np.ndarray, infos: list[dict[str, Any]], dones: np.ndarray) -> None:
        """Hook for subclasses: one step's costs ``(n_envs, n_costs)`` right after the environment step."""

    def _on_episode_costs(self, episode_costs: np.ndarray) -> None:
        """Hook for subclasses: the per-constraint costs ``(n_costs,)`` of a training episode that just ended."""

    def _record_safety_metrics(self) -> None:
        episode_costs = [info[EPISODE_COST_KEY] for info in self.ep_info_buffer if EPISODE_COST_KEY in info]
        if episode_costs:
            self.logger.record("rollout/ep_cost_mean", safe_mean(episode_costs))
        self.logger.record("rollout/early_terminations", self.early_terminations)
        self.logger.record("safety/cost_rate", self.cost_rate)
        if self.cost_limit is not None:
            for key, limit in per_constraint_keys("safety/cost_limit", self.cost_limit).items():
                self.logger.record(key, limit)
            self.logger.record("safety/episodes_over_limit", self.episodes_over_limit)

    def dump_logs(self, *args: Any, **kwargs: Any) -> None:
        """Record the safety metrics, then SB3's own logs (which write everything out)."""
        self._record_safety_metrics()
        super().dump_logs(*args, **kwargs)  # type: ignore[misc]

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_episode_costs"]  # type: ignore[misc]
