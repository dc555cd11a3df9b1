"""Exclusive locks on folders (a benchmark grid, later a run directory): one process works in a folder at a time.

A :class:`DirectoryLock` is an ``fcntl.flock`` lock on ``FOLDER/.lock``, a file into which the holder writes its PID,
host, command line and start time, so that a refused process can say who holds the folder. The kernel drops a flock
lock when its holder exits, however it exits: a process killed with SIGKILL never leaves a stale lock behind, and the
``.lock`` file that remains (emptied on a clean release) locks nothing by itself.

Locks are per open file: a second :class:`DirectoryLock` on the same folder is refused even in the same process.
Processes forked while the lock is held share it (the same open file); ``multiprocessing``'s ``forkserver`` and
``spawn`` start methods, which SB3's ``SubprocVecEnv`` uses, do not. ``flock`` is local to one machine: on a network
file system shared by several hosts it may not exclude processes on other hosts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

LOCK_FILE = ".lock"
MAX_COMMAND = 300  # characters of the holder's command line that an error message shows


@dataclasses.dataclass(frozen=True)
class LockHolder:
    """The process holding a :class:`DirectoryLock`, as it wrote itself into the lock file.

    Attributes:
        pid: Its process id.
        host: The host it runs on.
        command: Its command line.
        since: When it took the lock (local time, ``YYYY-mm-ddTHH:MM:SS``).
    """

    pid: int | None
    host: str | None = None
    command: str | None = None
    since: str | None = None

    @classmethod
    def current(cls) -> LockHolder:
        """This process."""
        argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
        if argv and argv[0] == sys.executable:
            argv[0] = Path(argv[0]).name  # "python -m sb3_safe ...", not the virtualenv's full path
        return cls(os.getpid(), socket.gethostname(), shlex.join(argv), time.strftime("%Y-%m-%dT%H:%M:%S"))

    def describe(self) -> str:
        """E.g. ``PID 1234 on host-a, started 2024-05-01T10:00:00: python -m sb3_safe benchmark ...``."""
        parts = [f"PID {self.pid}" if self.pid is not None else "a process of unknown PID"]
        if self.host and self.host != socket.gethostname():
            parts.append(f"on {self.host}")
        text = " ".join(parts)
        if self.since:
            text += f", started {self.since}"
        if self.command:
            command = " ".join(self.command.split())  # one line
            text += f": {command if len(command) <= MAX_COMMAND else command[: MAX_COMMAND - 3] + '...'}"
        return text


class LockedError(RuntimeError):
    """Another process holds the folder's lock; the message names it and says to wait for it or stop it.

    Attributes:
        folder: The locked folder.
        holder: The process holding the lock (``pid`` is None if it had not written itself into the file yet).
    """

    def __init__(self, folder: Path, what: str, holder: LockHolder) -> None:
        self.folder, self.holder = folder, holder
        stop = f"stop it (`kill {holder.pid}`)" if holder.pid is not None else "stop it"
        super().__init__(
            f"{folder} is in use: another process is running this {what} ({holder.describe()}). Wait for it to "
            f"finish, or {stop}, then try again."
        )


class DirectoryLock:
    """An exclusive, non-blocking lock on a folder, held for the duration of a ``with`` block.

    Example::

        with DirectoryLock(out_dir, what="benchmark grid"):
            ...  # no other process can take out_dir's lock here

    Args:
        folder: The folder to lock (created if missing); the lock file is ``folder/.lock``.
        what: What the folder is, for the error message (``"benchmark grid"``, ``"run"``).
    """

    def __init__(self, folder: str | os.PathLike[str], what: str = "folder") -> None:
        self.folder = Path(folder)
        self.what = what
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        """The lock file."""
        return self.folder / LOCK_FILE

    @property
    def locked(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> DirectoryLock:
        """Take the lock, or fail at once if another process (or another lock object) holds it.

        Returns:
            This lock.

        Raises:
            LockedError: Naming the process that holds the lock.
            RuntimeError: If this object already holds it.
        """
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already locked by this DirectoryLock.")
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(self.folder, self.what, self._read_holder()) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        holder = dataclasses.asdict(LockHolder.current())
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        return self

    def release(self) -> None:
        """Let go of the lock (emptying the lock file); nothing happens if it is not held."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def holder(self) -> LockHolder | None:
        """The process named in the lock file, or None if the file names none (unlocked, or released cleanly).

        The file may name a process that no longer holds the lock (one that was killed); only :meth:`acquire` says
        whether the lock is free.
        """
        return _parse_holder(self.path)

    def _read_holder(self) -> LockHolder:
        deadline = time.monotonic() + 1.0  # the holder writes itself just after taking the lock
        while True:
            holder = _parse_holder(self.path)
            if holder is not None or time.monotonic() > deadline:
                return holder or LockHolder(pid=None)
            time.sleep(0.05)

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"DirectoryLock({str(self.folder)!r}, what={self.what!r}, locked={self.locked})"


def _parse_holder(path: Path) -> LockHolder | None:
    try:
        data: Any = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    pid = data.get("pid")
    return LockHolder(
        pid=pid if isinstance(pid, int) else None,
        host=data.get("host"),
        command=data.get("command"),
        since=data.get("since"),
    )


__all__ = ["LOCK_FILE", "DirectoryLock", "LockHolder", "LockedError"]
