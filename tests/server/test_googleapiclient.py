"""The unmodified google-api-python-client (``discovery.build('ml', 'v1')`` with its shipped
discovery document) against a real ``mlengine server run`` (AIPLATFORM.md §8)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from googleapiclient import discovery
from googleapiclient.errors import HttpError

from ._jobs_api import TERMINAL, training_job

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ml(module_server: Any) -> Iterator[Any]:
    """The ``ml`` v1 client of googleapiclient, pointed at the module's server."""
    with discovery.build(
        "ml",
        "v1",
        static_discovery=True,
        client_options={"api_endpoint": module_server.url},
        credentials=AnonymousCredentials(),
    ) as client:
        yield client


@pytest.fixture
def jobs(ml: Any) -> Any:
    """``ml.projects().jobs()``."""
    return ml.projects().jobs()


def _wait(jobs: Any, name: str, states: frozenset[str] = TERMINAL, timeout: float = 60) -> Any:
    """Poll ``jobs.get`` until the job's state is one of `states`."""
    deadline = time.monotonic() + timeout
    while True:
        job = jobs.get(name=name).execute()
        if job["state"] in states:
            return job
        assert job["state"] not in TERMINAL, str(job)
        assert time.monotonic() < deadline, str(job)
        time.sleep(0.1)


def test_create_get_list_and_filter(
    jobs: Any, project: str, package_uri: str, job_dirs: Path
) -> None:
    parent = f"projects/{project}"
    ids = [f"client_{i}" for i in range(5)]
    for job_id in ids:
        args = ["--exit", "3"] if job_id == "client_2" else []
        body = training_job(job_id, package_uri, job_dirs / project / job_id, args)
        created = jobs.create(parent=parent, body=body).execute()
        assert created["jobId"] == job_id
        assert created["state"] == "QUEUED"

    states = {job_id: _wait(jobs, f"{parent}/jobs/{job_id}")["state"] for job_id in ids}
    assert states == {job_id: "FAILED" if job_id == "client_2" else "SUCCEEDED" for job_id in ids}

    seen: list[str] = []
    page_sizes: list[int] = []
    request = jobs.list(parent=parent, pageSize=2)
    while request is not None:
        response = request.execute()
        page_sizes.append(len(response["jobs"]))
        seen += [job["jobId"] for job in response["jobs"]]
        request = jobs.list_next(request, response)
    assert page_sizes == [2, 2, 1]
    assert seen == list(reversed(ids))

    succeeded = jobs.list(parent=parent, filter="state:SUCCEEDED").execute()
    assert sorted(job["jobId"] for job in succeeded["jobs"]) == [
        "client_0",
        "client_1",
        "client_3",
        "client_4",
    ]
    assert "nextPageToken" not in succeeded
    assert jobs.list(parent=parent, filter="jobId:nomatch*").execute() == {}


@pytest.mark.parametrize("with_body", [True, False], ids=["body={}", "no-body"])
def test_cancel(jobs: Any, project: str, package_uri: str, job_dirs: Path, with_body: bool) -> None:
    name = f"projects/{project}/jobs/to_cancel"
    job_dir = job_dirs / project / "to_cancel"
    body = training_job("to_cancel", package_uri, job_dir, ["--sleep", "60"])
    jobs.create(parent=f"projects/{project}", body=body).execute()
    _wait(jobs, name, frozenset({"RUNNING"}))

    request = jobs.cancel(name=name, body={}) if with_body else jobs.cancel(name=name)
    response = request.execute()

    assert response == {}
    job = _wait(jobs, name, frozenset({"CANCELLED"}), timeout=15)
    assert job["errorMessage"]


def test_errors_raise_http_error_with_the_server_message(
    jobs: Any, project: str, package_uri: str, job_dirs: Path
) -> None:
    name = f"projects/{project}/jobs/missing_job"

    with pytest.raises(HttpError) as not_found:
        jobs.get(name=name).execute()
    with pytest.raises(HttpError) as cancel_not_found:
        jobs.cancel(name=name).execute()
    bad = training_job("1bad", package_uri, job_dirs / project / "bad")
    with pytest.raises(HttpError) as invalid:
        jobs.create(parent=f"projects/{project}", body=bad).execute()

    assert not_found.value.resp.status == 404
    assert f"Job {name} not found." in not_found.value.reason
    assert cancel_not_found.value.resp.status == 404
    assert "missing_job" in cancel_not_found.value.reason
    assert invalid.value.resp.status == 400
    assert "jobId" in invalid.value.reason
