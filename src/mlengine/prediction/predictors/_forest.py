"""Scikit-learn forests predicted without joblib: the same outputs, a tenth of the fixed cost.

``RandomForestClassifier.predict`` dispatches one joblib task per tree and validates the input
once per tree, even with ``n_jobs=1``: about 4 ms per call for 100 trees, whatever the row
count (DESIGN.md §7), which is most of what an online prediction of a few rows costs. The
shortcut validates the input once with the forest's own check, finds each tree's leaves with
``tree_.apply`` (the Cython routine under the trees' ``predict_proba``/``predict``), looks all
the leaves' values up in one gather from the trees' value tables laid end to end (three
outputs padded to four, which numpy gathers ~3x faster), and sums them
in the estimators' order from zero, exactly as the forest does with ``n_jobs=1``: the outputs are
bit-identical (the conformance tests compare them), at about 0.3 ms per call of a few rows for
100 trees, and ~10% less than tree-by-tree ``tree_.predict`` on a batch of 1024 rows.

Each call finds the leaves the cheapest of three ways, by estimated costs (constants measured
here, the trees' depth, the features they split on):

* ``tree_.apply``, tree by tree: ~2 us per call whatever the rows (argument checks, an output
  array, the GIL released and taken back), then one step per level for each row.
* Bit vectors (`_leaf_bits`, QuickScorer) when every tree has at most 64 leaves: a few
  whole-array operations per feature the forest splits on, whatever the depth; for a 100-tree
  forest on iris ~4x less than ``apply`` on 1,024 rows and ~10x less on one row.
* A walk in Python over tables of plain lists, for a handful of rows of forests whose trees are
  too large for bit vectors (at most `PYTHON_TABLE_NODES` nodes in all).

All three compare the same float32 inputs with the same float64 thresholds and send NaN where
each node sends missing values, so they reach the same leaves; the values are then gathered and
summed the same way.

Only the exact forest classes with one output are taken, alone or as the last step of a plain
``Pipeline``; anything else (subclasses, multi-output forests, sparse inputs) goes through the
estimator's own ``predict``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mlengine.prediction.predictors._leaf_bits import leaf_bits, missing_go_to_left

__all__ = ["PYTHON_TABLE_NODES", "ForestShortcut", "forest_shortcut", "shortcut_call"]

_BLOCK_VALUES = 1 << 20

PYTHON_TABLE_NODES = 100_000
"""The most nodes (all trees together) for which a forest keeps Python tables of its trees."""

_APPLY_CALL_US = 2.2
_APPLY_TREE_ROW_NS = 6.0
_APPLY_LEVEL_NS = 3.1
"""What ``tree_.apply`` costs (measured, scikit-learn 1.9): per call, and per row walked
through a tree, overall and per level of the tree's depth."""
_PYTHON_TREE_US = 0.05
_PYTHON_LEVEL_US = 0.045
"""What walking one row through one tree in Python costs: per tree, and per level descended."""


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
        # plain float arrays are checked here when the forest was fitted without column names
        self._plain_arrays = getattr(forest, "feature_names_in_", None) is None
        self._n_features = int(forest.n_features_in_)
        self._allow_nan = bool(forest.estimators_[0]._support_missing_values(np.empty((1, 1))))
        self.n_classes = int(forest.n_classes_) if self.classifier else 1
        # each leaf's outputs, padded with zeros to a width numpy gathers fast
        self._width = _gathered_width(self.n_classes)
        tables = [
            _padded(np.asarray(tree.value)[:, 0, : self.n_classes], self._width)
            for tree in self.trees
        ]
        self._values = np.ascontiguousarray(np.concatenate(tables), dtype=np.float64)
        starts = np.cumsum([0] + [len(table) for table in tables[:-1]])
        self._first_node = starts.astype(np.intp)[:, None]  # of each tree, in `_values`
        # rows per gather, so that the (trees, rows, outputs) block stays near 8 MB
        self._rows_per_block = max(256, _BLOCK_VALUES // (len(self.trees) * self._width))
        depth = float(np.mean([tree.max_depth for tree in self.trees]))
        self._apply_row_us = (_APPLY_TREE_ROW_NS + _APPLY_LEVEL_NS * depth) / 1000.0
        self._python_row_us = _PYTHON_TREE_US + _PYTHON_LEVEL_US * depth
        self._tables: list[_TreeTable] = []
        nodes = sum(int(tree.node_count) for tree in self.trees)
        if nodes <= PYTHON_TABLE_NODES:
            self._tables = [
                (int(first), tree.children_left.tolist(), tree.children_right.tolist(),
                 tree.feature.tolist(), tree.threshold.tolist(), missing_go_to_left(tree))
                for first, tree in zip(self._first_node[:, 0], self.trees, strict=True)
            ]  # fmt: skip
        self._bits = leaf_bits(self.trees, tables)

    def _validated(self, inputs: Any) -> np.ndarray:
        if self.transform is not None:
            inputs = self.transform(inputs)
        elif self._plain_arrays and _is_float_matrix(inputs, self._n_features):
            # what the forest's own check does to a float array with the right width, in
            # ~5 us instead of ~150: cast to C-ordered float32; anything it would refuse
            # (infinity, a value too large for float32, NaN where the trees take none) goes
            # to that check below, for its own error
            with np.errstate(over="ignore"):
                array = np.ascontiguousarray(inputs, dtype=np.float32)
            refused = np.isinf(array).any() if self._allow_nan else not np.isfinite(array).all()
            if not refused:
                return array
        with np.errstate(over="ignore"):  # an overflow is refused below, not logged as well
            array = self.forest._validate_X_predict(inputs)
        if not isinstance(array, np.ndarray):  # sparse: the forest's own path handles it
            raise _NotShortcut
        return array

    def _summed(self, array: np.ndarray, way: str | None = None) -> np.ndarray:
        """The trees' mean output per row: leaves by tree (found the cheapest `way` unless
        given), values in one gather, summed along the trees axis (numpy adds tree after tree
        there, the forest's own order)."""
        rows = array.shape[0]
        total = np.empty((rows, self._width), dtype=np.float64)
        way = self._way(array) if way is None else way
        for start in range(0, rows, self._rows_per_block):
            block = array[start : start + self._rows_per_block]
            _sum_over_trees(self._leaf_values(block, way), total[start : start + len(block)])
        total /= len(self.trees)
        if self._width != self.n_classes:
            return np.ascontiguousarray(total[:, : self.n_classes])
        return total

    def _leaf_values(self, block: np.ndarray, way: str) -> np.ndarray:
        """The values of the leaves the rows of `block` reach, (trees, rows, outputs)."""
        if way == _BITS:
            assert self._bits is not None
            return self._bits.values.take(self._bits.value_rows(block), axis=0)
        if way == _PYTHON:
            return self._values.take(self._leaves_in_python(block), axis=0)
        leaves = np.empty((len(self.trees), block.shape[0]), dtype=np.intp)
        for index, tree in enumerate(self.trees):
            leaves[index] = tree.apply(block)
        leaves += self._first_node
        return self._values.take(leaves, axis=0)

    def _way(self, array: np.ndarray) -> str:
        """How this call finds its leaves: the cheapest of the ways that can take it, by the
        estimated costs (`_APPLY`, `_BITS` or `_PYTHON`)."""
        rows = array.shape[0]
        trees = len(self.trees)
        costs = {_APPLY: trees * (_APPLY_CALL_US + rows * self._apply_row_us)}
        if self._tables:
            costs[_PYTHON] = trees * rows * self._python_row_us
        bits = self._bits
        if bits is not None:
            costs[_BITS] = bits.cost_us(rows, trees)
        return min(costs, key=costs.__getitem__)

    def _leaves_in_python(self, array: np.ndarray) -> np.ndarray:
        """Each tree's leaf for each row, as indexes into `_values` (trees x rows): the walk of
        ``tree_.apply`` on the float32 inputs as Python floats (``x <= threshold`` goes left,
        NaN goes where the node sends missing values, -1 marks a leaf)."""
        rows = array.tolist()
        found: list[int] = []
        add = found.append
        for first, left, right, feature, threshold, missing_left in self._tables:
            for row in rows:
                node = 0
                child = left[0]
                while child != -1:
                    value = row[feature[node]]
                    if value <= threshold[node]:
                        node = child
                    elif value == value or not missing_left[node]:  # a number, or NaN sent right
                        node = right[node]
                    else:
                        node = child
                    child = left[node]
                add(first + node)
        return np.array(found, dtype=np.intp).reshape(len(self._tables), len(rows))

    def predict_proba(self, inputs: Any) -> np.ndarray:
        """Class probabilities, as ``forest.predict_proba`` (classifiers only)."""
        return self._summed(self._validated(inputs))

    def predict(self, inputs: Any) -> np.ndarray:
        """Labels (classifiers) or values (regressors), as ``forest.predict``."""
        summed = self._summed(self._validated(inputs))
        if self.classifier:
            return self.forest.classes_.take(np.argmax(summed, axis=1), axis=0)
        return summed[:, 0]


def _sum_over_trees(values: np.ndarray, out: np.ndarray) -> None:
    """`out` = the (trees, rows, outputs) `values` summed over the trees, one after the other
    from zero, as the forest accumulates its trees' predictions.

    ``np.add.reduce`` along the trees axis adds tree after tree while rows x outputs > 1 (that
    axis is then the outer loop), but sums pairwise when each tree holds one value (one row of
    a regressor): there ``np.add.accumulate`` keeps the order. Adding 0.0 turns a sum of
    negative zeros into the forest's positive zero."""
    if values.shape[1] * values.shape[2] == 1:
        np.add(np.add.accumulate(values, axis=0)[-1], 0.0, out=out)
    else:
        np.add.reduce(values, axis=0, out=out)
        np.add(out, 0.0, out=out)


def _gathered_width(outputs: int) -> int:
    """How many float64 columns to store `outputs` outputs per leaf in: the gathers of leaf
    values copy rows of 8, 16 or 32 bytes with a fixed-size copy and any other size with a
    ``memmove`` call each (numpy 2: 3 outputs gather ~3x slower than 4), so 3 becomes 4."""
    return 4 if outputs == 3 else outputs


def _padded(values: np.ndarray, width: int) -> np.ndarray:
    """`values` (nodes x outputs) as float64 with zero columns up to `width`."""
    padded = np.zeros((values.shape[0], width), dtype=np.float64)
    padded[:, : values.shape[1]] = values
    return padded


def _is_float_matrix(inputs: Any, width: int) -> bool:
    return (
        type(inputs) is np.ndarray
        and inputs.ndim == 2
        and inputs.shape[0] > 0
        and inputs.shape[1] == width
        and inputs.dtype.kind == "f"
    )


_TreeTable = tuple[int, list[int], list[int], list[int], list[float], list[int]]
"""A tree as plain lists: its first node in `_values`, then children_left, children_right,
feature, threshold and missing_go_to_left by node."""


_APPLY = "apply"
_BITS = "bits"
_PYTHON = "python"


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
