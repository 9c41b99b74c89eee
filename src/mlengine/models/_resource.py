"""ml v1 `Model`, `Version` and `Operation` resources: request validation and rendering."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mlengine.errors import InvalidArgument, invalid_field
from mlengine.jobs._resource import rfc3339, validate_labels
from mlengine.store import ModelRecord, OperationRecord, VersionRecord

__all__ = [
    "FRAMEWORK_NAMES",
    "batching_labels",
    "model_resource",
    "operation_resource",
    "validate_model",
    "validate_name",
    "validate_version",
    "version_resource",
]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,127}$")
_RUNTIME = re.compile(r"^\d+\.\d+$")
FRAMEWORK_NAMES = (
    "TENSORFLOW",
    "SCIKIT_LEARN",
    "XGBOOST",
    "LIGHTGBM",
    "PYTORCH",
    "KERAS",
    "ONNX",
)
_VERSION_STRINGS = (
    "description",
    "deploymentUri",
    "runtimeVersion",
    "pythonVersion",
    "machineType",
    "predictionClass",
    "serviceAccount",
)
_VERSION_OBJECTS = ("autoScaling", "manualScaling", "requestLoggingConfig", "explanationConfig")
DEFAULT_RUNTIME_VERSION = "2.11"
DEFAULT_PYTHON_VERSION = "3.7"
DEFAULT_MACHINE_TYPE = "mls1-c1-m2"


def validate_name(value: object, field: str, owner: str) -> str:
    """A model or version short name: letters, digits and underscores, starting with a letter.

    Raises:
        InvalidArgument: anything else.
    """
    if not isinstance(value, str) or not _NAME.match(value):
        raise invalid_field(
            field, owner, "1 to 128 letters, digits or underscores, starting with a letter", value
        )
    return value


def validate_model(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a `Model` create request, normalised.

    Raises:
        InvalidArgument: a bad name, regions, labels or flag.
    """
    name = validate_name(body.get("name"), "name", "Model")
    regions = body.get("regions") or ["us-central1"]
    if not isinstance(regions, list) or len(regions) != 1 or not isinstance(regions[0], str):
        raise invalid_field("regions", "Model", "a list of exactly one region", regions)
    description = body.get("description", "")
    if not isinstance(description, str):
        raise invalid_field("description", "Model", "a string", description)
    result: dict[str, Any] = {
        "name": name,
        "description": description,
        "regions": tuple(regions),
        "labels": validate_labels(body.get("labels"), "Model"),
    }
    for field, column in (
        ("onlinePredictionLogging", "online_prediction_logging"),
        ("onlinePredictionConsoleLogging", "online_prediction_console_logging"),
    ):
        value = body.get(field, False)
        if not isinstance(value, bool):
            raise invalid_field(field, "Model", "true or false", value)
        result[column] = value
    return result


