"""Benchmarks: a grid of algorithms x environments x seeds, run locally or as Ray Tune trials, then aggregated.

Each grid point is an ordinary run directory, ``OUT/runs/<algo>/<env>/seed<k>``, so ``sb3-safe plot``,
``eval`` and ``resume`` work on any of them. The backend only decides where the runs execute: one after the
other in this process (``local``), or as Ray Tune trials on a local Ray instance or an existing cluster
(``ray``). At the end ``OUT/results.csv``, ``OUT/results.md`` and ``OUT/learning_curves.png`` are written.

Before any run starts, ``OUT/grid.json`` records the grid (every run configuration and its fingerprint, the code
version, the backend settings), so that :func:`resume_benchmark` (``sb3-safe benchmark --resume OUT``) can finish
an interrupted grid: finished runs are kept, runs with a checkpoint are resumed, the others are trained (again).
A benchmark or a resume holds ``OUT/.lock`` (see :mod:`sb3_safe.experiment.locks`) while it works, so one grid is
never worked on by two processes at once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sb3_safe.experiment.checkpoints import CheckpointError, read_checkpoint
from sb3_safe.experiment.config import ConfigError, RunConfig, code_version
from sb3_safe.experiment.locks import DirectoryLock
from sb3_safe.experiment.rundir import RunDirectory, RunDirectoryError
from sb3_safe.experiment.runner import ResumeRefusedError, resume, train

BACKENDS = ("local", "ray")
GRID_FILE = "grid.json"
GRID_FORMAT = 1
# What a grid point's job does: train a new run, delete a run that has no checkpoint and train it again, resume a
# run from its last checkpoint, or skip a finished run.
ACTIONS = ("train", "retrain", "resume", "skip")


class RayUnavailableError(RuntimeError):
    """Ray is not installed, or the given Ray address does not answer."""


@dataclasses.dataclass
class BenchmarkResult:
    """Where a benchmark wrote its outputs, and its aggregated rows (one per algorithm and environment)."""

    out_dir: Path
    rows: list[dict[str, Any]]
    results_csv: Path
    results_md: Path
    plot: Path | None


@dataclasses.dataclass(frozen=True)
class BenchmarkGrid:
    """The content of ``OUT/grid.json``: what a benchmark set out to run, and with which code and backend.

    Attributes:
        configs: The run configuration of every grid point, in order.
        fingerprints: ``RunConfig.fingerprint()`` of each configuration, when the grid was written.
        code_version: :func:`~sb3_safe.experiment.config.code_version` of the code that started the grid.
        sb3_safe_version: The package version that started the grid.
        created: When the grid was started (local time).
        backend: ``"local"`` or ``"ray"``.
        ray_address: The Ray cluster it ran on (None: a local Ray instance, or the local backend).
        cpus_per_trial: CPUs Ray reserved for each run.
    """

    configs: list[RunConfig]
    fingerprints: list[str]
    code_version: str
    sb3_safe_version: str
    created: str
    backend: str
    ray_address: str | None
    cpus_per_trial: float


@dataclasses.dataclass(frozen=True)
class GridJob:
    """One grid point and what to do with it.

    Attributes:
        config: The run configuration.
        run_dir: Its run directory, ``OUT/runs/<algo>/<env>/seed<k>``.
        action: One of :data:`ACTIONS`.
        detail: Why, for the progress line (e.g. ``"resuming from step 5000"``); empty for a plain new run.
        force: For ``resume``: resume even if the code or the configuration changed.
    """

    config: RunConfig
    run_dir: Path
    action: str = "train"
    detail: str = ""
    force: bool = False

    def describe(self, index: int, total: int) -> str:
        """The job's progress line, e.g. ``[2/4] CVPO on SafetyPointGoal1-v0, seed 1: resuming ... -> RUN_DIR``."""
        line = f"[{index}/{total}] {self.config.algo} on {self.config.env}, seed {self.config.seed}"
        if self.detail:
            line += f": {self.detail}"
        return line + (f" ({self.run_dir})" if self.action == "skip" else f" -> {self.run_dir}")


