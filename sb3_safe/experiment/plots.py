"""Comparison plots of several runs: learning curves per algorithm, averaged over seeds, one row per environment."""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sb3_safe.common.plotting import binned_curves, finish_figure
from sb3_safe.experiment.runs import RunRecord

CURVE_KEYS = ("return", "cost")


def _group(runs: Sequence[RunRecord], attribute: str) -> dict[str, list[RunRecord]]:
    groups: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        groups[getattr(run, attribute)].append(run)
    return dict(sorted(groups.items()))


def _total_steps(runs: Sequence[RunRecord]) -> float:
    """The x range of an environment's row: the longest configured run, else the last episode seen."""
    budgets = [float(run.config["n_timesteps"]) for run in runs if run.config.get("n_timesteps")]
    return max(budgets) if budgets else max(row["timestep"] for run in runs for row in run.episodes)


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

    Args:
        runs: The runs (see :func:`~sb3_safe.experiment.runs.load_run`); runs without a finished episode are
            skipped with a warning.
        path: Output PNG path (its folder is created).
        n_bins: Number of environment-step bins per curve.
        title: Figure title.

    Returns:
        The path written.

    Raises:
        ValueError: If no run has a finished episode.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    usable = []
    for run in runs:
        if run.episodes:
            usable.append(run)
        else:
            warnings.warn(f"Skipping {run.path}: it has no finished training episode.", UserWarning, stacklevel=2)
    if not usable:
        raise ValueError(
            "No run has a finished episode to plot: train each run for at least one full episode "
            "(logs/episodes.csv is empty or missing)."
        )
    by_env = _group(usable, "env")
    colors = {algo: f"C{index % 10}" for index, algo in enumerate(_group(usable, "algo"))}  # same colour in every row
    figure, axes = plt.subplots(len(by_env), 2, figsize=(10, 3.8 * len(by_env)), constrained_layout=True, squeeze=False)
    for row, (env, env_runs) in zip(axes, by_env.items(), strict=True):
        total_steps = _total_steps(env_runs)
        for algo, algo_runs in _group(env_runs, "algo").items():
            curve = binned_curves([run.episodes for run in algo_runs], n_bins=n_bins, total_steps=total_steps)
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
            axis.set_title(f"{env}: episode {key}")
            axis.set_xlabel("environment steps")
            axis.set_ylabel(f"episode {key} (mean ± std over seeds)")
            axis.grid(alpha=0.3)
        _draw_cost_limits(row[1], sorted({run.cost_limit for run in env_runs if run.cost_limit is not None}))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return finish_figure(figure, axes.ravel(), path, title=title)
