"""The ml v1 jobs REST surface of a real ``mlengine server run``, through raw httpx
(AIPLATFORM.md §1, §2.1-2.2): create/get/list/patch/cancel, the Google error envelope, the
server-side filter and paging, ``:logs``, and what the trainer sees when its job runs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ._jobs_api import RFC3339, TERMINAL, JobsApi, assert_error, parse_time, process_alive

pytestmark = pytest.mark.integration

_DELETE = object()
"""In a body patch of `_patched`: remove the field."""


def _patched(body: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of `body` with ``{"a.b": value}`` set (or removed, for `_DELETE`)."""
    result: dict[str, Any] = json.loads(json.dumps(body))
    for dotted, value in changes.items():
        *parents, name = dotted.split(".")
        target = result
        for parent in parents:
            target = target[parent]
        if value is _DELETE:
            target.pop(name, None)
        else:
            target[name] = value
    return result


def _record(jobs_api: JobsApi, job_id: str, replica: str = "chief-0") -> dict[str, Any]:
    """What the test trainer recorded about how it was started (``<jobDir>/<replica>.json``)."""
    path = jobs_api.wait_for_file(jobs_api.job_dir(job_id) / f"{replica}.json", timeout=10)
    record: dict[str, Any] = json.loads(path.read_text())
    return record


