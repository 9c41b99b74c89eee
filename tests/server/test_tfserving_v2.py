"""TF Serving REST and the Open Inference Protocol (KServe v2) over the real server: raw httpx
and the unmodified ``tritonclient.http`` get the same predictions as the models in-process."""

from __future__ import annotations

import dataclasses
import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import mlengine

pytestmark = pytest.mark.integration

IRIS = load_iris()
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = IRIS.data[::10]


@dataclasses.dataclass
class Deployed:
    """The module's server and the models deployed on it (project ``default``).

    ``iris``: v1 a random forest (default), v2 a logistic regression, on feature lists.
    ``named``: a pipeline fitted on a DataFrame, taking objects keyed by column name.
    """

    url: str
    forest: Any
    linear: Any
    named: Any


@pytest.fixture(scope="module")
def deployed(module_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    root = tmp_path_factory.mktemp("models")
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(IRIS.data, IRIS.target)
    linear = LogisticRegression(max_iter=500).fit(IRIS.data, IRIS.target)
    frame = pd.DataFrame(IRIS.data, columns=COLUMNS)
    named = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(
        frame, IRIS.target
    )
    dirs: dict[str, Path] = {}
    for name, model in (("forest", forest), ("linear", linear), ("named", named)):
        dirs[name] = root / name
        dirs[name].mkdir()
        joblib.dump(model, dirs[name] / "model.joblib")
    with mlengine.Client(settings=module_server.settings) as client:
        client.models.create("iris")
        assert client.versions.create("iris", "v1", dirs["forest"])["state"] == "READY"
        assert client.versions.create("iris", "v2", dirs["linear"])["state"] == "READY"
        client.models.create("named")
        assert client.versions.create("named", "v1", dirs["named"])["state"] == "READY"
    yield Deployed(module_server.url, forest, linear, named)


@pytest.fixture
def http(deployed: Deployed) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=deployed.url, timeout=60) as client:
        yield client


# -- TF Serving -----------------------------------------------------------------------------


def test_tfserving_row_format(deployed: Deployed, http: httpx.Client) -> None:
    expected = deployed.forest.predict(ROWS).tolist()
    answer = http.post("/v1/models/iris:predict", json={"instances": ROWS.tolist()})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": expected}
    body = {"signature_name": "serving_default", "instances": ROWS.tolist()}
    answer = http.post("/v1/models/iris/versions/v2:predict", json=body)
    assert answer.json() == {"predictions": deployed.linear.predict(ROWS).tolist()}
    answer = http.post(
        "/v1/models/iris:predict", json={"instances": ROWS[:2].tolist(), "probabilities": True}
    )
    assert np.allclose(answer.json()["predictions"], deployed.forest.predict_proba(ROWS[:2]))
    objects = [dict(zip(COLUMNS, row, strict=True)) for row in ROWS.tolist()]
    answer = http.post("/v1/models/named:predict", json={"instances": objects})
    frame = pd.DataFrame(ROWS, columns=COLUMNS)
    assert answer.json() == {"predictions": deployed.named.predict(frame).tolist()}


def test_tfserving_columnar_format(deployed: Deployed, http: httpx.Client) -> None:
    answer = http.post("/v1/models/iris:predict", json={"inputs": ROWS.tolist()})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"outputs": deployed.forest.predict(ROWS).tolist()}
    columns = {name: ROWS[:, i].tolist() for i, name in enumerate(COLUMNS)}
    answer = http.post("/v1/models/named/versions/v1:predict", json={"inputs": columns})
    assert answer.status_code == 200, answer.text
    frame = pd.DataFrame(ROWS, columns=COLUMNS)
    assert answer.json() == {"outputs": deployed.named.predict(frame).tolist()}


def test_tfserving_model_status(deployed: Deployed, http: httpx.Client) -> None:
    ok = {"error_code": "OK", "error_message": ""}
    answer = http.get("/v1/models/iris")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "model_version_status": [
            {"version": "v1", "state": "AVAILABLE", "status": ok},
            {"version": "v2", "state": "AVAILABLE", "status": ok},
        ]
    }
    answer = http.get("/v1/models/iris/versions/v2")
    assert answer.json() == {
        "model_version_status": [{"version": "v2", "state": "AVAILABLE", "status": ok}]
    }
    for path in ("/v1/models/nope", "/v1/models/iris/versions/v9"):
        missing = http.get(path)
        assert missing.status_code == 404
        assert isinstance(missing.json()["error"], str)


def test_compressed_bodies_are_bounded_after_decompression(http: httpx.Client) -> None:
    body = b'{"instances": [' + b"[1, 2, 3, 4]," * 200_000 + b"[1, 2, 3, 4]]}"  # > 1.5 MB
    packed = gzip.compress(body)
    assert len(packed) < 100_000
    answer = http.post(
        "/v1/models/iris:predict", content=packed, headers={"Content-Encoding": "gzip"}
    )
    assert answer.status_code == 413 and "once decompressed" in answer.json()["error"]
    small = gzip.compress(b'{"instances": [[1, 2, 3, 4]]}')
    gzipped = {"Content-Encoding": "gzip"}
    answer = http.post("/v1/models/iris:predict", content=small, headers=gzipped)
    assert answer.status_code == 200, answer.text
    for encoding, content in (("br", small), ("gzip", b"not gzip")):
        refused = http.post(
            "/v1/models/iris:predict", content=content, headers={"Content-Encoding": encoding}
        )
        assert refused.status_code == 400 and encoding in refused.json()["error"]


