"""Bad input to the models, versions and operations routes, over raw REST on a real server.

Every refused request gets a 4xx Google error envelope whose message names the field, changes
nothing (the project's models, versions and operations read the same before and after), and
leaves no traceback in the server log. One server serves the whole module (`module_server`);
the module works in a project of its own, where `world` builds model ``m`` (version ``v1``
READY and default, ``vbad`` FAILED) and model ``empty`` (no versions).
"""

from __future__ import annotations

import concurrent.futures
import shlex
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import joblib
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

from mlengine.server._ml_v1_jobs import MAX_BODY_BYTES

pytestmark = pytest.mark.integration

PROJECT = "bad-input"
ABSENT = object()
"""A field value that removes the field from the request body."""

Refusal = tuple[int, str]
"""The HTTP status code and the envelope's status string of a refused request."""
BAD: Refusal = (400, "INVALID_ARGUMENT")
PRECONDITION: Refusal = (400, "FAILED_PRECONDITION")
MISSING: Refusal = (404, "NOT_FOUND")
TAKEN: Refusal = (409, "ALREADY_EXISTS")
NOT_ALLOWED: Refusal = (405, "INVALID_ARGUMENT")
TOO_LARGE: Refusal = (413, "INVALID_ARGUMENT")


class Api:
    """The module's server, in `PROJECT`, with the checks every case makes."""

    def __init__(self, client: httpx.Client, log: Path, paths: dict[str, str]) -> None:
        self.client = client
        self.log = log
        self.paths = paths  # what "{origin}", "{file}"... stand for in the cases

    def fill(self, value: Any) -> Any:
        """`value` with the path placeholders of the cases filled in."""
        if isinstance(value, str):
            return value.format_map(self.paths)
        if isinstance(value, dict):
            return {k: self.fill(v) for k, v in value.items() if v is not ABSENT}
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        return value

    def snapshot(self) -> dict[str, Any]:
        """Everything the project holds, as the API shows it (etags included)."""
        models = self.ok(self.client.get("/models", params={"pageSize": 100})).get("models", [])
        versions = {
            model["name"]: self.ok(
                self.client.get(
                    f"{model['name'].split('/', 2)[2]}/versions", params={"pageSize": 100}
                )
            )
            for model in models
        }
        operations = self.ok(self.client.get("/operations", params={"pageSize": 100}))
        assert "nextPageToken" not in operations
        return {"models": models, "versions": versions, "operations": operations}

    def ok(self, response: httpx.Response) -> dict[str, Any]:
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def refused(self, response: httpx.Response, expected: Refusal, names: str) -> None:
        """The response is the envelope with the `expected` code and status, its message contains
        `names`, and the server logged no traceback."""
        code, status = expected
        assert response.status_code == code, response.text
        error = response.json()["error"]
        assert error["code"] == code, error
        assert error["status"] == status, error
        assert names in error["message"], error["message"]
        assert "Traceback" not in self.log.read_text()

    def wait(self, operation: dict[str, Any]) -> dict[str, Any]:
        """The operation once done."""
        name = operation["name"].rsplit("/", 1)[-1]
        deadline = time.monotonic() + 60
        while not operation.get("done"):
            assert time.monotonic() < deadline, operation
            time.sleep(0.1)
            operation = self.ok(self.client.get(f"/operations/{name}"))
        return operation


