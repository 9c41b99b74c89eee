"""What the serving flags of ``versions create`` and ``versions update`` (gcloud's
``--machine-type``, ``--accelerator``, ``--min-nodes``, ``--metric-targets``,
``--explanation-method``, ``--bigquery-table-name``...) set on a Version."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlengine.errors import InvalidArgument, invalid_field
from mlengine.jobs._submission import parse_accelerator

__all__ = [
    "explanation_config",
    "request_logging_flags",
    "version_flags",
    "with_request_logging",
]

_METRIC_NAMES = {"cpu-usage": "CPU_USAGE", "gpu-duty-cycle": "GPU_DUTY_CYCLE"}
"""``--metric-targets`` names and their `autoScaling.metrics` names, in gcloud's order."""
_EXPLANATION_METHODS = {
    "integrated-gradients": ("integratedGradientsAttribution", "--num-integral-steps"),
    "sampled-shapley": ("sampledShapleyAttribution", "--num-paths"),
    "xrai": ("xraiAttribution", "--num-integral-steps"),
}
"""``--explanation-method`` choices: the `explanationConfig` member and the flag of its count."""
_COUNT_FIELDS = {"--num-integral-steps": "numIntegralSteps", "--num-paths": "numPaths"}
_DEFAULT_EXPLANATION_COUNT = 50


def _bad_flag(flag: str, expected: str, got: object) -> InvalidArgument:
    """The bad-argument template for a whole flag: ``The --min-nodes flag must be ...``."""
    return InvalidArgument(f"The {flag} flag must be {expected}. Got {got!r}.")


def _metric_targets(text: str) -> list[dict[str, Any]]:
    """``cpu-usage=60,gpu-duty-cycle=60`` as `autoScaling.metrics`, in gcloud's order (a name
    given twice keeps its last target).

    Raises:
        InvalidArgument: an unknown metric name or a target that is not an integer 0-100.
    """
    targets: dict[str, int] = {}
    for pair in text.split(","):
        if not pair.strip():
            continue
        name, _, target = (part.strip() for part in pair.partition("="))
        if name not in _METRIC_NAMES:
            raise invalid_field("name", "--metric-targets", " or ".join(_METRIC_NAMES), name)
        if not target.isdecimal() or int(target) > 100:
            raise invalid_field(name, "--metric-targets", "an integer from 0 to 100", target)
        targets[name] = int(target)
    return [{"name": _METRIC_NAMES[n], "target": targets[n]} for n in _METRIC_NAMES if n in targets]


def explanation_config(
    method: str | None, num_integral_steps: int | None, num_paths: int | None
) -> dict[str, Any] | None:
    """The `explanationConfig` of ``--explanation-method`` and its count flag, as gcloud
    builds it; None without the method.

    Raises:
        InvalidArgument: an unknown method, a count below 1, or a count flag the method (or
            its absence) leaves unused.
    """
    counts = {"--num-integral-steps": num_integral_steps, "--num-paths": num_paths}
    if method is None:
        for flag, value in counts.items():
            if value is not None:
                raise InvalidArgument(f"The {flag} flag needs --explanation-method.")
        return None
    if method not in _EXPLANATION_METHODS:
        raise _bad_flag("--explanation-method", "one of " + ", ".join(_EXPLANATION_METHODS), method)
    attribution, count_flag = _EXPLANATION_METHODS[method]
    for flag, value in counts.items():
        if flag != count_flag and value is not None:
            raise InvalidArgument(
                f"The {flag} flag does not apply to --explanation-method {method} (it takes "
                f"{count_flag})."
            )
    count = counts[count_flag]
    count = _DEFAULT_EXPLANATION_COUNT if count is None else count
    if count < 1:
        raise _bad_flag(count_flag, "an integer >= 1", count)
    return {attribution: {_COUNT_FIELDS[count_flag]: count}}


def version_flags(
    *,
    machine_type: str | None,
    accelerator: str | None,
    min_nodes: int | None,
    max_nodes: int | None,
    metric_targets: str | None,
    service_account: str | None,
    explanation_method: str | None,
    num_integral_steps: int | None,
    num_paths: int | None,
) -> dict[str, Any]:
    """The Version fields that ``versions create``'s serving flags set (those given only).

    Raises:
        InvalidArgument: a flag value that cannot be right (the message names the flag).
    """
    fields: dict[str, Any] = {}
    if machine_type:
        fields["machineType"] = machine_type
    if accelerator:
        fields["acceleratorConfig"] = parse_accelerator(accelerator, "--accelerator")
    scaling: dict[str, Any] = {}
    for flag, value, member in (
        ("--min-nodes", min_nodes, "minNodes"),
        ("--max-nodes", max_nodes, "maxNodes"),
    ):
        if value is not None:
            if value < 0:
                raise _bad_flag(flag, "an integer >= 0", value)
            scaling[member] = value
    if metric_targets:
        scaling["metrics"] = _metric_targets(metric_targets)
    if scaling:
        fields["autoScaling"] = scaling
    if service_account:
        fields["serviceAccount"] = service_account
    explanation = explanation_config(explanation_method, num_integral_steps, num_paths)
    if explanation is not None:
        fields["explanationConfig"] = explanation
    return fields


def request_logging_flags(
    bigquery_table_name: str | None, sampling_percentage: float | None
) -> dict[str, Any]:
    """The `requestLoggingConfig` members that ``versions update``'s flags set.

    Raises:
        InvalidArgument: a sampling percentage outside 0-1.
    """
    members: dict[str, Any] = {}
    if bigquery_table_name is not None:
        members["bigqueryTableName"] = bigquery_table_name
    if sampling_percentage is not None:
        if not 0 <= sampling_percentage <= 1:
            raise _bad_flag("--sampling-percentage", "a number from 0 to 1", sampling_percentage)
        members["samplingPercentage"] = sampling_percentage
    return members


def with_request_logging(
    settings: Mapping[str, Any],
    current: Mapping[str, Any],
    request_logging: Mapping[str, Any],
    config: Path | None,
) -> dict[str, Any]:
    """`settings` (the ``--config``) with the request logging flags applied: the mask
    replaces the whole object, so the members neither the flags nor the file give keep their
    `current` values.

    Raises:
        InvalidArgument: the file's requestLoggingConfig is not a mapping.
    """
    from_file = settings.get("requestLoggingConfig") or {}
    if not isinstance(from_file, Mapping):
        raise invalid_field("requestLoggingConfig", f"the config {config}", "a mapping", from_file)
    merged = {**(current.get("requestLoggingConfig") or {}), **from_file, **request_logging}
    return {**settings, "requestLoggingConfig": merged}
