"""Comparison plots of several runs: learning curves per algorithm, averaged over seeds, one row per environment."""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sb3_safe.common.plotting import binned_curves, finish_figure
from sb3_safe.experiment.rundir import RunDirectoryError
from sb3_safe.experiment.runs import RunRecord

CURVE_KEYS = ("return", "cost")
MAX_BINS = 1000


class NothingToPlotError(RunDirectoryError):
    """No run has a finished training episode or an evaluation to plot."""


def _evaluation_rows(run: RunRecord) -> list[dict[str, float]]:
    """A run's evaluations as curve points: ``timestep``, ``return`` (mean return) and ``cost`` (mean cost)."""
    return [
        {"timestep": row["timestep"], "return": row["mean_return"], "cost": row["mean_cost"]}
        for row in run.evaluations
        if {"timestep", "mean_return", "mean_cost"} <= set(row)
    ]


def _group(runs: Sequence[RunRecord], attribute: str) -> dict[str, list[RunRecord]]:
    groups: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        groups[getattr(run, attribute)].append(run)
    return dict(sorted(groups.items()))


def _total_steps(runs: Sequence[RunRecord], curves: dict[Path, list[dict[str, float]]]) -> float:
    """The x range of an environment's row: the longest configured run, else the last point seen."""
    budgets = [float(run.config["n_timesteps"]) for run in runs if run.config.get("n_timesteps")]
    return max(budgets) if budgets else max(row["timestep"] for run in runs for row in curves[run.path])


def _draw_cost_limits(axis: Any, limits: Sequence[float]) -> None:
    """Row-wise counterpart of :func:`~sb3_safe.common.plotting.finish_figure`'s cost-limit line."""
    for limit in limits:
        axis.axhline(limit, color="black", linestyle="--", label=f"cost limit ({limit:g})")


def plot_runs(
    runs: Sequence[RunRecord], path: str | os.PathLike[str], *, n_bins: int = 20, title: str | None = None
) -> str:
    """Plot episode return and cost against environment steps, mean ± std over seeds per algorithm, into one PNG.

    One row per environment (sorted), with the return panel on the left and the cost panel on the right; each
    algorithm is one line (mean over seeds of :func:`~sb3_safe.common.plotting.binned_curves`) with a shaded
    mean ± std band. The environment's cost limits are dashed black lines on its cost panel.

    The curves are the runs' finished training episodes; if no run has one yet (runs stopped early, or episodes
    longer than the steps done), the runs' periodic evaluations (mean return and cost) are plotted instead, with
    a warning.

    Args:
        runs: The runs (see :func:`~sb3_safe.experiment.runs.load_run`); runs without a point to plot are
            skipped with a warning.
        path: Output PNG path (its folder is created).
        n_bins: Number of environment-step bins per curve (1 to :data:`MAX_BINS`).
        title: Figure title.

    Returns:
        The path written.

    Raises:
        ValueError: If ``n_bins`` is out of range.
        NothingToPlotError: If no run has a finished episode or an evaluation.
    """
    if not 1 <= n_bins <= MAX_BINS:
        raise ValueError(f"n_bins must be between 1 and {MAX_BINS}, got {n_bins}.")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    source = "episode"
    curves = {run.path: run.episodes for run in runs}
    if not any(curves.values()):
        curves = {run.path: _evaluation_rows(run) for run in runs}
        source = "evaluation"
        if any(curves.values()):
            warnings.warn(
                "No run has a finished training episode yet: plotting the periodic evaluations instead.",
                UserWarning,
                stacklevel=2,
            )
    usable = []
    for run in runs:
        if curves[run.path]:
            usable.append(run)
        else:
            what = "finished training episode" if source == "episode" else "finished training episode or evaluation"
            warnings.warn(f"Skipping {run.path}: it has no {what}.", UserWarning, stacklevel=2)
    if not usable:
        raise NothingToPlotError(
            "No run has a finished episode or an evaluation to plot (logs/episodes.csv and logs/evaluations.csv "
            "are empty or missing): train each run for at least one full episode, or with --eval-freq."
        )
    by_env = _group(usable, "env")
    colors = {algo: f"C{index % 10}" for index, algo in enumerate(_group(usable, "algo"))}  # same colour in every row
    figure, axes = plt.subplots(len(by_env), 2, figsize=(10, 3.8 * len(by_env)), constrained_layout=True, squeeze=False)
    for row, (env, env_runs) in zip(axes, by_env.items(), strict=True):
        total_steps = _total_steps(env_runs, curves)
        for algo, algo_runs in _group(env_runs, "algo").items():
            curve = binned_curves([curves[run.path] for run in algo_runs], n_bins=n_bins, total_steps=total_steps)
            for axis, key in zip(row, CURVE_KEYS, strict=True):
                mean, std = curve[f"{key}_mean"], curve[f"{key}_std"]
                axis.plot(
                    curve["steps"],
                    mean,
                    marker="o",
                    markersize=3,
                    color=colors[algo],
                    label=f"{algo} ({len(algo_runs)} seeds)",
                )
                axis.fill_between(curve["steps"], mean - std, mean + std, color=colors[algo], alpha=0.2)
        for axis, key in zip(row, CURVE_KEYS, strict=True):
            axis.set_title(f"{env}: {source} {key}")
            axis.set_xlabel("environment steps")
            axis.set_ylabel(f"{source} {key} (mean ± std over seeds)")
            axis.grid(alpha=0.3)
        _draw_cost_limits(row[1], sorted({run.cost_limit for run in env_runs if run.cost_limit is not None}))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return finish_figure(figure, axes.ravel(), path, title=title)
