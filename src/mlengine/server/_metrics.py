"""Prometheus metrics of online prediction (``GET /metrics``) and the readiness probe
(``GET /readyz``).

Every app keeps its metrics in a `CollectorRegistry` of its own, so that several apps in one
process (tests) never share counters. Each predict route, whatever its protocol, calls
`PredictionMetrics.observe` once per request, on the event loop; it adds to plain counters of
the request's (model, version, protocol) series, which a collector turns into Prometheus
families when Prometheus scrapes (rendered on the event loop too, so no lock is needed).
prometheus_client's own Counter and Histogram take a lock per update: five per request, about a
quarter of the CPU mlengine's predict path spends on a small request, measured. The
micro-batchers' own counters are likewise read only when Prometheus scrapes.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI, Request
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from mlengine.errors import MLEngineError
from mlengine.server._errors import JSONResponse
from mlengine.server._worker_metrics import WorkerMetrics

if TYPE_CHECKING:
    from mlengine.prediction._loaded import LoadedVersions
    from mlengine.prediction._serving import PredictionService
    from mlengine.store import MetadataStore

__all__ = [
    "PROTOCOL_ML_V1",
    "PROTOCOL_TFSERVING",
    "PROTOCOL_V2",
    "PredictionMetrics",
    "count_prediction",
    "default_version_name",
    "install_metrics",
    "readiness",
    "router",
]

PROTOCOL_ML_V1 = "ml_v1"
PROTOCOL_TFSERVING = "tfserving"
PROTOCOL_V2 = "v2"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_INSTANCE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)

router = APIRouter()


class _Histogram:
    """Counts per bucket (the last one +Inf) and the sum of the observed values."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # the first bucket whose upper bound is >= value: Prometheus's "le" (less or equal)
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            buckets.append((floatToGoString(bound), running))
        return buckets


class _Series:
    """The counts of one (model, version, protocol)."""

    __slots__ = ("errors", "instances", "latency", "requests")

    def __init__(self) -> None:
        self.requests: dict[int, int] = {}  # by HTTP status code
        self.errors = 0
        self.latency = _Histogram(_LATENCY_BUCKETS)
        self.instances = _Histogram(_INSTANCE_BUCKETS)


