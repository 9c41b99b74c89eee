"""The ml v1 `Job` resource: validation of request bodies and rendering of stored jobs.

Request bodies are validated here with one message template (`invalid_field`); unknown fields
are dropped, never rejected and never echoed back (AIPLATFORM.md §1.2). int64 fields are
accepted as numbers or strings and always emitted as strings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mlengine.errors import InvalidArgument, invalid_field
from mlengine.jobs._scale_tiers import replicas_for, scale_tier_of
from mlengine.store import JobRecord
from mlengine.store._metadata import rfc3339 as store_rfc3339

__all__ = [
    "ACCELERATOR_TYPES",
    "JOB_ID_PATTERN",
    "LIST_FILTER_FIELDS",
    "job_resource",
    "rfc3339",
    "validate_job_id",
    "validate_labels",
    "validate_training_input",
]

JOB_ID_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,127}$")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
LIST_FILTER_FIELDS = frozenset({"jobId", "state", "labels", "createTime"})

_INT64_FIELDS = ("workerCount", "parameterServerCount", "evaluatorCount")
_STRING_FIELDS = (
    "masterType",
    "workerType",
    "parameterServerType",
    "evaluatorType",
    "pythonModule",
    "region",
    "jobDir",
    "runtimeVersion",
    "pythonVersion",
    "network",
    "serviceAccount",
)
_REPLICA_CONFIGS = ("masterConfig", "workerConfig", "parameterServerConfig", "evaluatorConfig")
ACCELERATOR_TYPES: frozenset[str] = frozenset(
    {
        "ACCELERATOR_TYPE_UNSPECIFIED",
        "NVIDIA_TESLA_K80",
        "NVIDIA_TESLA_P100",
        "NVIDIA_TESLA_V100",
        "NVIDIA_TESLA_P4",
        "NVIDIA_TESLA_T4",
        "NVIDIA_TESLA_A100",
        "TPU_V2",
        "TPU_V3",
        "TPU_V2_POD",
        "TPU_V3_POD",
        "TPU_V4_POD",
    }
)
"""AI Platform's AcceleratorType values (an acceleratorConfig's ``type``)."""
_DURATION = re.compile(r"^\d+(\.\d+)?s$")
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def validate_job_id(job_id: object) -> str:
    """Return `job_id` when it is a valid ml v1 job id.

    Raises:
        InvalidArgument: not a string of letters, digits and underscores starting with a letter.
    """
    if not isinstance(job_id, str) or not JOB_ID_PATTERN.fullmatch(job_id):
        raise invalid_field(
            "jobId",
            "Job",
            "1 to 128 letters, digits or underscores, starting with a letter",
            job_id,
        )
    return job_id


def validate_labels(labels: object, owner: str = "Job") -> dict[str, str]:
    """Return `labels` as a dict when keys and values follow the Cloud label rules.

    Raises:
        InvalidArgument: not a mapping of valid keys to valid values.
    """
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise invalid_field("labels", owner, "a map of strings", labels)
    if len(labels) > 64:
        raise invalid_field("labels", owner, "at most 64 labels", len(labels))
    result: dict[str, str] = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not _LABEL_KEY.fullmatch(key):
            raise invalid_field(
                f"labels.{key}",
                owner,
                "a key of lowercase letters, digits, '_' or '-', starting with a letter",
                key,
            )
        if not isinstance(value, str) or not _LABEL_VALUE.fullmatch(value):
            raise invalid_field(
                f"labels.{key}", owner, "a value of lowercase letters, digits, '_' or '-'", value
            )
        result[key] = value
    return result


def _int64(training_input: Mapping[str, Any], field: str) -> str | None:
    if field not in training_input or training_input[field] in (None, ""):
        return None
    return _int64_text(training_input[field], field, "TrainingInput")


def _int64_text(value: object, field: str, owner: str) -> str:
    """An int64 >= 0 given as a JSON number or a decimal string, as proto3 JSON writes it."""
    try:
        number = int(value)  # type: ignore[call-overload]
        valid = number >= 0 and str(value).strip() in (str(number), f"{number}.0")
    except (TypeError, ValueError):
        valid = False
    if isinstance(value, bool) or not valid:
        raise invalid_field(field, owner, "an integer >= 0", value)
    return str(number)


def validate_accelerator_config(value: object, field: str, owner: str) -> dict[str, str]:
    """An `AcceleratorConfig` (``{"count": int64, "type": AcceleratorType}``) normalised: the
    count as a decimal string (proto3 JSON's int64), the type defaulting to
    ``ACCELERATOR_TYPE_UNSPECIFIED``; unknown members dropped.

    Raises:
        InvalidArgument: not an object, an unknown type or a count that is not an integer
            >= 0 (the message names `field`'s member).
    """
    if not isinstance(value, Mapping):
        raise invalid_field(field, owner, "an object", value)
    kind = value.get("type", "ACCELERATOR_TYPE_UNSPECIFIED")
    if not isinstance(kind, str) or kind not in ACCELERATOR_TYPES:
        raise invalid_field(
            f"{field}.type", owner, "one of " + ", ".join(sorted(ACCELERATOR_TYPES)), kind
        )
    return {"count": _int64_text(value.get("count", 0), f"{field}.count", owner), "type": kind}


def _replica_config(value: object, field: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise invalid_field(field, "TrainingInput", "an object (ReplicaConfig)", value)
    config: dict[str, Any] = {}
    if value.get("imageUri"):
        raise InvalidArgument(
            f"The '{field}.imageUri' field of TrainingInput names a custom container; the local "
            "runner runs Python packages only. Use --package-path/--packages and --module-name."
        )
    accelerator = value.get("acceleratorConfig")
    if accelerator is not None:
        config["acceleratorConfig"] = validate_accelerator_config(
            accelerator, f"{field}.acceleratorConfig", "TrainingInput"
        )
    disk = value.get("diskConfig")
    if isinstance(disk, Mapping):
        config["diskConfig"] = {k: disk[k] for k in ("bootDiskSizeGb", "bootDiskType") if k in disk}
    return config


def validate_training_input(training_input: object) -> dict[str, Any]:
    """Return the normalised TrainingInput of a training job request.

    Keeps the known fields only, turns int64 fields into strings and always sets `scaleTier`.

    Raises:
        InvalidArgument: a field is missing, of the wrong type or out of range.
    """
    if not isinstance(training_input, Mapping):
        raise invalid_field("trainingInput", "Job", "an object (TrainingInput)", training_input)
    result: dict[str, Any] = {}
    for field in _STRING_FIELDS:
        value = training_input.get(field)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise invalid_field(field, "TrainingInput", "a string", value)
        result[field] = value
    result["scaleTier"] = scale_tier_of(training_input)
    for field in _INT64_FIELDS:
        count = _int64(training_input, field)
        if count is not None:
            result[field] = count
    for field in _REPLICA_CONFIGS:
        if training_input.get(field) is not None:
            result[field] = _replica_config(training_input[field], field)
    if training_input.get("hyperparameters") is not None:
        raise InvalidArgument(
            "The 'hyperparameters' field of TrainingInput asks for hyperparameter tuning, which "
            "this mlengine version does not run yet; submit the job without it."
        )
    if not result.get("pythonModule"):
        raise InvalidArgument("The 'pythonModule' field of TrainingInput is required.")
    if not _MODULE_NAME.fullmatch(result["pythonModule"]):
        raise invalid_field(
            "pythonModule", "TrainingInput", "a dotted module name", result["pythonModule"]
        )
    packages = training_input.get("packageUris")
    if not isinstance(packages, list) or not packages:
        raise InvalidArgument(
            "The 'packageUris' field of TrainingInput is required: a list of 1 to 100 package "
            "URIs (sdists or wheels)."
        )
    if len(packages) > 100 or not all(isinstance(p, str) and p for p in packages):
        raise invalid_field("packageUris", "TrainingInput", "a list of 1 to 100 URIs", packages)
    result["packageUris"] = list(packages)
    args = training_input.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise invalid_field("args", "TrainingInput", "a list of strings", args)
    result["args"] = list(args)
    scheduling = training_input.get("scheduling")
    if scheduling is not None:
        if not isinstance(scheduling, Mapping):
            raise invalid_field("scheduling", "TrainingInput", "an object", scheduling)
        kept: dict[str, Any] = {}
        for key in ("maxRunningTime", "maxWaitTime"):
            if key in scheduling:
                if not isinstance(scheduling[key], str) or not _DURATION.fullmatch(scheduling[key]):
                    raise invalid_field(
                        f"scheduling.{key}",
                        "TrainingInput",
                        "a duration such as '3600s'",
                        scheduling[key],
                    )
                kept[key] = scheduling[key]
        if "priority" in scheduling:
            kept["priority"] = scheduling["priority"]
        result["scheduling"] = kept
    replicas_for(result)  # rejects tier/count combinations AI Platform rejects
    return result


def rfc3339(value: Any) -> str | None:
    """A datetime as RFC 3339 UTC with a ``Z`` (what ml v1 emits), or None."""
    return None if value is None else store_rfc3339(value)


def job_resource(record: JobRecord, queue_position: int | None = None) -> dict[str, Any]:
    """Render a stored job as the ml v1 `Job` JSON object."""
    resource: dict[str, Any] = {
        "jobId": record.job_id,
        "createTime": rfc3339(record.create_time),
        "state": record.state,
    }
    if record.start_time is not None:
        resource["startTime"] = rfc3339(record.start_time)
    if record.end_time is not None:
        resource["endTime"] = rfc3339(record.end_time)
    if record.error_message:
        resource["errorMessage"] = record.error_message
    if record.labels:
        resource["labels"] = dict(record.labels)
    if record.training_input is not None:
        resource["trainingInput"] = dict(record.training_input)
    if record.training_output is not None:
        resource["trainingOutput"] = dict(record.training_output)
    if record.prediction_input is not None:
        resource["predictionInput"] = dict(record.prediction_input)
    if record.prediction_output is not None:
        resource["predictionOutput"] = dict(record.prediction_output)
    if record.state == "QUEUED" and queue_position is not None:
        resource["jobPosition"] = str(queue_position)
    elif record.state != "QUEUED":
        resource["jobPosition"] = "0"
    resource["etag"] = record.etag
    return resource
