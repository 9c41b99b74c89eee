"""Predictors: a loaded model that answers ``predict(instances, **kwargs)``, one per framework.

`load_predictor` reads a local version directory: it detects the framework from the model file
(`detect_framework`, AI Platform's rule extended to LightGBM, PyTorch, Keras and ONNX), loads
the predictor registered for it in `FRAMEWORKS` (imported only then: importing this package
imports no ML framework), and applies the directory's ``preprocessor.joblib`` to raw instances
when there is one. Every predictor implements the `Predictor` seam, AI Platform's custom
prediction routine interface.
"""

from __future__ import annotations

from mlengine.prediction.predictors._base import (
    B64_FRAMEWORKS,
    INPUT_EXAMPLE_FILE,
    PREPROCESSOR_FILE,
    Framework,
    ModelLoadError,
    PredictionError,
    Predictor,
    TensorInput,
    TensorSignature,
    decode_b64,
    read_input_example,
)
from mlengine.prediction.predictors._loading import (
    FRAMEWORKS,
    MODEL_FILES,
    detect_framework,
    load_predictor,
    predictor_class,
)

__all__ = [
    "B64_FRAMEWORKS",
    "FRAMEWORKS",
    "INPUT_EXAMPLE_FILE",
    "MODEL_FILES",
    "PREPROCESSOR_FILE",
    "Framework",
    "ModelLoadError",
    "PredictionError",
    "Predictor",
    "TensorInput",
    "TensorSignature",
    "decode_b64",
    "detect_framework",
    "load_predictor",
    "predictor_class",
    "read_input_example",
]