class PredictionMetrics:
    """The Prometheus metrics of one app, in a registry of its own.

    Series (labels in braces):

    - ``mlengine_prediction_requests_total{model,version,protocol,code}``: predict requests
      answered, by HTTP status code.
    - ``mlengine_prediction_latency_seconds{model,version,protocol}``: histogram of the time
      from reading the request to the answer.
    - ``mlengine_prediction_errors_total{model,version,protocol}``: requests answered with a
      status >= 400.
    - ``mlengine_prediction_request_instances{model,version,protocol}``: histogram of the
      instances per successful request.
    - ``mlengine_batcher_{requests,batches,instances,errors}_total{model,version}``: the
      counters of each version's micro-batchers since the process started (read at scrape
      time; a version loaded again, after an eviction or an update, adds to them, so they
      never go back). ``batches`` counts model calls, so
      ``instances / batches`` is the mean batch size.
    - ``mlengine_loaded_versions``: versions loaded now.

    `version` is the version that answered (a request for a model's default is counted under
    the default's name), or empty when none was resolved (unknown model). `protocol` is
    ``ml_v1``, ``tfserving`` or ``v2``. `observe` and `exposition` are called from the event
    loop (one thread): the counters take no lock.

    In a server of several worker processes (`share_with_workers`), a scrape answers every
    worker's series merged (see `_worker_metrics`).

    Args:
        loaded_versions: returns the app's `LoadedVersions`, or None before it exists.
    """

    def __init__(self, loaded_versions: Callable[[], LoadedVersions | None] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.workers: WorkerMetrics | None = None
        self._series: dict[tuple[str, str, str], _Series] = {}
        self.registry.register(_PredictionCollector(self._series))
        if loaded_versions is not None:
            self.registry.register(_LoadedVersionsCollector(loaded_versions))
        ProcessCollector(registry=self.registry)

    def observe(
        self,
        protocol: str,
        model: str,
        version: str,
        code: int,
        seconds: float,
        instances: int = 0,
    ) -> None:
        """Count one answered predict request.

        Args:
            protocol: ``ml_v1``, ``tfserving`` or ``v2``.
            model: the model name of the request.
            version: the version that answered, or ``""`` when none was resolved.
            code: the HTTP status of the answer.
            seconds: how long the request took.
            instances: the instances predicted (counted for successful requests only).
        """
        key = (model, version, protocol)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
        requests = series.requests
        requests[code] = requests.get(code, 0) + 1
        series.latency.observe(seconds)
        if code >= 400:
            series.errors += 1
        elif instances:
            series.instances.observe(instances)

    def share_with_workers(self, directory: Path) -> WorkerMetrics:
        """Publish this process's metrics in `directory`, shared with the server's other
        worker processes, and answer scrapes with all of theirs merged."""
        self.workers = WorkerMetrics(directory, self.registry)
        return self.workers

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The registry in the format the ``Accept`` header asks for (Prometheus text by
        default, or OpenMetrics), and its content type; every worker's, merged, when shared."""
        encoder, content_type = choose_encoder(accept or "")
        registry = self.registry if self.workers is None else self.workers.merged()
        return encoder(registry), content_type


class _PredictionCollector(Collector):
    """Turns the request series' counters into Prometheus families when Prometheus scrapes."""

    def __init__(self, series: dict[tuple[str, str, str], _Series]) -> None:
        self.series = series

    def collect(self) -> Iterator[Metric]:
        labels = ["model", "version", "protocol"]
        requests = CounterMetricFamily(
            "mlengine_prediction_requests",
            "Predict requests answered, by HTTP status code.",
            labels=[*labels, "code"],
        )
        latency = HistogramMetricFamily(
            "mlengine_prediction_latency_seconds",
            "Seconds from reading a predict request to its answer.",
            labels=labels,
        )
        errors = CounterMetricFamily(
            "mlengine_prediction_errors",
            "Predict requests answered with an error (HTTP status >= 400).",
            labels=labels,
        )
        instances = HistogramMetricFamily(
            "mlengine_prediction_request_instances",
            "Instances per successful predict request.",
            labels=labels,
        )
        for key, series in list(self.series.items()):
            values = list(key)
            for code, count in sorted(series.requests.items()):
                requests.add_metric([*values, str(code)], count)
            latency.add_metric(values, series.latency.cumulative(), series.latency.total)
            errors.add_metric(values, series.errors)
            instances.add_metric(values, series.instances.cumulative(), series.instances.total)
        yield from (requests, latency, errors, instances)


class _LoadedVersionsCollector(Collector):
    """Reads each version's `BatcherStats` (all its batchers so far) when Prometheus
    scrapes."""

    def __init__(self, loaded_versions: Callable[[], LoadedVersions | None]) -> None:
        self.loaded_versions = loaded_versions

    def collect(self) -> Iterator[Metric]:
        labels = ["model", "version"]
        families = {
            field: CounterMetricFamily(f"mlengine_batcher_{field}", help_text, labels=labels)
            for field, help_text in (
                ("requests", "Requests a loaded version's micro-batcher accepted."),
                ("batches", "Model calls of a loaded version's micro-batcher."),
                ("instances", "Instances a loaded version's micro-batcher accepted."),
                ("errors", "Requests a loaded version's micro-batcher answered with an error."),
            )
        }
        loaded = self.loaded_versions()
        totals = {} if loaded is None else loaded.batcher_stats()
        for key, stats in totals.items():
            if not (isinstance(key, tuple) and len(key) == 3):
                continue
            values = [str(key[1]), str(key[2])]
            families["requests"].add_metric(values, stats.requests)
            families["batches"].add_metric(values, stats.batches)
            families["instances"].add_metric(values, stats.instances)
            families["errors"].add_metric(values, stats.errors)
        yield from families.values()
        count = 0 if loaded is None else len(loaded.loaded_keys())
        yield GaugeMetricFamily(
            "mlengine_loaded_versions", "Model versions loaded for prediction.", count
        )


def install_metrics(app: FastAPI) -> PredictionMetrics:
    """Give `app` its metrics (``app.state.metrics``) and the ``/metrics`` and ``/readyz``
    routes.

    Returns:
        The app's `PredictionMetrics`.
    """

    def loaded_versions() -> LoadedVersions | None:
        prediction = getattr(app.state, "prediction", None)
        return None if prediction is None else prediction.loaded

    metrics = PredictionMetrics(loaded_versions)
    app.state.metrics = metrics
    app.include_router(router)
    return metrics


def count_prediction(
    request: Request,
    protocol: str,
    model: str,
    version: str,
    code: int,
    started: float,
    instances: int = 0,
) -> None:
    """Count a predict request that began at ``time.perf_counter()`` `started` and was
    answered by `version` (``""`` when none was resolved) with HTTP status `code`."""
    metrics: PredictionMetrics | None = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.observe(protocol, model, version, code, time.perf_counter() - started, instances)


async def default_version_name(
    prediction: PredictionService, project: str, model: str
) -> str | None:
    """The name of `model`'s default version (through the prediction service's cache), or None
    when it has none or is unknown: how a request for a model's default is counted."""
    try:
        return (await prediction.version_record(project, model, None)).name
    except MLEngineError:
        return None


def _ping(store: MetadataStore) -> None:
    with store.engine.connect() as connection:
        connection.execute(text("SELECT 1"))


async def readiness(request: Request) -> str | None:
    """None when the app serves: its lifespan started and the metadata database answers a
    trivial query; else why not."""
    state = request.app.state
    if not getattr(state, "ready", False):
        return "The server is starting or shutting down."
    try:
        await run_in_threadpool(_ping, state.store)
    except (MLEngineError, SQLAlchemyError, OSError) as error:
        return f"The metadata database does not answer: {error}"
    return None


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus metrics of the app (text format, or OpenMetrics when asked for)."""
    app_metrics: PredictionMetrics = request.app.state.metrics
    # rendered on the event loop: the loaded versions are only changed there
    body, content_type = app_metrics.exposition(request.headers.get("accept"))
    return Response(body, headers={"Content-Type": content_type})


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    """200 ``{"status": "ready"}`` when the server serves, else 503 with the reason."""
    reason = await readiness(request)
    if reason is not None:
        return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)
    return JSONResponse({"status": "ready"})
