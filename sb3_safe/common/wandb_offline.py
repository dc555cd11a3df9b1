"""Reading the runs wandb writes to disk in offline mode, without network (wandb >= 0.31).

A run folder ``wandb/offline-run-<time>-<id>`` holds everything in ``run-<id>.wandb``: a LevelDB-log-style
stream (a 7-byte ``:W&B`` header, then 32 KiB blocks of chunks ``checksum: u32, length: u16, type: u8`` whose
checksum is the zlib CRC-32 of type byte + payload), each record a ``wandb_internal_pb2.Record``.
:func:`read_offline_run` turns it back into history rows, config and summary; :func:`find_offline_runs`
locates run folders.
"""

from __future__ import annotations

import json
import os
import struct
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sb3_safe.common.wandb_logger import _import_wandb

__all__ = ["OfflineRun", "OfflineRunFormatError", "find_offline_runs", "read_offline_run"]


_HEADER_IDENT = b":W&B"
_HEADER_MAGIC = 0xBEE1
_HEADER_VERSION = 0
_HEADER = struct.Struct("<4sHB")  # ident, magic, version: 7 bytes
_CHUNK = struct.Struct("<IHB")  # checksum, payload length, chunk type: 7 bytes
_BLOCK_SIZE = 32 * 1024
_CHUNK_ZERO, _CHUNK_FULL, _CHUNK_FIRST, _CHUNK_MIDDLE, _CHUNK_LAST = range(5)
_INTERNAL_KEY = "_wandb"


class OfflineRunFormatError(ValueError):
    """A path is not a readable wandb run (no ``run-<id>.wandb`` file, wrong header, or corrupted data)."""


@dataclass
class OfflineRun:
    """A wandb run read back from its ``run-<id>.wandb`` file.

    Attributes:
        path: The run directory (``.../wandb/offline-run-<time>-<id>``).
        run_id: The run id.
        history: One dict per logged row, in order, with ``_step`` and the logged keys (plus wandb's
            ``_timestamp`` and ``_runtime``). Media appear as the JSON dicts wandb stores for them.
        config: The run config (wandb's internal ``_wandb`` entry removed).
        summary: The final summary (last value of each key plus anything set on ``run.summary``).
        project: Project name.
        name: Display name, if one was given.
        group: Run group, if any.
        tags: Run tags.
        exit_code: The run's exit code, or None while the file has no exit record (run not finished, still being
            written, or crashed).
    """

    path: Path
    run_id: str
    history: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    project: str = ""
    name: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    exit_code: int | None = None

    @property
    def finished(self) -> bool:
        """Whether the run file ends with the run's exit record (the run was finished and fully written)."""
        return self.exit_code is not None

    def series(self, key: str) -> list[tuple[int, Any]]:
        """Return ``(step, value)`` for every history row that has ``key``."""
        return [(int(row["_step"]), row[key]) for row in self.history if key in row]


def _run_file(path: Path) -> Path:
    """Locate the ``run-<id>.wandb`` file of a run directory (or accept the file itself).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        OfflineRunFormatError: If a directory holds no single ``run-*.wandb`` file.
    """
    if not path.exists():
        raise FileNotFoundError(f"No such wandb run directory or file: {path}")
    if path.is_file():
        return path
    candidates = sorted(path.glob("run-*.wandb"))
    preferred = [candidate for candidate in candidates if path.name.endswith("-" + candidate.stem[len("run-") :])]
    if len(preferred) == 1:
        return preferred[0]
    if len(candidates) == 1:
        return candidates[0]
    problem = "no run-*.wandb file" if not candidates else f"{len(candidates)} run-*.wandb files"
    raise OfflineRunFormatError(
        f"{path} is not a wandb offline run directory: {problem} (expected wandb/offline-run-<time>-<id>/"
        "run-<id>.wandb, as written by wandb.init(mode='offline'))."
    )


def _check_header(data: bytes, path: Path) -> None:
    """Verify the 7-byte ``:W&B`` header.

    Raises:
        OfflineRunFormatError: If the header is missing or unsupported.
    """
    if len(data) < _HEADER.size:
        raise OfflineRunFormatError(f"{path} is not a wandb run file: too short ({len(data)} bytes) for a header.")
    ident, magic, version = _HEADER.unpack_from(data)
    if ident != _HEADER_IDENT or magic != _HEADER_MAGIC:
        raise OfflineRunFormatError(
            f"{path} is not a wandb run file: it does not start with the ':W&B' header (found {data[:7]!r})."
        )
    if version != _HEADER_VERSION:
        raise OfflineRunFormatError(f"{path}: unsupported wandb run file version {version} (expected 0).")


