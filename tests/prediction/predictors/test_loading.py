"""Detection, loading errors, preprocessor.joblib, input_example.json, b64 and the public
surface of `mlengine.prediction.predictors`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import orjson
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier

import mlengine.prediction.predictors as predictors
from mlengine.errors import InvalidArgument, MissingDependency
from mlengine.prediction.predictors import (
    FRAMEWORKS,
    Framework,
    ModelLoadError,
    PredictionError,
    decode_b64,
    detect_framework,
    load_predictor,
    predictor_class,
    read_input_example,
)

from .conftest import (
    build_onnx_tensor,
    build_sklearn_joblib,
    build_sklearn_skops,
    build_xgboost_bst,
    build_xgboost_json,
    build_xgboost_ubj,
    iris_data,
    xgboost_classifier,
)


@pytest.fixture
def sklearn_dir(tmp_path: Path) -> Path:
    build_sklearn_joblib(tmp_path)
    return tmp_path


# -- detection and loading errors ------------------------------------------------------------


def test_several_model_files_are_refused(sklearn_dir: Path, tmp_path_factory: Any) -> None:
    onnx_dir = tmp_path_factory.mktemp("onnx")
    build_onnx_tensor(onnx_dir)
    shutil.copy(onnx_dir / "model.onnx", sklearn_dir / "model.onnx")
    with pytest.raises(ModelLoadError, match=r"multiple model files.*model\.onnx.*model\.joblib"):
        detect_framework(sklearn_dir)
    with pytest.raises(ModelLoadError, match="multiple model files"):
        load_predictor(sklearn_dir)


def test_an_empty_directory_names_the_expected_files(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"No model file.*saved_model\.pb.*model\.joblib"):
        load_predictor(tmp_path)


def test_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_predictor(tmp_path / "nope")


def test_other_files_are_ignored(sklearn_dir: Path) -> None:
    (sklearn_dir / "model.json").write_text('{"description": "not an xgboost model"}')
    (sklearn_dir / "metadata.json").write_text("{}")
    (sklearn_dir / "input_example.json").write_text("[[1, 2, 3, 4]]")
    assert detect_framework(sklearn_dir) == "SCIKIT_LEARN"


def test_an_xgboost_json_model_counts_as_a_model_file(sklearn_dir: Path, tmp_path: Path) -> None:
    xgboost_dir = tmp_path / "xgb"
    xgboost_dir.mkdir()
    build_xgboost_json(xgboost_dir)
    shutil.copy(xgboost_dir / "model.json", sklearn_dir / "model.json")
    with pytest.raises(ModelLoadError, match="multiple model files"):
        detect_framework(sklearn_dir)


def test_a_named_framework_loads_its_files_in_ai_platforms_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """XGBoost with model.joblib, model.pkl and model.bst: AI Platform loads model.joblib and
    ignores the others; detection alone refuses the directory."""
    import xgboost as xgb

    features, labels = iris_data()
    chosen = xgb.XGBClassifier(n_estimators=3, max_depth=1, random_state=1).fit(features, labels)
    joblib.dump(chosen, tmp_path / "model.joblib")
    joblib.dump(xgboost_classifier(), tmp_path / "model.pkl")
    build_xgboost_bst(tmp_path)
    with pytest.raises(ModelLoadError, match="multiple model files"):
        detect_framework(tmp_path)
    with caplog.at_level("WARNING"):
        predictor = load_predictor(tmp_path, "XGBOOST")
    np.testing.assert_allclose(
        predictor.predict(features.tolist(), probabilities=True),
        chosen.predict_proba(features),
        atol=1e-6,
    )
    assert "loading model.joblib; ignoring model.pkl, model.bst" in caplog.text

    (tmp_path / "model.joblib").unlink()
    reference = joblib.load(tmp_path / "model.pkl")
    assert load_predictor(tmp_path, "xgboost").predict(features.tolist()) == (
        reference.predict(features).tolist()
    )


def test_an_xgboost_booster_file_named_model_joblib_is_loaded_as_a_booster(
    tmp_path: Path,
) -> None:
    """AI Platform read a model.joblib that does not unpickle as a Booster file."""
    built = build_xgboost_json(tmp_path)
    (tmp_path / "model.json").rename(tmp_path / "model.joblib")
    features, _ = iris_data()
    predictor = load_predictor(tmp_path, "XGBOOST")
    assert predictor.predict(features.tolist()) == built.reference(features).tolist()
    assert detect_framework(tmp_path) == "XGBOOST"  # detected too, JSON or UBJSON
    assert load_predictor(tmp_path).predict(features.tolist()) == built.reference(features).tolist()
    (tmp_path / "ubj").mkdir()
    ubj = build_xgboost_ubj(tmp_path / "ubj")
    (ubj.directory / "model.ubj").rename(ubj.directory / "model.pkl")
    assert load_predictor(ubj.directory).predict(features.tolist()) == (
        ubj.reference(features).tolist()
    )
    (tmp_path / "model.joblib").write_bytes(b"neither a pickle nor a booster")
    with pytest.raises(ModelLoadError, match=r"Could not load the model in .*model\.joblib"):
        load_predictor(tmp_path, "XGBOOST")
    with pytest.raises(ModelLoadError, match=r"Could not load the model in .*model\.joblib"):
        detect_framework(tmp_path)


def test_scikit_learn_prefers_the_safe_skops_file(tmp_path: Path) -> None:
    built = build_sklearn_skops(tmp_path)
    features, labels = iris_data()
    other = DecisionTreeClassifier(max_depth=1).fit(features, labels)  # a different model
    joblib.dump(other, tmp_path / "model.joblib")
    assert other.predict(features).tolist() != built.reference(features).tolist()
    assert load_predictor(tmp_path, "SCIKIT_LEARN").predict(features.tolist()) == (
        built.reference(features).tolist()
    )
    (tmp_path / "model.skops").unlink()
    assert load_predictor(tmp_path, "SCIKIT_LEARN").predict(features.tolist()) == (
        other.predict(features).tolist()
    )


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("model.onnx", b"not an onnx model"),
        ("model.joblib", b"not a pickle"),
        ("model.bst", b"not a booster"),
        ("model.txt", b"not a lightgbm model"),
    ],
)
def test_a_corrupt_model_file(tmp_path: Path, name: str, content: bytes) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ModelLoadError, match=r"^Could not load the model in .*") as raised:
        load_predictor(tmp_path)
    assert "\n" not in str(raised.value)
    assert raised.value.__cause__ is not None


def test_a_pickle_of_an_object_without_predict(tmp_path: Path) -> None:
    joblib.dump({"weights": [1, 2]}, tmp_path / "model.joblib")
    with pytest.raises(ModelLoadError, match="no predict method"):
        load_predictor(tmp_path)


@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_a_pickled_booster_is_not_served_as_scikit_learn(tmp_path: Path, library: str) -> None:
    """Its predict takes no array: every request would fail, so the version fails instead."""
    features, labels = load_iris(return_X_y=True)
    if library == "xgboost":
        import xgboost as xgb

        booster = xgb.train({"nthread": 1}, xgb.DMatrix(features, label=labels), 2)
    else:
        import lightgbm as lgb

        params = {"verbose": -1, "num_threads": 1}
        booster = lgb.train(params, lgb.Dataset(features, labels), num_boost_round=2)
    joblib.dump(booster, tmp_path / "model.joblib")
    with pytest.raises(ModelLoadError, match=f"give the version the framework {library.upper()}"):
        load_predictor(tmp_path, "SCIKIT_LEARN")


def test_a_pickle_that_needs_a_missing_module(tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(b"cmlengine_no_such_module\nModel\n.")
    pattern = r"pip install mlengine_no_such_module \(if it is your trainer's own.*--package-uris"
    with pytest.raises(MissingDependency, match=pattern):
        load_predictor(tmp_path)


@pytest.mark.parametrize(
    "name", ["scikit-learn", "SCIKIT_LEARN", "Scikit_Learn", "FRAMEWORK_UNSPECIFIED", "", None]
)
def test_the_framework_may_be_given(sklearn_dir: Path, name: str | None) -> None:
    predictor = load_predictor(sklearn_dir, name)
    assert predictor.framework == "SCIKIT_LEARN"
    assert len(predictor.predict([[5.1, 3.5, 1.4, 0.2]])) == 1


@pytest.mark.parametrize("name", ["caffe", "CUSTOM"])
def test_an_unknown_framework_is_refused(sklearn_dir: Path, name: str) -> None:
    with pytest.raises(InvalidArgument, match="framework"):
        load_predictor(sklearn_dir, name)


def test_a_framework_that_does_not_match_the_file(sklearn_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="not an XGBoost Booster"):
        load_predictor(sklearn_dir, "xgboost")
    with pytest.raises(ModelLoadError, match=r"No model file.*model\.onnx"):
        load_predictor(sklearn_dir, "onnx")


def test_framework_parse() -> None:
    assert Framework.parse("scikit-learn") is Framework.SCIKIT_LEARN
    assert Framework.parse(" pytorch ") is Framework.PYTORCH
    assert Framework.SCIKIT_LEARN == "SCIKIT_LEARN"
    assert Framework.XGBOOST.library == "xgboost"
    with pytest.raises(InvalidArgument, match=r"The 'framework' field of Version must be one of"):
        Framework.parse("caffe")


def test_every_registered_predictor_imports_and_names_its_framework() -> None:
    assert set(FRAMEWORKS) == {member.value for member in Framework} - {"CUSTOM"}
    for name in FRAMEWORKS:
        assert predictor_class(name).framework == name


def test_a_missing_library_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_xgboost_json(tmp_path)
    monkeypatch.setitem(sys.modules, "xgboost", None)
    with pytest.raises(MissingDependency, match=r"pip install 'mlengine\[xgboost\]'"):
        load_predictor(tmp_path)


def test_skops_missing_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "model.skops").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "skops", None)
    monkeypatch.setitem(sys.modules, "skops.io", None)
    with pytest.raises(MissingDependency, match="pip install skops"):
        load_predictor(tmp_path)


# -- preprocessor.joblib ---------------------------------------------------------------------

RAW = pd.DataFrame(
    {
        "age": [23, 45, 31, 52, 38, 29, 61, 44, 35, 27, 48, 57],
        "income": [30.5, 80.0, 52.3, 95.1, 61.0, 40.2, 99.9, 72.4, 55.5, 33.3, 85.0, 90.0],
        "city": ["A", "B", "A", "C", "B", "A", "C", "B", "C", "A", "B", "C"],
    }
)
TARGET = np.array([0, 1, 0, 1, 1, 0, 1, 1, 0, 0, 1, 1])


def _preprocessor() -> ColumnTransformer:
    return ColumnTransformer(
        [
            ("numbers", StandardScaler(), ["age", "income"]),
            ("cities", OneHotEncoder(handle_unknown="ignore"), ["city"]),
        ]
    ).fit(RAW)


def _save_sklearn(directory: Path, features: np.ndarray) -> Any:
    model = LogisticRegression().fit(features, TARGET)
    joblib.dump(model, directory / "model.joblib")
    return model


def _save_xgboost(directory: Path, features: np.ndarray) -> Any:
    import xgboost as xgb

    model = xgb.XGBClassifier(n_estimators=5, max_depth=2, n_jobs=1).fit(features, TARGET)
    model.get_booster().save_model(directory / "booster.json")
    (directory / "booster.json").rename(directory / "model.json")
    return model


def _save_lightgbm(directory: Path, features: np.ndarray) -> Any:
    import lightgbm as lgb

    model = lgb.LGBMClassifier(n_estimators=5, min_child_samples=1, verbose=-1, n_jobs=1)
    model.fit(features, TARGET)
    model.booster_.save_model(directory / "model.txt")
    return model


def _save_onnx(directory: Path, features: np.ndarray) -> Any:
    from skl2onnx import to_onnx

    model = LogisticRegression().fit(features, TARGET)
    onnx_model = to_onnx(model, features[:1].astype(np.float32), options={"zipmap": False})
    (directory / "model.onnx").write_bytes(onnx_model.SerializeToString())
    return model


@pytest.mark.parametrize(
    ("framework", "save"),
    [
        ("SCIKIT_LEARN", _save_sklearn),
        ("XGBOOST", _save_xgboost),
        ("LIGHTGBM", _save_lightgbm),
        ("ONNX", _save_onnx),
    ],
)
def test_raw_instances_go_through_the_preprocessor(
    tmp_path: Path, framework: str, save: Callable[[Path, np.ndarray], Any]
) -> None:
    preprocessor = _preprocessor()
    joblib.dump(preprocessor, tmp_path / "preprocessor.joblib")
    model = save(tmp_path, np.asarray(preprocessor.transform(RAW)))
    pipeline = make_pipeline(preprocessor, model)
    instances = orjson.loads(orjson.dumps(RAW.to_dict(orient="records")))

    predictor = load_predictor(tmp_path)
    assert predictor.framework == framework == detect_framework(tmp_path)
    if framework == "XGBOOST":  # a booster file answers the booster's output, P(class 1)
        expected = pipeline.predict_proba(RAW)[:, 1]
        np.testing.assert_allclose(predictor.predict(instances), expected, rtol=1e-5)
        np.testing.assert_allclose(predictor.predict(RAW.values.tolist()), expected, rtol=1e-5)
    else:
        assert predictor.predict(instances) == pipeline.predict(RAW).tolist()
        assert predictor.predict(RAW.values.tolist()) == pipeline.predict(RAW).tolist()
    probabilities = predictor.predict(instances, probabilities=True)
    np.testing.assert_allclose(probabilities, pipeline.predict_proba(RAW), rtol=1e-4, atol=1e-6)

    example = predictor.example_instances()
    assert example is not None and set(example[0]) == {"age", "income", "city"}
    assert len(predictor.predict(example)) == 1

    unknown_city = [{"age": 30, "income": 50.0, "city": "Z", "key": "extra keys are ignored"}]
    assert len(predictor.predict(unknown_city)) == 1
    with pytest.raises(PredictionError, match=r"instance 1: missing feature 'city'"):
        predictor.predict([instances[0], {"age": 30, "income": 50.0}])
    predictor.close()


def test_input_example_json_wins(tmp_path: Path) -> None:
    preprocessor = _preprocessor()
    joblib.dump(preprocessor, tmp_path / "preprocessor.joblib")
    _save_sklearn(tmp_path, np.asarray(preprocessor.transform(RAW)))
    example = [{"age": 40, "income": 70.0, "city": "C"}]
    (tmp_path / "input_example.json").write_text(json.dumps({"instances": example}))
    assert load_predictor(tmp_path).example_instances() == example


def test_a_preprocessor_without_transform(sklearn_dir: Path) -> None:
    joblib.dump({"not": "a transformer"}, sklearn_dir / "preprocessor.joblib")
    with pytest.raises(ModelLoadError, match="no transform method"):
        load_predictor(sklearn_dir)


# -- input_example.json ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "content", ['{"instances": [[1, 2, 3, 4]]}', "[[1, 2, 3, 4]]"], ids=["request", "list"]
)
def test_input_example_forms(sklearn_dir: Path, content: str) -> None:
    (sklearn_dir / "input_example.json").write_text(content)
    assert read_input_example(sklearn_dir) == [[1, 2, 3, 4]]
    assert load_predictor(sklearn_dir).example_instances() == [[1, 2, 3, 4]]


def test_no_input_example(sklearn_dir: Path) -> None:
    assert read_input_example(sklearn_dir) is None
    assert load_predictor(sklearn_dir).example_instances() == [[0.0, 0.0, 0.0, 0.0]]


@pytest.mark.parametrize("content", ['{"rows": []}', "not json", "42"])
def test_a_malformed_input_example(sklearn_dir: Path, content: str) -> None:
    (sklearn_dir / "input_example.json").write_text(content)
    with pytest.raises(ModelLoadError, match=r"input_example\.json"):
        load_predictor(sklearn_dir).example_instances()


# -- b64 --------------------------------------------------------------------------------------


def test_decode_b64() -> None:
    request = [
        {"image_bytes": {"b64": "aGVsbG8="}, "key": 1},
        [{"b64": "AAE="}, "text"],
        {"b64": "aGk=", "other": 1},
    ]
    assert decode_b64(request) == [
        {"image_bytes": b"hello", "key": 1},
        [b"\x00\x01", "text"],
        {"b64": "aGk=", "other": 1},
    ]
    with pytest.raises(PredictionError, match="not valid base64"):
        decode_b64([{"b64": "***"}])


# -- the public surface ------------------------------------------------------------------------


def test_all_is_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(predictors).items()
        if not name.startswith("_")
        and not isinstance(value, type(sys))
        and str(getattr(value, "__module__", "")).startswith(predictors.__name__)
    }
    constants = {"B64_FRAMEWORKS", "FRAMEWORKS", "MODEL_FILES", "INPUT_EXAMPLE_FILE"}
    assert public == set(predictors.__all__) - constants - {"PREPROCESSOR_FILE"}
    for name in predictors.__all__:
        assert getattr(predictors, name) is not None


def test_importing_predictors_imports_no_framework() -> None:
    heavy = ("torch", "tensorflow", "keras", "xgboost", "lightgbm", "onnxruntime", "sklearn")
    code = (
        "import sys, mlengine.prediction.predictors;"
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
