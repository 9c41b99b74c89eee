"""The `Runner` seam: how the replicas of one job are started, watched and stopped."""

from __future__ import annotations

import abc
import dataclasses
import enum
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "LaunchSpec",
    "ReplicaPhase",
    "ReplicaSpec",
    "ReplicaStatus",
    "Runner",
    "RunnerState",
]

RunnerState = dict[str, Any]
"""JSON-serialisable state a runner returns from `start`; stored with the job so that a
restarted scheduler can `poll`, `stop` or `cancel` replicas it did not start itself."""


@dataclasses.dataclass(frozen=True)
class ReplicaSpec:
    """One replica of a job: its task type (``master``, ``worker``, ``ps``, ``evaluator``) and
    its 0-based index within that type."""

    task_type: str
    index: int

    @property
    def name(self) -> str:
        """The task name AI Platform uses in logs and `webAccessUris`: ``worker-replica-1``."""
        return f"{self.task_type}-replica-{self.index}"

    @property
    def is_primary(self) -> bool:
        """True for the replica whose exit code is the job's."""
        return self.task_type in ("master", "chief")


@dataclasses.dataclass(frozen=True)
class LaunchSpec:
    """Everything a runner needs to start the replicas of one job (or, later, one HP trial).

    Attributes:
        job_id: the job id (``CLOUD_ML_JOB_ID``).
        python: the interpreter to run (the job's isolated environment).
        module: the trainer module, run as ``python -m module``.
        args: user args; the runner appends ``--job-dir DIR`` (two tokens) when `job_dir` is set.
        job_dir: the job directory handed to the trainer, or None.
        run_dir: a fresh directory owned by this run; each replica gets
            ``run_dir/<replica name>`` as its working directory.
        log_dir: where each replica's log is written as ``<replica name>.log`` (JSON lines).
        replicas: the replicas to start; exactly one is primary.
        training_input: the job's TrainingInput (ml v1 JSON), for ``TF_CONFIG.job``.
        env: extra environment variables for every replica.
        trial_id: the HP trial id (``CLOUD_ML_TRIAL_ID``), or None outside tuning.
    """

    job_id: str
    python: str
    module: str
    args: Sequence[str]
    job_dir: str | None
    run_dir: Path
    log_dir: Path
    replicas: Sequence[ReplicaSpec]
    training_input: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    trial_id: str | None = None


class ReplicaPhase(enum.StrEnum):
    RUNNING = "RUNNING"
    EXITED = "EXITED"
    LOST = "LOST"
    """The replica is gone and left no exit status (its supervisor was killed)."""


@dataclasses.dataclass(frozen=True)
class ReplicaStatus:
    """What a runner knows about one replica at one moment."""

    replica: ReplicaSpec
    phase: ReplicaPhase
    exit_code: int | None = None
    """The exit code once EXITED; negative -N when killed by signal N."""


class Runner(abc.ABC):
    """Starts the replicas of one job and reports on them.

    A runner is stateless between calls: everything it needs later is in the `RunnerState`
    that `start` returns, which the scheduler stores with the job. Implementations are safe to
    call from one scheduler thread. `stop` and `cancel` are idempotent and return once every
    process of the run is gone (SIGTERM, then SIGKILL after the grace period).
    """

    name: str = "base"

    @abc.abstractmethod
    def start(self, spec: LaunchSpec) -> RunnerState:
        """Start every replica of `spec` and return the state needed to find them again.

        Raises:
            OperationFailed: a replica could not be started; nothing is left running.
        """

    @abc.abstractmethod
    def poll(self, state: RunnerState) -> list[ReplicaStatus]:
        """Report each replica's phase. Never blocks; works on state from another process."""

    @abc.abstractmethod
    def stop(self, state: RunnerState, grace_s: float = 5.0) -> None:
        """Terminate every replica still running (SIGTERM, SIGKILL after `grace_s`)."""

    def cancel(self, state: RunnerState, grace_s: float = 5.0) -> None:
        """Cancel the run: the same as `stop` unless a backend has a cheaper way."""
        self.stop(state, grace_s)

    def leftover(self, run_dir: Path) -> RunnerState | None:
        """The state of replicas an interrupted `start` into `run_dir` may have left running
        (the server stopped after they started, before the scheduler stored the state), for
        `stop`; None when there can be none. The scheduler asks before it starts a job again
        in the same `run_dir`. A runner that cannot tell returns None (the default)."""
        return None
