"""Learning-curve plots: reward and cost against environment steps."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np


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
    if cost_limit is not None:
        axes[1].axhline(cost_limit, color="black", linestyle="--", label=f"cost limit ({cost_limit:g})")
    for axis in axes:
        axis.legend(loc="best", fontsize=8)
    if title:
        figure.suptitle(title)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return str(path)