def _wait_gone(pids: list[int], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while any(process_alive(pid) for pid in pids):
        alive = [pid for pid in pids if process_alive(pid)]
        assert time.monotonic() < deadline, f"processes {alive} still run"
        time.sleep(0.05)


# -- create, get, run -----------------------------------------------------------------------


def test_create_returns_queued_job_that_runs_to_success(jobs_api: JobsApi) -> None:
    body = jobs_api.body("run_1", args=["--sleep", "0.2"])
    body["labels"] = {"team": "x"}
    body["someUnknownField"] = {"nested": 1}
    body["trainingInput"]["someUnknownTrainingField"] = "y"

    response = jobs_api.client.post(jobs_api.path(), json=body)

    assert response.status_code == 200, response.text
    created = response.json()
    assert created["jobId"] == "run_1"
    assert created["state"] == "QUEUED"
    assert RFC3339.match(created["createTime"]), created
    assert isinstance(created["jobPosition"], str) and int(created["jobPosition"]) >= 1
    assert created["labels"] == {"team": "x"}
    assert isinstance(created["etag"], str) and created["etag"]
    assert created["trainingInput"]["scaleTier"] == "BASIC"
    assert created["trainingInput"]["args"] == ["--sleep", "0.2"]
    assert "someUnknownField" not in created
    assert "someUnknownTrainingField" not in created["trainingInput"]
    assert "startTime" not in created and "endTime" not in created

    job = jobs_api.wait("run_1")

    assert job["state"] == "SUCCEEDED", str(job)
    assert "errorMessage" not in job
    assert job["jobPosition"] == "0"
    assert job["createTime"] == created["createTime"]
    assert parse_time(job["endTime"]) >= parse_time(job["startTime"])
    assert parse_time(job["startTime"]) >= parse_time(job["createTime"])
    assert "someUnknownField" not in job
    assert "someUnknownTrainingField" not in job["trainingInput"]

    record = _record(jobs_api, "run_1")
    job_dir = str(jobs_api.job_dir("run_1"))
    assert record["argv"] == ["--sleep", "0.2", "--job-dir", job_dir]
    assert Path(record["cwd"]).resolve().is_relative_to(jobs_api.home.resolve()), record["cwd"]
    env = record["env"]
    assert env["CLOUD_ML_JOB_ID"] == "run_1"
    tf_config = json.loads(env["TF_CONFIG"])
    assert tf_config["task"] == {"type": "chief", "index": 0}
    assert tf_config["environment"] == "cloud"
    assert isinstance(tf_config["job"], str)
    job_spec = json.loads(tf_config["job"])
    assert job_spec["python_module"] == "trainer.task"
    assert job_spec["job_dir"] == job_dir
    assert "some_unknown_training_field" not in job_spec


def test_create_answers_queued_even_when_the_scheduler_is_quick(
    jobs_api: JobsApi, tmp_path: Path
) -> None:
    # Back-to-back creates: the scheduler, woken by one, may pick the next up while it is
    # being created; the answer must still be the job as created.
    missing = str(tmp_path / "trainer-0.0.0.tar.gz")  # the jobs fail fast, unprepared
    ids = [f"burst_{i}" for i in range(100)]

    answers = [jobs_api.create(job_id, packageUris=[missing]) for job_id in ids]

    assert [job["state"] for job in answers] == ["QUEUED"] * len(ids)
    assert all(int(job["jobPosition"]) >= 1 for job in answers)
    for job_id in ids:
        assert jobs_api.wait(job_id)["state"] == "FAILED"


def test_get_unknown_job_is_not_found(jobs_api: JobsApi) -> None:
    response = jobs_api.client.get(jobs_api.path("nothing_here"))

    assert_error(response, 404, "NOT_FOUND", "nothing_here")


def test_int64_fields_are_accepted_as_numbers_or_strings_and_emitted_as_strings(
    jobs_api: JobsApi,
) -> None:
    body = jobs_api.body(
        "counts",
        args=["--sleep", "60"],
        scaleTier="CUSTOM",
        masterType="m",
        workerType="w",
        workerCount=2,
        parameterServerType="p",
        parameterServerCount="1",
    )

    response = jobs_api.client.post(jobs_api.path(), json=body)
    jobs_api.cancel("counts")

    assert response.status_code == 200, response.text
    training_input = response.json()["trainingInput"]
    assert training_input["workerCount"] == "2"
    assert training_input["parameterServerCount"] == "1"
    assert isinstance(response.json()["jobPosition"], str)
    assert jobs_api.wait("counts")["state"] == "CANCELLED"


def test_jobs_beyond_capacity_wait_in_the_queue_with_their_position(
    jobs_api: JobsApi, module_server: Any
) -> None:
    capacity = module_server.settings.max_running_jobs
    ids = [f"busy_{i}" for i in range(capacity + 2)]
    for job_id in ids:
        jobs_api.create(job_id, args=["--sleep", "60"])
    try:
        for job_id in ids[:capacity]:
            jobs_api.wait(job_id, {"RUNNING"}, timeout=30)
        waiting = [jobs_api.get(job_id) for job_id in ids[capacity:]]
        assert [(job["state"], job["jobPosition"]) for job in waiting] == [
            ("QUEUED", "1"),
            ("QUEUED", "2"),
        ]
        assert jobs_api.get(ids[0])["jobPosition"] == "0"

        assert jobs_api.cancel(ids[0]).status_code == 200

        jobs_api.wait(ids[capacity], {"RUNNING"}, timeout=30)
        last = jobs_api.get(ids[-1])
        assert (last["state"], last["jobPosition"]) == ("QUEUED", "1")
    finally:
        for job_id in reversed(ids):
            jobs_api.cancel(job_id)
    for job_id in ids:
        assert jobs_api.wait(job_id, timeout=15)["state"] == "CANCELLED"
        logs = jobs_api.client.get(
            jobs_api.path(job_id, "logs"), params={"taskName": "service"}
        ).json()
        service = [entry["message"] for entry in logs["entries"]]
        # Each job was prepared once and cancelled once.
        assert not [m for m in service if "queued again" in m], service
        assert len([m for m in service if m == "Job cancelled by the user."]) <= 1, service


# -- list -----------------------------------------------------------------------------------


def test_list_pages_newest_first_covering_every_job_once(jobs_api: JobsApi) -> None:
    ids = [f"page_{i}" for i in range(5)]
    created = [jobs_api.create(job_id) for job_id in ids]

    pages: list[dict[str, Any]] = []
    params: dict[str, Any] = {"pageSize": 2}
    while True:
        page = jobs_api.list(**params)
        pages.append(page)
        if "nextPageToken" not in page:
            break
        assert len(pages) < 10, pages
        params = {"pageSize": 2, "pageToken": page["nextPageToken"]}

    assert [len(page["jobs"]) for page in pages] == [2, 2, 1]
    listed = [job["jobId"] for page in pages for job in page["jobs"]]
    assert listed == list(reversed(ids))
    times = [parse_time(job["createTime"]) for page in pages for job in page["jobs"]]
    assert times == sorted(times, reverse=True)
    assert [c["createTime"] for c in reversed(created)] == [
        job["createTime"] for page in pages for job in page["jobs"]
    ]
    assert [job["jobId"] for job in jobs_api.list()["jobs"]] == list(reversed(ids))
    assert "nextPageToken" not in jobs_api.list(pageSize=5)
    for job_id in ids:
        jobs_api.wait(job_id)


def test_list_filters(jobs_api: JobsApi) -> None:
    jobs_api.create("alpha_1", labels={"team": "x"})
    jobs_api.create("alpha_2", labels={"team": "y"})
    jobs_api.create("beta_1", args=["--exit", "3"], labels={"team": "x"})
    states = {job_id: jobs_api.wait(job_id)["state"] for job_id in ("alpha_1", "alpha_2", "beta_1")}
    assert states == {"alpha_1": "SUCCEEDED", "alpha_2": "SUCCEEDED", "beta_1": "FAILED"}

    def ids(filter_text: str) -> list[str]:
        page = jobs_api.list(filter=filter_text)
        return sorted(job["jobId"] for job in page.get("jobs", []))

    assert ids("jobId:alpha*") == ["alpha_1", "alpha_2"]
    assert ids("jobId:alpha_1") == ["alpha_1"]
    assert ids("state:SUCCEEDED") == ["alpha_1", "alpha_2"]
    assert ids("state:FAILED") == ["beta_1"]
    assert ids("labels.team:x") == ["alpha_1", "beta_1"]
    assert ids("jobId:alpha* AND labels.team:x") == ["alpha_1"]
    assert ids("jobId:alpha* and state:SUCCEEDED labels.team:y") == ["alpha_2"]
    assert ids("state:FAILED AND labels.team:x") == ["beta_1"]
    assert ids('labels.team:"y"') == ["alpha_2"]
    assert ids("jobId:alpha_*") == ["alpha_1", "alpha_2"]
    assert ids("jobId:alpha%*") == []


def test_list_filters_are_case_sensitive(jobs_api: JobsApi) -> None:
    # Job ids and label values are case-sensitive (AIPLATFORM.md §1.4), prefix matches too.
    jobs_api.create("Mixed_case", labels={"team": "x"})
    jobs_api.create("mixed_lower", labels={"team": "xy"})

    def ids(filter_text: str) -> list[str]:
        page = jobs_api.list(filter=filter_text)
        return sorted(job["jobId"] for job in page.get("jobs", []))

    assert ids("jobId:Mixed_case") == ["Mixed_case"]
    assert ids("jobId:MIXED_CASE") == []
    assert ids("jobId:mixed*") == ["mixed_lower"]
    assert ids("jobId:Mixed*") == ["Mixed_case"]
    assert ids("jobId:MIXED*") == []
    assert ids("labels.team:X*") == []
    assert ids("labels.team:x*") == ["Mixed_case", "mixed_lower"]
    for job_id in ("Mixed_case", "mixed_lower"):
        jobs_api.wait(job_id)


def test_list_filters_by_create_time(jobs_api: JobsApi) -> None:
    # AIPLATFORM.md §1.2: FIELD may be jobId, state, name, labels.KEY or createTime; VALUE may
    # end in * for a prefix match, else ':' is an exact match.
    created = jobs_api.create("timed")
    stamp = created["createTime"]

    exact = jobs_api.client.get(jobs_api.path(), params={"filter": f"createTime:{stamp}"})
    by_day = jobs_api.client.get(jobs_api.path(), params={"filter": f"createTime:{stamp[:10]}*"})
    other_year = jobs_api.client.get(jobs_api.path(), params={"filter": "createTime:1999*"})

    jobs_api.wait("timed")
    assert exact.status_code == 200, exact.text
    assert [job["jobId"] for job in exact.json()["jobs"]] == ["timed"]
    assert by_day.status_code == 200, by_day.text
    assert [job["jobId"] for job in by_day.json()["jobs"]] == ["timed"]
    assert other_year.status_code == 200, other_year.text
    assert other_year.json() == {}


def test_list_with_no_match_is_an_empty_object(jobs_api: JobsApi) -> None:
    jobs_api.create("lonely")

    for params in ({"filter": "jobId:nomatch*"}, {"filter": "state:CANCELLED"}):
        response = jobs_api.client.get(jobs_api.path(), params=params)
        assert response.status_code == 200, response.text
        assert response.json() == {}
    other_project = jobs_api.client.get(f"/v1/projects/{jobs_api.project}-empty/jobs")
    assert other_project.status_code == 200
    assert other_project.json() == {}
    jobs_api.wait("lonely")


@pytest.mark.parametrize(
    ("params", "word"),
    [
        pytest.param({"filter": "colour:blue"}, "filter", id="unknown-field"),
        pytest.param({"filter": "state"}, "filter", id="no-value"),
        pytest.param({"filter": "jobId:a OR jobId:b"}, "filter", id="OR"),
        pytest.param({"filter": "labels:x"}, "filter", id="labels-without-key"),
        pytest.param({"pageToken": "not-a-token"}, "pageToken", id="garbage-page-token"),
        pytest.param({"pageToken": "WzEsMl0"}, "pageToken", id="page-token-of-wrong-shape"),
        pytest.param({"pageSize": "-1"}, "pageSize", id="negative-page-size"),
        pytest.param({"pageSize": "ten"}, "pageSize", id="non-integer-page-size"),
    ],
)
def test_list_rejects_bad_parameters(jobs_api: JobsApi, params: dict[str, str], word: str) -> None:
    response = jobs_api.client.get(jobs_api.path(), params=params)

    assert_error(response, 400, "INVALID_ARGUMENT", word)


# -- cancel ---------------------------------------------------------------------------------


def test_cancel_running_job_stops_its_processes(jobs_api: JobsApi) -> None:
    jobs_api.create("long_run", args=["--sleep", "60", "--spawn-child"])
    record = _record(jobs_api, "long_run")
    child_file = jobs_api.job_dir("long_run") / "chief-0.child"
    child = int(jobs_api.wait_for_file(child_file, timeout=10).read_text())
    jobs_api.wait("long_run", {"RUNNING"}, timeout=10)
    assert process_alive(record["pid"]) and process_alive(child)

    response = jobs_api.cancel("long_run")

    assert "content-type" not in response.request.headers
    assert response.status_code == 200, response.text
    assert response.content.strip() == b"{}"
    assert jobs_api.get("long_run")["state"] in ("CANCELLING", "CANCELLED")
    job = jobs_api.wait("long_run", {"CANCELLED"}, timeout=10)
    assert job["errorMessage"]
    assert parse_time(job["endTime"]) >= parse_time(job["startTime"])
    _wait_gone([record["pid"], child], timeout=5)

    again = jobs_api.cancel("long_run")

    assert_error(again, 400, "FAILED_PRECONDITION", "CANCELLED")


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        pytest.param(b"", {}, id="no-body-no-content-type"),
        pytest.param(b"", {"content-type": "application/json"}, id="empty-json-body"),
        pytest.param(b"{}", {"content-type": "application/json"}, id="empty-object"),
        pytest.param(b"{}", {}, id="empty-object-no-content-type"),
    ],
)
def test_cancel_accepts_empty_bodies(
    jobs_api: JobsApi, content: bytes, headers: dict[str, str]
) -> None:
    jobs_api.create("to_cancel", args=["--sleep", "60"])

    response = jobs_api.client.post(
        jobs_api.path("to_cancel", "cancel"), content=content, headers=headers
    )

    assert response.status_code == 200, response.text
    assert response.json() == {}
    job = jobs_api.wait("to_cancel", {"CANCELLED"}, timeout=15)
    assert job["errorMessage"]


