"""Models, versions, operations and predictions with the metadata in a real PostgreSQL (the
store a cluster of servers shares), through two server processes on one database: what the
store tests check method by method, end to end here (guarded updates, cancel, filters, the
revision every server reloads)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import joblib
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

import mlengine
from mlengine.config import Settings
from mlengine.errors import FailedPrecondition, NotFound, OperationFailed
from tests.conftest import ServerProcess, free_port
from tests.server._predictor_packages import (
    SCALED_SUM_CLASS,
    scaled_sum_model,
    scaled_sum_package,
)
from tests.store.test_metadata import postgres_url  # noqa: F401 - fixture
from tests.support.postgres import create_database

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LOAD_SECONDS = 3  # the slow package's from_path: the window to cancel its update in


@pytest.fixture
def two_servers(
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    postgres_url: str,  # noqa: F811
) -> Iterator[tuple[Settings, Settings]]:
    """Two `server run` processes on one PostgreSQL database and one artifact store."""
    database = create_database(postgres_url, f"t_{uuid.uuid4().hex[:12]}")
    monkeypatch.setenv("MLENGINE_DATABASE_URL", database)
    first = Settings.load()
    servers = [ServerProcess(first).start()]  # a server process reads its settings' variables
    try:
        monkeypatch.setenv("MLENGINE_API_URL", f"http://127.0.0.1:{free_port()}")
        second = Settings.load()
        assert first.api_url != second.api_url and first.database_url == second.database_url
        servers.append(ServerProcess(second).start())
        yield first, second
    finally:
        for server in servers:
            server.stop()


def _until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.2)


def _gone(client: mlengine.Client, version: str) -> bool:
    try:
        client.predict("pg", [[1, 2, 3, 4]], version=version)
    except NotFound:
        return True
    return False


def test_the_serving_lifecycle_on_postgresql_across_two_servers(
    two_servers: tuple[Settings, Settings], tmp_path: Path
) -> None:
    iris = load_iris()
    model_dir = tmp_path / "logistic"
    model_dir.mkdir()
    fitted = LogisticRegression(max_iter=500).fit(iris.data, iris.target)
    joblib.dump(fitted, model_dir / "model.joblib")
    rows = iris.data[::25].tolist()
    expected = fitted.predict(iris.data[::25]).tolist()
    first, second = two_servers
    with mlengine.Client(settings=first) as a, mlengine.Client(settings=second) as b:
        a.models.create("pg", labels={"team": "search"})
        v1 = a.versions.create("pg", "v1", model_dir, labels={"stage": "prod"})
        assert v1["state"] == "READY" and v1["isDefault"] is True
        assert a.predict("pg", rows) == b.predict("pg", rows) == expected
        _until(lambda: "lastUseTime" in b.versions.get("pg", "v1"), "lastUseTime written")

        # custom code, then a code update that every server reloads
        code = scaled_sum_model(tmp_path / "code")
        v2 = b.versions.create("pg", "v2", code, config={
            "predictionClass": SCALED_SUM_CLASS,
            "packageUris": [str(scaled_sum_package(tmp_path / "p1"))],
        })  # fmt: skip
        assert v2["state"] == "READY"
        assert a.predict("pg", [[1, 2]], version="v2") == [6.0]
        updated = a.versions.update(
            "pg", "v2", package_uris=[str(scaled_sum_package(tmp_path / "p2", offset=100))]
        )
        assert updated["state"] == "READY" and updated["etag"] != v2["etag"]
        assert a.predict("pg", [[1, 2]], version="v2") == [106.0]
        _until(lambda: b.predict("pg", [[1, 2]], version="v2") == [106.0], "B reloads v2")

        # a slow update cancelled through the other server: the code stays
        slow = scaled_sum_package(tmp_path / "p3", offset=1000, load_seconds=LOAD_SECONDS)
        pending = a.versions.update("pg", "v2", package_uris=[str(slow)], wait=False)
        assert b.versions.get("pg", "v2")["state"] == "UPDATING"
        assert b.predict("pg", [[1, 2]], version="v2") == [106.0]  # serves while updating
        with pytest.raises(FailedPrecondition):
            b.versions.delete("pg", "v2")  # not while UPDATING
        b.operations.cancel(pending["name"])
        with pytest.raises(OperationFailed, match="cancelled"):
            a.operations.wait(pending["name"])
        time.sleep(2 * LOAD_SECONDS + 1)  # the cancelled load has finished, and was discarded
        kept = a.versions.get("pg", "v2")
        assert kept["state"] == "READY" and kept["etag"] == updated["etag"]
        assert a.predict("pg", [[1, 2]], version="v2") == [106.0]

        # server-side filters, on both servers
        for client in (a, b):
            ready = client.versions.list("pg", filter="state:READY AND labels.stage:prod")
            assert [v["name"].rsplit("/", 1)[-1] for v in ready] == ["v1"]
            updates = client.operations.list(filter="operationType:UPDATE_VERSION AND done:true")
            assert len(list(updates)) == 2
            assert [m["name"] for m in client.models.list(filter="labels.team:search")] == [
                "projects/default/models/pg"
            ]

        # default, deletes; the other server stops serving what is gone
        b.versions.set_default("pg", "v2")
        assert a.predict("pg", [[1, 2]]) == [106.0]
        a.versions.delete("pg", "v1")
        assert _gone(a, "v1")
        _until(lambda: _gone(b, "v1"), "B stops serving the deleted v1")
        a.versions.delete("pg", "v2")
        b.models.delete("pg")
        assert list(a.models.list()) == []
