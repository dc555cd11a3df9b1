"""The CVPO-vs-Lagrangian grid behind ``docs/benchmarks/circle_200k/``: estimate it, run or continue it, export it.

CVPO, SAC-Lag, TD3-Lag and PPO-Lag, 3 seeds each, 200k environment steps each, every algorithm with its packaged
family defaults (``sb3_safe/hyperparams/*.yml``), on the CVPO paper's Bullet tasks SafetyBallCircle-v0 and
SafetyCarCircle-v0 (cost limit 10) and on safety-gymnasium's SafetyPointCircle1-v0 (cost limit 25). The grid is
ordered task by task (all algorithms and seeds of one task before the next), so partial results are whole tasks.

    python benchmarks/circle_200k.py --estimate 5000       # short runs of every algorithm x task: projected time
    python benchmarks/circle_200k.py --out GRID --export docs/benchmarks/circle_200k/runs --commit
                                                           # start the grid, or continue it if GRID holds one

Each run is an ordinary run directory under ``GRID/runs`` (checkpoints, replay buffers: never committed). As soon
as a run finishes, its compact results (config.yaml, episodes.csv, evaluations.csv, the multiplier diagnostics of
progress.csv and a run.json with the code's commit) are copied under ``--export`` and, with ``--commit``, committed
to the repository that holds that folder. A killed grid continues with the same command (``--resume`` semantics:
finished runs are skipped, interrupted ones resume from their last checkpoint); if the grid folder itself was lost,
``--skip-exported`` starts a new one without the points already exported. Run it from a frozen copy of the
code (a ``git worktree`` at a recorded commit, on ``PYTHONPATH``) so that later edits neither change the running
grid nor trip the resume's code check; ``benchmarks/circle_200k_report.py`` turns the exported runs into tables.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ALGOS = ("cvpo", "sac_lag", "td3_lag", "ppo_lag")
ENVS = ("SafetyBallCircle-v0", "SafetyPointCircle1-v0", "SafetyCarCircle-v0")  # CarCircle last: dropped first
SEEDS = 3
N_TIMESTEPS = 200_000
RUN_SETTINGS: dict[str, Any] = {"eval_freq": 10_000, "eval_episodes": 5, "checkpoint_freq": 20_000}
DIAGNOSTIC_PREFIXES = ("train/lambda", "train/eta", "train/qc_mean", "train/qc_threshold", "train/ep_cost_for_lambda")


def grid_configs(algos: tuple[str, ...], envs: tuple[str, ...], seeds: int, n_timesteps: int) -> list[Any]:
    """The grid's run configurations, task by task (W&B off: the committed CSVs are the record)."""
    from sb3_safe.experiment.config import build_config

    return [
        build_config(algo, env, seed=seed, n_timesteps=n_timesteps, wandb_mode="disabled", **RUN_SETTINGS)
        for env in envs
        for seed in range(seeds)
        for algo in algos
    ]


def code_commit() -> str:
    """The git commit of the imported sb3_safe package (and whether its tree has uncommitted changes)."""
    import sb3_safe

    root = Path(sb3_safe.__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--", "sb3_safe", "plugins"], capture_output=True, text=True
    ).stdout.strip()
    return head + ("-dirty" if dirty else "") if head else "unknown"


