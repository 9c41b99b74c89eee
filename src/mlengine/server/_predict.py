"""Online prediction routes of ml v1: ``POST /v1/projects/{p}/models/{m}[/versions/{v}]:predict``.

Failures answer as AI Platform does: HTTP 400 with ``{"error": "Prediction failed: ..."}`` (a
string), except unknown models or versions: 404 with the Google envelope.

The routes below are the documented surface (OpenAPI) and the fallback; requests are normally
answered by `PredictingApp`, the server's application class, before FastAPI's middleware stack
and router: on a 2-core machine those cost more than mlengine's whole predict path.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from mlengine.errors import MLEngineError, NotFound
from mlengine.prediction._serving import PredictionService
from mlengine.server._auth import BearerToken
from mlengine.server._errors import error_body
from mlengine.server._metrics import PROTOCOL_ML_V1, PredictionMetrics, default_version_name

__all__ = ["PredictingApp", "router"]

router = APIRouter()
logger = logging.getLogger("mlengine.server")
_CUT_OFF = (
    "Prediction failed: the server is stopping and could not finish this request in its "
    "shutdown time; send it again."
)

_JSON_HEADERS = (b"content-type", b"application/json")


async def answer_predict(
    prediction: PredictionService,
    metrics: PredictionMetrics | None,
    project: str,
    model: str,
    version: str | None,
    raw: bytes,
) -> tuple[int, bytes]:
    """Predict one ml v1 request body; the HTTP status and the JSON answer. Counted in
    `metrics` (when given) under the version that answered."""
    started = time.perf_counter()
    instances = 0
    try:
        version, result = await prediction.predict(project, model, version, raw)
    except NotFound as error:
        status, body = 404, error_body(404, error.message)
    except MLEngineError as error:
        message = error.message
        if not message.startswith("Prediction failed"):
            message = f"Prediction failed: {message}"
        status = error.http_status if error.http_status < 500 else 500
        body = orjson.dumps({"error": message})
        if version is None:  # a request for the default: counted under the default's name
            version = await default_version_name(prediction, project, model)
    else:
        status = 200
        body = orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY)
        instances = len(result["predictions"])
    if metrics is not None:
        metrics.observe(
            PROTOCOL_ML_V1, model, version or "", status, time.perf_counter() - started, instances
        )
    return status, body


async def _predict(project: str, model: str, version: str | None, request: Request) -> Response:
    state = request.app.state
    prediction: PredictionService | None = getattr(state, "prediction", None)
    if prediction is None:  # the lifespan has not started
        status = 503
        body = orjson.dumps({"error": "Prediction failed: the server is starting."})
    else:
        status, body = await answer_predict(
            prediction,
            getattr(state, "metrics", None),
            project,
            model,
            version,
            await request.body(),
        )
    return Response(body, status_code=status, media_type="application/json")


@router.post("/v1/projects/{project}/models/{model}/versions/{version}:predict")
async def predict_version(project: str, model: str, version: str, request: Request) -> Response:
    return await _predict(project, model, version, request)


@router.post("/v1/projects/{project}/models/{model}:predict")
async def predict_model(project: str, model: str, request: Request) -> Response:
    return await _predict(project, model, None, request)


_PREDICT_PATH = re.compile(r"^/v1/projects/([^/]+)/models/([^/:]+)(?:/versions/([^/:]+))?:predict$")
_ROUTES_KEPT = 4096
"""Predict paths whose parse is remembered (a few per model; all forgotten when full)."""
_ROUTE_PATH_KEPT = 512
"""The longest path remembered, so that the memory the cache holds stays small."""

Route = tuple[str, str, str | None]
"""The project, model and version (None: the default) of a predict path."""


def _predict_route(path: str) -> Route | None:
    match = _PREDICT_PATH.match(path)
    return None if match is None else (match[1], match[2], match[3])


_LENGTH_HEADERS: dict[int, tuple[bytes, bytes]] = {}


def _content_length(size: int) -> tuple[bytes, bytes]:
    """The ``content-length`` header of a `size`-byte body (remembered for small ones)."""
    header = _LENGTH_HEADERS.get(size)
    if header is None:
        header = (b"content-length", str(size).encode())
        if size < 4096:
            _LENGTH_HEADERS[size] = header
    return header


class _Disconnected(Exception):
    """The client went away before its request body arrived."""


async def _read_rest(first: bytes, receive: Receive) -> bytes:
    """The whole request body, of which `first` came in the first message."""
    parts = [first]
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _Disconnected
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


class PredictingApp(FastAPI):
    """The API server's application: FastAPI, except that ml v1 ``:predict`` requests are
    answered straight from the ASGI call (the bearer token still checked), skipping the
    middleware stack, routing and dependency resolution: measured on a 2-core machine, that
    more than doubles the requests/s of small predictions. Every other request, every predict
    request that fails the token check, and every request while `prediction` is None (before
    the lifespan starts it) goes through FastAPI unchanged.

    Attributes:
        prediction: the app's `PredictionService` while it serves (set by its lifespan).
        metrics: where predict requests are counted, when the app has metrics.
    """

    def __init__(self, *args: Any, api_token: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._token = BearerToken(api_token) if api_token else None
        # plain attributes: `app.state` looks its values up through a failed attribute lookup
        # (an AttributeError made and dropped), which costs more than the rest of routing here
        self.prediction: PredictionService | None = None
        self.metrics: PredictionMetrics | None = None
        self._routes: dict[str, Route] = {}  # parsed predict paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        prediction = self.prediction
        route = None
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            route = self._routes.get(path)
            if route is None:
                route = _predict_route(path)
                if route is not None and len(path) <= _ROUTE_PATH_KEPT:
                    if len(self._routes) >= _ROUTES_KEPT:
                        self._routes.clear()
                    self._routes[path] = route
        if (
            route is None
            or prediction is None
            or (self._token is not None and not self._token.accepts(scope["headers"]))
        ):
            await super().__call__(scope, receive, send)
            return
        message = await receive()
        if message["type"] != "http.request":
            return  # the client went away
        raw: bytes = message.get("body", b"")
        if message.get("more_body", False):
            try:
                raw = await _read_rest(raw, receive)
            except _Disconnected:
                return
        try:
            project, model, version = route
            status, body = await answer_predict(
                prediction, self.metrics, project, model, version, raw
            )
        except asyncio.CancelledError:
            # the server is stopping and its graceful shutdown timed out: answer in the API's
            # form rather than let the server answer a bare 500 and log a traceback
            status = 503
            body = orjson.dumps({"error": _CUT_OFF})
        except Exception as error:  # no error middleware in front of this path: answer here
            logger.exception("prediction failed unexpectedly")
            status = 500
            body = orjson.dumps(
                {"error": f"Prediction failed: internal error: {type(error).__name__}: {error}"}
            )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [_JSON_HEADERS, _content_length(len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})
