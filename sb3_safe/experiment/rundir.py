"""The run directory: where one training run keeps its configuration, checkpoints, logs, W&B run, plots and videos.

::

    RUN_DIR/
      .lock                    held by the process training the run (see :mod:`sb3_safe.experiment.locks`)
      config.yaml              the resolved configuration (``sb3-safe resume`` reads it back)
      run.json                 status (running / interrupted / failed / finished), W&B run id, code version
      checkpoints/state.json   the newest complete checkpoint: step counter and the files below
      checkpoints/state.previous.json   the one before it (``resume`` falls back to it)
      checkpoints/step_<N>.zip, step_<N>_replay_buffer.pkl   the files of those two checkpoints
      checkpoints/best_model.zip   best feasible evaluation so far
      logs/progress.csv        SB3's logger (continuous across resumes)
      logs/tensorboard/        the same metrics for TensorBoard
      logs/episodes.csv        every finished training episode: timestep, return, cost, length
      logs/evaluations.csv     every periodic evaluation
      wandb/                   the W&B run (offline runs: ``wandb sync RUN_DIR/wandb/offline-run-*``)
      model.zip                the final model
      summary.json             final evaluation and training statistics
      plots/learning_curve.png
      videos/
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from sb3_safe.common.files import atomic_path, atomic_write_text
from sb3_safe.experiment.config import ConfigError, RunConfig
from sb3_safe.hyperparams import parse_yaml

EVALUATION_FIELDS = (
    "timestep",
    "mean_return",
    "std_return",
    "mean_cost",
    "std_cost",
    "cost_rate",
    "mean_length",
    "episodes_over_limit",
)


class RunDirectoryError(ValueError):
    """A path that is not a usable run directory; the message says what is missing and what to do."""


@dataclasses.dataclass(frozen=True)
class RunDirectory:
    """Paths of a run directory (see the module docstring for the layout)."""

    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / "config.yaml"

    @property
    def run_file(self) -> Path:
        return self.root / "run.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def state_file(self) -> Path:
        return self.checkpoints / "state.json"

    @property
    def previous_state_file(self) -> Path:
        return self.checkpoints / "state.previous.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def progress_csv(self) -> Path:
        return self.logs / "progress.csv"

    @property
    def episodes_csv(self) -> Path:
        return self.logs / "episodes.csv"

    @property
    def evaluations_csv(self) -> Path:
        return self.logs / "evaluations.csv"

    @property
    def tensorboard(self) -> Path:
        return self.logs / "tensorboard"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def videos(self) -> Path:
        return self.root / "videos"

    @property
    def model_file(self) -> Path:
        return self.root / "model.zip"

    @property
    def summary_file(self) -> Path:
        return self.root / "summary.json"

    def check_new(self) -> None:
        """Refuse a directory that already holds a run.

        Raises:
            RunDirectoryError: Saying how to continue that run instead.
        """
        if self.config_file.exists():
            raise RunDirectoryError(
                f"{self.root} already holds a run. Continue it with `sb3-safe resume {self.root}`, or pick another "
                "--run-dir."
            )

    def create(self) -> None:
        """Make the folders of a new run.

        Raises:
            RunDirectoryError: If the directory already holds a run.
        """
        self.check_new()
        for folder in (self.root, self.checkpoints, self.logs, self.plots, self.videos):
            folder.mkdir(parents=True, exist_ok=True)

    @classmethod
    def existing(cls, path: str | os.PathLike[str]) -> RunDirectory:
        """Open the run directory at ``path``.

        Raises:
            RunDirectoryError: If ``path`` is not a directory written by ``sb3-safe train``.
        """
        root = Path(path)
        if not root.is_dir():
            raise RunDirectoryError(f"{root} is not a directory. Pass a run directory written by `sb3-safe train`.")
        run = cls(root)
        if not run.config_file.is_file():
            raise RunDirectoryError(
                f"{root} is not a run directory: it has no config.yaml. Pass a directory written by `sb3-safe train` "
                "(its --run-dir)."
            )
        return run

    def write_config(self, config: RunConfig) -> None:
        """Save the configuration as YAML (atomically)."""
        atomic_write_text(self.config_file, yaml.safe_dump(config.to_dict(), sort_keys=False))

    def read_config(self) -> RunConfig:
        """Read ``config.yaml`` back.

        Raises:
            HyperparameterFileError: If it is malformed (file and line).
            ConfigError: If it is not a run configuration.
        """
        data = parse_yaml(self.config_file.read_text(), str(self.config_file))
        if not isinstance(data, dict):
            raise ConfigError(f"{self.config_file} is not a run configuration.")
        return RunConfig.from_dict(data, str(self.config_file))

    def read_json(self, path: Path) -> dict[str, Any]:
        """A JSON file of the run, or ``{}`` if it does not exist.

        Raises:
            RunDirectoryError: If it is not a JSON object (naming the file).
        """
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text())
        except ValueError as error:
            raise RunDirectoryError(f"{path} is not valid JSON ({error}). Repair or delete it.") from None
        if not isinstance(data, dict):
            raise RunDirectoryError(f"{path} is not a JSON object. Repair or delete it.")
        return data

    def write_json(self, path: Path, data: dict[str, Any]) -> None:
        """Write a JSON file of the run atomically."""
        atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def update_run_info(self, drop: Iterable[str] = (), **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into ``run.json`` (removing the keys in ``drop``); returns the new content."""
        info = {key: value for key, value in self.read_json(self.run_file).items() if key not in set(drop)}
        info.update(fields)
        self.write_json(self.run_file, info)
        return info


def truncate_csv(path: Path, column: str, max_value: float) -> int:
    """Drop the rows whose ``column`` exceeds ``max_value`` (rows logged after the checkpoint a resume starts from).

    Rows with fewer cells than the header (a write cut short by a kill or a full disk) are dropped too.

    Returns:
        The number of rows kept. A missing file keeps 0 rows; a file without ``column`` is left as it is.
    """
    if not path.is_file():
        return 0
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        rows = list(reader)
    if header is None or column not in header:
        return len(rows)
    index = header.index(column)

    def keep(row: list[str]) -> bool:
        if len(row) < len(header):
            return False
        try:
            return float(row[index]) <= max_value
        except (IndexError, ValueError):
            return True

    kept = [row for row in rows if keep(row)]
    with atomic_path(path) as temp, open(temp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(kept)
    return len(kept)
