"""Updating a version's code (``versions.patch`` with ``predictionClass``/``packageUris``, as
``gcloud ai-platform versions update`` sends them): verified in the background while the version
serves its current code, then reloaded; a failed update leaves the version as it was."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import joblib
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

import mlengine
from mlengine.config import Settings
from mlengine.errors import OperationFailed
from tests.conftest import ServerProcess
from tests.server._predictor_packages import (
    SCALED_SUM_CLASS,
    build_source_package,
    scaled_sum_model,
    scaled_sum_package,
)

pytestmark = pytest.mark.integration

SHIFTED_CLASSIFIER = """
import os
import joblib

class ShiftedClassifier:
    '''The classes of the version's model.joblib, plus 10.'''

    def __init__(self, model):
        self.model = model

    @classmethod
    def from_path(cls, model_dir):
        return cls(joblib.load(os.path.join(model_dir, "model.joblib")))

    def predict(self, instances, **kwargs):
        return [int(label) + 10 for label in self.model.predict(instances)]
"""


@pytest.fixture
def client(server: ServerProcess, settings: Settings) -> Iterator[mlengine.Client]:
    with mlengine.Client(settings=settings) as instance:
        yield instance


def _scaled_version(client: mlengine.Client, tmp_path: Path, package: Path) -> dict[str, Any]:
    client.models.create("scaled")
    return client.versions.create(
        "scaled", "v1", scaled_sum_model(tmp_path / "model"),
        config={"predictionClass": SCALED_SUM_CLASS, "packageUris": [str(package)]},
    )  # fmt: skip


def _operations(client: mlengine.Client, kind: str) -> list[dict[str, Any]]:
    listed = client.api.request("GET", f"/v1/projects/{client.project}/operations")
    return [o for o in listed.get("operations", []) if o["metadata"]["operationType"] == kind]


def test_a_package_rebuilt_at_the_same_path_replaces_the_code(
    client: mlengine.Client, tmp_path: Path
) -> None:
    dist = tmp_path / "dist"
    package = scaled_sum_package(tmp_path / "first", offset=0, dist=dist)
    created = _scaled_version(client, tmp_path, package)
    assert client.predict("scaled", [[1, 2]]) == [6.0]

    rebuilt = scaled_sum_package(tmp_path / "second", offset=100, dist=dist)
    assert rebuilt == package  # same file name, new contents: installed again, not cached
    updated = client.versions.update("scaled", "v1", package_uris=[str(package)])

    assert updated["state"] == "READY"
    assert updated["packageUris"] == [str(package)]
    assert updated["predictionClass"] == SCALED_SUM_CLASS
    assert "framework" not in updated  # unset for custom prediction routines
    assert updated["etag"] != created["etag"]
    assert updated["createTime"] == created["createTime"]
    assert client.predict("scaled", [[1, 2], [0, 1]]) == [106.0, 102.0]
    (operation,) = _operations(client, "UPDATE_VERSION")
    assert operation["done"] and operation["response"]["etag"] == updated["etag"]
    assert operation["metadata"]["version"]["packageUris"] == [str(package)]


def test_a_failed_code_update_leaves_the_version_as_it_was(
    client: mlengine.Client, tmp_path: Path
) -> None:
    created = _scaled_version(client, tmp_path, scaled_sum_package(tmp_path / "p", offset=0))
    assert client.predict("scaled", [[1, 2]]) == [6.0]

    with pytest.raises(OperationFailed, match="keeps its previous code") as failure:
        client.versions.update("scaled", "v1", prediction_class="scale_predictor.predictor.Missing")
    assert "Missing" in str(failure.value)

    version = client.versions.get("scaled", "v1")
    assert version["state"] == "READY"
    assert version["predictionClass"] == SCALED_SUM_CLASS
    assert version["etag"] == created["etag"]
    assert "errorMessage" not in version
    assert client.predict("scaled", [[1, 2]]) == [6.0]
    (operation,) = _operations(client, "UPDATE_VERSION")
    assert operation["done"] and "Missing" in operation["error"]["message"]


def test_the_version_serves_its_current_code_while_an_update_loads(
    client: mlengine.Client, server: ServerProcess, tmp_path: Path
) -> None:
    _scaled_version(client, tmp_path, scaled_sum_package(tmp_path / "p1", offset=0))
    assert client.predict("scaled", [[1, 2]]) == [6.0]
    slow = scaled_sum_package(tmp_path / "p2", offset=100, load_seconds=3)

    operation = client.versions.update("scaled", "v1", package_uris=[str(slow)], wait=False)

    assert not operation["done"]
    assert operation["metadata"]["operationType"] == "UPDATE_VERSION"
    assert client.versions.get("scaled", "v1")["state"] == "UPDATING"
    assert client.predict("scaled", [[1, 2]]) == [6.0]  # the current code answers meanwhile
    version_url = f"{server.url}/v1/projects/default/models/scaled/versions/v1"
    for refused in (
        httpx.patch(version_url, params={"updateMask": "description"}, json={"description": "x"}),
        httpx.delete(version_url),
    ):
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["status"] == "FAILED_PRECONDITION"
        assert "UPDATING" in refused.json()["error"]["message"]

    answers = set()  # until the operation ends: the new code is installed, checked, loaded
    deadline = time.monotonic() + 120
    while not operation["done"]:
        assert time.monotonic() < deadline
        answers.update(client.predict("scaled", [[1, 2]]))
        operation = client.operations.get(operation["name"])
    assert answers <= {6.0, 106.0} and 6.0 in answers  # never an error, never a wait
    assert operation["response"]["state"] == "READY"
    assert client.predict("scaled", [[1, 2]]) == [106.0]  # this server reloaded it first


def test_a_built_in_version_takes_a_prediction_class_and_gives_it_back(
    client: mlengine.Client, tmp_path: Path
) -> None:
    iris = load_iris()
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    model = LogisticRegression(max_iter=500).fit(iris.data, iris.target)
    joblib.dump(model, model_dir / "model.joblib")
    rows = iris.data[[0, 60, 120]].tolist()
    expected = model.predict(rows).tolist()
    client.models.create("iris")
    assert client.versions.create("iris", "v1", model_dir)["framework"] == "SCIKIT_LEARN"
    assert client.predict("iris", rows) == expected
    package = build_source_package(tmp_path / "p", "shifted", "classifier", SHIFTED_CLASSIFIER)

    custom = client.versions.update(
        "iris", "v1", prediction_class="shifted.classifier.ShiftedClassifier",
        package_uris=[str(package)],
    )  # fmt: skip
    assert "framework" not in custom
    assert client.predict("iris", rows) == [label + 10 for label in expected]

    plain = client.versions.update("iris", "v1", prediction_class="", package_uris=[])
    assert plain["framework"] == "SCIKIT_LEARN"
    assert "predictionClass" not in plain and "packageUris" not in plain
    assert client.predict("iris", rows) == expected


def test_versions_update_from_the_cli(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    client: mlengine.Client,
    tmp_path: Path,
) -> None:
    _scaled_version(client, tmp_path, scaled_sum_package(tmp_path / "p1", offset=0))
    shifted = scaled_sum_package(tmp_path / "p2", offset=1)

    updated = run_cli(
        "versions", "update", "v1", "--model", "scaled", "--package-uris", str(shifted),
        "--format", "json",
    )  # fmt: skip
    assert updated.returncode == 0, updated.stderr
    resource = json.loads(updated.stdout)
    assert resource["state"] == "READY"
    assert "/staging/" in resource["packageUris"][0]  # the local path was uploaded
    assert client.predict("scaled", [[1, 2]]) == [7.0]

    config = tmp_path / "update.yaml"
    config.write_text("predictionClass: scale_predictor.predictor.Nope\n")
    failed = run_cli("versions", "update", "v1", "--model", "scaled", "--config", str(config))
    assert failed.returncode != 0
    assert "Nope" in failed.stderr and "keeps its previous code" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert client.predict("scaled", [[1, 2]]) == [7.0]
