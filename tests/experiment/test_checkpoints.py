"""Checkpoints and resume: two kept checkpoints and the fallback, cleanup, trimmed replay buffers, the run lock, a
run killed before its first checkpoint, a full disk, and the permissions of atomically written files."""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_safe.cli import main
from sb3_safe.common.buffers import CostDictReplayBuffer, CostNStepReplayBuffer, CostReplayBuffer
from sb3_safe.common.files import append_csv_row, atomic_path, atomic_write_text, is_temporary
from sb3_safe.experiment.checkpoints import (
    CheckpointError,
    CheckpointFallbackWarning,
    read_checkpoint,
    save_replay_buffer,
)
from sb3_safe.experiment.config import RunConfig, build_config
from sb3_safe.experiment.locks import DirectoryLock, LockedError
from sb3_safe.experiment.rundir import RunDirectory
from sb3_safe.experiment.runner import _build_model, _make_vec_env, resume, train
from sb3_safe.experiment.runs import read_csv_rows

ENV = "ToyConstrained-v0"  # horizon 20: an episode row every 20 steps
SMALL = {"learning_starts": 50, "batch_size": 32, "policy_kwargs": {"net_arch": [16]}}
LEFTOVER = ".step_0000000400_replay_buffer.vey6qlu0.pkl"  # a temporary of a killed write, as the issue found it


def _config(n_timesteps: int = 500, checkpoint_freq: int = 100, **overrides: Any) -> RunConfig:
    return build_config(
        "cvpo",
        ENV,
        n_timesteps=n_timesteps,
        n_envs=1,
        overrides={**SMALL, **overrides},
        eval_freq=100,
        eval_episodes=1,
        checkpoint_freq=checkpoint_freq,
        wandb_mode="disabled",
    )


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _checkpoint_files(run: RunDirectory) -> list[str]:
    return sorted(path.name for path in run.checkpoints.glob("step_*"))


def _temporaries(root: Path) -> list[Path]:
    return [path for path in root.rglob(".*") if is_temporary(path)]


def _timesteps(path: Path) -> list[float]:
    return [row["timestep"] for row in read_csv_rows(path)]