def _diagnostics(progress: Path, target: Path) -> None:
    """The multiplier and critic columns of SB3's progress.csv (rows where one of them is set)."""
    with progress.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = ["time/total_timesteps"] + [
            name for name in reader.fieldnames or [] if name.startswith(DIAGNOSTIC_PREFIXES)
        ]
        rows = [{key: row.get(key, "") for key in columns} for row in reader]
    rows = [row for row in rows if any(row[key] for key in columns[1:])]
    with target.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def export_run(run_dir: Path, target: Path, commit: str) -> None:
    """Copy one finished run's compact results into ``target`` (see the module docstring)."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir / "config.yaml", target / "config.yaml")
    for name in ("episodes.csv", "evaluations.csv"):
        shutil.copyfile(run_dir / "logs" / name, target / name)
    _diagnostics(run_dir / "logs" / "progress.csv", target / "diagnostics.csv")
    info = json.loads((run_dir / "run.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    record = {
        "status": info.get("status"),
        "commit": commit,
        "code_version": info.get("code_version"),
        "train_seconds": info.get("train_seconds"),
        "num_timesteps": summary.get("total_timesteps"),
        "resumes": info.get("resumes", 0),
        "final_evaluation": summary.get("evaluation"),
    }
    (target / "run.json").write_text(json.dumps(record, indent=2) + "\n")


def _finished(run_dir: Path) -> bool:
    run_file = run_dir / "run.json"
    if not run_file.is_file() or not (run_dir / "summary.json").is_file():
        return False
    return json.loads(run_file.read_text()).get("status") == "finished"


def _finished_export(export_root: Path, config: Any) -> bool:
    """Whether ``export_root/<algo>/<env>/seed<k>/run.json`` says this grid point finished."""
    record = export_root / config.algo / config.env / f"seed{config.seed}" / "run.json"
    return record.is_file() and json.loads(record.read_text()).get("status") == "finished"


def _commit(repo: Path, paths: list[Path], message: str) -> None:
    """Commit only ``paths`` (retrying while another git command holds the index)."""
    names = [str(path.resolve()) for path in paths]
    for _ in range(20):
        added = subprocess.run(["git", "-C", str(repo), "add", "--", *names], capture_output=True, text=True)
        done = added.returncode == 0 and (
            subprocess.run(
                ["git", "-C", str(repo), "commit", "-q", "-m", message, "--", *names], capture_output=True, text=True
            ).returncode
            == 0
        )
        if done:
            return
        time.sleep(15)
    print(f"Could not commit {names} (git busy); they stay exported, uncommitted.", flush=True)


class Exporter:
    """Exports (and commits) every run of the grid as soon as it finishes, from a background thread."""

    def __init__(self, jobs: list[tuple[Any, Path]], export_root: Path, commit: str, git_commit: bool) -> None:
        self.jobs, self.export_root, self.commit, self.git_commit = jobs, export_root, commit, git_commit
        self.done: set[Path] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def target_of(self, run_dir: Path) -> Path:
        return self.export_root / run_dir.relative_to(run_dir.parents[2])

    def sweep(self) -> None:
        for config, run_dir in self.jobs:
            if run_dir in self.done or not _finished(run_dir):
                continue
            target = self.target_of(run_dir)
            export_run(run_dir, target, self.commit)
            self.done.add(run_dir)
            print(f"Exported {config.algo} on {config.env}, seed {config.seed} -> {target}", flush=True)
            if self.git_commit:
                repo = Path(
                    subprocess.run(
                        ["git", "-C", str(target), "rev-parse", "--show-toplevel"], capture_output=True, text=True
                    ).stdout.strip()
                )
                grid = self.export_root.parent.name
                message = f"{grid}: {config.algo} on {config.env}, seed {config.seed} (code {self.commit[:12]})"
                _commit(repo, [target], message)

    def _loop(self) -> None:
        while not self._stop.wait(60):
            try:
                self.sweep()
            except Exception as error:  # a half-written run: try again at the next sweep
                print(f"Export sweep failed ({error}); retrying.", flush=True)

    def __enter__(self) -> Exporter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sweep()


def estimate(steps: int, algos: tuple[str, ...], envs: tuple[str, ...], seeds: int, n_timesteps: int) -> float:
    """Train every algorithm x task for ``steps`` steps here and print the projected grid time (hours, 2 at once)."""
    import torch

    from sb3_safe.experiment.runner import train

    torch.set_num_threads(1)
    total = 0.0
    with tempfile.TemporaryDirectory() as folder:
        for config in grid_configs(algos, envs, 1, steps):
            config = dataclasses.replace(config, eval_freq=0, checkpoint_freq=0, eval_episodes=1)
            start = time.perf_counter()
            train(config, Path(folder) / f"{config.algo}-{config.env}", progress_bar=False)
            seconds = time.perf_counter() - start
            projected = seconds * n_timesteps / steps * seeds
            total += projected
            rate = f"{steps / seconds:7.0f} steps/s"
            print(f"{config.algo:<8} {config.env:<24} {rate} -> {projected / 3600:5.2f} h", flush=True)
    print(f"Whole grid: {total / 3600:.1f} h one at a time; about {total / 3600 / 1.7:.1f} h two at a time on 2 cores")
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/circle_200k"), help="grid folder (run directories)")
    parser.add_argument("--export", type=Path, default=Path("docs/benchmarks/circle_200k/runs"))
    parser.add_argument("--commit", action="store_true", help="git-commit each exported run")
    parser.add_argument("--algos", nargs="+", default=list(ALGOS))
    parser.add_argument("--envs", nargs="+", default=list(ENVS))
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument("--n-timesteps", type=int, default=N_TIMESTEPS)
    parser.add_argument("--backend", choices=("local", "ray"), default="ray")
    parser.add_argument("--estimate", type=int, metavar="STEPS", help="only estimate the grid's time from short runs")
    parser.add_argument("--force", action="store_true", help="continue a grid whose code or config changed")
    parser.add_argument(
        "--skip-exported",
        action="store_true",
        help="when starting a new grid folder, leave out the points whose finished results are already under --export "
        "(a grid folder lost with its machine: the committed runs stand, the rest is run again)",
    )
    args = parser.parse_args(argv)

    import sb3_safe
    from sb3_safe.experiment.sweep import grid_run_dir, resume_benchmark, run_benchmark

    algos, envs = tuple(args.algos), tuple(args.envs)
    if args.estimate:
        estimate(args.estimate, algos, envs, args.seeds, args.n_timesteps)
        return 0
    commit = code_commit()
    print(f"sb3_safe from {Path(sb3_safe.__file__).parent} at commit {commit}", flush=True)
    configs = grid_configs(algos, envs, args.seeds, args.n_timesteps)
    if args.skip_exported and not (args.out / "grid.json").is_file():
        exported = [config for config in configs if _finished_export(args.export, config)]
        configs = [config for config in configs if config not in exported]
        print(f"Leaving out {len(exported)} grid points already exported under {args.export}.", flush=True)
    jobs = [(config, grid_run_dir(args.out, config)) for config in configs]
    with Exporter(jobs, args.export.resolve(), commit, args.commit):
        if (args.out / "grid.json").is_file():
            resume_benchmark(args.out, backend=args.backend, force=args.force)
        else:
            run_benchmark(configs, args.out, backend=args.backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
