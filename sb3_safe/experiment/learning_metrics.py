"""Learning metrics of training runs and of a benchmark grid: final performance, safety during training, and
sample efficiency.

Per run (rows as returned by :func:`sb3_safe.experiment.runs.read_csv_rows`), with ``N`` the run's budget in
environment steps and ``d`` its per-episode cost limit:

- final return / cost: the mean return / cost of the training episodes that ended at ``timestep >= 0.9 N``;
- cost rate: total training cost divided by total training steps (the sum of the episodes' lengths);
- evaluation over-limit share: ``sum(episodes_over_limit) / (eval_episodes * n)`` over the ``n`` evaluations at
  ``timestep >= 0.9 N``, with the mean evaluation return / cost over the same evaluations;
- cumulative excess cost: ``sum over training episodes of max(0, cost - d)``;
- steps to target: on the episode curve binned by environment steps
  (:func:`~sb3_safe.common.plotting.binned_curves`, 20 bins of 5 % of ``N``), the right end of the first bin whose
  mean return is ``>= target`` and mean cost ``<= d``; ``None`` if no bin qualifies.

Over a grid (:func:`grid_metrics`), every metric is averaged over seeds with the population standard deviation
(``ddof=0``); the return target of each task is 80 % of the best algorithm's mean final return among the
algorithms whose mean final cost is within the limit (among all, with a note, if none is).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from sb3_safe.common.plotting import binned_curves
from sb3_safe.experiment.runs import RunRecord

Rows = Sequence[Mapping[str, float]]
FINAL_FRACTION = 0.1
"""The final window: episodes and evaluations that ended in the last 10 % of the budget."""
TARGET_FRACTION = 0.8
"""The sample-efficiency target, as a fraction of the best feasible algorithm's mean final return."""
N_BINS = 20
"""Bins of the curve on which the target is searched (5 % of the budget each)."""
DDOF = 0
"""Degrees of freedom of the standard deviations over seeds (population standard deviation)."""


def _window(rows: Rows, n_timesteps: float, fraction: float) -> list[Mapping[str, float]]:
    start = (1.0 - fraction) * n_timesteps
    return [row for row in rows if row["timestep"] >= start]


def _mean(values: Iterable[float]) -> float:
    array = np.asarray(list(values), dtype=float)
    return float(array.mean()) if array.size else math.nan


def final_window_means(episodes: Rows, n_timesteps: float, fraction: float = FINAL_FRACTION) -> tuple[float, float]:
    """Mean return and mean cost of the training episodes that ended in the last ``fraction`` of the budget.

    Args:
        episodes: Training episodes (``timestep``, ``return``, ``cost``).
        n_timesteps: The run's budget in environment steps.
        fraction: Size of the final window as a fraction of the budget.

    Returns:
        ``(mean_return, mean_cost)`` over episodes with ``timestep >= (1 - fraction) * n_timesteps``; NaN if none.
    """
    window = _window(episodes, n_timesteps, fraction)
    return _mean(row["return"] for row in window), _mean(row["cost"] for row in window)


def training_cost_rate(episodes: Rows) -> float:
    """Total training cost per training environment step: ``sum(cost) / sum(length)`` over the episodes.

    Args:
        episodes: Training episodes (``cost``, ``length``).

    Returns:
        The cost rate; NaN without episodes.
    """
    steps = sum(row["length"] for row in episodes)
    return float(sum(row["cost"] for row in episodes) / steps) if steps > 0 else math.nan


@dataclasses.dataclass(frozen=True)
class EvaluationWindow:
    """The periodic evaluations of the final window.

    Attributes:
        mean_return: Mean over those evaluations of their mean return.
        mean_cost: Mean over those evaluations of their mean cost.
        over_limit_share: ``sum(episodes_over_limit) / (eval_episodes * n_evaluations)``.
        n_evaluations: How many evaluations the window holds.
    """

    mean_return: float
    mean_cost: float
    over_limit_share: float
    n_evaluations: int