def test_tfserving_model_metadata(http: httpx.Client) -> None:
    """GetModelMetadata: the default signature's inputs and outputs, as TensorInfo."""
    answer = http.get("/v1/models/iris/metadata")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_spec"] == {"name": "iris", "signature_name": "", "version": "v1"}
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert signature["inputs"] == {
        "input-0": {
            "dtype": "DT_FLOAT",
            "tensor_shape": {
                "dim": [{"size": "-1", "name": ""}, {"size": "4", "name": ""}],
                "unknown_rank": False,
            },
            "name": "input-0",
        }
    }
    assert signature["outputs"]["output-0"]["dtype"] == "DT_INT64"
    named = http.get("/v1/models/named/versions/v1/metadata").json()
    inputs = named["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert sorted(inputs) == sorted(COLUMNS)
    missing = http.get("/v1/models/iris/versions/v9/metadata")
    assert missing.status_code == 404 and isinstance(missing.json()["error"], str)


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("/v1/models/nope:predict", {"instances": [[1, 2, 3, 4]]}, 404, "nope"),
        ("/v1/models/iris/versions/v9:predict", {"instances": [[1, 2, 3, 4]]}, 404, "v9"),
        ("/v1/models/iris:predict", {"instances": [[1, 2, 3, 4], [1, 2]]}, 400, "instance 1"),
        ("/v1/models/iris:predict", {"instances": [[1, 2, 3, 4]], "inputs": []}, 400, "one of"),
        ("/v1/models/iris:predict", {"signature_name": "x"}, 400, "exactly one of"),
        ("/v1/models/iris:predict", {"instances": {"a": 1}}, 400, "'instances'"),
        ("/v1/models/named:predict", {"inputs": {"a": [1, 2], "b": [1]}}, 400, "batch size"),
        ("/v1/models/iris:predict", b"{nope", 400, "not valid JSON"),
        ("/v1/models/iris:classify", {"examples": []}, 400, "use :predict"),
        ("/v1/models/iris/versions/v1:regress", {"examples": []}, 400, "use :predict"),
        ("/v1/models/iris/labels/stable:predict", {"instances": []}, 400, "labels"),
    ],
)
def test_tfserving_errors(
    deployed: Deployed, http: httpx.Client, path: str, body: Any, status: int, fragment: str
) -> None:
    if isinstance(body, bytes):
        answer = http.post(path, content=body)
    else:
        answer = http.post(path, json=body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert isinstance(error, str) and fragment in error


# -- Open Inference Protocol: the unmodified Triton client ----------------------------------


@pytest.fixture
def triton(deployed: Deployed) -> Iterator[Any]:
    import tritonclient.http as triton_http

    client = triton_http.InferenceServerClient(url=deployed.url.removeprefix("http://"))
    try:
        yield client
    finally:
        client.close()


def test_tritonclient_health_and_metadata(triton: Any) -> None:
    from tritonclient.utils import InferenceServerException

    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready("iris")
    assert triton.is_model_ready("iris", "v2")
    assert not triton.is_model_ready("nope")
    assert triton.get_server_metadata()["name"] == "mlengine"
    metadata = triton.get_model_metadata("iris")
    assert metadata == {
        "name": "iris",
        "versions": ["v1", "v2"],
        "platform": "scikit_learn",
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "output-0", "datatype": "INT64", "shape": [-1]}],
    }
    named = triton.get_model_metadata("named", "v1")
    assert [item["name"] for item in named["inputs"]] == COLUMNS
    with pytest.raises(InferenceServerException, match="nope"):
        triton.get_model_metadata("nope")


def test_tritonclient_infer(deployed: Deployed, triton: Any) -> None:
    import tritonclient.http as triton_http

    data = IRIS.data[::50][:3].astype(np.float32)
    assert data.shape == (3, 4)
    features = triton_http.InferInput("input-0", [3, 4], "FP32")
    features.set_data_from_numpy(data, binary_data=False)
    wanted = [triton_http.InferRequestedOutput("output-0", binary_data=False)]
    result = triton.infer("iris", [features], outputs=wanted, request_id="r-1")
    labels = result.as_numpy("output-0")
    assert labels.dtype == np.int64 and labels.shape == (3,)
    assert labels.tolist() == deployed.forest.predict(data).tolist()
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == (
        "iris",
        "v1",
        "r-1",
    )
    # another version; no requested outputs (the client then asks for binary outputs: it
    # reads the JSON answer all the same)
    result = triton.infer("iris", [features], model_version="v2")
    assert result.as_numpy("output-0").tolist() == deployed.linear.predict(data).tolist()
    for algorithm in ("gzip", "deflate"):  # compressed request bodies
        result = triton.infer(
            "iris", [features], outputs=wanted, request_compression_algorithm=algorithm
        )
        assert result.as_numpy("output-0").tolist() == deployed.forest.predict(data).tolist()
    # request parameters become predict options
    result = triton.infer("iris", [features], outputs=wanted, parameters={"probabilities": True})
    probabilities = result.as_numpy("output-0")
    assert probabilities.shape == (3, 3)
    assert np.allclose(probabilities, deployed.forest.predict_proba(data))


