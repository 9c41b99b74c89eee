"""Online prediction routes of ml v1: ``POST /v1/projects/{p}/models/{m}[/versions/{v}]:predict``.

Failures answer as AI Platform does: HTTP 400 with ``{"error": "Prediction failed: ..."}`` (a
string), except unknown models or versions: 404 with the Google envelope.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.responses import Response

from mlengine.errors import MLEngineError, NotFound
from mlengine.server._errors import JSONResponse, error_response
from mlengine.server._metrics import PROTOCOL_ML_V1, observe_prediction

router = APIRouter()


async def _predict(project: str, model: str, version: str | None, request: Request) -> Response:
    started = time.perf_counter()
    response, instances = await _answer(project, model, version, request)
    await observe_prediction(
        request, PROTOCOL_ML_V1, project, model, version, response.status_code, started, instances
    )
    return response


async def _answer(
    project: str, model: str, version: str | None, request: Request
) -> tuple[Response, int]:
    raw = await request.body()
    try:
        result = await request.app.state.prediction.predict(project, model, version, raw)
    except NotFound as error:
        return error_response(404, error.message), 0
    except MLEngineError as error:
        message = error.message
        if not message.startswith("Prediction failed"):
            message = f"Prediction failed: {message}"
        status = error.http_status if error.http_status < 500 else 500
        return JSONResponse({"error": message}, status_code=status), 0
    return JSONResponse(result), len(result["predictions"])


@router.post("/v1/projects/{project}/models/{model}/versions/{version}:predict")
async def predict_version(project: str, model: str, version: str, request: Request) -> Response:
    return await _predict(project, model, version, request)


@router.post("/v1/projects/{project}/models/{model}:predict")
async def predict_model(project: str, model: str, request: Request) -> Response:
    return await _predict(project, model, None, request)
