"""Scikit-learn forests predicted without joblib: the same outputs, a tenth of the fixed cost.

``RandomForestClassifier.predict`` dispatches one joblib task per tree and validates the input
once per tree, even with ``n_jobs=1``: about 4 ms per call for 100 trees, whatever the row
count (DESIGN.md §7), which is most of what an online prediction of a few rows costs. The
shortcut validates the input once with the forest's own check, then calls each tree's
``tree_.predict`` (the Cython routine the trees' ``predict_proba``/``predict`` wrap) and sums in
the estimators' order, exactly as the forest does with ``n_jobs=1``: the outputs are
bit-identical (the conformance tests compare them), at about 0.6 ms per call for 100 trees.

Only the exact forest classes with one output are taken, alone or as the last step of a plain
``Pipeline``; anything else (subclasses, multi-output forests, sparse inputs) goes through the
estimator's own ``predict``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["ForestShortcut", "forest_shortcut", "shortcut_call"]


class ForestShortcut:
    """``predict`` and ``predict_proba`` of one fitted single-output scikit-learn forest,
    optionally behind the transforming steps of the Pipeline that ends with it.

    Not thread-safe beyond what the forest itself is: it keeps no state between calls.
    """

    def __init__(self, forest: Any, transform: Callable[[Any], Any] | None = None) -> None:
        from sklearn.base import is_classifier

        self.forest = forest
        self.transform = transform
        self.classifier = bool(is_classifier(forest))
        self.trees = [estimator.tree_ for estimator in forest.estimators_]
        self.n_classes = int(forest.n_classes_) if self.classifier else 1

    def _validated(self, inputs: Any) -> np.ndarray:
        if self.transform is not None:
            inputs = self.transform(inputs)
        array = self.forest._validate_X_predict(inputs)
        if not isinstance(array, np.ndarray):  # sparse: the forest's own path handles it
            raise _NotShortcut
        return array

    def _summed(self, array: np.ndarray) -> np.ndarray:
        total = np.zeros((array.shape[0], self.n_classes), dtype=np.float64)
        for tree in self.trees:
            total += tree.predict(array)[:, : self.n_classes]
        total /= len(self.trees)
        return total

    def predict_proba(self, inputs: Any) -> np.ndarray:
        """Class probabilities, as ``forest.predict_proba`` (classifiers only)."""
        return self._summed(self._validated(inputs))

    def predict(self, inputs: Any) -> np.ndarray:
        """Labels (classifiers) or values (regressors), as ``forest.predict``."""
        summed = self._summed(self._validated(inputs))
        if self.classifier:
            return self.forest.classes_.take(np.argmax(summed, axis=1), axis=0)
        return summed[:, 0]


class _NotShortcut(Exception):
    """The input is one the shortcut does not take (the estimator's own method will)."""


def forest_shortcut(model: Any) -> ForestShortcut | None:
    """The shortcut for `model` when it is, or a plain Pipeline ends with, a fitted
    single-output ``RandomForest``/``ExtraTrees`` classifier or regressor; else None."""
    try:
        from sklearn.ensemble import (
            ExtraTreesClassifier,
            ExtraTreesRegressor,
            RandomForestClassifier,
            RandomForestRegressor,
        )
        from sklearn.pipeline import Pipeline
    except ImportError:  # pragma: no cover - scikit-learn is a core dependency
        return None
    forests = (
        RandomForestClassifier, RandomForestRegressor, ExtraTreesClassifier, ExtraTreesRegressor
    )  # fmt: skip
    transform = None
    forest = model
    if type(model) is Pipeline and len(model.steps) > 1:
        forest = model.steps[-1][1]
        transform = model[:-1].transform
    if type(forest) not in forests:
        return None
    if getattr(forest, "n_outputs_", None) != 1 or not getattr(forest, "estimators_", None):
        return None
    if not hasattr(forest, "_validate_X_predict"):
        return None
    try:
        return ForestShortcut(forest, transform)
    except Exception:  # an attribute renamed by another scikit-learn release
        return None


def shortcut_call(method: Callable[[Any], Any], fallback: Callable[[Any], Any], inputs: Any) -> Any:
    """``method(inputs)``, or ``fallback(inputs)`` for inputs the shortcut does not take."""
    try:
        return method(inputs)
    except _NotShortcut:
        return fallback(inputs)
