"""``sb3-safe benchmark --resume OUT``: grid.json, the grid lock, and finishing a killed benchmark."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _cli_process import cli_process

from sb3_safe.cli import main
from sb3_safe.experiment import locks, sweep
from sb3_safe.experiment.config import RunConfig, code_version
from sb3_safe.experiment.locks import DirectoryLock, LockedError
from sb3_safe.experiment.rundir import RunDirectory
from sb3_safe.experiment.runner import ResumeRefusedError, RunOutcome
from sb3_safe.experiment.sweep import GRID_FILE, grid_run_dir, read_grid, resume_benchmark, write_grid

ENV = "SafetyPointGoal1-v0"
# As test_cli's FAST (benchmark has no --progress-bar): a short CVPO warm-up, the quick world reset, short episodes.
FAST = ["--hyperparams", "learning_starts=400", "--env-kwargs", "fast_reset=true", "max_episode_steps=250"]


def _wait_for(condition: Any, process: subprocess.Popen[str], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.1)


def _checkpoint_step(run_dir: Path) -> int:
    state = run_dir / "checkpoints" / "state.json"
    return int(json.loads(state.read_text())["num_timesteps"]) if state.is_file() else -1


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def test_killed_benchmark_resumes_the_rest_of_its_grid(tmp_path: Path, capsys) -> None:
    out, total = tmp_path / "bench", 1000
    process = cli_process(
        *["benchmark", "--algos", "cvpo", "--envs", ENV, "--seeds", "2", "--out", str(out), "--backend", "local"],
        *["--n-timesteps", str(total), "--n-envs", "1", "--eval-freq", "0", "--eval-episodes", "1"],
        *["--checkpoint-freq", "250", "--no-wandb", *FAST],
    )
    first, second = out / "runs" / "CVPO" / ENV / "seed0", out / "runs" / "CVPO" / ENV / "seed1"
    try:
        _wait_for(lambda: _checkpoint_step(second) >= 500, process, "a checkpoint of the second run", timeout=150)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert _checkpoint_step(second) < total and _json(second / "run.json")["status"] == "running"
    grid = _json(out / GRID_FILE)
    assert [run["config"]["seed"] for run in grid["runs"]] == [0, 1] and grid["backend"] == "local"
    assert grid["code_version"] == code_version() and len(grid["runs"][1]["fingerprint"]) == 64
    first_files = {name: (first / name).read_bytes() for name in ("run.json", "summary.json", "model.zip")}

    resumed = cli_process("benchmark", "--resume", str(out))
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output
    assert f"[1/2] CVPO on {ENV}, seed 0: finished, skipped" in output
    assert f"[2/2] CVPO on {ENV}, seed 1: resuming from step" in output
    assert {name: (first / name).read_bytes() for name in first_files} == first_files  # not run again
    assert "resumes" not in _json(first / "run.json")
    info = _json(second / "run.json")
    assert info["status"] == "finished" and info["resumes"] == 1 and info["resumed_from"] >= 500
    for run_dir in (first, second):
        assert _json(run_dir / "summary.json")["total_timesteps"] == total
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["algo"], row["env"], row["seeds"], row["unfinished"]) for row in rows] == [("CVPO", ENV, "2", "0")]

    # Once finished, --resume only rewrites the results: every point is skipped.
    assert main(["benchmark", "--resume", str(out)]) == 0
    assert "2 runs, 2 finished, 0 to resume, 0 to train" in capsys.readouterr().out
    assert _json(second / "run.json") == info


# --- fast checks on hand-made grids: what resume decides for each point, and the refusals ---------------------


def _configs(seeds: int = 4) -> list[RunConfig]:
    return [
        RunConfig(algo="CVPO", env=ENV, seed=seed, n_timesteps=1000, wandb_mode="disabled") for seed in range(seeds)
    ]


def _fake_run(out: Path, config: RunConfig, state: str) -> RunDirectory:
    """A run directory as train leaves it: ``finished``, ``checkpoint`` (killed after one) or ``started``."""
    run = RunDirectory(grid_run_dir(out, config))
    run.create()
    run.write_config(dataclasses.replace(config, code_version=code_version()))
    run.update_run_info(status="finished" if state == "finished" else "running", code_version=code_version())
    if state == "finished":
        run.write_json(run.summary_file, {"total_timesteps": config.n_timesteps})
    if state in ("finished", "checkpoint"):
        step = config.n_timesteps if state == "finished" else 500
        (run.checkpoints / f"step_{step:010d}.zip").write_bytes(b"model")
        run.write_json(run.state_file, {"num_timesteps": step, "model": f"step_{step:010d}.zip"})
    return run


@pytest.fixture
def grid(tmp_path: Path) -> Path:
    """A grid of 4 points: finished, killed after a checkpoint, killed before one, never started."""
    out = tmp_path / "grid"
    configs = _configs()
    write_grid(out, configs)
    for config, state in zip(configs, ("finished", "checkpoint", "started"), strict=False):
        _fake_run(out, config, state)
    return out


@pytest.fixture
def jobs_run(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str, bool]]:
    """Record the jobs resume_benchmark does (seed, action, force) instead of training; skip the results."""
    done: list[tuple[int, str, bool]] = []

    def fake_job(config: dict[str, Any], run_dir: str, action: str, force: bool = False) -> dict[str, Any]:
        done.append((config["seed"], action, force))
        return {}

    monkeypatch.setattr(sweep, "_run_job", fake_job)
    monkeypatch.setattr(sweep, "aggregate", lambda out, run_dirs: list(run_dirs))
    return done


def test_resume_plans_each_point_from_its_run_directory(grid: Path, jobs_run: list, capsys) -> None:
    run_dirs: Any = resume_benchmark(grid)
    assert jobs_run == [(1, "resume", False), (2, "retrain", False), (3, "train", False)]  # seed 0 finished
    assert run_dirs == [grid_run_dir(grid, config) for config in _configs()]  # results over the whole grid
    out = capsys.readouterr().out
    assert "4 runs, 1 finished, 1 to resume, 2 to train" in out
    assert "seed 0: finished, skipped" in out and "seed 1: resuming from step 500" in out
    assert "seed 2: stopped before its first checkpoint, training it again" in out
    assert "seed 3: not started yet, training" in out


def test_retrain_deletes_the_run_that_has_no_checkpoint(grid: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started = grid_run_dir(grid, _configs()[2])
    existed: list[bool] = []

    def fake_train(config: RunConfig, run_dir: str, progress_bar: bool = True) -> RunOutcome:
        existed.append(Path(run_dir).exists())  # train refuses a directory that holds a run
        return RunOutcome(RunDirectory(Path(run_dir)), "finished", config.n_timesteps)

    monkeypatch.setattr(sweep, "train", fake_train)
    assert sweep._run_job(_configs()[2].to_dict(), str(started), "retrain")["status"] == "finished"
    assert existed == [False]


def _error_of(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error  # one line, no traceback
    return error


def test_resume_of_a_folder_without_a_grid(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nothing"
    error = _error_of(capsys, "benchmark", "--resume", str(missing))
    assert f"{missing} does not exist" in error and "sb3-safe benchmark --algos" in error
    assert not missing.exists()
    error = _error_of(capsys, "benchmark", "--resume", str(tmp_path))
    assert "holds no benchmark grid (no grid.json)" in error and f"--out {tmp_path}" in error
    (tmp_path / "runs").mkdir()
    error = _error_of(capsys, "benchmark", "--resume", str(tmp_path))
    assert "started by an older version of sb3-safe and cannot be resumed" in error and "sb3-safe resume" in error
    (tmp_path / GRID_FILE).write_text("{not json")
    error = _error_of(capsys, "benchmark", "--resume", str(tmp_path))
    assert f"{tmp_path / GRID_FILE} is not a readable benchmark grid" in error


def _edit_grid(out: Path, **fields: Any) -> None:
    data = json.loads((out / GRID_FILE).read_text())
    (out / GRID_FILE).write_text(json.dumps({**data, **fields}))


def test_changed_code_is_refused_unless_forced(grid: Path, jobs_run: list, capsys) -> None:
    _edit_grid(grid, code_version="0.0.1+000000000000")
    error = _error_of(capsys, "benchmark", "--resume", str(grid))
    assert f"the code changed (grid started with 0.0.1+000000000000, this is {code_version()})" in error
    assert "--force" in error and jobs_run == []
    with pytest.warns(UserWarning, match="the code changed.*Resuming anyway"):
        resume_benchmark(grid, force=True)
    assert jobs_run == [(1, "resume", True), (2, "retrain", False), (3, "train", False)]  # the resume is forced too


def test_edited_run_config_is_refused_naming_the_change(grid: Path, jobs_run: list, capsys) -> None:
    run = RunDirectory(grid_run_dir(grid, _configs()[1]))
    run.write_config(dataclasses.replace(run.read_config(), eval_episodes=7))
    error = _error_of(capsys, "benchmark", "--resume", str(grid))
    assert f"{run.config_file} differs from the grid's configuration of CVPO on {ENV}, seed 1 (eval_episodes)" in error
    assert jobs_run == []


def test_edited_grid_file_is_refused(grid: Path, jobs_run: list) -> None:
    data = json.loads((grid / GRID_FILE).read_text())
    data["runs"][3]["config"]["n_timesteps"] = 5000
    (grid / GRID_FILE).write_text(json.dumps(data))
    with pytest.raises(ResumeRefusedError, match=f"grid.json was edited: its configuration of CVPO on {ENV}, seed 3"):
        resume_benchmark(grid)
    assert jobs_run == []
    assert read_grid(grid).configs[3].n_timesteps == 5000


def test_resume_takes_the_grid_from_grid_json(grid: Path, capsys) -> None:
    for extra in (["--algos", "cvpo"], ["--seeds", "3"], ["--n-timesteps", "10", "--no-wandb"], ["--out", "x"]):
        error = _error_of(capsys, "benchmark", "--resume", str(grid), *extra)
        assert f"--resume takes the grid from {grid / GRID_FILE}: drop {extra[0]}" in error
    error = _error_of(capsys, "benchmark", "--seeds", "2")
    assert "needs --algos and --envs (or --resume OUT" in error
    error = _error_of(capsys, "benchmark", "--algos", "cvpo", "--envs", ENV, "--force")
    assert "--force only applies to --resume OUT" in error


def test_a_new_benchmark_into_a_used_folder_suggests_resume(grid: Path, capsys) -> None:
    argv = ["benchmark", "--algos", "cvpo", "--envs", ENV, "--seeds", "2", "--out", str(grid), "--no-wandb"]
    error = _error_of(capsys, *argv)
    assert f"{grid} already holds runs of this grid" in error and f"sb3-safe benchmark --resume {grid}" in error
    (grid / "runs").rename(grid / "old-runs")
    error = _error_of(capsys, *argv)  # grid.json alone: its runs had not started
    assert "already holds a benchmark grid" in error and "--resume" in error


# --- the lock -----------------------------------------------------------------------------------------------------

HOLD = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("locks", sys.argv[1])
locks = sys.modules["locks"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(locks)
lock = locks.DirectoryLock(sys.argv[2], what="benchmark grid").acquire()
print("locked", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Any:
    """Start a process that holds the lock of a folder; yields a function (folder -> process)."""
    started: list[subprocess.Popen[str]] = []

    def hold(folder: Path) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLD, locks.__file__, str(folder)], stdout=subprocess.PIPE, text=True
        )
        started.append(process)
        assert process.stdout is not None and process.stdout.readline() == "locked\n"
        return process

    yield hold
    for process in started:
        process.kill()
        process.communicate()


def test_a_second_lock_names_the_holder_and_a_killed_holder_leaves_none(tmp_path: Path, holder: Any) -> None:
    folder = tmp_path / "grid"
    process = holder(folder)
    with pytest.raises(LockedError) as refused:
        DirectoryLock(folder, what="benchmark grid").acquire()
    message = str(refused.value)
    assert f"{folder} is in use: another process is running this benchmark grid (PID {process.pid}" in message
    assert "python -c" in message and f"kill {process.pid}" in message and "Wait for it to finish" in message
    assert refused.value.holder.pid == process.pid
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert DirectoryLock(folder).holder().pid == process.pid  # the file still names it, but locks nothing
    with DirectoryLock(folder) as lock:
        assert lock.locked and lock.holder().pid == os.getpid()
        with pytest.raises(LockedError, match=f"PID {os.getpid()}"):  # per lock object, even in one process
            DirectoryLock(folder).acquire()
    assert not lock.locked and lock.holder() is None  # a clean release empties the file


def test_resume_refuses_while_another_process_works_on_the_grid(grid: Path, holder: Any, capsys) -> None:
    process = holder(grid)
    error = _error_of(capsys, "benchmark", "--resume", str(grid))
    assert f"PID {process.pid}" in error and "Wait for it to finish" in error
    error = _error_of(capsys, "benchmark", "--algos", "cvpo", "--envs", ENV, "--seeds", "1", "--out", str(grid))
    assert f"PID {process.pid}" in error  # the original benchmark holds the same lock


# --- Ray: a resume is a second Tune experiment in the same OUT ---------------------------------------------------


def test_resume_on_ray_runs_a_second_tune_experiment(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    out = tmp_path / "bench"
    argv = ["--n-timesteps", "1000", "--n-envs", "1", "--eval-freq", "0", "--eval-episodes", "1", "--no-wandb"]
    argv += ["--hyperparams", "n_steps=500", "batch_size=100", "n_epochs=1", "--env-kwargs", "fast_reset=true"]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        grid_argv = ["benchmark", "--algos", "ppo_lag", "--envs", ENV, "--seeds", "2", "--backend", "ray"]
        assert main([*grid_argv, "--out", str(out), *argv]) == 0
        first, second = (out / "runs" / "PPOLag" / ENV / f"seed{seed}" for seed in (0, 1))
        # Pretend the second run was killed after its last checkpoint, and the first before it started.
        (second / "summary.json").unlink()
        RunDirectory(second).update_run_info(status="running")
        import shutil

        shutil.rmtree(first)
        assert main(["benchmark", "--resume", str(out)]) == 0  # the grid's backend: ray
    finally:
        ray.shutdown()
    assert {path.parent.parent.name for path in (out / "ray").rglob("result.json")} == {"trials", "resume"}
    assert _json(second / "run.json")["resumes"] == 1
    assert "resumes" not in _json(first / "run.json") and _json(first / "summary.json")["total_timesteps"] == 1000
    with open(out / "results.csv", newline="") as handle:
        assert [row["seeds"] for row in csv.DictReader(handle)] == ["2"]
