"""Sampled Shapley attributions against models whose Shapley values are known exactly."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlengine.errors import InvalidArgument
from mlengine.prediction._explain import (
    MAX_ROWS,
    explain_instances,
    integrated_gradients,
    read_explanation_metadata,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def fake(model: Callable[[Any], Any], classifier: bool = False) -> Any:
    """An async `predict(rows, options)` that answers `model(row)` per row; a classifier
    refuses no probabilities request, a regressor refuses one as the built-ins do."""
    calls: list[int] = []

    async def predict(rows: list[Any], options: Mapping[str, Any]) -> list[Any]:
        if options.get("probabilities") and not classifier:
            raise InvalidArgument("probabilities were requested, but the model has none")
        calls.append(len(rows))
        return [model(row) for row in rows]

    predict.calls = calls  # type: ignore[attr-defined]
    return predict


async def test_a_linear_model_gets_its_exact_shapley_values() -> None:
    weights = np.array([2.0, -1.0, 0.5, 3.0])
    predict = fake(lambda row: float(np.dot(weights, row) + 7))
    instance = [1.0, 2.0, 3.0, 4.0]

    (explanation,) = await explain_instances([instance], predict, {}, 10, {})

    (label,) = explanation["attributions_by_label"]
    assert label["label_index"] == 0 and label["output_name"] == "prediction"
    assert label["attributions"]["features"] == pytest.approx((weights * instance).tolist())
    assert label["example_score"] == pytest.approx(float(np.dot(weights, instance) + 7))
    assert label["baseline_score"] == pytest.approx(7.0)  # zeros without metadata
    assert label["approx_error"] == pytest.approx(0.0)
    assert predict.calls == [1, 2 + 10 * 3]  # the instance; baseline, instance and the walks


async def test_attributions_add_up_to_the_score_change_of_any_model() -> None:
    predict = fake(lambda row: float(row[0] * row[1] + row[2] ** 2))
    instance = [2.0, 3.0, 1.5]
    metadata = {"inputs": {"x": {"input_baselines": [[1.0, 1.0, 1.0]]}}}

    (explanation,) = await explain_instances([instance], predict, metadata, 25, {})

    (label,) = explanation["attributions_by_label"]
    values = label["attributions"]["x"]  # keyed by the metadata's input name
    assert sum(values) == pytest.approx(label["example_score"] - label["baseline_score"])
    assert label["baseline_score"] == pytest.approx(2.0)
    # x0 * x1 splits its change evenly in expectation; x2**2 is all x2's
    assert values[2] == pytest.approx(1.5**2 - 1.0)
    assert values[0] == pytest.approx(values[1], abs=1.0)
    again = await explain_instances([instance], predict, metadata, 25, {})
    assert again == [explanation]  # repeatable


async def test_a_classifier_explains_the_probability_of_the_class_it_predicts() -> None:
    def probabilities(row: Mapping[str, float]) -> list[float]:
        score = 1 / (1 + np.exp(-(row["a"] - row["b"])))
        return [1 - score, score]

    predict = fake(probabilities, classifier=True)
    instances = [{"a": 3.0, "b": 0.0}, {"a": 0.0, "b": 3.0}]

    first, second = await explain_instances(instances, predict, {}, 5, {})

    one, zero = first["attributions_by_label"][0], second["attributions_by_label"][0]
    assert (one["label_index"], zero["label_index"]) == (1, 0)
    assert one["output_name"] == "probabilities"
    assert one["attributions"]["a"] > 0 and one["attributions"]["b"] == pytest.approx(0.0)
    assert zero["attributions"]["b"] > 0 and zero["attributions"]["a"] == pytest.approx(0.0)
    assert one["baseline_score"] == pytest.approx(0.5)
    # a model whose predictor does not take the option: its outputs, named as they are
    (plain,) = await explain_instances(instances[:1], predict, {}, 5, {}, probabilities=False)
    assert plain["attributions_by_label"][0]["output_name"] == "outputs"


async def test_object_instances_take_baselines_by_feature_and_need_them_for_text() -> None:
    predict = fake(lambda row: float(row["age"]) + (10.0 if row["city"] == "B" else 0.0))
    metadata = {"inputs": {"city": {"input_baselines": ["A"]}}}

    (explanation,) = await explain_instances([{"age": 30, "city": "B"}], predict, metadata, 4, {})

    assert explanation["attributions_by_label"][0]["attributions"] == pytest.approx(
        {"age": 30.0, "city": 10.0}
    )
    with pytest.raises(InvalidArgument, match="instance 0: feature 'city' is not a number"):
        await explain_instances([{"age": 30, "city": "B"}], predict, {}, 4, {})


@pytest.mark.parametrize(
    ("instances", "metadata", "message"),
    [
        (["text"], {}, "instance 0: explanations take a list of feature values or an object"),
        ([[1.0, 2.0]], {"inputs": {"x": {"input_baselines": [[0.0]]}}}, "baselines of 2"),
        (
            [[1.0]],
            {"inputs": {"x": {"input_baselines": [[0.0]]}, "y": {"input_baselines": [[0.0]]}}},
            "one input",
        ),
        ([[1.0]], {"inputs": {"x": {"input_baselines": []}}}, "non-empty 'input_baselines'"),
        ([[0.0] * 1000] * 5, {}, f"the limit is {MAX_ROWS}"),
    ],
)
async def test_instances_and_baselines_that_do_not_fit_are_refused(
    instances: list[Any], metadata: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await explain_instances(instances, fake(lambda row: 0.0), metadata, 50, {})


async def test_outputs_that_are_not_numbers_cannot_be_explained() -> None:
    with pytest.raises(InvalidArgument, match="instance 0: explanations need numeric"):
        await explain_instances([[1.0]], fake(lambda row: "setosa"), {}, 3, {})


def test_explanation_metadata_is_read_from_the_version_directory(tmp_path: Path) -> None:
    assert read_explanation_metadata(tmp_path) == {}
    (tmp_path / "explanation_metadata.json").write_text('{"inputs": {"x": {}}}')
    assert read_explanation_metadata(tmp_path) == {"inputs": {"x": {}}}
    (tmp_path / "explanation_metadata.json").write_text("[1]")
    with pytest.raises(InvalidArgument, match="must be an object"):
        read_explanation_metadata(tmp_path)


def gradient_fake(weights: np.ndarray) -> Any:
    """f(x) = sum(w * x**2) with its gradient 2 w x under ``input_gradients``."""

    async def predict(rows: list[Any], options: Mapping[str, Any]) -> list[Any]:
        points = np.asarray(rows, dtype=np.float64)
        if options.get("input_gradients") is not None:
            assert options["input_gradients"] == 0
            return list(2 * weights * points)
        return [float(np.sum(weights * row)) for row in points**2]

    return predict


async def test_integrated_gradients_of_a_quadratic_are_exact() -> None:
    weights = np.array([1.0, -2.0, 0.5])
    instance, baseline = [1.0, 2.0, 3.0], [0.5, 0.0, 1.0]
    metadata = {"inputs": {"x": {"input_baselines": [baseline]}}}

    (explanation,) = await integrated_gradients(
        [instance], gradient_fake(weights), metadata, 16, {}
    )

    (label,) = explanation["attributions_by_label"]
    expected = weights * (np.square(instance) - np.square(baseline))
    assert label["attributions"]["x"] == pytest.approx(expected.tolist())
    assert label["approx_error"] == pytest.approx(0.0, abs=1e-12)
    assert label["example_score"] - label["baseline_score"] == pytest.approx(expected.sum())


async def test_integrated_gradients_keep_the_shape_of_nested_instances() -> None:
    weights = np.ones((2, 2))
    (explanation,) = await integrated_gradients(
        [[[1.0, 2.0], [3.0, 4.0]]], gradient_fake(weights), {}, 4, {}
    )
    values = explanation["attributions_by_label"][0]["attributions"]["features"]
    assert np.allclose(values, [[1.0, 4.0], [9.0, 16.0]])  # zeros baseline: x**2


@pytest.mark.parametrize(
    ("instances", "metadata", "message"),
    [
        ([{"a": 1.0}], {}, "instance 0: integrated gradients take lists of numbers"),
        ([["a", "b"]], {}, "instance 0: integrated gradients take \\(nested\\) lists"),
        (
            [[[1.0, 2.0]]],
            {"inputs": {"x": {"input_baselines": [[[1.0]]]}}},
            "instance 0: its shape \\[1, 2\\] needs baselines of that shape",
        ),
    ],
)
async def test_integrated_gradients_refuse_what_they_cannot_explain(
    instances: list[Any], metadata: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await integrated_gradients(instances, gradient_fake(np.ones(2)), metadata, 4, {})
