"""The FastAPI application: ml v1 REST, health, and (later) prediction and the console."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

import mlengine
from mlengine.config import Settings
from mlengine.jobs import JobService, Scheduler
from mlengine.models import ModelService
from mlengine.prediction._heap import serving_collections, settle_heap
from mlengine.prediction._serving import PredictionService
from mlengine.server._auth import PUBLIC_PATHS, BearerToken
from mlengine.server._errors import JSONResponse, error_response, install_error_handlers
from mlengine.server._explain import router as explain_router
from mlengine.server._metrics import install_metrics
from mlengine.server._ml_v1_jobs import router as jobs_router
from mlengine.server._ml_v1_models import router as models_router
from mlengine.server._predict import PredictingApp
from mlengine.server._predict import router as predict_router
from mlengine.server._tfserving import router as tfserving_router
from mlengine.server._v2 import router as v2_router
from mlengine.server._worker_metrics import WORKER_METRICS_DIR_ENV, server_pid
from mlengine.store import ArtifactStore, RegistryStore, get_store

__all__ = ["create_app", "create_app_from_environment"]

logger = logging.getLogger("mlengine.server")


def create_app(
    settings: Settings | None = None,
    *,
    run_scheduler: bool = True,
    worker_metrics_dir: Path | None = None,
) -> FastAPI:
    """Build the API server for `settings` (resolved from the environment when None).

    With `run_scheduler`, the app also runs a `Scheduler`; it works only while it holds the
    database's scheduler lease, so any number of API processes may share one database.
    With `worker_metrics_dir` (one of several worker processes of a server, which all get the
    same directory), ``/metrics`` answers every worker's metrics merged.
    """
    settings = settings or Settings.load()

    @contextlib.asynccontextmanager
    async def lifespan(app: PredictingApp) -> AsyncIterator[None]:
        store = get_store(settings.database_url)
        app.state.store = store
        app.state.jobs = JobService(store, settings)
        app.state.artifacts = ArtifactStore(settings.artifact_root)
        models = ModelService(RegistryStore(store), settings)
        app.state.models = models
        prediction = PredictionService(models, settings)
        app.state.prediction = prediction
        app.prediction = prediction  # the predict fast path's plain attribute
        await run_in_threadpool(models.fail_interrupted)
        scheduler = Scheduler(store, settings) if run_scheduler else None
        app.state.scheduler = scheduler
        app.state.wake_scheduler = scheduler.wake if scheduler else (lambda: None)
        if scheduler is not None:
            scheduler.start()
        workers = publisher = None
        if worker_metrics_dir is not None and app.metrics is not None:
            workers = app.metrics.share_with_workers(worker_metrics_dir)
            workers.publish()
            publisher = asyncio.create_task(workers.publish_periodically())
        settle_heap()  # what start-up made lives as long as the server
        app.state.ready = True  # /readyz
        try:
            with serving_collections():  # fewer young collections under load
                yield
        finally:
            app.state.ready = False
            app.prediction = None
            await prediction.close()
            if scheduler is not None:
                scheduler.stop()
            if publisher is not None:
                publisher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await publisher
            if workers is not None:
                with contextlib.suppress(OSError):
                    workers.publish()  # the final counts, kept after this worker exits

    app = PredictingApp(
        api_token=settings.api_token,
        title="mlengine",
        version=mlengine.__version__,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    install_error_handlers(app)
    app.include_router(jobs_router)
    app.include_router(models_router)
    app.include_router(predict_router)
    app.include_router(explain_router)
    app.include_router(tfserving_router)
    app.include_router(v2_router)
    app.metrics = install_metrics(app)  # /metrics and /readyz

    if settings.api_token:
        token = BearerToken(settings.api_token)

        @app.middleware("http")
        async def authenticate(request: Request, call_next):  # type: ignore[no-untyped-def]
            public = request.url.path in PUBLIC_PATHS
            if not public and not token.accepts(request.scope["headers"]):
                return error_response(401, "Missing or wrong bearer token (MLENGINE_API_TOKEN).")
            response: Response = await call_next(request)
            return response

    @app.get("/healthz")
    async def healthz(request: Request) -> JSONResponse:
        scheduler = getattr(request.app.state, "scheduler", None)
        return JSONResponse(
            {
                "status": "ok",
                "version": mlengine.__version__,
                "pid": os.getpid(),
                "serverPid": server_pid(),
                "home": settings.home,
                "schedulerLeader": bool(scheduler and scheduler.is_leader),
            }
        )

    return app


def create_app_from_environment() -> FastAPI:
    """Factory for ``uvicorn --factory``: settings come from ``MLENGINE_*`` variables, the
    directory of a multi-worker server's metrics from `WORKER_METRICS_DIR_ENV`."""
    shared = os.environ.get(WORKER_METRICS_DIR_ENV)
    return create_app(Settings.load(), worker_metrics_dir=Path(shared) if shared else None)
