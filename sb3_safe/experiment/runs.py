"""Reading finished (or interrupted) training runs back from their run directories, for plots and result tables.

A run directory is what ``sb3-safe train`` writes (see :mod:`sb3_safe.experiment.rundir`); this module only reads
``config.yaml``, ``logs/episodes.csv``, ``logs/evaluations.csv`` and ``summary.json`` (absent if the run was
interrupted) and needs none of the training stack.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sb3_safe.experiment.rundir import RunDirectory, RunDirectoryError
from sb3_safe.hyperparams import parse_yaml

CONFIG_FILE = "config.yaml"


class NotARunDirectoryError(RunDirectoryError):
    """A path that is neither a run directory nor a folder holding run directories."""

    def __init__(self, path: str | os.PathLike[str], problem: str | None = None) -> None:
        self.path = Path(path)
        if problem is None:
            problem = "is not a directory" if not self.path.is_dir() else f"has no {CONFIG_FILE}"
        super().__init__(
            f"{self.path} is not a run directory: it {problem}. Pass a directory written by `sb3-safe train` "
            f"(it holds {CONFIG_FILE}), or a folder containing such directories."
        )


@dataclasses.dataclass
class RunRecord:
    """Everything a plot or a results table needs from one run directory.

    Attributes:
        path: The run directory.
        config: The resolved configuration (``config.yaml``).
        episodes: Finished training episodes (``timestep``, ``return``, ``cost``, ``length``).
        evaluations: Periodic evaluations (``timestep``, ``mean_return``, ``mean_cost``, ...).
        summary: ``summary.json``, or ``None`` if the run did not finish.
    """

    path: Path
    config: dict[str, Any]
    episodes: list[dict[str, float]]
    evaluations: list[dict[str, float]]
    summary: dict[str, Any] | None

    @property
    def algo(self) -> str:
        """The algorithm name, e.g. ``"CVPO"``."""
        return str(self.config.get("algo", "?"))

    @property
    def env(self) -> str:
        """The environment id."""
        return str(self.config.get("env", "?"))

    @property
    def seed(self) -> int | None:
        """The random seed, if the configuration has one."""
        seed = self.config.get("seed")
        return None if seed is None else int(seed)

    @property
    def cost_limit(self) -> float | None:
        """The per-episode cost limit, or ``None`` for an unconstrained run."""
        limit = self.config.get("cost_limit")
        return None if limit is None else float(limit)

    @property
    def finished(self) -> bool:
        """Whether the run finished (it wrote ``summary.json``)."""
        return self.summary is not None


def read_csv_rows(path: str | os.PathLike[str]) -> list[dict[str, float]]:
    """Read a CSV file with a header line and numeric cells; empty cells become NaN.

    Args:
        path: The CSV file.

    Returns:
        One ``{column: value}`` per row; ``[]`` for an empty file.

    Raises:
        ValueError: If a row has the wrong number of cells or a cell is not a number (names the file and line).
    """
    path = Path(path)
    rows: list[dict[str, float]] = []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            if None in row or None in row.values():
                raise ValueError(
                    f"{path} is malformed: line {reader.line_num} does not have one cell per column of the header "
                    f"{reader.fieldnames}. Delete or repair that line."
                )
            try:
                rows.append({key: float(value) if value.strip() else float("nan") for key, value in row.items()})
            except ValueError as error:
                raise ValueError(
                    f"{path} is malformed: line {reader.line_num} has a cell that is not a number ({error})."
                ) from None
    return rows


def _read_config(path: Path) -> dict[str, Any]:
    config = parse_yaml(path.read_text(), str(path))
    if not isinstance(config, dict):
        raise ValueError(f"{path} is not a run configuration (expected a mapping, got {type(config).__name__}).")
    return config


def _read_summary(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(summary, dict):
        raise ValueError(f"{path} is not a run summary (expected a JSON object).")
    return summary


def load_run(path: str | os.PathLike[str]) -> RunRecord:
    """Read one run directory.

    Args:
        path: A directory written by ``sb3-safe train``.

    Returns:
        The run; missing CSV files give empty lists, a missing ``summary.json`` gives ``summary=None``.

    Raises:
        NotARunDirectoryError: If ``path`` is not a directory or has no ``config.yaml``.
        ValueError: If a file of the run is malformed (the message names it).
    """
    run = RunDirectory(Path(path))
    if not run.root.is_dir() or not run.config_file.is_file():
        raise NotARunDirectoryError(run.root)
    return RunRecord(
        path=run.root,
        config=_read_config(run.config_file),
        episodes=read_csv_rows(run.episodes_csv) if run.episodes_csv.is_file() else [],
        evaluations=read_csv_rows(run.evaluations_csv) if run.evaluations_csv.is_file() else [],
        summary=_read_summary(run.summary_file),
    )


def find_runs(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The run directories in ``paths``.

    Args:
        paths: Run directories, or folders holding run directories at any depth (e.g. a benchmark output folder,
            ``BENCH/runs/<algo>/<env>/seed<k>/``).

    Returns:
        The run directories, sorted and without duplicates.

    Raises:
        NotARunDirectoryError: If a path is neither a run directory nor a folder containing one.
    """
    found: set[Path] = set()
    for path in paths:
        root = Path(path)
        if (root / CONFIG_FILE).is_file():
            found.add(root.resolve())
            continue
        if not root.is_dir():
            raise NotARunDirectoryError(root)
        nested: set[Path] = set()
        for folder, subfolders, files in os.walk(root):
            if CONFIG_FILE in files:  # a run: do not look inside it (wandb/*/files/config.yaml is no run)
                nested.add(Path(folder).resolve())
                subfolders.clear()
        if not nested:
            raise NotARunDirectoryError(root, f"has no {CONFIG_FILE}, nor any folder below it")
        found |= nested
    return sorted(found)
