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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


def _envelope(code: int, message: str, status: str | None) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "status": status or _STATUS_NAMES.get(code, "UNKNOWN"),
        }
    }


def error_response(code: int, message: str, status: str | None = None) -> JSONResponse:
    """The Google error envelope."""
    return JSONResponse(_envelope(code, message, status), status_code=code)


def error_body(code: int, message: str, status: str | None = None) -> bytes:
    """The Google error envelope, rendered."""
    return orjson.dumps(_envelope(code, message, status))


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

    app.add_middleware(UnexpectedErrors)


class UnexpectedErrors:
    """Turn an unexpected exception into a 500 envelope inside the app, so the server logs it
    and keeps the connection (Starlette's own last-resort handler re-raises to uvicorn, which
    then drops the connection)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as error:
            logger.exception("unexpected error")
            if started:
                raise
            response = error_response(500, f"Internal error: {type(error).__name__}: {error}")
            await response(scope, receive, send)
