"""``/metrics`` of a server with several worker processes: every scrape, whichever worker
answers it, reports the whole server's counts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import joblib
import numpy as np
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

import mlengine
from mlengine.config import Settings
from mlengine.server._metrics import PredictionMetrics
from mlengine.server._worker_metrics import (
    PUBLISH_INTERVAL_S,
    WORKER_METRICS_DIR_ENV,
    WorkerMetrics,
    worker_metrics_directory,
)
from tests.conftest import ServerProcess
from tests.server.test_metrics import samples, value

IRIS = load_iris()
SERIES = {"model": "m", "version": "v1", "protocol": "ml_v1"}


def _exited_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_scrape_merges_every_workers_counters_and_live_workers_gauges(tmp_path: Path) -> None:
    mine, live, gone = PredictionMetrics(), PredictionMetrics(), PredictionMetrics()
    for metrics, latencies in ((mine, [0.002, 0.2]), (live, [0.002]), (gone, [0.02, 0.02, 7.0])):
        for seconds in latencies:
            metrics.observe("ml_v1", "m", "v1", 200, seconds, instances=4)
    gone.observe("ml_v1", "m", "v1", 400, 0.001)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        WorkerMetrics(tmp_path, live.registry, pid=sleeper.pid).publish()
        WorkerMetrics(tmp_path, gone.registry, pid=_exited_pid()).publish()
        mine.share_with_workers(tmp_path)
        (tmp_path / "garbage.json").write_bytes(b"{not json")  # skipped, not fatal
        (tmp_path / "123.json").write_bytes(b"[{")
        body, _ = mine.exposition()
    finally:
        sleeper.kill()
        sleeper.wait()
    found = samples(body.decode())
    # counters and histograms: all three processes, the exited one included
    assert value(found, "mlengine_prediction_requests_total", **SERIES, code="200") == 6
    assert value(found, "mlengine_prediction_requests_total", **SERIES, code="400") == 1
    assert value(found, "mlengine_prediction_errors_total", **SERIES) == 1
    assert value(found, "mlengine_prediction_latency_seconds_count", **SERIES) == 7
    assert value(found, "mlengine_prediction_latency_seconds_bucket", **SERIES, le="0.0025") == 3
    assert value(found, "mlengine_prediction_latency_seconds_bucket", **SERIES, le="0.025") == 5
    assert value(found, "mlengine_prediction_latency_seconds_bucket", **SERIES, le="+Inf") == 7
    assert value(found, "mlengine_prediction_latency_seconds_sum", **SERIES) == pytest.approx(7.245)
    assert value(found, "mlengine_prediction_request_instances_sum", **SERIES) == 24
    # gauges: the live processes only (this one and the sleeper), summed or the lowest
    assert value(found, "mlengine_loaded_versions") is None  # no loaded-versions collector
    here = samples(PredictionMetrics().exposition()[0].decode())
    memory = value(found, "process_resident_memory_bytes")
    memory_here = value(here, "process_resident_memory_bytes")
    assert memory is not None and memory_here is not None and memory > memory_here
    start = value(found, "process_start_time_seconds")
    start_here = value(here, "process_start_time_seconds")
    assert start is not None and start_here is not None and start <= start_here
    # each family once, as Prometheus requires
    names = [family.name for family in text_string_to_metric_families(body.decode())]
    assert len(names) == len(set(names))


def test_a_worker_writes_its_file_atomically_and_only_when_it_changed(tmp_path: Path) -> None:
    metrics = PredictionMetrics()
    shared = metrics.share_with_workers(tmp_path)
    shared.publish()
    written = shared.path.stat().st_mtime_ns
    assert shared.path.name == f"{os.getpid()}.json"
    families = {family["name"]: family for family in orjson.loads(shared.path.read_bytes())}
    assert "mlengine_prediction_requests" in families
    metrics.observe("ml_v1", "m", "v1", 200, 0.01, instances=1)
    shared.publish()
    assert shared.path.stat().st_mtime_ns >= written
    assert b'"m"' in shared.path.read_bytes()
    assert [path.name for path in tmp_path.iterdir()] == [shared.path.name]  # no temp files


def test_the_run_directory_is_fresh_named_for_the_workers_and_removed(tmp_path: Path) -> None:
    stale = tmp_path / "run" / f"worker-metrics-{_exited_pid()}"
    stale.mkdir(parents=True)
    with worker_metrics_directory(tmp_path, 1) as none:
        assert none is None and WORKER_METRICS_DIR_ENV not in os.environ
        assert not stale.exists()  # left by a run that was killed
    stale.mkdir(parents=True)
    with worker_metrics_directory(tmp_path, 3) as directory:
        assert directory is not None and directory.is_dir()
        assert os.environ[WORKER_METRICS_DIR_ENV] == str(directory)
        assert not stale.exists()
    assert not directory.exists() and WORKER_METRICS_DIR_ENV not in os.environ


def _requests_by_worker(directory: Path, model: str) -> dict[str, float]:
    """Each worker's published count of successful predict requests for `model`."""
    counts = {}
    for path in directory.glob("*.json"):
        for family in orjson.loads(path.read_bytes()):
            if family["name"] == "mlengine_prediction_requests":
                counts[path.stem] = sum(
                    sample_value
                    for _, labels, sample_value in family["samples"]
                    if labels["model"] == model and labels["code"] == "200"
                )
    return counts


