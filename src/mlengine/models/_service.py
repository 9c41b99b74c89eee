"""Models, versions and operations behind the REST API.

Creating a version returns an Operation at once; `VersionService.build` (run in the
background by the server) copies the origin into the artifact store, loads the model and
answers a smoke prediction through `verify`, then marks the version READY, or FAILED with
the loader's error, and finishes the operation.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import fsspec

from mlengine._processes import process_running
from mlengine.config import Settings
from mlengine.errors import (
    FailedPrecondition,
    InvalidArgument,
    MLEngineError,
    NotFound,
    invalid_field,
)
from mlengine.jobs._packaging import is_package_archive
from mlengine.jobs._resource import validate_labels
from mlengine.jobs._service import new_etag, now_utc, validate_project
from mlengine.models._artifacts import copy_version_files, is_local, local_copy, local_path
from mlengine.models._resource import (
    MODEL_FIELDS,
    VERSION_FIELDS,
    VERSION_OBJECT_FIELDS,
    batching_labels,
    default_version_name,
    json_name,
    model_resource,
    operation_resource,
    proto_body,
    validate_model,
    validate_version,
    validate_version_code,
    validate_version_object,
    version_resource,
)
from mlengine.store import (
    FilterTerm,
    ModelRecord,
    OperationRecord,
    RegistryStore,
    VersionRecord,
    parse_filter,
)

__all__ = ["CodeUpdate", "ModelService", "Verifier"]

Verifier = Callable[[VersionRecord, Path], str]
"""Loads a version from its local directory, answers a smoke prediction and returns the
framework it detected; raises an MLEngineError (the version's errorMessage) when it cannot."""


@dataclasses.dataclass(frozen=True)
class CodeUpdate:
    """A pending update of a version's code: the version as it will be (`candidate`, with its
    new `revision_time`) and the UPDATE_VERSION operation that reports it."""

    candidate: VersionRecord
    operation: OperationRecord


_MODEL_MASK = frozenset({"description", "labels", "defaultVersion.name"})
_VERSION_MASK = frozenset(
    {
        "description",
        "labels",
        "requestLoggingConfig",
        "autoScaling.minNodes",
        "autoScaling.maxNodes",
        "manualScaling.nodes",
        "predictionClass",
        "packageUris",
    }
)
_CODE_FIELDS = frozenset({"predictionClass", "packageUris"})
_ABORTED = 10
"""google.rpc ABORTED: work cut off by the server stopping, or by a concurrent change."""
"""Version fields that change its code: updating them reloads it, after a smoke test."""
_MODEL_FILTER_FIELDS = frozenset({"name", "description", "labels"})
_VERSION_FILTER_FIELDS = frozenset(
    {"name", "state", "framework", "description", "deploymentUri", "runtimeVersion",
     "pythonVersion", "machineType", "predictionClass", "createTime", "labels"}
)  # fmt: skip
_VERSION_TYPE = "type.googleapis.com/google.cloud.ml.v1.Version"
_MODEL_TYPE = "type.googleapis.com/google.cloud.ml.v1.Model"
"""The ``@type`` of an Operation's ``response`` (google.protobuf.Any)."""
_OPERATION_FILTER_FIELDS = frozenset(
    {"name", "done", "operationType", "modelName", "metadata.operationType",
     "metadata.modelName"}
)  # fmt: skip
_FILTER_BATCH = 500
_CANCELLED = "Cancelled: the version's creation was cancelled (operations cancel)."
_BUSY_STATES = frozenset({"CREATING", "DELETING", "UPDATING"})


def _page_size(value: int | None) -> int:
    size = 20 if value in (None, 0) else value
    if not isinstance(size, int) or size < 1:
        raise InvalidArgument(f"The 'pageSize' parameter must be an integer >= 1. Got {value!r}.")
    return min(size, 100)


class ModelService:
    """Models, their versions and the operations that change them."""

    def __init__(self, registry: RegistryStore, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings

    # -- models ---------------------------------------------------------------------------
    def create_model(self, project: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a model (synchronous, as in ml v1).

        Raises:
            InvalidArgument: a bad body.
            AlreadyExists: the name is taken.
        """
        validate_project(project)
        fields = validate_model(body)
        record = ModelRecord(project=project, create_time=now_utc(), etag=new_etag(), **fields)
        self.registry.insert_model(record)
        return model_resource(record, None)

    def get_model(self, project: str, name: str) -> dict[str, Any]:
        """The model with its default version embedded.

        Raises:
            InvalidArgument: a bad project id.
            NotFound: no such model.
        """
        validate_project(project)
        record = self.registry.get_model(project, name)
        return model_resource(record, self._default(record))

    def _default(self, record: ModelRecord) -> VersionRecord | None:
        if record.default_version is None:
            return None
        try:
            return self.registry.get_version(record.project, record.name, record.default_version)
        except NotFound:
            return None

    def list_models(
        self,
        project: str,
        page_size: int | None = None,
        page_token: str | None = None,
        filter_text: str | None = None,
    ) -> dict[str, Any]:
        """``{"models": [...], "nextPageToken"}`` or ``{}``, by name; `filter_text` is ml v1's
        server-side filter (``name:census* AND labels.team:a``; fields ``name``,
        ``description``, ``labels.KEY``).

        Raises:
            InvalidArgument: a bad project id, page size, page token or filter.
        """
        validate_project(project)
        terms = parse_filter(filter_text, _MODEL_FILTER_FIELDS)
        models, token = self._filtered_page(
            lambda size, after: self.registry.list_models(project, size, after),
            lambda record: model_resource(record, self._default(record)),
            terms, _page_size(page_size), page_token,
        )  # fmt: skip
        result: dict[str, Any] = {}
        if models:
            result["models"] = models
        if token:
            result["nextPageToken"] = token
        return result

    def _filtered_page(
        self,
        fetch: Callable[[int, str | None], tuple[Sequence[Any], str | None]],
        render: Callable[[Any], dict[str, Any]],
        terms: Sequence[FilterTerm],
        page_size: int,
        page_token: str | None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of rendered resources that match `terms`, and the next page's token:
        `fetch(size, token)` pages through the records by name; without terms it is one
        fetch, with terms batches are read until the page is full or the records end."""
        if not terms:
            records, token = fetch(page_size, page_token)
            return [render(record) for record in records], token
        found: list[dict[str, Any]] = []
        after = page_token
        while len(found) <= page_size:
            records, after = fetch(_FILTER_BATCH, after)
            found += [res for res in map(render, records) if _matches(res, terms)]
            if after is None:
                break
        if len(found) <= page_size:
            return found, None
        page = found[:page_size]
        return page, self.registry.page_token_after(page[-1]["name"].rsplit("/", 1)[-1])

    def delete_model(self, project: str, name: str) -> dict[str, Any]:
        """Delete a model without versions; returns a finished DELETE_MODEL operation.

        Raises:
            InvalidArgument: a bad project id.
            NotFound: no such model.
            FailedPrecondition: it still has versions.
        """
        validate_project(project)
        self.registry.delete_model(project, name)
        return self._finished_operation(project, "DELETE_MODEL", name, None, response={})

    def patch_model(
        self, project: str, name: str, body: Mapping[str, Any], update_mask: str | None
    ) -> dict[str, Any]:
        """Update description, labels or the default version; returns a finished operation.

        Nothing changes unless every masked field is valid.

        Raises:
            InvalidArgument: an unsupported mask path or bad values (the message names the
                field).
            NotFound: no such model or default version.
            FailedPrecondition: the new default version is not READY, or the body's ``etag``
                is not the model's (it changed since it was read).
        """
        validate_project(project)
        paths = _mask(update_mask, _MODEL_MASK, "Model")
        body = proto_body(body, MODEL_FIELDS, "Model")
        _check_etag(body, self.registry.get_model(project, name).etag, f"model {name}")
        changes: dict[str, Any] = {"etag": new_etag()}
        if "description" in paths:
            changes["description"] = _description(body, "Model")
        if "labels" in paths:
            changes["labels"] = validate_labels(body.get("labels"), "Model")
        if "defaultVersion.name" in paths:
            version = default_version_name(body, project, name)
            self._require_ready(project, name, version)
            changes["default_version"] = version
        self.registry.update_model(project, name, **changes)
        return self._finished_operation(
            project,
            "UPDATE_MODEL",
            name,
            None,
            response={"@type": _MODEL_TYPE, **self.get_model(project, name)},
        )

    # -- versions -------------------------------------------------------------------------
    def create_version(
        self, project: str, model: str, body: Mapping[str, Any]
    ) -> tuple[dict[str, Any], VersionRecord, OperationRecord]:
        """Record a CREATING version and its CREATE_VERSION operation; the caller runs
        `build` in the background.

        Raises:
            InvalidArgument: a bad body or project id, or a local deploymentUri or package
                that does not exist.
            NotFound: no such model.
            AlreadyExists: the version name is taken.
        """
        validate_project(project)
        spec = validate_version(body)
        _check_local_files(spec)
        name = spec.pop("name")
        now = now_utc()
        record = VersionRecord(
            project=project, model=model, name=name, state="CREATING", spec=spec,
            create_time=now, etag=new_etag(), revision_time=now,
        )  # fmt: skip
        operation = OperationRecord(
            project=project,
            operation_id=_operation_id("create", f"{model}_{name}", now),
            operation_type="CREATE_VERSION",
            model=model,
            version=name,
            create_time=now,
            start_time=now,
            snapshot=version_resource(record, is_default=False),
            owner=f"{socket.gethostname()}:{os.getpid()}",
        )
        self.registry.insert_version(record, operation)
        return operation_resource(operation), record, operation

    def build(self, record: VersionRecord, operation: OperationRecord, verify: Verifier) -> None:
        """Copy, load and smoke-test a CREATING version; end it READY or FAILED."""
        destination = self.settings.artifact_root.rstrip("/") + (
            f"/models/{record.project}/{record.model}/{record.name}-{int(time.time() * 1000)}"
        )
        local: Path | None = None
        try:
            artifact_uri = copy_version_files(record.spec["deploymentUri"], destination)
            if not self.registry.update_version(
                record.project, record.model, record.name, from_states={"CREATING"},
                artifact_uri=artifact_uri,
            ):  # fmt: skip
                _remove(artifact_uri)  # cancelled meanwhile: no version holds the copy
                return
            local = self.local_dir(record, artifact_uri)
            framework = verify(record, local)
        except MLEngineError as error:
            self._fail(record, operation, _user_paths(str(error), local, record))
            return
        except Exception as error:  # a loader's own exception type: its message is the reason
            message = f"{type(error).__name__}: {error}"
            self._fail(record, operation, _user_paths(message, local, record))
            return
        spec = _with_framework(record.spec, framework)
        if not self.registry.update_version(
            record.project, record.model, record.name, from_states={"CREATING"},
            state="READY", spec=spec, etag=new_etag(),
        ):  # fmt: skip
            return  # cancelled meanwhile: it stays FAILED
        self.registry.set_default_if_none(record.project, record.model, record.name)
        self.registry.finish_operation(
            record.project,
            operation.operation_id,
            end_time=now_utc(),
            response={
                "@type": _VERSION_TYPE,
                **self.get_version(record.project, record.model, record.name),
            },
        )

    def _fail(
        self, record: VersionRecord, operation: OperationRecord, message: str, code: int = 3
    ) -> None:
        """End a CREATING version FAILED and its operation with `message` (`code`: google.rpc
        codes, INVALID_ARGUMENT for what the files or code caused)."""
        self.registry.update_version(
            record.project, record.model, record.name, from_states={"CREATING"},
            state="FAILED", error_message=message,
        )  # fmt: skip
        self.registry.finish_operation(
            record.project,
            operation.operation_id,
            end_time=now_utc(),
            error={"code": code, "message": message, "details": []},
        )

    def local_dir(self, record: VersionRecord, artifact_uri: str | None = None) -> Path:
        """A local directory with the version's files (downloaded when the store is remote)."""
        uri = artifact_uri or record.artifact_uri
        if not uri:
            raise FailedPrecondition(f"Version {record.name} has no files yet.")
        cache = self.settings.home_path / "cache" / "models" / record.project / record.model
        return local_copy(uri, cache / f"{record.name}-{record.create_time.timestamp():.0f}")

    def get_version(self, project: str, model: str, name: str) -> dict[str, Any]:
        """The version resource.

        Raises:
            InvalidArgument: a bad project id.
            NotFound: no such model or version.
        """
        validate_project(project)
        record = self._version(project, model, name)
        default = self.registry.get_model(project, model).default_version
        return version_resource(record, is_default=default == name)

    def _version(self, project: str, model: str, name: str) -> VersionRecord:
        """The stored version; NotFound names the model when that is what is missing."""
        try:
            return self.registry.get_version(project, model, name)
        except NotFound:
            self.registry.get_model(project, model)
            raise

    def list_versions(
        self,
        project: str,
        model: str,
        page_size: int | None = None,
        page_token: str | None = None,
        filter_text: str | None = None,
    ) -> dict[str, Any]:
        """``{"versions": [...], "nextPageToken"}`` or ``{}``, by name; `filter_text` is ml
        v1's server-side filter (``state:READY AND framework:SCIKIT_LEARN``; fields ``name``,
        ``state``, ``framework``, ``description``, ``deploymentUri``, ``runtimeVersion``,
        ``pythonVersion``, ``machineType``, ``predictionClass``, ``createTime``,
        ``labels.KEY``).

        Raises:
            InvalidArgument: a bad project id, page size, page token or filter.
            NotFound: no such model.
        """
        validate_project(project)
        terms = parse_filter(filter_text, _VERSION_FILTER_FIELDS)
        default = self.registry.get_model(project, model).default_version
        versions, token = self._filtered_page(
            lambda size, after: self.registry.list_versions(project, model, size, after),
            lambda record: version_resource(record, record.name == default),
            terms, _page_size(page_size), page_token,
        )  # fmt: skip
        result: dict[str, Any] = {}
        if versions:
            result["versions"] = versions
        if token:
            result["nextPageToken"] = token
        return result

    def set_default(self, project: str, model: str, name: str) -> dict[str, Any]:
        """Make a READY version the model's default.

        Raises:
            InvalidArgument: a bad project id.
            NotFound: no such model or version.
            FailedPrecondition: the version is not READY.
        """
        validate_project(project)
        self._require_ready(project, model, name)
        self.registry.update_model(project, model, default_version=name, etag=new_etag())
        return self.get_version(project, model, name)

    def _require_ready(self, project: str, model: str, name: str) -> None:
        record = self._version(project, model, name)
        if record.state != "READY":
            raise FailedPrecondition(
                f"Version {name} is {record.state}; only a READY version can be the default."
            )

    def check_deletable(self, project: str, model: str, name: str) -> VersionRecord:
        """The version, when it may be deleted now.

        Raises:
            InvalidArgument: a bad project id.
            NotFound: no such model or version.
            FailedPrecondition: it is still being created or deleted, or it is the default
                version while other versions exist.
        """
        validate_project(project)
        record = self._version(project, model, name)
        if record.state in _BUSY_STATES:
            raise FailedPrecondition(f"Version {name} is {record.state}; try again when it ends.")
        default = self.registry.get_model(project, model).default_version
        if default == name:
            versions, _ = self.registry.list_versions(project, model, 2)
            if len(versions) > 1:
                raise FailedPrecondition(
                    f"Version {name} is the default version of model {model}; set another "
                    "default before deleting it, or delete the other versions first."
                )
        return record

    def begin_delete(self, record: VersionRecord) -> None:
        """Mark a version that `check_deletable` gave DELETING, unless it changed state
        meanwhile (a code update that began since, say).

        Raises:
            FailedPrecondition: it is no longer in the state it was checked in.
            NotFound: it was deleted meanwhile.
        """
        if not self.registry.update_version(
            record.project, record.model, record.name, from_states={record.state},
            state="DELETING",
        ):  # fmt: skip
            raise FailedPrecondition(
                f"Version {record.name} changed state meanwhile; try again when it ends."
            )

    def delete_version(self, record: VersionRecord) -> dict[str, Any]:
        """Delete a version that `begin_delete` marked (the caller has drained its in-flight
        requests); returns a finished DELETE_VERSION operation."""
        snapshot = version_resource(record, is_default=False)
        self.registry.delete_version(record.project, record.model, record.name)
        if record.artifact_uri:
            _remove(record.artifact_uri)
        return self._finished_operation(
            record.project, "DELETE_VERSION", record.model, record.name, response={},
            snapshot=snapshot,
        )  # fmt: skip

    def patch_version(
        self, project: str, model: str, name: str, body: Mapping[str, Any], update_mask: str | None
    ) -> tuple[dict[str, Any], CodeUpdate | None]:
        """Update the masked fields of a version. Description, labels, scaling and request
        logging change at once: a finished UPDATE_VERSION operation and None. A mask with
        ``predictionClass`` or ``packageUris`` changes the version's code: it goes UPDATING
        (still serving its current code), and the caller runs `update_code` with the returned
        `CodeUpdate` in the background; the operation ends when the new code loaded and answered
        a smoke prediction (or failed, leaving the version as it was).

        A masked field absent from the body is reset to its default. Nothing changes unless
        every masked field is valid.

        Raises:
            InvalidArgument: an unsupported mask path or bad values (the message names the
                field), or a local package that does not exist.
            NotFound: no such model or version.
            FailedPrecondition: the version is being created, updated or deleted, a code
                update of a version that is not READY, or the body's ``etag`` is not the
                version's (it changed since it was read).
        """
        validate_project(project)
        paths = _mask(update_mask, _VERSION_MASK, "Version")
        body = proto_body(body, VERSION_FIELDS, "Version")
        record = self._version(project, model, name)
        _check_etag(body, record.etag, f"version {name}")
        if record.state in _BUSY_STATES:
            raise FailedPrecondition(f"Version {name} is {record.state}; try again when it ends.")
        spec = dict(record.spec)
        for path in sorted(paths):
            top, _, leaf = path.partition(".")
            if top == "labels":
                spec["labels"] = validate_labels(body.get("labels"), "Version")
                batching_labels(spec["labels"])
            elif top == "description":
                spec["description"] = _description(body, "Version")
            elif top in _CODE_FIELDS:
                spec.pop(top, None)
                spec.update(validate_version_code({top: body.get(top)}))
            else:
                given = body.get(top)
                if leaf:
                    if given is not None and not isinstance(given, Mapping):
                        raise invalid_field(top, "Version", "an object", given)
                    given = proto_body(given or {}, VERSION_OBJECT_FIELDS[top], "Version", top)
                    merged = dict(spec.get(top) or {})
                    merged.pop(leaf, None)
                    value = given.get(leaf)
                    if value is not None:
                        merged[leaf] = value
                    given = merged
                spec[top] = validate_version_object(top, given)
                if spec[top] is None:
                    del spec[top]
        if spec.get("autoScaling") and spec.get("manualScaling"):
            raise InvalidArgument(
                "The 'autoScaling' and 'manualScaling' fields of Version are exclusive; "
                f"this update would give version {name} both."
            )
        if paths & _CODE_FIELDS:
            return self._begin_code_update(record, spec)
        changed = self.registry.update_version(
            project, model, name, from_states={record.state}, spec=spec, etag=new_etag()
        )
        if not changed:
            raise FailedPrecondition(f"Version {name} changed state meanwhile; try again.")
        operation = self._finished_operation(
            project, "UPDATE_VERSION", model, name,
            response={"@type": _VERSION_TYPE, **self.get_version(project, model, name)},
        )  # fmt: skip
        return operation, None

    def _begin_code_update(
        self, record: VersionRecord, spec: dict[str, Any]
    ) -> tuple[dict[str, Any], CodeUpdate]:
        """Mark a READY version UPDATING and record its pending UPDATE_VERSION operation."""
        if record.state != "READY":
            raise FailedPrecondition(
                f"Version {record.name} is {record.state}; only a READY version's "
                "predictionClass or packageUris can be updated (create a new version instead)."
            )
        _check_local_files(spec, check_origin=False)
        framework = spec.get("framework")
        if spec.get("predictionClass") or framework == "CUSTOM":
            spec.pop("framework", None)  # found again when the new code loads
        now = now_utc()
        candidate = dataclasses.replace(record, state="UPDATING", spec=spec, revision_time=now)
        operation = OperationRecord(
            project=record.project,
            operation_id=_operation_id("update", f"{record.model}_{record.name}", now),
            operation_type="UPDATE_VERSION",
            model=record.model,
            version=record.name,
            create_time=now,
            start_time=now,
            snapshot=version_resource(candidate, is_default=False),
            owner=f"{socket.gethostname()}:{os.getpid()}",
        )
        if not self.registry.begin_version_update(candidate, operation):
            raise FailedPrecondition(f"Version {record.name} changed state meanwhile; try again.")
        return operation_resource(operation), CodeUpdate(candidate, operation)

    def update_code(self, update: CodeUpdate, verify: Verifier) -> bool:
        """Load the new code of an UPDATING version and answer a smoke prediction; then make it
        the version's (READY, a new revision that every serving process reloads) and return
        True: the caller ends the operation with `finish_code_update` (after reloading the
        version where it serves it). When the new code fails, leave the version READY as it was,
        end the operation with the error and return False."""
        candidate, operation = update.candidate, update.operation
        local: Path | None = None
        try:
            local = self.local_dir(candidate)
            framework = verify(candidate, local)
        except MLEngineError as error:
            self._end_update(candidate, operation, _user_paths(str(error), local, candidate))
            return False
        except Exception as error:  # a loader's own exception type: its message is the reason
            message = f"{type(error).__name__}: {error}"
            self._end_update(candidate, operation, _user_paths(message, local, candidate))
            return False
        spec = _with_framework(candidate.spec, framework)
        changed = self.registry.commit_version_update(
            operation, state="READY", spec=spec, revision_time=candidate.revision_time,
            etag=new_etag(),
        )  # fmt: skip
        if not changed:  # cancelled (perhaps with another update begun since), or deleted
            self._end_update(candidate, operation, "The version changed meanwhile.", _ABORTED)
            return False
        return True

    def finish_code_update(self, update: CodeUpdate) -> None:
        """End the operation of a code update that `update_code` made, with the Version (or,
        when the version was deleted since, with that error)."""
        candidate = update.candidate
        try:
            version = self.get_version(candidate.project, candidate.model, candidate.name)
        except NotFound as error:
            self.registry.finish_operation(
                candidate.project, update.operation.operation_id, end_time=now_utc(),
                error={"code": 5, "message": error.message, "details": []},
            )  # fmt: skip
            return
        self.registry.finish_operation(
            candidate.project,
            update.operation.operation_id,
            end_time=now_utc(),
            response={"@type": _VERSION_TYPE, **version},
        )

    def _end_update(
        self, record: VersionRecord, operation: OperationRecord, message: str, code: int = 3
    ) -> None:
        """A failed code update, if its operation is still pending: the operation ended with
        `message` (and `code`) and, in the same transaction, the version READY with its
        previous code. An operation ended meanwhile (cancelled: the version may be UPDATING for
        another update by now) is left as it is, and so is the version."""
        error = {
            "code": code,
            "message": f"{message} The version keeps its previous code.",
            "details": [],
        }
        now = now_utc()
        if not self.registry.end_version_operation(
            operation, from_state="UPDATING", end_time=now, error=error, state="READY"
        ):  # the version is not UPDATING (deleted, say): end the operation if still pending
            self.registry.finish_operation(
                record.project, operation.operation_id, end_time=now, error=error
            )

    # -- operations -----------------------------------------------------------------------
    def get_operation(self, project: str, operation_id: str) -> dict[str, Any]:
        """The operation.

        Raises:
            InvalidArgument: a bad project id.
            NotFound: no such operation.
        """
        validate_project(project)
        return operation_resource(self.registry.get_operation(project, operation_id))

    def list_operations(
        self,
        project: str,
        page_size: int | None = None,
        page_token: str | None = None,
        filter_text: str | None = None,
    ) -> dict[str, Any]:
        """``{"operations": [...], "nextPageToken"}`` or ``{}``, by id; `filter_text` is ml
        v1's server-side filter (``operationType:CREATE_VERSION AND done:false``; fields
        ``name``, ``done``, ``operationType``, ``modelName``, also as ``metadata.FIELD``).

        Raises:
            InvalidArgument: a bad project id, page size, page token or filter.
        """
        validate_project(project)
        terms = parse_filter(filter_text, _OPERATION_FILTER_FIELDS)
        for term in terms:
            if term.field == "done" and (term.prefix or term.value not in ("true", "false")):
                raise InvalidArgument(
                    f"The filter term done:{term.value}{'*' if term.prefix else ''} must be "
                    "done:true or done:false."
                )
        operations, token = self._filtered_page(
            lambda size, after: self.registry.list_operations(project, size, after),
            operation_resource, terms, _page_size(page_size), page_token,
        )  # fmt: skip
        result: dict[str, Any] = {}
        if operations:
            result["operations"] = operations
        if token:
            result["nextPageToken"] = token
        return result

    def cancel_operation(self, project: str, operation_id: str) -> dict[str, Any]:
        """Cancel a pending version create (the version ends FAILED, its errorMessage saying
        so) or code update (the version stays READY with its previous code); the operation
        ends with error code 1 (CANCELLED). Work already running for it (a copy, a load)
        finishes in the background and is discarded. Returns ``{}``, as ml v1 does.

        Raises:
            InvalidArgument: a bad project id.
            NotFound: no such operation.
            FailedPrecondition: the operation is already done.
        """
        validate_project(project)
        operation = self.registry.get_operation(project, operation_id)
        error = {"code": 1, "message": "The operation was cancelled.", "details": []}
        transitions = {
            "CREATE_VERSION": ("CREATING", {"state": "FAILED", "error_message": _CANCELLED}),
            "UPDATE_VERSION": ("UPDATING", {"state": "READY"}),
        }
        transition = transitions.get(operation.operation_type)
        if operation.done or transition is None or not self.registry.end_version_operation(
            operation, from_state=transition[0], end_time=now_utc(), error=error,
            **transition[1],
        ):  # fmt: skip
            raise FailedPrecondition(
                f"Operation {operation_id} is already done (or its work is committed)."
            )
        return {}

    def fail_interrupted(self) -> None:
        """Operations left pending by a server process of this machine that no longer exists:
        versions it was creating end FAILED, versions it was updating go back to READY with
        their previous code; the operations end with the reason."""
        for operation in self.registry.pending_operations():
            kind = operation.operation_type
            if kind not in ("CREATE_VERSION", "UPDATE_VERSION") or operation.version is None:
                continue
            if not _owner_is_dead(operation.owner):
                continue
            try:
                record = self.registry.get_version(
                    operation.project, operation.model, operation.version
                )
            except NotFound as error:  # deleted since: nothing left to do but say so
                self.registry.finish_operation(
                    operation.project, operation.operation_id, end_time=now_utc(),
                    error={"code": 5, "message": error.message, "details": []},
                )  # fmt: skip
                continue
            if kind == "CREATE_VERSION":
                self._fail(record, operation, "The server creating this version stopped; "
                           "create the version again.", _ABORTED)  # fmt: skip
            elif record.state == "UPDATING":
                self._end_update(record, operation, "The server updating this version stopped; "
                                 "update it again.", _ABORTED)  # fmt: skip
            else:  # it stopped after the new code was made the version's
                self.finish_code_update(CodeUpdate(record, operation))

    def _finished_operation(
        self,
        project: str,
        operation_type: str,
        model: str,
        version: str | None,
        *,
        response: Mapping[str, Any],
        snapshot: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        now = now_utc()
        suffix = f"{model}_{version}" if version else model
        verb = operation_type.split("_")[0].lower()
        record = OperationRecord(
            project=project,
            operation_id=_operation_id(verb, suffix, now),
            operation_type=operation_type,
            model=model,
            version=version,
            create_time=now,
            start_time=now,
            end_time=now,
            done=True,
            response=dict(response),
            snapshot=snapshot,
        )
        self.registry.insert_operation(record)
        return operation_resource(record)


def _mask(update_mask: str | None, allowed: frozenset[str], owner: str) -> set[str]:
    paths = {  # proto names (auto_scaling.min_nodes) read as JSON names, as Google does
        ".".join(json_name(part) for part in path.strip().split("."))
        for path in (update_mask or "").split(",")
        if path.strip()
    }
    if not paths:
        raise InvalidArgument("The 'updateMask' parameter is required.")
    unsupported = sorted(paths - allowed)
    if unsupported:
        raise InvalidArgument(
            f"The 'updateMask' path {unsupported[0]!r} cannot be updated on a {owner}; "
            f"supported: {', '.join(sorted(allowed))}."
        )
    return paths


def _operation_id(verb: str, subject: str, now: dt.datetime) -> str:
    """``create_iris_v1-1733580000000a1b2``: AI Platform's ``<verb>_<model>[_<version>]-<epoch
    ms>``, with a random tail so that two operations on one model in one millisecond (two
    processes, say) never share an id."""
    return f"{verb}_{subject}-{int(now.timestamp() * 1000)}{secrets.token_hex(2)}"


def _check_etag(body: Mapping[str, Any], current: str, what: str) -> None:
    """Optimistic concurrency: a body that carries an ``etag`` applies only to the resource as
    it was when that etag was read.

    Raises:
        InvalidArgument: an etag that is not a string.
        FailedPrecondition: another etag.
    """
    given = body.get("etag")
    if given is None or given == "":
        return
    if not isinstance(given, str):
        raise invalid_field("etag", what.split()[0].capitalize(), "a string", given)
    if given != current:
        raise FailedPrecondition(
            f"The etag of {what} has changed since it was read; read it again and retry."
        )


def _with_framework(spec: Mapping[str, Any], detected: str) -> dict[str, Any]:
    """The spec of a version that loaded, with the framework its loader `detected` when none
    was given; a custom prediction routine has none (AI Platform: framework must be unset)."""
    result = dict(spec)
    if result.get("predictionClass"):
        result.pop("framework", None)
    elif not result.get("framework"):
        result["framework"] = detected
    return result


def _matches(resource: Mapping[str, Any], terms: Sequence[FilterTerm]) -> bool:
    """Whether a rendered model, version or operation satisfies every filter term."""
    return all(
        any(term.matches(value) for value in _filter_values(resource, term.field)) for term in terms
    )


def _filter_values(resource: Mapping[str, Any], field: str) -> list[str]:
    """The texts a filter `field` compares with: ``labels.KEY``'s value; for ``name`` and
    ``modelName`` the short and the full resource name; an operation's ``metadata`` members
    with or without the ``metadata.`` prefix; booleans as ``true``/``false``."""
    if field.startswith("labels."):
        found = (resource.get("labels") or {}).get(field.split(".", 1)[1])
    elif field.startswith("metadata."):
        found = (resource.get("metadata") or {}).get(field.split(".", 1)[1])
    elif field in resource:
        found = resource[field]
    else:
        found = (resource.get("metadata") or {}).get(field)
    if found is None:
        return []
    if isinstance(found, bool):
        return [str(found).lower()]
    text = str(found)
    if field in ("name", "modelName", "metadata.modelName"):
        return [text.rsplit("/", 1)[-1], text]
    return [text]


def _description(body: Mapping[str, Any], owner: str) -> str:
    value = body.get("description")
    if value is not None and not isinstance(value, str):
        raise invalid_field("description", owner, "a string", value)
    return value or ""


def _check_local_files(spec: Mapping[str, Any], check_origin: bool = True) -> None:
    """Refuse, before anything is recorded, a local deploymentUri that is not a directory
    with files or a local package that is not a file (remote URLs are read by the build);
    without `check_origin`, the packages only."""
    origin = spec["deploymentUri"]
    checked = [("deploymentUri", origin)] if check_origin else []
    for field, uri in (*checked, *_indexed("packageUris", spec)):
        protocols = uri.split("://", 1)[0].split("::") if "://" in uri else ["file"]
        if not set(protocols) <= set(fsspec.available_protocols()):
            raise invalid_field(
                field, "Version", "a local path or a URL such as gs://bucket/path", uri
            )
    if check_origin and is_local(origin):
        directory = local_path(origin)
        if not directory.is_dir():
            raise invalid_field(
                "deploymentUri", "Version", "a directory that exists on the server", origin
            )
        if not any(path.is_file() for path in directory.rglob("*")):
            raise invalid_field("deploymentUri", "Version", "a directory with model files", origin)
    for field, uri in _indexed("packageUris", spec):
        if is_local(uri) and not local_path(uri).is_file():
            raise invalid_field(field, "Version", "a package file that exists", uri)
        if is_local(uri) and not is_package_archive(local_path(uri)):
            raise invalid_field(
                field, "Version", "an sdist (.tar.gz) or wheel/zip archive pip can install", uri
            )


def _indexed(field: str, spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(f"{field}[{index}]", uri) for index, uri in enumerate(spec.get(field) or ())]


def _user_paths(message: str, local: Path | None, record: VersionRecord) -> str:
    """`message` with the server's local copy of the version's files named as the user named
    them, by the version's deploymentUri (a loader names the files it read)."""
    if local is None:
        return message
    return message.replace(str(local), str(record.spec["deploymentUri"]).rstrip("/"))


def _owner_is_dead(owner: str | None) -> bool:
    host, _, pid = (owner or "").partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return not process_running(int(pid))


def _remove(uri: str) -> None:
    import contextlib

    from mlengine.store._artifacts import filesystem_for

    fs, path = filesystem_for(uri)
    with contextlib.suppress(OSError):
        fs.rm(path, recursive=True)
