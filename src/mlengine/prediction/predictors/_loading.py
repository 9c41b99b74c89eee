"""Which predictor serves a version directory: the registry, detection and loading."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from mlengine.errors import InvalidArgument, MLEngineError
from mlengine.prediction.predictors._base import (
    PREPROCESSOR_FILE,
    Framework,
    ModelLoadError,
    Predictor,
    error_detail,
)

__all__ = ["FRAMEWORKS", "MODEL_FILES", "detect_framework", "load_model", "load_predictor"]

_PACKAGE = "mlengine.prediction.predictors"

FRAMEWORKS: dict[str, str] = {
    "SCIKIT_LEARN": f"{_PACKAGE}._sklearn:SklearnPredictor",
    "XGBOOST": f"{_PACKAGE}._xgboost:XGBoostPredictor",
    "LIGHTGBM": f"{_PACKAGE}._lightgbm:LightGBMPredictor",
    "PYTORCH": f"{_PACKAGE}._pytorch:PyTorchPredictor",
    "KERAS": f"{_PACKAGE}._keras:KerasPredictor",
    "ONNX": f"{_PACKAGE}._onnx:ONNXPredictor",
    "TENSORFLOW": f"{_PACKAGE}._tensorflow:TensorFlowPredictor",
}
"""The built-in predictors by framework name, as ``module:Class`` (imported when used)."""

MODEL_FILES: dict[str, str | None] = {
    "saved_model.pb": "TENSORFLOW",
    "saved_model.pbtxt": "TENSORFLOW",
    "model.bst": "XGBOOST",
    "model.json": "XGBOOST",
    "model.ubj": "XGBOOST",
    "model.txt": "LIGHTGBM",
    "model.onnx": "ONNX",
    "model.pt2": "PYTORCH",
    "model.pt": "PYTORCH",
    "model.keras": "KERAS",
    "model.skops": "SCIKIT_LEARN",
    "model.joblib": None,
    "model.pkl": None,
}
"""The model file names detection looks for, and the framework each means (None: a pickle,
decided by the class of the object it holds). ``model.json`` counts only when it is an XGBoost
JSON model."""

_UNSPECIFIED = frozenset({"", "FRAMEWORK_UNSPECIFIED"})


def _is_xgboost_json(path: Path, *, binary_json: bool = False) -> bool:
    """True when `path` looks like an XGBoost JSON model (or, with `binary_json`, a JSON or
    UBJSON one): an object with a ``learner`` key (XGBoost writes it first; the head of the
    file is enough to tell)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    key = b"learner" if binary_json else b'"learner"'
    return head.lstrip().startswith(b"{") and key in head


def _model_files(directory: Path) -> list[str]:
    present = []
    for name in MODEL_FILES:
        path = directory / name
        if not path.exists():
            continue
        if name == "model.json" and not _is_xgboost_json(path):
            continue
        present.append(name)
    return present


def _framework_of(model: Any) -> str:
    """The framework that serves an unpickled object, by the module of its class."""
    root = type(model).__module__.split(".")[0]
    if root == "xgboost":
        return "XGBOOST"
    if root == "lightgbm" and type(model).__name__ == "Booster":
        return "LIGHTGBM"
    return "SCIKIT_LEARN"  # scikit-learn, LightGBM's sklearn wrappers, any object with predict


def _detect(directory: Path) -> tuple[str, Any]:
    """The framework of `directory`, and the model when detection had to load it."""
    if not directory.is_dir():
        raise ModelLoadError(f"The model directory {directory} does not exist.")
    present = _model_files(directory)
    if not present:
        raise ModelLoadError(
            f"No model file in {directory}: expected one of {', '.join(MODEL_FILES)} "
            "(model.json only as an XGBoost model)."
        )
    if len(present) > 1:
        raise ModelLoadError(f"multiple model files in {directory}: {', '.join(present)}")
    framework = MODEL_FILES[present[0]]
    if framework is not None:
        return framework, None
    from mlengine.prediction.predictors._sklearn import load_pickle

    try:
        model = load_pickle(directory / present[0])
    except ModelLoadError:
        # AI Platform's XGBoost loader reads a model.joblib/pkl that does not unpickle as a
        # Booster file (booster.save_model("model.joblib")); XGBOOST's predictor does too
        if _is_xgboost_json(directory / present[0], binary_json=True):
            return "XGBOOST", None
        raise
    return _framework_of(model), model