@pytest.fixture(scope="module")
def api(module_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    files = tmp_path_factory.mktemp("bad-input")
    origin = files / "origin"
    origin.mkdir()
    iris = load_iris()
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(iris.data, iris.target)
    joblib.dump(forest, origin / "model.joblib")
    broken = files / "broken"
    broken.mkdir()
    (broken / "model.joblib").write_bytes(b"not a pickle")
    (files / "empty").mkdir()
    (files / "a-file").write_text("not a directory")
    with tarfile.open(files / "package.tar.gz", "w:gz"):  # an archive pip never gets to see
        pass
    (files / "junk-0.1.tar.gz").write_bytes(b"not really a package")
    paths = {
        "origin": str(origin),
        "broken": str(broken),
        "empty": str(files / "empty"),
        "file": str(files / "a-file"),
        "missing": str(files / "missing"),
        "package": str(files / "package.tar.gz"),
        "files": str(files),
    }
    url = f"{module_server.url}/v1/projects/{PROJECT}"
    with httpx.Client(base_url=url, timeout=30) as client:
        yield Api(client, module_server.log, paths)


@pytest.fixture(scope="module")
def world(api: Api) -> Api:
    """Model ``m`` with ``v1`` READY (the default) and ``vbad`` FAILED; model ``empty``."""
    api.ok(api.client.post("/models", json={"name": "m", "labels": {"team": "a"}}))
    api.ok(api.client.post("/models", json={"name": "empty"}))
    for name, origin in (("v1", "{origin}"), ("vbad", "{broken}")):
        body = api.fill({"name": name, "deploymentUri": origin})
        api.wait(api.ok(api.client.post("/models/m/versions", json=body)))
    assert api.ok(api.client.get("/models/m/versions/v1"))["state"] == "READY"
    assert api.ok(api.client.get("/models/m/versions/vbad"))["state"] == "FAILED"
    return api


def check(api: Api, method: str, path: str, expected: Refusal, names: str, **request: Any) -> None:
    """Send one bad request; it is refused as expected and changes nothing."""
    before = api.snapshot()
    response = api.client.request(method, path, **request)
    api.refused(response, expected, names)
    assert api.snapshot() == before


# -- request bodies that are not a JSON object -----------------------------------------------------

BODY_ROUTES = [
    ("POST", "/models"),
    ("PATCH", "/models/m?updateMask=description"),
    ("POST", "/models/m/versions"),
    ("PATCH", "/models/m/versions/v1?updateMask=description"),
    ("POST", "/models/m/versions/v1:setDefault"),
]


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
@pytest.mark.parametrize(
    ("content", "names"),
    [
        (b"{not json", "request body is not valid JSON"),
        (b'{"name": "m"', "request body is not valid JSON"),
        (b"\xff\xfe", "request body is not valid JSON"),
        (b"[" * 5000, "request body is not valid JSON"),
        (b'{"name": NaN}', "request body is not valid JSON"),
        (b'[{"name": "m2"}]', "request body must be a JSON object"),
        (b'"m2"', "request body must be a JSON object"),
        (b"42", "request body must be a JSON object"),
        (b"null", "request body must be a JSON object"),
    ],
    ids=[
        "garbage",
        "truncated",
        "not-utf8",
        "too-deep",
        "nan",
        "array",
        "string",
        "number",
        "null",
    ],
)
def test_a_body_that_is_not_a_json_object(
    world: Api, method: str, path: str, content: bytes, names: str
) -> None:
    check(world, method, path, BAD, names, content=content)


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_body_over_the_management_limit_is_413(
    world: Api, method: str, path: str, declared: bool
) -> None:
    padding = b" " * (MAX_BODY_BYTES + 1)
    content: Any = padding if declared else iter([padding[:1024], padding[1024:]])
    check(world, method, path, TOO_LARGE, f"over {MAX_BODY_BYTES} bytes", content=content)


# -- models.create ---------------------------------------------------------------------------------

LONG = "a" * 129


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({}, "'name' field of Model"),
        ({"name": None}, "'name' field of Model"),
        ({"name": ""}, "'name' field of Model"),
        ({"name": 7}, "'name' field of Model"),
        ({"name": {"a": 1}}, "'name' field of Model"),
        ({"name": ["m2"]}, "'name' field of Model"),
        ({"name": LONG}, "'name' field of Model"),
        ({"name": "my-model"}, "'name' field of Model"),
        ({"name": "1model"}, "'name' field of Model"),
        ({"name": "_model"}, "'name' field of Model"),
        ({"name": "modèle"}, "'name' field of Model"),
        ({"name": "m2\n"}, "'name' field of Model"),
        ({"name": "projects/bad-input/models/m2"}, "'name' field of Model"),
        ({"name": "m2", "description": 5}, "'description' field of Model"),
        ({"name": "m2", "description": ["x"]}, "'description' field of Model"),
        ({"name": "m2", "regions": "us-central1"}, "'regions' field of Model"),
        ({"name": "m2", "regions": ["us-central1", "europe-west1"]}, "'regions' field of Model"),
        ({"name": "m2", "regions": [1]}, "'regions' field of Model"),
        ({"name": "m2", "regions": [""]}, "'regions' field of Model"),
        ({"name": "m2", "regions": ["US Central"]}, "'regions' field of Model"),
        ({"name": "m2", "regions": {"a": "b"}}, "'regions' field of Model"),
        ({"name": "m2", "labels": ["a"]}, "'labels' field of Model"),
        ({"name": "m2", "labels": "a=b"}, "'labels' field of Model"),
        ({"name": "m2", "labels": 3}, "'labels' field of Model"),
        ({"name": "m2", "labels": {"Team": "a"}}, "'labels.Team' field of Model"),
        ({"name": "m2", "labels": {"1team": "a"}}, "'labels.1team' field of Model"),
        ({"name": "m2", "labels": {"": "a"}}, "'labels.' field of Model"),
        ({"name": "m2", "labels": {"k" * 64: "a"}}, f"'labels.{'k' * 64}' field of Model"),
        ({"name": "m2", "labels": {"team": "A"}}, "'labels.team' field of Model"),
        ({"name": "m2", "labels": {"team": "a b"}}, "'labels.team' field of Model"),
        ({"name": "m2", "labels": {"team": "v" * 64}}, "'labels.team' field of Model"),
        ({"name": "m2", "labels": {"team": 1}}, "'labels.team' field of Model"),
        ({"name": "m2", "labels": {"team": None}}, "'labels.team' field of Model"),
        ({"name": "m2", "labels": {"team": {"x": "y"}}}, "'labels.team' field of Model"),
        ({"name": "m2", "labels": {f"k{i}": "v" for i in range(65)}}, "'labels' field of Model"),
        ({"name": "m2", "onlinePredictionLogging": "true"}, "'onlinePredictionLogging'"),
        ({"name": "m2", "onlinePredictionLogging": 1}, "'onlinePredictionLogging'"),
        (
            {"name": "m2", "onlinePredictionConsoleLogging": "yes"},
            "'onlinePredictionConsoleLogging'",
        ),
    ],
)
def test_create_model_refuses_bad_fields(world: Api, body: dict[str, Any], names: str) -> None:
    check(world, "POST", "/models", BAD, names, json=body)


def test_create_model_ignores_unknown_fields(world: Api) -> None:
    """AIPLATFORM.md 1.2: unknown request fields are ignored, never refused nor echoed."""
    created = world.ok(
        world.client.post("/models", json={"name": "unknown_fields", "region": ["x"], "new": {}})
    )
    assert not {"region", "new"} & set(created)
    assert created["regions"] == ["us-central1"]


def test_create_model_refuses_a_taken_name(world: Api) -> None:
    check(world, "POST", "/models", TAKEN, "'m'", json={"name": "m", "description": "another"})


def test_create_model_takes_the_longest_name_and_null_or_empty_defaults(world: Api) -> None:
    """As proto3 JSON reads them, null and an empty list are the field's default."""
    name = "a" * 128
    body = {
        "name": name,
        "regions": [],
        "description": None,
        "labels": None,
        "onlinePredictionLogging": None,
        "onlinePredictionConsoleLogging": None,
    }
    created = world.ok(world.client.post("/models", json=body))
    assert created == {
        "name": f"projects/{PROJECT}/models/{name}",
        "regions": ["us-central1"],
        "etag": created["etag"],
    }
    world.ok(world.client.delete(f"/models/{name}"))


