"""``projects.explain`` over HTTP: sampled Shapley attributions of real models served by a real
server, checked against values known in closed form."""

from __future__ import annotations

import json
import subprocess
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression

import mlengine
from mlengine.config import Settings
from mlengine.errors import InvalidArgument
from tests.conftest import ServerProcess
from tests.server._predictor_packages import (
    SCALED_SUM_CLASS,
    scaled_sum_model,
    scaled_sum_package,
)

pytestmark = pytest.mark.integration

SHAPLEY = {"sampledShapleyAttribution": {"numPaths": 8}}


@pytest.fixture
def client(server: ServerProcess, settings: Settings) -> Iterator[mlengine.Client]:
    with mlengine.Client(settings=settings) as instance:
        yield instance


def _linear(tmp_path: Path) -> tuple[Path, LinearRegression]:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 4))
    target = features @ np.array([2.0, -1.0, 0.5, 3.0]) + 7
    model = LinearRegression().fit(features, target)
    directory = tmp_path / "linear"
    directory.mkdir()
    joblib.dump(model, directory / "model.joblib")
    return directory, model


def test_a_linear_model_is_explained_exactly(
    client: mlengine.Client, server: ServerProcess, tmp_path: Path
) -> None:
    directory, model = _linear(tmp_path)
    client.models.create("linear")
    client.versions.create("linear", "v1", directory, config={"explanationConfig": SHAPLEY})
    rows = [[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 0.0, 2.0]]

    explanations = client.explain("linear", rows)

    for row, explanation in zip(rows, explanations, strict=True):
        (label,) = explanation["attributions_by_label"]
        expected = model.coef_ * np.array(row)  # baseline zeros: w_i * x_i exactly
        assert label["attributions"]["features"] == pytest.approx(expected.tolist())
        assert label["example_score"] == pytest.approx(float(model.predict([row])[0]))
        assert label["baseline_score"] == pytest.approx(float(model.intercept_))
    raw = httpx.post(
        f"{server.url}/v1/projects/default/models/linear/versions/v1:explain",
        json={"instances": rows[:1]},
    )
    assert raw.status_code == 200 and raw.json() == {"explanations": explanations[:1]}


def test_a_classifier_explains_its_predicted_class_against_metadata_baselines(
    client: mlengine.Client, tmp_path: Path
) -> None:
    iris = load_iris()
    model = LogisticRegression(max_iter=500).fit(iris.data, iris.target)
    directory = tmp_path / "iris"
    directory.mkdir()
    joblib.dump(model, directory / "model.joblib")
    means = iris.data.mean(axis=0).tolist()
    metadata = {"inputs": {"measurements": {"input_baselines": [means]}}}
    (directory / "explanation_metadata.json").write_text(json.dumps(metadata))
    client.models.create("iris")
    client.versions.create("iris", "v1", directory, config={"explanationConfig": SHAPLEY})
    rows = iris.data[[0, 75, 140]].tolist()

    explanations = client.explain("iris", rows)

    probabilities = model.predict_proba(rows)
    baseline = model.predict_proba([means])[0]
    for index, explanation in enumerate(explanations):
        (label,) = explanation["attributions_by_label"]
        predicted = int(np.argmax(probabilities[index]))
        assert label["label_index"] == predicted
        assert label["output_name"] == "probabilities"
        assert label["example_score"] == pytest.approx(probabilities[index][predicted])
        assert label["baseline_score"] == pytest.approx(baseline[predicted])
        values = label["attributions"]["measurements"]
        assert sum(values) == pytest.approx(label["example_score"] - label["baseline_score"])
        assert label["approx_error"] >= 0


def test_a_custom_prediction_routine_is_explained_through_its_worker(
    client: mlengine.Client, tmp_path: Path
) -> None:
    client.models.create("scaled")
    client.versions.create(
        "scaled", "v1", scaled_sum_model(tmp_path / "model"),
        config={"predictionClass": SCALED_SUM_CLASS, "explanationConfig": SHAPLEY,
                "packageUris": [str(scaled_sum_package(tmp_path / "p"))]},
    )  # fmt: skip

    (explanation,) = client.explain("scaled", [[1.0, 4.0]])

    label = explanation["attributions_by_label"][0]
    assert label["attributions"]["features"] == pytest.approx([2.0, 8.0])  # scale.txt holds 2