def test_cancel_while_preparing_never_starts_the_trainer(
    jobs_api: JobsApi, stage_trainer: Callable[[str], str]
) -> None:
    # A package of its own: its environment is built while the job is PREPARING.
    uri = stage_trainer("cancel-while-preparing")
    jobs_api.create("preparing", args=["--sleep", "60"], packageUris=[uri])
    jobs_api.wait("preparing", {"PREPARING"}, timeout=10)

    response = jobs_api.cancel("preparing")

    assert response.status_code == 200, response.text
    assert response.json() == {}
    cancelling = jobs_api.get("preparing")
    assert cancelling["state"] in ("CANCELLING", "CANCELLED")
    assert cancelling["errorMessage"]
    job = jobs_api.wait("preparing", {"CANCELLED"}, timeout=60)
    assert job["errorMessage"]
    time.sleep(0.5)
    assert not (jobs_api.job_dir("preparing") / "chief-0.json").exists()


def test_cancel_of_finished_job_fails_precondition(jobs_api: JobsApi) -> None:
    jobs_api.create("quick")
    assert jobs_api.wait("quick")["state"] == "SUCCEEDED"

    response = jobs_api.cancel("quick")

    assert_error(response, 400, "FAILED_PRECONDITION", "SUCCEEDED")
    assert jobs_api.get("quick")["state"] == "SUCCEEDED"


