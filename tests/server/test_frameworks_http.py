"""Every framework over HTTP: train in-process, save a version directory, create the version
through the SDK (the framework is detected, never given), predict over raw ml v1 REST and compare
with the in-process model. Also versions with ``preprocessor.joblib`` (raw objects with string
columns work for every framework), ``input_example.json`` as the smoke test's input, and
predicting with a FAILED version. One server serves the whole module (`module_server`)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import mlengine
from mlengine.errors import OperationFailed
from tests.prediction.predictors.conftest import (
    BUILDERS,
    SEED,
    SLOW,
    Built,
    build_pytorch_pt2,
    build_pytorch_torchscript,
    iris_data,
)

pytestmark = pytest.mark.integration

PROJECT = "frameworks"
BATCHES = (1, 32)


# -- helpers --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(module_server: Any) -> Iterator[mlengine.Client]:
    """The SDK on the module's server, in a project of this module's own."""
    base = module_server.settings
    settings = dataclasses.replace(base, values={**base.values, "project": PROJECT})
    with mlengine.Client(settings=settings, autostart=False) as instance:
        yield instance


def model_name(case: str) -> str:
    """An ml v1 model name (letters, digits, underscores) for a test case id."""
    return case.replace("-", "_")


def predict_url(server: Any, model: str, version: str) -> str:
    return f"{server.url}/v1/projects/{PROJECT}/models/{model}/versions/{version}:predict"


def post(server: Any, model: str, version: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(predict_url(server, model, version), json=body, timeout=60)


def predictions(server: Any, model: str, version: str, body: dict[str, Any]) -> list[Any]:
    """The ``predictions`` of a successful predict request."""
    answer = post(server, model, version, body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert list(result) == ["predictions"]
    outputs: list[Any] = result["predictions"]
    assert len(outputs) == len(body["instances"])
    return outputs


def deploy(client: mlengine.Client, model: str, directory: Path, framework: str) -> dict[str, Any]:
    """Create `model` and its version ``v1`` from `directory` without naming the framework;
    check that it is READY with `framework` detected."""
    client.models.create(model)
    version = client.versions.create(model, "v1", directory, wait=True, timeout=240)
    assert version["state"] == "READY", version
    assert version["framework"] == framework
    assert version["name"] == f"projects/{PROJECT}/models/{model}/versions/v1"
    return version


def compare(got: list[Any], expected: Any, *, labels: bool) -> None:
    """Labels must be equal; numbers close (float32 models, JSON round trip)."""
    want = np.asarray(expected)
    have = np.asarray(got)
    assert have.shape == want.shape
    if labels:
        np.testing.assert_array_equal(have, want)
    else:
        np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-5)


# -- every framework: iris models of the shared builders ------------------------------------------


@dataclasses.dataclass
class Deployed:
    """A builder's model, deployed as version ``v1`` of `model`."""

    built: Built
    model: str
    version: dict[str, Any]


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(name, marks=[pytest.mark.slow] if name in SLOW else [], id=name)
        for name in BUILDERS
    ],
)
def deployed(
    request: pytest.FixtureRequest,
    client: mlengine.Client,
    tmp_path_factory: pytest.TempPathFactory,
) -> Deployed:
    directory = tmp_path_factory.mktemp(request.param)
    built = BUILDERS[request.param](directory)
    model = model_name(f"iris-{request.param}")
    return Deployed(built, model, deploy(client, model, directory, built.framework))


@pytest.fixture(scope="module")
def iris() -> np.ndarray:
    return iris_data()[0]