def grid_run_dir(out_dir: Path, config: RunConfig) -> Path:
    """``OUT/runs/<algo>/<env>/seed<k>`` for one grid point."""
    return out_dir / "runs" / config.algo / config.env.replace(":", "_").replace("/", "_") / f"seed{config.seed}"


def check_ray_address(address: str, timeout: float = 3.0) -> None:
    """Fail fast, with a clear message, if nothing answers at a Ray cluster address (``host:port``).

    ``ray.init`` keeps retrying an unreachable address for a long time; a TCP probe answers in ``timeout``
    seconds. ``"auto"`` and ``ray://`` client addresses are left to Ray.

    Raises:
        RayUnavailableError: If the TCP connection fails.
    """
    if address == "auto" or address.startswith("ray://"):
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise RayUnavailableError(f"--ray-address {address!r} is not of the form host:port (e.g. 10.0.0.5:6379).")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as error:
        raise RayUnavailableError(
            f"No Ray cluster answers at {address} ({error}). Start one with `ray start --head` on that machine, "
            "or leave out --ray-address to run on a local Ray instance. Nothing was written."
        ) from None


def _import_ray() -> Any:
    try:
        import ray
        from ray import tune  # noqa: F401
    except ImportError as error:
        raise RayUnavailableError(
            f"--backend ray needs Ray Tune ({error}). Install it with `pip install 'sb3-safe[ray]'`."
        ) from None
    return ray


def _check_backend_settings(backend: str, ray_address: str | None) -> None:
    """Refuse an unknown backend, or a Ray address without the Ray backend."""
    if backend not in BACKENDS:
        raise ConfigError(f"Unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
    if ray_address is not None and backend != "ray":
        raise ConfigError("--ray-address needs --backend ray.")


def _check_ray(backend: str, ray_address: str | None) -> None:
    """For the Ray backend: check that Ray Tune is installed and that the cluster at ``ray_address`` answers."""
    if backend == "ray":
        _import_ray()
        if ray_address is not None:
            check_ray_address(ray_address)


def _run_job(config_dict: dict[str, Any], run_dir: str, action: str, force: bool = False) -> dict[str, Any]:
    """Do one grid point's job (in a Ray worker or in this process) and return its headline numbers."""
    import torch

    os.environ.setdefault("MUJOCO_GL", "egl")
    torch.set_num_threads(1)
    if action == "resume":
        outcome = resume(run_dir, force=force, progress_bar=False)
    elif action in ("train", "retrain"):
        if action == "retrain":
            shutil.rmtree(run_dir, ignore_errors=True)  # killed before its first checkpoint: nothing to keep
        outcome = train(RunConfig(**config_dict), run_dir, progress_bar=False)
    else:
        raise ValueError(f"Unknown grid job action {action!r}; expected one of {', '.join(ACTIONS)}.")
    evaluation = (outcome.summary or {}).get("evaluation", {})
    return {
        "status": outcome.status,
        "num_timesteps": outcome.num_timesteps,
        "eval_return": evaluation.get("mean_return"),
        "eval_cost": evaluation.get("mean_cost"),
    }


def _run_on_ray(jobs: Sequence[GridJob], out_dir: Path, address: str | None, cpus: float, name: str) -> None:
    ray = _import_ray()
    from ray import tune

    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except Exception as error:
            raise RayUnavailableError(f"Could not start or join Ray ({address or 'local instance'}): {error}") from None
    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"  # trials keep our working directory; run dirs are absolute anyway
    payload = [(job.config.to_dict(), str(job.run_dir.resolve()), job.action, job.force) for job in jobs]

    def trainable(trial: dict[str, Any]) -> None:
        tune.report(_run_job(*payload[trial["index"]]))

    try:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": cpus}),
            param_space={"index": tune.grid_search(list(range(len(payload))))},
            run_config=tune.RunConfig(storage_path=str((out_dir / "ray").resolve()), name=name, verbose=0),
        )
        results = tuner.fit()
        if results.errors:
            raise RuntimeError(
                f"{len(results.errors)} of {len(payload)} Ray trials failed; first error: {results.errors[0]}"
            )
    finally:
        if started_here:
            ray.shutdown()