def test_cancel_of_unknown_job_is_not_found(jobs_api: JobsApi) -> None:
    response = jobs_api.cancel("never_created")

    assert_error(response, 404, "NOT_FOUND", "never_created")


# -- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            ["--crash"],
            ["non-zero status of 1", "the trainer crashed on purpose"],
            id="crash",
        ),
        pytest.param(["--exit", "3"], ["non-zero status of 3"], id="exit-3"),
    ],
)
def test_failing_trainer_fails_job_with_reason(
    jobs_api: JobsApi, args: list[str], expected: list[str]
) -> None:
    jobs_api.create("failing", args=args)

    job = jobs_api.wait("failing")

    assert job["state"] == "FAILED", str(job)
    for text in expected:
        assert text in job["errorMessage"], job["errorMessage"]
    assert "endTime" in job


def test_missing_package_fails_job_naming_the_uri(jobs_api: JobsApi, tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere" / "trainer-9.9.9.tar.gz")
    jobs_api.create("no_package", packageUris=[missing])

    job = jobs_api.wait("no_package")

    assert job["state"] == "FAILED", str(job)
    assert missing in job["errorMessage"]
    assert jobs_api.client.get("/healthz").status_code == 200


# -- bad input ------------------------------------------------------------------------------

_CUSTOM = {"trainingInput.scaleTier": "CUSTOM", "trainingInput.masterType": "m"}
_CUSTOM_WORKERS = {**_CUSTOM, "trainingInput.workerType": "w"}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"jobId": _DELETE}, "jobId", id="missing-jobId"),
        pytest.param({"jobId": "1abc"}, "jobId", id="jobId-starts-with-digit"),
        pytest.param({"jobId": "a-b"}, "jobId", id="jobId-with-dash"),
        pytest.param({"jobId": 7}, "jobId", id="jobId-not-a-string"),
        pytest.param({"jobId": "a" * 129}, "jobId", id="jobId-too-long"),
        pytest.param({"trainingInput": _DELETE}, "trainingInput", id="missing-trainingInput"),
        pytest.param({"trainingInput": "x"}, "trainingInput", id="trainingInput-not-an-object"),
        pytest.param(
            {"trainingInput.pythonModule": _DELETE}, "pythonModule", id="missing-pythonModule"
        ),
        pytest.param(
            {"trainingInput.packageUris": _DELETE}, "packageUris", id="missing-packageUris"
        ),
        pytest.param({"trainingInput.packageUris": []}, "packageUris", id="empty-packageUris"),
        pytest.param({"trainingInput.scaleTier": "HUGE_1"}, "scaleTier", id="unknown-scaleTier"),
        pytest.param(
            {"trainingInput.workerCount": "2", "trainingInput.workerType": "w"},
            "workerCount",
            id="workerCount-without-CUSTOM",
        ),
        pytest.param(
            {"trainingInput.scaleTier": "CUSTOM"}, "masterType", id="CUSTOM-without-masterType"
        ),
        pytest.param(
            {**_CUSTOM, "trainingInput.workerCount": "2"},
            "workerType",
            id="workerCount-without-workerType",
        ),
        pytest.param(
            {**_CUSTOM_WORKERS, "trainingInput.workerCount": "-1"},
            "workerCount",
            id="negative-workerCount",
        ),
        pytest.param(
            {**_CUSTOM_WORKERS, "trainingInput.workerCount": -2},
            "workerCount",
            id="negative-number-workerCount",
        ),
        pytest.param(
            {**_CUSTOM_WORKERS, "trainingInput.workerCount": "1.5"},
            "workerCount",
            id="fractional-workerCount",
        ),
        pytest.param(
            {**_CUSTOM_WORKERS, "trainingInput.workerCount": "two"},
            "workerCount",
            id="non-integer-workerCount",
        ),
        pytest.param(
            {**_CUSTOM_WORKERS, "trainingInput.workerCount": True},
            "workerCount",
            id="boolean-workerCount",
        ),
        pytest.param({"labels": {"Team": "x"}}, "labels", id="label-key-uppercase"),
        pytest.param({"labels": {"team": "X Y"}}, "labels", id="label-value-invalid"),
        pytest.param({"labels": {"team": 1}}, "labels", id="label-value-not-a-string"),
        pytest.param({"labels": ["team"]}, "labels", id="labels-not-a-map"),
        pytest.param({"trainingInput.args": "--sleep 1"}, "args", id="args-not-a-list"),
        pytest.param(
            {"trainingInput.masterConfig": {"acceleratorConfig": {"type": "TPU_V9"}}},
            "acceleratorConfig",
            id="unknown-accelerator-type",
        ),
        pytest.param(
            {"trainingInput.masterConfig": {"acceleratorConfig": {"type": ["NVIDIA_TESLA_T4"]}}},
            "acceleratorConfig",
            id="accelerator-type-not-a-string",
        ),
        pytest.param(
            {"trainingInput.masterConfig": {"acceleratorConfig": {"count": "x"}}},
            "count",
            id="accelerator-count-not-an-integer",
        ),
    ],
)
def test_invalid_job_is_rejected_and_not_stored(
    jobs_api: JobsApi, changes: dict[str, Any], field: str
) -> None:
    body = _patched(jobs_api.body("bad_job"), changes)

    response = jobs_api.client.post(jobs_api.path(), json=body)

    assert_error(response, 400, "INVALID_ARGUMENT", field)
    if isinstance(body.get("jobId"), str):
        assert jobs_api.client.get(jobs_api.path(body["jobId"])).status_code == 404
    assert jobs_api.list() == {}