class TestEveryFramework:
    def test_the_version_is_ready_with_the_detected_framework(
        self, deployed: Deployed, client: mlengine.Client
    ) -> None:
        version = client.versions.get(deployed.model, "v1")
        assert version["state"] == "READY"
        assert version["framework"] == deployed.built.framework
        assert version["isDefault"] is True

    @pytest.mark.parametrize("batch", BATCHES)
    def test_http_predictions_match_the_in_process_model(
        self, deployed: Deployed, module_server: Any, iris: np.ndarray, batch: int
    ) -> None:
        features = iris[:batch]
        got = predictions(module_server, deployed.model, "v1", {"instances": features.tolist()})
        compare(got, deployed.built.reference(features), labels=deployed.built.labels)

    def test_probabilities_are_chosen_by_the_request(
        self, deployed: Deployed, module_server: Any, iris: np.ndarray
    ) -> None:
        features = iris[:32]
        instances = features.tolist()
        plain = predictions(module_server, deployed.model, "v1", {"instances": instances})
        flagged = predictions(
            module_server, deployed.model, "v1", {"instances": instances, "probabilities": True}
        )
        unflagged = predictions(
            module_server, deployed.model, "v1", {"instances": instances, "probabilities": False}
        )
        assert unflagged == plain
        if deployed.built.probabilities is None:  # not a classifier: outputs as they are
            assert flagged == plain
            return
        rows = np.asarray(flagged, dtype=float)
        assert rows.shape == (32, len(rows[0])) and rows.shape[1] >= 2
        np.testing.assert_allclose(rows.sum(axis=1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(
            rows, deployed.built.probabilities(features), rtol=1e-4, atol=1e-5
        )
        if deployed.built.labels:  # the label is the most probable class
            np.testing.assert_array_equal(np.argmax(rows, axis=1), np.asarray(plain))
        else:  # a booster's own output: the probabilities (of class 1 for a binary one)
            np.testing.assert_allclose(
                rows if rows.shape == np.shape(plain) else rows[:, 1], plain, rtol=1e-5
            )

    def test_open_inference_protocol_names_the_model_tensors(
        self, deployed: Deployed, module_server: Any, iris: np.ndarray
    ) -> None:
        """tritonclient takes the tensors' names, types and shapes from the model metadata, as
        KServe clients do: the model's own names (TF signature, Keras, ONNX, torch.export),
        ``input-0``/``output-0`` for models that declare none."""
        import tritonclient.http as triton_http

        # the v2 routes serve the server's default project
        with mlengine.Client(settings=module_server.settings, autostart=False) as default:
            default.models.create(deployed.model)
            version = default.versions.create(
                deployed.model, "v1", deployed.built.directory, wait=True, timeout=240
            )
            assert version["state"] == "READY", version
        url = module_server.url.removeprefix("http://")
        triton = triton_http.InferenceServerClient(url, network_timeout=60)
        try:
            metadata = triton.get_model_metadata(deployed.model)
            if deployed.built.derives_example:
                (given,) = metadata["inputs"]
                (answered,) = metadata["outputs"]
                assert (given["name"], answered["name"]) == deployed.built.tensors
                assert given["datatype"] == "FP32" and given["shape"] == [-1, 4]
            else:  # TorchScript: nothing tells its input, so the metadata cannot either
                assert metadata["inputs"] == metadata["outputs"] == []
                given = {"name": "input-0", "datatype": "FP32"}
                answered = {"name": "output-0", "shape": [-1, 3]}
            features = iris[:5].astype(np.float32)
            tensor = triton_http.InferInput(given["name"], [5, 4], given["datatype"])
            tensor.set_data_from_numpy(features, binary_data=False)
            wanted = triton_http.InferRequestedOutput(answered["name"], binary_data=False)
            result = triton.infer(deployed.model, [tensor], outputs=[wanted])
        finally:
            triton.close()
        got = result.as_numpy(answered["name"])
        assert got is not None
        assert list(got.shape) == [5, *answered["shape"][1:]]
        if deployed.built.framework in ("KERAS", "TENSORFLOW"):  # float32 models: FP32 out
            assert answered["datatype"] == "FP32" and got.dtype == np.float32
        compare(got.tolist(), deployed.built.reference(features), labels=deployed.built.labels)


# -- preprocessor.joblib: raw objects with a string column, for every framework -------------------

CITIES = ("A", "B", "C")


def people(count: int, seed: int) -> pd.DataFrame:
    """Raw tabular data: an integer, a string and a float column."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 80, count),
            "city": rng.choice(CITIES, count),
            "income": rng.normal(50_000, 15_000, count).round(2),
        }
    )


def people_classes(frame: pd.DataFrame) -> np.ndarray:
    """Three classes from a noisy score over all three columns."""
    noise = np.random.default_rng(SEED).normal(0, 0.3, len(frame))
    score = (
        (frame["age"].to_numpy() - 45) / 15
        + (frame["income"].to_numpy() - 50_000) / 15_000
        + frame["city"].map({"A": -1.0, "B": 0.0, "C": 1.0}).to_numpy(dtype=float)
        + noise
    )
    return np.asarray(np.digitize(score, [-0.7, 0.7]))


def make_preprocessor() -> ColumnTransformer:
    return ColumnTransformer(
        [
            ("numbers", StandardScaler(), ["age", "income"]),
            ("city", OneHotEncoder(handle_unknown="ignore"), ["city"]),
        ]
    )


def raw_instances(count: int) -> list[dict[str, Any]]:
    """Request objects (JSON types); the last one has a city the encoder never saw."""
    frame = people(count, seed=SEED + 1)
    rows = [
        {"age": int(age), "city": str(city), "income": float(income)}
        for age, city, income in frame.itertuples(index=False)
    ]
    if count > 1:
        rows[-1]["city"] = "Z"
    return rows


@dataclasses.dataclass
class Trained:
    """A model trained on the preprocessor's output, as the framework saved it.

    Attributes:
        predict: in-process predictions for a transformed matrix.
        probabilities: in-process class probabilities for a transformed matrix (classifiers).
        labels: predictions are labels (compared for equality), else numbers (allclose).
        pipeline: the whole scikit-learn Pipeline (preprocessor and model), when there is one.
    """

    framework: str
    predict: Callable[[np.ndarray], Any]
    probabilities: Callable[[np.ndarray], Any] | None
    labels: bool = True
    pipeline: Any = None


def train_sklearn(directory: Path, frame: pd.DataFrame, target: np.ndarray) -> Trained:
    pipeline = Pipeline(
        [("preprocess", make_preprocessor()), ("model", LogisticRegression(max_iter=1000))]
    ).fit(frame, target)
    joblib.dump(pipeline["preprocess"], directory / "preprocessor.joblib")
    estimator = pipeline["model"]
    joblib.dump(estimator, directory / "model.joblib")
    return Trained("SCIKIT_LEARN", estimator.predict, estimator.predict_proba, pipeline=pipeline)


def train_xgboost(directory: Path, matrix: np.ndarray, target: np.ndarray) -> Trained:
    import xgboost as xgb

    model = xgb.XGBClassifier(n_estimators=10, max_depth=2, random_state=SEED, n_jobs=1)
    model.fit(matrix, target)
    model.get_booster().save_model(directory / "model.json")
    # a Booster answers its own output, as on AI Platform: probability rows
    return Trained("XGBOOST", model.predict_proba, model.predict_proba, labels=False)


def train_lightgbm(directory: Path, matrix: np.ndarray, target: np.ndarray) -> Trained:
    import lightgbm as lgb

    model = lgb.LGBMClassifier(n_estimators=10, random_state=SEED, verbose=-1, n_jobs=1)
    model.fit(matrix, target)
    model.booster_.save_model(directory / "model.txt")
    return Trained("LIGHTGBM", model.predict, model.predict_proba)


def train_onnx(directory: Path, matrix: np.ndarray, target: np.ndarray) -> Trained:
    from skl2onnx import to_onnx

    estimator = LogisticRegression(max_iter=1000).fit(matrix, target)
    onnx_model = to_onnx(estimator, matrix[:1].astype(np.float32))
    (directory / "model.onnx").write_bytes(onnx_model.SerializeToString())
    return Trained("ONNX", estimator.predict, estimator.predict_proba)


def train_pytorch(directory: Path, matrix: np.ndarray, target: np.ndarray) -> Trained:
    import torch

    torch.manual_seed(SEED)
    width = matrix.shape[1]
    model = torch.nn.Sequential(torch.nn.Linear(width, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    inputs = torch.tensor(matrix, dtype=torch.float32)
    labels = torch.tensor(target)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(30):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(inputs), labels)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    model.eval()
    program = torch.export.export(
        model, (torch.zeros(5, width),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, directory / "model.pt2")

    def logits(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return np.asarray(model(torch.tensor(x, dtype=torch.float32)).numpy())

    return Trained("PYTORCH", logits, None, labels=False)


TRAINERS: dict[str, Callable[[Path, np.ndarray, np.ndarray], Trained]] = {
    "xgboost": train_xgboost,
    "lightgbm": train_lightgbm,
    "onnx": train_onnx,
    "pytorch": train_pytorch,
}


@dataclasses.dataclass
class DeployedWithPreprocessor:
    trained: Trained
    preprocessor: Any
    model: str

    def transform(self, raw: list[dict[str, Any]]) -> np.ndarray:
        return np.asarray(self.preprocessor.transform(pd.DataFrame(raw)))


@pytest.fixture(scope="module", params=["sklearn", *TRAINERS])
def with_preprocessor(
    request: pytest.FixtureRequest,
    client: mlengine.Client,
    tmp_path_factory: pytest.TempPathFactory,
) -> DeployedWithPreprocessor:
    """A version directory with ``preprocessor.joblib`` and a model trained on its output."""
    directory = tmp_path_factory.mktemp(f"preprocessed-{request.param}")
    frame = people(200, seed=SEED)
    target = people_classes(frame)
    if request.param == "sklearn":
        trained = train_sklearn(directory, frame, target)
        preprocessor = trained.pipeline["preprocess"]
    else:
        preprocessor = make_preprocessor().fit(frame)
        joblib.dump(preprocessor, directory / "preprocessor.joblib")
        trained = TRAINERS[request.param](directory, preprocessor.transform(frame), target)
    model = model_name(f"people-{request.param}")
    deploy(client, model, directory, trained.framework)
    return DeployedWithPreprocessor(trained, preprocessor, model)


class TestPreprocessor:
    @pytest.mark.parametrize("batch", BATCHES)
    def test_raw_objects_match_the_in_process_model(
        self, with_preprocessor: DeployedWithPreprocessor, module_server: Any, batch: int
    ) -> None:
        raw = raw_instances(batch)
        got = predictions(module_server, with_preprocessor.model, "v1", {"instances": raw})
        trained = with_preprocessor.trained
        expected = trained.predict(with_preprocessor.transform(raw))
        compare(got, expected, labels=trained.labels)
        if trained.pipeline is not None:
            compare(got, trained.pipeline.predict(pd.DataFrame(raw)), labels=True)

    def test_lists_in_column_order_are_raw_instances_too(
        self, with_preprocessor: DeployedWithPreprocessor, module_server: Any
    ) -> None:
        raw = raw_instances(8)
        as_lists = [[row["age"], row["city"], row["income"]] for row in raw]
        model = with_preprocessor.model
        by_list = predictions(module_server, model, "v1", {"instances": as_lists})
        assert by_list == predictions(module_server, model, "v1", {"instances": raw})

    def test_probabilities(
        self, with_preprocessor: DeployedWithPreprocessor, module_server: Any
    ) -> None:
        raw = raw_instances(32)
        body = {"instances": raw, "probabilities": True}
        got = predictions(module_server, with_preprocessor.model, "v1", body)
        trained = with_preprocessor.trained
        if trained.probabilities is None:  # not a classifier: outputs as they are
            plain = predictions(module_server, with_preprocessor.model, "v1", {"instances": raw})
            assert got == plain
            return
        rows = np.asarray(got, dtype=float)
        np.testing.assert_allclose(rows.sum(axis=1), 1.0, rtol=1e-5)
        expected = trained.probabilities(with_preprocessor.transform(raw))
        np.testing.assert_allclose(rows, expected, rtol=1e-4, atol=1e-5)
        if trained.pipeline is not None:
            whole = trained.pipeline.predict_proba(pd.DataFrame(raw))
            np.testing.assert_allclose(rows, whole, rtol=1e-9, atol=1e-12)

    def test_a_missing_column_is_named(
        self, with_preprocessor: DeployedWithPreprocessor, module_server: Any
    ) -> None:
        raw: list[dict[str, Any]] = raw_instances(3)
        del raw[1]["city"]
        answer = post(module_server, with_preprocessor.model, "v1", {"instances": raw})
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert isinstance(error, str) and error.startswith("Prediction failed")
        assert "instance 1" in error and "'city'" in error


# -- input_example.json and FAILED versions -------------------------------------------------------


def write_example(directory: Path, instances: list[Any]) -> None:
    (directory / "input_example.json").write_text(json.dumps({"instances": instances}))


def test_input_example_is_the_smoke_test_input(
    client: mlengine.Client, module_server: Any, tmp_path: Path, iris: np.ndarray
) -> None:
    """A TorchScript model says nothing of its input: without ``input_example.json`` the
    version is READY untested; with one, the example is predicted (a bad one fails it)."""
    plain = tmp_path / "plain"
    plain.mkdir()
    built = build_pytorch_torchscript(plain)
    assert not built.derives_example
    with_example = tmp_path / "with-example"
    shutil.copytree(plain, with_example)
    write_example(with_example, iris[:3].tolist())
    bad_example = tmp_path / "bad-example"
    shutil.copytree(plain, bad_example)
    write_example(bad_example, [[1.0, 2.0, 3.0]])

    model = "torchscript_examples"
    deploy(client, model, plain, "PYTORCH")  # nothing to smoke-test with: READY all the same
    version = client.versions.create(model, "v2", with_example)
    assert version["state"] == "READY" and version["framework"] == "PYTORCH"
    features = iris[:5]
    got = predictions(module_server, model, "v2", {"instances": features.tolist()})
    compare(got, built.reference(features), labels=False)
    with pytest.raises(OperationFailed, match="Prediction failed"):
        client.versions.create(model, "v3", bad_example)
    assert client.versions.get(model, "v3")["state"] == "FAILED"


def test_input_example_wins_over_the_derived_example(
    client: mlengine.Client, tmp_path: Path
) -> None:
    """An exported program knows its input shape (the smoke test derives an example), but
    ``input_example.json`` is what the smoke test predicts when there is one."""
    directory = tmp_path / "pt2"
    directory.mkdir()
    build_pytorch_pt2(directory)
    write_example(directory, [[1.0, 2.0, 3.0]])
    client.models.create("pt2_examples")
    with pytest.raises(OperationFailed, match="instance 0: expected 4 features, got 3"):
        client.versions.create("pt2_examples", "v1", directory)
    assert client.versions.get("pt2_examples", "v1")["state"] == "FAILED"


def test_predicting_with_a_failed_version_names_its_state(
    client: mlengine.Client, module_server: Any, tmp_path: Path
) -> None:
    directory = tmp_path / "broken"
    directory.mkdir()
    (directory / "model.joblib").write_bytes(b"not a pickle")
    client.models.create("broken")
    with pytest.raises(OperationFailed):
        client.versions.create("broken", "v1", directory)
    version = client.versions.get("broken", "v1")
    assert version["state"] == "FAILED"
    assert version["errorMessage"]
    answer = post(module_server, "broken", "v1", {"instances": [[5.1, 3.5, 1.4, 0.2]]})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert isinstance(error, str) and error.startswith("Prediction failed")
    assert "FAILED" in error and "broken" in error