# -- versions.create -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        ({"name": ABSENT}, "'name' field of Version"),
        ({"name": None}, "'name' field of Version"),
        ({"name": ""}, "'name' field of Version"),
        ({"name": 1}, "'name' field of Version"),
        ({"name": {"v": 1}}, "'name' field of Version"),
        ({"name": LONG}, "'name' field of Version"),
        ({"name": "v-2"}, "'name' field of Version"),
        ({"name": "2v"}, "'name' field of Version"),
        ({"name": "v2\n"}, "'name' field of Version"),
        ({"name": "projects/bad-input/models/m/versions/v2"}, "'name' field of Version"),
        ({"deploymentUri": ABSENT}, "'deploymentUri' field of Version"),
        ({"deploymentUri": ""}, "'deploymentUri' field of Version"),
        ({"deploymentUri": None}, "'deploymentUri' field of Version"),
        ({"deploymentUri": 5}, "'deploymentUri' field of Version"),
        ({"deploymentUri": ["{origin}"]}, "'deploymentUri' field of Version"),
        ({"deploymentUri": {"uri": "{origin}"}}, "'deploymentUri' field of Version"),
        ({"deploymentUri": "{missing}"}, "'deploymentUri' field of Version"),
        ({"deploymentUri": "file://{missing}"}, "'deploymentUri' field of Version"),
        ({"deploymentUri": "{file}"}, "'deploymentUri' field of Version"),
        ({"deploymentUri": "{empty}"}, "'deploymentUri' field of Version"),
        ({"deploymentUri": "relative/dir"}, "'deploymentUri' field of Version"),
        ({"deploymentUri": "nosuchfs://bucket/dir"}, "'deploymentUri' field of Version"),
        ({"framework": "CAFFE"}, "'framework' field of Version"),
        ({"framework": 3}, "'framework' field of Version"),
        ({"framework": True}, "'framework' field of Version"),
        ({"framework": ["SCIKIT_LEARN"]}, "'framework' field of Version"),
        ({"framework": {"name": "SCIKIT_LEARN"}}, "'framework' field of Version"),
        ({"runtimeVersion": "2"}, "'runtimeVersion' field of Version"),
        ({"runtimeVersion": "2.11.0"}, "'runtimeVersion' field of Version"),
        ({"runtimeVersion": "latest"}, "'runtimeVersion' field of Version"),
        ({"runtimeVersion": "2.11\n"}, "'runtimeVersion' field of Version"),
        ({"runtimeVersion": 2.11}, "'runtimeVersion' field of Version"),
        ({"runtimeVersion": ["2.11"]}, "'runtimeVersion' field of Version"),
        ({"pythonVersion": "three"}, "'pythonVersion' field of Version"),
        ({"pythonVersion": 3.7}, "'pythonVersion' field of Version"),
        ({"machineType": "Big Machine!"}, "'machineType' field of Version"),
        ({"machineType": 2}, "'machineType' field of Version"),
        ({"description": 5}, "'description' field of Version"),
        ({"description": {"text": "x"}}, "'description' field of Version"),
        ({"serviceAccount": 5}, "'serviceAccount' field of Version"),
        ({"labels": ["a"]}, "'labels' field of Version"),
        ({"labels": {"Bad": "a"}}, "'labels.Bad' field of Version"),
        ({"labels": {"team": "Bad"}}, "'labels.team' field of Version"),
        ({"labels": {"team": 5}}, "'labels.team' field of Version"),
        ({"labels": {f"k{i}": "v" for i in range(65)}}, "'labels' field of Version"),
        ({"labels": {"max_batch_size": "0"}}, "'labels.max_batch_size' field of Version"),
        ({"labels": {"max_batch_wait_ms": "soon"}}, "'labels.max_batch_wait_ms'"),
        (
            {"predictionClass": "predictor.Predictor", "framework": "SCIKIT_LEARN"},
            "'framework' field of Version must be unset with a predictionClass",
        ),
        ({"predictionClass": "Predictor"}, "'predictionClass' field of Version"),
        ({"predictionClass": "my-module.Predictor"}, "'predictionClass' field of Version"),
        ({"predictionClass": 5}, "'predictionClass' field of Version"),
        ({"packageUris": "{package}"}, "'packageUris' field of Version"),
        ({"packageUris": {"a": "{package}"}}, "'packageUris' field of Version"),
        ({"packageUris": [1]}, "'packageUris[0]' field of Version"),
        ({"packageUris": ["{package}", None]}, "'packageUris[1]' field of Version"),
        ({"packageUris": [""]}, "'packageUris[0]' field of Version"),
        ({"packageUris": ["{files}/setup.py"]}, "'packageUris[0]' field of Version"),
        ({"packageUris": ["pkg.tar.gz"]}, "'packageUris[0]' field of Version"),
        ({"packageUris": ["{files}/missing.tar.gz"]}, "'packageUris[0]' field of Version"),
        ({"packageUris": ["nosuchfs://b/p.whl"]}, "'packageUris[0]' field of Version"),
        ({"autoScaling": "x"}, "'autoScaling' field of Version"),
        ({"autoScaling": [1]}, "'autoScaling' field of Version"),
        ({"autoScaling": {"minNodes": "two"}}, "'autoScaling.minNodes' field of Version"),
        ({"autoScaling": {"minNodes": -1}}, "'autoScaling.minNodes' field of Version"),
        ({"autoScaling": {"minNodes": 1.5}}, "'autoScaling.minNodes' field of Version"),
        ({"autoScaling": {"minNodes": True}}, "'autoScaling.minNodes' field of Version"),
        ({"autoScaling": {"minNodes": 2**31}}, "'autoScaling.minNodes' field of Version"),
        ({"autoScaling": {"maxNodes": {}}}, "'autoScaling.maxNodes' field of Version"),
        ({"autoScaling": {"minNodes": 3, "maxNodes": 2}}, "'autoScaling.maxNodes'"),
        ({"autoScaling": {"metrics": "CPU_USAGE"}}, "'autoScaling.metrics' field of Version"),
        ({"autoScaling": {"metrics": [{"name": "RAM"}]}}, "'autoScaling.metrics[0].name'"),
        (
            {"autoScaling": {"metrics": [{"name": "CPU_USAGE", "target": "x"}]}},
            "'autoScaling.metrics[0].target'",
        ),
        ({"autoScaling": {"metrics": [3]}}, "'autoScaling.metrics[0]' field of Version"),
        ({"manualScaling": 2}, "'manualScaling' field of Version"),
        ({"manualScaling": {"nodes": "many"}}, "'manualScaling.nodes' field of Version"),
        ({"manualScaling": {"nodes": -2}}, "'manualScaling.nodes' field of Version"),
        (
            {"autoScaling": {"minNodes": 1}, "manualScaling": {"nodes": 1}},
            "'autoScaling' and 'manualScaling' fields of Version",
        ),
        ({"requestLoggingConfig": "all"}, "'requestLoggingConfig' field of Version"),
        (
            {"requestLoggingConfig": {"samplingPercentage": 5}},
            "'requestLoggingConfig.samplingPercentage'",
        ),
        (
            {"requestLoggingConfig": {"samplingPercentage": "half"}},
            "'requestLoggingConfig.samplingPercentage'",
        ),
        (
            {"requestLoggingConfig": {"bigqueryTableName": 7}},
            "'requestLoggingConfig.bigqueryTableName'",
        ),
        (
            {"requestLoggingConfig": {"bigqueryTableName": "just_a_table"}},
            "'requestLoggingConfig.bigqueryTableName'",
        ),
        ({"explanationConfig": "shap"}, "'explanationConfig' field of Version"),
        (
            {
                "explanationConfig": {
                    "sampledShapleyAttribution": {"numPaths": 5},
                    "xraiAttribution": {"numIntegralSteps": 5},
                }
            },
            "'explanationConfig' field of Version takes one of",
        ),
        (
            {"explanationConfig": {"sampledShapleyAttribution": 5}},
            "'explanationConfig.sampledShapleyAttribution' field",
        ),
        (
            {"explanationConfig": {"integratedGradientsAttribution": {"numIntegralSteps": "x"}}},
            "'explanationConfig.integratedGradientsAttribution.numIntegralSteps' field",
        ),
        ({"acceleratorConfig": "T4"}, "'acceleratorConfig' field of Version"),
        ({"acceleratorConfig": {"type": "TPU_V9"}}, "'acceleratorConfig.type' field"),
        ({"acceleratorConfig": {"count": "x"}}, "'acceleratorConfig.count' field"),
        ({"acceleratorConfig": {"count": -1}}, "'acceleratorConfig.count' field"),
        ({"container": {"image": "gcr.io/x/y"}}, "'container' field of Version"),
        (
            {"deployment_uri": "/elsewhere"},
            "The field 'deploymentUri' of Version is given twice",
        ),
    ],
)
def test_create_version_refuses_bad_fields(world: Api, fields: dict[str, Any], names: str) -> None:
    body = world.fill({"name": "v2", "deploymentUri": "{origin}", **fields})
    check(world, "POST", "/models/m/versions", BAD, names, json=body)