@pytest.mark.parametrize(
    ("content", "words"),
    [
        pytest.param(b'{"jobId": "j1", ', ["JSON"], id="truncated-json"),
        pytest.param(b"jobId=j1", ["JSON"], id="form-encoded"),
        pytest.param(b'[{"jobId": "j1"}]', ["JSON object"], id="json-list"),
        pytest.param(b'"j1"', ["JSON object"], id="json-string"),
        pytest.param(b"", ["jobId"], id="empty-body"),
    ],
)
def test_body_must_be_a_json_object(jobs_api: JobsApi, content: bytes, words: list[str]) -> None:
    response = jobs_api.client.post(
        jobs_api.path(), content=content, headers={"content-type": "application/json"}
    )

    assert_error(response, 400, "INVALID_ARGUMENT", *words)
    assert jobs_api.list() == {}


def test_duplicate_job_id_conflicts_and_keeps_the_original(jobs_api: JobsApi) -> None:
    original = jobs_api.create("twice", args=["--sleep", "0.2"], labels={"team": "x"})
    duplicate = _patched(jobs_api.body("twice", args=["--exit", "3"]), {"labels": {"team": "y"}})

    response = jobs_api.client.post(jobs_api.path(), json=duplicate)

    assert_error(response, 409, "ALREADY_EXISTS", "twice")
    job = jobs_api.wait("twice")
    assert job["state"] == "SUCCEEDED"
    for field in ("createTime", "etag", "labels", "trainingInput"):
        assert job[field] == original[field], field
    assert [j["jobId"] for j in jobs_api.list()["jobs"]] == ["twice"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/projects/p/nothing"),
        ("GET", "/v2/projects/p/jobs"),
        ("POST", "/v1/projects/p/jobs/j1/subresource"),
        ("GET", "/"),
    ],
)
def test_unknown_route_is_a_not_found_envelope(jobs_api: JobsApi, method: str, path: str) -> None:
    response = jobs_api.client.request(method, path)

    assert_error(response, 404, "NOT_FOUND")


