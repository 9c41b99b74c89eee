"""SCIKIT_LEARN: a fitted estimator or Pipeline in ``model.joblib``, ``model.pkl`` or
``model.skops``.

``model.skops`` is the safe format: skops loads only the types it is told to trust, and this
predictor trusts scikit-learn and numpy types only. ``model.joblib`` and ``model.pkl`` are
pickles, and unpickling runs whatever code the file names: load only files you trust.

Any object with a scikit-learn style ``predict`` is served (LightGBM's and XGBoost's
scikit-learn wrappers, Pipelines ending in them). Instances are lists of numbers; a model
fitted on a DataFrame (it has ``feature_names_in_``) also takes objects keyed by column name,
and then strings are passed through to it (for its own encoders).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from mlengine.errors import MissingDependency
from mlengine.prediction.predictors._base import (
    Framework,
    ModelLoadError,
    PredictionError,
    Predictor,
    checked_example,
    error_detail,
    find_model_file,
    is_missing,
    load_failure,
    numeric_batch,
    per_instance,
)
from mlengine.prediction.predictors._forest import forest_shortcut, shortcut_call

__all__ = [
    "SklearnPredictor",
    "feature_names",
    "load_pickle",
    "load_skops",
    "table_example",
    "tabular_inputs",
]

_TRUSTED_SKOPS_MODULES = ("sklearn", "numpy")


def load_pickle(path: Path) -> Any:
    """Load a joblib or plain pickle file (joblib reads both).

    Unpickling runs code named by the file: only load files you trust.

    Raises:
        MissingDependency: the pickle needs a library that is not installed.
        ModelLoadError: the file cannot be unpickled.
    """
    import joblib

    try:
        return joblib.load(path)
    except ModuleNotFoundError as error:
        missing = (error.name or "").split(".")[0]
        extra = missing if missing in ("xgboost", "lightgbm", "torch", "keras") else None
        hint = (
            f"pip install 'mlengine[{extra}]'"
            if extra
            else f"pip install {missing} (if it is your trainer's own package, give it to the "
            "version with --package-uris)"
        )
        raise MissingDependency(
            f"Loading {path} needs the module {missing!r}, which is not installed. "
            f"Install it with: {hint}"
        ) from error
    except (KeyError, EOFError, pickle.UnpicklingError) as error:
        if isinstance(error, KeyError) and _looks_pickled(path):  # a pickle's own KeyError
            raise load_failure(path, error) from error
        raise ModelLoadError(
            f"Could not load the model in {path}: the file is not a joblib or pickle file "
            f"({type(error).__name__}: {error})."
        ) from error
    except Exception as error:
        raise load_failure(path, error) from error


def _looks_pickled(path: Path) -> bool:
    """Whether `path` starts as a pickle (protocol 2 or later) or a compressed joblib file."""
    with open(path, "rb") as handle:
        head = handle.read(3)
    return head[:1] == b"\x80" or head[:1] == b"\x78" or head[:2] == b"\x1f\x8b" or (head == b"BZh")


def load_skops(path: Path) -> Any:
    """Load a skops file, trusting scikit-learn and numpy types only.

    Raises:
        MissingDependency: skops is not installed.
        ModelLoadError: the file holds other types, or cannot be read.
    """
    try:
        import skops.io as sio
    except ImportError as error:
        raise MissingDependency(
            f"Loading {path.name} needs skops. Install it with: pip install skops"
        ) from error
    try:
        untrusted = list(sio.get_untrusted_types(file=path))
    except Exception as error:
        raise load_failure(path, error) from error
    trusted = [name for name in untrusted if name.split(".")[0] in _TRUSTED_SKOPS_MODULES]
    refused = sorted(set(untrusted) - set(trusted))
    if refused:
        raise ModelLoadError(
            f"{path} holds types that are not scikit-learn or numpy types: {', '.join(refused)}. "
            "mlengine does not load them from model.skops; save such models as model.joblib "
            "(a pickle, which runs code when loaded: only for files you trust)."
        )
    try:
        return sio.load(path, trusted=trusted)
    except Exception as error:
        raise load_failure(path, error) from error


def feature_names(estimator: Any) -> list[str] | None:
    """The column names `estimator` was fitted with, or None."""
    try:
        names = getattr(estimator, "feature_names_in_", None)
    except Exception:  # a Pipeline whose first step is "passthrough"
        names = None
    return None if names is None else [str(name) for name in names]


def _feature_count(estimator: Any) -> int | None:
    try:
        count = getattr(estimator, "n_features_in_", None)
    except Exception:
        count = None
    return int(count) if isinstance(count, (int, np.integer)) else None


def _allows_nan(estimator: Any) -> bool:
    try:
        from sklearn.utils import get_tags

        return bool(get_tags(estimator).input_tags.allow_nan)
    except Exception:  # not a scikit-learn estimator: let the model decide
        return True


def tabular_inputs(
    instances: Sequence[Any] | np.ndarray,
    library: str,
    *,
    names: list[str] | None,
    n_features: int | None,
    allow_nan: bool,
) -> Any:
    """Instances as what a scikit-learn style model takes.

    With `names` (the model was fitted on a DataFrame): a DataFrame with those columns, from
    objects keyed by name or from lists in column order; values are passed as they are.
    Without: a 2-D float array, checked up front (numbers, `n_features` per instance, NaN only
    when `allow_nan`).

    Raises:
        PredictionError: naming the first malformed instance.
    """
    if names is None:
        try:
            return numeric_batch(
                instances,
                library,
                instance_shape=None if n_features is None else (n_features,),
                allow_nan=allow_nan,
            )
        except PredictionError:
            # objects never make a numeric batch: looked for only now, off the hot path (an
            # isinstance check against the Mapping ABC per instance cost ~10 us a request)
            index = next((i for i, item in enumerate(instances) if isinstance(item, Mapping)), None)
            if index is None:
                raise
            raise PredictionError.during(
                library,
                "this model takes lists of numbers, not objects (it was not fitted on named "
                "columns)",
                instance_index=index,
            ) from None
    import pandas as pd

    if isinstance(instances, np.ndarray) and instances.ndim == 2:
        if instances.shape[1] != len(names):
            raise PredictionError.during(
                library,
                f"expected {len(names)} features, got {instances.shape[1]}",
                instance_index=0,
            )
        return pd.DataFrame(instances, columns=names)
    rows: list[Any] = []
    for index, instance in enumerate(instances):
        if isinstance(instance, Mapping):
            missing = [name for name in names if name not in instance]
            if missing:
                raise PredictionError.during(
                    library,
                    f"missing feature {missing[0]!r} (the model's features are {names})",
                    instance_index=index,
                )
            rows.append([instance[name] for name in names])
        elif isinstance(instance, (list, tuple)):
            if len(instance) != len(names):
                raise PredictionError.during(
                    library,
                    f"expected {len(names)} features, got {len(instance)}",
                    instance_index=index,
                )
            rows.append(list(instance))
        else:
            raise PredictionError.during(
                library,
                f"expected an object keyed by feature name or a list of {len(names)} values, "
                f"got {instance!r:.40}",
                instance_index=index,
            )
    frame = pd.DataFrame(rows, columns=names)
    if not allow_nan:
        for index, row in enumerate(rows):
            if any(is_missing(value) for value in row):
                raise PredictionError.during(
                    library,
                    "missing value (null or NaN): this model cannot take missing values",
                    instance_index=index,
                )
    return frame


def categorical_defaults(estimator: Any) -> dict[str, Any]:
    """For each column a fitted encoder inside `estimator` knows, its first category.

    Walks Pipelines, ColumnTransformers and FeatureUnions, looking for fitted encoders
    (``categories_`` with ``feature_names_in_``), so that an example instance can use a known
    category instead of 0 for string columns.
    """
    found: dict[str, Any] = {}
    stack = [estimator]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if id(item) in seen or item is None or isinstance(item, str):
            continue
        seen.add(id(item))
        categories = getattr(item, "categories_", None)
        names = feature_names(item) if categories is not None else None
        if categories is not None and names is not None and len(names) == len(categories):
            for name, values in zip(names, categories, strict=True):
                known = [value for value in values if not is_missing(value)]
                if known:
                    value = known[0]
                    found.setdefault(name, value.item() if isinstance(value, np.generic) else value)
        for _, step in getattr(item, "steps", None) or []:
            stack.append(step)
        for entry in getattr(item, "transformers_", None) or []:
            stack.append(entry[1])
        for entry in getattr(item, "transformer_list", None) or []:
            stack.append(entry[1])
    return found


def table_example(estimator: Any) -> list[Any] | None:
    """One example instance for a fitted scikit-learn estimator or transformer, or None.

    An object keyed by feature name when it was fitted on a DataFrame (a known category for
    encoded columns, 0.0 elsewhere), a list of zeros when only the feature count is known.
    """
    names = feature_names(estimator)
    if names is not None:
        defaults = categorical_defaults(estimator)
        return [{name: defaults.get(name, 0.0) for name in names}]
    count = _feature_count(estimator)
    if count is not None:
        return [[0.0] * count]
    return None


class SklearnPredictor(Predictor):
    """Serves a scikit-learn estimator (or any object with a scikit-learn style ``predict``)."""

    framework = Framework.SCIKIT_LEARN
    model_files = ("model.skops", "model.joblib", "model.pkl")
    """The safe format first, then AI Platform's order (``model.joblib``, ``model.pkl``)."""
    library = "sklearn"

    def __init__(self, model: Any, model_dir: str | os.PathLike[str] | None = None) -> None:
        self.model = model
        self.model_dir = None if model_dir is None else Path(model_dir)
        self._names = feature_names(model)
        self._n_features = _feature_count(model)
        self._allow_nan = _allows_nan(model)
        self._forest = forest_shortcut(model)
        self._example: list[Any] | None = None
        self._example_derived = False

    @classmethod
    def from_path(cls, model_dir: str | os.PathLike[str]) -> Self:
        """Load the first of ``model.skops``, ``model.joblib`` and ``model.pkl`` in `model_dir`.

        Raises:
            ModelLoadError: no model file, or a file that cannot be loaded or holds
                an object without ``predict``.
            MissingDependency: the file needs a library that is not installed.
        """
        path = find_model_file(model_dir, cls.model_files)
        model = load_skops(path) if path.suffix == ".skops" else load_pickle(path)
        return cls.from_model(model, model_dir)

    @classmethod
    def from_model(cls, model: Any, model_dir: str | os.PathLike[str] | None = None) -> Self:
        """Serve an estimator that is already loaded.

        Raises:
            ModelLoadError: the object has no ``predict`` method, or is a Booster of XGBoost
                or LightGBM (its ``predict`` takes no array: the message names the framework).
        """
        kind = f"{type(model).__module__}.{type(model).__qualname__}"
        if not callable(getattr(model, "predict", None)):
            raise ModelLoadError(f"The model file holds a {kind}, which has no predict method.")
        for library, framework in (("xgboost", "XGBOOST"), ("lightgbm", "LIGHTGBM")):
            if kind.startswith(f"{library}.") and type(model).__name__ == "Booster":
                raise ModelLoadError(
                    f"The model file holds a {kind}, which scikit-learn cannot serve: give the "
                    f"version the framework {framework} (--framework {library})."
                )
        return cls(model, model_dir)

    def predict(self, instances: list[Any], **kwargs: Any) -> list[Any]:
        """Labels or values from ``model.predict``; ``probabilities=True`` gives
        ``predict_proba`` rows.

        Raises:
            PredictionError: a malformed instance, a model without ``predict_proba`` when
                probabilities are asked for, or the model raised.
        """
        if len(instances) == 0:
            return []
        if kwargs.get("probabilities"):
            if not hasattr(self.model, "predict_proba"):
                raise PredictionError.during(
                    self.library,
                    f"probabilities were requested, but {type(self.model).__name__} has no "
                    "predict_proba",
                )
            method = self.model.predict_proba
            shortcut = self._forest.predict_proba if self._forest else None
        else:
            method = self.model.predict
            shortcut = self._forest.predict if self._forest else None
        inputs = tabular_inputs(
            instances,
            self.library,
            names=self._names,
            n_features=self._n_features,
            allow_nan=self._allow_nan,
        )
        try:
            if shortcut is None:
                outputs = method(inputs)
            else:
                outputs = shortcut_call(shortcut, method, inputs)
        except Exception as error:
            raise PredictionError.during(
                self.library, error_detail(error), instance_index=_beyond_float32(inputs, error)
            ) from error
        return per_instance(outputs, len(instances), self.library)

    def model_example_instances(self) -> list[Any] | None:
        """One instance built from ``feature_names_in_`` or ``n_features_in_`` that the model
        accepts, or None."""
        if not self._example_derived:
            self._example = checked_example(self, table_example(self.model))
            self._example_derived = True
        return self._example


def _beyond_float32(inputs: Any, error: Exception) -> int | None:
    """The first instance holding a finite number beyond float32's range, when the model
    refused one (scikit-learn's trees cast to float32 and say only "a value too large for
    dtype('float32')", or numpy "overflow encountered in cast", naming no row); else None."""
    message = str(error)  # the check's error, or numpy's warning when warnings are errors
    if ("float32" not in message and "overflow" not in message) or not isinstance(
        inputs, np.ndarray
    ):
        return None
    if inputs.dtype.kind != "f" or inputs.ndim == 0 or len(inputs) == 0:
        return None
    with np.errstate(over="ignore"):
        beyond = np.isinf(inputs.astype(np.float32)) & np.isfinite(inputs)
    rows = beyond.reshape(len(inputs), -1).any(axis=1)
    return int(np.argmax(rows)) if rows.any() else None
