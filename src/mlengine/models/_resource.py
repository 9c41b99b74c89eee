"""ml v1 `Model`, `Version` and `Operation` resources: request validation and rendering."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mlengine.errors import InvalidArgument, invalid_field
from mlengine.jobs._packaging import PACKAGE_SUFFIXES
from mlengine.jobs._resource import rfc3339, validate_accelerator_config, validate_labels
from mlengine.store import ModelRecord, OperationRecord, VersionRecord

__all__ = [
    "FRAMEWORK_NAMES",
    "MODEL_FIELDS",
    "VERSION_FIELDS",
    "VERSION_OBJECT_FIELDS",
    "batching_labels",
    "check_version_config",
    "default_version_name",
    "json_name",
    "model_resource",
    "operation_resource",
    "proto_body",
    "validate_model",
    "validate_name",
    "validate_version",
    "validate_version_object",
    "version_resource",
]

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}")
_RUNTIME = re.compile(r"[0-9]+\.[0-9]+")
_REGION = re.compile(r"[a-z][a-z0-9-]{0,62}")
_MACHINE_TYPE = re.compile(r"[a-z][a-z0-9-]{0,62}")
_PREDICTION_CLASS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*(::[A-Za-z][A-Za-z0-9+.-]*)*://")
_INT32_MAX = 2**31 - 1
_METRIC_NAMES = ("METRIC_NAME_UNSPECIFIED", "CPU_USAGE", "GPU_DUTY_CYCLE")
_METRIC_FIELDS = frozenset({"name", "target"})
_BIGQUERY_TABLE = re.compile(r"[A-Za-z0-9_:-]+\.[A-Za-z0-9_]+\.[A-Za-z0-9_$-]+")
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
_VERSION_OBJECTS = (
    "autoScaling",
    "manualScaling",
    "requestLoggingConfig",
    "explanationConfig",
    "acceleratorConfig",
)
DEFAULT_RUNTIME_VERSION = "2.11"
DEFAULT_PYTHON_VERSION = "3.7"
DEFAULT_MACHINE_TYPE = "mls1-c1-m2"


def validate_name(value: object, field: str, owner: str) -> str:
    """A model or version short name: letters, digits and underscores, starting with a letter.

    Raises:
        InvalidArgument: anything else.
    """
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise invalid_field(
            field, owner, "1 to 128 letters, digits or underscores, starting with a letter", value
        )
    return value


MODEL_FIELDS = frozenset(
    {"name", "description", "regions", "defaultVersion", "onlinePredictionLogging",
     "onlinePredictionConsoleLogging", "labels", "etag"}
)  # fmt: skip
"""Every field of AI Platform's `Model` (AIPLATFORM.md 3.1), output-only ones included."""
VERSION_FIELDS = frozenset(
    {"name", "description", "deploymentUri", "framework", "runtimeVersion", "pythonVersion",
     "machineType", "autoScaling", "manualScaling", "acceleratorConfig", "predictionClass",
     "packageUris", "serviceAccount", "state", "isDefault", "errorMessage", "createTime",
     "lastUseTime", "lastMigrationModelId", "lastMigrationTime", "etag", "labels",
     "requestLoggingConfig", "explanationConfig", "container", "routes", "imageUri",
     "modelClass"}
)  # fmt: skip
"""Every field of AI Platform's `Version` (AIPLATFORM.md 3.2), output-only ones included, and
those of gcloud's generated Version message (``imageUri``, ``modelClass``)."""


VERSION_OBJECT_FIELDS: dict[str, frozenset[str]] = {
    "autoScaling": frozenset({"minNodes", "maxNodes", "metrics"}),
    "manualScaling": frozenset({"nodes"}),
    "requestLoggingConfig": frozenset({"samplingPercentage", "bigqueryTableName"}),
    "explanationConfig": frozenset(
        {"integratedGradientsAttribution", "sampledShapleyAttribution", "xraiAttribution"}
    ),
    "acceleratorConfig": frozenset({"count", "type"}),
}
"""The members of each object field of `Version` (AIPLATFORM.md 3.2)."""