# -- patch ----------------------------------------------------------------------------------


def test_patch_labels(jobs_api: JobsApi) -> None:
    created = jobs_api.create("labelled", labels={"team": "x"})
    path = jobs_api.path("labelled")

    response = jobs_api.client.patch(
        path,
        params={"updateMask": "labels"},
        json={"labels": {"team": "y", "env": "dev"}, "trainingInput": {"args": ["--exit", "3"]}},
    )

    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["labels"] == {"team": "y", "env": "dev"}
    assert patched["etag"] != created["etag"]
    assert patched["trainingInput"] == created["trainingInput"]
    assert jobs_api.get("labelled")["labels"] == {"team": "y", "env": "dev"}
    assert [j["jobId"] for j in jobs_api.list(filter="labels.env:dev")["jobs"]] == ["labelled"]

    guarded = jobs_api.client.patch(
        path,
        params={"updateMask": "labels,etag"},
        json={"labels": {"team": "z"}, "etag": patched["etag"]},
    )
    assert guarded.status_code == 200, guarded.text
    assert guarded.json()["labels"] == {"team": "z"}

    stale = jobs_api.client.patch(
        path,
        params={"updateMask": "labels"},
        json={"labels": {"team": "w"}, "etag": created["etag"]},
    )
    assert_error(stale, 400, "FAILED_PRECONDITION", "etag")

    unsupported = jobs_api.client.patch(
        path, params={"updateMask": "trainingInput"}, json={"trainingInput": {}}
    )
    assert_error(unsupported, 400, "INVALID_ARGUMENT", "trainingInput")

    no_mask = jobs_api.client.patch(path, json={"labels": {"team": "w"}})
    assert_error(no_mask, 400, "INVALID_ARGUMENT", "updateMask")

    bad_labels = jobs_api.client.patch(
        path, params={"updateMask": "labels"}, json={"labels": {"Team": "w"}}
    )
    assert_error(bad_labels, 400, "INVALID_ARGUMENT", "labels")

    unknown = jobs_api.client.patch(
        jobs_api.path("not_there"), params={"updateMask": "labels"}, json={"labels": {}}
    )
    assert_error(unknown, 404, "NOT_FOUND")

    final = jobs_api.wait("labelled")
    assert final["labels"] == {"team": "z"}
    assert final["state"] == "SUCCEEDED"


