"""What every safe SB3 algorithm shares: reading the cost stream, episode costs, safety metrics, and the guard
that keeps NaN and infinite rewards, costs and observations out of training."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.utils import safe_mean
from stable_baselines3.common.vec_env import VecEnv

from sb3_safe.common.costs import (
    EPISODE_COST_KEY,
    EpisodeCostTracker,
    MissingCostError,
    NonFiniteDataError,
    costs_from_infos,
    env_name_of,
    per_constraint_keys,
    validate_cost_limit,
)
from sb3_safe.common.nonfinite import NONFINITE_MODES, NonFiniteGuard, check_nonfinite_mode

__all__ = ["NONFINITE_MODES", "NonFiniteDataError", "SafeAlgorithmMixin", "require_box_action_space"]


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
    - Non-finite data never reaches training: the environment handed to SB3's collection loop
      (``collect_rollouts``) is wrapped in a guard that checks every step's reward, cost, observation and
      terminal observation (and the observations from the reset in ``learn``) before callbacks, episode costs,
      multipliers or buffers see them. A NaN or infinite value raises :class:`NonFiniteDataError` naming the
      environment, the field (with the bad entries), the step and the env index. With ``nonfinite="skip"`` such
      transitions are left out of training instead: an off-policy replay buffer stores them flagged and never
      samples them; an on-policy rollout keeps its layout, so the step gets its own value estimates as reward and
      cost (zero advantage) and GAE treats the episode as cut there (bootstrapped from the value of the last
      finite state). The skipped values count as 0 in the episode's return and cost, the bad observation
      entries are replaced by 0 for acting, ``safety/nonfinite_skipped`` counts the skipped transitions, and a
      warning is given once.
    - ``set_env(env, force_reset=True)`` restarts the per-episode cost accumulators with the environments.

    Args:
        cost_limit: Per-episode, undiscounted cost limit (one per constraint, or a scalar); ``None`` for none.
        n_costs: Number of constraints reported by the environment.
        nonfinite: ``"raise"`` (default) or ``"skip"``: what a NaN or infinite reward, cost or observation does
            during training. Also settable on a model (``model.nonfinite = "skip"``, e.g. after ``load``).
    """

    continuous_actions_only: ClassVar[bool] = False
    """Set by subclasses that need a Box action space; checked with a clear error before SB3's setup."""
    learns_by_episodes: ClassVar[bool] = False
    """Set by agents that learn from whole episodes of a single environment (the linear-MDP agents): their budget
    is counted in episodes of ``spec.horizon`` steps (``policy.episodes`` done so far)."""

    # Provided by SB3's BaseAlgorithm.
    num_timesteps: int
    ep_info_buffer: Any
    logger: Any
    env: Any
    n_envs: int
    _last_obs: Any
    _vec_normalize_env: Any

    def __init__(
        self,
        policy: Any,
        env: Any,
        *args: Any,
        cost_limit: Any = None,
        n_costs: int = 1,
        nonfinite: str = "raise",
        **kwargs: Any,
    ):
        if n_costs < 1:
            raise ValueError(f"n_costs must be >= 1, got {n_costs}.")
        check_nonfinite_mode(nonfinite)
        self.n_costs = n_costs
        self.cost_limit = None if cost_limit is None else validate_cost_limit(cost_limit, n_costs)
        self.nonfinite = nonfinite
        self._nonfinite_guard: NonFiniteGuard | None = None
        self._nonfinite_warned = False
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
        self.nonfinite_skipped = 0
        self._episode_costs: EpisodeCostTracker | None = None

    @property
    def cost_rate(self) -> float:
        """Cumulative training cost divided by the number of environment steps so far."""
        return self.cumulative_cost / self.num_timesteps if self.num_timesteps > 0 else 0.0

    def _setup_learn(self, total_timesteps: int, *args: Any, **kwargs: Any) -> Any:
        check_nonfinite_mode(self.nonfinite)
        reset_num_timesteps = kwargs.get("reset_num_timesteps", args[1] if len(args) > 1 else True)
        envs_reset = reset_num_timesteps or self._last_obs is None  # SB3 resets the environments in these cases
        if envs_reset or self._episode_costs is None:
            # Episode costs restart with the environments; the per-run counters with the step count.
            if reset_num_timesteps:
                self._reset_safety_counters()
            self._episode_costs = EpisodeCostTracker(self.n_envs, self.n_costs)
        result = super()._setup_learn(total_timesteps, *args, **kwargs)  # type: ignore[misc]
        if envs_reset and self.env is not None:
            guard = self._guarded_env(self.env)
            guard.reset_state()
            self._last_obs = guard.screen_reset(self._last_obs)
        return result

    def set_env(self, env: Any, force_reset: bool = True) -> None:
        """SB3's ``set_env``; with ``force_reset`` the per-episode cost accumulators restart with the environments.

        The next ``learn`` then resets the new environments, so the first episode's cost is that episode's alone,
        exactly as for a model freshly loaded with the same environment.
        """
        super().set_env(env, force_reset)  # type: ignore[misc]
        if force_reset:
            self._episode_costs = None
            self._nonfinite_guard = None

    def _guarded_env(self, env: VecEnv) -> NonFiniteGuard:
        """The non-finite guard around ``env`` (made once per environment; the checks' state carries over)."""
        guard = self._nonfinite_guard
        if guard is None or guard.venv is not env:
            previous, guard = guard, NonFiniteGuard(env, self)
            if previous is not None and previous.num_envs == guard.num_envs:  # set_env without a reset
                guard.obs_bad, guard.returns = previous.obs_bad, previous.returns
            self._nonfinite_guard = guard
        return guard

    def collect_rollouts(self, env: VecEnv, *args: Any, **kwargs: Any) -> Any:
        """SB3's collection loop on the guarded environment: every step is checked for non-finite data first."""
        return super().collect_rollouts(self._guarded_env(env), *args, **kwargs)  # type: ignore[misc]

    def _warn_nonfinite(self, message: str) -> None:
        if not self._nonfinite_warned:
            self._nonfinite_warned = True
            warnings.warn(message, RuntimeWarning, stacklevel=2)

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
        if self.nonfinite == "skip" or self.nonfinite_skipped:
            self.logger.record("safety/nonfinite_skipped", self.nonfinite_skipped)

    def dump_logs(self, *args: Any, **kwargs: Any) -> None:
        """Record the safety metrics, then SB3's own logs (which write everything out)."""
        self._record_safety_metrics()
        super().dump_logs(*args, **kwargs)  # type: ignore[misc]

    def _excluded_save_params(self) -> list[str]:
        excluded = ["_episode_costs", "_nonfinite_guard", "_nonfinite_warned"]
        return [*super()._excluded_save_params(), *excluded]  # type: ignore[misc]