# -- Open Inference Protocol: raw JSON ------------------------------------------------------


def test_v2_server_routes(http: httpx.Client) -> None:
    assert http.get("/v2/health/live").json() == {"live": True}
    assert http.get("/v2/health/ready").json() == {"ready": True}
    server = http.get("/v2").json()
    assert server == {"name": "mlengine", "version": mlengine.__version__, "extensions": []}
    assert http.get("/v2/models/iris/versions/v2/ready").json() == {"name": "iris", "ready": True}
    assert http.get("/v2/models/iris/versions/v9/ready").status_code == 404


def test_v2_infer_named_inputs(deployed: Deployed, http: httpx.Client) -> None:
    inputs = [
        {"name": name, "shape": [len(ROWS)], "datatype": "FP64", "data": ROWS[:, i].tolist()}
        for i, name in enumerate(COLUMNS)
    ]
    answer = http.post("/v2/models/named/infer", json={"id": "7", "inputs": inputs})
    assert answer.status_code == 200, answer.text
    frame = pd.DataFrame(ROWS, columns=COLUMNS)
    assert answer.json() == {
        "model_name": "named",
        "model_version": "v1",
        "id": "7",
        "outputs": [
            {
                "name": "output-0",
                "datatype": "INT64",
                "shape": [len(ROWS)],
                "data": deployed.named.predict(frame).tolist(),
            }
        ],
    }
    body = {"inputs": inputs, "parameters": {"probabilities": True}}
    output = http.post("/v2/models/named/versions/v1/infer", json=body).json()["outputs"][0]
    assert output["datatype"] == "FP64" and output["shape"] == [len(ROWS), 3]
    expected = deployed.named.predict_proba(frame)
    assert np.allclose(np.reshape(output["data"], output["shape"]), expected)


def test_v2_infer_nested_data(deployed: Deployed, http: httpx.Client) -> None:
    body = {
        "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": ROWS[:2].tolist()}]
    }
    output = http.post("/v2/models/iris/versions/v2/infer", json=body).json()["outputs"][0]
    assert output["data"] == deployed.linear.predict(ROWS[:2]).tolist()


def _input(**changes: Any) -> dict[str, Any]:
    tensor = {"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": [1.0] * 8}
    tensor.update(changes)
    return tensor


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"inputs": [_input(datatype="FP128")]}, 400, "'datatype' field of input 'input-0'"),
        ({"inputs": [_input(shape=[3, 4])]}, 400, "has 8 values; its shape [3, 4] needs 12"),
        ({"inputs": [_input(shape="2x4")]}, 400, "'shape' field of input 'input-0'"),
        ({"inputs": [_input(data=["a"] * 8)]}, 400, "must hold numbers for datatype FP32"),
        ({"inputs": [_input(datatype="INT32", data=[1.5] * 8)]}, 400, "must hold integers"),
        ({"inputs": [_input(shape=[2, 3], data=[1.0] * 6)]}, 400, "instance 0"),
        ({"inputs": [_input(), _input(name="b", shape=[1, 4], data=[1] * 4)]}, 400, "batch"),
        ({"inputs": []}, 400, "'inputs'"),
        ({"inputs": [_input()], "outputs": [{"name": "scores"}]}, 400, "no output 'scores'"),
        ({"inputs": [_input()], "parameters": [1]}, 400, "'parameters'"),
    ],
)
def test_v2_infer_errors(http: httpx.Client, body: Any, status: int, fragment: str) -> None:
    answer = http.post("/v2/models/iris/infer", json=body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert isinstance(error, str) and fragment in error


def test_v2_refuses_binary_tensors_and_unknown_models(http: httpx.Client) -> None:
    body = {"inputs": [_input()]}
    binary = http.post(
        "/v2/models/iris/infer", json=body, headers={"Inference-Header-Content-Length": "10"}
    )
    assert binary.status_code == 400
    assert "binary tensor data extension" in binary.json()["error"]
    for path in ("/v2/models/nope/infer", "/v2/models/iris/versions/v9/infer"):
        missing = http.post(path, json=body)
        assert missing.status_code == 404 and isinstance(missing.json()["error"], str)
    assert http.get("/v2/models/nope").status_code == 404
    # the server keeps serving
    assert http.post("/v2/models/iris/infer", json=body).status_code == 200