def evaluation_window(
    evaluations: Rows, n_timesteps: float, eval_episodes: int, fraction: float = FINAL_FRACTION
) -> EvaluationWindow:
    """Return, cost and share of episodes over the limit of the evaluations in the last ``fraction`` of the budget.

    Args:
        evaluations: Periodic evaluations (``timestep``, ``mean_return``, ``mean_cost``, ``episodes_over_limit``).
        n_timesteps: The run's budget in environment steps.
        eval_episodes: Episodes per evaluation.
        fraction: Size of the final window as a fraction of the budget.

    Returns:
        The window's statistics (NaN where it holds no evaluation, or the runs have no ``episodes_over_limit``).
    """
    window = _window(evaluations, n_timesteps, fraction)
    over = [row.get("episodes_over_limit", math.nan) for row in window]
    share = float(sum(over) / (eval_episodes * len(window))) if window else math.nan
    return EvaluationWindow(
        mean_return=_mean(row["mean_return"] for row in window),
        mean_cost=_mean(row["mean_cost"] for row in window),
        over_limit_share=share,
        n_evaluations=len(window),
    )


def cumulative_excess_cost(episodes: Rows, cost_limit: float) -> float:
    """Cost above the limit accumulated during training: ``sum(max(0, cost - cost_limit))`` over the episodes.

    Args:
        episodes: Training episodes (``cost``).
        cost_limit: The per-episode cost limit.

    Returns:
        The cumulative excess cost (0 without episodes).
    """
    return float(sum(max(0.0, row["cost"] - cost_limit) for row in episodes))


def steps_to_target(
    episodes: Rows, n_timesteps: float, target: float, cost_limit: float | None, n_bins: int = N_BINS
) -> float | None:
    """Environment steps until the binned training curve first reaches ``target`` return within the cost limit.

    Args:
        episodes: Training episodes (``timestep``, ``return``, ``cost``).
        n_timesteps: The run's budget: the curve has ``n_bins`` equal bins over ``(0, n_timesteps]``.
        target: The return to reach (bin mean return ``>= target``).
        cost_limit: The bin's mean cost must be ``<= cost_limit`` (no condition if ``None``).
        n_bins: Number of bins.

    Returns:
        The right edge of the first qualifying bin, or ``None`` if no bin qualifies (bins without an episode never do).
    """
    if not episodes:
        return None
    curve = binned_curves([episodes], n_bins=n_bins, total_steps=n_timesteps)
    ok = curve["return_mean"] >= target
    if cost_limit is not None:
        ok &= curve["cost_mean"] <= cost_limit
    hits = np.flatnonzero(ok)
    return float(curve["steps"][hits[0]]) if hits.size else None


@dataclasses.dataclass(frozen=True)
class RunMetrics:
    """The metrics of one run (see the module docstring for their definitions).

    Attributes:
        seed: The run's seed.
        final_return: Mean training return of the final window.
        final_cost: Mean training cost of the final window.
        cost_rate: Training cost per environment step.
        eval_return: Mean evaluation return of the final window.
        eval_cost: Mean evaluation cost of the final window.
        eval_over_limit_share: Share of the final window's evaluation episodes over the limit.
        cumulative_excess_cost: Training cost above the limit, summed over episodes.
        steps_to_target: Steps until the curve reached the target within the limit (``None``: never, or no target).
        train_seconds: Wall-clock training time (NaN if unknown).
    """

    seed: int | None
    final_return: float
    final_cost: float
    cost_rate: float
    eval_return: float
    eval_cost: float
    eval_over_limit_share: float
    cumulative_excess_cost: float
    steps_to_target: float | None
    train_seconds: float


def run_cost_limit(run: RunRecord) -> float | None:
    """The run's per-episode cost limit: ``config["cost_limit"]`` (as :class:`RunRecord`), else the hyperparameters'.

    A list of limits (several constraints) is summed, as :func:`~sb3_safe.experiment.config.build_config` does.
    """
    if run.cost_limit is not None:
        return run.cost_limit
    limit = (run.config.get("hyperparams") or {}).get("cost_limit")
    if isinstance(limit, list | tuple):
        return float(sum(limit))
    return None if limit is None else float(limit)


