"""Atomic checkpoints of a run: the model (with its Lagrange multipliers / duals), the replay buffer and the step count.

The two newest complete checkpoints are kept in ``RUN_DIR/checkpoints/``::

    state.json               the newest checkpoint: {"num_timesteps", "model", "replay_buffer", "written_at", ...}
    state.previous.json      the one before it (same fields); absent until a second checkpoint exists
    step_<N>.zip             the model of each of the two (a name taken by a kept checkpoint gets a suffix _2, _3, ...)
    step_<N>_replay_buffer.pkl   their replay buffers (off-policy algorithms), only the filled part of the buffer

A checkpoint is written in order: its model, its replay buffer, ``state.json``, then ``state.previous.json`` (the
checkpoint ``state.json`` named until then). Each file is written to a temporary name and renamed, so a process
killed at any moment leaves at least one complete checkpoint named by a state file; files that no state file names
(older checkpoints, a checkpoint cut short) and temporaries left by a killed write are deleted by the next
checkpoint, and by ``resume``.

Loading (:func:`load_checkpoint`) tries the newest checkpoint, then the previous one, with a
:class:`CheckpointFallbackWarning` naming what was unreadable (a truncated zip or replay buffer, a broken
``state.json``); if neither loads, :class:`CheckpointError` names the files and why.

The replay buffer is pickled without the unused part of its preallocated arrays (a 200-step run of a
200k-transition buffer stores 200 rows, not 200k); unpickling restores the full arrays, so SB3's own
``load_replay_buffer`` reads these files as it reads its own.
"""

from __future__ import annotations

import copy
import json
import pickle
import signal
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from sb3_safe.common.files import atomic_path, remove_temporaries
from sb3_safe.experiment.rundir import RunDirectory, RunDirectoryError

CHECKPOINT_GLOB = "step_*"


class NoCheckpointError(RunDirectoryError):
    """The run has no checkpoint at all yet (it stopped before its first one)."""


class CheckpointError(RunDirectoryError):
    """The run has checkpoints, but none of them can be read; the message names the files and the problems."""


class CheckpointFallbackWarning(UserWarning):
    """The newest checkpoint was unreadable: the previous one was used instead."""


# --- the replay buffer, without the unused rows ------------------------------------------------------------------


def _used_rows(array: np.ndarray, pos: int) -> int:
    """Rows ``[0, n)`` that hold data: up to ``pos``, and any nonzero row beyond (never-written rows are zeros)."""
    tail = array[pos:]
    if tail.size == 0:
        return pos
    nonzero = np.flatnonzero(tail.reshape(len(tail), -1).any(axis=1))
    return pos + (int(nonzero[-1]) + 1 if len(nonzero) else 0)


def _trimmed(buffer: ReplayBuffer) -> tuple[ReplayBuffer, dict[str, int]]:
    """A shallow copy of ``buffer`` whose preallocated arrays stop after their last used row, and the full length."""
    rows = int(buffer.buffer_size)
    if buffer.full:
        return buffer, {}
    trimmed = copy.copy(buffer)
    names: dict[str, int] = {}
    for name, value in vars(buffer).items():
        if isinstance(value, np.ndarray) and value.ndim >= 1 and len(value) == rows:
            setattr(trimmed, name, value[: _used_rows(value, buffer.pos)])
            names[name] = rows
        elif (
            isinstance(value, dict)
            and value
            and all(isinstance(item, np.ndarray) and item.ndim >= 1 and len(item) == rows for item in value.values())
        ):  # DictReplayBuffer's observations
            setattr(trimmed, name, {key: item[: _used_rows(item, buffer.pos)] for key, item in value.items()})
            names[name] = rows
    return trimmed, names


def _padded(array: np.ndarray, rows: int) -> np.ndarray:
    full = np.zeros((rows, *array.shape[1:]), dtype=array.dtype)
    full[: len(array)] = array
    return full


