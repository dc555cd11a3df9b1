"""Evaluating any SB3 model for return and cost."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from sb3_safe.common.costs import (
    EPISODE_COST_KEY,
    NonFiniteDataError,
    describe_nonfinite,
    env_name_of,
    nonfinite_message,
    step_cost,
    validate_cost_limit,
)

_EVALUATION_REMEDY = (
    "An episode with a NaN or infinite reward or cost has no return or cost to report (a NaN cost would pass any "
    "limit test), and evaluate_safe_policy has no skip option: fix the environment, or wrap it so that it returns "
    "finite values."
)


@dataclass(frozen=True)
class SafeEvaluationResult:
    """Per-episode returns, costs and lengths of an evaluation, with the usual summaries.

    Attributes:
        returns: Undiscounted episode returns, shape ``(n_episodes,)``.
        costs: Undiscounted episode costs, shape ``(n_episodes,)``.
        lengths: Episode lengths, shape ``(n_episodes,)``.
    """

    returns: np.ndarray
    costs: np.ndarray
    lengths: np.ndarray

    @property
    def n_episodes(self) -> int:
        """Number of evaluated episodes."""
        return len(self.returns)

    @property
    def mean_return(self) -> float:
        """Mean episode return."""
        return float(np.mean(self.returns))

    @property
    def std_return(self) -> float:
        """Standard deviation of the episode returns."""
        return float(np.std(self.returns))

    @property
    def mean_cost(self) -> float:
        """Mean episode cost."""
        return float(np.mean(self.costs))

    @property
    def std_cost(self) -> float:
        """Standard deviation of the episode costs."""
        return float(np.std(self.costs))

    @property
    def mean_length(self) -> float:
        """Mean episode length."""
        return float(np.mean(self.lengths))

    @property
    def cost_rate(self) -> float:
        """Total cost divided by the total number of steps."""
        return float(np.sum(self.costs) / max(int(np.sum(self.lengths)), 1))

    def n_over_limit(self, limit: float) -> int:
        """Number of episodes whose cost exceeded ``limit`` (a per-episode, undiscounted limit >= 0).

        An episode whose cost is not finite (NaN or inf) counts as over the limit: it is never within it.
        """
        costs = np.asarray(self.costs, dtype=np.float64)
        return int(np.sum(~np.isfinite(costs) | (costs > float(validate_cost_limit(limit)[0]))))

    def is_feasible(self, limit: float | None) -> bool:
        """Whether the mean episode cost is within ``limit`` (always true without a limit; never for a NaN cost)."""
        if limit is None:
            return True
        mean = self.mean_cost
        return math.isfinite(mean) and mean <= float(validate_cost_limit(limit)[0])

    def as_dict(self, limit: float | None = None) -> dict[str, float]:
        """The summaries as a flat dict (e.g. for logging or a table row)."""
        summary = {
            "episodes": float(self.n_episodes),
            "mean_return": self.mean_return,
            "std_return": self.std_return,
            "mean_cost": self.mean_cost,
            "std_cost": self.std_cost,
            "cost_rate": self.cost_rate,
            "mean_length": self.mean_length,
        }
        if limit is not None:
            summary["episodes_over_limit"] = float(self.n_over_limit(limit))
        return summary

    def table(self, limit: float | None = None) -> str:
        """A plain-text table of the summaries."""
        rows = [
            ("episodes", f"{self.n_episodes}"),
            ("return", f"{self.mean_return:.2f} ± {self.std_return:.2f}"),
            ("cost", f"{self.mean_cost:.2f} ± {self.std_cost:.2f}"),
            ("cost rate", f"{self.cost_rate:.4f}"),
            ("length", f"{self.mean_length:.1f}"),
        ]
        if limit is not None:
            rows.append(("cost limit", f"{limit:g}"))
            rows.append(("episodes over limit", f"{self.n_over_limit(limit)}/{self.n_episodes}"))
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _as_vec_env(env: gym.Env | VecEnv | str) -> VecEnv:
    if isinstance(env, str):
        from sb3_safe.registry import make_env

        env = make_env(env)
    if isinstance(env, VecEnv):
        return env
    return DummyVecEnv([lambda: env])  # type: ignore[list-item,return-value]


def _row(obs: Any, index: int) -> Any:
    return {key: value[index] for key, value in obs.items()} if isinstance(obs, Mapping) else obs[index]


def _check_finite(values: list[tuple[str, Any]], env_name: str | None, where: str) -> None:
    """Raise :class:`NonFiniteDataError` if one of the named values is NaN or infinite."""
    problems = [f"{name} {text}" for name, value in values if (text := describe_nonfinite(value)) is not None]
    if problems:
        raise NonFiniteDataError(nonfinite_message(problems, env_name, where, _EVALUATION_REMEDY))


def evaluate_safe_policy(
    model: Any,
    env: gym.Env | VecEnv | str,
    n_eval_episodes: int = 10,
    deterministic: bool = True,
    render: bool = False,
    callback: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
) -> SafeEvaluationResult:
    """Run a policy for ``n_eval_episodes`` episodes and collect return, cost and length of each.

    Works for any SB3 model (anything with SB3's ``predict``), safe or not. Episodes are spread evenly over
    the environments of a VecEnv, as SB3's ``evaluate_policy`` does. When a Monitor reports the episode
    (``info["episode"]``), its return, length and cost are used; otherwise they are summed from the steps.

    Args:
        model: The model to evaluate.
        env: A Gymnasium env, a VecEnv, or an environment id for :func:`sb3_safe.make_env`.
        n_eval_episodes: Number of episodes.
        deterministic: Deterministic actions.
        render: Render the environment at each step.
        callback: Called as ``callback(locals(), globals())`` after each step.

    Returns:
        The per-episode results.

    Raises:
        MissingCostError: If the environment does not report ``info["cost"]``.
        NonFiniteDataError: If a reward, cost or observation is NaN or infinite (there is no skip option here).
    """
    if n_eval_episodes < 1:
        raise ValueError(f"n_eval_episodes must be >= 1, got {n_eval_episodes}.")
    vec_env = _as_vec_env(env)
    n_envs = vec_env.num_envs
    env_name = env_name_of(vec_env)
    targets = np.array([(n_eval_episodes + i) // n_envs for i in range(n_envs)], dtype=int)
    counts = np.zeros(n_envs, dtype=int)
    running = np.zeros((n_envs, 3))  # return, cost, length
    returns: list[float] = []
    costs: list[float] = []
    lengths: list[int] = []
    observations = vec_env.reset()
    for i in range(n_envs):
        _check_finite([("observation from env.reset()", _row(observations, i))], env_name, f"(env index {i})")
    states = None
    episode_starts = np.ones(n_envs, dtype=bool)
    while (counts < targets).any():
        actions, states = model.predict(
            observations, state=states, episode_start=episode_starts, deterministic=deterministic
        )
        observations, rewards, dones, infos = vec_env.step(actions)
        for i in range(n_envs):
            cost = step_cost(infos[i], env_name)
            terminal = infos[i].get("terminal_observation") if dones[i] else None
            where = f"(env index {i}) at step {int(running[i, 2]) + 1} of its evaluation episode {counts[i] + 1}"
            _check_finite(
                [
                    ("reward", rewards[i]),
                    ("cost info['cost']", cost),
                    ("observation", _row(observations, i)),
                    ("terminal observation (info['terminal_observation'])", terminal),
                ],
                env_name,
                where,
            )
            running[i] += (float(rewards[i]), cost, 1.0)
            episode_starts[i] = dones[i]
            if not dones[i]:
                continue
            if counts[i] < targets[i]:
                episode = infos[i].get("episode", {})
                returns.append(float(episode.get("r", running[i, 0])))
                costs.append(float(episode.get(EPISODE_COST_KEY, running[i, 1])))
                lengths.append(int(episode.get("l", running[i, 2])))
                counts[i] += 1
            running[i] = 0.0
        if callback is not None:
            callback(locals(), globals())
        if render:
            vec_env.render()
    return SafeEvaluationResult(np.array(returns), np.array(costs), np.array(lengths, dtype=int))