def json_name(name: str) -> str:
    """The proto3 JSON name of a proto field name: ``deployment_uri`` -> ``deploymentUri``
    (a name already in lowerCamelCase is returned as it is)."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def proto_body(
    body: Mapping[str, Any],
    fields: frozenset[str],
    resource: str,
    where: str = "",
    *,
    strict: bool = False,
) -> dict[str, Any]:
    """`body` with its field names read as proto3 JSON parsers read them (the proto name
    ``deployment_uri`` as ``deploymentUri``) and the fields `resource` does not have left out:
    as AIPLATFORM.md 1.2 asks, a request body's unknown fields are ignored, never refused nor
    echoed back (gcloud's generated client has fields the published API lacks).

    Args:
        body: a JSON object.
        fields: the JSON names the object may hold (output-only ones included: the caller
            ignores those).
        resource: the resource named in messages (``Version``).
        where: the path of `body` inside the resource (``acceleratorConfig``), "" at the top.
        strict: refuse an unknown field instead (the SDK's and CLI's own checks of what a
            user wrote, where a typo is caught before it is sent).

    Raises:
        InvalidArgument: one field given under both of its names; with `strict`, an unknown
            field.
    """
    at = f" at '{where}'" if where else ""
    result: dict[str, Any] = {}
    for key, value in body.items():
        name = key if key in fields else json_name(str(key))
        if name not in fields:
            if strict:
                raise InvalidArgument(
                    f"Unknown name {str(key)!r}{at} in the {resource}: it has no such field "
                    f"({where or f'a {resource}'} has {', '.join(sorted(fields))})."
                )
            continue
        if name in result:
            raise InvalidArgument(
                f"The field '{where + '.' if where else ''}{name}' of {resource} is given twice "
                f"(as {name!r} and as its proto name); give it once."
            )
        result[name] = value
    return result


def check_version_config(config: Mapping[str, Any]) -> None:
    """Refuse a field a `Version` does not have, at its top or inside its objects: what the
    SDK checks of a user's ``config`` (the server ignores unknown fields).

    Raises:
        InvalidArgument: naming the unknown field and where it is.
    """
    known = proto_body(config, VERSION_FIELDS, "Version", strict=True)
    for field, members in VERSION_OBJECT_FIELDS.items():
        value = known.get(field)
        if isinstance(value, Mapping):
            proto_body(value, members, "Version", field, strict=True)


def validate_model(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a `Model` create request, normalised.

    Raises:
        InvalidArgument: an unknown field, a bad name, regions, labels or flag.
    """
    body = proto_body(body, MODEL_FIELDS, "Model")
    name = validate_name(body.get("name"), "name", "Model")
    regions = body.get("regions")
    if regions is None or regions == []:
        regions = ["us-central1"]
    if (
        not isinstance(regions, list)
        or len(regions) != 1
        or not isinstance(regions[0], str)
        or not _REGION.fullmatch(regions[0])
    ):
        raise invalid_field(
            "regions", "Model", "a list of exactly one region such as ['us-central1']", regions
        )
    description = body.get("description")
    if description is None:  # null is the default, as proto3 JSON reads it
        description = ""
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
        value = body.get(field)
        if value is None:
            value = False
        if not isinstance(value, bool):
            raise invalid_field(field, "Model", "true or false", value)
        result[column] = value
    return result


def validate_version(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a `Version` create request, normalised (output-only fields ignored).

    Raises:
        InvalidArgument: an unknown field, a field of the wrong type or out of range (the
            message names it), or a missing deploymentUri.
    """
    body = proto_body(body, VERSION_FIELDS, "Version")
    spec: dict[str, Any] = {"name": validate_name(body.get("name"), "name", "Version")}
    for field in _VERSION_STRINGS:
        value = body.get(field)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise invalid_field(field, "Version", "a string", value)
        spec[field] = value
    for field in _VERSION_OBJECTS:
        normalised = validate_version_object(field, body.get(field))
        if normalised is not None and field != "requestLoggingConfig":  # as AI Platform:
            spec[field] = normalised  # checked, but only honoured through versions.patch
    if spec.get("autoScaling") is not None and spec.get("manualScaling") is not None:
        raise InvalidArgument(
            "The 'autoScaling' and 'manualScaling' fields of Version are exclusive; set one."
        )
    if body.get("container"):
        raise InvalidArgument(
            "The 'container' field of Version asks for a custom serving container, which "
            "mlengine does not run; give a deploymentUri with model files instead."
        )
    if not spec.get("deploymentUri"):
        raise InvalidArgument("The 'deploymentUri' field of Version is required (--origin).")
    if not _absolute_or_url(spec["deploymentUri"]):
        raise invalid_field(
            "deploymentUri",
            "Version",
            "an absolute directory path or a URL such as gs://bucket/model/",
            spec["deploymentUri"],
        )
    framework = body.get("framework")
    if framework not in (None, "", "FRAMEWORK_UNSPECIFIED"):
        upper = framework.upper().replace("-", "_") if isinstance(framework, str) else None
        if upper not in FRAMEWORK_NAMES:
            raise invalid_field(
                "framework", "Version", "one of " + ", ".join(FRAMEWORK_NAMES), framework
            )
        spec["framework"] = upper
    for field, default, example in (
        ("runtimeVersion", DEFAULT_RUNTIME_VERSION, "a MAJOR.MINOR string such as '2.11'"),
        ("pythonVersion", DEFAULT_PYTHON_VERSION, "a MAJOR.MINOR string such as '3.7'"),
    ):
        value = spec.setdefault(field, default)
        if not _RUNTIME.fullmatch(value):
            raise invalid_field(field, "Version", example, value)
    machine_type = spec.setdefault("machineType", DEFAULT_MACHINE_TYPE)
    if not _MACHINE_TYPE.fullmatch(machine_type):
        raise invalid_field(
            "machineType", "Version", "a machine type such as 'mls1-c1-m2'", machine_type
        )
    spec.update(validate_version_code(body))
    if spec.get("predictionClass") and spec.get("framework"):
        raise InvalidArgument(
            "The 'framework' field of Version must be unset with a predictionClass."
        )
    spec["labels"] = validate_labels(body.get("labels"), "Version")
    batching_labels(spec["labels"])
    return spec


def validate_version_code(body: Mapping[str, Any]) -> dict[str, Any]:
    """The code fields of a `Version` (``predictionClass``, ``packageUris``) that `body` sets,
    normalised: null, ``""`` and ``[]`` leave a field out.

    Raises:
        InvalidArgument: a predictionClass that is not a dotted ``module.Class`` string, or a
            packageUris that is not a list of package paths or URLs (the message names the
            entry, e.g. ``packageUris[1]``).
    """
    code: dict[str, Any] = {}
    prediction_class = body.get("predictionClass")
    if prediction_class not in (None, ""):
        if not isinstance(prediction_class, str) or not _PREDICTION_CLASS.fullmatch(
            prediction_class
        ):
            raise invalid_field(
                "predictionClass", "Version", "a dotted name module.Class", prediction_class
            )
        code["predictionClass"] = prediction_class
    packages = body.get("packageUris")
    if packages is not None:
        if not isinstance(packages, list):
            raise invalid_field("packageUris", "Version", "a list of package URIs", packages)
        for index, uri in enumerate(packages):
            if not (
                isinstance(uri, str)
                and _absolute_or_url(uri)
                and uri.rsplit("/", 1)[-1].endswith(PACKAGE_SUFFIXES)
            ):
                raise invalid_field(
                    f"packageUris[{index}]",
                    "Version",
                    "an absolute path or URL of a package ending in .tar.gz, .zip or .whl",
                    uri,
                )
        if packages:
            code["packageUris"] = list(packages)
    return code


def validate_version_object(field: str, value: object) -> dict[str, Any] | None:
    """One object field of a `Version` (``autoScaling``, ``manualScaling``,
    ``requestLoggingConfig``, ``explanationConfig``, ``acceleratorConfig``) normalised (proto
    names read as JSON names); None when unset.

    Raises:
        InvalidArgument: not an object, an unknown member, or a member of the wrong type or out
            of range (the message names it, e.g. ``autoScaling.minNodes``).
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise invalid_field(field, "Version", "an object", value)
    value = proto_body(value, VERSION_OBJECT_FIELDS[field], "Version", field)
    result: dict[str, Any] = {}
    if field == "autoScaling":
        for leaf in ("minNodes", "maxNodes"):
            if value.get(leaf) is not None:
                result[leaf] = _int32(value[leaf], f"autoScaling.{leaf}")
        least = result.get("minNodes", 0)
        if 0 < result.get("maxNodes", 0) < least:  # 0: unset, as in proto3
            raise invalid_field(
                "autoScaling.maxNodes", "Version", f"0 or >= minNodes ({least})", value["maxNodes"]
            )
        if value.get("metrics") is not None:
            result["metrics"] = _metrics(value["metrics"])
    elif field == "manualScaling":
        if value.get("nodes") is not None:
            result["nodes"] = _int32(value["nodes"], "manualScaling.nodes")
    elif field == "requestLoggingConfig":
        sampling = value.get("samplingPercentage")
        if sampling is not None:
            if (
                isinstance(sampling, bool)
                or not isinstance(sampling, int | float)
                or not 0 <= sampling <= 1
            ):
                raise invalid_field(
                    "requestLoggingConfig.samplingPercentage",
                    "Version",
                    "a number from 0 to 1",
                    sampling,
                )
            result["samplingPercentage"] = sampling
        table = value.get("bigqueryTableName")
        if table is not None:
            if not isinstance(table, str) or not _BIGQUERY_TABLE.fullmatch(table):
                raise invalid_field(
                    "requestLoggingConfig.bigqueryTableName",
                    "Version",
                    "a table name 'project.dataset.table'",
                    table,
                )
            result["bigqueryTableName"] = table
    elif field == "acceleratorConfig":
        result = validate_accelerator_config(value, field, "Version")
    else:
        result = _explanation_config(value)
    return result


_EXPLANATION_METHODS = {
    "integratedGradientsAttribution": "numIntegralSteps",
    "sampledShapleyAttribution": "numPaths",
    "xraiAttribution": "numIntegralSteps",
}


def _explanation_config(value: Mapping[str, Any]) -> dict[str, Any]:
    """An `ExplanationConfig`: at most one attribution method with its step or path count."""
    methods = [method for method in _EXPLANATION_METHODS if value.get(method) is not None]
    if len(methods) > 1:
        raise InvalidArgument(
            "The 'explanationConfig' field of Version takes one of "
            f"{', '.join(_EXPLANATION_METHODS)}; got {', '.join(methods)}."
        )
    if not methods:
        return {}
    method = methods[0]
    settings = value[method]
    if not isinstance(settings, Mapping):
        raise invalid_field(f"explanationConfig.{method}", "Version", "an object", settings)
    count_field = _EXPLANATION_METHODS[method]
    settings = proto_body(
        settings, frozenset({count_field}), "Version", f"explanationConfig.{method}"
    )
    normalised: dict[str, Any] = {}
    if settings.get(count_field) is not None:
        normalised[count_field] = _int32(settings[count_field], f"explanationConfig.{method}."
                                         f"{count_field}")  # fmt: skip
    return {method: normalised}


def default_version_name(body: Mapping[str, Any], project: str, model: str) -> str:
    """The short version name a models.patch body gives in ``defaultVersion.name`` (or
    ``default_version.name``): ``v1`` or ``projects/P/models/M/versions/v1`` of this model.

    Raises:
        InvalidArgument: missing, not such a name, or the name of another model's version.
    """
    field = "default_version" if "default_version" in body else "defaultVersion"
    given = body.get(field)
    if given is not None and not isinstance(given, Mapping):
        raise invalid_field(field, "Model", "an object {'name': VERSION}", given)
    name = (given or {}).get("name")
    prefix = f"projects/{project}/models/{model}/versions/"
    short = name[len(prefix) :] if isinstance(name, str) and name.startswith(prefix) else name
    if not isinstance(short, str) or not _NAME.fullmatch(short):
        raise invalid_field(
            f"{field}.name",
            "Model",
            f"the name of a version of this model, such as 'v1' or '{prefix}v1'",
            name,
        )
    return short


def _absolute_or_url(uri: str) -> bool:
    return uri.startswith("/") or bool(_URL.match(uri))


def _int32(value: object, field: str) -> int:
    """A non-negative int32 given as a JSON number or (proto3 JSON) a decimal string."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"[0-9]{1,10}", value):
        number = int(value)
    if number is None or not 0 <= number <= _INT32_MAX:
        raise invalid_field(field, "Version", "an integer >= 0", value)
    return number


def _metrics(value: object) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise invalid_field("autoScaling.metrics", "Version", "a list of {name, target}", value)
    result = []
    for index, metric in enumerate(value):
        where = f"autoScaling.metrics[{index}]"
        if not isinstance(metric, Mapping):
            raise invalid_field(where, "Version", "an object {name, target}", metric)
        metric = proto_body(metric, _METRIC_FIELDS, "Version", where)
        name = metric.get("name", _METRIC_NAMES[0])
        if not isinstance(name, str) or name not in _METRIC_NAMES:
            raise invalid_field(
                f"{where}.name", "Version", "one of " + ", ".join(_METRIC_NAMES), name
            )
        entry: dict[str, Any] = {"name": name}
        if metric.get("target") is not None:
            entry["target"] = _int32(metric["target"], f"{where}.target")
        result.append(entry)
    return result


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
    if spec.get("predictionClass"):  # AI Platform: unset for custom prediction routines
        spec.pop("framework", None)  # (stored as CUSTOM before 2026-12)
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
    if record.error is not None and record.error.get("code") == 1:  # CANCELLED
        metadata["isCancellationRequested"] = True
    if record.snapshot is not None:
        metadata["version"] = dict(record.snapshot)
        if record.snapshot.get("labels"):  # inherited from the version operated on
            metadata["labels"] = dict(record.snapshot["labels"])
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
