"""Online prediction: framework predictors, the micro-batcher, loaded versions and serving.

Names load lazily, so that ``import mlengine.prediction`` imports no ML framework.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlengine.prediction._serving import PredictionService
    from mlengine.prediction.predictors import Predictor, load_predictor

__all__ = ["PredictionService", "Predictor", "load_predictor"]

_LOCATIONS = {
    "PredictionService": "mlengine.prediction._serving",
    "Predictor": "mlengine.prediction.predictors",
    "load_predictor": "mlengine.prediction.predictors",
}


def __getattr__(name: str) -> Any:
    if name not in _LOCATIONS:
        raise AttributeError(f"module 'mlengine.prediction' has no attribute {name!r}")
    return getattr(importlib.import_module(_LOCATIONS[name]), name)