def detect_framework(model_dir: str | os.PathLike[str]) -> str:
    """The framework that serves the version directory `model_dir`, from its model file.

    ``saved_model.pb(txt)`` is TENSORFLOW, ``model.bst``/``model.ubj`` and an XGBoost
    ``model.json`` XGBOOST, ``model.txt`` LIGHTGBM, ``model.onnx`` ONNX, ``model.pt2``/``model.pt``
    PYTORCH, ``model.keras`` KERAS, ``model.skops`` SCIKIT_LEARN; ``model.joblib``/``model.pkl``
    are loaded and decided by the object's class (XGBoost objects XGBOOST, a LightGBM Booster
    LIGHTGBM, anything else, LightGBM's scikit-learn wrappers included, SCIKIT_LEARN), or are
    XGBOOST when they hold an XGBoost JSON/UBJSON Booster file instead of a pickle. Other
    files (``preprocessor.joblib``, ``input_example.json``...) are ignored.

    Raises:
        ModelLoadError: no model file, several, or a pickle that cannot be loaded.
        MissingDependency: a pickle needs a library that is not installed.
    """
    return _detect(Path(model_dir))[0]


def predictor_class(framework: str) -> type[Predictor]:
    """The built-in predictor class registered for `framework` (imported now).

    Raises:
        InvalidArgument: no built-in predictor serves `framework` (CUSTOM included).
    """
    name = Framework.parse(framework)
    if name not in FRAMEWORKS:
        raise InvalidArgument(
            f"The framework {name} has no built-in predictor: a CUSTOM version is served by "
            "its predictionClass."
        )
    module_name, _, class_name = FRAMEWORKS[name].partition(":")
    found: type[Predictor] = getattr(importlib.import_module(module_name), class_name)
    return found


def load_model(model_dir: str | os.PathLike[str], framework: str | None = None) -> Predictor:
    """The predictor of the model in `model_dir`, without its preprocessor (see
    `load_predictor`).

    Raises:
        InvalidArgument: `framework` is unknown or CUSTOM.
        ModelLoadError: the directory holds no loadable model for the framework.
        MissingDependency: the framework's library is not installed.
    """
    directory = Path(model_dir)
    model = None
    if framework is None or str(framework).strip().upper() in _UNSPECIFIED:
        name, model = _detect(directory)
    else:
        name = Framework.parse(framework)
    cls = predictor_class(name)
    try:
        from_model = getattr(cls, "from_model", None)
        if model is not None and from_model is not None:
            predictor: Predictor = from_model(model, directory)
        else:
            predictor = cls.from_path(str(directory))
    except MLEngineError:
        raise
    except Exception as error:  # a loader error the predictor did not translate
        raise ModelLoadError(
            f"Could not load the {name} model in {directory}: {type(error).__name__}: "
            f"{error_detail(error)}"
        ) from error
    return predictor


def load_predictor(model_dir: str | os.PathLike[str], framework: str | None = None) -> Predictor:
    """Load the version directory `model_dir` (a local directory) into a predictor.

    `framework` (case-insensitive; ``scikit-learn`` is accepted) picks the predictor; None, an
    empty string or ``FRAMEWORK_UNSPECIFIED`` detect it (`detect_framework`). When the
    directory holds ``preprocessor.joblib``, the predictor applies that fitted scikit-learn
    transformer to the raw instances first (objects keyed by column name, or lists), whatever
    the framework.

    Raises:
        InvalidArgument: `framework` is unknown or CUSTOM.
        ModelLoadError: the directory holds no loadable model (none, several to detect from,
            or a file the library cannot load), or a bad preprocessor.
        MissingDependency: the framework's library is not installed.
    """
    directory = Path(model_dir)
    predictor = load_model(directory, framework)
    if (directory / PREPROCESSOR_FILE).is_file():
        from mlengine.prediction.predictors._preprocessing import (
            PreprocessedPredictor,
            load_preprocessor,
        )

        try:
            preprocessor = load_preprocessor(directory / PREPROCESSOR_FILE)
        except BaseException:
            predictor.close()
            raise
        return PreprocessedPredictor.wrap(predictor, preprocessor, directory)
    return predictor
