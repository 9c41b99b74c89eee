"""Scale tiers and machine fields of a TrainingInput, mapped to the replicas we start.

On AI Platform a scale tier picks a cluster shape. Locally we start the same number of replica
processes, so a trainer sees the same `TF_CONFIG` cluster as in the cloud:

=============  ======  =======  ====  ===============================================
scaleTier      master  workers  ps    notes
=============  ======  =======  ====  ===============================================
BASIC          1       0        0     the default when `scaleTier` is absent
BASIC_GPU      1       0        0     the master gets one GPU (``CUDA_VISIBLE_DEVICES``)
BASIC_TPU      1       0        0     no TPU here; runs as BASIC
STANDARD_1     1       4        3     AI Platform's documented shape
PREMIUM_1      1       19       11    AI Platform's documented shape (31 processes)
CUSTOM         1       workerCount  parameterServerCount  plus evaluatorCount evaluators
=============  ======  =======  ====  ===============================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlengine.errors import InvalidArgument, invalid_field
from mlengine.jobs.runners import ReplicaSpec

__all__ = ["SCALE_TIERS", "replicas_for", "scale_tier_of"]

SCALE_TIERS: dict[str, tuple[int, int]] = {
    "BASIC": (0, 0),
    "BASIC_GPU": (0, 0),
    "BASIC_TPU": (0, 0),
    "STANDARD_1": (4, 3),
    "PREMIUM_1": (19, 11),
    "CUSTOM": (0, 0),
}
"""Scale tier -> (worker count, parameter server count); every tier has one master."""


def scale_tier_of(training_input: Mapping[str, Any]) -> str:
    """Return the job's scale tier, `BASIC` when absent (the proto default).

    Raises:
        InvalidArgument: the tier is not one of `SCALE_TIERS`.
    """
    tier = training_input.get("scaleTier") or "BASIC"
    if not isinstance(tier, str) or tier.upper().replace("-", "_") not in SCALE_TIERS:
        expected = "one of " + ", ".join(SCALE_TIERS)
        raise invalid_field("scaleTier", "TrainingInput", expected, tier)
    return tier.upper().replace("-", "_")


MAX_REPLICAS_PER_TYPE = 1000
"""The largest replica count of one type a job may ask for (each replica is a process)."""


def _count(training_input: Mapping[str, Any], field: str) -> int:
    value = training_input.get(field, 0) or 0
    expected = f"an integer between 0 and {MAX_REPLICAS_PER_TYPE}"
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise invalid_field(field, "TrainingInput", expected, value) from None
    valid = str(value).strip() in (str(count), f"{count}.0")
    if isinstance(value, bool) or not valid or not 0 <= count <= MAX_REPLICAS_PER_TYPE:
        raise invalid_field(field, "TrainingInput", expected, value)
    return count


def replicas_for(training_input: Mapping[str, Any]) -> list[ReplicaSpec]:
    """The replicas to start for `training_input`: master first, then workers, ps, evaluators.

    Raises:
        InvalidArgument: an unknown tier, a CUSTOM tier without `masterType`, or counts given
            without their machine type (as AI Platform rejects them).
    """
    tier = scale_tier_of(training_input)
    if tier == "CUSTOM":
        if not training_input.get("masterType") and not training_input.get("masterConfig"):
            raise InvalidArgument(
                "The 'masterType' field of TrainingInput is required when scaleTier is CUSTOM."
            )
        workers = _count(training_input, "workerCount")
        servers = _count(training_input, "parameterServerCount")
        evaluators = _count(training_input, "evaluatorCount")
        for count, count_field, type_field in (
            (workers, "workerCount", "workerType"),
            (servers, "parameterServerCount", "parameterServerType"),
            (evaluators, "evaluatorCount", "evaluatorType"),
        ):
            if count and not training_input.get(type_field):
                raise InvalidArgument(
                    f"The '{type_field}' field of TrainingInput is required when "
                    f"'{count_field}' is greater than 0."
                )
    else:
        for count_field in ("workerCount", "parameterServerCount", "evaluatorCount"):
            if _count(training_input, count_field):
                raise InvalidArgument(
                    f"The '{count_field}' field of TrainingInput needs scaleTier CUSTOM. "
                    f"Got scaleTier {tier}."
                )
        workers, servers = SCALE_TIERS[tier]
        evaluators = 0
    replicas = [ReplicaSpec("master", 0)]
    replicas += [ReplicaSpec("worker", i) for i in range(workers)]
    replicas += [ReplicaSpec("ps", i) for i in range(servers)]
    replicas += [ReplicaSpec("evaluator", i) for i in range(evaluators)]
    return replicas
