"""Callbacks: cost-aware evaluation with feasibility-first model selection, and an episode recorder."""

from __future__ import annotations

import csv
import os
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.vec_env import VecEnv, sync_envs_normalization

from sb3_safe.common.costs import EPISODE_COST_KEY, validate_cost_limit
from sb3_safe.common.evaluation import SafeEvaluationResult, evaluate_safe_policy
from sb3_safe.common.files import append_csv_row


class SafeEvalCallback(EvalCallback):
    """SB3's :class:`EvalCallback` that also measures cost, and keeps the best *feasible* model.

    Every ``eval_freq`` calls it runs :func:`evaluate_safe_policy` and logs ``eval/mean_reward``,
    ``eval/mean_ep_length``, ``eval/mean_cost``, ``eval/cost_rate`` and, with a ``cost_limit``,
    ``eval/episodes_over_limit`` and ``eval/feasible``. "Best" means feasible first (mean episode cost within
    ``cost_limit``), then highest mean return; without a limit it is SB3's highest return.
    ``evaluations.npz`` also stores ``costs``.

    Args:
        eval_env: The evaluation environment.
        cost_limit: Per-episode cost limit for feasibility (``None``: every evaluation is feasible).
        **kwargs: SB3 EvalCallback's arguments (``n_eval_episodes``, ``eval_freq``, ``log_path``,
            ``best_model_save_path``, ``deterministic``, ``render``, ``callback_on_new_best``, ...).
    """

    def __init__(self, eval_env: gym.Env | VecEnv, cost_limit: float | None = None, **kwargs: Any) -> None:
        super().__init__(eval_env, **kwargs)
        self.cost_limit = None if cost_limit is None else float(validate_cost_limit(cost_limit)[0])
        self.evaluations_costs: list[list[float]] = []
        self.last_result: SafeEvaluationResult | None = None
        self.last_mean_cost = np.inf
        self.best_mean_cost = np.inf
        self.best_is_feasible = False

    def _is_new_best(self, result: SafeEvaluationResult) -> bool:
        feasible = result.is_feasible(self.cost_limit)
        return (feasible, result.mean_return) > (self.best_is_feasible, self.best_mean_reward)

    def _save_evaluations(self, result: SafeEvaluationResult) -> None:
        self.evaluations_timesteps.append(self.num_timesteps)
        self.evaluations_results.append(result.returns.tolist())
        self.evaluations_length.append(result.lengths.tolist())
        self.evaluations_costs.append(result.costs.tolist())
        if self.log_path is not None:
            np.savez(
                self.log_path,
                timesteps=self.evaluations_timesteps,
                results=self.evaluations_results,
                ep_lengths=self.evaluations_length,
                costs=self.evaluations_costs,
            )

    def _on_step(self) -> bool:
        if self.eval_freq <= 0 or self.n_calls % self.eval_freq != 0:
            return True
        if self.model.get_vec_normalize_env() is not None:
            sync_envs_normalization(self.training_env, self.eval_env)
        result = evaluate_safe_policy(self.model, self.eval_env, self.n_eval_episodes, self.deterministic, self.render)
        self.last_result = result
        self._save_evaluations(result)
        self.last_mean_reward, self.last_mean_cost = result.mean_return, result.mean_cost
        if self.verbose >= 1:
            print(
                f"Eval num_timesteps={self.num_timesteps}, episode_reward={result.mean_return:.2f} "
                f"+/- {result.std_return:.2f}, episode_cost={result.mean_cost:.2f} +/- {result.std_cost:.2f}"
            )
        self.logger.record("eval/mean_reward", result.mean_return)
        self.logger.record("eval/mean_ep_length", result.mean_length)
        self.logger.record("eval/mean_cost", result.mean_cost)
        self.logger.record("eval/cost_rate", result.cost_rate)
        if self.cost_limit is not None:
            self.logger.record("eval/episodes_over_limit", result.n_over_limit(self.cost_limit))
            self.logger.record("eval/feasible", float(result.is_feasible(self.cost_limit)))
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self.logger.dump(self.num_timesteps)

        continue_training = True
        if self._is_new_best(result):
            if self.verbose >= 1:
                print(
                    "New best feasible mean reward!" if result.is_feasible(self.cost_limit) else "New best mean reward!"
                )
            if self.best_model_save_path is not None:
                self.model.save(os.path.join(self.best_model_save_path, "best_model"))
            self.best_mean_reward, self.best_mean_cost = result.mean_return, result.mean_cost
            self.best_is_feasible = result.is_feasible(self.cost_limit)
            if self.callback_on_new_best is not None:
                continue_training = self.callback_on_new_best.on_step()
        if self.callback is not None:
            continue_training = continue_training and self._on_event()
        return continue_training


class EpisodeHistoryCallback(BaseCallback):
    """Records every finished training episode: timestep, return, cost and length.

    Reads ``info["episode"]`` (as filled by SB3's Monitor and sb3-safe's cost plumbing), so it works with
    any SB3 algorithm; the cost column needs a cost-aware monitor or a safe algorithm.

    Args:
        csv_path: If given, each episode is also appended to this CSV file as it finishes (flushed at once, so a
            killed process loses none; an existing file is continued).
        verbose: SB3's verbosity.
    """

    FIELDS = ("timestep", "return", "cost", "length")

    def __init__(self, csv_path: str | os.PathLike[str] | None = None, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.csv_path = csv_path
        self.history: list[dict[str, float]] = []

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            episode = info.get("episode")
            if episode is not None:
                row = {
                    "timestep": float(self.num_timesteps),
                    "return": float(episode["r"]),
                    "cost": float(episode.get(EPISODE_COST_KEY, np.nan)),
                    "length": float(episode["l"]),
                }
                self.history.append(row)
                if self.csv_path is not None:
                    append_csv_row(self.csv_path, self.FIELDS, row)
        return True

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write the history as CSV (columns ``timestep, return, cost, length``)."""
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.FIELDS)
            writer.writeheader()
            writer.writerows(self.history)