def validate_version(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a `Version` create request, normalised (unknown fields dropped).

    Raises:
        InvalidArgument: a bad name, framework, runtime version, or a missing deploymentUri.
    """
    spec: dict[str, Any] = {"name": validate_name(body.get("name"), "name", "Version")}
    for field in _VERSION_STRINGS:
        value = body.get(field)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise invalid_field(field, "Version", "a string", value)
        spec[field] = value
    for field in _VERSION_OBJECTS:
        value = body.get(field)
        if value is not None:
            if not isinstance(value, Mapping):
                raise invalid_field(field, "Version", "an object", value)
            spec[field] = dict(value)
    if body.get("container"):
        raise InvalidArgument(
            "The 'container' field of Version asks for a custom serving container, which "
            "mlengine does not run; give a deploymentUri with model files instead."
        )
    if not spec.get("deploymentUri"):
        raise InvalidArgument("The 'deploymentUri' field of Version is required (--origin).")
    framework = body.get("framework")
    if framework not in (None, "", "FRAMEWORK_UNSPECIFIED"):
        normalised = str(framework).upper().replace("-", "_")
        if normalised not in FRAMEWORK_NAMES:
            raise invalid_field(
                "framework", "Version", "one of " + ", ".join(FRAMEWORK_NAMES), framework
            )
        spec["framework"] = normalised
    runtime = spec.setdefault("runtimeVersion", DEFAULT_RUNTIME_VERSION)
    if not _RUNTIME.match(runtime):
        raise invalid_field(
            "runtimeVersion", "Version", "a MAJOR.MINOR string such as '2.11'", runtime
        )
    spec.setdefault("pythonVersion", DEFAULT_PYTHON_VERSION)
    spec.setdefault("machineType", DEFAULT_MACHINE_TYPE)
    packages = body.get("packageUris")
    if packages is not None:
        if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
            raise invalid_field("packageUris", "Version", "a list of URIs", packages)
        spec["packageUris"] = list(packages)
    prediction_class = spec.get("predictionClass")
    if prediction_class is not None:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$", prediction_class):
            raise invalid_field(
                "predictionClass", "Version", "a dotted name module.Class", prediction_class
            )
        if spec.get("framework"):
            raise InvalidArgument(
                "The 'framework' field of Version must be unset with a predictionClass."
            )
    spec["labels"] = validate_labels(body.get("labels"), "Version")
    batching_labels(spec["labels"])
    return spec


def batching_labels(labels: Mapping[str, str]) -> dict[str, int]:
    """The batching a version's labels set: ``max_batch_size`` (instances per model call, an
    integer >= 1) and ``max_batch_wait_ms`` (an integer >= 0), those given only.

    Raises:
        InvalidArgument: one of them is not such an integer (the message names the label).
    """
    found: dict[str, int] = {}
    for label, least in (("max_batch_size", 1), ("max_batch_wait_ms", 0)):
        value = labels.get(label)
        if value is None:
            continue
        if not (isinstance(value, str) and value.isdigit() and int(value) >= least):
            raise invalid_field(f"labels.{label}", "Version", f"an integer >= {least}", value)
        found[label] = int(value)
    return found


def version_resource(record: VersionRecord, is_default: bool) -> dict[str, Any]:
    """Render a stored version as the ml v1 `Version` JSON object."""
    spec = dict(record.spec)
    resource: dict[str, Any] = {
        "name": f"projects/{record.project}/models/{record.model}/versions/{record.name}",
    }
    for field in (*_VERSION_STRINGS, "framework", "packageUris", *_VERSION_OBJECTS):
        if spec.get(field):
            resource[field] = spec[field]
    if spec.get("labels"):
        resource["labels"] = dict(spec["labels"])
    resource["state"] = record.state
    resource["isDefault"] = is_default
    resource["createTime"] = rfc3339(record.create_time)
    if record.last_use_time is not None:
        resource["lastUseTime"] = rfc3339(record.last_use_time)
    if record.error_message:
        resource["errorMessage"] = record.error_message
    resource["etag"] = record.etag
    return resource


def model_resource(record: ModelRecord, default: VersionRecord | None) -> dict[str, Any]:
    """Render a stored model as the ml v1 `Model` JSON object (default version embedded)."""
    resource: dict[str, Any] = {
        "name": f"projects/{record.project}/models/{record.name}",
        "regions": list(record.regions),
    }
    if record.description:
        resource["description"] = record.description
    if default is not None:
        resource["defaultVersion"] = version_resource(default, is_default=True)
    if record.online_prediction_logging:
        resource["onlinePredictionLogging"] = True
    if record.online_prediction_console_logging:
        resource["onlinePredictionConsoleLogging"] = True
    if record.labels:
        resource["labels"] = dict(record.labels)
    resource["etag"] = record.etag
    return resource


def operation_resource(record: OperationRecord) -> dict[str, Any]:
    """Render an operation as the ml v1 `Operation` (google.longrunning) JSON object."""
    metadata: dict[str, Any] = {
        "@type": "type.googleapis.com/google.cloud.ml.v1.OperationMetadata",
        "createTime": rfc3339(record.create_time),
        "operationType": record.operation_type,
        "modelName": f"projects/{record.project}/models/{record.model}",
    }
    if record.start_time is not None:
        metadata["startTime"] = rfc3339(record.start_time)
    if record.end_time is not None:
        metadata["endTime"] = rfc3339(record.end_time)
    if record.snapshot is not None:
        metadata["version"] = dict(record.snapshot)
    resource: dict[str, Any] = {
        "name": f"projects/{record.project}/operations/{record.operation_id}",
        "metadata": metadata,
        "done": record.done,
    }
    if record.error is not None:
        resource["error"] = dict(record.error)
    elif record.response is not None:
        resource["response"] = dict(record.response)
    return resource