def test_create_version_reads_its_objects_and_proto_field_names(world: Api) -> None:
    """Proto field names (deployment_uri) read as their JSON names, as Google's front end does;
    unknown fields, at the top or inside objects, are ignored and never echoed back
    (AIPLATFORM.md 1.2: gcloud's generated client has fields the published API lacks)."""
    body = world.fill(
        {
            "name": "vobjects",
            "deployment_uri": "{origin}",
            "accelerator_config": {"count": 1, "type": "NVIDIA_TESLA_T4", "zone": "x"},
            "explanationConfig": {"sampled_shapley_attribution": {"num_paths": 5}, "junk": 3},
            "requestLoggingConfig": {"sampling_percentage": 0.5},
            "auto_scaling": {"min_nodes": 1, "metrics": [{"name": "CPU_USAGE", "target": 60}]},
            "minNodes": 4,
            "imageUri": "gcr.io/p/i",
            "somethingNew": {"a": 1},
            # output-only fields are accepted and ignored, as AI Platform does
            "state": "FAILED",
            "isDefault": False,
            "createTime": "2020-01-01T00:00:00Z",
        }
    )
    world.ok(world.client.post("/models", json={"name": "objects"}))
    created = world.wait(world.ok(world.client.post("/models/objects/versions", json=body)))
    version = created["response"]
    assert version["acceleratorConfig"] == {"count": "1", "type": "NVIDIA_TESLA_T4"}
    assert version["explanationConfig"] == {"sampledShapleyAttribution": {"numPaths": 5}}
    assert version["autoScaling"] == {
        "minNodes": 1,
        "metrics": [{"name": "CPU_USAGE", "target": 60}],
    }
    assert "requestLoggingConfig" not in version  # as AI Platform: only versions.patch sets it
    assert not {"minNodes", "imageUri", "somethingNew"} & set(version)  # ignored, not echoed
    assert version["state"] == "READY" and version["isDefault"] is True
    assert version["createTime"] != "2020-01-01T00:00:00Z"
    assert world.ok(world.client.get("/models/objects/versions/vobjects")) == {
        k: v for k, v in version.items() if k != "@type"
    }


def test_create_version_refuses_a_taken_name(world: Api) -> None:
    body = world.fill({"name": "v1", "deploymentUri": "{origin}"})
    check(world, "POST", "/models/m/versions", TAKEN, "'v1'", json=body)


def test_concurrent_creates_of_one_name_give_one_resource_and_409s(world: Api) -> None:
    """The name check and the insert race; the loser still gets ALREADY_EXISTS."""

    def create(path: str, body: dict[str, Any]) -> list[httpx.Response]:
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            return list(pool.map(lambda _: world.client.post(path, json=body), range(12)))

    for path, body in (
        ("/models", {"name": "race"}),
        ("/models/race/versions", world.fill({"name": "v1", "deploymentUri": "{origin}"})),
    ):
        answers = create(path, body)
        assert sorted(a.status_code for a in answers) == [200] + [409] * 11, path
        for answer in answers:
            if answer.status_code == 409:
                world.refused(answer, TAKEN, f"{body['name']!r}")
    operation = next(a.json() for a in answers if a.status_code == 200)
    assert world.wait(operation)["response"]["state"] == "READY"
    world.ok(world.client.delete("/models/race/versions/v1"))
    world.ok(world.client.delete("/models/race"))


