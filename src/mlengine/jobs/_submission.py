"""Build a ml v1 `Job` body from gcloud-style flags and an optional ``--config`` file.

As gcloud does: the config file (YAML or JSON, a whole `Job`) comes first, then flags win.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml

from mlengine.errors import InvalidArgument, invalid_field
from mlengine.jobs._resource import ACCELERATOR_TYPES

__all__ = ["build_training_job", "load_job_config", "parse_accelerator", "parse_labels"]

_MACHINE_TYPE_FLAGS = (
    "masterType",
    "workerType",
    "parameterServerType",
    "evaluatorType",
)


def load_job_config(path: str | Path, resource: str = "Job") -> dict[str, Any]:
    """Read a `Job` (or the `resource` named) from a YAML or JSON file.

    Raises:
        InvalidArgument: the file is missing, not UTF-8, unparsable or not a mapping.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise InvalidArgument(f"Cannot read the config file {file}: {error.strerror}.") from None
    except UnicodeDecodeError as error:
        raise InvalidArgument(
            f"The config file {file} is not UTF-8 text (byte {error.start})."
        ) from None
    try:
        data = orjson.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, orjson.JSONDecodeError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        detail = str(error).replace("\n", " ")
        raise InvalidArgument(
            f"The config file {file} is not valid YAML or JSON: {detail or first_line}"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidArgument(f"The config file {file} must hold a {resource} object (a mapping).")
    return data


def parse_labels(text: str | Sequence[str] | Mapping[str, str] | None) -> dict[str, str]:
    """``"k=v,k2=v2"`` (or a list of such, or a mapping) as a dict.

    Raises:
        InvalidArgument: an item without ``=``.
    """
    if text is None:
        return {}
    if isinstance(text, Mapping):
        return {str(k): str(v) for k, v in text.items()}
    items = [text] if isinstance(text, str) else list(text)
    labels: dict[str, str] = {}
    for item in items:
        for pair in item.split(","):
            if not pair.strip():
                continue
            key, sep, value = pair.partition("=")
            if not sep:
                raise InvalidArgument(f"The label {pair!r} must be KEY=VALUE.")
            labels[key.strip()] = value.strip()
    return labels


def parse_accelerator(text: str, flag: str) -> dict[str, Any]:
    """``type=nvidia-tesla-t4,count=2`` as an `acceleratorConfig` (gcloud's flag: the type in
    either spelling, the count 1 when left out).

    Raises:
        InvalidArgument: a key other than type/count, a missing or unknown type, or a count
            that is not an integer >= 1 (the message names `flag`).
    """
    fields: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in ("type", "count"):
            raise InvalidArgument(
                f"The {flag} flag takes type=TYPE[,count=COUNT]; got {item!r} in {text!r}."
            )
        fields[key.strip()] = value.strip()
    kind = fields.get("type", "").upper().replace("-", "_")
    if not kind:
        raise InvalidArgument(f"The {flag} flag needs type=TYPE (e.g. type=nvidia-tesla-t4).")
    if kind not in ACCELERATOR_TYPES or kind == "ACCELERATOR_TYPE_UNSPECIFIED":
        known = sorted(t.lower().replace("_", "-") for t in ACCELERATOR_TYPES)
        raise InvalidArgument(
            f"The {flag} flag names an unknown accelerator type {fields['type']!r}: one of "
            + ", ".join(t for t in known if t != "accelerator-type-unspecified")
            + "."
        )
    count = fields.get("count", "1")
    if not re.fullmatch(r"\d+", count) or int(count) < 1:
        raise invalid_field("count", flag, "an integer >= 1", count)
    return {"type": kind, "count": count}


def build_training_job(
    job_id: str,
    *,
    config: Mapping[str, Any] | None = None,
    module_name: str | None = None,
    package_uris: Sequence[str] = (),
    job_dir: str | None = None,
    args: Sequence[str] = (),
    scale_tier: str | None = None,
    region: str | None = None,
    runtime_version: str | None = None,
    python_version: str | None = None,
    master_machine_type: str | None = None,
    master_accelerator: str | None = None,
    worker_machine_type: str | None = None,
    worker_count: int | None = None,
    worker_accelerator: str | None = None,
    parameter_server_machine_type: str | None = None,
    parameter_server_count: int | None = None,
    evaluator_machine_type: str | None = None,
    evaluator_count: int | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The `Job` body for ``jobs submit training``; flags override the config file.

    A machine type or replica count given without a scale tier selects ``CUSTOM``.

    Raises:
        InvalidArgument: flags that must come together do not, or the config is malformed.
    """
    job = copy.deepcopy(dict(config or {}))
    training = job.get("trainingInput") or {}
    if not isinstance(training, dict):
        raise InvalidArgument("The 'trainingInput' of the config file must be a mapping.")
    job["jobId"] = job_id
    if (parameter_server_machine_type is None) != (parameter_server_count is None):
        raise InvalidArgument(
            "--parameter-server-machine-type and --parameter-server-count must be given together."
        )
    if worker_count is not None and worker_machine_type is None and not training.get("workerType"):
        raise InvalidArgument("--worker-count needs --worker-machine-type.")
    overrides: dict[str, Any] = {
        "pythonModule": module_name,
        "jobDir": job_dir,
        "region": region,
        "runtimeVersion": runtime_version,
        "pythonVersion": python_version,
        "masterType": master_machine_type,
        "workerType": worker_machine_type,
        "workerCount": worker_count,
        "parameterServerType": parameter_server_machine_type,
        "parameterServerCount": parameter_server_count,
        "evaluatorType": evaluator_machine_type,
        "evaluatorCount": evaluator_count,
    }
    for field, value in overrides.items():
        if value is not None:
            training[field] = str(value) if field.endswith("Count") else value
    if scale_tier is not None:
        training["scaleTier"] = scale_tier.upper().replace("-", "_")
    elif "scaleTier" not in training and any(overrides[f] is not None for f in _MACHINE_TYPE_FLAGS):
        training["scaleTier"] = "CUSTOM"
    if package_uris:
        training["packageUris"] = list(package_uris)
    if args:
        training["args"] = list(args)
    for field, accelerator, flag in (
        ("masterConfig", master_accelerator, "--master-accelerator"),
        ("workerConfig", worker_accelerator, "--worker-accelerator"),
    ):
        if accelerator:
            replica = dict(training.get(field) or {})
            replica["acceleratorConfig"] = parse_accelerator(accelerator, flag)
            training[field] = replica
    job["trainingInput"] = training
    if labels:
        job["labels"] = {**(job.get("labels") or {}), **labels}
    return job
