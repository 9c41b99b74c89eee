"""Whether a process of this machine still exists (by pid), for code that tracks its own."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["child_pids", "process_exists", "process_running"]


def process_exists(pid: int) -> bool:
    """True while a process with id `pid` exists on this machine (a zombie counts).

    A process of another user counts too: signalling it is refused, but it exists. A pid may
    have been reused by an unrelated process; callers that care check more than this.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_running(pid: int) -> bool:
    """True while a process with id `pid` exists and is not a zombie (one that ended and
    holds nothing any more, waiting for its parent to reap it). Where ``/proc`` cannot tell
    (not Linux), the same as `process_exists`."""
    if not process_exists(pid):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return process_exists(pid)
    fields = stat.rpartition(")")[2].split()  # the name, in parentheses, may hold spaces
    return not fields or fields[0] not in ("Z", "X")


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid` (read from ``/proc``; [] where there is none)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # ended meanwhile
            continue
        if len(fields) > 1 and fields[1] == str(pid):
            children.append(int(stat.parent.name))
    return children
