"""Models, versions, operations and online prediction over the real server: raw REST, the
SDK, the CLI and the unmodified google-api-python-client tell the same story."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

import mlengine
from mlengine.config import Settings
from mlengine.errors import FailedPrecondition, NotFound, OperationFailed
from tests.conftest import ServerProcess

pytestmark = pytest.mark.integration

IRIS = load_iris()


@pytest.fixture
def model_dirs(tmp_path: Path) -> dict[str, Path]:
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(IRIS.data, IRIS.target)
    linear = LogisticRegression(max_iter=500).fit(IRIS.data, IRIS.target)
    dirs = {}
    for name, model in (("forest", forest), ("linear", linear)):
        directory = tmp_path / name
        directory.mkdir()
        joblib.dump(model, directory / "model.joblib")
        dirs[name] = directory
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.joblib").write_bytes(b"not a pickle")
    dirs["broken"] = broken
    return dirs


@pytest.fixture
def client(server: ServerProcess, settings: Settings) -> Iterator[mlengine.Client]:
    with mlengine.Client(settings=settings) as instance:
        yield instance


def test_model_version_predict_round_trip(
    client: mlengine.Client, server: ServerProcess, model_dirs: dict[str, Path]
) -> None:
    model = client.models.create("iris", description="iris classifiers")
    assert model["name"] == "projects/default/models/iris"
    version = client.versions.create("iris", "v1", model_dirs["forest"])
    assert version["state"] == "READY"
    assert version["framework"] == "SCIKIT_LEARN"
    assert version["isDefault"] is True
    assert "lastUseTime" not in version  # not used yet
    assert client.models.get("iris")["defaultVersion"]["name"].endswith("/versions/v1")
    forest = joblib.load(model_dirs["forest"] / "model.joblib")
    rows = IRIS.data[::5].tolist()
    expected = forest.predict(np.array(rows)).tolist()
    assert client.predict("iris", rows) == expected
    raw = httpx.post(f"{server.url}/v1/projects/default/models/iris/versions/v1:predict",
                     json={"instances": rows})  # fmt: skip
    assert raw.status_code == 200 and raw.json() == {"predictions": expected}
    probabilities = client.predict("iris", rows[:3], probabilities=True)
    assert np.allclose(np.sum(probabilities, axis=1), 1.0)
    used = client.versions.get("iris", "v1")["lastUseTime"]  # written at most once a minute
    created = dt.datetime.fromisoformat(version["createTime"])
    assert created < dt.datetime.fromisoformat(used) < dt.datetime.now(dt.UTC)
    # a second version; the default stays until set-default
    client.versions.create("iris", "v2", model_dirs["linear"])
    linear = joblib.load(model_dirs["linear"] / "model.joblib")
    assert client.predict("iris", rows, version="v2") == linear.predict(np.array(rows)).tolist()
    assert client.predict("iris", rows) == expected
    client.versions.set_default("iris", "v2")
    deadline = time.monotonic() + 5
    while client.predict("iris", rows) != linear.predict(np.array(rows)).tolist():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # deleting the origin never breaks a deployed version
    for file in model_dirs["forest"].iterdir():
        file.unlink()
    assert client.predict("iris", rows, version="v1") == expected
    with pytest.raises(FailedPrecondition, match="default version"):
        client.versions.delete("iris", "v2")
    client.versions.delete("iris", "v1")
    with pytest.raises(NotFound):
        client.versions.get("iris", "v1")
    with pytest.raises(FailedPrecondition, match="version"):
        client.models.delete("iris")
    client.versions.delete("iris", "v2")
    client.models.delete("iris")
    assert list(client.models.list()) == []


def test_failed_version_reports_the_loader_error(
    client: mlengine.Client, model_dirs: dict[str, Path]
) -> None:
    client.models.create("bad")
    with pytest.raises(OperationFailed):
        client.versions.create("bad", "v1", model_dirs["broken"])
    version = client.versions.get("bad", "v1")
    assert version["state"] == "FAILED"
    assert version["errorMessage"]
    # the files are named as the user gave them, not as the server's copy of them
    assert str(model_dirs["broken"]) in version["errorMessage"], version["errorMessage"]
    assert "not a joblib or pickle file" in version["errorMessage"]
    assert "/artifacts/" not in version["errorMessage"]
    assert "/cache/" not in version["errorMessage"]
    assert "defaultVersion" not in client.models.get("bad")


def test_prediction_errors(
    client: mlengine.Client, server: ServerProcess, model_dirs: dict[str, Path]
) -> None:
    client.models.create("errs")
    client.versions.create("errs", "v1", model_dirs["forest"])
    url = f"{server.url}/v1/projects/default/models/errs:predict"
    cases: list[tuple[Any, str]] = [
        ({"instances": [[1, 2, 3, 4], [1, 2, 3]]}, "instance 1"),
        ({"instances": [[1, 2, 3, "x"]]}, "instance 0"),
        ({"instances": "nope"}, "'instances'"),
        ({"rows": []}, "'instances'"),
        ({"instances": [[1, 2, 3, 4]], "probabilities": "false"}, "'probabilities' field"),
        ({"instances": [[1, 2, 3, 4]], "self": 1}, "'self'"),
    ]
    for body, fragment in cases:
        answer = httpx.post(url, json=body)
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert isinstance(error, str) and error.startswith("Prediction failed")
        assert fragment in error
    not_json = httpx.post(url, content=b"{nope")
    assert not_json.status_code == 400
    unknown = httpx.post(f"{server.url}/v1/projects/default/models/nope:predict",
                         json={"instances": [[1, 2, 3, 4]]})  # fmt: skip
    assert unknown.status_code == 404
    assert unknown.json()["error"]["status"] == "NOT_FOUND"
    too_big = httpx.post(url, content=b'{"instances": [' + b"1," * 800_000 + b"1]}")
    assert too_big.status_code == 413
    # the server keeps serving
    assert httpx.post(url, json={"instances": [[5.1, 3.5, 1.4, 0.2]]}).json()["predictions"]


def test_googleapiclient_drives_models_versions_and_predict(
    server: ServerProcess, model_dirs: dict[str, Path]
) -> None:
    from google.auth.credentials import AnonymousCredentials
    from googleapiclient import discovery

    ml = discovery.build("ml", "v1", static_discovery=True, credentials=AnonymousCredentials(),
                         client_options={"api_endpoint": server.url})  # fmt: skip
    try:
        projects = ml.projects()
        model = projects.models().create(parent="projects/g", body={"name": "gm"}).execute()
        assert model["name"] == "projects/g/models/gm"
        operation = projects.models().versions().create(
            parent="projects/g/models/gm",
            body={"name": "v1", "deploymentUri": str(model_dirs["forest"]),
                  "framework": "SCIKIT_LEARN", "runtimeVersion": "2.11", "pythonVersion": "3.7"},
        ).execute()  # fmt: skip
        assert operation["name"].startswith("projects/g/operations/create_gm_v1-")
        deadline = time.monotonic() + 60
        while not operation.get("done"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
            operation = projects.operations().get(name=operation["name"]).execute()
        assert operation["response"]["state"] == "READY"
        projects.models().versions().create(
            parent="projects/g/models/gm",
            body={"name": "v2", "deploymentUri": str(model_dirs["linear"])},
        ).execute()
        answer = projects.predict(
            name="projects/g/models/gm", body={"instances": IRIS.data[:2].tolist()}
        ).execute()
        assert len(answer["predictions"]) == 2
        deadline = time.monotonic() + 60
        while (
            projects.models()
            .versions()
            .get(name="projects/g/models/gm/versions/v2")
            .execute()["state"]
            != "READY"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        version = (
            projects.models()
            .versions()
            .setDefault(name="projects/g/models/gm/versions/v2")
            .execute()
        )
        assert version["isDefault"] is True
        listed = projects.models().versions().list(parent="projects/g/models/gm").execute()
        assert [v["name"].rsplit("/", 1)[-1] for v in listed["versions"]] == ["v1", "v2"]
        assert projects.models().get(name="projects/g/models/gm").execute()[
            "defaultVersion"]["name"].endswith("/v2")  # fmt: skip
    finally:
        ml.close()


def test_cli_story(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    server: ServerProcess,
    model_dirs: dict[str, Path],
    tmp_path: Path,
) -> None:
    assert run_cli("models", "create", "cli_iris").returncode == 0
    created = run_cli("versions", "create", "v1", "--model", "cli_iris", "--origin",
                      str(model_dirs["forest"]), "--format", "json")  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["state"] == "READY"
    instances = tmp_path / "instances.json"
    instances.write_text("\n".join(json.dumps(row) for row in IRIS.data[:3].tolist()) + "\n")
    predicted = run_cli("predict", "--model", "cli_iris", "--json-instances", str(instances),
                        "--format", "json")  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr
    forest = joblib.load(model_dirs["forest"] / "model.joblib")
    expected = forest.predict(IRIS.data[:3]).tolist()
    assert json.loads(predicted.stdout) == {"predictions": expected}
    as_table = run_cli("predict", "--model", "cli_iris", "--json-instances", str(instances))
    assert as_table.returncode == 0, as_table.stderr
    lines = [line.strip() for line in as_table.stdout.splitlines() if line.strip()]
    assert lines == ["PREDICTIONS", *[str(label) for label in expected]]  # class 0 shows as 0
    local = run_cli("local", "predict", "--model-dir", str(model_dirs["forest"]),
                    "--json-instances", str(instances), "--format", "json")  # fmt: skip
    assert local.returncode == 0, local.stderr
    assert json.loads(local.stdout) == {"predictions": expected}
    unknown = run_cli("local", "predict", "--model-dir", str(model_dirs["forest"]),
                      "--json-instances", str(instances), "--framework", "custom")  # fmt: skip
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("ERROR: The --framework flag must be one of SCIKIT_LEARN, ")
    assert len(unknown.stderr.strip().splitlines()) == 1
    table = run_cli("versions", "list", "--model", "cli_iris")
    assert "v1" in table.stdout and "READY" in table.stdout
    bad = run_cli("predict", "--model", "cli_iris", "--json-instances", str(tmp_path / "none"))
    assert bad.returncode == 2 and bad.stderr.startswith("ERROR: ")
    failed = run_cli("versions", "create", "v2", "--model", "cli_iris", "--origin",
                     str(model_dirs["broken"]))  # fmt: skip
    assert failed.returncode == 1
    ready = run_cli("versions", "list", "--model", "cli_iris", "--filter", "state:READY",
                    "--format", "json")  # fmt: skip
    assert [v["name"].rsplit("/", 1)[-1] for v in json.loads(ready.stdout)] == ["v1"]
    models = run_cli("models", "list", "--filter", "name:cli_*", "--format", "json")
    assert [m["name"].rsplit("/", 1)[-1] for m in json.loads(models.stdout)] == ["cli_iris"]
    refused = run_cli("models", "list", "--filter", "state:READY")
    assert refused.returncode == 2 and "Unsupported filter field 'state'" in refused.stderr


def test_batching_labels_and_delete_waits_for_requests_in_flight(
    client: mlengine.Client, server: ServerProcess, model_dirs: dict[str, Path]
) -> None:
    """A version's ``max_batch_wait_ms``/``max_batch_size`` labels hold a lone request in its
    batcher; deleting the version meanwhile answers that request before the version goes."""
    import concurrent.futures

    client.models.create("held")
    client.versions.create(
        "held",
        "v1",
        model_dirs["forest"],
        labels={"max_batch_wait_ms": "1500", "max_batch_size": "1000"},
    )
    forest = joblib.load(model_dirs["forest"] / "model.joblib")
    rows = IRIS.data[::30].tolist()
    url = f"{server.url}/v1/projects/default/models/held/versions/v1:predict"
    accepted = 'mlengine_batcher_requests_total{model="held",version="v1"} 2.0'
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        httpx.post(url, json={"instances": rows[:1]}, timeout=30)  # loads the version
        in_flight = pool.submit(httpx.post, url, json={"instances": rows}, timeout=30)
        while accepted not in httpx.get(f"{server.url}/metrics").text:
            assert not in_flight.done(), in_flight.result().text
            time.sleep(0.05)
        # the request waits in the version's batcher (held by max_batch_wait_ms); deleting
        # the version closes the batcher, which predicts what it holds at once
        assert not in_flight.done(), "the max_batch_wait_ms label did not hold the request"
        operation = client.versions.delete("held", "v1")
        answer = in_flight.result(timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": forest.predict(np.array(rows)).tolist()}
    assert operation.get("done") is True and "error" not in operation
    assert operation["metadata"]["labels"] == {
        "max_batch_wait_ms": "1500",
        "max_batch_size": "1000",
    }
    gone = httpx.post(url, json={"instances": rows}, timeout=30)
    assert gone.status_code == 404
    with pytest.raises(NotFound):
        client.versions.get("held", "v1")


def test_several_workers_start_on_a_new_home_and_serve_predictions(
    settings: Settings, model_dirs: dict[str, Path]
) -> None:
    """`server run --workers 2` on a fresh MLENGINE_HOME: both workers migrate the new database
    together at start-up, and either one answers predictions."""
    server = ServerProcess(settings, "--workers", "2").start()
    try:
        with mlengine.Client(settings=settings, autostart=False) as client:
            client.models.create("multi")
            assert client.versions.create("multi", "v1", model_dirs["forest"])["state"] == "READY"
        forest = joblib.load(model_dirs["forest"] / "model.joblib")
        rows = IRIS.data[::25].tolist()
        expected = {"predictions": forest.predict(np.array(rows)).tolist()}
        for _ in range(10):  # a new connection each time: either worker may answer
            answer = httpx.post(
                f"{server.url}/v1/projects/default/models/multi:predict",
                json={"instances": rows},
                timeout=30,
            )
            assert answer.status_code == 200 and answer.json() == expected
        assert "Traceback" not in server.log.read_text()
    finally:
        server.stop()
