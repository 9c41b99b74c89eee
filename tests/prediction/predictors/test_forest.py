"""The forest shortcut gives bit-identical outputs to scikit-learn's own forest methods."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from mlengine.prediction.predictors import PredictionError, load_predictor
from mlengine.prediction.predictors import _forest as forest_module
from mlengine.prediction.predictors._forest import forest_shortcut
from mlengine.prediction.predictors._sklearn import SklearnPredictor


def _data(seed: int, *, missing: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(300, 5))
    target = features[:, 0] * 2 - features[:, 1] + rng.normal(scale=0.3, size=300)
    if missing:
        features[rng.random(features.shape) < 0.1] = np.nan
    queries = rng.normal(size=(97, 5))
    if missing:
        queries[rng.random(queries.shape) < 0.1] = np.nan
    return features, target, queries


CLASSIFIERS = [RandomForestClassifier, ExtraTreesClassifier]
REGRESSORS = [RandomForestRegressor, ExtraTreesRegressor]


@pytest.mark.parametrize("forest_class", CLASSIFIERS)
@pytest.mark.parametrize("labels", ["int", "str"])
def test_classifiers_are_bit_identical(forest_class: Any, labels: str) -> None:
    features, target, queries = _data(1)
    classes = np.digitize(target, [-1.0, 1.0])
    if labels == "str":
        classes = np.array(["low", "mid", "high"])[classes]
    forest = forest_class(n_estimators=25, random_state=0).fit(features, classes)
    shortcut = forest_shortcut(forest)
    assert shortcut is not None
    np.testing.assert_array_equal(shortcut.predict(queries), forest.predict(queries))
    np.testing.assert_array_equal(shortcut.predict_proba(queries), forest.predict_proba(queries))


@pytest.mark.parametrize("n_classes", [2, 3, 4, 5, 7])
def test_every_class_count_is_bit_identical(n_classes: int) -> None:
    """Leaf values are stored padded (3 outputs as 4, for a faster gather): the padding never
    shows, whatever the class count, one row or many, through every way of finding leaves."""
    features, target, queries = _data(3)
    classes = np.digitize(target, np.quantile(target, np.linspace(0, 1, n_classes + 1)[1:-1]))
    forest = RandomForestClassifier(n_estimators=20, max_depth=5, random_state=0)
    forest.fit(features, classes)
    shortcut = forest_shortcut(forest)
    assert shortcut is not None
    for rows in (queries[:1], queries):
        expected = forest.predict_proba(rows)
        for way in ("apply", "bits", "python"):
            found = shortcut._summed(shortcut._validated(rows), way)
            assert found.shape == expected.shape
            assert found.flags.c_contiguous
            np.testing.assert_array_equal(found, expected)
        np.testing.assert_array_equal(shortcut.predict(rows), forest.predict(rows))


@pytest.mark.parametrize("forest_class", REGRESSORS)
def test_regressors_are_bit_identical(forest_class: Any) -> None:
    features, target, queries = _data(2)
    forest = forest_class(n_estimators=25, random_state=0).fit(features, target)
    shortcut = forest_shortcut(forest)
    assert shortcut is not None
    np.testing.assert_array_equal(shortcut.predict(queries), forest.predict(queries))


@pytest.mark.parametrize("forest_class", CLASSIFIERS + REGRESSORS)
@pytest.mark.parametrize("max_depth", [4, None], ids=["shallow", "grown"])
def test_every_way_of_finding_leaves_is_bit_identical(
    forest_class: Any, max_depth: int | None
) -> None:
    """tree_.apply, the bit vectors (small trees only) and the Python walk, each forced, on
    every row count up to a few past where the cost model leaves the Python walk."""
    features, target, queries = _data(7)
    if forest_class in CLASSIFIERS:
        target = np.digitize(target, [-1.0, 1.0])
    forest = forest_class(n_estimators=30, max_depth=max_depth, random_state=0)
    forest.fit(features, target)
    shortcut = forest_shortcut(forest)
    assert shortcut is not None
    assert shortcut._bits is not None or max_depth is None  # grown trees may pass 64 leaves
    ways = [forest_module._APPLY, forest_module._PYTHON]
    ways += [forest_module._BITS] if shortcut._bits is not None else []
    for rows in [*range(1, 10), len(queries)]:
        batch = queries[:rows].astype(np.float32)
        expected = forest.predict_proba(batch) if forest_class in CLASSIFIERS else None
        for way in ways:
            summed = shortcut._summed(batch, way)
            if expected is not None:
                np.testing.assert_array_equal(summed, expected, err_msg=f"{way}, {rows} rows")
            else:
                np.testing.assert_array_equal(summed[:, 0], forest.predict(batch), err_msg=way)
        np.testing.assert_array_equal(shortcut.predict(batch), forest.predict(batch))
    # and the walk itself finds each tree's own leaves, thresholds met exactly included
    edge = queries[:3].astype(np.float32)
    edge[0, :] = [float(tree.threshold[0]) for tree in shortcut.trees[:1]] * 5
    leaves = shortcut._leaves_in_python(edge) - shortcut._first_node
    np.testing.assert_array_equal(leaves, [tree.apply(edge) for tree in shortcut.trees])


def test_few_rows_of_a_grown_forest_are_walked_in_python_and_many_by_apply() -> None:
    features, target, queries = _data(7)
    forest = RandomForestRegressor(n_estimators=30, random_state=0).fit(features, target)
    shortcut = forest_shortcut(forest)
    assert shortcut is not None and shortcut._bits is None
    ways = [shortcut._way(queries[:rows].astype(np.float32)) for rows in (1, 97)]
    assert ways == [forest_module._PYTHON, forest_module._APPLY]


def test_large_forests_keep_no_python_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    features, target, queries = _data(8)
    forest = RandomForestRegressor(n_estimators=10, random_state=0).fit(features, target)
    nodes = sum(estimator.tree_.node_count for estimator in forest.estimators_)
    monkeypatch.setattr(forest_module, "PYTHON_TABLE_NODES", nodes - 1)
    large = forest_shortcut(forest)
    assert large is not None and not large._tables
    assert large._way(queries[:1].astype(np.float32)) == forest_module._APPLY
    np.testing.assert_array_equal(large.predict(queries[:1]), forest.predict(queries[:1]))
    monkeypatch.setattr(forest_module, "PYTHON_TABLE_NODES", nodes)
    small = forest_shortcut(forest)
    assert small is not None and small._tables
    assert small._way(queries[:1].astype(np.float32)) == forest_module._PYTHON


def test_missing_values_walked_in_python_go_where_each_node_sends_them() -> None:
    features, target, queries = _data(3, missing=True)
    forest = RandomForestRegressor(n_estimators=20, max_depth=5, random_state=0)
    forest.fit(features, target)
    shortcut = forest_shortcut(forest)
    assert shortcut is not None
    with_nan = queries[np.isnan(queries).any(axis=1)][:4].astype(np.float32)
    assert len(with_nan) == 4
    np.testing.assert_array_equal(
        shortcut._summed(with_nan, forest_module._PYTHON)[:, 0], forest.predict(with_nan)
    )
    leaves = shortcut._leaves_in_python(with_nan)
    expected = [tree.apply(with_nan) for tree in shortcut.trees]
    np.testing.assert_array_equal(leaves - shortcut._first_node, expected)


@pytest.mark.parametrize("rows_per_block", [7, None], ids=["small-blocks", "default-blocks"])
def test_batches_larger_than_one_gather_block_are_bit_identical(rows_per_block: int | None) -> None:
    features, target, _ = _data(4)
    classes = np.digitize(target, [-1.0, 1.0])
    forest = RandomForestClassifier(n_estimators=30, random_state=0).fit(features, classes)
    shortcut = forest_shortcut(forest)
    assert shortcut is not None
    if rows_per_block is not None:
        shortcut._rows_per_block = rows_per_block
    queries = np.random.default_rng(5).normal(size=(97 if rows_per_block else 40_000, 5))
    assert len(queries) > shortcut._rows_per_block  # several blocks, the last one partial
    np.testing.assert_array_equal(shortcut.predict_proba(queries), forest.predict_proba(queries))
    np.testing.assert_array_equal(shortcut.predict(queries), forest.predict(queries))


@pytest.mark.parametrize("forest_class", CLASSIFIERS + REGRESSORS)
@pytest.mark.parametrize(
    "value", [np.inf, -np.inf, 1e300, np.nan], ids=["inf", "-inf", "huge", "nan"]
)
def test_values_the_forest_refuses_get_its_own_error(forest_class: Any, value: float) -> None:
    """The shortcut's own fast input check lets through only what the forest's check takes."""
    features, target, queries = _data(6)
    forest = forest_class(n_estimators=5, random_state=0).fit(features, target > 0)
    shortcut = forest_shortcut(forest)
    assert shortcut is not None
    queries[3, 2] = value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scikit-learn's own cast to float32
        try:
            expected = forest.predict(queries)
        except ValueError as error:
            with pytest.raises(ValueError) as raised:
                shortcut.predict(queries)
            assert str(raised.value) == str(error)
        else:
            np.testing.assert_array_equal(shortcut.predict(queries), expected)


def test_missing_values_take_the_same_branches() -> None:
    features, target, queries = _data(3, missing=True)
    forest = RandomForestRegressor(n_estimators=20, random_state=0).fit(features, target)
    shortcut = forest_shortcut(forest)
    assert shortcut is not None
    np.testing.assert_array_equal(shortcut.predict(queries), forest.predict(queries))


def test_pipeline_ending_with_a_forest_is_bit_identical() -> None:
    features, target, queries = _data(4)
    pipeline = make_pipeline(
        StandardScaler(), RandomForestClassifier(n_estimators=20, random_state=0)
    ).fit(features, target > 0)
    shortcut = forest_shortcut(pipeline)
    assert shortcut is not None
    np.testing.assert_array_equal(shortcut.predict(queries), pipeline.predict(queries))
    np.testing.assert_array_equal(shortcut.predict_proba(queries), pipeline.predict_proba(queries))


def test_other_models_are_left_to_their_own_methods() -> None:
    features, target, _ = _data(5)

    class MyForest(RandomForestRegressor):
        pass

    multi = RandomForestRegressor(n_estimators=5).fit(features, np.c_[target, -target])
    assert forest_shortcut(multi) is None
    assert forest_shortcut(MyForest(n_estimators=5).fit(features, target)) is None
    assert forest_shortcut(GradientBoostingClassifier().fit(features, target > 0)) is None
    assert forest_shortcut(RandomForestRegressor()) is None  # not fitted


def test_predictor_serves_forests_through_the_shortcut_with_the_same_errors() -> None:
    features, target, queries = _data(6)
    forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(features, target > 0)
    predictor = SklearnPredictor.from_model(forest)
    assert predictor._forest is not None
    assert predictor.predict(queries.tolist()) == forest.predict(queries).tolist()
    probabilities = predictor.predict(queries.tolist(), probabilities=True)
    assert probabilities == forest.predict_proba(queries).tolist()
    with pytest.raises(ValueError, match="instance 1"):
        predictor.predict([[0.0] * 5, [0.0] * 4])


def test_objects_sent_to_a_model_without_named_columns_are_named_in_the_error() -> None:
    features, target, _ = _data(7)
    predictor = SklearnPredictor.from_model(
        RandomForestRegressor(n_estimators=3).fit(features, target)
    )
    with pytest.raises(ValueError, match=r"instance 1.*not objects|not objects.*instance 1"):
        predictor.predict([[0.0] * 5, {"a": 1.0}])


@pytest.mark.parametrize(
    "model",
    [RandomForestClassifier(n_estimators=5, random_state=0), DecisionTreeClassifier()],
    ids=["forest", "tree"],
)
def test_a_value_beyond_float32_is_named_by_its_instance(model: Any, tmp_path: Path) -> None:
    """scikit-learn's trees cast to float32 and refuse what overflows, naming no row."""
    features, target, queries = _data(4)
    joblib.dump(model.fit(features, target > 0), tmp_path / "model.joblib")
    predictor = load_predictor(tmp_path, "SCIKIT_LEARN")
    instances = queries[:4].tolist()
    instances[2][1] = 1e300
    with pytest.raises(PredictionError, match=r"instance 2: .*(too large|overflow)"):
        predictor.predict(instances)
    instances[2][1] = 1.0
    assert len(predictor.predict(instances)) == 4
