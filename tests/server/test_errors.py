"""The error mapping of the server: every failure is the Google envelope, and an unexpected
exception neither leaks a traceback nor drops the client's connection."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from mlengine.errors import NotFound
from mlengine.server._errors import install_error_handlers
from tests.conftest import free_port


@pytest.fixture
def url() -> Iterator[str]:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("something broke")

    @app.get("/missing")
    async def missing() -> None:
        raise NotFound("Job projects/p/jobs/x not found.")

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_unexpected_error_is_a_500_envelope_and_the_connection_survives(url: str) -> None:
    with httpx.Client(base_url=url) as client:
        first = client.get("/boom")
        assert first.status_code == 500
        assert first.json() == {
            "error": {
                "code": 500,
                "message": "Internal error: RuntimeError: something broke",
                "status": "INTERNAL",
            }
        }
        second = client.get("/missing")  # the same keep-alive connection
        assert second.status_code == 404
        assert second.json()["error"]["status"] == "NOT_FOUND"
        assert client.get("/nowhere").json()["error"]["code"] == 404