def restore_replay_buffer(buffer: ReplayBuffer, rows: dict[str, int]) -> ReplayBuffer:
    """Give the arrays of an unpickled, trimmed buffer back their preallocated length (zeros after the data).

    Called by :mod:`pickle` when it loads a buffer written by :func:`save_replay_buffer`.
    """
    for name, length in rows.items():
        value = getattr(buffer, name)
        if isinstance(value, dict):
            setattr(buffer, name, {key: _padded(item, length) for key, item in value.items()})
        else:
            setattr(buffer, name, _padded(value, length))
    return buffer


class _TrimmedReplayBuffer:
    """Pickles as a call of :func:`restore_replay_buffer` on the trimmed buffer: unpickling gives the full buffer."""

    def __init__(self, buffer: ReplayBuffer) -> None:
        self.buffer = buffer

    def __reduce__(self) -> tuple[Callable[..., ReplayBuffer], tuple[ReplayBuffer, dict[str, int]]]:
        return restore_replay_buffer, _trimmed(self.buffer)


def save_replay_buffer(buffer: ReplayBuffer, path: str | Path) -> None:
    """Pickle ``buffer`` without the unused rows of its arrays; ``pickle.load`` (and SB3's
    ``load_replay_buffer``) gives back a buffer equal to it: same arrays, ``pos``, ``full`` and samples."""
    with open(path, "wb") as handle:
        pickle.dump(_TrimmedReplayBuffer(buffer), handle, protocol=pickle.HIGHEST_PROTOCOL)


# --- state files --------------------------------------------------------------------------------------------------