def test_every_scrape_of_a_multi_worker_server_counts_every_request(
    settings: Settings, tmp_path: Path
) -> None:
    """Predictions answered by both workers; then every scrape, whichever worker answers it,
    reports them all; the shared directory goes when the server stops."""
    origin = tmp_path / "forest"
    origin.mkdir()
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(IRIS.data, IRIS.target)
    joblib.dump(forest, origin / "model.joblib")
    server = ServerProcess(settings, "--workers", "2").start()
    assert server.process is not None
    directory = settings.home_path / "run" / f"worker-metrics-{server.process.pid}"
    try:
        with mlengine.Client(settings=settings, autostart=False) as client:
            client.models.create("multi")
            assert client.versions.create("multi", "v1", origin)["state"] == "READY"
        rows = IRIS.data[::30].tolist()
        expected = {"predictions": forest.predict(np.array(rows)).tolist()}
        url = f"{server.url}/v1/projects/default/models/multi:predict"
        requests = 0
        deadline = time.monotonic() + 60
        while True:  # a new connection each time: either worker may answer
            answer = httpx.post(url, json={"instances": rows}, timeout=30)
            assert answer.status_code == 200 and answer.json() == expected
            requests += 1
            if requests % 10 == 0:
                time.sleep(PUBLISH_INTERVAL_S * 1.5)
                by_worker = _requests_by_worker(directory, "multi")
                if requests >= 20 and len([n for n in by_worker.values() if n > 0]) == 2:
                    break
                assert time.monotonic() < deadline, f"one worker answered all: {by_worker}"
        assert sum(_requests_by_worker(directory, "multi").values()) == requests
        series = {"model": "multi", "version": "v1", "protocol": "ml_v1"}
        batcher = {"model": "multi", "version": "v1"}
        for _ in range(10):  # each scrape on a new connection, answered by either worker
            found = samples(httpx.get(f"{server.url}/metrics", timeout=10).text)
            assert value(found, "mlengine_prediction_requests_total", **series, code="200") == (
                requests
            )
            assert value(found, "mlengine_prediction_request_instances_sum", **series) == (
                requests * len(rows)
            )
            assert value(found, "mlengine_batcher_requests_total", **batcher) == requests
            assert value(found, "mlengine_loaded_versions") == 2  # one in each worker
    finally:
        server.stop()
    assert not directory.exists()
    assert "Traceback" not in server.log.read_text()