def test_explain_refusals(client: mlengine.Client, server: ServerProcess, tmp_path: Path) -> None:
    directory, _ = _linear(tmp_path)
    client.models.create("plain")
    client.versions.create("plain", "v1", directory)
    client.versions.create(
        "plain", "ig", directory,
        config={"explanationConfig": {"integratedGradientsAttribution": {}}},
    )  # fmt: skip
    client.versions.create("plain", "shap", directory, config={"explanationConfig": SHAPLEY})
    with pytest.raises(InvalidArgument, match="has no explanationConfig"):
        client.explain("plain", [[1, 2, 3, 4]])
    with pytest.raises(InvalidArgument, match="integratedGradientsAttribution, which needs"):
        client.explain("plain", [[1, 2, 3, 4]], version="ig")  # a scikit-learn model
    with pytest.raises(InvalidArgument, match="instance 1"):
        client.explain("plain", [[1, 2, 3, 4], [1, 2]], version="shap")
    with pytest.raises(InvalidArgument, match=r"'input_gradients' field .* SCIKIT_LEARN"):
        client.predict("plain", [[1, 2, 3, 4]], input_gradients=0)  # not silently ignored
    url = f"{server.url}/v1/projects/default/models"
    missing = httpx.post(f"{url}/nomodel:explain", json={"instances": [[1]]})
    assert missing.status_code == 404 and missing.json()["error"]["status"] == "NOT_FOUND"
    bad = httpx.post(f"{url}/plain/versions/shap:explain", content=b"{nope")
    assert bad.status_code == 400
    assert bad.json()["error"].startswith("Explanation failed: The request body is not valid")
    assert "Traceback" not in server.log.read_text()


def test_explain_from_the_cli(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    client: mlengine.Client,
    tmp_path: Path,
) -> None:
    directory, model = _linear(tmp_path)
    client.models.create("linear")
    client.versions.create("linear", "v1", directory, config={"explanationConfig": SHAPLEY})
    instances = tmp_path / "instances.json"
    instances.write_text("[1.0, 2.0, 3.0, 4.0]\n")

    as_json = run_cli("explain", "--model", "linear", "--json-instances", str(instances),
                      "--format", "json")  # fmt: skip
    assert as_json.returncode == 0, as_json.stderr
    (explanation,) = json.loads(as_json.stdout)["explanations"]
    values = explanation["attributions_by_label"][0]["attributions"]["features"]
    assert values == pytest.approx((model.coef_ * [1.0, 2.0, 3.0, 4.0]).tolist())
    table = run_cli("explain", "--model", "linear", "--json-instances", str(instances),
                    "--region", "us-central1")  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "EXAMPLE_SCORE" in table.stdout and "BASELINE_SCORE" in table.stdout


@pytest.mark.parametrize("file", ["model.pt2", "model.pt"])
def test_integrated_gradients_of_a_pytorch_model(
    client: mlengine.Client, tmp_path: Path, file: str
) -> None:
    import torch  # installed by make test (the torch extra)

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh()).eval()
    directory = tmp_path / "torch"
    directory.mkdir()
    if file == "model.pt2":
        program = torch.export.export(
            model, (torch.zeros(2, 4),), dynamic_shapes=({0: torch.export.Dim("batch")},)
        )
        torch.export.save(program, directory / file)
    else:
        with warnings.catch_warnings():  # TorchScript is deprecated, and still served
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(torch.jit.trace(model, torch.zeros(2, 4)), directory / file)
    client.models.create("torch")
    config = {"explanationConfig": {"integratedGradientsAttribution": {"numIntegralSteps": 64}}}
    client.versions.create("torch", "v1", directory, config=config)
    row = [0.5, -1.0, 2.0, 0.25]

    (explanation,) = client.explain("torch", [row])

    (label,) = explanation["attributions_by_label"]
    with torch.no_grad():
        outputs = model(torch.tensor([row, [0.0] * 4])).numpy()
    predicted = int(np.argmax(outputs[0]))
    assert label["label_index"] == predicted
    assert label["example_score"] == pytest.approx(float(outputs[0][predicted]), abs=1e-5)
    assert label["baseline_score"] == pytest.approx(float(outputs[1][predicted]), abs=1e-5)
    values = label["attributions"]["features"]
    assert sum(values) == pytest.approx(outputs[0][predicted] - outputs[1][predicted], abs=1e-3)
    assert label["approx_error"] < 1e-2  # completeness, from 64 steps on a smooth model
    # the gradients also answer as a predict option
    (gradient,) = client.predict("torch", [row], input_gradients=predicted)
    point = torch.tensor([row], requires_grad=True)
    model(point)[0, predicted].backward()
    assert gradient == pytest.approx(point.grad[0].tolist(), abs=1e-5)
