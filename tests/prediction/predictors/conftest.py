"""Tiny models of every framework, trained in-process on iris and saved into a version
directory under the canonical file name, with the in-process predictions to compare against.

Each builder returns a `Built`; the `built` fixture runs each builder once per module. Keras and
TensorFlow cases are marked slow (importing them costs seconds).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SEED = 0

# Keras 3 on the torch backend converts tensors with np.array(tensor) while fitting and saving,
# which numpy 2 flags; serving does not go through that path.
KERAS_NUMPY_COPY = r"__array__ implementation doesn't accept a copy keyword"


@dataclasses.dataclass
class Built:
    """A model saved in `directory`, and what the same model predicts in-process.

    Attributes:
        framework: what `detect_framework` must find.
        reference: in-process predictions for a float64 feature matrix.
        probabilities: in-process class probabilities, for classifiers.
        labels: predictions are labels (compared for equality), else numbers (allclose).
        nan_ok: the model takes missing values.
        knows_shape: the predictor knows the number of features before the model runs.
        derives_example: `example_instances` must not be None.
        tensors: the (input, output) names the model declares, for the Open Inference
            Protocol; ``input-0``/``output-0`` where it declares none.
    """

    directory: Path
    framework: str
    reference: Callable[[np.ndarray], Any]
    probabilities: Callable[[np.ndarray], Any] | None = None
    labels: bool = True
    nan_ok: bool = False
    knows_shape: bool = True
    derives_example: bool = True
    tensors: tuple[str, str] = ("input-0", "output-0")


def iris_data() -> tuple[np.ndarray, np.ndarray]:
    """Iris features (float64) and labels, shuffled with a fixed seed."""
    features, labels = load_iris(return_X_y=True)
    order = np.random.default_rng(SEED).permutation(len(labels))
    return features[order], labels[order]


def sklearn_pipeline(features: np.ndarray, labels: np.ndarray) -> Any:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(features, labels)


def build_sklearn_joblib(directory: Path) -> Built:
    features, labels = iris_data()
    model = sklearn_pipeline(features, labels)
    joblib.dump(model, directory / "model.joblib")
    return Built(directory, "SCIKIT_LEARN", model.predict, model.predict_proba)


def build_sklearn_pkl(directory: Path) -> Built:
    from sklearn.ensemble import RandomForestClassifier

    features, labels = iris_data()
    model = RandomForestClassifier(n_estimators=10, random_state=SEED).fit(features, labels)
    with open(directory / "model.pkl", "wb") as handle:
        pickle.dump(model, handle)
    return Built(directory, "SCIKIT_LEARN", model.predict, model.predict_proba, nan_ok=True)


def build_sklearn_skops(directory: Path) -> Built:
    import skops.io as sio

    features, labels = iris_data()
    model = sklearn_pipeline(features, labels)
    sio.dump(model, directory / "model.skops")
    return Built(directory, "SCIKIT_LEARN", model.predict, model.predict_proba)


def build_lightgbm_sklearn_joblib(directory: Path) -> Built:
    import lightgbm as lgb

    features, labels = iris_data()
    model = lgb.LGBMClassifier(n_estimators=10, random_state=SEED, verbose=-1, n_jobs=1)
    model.fit(features, labels)
    joblib.dump(model, directory / "model.joblib")
    return Built(directory, "SCIKIT_LEARN", model.predict, model.predict_proba, nan_ok=True)


def xgboost_classifier() -> Any:
    import xgboost as xgb

    features, labels = iris_data()
    return xgb.XGBClassifier(n_estimators=10, max_depth=2, random_state=SEED, n_jobs=1).fit(
        features, labels
    )


def _build_xgboost_file(directory: Path, name: str, saved_as: str) -> Built:
    model = xgboost_classifier()
    # xgboost picks the format from the extension (and warns about ".bst"): save, then rename.
    model.get_booster().save_model(directory / saved_as)
    (directory / saved_as).rename(directory / name)
    # a Booster answers its own output, as on AI Platform: multi:softprob's probability rows
    return Built(
        directory, "XGBOOST", model.predict_proba, model.predict_proba, labels=False, nan_ok=True
    )


def build_xgboost_json(directory: Path) -> Built:
    return _build_xgboost_file(directory, "model.json", "booster.json")


def build_xgboost_ubj(directory: Path) -> Built:
    return _build_xgboost_file(directory, "model.ubj", "booster.ubj")


def build_xgboost_bst(directory: Path) -> Built:
    # xgboost 3 no longer writes the legacy binary format: model.bst holds UBJSON here.
    return _build_xgboost_file(directory, "model.bst", "booster.ubj")


def build_xgboost_binary_logistic(directory: Path) -> Built:
    import xgboost as xgb

    features, labels = iris_data()
    target = (labels == 1).astype(int)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 2, "nthread": 1, "seed": SEED},
        xgb.DMatrix(features, label=target),
        num_boost_round=10,
    )
    booster.save_model(directory / "booster.json")
    (directory / "booster.json").rename(directory / "model.json")

    def positive(x: np.ndarray) -> np.ndarray:
        return np.asarray(booster.predict(xgb.DMatrix(x)))

    return Built(
        directory,
        "XGBOOST",
        positive,  # the booster's output, as on AI Platform: the probability of class 1
        lambda x: np.column_stack([1 - positive(x), positive(x)]),
        labels=False,
        nan_ok=True,
    )


def build_xgboost_joblib(directory: Path) -> Built:
    model = xgboost_classifier()
    joblib.dump(model, directory / "model.joblib")
    return Built(directory, "XGBOOST", model.predict, model.predict_proba, nan_ok=True)


def build_lightgbm_txt(directory: Path) -> Built:
    import lightgbm as lgb

    features, labels = iris_data()
    params = {"objective": "multiclass", "num_class": 3, "verbose": -1, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(features, labels), num_boost_round=10)
    booster.save_model(directory / "model.txt")
    return Built(
        directory,
        "LIGHTGBM",
        lambda x: np.argmax(booster.predict(x), axis=1),
        booster.predict,
        nan_ok=True,
    )


def torch_mlp() -> Any:
    """A 4-8-3 MLP trained for a few full-batch steps on standardised iris (logits out)."""
    import torch

    torch.manual_seed(SEED)
    features, labels = iris_data()
    scaled = torch.tensor((features - features.mean(0)) / features.std(0), dtype=torch.float32)
    target = torch.tensor(labels)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(30):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(scaled), target)
        loss.backward()
        optimizer.step()
    return model.eval()


def _torch_reference(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def reference(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.tensor(x, dtype=torch.float32)).numpy()

    return reference


def build_pytorch_pt2(directory: Path) -> Built:
    import torch

    model = torch_mlp()
    example = torch.zeros(5, 4)
    program = torch.export.export(
        model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, directory / "model.pt2")
    name = program.graph_signature.user_inputs[0]  # outputs have no names
    return Built(
        directory, "PYTORCH", _torch_reference(model), labels=False, tensors=(name, "output-0")
    )


def build_pytorch_torchscript(directory: Path) -> Built:
    import torch

    model = torch_mlp()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*torch\.jit.*deprecated", DeprecationWarning)
        torch.jit.trace(model, torch.zeros(2, 4)).save(directory / "model.pt")
    return Built(
        directory,
        "PYTORCH",
        _torch_reference(model),
        labels=False,
        knows_shape=False,
        derives_example=False,
    )


def build_keras(directory: Path) -> Built:
    import keras

    keras.utils.set_random_seed(SEED)
    features, labels = iris_data()
    model = keras.Sequential(
        [
            keras.Input((4,), name="measurements"),
            keras.layers.Normalization(mean=features.mean(0), variance=features.var(0)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3, activation="softmax", name="species"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", KERAS_NUMPY_COPY, DeprecationWarning)
        model.fit(features.astype("float32"), labels, epochs=3, batch_size=32, verbose=0)
        model.save(directory / "model.keras")

    def reference(x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return model(torch.tensor(x, dtype=torch.float32), training=False).numpy()

    return Built(directory, "KERAS", reference, labels=False, tensors=("measurements", "species"))


def _build_onnx(directory: Path, options: dict[str, Any] | None) -> Built:
    from skl2onnx import to_onnx

    features, labels = iris_data()
    model = sklearn_pipeline(features, labels)
    onnx_model = to_onnx(model, features[:1].astype(np.float32), options=options)
    (directory / "model.onnx").write_bytes(onnx_model.SerializeToString())
    graph = onnx_model.graph
    names = (graph.input[0].name, graph.output[0].name)  # skl2onnx: label, then probabilities
    return Built(directory, "ONNX", model.predict, model.predict_proba, tensors=names)


def build_onnx_zipmap(directory: Path) -> Built:
    return _build_onnx(directory, None)


def build_onnx_tensor(directory: Path) -> Built:
    return _build_onnx(directory, {"zipmap": False})


def tensorflow_module(weights: np.ndarray, bias: np.ndarray, *, dict_outputs: bool) -> Any:
    """A tf.Module computing softmax(x @ weights + bias), with a serving signature."""
    import tensorflow as tf

    class Softmax(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weights = tf.Variable(weights.astype(np.float32))
            self.bias = tf.Variable(bias.astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x: Any) -> Any:
            probabilities = tf.nn.softmax(tf.matmul(x, self.weights) + self.bias)
            if dict_outputs:
                return {"probabilities": probabilities, "classes": tf.argmax(probabilities, 1)}
            return probabilities

    return Softmax()


def build_tensorflow(directory: Path) -> Built:
    import tensorflow as tf

    features, labels = iris_data()
    fitted = LogisticRegression(max_iter=1000).fit(features, labels)
    module = tensorflow_module(fitted.coef_.T, fitted.intercept_, dict_outputs=False)
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})

    def reference(x: np.ndarray) -> np.ndarray:
        return np.asarray(module.serve(tf.constant(x, dtype=tf.float32)))

    # the signature's input is named by its TensorSpec, a single output "output_0" by TF
    return Built(directory, "TENSORFLOW", reference, labels=False, tensors=("x", "output_0"))


BUILDERS: dict[str, Callable[[Path], Built]] = {
    "sklearn-joblib": build_sklearn_joblib,
    "sklearn-pkl": build_sklearn_pkl,
    "sklearn-skops": build_sklearn_skops,
    "lightgbm-sklearn-joblib": build_lightgbm_sklearn_joblib,
    "xgboost-json": build_xgboost_json,
    "xgboost-ubj": build_xgboost_ubj,
    "xgboost-bst": build_xgboost_bst,
    "xgboost-binary-logistic": build_xgboost_binary_logistic,
    "xgboost-joblib": build_xgboost_joblib,
    "lightgbm-txt": build_lightgbm_txt,
    "pytorch-pt2": build_pytorch_pt2,
    "pytorch-torchscript": build_pytorch_torchscript,
    "keras": build_keras,
    "onnx-zipmap": build_onnx_zipmap,
    "onnx-tensor": build_onnx_tensor,
    "tensorflow": build_tensorflow,
}
SLOW = {"keras", "tensorflow"}


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(name, marks=[pytest.mark.slow] if name in SLOW else [], id=name)
        for name in BUILDERS
    ],
)
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Each framework's model, saved in a version directory of its own."""
    directory = tmp_path_factory.mktemp(request.param)
    return BUILDERS[request.param](directory)


@pytest.fixture(scope="session")
def iris() -> tuple[np.ndarray, np.ndarray]:
    """Iris features and labels, shuffled with a fixed seed."""
    return iris_data()
