"""LIGHTGBM: a Booster in ``model.txt`` (``Booster.save_model``), or a pickled Booster.

(LightGBM's scikit-learn wrappers, ``LGBMClassifier`` and friends, are served by the
SCIKIT_LEARN predictor.) Instances are lists of numbers (``null`` is a missing value), or
objects keyed by feature name. Outputs, by objective: ``binary`` gives the class index (the
probability of class 1 is above 0.5), ``multiclass``/``multiclassova`` the most likely class;
with ``probabilities=True`` both give class probability rows (``multiclassova`` scores are
normalised to sum to 1). Other objectives give
``Booster.predict`` as it is.
"""

from __future__ import annotations

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

__all__ = ["LightGBMPredictor"]

_LIBRARY = "lightgbm"
_BINARY = frozenset({"binary"})
_MULTICLASS = frozenset({"multiclass", "multiclassova"})


def _lightgbm() -> Any:
    return import_optional("lightgbm", framework="LIGHTGBM", extra="lightgbm")


def _objective(booster: Any, model_text: str | None) -> str:
    """The objective's canonical name (the first word of the model file's ``objective=``)."""
    if model_text is None:  # the header is enough: dump one iteration, not the whole model
        model_text = booster.model_to_string(num_iteration=1)
    for line in model_text.splitlines():
        if line.startswith("objective="):
            words = line.partition("=")[2].split()
            return words[0] if words else ""
        if line.startswith("Tree="):
            break
    return str(booster.params.get("objective", ""))


class LightGBMPredictor(Predictor):
    """Serves a LightGBM Booster (see the module docstring for the output rule)."""

    framework = Framework.LIGHTGBM
    model_files = ("model.txt", "model.joblib", "model.pkl")

    def __init__(
        self,
        booster: Any,
        model_dir: str | os.PathLike[str] | None = None,
        *,
        model_text: str | None = None,
    ) -> None:
        self.booster = booster
        self.model_dir = None if model_dir is None else Path(model_dir)
        self.objective = _objective(booster, model_text)
        self.n_features: int = int(booster.num_feature())
        self.feature_names: list[str] = list(booster.feature_name())

    @classmethod
    def from_path(cls, model_dir: str | os.PathLike[str]) -> Self:
        """Load ``model.txt`` (or a pickled Booster in ``model.joblib`` / ``model.pkl``).

        Raises:
            ModelLoadError: no model file, or one LightGBM cannot load.
            MissingDependency: lightgbm is not installed.
        """
        path = find_model_file(model_dir, cls.model_files)
        lgb = _lightgbm()
        if path.suffix in (".joblib", ".pkl"):
            from mlengine.prediction.predictors._sklearn import load_pickle

            return cls.from_model(load_pickle(path), model_dir)
        try:
            text = path.read_text(encoding="utf-8")
            booster = lgb.Booster(model_str=text)
        except Exception as error:
            raise load_failure(path, error) from error
        return cls(booster, model_dir, model_text=text)

    @classmethod
    def from_model(cls, model: Any, model_dir: str | os.PathLike[str] | None = None) -> Self:
        """Serve a loaded Booster (or the Booster of a fitted LightGBM scikit-learn model).

        Raises:
            ModelLoadError: `model` is neither.
        """
        lgb = _lightgbm()
        if isinstance(model, lgb.LGBMModel):
            model = model.booster_
        if not isinstance(model, lgb.Booster):
            raise ModelLoadError(
                f"The model file holds a {type(model).__module__}.{type(model).__qualname__}, "
                "not a LightGBM Booster."
            )
        return cls(model, model_dir)

    @property
    def is_classifier(self) -> bool:
        """True for the binary and multiclass objectives."""
        return self.objective in _BINARY | _MULTICLASS

    def predict(self, instances: list[Any], **kwargs: Any) -> list[Any]:
        """Class indices, class probabilities (``probabilities=True``) or raw predictions.

        Raises:
            PredictionError: a malformed instance, probabilities asked of a model without
                them, or LightGBM raised.
        """
        if len(instances) == 0:
            return []
        want_probabilities = bool(kwargs.get("probabilities"))
        if want_probabilities and not self.is_classifier:
            raise PredictionError.during(
                _LIBRARY,
                f"probabilities were requested, but the objective {self.objective!r} gives none",
            )
        if isinstance(instances[0], Mapping):
            columns = named_columns(instances, self.feature_names, _LIBRARY)
            instances = [list(row) for row in zip(*columns.values(), strict=True)]
        array = numeric_batch(
            instances, _LIBRARY, instance_shape=(self.n_features,), allow_nan=True
        )
        try:
            raw = np.asarray(self.booster.predict(array))
        except Exception as error:
            raise PredictionError.during(_LIBRARY, error_detail(error)) from error
        outputs = raw
        if self.objective in _BINARY:
            if want_probabilities:
                outputs = np.column_stack([1.0 - raw, raw])
            else:
                outputs = (raw > 0.5).astype(np.int64)
        elif self.objective in _MULTICLASS:
            if not want_probabilities:
                outputs = np.argmax(raw, axis=1)
            elif self.objective == "multiclassova":  # one-vs-all scores: normalise the rows
                outputs = raw / raw.sum(axis=1, keepdims=True)
        return per_instance(outputs, len(instances), _LIBRARY)

    def model_example_instances(self) -> list[Any] | None:
        """One instance of zeros with the booster's number of features."""
        return [[0.0] * self.n_features] if self.n_features > 0 else None