def _ray_experiment_name(out_dir: Path, stem: str) -> str:
    """``stem`` if ``OUT/ray/<stem>`` is free, else ``stem-2``, ``stem-3``, ...: one Tune experiment per call."""
    name, index = stem, 1
    while (out_dir / "ray" / name).exists():
        index += 1
        name = f"{stem}-{index}"
    return name


def _execute(
    jobs: Sequence[GridJob], out_dir: Path, backend: str, ray_address: str | None, cpus: float, ray_name: str
) -> None:
    """Do every job that is not ``skip``, one after the other here or as Ray Tune trials, printing a line for each."""
    if backend == "ray":
        for index, job in enumerate(jobs, start=1):
            print(job.describe(index, len(jobs)))
        todo = [job for job in jobs if job.action != "skip"]
        if todo:
            _run_on_ray(todo, out_dir, ray_address, cpus, _ray_experiment_name(out_dir, ray_name))
        return
    for index, job in enumerate(jobs, start=1):
        print(job.describe(index, len(jobs)))
        if job.action != "skip":
            _run_job(job.config.to_dict(), str(job.run_dir), job.action, job.force)


def write_grid(
    out_dir: str | os.PathLike[str],
    configs: Sequence[RunConfig],
    *,
    backend: str = "local",
    ray_address: str | None = None,
    cpus_per_trial: float = 1.0,
) -> Path:
    """Write ``OUT/grid.json`` (atomically): the grid's configurations and fingerprints, code version and backend.

    Returns:
        The path of ``grid.json``.
    """
    from sb3_safe import __version__
    from sb3_safe.common.files import atomic_write_text

    data = {
        "format": GRID_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "sb3_safe_version": __version__,
        "code_version": code_version(),
        "backend": backend,
        "ray_address": ray_address,
        "cpus_per_trial": float(cpus_per_trial),
        "runs": [{"fingerprint": config.fingerprint(), "config": config.to_dict()} for config in configs],
    }
    return atomic_write_text(Path(out_dir) / GRID_FILE, json.dumps(data, indent=2) + "\n")


