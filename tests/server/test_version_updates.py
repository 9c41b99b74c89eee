"""Versions' fields checked when they are created or updated, and updated batching labels
taking effect on a loaded version, over a real server."""

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
from sklearn.ensemble import RandomForestClassifier

import mlengine
from mlengine.config import Settings
from mlengine.errors import InvalidArgument
from mlengine.prediction._serving import _RESOLVE_TTL_S
from tests.conftest import ServerProcess

pytestmark = pytest.mark.integration

IRIS = load_iris()


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    directory = tmp_path / "forest"
    directory.mkdir()
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(IRIS.data, IRIS.target)
    joblib.dump(forest, directory / "model.joblib")
    return directory


@pytest.fixture
def client(server: ServerProcess, settings: Settings) -> Iterator[mlengine.Client]:
    with mlengine.Client(settings=settings, autostart=False) as instance:
        yield instance


def _batches(server: ServerProcess, model: str) -> float:
    prefix = f'mlengine_batcher_batches_total{{model="{model}",version="v1"}} '
    for line in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


@pytest.mark.parametrize(
    ("labels", "named"),
    [
        ({"max_batch_size": "abc"}, "labels.max_batch_size"),
        ({"max_batch_size": "0"}, "labels.max_batch_size"),
        ({"max_batch_wait_ms": "-5"}, "labels.max_batch_wait_ms"),
        ({"max_batch_wait_ms": "soon"}, "labels.max_batch_wait_ms"),
        ({"Bad": "x"}, "labels.Bad"),
    ],
)
def test_bad_batching_labels_are_refused_when_created_and_when_updated(
    server: ServerProcess,
    client: mlengine.Client,
    origin: Path,
    labels: dict[str, str],
    named: str,
) -> None:
    client.models.create("labelled")
    base = f"{server.url}/v1/projects/default/models/labelled/versions"
    created = httpx.post(base, json={"name": "v1", "deploymentUri": str(origin), "labels": labels})
    assert created.status_code == 400, created.text
    assert f"'{named}' field of Version" in created.json()["error"]["message"]
    assert client.versions.create("labelled", "v1", origin)["state"] == "READY"
    updated = httpx.patch(
        f"{base}/v1", params={"updateMask": "labels"}, json={"labels": labels}, timeout=30
    )
    assert updated.status_code == 400, updated.text
    assert f"'{named}' field of Version" in updated.json()["error"]["message"]
    assert "labels" not in client.versions.get("labelled", "v1")  # nothing half-written


def test_updated_batching_labels_take_effect_on_the_loaded_version(
    server: ServerProcess, client: mlengine.Client, origin: Path
) -> None:
    client.models.create("rebatched")
    assert client.versions.create("rebatched", "v1", origin)["state"] == "READY"
    url = f"{server.url}/v1/projects/default/models/rebatched/versions/v1:predict"
    rows = IRIS.data[:5].tolist()

    def predict() -> Any:
        answer = httpx.post(url, json={"instances": rows}, timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()["predictions"]

    expected = predict()  # loads it: five instances in one model call
    assert _batches(server, "rebatched") == 1
    updated = httpx.patch(
        f"{server.url}/v1/projects/default/models/rebatched/versions/v1",
        params={"updateMask": "labels"},
        json={"labels": {"max_batch_size": "2"}},
        timeout=30,
    )
    assert updated.status_code == 200, updated.text
    assert client.versions.get("rebatched", "v1")["labels"] == {"max_batch_size": "2"}
    time.sleep(_RESOLVE_TTL_S * 1.5)  # the server reads the version again
    assert predict() == expected  # the same answer, in calls of 2, 2 and 1 instances
    assert _batches(server, "rebatched") == 4


def test_models_and_versions_update_from_the_cli_and_the_sdk(
    server: ServerProcess,
    client: mlengine.Client,
    origin: Path,
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
) -> None:
    """``models update`` and ``versions update`` apply --clear-labels, --remove-labels then
    --update-labels to the current labels, as gcloud does; the SDK replaces them."""
    client.models.create("tagged", labels={"team": "a", "tier": "gold"})
    created = client.versions.create(
        "tagged", "v1", origin, labels={"owner": "x", "max_batch_size": "8"}
    )
    assert created["state"] == "READY"
    updated = run_cli("versions", "update", "v1", "--model", "tagged", "--update-labels",
                      "max_batch_size=16,stage=prod", "--remove-labels", "owner",
                      "--description", "retuned", "--format", "json")  # fmt: skip
    assert updated.returncode == 0, updated.stderr
    assert json.loads(updated.stdout)["labels"] == {"max_batch_size": "16", "stage": "prod"}
    version = client.versions.get("tagged", "v1")
    assert version["description"] == "retuned"
    assert version["labels"] == {"max_batch_size": "16", "stage": "prod"}
    assert version["state"] == "READY" and version["deploymentUri"] == created["deploymentUri"]
    model = run_cli("models", "update", "tagged", "--clear-labels", "--update-labels", "team=b")
    assert model.returncode == 0, model.stderr
    assert client.models.get("tagged")["labels"] == {"team": "b"}
    assert client.models.update("tagged", description="iris")["description"] == "iris"
    assert client.models.get("tagged")["labels"] == {"team": "b"}  # kept: not given
    assert "labels" not in client.versions.update("tagged", "v1", labels={})  # cleared
    for args, says in (
        (["--update-labels", "max_batch_size=zero"], "'labels.max_batch_size' field of Version"),
        ([], "Nothing to update"),
        (["--update-labels", "novalue"], "must be KEY=VALUE"),
    ):
        refused = run_cli("versions", "update", "v1", "--model", "tagged", *args)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.startswith("ERROR: ") and says in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1  # one readable line
    config = tmp_path / "update.yaml"
    config.write_text(
        "description: from the file\nautoScaling:\n  minNodes: 2\n"
        "requestLoggingConfig:\n  samplingPercentage: 0.5\n"
    )
    from_file = run_cli("versions", "update", "v1", "--model", "tagged", "--config", str(config),
                        "--description", "the flag wins", "--format", "json")  # fmt: skip
    assert from_file.returncode == 0, from_file.stderr
    version = json.loads(from_file.stdout)
    assert version["description"] == "the flag wins"
    assert version["autoScaling"] == {"minNodes": 2}
    assert version["requestLoggingConfig"] == {"samplingPercentage": 0.5}
    for text, says in (
        ("labels:\n  a: b\n", "may set description, autoScaling"),
        ("autoScaling:\n  target: 3\n", "'autoScaling' field of the config may set"),
        ("manualScaling:\n  nodes: 1\n", "'autoScaling' and 'manualScaling' fields"),
    ):
        config.write_text(text)
        refused = run_cli("versions", "update", "v1", "--model", "tagged", "--config", str(config))
        assert refused.returncode == 2 and says in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    assert client.versions.get("tagged", "v1")["autoScaling"] == {"minNodes": 2}  # unchanged
    missing = run_cli("versions", "update", "v9", "--model", "tagged", "--description", "x")
    assert missing.returncode == 2 and "not found" in missing.stderr
    with pytest.raises(
        InvalidArgument, match="Nothing to update: give a description, labels, code"
    ):
        client.versions.update("tagged", "v1")
    nothing = run_cli("models", "update", "tagged")
    assert nothing.returncode == 2
    assert nothing.stderr.strip() == "ERROR: Nothing to update: give a description or labels."
