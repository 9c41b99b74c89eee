"""The SDK's models, versions, operations and prediction."""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlengine.errors import InvalidArgument, OperationFailed

if TYPE_CHECKING:
    from mlengine.client._sdk import Client

__all__ = ["ModelsAPI", "OperationsAPI", "VersionsAPI"]


def _origin(origin: str | Path) -> str:
    text = str(origin)
    return text if "://" in text else str(Path(text).expanduser().resolve())


class OperationsAPI:
    """``projects.operations``: get, list, cancel and wait."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @property
    def _base(self) -> str:
        return f"/v1/projects/{self._client.project}/operations"

    def get(self, name: str) -> dict[str, Any]:
        """An operation by full name or id."""
        return self._client.api.request("GET", f"{self._base}/{name.rsplit('/', 1)[-1]}")

    def list(self, filter: str | None = None) -> Iterator[dict[str, Any]]:
        """Every operation of the project matching `filter` (ml v1's server-side syntax, e.g.
        ``operationType:CREATE_VERSION AND done:false``), by id.

        Raises:
            InvalidArgument: the server refused the filter (the message names the term).
        """
        token: str | None = None
        while True:
            params = {"filter": filter, "pageToken": token}
            answer = self._client.api.request("GET", self._base, params=params)
            yield from answer.get("operations", [])
            token = answer.get("nextPageToken")
            if not token:
                return

    def cancel(self, name: str) -> None:
        """Cancel a pending version create (the version ends FAILED) or code update (the
        version keeps its previous code); the operation ends with error code 1.

        Raises:
            FailedPrecondition: it is already done.
        """
        self._client.api.request("POST", f"{self._base}/{name.rsplit('/', 1)[-1]}:cancel")

    def wait(
        self,
        operation: Mapping[str, Any] | str,
        timeout: float | None = 600,
        poll_interval: float = 0.2,
    ) -> dict[str, Any]:
        """Poll until the operation (an Operation, or its name or id) is done; return its
        ``response``.

        Raises:
            NotFound: no such operation.
            OperationFailed: it ended with an error (the message is the error's).
            TimeoutError: not done within `timeout` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        current = self.get(operation) if isinstance(operation, str) else dict(operation)
        while not current.get("done"):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"Operation {current['name']} is not done after {timeout} s.")
            time.sleep(poll_interval)
            current = self.get(current["name"])
        if current.get("error"):
            raise OperationFailed(str(current["error"].get("message", current["error"])))
        response = dict(current.get("response") or {})
        response.pop("@type", None)  # the wire's type tag, not a field of the resource
        return response