def _as_if_killed(run: RunDirectory) -> None:
    """Make a finished run look like one killed after its last checkpoint (run.json says running)."""
    run.summary_file.unlink()
    run.model_file.unlink()
    run.update_run_info(status="running")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 500-step CVPO run on the toy task, a checkpoint every 100 steps (umask 022: files 0644)."""
    run_dir = tmp_path_factory.mktemp("checkpoints") / "run"
    previous = os.umask(0o022)
    try:
        assert train(_config(), run_dir, progress_bar=False).status == "finished"
    finally:
        os.umask(previous)
    return run_dir


@pytest.fixture
def killed(finished: Path, tmp_path: Path) -> RunDirectory:
    """A copy of ``finished``, as if killed after its last checkpoint."""
    import shutil

    run = RunDirectory(tmp_path / "run")
    shutil.copytree(finished, run.root)
    _as_if_killed(run)
    return run


# --- two checkpoints, the fallback, cleanup --------------------------------------------------------------------


def test_the_two_newest_checkpoints_are_kept(finished: Path) -> None:
    run = RunDirectory(finished)
    newest, previous = _json(run.state_file), _json(run.previous_state_file)
    assert newest["num_timesteps"] == 500 and 0 < previous["num_timesteps"] < 500
    names = {newest["model"], newest["replay_buffer"], previous["model"], previous["replay_buffer"]}
    assert _checkpoint_files(run) == sorted(names)  # exactly two complete checkpoints, older ones deleted
    assert not _temporaries(finished)


@pytest.mark.parametrize("broken", ["model", "replay_buffer", "state.json"])
def test_resume_falls_back_to_the_previous_checkpoint(killed: RunDirectory, broken: str) -> None:
    run = killed
    newest, previous = _json(run.state_file), _json(run.previous_state_file)
    if broken == "state.json":
        run.state_file.write_text(run.state_file.read_text()[:40])  # cut short
        culprit = run.state_file
    else:
        culprit = run.checkpoints / newest[broken]
        culprit.write_bytes(culprit.read_bytes()[: culprit.stat().st_size // 2])  # a truncated zip / pickle
    (run.checkpoints / LEFTOVER).write_bytes(b"x" * 1000)
    (run.root / ".run.0123abcd.tmp.json").write_text("{")
    with pytest.warns(CheckpointFallbackWarning, match=re.escape(str(culprit)) + ".*previous checkpoint instead"):
        outcome = resume(run.root, progress_bar=False)
    assert outcome.status == "finished" and outcome.num_timesteps == 500
    info = _json(run.run_file)
    assert info["status"] == "finished" and info["resumed_from"] == previous["num_timesteps"]
    # The logs continue from the previous checkpoint: every evaluation once, at the same steps.
    assert _timesteps(run.evaluations_csv) == [100.0, 200.0, 300.0, 400.0, 500.0]
    episodes = _timesteps(run.episodes_csv)
    assert episodes == sorted(set(episodes)) and episodes[-1] == 500.0
    # The broken checkpoint and the leftovers are gone; two complete checkpoints again.
    assert not _temporaries(run.root)
    assert _json(run.state_file)["num_timesteps"] == 500
    assert _json(run.previous_state_file)["num_timesteps"] == previous["num_timesteps"]
    assert len(_checkpoint_files(run)) == 4


def test_both_checkpoints_unreadable_is_one_line_naming_the_files(killed: RunDirectory, capsys) -> None:
    run = killed
    newest, previous = _json(run.state_file), _json(run.previous_state_file)
    (run.checkpoints / newest["model"]).write_bytes(b"PK\x03\x04 not a zip")
    (run.checkpoints / previous["replay_buffer"]).write_bytes(b"\x80\x05 truncated")
    with pytest.raises(CheckpointError):
        resume(run.root, progress_bar=False)
    assert main(["resume", str(run.root), "--no-progress-bar"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error
    assert newest["model"] in error and previous["replay_buffer"] in error and "unreadable" in error
    assert _json(run.run_file)["status"] == "running"  # untouched: nothing was resumed
    assert read_checkpoint(run)["num_timesteps"] == 500  # cheap checks only: the files exist


# --- the replay buffer: only the filled part on disk -------------------------------------------------------------


def _assert_same_buffer(restored: Any, original: Any) -> None:
    assert type(restored) is type(original)
    assert (restored.pos, restored.full, restored.buffer_size) == (original.pos, original.full, original.buffer_size)
    for name, value in vars(original).items():
        if isinstance(value, np.ndarray):
            other = getattr(restored, name)
            assert other.shape == value.shape and other.dtype == value.dtype and np.array_equal(other, value), name
        elif isinstance(value, dict) and all(isinstance(item, np.ndarray) for item in value.values()):
            for key, item in value.items():
                assert (
                    np.array_equal(getattr(restored, name)[key], item)
                    and getattr(restored, name)[key].shape == item.shape
                )
    for seed in range(3):
        np.random.seed(seed)
        a = original.sample(16)
        np.random.seed(seed)
        b = restored.sample(16)
        for x, y in zip(a, b, strict=True):
            if isinstance(x, dict):
                assert all(th.equal(x[key], y[key]) for key in x)
            elif x is not None:
                assert th.equal(x, y)


def test_a_200_step_cvpo_checkpoint_stores_200_rows_of_its_200k_buffer(tmp_path: Path) -> None:
    config = _config(n_timesteps=200, buffer_size=200_000)
    model = _build_model(config, _make_vec_env(config))
    model.learn(200)
    buffer = model.replay_buffer
    full_size = sum(value.nbytes for value in vars(buffer).values() if isinstance(value, np.ndarray))
    assert buffer.pos == 200 and full_size > 5_000_000
    path = tmp_path / "buffer.pkl"
    save_replay_buffer(buffer, path)
    assert path.stat().st_size < 100_000  # not the preallocated 200k rows
    model.load_replay_buffer(path)  # SB3's own loader reads it back whole
    _assert_same_buffer(model.replay_buffer, buffer)
    assert model.replay_buffer is not buffer


def _fill(buffer: Any, n: int, rng: np.random.Generator, observation: Any) -> None:
    for step in range(n):
        obs, next_obs = observation(rng), observation(rng)
        action = rng.normal(size=(buffer.n_envs, 1)).astype(np.float32)
        reward = rng.normal(size=buffer.n_envs).astype(np.float32)
        done = rng.random(buffer.n_envs) < 0.1
        infos = [
            {"cost": float(rng.random() < 0.3), "TimeLimit.truncated": step % 7 == 0} for _ in range(buffer.n_envs)
        ]
        buffer.add(obs, next_obs, action, reward, done, infos)


@pytest.mark.parametrize("kind", ["plain", "nstep", "dict", "wrapped", "memory"])
def test_trimmed_buffers_load_identically(kind: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    action_space = spaces.Box(-1, 1, shape=(1,), dtype=np.float32)
    box = spaces.Box(-1, 1, shape=(3,), dtype=np.float32)
    size, n_envs = 64, 2
    if kind == "dict":
        space = spaces.Dict({"a": box, "b": spaces.Box(-1, 1, shape=(2,), dtype=np.float32)})
        buffer: Any = CostDictReplayBuffer(size, space, action_space, n_envs=n_envs)

        def observation(rng: np.random.Generator) -> Any:
            return {key: rng.normal(size=(n_envs, *sub.shape)).astype(np.float32) for key, sub in space.spaces.items()}
    else:
        if kind == "nstep":
            buffer = CostNStepReplayBuffer(size, box, action_space, n_envs=n_envs, n_steps=3, gamma=0.9)
        else:
            memory = kind == "memory"
            buffer = CostReplayBuffer(
                size,
                box,
                action_space,
                n_envs=n_envs,
                optimize_memory_usage=memory,
                handle_timeout_termination=not memory,
            )

        def observation(rng: np.random.Generator) -> Any:
            return rng.normal(size=(n_envs, 3)).astype(np.float32)

    _fill(buffer, 45 if kind == "wrapped" else 11, rng, observation)  # 45 x 2 envs wraps the 32 rows per env
    assert buffer.full == (kind == "wrapped")
    path = tmp_path / "buffer.pkl"
    save_replay_buffer(buffer, path)
    with open(path, "rb") as handle:
        restored = pickle.load(handle)
    _assert_same_buffer(restored, buffer)
    _fill(buffer, 3, np.random.default_rng(1), observation)  # both go on the same way
    _fill(restored, 3, np.random.default_rng(1), observation)
    _assert_same_buffer(restored, buffer)


# --- the lock ----------------------------------------------------------------------------------------------------


def test_a_locked_run_directory_refuses_train_and_resume(killed: RunDirectory, tmp_path: Path, capsys) -> None:
    with DirectoryLock(killed.root, what="training run"):
        with pytest.raises(LockedError, match=f"PID {os.getpid()}"):
            resume(killed.root, progress_bar=False)
        assert main(["resume", str(killed.root)]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and f"PID {os.getpid()}" in error and "training run" in error
    starting = tmp_path / "starting"  # a train that has taken the lock but not written config.yaml yet
    with DirectoryLock(starting, what="training run"):
        argv = ["train", "--algo", "cvpo", "--env", ENV, "--run-dir", str(starting), "--no-wandb", "--n-envs", "1"]
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert f"PID {os.getpid()}" in captured.err and "Training" not in captured.out
    assert not (starting / "config.yaml").exists()
    assert _json(killed.run_file)["status"] == "running" and "resumes" not in _json(killed.run_file)


# --- a run killed before its first checkpoint ----------------------------------------------------------------------

KILLED_TRAIN = """
import sys
sys.path.insert(0, sys.argv[1])
from toy_env import register_toy_envs
register_toy_envs()
from sb3_safe.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_a_run_killed_before_its_first_checkpoint_resumes_from_step_0(tmp_path: Path, capsys) -> None:
    run = RunDirectory(tmp_path / "early")
    total = 400
    argv = ["train", "--algo", "cvpo", "--env", ENV, "--n-timesteps", str(total), "--n-envs", "1", "--no-wandb"]
    argv += ["--eval-freq", "0", "--checkpoint-freq", "100000", "--run-dir", str(run.root), "--no-progress-bar"]
    argv += ["--hyperparams", "learning_starts=20", "batch_size=16", "policy_kwargs={net_arch: [8]}"]
    argv += ["utd_ratio=1", "train_freq=20", "buffer_size=100000"]  # slow enough to be killed in the middle
    tests = str(Path(__file__).parents[1])
    process = subprocess.Popen([sys.executable, "-c", KILLED_TRAIN, tests, *argv], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (run.episodes_csv.is_file() and len(read_csv_rows(run.episodes_csv)) >= 2):
            if process.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        output = process.communicate()[0]
    assert process.returncode == -signal.SIGKILL, output
    assert not run.state_file.exists() and _json(run.run_file)["status"] == "running"
    first_attempt = _timesteps(run.episodes_csv)

    assert main(argv) == 2  # train: that directory holds a run ...
    assert "already holds a run" in capsys.readouterr().err
    assert main(["resume", str(run.root), "--no-progress-bar"]) == 0  # ... and resume trains it from step 0
    assert "Training CVPO" in capsys.readouterr().out
    info = _json(run.run_file)
    assert info["status"] == "finished" and info["resumed_from"] == 0 and info["resumes"] == 1
    assert _json(run.summary_file)["total_timesteps"] == total
    episodes = _timesteps(run.episodes_csv)  # started over: the killed attempt's rows are gone
    assert episodes == [20.0 * k for k in range(1, total // 20 + 1)] and len(first_attempt) >= 2
    progress = [row["time/total_timesteps"] for row in read_csv_rows(run.progress_csv)]
    assert progress == sorted(progress) and progress[-1] == total


# --- a full disk ---------------------------------------------------------------------------------------------------


def test_a_full_disk_is_one_line_marks_the_run_failed_and_leaves_no_orphans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    dumps: list[int] = []
    real_dump = pickle.dump

    def dump(obj: Any, handle: Any, *args: Any, **kwargs: Any) -> None:
        dumps.append(1)
        if len(dumps) < 3:  # the first two checkpoints' replay buffers are written, the third fills the disk
            return real_dump(obj, handle, *args, **kwargs)
        handle.write(b"\x80\x05partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pickle, "dump", dump)
    run = RunDirectory(tmp_path / "full")
    argv = ["train", "--algo", "cvpo", "--env", ENV, "--n-timesteps", "500", "--n-envs", "1", "--no-wandb"]
    argv += ["--eval-freq", "0", "--checkpoint-freq", "100", "--run-dir", str(run.root), "--no-progress-bar"]
    argv += ["--hyperparams", "learning_starts=50", "batch_size=32", "policy_kwargs={net_arch: [16]}"]
    assert main(argv) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error
    assert "No space left on device" in error and "step_0000000300_replay_buffer.pkl" in error
    assert "marked failed" in error and "step 200" in error and f"sb3-safe resume {run.root}" in error
    info = _json(run.run_file)
    assert info["status"] == "failed" and "No space left on device" in info["error"]
    assert _checkpoint_files(run) == sorted(
        f"step_{step:010d}{end}" for step in (100, 200) for end in (".zip", "_replay_buffer.pkl")
    )  # the half-written checkpoint at 300 is gone, the two before it are complete
    assert not _temporaries(run.root)

    monkeypatch.setattr(pickle, "dump", real_dump)  # space again: resume continues from step 200
    assert main(["resume", str(run.root), "--no-progress-bar"]) == 0
    info = _json(run.run_file)
    assert info["status"] == "finished" and info["resumed_from"] == 200 and "error" not in info


def test_a_failed_csv_append_leaves_no_half_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "rows.csv"
    append_csv_row(path, ["timestep", "return"], {"timestep": 1, "return": 2.5})
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        if len(data) > 4:
            return real_write(fd, data[:4])  # a short write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(OSError, match="No space left"):
        append_csv_row(path, ["timestep", "return"], {"timestep": 20, "return": 3.25})
    monkeypatch.setattr(os, "write", real_write)
    assert read_csv_rows(path) == [{"timestep": 1.0, "return": 2.5}]


def test_atomic_writes_name_the_target_and_leave_nothing(tmp_path: Path) -> None:
    target = tmp_path / "model.zip"
    with pytest.raises(OSError) as raised, atomic_path(target) as temp:
        temp.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []


# --- file modes ----------------------------------------------------------------------------------------------------


@pytest.fixture
def umask() -> Iterator[Any]:
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_files_get_the_mode_open_would_give(tmp_path: Path, umask: Any, mask: int) -> None:
    umask(mask)
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_write_text(tmp_path / "atomic.txt", "x")
    with atomic_path(tmp_path / "model.zip") as temp:
        th.save({"a": 1}, temp)
    expected = 0o666 & ~mask
    assert plain.stat().st_mode & 0o777 == expected
    assert (tmp_path / "atomic.txt").stat().st_mode & 0o777 == expected
    assert (tmp_path / "model.zip").stat().st_mode & 0o777 == expected


def test_run_files_get_the_usual_mode(finished: Path) -> None:
    run = RunDirectory(finished)  # written under umask 022
    files = [run.config_file, run.run_file, run.model_file, run.summary_file, run.state_file, run.previous_state_file]
    files += [run.checkpoints / name for name in _checkpoint_files(run)]
    assert {path.name: oct(path.stat().st_mode & 0o777) for path in files} == {path.name: "0o644" for path in files}


def test_a_benchmark_retrains_a_point_whose_checkpoints_are_unreadable(killed: RunDirectory) -> None:
    from sb3_safe.experiment.sweep import _point_job

    config = killed.read_config()
    assert _point_job(config, killed.root, False).action == "resume"
    killed.state_file.write_text("{")
    assert _point_job(config, killed.root, False).detail == "resuming from step 400"  # state.previous.json
    killed.previous_state_file.write_text("[]")
    job = _point_job(config, killed.root, False)
    assert (job.action, job.detail) == ("retrain", "its checkpoints are unreadable, training it again")
