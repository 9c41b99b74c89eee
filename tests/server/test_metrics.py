"""``/metrics`` (Prometheus) and ``/readyz``: in-process for the registry and the probe, and
over a real server for the counts of every predict protocol."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import joblib
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

import mlengine
from mlengine.config import Settings
from mlengine.server import _predict as predict_module
from mlengine.server import create_app
from mlengine.server._metrics import _INSTANCE_BUCKETS, _LATENCY_BUCKETS, PredictionMetrics
from tests.conftest import ServerProcess

IRIS = load_iris()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition, by (name, labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def test_each_metrics_object_has_its_own_registry() -> None:
    first, second = PredictionMetrics(), PredictionMetrics()
    first.observe("ml_v1", "m", "v1", 200, 0.01, instances=3)
    first.observe("ml_v1", "m", "v1", 200, 0.02, instances=5)
    first.observe("ml_v1", "m", "v1", 400, 0.001)
    body, content_type = first.exposition()
    assert content_type.startswith("text/plain")
    found = samples(body.decode())
    series = {"model": "m", "version": "v1", "protocol": "ml_v1"}
    assert value(found, "mlengine_prediction_requests_total", **series, code="200") == 2
    assert value(found, "mlengine_prediction_requests_total", **series, code="400") == 1
    assert value(found, "mlengine_prediction_errors_total", **series) == 1
    assert value(found, "mlengine_prediction_latency_seconds_count", **series) == 3
    assert value(found, "mlengine_prediction_request_instances_count", **series) == 2
    assert value(found, "mlengine_prediction_request_instances_sum", **series) == 8
    assert "mlengine_prediction_requests_total{" not in second.exposition()[0].decode()
    openmetrics, content_type = first.exposition("application/openmetrics-text")
    assert content_type.startswith("application/openmetrics-text")
    assert openmetrics.decode().rstrip().endswith("# EOF")


def test_histograms_expose_what_prometheus_clients_own_histogram_would() -> None:
    """The lock-free counters give the same buckets (bounds inclusive), counts and sums as
    prometheus_client's Histogram fed the same values."""
    ours = PredictionMetrics()
    registry = CollectorRegistry()
    labels = ("model", "version", "protocol")
    latency = Histogram(
        "mlengine_prediction_latency_seconds", "-", labels, buckets=_LATENCY_BUCKETS,
        registry=registry,
    )  # fmt: skip
    sizes = Histogram(
        "mlengine_prediction_request_instances", "-", labels, buckets=_INSTANCE_BUCKETS,
        registry=registry,
    )  # fmt: skip
    observed = [(0.001, 1), (0.0011, 32), (0.0025, 2), (7.0, 1024), (100.0, 4096), (0.0, 3)]
    observed += [(0.5, 20000), (0.25, 33)]
    for seconds, instances in observed:
        ours.observe("ml_v1", "m", "v1", 200, seconds, instances)
        latency.labels("m", "v1", "ml_v1").observe(seconds)
        sizes.labels("m", "v1", "ml_v1").observe(instances)
    theirs = samples(generate_latest(registry).decode())
    found = samples(ours.exposition()[0].decode())
    compared = [key for key in theirs if not key[0].endswith("_created")]
    # each histogram: its buckets, +Inf, _count and _sum
    assert len(compared) == (len(_LATENCY_BUCKETS) + 3) + (len(_INSTANCE_BUCKETS) + 3)
    for key in compared:
        assert found[key] == theirs[key], key


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_readyz_follows_the_lifespan(settings: Settings) -> None:
    app = create_app(settings, run_scheduler=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        starting = await client.get("/readyz")  # the lifespan has not started: not serving
        assert starting.status_code == 503
        assert starting.json()["status"] == "unavailable"
        assert (await client.get("/v2/health/ready")).status_code == 503
        async with app.router.lifespan_context(app):
            assert (await client.get("/readyz")).json() == {"status": "ready"}
            assert (await client.get("/v2/health/ready")).json() == {"ready": True}
            metrics = await client.get("/metrics")
            assert metrics.status_code == 200
            assert value(samples(metrics.text), "mlengine_loaded_versions") == 0
        assert (await client.get("/readyz")).status_code == 503  # shut down


@pytest.mark.anyio
async def test_the_predict_fast_path_serves_while_the_lifespan_runs(settings: Settings) -> None:
    app = create_app(settings, run_scheduler=False)
    url = "/v1/projects/default/models/nope:predict"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        starting = await client.post(url, json={"instances": [[1.0]]})
        assert starting.status_code == 503  # through FastAPI's route: nothing to predict with
        assert starting.json() == {"error": "Prediction failed: the server is starting."}
        async with app.router.lifespan_context(app):
            assert app.prediction is app.state.prediction
            answer = await client.post(url, json={"instances": [[1.0]]})
            assert answer.status_code == 404
            assert answer.json()["error"]["status"] == "NOT_FOUND"
            metrics = samples((await client.get("/metrics")).text)
            labels = {"model": "nope", "version": "", "protocol": "ml_v1", "code": "404"}
            assert value(metrics, "mlengine_prediction_requests_total", **labels) == 1
        assert app.prediction is None


@pytest.mark.anyio
async def test_the_fast_path_parses_each_predict_path_right_however_many_it_keeps(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(predict_module, "_ROUTES_KEPT", 2)
    app = create_app(settings, run_scheduler=False)
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://app") as client,
        app.router.lifespan_context(app),
    ):
        for round_ in range(2):  # the second round finds some paths remembered
            for name in ("m1", "m2", "m3"):
                for path, expected in (
                    (f"/v1/projects/p{round_}/models/{name}:predict", f"models/{name} "),
                    (f"/v1/projects/p/models/{name}/versions/v7:predict", f"{name}/versions/v7"),
                ):
                    answer = await client.post(path, json={"instances": [[1.0]]})
                    assert answer.status_code == 404, path
                    assert expected in answer.json()["error"]["message"], path
                assert len(app._routes) <= 2
        long_name = "m" * 600  # answered, but too long a path to remember
        answer = await client.post(
            f"/v1/projects/p/models/{long_name}:predict", json={"instances": [[1.0]]}
        )
        assert answer.status_code == 404 and long_name in answer.json()["error"]["message"]
        assert all(len(path) <= 512 for path in app._routes)
        other = await client.post("/v1/projects/p/models/m1:explain", json={})
        assert other.status_code == 400  # not a predict path: FastAPI's explain route answers
        assert other.json()["error"].startswith("Explanation failed")
        assert "/v1/projects/p/models/m1:explain" not in app._routes


@pytest.fixture
def forest_dir(tmp_path: Path) -> Path:
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(IRIS.data, IRIS.target)
    directory = tmp_path / "forest"
    directory.mkdir()
    joblib.dump(forest, directory / "model.joblib")
    return directory


@pytest.fixture
def client(server: ServerProcess, settings: Settings) -> Iterator[mlengine.Client]:
    with mlengine.Client(settings=settings) as instance:
        yield instance


@pytest.mark.integration
def test_metrics_count_predictions_of_every_protocol(
    client: mlengine.Client, server: ServerProcess, forest_dir: Path
) -> None:
    client.models.create("iris")
    client.versions.create("iris", "v1", forest_dir)
    rows = IRIS.data[:3].tolist()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/readyz").json() == {"status": "ready"}
        for _ in range(3):  # the default version: counted under its name
            answer = http.post("/v1/projects/default/models/iris:predict", json={"instances": rows})
            assert answer.status_code == 200
        url = "/v1/projects/default/models/iris/versions/v1:predict"
        bad = http.post(url, json={"instances": [[1, 2]]})
        assert bad.status_code == 400
        assert http.post("/v1/models/iris:predict", json={"instances": rows}).status_code == 200
        infer = {"inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP64", "data": rows}]}
        assert http.post("/v2/models/iris/infer", json=infer).status_code == 200
        assert http.post("/v2/models/nope/infer", json=infer).status_code == 404
        metrics = http.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    found = samples(metrics.text)
    ml_v1 = {"model": "iris", "version": "v1", "protocol": "ml_v1"}
    assert value(found, "mlengine_prediction_requests_total", **ml_v1, code="200") == 3
    assert value(found, "mlengine_prediction_requests_total", **ml_v1, code="400") == 1
    assert value(found, "mlengine_prediction_errors_total", **ml_v1) == 1
    assert value(found, "mlengine_prediction_latency_seconds_count", **ml_v1) == 4
    assert value(found, "mlengine_prediction_request_instances_sum", **ml_v1) == 9
    for protocol in ("tfserving", "v2"):
        series = {"model": "iris", "version": "v1", "protocol": protocol}
        assert value(found, "mlengine_prediction_requests_total", **series, code="200") == 1
        assert value(found, "mlengine_prediction_latency_seconds_count", **series) == 1
    unknown = {"model": "nope", "version": "", "protocol": "v2"}
    assert value(found, "mlengine_prediction_requests_total", **unknown, code="404") == 1
    version = {"model": "iris", "version": "v1"}
    assert value(found, "mlengine_batcher_requests_total", **version) == 6
    assert value(found, "mlengine_batcher_instances_total", **version) == 3 * 3 + 1 + 3 + 3
    assert value(found, "mlengine_batcher_errors_total", **version) == 1
    batches = value(found, "mlengine_batcher_batches_total", **version)
    assert batches is not None and batches >= 6
    assert value(found, "mlengine_loaded_versions") == 1
