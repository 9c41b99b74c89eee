"""Operations left pending by a server process that died: `ModelService.fail_interrupted` (run at
server start) ends them, so that no version stays CREATING or UPDATING forever."""

from __future__ import annotations

import socket
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from mlengine.config import Settings
from mlengine.models import ModelService
from mlengine.store import RegistryStore, get_store
from mlengine.store._schema import OperationRow


@pytest.fixture
def models(settings: Settings) -> Iterator[ModelService]:
    store = get_store(settings.database_url)
    try:
        yield ModelService(RegistryStore(store), settings)
    finally:
        store.dispose()


def _dead_owner() -> str:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    return f"{socket.gethostname()}:{finished.pid}"


def _orphan(models: ModelService, operation_name: str) -> None:
    """Make the operation's owner a process that no longer exists."""
    operation_id = operation_name.rsplit("/", 1)[-1]
    with models.registry.metadata._session() as session:
        session.execute(
            update(OperationRow)
            .where(OperationRow.operation_id == operation_id)
            .values(owner=_dead_owner())
        )


def _ready_version(models: ModelService, tmp_path: Path) -> tuple[Path, Path]:
    """Model ``m`` with ``v1`` READY (its load faked); its origin and a package file."""
    origin = tmp_path / "model"
    origin.mkdir()
    (origin / "model.joblib").write_bytes(b"files")
    package = tmp_path / "code-0.1.tar.gz"
    with tarfile.open(package, "w:gz"):  # an (empty) sdist archive: never installed here
        pass
    models.create_model("p", {"name": "m"})
    _, record, operation = models.create_version(
        "p", "m", {"name": "v1", "deploymentUri": str(origin)}
    )
    models.build(record, operation, lambda version, directory: "SCIKIT_LEARN")
    return origin, package


def test_interrupted_create_and_update_end(models: ModelService, tmp_path: Path) -> None:
    origin, package = _ready_version(models, tmp_path)
    before = models.get_version("p", "m", "v1")
    updating, pending = models.patch_version(
        "p", "m", "v1", {"packageUris": [str(package)]}, "packageUris"
    )
    assert pending is not None and not updating["done"]
    assert models.get_version("p", "m", "v1")["state"] == "UPDATING"
    creating, _, _ = models.create_version("p", "m", {"name": "v2", "deploymentUri": str(origin)})

    models.fail_interrupted()  # both owners alive: nothing changes
    assert models.get_version("p", "m", "v1")["state"] == "UPDATING"
    assert models.get_version("p", "m", "v2")["state"] == "CREATING"

    _orphan(models, updating["name"])
    _orphan(models, creating["name"])
    models.fail_interrupted()

    after = models.get_version("p", "m", "v1")
    assert after["state"] == "READY"
    assert "packageUris" not in after  # the previous code
    assert after["etag"] == before["etag"]
    ended = models.get_operation("p", updating["name"].rsplit("/", 1)[-1])
    assert ended["done"] and "stopped" in ended["error"]["message"]
    assert "keeps its previous code" in ended["error"]["message"]
    assert ended["error"]["code"] == 10  # ABORTED: nothing was wrong with the request
    assert models.get_version("p", "m", "v2")["state"] == "FAILED"
    failed = models.get_operation("p", creating["name"].rsplit("/", 1)[-1])
    assert failed["done"] and "create the version again" in failed["error"]["message"]
    assert failed["error"]["code"] == 10


def test_an_update_interrupted_after_its_commit_ends_with_the_new_version(
    models: ModelService, tmp_path: Path
) -> None:
    _, package = _ready_version(models, tmp_path)
    updating, pending = models.patch_version(
        "p", "m", "v1", {"packageUris": [str(package)]}, "packageUris"
    )
    assert pending is not None
    assert models.update_code(pending, lambda version, directory: "SCIKIT_LEARN")
    name = updating["name"].rsplit("/", 1)[-1]
    assert not models.get_operation("p", name)["done"]  # the server reloads, then ends it

    _orphan(models, updating["name"])  # ... but it stopped before
    models.fail_interrupted()

    ended = models.get_operation("p", name)
    assert ended["done"] and "error" not in ended
    assert ended["response"]["packageUris"] == [str(package)]
    assert models.get_version("p", "m", "v1")["state"] == "READY"
