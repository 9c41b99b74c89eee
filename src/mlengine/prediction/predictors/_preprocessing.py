"""``preprocessor.joblib``: a fitted scikit-learn transformer or Pipeline that every predictor
applies to raw instances first, so that the preprocessing fitted at training time is the one
used at serving time, whatever the model's framework."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Self, cast

import numpy as np

from mlengine.prediction.predictors._base import (
    PREPROCESSOR_FILE,
    ModelLoadError,
    PredictionError,
    Predictor,
    checked_example,
    error_detail,
)
from mlengine.prediction.predictors._sklearn import (
    feature_names,
    load_pickle,
    table_example,
    tabular_inputs,
)

__all__ = ["PreprocessedPredictor", "load_preprocessor"]


def load_preprocessor(path: Path) -> Any:
    """Load ``preprocessor.joblib`` (a pickle: only load files you trust).

    Raises:
        ModelLoadError: the file cannot be loaded or holds an object without ``transform``.
        MissingDependency: the pickle needs a library that is not installed.
    """
    preprocessor = load_pickle(path)
    if not callable(getattr(preprocessor, "transform", None)):
        raise ModelLoadError(
            f"{path} holds a {type(preprocessor).__module__}.{type(preprocessor).__qualname__}, "
            "which has no transform method: it must be a fitted scikit-learn transformer or "
            "Pipeline."
        )
    return preprocessor


class PreprocessedPredictor(Predictor):
    """A predictor whose raw instances go through a fitted transformer first.

    Instances are objects keyed by the transformer's input columns (they become a pandas
    DataFrame; other keys are ignored) or lists in column order; a transformer fitted on a
    plain array takes lists of numbers. Its ``framework`` is the wrapped predictor's.
    """

    def __init__(
        self,
        predictor: Predictor,
        preprocessor: Any,
        model_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.predictor = predictor
        self.preprocessor = preprocessor
        self.model_dir = None if model_dir is None else Path(model_dir)
        self._names = feature_names(preprocessor)
        count = getattr(preprocessor, "n_features_in_", None)
        self._n_features = int(count) if isinstance(count, (int, np.integer)) else None
        self._example: list[Any] | None = None
        self._example_derived = False

    @classmethod
    def wrap(
        cls,
        predictor: Predictor,
        preprocessor: Any,
        model_dir: str | os.PathLike[str] | None = None,
    ) -> PreprocessedPredictor:
        """`predictor` behind `preprocessor`, with `predictor`'s framework."""
        return _subclass(predictor.framework)(predictor, preprocessor, model_dir)

    @classmethod
    def from_path(cls, model_dir: str | os.PathLike[str]) -> Self:
        """Load the model of `model_dir` and its ``preprocessor.joblib``.

        Raises:
            ModelLoadError: the model or the preprocessor cannot be loaded.
            MissingDependency: a library they need is not installed.
        """
        from mlengine.prediction.predictors._loading import load_model

        directory = Path(model_dir)
        preprocessor = load_preprocessor(directory / PREPROCESSOR_FILE)
        return cast(Self, cls.wrap(load_model(directory), preprocessor, directory))

    def transform(self, instances: list[Any]) -> np.ndarray:
        """The raw instances through the preprocessor, as a 2-D array (one row per instance).

        Raises:
            PredictionError: a malformed instance, or the preprocessor raised.
        """
        inputs = tabular_inputs(
            instances, "sklearn", names=self._names, n_features=self._n_features, allow_nan=True
        )
        try:
            transformed = self.preprocessor.transform(inputs)
        except Exception as error:
            raise PredictionError(
                f"Prediction failed: Exception during preprocessing: {error_detail(error)}"
            ) from error
        if hasattr(transformed, "toarray"):  # scipy sparse
            transformed = transformed.toarray()
        elif hasattr(transformed, "to_numpy"):  # pandas output
            transformed = transformed.to_numpy()
        array = np.asarray(transformed)
        if array.dtype.kind in "biu":
            array = array.astype(np.float64)
        return array.reshape(len(array), -1) if array.ndim == 1 else array

    def predict(self, instances: list[Any], **kwargs: Any) -> list[Any]:
        """Transform the instances, then predict with the wrapped predictor.

        Raises:
            PredictionError: a malformed instance, or the preprocessor or the model raised.
        """
        if kwargs.get("input_gradients") is not None:
            raise PredictionError(
                "The 'input_gradients' field of the request is not answered for a version with "
                f"{PREPROCESSOR_FILE}: the gradients would be those of the transformed features."
            )
        if len(instances) == 0:
            return []
        return self.predictor.predict(cast(Any, self.transform(instances)), **kwargs)

    def model_example_instances(self) -> list[Any] | None:
        """One raw instance built from the preprocessor's input columns, if the model answers
        it."""
        if not self._example_derived:
            self._example = checked_example(self, table_example(self.preprocessor))
            self._example_derived = True
        return self._example

    def close(self) -> None:
        """Close the wrapped predictor."""
        self.predictor.close()


@functools.cache
def _subclass(framework: str) -> type[PreprocessedPredictor]:
    """A `PreprocessedPredictor` subclass whose ``framework`` class attribute is `framework`."""
    return type(
        f"Preprocessed{framework.title().replace('_', '')}Predictor",
        (PreprocessedPredictor,),
        {"framework": framework, "__module__": __name__},
    )