def run_metrics(run: RunRecord, target: float | None = None) -> RunMetrics:
    """All metrics of one run.

    Args:
        run: The run; its config gives ``n_timesteps``, ``eval_episodes`` (default 5) and the cost limit, its summary
            (``run.json`` or ``summary.json``) ``train_seconds``.
        target: The return target of :func:`steps_to_target` (``None``: not computed).

    Returns:
        The metrics. Without a cost limit, the cumulative excess cost is NaN.
    """
    n_timesteps = float(run.config["n_timesteps"])
    limit = run_cost_limit(run)
    final_return, final_cost = final_window_means(run.episodes, n_timesteps)
    evaluation = evaluation_window(run.evaluations, n_timesteps, int(run.config.get("eval_episodes", 5)))
    seconds = (run.summary or {}).get("train_seconds")
    return RunMetrics(
        seed=run.seed,
        final_return=final_return,
        final_cost=final_cost,
        cost_rate=training_cost_rate(run.episodes),
        eval_return=evaluation.mean_return,
        eval_cost=evaluation.mean_cost,
        eval_over_limit_share=evaluation.over_limit_share,
        cumulative_excess_cost=math.nan if limit is None else cumulative_excess_cost(run.episodes, limit),
        steps_to_target=None if target is None else steps_to_target(run.episodes, n_timesteps, target, limit),
        train_seconds=float(seconds) if isinstance(seconds, int | float) else math.nan,
    )