class ModelsAPI:
    """``projects.models``: create, get, list, delete, and `predict`."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @property
    def _base(self) -> str:
        return f"/v1/projects/{self._client.project}/models"

    def create(
        self,
        name: str,
        *,
        description: str | None = None,
        regions: Sequence[str] | None = None,
        labels: Mapping[str, str] | None = None,
        enable_logging: bool = False,
        enable_console_logging: bool = False,
    ) -> dict[str, Any]:
        """Create a model; returns the Model resource. `enable_logging` and
        `enable_console_logging` set ``onlinePredictionLogging`` and
        ``onlinePredictionConsoleLogging``.

        Raises:
            AlreadyExists: a model of that name exists.
            InvalidArgument: a bad name, region or label (the message names it).
        """
        body: dict[str, Any] = {
            "name": name,
            "onlinePredictionLogging": enable_logging,
            "onlinePredictionConsoleLogging": enable_console_logging,
        }
        if description:
            body["description"] = description
        if regions:
            body["regions"] = list(regions)
        if labels:
            body["labels"] = dict(labels)
        return self._client.api.request("POST", self._base, json=body)

    def get(self, name: str) -> dict[str, Any]:
        """The Model resource (default version embedded)."""
        return self._client.api.request("GET", f"{self._base}/{name}")

    def list(
        self, filter: str | None = None, page_size: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every model of the project matching `filter` (ml v1's server-side syntax, e.g.
        ``name:census* AND labels.team:ml``), by name."""
        token: str | None = None
        while True:
            params = {"filter": filter, "pageSize": page_size, "pageToken": token}
            answer = self._client.api.request("GET", self._base, params=params)
            yield from answer.get("models", [])
            token = answer.get("nextPageToken")
            if not token:
                return

    def delete(self, name: str) -> dict[str, Any]:
        """Delete a model without versions; returns the finished Operation."""
        return self._client.api.request("DELETE", f"{self._base}/{name}")

    def update(
        self,
        name: str,
        *,
        description: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Set the model's description and/or replace its labels (``{}`` clears them); the
        fields left None are kept. Returns the updated Model.

        Raises:
            InvalidArgument: nothing to update, or a refused value (the message names it).
        """
        body, mask = _update_body(description, labels, nothing="give a description or labels")
        operation = self._client.api.request(
            "PATCH", f"{self._base}/{name}", params={"updateMask": mask}, json=body
        )
        response = dict(operation.get("response") or self.get(name))
        response.pop("@type", None)  # the wire's type tag, not a field of the resource
        return response

    def predict(
        self,
        model: str,
        instances: Sequence[Any],
        *,
        version: str | None = None,
        **fields: Any,
    ) -> builtins.list[Any]:
        """Online prediction: `instances` to the default version (or `version`); extra
        `fields` go in the request body (e.g. ``probabilities=True``).

        Raises:
            InvalidArgument: the server refused the instances (message names the instance).
        """
        path = f"{self._base}/{model}" + (f"/versions/{version}" if version is not None else "")
        answer = self._client.api.request(
            "POST", f"{path}:predict", json={"instances": list(instances), **fields}
        )
        return list(answer["predictions"])

    def explain(
        self,
        model: str,
        instances: Sequence[Any],
        *,
        version: str | None = None,
        **fields: Any,
    ) -> builtins.list[dict[str, Any]]:
        """Feature attributions of `instances` by the default version (or `version`), which
        needs an ``explanationConfig`` (sampled Shapley, or integrated gradients for a
        PyTorch, Keras or TensorFlow model): one ``{"attributions_by_label": [...]}`` per
        instance.

        Raises:
            InvalidArgument: the version has no explanationConfig (or one mlengine does not
                compute), or the server refused the instances (message names the instance).
        """
        path = f"{self._base}/{model}" + (f"/versions/{version}" if version is not None else "")
        answer = self._client.api.request(
            "POST", f"{path}:explain", json={"instances": list(instances), **fields}
        )
        return list(answer["explanations"])


class VersionsAPI:
    """``projects.models.versions``: create (waits for READY), get, list, delete,
    set_default."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def _base(self, model: str) -> str:
        return f"/v1/projects/{self._client.project}/models/{model}/versions"

    def create(
        self,
        model: str,
        name: str,
        origin: str | Path,
        *,
        framework: str | None = None,
        runtime_version: str | None = None,
        python_version: str | None = None,
        description: str | None = None,
        labels: Mapping[str, str] | None = None,
        config: Mapping[str, Any] | None = None,
        wait: bool = True,
        timeout: float | None = 600,
    ) -> dict[str, Any]:
        """Create a version from the model files in `origin` (a local directory or fsspec
        URL); with `wait`, return the READY Version, else the Operation.

        Raises:
            OperationFailed: the version ended FAILED (the loader's error).
        """
        from mlengine.models._resource import check_version_config

        check_version_config(config or {})  # a typo is refused here; the server ignores it
        body: dict[str, Any] = dict(config or {})
        body.update({"name": name, "deploymentUri": _origin(origin)})
        for key, value in (
            ("framework", framework.upper().replace("-", "_") if framework else None),
            ("runtimeVersion", runtime_version),
            ("pythonVersion", python_version),
            ("description", description),
            ("labels", dict(labels) if labels else None),
        ):
            if value is not None:
                body[key] = value
        operation = self._client.api.request("POST", self._base(model), json=body)
        if not wait:
            return operation
        return self._client.operations.wait(operation, timeout=timeout)

    def get(self, model: str, name: str) -> dict[str, Any]:
        """The Version resource."""
        return self._client.api.request("GET", f"{self._base(model)}/{name}")

    def list(self, model: str, filter: str | None = None) -> Iterator[dict[str, Any]]:
        """Every version of `model` matching `filter` (ml v1's server-side syntax, e.g.
        ``state:READY AND labels.stage:prod``), by name."""
        token: str | None = None
        while True:
            params = {"filter": filter, "pageToken": token}
            answer = self._client.api.request("GET", self._base(model), params=params)
            yield from answer.get("versions", [])
            token = answer.get("nextPageToken")
            if not token:
                return

    def delete(self, model: str, name: str) -> dict[str, Any]:
        """Delete a version once its in-flight requests finished; returns the Operation."""
        return self._client.api.request("DELETE", f"{self._base(model)}/{name}")

    def set_default(self, model: str, name: str) -> dict[str, Any]:
        """Make a READY version the default; returns the Version."""
        return self._client.api.request("POST", f"{self._base(model)}/{name}:setDefault")

    def update(
        self,
        model: str,
        name: str,
        *,
        description: str | None = None,
        labels: Mapping[str, str] | None = None,
        prediction_class: str | None = None,
        package_uris: Sequence[str] | None = None,
        config: Mapping[str, Any] | None = None,
        wait: bool = True,
        timeout: float | None = 600,
    ) -> dict[str, Any]:
        """Set the version's description and/or replace its labels (``{}`` clears them), its
        code, and the fields of `config` (``description``, ``autoScaling``
        ``minNodes``/``maxNodes``, ``manualScaling`` ``nodes``, ``requestLoggingConfig``,
        ``predictionClass``, ``packageUris``, as in ``gcloud ai-platform versions update
        --config``; the arguments win over it); the fields not given are kept. The batching
        labels (``max_batch_size``, ``max_batch_wait_ms``) take effect on the loaded version
        within about a second.

        A new `prediction_class` (``""`` removes it) or `package_uris` (paths the server can
        read, or URLs; ``[]`` removes them) is loaded and smoke-tested in the background while
        the version goes on serving its current code (state UPDATING); then every server
        process reloads it. With `wait`, returns the updated Version, else the Operation.

        Raises:
            InvalidArgument: nothing to update, a key `config` may not hold, or a refused
                value (the message names it).
            OperationFailed: the new code did not load or failed its smoke prediction; the
                version keeps its previous code.
        """
        body, mask = _update_body(description, labels, config, prediction_class, package_uris)
        operation = self._client.api.request(
            "PATCH", f"{self._base(model)}/{name}", params={"updateMask": mask}, json=body
        )
        if not wait:
            return operation
        if not operation.get("done"):
            return self._client.operations.wait(operation, timeout=timeout)
        response = dict(operation.get("response") or self.get(model, name))
        response.pop("@type", None)
        return response


_VERSION_UPDATE_CONFIG = {
    "description": None,
    "autoScaling": ("minNodes", "maxNodes"),
    "manualScaling": ("nodes",),
    "requestLoggingConfig": None,
    "predictionClass": None,
    "packageUris": None,
}
"""The fields a `versions update` config may set, and for objects the members masked one by
one (``autoScaling.minNodes``...); the others are masked whole."""


def _update_body(
    description: str | None,
    labels: Mapping[str, str] | None,
    config: Mapping[str, Any] | None = None,
    prediction_class: str | None = None,
    package_uris: Sequence[str] | None = None,
    *,
    nothing: str = "give a description, labels, code (prediction class, package URIs) or a config",
) -> tuple[dict[str, Any], str]:
    """The PATCH body and ``updateMask`` (sorted, as gcloud sends it) of the fields given;
    `nothing` says what to give when no field is."""
    body: dict[str, Any] = {}
    paths: set[str] = set()
    for key, value in (config or {}).items():
        if key not in _VERSION_UPDATE_CONFIG:
            allowed = ", ".join(_VERSION_UPDATE_CONFIG)
            raise InvalidArgument(
                f"A version update config may set {allowed}; not {key!r} (labels: use the "
                "labels flags)."
            )
        members = _VERSION_UPDATE_CONFIG[key]
        if members is None:
            paths.add(key)
        else:
            if not isinstance(value, Mapping):
                raise InvalidArgument(f"The {key!r} field of the config must be a mapping.")
            unknown = sorted(set(value) - set(members))
            if unknown:
                raise InvalidArgument(
                    f"The {key!r} field of the config may set {', '.join(members)}; not "
                    f"{', '.join(map(repr, unknown))}."
                )
            paths.update(f"{key}.{member}" for member in value)
        body[key] = value
    if description is not None:
        body["description"] = description
        paths.add("description")
    if labels is not None:
        body["labels"] = dict(labels)
        paths.add("labels")
    if prediction_class is not None:
        body["predictionClass"] = prediction_class
        paths.add("predictionClass")
    if package_uris is not None:
        body["packageUris"] = [str(uri) for uri in package_uris]
        paths.add("packageUris")
    if not paths:
        raise InvalidArgument(f"Nothing to update: {nothing}.")
    return body, ",".join(sorted(paths))
