"""What only some predictors do: named inputs and outputs, objectives, signatures, skops."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from mlengine.prediction.predictors import (
    ModelLoadError,
    PredictionError,
    load_predictor,
)

from .conftest import KERAS_NUMPY_COPY, iris_data, sklearn_pipeline, tensorflow_module

FRAME = pd.DataFrame(
    {
        "age": [23, 45, 31, 52, 38, 29, 61, 44],
        "city": ["A", "B", "A", "C", "B", "A", "C", "B"],
    }
)
TARGET = np.array([0, 1, 0, 1, 1, 0, 1, 1])


def _frame_pipeline() -> Any:
    columns = ColumnTransformer(
        [("age", StandardScaler(), ["age"]), ("city", OneHotEncoder(), ["city"])]
    )
    return make_pipeline(columns, LogisticRegression()).fit(FRAME, TARGET)


# -- scikit-learn ----------------------------------------------------------------------------


def test_a_model_fitted_on_a_dataframe_takes_named_features(tmp_path: Path) -> None:
    model = _frame_pipeline()
    joblib.dump(model, tmp_path / "model.joblib")
    predictor = load_predictor(tmp_path)
    records = FRAME.to_dict(orient="records")
    expected = model.predict(FRAME).tolist()
    assert predictor.predict(records) == expected
    assert predictor.predict(FRAME.values.tolist()) == expected
    assert predictor.example_instances() == [{"age": 0.0, "city": "A"}]
    with pytest.raises(PredictionError, match=r"instance 1: missing feature 'city'"):
        predictor.predict([records[0], {"age": 3}])
    with pytest.raises(PredictionError, match=r"instance 0: expected 2 features, got 3"):
        predictor.predict([[1, "A", 3]])
    with pytest.raises(PredictionError, match=r"Exception during sklearn prediction: .*unknown"):
        predictor.predict([{"age": 30, "city": "Z"}])


def test_probabilities_of_a_regressor_are_refused(tmp_path: Path) -> None:
    features, labels = iris_data()
    joblib.dump(LinearRegression().fit(features, labels), tmp_path / "model.joblib")
    predictor = load_predictor(tmp_path)
    assert len(predictor.predict(features[:2].tolist())) == 2
    with pytest.raises(PredictionError, match="has no predict_proba") as raised:
        predictor.predict(features[:2].tolist(), probabilities=True)
    assert raised.value.http_status == 400


def test_string_labels_are_returned_as_strings(tmp_path: Path) -> None:
    features, labels = iris_data()
    names = np.array(["setosa", "versicolor", "virginica"])[labels]
    joblib.dump(LogisticRegression(max_iter=1000).fit(features, names), tmp_path / "model.pkl")
    assert load_predictor(tmp_path).predict(features[:3].tolist()) == names[:3].tolist()


def _double(values: np.ndarray) -> np.ndarray:
    return values * 2


def test_skops_refuses_types_it_does_not_trust(tmp_path: Path) -> None:
    import skops.io as sio

    features, labels = iris_data()
    model = make_pipeline(FunctionTransformer(_double), LogisticRegression(max_iter=1000))
    model.fit(features, labels)
    sio.dump(model, tmp_path / "model.skops")
    with pytest.raises(ModelLoadError, match=r"not scikit-learn or numpy types: .*_double"):
        load_predictor(tmp_path)


# -- XGBoost and LightGBM --------------------------------------------------------------------


@pytest.mark.parametrize("objective", ["multi:softmax", "multi:softprob"])
def test_xgboost_multiclass_objectives(tmp_path: Path, objective: str) -> None:
    import xgboost as xgb

    features, labels = iris_data()
    booster = xgb.train(
        {"objective": objective, "num_class": 3, "max_depth": 2, "nthread": 1},
        xgb.DMatrix(features, label=labels),
        num_boost_round=5,
    )
    booster.save_model(tmp_path / "booster.ubj")
    (tmp_path / "booster.ubj").rename(tmp_path / "model.ubj")
    predictor = load_predictor(tmp_path)
    plain = predictor.predict(features[:20].tolist())
    # the booster's own output, as AI Platform answers: class indices (floats) for softmax,
    # probability rows for softprob
    np.testing.assert_allclose(plain, booster.predict(xgb.DMatrix(features[:20])), rtol=1e-6)
    rows = np.asarray(predictor.predict(features[:20].tolist(), probabilities=True))
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, rtol=1e-5)
    expected = np.asarray(plain) if objective == "multi:softmax" else np.argmax(plain, axis=1)
    assert np.argmax(rows, axis=1).tolist() == expected.astype(int).tolist()


def test_xgboost_regression_gives_values_and_no_probabilities(tmp_path: Path) -> None:
    import xgboost as xgb

    features, labels = iris_data()
    model = xgb.XGBRegressor(n_estimators=5, max_depth=2, n_jobs=1).fit(features, labels)
    joblib.dump(model, tmp_path / "model.joblib")
    predictor = load_predictor(tmp_path)
    assert predictor.framework == "XGBOOST"
    np.testing.assert_allclose(
        predictor.predict(features[:5].tolist()), model.predict(features[:5]), rtol=1e-6
    )
    with pytest.raises(PredictionError, match="objective reg:squarederror gives none"):
        predictor.predict(features[:5].tolist(), probabilities=True)


def test_xgboost_named_features_take_objects(tmp_path: Path) -> None:
    import xgboost as xgb

    features, labels = iris_data()
    frame = pd.DataFrame(features, columns=["sl", "sw", "pl", "pw"])
    model = xgb.XGBClassifier(n_estimators=5, max_depth=2, n_jobs=1).fit(frame, labels)
    model.get_booster().save_model(tmp_path / "booster.json")
    (tmp_path / "booster.json").rename(tmp_path / "model.json")
    predictor = load_predictor(tmp_path)
    records = frame[:6].to_dict(orient="records")
    expected = model.predict_proba(frame[:6])  # a booster file: the booster's output
    np.testing.assert_allclose(predictor.predict(records), expected, rtol=1e-6)
    np.testing.assert_allclose(predictor.predict(features[:6].tolist()), expected, rtol=1e-6)
    with pytest.raises(PredictionError, match=r"instance 0: missing input 'pw'"):
        predictor.predict([{"sl": 1, "sw": 2, "pl": 3}])


def test_lightgbm_binary_and_regression_objectives(tmp_path: Path) -> None:
    import lightgbm as lgb

    features, labels = iris_data()
    params = {"verbose": -1, "num_threads": 1}
    binary = lgb.train(
        {**params, "objective": "binary"}, lgb.Dataset(features, labels == 1), num_boost_round=5
    )
    binary.save_model(tmp_path / "model.txt")
    predictor = load_predictor(tmp_path)
    positive = binary.predict(features[:10])
    assert predictor.predict(features[:10].tolist()) == (positive > 0.5).astype(int).tolist()
    rows = predictor.predict(features[:10].tolist(), probabilities=True)
    np.testing.assert_allclose(np.asarray(rows)[:, 1], positive)

    regression = lgb.train(
        {**params, "objective": "regression"}, lgb.Dataset(features, labels), num_boost_round=5
    )
    regression.save_model(tmp_path / "model.txt")
    predictor = load_predictor(tmp_path)
    np.testing.assert_allclose(
        predictor.predict(features[:3].tolist()), regression.predict(features[:3])
    )
    with pytest.raises(PredictionError, match="'regression' gives none"):
        predictor.predict(features[:3].tolist(), probabilities=True)


def test_a_pickled_lightgbm_booster(tmp_path: Path) -> None:
    import lightgbm as lgb

    features, labels = iris_data()
    params = {"objective": "multiclassova", "num_class": 3, "verbose": -1, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(features, labels), num_boost_round=5)
    joblib.dump(booster, tmp_path / "model.joblib")
    predictor = load_predictor(tmp_path)
    assert predictor.framework == "LIGHTGBM"
    scores = booster.predict(features[:10])
    assert predictor.predict(features[:10].tolist()) == np.argmax(scores, axis=1).tolist()
    rows = np.asarray(predictor.predict(features[:10].tolist(), probabilities=True))
    np.testing.assert_allclose(rows.sum(axis=1), 1.0)


# -- PyTorch ---------------------------------------------------------------------------------


def test_pytorch_named_inputs_and_outputs(tmp_path: Path) -> None:
    import torch

    class TwoHeads(torch.nn.Module):
        def forward(self, numbers: Any, counts: Any) -> Any:
            total = numbers.sum(dim=1) + counts.float().sum(dim=1)
            return {"total": total, "doubled": numbers * 2}

    batch = torch.export.Dim("batch")
    program = torch.export.export(
        TwoHeads(),
        (torch.zeros(3, 2), torch.zeros(3, 3, dtype=torch.int64)),
        dynamic_shapes={"numbers": {0: batch}, "counts": {0: batch}},
    )
    torch.export.save(program, tmp_path / "model.pt2")
    predictor = load_predictor(tmp_path)
    outputs = predictor.predict(
        [{"numbers": [1.0, 2.0], "counts": [1, 1, 1]}, {"numbers": [0.5, 0.5], "counts": [0, 0, 2]}]
    )
    assert outputs == [
        {"total": 6.0, "doubled": [2.0, 4.0]},
        {"total": 3.0, "doubled": [1.0, 1.0]},
    ]
    assert predictor.example_instances() == [{"numbers": [0.0, 0.0], "counts": [0, 0, 0]}]
    with pytest.raises(PredictionError, match=r"instance 1: missing input 'counts'"):
        predictor.predict([{"numbers": [1, 2], "counts": [1, 2, 3]}, {"numbers": [1, 2]}])


def test_pytorch_tuple_outputs(tmp_path: Path) -> None:
    import torch

    class Pair(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            return x.sum(dim=1), x.max(dim=1).values

    program = torch.export.export(
        Pair(), (torch.zeros(2, 3),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, tmp_path / "model.pt2")
    outputs = load_predictor(tmp_path).predict([[1, 2, 3]])
    assert outputs == [{"output_0": 6.0, "output_1": 3.0}]


def test_a_torchscript_model_that_raises_names_the_instance(tmp_path: Path) -> None:
    """TorchScript declares no input shape: the instance the model raised on is found by
    predicting parts of the batch again, and named as AI Platform does."""
    import torch

    class Checked(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if bool((x < 0).any()):
                raise ValueError("negative input")
            return self.linear(x)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*torch\.jit.*deprecated", DeprecationWarning)
        torch.jit.save(torch.jit.script(Checked()), str(tmp_path / "model.pt"))
    predictor = load_predictor(tmp_path)
    rows = [[1.0, 2.0, 3.0, 4.0]] * 9
    assert len(predictor.predict(rows)) == 9
    for bad in (0, 3, 8):
        instances = [list(row) for row in rows]
        instances[bad][2] = -1.0
        with pytest.raises(
            PredictionError, match=rf"pytorch prediction: instance {bad}: .*negative"
        ):
            predictor.predict(instances)
    with pytest.raises(PredictionError, match=r"instance 0: .*mat1 and mat2 shapes"):
        predictor.predict([[1.0, 2.0, 3.0, 4.0, 5.0]] * 3)  # 5 features for 4


def test_first_failing_instance_bisects_and_confirms() -> None:
    from mlengine.prediction.predictors._base import first_failing_instance

    calls: list[tuple[int, int]] = []

    def raising_at(index: int | None, *, whole: bool = False) -> Any:
        def run(start: int, stop: int) -> None:
            calls.append((start, stop))
            if whole and stop - start == 10:
                raise RuntimeError("the batch as a whole")
            if index is not None and start <= index < stop:
                raise RuntimeError(f"bad {index}")

        return run

    for index in range(10):
        calls.clear()
        found = first_failing_instance(raising_at(index), 10)
        assert found is not None and found[0] == index and str(found[1]) == f"bad {index}"
        assert len(calls) <= 5  # log2(10) rounded up, and the confirmation
    assert first_failing_instance(raising_at(None, whole=True), 10) is None


# -- ONNX ------------------------------------------------------------------------------------


def test_onnx_named_string_inputs(tmp_path: Path) -> None:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    model = _frame_pipeline()
    frame = FRAME.astype({"age": "float32"})
    onnx_model = to_onnx(
        model,
        initial_types=[("age", FloatTensorType([None, 1])), ("city", StringTensorType([None, 1]))],
        options={"zipmap": False},
    )
    (tmp_path / "model.onnx").write_bytes(onnx_model.SerializeToString())
    predictor = load_predictor(tmp_path)
    records = frame.to_dict(orient="records")
    assert predictor.predict(records) == model.predict(frame).tolist()
    np.testing.assert_allclose(
        predictor.predict(records, probabilities=True), model.predict_proba(frame), atol=1e-5
    )
    with pytest.raises(PredictionError, match=r"instance 1: input 'city' takes strings, got 3"):
        predictor.predict([records[0], {"age": 1.0, "city": 3}])
    with pytest.raises(PredictionError, match=r"instance 0: missing input 'city'"):
        predictor.predict([{"age": 1.0}])


def test_onnx_regressor(tmp_path: Path) -> None:
    from skl2onnx import to_onnx

    features, labels = iris_data()
    model = LinearRegression().fit(features, labels)
    onnx_model = to_onnx(model, features[:1].astype(np.float32))
    (tmp_path / "model.onnx").write_bytes(onnx_model.SerializeToString())
    predictor = load_predictor(tmp_path)
    np.testing.assert_allclose(
        np.asarray(predictor.predict(features[:4].tolist())).ravel(),
        model.predict(features[:4]),
        rtol=1e-5,
    )
    with pytest.raises(PredictionError, match="no probability output"):
        predictor.predict(features[:4].tolist(), probabilities=True)


def test_onnx_intra_op_threads(tmp_path: Path) -> None:
    from skl2onnx import to_onnx

    from mlengine.prediction.predictors._onnx import ONNXPredictor

    features, labels = iris_data()
    onnx_model = to_onnx(sklearn_pipeline(features, labels), features[:1].astype(np.float32))
    (tmp_path / "model.onnx").write_bytes(onnx_model.SerializeToString())
    predictor = ONNXPredictor.from_path(tmp_path, intra_op_threads=2)
    assert predictor.session.get_session_options().intra_op_num_threads == 2
    predictor.close()


# -- Keras and TensorFlow (slow: importing them costs seconds) --------------------------------


@pytest.mark.slow
def test_keras_named_inputs_and_outputs(tmp_path: Path) -> None:
    assert os.environ["KERAS_BACKEND"] == "torch"
    import keras

    left = keras.Input((2,), name="left")
    right = keras.Input((3,), name="right")
    joined = keras.layers.Concatenate()([left, right])
    model = keras.Model(
        {"left": left, "right": right},
        {
            "score": keras.layers.Dense(1, name="score")(joined),
            "classes": keras.layers.Dense(2, activation="softmax", name="classes")(joined),
        },
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", KERAS_NUMPY_COPY, DeprecationWarning)
        model.save(tmp_path / "model.keras")
    predictor = load_predictor(tmp_path)
    assert predictor.framework == "KERAS"
    instances = [{"left": [1, 2], "right": [3, 4, 5]}, {"left": [0, 0], "right": [0, 0, 1]}]
    outputs = predictor.predict(instances)
    assert [set(output) for output in outputs] == [{"score", "classes"}] * 2
    assert len(outputs[0]["classes"]) == 2
    assert predictor.example_instances() == [{"left": [0.0, 0.0], "right": [0.0, 0.0, 0.0]}]
    with pytest.raises(PredictionError, match=r"instance 1: expected 3 features, got 2"):
        predictor.predict([instances[0], {"left": [1, 2], "right": [3, 4]}])


@pytest.mark.slow
def test_tensorflow_signatures_and_named_outputs(tmp_path: Path) -> None:
    import tensorflow as tf

    features, labels = iris_data()
    fitted = LogisticRegression(max_iter=1000).fit(features, labels)
    module = tensorflow_module(fitted.coef_.T, fitted.intercept_, dict_outputs=True)
    scores = tf.function(
        lambda x: {"scores": tf.reduce_sum(x, axis=1)},
        input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")],
    )
    tf.saved_model.save(
        module, str(tmp_path), signatures={"serving_default": module.serve, "scores": scores}
    )
    predictor = load_predictor(tmp_path)
    outputs = predictor.predict(features[:3].tolist())
    assert [set(output) for output in outputs] == [{"probabilities", "classes"}] * 3
    assert [output["classes"] for output in outputs] == fitted.predict(features[:3]).tolist()
    assert predictor.predict([{"x": [1, 2, 3, 4]}], signature_name="scores") == [10.0]
    with pytest.raises(PredictionError, match="no signature 'nope'"):
        predictor.predict([[1, 2, 3, 4]], signature_name="nope")
    with pytest.raises(PredictionError, match=r"instance 0: expected 4 features, got 2"):
        predictor.predict([[1, 2]])


def test_an_object_instance_with_a_key_the_model_lacks_is_refused(tmp_path: Path) -> None:
    """As TF Serving does: a signature's named inputs only (a "key" the model does not take
    is not dropped without a word)."""
    from .conftest import build_onnx_tensor

    build_onnx_tensor(tmp_path)
    predictor = load_predictor(tmp_path)
    features = iris_data()[0][:2].tolist()
    name = predictor.tensor_signature().inputs[0].name
    assert len(predictor.predict([{name: row} for row in features])) == 2
    with pytest.raises(PredictionError, match=rf"instance 1: unknown input 'key' .*'{name}'"):
        predictor.predict([{name: features[0]}, {name: features[1], "key": 7}])