def _iter_chunks(data: bytes, path: Path) -> Iterator[tuple[int, bytes]]:
    """Yield ``(chunk_type, payload)`` from the 32 KiB-block log layout, verifying checksums.

    A chunk never crosses a block boundary; fewer than 7 bytes left in a block are zero padding. The checksum is
    the zlib (IEEE) CRC-32 of the type byte followed by the payload. A chunk cut off at the end of the file
    (a run still being written, or a crash) ends the stream.

    Raises:
        OfflineRunFormatError: On a checksum mismatch.
    """
    position = _HEADER.size
    while position + _CHUNK.size <= len(data):
        left_in_block = _BLOCK_SIZE - position % _BLOCK_SIZE
        if left_in_block < _CHUNK.size:
            position += left_in_block
            continue
        checksum, length, chunk_type = _CHUNK.unpack_from(data, position)
        start = position + _CHUNK.size
        if chunk_type == _CHUNK_ZERO and length == 0 and checksum == 0:
            position += left_in_block  # zero-filled rest of a block
            continue
        if start + length > len(data):
            return
        payload = data[start : start + length]
        if zlib.crc32(bytes([chunk_type]) + payload) != checksum:
            raise OfflineRunFormatError(f"{path}: corrupted wandb run file (checksum mismatch at byte {position}).")
        yield chunk_type, payload
        position = start + length


def _iter_record_payloads(data: bytes, path: Path) -> Iterator[bytes]:
    """Reassemble FULL / FIRST+MIDDLE*+LAST chunks into record payloads.

    Raises:
        OfflineRunFormatError: On an out-of-order chunk or an unknown chunk type.
    """
    pending: list[bytes] | None = None
    for chunk_type, payload in _iter_chunks(data, path):
        if chunk_type == _CHUNK_FULL and pending is None:
            yield payload
        elif chunk_type == _CHUNK_FIRST and pending is None:
            pending = [payload]
        elif chunk_type in (_CHUNK_MIDDLE, _CHUNK_LAST) and pending is not None:
            pending.append(payload)
            if chunk_type == _CHUNK_LAST:
                yield b"".join(pending)
                pending = None
        else:
            raise OfflineRunFormatError(f"{path}: corrupted wandb run file (unexpected chunk type {chunk_type}).")


def _decode_item_value(item: Any) -> Any:
    """Decode a history/summary/config item: typed value if present (``json,typed`` encoding), else JSON."""
    kind = item.WhichOneof("value") if "value" in item.DESCRIPTOR.oneofs_by_name else None
    if kind == "none":
        return None
    if kind == "json":
        return json.loads(item.json)
    if kind is not None:
        return getattr(item, kind)
    return json.loads(item.value_json) if item.value_json else None


def _item_path(item: Any) -> list[str]:
    """The key path of an item: ``nested_key`` (e.g. ``["train/x"]`` or ``["img", "width"]``) or ``[key]``."""
    return list(item.nested_key) if len(item.nested_key) else [item.key]


