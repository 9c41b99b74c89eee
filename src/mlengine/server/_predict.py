"""Online prediction routes of ml v1: ``POST /v1/projects/{p}/models/{m}[/versions/{v}]:predict``.

Failures answer as AI Platform does: HTTP 400 with ``{"error": "Prediction failed: ..."}`` (a
string), except unknown models or versions: 404 with the Google envelope.
"""

from __future__ import annotations

import logging
import re
import time

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from mlengine.errors import MLEngineError, NotFound
from mlengine.server._errors import JSONResponse, error_response
from mlengine.server._metrics import PROTOCOL_ML_V1, observe_prediction

router = APIRouter()
logger = logging.getLogger("mlengine.server")


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


_PREDICT_PATH = re.compile(r"^/v1/projects/([^/]+)/models/([^/:]+)(?:/versions/([^/:]+))?:predict$")


class PredictFastPath:
    """Serves ml v1 ``:predict`` requests before FastAPI's router: routing and dependency
    resolution cost more than mlengine's whole predict path (measured on a 2-core machine:
    about twice the requests/s). The routes above stay for the OpenAPI schema and as the
    fallback; every other request goes to the app unchanged."""

    def __init__(self, app: ASGIApp, token: str = "") -> None:
        self.app = app
        self.authorization = f"Bearer {token}".encode() if token else b""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = None
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _PREDICT_PATH.match(scope["path"])
        if match is None or not self._authorised(scope):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await _predict(match[1], match[2], match[3], request)
        except Exception as error:  # the app's error middleware is behind us: answer here
            logger.exception("prediction failed unexpectedly")
            response = JSONResponse(
                {"error": f"Prediction failed: internal error: {type(error).__name__}: {error}"},
                status_code=500,
            )
        await response(scope, receive, send)

    def _authorised(self, scope: Scope) -> bool:
        if not self.authorization:
            return True
        return (b"authorization", self.authorization) in scope["headers"]