def _parse_state(run: RunDirectory, path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The checkpoint a state file names, or ``(None, problem)``; ``(None, None)`` if the file does not exist."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, None
    except OSError as error:
        return None, f"{path} cannot be read ({error})"
    try:
        state = json.loads(text)
    except ValueError as error:
        return None, f"{path} is not valid JSON ({error})"
    if (
        not isinstance(state, dict)
        or not isinstance(state.get("num_timesteps"), int)
        or not isinstance(state.get("model"), str)
        or not isinstance(state.get("replay_buffer"), str | None)
    ):
        return None, f"{path} is not a checkpoint state (num_timesteps, model, replay_buffer)"
    missing = [name for name in _file_names(state) if not (run.checkpoints / name).is_file()]
    if missing:
        return None, f"{path} names {', '.join(str(run.checkpoints / name) for name in missing)}, which is missing"
    return state, None


def _file_names(state: dict[str, Any] | None) -> set[str]:
    if not state:
        return set()
    return {name for name in (state.get("model"), state.get("replay_buffer")) if isinstance(name, str)}


def find_checkpoints(run: RunDirectory) -> tuple[list[dict[str, Any]], list[str]]:
    """The run's complete checkpoints as their state files name them, newest first, and the problems found.

    Only cheap checks are made (the state file parses and its files exist); :func:`load_checkpoint` reads them.

    Returns:
        ``(states, problems)``: up to two states (``state.json``'s, then ``state.previous.json``'s), and one line
        per state file that exists but names no complete checkpoint.
    """
    states: list[dict[str, Any]] = []
    problems = []
    for path in (run.state_file, run.previous_state_file):
        state, problem = _parse_state(run, path)
        if problem is not None:
            problems.append(problem)
        elif state is not None and state["model"] not in {known["model"] for known in states}:
            states.append(state)
    return states, problems


def read_checkpoint(run: RunDirectory) -> dict[str, Any]:
    """The newest complete checkpoint's state (``state.json``, else ``state.previous.json``).

    Raises:
        NoCheckpointError: If the run has no checkpoint yet.
        CheckpointError: If its state files name no complete checkpoint.
    """
    states, problems = find_checkpoints(run)
    if states:
        return states[0]
    if problems:
        raise CheckpointError(_unreadable_message(run, problems))
    raise NoCheckpointError(_no_checkpoint_message(run))


def _no_checkpoint_message(run: RunDirectory) -> str:
    return (
        f"{run.root} has no checkpoint yet (the run stopped before its first one, see --checkpoint-freq). "
        f"`sb3-safe resume {run.root}` trains it again from step 0."
    )


def _unreadable_message(run: RunDirectory, problems: list[str]) -> str:
    return (
        f"No checkpoint of {run.root} can be read: " + "; ".join(problems) + ". To train the run again from step 0, "
        f"delete {run.state_file} and {run.previous_state_file}, then `sb3-safe resume {run.root}`."
    )


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def load_checkpoint(
    run: RunDirectory, load: Callable[[Path], BaseAlgorithm], *, replay_buffer: bool = True
) -> tuple[BaseAlgorithm, dict[str, Any]]:
    """Load the newest readable checkpoint: the newest one, else (with a warning) the previous one.

    Args:
        run: The run directory.
        load: Loads a model zip (e.g. ``lambda path: CVPO.load(path, env=env)``).
        replay_buffer: Also load the checkpoint's replay buffer into the model (off-policy algorithms).

    Returns:
        The model and the state of the checkpoint it came from.

    Raises:
        NoCheckpointError: If the run has no checkpoint yet.
        CheckpointError: If no checkpoint can be loaded (the message names each file and its problem).
    """
    states, problems = find_checkpoints(run)
    if not states and not problems:
        raise NoCheckpointError(_no_checkpoint_message(run))
    for state in states:
        model_path, buffer_path = checkpoint_paths(run, state)
        current = model_path
        try:
            model = load(model_path)
            if replay_buffer and buffer_path is not None and isinstance(model, OffPolicyAlgorithm):
                current = buffer_path
                model.load_replay_buffer(buffer_path)
        except Exception as error:  # any failure to read a checkpoint: try the previous one
            problems.append(f"{current} is unreadable ({_one_line(error)})")
            continue
        if problems:
            warnings.warn(
                f"{run.root}: the newest checkpoint is unreadable: {'; '.join(problems)}. Using the previous "
                f"checkpoint instead (step {state['num_timesteps']}).",
                CheckpointFallbackWarning,
                stacklevel=2,
            )
        return model, state
    raise CheckpointError(_unreadable_message(run, problems))


def adopt_checkpoint(run: RunDirectory, state: dict[str, Any]) -> None:
    """Make ``state`` the run's newest checkpoint (after a fallback), and delete every file no state names.

    Called by ``resume`` once it has loaded ``state``: if that was the previous checkpoint, ``state.json`` names it
    again and the unreadable checkpoint's files are deleted, so later checkpoints keep only good ones.
    """
    newest, _ = _parse_state(run, run.state_file)
    if newest is None or newest["model"] != state["model"]:
        run.write_json(run.state_file, state)
        run.previous_state_file.unlink(missing_ok=True)
    remove_stale_files(run)


def remove_stale_files(run: RunDirectory) -> list[Path]:
    """Delete temporaries of killed writes, and checkpoint files that no state file names.

    If a state file exists but cannot be parsed, checkpoint files are kept (only temporaries go): which files it
    named is unknown.

    Returns:
        The files deleted.
    """
    removed = remove_temporaries(run.checkpoints)
    keep: set[str] = set()
    for path in (run.state_file, run.previous_state_file):
        if not path.exists():
            continue
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            return removed
        if not isinstance(state, dict):
            return removed
        keep |= _file_names(state)
    for old in sorted(run.checkpoints.glob(CHECKPOINT_GLOB)):
        if old.name not in keep and old.is_file():
            old.unlink(missing_ok=True)
            removed.append(old)
    return removed


# --- writing ------------------------------------------------------------------------------------------------------


def _free_stem(run: RunDirectory, step: int) -> str:
    """``step_<N>``, or ``step_<N>_2``, ... if a kept checkpoint already uses that name (same step, written again)."""
    stem, index = f"step_{step:010d}", 1
    while any((run.checkpoints / name).exists() for name in (f"{stem}.zip", f"{stem}_replay_buffer.pkl")):
        index += 1
        stem = f"step_{step:010d}_{index}"
    return stem


def write_checkpoint(model: BaseAlgorithm, run: RunDirectory, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write a complete checkpoint of ``model`` into ``run.checkpoints``; returns the new ``state.json`` content.

    The checkpoint ``state.json`` named so far becomes ``state.previous.json`` (if it is older than this one);
    files of older checkpoints, and temporaries of killed writes, are deleted. If a write fails (a full disk),
    the files of this checkpoint are removed and the previous checkpoints stay as they were.
    """
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    remove_stale_files(run)
    step = int(model.num_timesteps)
    kept, _ = find_checkpoints(run)
    previous = next((state for state in kept if state["num_timesteps"] < step), None)
    stem = _free_stem(run, step)
    model_name = f"{stem}.zip"
    buffer_name = None
    written: list[Path] = []
    try:
        with atomic_path(run.checkpoints / model_name) as temp:
            model.save(temp)
        written.append(run.checkpoints / model_name)
        if isinstance(model, OffPolicyAlgorithm) and model.replay_buffer is not None:
            buffer_name = f"{stem}_replay_buffer.pkl"
            with atomic_path(run.checkpoints / buffer_name) as temp:
                save_replay_buffer(model.replay_buffer, temp)
            written.append(run.checkpoints / buffer_name)
        state = {
            "num_timesteps": step,
            "model": model_name,
            "replay_buffer": buffer_name,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **(extra or {}),
        }
        run.write_json(run.state_file, state)
    except BaseException:
        for path in written:  # not named by any state file: an incomplete checkpoint
            path.unlink(missing_ok=True)
        raise
    if previous is not None:
        run.write_json(run.previous_state_file, previous)
    else:
        run.previous_state_file.unlink(missing_ok=True)
    remove_stale_files(run)
    return state


class StopRequest:
    """Turns SIGINT and SIGTERM into a request to checkpoint and stop at the next step (main thread only)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_name is not None:  # a second signal: stop at once
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    @property
    def requested(self) -> bool:
        return self.signal_name is not None


class RunCheckpointCallback(BaseCallback):
    """Writes a checkpoint every ``checkpoint_freq`` environment steps, and stops training (after one) on a signal.

    Checkpoints are taken at the start of a rollout, after the previous rollout's gradient steps: a run resumed
    from one continues in the same rhythm of collection and training, and ends at the same step count as a run
    that was never interrupted.

    Args:
        run: The run directory.
        checkpoint_freq: Period in environment steps (0: only when asked to stop).
        stop: The signal watcher.
        extra: Fields added to every ``state.json`` (e.g. the W&B run id).
    """

    def __init__(self, run: RunDirectory, checkpoint_freq: int, stop: StopRequest, extra: dict[str, Any] | None = None):
        super().__init__()
        self.run, self.checkpoint_freq, self.stop = run, checkpoint_freq, stop
        self.extra = extra or {}
        self.last_checkpoint_step = 0
        self.stopped = False

    def _on_training_start(self) -> None:
        self.last_checkpoint_step = self.num_timesteps

    def checkpoint(self) -> None:
        """Write a checkpoint of the model now."""
        write_checkpoint(self.model, self.run, self.extra)
        self.last_checkpoint_step = self.num_timesteps

    def _on_rollout_start(self) -> None:
        due = self.checkpoint_freq > 0 and self.num_timesteps - self.last_checkpoint_step >= self.checkpoint_freq
        if due or (self.stop.requested and not self.stopped):
            self.checkpoint()
            self.stopped = self.stop.requested

    def _on_step(self) -> bool:
        return not self.stopped


def checkpoint_paths(run: RunDirectory, state: dict[str, Any]) -> tuple[Path, Path | None]:
    """The model and replay-buffer files a checkpoint state names."""
    buffer = state.get("replay_buffer")
    return run.checkpoints / state["model"], (run.checkpoints / buffer if buffer else None)