# -- models.patch and versions.patch ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("mask", "body", "expected", "names"),
    [
        (None, {"description": "x"}, BAD, "'updateMask'"),
        ("", {"description": "x"}, BAD, "'updateMask'"),
        (" , ", {"description": "x"}, BAD, "'updateMask'"),
        ("name", {"name": "m3"}, BAD, "'updateMask' path 'name'"),
        (
            "description,regions",
            {"description": "x", "regions": ["europe-west1"]},
            BAD,
            "'updateMask' path 'regions'",
        ),
        ("labels.team", {"labels": {"team": "b"}}, BAD, "'labels.team'"),
        ("description", {"description": 5}, BAD, "'description' field"),
        ("description", {"description": {"a": 1}}, BAD, "'description'"),
        ("labels", {"labels": ["a"]}, BAD, "'labels' field of Model"),
        ("labels", {"labels": {"Team": "b"}}, BAD, "'labels.Team'"),
        (
            "description,labels",
            {"description": "new", "labels": {"team": "B"}},
            BAD,
            "'labels.team' field of Model",
        ),
        ("defaultVersion.name", {}, BAD, "'defaultVersion.name' field"),
        ("defaultVersion.name", {"defaultVersion": "v1"}, BAD, "'defaultVersion' field of Model"),
        ("defaultVersion.name", {"defaultVersion": ["v1"]}, BAD, "'defaultVersion' field of Model"),
        (
            "defaultVersion.name",
            {"defaultVersion": {"name": 1}},
            BAD,
            "'defaultVersion.name' field of Model",
        ),
        (
            "defaultVersion.name",
            {"defaultVersion": {"name": ""}},
            BAD,
            "'defaultVersion.name' field of Model",
        ),
        (
            "defaultVersion.name",
            {"defaultVersion": {"name": "projects/bad-input/models/empty/versions/v1"}},
            BAD,
            "'defaultVersion.name' field of Model",
        ),
        (
            "default_version.name",
            {"default_version": {"name": None}},
            BAD,
            "'defaultVersion.name' field of Model",
        ),
        ("defaultVersion.name", {"defaultVersion": {"name": "nope"}}, MISSING, "versions/nope"),
        (
            "description,defaultVersion.name",
            {"description": "new", "defaultVersion": {"name": "nope"}},
            MISSING,
            "versions/nope",
        ),
        (
            "defaultVersion.name",
            {"defaultVersion": {"name": "vbad"}},
            PRECONDITION,
            "vbad is FAILED",
        ),
        (
            "description,default_version.name",
            {
                "description": "new",
                "default_version": {"name": "projects/bad-input/models/m/versions/vbad"},
            },
            PRECONDITION,
            "vbad is FAILED",
        ),
    ],
)
def test_patch_model_refuses_bad_masks_and_fields(
    world: Api, mask: str | None, body: dict[str, Any], expected: Refusal, names: str
) -> None:
    params = {} if mask is None else {"updateMask": mask}
    check(world, "PATCH", "/models/m", expected, names, params=params, json=body)


@pytest.mark.parametrize(
    ("mask", "body", "names"),
    [
        (None, {"description": "x"}, "'updateMask'"),
        ("deploymentUri", {"deploymentUri": "/x"}, "'updateMask' path 'deploymentUri'"),
        ("description,name", {"description": "x", "name": "v9"}, "'updateMask' path 'name'"),
        ("autoScaling", {"autoScaling": {"minNodes": 1}}, "'updateMask' path 'autoScaling'"),
        ("description", {"description": 5}, "'description' field of Version"),
        ("description", {"description": ["x"]}, "'description' field of Version"),
        ("labels", {"labels": "team=b"}, "'labels' field of Version"),
        ("labels", {"labels": {"team": "B"}}, "'labels.team' field of Version"),
        ("labels", {"labels": {"max_batch_size": "-1"}}, "'labels.max_batch_size'"),
        (
            "description,labels",
            {"description": "new", "labels": {"Team": "b"}},
            "'labels.Team' field of Version",
        ),
        ("autoScaling.minNodes", {"autoScaling": "x"}, "'autoScaling' field of Version"),
        ("autoScaling.minNodes", {"autoScaling": [2]}, "'autoScaling' field of Version"),
        ("autoScaling.minNodes", {"autoScaling": {"minNodes": "x"}}, "'autoScaling.minNodes'"),
        ("autoScaling.minNodes", {"autoScaling": {"minNodes": -1}}, "'autoScaling.minNodes'"),
        ("autoScaling.maxNodes", {"autoScaling": {"maxNodes": 1.5}}, "'autoScaling.maxNodes'"),
        (
            "autoScaling.minNodes,autoScaling.maxNodes",
            {"autoScaling": {"minNodes": 4, "maxNodes": 2}},
            "'autoScaling.maxNodes'",
        ),
        ("manualScaling.nodes", {"manualScaling": {"nodes": {}}}, "'manualScaling.nodes'"),
        ("manualScaling.nodes", {"manualScaling": 3}, "'manualScaling' field of Version"),
        (
            "autoScaling.minNodes,manualScaling.nodes",
            {"autoScaling": {"minNodes": 1}, "manualScaling": {"nodes": 2}},
            "'autoScaling' and 'manualScaling' fields of Version",
        ),
        ("requestLoggingConfig", {"requestLoggingConfig": "all"}, "'requestLoggingConfig'"),
        (
            "requestLoggingConfig",
            {"requestLoggingConfig": {"samplingPercentage": 1.5}},
            "'requestLoggingConfig.samplingPercentage'",
        ),
        (
            "requestLoggingConfig",
            {"requestLoggingConfig": {"samplingPercentage": True}},
            "'requestLoggingConfig.samplingPercentage'",
        ),
        (
            "requestLoggingConfig",
            {"requestLoggingConfig": {"bigqueryTableName": ["t"]}},
            "'requestLoggingConfig.bigqueryTableName'",
        ),
        (
            "description,requestLoggingConfig",
            {"description": "new", "requestLoggingConfig": {"samplingPercentage": -0.1}},
            "'requestLoggingConfig.samplingPercentage'",
        ),
    ],
)
def test_patch_version_refuses_bad_masks_and_fields(
    world: Api, mask: str | None, body: dict[str, Any], names: str
) -> None:
    params = {} if mask is None else {"updateMask": mask}
    check(world, "PATCH", "/models/m/versions/v1", BAD, names, params=params, json=body)


