from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlengine.errors import InvalidArgument
from mlengine.jobs._logs import LogEntry, read_logs, tail_of_stderr


def write(path: Path, *records: tuple[float, str, str], partial: str = "") -> None:
    with open(path, "a") as f:
        for time, stream, message in records:
            f.write(json.dumps({"time": time, "stream": stream, "message": message}) + "\n")
        f.write(partial)


def messages(entries: list[LogEntry]) -> list[str]:
    return [e.message for e in entries]


def test_log_entry_json() -> None:
    entry = LogEntry(1718000000.5, "master-replica-0", "stderr", "boom")
    assert entry.severity == "ERROR"
    assert entry.to_json() == {
        "timestamp": "2024-06-10T06:13:20.500000Z",
        "severity": "ERROR",
        "taskName": "master-replica-0",
        "message": "boom",
    }
    info = LogEntry(0.0, "worker-replica-1", "stdout", "ok", trial_id="3")
    assert info.severity == "INFO"
    assert info.to_json()["trialId"] == "3"
    assert info.to_json()["timestamp"] == "1970-01-01T00:00:00.000000Z"


def test_merges_replicas_in_time_order(tmp_path: Path) -> None:
    write(tmp_path / "master-replica-0.log", (1.0, "stdout", "m1"), (3.0, "stderr", "m3"))
    write(tmp_path / "worker-replica-0.log", (2.0, "stdout", "w2"), (4.0, "stdout", "w4"))
    entries, _ = read_logs(tmp_path)
    assert messages(entries) == ["m1", "w2", "m3", "w4"]
    assert [e.task_name for e in entries] == [
        "master-replica-0", "worker-replica-0", "master-replica-0", "worker-replica-0",
    ]  # fmt: skip
    assert [e.severity for e in entries] == ["INFO", "INFO", "ERROR", "INFO"]


def test_cursor_returns_only_new_complete_lines(tmp_path: Path) -> None:
    master = tmp_path / "master-replica-0.log"
    write(master, (1.0, "stdout", "a"), partial='{"time": 2.0, "stream": "std')
    entries, cursor = read_logs(tmp_path)
    assert messages(entries) == ["a"]
    assert read_logs(tmp_path, cursor) == ([], cursor)

    with open(master, "a") as f:
        f.write('out", "message": "b"}\n')
    write(tmp_path / "ps-replica-0.log", (1.5, "stderr", "late"))
    entries, cursor = read_logs(tmp_path, cursor)
    assert messages(entries) == ["late", "b"]
    assert read_logs(tmp_path, cursor)[0] == []


def test_limit_and_task_name(tmp_path: Path) -> None:
    write(tmp_path / "master-replica-0.log", *[(float(i), "stdout", f"m{i}") for i in range(5)])
    write(tmp_path / "worker-replica-0.log", *[(i + 0.5, "stdout", f"w{i}") for i in range(5)])
    entries, cursor = read_logs(tmp_path, limit=3)
    assert messages(entries) == ["m0", "w0", "m1"]
    entries, cursor = read_logs(tmp_path, cursor, limit=3)
    assert messages(entries) == ["w1", "m2", "w2"]

    only, worker_cursor = read_logs(tmp_path, cursor, task_name="worker-replica-0")
    assert messages(only) == ["w3", "w4"]
    rest, _ = read_logs(tmp_path, worker_cursor)
    assert messages(rest) == ["m3", "m4"]
    assert read_logs(tmp_path, task_name="nobody")[0] == []


def test_corrupted_line_is_returned_as_stderr(tmp_path: Path) -> None:
    path = tmp_path / "master-replica-0.log"
    write(path, (10.0, "stdout", "before"))
    with open(path, "a") as f:
        f.write("not json at all\n")
        f.write('{"time": "x"}\n')
    write(path, (11.0, "stdout", "after"))
    entries, _ = read_logs(tmp_path)
    assert messages(entries) == ["before", "not json at all", '{"time": "x"}', "after"]
    assert [e.stream for e in entries] == ["stdout", "stderr", "stderr", "stdout"]
    assert entries[1].timestamp == 10.0


def test_missing_directory_and_bad_cursor(tmp_path: Path) -> None:
    entries, cursor = read_logs(tmp_path / "absent")
    assert entries == []
    with pytest.raises(InvalidArgument):
        read_logs(tmp_path, "!!not a cursor!!")
    with pytest.raises(InvalidArgument):
        read_logs(tmp_path, cursor, limit=0)


def test_tail_of_stderr(tmp_path: Path) -> None:
    path = tmp_path / "master-replica-0.log"
    write(path, *[(float(i), "stderr" if i % 2 else "stdout", f"line {i}") for i in range(60)])
    tail = tail_of_stderr(tmp_path, "master-replica-0", max_lines=3)
    assert tail == "line 55\nline 57\nline 59"
    assert tail_of_stderr(tmp_path, "master-replica-0", max_chars=7) == "line 59"
    assert tail_of_stderr(tmp_path, "worker-replica-9") == ""
