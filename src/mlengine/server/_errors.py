"""One table from the error tree to HTTP: AI Platform's error envelope
``{"error": {"code": 404, "message": "...", "status": "NOT_FOUND"}}``."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from mlengine.errors import MLEngineError

logger = logging.getLogger("mlengine.server")

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "INVALID_ARGUMENT",
    409: "ALREADY_EXISTS",
    413: "INVALID_ARGUMENT",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


class JSONResponse(Response):
    """A JSON response rendered with orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def error_response(code: int, message: str, status: str | None = None) -> JSONResponse:
    """The Google error envelope."""
    body = {
        "error": {
            "code": code,
            "message": message,
            "status": status or _STATUS_NAMES.get(code, "UNKNOWN"),
        }
    }
    return JSONResponse(body, status_code=code)


def install_error_handlers(app: FastAPI) -> None:
    """Map every error to the envelope; never a traceback to the client."""

    @app.exception_handler(MLEngineError)
    async def _mlengine_error(_: Request, error: MLEngineError) -> Response:
        if error.http_status >= 500:
            logger.error("request failed: %s", error)
        return error_response(error.http_status, error.message, error.grpc_status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, error: RequestValidationError) -> Response:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "query")
        return error_response(400, f"Invalid request parameter {where}: {first.get('msg')}.")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, error: StarletteHTTPException) -> Response:
        message = str(error.detail)
        if error.status_code == 404:
            message = "The requested URL was not found on this server."
        return error_response(error.status_code, message)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, error: Exception) -> Response:
        logger.exception("unexpected error")
        return error_response(500, f"Internal error: {type(error).__name__}: {error}")
