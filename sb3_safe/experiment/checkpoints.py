"""Atomic checkpoints of a run: the model (with its Lagrange multipliers / duals), the replay buffer and the step count.

A checkpoint is three files written in order: ``step_<N>.zip``, ``step_<N>_replay_buffer.pkl`` (off-policy
algorithms), then ``state.json``, which names them. Each file is written to a temporary name and renamed, and
``state.json`` is replaced last, so a process killed at any moment leaves the previous checkpoint complete. Older
checkpoint files are deleted only after the new ``state.json`` is in place.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from sb3_safe.common.files import atomic_path
from sb3_safe.experiment.rundir import RunDirectory, RunDirectoryError


def write_checkpoint(model: BaseAlgorithm, run: RunDirectory, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write a complete checkpoint of ``model`` into ``run.checkpoints``; returns the new ``state.json`` content."""
    step = int(model.num_timesteps)
    stem = f"step_{step:010d}"
    with atomic_path(run.checkpoints / f"{stem}.zip") as temp:
        model.save(temp)
    buffer_name = None
    if isinstance(model, OffPolicyAlgorithm) and model.replay_buffer is not None:
        buffer_name = f"{stem}_replay_buffer.pkl"
        with atomic_path(run.checkpoints / buffer_name) as temp:
            model.save_replay_buffer(temp)
    state = {
        "num_timesteps": step,
        "model": f"{stem}.zip",
        "replay_buffer": buffer_name,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **(extra or {}),
    }
    run.write_json(run.state_file, state)
    keep = {state["model"], buffer_name}
    for old in run.checkpoints.glob("step_*"):
        if old.name not in keep:
            old.unlink(missing_ok=True)
    return state


def read_checkpoint(run: RunDirectory) -> dict[str, Any]:
    """The last complete checkpoint's ``state.json``.

    Raises:
        RunDirectoryError: If the run has no complete checkpoint yet.
    """
    state = run.read_json(run.state_file)
    if not state or not (run.checkpoints / state["model"]).is_file():
        raise RunDirectoryError(
            f"{run.root} has no checkpoint yet (the run stopped before its first one, see --checkpoint-freq). "
            "Start it again with `sb3-safe train` and a new --run-dir."
        )
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
