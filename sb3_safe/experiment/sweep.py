"""Benchmarks: a grid of algorithms x environments x seeds, run locally or as Ray Tune trials, then aggregated.

Each grid point is an ordinary run directory, ``OUT/runs/<algo>/<env>/seed<k>``, so ``sb3-safe plot``,
``eval`` and ``resume`` work on any of them. The backend only decides where the runs execute: one after the
other in this process (``local``), or as Ray Tune trials on a local Ray instance or an existing cluster
(``ray``). At the end ``OUT/results.csv``, ``OUT/results.md`` and ``OUT/learning_curves.png`` are written.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sb3_safe.experiment.config import ConfigError, RunConfig
from sb3_safe.experiment.runner import train

BACKENDS = ("local", "ray")


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


def _train_trial(config_dict: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """Run one grid point (in a Ray worker or in this process) and return its headline numbers."""
    import torch

    os.environ.setdefault("MUJOCO_GL", "egl")
    torch.set_num_threads(1)
    outcome = train(RunConfig(**config_dict), run_dir, progress_bar=False)
    evaluation = (outcome.summary or {}).get("evaluation", {})
    return {
        "num_timesteps": outcome.num_timesteps,
        "eval_return": evaluation.get("mean_return"),
        "eval_cost": evaluation.get("mean_cost"),
    }


def _run_on_ray(jobs: Sequence[tuple[RunConfig, Path]], out_dir: Path, address: str | None, cpus: float) -> None:
    ray = _import_ray()
    from ray import tune

    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except Exception as error:
            raise RayUnavailableError(f"Could not start or join Ray ({address or 'local instance'}): {error}") from None
    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"  # trials keep our working directory; run dirs are absolute anyway
    payload = [(config.to_dict(), str(run_dir.resolve())) for config, run_dir in jobs]

    def trainable(trial: dict[str, Any]) -> None:
        config_dict, run_dir = payload[trial["index"]]
        tune.report(_train_trial(config_dict, run_dir))

    try:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": cpus}),
            param_space={"index": tune.grid_search(list(range(len(payload))))},
            run_config=tune.RunConfig(storage_path=str((out_dir / "ray").resolve()), name="trials", verbose=0),
        )
        results = tuner.fit()
        if results.errors:
            raise RuntimeError(
                f"{len(results.errors)} of {len(payload)} Ray trials failed; first error: {results.errors[0]}"
            )
    finally:
        if started_here:
            ray.shutdown()


def run_benchmark(
    configs: Sequence[RunConfig],
    out_dir: str | os.PathLike[str],
    *,
    backend: str = "local",
    ray_address: str | None = None,
    cpus_per_trial: float = 1.0,
) -> BenchmarkResult:
    """Run every configuration into ``OUT/runs/...`` and write the results table and plot.

    Args:
        configs: The grid (see :func:`sb3_safe.experiment.config.build_config`), validated beforehand.
        out_dir: Output folder; it must not already hold runs of this grid.
        backend: ``"local"`` (one run after the other, here) or ``"ray"`` (Ray Tune trials).
        ray_address: An existing Ray cluster (``host:port``); None starts a local instance.
        cpus_per_trial: CPUs Ray reserves for each trial.

    Raises:
        ConfigError: For an unknown backend or an output folder that already holds these runs.
        RayUnavailableError: If Ray is missing or ``ray_address`` does not answer (checked before writing).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"Unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
    if ray_address is not None and backend != "ray":
        raise ConfigError("--ray-address needs --backend ray.")
    out = Path(out_dir)
    jobs = [(config, grid_run_dir(out, config)) for config in configs]
    taken = [str(run_dir) for _, run_dir in jobs if (run_dir / "config.yaml").exists()]
    if taken:
        raise ConfigError(f"{out} already holds runs of this grid ({taken[0]}, ...). Choose another --out.")
    if backend == "ray":
        _import_ray()
        if ray_address is not None:
            check_ray_address(ray_address)
    out.mkdir(parents=True, exist_ok=True)
    if backend == "ray":
        _run_on_ray(jobs, out, ray_address, cpus_per_trial)
    else:
        for index, (config, run_dir) in enumerate(jobs, start=1):
            print(f"[{index}/{len(jobs)}] {config.algo} on {config.env}, seed {config.seed} -> {run_dir}")
            _train_trial(config.to_dict(), str(run_dir))
    return aggregate(out, [run_dir for _, run_dir in jobs])


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
