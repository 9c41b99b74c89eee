"""ml v1 explain routes: ``POST /v1/projects/{p}/models/{m}[/versions/{v}]:explain``.

Failures answer as predict's do: HTTP 400 with ``{"error": "Explanation failed: ..."}``, except
unknown models or versions: 404 with the Google envelope.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from mlengine.errors import MLEngineError, NotFound
from mlengine.prediction._serving import PredictionService
from mlengine.server._errors import error_body

__all__ = ["router"]

router = APIRouter()


async def _explain(project: str, model: str, version: str | None, request: Request) -> Response:
    prediction: PredictionService = request.app.state.prediction
    try:
        _, result = await prediction.explain(project, model, version, await request.body())
    except NotFound as error:
        status, body = 404, error_body(404, error.message)
    except MLEngineError as error:
        status = error.http_status if error.http_status < 500 else 500
        body = orjson.dumps({"error": f"Explanation failed: {error.message}"})
    else:
        status, body = 200, orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status_code=status, media_type="application/json")


@router.post("/v1/projects/{project}/models/{model}/versions/{version}:explain")
async def explain_version(project: str, model: str, version: str, request: Request) -> Response:
    return await _explain(project, model, version, request)


@router.post("/v1/projects/{project}/models/{model}:explain")
async def explain_model(project: str, model: str, request: Request) -> Response:
    return await _explain(project, model, None, request)
