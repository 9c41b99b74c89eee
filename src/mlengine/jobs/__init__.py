"""Training jobs: the Job resource, packaging, the scheduler and runners.

Names load lazily, so importing a submodule (a runner, the cluster environment) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlengine.jobs._scale_tiers import SCALE_TIERS, replicas_for
    from mlengine.jobs._scheduler import Scheduler
    from mlengine.jobs._service import JobService
    from mlengine.jobs._state import JobState

__all__ = ["SCALE_TIERS", "JobService", "JobState", "Scheduler", "replicas_for"]

_LOCATIONS = {
    "SCALE_TIERS": "mlengine.jobs._scale_tiers",
    "replicas_for": "mlengine.jobs._scale_tiers",
    "Scheduler": "mlengine.jobs._scheduler",
    "JobService": "mlengine.jobs._service",
    "JobState": "mlengine.jobs._state",
}


def __getattr__(name: str) -> Any:
    if name not in _LOCATIONS:
        raise AttributeError(f"module 'mlengine.jobs' has no attribute {name!r}")
    return getattr(importlib.import_module(_LOCATIONS[name]), name)
