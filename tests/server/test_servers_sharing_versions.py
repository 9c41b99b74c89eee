"""Servers sharing one database (separate processes, or the workers of ``server run
--workers N``) each keep their own loaded versions: a version deleted, deleted and created
again under the same name, or given new code through one of them is not served stale by
another."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import joblib
import pytest
from sklearn.datasets import load_iris
from sklearn.dummy import DummyClassifier

import mlengine
from mlengine.config import Settings
from tests.conftest import ServerProcess, free_port
from tests.server._predictor_packages import (
    SCALED_SUM_CLASS,
    scaled_sum_model,
    scaled_sum_package,
)

pytestmark = pytest.mark.integration

IRIS = load_iris()
ROWS = IRIS.data[:3].tolist()


def _constant_model(directory: Path, label: int) -> Path:
    directory.mkdir()
    model = DummyClassifier(strategy="constant", constant=label).fit(IRIS.data, IRIS.target)
    joblib.dump(model, directory / "model.joblib")
    return directory


def _predict(server: ServerProcess) -> Any:
    answer = httpx.post(
        f"{server.url}/v1/projects/default/models/shared/versions/v1:predict",
        json={"instances": ROWS},
        timeout=30,
    )
    return answer.json().get("predictions") if answer.status_code == 200 else answer.status_code


def _loaded_versions(server: ServerProcess) -> float:
    for line in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if line.startswith("mlengine_loaded_versions "):
            return float(line.split()[1])
    raise AssertionError("no mlengine_loaded_versions")


def _eventually(server: ServerProcess, expected: Any, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    found = _predict(server)
    while found != expected and time.monotonic() < deadline:
        time.sleep(0.2)
        found = _predict(server)
    assert found == expected


def test_a_version_recreated_through_another_server_is_served_new(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zeros = _constant_model(tmp_path / "zeros", 0)
    twos = _constant_model(tmp_path / "twos", 2)
    first = ServerProcess(settings).start()
    monkeypatch.setenv("MLENGINE_API_URL", f"http://127.0.0.1:{free_port()}")
    second = ServerProcess(Settings.load()).start()
    try:
        with mlengine.Client(settings=settings, autostart=False) as client:
            client.models.create("shared")
            assert client.versions.create("shared", "v1", zeros)["state"] == "READY"
            assert _predict(second) == [0, 0, 0]  # the second server loads it
            assert _loaded_versions(second) == 1
            client.versions.delete("shared", "v1")
            _eventually(second, 404)  # once its cached name resolution expires
            assert _loaded_versions(second) == 0  # and the deleted version unloaded
            assert client.versions.create("shared", "v1", twos)["state"] == "READY"
            _eventually(second, [2, 2, 2])
            assert _predict(first) == [2, 2, 2]
            # recreated while the second server still holds the old one loaded
            assert _loaded_versions(second) == 1
            client.versions.delete("shared", "v1")
            assert client.versions.create("shared", "v1", zeros)["state"] == "READY"
            _eventually(second, [0, 0, 0])
            assert _loaded_versions(second) == 1
    finally:
        first.stop()
        second.stop()
    assert "Traceback" not in second.log.read_text()


def test_a_code_update_through_another_server_reloads_the_version(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = scaled_sum_package(tmp_path / "p1", offset=0)
    shifted = scaled_sum_package(tmp_path / "p2", offset=100)
    first = ServerProcess(settings).start()
    monkeypatch.setenv("MLENGINE_API_URL", f"http://127.0.0.1:{free_port()}")
    second = ServerProcess(Settings.load()).start()
    sums = [2 * sum(row) for row in ROWS]  # the predictor's scale.txt holds 2
    try:
        with mlengine.Client(settings=settings, autostart=False) as client:
            client.models.create("shared")
            client.versions.create(
                "shared", "v1", scaled_sum_model(tmp_path / "model"),
                config={"predictionClass": SCALED_SUM_CLASS, "packageUris": [str(package)]},
            )  # fmt: skip
            assert _predict(second) == pytest.approx(sums)  # the second server loads it
            client.versions.update("shared", "v1", package_uris=[str(shifted)])  # via the first
            _eventually(second, pytest.approx([value + 100 for value in sums]))
            assert _predict(first) == pytest.approx([value + 100 for value in sums])
            assert _loaded_versions(second) == 1
    finally:
        first.stop()
        second.stop()
    assert "Traceback" not in second.log.read_text()