def read_grid(out_dir: str | os.PathLike[str]) -> BenchmarkGrid:
    """Read ``OUT/grid.json`` back.

    Raises:
        RunDirectoryError: If it is missing, malformed, or written by a newer sb3-safe.
        ConfigError: If a stored configuration is not a run configuration.
    """
    path = Path(out_dir) / GRID_FILE
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if int(data.get("format", 0)) > GRID_FORMAT:
            raise RunDirectoryError(f"{path} was written by a newer sb3-safe (grid format {data['format']}).")
        runs = data["runs"]
        grid = BenchmarkGrid(
            configs=[RunConfig.from_dict(run["config"], f"{path} (run {i + 1})") for i, run in enumerate(runs)],
            fingerprints=[str(run["fingerprint"]) for run in runs],
            code_version=str(data["code_version"]),
            sb3_safe_version=str(data.get("sb3_safe_version", "")),
            created=str(data.get("created", "")),
            backend=str(data.get("backend", "local")),
            ray_address=data.get("ray_address"),
            cpus_per_trial=float(data.get("cpus_per_trial", 1.0)),
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        if isinstance(error, ConfigError | RunDirectoryError):
            raise
        raise RunDirectoryError(f"{path} is not a readable benchmark grid ({type(error).__name__}: {error}).") from None
    return grid


def run_benchmark(
    configs: Sequence[RunConfig],
    out_dir: str | os.PathLike[str],
    *,
    backend: str = "local",
    ray_address: str | None = None,
    cpus_per_trial: float = 1.0,
) -> BenchmarkResult:
    """Write ``OUT/grid.json``, run every configuration into ``OUT/runs/...``, and write the results table and plot.

    ``OUT`` is locked for the duration (see :class:`~sb3_safe.experiment.locks.DirectoryLock`); an interrupted
    benchmark is continued with :func:`resume_benchmark`.

    Args:
        configs: The grid (see :func:`sb3_safe.experiment.config.build_config`), validated beforehand.
        out_dir: Output folder; it must not already hold a grid or runs of this grid.
        backend: ``"local"`` (one run after the other, here) or ``"ray"`` (Ray Tune trials).
        ray_address: An existing Ray cluster (``host:port``); None starts a local instance.
        cpus_per_trial: CPUs Ray reserves for each trial.

    Raises:
        ConfigError: For an unknown backend or an output folder that already holds a grid or these runs.
        RayUnavailableError: If Ray is missing or ``ray_address`` does not answer (checked before writing).
        LockedError: If another process is working in ``out_dir``.
    """
    _check_backend_settings(backend, ray_address)
    _check_ray(backend, ray_address)
    out = Path(out_dir)
    jobs = [GridJob(config, grid_run_dir(out, config)) for config in configs]
    with DirectoryLock(out, what="benchmark grid"):
        grid_file = out / GRID_FILE
        taken = [str(job.run_dir) for job in jobs if (job.run_dir / "config.yaml").exists()]
        if grid_file.exists():
            what = f"runs of this grid ({taken[0]}, ...)" if taken else f"a benchmark grid ({grid_file})"
            raise ConfigError(
                f"{out} already holds {what}. Continue it with `sb3-safe benchmark --resume {out}`, or choose "
                "another --out."
            )
        if taken:
            raise ConfigError(
                f"{out} already holds runs of this grid ({taken[0]}, ...), written by an older sb3-safe without "
                f"{GRID_FILE}. Choose another --out (or resume single runs with `sb3-safe resume RUN_DIR`)."
            )
        write_grid(out, configs, backend=backend, ray_address=ray_address, cpus_per_trial=cpus_per_trial)
        _execute(jobs, out, backend, ray_address, cpus_per_trial, "trials")
        return aggregate(out, [job.run_dir for job in jobs])


def _point_job(config: RunConfig, run_dir: Path, force: bool) -> GridJob:
    """What to do with one grid point, from what its run directory holds."""
    if not run_dir.exists():
        return GridJob(config, run_dir, "train", "not started yet, training")
    run = RunDirectory(run_dir)
    if run.config_file.is_file():
        if run.read_json(run.run_file).get("status") == "finished" and run.summary_file.is_file():
            return GridJob(config, run_dir, "skip", "finished, skipped")
        try:
            step = int(read_checkpoint(run)["num_timesteps"])
        except CheckpointError:
            return GridJob(config, run_dir, "retrain", "its checkpoints are unreadable, training it again")
        except RunDirectoryError:
            pass
        else:
            return GridJob(config, run_dir, "resume", f"resuming from step {step}", force)
    return GridJob(config, run_dir, "retrain", "stopped before its first checkpoint, training it again")


def _changed_fields(old: RunConfig, new: RunConfig) -> list[str]:
    a, b = old.to_dict(), new.to_dict()
    return [key for key in a if key not in ("sb3_safe_version", "code_version") and a[key] != b.get(key)]


def plan_resume(out_dir: str | os.PathLike[str], grid: BenchmarkGrid, *, force: bool = False) -> list[GridJob]:
    """Decide what to do with every point of a grid (see :func:`resume_benchmark`), checking nothing changed.

    Raises:
        ResumeRefusedError: If the code, ``grid.json`` or a run's ``config.yaml`` changed since the grid started
            (a warning instead if ``force``).
    """
    out = Path(out_dir)
    problems = []
    current = code_version()
    if grid.code_version != current:
        problems.append(f"the code changed (grid started with {grid.code_version}, this is {current})")
    jobs = []
    for config, fingerprint in zip(grid.configs, grid.fingerprints, strict=True):
        label = f"{config.algo} on {config.env}, seed {config.seed}"
        if config.fingerprint() != fingerprint:
            problems.append(
                f"{out / GRID_FILE} was edited: its configuration of {label} no longer matches its fingerprint"
            )
        job = _point_job(config, grid_run_dir(out, config), force)
        if job.action in ("skip", "resume"):
            run = RunDirectory(job.run_dir)
            stored = run.read_config()
            if stored.fingerprint() != fingerprint:
                changed = ", ".join(_changed_fields(config, stored)) or "its fingerprint"
                problems.append(f"{run.config_file} differs from the grid's configuration of {label} ({changed})")
        jobs.append(job)
    if problems:
        message = f"Resuming the benchmark grid in {out}: " + "; ".join(problems) + "."
        if not force:
            raise ResumeRefusedError(message + " The results would mix versions; pass --force to resume anyway.")
        warnings.warn(message + " Resuming anyway (--force).", stacklevel=2)
    return jobs


def resume_benchmark(
    out_dir: str | os.PathLike[str],
    *,
    backend: str | None = None,
    ray_address: str | None = None,
    cpus_per_trial: float | None = None,
    force: bool = False,
) -> BenchmarkResult:
    """Finish an interrupted benchmark from its ``OUT/grid.json``, then write the results of the whole grid.

    For each grid point: a finished run (``run.json`` status ``finished`` and ``summary.json``) is kept and never
    run again; a run with a complete checkpoint is resumed (:func:`~sb3_safe.experiment.runner.resume`); a run
    directory without a checkpoint (killed before its first one) is deleted and trained anew; a missing one is
    trained. One line per point says which. ``OUT`` is locked for the duration.

    Args:
        out_dir: The benchmark's output folder (its ``--out``).
        backend: ``"local"`` or ``"ray"``; None: the grid's.
        ray_address: An existing Ray cluster (``host:port``); None starts a local Ray instance (the grid's address
            is not reused: that cluster may be gone).
        cpus_per_trial: CPUs Ray reserves for each trial; None: the grid's.
        force: Resume even if the code or a configuration changed since the grid started (with a warning); single
            runs are then resumed with ``force=True`` too.

    Raises:
        RunDirectoryError: If ``out_dir`` holds no grid (or a grid from an older sb3-safe, without ``grid.json``).
        ResumeRefusedError: If the code or a configuration changed, unless ``force``.
        LockedError: If another process (the benchmark, or another resume) is working in ``out_dir``.
        ConfigError, RayUnavailableError: For bad backend settings, as :func:`run_benchmark`.
    """
    out = Path(out_dir)
    start = f"Start one with `sb3-safe benchmark --algos ... --envs ... --out {out}`."
    if not out.is_dir():
        raise RunDirectoryError(f"{out} does not exist: there is no benchmark grid to resume. {start}")
    if not (out / GRID_FILE).is_file():
        if (out / "runs").is_dir():
            raise RunDirectoryError(
                f"{out} holds runs but no {GRID_FILE}: its grid was started by an older version of sb3-safe and "
                "cannot be resumed. Resume its runs one by one with `sb3-safe resume RUN_DIR`, or start the grid "
                "again with another --out."
            )
        raise RunDirectoryError(f"{out} holds no benchmark grid (no {GRID_FILE}). {start}")
    with DirectoryLock(out, what="benchmark grid"):
        grid = read_grid(out)
        backend = backend or grid.backend
        cpus = grid.cpus_per_trial if cpus_per_trial is None else cpus_per_trial
        _check_backend_settings(backend, ray_address)
        jobs = plan_resume(out, grid, force=force)
        counts = {action: sum(job.action == action for job in jobs) for action in ACTIONS}
        if counts["skip"] < len(jobs):
            _check_ray(backend, ray_address)
        print(
            f"Resuming the benchmark grid in {out}: {len(jobs)} runs, {counts['skip']} finished, "
            f"{counts['resume']} to resume, {counts['train'] + counts['retrain']} to train"
        )
        _execute(jobs, out, backend, ray_address, cpus, "resume")
        return aggregate(out, [job.run_dir for job in jobs])


def aggregate(out_dir: Path, run_dirs: Sequence[Path]) -> BenchmarkResult:
    """Write ``results.csv``, ``results.md`` and ``learning_curves.png`` for the given runs."""
    from sb3_safe.experiment.plots import plot_runs
    from sb3_safe.experiment.results import aggregate_results, write_results
    from sb3_safe.experiment.runs import load_run

    records = [load_run(path) for path in run_dirs]
    rows = aggregate_results(records)
    csv_path, md_path = out_dir / "results.csv", out_dir / "results.md"
    write_results(rows, csv_path, md_path)
    plot: Path | None = None
    try:
        plot = Path(plot_runs(records, out_dir / "learning_curves.png"))
    except ValueError as error:  # no finished episode anywhere (very short budgets)
        print(f"No learning-curve plot: {error}")
    return BenchmarkResult(out_dir, rows, csv_path, md_path, plot)
