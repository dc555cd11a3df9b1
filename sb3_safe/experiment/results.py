"""Result tables over runs: one row per (algorithm, environment), aggregated over seeds, as CSV and Markdown."""

from __future__ import annotations

import csv
import io
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from sb3_safe.common.files import atomic_write_text
from sb3_safe.experiment.runs import RunRecord

RESULT_COLUMNS = (
    "env",
    "algo",
    "seeds",
    "cost_limit",
    "eval_return_mean",
    "eval_return_std",
    "eval_cost_mean",
    "eval_cost_std",
    "eval_cost_rate_mean",
    "eval_episodes_over_limit",
    "feasible_seeds",
    "train_final_return_mean",
    "train_final_cost_mean",
    "train_cost_rate_mean",
    "train_seconds_mean",
    "unfinished",
)
MISSING = "–"


def _values(runs: Iterable[RunRecord], section: str | None, key: str) -> list[float]:
    """The finite numbers ``summary[section][key]`` (or ``summary[key]``) of the runs that have one."""
    values = []
    for run in runs:
        source = run.summary or {}
        if section is not None:
            source = source.get(section) or {}
        value = source.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            values.append(float(value))
    return values


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _std(values: Sequence[float]) -> float | None:
    return float(np.std(values)) if values else None


def _row(env: str, algo: str, cost_limit: float | None, runs: Sequence[RunRecord]) -> dict[str, Any]:
    finished = [run for run in runs if run.finished]
    eval_returns = _values(finished, "evaluation", "mean_return")
    eval_costs = _values(finished, "evaluation", "mean_cost")
    over_limit = _values(finished, "evaluation", "episodes_over_limit")
    return {
        "env": env,
        "algo": algo,
        "seeds": len(finished),
        "cost_limit": cost_limit,
        "eval_return_mean": _mean(eval_returns),
        "eval_return_std": _std(eval_returns),
        "eval_cost_mean": _mean(eval_costs),
        "eval_cost_std": _std(eval_costs),
        "eval_cost_rate_mean": _mean(_values(finished, "evaluation", "cost_rate")),
        "eval_episodes_over_limit": int(sum(over_limit)) if cost_limit is not None and over_limit else None,
        "feasible_seeds": sum(cost <= cost_limit for cost in eval_costs) if cost_limit is not None else None,
        "train_final_return_mean": _mean(_values(finished, "training", "final_return")),
        "train_final_cost_mean": _mean(_values(finished, "training", "final_cost")),
        "train_cost_rate_mean": _mean(_values(finished, "training", "cost_rate")),
        "train_seconds_mean": _mean(_values(finished, None, "train_seconds")),
        "unfinished": len(runs) - len(finished),
    }


def aggregate_results(runs: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """Aggregate runs over seeds: one row per (algorithm, environment), sorted by environment, then algorithm.

    Only finished runs (with ``summary.json``) enter the statistics; unfinished ones are counted in ``unfinished``.
    Standard deviations are over seeds (of each seed's evaluation mean, population std). Missing values (no
    finished seed, no cost limit, or a field the summaries lack) are ``None``. Runs of one algorithm and
    environment with different cost limits are different experiments and get one row per limit.

    Args:
        runs: The runs (see :func:`~sb3_safe.experiment.runs.load_run`).

    Returns:
        Rows with the columns of :data:`RESULT_COLUMNS`.
    """
    groups: dict[tuple[str, str, float | None], list[RunRecord]] = defaultdict(list)
    for run in runs:
        groups[(run.env, run.algo, run.cost_limit)].append(run)

    def order(key: tuple[str, str, float | None]) -> tuple[str, str, float]:
        return key[0], key[1], -math.inf if key[2] is None else key[2]

    return [_row(env, algo, limit, groups[(env, algo, limit)]) for env, algo, limit in sorted(groups, key=order)]


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return format(value, ".10g")
    return value


def _number(value: float | None, digits: int = 2) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def _mean_std(mean: float | None, std: float | None) -> str:
    return MISSING if mean is None else f"{mean:.2f} ± {_number(std)}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|")


def format_results_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of :func:`aggregate_results` as a GitHub Markdown table (evaluation and training statistics).

    Args:
        rows: Result rows.

    Returns:
        The table, ending with a newline.
    """
    header = [
        "env",
        "algo",
        "seeds",
        "cost limit",
        "return (eval)",
        "cost (eval)",
        "cost rate",
        "over limit",
        "feasible seeds",
        "return (train)",
        "cost (train)",
        "cost rate (train)",
        "train s",
        "unfinished",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    for row in rows:
        limit, feasible, over = row["cost_limit"], row["feasible_seeds"], row["eval_episodes_over_limit"]
        cells = [
            row["env"],
            row["algo"],
            row["seeds"],
            MISSING if limit is None else f"{limit:g}",
            _mean_std(row["eval_return_mean"], row["eval_return_std"]),
            _mean_std(row["eval_cost_mean"], row["eval_cost_std"]),
            _number(row["eval_cost_rate_mean"], 4),
            MISSING if over is None else over,
            MISSING if feasible is None else f"{feasible}/{row['seeds']}",
            _number(row["train_final_return_mean"]),
            _number(row["train_final_cost_mean"]),
            _number(row["train_cost_rate_mean"], 4),
            _number(row["train_seconds_mean"], 1),
            row["unfinished"],
        ]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(
    rows: Sequence[dict[str, Any]], csv_path: str | os.PathLike[str], markdown_path: str | os.PathLike[str]
) -> None:
    """Write result rows as CSV (the columns of :data:`RESULT_COLUMNS`) and as a Markdown table, each atomically.

    Args:
        rows: Rows of :func:`aggregate_results`.
        csv_path: CSV output path (missing values are empty cells).
        markdown_path: Markdown output path (see :func:`format_results_table`).
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RESULT_COLUMNS)
    writer.writerows([_csv_cell(row.get(column)) for column in RESULT_COLUMNS] for row in rows)
    atomic_write_text(csv_path, buffer.getvalue())
    atomic_write_text(markdown_path, format_results_table(rows))
