"""Learning-curve plots: reward and cost against environment steps."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def finish_figure(
    figure: Any, axes: Any, path: str | os.PathLike[str], cost_limit: float | None = None, title: str | None = None
) -> str:
    """Finish a matplotlib figure of learning curves: save it as a PNG and close it.

    Args:
        figure: The figure.
        axes: Its panels; with a ``cost_limit``, the second is the cost panel and gets the limit as a dashed line.
        path: Where to write the PNG.
        cost_limit: The per-episode cost limit to draw, if any.
        title: The figure title, if any.

    Returns:
        ``path`` as a string.
    """
    import matplotlib.pyplot as plt

    if cost_limit is not None:
        axes[1].axhline(cost_limit, color="black", linestyle="--", label=f"cost limit ({cost_limit:g})")
    for axis in axes:
        axis.legend(loc="best", fontsize=8)
    if title:
        figure.suptitle(title)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return str(path)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(values) < window:
        return values
    kernel = np.ones(window) / window
    head = [values[: i + 1].mean() for i in range(window - 1)]
    return np.concatenate([head, np.convolve(values, kernel, mode="valid")])


def plot_learning_curves(
    history: Sequence[Mapping[str, float]],
    path: str | os.PathLike[str],
    cost_limit: float | None = None,
    title: str | None = None,
    smoothing: int = 1,
) -> str:
    """Plot episode return and episode cost against environment steps, one panel each, into a PNG.

    Args:
        history: One mapping per episode with ``timestep``, ``return`` and ``cost`` (e.g.
            :attr:`~sb3_safe.common.callbacks.EpisodeHistoryCallback.history`).
        path: Output PNG path.
        cost_limit: Drawn as a horizontal line on the cost panel.
        title: Figure title.
        smoothing: Moving-average window over episodes (1: raw points only).

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        raise ValueError("No finished episodes to plot: train for at least one full episode.")
    steps = np.array([row["timestep"] for row in history])
    series = {
        "return": np.array([row["return"] for row in history]),
        "cost": np.array([row["cost"] for row in history]),
    }
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for axis, (name, values), color in zip(axes, series.items(), ("tab:blue", "tab:red"), strict=True):
        axis.plot(steps, values, "o-", color=color, alpha=0.35, markersize=4, linewidth=1, label=f"episode {name}")
        if smoothing > 1:
            axis.plot(steps, _smooth(values, smoothing), color=color, label=f"moving average ({smoothing})")
        axis.set_xlabel("environment steps")
        axis.set_ylabel(f"episode {name}")
        axis.grid(alpha=0.3)
    return finish_figure(figure, axes, path, cost_limit, title)


def binned_curves(
    histories: Sequence[Sequence[Mapping[str, float]]], n_bins: int = 10, total_steps: float | None = None
) -> dict[str, np.ndarray]:
    """Mean and standard deviation over seeds of episode return and cost, in equal bins of environment steps.

    Args:
        histories: One episode history per seed (rows with ``timestep``, ``return``, ``cost``).
        n_bins: Number of step bins.
        total_steps: Right edge of the last bin (default: the largest timestep seen).

    Returns:
        ``steps`` (bin right edges), ``return_mean``, ``return_std``, ``cost_mean``, ``cost_std`` (NaN where no
        seed finished an episode in the bin), each of shape ``(n_bins,)``.
    """
    end = total_steps or max(row["timestep"] for history in histories for row in history)
    edges = np.linspace(0.0, end, n_bins + 1)
    per_seed = {key: np.full((len(histories), n_bins), np.nan) for key in ("return", "cost")}
    for seed_index, history in enumerate(histories):
        steps = np.array([row["timestep"] for row in history])
        bins = np.clip(np.searchsorted(edges, steps, side="left") - 1, 0, n_bins - 1)
        for key, table in per_seed.items():
            values = np.array([row[key] for row in history])
            for b in range(n_bins):
                if np.any(bins == b):
                    table[seed_index, b] = values[bins == b].mean()
    result = {"steps": edges[1:]}
    for key, table in per_seed.items():
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # bins where no seed has an episode stay NaN
            result[f"{key}_mean"] = np.nanmean(table, axis=0)
            result[f"{key}_std"] = np.nanstd(table, axis=0)
    return result


def plot_seed_curves(
    curves: Mapping[str, Mapping[str, np.ndarray]],
    path: str | os.PathLike[str],
    cost_limit: float | None = None,
    title: str | None = None,
) -> str:
    """Plot mean ± std episode return and cost against steps for one or several methods (see :func:`binned_curves`).

    Args:
        curves: ``{label: binned_curves(...)}``.
        path: Output PNG path.
        cost_limit: Drawn as a dashed line on the cost panel.
        title: Figure title.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for label, curve in curves.items():
        for axis, key in zip(axes, ("return", "cost"), strict=True):
            mean, std = curve[f"{key}_mean"], curve[f"{key}_std"]
            (line,) = axis.plot(curve["steps"], mean, marker="o", markersize=3, label=label)
            axis.fill_between(curve["steps"], mean - std, mean + std, color=line.get_color(), alpha=0.2)
    for axis, key in zip(axes, ("return", "cost"), strict=True):
        axis.set_xlabel("environment steps")
        axis.set_ylabel(f"episode {key} (mean ± std over seeds)")
        axis.grid(alpha=0.3)
    return finish_figure(figure, axes, path, cost_limit, title)
