"""Bit-vector leaves: each tree's leaf for each row is the one ``tree_.apply`` reaches."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import ExtraTreesClassifier, RandomForestRegressor

from mlengine.prediction.predictors import _forest as forest_module
from mlengine.prediction.predictors import _leaf_bits as leaf_bits_module
from mlengine.prediction.predictors._forest import forest_shortcut
from mlengine.prediction.predictors._leaf_bits import LeafBits, leaf_bits


def _tables(forest: Any) -> list[np.ndarray]:
    return [np.asarray(tree.tree_.value)[:, 0, :] for tree in forest.estimators_]


def _assert_same_leaves(bits: LeafBits, forest: Any, queries: np.ndarray) -> None:
    """The leaf values the bit vectors find are those of the leaves tree_.apply finds."""
    queries = queries.astype(np.float32)
    found = bits.values[bits.value_rows(queries)]  # (trees, rows, outputs)
    for tree, table, values in zip(forest.estimators_, _tables(forest), found, strict=True):
        np.testing.assert_array_equal(values, table[tree.tree_.apply(queries)])


def _integer_data(seed: int, *, missing: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Integer features, so thresholds fall on halves that float32 holds exactly."""
    rng = np.random.default_rng(seed)
    features = rng.integers(0, 12, size=(400, 6)).astype(np.float64)
    target = features[:, 0] - 2 * features[:, 1] + features[:, 2] * features[:, 3] / 10
    if missing:
        features[rng.random(features.shape) < 0.15] = np.nan
    return features, target


@pytest.mark.parametrize(
    ("leaves", "width"), [(6, 8), (12, 16), (30, 32), (32, 32), (60, 64), (64, 64)]
)
def test_leaves_match_apply_for_every_word_width(leaves: int, width: int) -> None:
    """A full word included: the last leaf's bit is the sign bit of the signed word."""
    features, target = _integer_data(leaves)
    forest = RandomForestRegressor(n_estimators=20, max_leaf_nodes=leaves, random_state=0)
    forest.fit(features, target)
    assert max(tree.tree_.n_leaves for tree in forest.estimators_) == leaves
    bits = leaf_bits([tree.tree_ for tree in forest.estimators_], _tables(forest))
    assert bits is not None and bits.width == width
    rng = np.random.default_rng(1)
    on_thresholds = rng.integers(0, 24, size=(300, 6)) / 2  # halves: exactly on thresholds
    around = on_thresholds + rng.choice([-1e-6, 0.0, 1e-6], size=on_thresholds.shape)
    outside = rng.normal(scale=100.0, size=(50, 6))  # below the first and above the last
    for queries in (on_thresholds, around, outside, on_thresholds[:1]):
        _assert_same_leaves(bits, forest, queries)


def test_missing_values_go_where_each_node_sends_them() -> None:
    features, target = _integer_data(3, missing=True)
    forest = RandomForestRegressor(n_estimators=20, max_leaf_nodes=20, random_state=0)
    forest.fit(features, target)
    sends_left = [np.asarray(tree.tree_.missing_go_to_left) for tree in forest.estimators_]
    assert any(sent.any() for sent in sends_left) and not all(sent.all() for sent in sends_left)
    bits = leaf_bits([tree.tree_ for tree in forest.estimators_], _tables(forest))
    assert bits is not None
    queries = np.random.default_rng(4).integers(0, 24, size=(300, 6)) / 2
    queries[np.random.default_rng(5).random(queries.shape) < 0.3] = np.nan
    _assert_same_leaves(bits, forest, queries)
    _assert_same_leaves(bits, forest, np.full((2, 6), np.nan))


def test_trees_that_are_one_leaf_and_forests_that_are_only_leaves() -> None:
    features, _ = _integer_data(5)
    forest = RandomForestRegressor(n_estimators=4, random_state=0)
    forest.fit(features, np.full(len(features), 3.25))  # nothing to split on
    bits = leaf_bits([tree.tree_ for tree in forest.estimators_], _tables(forest))
    assert bits is not None and bits.features == []
    _assert_same_leaves(bits, forest, features[:7])
    shortcut = forest_shortcut(forest)
    assert shortcut is not None
    np.testing.assert_array_equal(
        shortcut._summed(features[:7].astype(np.float32), forest_module._BITS)[:, 0],
        forest.predict(features[:7]),
    )


def test_trees_of_more_than_64_leaves_and_oversized_tables_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    features, target = _integer_data(6)
    grown = RandomForestRegressor(n_estimators=3, random_state=0).fit(features, target)
    assert max(tree.tree_.n_leaves for tree in grown.estimators_) > 64
    assert leaf_bits([tree.tree_ for tree in grown.estimators_], _tables(grown)) is None
    small = RandomForestRegressor(n_estimators=3, max_leaf_nodes=8, random_state=0)
    small.fit(features, target)
    trees = [tree.tree_ for tree in small.estimators_]
    bits = leaf_bits(trees, _tables(small))
    assert bits is not None
    monkeypatch.setattr(leaf_bits_module, "TABLE_BYTES", bits.table_bytes - 1)
    assert leaf_bits(trees, _tables(small)) is None


def test_classifier_probabilities_through_the_bits_are_bit_identical() -> None:
    features, target = _integer_data(7)
    classes = np.digitize(target, [0.0, 5.0])
    forest = ExtraTreesClassifier(n_estimators=40, max_depth=5, random_state=0)
    forest.fit(features, classes)
    shortcut = forest_shortcut(forest)
    assert shortcut is not None and shortcut._bits is not None
    queries = np.random.default_rng(8).integers(0, 24, size=(2000, 6)) / 2
    assert shortcut._way(queries.astype(np.float32)) == forest_module._BITS
    np.testing.assert_array_equal(shortcut.predict_proba(queries), forest.predict_proba(queries))
    np.testing.assert_array_equal(shortcut.predict(queries), forest.predict(queries))


def test_the_cost_model_keeps_apply_for_many_features() -> None:
    """One gather per feature used: with a hundred features, walking the trees is cheaper."""
    rng = np.random.default_rng(9)
    features = rng.normal(size=(500, 100))
    target = features @ rng.normal(size=100)
    forest = RandomForestRegressor(n_estimators=10, max_leaf_nodes=60, random_state=0)
    forest.fit(features, target)
    shortcut = forest_shortcut(forest)
    assert shortcut is not None and shortcut._bits is not None
    assert len(shortcut._bits.features) > 50
    queries = rng.normal(size=(1024, 100)).astype(np.float32)
    assert shortcut._way(queries) == forest_module._APPLY
    np.testing.assert_array_equal(
        shortcut._summed(queries, forest_module._BITS)[:, 0], forest.predict(queries)
    )
