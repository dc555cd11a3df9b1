"""File writes that survive a kill: atomic replacement (the old file or the new one, never half of one), and CSV rows
appended and flushed one at a time.

An atomic write goes to a temporary file beside its target, ``.<stem>.<8 hex digits>.tmp<suffix>`` (the same
suffix, for writers that choose the format by it), which is renamed onto the target once complete. A process killed
in the middle leaves the temporary behind; :func:`remove_temporaries` deletes such leftovers. Files written this way
get the permissions a plain ``open(path, "w")`` gives them (``0o666`` less the umask), not ``tempfile``'s ``0o600``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

TEMP_MARKER = ".tmp"
# This module's temporaries, ``.<stem>.<8 hex digits>.tmp[<suffix>]``, and those of earlier versions, which used
# tempfile's names: ``.<stem>.<8 characters of [a-z0-9_]><suffix>`` (every target had a suffix).
_TEMPORARY = re.compile(r"^\.[^.].*\.(?:[0-9a-f]{8}\.tmp(?:\.[A-Za-z0-9]+)?|[a-z0-9_]{8}\.[A-Za-z0-9]+)$")


def _create_temporary(target: Path) -> Path:
    """Create an empty, new temporary file beside ``target`` with the mode ``open(target, "w")`` would give."""
    for _ in range(100):
        temp = target.with_name(f".{target.stem}.{secrets.token_hex(4)}{TEMP_MARKER}{target.suffix}")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
        except FileExistsError:
            continue
        os.close(fd)
        return temp
    raise FileExistsError(f"No free temporary name beside {target}.")  # pragma: no cover (2^32 names)


def _with_target(error: OSError, temp: Path, target: Path) -> OSError:
    """``error`` naming ``target`` instead of the temporary file (or naming it at all, e.g. from a zip writer)."""
    if error.errno is None or error.filename not in (None, str(temp), temp):
        return error
    return OSError(error.errno, error.strerror or str(error), str(target))  # the same subclass (errno-mapped)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix) to write to; it replaces ``path`` when the block ends.

    If the block raises, the temporary file is removed and ``path`` is left untouched; an ``OSError`` (a full
    disk, say) is re-raised naming ``path`` rather than the temporary file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = _create_temporary(target)
    try:
        yield temp
        os.replace(temp, target)
    except OSError as error:
        replacement = _with_target(error, temp, target)
        if replacement is error:
            raise
        raise replacement from error
    finally:
        temp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as temp:
        temp.write_text(text)
    return Path(path)


def is_temporary(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is named like an atomic write's temporary file (see the module docstring)."""
    return bool(_TEMPORARY.match(Path(path).name))


def remove_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that interrupted atomic writes left in ``folder`` (not in its subfolders).

    Only call it on a folder no other process is writing to at the moment (e.g. under the run's lock): a write in
    progress would lose its temporary file.

    Returns:
        The files deleted.
    """
    removed = []
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
        for entry in entries:
            if is_temporary(entry.name) and entry.is_file(follow_symlinks=False):
                Path(entry.path).unlink(missing_ok=True)
                removed.append(Path(entry.path))
    return removed


def append_csv_row(path: str | os.PathLike[str], fields: Sequence[str], row: dict[str, Any]) -> None:
    """Append one row (writing the header first if the file is new), flushed at once.

    A failed write (a full disk) is undone: the file is cut back to its previous length, so no half row remains.
    """
    path = Path(path)
    new = not path.exists() or path.stat().st_size == 0
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(fields), extrasaction="ignore")
    if new:
        writer.writeheader()
    writer.writerow(row)
    data = text.getvalue().encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size
        try:
            while data:
                data = data[os.write(fd, data) :]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)
