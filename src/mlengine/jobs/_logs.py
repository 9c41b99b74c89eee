"""Job logs: every runner writes ``<log_dir>/<replica name>.log``; this module reads them.

Each line of a replica log is one JSON object::

    {"time": 1718000000.123456, "stream": "stdout", "message": "epoch 1 loss 0.3"}

`read_logs` merges the replicas' files in time order and returns a cursor that the next call
continues from (``jobs stream-logs`` polls with it). Only complete lines are read, so a line
being written is returned by a later call. Lines from stderr have severity ``ERROR`` and lines
from stdout ``INFO``, as AI Platform logged them.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import heapq
import json
import os
from pathlib import Path
from typing import Any

from mlengine.errors import InvalidArgument

__all__ = ["LogEntry", "read_logs", "tail_of_stderr"]

_LOG_SUFFIX = ".log"
_TAIL_BYTES = 256 * 1024


@dataclasses.dataclass(frozen=True)
class LogEntry:
    """One line a replica wrote.

    Attributes:
        timestamp: seconds since the epoch when the line was read from the replica.
        task_name: the replica's name, ``master-replica-0``.
        stream: ``stdout`` or ``stderr``.
        message: the line, without its newline.
        trial_id: the HP trial id, or None outside tuning.
    """

    timestamp: float
    task_name: str
    stream: str
    message: str
    trial_id: str | None = None

    @property
    def severity(self) -> str:
        """``ERROR`` for stderr, ``INFO`` for stdout (Cloud Logging's levels)."""
        return "ERROR" if self.stream == "stderr" else "INFO"

    def to_json(self) -> dict[str, Any]:
        """The entry as the API returns it: ``timestamp`` (RFC 3339, UTC, microseconds),
        ``severity``, ``taskName``, ``trialId`` (only in a trial) and ``message``."""
        moment = datetime.datetime.fromtimestamp(self.timestamp, datetime.UTC)
        body: dict[str, Any] = {
            "timestamp": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "severity": self.severity,
            "taskName": self.task_name,
        }
        if self.trial_id is not None:
            body["trialId"] = self.trial_id
        body["message"] = self.message
        return body


def read_logs(
    log_dir: str | os.PathLike[str],
    cursor: str | None = None,
    task_name: str | None = None,
    limit: int = 1000,
    *,
    trial_id: str | None = None,
) -> tuple[list[LogEntry], str]:
    """Return the log lines written since `cursor`, merged across replicas in time order.

    Args:
        log_dir: the job's log directory (``<replica name>.log`` files).
        cursor: the cursor a previous call returned, or None (or ``""``) to read from the start.
        task_name: read only this replica's log (``worker-replica-0``).
        limit: the most entries to return; the cursor then points just after the last one.
        trial_id: stamped on every entry (a trial's logs live in a directory of their own).

    Returns:
        The entries and an opaque cursor for the next call. A directory that does not exist
        (yet) has no entries. A line that is not a log record is returned as a ``stderr``
        message holding the raw line.

    Raises:
        InvalidArgument: `cursor` was not made by this function, or `limit` < 1.
    """
    if limit < 1:
        raise InvalidArgument(f"The 'limit' of a log read must be an integer >= 1. Got {limit}.")
    offsets = _decode_cursor(cursor)
    directory = Path(log_dir)
    paths = sorted(directory.glob(f"*{_LOG_SUFFIX}")) if directory.is_dir() else []
    if task_name is not None:
        paths = [p for p in paths if p.name == f"{task_name}{_LOG_SUFFIX}"]
    streams = []
    for file_index, path in enumerate(paths):
        name = path.name[: -len(_LOG_SUFFIX)]
        lines = _read_lines(path, name, offsets.get(name, 0), limit, trial_id)
        streams.append([(entry.timestamp, file_index, entry, name, end) for entry, end in lines])
    new_offsets = dict(offsets)
    entries: list[LogEntry] = []
    for _, _, entry, name, end in heapq.merge(*streams, key=lambda item: item[:2]):
        if len(entries) == limit:
            break
        entries.append(entry)
        new_offsets[name] = end
    return entries, _encode_cursor(new_offsets)


def tail_of_stderr(
    log_dir: str | os.PathLike[str], task_name: str, max_lines: int = 20, max_chars: int = 2000
) -> str:
    """The last stderr lines of one replica, for a failed job's ``errorMessage``.

    Returns:
        At most `max_lines` lines joined by newlines, cut to the last `max_chars` characters;
        ``""`` when the replica wrote nothing to stderr (or has no log).
    """
    path = Path(log_dir) / f"{task_name}{_LOG_SUFFIX}"
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - _TAIL_BYTES)
            f.seek(start)
            data = f.read()
    except OSError:
        return ""
    raw_lines = data.split(b"\n")
    if start > 0:
        raw_lines = raw_lines[1:]  # the first one is probably cut
    messages = []
    for raw in raw_lines:
        if raw.strip():
            entry = _parse(raw, task_name, 0.0, None)
            if entry.stream == "stderr":
                messages.append(entry.message)
    text = "\n".join(messages[-max_lines:]) if max_lines > 0 else ""
    if len(text) > max_chars:
        text = text[len(text) - max_chars :]
    return text


def _read_lines(
    path: Path, name: str, offset: int, limit: int, trial_id: str | None
) -> list[tuple[LogEntry, int]]:
    """Up to `limit` complete lines from `offset`, each with the offset just after it."""
    result: list[tuple[LogEntry, int]] = []
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if offset > size:  # the file was replaced: start again
                offset = 0
            f.seek(offset)
            last_time = None
            while len(result) < limit:
                raw = f.readline()
                if not raw.endswith(b"\n"):
                    break
                offset += len(raw)
                if last_time is None:
                    last_time = os.fstat(f.fileno()).st_mtime
                entry = _parse(raw, name, last_time, trial_id)
                last_time = entry.timestamp
                result.append((entry, offset))
    except OSError:
        pass
    return result


def _parse(raw: bytes, name: str, fallback_time: float, trial_id: str | None) -> LogEntry:
    try:
        record = json.loads(raw)
        timestamp = float(record["time"])
        stream = record["stream"]
        message = record["message"]
        if stream not in ("stdout", "stderr") or not isinstance(message, str):
            raise TypeError(stream)
    except (ValueError, TypeError, KeyError):
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
        return LogEntry(fallback_time, name, "stderr", text, trial_id)
    return LogEntry(timestamp, name, stream, message, trial_id)


def _encode_cursor(offsets: dict[str, int]) -> str:
    data = json.dumps(offsets, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> dict[str, int]:
    if not cursor:
        return {}
    try:
        data = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        offsets = json.loads(data)
        if not isinstance(offsets, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in offsets.items()
        ):
            raise ValueError(cursor)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument(f"The log cursor {cursor!r} is not valid.") from None
    return offsets