# -- logs -----------------------------------------------------------------------------------


def test_logs_follow_with_page_token(jobs_api: JobsApi) -> None:
    jobs_api.create("logged", args=["--sleep", "1"])
    path = jobs_api.path("logged", "logs")

    pages: list[dict[str, Any]] = []
    token: str | None = None
    deadline = time.monotonic() + 60
    while True:
        response = jobs_api.client.get(path, params={"pageToken": token} if token else {})
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        token = page["nextPageToken"]
        if page["done"]:
            break
        assert time.monotonic() < deadline, pages[-1]
        time.sleep(0.2)

    assert not pages[0]["done"]
    assert pages[-1]["state"] in TERMINAL
    entries = [entry for page in pages for entry in page["entries"]]
    messages = [(e["taskName"], e["severity"], e["message"]) for e in entries]
    assert len(set(messages)) == len(messages), "an entry was returned twice"
    assert {e["taskName"] for e in entries} == {"master-replica-0", "service"}
    for entry in entries:
        assert RFC3339.match(entry["timestamp"]), entry
        assert entry["severity"] in ("INFO", "ERROR"), entry
    started = [m for m in messages if m[2].startswith("trainer chief-0 started")]
    assert [(task, severity) for task, severity, _ in started] == [("master-replica-0", "INFO")]
    assert ("master-replica-0", "ERROR", "a warning from chief-0") in messages
    assert ("master-replica-0", "INFO", "trainer chief-0 done") in messages
    assert ("service", "INFO", "Job completed successfully.") in messages
    for page in pages:
        times = [parse_time(entry["timestamp"]) for entry in page["entries"]]
        assert times == sorted(times), page

    after_end = jobs_api.client.get(path, params={"pageToken": token}).json()
    assert after_end["entries"] == []
    assert after_end["done"] is True
    everything = jobs_api.client.get(path).json()
    assert everything["done"] is True
    assert sorted(everything["entries"], key=_entry_key) == sorted(entries, key=_entry_key)
    one = jobs_api.client.get(path, params={"pageSize": 1}).json()
    assert one["entries"] == everything["entries"][:1]
    assert one["done"] is False
    only_master = jobs_api.client.get(path, params={"taskName": "master-replica-0"}).json()
    assert only_master["entries"] == [
        e for e in everything["entries"] if e["taskName"] == "master-replica-0"
    ]


