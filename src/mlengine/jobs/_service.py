"""Job operations behind the REST API: create, get, list, patch, cancel, logs.

The service only records intent in the metadata store; the `Scheduler` does the work. So a
job outlives the request (and the CLI) that created it.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlengine.config import Settings
from mlengine.errors import FailedPrecondition, InvalidArgument, invalid_field
from mlengine.jobs._logs import read_logs
from mlengine.jobs._resource import (
    LIST_FILTER_FIELDS,
    job_resource,
    validate_job_id,
    validate_labels,
    validate_training_input,
)
from mlengine.jobs._state import JobState
from mlengine.store import JobRecord, MetadataStore, parse_filter

__all__ = ["JobService", "validate_project"]

_PROJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_PATCHABLE = frozenset({"labels", "etag"})


def validate_project(project: str) -> str:
    """Return `project` when it is a valid project id.

    Raises:
        InvalidArgument: not 1-128 letters, digits, '-', '_' or '.'.
    """
    if not _PROJECT.fullmatch(project):
        raise InvalidArgument(f"The project id {project!r} is not valid.")
    return project


def new_etag() -> str:
    """A fresh opaque etag (base64 of 8 random bytes, as ml v1 emits)."""
    return base64.b64encode(os.urandom(8)).decode()


def now_utc() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


class JobService:
    """Jobs of every project, stored in `store`, with their files under ``home/jobs``."""

    def __init__(self, store: MetadataStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    def job_root(self, project: str, job_id: str) -> Path:
        """The directory of a job's logs, run directories and fetched packages."""
        return self.settings.home_path / "jobs" / project / job_id

    def create(self, project: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Validate a ml v1 `Job` body and queue it.

        Raises:
            InvalidArgument: the body is not a valid training job.
            AlreadyExists: the project has a job with that id.
        """
        validate_project(project)
        if not isinstance(body, Mapping):
            raise InvalidArgument("The request body must be a JSON object (a Job).")
        job_id = validate_job_id(body.get("jobId"))
        if body.get("predictionInput") is not None:
            raise InvalidArgument(
                "The 'predictionInput' field of Job asks for batch prediction, which this "
                "mlengine version does not run yet."
            )
        if body.get("trainingInput") is None:
            raise InvalidArgument("The 'trainingInput' field of Job is required.")
        training_input = validate_training_input(body["trainingInput"])
        labels = validate_labels(body.get("labels"))
        record = JobRecord(
            project=project,
            job_id=job_id,
            kind="training",
            state=JobState.QUEUED.value,
            create_time=now_utc(),
            etag=new_etag(),
            labels=labels,
            training_input=training_input,
            runner=self.settings.runner,
        )
        self.store.insert_job(record)
        return self._resource(record)  # as created: the scheduler may have taken it already

    def get(self, project: str, job_id: str) -> dict[str, Any]:
        """The ml v1 `Job` resource.

        Raises:
            NotFound: no such job.
        """
        record = self.store.get_job(project, job_id)
        return self._resource(record)

    def _resource(self, record: JobRecord) -> dict[str, Any]:
        position = None
        if record.state == JobState.QUEUED.value:
            # At least 1: the job may have left the queue since `record` was read.
            position = max(
                1, self.store.queue_position(record.project, record.job_id, record.create_time)
            )
        return job_resource(record, position)

    def list(
        self,
        project: str,
        filter_text: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> dict[str, Any]:
        """One page of jobs, newest first: ``{"jobs": [...], "nextPageToken": ...}`` or ``{}``.

        Raises:
            InvalidArgument: bad filter, page size or token.
        """
        validate_project(project)
        size = 20 if page_size in (None, 0) else page_size
        if not isinstance(size, int) or size < 1:
            raise invalid_field("pageSize", "ListJobsRequest", "an integer >= 1", page_size)
        terms = parse_filter(filter_text, LIST_FILTER_FIELDS)
        records, token = self.store.list_jobs(project, terms, min(size, 100), page_token)
        result: dict[str, Any] = {}
        if records:
            result["jobs"] = [self._resource(r) for r in records]
        if token:
            result["nextPageToken"] = token
        return result

    def cancel(self, project: str, job_id: str) -> None:
        """Cancel a job: a queued job ends CANCELLED at once, a started one goes CANCELLING and
        the scheduler stops its processes. Cancelling a CANCELLING job does nothing.

        Raises:
            NotFound: no such job.
            FailedPrecondition: the job has already finished.
        """
        record = self.store.get_job(project, job_id)
        state = JobState(record.state)
        if state.is_terminal():
            raise FailedPrecondition(
                f"Cannot cancel job {job_id}: it has already finished with state {state.value}."
            )
        if state == JobState.QUEUED and self.store.update_job(
            project,
            job_id,
            from_states={JobState.QUEUED.value},
            state=JobState.CANCELLED.value,
            end_time=now_utc(),
            error_message="Job cancelled by the user before it started.",
            cancel_requested=True,
        ):
            return
        if not self.store.update_job(
            project,
            job_id,
            from_states={JobState.PREPARING.value, JobState.RUNNING.value},
            state=JobState.CANCELLING.value,
            error_message="Job cancelled by the user.",
            cancel_requested=True,
        ):
            # It moved on meanwhile: re-read and report truthfully.
            current = JobState(self.store.get_job(project, job_id).state)
            if current.is_terminal():
                raise FailedPrecondition(
                    f"Cannot cancel job {job_id}: it has already finished with state "
                    f"{current.value}."
                )

    def patch(
        self, project: str, job_id: str, body: Mapping[str, Any], update_mask: str | None
    ) -> dict[str, Any]:
        """Update a job's labels (``updateMask=labels``), optionally guarded by ``etag``.

        Raises:
            InvalidArgument: an unsupported mask path or bad labels.
            FailedPrecondition: the etag does not match.
        """
        paths = [p.strip() for p in (update_mask or "").split(",") if p.strip()]
        if not paths:
            raise InvalidArgument("The 'updateMask' parameter is required (for example 'labels').")
        unsupported = [p for p in paths if p not in _PATCHABLE]
        if unsupported:
            raise InvalidArgument(
                f"The 'updateMask' path {unsupported[0]!r} cannot be updated on a Job; "
                "supported: labels, etag."
            )
        record = self.store.get_job(project, job_id)
        if body.get("etag") and body["etag"] != record.etag:
            raise FailedPrecondition(
                f"The etag of job {job_id} has changed; read the job again and retry."
            )
        labels = validate_labels(body.get("labels")) if "labels" in paths else None
        self.store.update_job(project, job_id, labels=labels, etag=new_etag())
        return self.get(project, job_id)

    def logs(
        self,
        project: str,
        job_id: str,
        cursor: str | None = None,
        task_name: str | None = None,
        limit: int = 1000,
    ) -> dict[str, Any]:
        """New log entries of a job since `cursor`:
        ``{"entries": [...], "nextPageToken": cursor, "state": ..., "done": bool}``. `done` is
        true once the job has ended and every line has been returned.

        Raises:
            NotFound: no such job.
        """
        record = self.store.get_job(project, job_id)
        log_dir = self.job_root(project, job_id) / "logs"
        entries, next_cursor = read_logs(log_dir, cursor, task_name, limit)
        finished = JobState(record.state).is_terminal()
        return {
            "entries": [entry.to_json() for entry in entries],
            "nextPageToken": next_cursor,
            "state": record.state,
            "done": finished and len(entries) < limit,
        }
