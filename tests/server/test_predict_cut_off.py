"""A predict request the server cuts off while it stops (uvicorn cancels what is still running
once its graceful shutdown times out) is answered in the API's form: a 503 with an error body,
not a bare 500 and a traceback in the log."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from mlengine.server import _predict

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_predict_cut_off_by_shutdown_answers_503(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    started = asyncio.Event()

    async def never_answers(*args: Any, **kwargs: Any) -> tuple[int, bytes]:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    monkeypatch.setattr(_predict, "answer_predict", never_answers)
    app = _predict.PredictingApp()
    app.prediction = object()  # type: ignore[assignment] # any service: the call is replaced
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b'{"instances": [[1, 2]]}'}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/projects/p/models/m/versions/v1:predict",
        "headers": [],
    }
    task = asyncio.create_task(app(scope, receive, send))  # type: ignore[arg-type]
    await started.wait()
    task.cancel("Task cancelled, timeout graceful shutdown exceeded")
    await task  # answered, not raised
    assert [message["type"] for message in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 503
    assert (b"content-type", b"application/json") in sent[0]["headers"]
    error = orjson.loads(sent[1]["body"])["error"]
    assert error.startswith("Prediction failed: the server is stopping") and "again" in error
    assert not [record for record in caplog.records if record.levelname == "ERROR"]