def _set_path(target: dict[str, Any], path: Sequence[str], value: Any) -> None:
    """Set ``target[p0][p1]...= value``, creating nested dicts."""
    for part in path[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            child = target[part] = {}
        target = child
    target[path[-1]] = value


def _remove_path(target: dict[str, Any], path: Sequence[str]) -> None:
    """Delete ``target[p0][p1]...`` if present."""
    for part in path[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            return
        target = child
    target.pop(path[-1], None)


def _apply_updates(target: dict[str, Any], record: Any) -> None:
    """Apply a SummaryRecord/ConfigRecord (``update`` and ``remove`` items) to ``target``."""
    for item in record.update:
        _set_path(target, _item_path(item), _decode_item_value(item))
    for item in record.remove:
        _remove_path(target, _item_path(item))


def _history_row(history: Any) -> dict[str, Any]:
    """Turn a HistoryRecord into a row dict with ``_step``."""
    row: dict[str, Any] = {}
    for item in history.item:
        _set_path(row, _item_path(item), _decode_item_value(item))
    if "_step" not in row and history.HasField("step"):
        row["_step"] = history.step.num
    return row


def _apply_run_record(run: OfflineRun, record: Any) -> None:
    """Copy identity fields and the initial config/summary of a RunRecord."""
    run.run_id = record.run_id or run.run_id
    run.project = record.project or run.project
    run.name = record.display_name or run.name
    run.group = record.run_group or run.group
    run.tags = list(record.tags) or run.tags
    _apply_updates(run.config, record.config)
    _apply_updates(run.summary, record.summary)


def _apply_record(run: OfflineRun, record: Any) -> None:
    """Fold one ``wandb_internal_pb2.Record`` into ``run``."""
    kind = record.WhichOneof("record_type")
    if kind == "history":
        run.history.append(_history_row(record.history))
    elif kind == "summary":
        _apply_updates(run.summary, record.summary)
    elif kind == "config":
        _apply_updates(run.config, record.config)
    elif kind == "run":
        _apply_run_record(run, record.run)
    elif kind == "exit":
        run.exit_code = record.exit.exit_code


def read_offline_run(run_dir: str | os.PathLike[str], *, wait: float = 0.0) -> OfflineRun:
    """Read a wandb run directory (or its ``run-<id>.wandb`` file) written by wandb >= 0.31, without network.

    Args:
        run_dir: ``.../wandb/offline-run-<time>-<id>`` or the ``run-<id>.wandb`` file inside it.
        wait: Seconds to keep re-reading until the file holds the run's exit record (wandb writes the file
            asynchronously, shortly after ``run.finish()`` returns; :func:`finish_wandb` already waits). 0 reads
            once; check :attr:`OfflineRun.finished`.

    Returns:
        The run's history, config and summary (a partial view if the run is not finished).

    Raises:
        ImportError: If ``wandb`` (whose protobuf classes decode the records) cannot be imported.
        FileNotFoundError: If the path does not exist.
        OfflineRunFormatError: If the path is not a wandb run or the file is corrupted.
    """
    _import_wandb()
    file = _run_file(Path(run_dir))
    if wait > 0:
        _wait_until_complete(file, wait)
    return _parse_run_file(file)


def _record_kind(payload: bytes) -> str | None:
    """The ``record_type`` of one serialized record."""
    from wandb.proto import wandb_internal_pb2

    record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]  # generated protobuf class
    record.ParseFromString(payload)
    return record.WhichOneof("record_type")


def _is_complete(file: Path) -> bool:
    """Whether the run file ends with the run's exit record (only the last few records are decoded)."""
    data = file.read_bytes()
    _check_header(data, file)
    last_payloads = list(_iter_record_payloads(data, file))[-3:]
    return any(_record_kind(payload) == "exit" for payload in last_payloads)


def _wait_until_complete(file: Path, wait: float) -> bool:
    """Poll ``file`` every few milliseconds, for up to ``wait`` seconds, until :func:`_is_complete`."""
    deadline = time.monotonic() + wait
    while True:
        try:
            if _is_complete(file):
                return True
        except OfflineRunFormatError:
            pass  # possibly caught mid-write; a real format error is raised when the file is parsed
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)


def _parse_run_file(file: Path) -> OfflineRun:
    """Parse a ``run-<id>.wandb`` file once."""
    from wandb.proto import wandb_internal_pb2

    data = file.read_bytes()
    _check_header(data, file)
    directory = file.parent
    run = OfflineRun(path=directory, run_id=file.stem[len("run-") :])
    for payload in _iter_record_payloads(data, file):
        record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]  # generated protobuf class
        record.ParseFromString(payload)
        _apply_record(run, record)
    run.config.pop(_INTERNAL_KEY, None)
    run.summary.pop(_INTERNAL_KEY, None)
    return run


def _run_sort_key(run_dir: Path) -> tuple[str, int]:
    """Sort key: the timestamp in the folder name, then the run file's modification time."""
    parts = run_dir.name.split("-", 3)
    stamp = parts[2] if len(parts) > 2 else ""
    files = list(run_dir.glob("run-*.wandb"))
    mtime = max((file.stat().st_mtime_ns for file in files), default=run_dir.stat().st_mtime_ns)
    return stamp, mtime


def find_offline_runs(root: str | os.PathLike[str] = ".") -> list[Path]:
    """List the ``offline-run-*`` folders under ``root/wandb`` (or under ``root`` itself), newest last.

    Args:
        root: The directory given to ``wandb.init(dir=...)`` (or ``WANDB_DIR``), or its ``wandb`` folder.

    Returns:
        Run directories sorted by start time (then last write), the ``latest-run`` symlink excluded.

    Raises:
        FileNotFoundError: If ``root`` does not exist.
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        raise FileNotFoundError(f"No such directory: {base}")
    found = {
        candidate.resolve()
        for folder in (base / "wandb", base)
        if folder.is_dir()
        for candidate in folder.glob("offline-run-*")
        if candidate.is_dir() and not candidate.is_symlink()
    }
    return sorted(found, key=_run_sort_key)
