"""The Predictor conformance suite: every framework's predictor passes the same tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from mlengine.prediction.predictors import (
    PredictionError,
    Predictor,
    detect_framework,
    load_predictor,
)

from .conftest import Built


@pytest.fixture(scope="module")
def predictor(built: Built) -> Predictor:
    return load_predictor(built.directory)


def _compare(built: Built, outputs: list[Any], features: np.ndarray) -> None:
    expected = np.asarray(built.reference(features))
    got = np.asarray(outputs)
    assert got.shape == expected.shape
    if built.labels:
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


class TestPredictorConformance:
    def test_detects_the_framework(self, built: Built, predictor: Predictor) -> None:
        assert detect_framework(built.directory) == built.framework
        assert predictor.framework == built.framework

    @pytest.mark.parametrize("batch", [1, 32])
    def test_predictions_match_the_in_process_model(
        self, built: Built, predictor: Predictor, iris: tuple[np.ndarray, np.ndarray], batch: int
    ) -> None:
        features = iris[0][:batch]
        outputs = predictor.predict(features.tolist())
        assert len(outputs) == batch
        _compare(built, outputs, features)

    def test_outputs_are_json_serialisable(
        self, built: Built, predictor: Predictor, iris: tuple[np.ndarray, np.ndarray]
    ) -> None:
        outputs = predictor.predict(iris[0][:3].tolist())
        assert orjson.loads(orjson.dumps(outputs)) == outputs
        if built.probabilities is not None:
            rows = predictor.predict(iris[0][:3].tolist(), probabilities=True)
            assert orjson.loads(orjson.dumps(rows)) == rows

    def test_integers_are_numbers(self, built: Built, predictor: Predictor) -> None:
        instances = [[5, 3, 1, 0], [6, 3, 5, 2]]
        _compare(built, predictor.predict(instances), np.asarray(instances, dtype=float))

    def test_no_instances_give_no_predictions(self, predictor: Predictor) -> None:
        assert predictor.predict([]) == []

    def test_unknown_keywords_are_ignored(
        self, built: Built, predictor: Predictor, iris: tuple[np.ndarray, np.ndarray]
    ) -> None:
        features = iris[0][:4]
        _compare(built, predictor.predict(features.tolist(), key="abc", other=1), features)

    def test_example_instances_predict(self, built: Built, predictor: Predictor) -> None:
        examples = predictor.example_instances()
        if built.derives_example:
            assert examples
        if examples is not None:
            assert len(predictor.predict(examples)) == len(examples)

    def test_an_instance_with_a_wrong_feature_count_is_named(
        self, predictor: Predictor, iris: tuple[np.ndarray, np.ndarray]
    ) -> None:
        instances = iris[0][:5].tolist()
        instances[3] = [*instances[3], 1.0]
        with pytest.raises(PredictionError, match=r"instance 3: expected 4 features, got 5"):
            predictor.predict(instances)

    def test_instances_with_a_wrong_feature_count(
        self, built: Built, predictor: Predictor, iris: tuple[np.ndarray, np.ndarray]
    ) -> None:
        instances = iris[0][:5, :3].tolist()
        with pytest.raises(PredictionError, match=r"^Prediction failed: ") as raised:
            predictor.predict(instances)
        if built.knows_shape:
            assert "instance 0: expected 4 features, got 3" in str(raised.value)

    def test_a_string_is_named(
        self, predictor: Predictor, iris: tuple[np.ndarray, np.ndarray]
    ) -> None:
        instances = iris[0][:5].tolist()
        instances[1][2] = "abc"
        with pytest.raises(PredictionError, match=r"instance 1: value 'abc' is not a number"):
            predictor.predict(instances)

    def test_an_object_where_a_list_is_expected(
        self, predictor: Predictor, iris: tuple[np.ndarray, np.ndarray]
    ) -> None:
        instances: list[Any] = iris[0][:3].tolist()
        instances[2] = {"values": [1, 2, 3, 4]}
        with pytest.raises(PredictionError, match=r"instance 2"):
            predictor.predict(instances)

    @pytest.mark.parametrize("missing", [None, float("nan")], ids=["null", "nan"])
    def test_missing_values(
        self,
        built: Built,
        predictor: Predictor,
        iris: tuple[np.ndarray, np.ndarray],
        missing: float | None,
    ) -> None:
        instances = iris[0][:5].tolist()
        instances[2][0] = missing
        if built.nan_ok:
            assert len(predictor.predict(instances)) == 5
        else:
            with pytest.raises(PredictionError, match=r"instance 2: .*missing"):
                predictor.predict(instances)

    def test_probabilities(
        self, built: Built, predictor: Predictor, iris: tuple[np.ndarray, np.ndarray]
    ) -> None:
        features = iris[0][:32]
        if built.probabilities is None:  # not a classifier: outputs are returned as they are
            with_flag = predictor.predict(features.tolist(), probabilities=True)
            assert with_flag == predictor.predict(features.tolist())
            return
        rows = np.asarray(predictor.predict(features.tolist(), probabilities=True))
        np.testing.assert_allclose(rows.sum(axis=1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(rows, built.probabilities(features), rtol=1e-4, atol=1e-5)
        assert predictor.predict(features.tolist(), probabilities=False) == predictor.predict(
            features.tolist()
        )

    def test_a_numpy_batch_is_accepted(
        self, built: Built, predictor: Predictor, iris: tuple[np.ndarray, np.ndarray]
    ) -> None:
        features = iris[0][:8]
        _compare(built, predictor.predict(features), features)  # type: ignore[arg-type]
