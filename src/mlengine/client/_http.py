"""The HTTP client of the CLI and SDK: ml v1 calls, errors mapped back to the error tree,
and a local server started on demand."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from mlengine.client._local_server import is_loopback, log_file, start_local_server
from mlengine.config import Settings
from mlengine.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    MLEngineError,
    NotFound,
    OperationFailed,
    PayloadTooLarge,
    Unauthenticated,
    Unavailable,
)

__all__ = ["APIClient"]

_EMPTY_SEGMENT = re.compile(r"//|/$|/:")
"""What an empty name leaves in an API path."""

_ERRORS: dict[str, type[MLEngineError]] = {
    "INVALID_ARGUMENT": InvalidArgument,
    "NOT_FOUND": NotFound,
    "ALREADY_EXISTS": AlreadyExists,
    "FAILED_PRECONDITION": FailedPrecondition,
    "UNAVAILABLE": Unavailable,
    "UNAUTHENTICATED": Unauthenticated,
}


def _notice(message: str) -> None:
    print(message, file=sys.stderr)


class APIClient:
    """Talks to the server at `settings.api_url`.

    When nothing answers and the URL is on this machine, it starts a background server (with
    `autostart`) and says so through `notify`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        autostart: bool = True,
        notify: Callable[[str], None] = _notice,
        timeout: float = 60.0,
    ) -> None:
        self.settings = settings
        self.autostart = autostart
        self.notify = notify
        headers = {"user-agent": "mlengine"}
        if settings.api_token:
            headers["authorization"] = f"Bearer {settings.api_token}"
        self._http = httpx.Client(
            base_url=settings.api_url.rstrip("/"), headers=headers, timeout=timeout
        )
        self._checked = False

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
    ) -> dict[str, Any]:
        """Send one request and return the JSON object it answered.

        Raises:
            MLEngineError: the server's error, as the matching subclass.
            Unavailable: no server answers (and none could be started).
        """
        if _EMPTY_SEGMENT.search(path):  # an empty name: the server would redirect or 405
            raise InvalidArgument(
                f"A name in {path} is empty: give the project, model, version, job or "
                "operation name."
            )
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, path, params=query, json=json, content=content)
        except httpx.ConnectError as error:
            if not (self.autostart and not self._checked and is_loopback(self.settings)):
                raise Unavailable(
                    f"No mlengine server answers at {self.settings.api_url} ({error}). "
                    "Start one with: mlengine server start"
                ) from None
            self._checked = True
            start_local_server(self.settings)
            self.notify(
                f"Started a local mlengine server at {self.settings.api_url} "
                f"(log: {log_file(self.settings)}; stop it with: mlengine server stop)."
            )
            response = self._http.request(method, path, params=query, json=json, content=content)
        except httpx.HTTPError as error:
            raise Unavailable(f"The request to {self.settings.api_url} failed: {error}") from None
        self._checked = True
        return _answer(response)


def _answer(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json() if response.content else {}
    except ValueError:
        body = {"error": response.text.strip() or response.reason_phrase}
    # A 200 carrying a string `error` is a failed prediction (AI Platform did that); an
    # Operation's `error` object is part of the resource.
    if 300 <= response.status_code < 400:  # the API never redirects: a path it does not serve
        raise InvalidArgument(
            f"The server answered {response.status_code} to {response.request.url.path}: "
            "no such API path."
        )
    if (
        response.status_code < 400
        and isinstance(body, dict)
        and not isinstance(body.get("error"), str)
    ):
        return body
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message", response.reason_phrase))
        status = str(error.get("status", ""))
    else:
        message, status = str(error or response.reason_phrase), ""
    if response.status_code == 413:
        raise PayloadTooLarge(message)
    error_class = _ERRORS.get(status)
    if error_class is None:
        error_class = InvalidArgument if response.status_code < 500 else OperationFailed
    raise error_class(message)
