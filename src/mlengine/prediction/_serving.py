"""Online prediction: resolves a model or version name to a loaded predictor and answers
``{"instances": [...]}`` with ``{"predictions": [...]}`` through the version's micro-batcher.

Also runs the background part of version creation (copy, load, smoke prediction) and drains a
version's in-flight requests before it is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool

from mlengine.config import Settings
from mlengine.errors import (
    FailedPrecondition,
    InvalidArgument,
    MLEngineError,
    NotFound,
    PayloadTooLarge,
    Unavailable,
)
from mlengine.jobs._environment import TrainerEnvironments
from mlengine.jobs._service import now_utc
from mlengine.models import CodeUpdate, ModelService, batching_labels
from mlengine.prediction._explain import (
    explain_instances,
    integrated_gradients,
    read_explanation_metadata,
)
from mlengine.prediction._heap import settle_heap
from mlengine.prediction._isolated import IsolatedPredictor
from mlengine.prediction._loaded import LoadedVersions
from mlengine.prediction.predictors import (
    B64_FRAMEWORKS,
    PREPROCESSOR_FILE,
    PredictionError,
    Predictor,
    decode_b64,
    load_predictor,
)
from mlengine.store import OperationRecord, VersionRecord
from mlengine.store._artifacts import fetch_file

__all__ = ["PredictionService"]

logger = logging.getLogger("mlengine.prediction")

VersionKey = tuple[str, str, str]
_RESOLVE_TTL_S = 1.0
CLOSE_BUILDS_S = 5.0
"""How long `PredictionService.close` lets version builds still running finish, in all."""
_DEFAULT_PATHS = 50
"""numPaths / numIntegralSteps of an explanationConfig that gives none (AI Platform's default)."""
_GRADIENT_FRAMEWORKS = frozenset({"PYTORCH", "KERAS", "TENSORFLOW"})
"""Frameworks whose predictor answers ``input_gradients`` (integrated gradients)."""
_RELOAD_RETRY_S = 5.0
_LAST_USE_PRECISION = dt.timedelta(minutes=1)
"""How stale a version's ``lastUseTime`` may be: it is written at most once a minute."""
_SERVING_STATES = frozenset({"READY", "UPDATING"})
"""An UPDATING version serves its current code until the new code is verified."""


class PredictionService:
    """Loaded versions of every model, bounded by `settings.loaded_versions` (LRU).

    Other processes may change the versions (the other workers of ``server run --workers N``,
    other servers on the same database): a version name is resolved again once its cached
    resolution is `_RESOLVE_TTL_S` old, a loaded version is reloaded when its name now resolves
    to a version created later (deleted and created again elsewhere), and unloaded when it no
    longer resolves at all (deleted elsewhere).
    """

    def __init__(self, models: ModelService, settings: Settings) -> None:
        self.models = models
        self.settings = settings
        self._max_request_bytes = settings.max_request_bytes  # read on every request
        self.loaded = LoadedVersions(
            self._load, capacity=settings.loaded_versions, batcher_options=self._batcher_options
        )
        self._resolved: dict[tuple[str, str, str | None], tuple[float, VersionRecord]] = {}
        self._loaded_revision: dict[VersionKey, dt.datetime] = {}  # of the version each load read
        self._resolving: dict[tuple[str, str, str | None], asyncio.Future[VersionRecord]] = {}
        self._reloading: dict[VersionKey, _Reload] = {}
        self._building: set[asyncio.Task[None]] = set()

    # -- loading --------------------------------------------------------------------------
    def _load(self, key: Any) -> Predictor:
        project, model, version = key
        record = self.models.registry.get_version(project, model, version)
        predictor = self._open(record, self.models.local_dir(record))
        self._loaded_revision[key] = record.revision_time or record.create_time
        settle_heap()  # the model's objects are long-lived: keep collections off them
        return predictor

    def _open(self, record: VersionRecord, local_dir: Path) -> Predictor:
        """The version's predictor: in this process for the built-in frameworks, in a worker
        with the version's packages installed when it brings code (`predictionClass`,
        `packageUris`)."""
        spec = record.spec
        if not (spec.get("predictionClass") or spec.get("packageUris")):
            return load_predictor(local_dir, spec.get("framework"))
        packages = self._fetch_packages(record)
        python = TrainerEnvironments(self.settings.home_path / "envs").ensure(packages)
        return IsolatedPredictor.start(
            str(python), local_dir, prediction_class=spec.get("predictionClass"),
            framework=spec.get("framework"),
        )  # fmt: skip

    def _fetch_packages(self, record: VersionRecord) -> list[Path]:
        directory = (
            self.settings.home_path / "cache" / "packages" / record.project / record.model
            / f"{record.name}-{_millis(record.revision_time or record.create_time)}"
        )  # fmt: skip
        paths = []
        for position, uri in enumerate(record.spec.get("packageUris") or []):
            name = uri.rstrip("/").rsplit("/", 1)[-1]
            target = directory / f"{position:03d}" / name
            paths.append(target if target.exists() else fetch_file(uri, target))
        return paths

    def _batching(self, record: VersionRecord) -> dict[str, Any]:
        """The version's batch size and wait: its labels, else the server's settings."""
        labels = batching_labels(record.spec.get("labels") or {})
        size = labels.get("max_batch_size", self.settings.max_batch_size)
        wait_ms = labels.get("max_batch_wait_ms", self.settings.max_batch_wait_ms)
        return {"max_batch_size": int(size), "max_wait_s": float(wait_ms) / 1e3}

    def _batcher_options(self, key: Any) -> Mapping[str, Any]:
        record = self.models.registry.get_version(*key)
        options = self._batching(record)
        if record.spec.get("predictionClass") or record.spec.get("packageUris"):
            options["inline_below_s"] = 0.0  # a worker process: its calls wait on a pipe
        return options

    def verify(self, record: VersionRecord, local_dir: Path) -> str:
        """Load a new version and answer a smoke prediction; return its framework."""
        predictor = self._open(record, local_dir)
        try:
            examples = predictor.example_instances()
            if examples:
                outputs = predictor.predict(list(examples))
                if len(outputs) != len(examples):
                    raise InvalidArgument(
                        f"The smoke prediction returned {len(outputs)} outputs for "
                        f"{len(examples)} instances."
                    )
            return predictor.framework
        finally:
            predictor.close()

    # -- versions -------------------------------------------------------------------------
    async def create_version(
        self, project: str, model: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Record the version and start building it in the background; return the
        Operation."""
        operation, record, op = await run_in_threadpool(
            self.models.create_version, project, model, body
        )
        self._in_background(self._build(record, op))
        return operation

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a build or code update on; `close` waits for it."""
        task = asyncio.create_task(work)
        self._building.add(task)
        task.add_done_callback(self._building.discard)

    async def _build(self, record: VersionRecord, operation: OperationRecord) -> None:
        try:
            await run_in_threadpool(self.models.build, record, operation, self.verify)
        except Exception:
            logger.exception("building version %s/%s failed", record.model, record.name)
        self.forget(record.project, record.model)

    async def patch_version(
        self,
        project: str,
        model: str,
        version: str,
        body: Mapping[str, Any],
        update_mask: str | None,
    ) -> dict[str, Any]:
        """Update the masked fields of a version (`ModelService.patch_version`); return the
        Operation. A new ``predictionClass``/``packageUris`` is verified in the background
        while the version goes on serving its current code; once verified, every process
        serving the version reloads it."""
        operation, update = await run_in_threadpool(
            self.models.patch_version, project, model, version, body, update_mask
        )
        self.forget(project, model)
        if update is not None:
            self._in_background(self._update_code(update))
        return operation

    async def _update_code(self, update: CodeUpdate) -> None:
        """Verify and commit the new code; where this process serves the version, load the
        new revision (the old one answering meanwhile) before the operation ends, so that
        a client that waited for it gets the new code from this server."""
        record = update.candidate
        key = (record.project, record.model, record.name)
        try:
            if await run_in_threadpool(self.models.update_code, update, self.verify):
                self.forget(record.project, record.model)
                reloading = self._reload(key) if self.loaded.peek(key) is not None else None
                if reloading is not None:
                    await asyncio.wait({reloading})  # its failure is logged by `_reloaded`
                await run_in_threadpool(self.models.finish_code_update, update)
        except Exception:
            logger.exception("updating version %s/%s failed", record.model, record.name)
        self.forget(record.project, record.model)

    async def delete_version(self, project: str, model: str, version: str) -> dict[str, Any]:
        """Mark the version DELETING (refused if it is busy, or changed since it was checked),
        drain its in-flight requests, then delete it."""
        record = await run_in_threadpool(self.models.check_deletable, project, model, version)
        await run_in_threadpool(self.models.begin_delete, record)
        self.forget(project, model)
        await self.loaded.evict((project, model, version))
        return await run_in_threadpool(self.models.delete_version, record)

    def forget(self, project: str, model: str) -> None:
        """Drop cached name resolutions of a model (its default or versions changed)."""
        for key in [k for k in self._resolved if k[:2] == (project, model)]:
            self._resolved.pop(key, None)

    async def close(self) -> None:
        """Let background builds finish (for up to `CLOSE_BUILDS_S` in all: the next server
        fails those still running), then drain every loaded version."""
        if self._building:
            await asyncio.wait(set(self._building), timeout=CLOSE_BUILDS_S)
        await self.loaded.close()

    # -- prediction -----------------------------------------------------------------------
    def _cached(self, project: str, model: str, version: str | None) -> VersionRecord | None:
        """The version a name resolved to less than `_RESOLVE_TTL_S` ago, else None."""
        cached = self._resolved.get((project, model, version))
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        return None

    async def _resolve(self, project: str, model: str, version: str | None) -> VersionRecord:
        cached = self._cached(project, model, version)
        if cached is not None:
            return cached
        key = (project, model, version)
        # One lookup per key at a time: when the cached answer expires under load, the
        # requests that arrive meanwhile wait for the same lookup instead of each running one.
        pending = self._resolving.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._lookup_and_cache(project, model, version))
            self._resolving[key] = pending
            pending.add_done_callback(lambda done: self._lookup_done(key, done))
        return await asyncio.shield(pending)

    async def _lookup_and_cache(
        self, project: str, model: str, version: str | None
    ) -> VersionRecord:
        try:
            record = await run_in_threadpool(self._lookup, project, model, version)
        except NotFound:
            if version is not None:  # deleted, maybe by another process: unload it here too
                await self.loaded.evict((project, model, version))
            raise
        self._resolved[(project, model, version)] = (time.monotonic() + _RESOLVE_TTL_S, record)
        key = (project, model, record.name)
        entry = self.loaded.peek(key)
        if entry is not None and not self._outdated(key, record):
            # labels changed since it loaded (here or by another process) take effect
            with contextlib.suppress(MLEngineError):  # refused labels: its batching stays
                entry.batcher.configure(**self._batching(record))
        return record

    def _lookup_done(
        self, key: tuple[str, str, str | None], done: asyncio.Future[VersionRecord]
    ) -> None:
        self._resolving.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved here: waiters may all have gone

    def _lookup(self, project: str, model: str, version: str | None) -> VersionRecord:
        registry = self.models.registry
        if version is None:
            default = registry.get_model(project, model).default_version
            if default is None:
                raise FailedPrecondition(
                    f"Model {model} has no default version: create a version first."
                )
            version = default
        record = registry.get_version(project, model, version)
        if record.state not in _SERVING_STATES:
            raise FailedPrecondition(
                f"Version {version} of model {model} is {record.state}, not READY."
                + (f" {record.error_message}" if record.error_message else "")
            )
        now = now_utc()  # a name is looked up again only while requests keep coming
        if record.last_use_time is None or now - record.last_use_time > _LAST_USE_PRECISION:
            registry.update_version(project, model, version, last_use_time=now)
        return record

    async def predict(
        self, project: str, model: str, version: str | None, raw: bytes
    ) -> tuple[str, dict[str, Any]]:
        """Answer one ml v1 predict request body: the name of the version that answered (the
        model's default when `version` is None) and ``{"predictions": [...]}``.

        Raises:
            PayloadTooLarge: the body exceeds `max_request_bytes`.
            InvalidArgument: a malformed body or instances the model cannot take (the message
                names the instance).
            NotFound: no such model or version.
            FailedPrecondition: the version is not READY or the model has no default.
        """
        instances, body = _parse_request(raw, self._max_request_bytes)
        # the common case (a cached name, a loaded version) awaits one coroutine: the batch
        record = self._cached(project, model, version)
        if record is None:
            record = await self._resolve(project, model, version)
        predictions = await self._predict_with(record, instances, body)
        return record.name, {"predictions": predictions}

    async def explain(
        self, project: str, model: str, version: str | None, raw: bytes
    ) -> tuple[str, dict[str, Any]]:
        """Answer one ml v1 explain request body with ``{"explanations": [...]}`` (sampled
        Shapley attributions, `explain_instances`) and the name of the version that answered;
        the version needs an ``explanationConfig``.

        Raises:
            PayloadTooLarge, InvalidArgument, NotFound: as `predict`.
            FailedPrecondition: the version has no explanationConfig, or one with a method
                mlengine does not compute.
        """
        instances, options = _parse_request(raw, self._max_request_bytes)
        record = await self._resolve(project, model, version)
        config = record.spec.get("explanationConfig") or {}
        if not config:
            raise FailedPrecondition(
                f"Version {record.name} of model {model} has no explanationConfig; create one "
                "with --explanation-method sampled-shapley to explain its predictions."
            )
        method = next(iter(config))
        metadata, preprocessed = await run_in_threadpool(self._explanation_metadata, record)
        framework = record.spec.get("framework")
        if method == "integratedGradientsAttribution" and (
            framework not in _GRADIENT_FRAMEWORKS or preprocessed
        ):
            raise FailedPrecondition(
                f"Version {record.name} asks for integratedGradientsAttribution, which needs "
                "the gradients of a PyTorch, Keras or TensorFlow model that takes the instances "
                f"as they are; this version is {framework or 'a custom prediction routine'}"
                + (" with a preprocessor.joblib" if preprocessed else "")
                + ": use --explanation-method sampled-shapley."
            )
        if method == "xraiAttribution":
            raise FailedPrecondition(
                f"Version {record.name} asks for xraiAttribution (image regions), which mlengine "
                "does not compute: use integrated-gradients or sampled-shapley."
            )

        def predict(rows: list[Any], row_options: Mapping[str, Any]) -> Awaitable[list[Any]]:
            return self._predict_with(record, rows, row_options)

        if method == "integratedGradientsAttribution":
            steps = int(config[method].get("numIntegralSteps") or _DEFAULT_PATHS)
            explanations = await integrated_gradients(instances, predict, metadata, steps, options)
        else:
            paths = int(config[method].get("numPaths") or _DEFAULT_PATHS)
            explanations = await explain_instances(
                instances, predict, metadata, paths, options,
                probabilities=framework not in _GRADIENT_FRAMEWORKS,  # theirs do not take it
            )  # fmt: skip
        return record.name, {"explanations": explanations}

    def _explanation_metadata(self, record: VersionRecord) -> tuple[dict[str, Any], bool]:
        """The version's explanation metadata, and whether it has a preprocessor."""
        directory = self.models.local_dir(record)
        return read_explanation_metadata(directory), (directory / PREPROCESSOR_FILE).is_file()

    async def predict_instances(
        self,
        project: str,
        model: str,
        version: str | None,
        instances: list[Any],
        options: Mapping[str, Any] | None = None,
    ) -> list[Any]:
        """Predict already-parsed `instances` with the version (None: the model's default);
        `options` are the extra request fields (``probabilities``, ``signature_name``). The
        entry point of every protocol (ml v1, TF Serving, Open Inference Protocol).

        Raises:
            InvalidArgument: instances the model cannot take (the message names the instance).
            NotFound: no such model or version.
            FailedPrecondition: the version is not READY or the model has no default.
        """
        record = await self._resolve(project, model, version)
        return await self._predict_with(record, instances, options)

    def _predict_with(
        self, record: VersionRecord, instances: list[Any], options: Mapping[str, Any] | None
    ) -> Awaitable[list[Any]]:
        """The predictions of `instances` by the version of `record`: its batcher's coroutine
        when the version is loaded (no coroutine of this method's own in between). The batcher
        keeps its own copy of `options`."""
        framework = str(record.spec.get("framework") or "")
        if options:
            _check_options(options)
        if framework in B64_FRAMEWORKS:
            instances = decode_b64(instances)
        elif (
            options
            and options.get("input_gradients") is not None
            and framework not in _GRADIENT_FRAMEWORKS
        ):
            raise PredictionError(
                "The 'input_gradients' field of the request is answered by PyTorch, Keras and "
                f"TensorFlow versions only; version {record.name} is {framework}."
            )
        if not instances:
            return _no_predictions()
        key = (record.project, record.model, record.name)
        entry = self.loaded.loaded(key)
        if entry is None:
            return self._load_and_predict(record, instances, options)
        loaded = self._loaded_revision.get(key)  # `_outdated`, inline on the hot path
        if loaded is not None and loaded < (record.revision_time or record.create_time):
            self._reload(key)  # the loaded revision answers until the new one is ready
        return entry.predict(instances, options)

    def _outdated(self, key: VersionKey, record: VersionRecord) -> bool:
        """Whether the version loaded as `key` is an older revision than `record`: its code
        was updated, or the name was deleted and created again (by another process, as this
        one evicts its own)."""
        loaded = self._loaded_revision.get(key)
        revision = record.revision_time or record.create_time
        return loaded is not None and loaded < revision

    def _reload(self, key: VersionKey) -> asyncio.Future[Any] | None:
        """Load the version's current revision beside the loaded one, which answers until the
        new one replaces it (`LoadedVersions.reload`); the load's future, or None when the
        server is shutting down. A failed reload is tried again `_RELOAD_RETRY_S` later at the
        soonest, not on every request."""
        pending = self._reloading.get(key)
        if pending is not None and (
            not pending.future.done() or time.monotonic() < pending.retry_at
        ):
            return pending.future
        logger.info("reloading %s: its code changed or it was created again", "/".join(key))
        try:
            future = self.loaded.reload(key)
        except Unavailable:
            return None
        future.add_done_callback(lambda done: self._reloaded(key, done))
        self._reloading[key] = _Reload(future, time.monotonic() + _RELOAD_RETRY_S)
        return future

    def _reloaded(self, key: VersionKey, done: asyncio.Future[Any]) -> None:
        if done.cancelled():
            return
        error = done.exception()
        if error is None:
            self._reloading.pop(key, None)
        else:
            logger.warning("reloading %s failed; it keeps answering: %s", "/".join(key), error)

    async def _load_and_predict(
        self, record: VersionRecord, instances: list[Any], options: Mapping[str, Any] | None
    ) -> list[Any]:
        key = (record.project, record.model, record.name)
        entry = await self.loaded.get(key)
        if self._outdated(key, record):  # a load that read the registry before a change
            self._reload(key)
        return await entry.predict(instances, options)

    async def version_record(self, project: str, model: str, version: str | None) -> VersionRecord:
        """The READY version a request would use (None: the model's default).

        Raises:
            NotFound: no such model or version.
            FailedPrecondition: not READY, or no default version.
        """
        return await self._resolve(project, model, version)


@dataclasses.dataclass
class _Reload:
    future: asyncio.Future[Any]
    retry_at: float
    """After a failed reload, when the next may start (monotonic seconds)."""


def _check_options(options: Mapping[str, Any]) -> None:
    """Refuse request fields no predictor could take as they are.

    Raises:
        PredictionError: a field ``self`` (it would name predict's own first argument), or a
            ``probabilities`` that is not true, false or null (``"false"`` would read as true).
    """
    if "self" in options:
        raise PredictionError(
            "Prediction failed: the request field 'self' cannot be passed to the "
            "predictor's predict(instances, **kwargs); rename it."
        )
    wanted = options.get("probabilities")
    if wanted is not None and not isinstance(wanted, bool):
        raise PredictionError(
            f"Prediction failed: the 'probabilities' field must be true or false; got {wanted!r}."
        )


def _parse_request(raw: bytes, max_bytes: int) -> tuple[list[Any], dict[str, Any]]:
    """The instances of an ml v1 predict or explain body, and its other fields.

    Raises:
        PayloadTooLarge: over `max_bytes`.
        InvalidArgument: not a JSON object with an ``instances`` list.
    """
    if len(raw) > max_bytes:
        raise PayloadTooLarge(
            f"The request body has {len(raw)} bytes; the limit is {max_bytes} (max_request_bytes)."
        )
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        if raw.strip():
            raise InvalidArgument(f"The request body is not valid JSON: {error}.") from None
        body = None  # empty: answered below as a body that is not an object
    if not isinstance(body, dict):
        raise InvalidArgument('The request body must be a JSON object {"instances": [...]}.')
    instances = body.pop("instances", None)
    if instances is None:
        raise InvalidArgument("The request has no 'instances' field.")
    if not isinstance(instances, list):
        raise InvalidArgument("The 'instances' field must be a list.")
    return instances, body


def _millis(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


async def _no_predictions() -> list[Any]:
    return []
