"""The scheduler: moves jobs QUEUED -> PREPARING -> RUNNING -> terminal.

Exactly one scheduler works a metadata database at a time: it holds the ``scheduler`` lease row
and renews it on every pass. A scheduler that takes the lease over (after a crash or
``kill -9`` of the previous server) reconciles what it finds: jobs left PREPARING go back to
the queue (nothing of them had started), RUNNING jobs are polled through their stored
`RunnerState`, so replicas that survived are adopted and finish with their true exit status,
and replicas that vanished fail the job with the reason.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import shutil
import signal
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from mlengine._processes import process_running
from mlengine.config import Settings
from mlengine.errors import MLEngineError
from mlengine.jobs._environment import TrainerEnvironments
from mlengine.jobs._logs import tail_of_stderr
from mlengine.jobs._scale_tiers import replicas_for
from mlengine.jobs._service import JobService, now_utc
from mlengine.jobs._state import JobState
from mlengine.jobs._wakeup import WakeupListener, wake_leader
from mlengine.jobs.runners import (
    LaunchSpec,
    ReplicaPhase,
    ReplicaStatus,
    Runner,
    RunnerState,
    get_runner,
)
from mlengine.store import JobRecord, MetadataStore
from mlengine.store._artifacts import fetch_file

__all__ = ["Scheduler"]

logger = logging.getLogger("mlengine.scheduler")

LEASE_NAME = "scheduler"
_RUNNING = JobState.RUNNING.value
_PREPARING = JobState.PREPARING.value
_CANCELLING = JobState.CANCELLING.value
_QUEUED = JobState.QUEUED.value


class Scheduler:
    """Runs queued jobs with their runner, at most `max_running_jobs` at once.

    `start` runs passes on a background thread; `step` runs one pass (tests call it directly).
    Preparing, stopping and cancelling happen on worker threads so one slow job never holds up
    the others. Thread-safe: `wake` may be called from request handlers.
    """

    def __init__(
        self,
        store: MetadataStore,
        settings: Settings,
        *,
        owner: str | None = None,
        poll_interval: float = 0.05,
        idle_interval: float = 1.0,
        lease_ttl: float = 15.0,
    ) -> None:
        self.store = store
        self.settings = settings
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.poll_interval = poll_interval
        self.idle_interval = idle_interval
        self._idle = False
        self.lease_ttl = lease_ttl
        self.jobs = JobService(store, settings)
        self.environments = TrainerEnvironments(settings.home_path / "envs")
        self.is_leader = False
        self._busy: set[tuple[str, str]] = set()
        self._busy_lock = threading.Lock()
        self._runners: dict[str, Runner] = {}
        self._wake = threading.Event()
        # while leader: other server processes of this machine wake it after creating work
        self.wakeups = WakeupListener(str(settings.database_url), self._wake.set)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(2, settings.max_running_jobs * 2), thread_name_prefix="mlengine-job"
        )

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Run passes on a daemon thread until `stop`."""
        self._thread = threading.Thread(target=self._loop, name="mlengine-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop passing and give the lease up. Running jobs keep running; the next scheduler
        adopts them."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=False)
        self.wakeups.close()
        if self.is_leader:
            with contextlib.suppress(MLEngineError):
                self.store.release_lease(LEASE_NAME, self.owner)
            self.is_leader = False

    def wake(self) -> None:
        """Run the next pass now (a job was created or cancelled). In a process that does not
        hold the lease, the leader is woken instead when it runs on this machine."""
        self._wake.set()
        if not self.is_leader:
            wake_leader(str(self.settings.database_url))

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.step()
            except MLEngineError as error:
                logger.warning("scheduler pass failed: %s", error)
            except Exception:
                logger.exception("scheduler pass failed")
            self._wake.wait(self.next_wait())
            self._wake.clear()

    def next_wait(self) -> float:
        """Seconds until the next pass unless woken: a follower tries for the lease three
        times per lease lifetime; the leader passes at `poll_interval` while it has work and
        at `idle_interval` when idle, but always within a third of the lease lifetime, since
        each pass renews the lease."""
        if not self.is_leader:
            return self.lease_ttl / 3
        interval = self.idle_interval if self._idle else self.poll_interval
        return min(interval, self.lease_ttl / 3)

    # -- one pass -------------------------------------------------------------------------
    def step(self) -> None:
        """Renew the lease and, as the leader, advance every active and queued job once."""
        now = time.time()
        leader = self.store.acquire_lease(
            LEASE_NAME, self.owner, self.lease_ttl, now, replace=self._dead_local_owner(now)
        )
        if leader and not self.is_leader:
            logger.info("scheduler %s took the lease", self.owner)
            self.wakeups.open()  # tried once per lease taken: a refusal is logged once
        elif self.is_leader and not leader:
            self.wakeups.close()
        self.is_leader = leader
        if not leader:
            return
        # Read the busy set before the jobs: a worker finishing after this read has already
        # moved its job out of PREPARING, so a PREPARING job outside `busy` is an orphan and
        # every busy job holds a slot. Reading it later would undercount running jobs.
        with self._busy_lock:
            busy = set(self._busy)
        active = self.store.jobs_in_states({_PREPARING, _RUNNING, _CANCELLING})
        self._idle = not active
        for job in active:
            if (job.project, job.job_id) in busy:
                continue
            if job.state == _PREPARING:
                self._requeue_orphan(job)
            elif job.state == _CANCELLING:
                self._submit(job, self._cancel)
            else:
                self._check_running(job)
        running = sum(
            1 for job in active if job.state != _PREPARING or (job.project, job.job_id) in busy
        )
        slots = self.settings.max_running_jobs - running
        if slots <= 0:
            return
        queued = self.store.jobs_in_states({_QUEUED})
        self._idle = self._idle and not queued
        for job in queued[:slots]:
            if self.store.update_job(
                job.project,
                job.job_id,
                from_states={_QUEUED},
                state=_PREPARING,
                start_time=now_utc(),
            ):
                self._submit(job, self._prepare_and_start)

    def _dead_local_owner(self, now: float) -> str | None:
        """The lease owner when it is a scheduler process of this machine that no longer
        exists (killed with -9), so a restarted server need not wait for the lease to expire."""
        if self.is_leader:
            return None
        owner = self.store.lease_owner(LEASE_NAME, now)
        if owner is None or owner == self.owner:
            return None
        host, _, rest = owner.partition(":")
        pid_text = rest.partition(":")[0]
        if host != socket.gethostname() or not pid_text.isdigit():
            return None
        return None if process_running(int(pid_text)) else owner

    def _submit(self, job: JobRecord, work: Any) -> None:
        key = (job.project, job.job_id)
        with self._busy_lock:
            if key in self._busy:
                return
            self._busy.add(key)

        def run() -> None:
            try:
                work(job)
            except Exception as error:  # the job must end truthfully whatever happened
                logger.exception("job %s/%s: %s", job.project, job.job_id, work.__name__)
                self._finish(job, JobState.FAILED, f"Internal error in mlengine: {error}")
            finally:
                with self._busy_lock:
                    self._busy.discard(key)
                self._wake.set()

        self._pool.submit(run)

    def runner(self, name: str) -> Runner:
        """The runner registered under `name` (one instance per scheduler)."""
        if name not in self._runners:
            self._runners[name] = get_runner(name)
        return self._runners[name]

    # -- steps of a job -------------------------------------------------------------------
    def _requeue_orphan(self, job: JobRecord) -> None:
        self._service_log(job, "The server preparing this job stopped; the job is queued again.")
        self.store.update_job(
            job.project, job.job_id, from_states={_PREPARING}, state=_QUEUED, start_time=None
        )

    def _prepare_and_start(self, job: JobRecord) -> None:
        root = self.jobs.job_root(job.project, job.job_id)
        training_input: Mapping[str, Any] = job.training_input or {}
        self._service_log(job, "Validating job requirements...")
        try:
            packages = self._fetch_packages(job, root / "packages")
            self._service_log(job, "Installing the trainer packages (cached by content)...")
            python = self.environments.ensure(
                packages, log=lambda line: self._service_log(job, line)
            )
        except MLEngineError as error:
            self._finish(job, JobState.FAILED, f"Job preparation failed: {error}")
            return
        run_dir = root / "run"
        runner = self.runner(job.runner)
        leftover = runner.leftover(run_dir)
        if leftover is not None:  # a server stopped between starting them and recording it
            self._service_log(job, "Stopping the replicas an interrupted start left running...")
            runner.stop(leftover, self.settings.cancel_grace_seconds)
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        job_dir = training_input.get("jobDir")
        if job_dir and "://" not in job_dir:
            Path(job_dir).mkdir(parents=True, exist_ok=True)
        spec = LaunchSpec(
            job_id=job.job_id,
            python=str(python),
            module=training_input["pythonModule"],
            args=list(training_input.get("args", [])),
            job_dir=job_dir,
            run_dir=run_dir,
            log_dir=root / "logs",
            replicas=replicas_for(training_input),
            training_input=training_input,
        )
        current = self.store.get_job(job.project, job.job_id)
        if current.state == _CANCELLING:
            self._finish(job, JobState.CANCELLED, "Job cancelled by the user.")
            return
        try:
            state = runner.start(spec)
        except MLEngineError as error:
            self._finish(job, JobState.FAILED, f"Job failed to start: {error}")
            return
        try:
            started = self.store.update_job(
                job.project,
                job.job_id,
                from_states={_PREPARING},
                state=_RUNNING,
                runner_state=state,
            )
        except Exception:  # not recorded: nothing would ever watch or stop these replicas
            runner.stop(state, self.settings.cancel_grace_seconds)
            raise
        if not started:  # cancelled while starting
            self.store.update_job(job.project, job.job_id, runner_state=state)
            runner.cancel(state, self.settings.cancel_grace_seconds)
            self._finish(job, JobState.CANCELLED, "Job cancelled by the user.")
            return
        names = ", ".join(r.name for r in spec.replicas)
        self._service_log(job, f"Job is running: {names}.")

    def _fetch_packages(self, job: JobRecord, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        uris = (job.training_input or {}).get("packageUris", [])
        for position, uri in enumerate(uris):
            name = uri.rstrip("/").rsplit("/", 1)[-1]
            paths.append(fetch_file(uri, directory / f"{position:03d}" / name))
        return paths

    def _check_running(self, job: JobRecord) -> None:
        state: RunnerState = dict(job.runner_state or {})
        statuses = self.runner(job.runner).poll(state)
        verdict = _verdict(statuses)
        if verdict is None:
            deadline = self._deadline_verdict(job)
            if deadline is None:
                return
            verdict = (*deadline, None)
        final_state, message, failed = verdict
        if failed is not None:
            log_dir = self.jobs.job_root(job.project, job.job_id) / "logs"
            tail = tail_of_stderr(log_dir, failed.replica.name)
            if tail:
                message = f"{message}\n{tail}"

        def finish(job: JobRecord) -> None:
            self.runner(job.runner).stop(state, self.settings.cancel_grace_seconds)
            self._finish(job, final_state, message)

        self._submit(job, finish)

    def _deadline_verdict(self, job: JobRecord) -> tuple[JobState, str] | None:
        limit = ((job.training_input or {}).get("scheduling") or {}).get("maxRunningTime")
        if not limit or job.start_time is None:
            return None
        seconds = float(limit.rstrip("s"))
        if (now_utc() - job.start_time).total_seconds() <= seconds:
            return None
        return JobState.FAILED, (
            f"Job exceeded its maximum running time (scheduling.maxRunningTime={limit}) "
            "and was stopped."
        )

    def _cancel(self, job: JobRecord) -> None:
        if job.runner_state:
            self.runner(job.runner).cancel(
                dict(job.runner_state), self.settings.cancel_grace_seconds
            )
        self._finish(job, JobState.CANCELLED, "Job cancelled by the user.")

    def _finish(self, job: JobRecord, state: JobState, message: str) -> None:
        if state == JobState.SUCCEEDED:
            self._service_log(job, "Job completed successfully.")
        else:
            self._service_log(
                job,
                message.splitlines()[0] if message else state.value,
                error=state == JobState.FAILED,
            )
        final = {_PREPARING, _RUNNING, _CANCELLING}
        if state == JobState.CANCELLED:
            final = {_PREPARING, _RUNNING, _CANCELLING, _QUEUED}
        changed = self.store.update_job(
            job.project,
            job.job_id,
            from_states=final,
            state=state.value,
            end_time=now_utc(),
            error_message="" if state == JobState.SUCCEEDED else message,
            training_output=_training_output(job),
        )
        if not changed:
            # A cancel raced a natural end: the job was cancelled while it finished.
            current = self.store.get_job(job.project, job.job_id)
            if current.state == _CANCELLING:
                self.store.update_job(
                    job.project, job.job_id, state=JobState.CANCELLED.value, end_time=now_utc()
                )

    def _service_log(self, job: JobRecord, message: str, error: bool = False) -> None:
        log_dir = self.jobs.job_root(job.project, job.job_id) / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        line = orjson.dumps(
            {"time": time.time(), "stream": "stderr" if error else "stdout", "message": message}
        )
        with open(log_dir / "service.log", "ab") as handle:
            handle.write(line + b"\n")


def _training_output(job: JobRecord) -> dict[str, Any]:
    output = dict(job.training_output or {})
    output.setdefault("consumedMLUnits", 0)
    return output


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        reason = f"killed by {name}"
        if -code == signal.SIGKILL:
            reason += " (out of memory, or killed from outside)"
        return f"was {reason}"
    return f"exited with a non-zero status of {code}"


def _verdict(
    statuses: list[ReplicaStatus],
) -> tuple[JobState, str, ReplicaStatus | None] | None:
    """The job's end (state, message, the failed replica), or None while it runs: the
    primary's exit decides; a failing or lost replica fails the job early."""
    for status in statuses:
        replica = status.replica
        where = f"The replica {replica.task_type} {replica.index}"
        if status.phase == ReplicaPhase.LOST:
            message = (
                f"{where} was lost: its process ended without recording an exit status "
                "(the machine or the mlengine server running it stopped)."
            )
            return JobState.FAILED, message, None
        if status.phase == ReplicaPhase.EXITED and status.exit_code:
            return JobState.FAILED, f"{where} {_describe_exit(status.exit_code)}.", status
    primary = next(s for s in statuses if s.replica.is_primary)
    if primary.phase == ReplicaPhase.EXITED:
        return JobState.SUCCEEDED, "", None
    return None
