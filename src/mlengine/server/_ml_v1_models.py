"""ml v1 models, versions and operations routes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from mlengine.server._errors import JSONResponse
from mlengine.server._ml_v1_jobs import json_body, page_size

router = APIRouter()


@router.post("/v1/projects/{project}/models")
async def create_model(project: str, request: Request) -> JSONResponse:
    body = await json_body(request)
    return JSONResponse(
        await run_in_threadpool(request.app.state.models.create_model, project, body)
    )


@router.get("/v1/projects/{project}/models")
async def list_models(project: str, request: Request) -> JSONResponse:
    params = request.query_params
    result = await run_in_threadpool(
        request.app.state.models.list_models, project, page_size(request, "ListModelsRequest"),
        params.get("pageToken") or None, params.get("filter"),
    )  # fmt: skip
    return JSONResponse(result)


@router.get("/v1/projects/{project}/models/{model}")
async def get_model(project: str, model: str, request: Request) -> JSONResponse:
    return JSONResponse(await run_in_threadpool(request.app.state.models.get_model, project, model))


@router.delete("/v1/projects/{project}/models/{model}")
async def delete_model(project: str, model: str, request: Request) -> JSONResponse:
    result = await run_in_threadpool(request.app.state.models.delete_model, project, model)
    return JSONResponse(result)


@router.patch("/v1/projects/{project}/models/{model}")
async def patch_model(project: str, model: str, request: Request) -> JSONResponse:
    body = await json_body(request)
    result = await run_in_threadpool(
        request.app.state.models.patch_model, project, model, body,
        request.query_params.get("updateMask"),
    )  # fmt: skip
    request.app.state.prediction.forget(project, model)
    return JSONResponse(result)


@router.post("/v1/projects/{project}/models/{model}/versions")
async def create_version(project: str, model: str, request: Request) -> JSONResponse:
    body = await json_body(request)
    operation = await request.app.state.prediction.create_version(project, model, body)
    return JSONResponse(operation)


@router.get("/v1/projects/{project}/models/{model}/versions")
async def list_versions(project: str, model: str, request: Request) -> JSONResponse:
    params = request.query_params
    result = await run_in_threadpool(
        request.app.state.models.list_versions, project, model,
        page_size(request, "ListVersionsRequest"), params.get("pageToken") or None,
        params.get("filter"),
    )  # fmt: skip
    return JSONResponse(result)


@router.post("/v1/projects/{project}/models/{model}/versions/{version}:setDefault")
async def set_default(project: str, model: str, version: str, request: Request) -> JSONResponse:
    await json_body(request)
    result = await run_in_threadpool(request.app.state.models.set_default, project, model, version)
    request.app.state.prediction.forget(project, model)
    return JSONResponse(result)


@router.get("/v1/projects/{project}/models/{model}/versions/{version}")
async def get_version(project: str, model: str, version: str, request: Request) -> JSONResponse:
    result = await run_in_threadpool(request.app.state.models.get_version, project, model, version)
    return JSONResponse(result)


@router.delete("/v1/projects/{project}/models/{model}/versions/{version}")
async def delete_version(project: str, model: str, version: str, request: Request) -> JSONResponse:
    result = await request.app.state.prediction.delete_version(project, model, version)
    return JSONResponse(result)


@router.patch("/v1/projects/{project}/models/{model}/versions/{version}")
async def patch_version(project: str, model: str, version: str, request: Request) -> JSONResponse:
    body = await json_body(request)
    result = await request.app.state.prediction.patch_version(
        project, model, version, body, request.query_params.get("updateMask")
    )
    return JSONResponse(result)


@router.get("/v1/projects/{project}/operations/{operation}")
async def get_operation(project: str, operation: str, request: Request) -> JSONResponse:
    result = await run_in_threadpool(request.app.state.models.get_operation, project, operation)
    return JSONResponse(result)


@router.post("/v1/projects/{project}/operations/{operation}:cancel")
async def cancel_operation(project: str, operation: str, request: Request) -> JSONResponse:
    await json_body(request)  # none, or {}
    result = await run_in_threadpool(request.app.state.models.cancel_operation, project, operation)
    return JSONResponse(result)


@router.get("/v1/projects/{project}/operations")
async def list_operations(project: str, request: Request) -> JSONResponse:
    params = request.query_params
    result = await run_in_threadpool(
        request.app.state.models.list_operations, project,
        page_size(request, "ListOperationsRequest"), params.get("pageToken") or None,
        params.get("filter"),
    )  # fmt: skip
    return JSONResponse(result)
