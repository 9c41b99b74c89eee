"""Whether a process of this machine still exists (by pid), for code that tracks its own."""

from __future__ import annotations

import os

__all__ = ["process_exists"]


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
