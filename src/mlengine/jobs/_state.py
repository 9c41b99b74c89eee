"""The states of a job, as AI Platform names them."""

from __future__ import annotations

import enum

__all__ = ["JobState"]


class JobState(enum.StrEnum):
    """`Job.state` of ml v1: QUEUED -> PREPARING -> RUNNING -> SUCCEEDED | FAILED, or
    ... -> CANCELLING -> CANCELLED after `jobs.cancel`."""

    STATE_UNSPECIFIED = "STATE_UNSPECIFIED"
    QUEUED = "QUEUED"
    PREPARING = "PREPARING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"

    def is_terminal(self) -> bool:
        """True once the job can no longer change state."""
        return self in _TERMINAL

    def is_active(self) -> bool:
        """True while the job holds (or is about to hold) processes."""
        return self in _ACTIVE


_TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
_ACTIVE = frozenset({JobState.PREPARING, JobState.RUNNING, JobState.CANCELLING})
