"""XGBOOST: a Booster in ``model.bst``, ``model.json`` or ``model.ubj``, or a pickled
Booster or scikit-learn wrapper (``XGBClassifier``...) in ``model.joblib`` / ``model.pkl``.

``model.bst`` may hold JSON or UBJSON (what ``save_model`` writes today) or the legacy binary
format (loadable only by the xgboost versions that still read it). Instances are lists of
numbers (``null`` is a missing value, which XGBoost handles), or objects keyed by feature name
when the booster has feature names; they go through ``DMatrix`` as AI Platform did.

Outputs, as AI Platform's (``booster.predict(xgb.DMatrix(instances))``, AIPLATFORM.md 4.2):

* a Booster (``model.bst``/``.json``/``.ubj``, or a pickled ``Booster``): ``Booster.predict``
  as it is, whatever the objective: the probability of class 1 for ``binary:logistic``, a row
  of class probabilities for ``multi:softprob``, the class index (as a float) for
  ``multi:softmax``, regression values, ranking scores...
* a pickled scikit-learn wrapper (``XGBClassifier``...): its ``predict``, so a classifier's
  class index (0, 1, ...), as AI Platform served such a pickle (as scikit-learn).

With ``probabilities=True`` a classification objective (``binary:logistic``,
``binary:logitraw``, ``multi:softmax``, ``multi:softprob``) gives one row of class
probabilities per instance (``[1 - p, p]`` for binary objectives); ``binary:hinge`` and the
other objectives have none.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import numpy as np

from mlengine.prediction.predictors._base import (
    Framework,
    ModelLoadError,
    PredictionError,
    Predictor,
    error_detail,
    find_model_file,
    import_optional,
    load_failure,
    named_columns,
    numeric_batch,
    per_instance,
)

__all__ = ["CLASSIFICATION_OBJECTIVES", "XGBoostPredictor"]

CLASSIFICATION_OBJECTIVES = frozenset(
    {"binary:logistic", "binary:logitraw", "binary:hinge", "multi:softmax", "multi:softprob"}
)
_LIBRARY = "xgboost"


def _xgboost() -> Any:
    return import_optional("xgboost", framework="XGBOOST", extra="xgboost")


class XGBoostPredictor(Predictor):
    """Serves an XGBoost Booster (see the module docstring for the output rule)."""

    framework = Framework.XGBOOST
    model_files = ("model.joblib", "model.pkl", "model.bst", "model.json", "model.ubj")
    """In AI Platform's load order (``model.joblib``, ``model.pkl``, ``model.bst``), then the
    newer formats."""

    def __init__(
        self,
        booster: Any,
        model_dir: str | os.PathLike[str] | None = None,
        *,
        predicts_labels: bool = False,
    ) -> None:
        self.booster = booster
        self.model_dir = None if model_dir is None else Path(model_dir)
        self.predicts_labels = predicts_labels
        """A classifier answers class indices (a scikit-learn wrapper's ``predict``), not the
        booster's output."""
        config = json.loads(booster.save_config())
        self.objective: str = config["learner"]["objective"]["name"]
        self.n_features: int = int(booster.num_features())
        self.feature_names: list[str] | None = booster.feature_names
        best = booster.attr("best_iteration")
        self._iteration_range = (0, int(best) + 1) if best is not None else (0, 0)

    @classmethod
    def from_path(cls, model_dir: str | os.PathLike[str]) -> Self:
        """Load the first of ``model.joblib``, ``model.pkl``, ``model.bst``, ``model.json`` and
        ``model.ubj`` in `model_dir`. A ``model.joblib``/``model.pkl`` that does not unpickle
        is read as a Booster file, as AI Platform did (``booster.save_model("model.joblib")``).

        Raises:
            ModelLoadError: no model file, or one xgboost cannot load.
            MissingDependency: xgboost is not installed.
        """
        path = find_model_file(model_dir, cls.model_files)
        xgb = _xgboost()
        if path.suffix in (".joblib", ".pkl"):
            from mlengine.prediction.predictors._sklearn import load_pickle

            try:
                model = load_pickle(path)
            except ModelLoadError as not_a_pickle:
                try:
                    booster = xgb.Booster(model_file=bytearray(path.read_bytes()))
                except Exception:
                    raise not_a_pickle from None
                return cls(booster, model_dir)
            return cls.from_model(model, model_dir)
        content = path.read_bytes()
        try:
            # From bytes, xgboost tells JSON from UBJSON by content (a file name ending in .bst
            # makes it guess and warn).
            booster = xgb.Booster(model_file=bytearray(content))
        except Exception as error:
            failure = load_failure(path, error)
            if not content.lstrip().startswith(b"{"):
                failure = ModelLoadError(
                    f"{failure.message} (the file is neither JSON nor UBJSON: if it is the legacy "
                    f"binary format, which xgboost {xgb.__version__} may not read, save the model "
                    "again with booster.save_model('model.json'))"
                )
            raise failure from error
        return cls(booster, model_dir)

    @classmethod
    def from_model(cls, model: Any, model_dir: str | os.PathLike[str] | None = None) -> Self:
        """Serve a loaded Booster or xgboost scikit-learn wrapper.

        Raises:
            ModelLoadError: `model` is neither.
        """
        xgb = _xgboost()
        wrapper = isinstance(model, xgb.XGBModel)
        if wrapper:
            model = model.get_booster()
        if not isinstance(model, xgb.Booster):
            raise ModelLoadError(
                f"The model file holds a {type(model).__module__}.{type(model).__qualname__}, "
                "not an XGBoost Booster or model."
            )
        return cls(model, model_dir, predicts_labels=wrapper)

    @property
    def is_classifier(self) -> bool:
        """True when the objective is a classification objective."""
        return self.objective in CLASSIFICATION_OBJECTIVES

    def predict(self, instances: list[Any], **kwargs: Any) -> list[Any]:
        """The booster's output, a wrapped classifier's class indices, or class probabilities
        (``probabilities=True``): see the module docstring.

        Raises:
            PredictionError: a malformed instance, probabilities asked of a model without
                them, or xgboost raised.
        """
        if len(instances) == 0:
            return []
        want_probabilities = bool(kwargs.get("probabilities"))
        if want_probabilities and self.objective not in CLASSIFICATION_OBJECTIVES - {
            "binary:hinge"
        }:
            raise PredictionError.during(
                _LIBRARY,
                f"probabilities were requested, but the objective {self.objective} gives none",
            )
        matrix = self._dmatrix(self._array(instances))
        try:
            if want_probabilities:
                outputs = self._probabilities(matrix)
            elif self.predicts_labels and self.is_classifier:
                outputs = self._labels(matrix)
            else:
                outputs = self._predict(matrix)
        except PredictionError:
            raise
        except Exception as error:
            raise PredictionError.during(_LIBRARY, error_detail(error)) from error
        return per_instance(outputs, len(instances), _LIBRARY)

    def _array(self, instances: Any) -> np.ndarray:
        if self.feature_names and isinstance(instances[0], Mapping):
            columns = named_columns(instances, self.feature_names, _LIBRARY)
            instances = [list(row) for row in zip(*columns.values(), strict=True)]
        return numeric_batch(instances, _LIBRARY, instance_shape=(self.n_features,), allow_nan=True)

    def _dmatrix(self, array: np.ndarray) -> Any:
        xgb = _xgboost()
        types = self.booster.feature_types
        try:
            return xgb.DMatrix(
                array,
                feature_names=self.feature_names,
                feature_types=types,
                enable_categorical=bool(types and "c" in types),
            )
        except Exception as error:
            raise PredictionError(
                "Prediction failed: Could not initialize DMatrix from inputs: "
                + error_detail(error)
            ) from error

    def _predict(self, matrix: Any, *, margin: bool = False) -> np.ndarray:
        return np.asarray(
            self.booster.predict(
                matrix, output_margin=margin, iteration_range=self._iteration_range
            )
        )

    def _labels(self, matrix: Any) -> np.ndarray:
        if self.objective == "binary:logistic":
            return (self._predict(matrix) > 0.5).astype(np.int64)
        if self.objective == "binary:logitraw":
            return (self._predict(matrix) > 0.0).astype(np.int64)
        if self.objective == "multi:softprob":
            return np.argmax(self._predict(matrix), axis=1)
        return self._predict(matrix).astype(np.int64)  # binary:hinge, multi:softmax

    def _probabilities(self, matrix: Any) -> np.ndarray:
        if self.objective in ("binary:logistic", "binary:logitraw"):
            if self.objective == "binary:logistic":
                positive = self._predict(matrix)
            else:
                positive = 1.0 / (1.0 + np.exp(-self._predict(matrix)))
            return np.column_stack([1.0 - positive, positive])
        if self.objective == "multi:softprob":
            return self._predict(matrix)
        margins = self._predict(matrix, margin=True)  # multi:softmax
        shifted = np.exp(margins - margins.max(axis=1, keepdims=True))
        return np.asarray(shifted / shifted.sum(axis=1, keepdims=True))

    def model_example_instances(self) -> list[Any] | None:
        """One instance of zeros with the booster's number of features."""
        return [[0.0] * self.n_features] if self.n_features > 0 else None
