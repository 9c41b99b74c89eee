"""Runners start the replicas of a job: `local` (subprocesses) and, later, `ray`.

Backends register by name in `RUNNERS` and load lazily with `get_runner`.
"""

from __future__ import annotations

import importlib

from mlengine.errors import InvalidArgument
from mlengine.jobs.runners._base import (
    LaunchSpec,
    ReplicaPhase,
    ReplicaSpec,
    ReplicaStatus,
    Runner,
    RunnerState,
)

__all__ = [
    "RUNNERS",
    "LaunchSpec",
    "ReplicaPhase",
    "ReplicaSpec",
    "ReplicaStatus",
    "Runner",
    "RunnerState",
    "get_runner",
]

RUNNERS: dict[str, str] = {
    "local": "mlengine.jobs.runners._local:LocalRunner",
}


def get_runner(name: str) -> Runner:
    """Return a new runner registered under `name`.

    Raises:
        InvalidArgument: no runner has that name.
    """
    try:
        target = RUNNERS[name]
    except KeyError:
        known = ", ".join(sorted(RUNNERS))
        raise InvalidArgument(f"Unknown runner {name!r}; known runners: {known}.") from None
    module_name, _, class_name = target.partition(":")
    runner_class = getattr(importlib.import_module(module_name), class_name)
    runner: Runner = runner_class()
    return runner