@pytest.mark.parametrize(
    ("path", "mask", "body", "expected", "names"),
    [
        ("v1", "predictionClass", {"predictionClass": 5}, BAD, "'predictionClass' field"),
        ("v1", "predictionClass", {"predictionClass": "Predictor"}, BAD, "'predictionClass'"),
        ("v1", "predictionClass", {"predictionClass": ["a.B"]}, BAD, "'predictionClass'"),
        ("v1", "packageUris", {"packageUris": "{package}"}, BAD, "'packageUris' field"),
        ("v1", "packageUris", {"packageUris": [1]}, BAD, "'packageUris[0]' field"),
        ("v1", "packageUris", {"packageUris": ["pkg.tar.gz"]}, BAD, "'packageUris[0]' field"),
        (
            "v1",
            "packageUris",
            {"packageUris": ["{package}", "{files}/missing.tar.gz"]},
            BAD,
            "'packageUris[1]' field of Version",
        ),
        ("v1", "packageUris", {"packageUris": ["nosuchfs://b/p.whl"]}, BAD, "'packageUris[0]'"),
        (
            "v1",
            "packageUris",
            {"packageUris": ["{files}/junk-0.1.tar.gz"]},
            BAD,
            "'packageUris[0]' field of Version must be an sdist",
        ),
        (
            "v1",
            "description,predictionClass",
            {"description": "new", "predictionClass": "my-module.P"},
            BAD,
            "'predictionClass' field of Version",
        ),
        (
            "vbad",
            "packageUris",
            {"packageUris": ["{package}"]},
            PRECONDITION,
            "only a READY version's predictionClass or packageUris",
        ),
    ],
)
def test_patch_version_refuses_bad_code(
    world: Api, path: str, mask: str, body: dict[str, Any], expected: Refusal, names: str
) -> None:
    check(
        world, "PATCH", f"/models/m/versions/{path}", expected, names,
        params={"updateMask": mask}, json=world.fill(body),
    )  # fmt: skip


def test_patch_version_scaling_changes_only_the_masked_leaf(world: Api) -> None:
    mask = {"updateMask": "autoScaling.minNodes,autoScaling.maxNodes"}
    body = {"autoScaling": {"minNodes": "2", "maxNodes": 5}}
    world.ok(world.client.patch("/models/m/versions/v1", params=mask, json=body))
    assert world.ok(world.client.get("/models/m/versions/v1"))["autoScaling"] == {
        "minNodes": 2,
        "maxNodes": 5,
    }
    # a masked leaf missing from the body is reset; the other stays
    world.ok(
        world.client.patch(
            "/models/m/versions/v1", params={"updateMask": "autoScaling.maxNodes"}, json={}
        )
    )
    assert world.ok(world.client.get("/models/m/versions/v1"))["autoScaling"] == {"minNodes": 2}
    check(
        world,
        "PATCH",
        "/models/m/versions/v1",
        BAD,
        "'autoScaling' and 'manualScaling' fields of Version",
        params={"updateMask": "manualScaling.nodes"},
        json={"manualScaling": {"nodes": 1}},
    )
    world.ok(
        world.client.patch(
            "/models/m/versions/v1", params={"updateMask": "autoScaling.minNodes"}, json={}
        )
    )
    assert "autoScaling" not in world.ok(world.client.get("/models/m/versions/v1"))


def test_patch_reads_proto_field_names_in_masks_and_bodies(world: Api) -> None:
    """auto_scaling.min_nodes is autoScaling.minNodes, as Google's front end reads it."""
    world.ok(
        world.client.patch(
            "/models/m/versions/v1",
            params={"updateMask": "auto_scaling.min_nodes,request_logging_config"},
            json={
                "auto_scaling": {"min_nodes": 3, "minNode": 9},  # unknown: ignored
                "request_logging_config": {"sampling_percentage": 0.25},
                "descripton": "ignored",
            },
        )
    )
    version = world.ok(world.client.get("/models/m/versions/v1"))
    assert version["autoScaling"] == {"minNodes": 3}
    assert version["requestLoggingConfig"] == {"samplingPercentage": 0.25}
    world.ok(
        world.client.patch(
            "/models/m/versions/v1",
            params={"updateMask": "autoScaling.minNodes,requestLoggingConfig"},
            json={},
        )
    )
    cleared = world.ok(world.client.get("/models/m/versions/v1"))
    assert "autoScaling" not in cleared and "requestLoggingConfig" not in cleared


@pytest.mark.parametrize(
    ("path", "mask", "body"),
    [
        ("/models/m", "description", {"description": "x"}),
        ("/models/m/versions/v1", "description", {"description": "x"}),
    ],
)
def test_patch_with_a_stale_etag_is_refused(
    world: Api, path: str, mask: str, body: dict[str, Any]
) -> None:
    current = world.ok(world.client.get(path))["etag"]
    params = {"updateMask": mask}
    check(
        world, "PATCH", path, PRECONDITION, "has changed since it was read; read it again",
        params=params, json={**body, "etag": "c3RhbGU="},
    )  # fmt: skip
    check(world, "PATCH", path, BAD, "'etag' field", params=params, json={**body, "etag": 5})
    world.wait(world.ok(world.client.patch(path, params=params, json={**body, "etag": current})))
    assert world.ok(world.client.get(path))["etag"] != current  # a patch gives a new etag


# -- state: defaults, deletes ----------------------------------------------------------------------


def test_set_default_refuses_a_failed_or_missing_version(world: Api) -> None:
    check(world, "POST", "/models/m/versions/vbad:setDefault", PRECONDITION, "vbad is FAILED")
    check(
        world,
        "POST",
        "/models/m/versions/nope:setDefault",
        MISSING,
        "projects/bad-input/models/m/versions/nope",
    )
    check(
        world,
        "POST",
        "/models/nomodel/versions/v1:setDefault",
        MISSING,
        "Model projects/bad-input/models/nomodel not found",
    )


def test_delete_refuses_a_model_with_versions_and_the_default_version(world: Api) -> None:
    check(world, "DELETE", "/models/m", PRECONDITION, "Model m has 2 version")
    check(world, "DELETE", "/models/m/versions/v1", PRECONDITION, "v1 is the default version")


