"""A cost-aware version of SB3's :class:`~stable_baselines3.common.monitor.Monitor`."""

from __future__ import annotations

import time
from typing import Any, SupportsFloat

import gymnasium as gym
from stable_baselines3.common.monitor import Monitor

from sb3_safe.common.costs import EPISODE_COST_KEY, step_cost


class SafeMonitor(Monitor, gym.utils.RecordConstructorArgs):
    """SB3's Monitor that also sums the per-step cost of each episode.

    At the end of an episode ``info["episode"]`` holds ``{"r": return, "l": length, "c": cost, "t": time}``,
    and the same row (with ``c``) goes to the monitor CSV when ``filename`` is given. Because it is a
    :class:`Monitor`, SB3 algorithms and ``evaluate_policy`` recognise it and do not wrap the env again.

    The cost is read from ``info["cost"]`` at every step: an environment without one fails at its first
    step with :class:`~sb3_safe.common.costs.MissingCostError`.

    Args:
        env: The environment to monitor.
        filename: Where to write the monitor CSV (``None``: no file).
        allow_early_resets: Allow ``reset`` before the episode is over.
        reset_keywords: Extra ``reset`` keywords recorded with each episode.
        info_keywords: Extra ``info`` keys of the last step recorded with each episode.
        override_existing: Overwrite an existing monitor file instead of appending.
    """

    def __init__(
        self,
        env: gym.Env,
        filename: str | None = None,
        allow_early_resets: bool = True,
        reset_keywords: tuple[str, ...] = (),
        info_keywords: tuple[str, ...] = (),
        override_existing: bool = True,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(  # so that gymnasium can rebuild the wrapped env from its spec
            self,
            filename=filename,
            allow_early_resets=allow_early_resets,
            reset_keywords=reset_keywords,
            info_keywords=info_keywords,
            override_existing=override_existing,
        )
        # The CSV header gets the cost column through the extra keys.
        Monitor.__init__(
            self,
            env,
            filename=filename,
            allow_early_resets=allow_early_resets,
            reset_keywords=reset_keywords,
            info_keywords=(EPISODE_COST_KEY, *info_keywords),
            override_existing=override_existing,
        )
        self.info_keywords = info_keywords
        self.costs: list[float] = []
        self.episode_costs: list[float] = []
        self._env_name = env.spec.id if env.spec is not None else type(env.unwrapped).__name__

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """Reset the environment and the running episode cost."""
        self.costs = []
        return super().reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the environment, recording reward and cost; fails at once if the step has no cost."""
        if self.needs_reset:
            raise RuntimeError("Tried to step an environment that needs reset: call reset() first.")
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.rewards.append(float(reward))
        self.costs.append(step_cost(info, self._env_name))
        if terminated or truncated:
            self.needs_reset = True
            episode = {
                "r": round(sum(self.rewards), 6),
                "l": len(self.rewards),
                EPISODE_COST_KEY: round(sum(self.costs), 6),
                "t": round(time.time() - self.t_start, 6),
            }
            episode.update({key: info[key] for key in self.info_keywords})
            episode.update(self.current_reset_info)
            self.episode_returns.append(episode["r"])
            self.episode_lengths.append(len(self.rewards))
            self.episode_costs.append(episode[EPISODE_COST_KEY])
            self.episode_times.append(time.time() - self.t_start)
            if self.results_writer is not None:
                self.results_writer.write_row(episode)
            info["episode"] = episode
        self.total_steps += 1
        return observation, reward, terminated, truncated, info

    def get_episode_costs(self) -> list[float]:
        """The total cost of every finished episode."""
        return self.episode_costs
