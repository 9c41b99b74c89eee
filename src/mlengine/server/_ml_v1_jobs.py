"""ml v1 jobs routes: ``/v1/projects/{project}/jobs``, get, list, patch, ``:cancel``, plus
mlengine's ``:logs`` (AI Platform served logs through Cloud Logging) and package staging."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from mlengine.errors import InvalidArgument, PayloadTooLarge, invalid_field
from mlengine.server._errors import JSONResponse

router = APIRouter()

_PACKAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*\.(tar\.gz|whl|zip)$")


MAX_BODY_BYTES = 4 * 1024 * 1024
"""The largest body of a management request (jobs, models, versions): far above any real one,
so that a runaway client cannot make the server hold gigabytes. (Predict bodies have their own
limit, `max_request_bytes`.)"""


async def json_body(request: Request) -> dict[str, Any]:
    """The request body as a JSON object; an empty body is ``{}`` (googleapiclient sends none
    on custom verbs), and no Content-Type is required.

    Raises:
        PayloadTooLarge: the body is over `MAX_BODY_BYTES` (read no further).
        InvalidArgument: the body is not a JSON object.
    """
    too_large = PayloadTooLarge(
        f"The request body is over {MAX_BODY_BYTES} bytes, the limit of management requests."
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidArgument(f"The request body is not valid JSON: {error}.") from None
    if not isinstance(body, dict):
        raise InvalidArgument("The request body must be a JSON object.")
    return body


def page_size(request: Request, owner: str = "ListJobsRequest") -> int | None:
    """The ``pageSize`` query parameter, or None.

    Raises:
        InvalidArgument: not a non-negative integer.
    """
    value = request.query_params.get("pageSize")
    if value in (None, ""):
        return None
    try:
        size = int(value)
    except ValueError:
        raise invalid_field("pageSize", owner, "an integer >= 1", value) from None
    if size < 0:
        raise invalid_field("pageSize", owner, "an integer >= 1", value)
    return size


@router.post("/v1/projects/{project}/jobs")
async def create_job(project: str, request: Request) -> JSONResponse:
    body = await json_body(request)
    resource = await run_in_threadpool(request.app.state.jobs.create, project, body)
    request.app.state.wake_scheduler()
    return JSONResponse(resource)


@router.get("/v1/projects/{project}/jobs")
async def list_jobs(project: str, request: Request) -> JSONResponse:
    params = request.query_params
    result = await run_in_threadpool(
        request.app.state.jobs.list,
        project,
        params.get("filter"),
        page_size(request),
        params.get("pageToken") or None,
    )
    return JSONResponse(result)


@router.post("/v1/projects/{project}/jobs/{job_id}:cancel")
async def cancel_job(project: str, job_id: str, request: Request) -> JSONResponse:
    await json_body(request)
    await run_in_threadpool(request.app.state.jobs.cancel, project, job_id)
    request.app.state.wake_scheduler()
    return JSONResponse({})


@router.get("/v1/projects/{project}/jobs/{job_id}:logs")
async def job_logs(project: str, job_id: str, request: Request) -> JSONResponse:
    params = request.query_params
    try:
        limit = int(params.get("pageSize") or 1000)
    except ValueError:
        raise invalid_field(
            "pageSize", "JobLogsRequest", "an integer", params["pageSize"]
        ) from None
    result = await run_in_threadpool(
        request.app.state.jobs.logs,
        project,
        job_id,
        params.get("pageToken") or None,
        params.get("taskName") or None,
        max(1, min(limit, 10000)),
    )
    return JSONResponse(result)


@router.get("/v1/projects/{project}/jobs/{job_id}")
async def get_job(project: str, job_id: str, request: Request) -> JSONResponse:
    resource = await run_in_threadpool(request.app.state.jobs.get, project, job_id)
    return JSONResponse(resource)


@router.patch("/v1/projects/{project}/jobs/{job_id}")
async def patch_job(project: str, job_id: str, request: Request) -> JSONResponse:
    body = await json_body(request)
    resource = await run_in_threadpool(
        request.app.state.jobs.patch,
        project,
        job_id,
        body,
        request.query_params.get("updateMask"),
    )
    return JSONResponse(resource)


@router.post("/upload/v1/projects/{project}/packages")
async def stage_package(project: str, request: Request) -> JSONResponse:
    """Store an uploaded trainer package as ``staging/<project>/<sha256>/<name>`` in the
    artifact store and return its URI (gcloud uploads to a staging bucket the same way)."""
    name = request.query_params.get("name", "")
    if not _PACKAGE_NAME.fullmatch(name):
        raise invalid_field(
            "name", "UploadPackageRequest", "a file name ending in .tar.gz, .whl or .zip", name
        )
    data = await request.body()
    if not data:
        raise InvalidArgument("The uploaded package is empty.")
    digest = hashlib.sha256(data).hexdigest()
    uri = await run_in_threadpool(
        request.app.state.artifacts.put_bytes, data, f"staging/{project}/{digest}/{name}"
    )
    return JSONResponse({"uri": uri, "sha256": digest})