def test_a_version_being_created_cannot_be_changed(world: Api, tmp_path: Path) -> None:
    """A pickle whose loading waits for a file holds ``vslow`` in CREATING while the test
    runs; then it fails (the object is no model) and the refusals for FAILED apply."""
    release = tmp_path / "release"
    command = (
        f"for i in $(seq 1200); do [ -e {shlex.quote(str(release))} ] && exit 0; sleep 0.05; done"
    )
    origin = tmp_path / "slow"
    origin.mkdir()
    joblib.dump(_Call(["sh", "-c", command]), origin / "model.joblib")
    operation = world.ok(
        world.client.post(
            "/models/m/versions", json={"name": "vslow", "deploymentUri": str(origin)}
        )
    )
    try:
        assert world.ok(world.client.get("/models/m/versions/vslow"))["state"] == "CREATING"
        mask = {"updateMask": "description"}
        default = {"updateMask": "defaultVersion.name"}
        for method, path, request, expected, names in [
            (
                "PATCH",
                "/models/m/versions/vslow",
                {"params": mask, "json": {"description": "x"}},
                PRECONDITION,
                "vslow is CREATING",
            ),
            ("DELETE", "/models/m/versions/vslow", {}, PRECONDITION, "vslow is CREATING"),
            ("POST", "/models/m/versions/vslow:setDefault", {}, PRECONDITION, "vslow is CREATING"),
            (
                "PATCH",
                "/models/m",
                {"params": default, "json": {"defaultVersion": {"name": "vslow"}}},
                PRECONDITION,
                "vslow is CREATING",
            ),
            ("DELETE", "/models/m", {}, PRECONDITION, "Model m has 3 version"),
            (
                "POST",
                "/models/m/versions",
                {"json": {"name": "vslow", "deploymentUri": str(origin)}},
                TAKEN,
                "'vslow'",
            ),
        ]:
            check(world, method, path, expected, names, **request)
        assert world.ok(world.client.get("/models/m/versions/vslow"))["state"] == "CREATING"
    finally:
        release.touch()
    assert world.wait(operation)["error"]["message"]
    assert world.ok(world.client.get("/models/m/versions/vslow"))["state"] == "FAILED"
    check(world, "POST", "/models/m/versions/vslow:setDefault", PRECONDITION, "vslow is FAILED")
    world.ok(world.client.delete("/models/m/versions/vslow"))