def _entry_key(entry: dict[str, str]) -> tuple[str, str, str]:
    return entry["timestamp"], entry["taskName"], entry["message"]


def test_logs_reject_bad_page_token_and_unknown_job(jobs_api: JobsApi) -> None:
    jobs_api.create("logs_token")

    bad_token = jobs_api.client.get(
        jobs_api.path("logs_token", "logs"), params={"pageToken": "%%%"}
    )
    unknown = jobs_api.client.get(jobs_api.path("nope", "logs"))

    assert_error(bad_token, 400, "INVALID_ARGUMENT")
    assert_error(unknown, 404, "NOT_FOUND")
    jobs_api.wait("logs_token")


# -- distributed ----------------------------------------------------------------------------


def test_custom_tier_runs_every_replica_with_its_cluster(jobs_api: JobsApi) -> None:
    # The master sleeps so that every replica has recorded itself before it ends the job.
    created = jobs_api.create(
        "distributed",
        args=["--sleep", "3"],
        scaleTier="CUSTOM",
        masterType="m",
        workerType="w",
        workerCount="2",
        parameterServerType="p",
        parameterServerCount="1",
    )
    assert created["trainingInput"]["workerCount"] == "2"
    assert created["trainingInput"]["parameterServerCount"] == "1"

    job = jobs_api.wait("distributed")

    assert job["state"] == "SUCCEEDED", str(job)
    names = ["chief-0", "worker-0", "worker-1", "ps-0"]
    records = {name: _record(jobs_api, "distributed", name) for name in names}
    configs = {name: json.loads(record["env"]["TF_CONFIG"]) for name, record in records.items()}
    cluster = configs["chief-0"]["cluster"]
    assert {key: len(value) for key, value in cluster.items()} == {"chief": 1, "worker": 2, "ps": 1}
    addresses = [address for members in cluster.values() for address in members]
    assert len(set(addresses)) == 4
    for name, config in configs.items():
        task_type, index = name.rsplit("-", 1)
        assert config["task"] == {"type": task_type, "index": int(index)}
        assert config["cluster"] == cluster
        assert json.loads(config["job"])["worker_count"] == "2"
        assert records[name]["env"]["CLOUD_ML_JOB_ID"] == "distributed"
        assert records[name]["argv"][-2:] == ["--job-dir", str(jobs_api.job_dir("distributed"))]
    assert len({record["cwd"] for record in records.values()}) == 4
    for record in records.values():
        assert Path(record["cwd"]).resolve().is_relative_to(jobs_api.home.resolve())
    ranks = {name: records[name]["env"].get("RANK") for name in names}
    assert ranks == {"chief-0": "0", "worker-0": "1", "worker-1": "2", "ps-0": None}
    for name in ("chief-0", "worker-0", "worker-1"):
        assert records[name]["env"]["WORLD_SIZE"] == "3"
    logs = jobs_api.client.get(jobs_api.path("distributed", "logs")).json()
    tasks = {entry["taskName"] for entry in logs["entries"]}
    assert {"master-replica-0", "worker-replica-0", "worker-replica-1", "ps-replica-0"} <= tasks


@pytest.mark.parametrize("name", ["", "trainer.tar.gz\n", "../x.tar.gz", "trainer.egg", ".tar.gz"])
def test_a_staged_package_needs_a_plain_package_file_name(module_server: Any, name: str) -> None:
    answer = httpx.post(
        f"{module_server.url}/upload/v1/projects/staging/packages",
        params={"name": name},
        content=b"not empty",
        timeout=30,
    )
    assert answer.status_code == 400, answer.text
    assert "'name' field of UploadPackageRequest" in answer.json()["error"]["message"]
