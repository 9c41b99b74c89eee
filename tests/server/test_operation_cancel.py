"""``projects.operations.cancel``: a pending version create ends FAILED, a pending code update
leaves the version with its previous code; the work already running is discarded."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import mlengine
from mlengine.config import Settings
from mlengine.errors import FailedPrecondition, NotFound, OperationFailed
from tests.conftest import ServerProcess
from tests.server._predictor_packages import (
    SCALED_SUM_CLASS,
    scaled_sum_model,
    scaled_sum_package,
)

pytestmark = pytest.mark.integration

LOAD_SECONDS = 4  # how long the slow predictor's from_path takes: the window to cancel in


@pytest.fixture
def client(server: ServerProcess, settings: Settings) -> Iterator[mlengine.Client]:
    with mlengine.Client(settings=settings) as instance:
        yield instance


def _slow_create(client: mlengine.Client, tmp_path: Path) -> dict[str, Any]:
    """The pending operation of a version whose load takes `LOAD_SECONDS`."""
    client.models.create("scaled")
    slow = scaled_sum_package(tmp_path / "p", load_seconds=LOAD_SECONDS)
    return client.versions.create(
        "scaled", "v1", scaled_sum_model(tmp_path / "model"),
        config={"predictionClass": SCALED_SUM_CLASS, "packageUris": [str(slow)]}, wait=False,
    )  # fmt: skip


def _cancelled(client: mlengine.Client, operation: dict[str, Any]) -> dict[str, Any]:
    ended = client.operations.get(operation["name"])
    assert ended["done"] is True
    assert ended["error"]["code"] == 1
    assert ended["metadata"]["isCancellationRequested"] is True
    return ended


def _after_the_running_work(client: mlengine.Client, model: str, version: str) -> dict[str, Any]:
    """The version once the load the cancelled operation started must have finished."""
    time.sleep(2 * LOAD_SECONDS + 2)
    return client.versions.get(model, version)


def test_cancelling_a_code_update_keeps_the_previous_code(
    client: mlengine.Client, server: ServerProcess, tmp_path: Path
) -> None:
    client.models.create("scaled")
    created = client.versions.create(
        "scaled", "v1", scaled_sum_model(tmp_path / "model"),
        config={"predictionClass": SCALED_SUM_CLASS,
                "packageUris": [str(scaled_sum_package(tmp_path / "p1"))]},
    )  # fmt: skip
    slow = scaled_sum_package(tmp_path / "p2", offset=100, load_seconds=LOAD_SECONDS)
    operation = client.versions.update("scaled", "v1", package_uris=[str(slow)], wait=False)

    # as googleapiclient sends it: no body, no Content-Type
    answer = httpx.post(
        f"{server.url}/{operation['name'].replace('projects', 'v1/projects')}:cancel"
    )
    assert answer.status_code == 200 and answer.json() == {}

    _cancelled(client, operation)
    with pytest.raises(OperationFailed, match="cancelled"):
        client.operations.wait(operation)
    for name in (operation["name"], operation["name"].rsplit("/", 1)[-1]):  # or by name, by id
        with pytest.raises(OperationFailed, match="cancelled"):
            client.operations.wait(name)
    version = client.versions.get("scaled", "v1")
    assert version["state"] == "READY"
    assert version["etag"] == created["etag"]
    assert client.predict("scaled", [[1, 2]]) == [6.0]
    version = _after_the_running_work(client, "scaled", "v1")
    assert version["packageUris"] == created["packageUris"]  # the verified load was discarded
    assert version["etag"] == created["etag"]
    assert client.predict("scaled", [[1, 2]]) == [6.0]
    with pytest.raises(FailedPrecondition, match="already done"):
        client.operations.cancel(operation["name"])


def test_cancelling_a_version_create_fails_the_version(
    client: mlengine.Client, tmp_path: Path
) -> None:
    operation = _slow_create(client, tmp_path)

    client.operations.cancel(operation["name"])

    _cancelled(client, operation)
    version = client.versions.get("scaled", "v1")
    assert version["state"] == "FAILED"
    assert "cancelled" in version["errorMessage"]
    version = _after_the_running_work(client, "scaled", "v1")
    assert version["state"] == "FAILED"  # the build that went on was discarded
    assert "defaultVersion" not in client.models.get("scaled")
    client.versions.delete("scaled", "v1")  # a cancelled version deletes like a failed one


def test_cancel_refuses_what_is_done_or_missing(client: mlengine.Client, tmp_path: Path) -> None:
    deleted = client.models.delete(client.models.create("m")["name"].rsplit("/", 1)[-1])
    with pytest.raises(FailedPrecondition, match="already done"):
        client.operations.cancel(deleted["name"])
    with pytest.raises(NotFound):
        client.operations.cancel("create_m_v1-1")


def test_operations_list_and_cancel_from_the_cli(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    client: mlengine.Client,
    tmp_path: Path,
) -> None:
    operation = _slow_create(client, tmp_path)
    operation_id = operation["name"].rsplit("/", 1)[-1]

    listed = run_cli("operations", "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert [o["name"] for o in json.loads(listed.stdout)] == [operation["name"]]
    cancelled = run_cli("operations", "cancel", operation_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"Cancelled [{operation_id}]" in cancelled.stderr
    again = run_cli("operations", "cancel", operation_id)
    assert again.returncode != 0 and "already done" in again.stderr
    assert "Traceback" not in again.stderr
    table = run_cli("operations", "list")
    assert "CREATE_VERSION" in table.stdout and "cancelled" in table.stdout