def mean_std(values: Iterable[float | None]) -> tuple[float, float]:
    """Mean and population standard deviation (``ddof=0``) of the finite values; ``(nan, nan)`` if there are none."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return float(np.mean(finite)), float(np.std(finite, ddof=DDOF))


@dataclasses.dataclass(frozen=True)
class AlgoMetrics:
    """One algorithm on one task, over seeds: ``(mean, std)`` pairs with ``std`` at ``ddof=0``.

    Attributes:
        algo: The algorithm's label.
        runs: Per-seed metrics.
        reached: Seeds whose curve reached the task's target within the limit.
        steps_to_target: Mean and std of :attr:`RunMetrics.steps_to_target` over the seeds that reached it.
    """

    algo: str
    runs: list[RunMetrics]
    reached: int
    steps_to_target: tuple[float, float]

    @property
    def seeds(self) -> int:
        """Number of seeds."""
        return len(self.runs)

    def stat(self, name: str) -> tuple[float, float]:
        """Mean and std over seeds of the :class:`RunMetrics` field ``name``."""
        return mean_std(getattr(run, name) for run in self.runs)


@dataclasses.dataclass(frozen=True)
class TaskMetrics:
    """All algorithms on one task.

    Attributes:
        env: The environment id.
        cost_limit: The per-episode cost limit.
        target: The return target of the sample-efficiency measure (NaN if no algorithm has a final return).
        target_algo: The algorithm whose mean final return set the target.
        note: Why the target is not from a feasible algorithm, if it is not ("" otherwise).
        algos: ``{algo: metrics}``, sorted by name.
    """

    env: str
    cost_limit: float | None
    target: float
    target_algo: str | None
    note: str
    algos: dict[str, AlgoMetrics]


def _one_limit(env: str, runs: Iterable[RunRecord]) -> float | None:
    limits = {run_cost_limit(run) for run in runs}
    if len(limits) > 1:
        raise ValueError(f"The runs on {env} have different cost limits {sorted(map(str, limits))}: not one task.")
    return limits.pop() if limits else None


def task_metrics(env: str, runs_by_algo: Mapping[str, Sequence[RunRecord]]) -> TaskMetrics:
    """Metrics of every algorithm on one task, with the task's return target.

    The target is :data:`TARGET_FRACTION` times the best mean final return among the algorithms whose mean final
    cost is ``<=`` the cost limit; if none is, among all algorithms, and :attr:`TaskMetrics.note` says so.

    Args:
        env: The environment id.
        runs_by_algo: ``{algo: runs of its seeds}``.

    Returns:
        The task's metrics.

    Raises:
        ValueError: If the runs have different cost limits.
    """
    limit = _one_limit(env, (run for runs in runs_by_algo.values() for run in runs))
    untargeted = {algo: [run_metrics(run) for run in runs] for algo, runs in runs_by_algo.items()}
    finals = {
        algo: (mean_std(m.final_return for m in metrics)[0], mean_std(m.final_cost for m in metrics)[0])
        for algo, metrics in untargeted.items()
    }
    finals = {algo: pair for algo, pair in finals.items() if math.isfinite(pair[0])}
    feasible = {algo: pair for algo, pair in finals.items() if limit is None or pair[1] <= limit}
    note = ""
    if not feasible and finals:
        note = (
            f"no algorithm's mean final cost is within the limit {limit:g}: the target is "
            f"{TARGET_FRACTION:.0%} of the best mean final return over all algorithms"
        )
    candidates = feasible or finals
    target_algo = max(candidates, key=lambda algo: candidates[algo][0]) if candidates else None
    target = TARGET_FRACTION * candidates[target_algo][0] if target_algo is not None else math.nan
    algos = {}
    for algo in sorted(runs_by_algo):
        metrics = [run_metrics(run, None if target_algo is None else target) for run in runs_by_algo[algo]]
        steps = [m.steps_to_target for m in metrics if m.steps_to_target is not None]
        algos[algo] = AlgoMetrics(algo=algo, runs=metrics, reached=len(steps), steps_to_target=mean_std(steps))
    return TaskMetrics(env=env, cost_limit=limit, target=target, target_algo=target_algo, note=note, algos=algos)


def grid_metrics(runs: Mapping[tuple[str, str], Sequence[RunRecord]]) -> dict[str, TaskMetrics]:
    """Metrics of a benchmark grid, one :class:`TaskMetrics` per environment (see :func:`task_metrics`).

    Args:
        runs: ``{(env, algo): runs of its seeds}``; a partial grid is fine.

    Returns:
        ``{env: metrics}``, sorted by environment.
    """
    by_env: dict[str, dict[str, Sequence[RunRecord]]] = defaultdict(dict)
    for (env, algo), seeds in runs.items():
        if seeds:
            by_env[env][algo] = seeds
    return {env: task_metrics(env, by_env[env]) for env in sorted(by_env)}


def diagnostic_columns(rows: Rows, name: str) -> list[str]:
    """The logger columns of a quantity: ``name`` itself or ``name_<j>`` (one per constraint) with a finite value.

    Args:
        rows: Rows of a logger CSV (e.g. ``diagnostics.csv``).
        name: The column, e.g. ``"train/lambda"``.

    Returns:
        The matching columns that hold at least one finite value, sorted.
    """
    pattern = re.compile(re.escape(name) + r"(_\d+)?")
    columns = {key for row in rows for key in row if pattern.fullmatch(key)}
    return sorted(c for c in columns if any(math.isfinite(row.get(c, math.nan)) for row in rows))


def diagnostic_series(
    rows: Rows, column: str, step_column: str = "time/total_timesteps"
) -> tuple[np.ndarray, np.ndarray]:
    """The finite values of one logger column against environment steps.

    Args:
        rows: Rows of a logger CSV.
        column: The column.
        step_column: The column of environment steps.

    Returns:
        ``(steps, values)`` of the rows where both are finite (empty arrays if the column is absent or empty).
    """
    pairs: list[Any] = [(row.get(step_column, math.nan), row.get(column, math.nan)) for row in rows]
    kept = np.array([p for p in pairs if math.isfinite(p[0]) and math.isfinite(p[1])], dtype=float).reshape(-1, 2)
    return kept[:, 0], kept[:, 1]