class _Call:
    """Pickles as ``subprocess.call(argv)``, run by whoever loads the pickle."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv

    def __reduce__(self) -> tuple[Any, ...]:
        return subprocess.call, (self.argv,)


# -- unknown projects, models, versions, operations ------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "expected", "names"),
    [
        ("GET", "/models/nomodel", None, MISSING, "models/nomodel not found"),
        ("DELETE", "/models/nomodel", None, MISSING, "models/nomodel not found"),
        (
            "PATCH",
            "/models/nomodel?updateMask=description",
            {"description": "x"},
            MISSING,
            "models/nomodel not found",
        ),
        (
            "PATCH",
            "/models/nomodel?updateMask=defaultVersion.name",
            {"defaultVersion": {"name": "v1"}},
            MISSING,
            "Model projects/bad-input/models/nomodel",
        ),
        (
            "POST",
            "/models/nomodel/versions",
            {"name": "v1", "deploymentUri": "{origin}"},
            MISSING,
            "models/nomodel not found",
        ),
        ("GET", "/models/nomodel/versions", None, MISSING, "models/nomodel not found"),
        (
            "GET",
            "/models/nomodel/versions/v1",
            None,
            MISSING,
            "Model projects/bad-input/models/nomodel not found",
        ),
        (
            "DELETE",
            "/models/nomodel/versions/v1",
            None,
            MISSING,
            "Model projects/bad-input/models/nomodel not found",
        ),
        (
            "PATCH",
            "/models/nomodel/versions/v1?updateMask=description",
            {"description": "x"},
            MISSING,
            "Model projects/bad-input/models/nomodel not found",
        ),
        ("GET", "/models/m/versions/nope", None, MISSING, "versions/nope not found"),
        ("DELETE", "/models/m/versions/nope", None, MISSING, "versions/nope not found"),
        (
            "PATCH",
            "/models/m/versions/nope?updateMask=description",
            {"description": "x"},
            MISSING,
            "versions/nope not found",
        ),
        ("GET", "/models/empty/versions/v1", None, MISSING, "empty/versions/v1"),
        ("GET", "/operations/nope", None, MISSING, "operations/nope not found"),
        ("GET", "/operations/create_m_v1-1", None, MISSING, "create_m_v1-1"),
        ("POST", "/operations/nope:cancel", None, MISSING, "operations/nope not found"),
        ("GET", "/models/m/versions/v1/nothing", None, MISSING, "URL was not found"),
        ("PUT", "/models/m", {"name": "m"}, NOT_ALLOWED, "Method Not Allowed"),
    ],
)
def test_unknown_names_in_every_route(
    world: Api, method: str, path: str, body: Any, expected: Refusal, names: str
) -> None:
    request = {} if body is None else {"json": world.fill(body)}
    check(world, method, path, expected, names, **request)


ROUTES = [
    ("POST", "/models", {"name": "m4"}),
    ("GET", "/models", None),
    ("GET", "/models/m", None),
    ("DELETE", "/models/empty", None),
    ("PATCH", "/models/m?updateMask=description", {"description": "x"}),
    ("POST", "/models/m/versions", {"name": "v4", "deploymentUri": "{origin}"}),
    ("GET", "/models/m/versions", None),
    ("GET", "/models/m/versions/v1", None),
    ("DELETE", "/models/m/versions/vbad", None),
    ("PATCH", "/models/m/versions/v1?updateMask=description", {"description": "x"}),
    ("POST", "/models/m/versions/v1:setDefault", None),
    ("GET", "/operations", None),
    ("GET", "/operations/nope", None),
    ("POST", "/operations/nope:cancel", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_an_unknown_project_has_no_models_and_a_bad_project_id_is_refused(
    world: Api, method: str, path: str, body: Any
) -> None:
    request = {} if body is None else {"json": world.fill(body)}
    before = world.snapshot()
    root = world.client.base_url.copy_with(path="/v1/projects/")
    bad = world.client.request(method, f"{root}bad%20project{path}", **request)
    world.refused(bad, BAD, "project id 'bad project'")
    if method != "POST" or path != "/models":
        unknown = world.client.request(method, f"{root}no-such-project{path}", **request)
        if path in ("/models", "/operations"):
            assert unknown.status_code == 200 and unknown.json() == {}
        else:
            world.refused(unknown, MISSING, "projects/no-such-project/")
    assert world.snapshot() == before


# -- lists -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/models", "/models/m/versions", "/operations"])
@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"pageSize": "-1"}, "'pageSize'"),
        ({"pageSize": "ten"}, "'pageSize'"),
        ({"pageSize": "1.5"}, "'pageSize'"),
        ({"pageSize": "1e3"}, "'pageSize'"),
        ({"pageToken": "not a token!"}, "'pageToken'"),
        ({"pageToken": "!!"}, "'pageToken'"),
        ({"pageToken": "AAAA"}, "'pageToken'"),
        ({"pageToken": "Zm9"}, "'pageToken'"),
        ({"pageToken": "\u00e9t\u00e9"}, "'pageToken'"),
    ],
)
def test_lists_refuse_bad_page_parameters(
    world: Api, path: str, params: dict[str, str], names: str
) -> None:
    check(world, "GET", path, BAD, names, params=params)


@pytest.mark.parametrize("path", ["/models", "/models/m/versions", "/operations"])
def test_lists_page_through_with_their_own_tokens(world: Api, path: str) -> None:
    key = path.rsplit("/", 1)[-1]
    seen: list[str] = []
    params: dict[str, Any] = {"pageSize": 1}
    while True:
        page = world.ok(world.client.get(path, params=params))
        seen += [item["name"] for item in page[key]]
        if "nextPageToken" not in page:
            break
        params["pageToken"] = page["nextPageToken"]
    every = world.ok(world.client.get(path, params={"pageSize": 1000}))[key]
    assert seen == [item["name"] for item in every]
    assert len(seen) >= 2


@pytest.mark.parametrize(
    ("path", "filter_text", "names"),
    [
        ("/models", "name", "Unsupported filter term 'name'"),
        ("/models", "state:READY", "Unsupported filter field 'state'"),
        ("/models", "labels:x", "Unsupported filter field 'labels'"),
        ("/models", "name:m OR name:n", "Unsupported filter term 'OR'"),
        ("/models/m/versions", "jobId:x", "Unsupported filter field 'jobId'"),
        ("/models/m/versions", "state:READY AND", "Unsupported filter term"),
    ],
)
def test_lists_refuse_bad_filters(world: Api, path: str, filter_text: str, names: str) -> None:
    check(world, "GET", path, BAD, names, params={"filter": filter_text})


@pytest.mark.parametrize(
    ("path", "filter_text", "expected"),
    [
        ("/models", "name:m", ["m"]),
        ("/models", "name:e*", ["empty"]),
        ("/models", "name:projects/bad-input/models/m*", ["m"]),
        ("/models", "labels.team:a", ["m"]),
        ("/models", "labels.team:a AND name:empty", []),
        ("/models/m/versions", "state:READY", ["v1"]),
        ("/models/m/versions", "state:FAILED and name:vb*", ["vbad"]),
        ("/models/m/versions", "framework:SCIKIT_LEARN state:READY", ["v1"]),
        ("/models/m/versions", "createTime:20*", ["v1", "vbad"]),
        ("/models/m/versions", "labels.stage:x", []),
    ],
)
def test_lists_filter_server_side(
    world: Api, path: str, filter_text: str, expected: list[str]
) -> None:
    key = path.rsplit("/", 1)[-1]
    names: list[str] = []
    params: dict[str, Any] = {"filter": filter_text, "pageSize": 1}
    while True:  # one match a page: the filter and the paging compose
        page = world.ok(world.client.get(path, params=params))
        assert len(page.get(key, [])) <= 1
        names += [item["name"].rsplit("/", 1)[-1] for item in page.get(key, [])]
        if "nextPageToken" not in page:
            break
        params["pageToken"] = page["nextPageToken"]
    wanted = [name for name in expected if name in names]
    assert names == wanted == expected


def test_operations_filter_server_side(world: Api) -> None:
    every = world.ok(world.client.get("/operations", params={"pageSize": 1000}))["operations"]

    def model_of(operation: dict[str, Any]) -> str:
        return str(operation["metadata"]["modelName"]).rsplit("/", 1)[-1]

    creates = [o for o in every if o["metadata"]["operationType"] == "CREATE_VERSION"]
    for filter_text, expected in (
        ("operationType:CREATE_VERSION", creates),
        ("metadata.operationType=CREATE_VERSION AND done:true", creates),
        ("operationType:CREATE_* modelName:m*", [o for o in creates if model_of(o)[0] == "m"]),
    ):
        listed = world.ok(world.client.get("/operations", params={"filter": filter_text}))
        assert listed["operations"] == expected, filter_text
    assert world.ok(world.client.get("/operations", params={"filter": "done:false"})) == {}
    name = creates[0]["name"]
    by_name = world.ok(world.client.get("/operations", params={"filter": f"name:{name}"}))
    assert by_name["operations"] == [creates[0]]
    check(world, "GET", "/operations", BAD, "Unsupported filter field 'state'",
          params={"filter": "state:DONE"})  # fmt: skip
    check(world, "GET", "/operations", BAD, "done:maybe must be done:true or done:false",
          params={"filter": "done:maybe"})  # fmt: skip


def test_an_update_operation_names_the_type_of_its_response(world: Api) -> None:
    for path in ("/models/m", "/models/m/versions/v1"):
        operation = world.ok(
            world.client.patch(path, params={"updateMask": "description"}, json={})
        )
        assert operation["done"] is True
        kind = "Model" if path == "/models/m" else "Version"
        assert operation["response"]["@type"] == f"type.googleapis.com/google.cloud.ml.v1.{kind}"
