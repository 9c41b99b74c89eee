"""Helpers of the server tests: `JobsApi` (the ml v1 jobs routes of one server and project,
through raw httpx), the training job body they submit, and checks on what the server returns."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "ACTIVE",
    "RFC3339",
    "TERMINAL",
    "JobsApi",
    "assert_error",
    "parse_time",
    "process_alive",
    "training_job",
]

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
ACTIVE = frozenset({"QUEUED", "PREPARING", "RUNNING", "CANCELLING"})
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")
"""A timestamp as ml v1 emits it: RFC 3339, UTC, with a ``Z``."""


def training_job(
    job_id: str, package_uri: str, job_dir: Path, args: Iterable[str] = (), **training_input: Any
) -> dict[str, Any]:
    """A ml v1 training `Job` body running the test trainer (``trainer.task``) with `args`;
    `training_input` adds or replaces TrainingInput fields."""
    return {
        "jobId": job_id,
        "trainingInput": {
            "pythonModule": "trainer.task",
            "packageUris": [package_uri],
            "args": list(args),
            "jobDir": str(job_dir),
            "scaleTier": "BASIC",
            **training_input,
        },
    }


def parse_time(text: str) -> dt.datetime:
    """An RFC 3339 ``...Z`` timestamp of the API as an aware datetime."""
    assert RFC3339.match(text), text
    return dt.datetime.fromisoformat(text)


def assert_error(response: httpx.Response, code: int, status: str, *words: str) -> str:
    """Check that `response` is exactly the Google error envelope with `code` and `status`,
    whose message contains each of `words`; return the message."""
    assert response.status_code == code, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "status"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["status"] == status, body
    message: str = body["error"]["message"]
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return message


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] not in (b"Z", b"X")


class JobsApi:
    """The ml v1 jobs routes of one server and project, through raw httpx."""

    def __init__(
        self,
        client: httpx.Client,
        project: str,
        package_uri: str,
        job_dirs: Path,
        home: Path,
    ) -> None:
        self.client = client
        self.project = project
        self.package_uri = package_uri
        self.job_dirs = job_dirs
        self.home = home
        """The server's MLENGINE_HOME."""

    def path(self, job_id: str | None = None, verb: str | None = None) -> str:
        """``/v1/projects/P/jobs[/J][:verb]``."""
        path = f"/v1/projects/{self.project}/jobs"
        if job_id is not None:
            path += f"/{job_id}"
        if verb is not None:
            path += f":{verb}"
        return path

    def job_dir(self, job_id: str) -> Path:
        """The ``jobDir`` that `body` gives job `job_id`."""
        return self.job_dirs / self.project / job_id

    def body(self, job_id: str, args: Iterable[str] = (), **training_input: Any) -> dict[str, Any]:
        """`training_job` with this API's package and a job dir of its own."""
        return training_job(job_id, self.package_uri, self.job_dir(job_id), args, **training_input)

    def create(
        self,
        job_id: str,
        args: Iterable[str] = (),
        labels: dict[str, str] | None = None,
        **training_input: Any,
    ) -> dict[str, Any]:
        """Create a job (see `body`) and return the Job the server answered."""
        body = self.body(job_id, args, **training_input)
        if labels is not None:
            body["labels"] = labels
        response = self.client.post(self.path(), json=body)
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    def get(self, job_id: str) -> dict[str, Any]:
        """The Job `job_id`."""
        response = self.client.get(self.path(job_id))
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    def list(self, **params: Any) -> dict[str, Any]:
        """One page of ``jobs.list`` with query `params`."""
        response = self.client.get(self.path(), params=params)
        assert response.status_code == 200, response.text
        page: dict[str, Any] = response.json()
        return page

    def cancel(self, job_id: str) -> httpx.Response:
        """``POST :cancel`` with no body and no Content-Type, as googleapiclient sends it."""
        return self.client.post(self.path(job_id, "cancel"), content=b"")

    def wait(
        self, job_id: str, states: Iterable[str] = TERMINAL, timeout: float = 60
    ) -> dict[str, Any]:
        """Poll the job until its state is one of `states`; fails after `timeout` seconds or
        when it ends in another state."""
        wanted = frozenset(states)
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job["state"] in wanted:
                return job
            assert job["state"] not in TERMINAL, f"{job_id} ended before {set(wanted)}: {job}"
            assert time.monotonic() < deadline, f"{job_id} not in {set(wanted)}: {job}"
            time.sleep(0.1)

    def wait_for_file(self, path: Path, timeout: float = 60) -> Path:
        """Poll until `path` exists and is not empty (a trainer writes it)."""
        deadline = time.monotonic() + timeout
        while not (path.is_file() and path.stat().st_size):
            assert time.monotonic() < deadline, f"{path} was never written"
            time.sleep(0.05)
        return path
