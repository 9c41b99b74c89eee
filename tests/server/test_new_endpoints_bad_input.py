"""Bad input and races against today's features, over raw REST on a real server: explain
(sampled Shapley), ``operations.cancel``, code updates (``versions.patch`` of ``predictionClass``
and ``packageUris``) and the ``filter`` of the models, versions and operations lists.

A refused request gets a 4xx whose message names the field or the instance (explain answers
``{"error": "Explanation failed: ..."}`` as predict does, the other routes the Google envelope),
changes nothing and leaves no traceback in the server log; a race ends in one consistent state.
(Written as a sweep: the seven bugs it found first were fixed the same day.)

One server serves the module (`module_server`). Each test works in a project of its own, except
the explain and filter cases, which share the versions of `explained` and `listed`. Custom
prediction classes come from one package (`PREDICTORS`, installed once); the loads of ``HeldA``
and ``HeldB`` wait for a gate file (`Gates`), so that a test chooses when a verification ends.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import random
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from tests.server._predictor_packages import build_source_package
from tests.server.test_models_bad_input import BAD, MISSING, PRECONDITION, Refusal

pytestmark = pytest.mark.integration

PREDICTORS = '''
import os
import time

GATES = GATES_DIR


def _hold(name):
    """Wait until the gate file `name` exists, then record that a load passed it."""
    gate = os.path.join(GATES, name)
    deadline = time.time() + 60
    while not os.path.exists(gate) and time.time() < deadline:
        time.sleep(0.02)
    with open(gate + ".loaded", "a") as handle:
        handle.write("loaded\\n")


class Sum:
    """The sum of each instance's features, plus OFFSET."""

    offset = 0.0

    @classmethod
    def from_path(cls, model_dir):
        return cls()

    def predict(self, instances, **kwargs):
        return [float(sum(instance)) + self.offset for instance in instances]


class Shifted(Sum):
    offset = 100.0


class HeldA(Sum):
    offset = 1000.0

    @classmethod
    def from_path(cls, model_dir):
        _hold("a")
        return cls()


class HeldB(Sum):
    offset = 2000.0

    @classmethod
    def from_path(cls, model_dir):
        _hold("b")
        return cls()


class Raises(Sum):
    @classmethod
    def from_path(cls, model_dir):
        raise RuntimeError("from_path broke on purpose")


class Words(Sum):
    def predict(self, instances, **kwargs):
        return ["label-%d" % len(instance) for instance in instances]
'''
CLASSES = "sweep_predictors.predictors"
SHAPLEY = {"sampledShapleyAttribution": {"numPaths": 4}}
ROWS = [[1.0, 2.0, 3.0]]
"""One instance of the three-feature models."""
CODE = {"updateMask": "predictionClass"}
"""The mask of a code update."""


def _cls(name: str) -> str:
    return f"{CLASSES}.{name}"


# -- the module's server, its files, and the checks ------------------------------------------------


class Gates:
    """Gate files that hold the loads of ``HeldA`` (gate ``a``) and ``HeldB`` (gate ``b``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def close_all(self) -> None:
        for path in self.directory.iterdir():
            path.unlink()

    def open(self, name: str) -> None:
        (self.directory / name).touch()

    def open_all(self) -> None:
        for name in ("a", "b"):
            self.open(name)

    def passed(self, name: str, timeout: float = 30) -> None:
        """Wait until a load passed the open gate `name`."""
        deadline = time.monotonic() + timeout
        while not (self.directory / f"{name}.loaded").exists():
            assert time.monotonic() < deadline, f"no load passed gate {name}"
            time.sleep(0.02)


@dataclasses.dataclass(frozen=True)
class Files:
    """What the versions of the module are made of."""

    linear: Path  # a LinearRegression on three features: 1*x0 + 2*x1 + 3*x2 + 1
    single: Path  # a LinearRegression on one feature
    custom: Path  # input_example.json for the custom classes
    broken: Path  # a model.joblib that is no pickle
    junk: Path  # a .tar.gz that is no package
    package: Path  # the PREDICTORS package
    gates: Gates


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Files]:
    root = tmp_path_factory.mktemp("sweep")
    features = np.random.default_rng(0).normal(size=(50, 3))
    linear = root / "linear"
    linear.mkdir()
    fitted = LinearRegression().fit(features, features @ [1.0, 2.0, 3.0] + 1)
    joblib.dump(fitted, linear / "model.joblib")
    single = root / "single"
    single.mkdir()
    xs = np.arange(20.0).reshape(-1, 1)
    joblib.dump(LinearRegression().fit(xs, 2 * xs[:, 0] + 1), single / "model.joblib")
    custom = root / "custom"
    custom.mkdir()
    (custom / "input_example.json").write_text(json.dumps({"instances": ROWS}))
    broken = root / "broken"
    broken.mkdir()
    (broken / "model.joblib").write_bytes(b"not a pickle")
    junk = root / "junk-0.1.tar.gz"
    junk.write_bytes(b"not a package")
    gates = Gates(root / "gates")
    gates.directory.mkdir()
    source = PREDICTORS.replace("GATES_DIR", repr(str(gates.directory)))
    package = build_source_package(root / "package", "sweep_predictors", "predictors", source)
    try:
        yield Files(linear, single, custom, broken, junk, package, gates)
    finally:
        gates.open_all()  # no load stays held when the server stops


@pytest.fixture
def gates(files: Files) -> Iterator[Gates]:
    """The gates, closed for the test and opened after it."""
    files.gates.close_all()
    try:
        yield files.gates
    finally:
        files.gates.open_all()


def _without_last_use(value: Any) -> Any:
    """`value` without ``lastUseTime`` (predict and explain write it once a minute)."""
    if isinstance(value, dict):
        return {k: _without_last_use(v) for k, v in value.items() if k != "lastUseTime"}
    if isinstance(value, list):
        return [_without_last_use(v) for v in value]
    return value


class Api:
    """The module's server in one project; the log checks read what was logged since it was
    made (a recorded bug's traceback does not fail the next test)."""

    def __init__(self, server: Any, project: str) -> None:
        self.server = server
        self.project = project
        self.client = httpx.Client(base_url=f"{server.url}/v1/projects/{project}", timeout=60)
        self.log: Path = server.log
        self.log_start = self.log.stat().st_size

    def new_log(self) -> str:
        with open(self.log, "rb") as handle:
            handle.seek(self.log_start)
            return handle.read().decode(errors="replace")

    def no_traceback(self) -> None:
        log = self.new_log()
        assert "Traceback" not in log, log[-4000:]

    def ok(self, response: httpx.Response) -> dict[str, Any]:
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait(self, operation: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        """The operation once done."""
        name = operation["name"].rsplit("/", 1)[-1]
        deadline = time.monotonic() + timeout
        while not operation.get("done"):
            assert time.monotonic() < deadline, f"operation not done in {timeout} s: {operation}"
            time.sleep(0.02)
            operation = self.ok(self.client.get(f"/operations/{name}"))
        return operation

    def create(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create a version (and its model when missing); its finished operation."""
        if self.client.get(f"/models/{model}").status_code == 404:
            self.ok(self.client.post("/models", json={"name": model}))
        return self.wait(self.ok(self.client.post(f"/models/{model}/versions", json=body)))

    def version(self, model: str, name: str) -> dict[str, Any]:
        return self.ok(self.client.get(f"/models/{model}/versions/{name}"))

    def predict(self, model: str, rows: list[Any]) -> list[Any]:
        answer = self.ok(self.client.post(f"/models/{model}:predict", json={"instances": rows}))
        predictions: list[Any] = answer["predictions"]
        return predictions

    def snapshot(self) -> dict[str, Any]:
        """Everything the project holds, as the API shows it (etags included)."""
        models = self.ok(self.client.get("/models", params={"pageSize": 100})).get("models", [])
        versions = {
            model["name"]: self.ok(
                self.client.get(
                    f"/models/{model['name'].rsplit('/', 1)[-1]}/versions",
                    params={"pageSize": 100},
                )
            )
            for model in models
        }
        operations = self.ok(self.client.get("/operations", params={"pageSize": 100}))
        assert "nextPageToken" not in operations
        return _without_last_use({"models": models, "versions": versions, "ops": operations})

    def refused(self, response: httpx.Response, expected: Refusal, names: str) -> None:
        """The Google envelope with the `expected` code and status, naming `names`; no
        traceback logged."""
        code, _ = expected
        assert response.status_code == code, response.text
        error = response.json()["error"]
        assert (error["code"], error["status"]) == expected, error
        assert names in error["message"], error["message"]
        self.no_traceback()

    def explain_refused(self, response: httpx.Response, names: str) -> None:
        """Explain's own refusal (as predict's): 400 ``{"error": "Explanation failed: ..."}``."""
        assert response.status_code == 400, response.text
        message = response.json()["error"]
        assert isinstance(message, str) and message.startswith("Explanation failed: "), message
        assert names in message, message
        self.no_traceback()


def check(api: Api, method: str, path: str, expected: Refusal, names: str, **request: Any) -> None:
    """Send one bad request: refused as expected, nothing changed."""
    before = api.snapshot()
    api.refused(api.client.request(method, path, **request), expected, names)
    assert api.snapshot() == before


def check_explain(api: Api, path: str, names: str, **request: Any) -> None:
    """Send one bad explain request: refused (400, naming `names`), nothing changed."""
    before = api.snapshot()
    api.explain_refused(api.client.post(path, **request), names)
    assert api.snapshot() == before


@pytest.fixture
def api(module_server: Any) -> Iterator[Api]:
    """The server in a project of the test's own."""
    made = Api(module_server, f"sweep-{uuid.uuid4().hex[:10]}")
    try:
        yield made
    finally:
        made.client.close()


def _custom(name: str, files: Files, cls: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "deploymentUri": str(files.custom),
        "predictionClass": _cls(cls),
        "packageUris": [str(files.package)],
        **fields,
    }


def _filled(value: Any, **paths: Path) -> Any:
    """`value` with the placeholders ``{name}`` of its strings replaced by `paths`."""
    if isinstance(value, str):
        return value.format_map({name: str(path) for name, path in paths.items()})
    if isinstance(value, dict):
        return {key: _filled(item, **paths) for key, item in value.items()}
    if isinstance(value, list):
        return [_filled(item, **paths) for item in value]
    return value


def _in_parallel(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


# -- explain ---------------------------------------------------------------------------------------

EXPLAIN_PROJECT = "explain-sweep"
HUGE = 2**31 - 1


@pytest.fixture(scope="module")
def explained(module_server: Any, files: Files) -> None:
    """In `EXPLAIN_PROJECT`: model ``lin`` (``v1`` default, ``huge`` numPaths 2^31-1, ``zero``
    numPaths 0, ``nocfg`` without explanationConfig, ``bad`` FAILED, ``words`` a custom class
    that answers strings), ``single`` (one feature, numPaths 1,000,000), ``failed`` (only a
    FAILED version: no default), ``empty`` (no versions)."""
    api = Api(module_server, EXPLAIN_PROJECT)
    try:
        origin = str(files.linear)
        for name, paths in (("v1", 4), ("huge", HUGE), ("zero", 0), ("nocfg", None)):
            body: dict[str, Any] = {"name": name, "deploymentUri": origin}
            if paths is not None:
                body["explanationConfig"] = {"sampledShapleyAttribution": {"numPaths": paths}}
            assert api.create("lin", body)["response"]["state"] == "READY"
        failed = {"name": "bad", "deploymentUri": str(files.broken), "explanationConfig": SHAPLEY}
        assert api.create("lin", failed)["error"]
        assert api.create("failed", failed)["error"]
        words = _custom("words", files, "Words", explanationConfig=SHAPLEY)
        assert api.create("lin", words)["response"]["state"] == "READY"
        single = {
            "name": "v1",
            "deploymentUri": str(files.single),
            "explanationConfig": {"sampledShapleyAttribution": {"numPaths": 1_000_000}},
        }
        assert api.create("single", single)["response"]["state"] == "READY"
        api.ok(api.client.post("/models", json={"name": "empty"}))
        api.no_traceback()
    finally:
        api.client.close()


@pytest.fixture
def xapi(module_server: Any, explained: None) -> Iterator[Api]:
    """The server in `EXPLAIN_PROJECT`, its log read from the test's start."""
    made = Api(module_server, EXPLAIN_PROJECT)
    try:
        yield made
    finally:
        made.client.close()


V1 = "/models/lin/versions/v1:explain"


@pytest.mark.parametrize(
    ("path", "request_", "names"),
    [
        (V1, {"content": b"{nope"}, "The request body is not valid JSON"),
        (V1, {"content": b""}, "The request body must be a JSON object"),
        (V1, {"content": b"[1, 2, 3]"}, "The request body must be a JSON object"),
        (V1, {"content": b'"instances"'}, "The request body must be a JSON object"),
        (V1, {"json": {}}, "The request has no 'instances' field"),
        (V1, {"json": {"instances": 5}}, "The 'instances' field must be a list"),
        (V1, {"json": {"instances": {"a": 1}}}, "The 'instances' field must be a list"),
        (V1, {"json": {"instances": "1,2,3"}}, "The 'instances' field must be a list"),
        (V1, {"content": b'{"instances": [[1, NaN, 3]]}'}, "The request body is not valid JSON"),
        (V1, {"content": b'{"instances": [[1, Infinity, 3]]}'}, "not valid JSON"),
        (V1, {"json": {"instances": [[1, 2, 3], [1, 2]]}}, "instance 1: expected 3 features"),
        (V1, {"json": {"instances": [[1, 2]]}}, "instance 0: expected 3 features, got 2"),
        (V1, {"json": {"instances": [[]]}}, "instance 0: expected 3 features, got 0"),
        (V1, {"json": {"instances": [[[1, 2, 3]]]}}, "instance 0: expected shape [3]"),
        (V1, {"json": {"instances": [[[1], [2], [3]]]}}, "instance 0: expected shape [3]"),
        (V1, {"json": {"instances": [[1, 2, 3], [[1, 2, 3]]]}}, "instance 1"),
        (V1, {"json": {"instances": ["abc"]}}, "instance 0: explanations take a list"),
        (V1, {"json": {"instances": [5]}}, "instance 0: explanations take a list"),
        (V1, {"json": {"instances": [None]}}, "instance 0: explanations take a list"),
        (V1, {"json": {"instances": [[1, 2, 3], "x"]}}, "instance 1: explanations take a list"),
        (V1, {"json": {"instances": [[1, "b", 3]]}}, "instance 0: value 'b' is not a number"),
        (V1, {"json": {"instances": [["1", "2", "3"]]}}, "instance 0: value '1' is not a number"),
        (V1, {"json": {"instances": [[1, None, 3]]}}, "instance 0: missing value"),
        (
            V1,
            {"json": {"instances": [{"a": "text", "b": 2, "c": 3}]}},
            "instance 0: feature 'a' is not a number; give its baseline",
        ),
        (
            V1,
            {"json": {"instances": [[1, 2, 3], {"a": 1, "b": [1]}]}},
            "instance 1: feature 'b' is not a number",
        ),
        (V1, {"json": {"instances": [{"a": 1, "b": 2, "c": 3}]}}, "instance 0: this model takes"),
        (V1, {"json": {"instances": [{"b64": "AAAA"}]}}, "instance 0: feature 'b64'"),
        (
            "/models/lin/versions/huge:explain",
            {"json": {"instances": ROWS}},
            "needs 4294967296 predictions to explain (per instance and baseline, numPaths x "
            "(features - 1) + 2); the limit is 200000",
        ),
        (
            "/models/lin/versions/v1:explain",
            {"json": {"instances": [[1] * 200_001]}},
            "the limit is 200000",
        ),
        (
            "/models/lin/versions/nocfg:explain",
            {"json": {"instances": ROWS}},
            "no explanationConfig",
        ),
        (
            "/models/lin/versions/bad:explain",
            {"json": {"instances": ROWS}},
            "bad of model lin is FAILED",
        ),
        (
            "/models/failed:explain",
            {"json": {"instances": ROWS}},
            "Model failed has no default version",
        ),
        (
            "/models/empty:explain",
            {"json": {"instances": ROWS}},
            "Model empty has no default version",
        ),
        (
            "/models/lin/versions/words:explain",
            {"json": {"instances": ROWS}},
            "instance 0: explanations need numeric model outputs; got 'label-3'",
        ),
    ],
)
def test_explain_refuses_bad_requests(
    xapi: Api, path: str, request_: dict[str, Any], names: str
) -> None:
    check_explain(xapi, path, names, **request_)


@pytest.mark.parametrize(
    ("path", "names"),
    [
        (
            "/models/lin/versions/nope:explain",
            "Version projects/explain-sweep/models/lin/versions/nope",
        ),
        ("/models/nomodel:explain", "Model projects/explain-sweep/models/nomodel not found"),
        ("/models/nomodel/versions/v1:explain", "projects/explain-sweep/models/nomodel"),
    ],
)
def test_explain_of_what_does_not_exist_is_404(xapi: Api, path: str, names: str) -> None:
    check(xapi, "POST", path, MISSING, names, json={"instances": ROWS})


def test_explain_answers_what_it_can(xapi: Api) -> None:
    """No instances: no explanations; numPaths 0 is the default; the model's default version;
    a boolean feature counts as 1; unknown request fields are ignored as predict does."""
    assert xapi.ok(xapi.client.post(V1, json={"instances": []})) == {"explanations": []}
    (one,) = xapi.ok(xapi.client.post(V1, json={"instances": ROWS}))["explanations"]
    (label,) = one["attributions_by_label"]
    assert label["attributions"]["features"] == pytest.approx([1.0, 4.0, 9.0])
    assert label["example_score"] == pytest.approx(15.0)
    zero = xapi.ok(xapi.client.post("/models/lin/versions/zero:explain", json={"instances": ROWS}))
    assert zero["explanations"][0]["attributions_by_label"][0]["attributions"][
        "features"
    ] == pytest.approx([1.0, 4.0, 9.0])
    default = xapi.ok(xapi.client.post("/models/lin:explain", json={"instances": ROWS}))
    assert default["explanations"] == [one]
    flags = xapi.ok(xapi.client.post(V1, json={"instances": [[1, True, 3]], "extra": {"x": 1}}))
    assert flags["explanations"][0]["attributions_by_label"][0]["example_score"] == pytest.approx(
        13.0
    )
    xapi.no_traceback()


@pytest.mark.parametrize(
    ("numpaths", "names"),
    [
        ("x", "'explanationConfig.sampledShapleyAttribution.numPaths' field of Version"),
        (-1, "'explanationConfig.sampledShapleyAttribution.numPaths' field of Version"),
        (1.5, "'explanationConfig.sampledShapleyAttribution.numPaths' field of Version"),
        (True, "'explanationConfig.sampledShapleyAttribution.numPaths' field of Version"),
        (2**31, "'explanationConfig.sampledShapleyAttribution.numPaths' field of Version"),
        ([4], "'explanationConfig.sampledShapleyAttribution.numPaths' field of Version"),
    ],
)
def test_create_refuses_a_bad_num_paths(xapi: Api, files: Files, numpaths: Any, names: str) -> None:
    body = {
        "name": "v9",
        "deploymentUri": str(files.linear),
        "explanationConfig": {"sampledShapleyAttribution": {"numPaths": numpaths}},
    }
    check(xapi, "POST", "/models/lin/versions", BAD, names, json=body)


METADATA_CASES = [
    ("{nope", "explanation_metadata.json cannot be read"),
    ("[1]", "explanation_metadata.json must be an object with 'inputs'"),
    ('{"inputs": null}', "explanation_metadata.json must be an object with 'inputs'"),
    ('{"inputs": [1, 2]}', "explanation_metadata.json must be an object with 'inputs'"),
    (b"\xff\xfe\x00", "explanation_metadata.json cannot be read"),
    (
        json.dumps({"inputs": {"x": {"input_baselines": [[0, 0]]}}}),
        "instance 0: its 3 features need baselines of 3 values in explanation_metadata.json",
    ),
    (
        json.dumps({"inputs": {"x": {"input_baselines": [0, 0, 0]}}}),
        "instance 0: its 3 features need baselines of 3 values",
    ),
    (
        json.dumps({"inputs": {"x": {"input_baselines": []}}}),
        "The input 'x' of explanation_metadata.json must have a non-empty 'input_baselines'",
    ),
    (
        json.dumps({"inputs": {"x": {"input_baselines": 5}}}),
        "The input 'x' of explanation_metadata.json must have a non-empty 'input_baselines'",
    ),
    (
        json.dumps(
            {"inputs": {"x": {"input_baselines": [[0, 0, 0]]}, "y": {"input_baselines": [[1] * 3]}}}
        ),
        "instance 0: a list instance takes the baselines of one input; "
        "explanation_metadata.json has 2",
    ),
]
BUGGY_METADATA = [
    pytest.param(
        "[" * 100_000,
        "explanation_metadata.json cannot be read",
        id="deeply-nested",
    ),
    pytest.param(
        json.dumps({"inputs": {"x": {"input_baselines": [["a", "b", "c"]]}}}),
        "explanation_metadata.json",
        id="text-baseline",
    ),
    pytest.param(
        '{"inputs": {"x": {"input_baselines": [[NaN, 0, 0]]}}}',
        "explanation_metadata.json",
        id="nan-baseline",
    ),
]


@pytest.mark.parametrize(("metadata", "names"), [*METADATA_CASES, *BUGGY_METADATA])
def test_explain_refuses_a_bad_explanation_metadata(
    xapi: Api, files: Files, tmp_path: Path, metadata: str | bytes, names: str
) -> None:
    origin = tmp_path / "origin"
    shutil.copytree(files.linear, origin)
    data = metadata if isinstance(metadata, bytes) else metadata.encode()
    (origin / "explanation_metadata.json").write_bytes(data)
    name = f"m{uuid.uuid4().hex[:8]}"
    body = {"name": name, "deploymentUri": str(origin), "explanationConfig": SHAPLEY}
    assert xapi.create("meta", body)["response"]["state"] == "READY"
    check_explain(xapi, f"/models/meta/versions/{name}:explain", names, json={"instances": ROWS})


def test_explain_of_one_feature_with_many_paths_keeps_the_server_responsive(
    xapi: Api,
) -> None:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        pending = pool.submit(xapi.client.post, "/models/single:explain", json={"instances": [[3]]})
        time.sleep(0.3)
        health = time.monotonic()
        assert httpx.get(f"{xapi.server.url}/healthz", timeout=30).status_code == 200
        health_s = time.monotonic() - health
        answer = pending.result()
        answer_s = time.monotonic() - started
    assert answer.status_code in (200, 400), answer.text
    assert health_s < 0.5, f"the server did not answer /healthz for {health_s:.1f} s"
    assert answer_s < 2.0, f"explain took {answer_s:.1f} s"


# -- operations.cancel -----------------------------------------------------------------------------


def test_cancel_refuses_unknown_done_and_foreign_operations(api: Api, files: Files) -> None:
    created = api.create("m", {"name": "v1", "deploymentUri": str(files.linear)})
    done = created["name"].rsplit("/", 1)[-1]
    for method, path, expected, names, request in [
        ("POST", "/operations/nope:cancel", MISSING, "operations/nope not found", {}),
        ("POST", "/operations/op%C3%A9:cancel", MISSING, "not found", {}),
        ("POST", f"/operations/{done}:cancel", PRECONDITION, f"{done} is already done", {}),
        ("POST", f"/operations/{done}:cancel", PRECONDITION, "already done", {"json": {}}),
        ("POST", f"/operations/{done}:cancel", BAD, "not valid JSON", {"content": b"{x"}),
        ("POST", f"/operations/{done}:cancel", BAD, "must be a JSON object", {"content": b"[]"}),
    ]:
        check(api, method, path, expected, names, **request)
    deleted = api.ok(api.client.delete("/models/m/versions/v1"))
    check(
        api,
        "POST",
        f"/operations/{deleted['name'].rsplit('/', 1)[-1]}:cancel",
        PRECONDITION,
        "already done",
    )
    foreign = httpx.post(f"{api.server.url}/v1/projects/other-project/operations/{done}:cancel")
    api.refused(foreign, MISSING, f"projects/other-project/operations/{done} not found")


def test_concurrent_cancels_of_one_create_cancel_it_once(
    api: Api, files: Files, gates: Gates
) -> None:
    api.ok(api.client.post("/models", json={"name": "held"}))
    operation = api.ok(api.client.post("/models/held/versions", json=_custom("v1", files, "HeldA")))
    name = operation["name"].rsplit("/", 1)[-1]
    assert api.version("held", "v1")["state"] == "CREATING"

    answers = _in_parallel(
        [lambda: api.client.post(f"/operations/{name}:cancel", json={}) for _ in range(8)]
    )

    assert sorted(answer.status_code for answer in answers) == [200] + [400] * 7
    for answer in answers:
        if answer.status_code == 200:
            assert answer.json() == {}
        else:
            api.refused(answer, PRECONDITION, "already done")
    ended = api.wait(operation)
    assert ended["error"]["code"] == 1 and "response" not in ended
    gates.open("a")  # the load that went on ends; its result is discarded
    gates.passed("a")
    time.sleep(0.5)
    version = api.version("held", "v1")
    assert version["state"] == "FAILED" and "cancelled" in version["errorMessage"]
    assert "defaultVersion" not in api.ok(api.client.get("/models/held"))
    assert api.wait(operation) == ended
    api.no_traceback()


def test_cancel_racing_the_end_of_a_create_leaves_one_consistent_outcome(
    api: Api, files: Files
) -> None:
    """READY with the operation succeeded, or FAILED with it cancelled: never a mix."""
    rng = random.Random(20201214)
    api.ok(api.client.post("/models", json={"name": "race"}))
    outcomes = set()
    for index in range(20):
        body = {"name": f"v{index}", "deploymentUri": str(files.linear)}
        operation = api.ok(api.client.post("/models/race/versions", json=body))
        time.sleep(rng.uniform(0, 0.3))
        cancel = api.client.post(f"/operations/{operation['name'].rsplit('/', 1)[-1]}:cancel")
        ended = api.wait(operation)
        state = api.version("race", f"v{index}")["state"]
        if cancel.status_code == 200:
            assert state == "FAILED", index
            assert ended["error"]["code"] == 1 and "response" not in ended, ended
        else:
            api.refused(cancel, PRECONDITION, "already done")
            assert state == "READY", index
            assert "error" not in ended and ended["response"]["state"] == "READY", ended
        outcomes.add(state)
    default = api.ok(api.client.get("/models/race")).get("defaultVersion")
    if "READY" in outcomes:
        assert default is not None and default["state"] == "READY"
    else:
        assert default is None
    api.no_traceback()


def test_cancel_racing_the_end_of_a_code_update_leaves_one_consistent_outcome(
    api: Api, files: Files
) -> None:
    """The new code with the operation succeeded, or the old code with it cancelled. A version
    per round: the verification of a cancelled update goes on after the cancel, and must not
    meet the next round's update (`test_a_cancelled_code_update_never_becomes_the_version_code`).
    """
    rng = random.Random(7)
    for index in range(10):
        name = f"v{index}"
        api.create("race", _custom(name, files, "Sum"))
        operation = api.ok(
            api.client.patch(
                f"/models/race/versions/{name}", params=CODE,
                json={"predictionClass": _cls("Shifted")},
            )
        )  # fmt: skip
        time.sleep(rng.uniform(0, 0.4))
        cancel = api.client.post(f"/operations/{operation['name'].rsplit('/', 1)[-1]}:cancel")
        ended = api.wait(operation)
        version = api.version("race", name)
        assert version["state"] == "READY"
        if cancel.status_code == 200:
            assert ended["error"]["code"] == 1, ended
            assert version["predictionClass"] == _cls("Sum"), index
        else:
            api.refused(cancel, PRECONDITION, "already done")
            assert "error" not in ended, ended
            assert version["predictionClass"] == _cls("Shifted"), index
        expected = 106.0 if version["predictionClass"] == _cls("Shifted") else 6.0
        answer = api.ok(api.client.post(f"/models/race/versions/{name}:predict",
                                        json={"instances": ROWS}))  # fmt: skip
        assert answer["predictions"] == [expected], index
    api.no_traceback()


def test_a_cancelled_code_update_never_becomes_the_version_code(
    api: Api, files: Files, gates: Gates
) -> None:
    api.create("cancelled", _custom("v1", files, "Sum"))
    mask = {"updateMask": "predictionClass"}
    path = "/models/cancelled/versions/v1"
    first = api.ok(api.client.patch(path, params=mask, json={"predictionClass": _cls("HeldA")}))
    api.ok(api.client.post(f"/operations/{first['name'].rsplit('/', 1)[-1]}:cancel"))
    assert api.version("cancelled", "v1")["state"] == "READY"
    second = api.ok(api.client.patch(path, params=mask, json={"predictionClass": _cls("HeldB")}))
    gates.open("a")  # the cancelled update's verification ends while the second one waits
    gates.passed("a")
    time.sleep(0.5)
    gates.open("b")

    ended = api.wait(second)

    assert api.wait(first)["error"]["code"] == 1
    assert "error" not in ended, ended["error"]
    assert api.version("cancelled", "v1")["predictionClass"] == _cls("HeldB")
    assert api.predict("cancelled", ROWS) == [2006.0]
    api.no_traceback()


# -- code updates ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mask", "body", "names"),
    [
        ("packageUris", {"packageUris": ["{custom}"]}, "'packageUris[0]' field of Version"),
        ("packageUris", {"packageUris": ["{custom}/input_example.json"]}, "'packageUris[0]'"),
        ("packageUris", {"packageUris": ["{custom}/missing-0.1.tar.gz"]}, "'packageUris[0]'"),
        ("packageUris", {"packageUris": ["{directory}"]}, "must be a package file that exists"),
        ("packageUris", {"packageUris": "{package}"}, "'packageUris' field of Version"),
        ("packageUris", {"packageUris": ["{package}", 3]}, "'packageUris[1]' field of Version"),
        ("predictionClass", {"predictionClass": "Predictor"}, "'predictionClass' field"),
        ("predictionClass", {"predictionClass": "a b.C"}, "'predictionClass' field"),
        ("predictionClass", {"predictionClass": 5}, "'predictionClass' field"),
        ("predictionClass,nope", {"predictionClass": "a.B"}, "'updateMask' path 'nope'"),
    ],
)
def test_code_updates_refuse_bad_fields(
    api: Api, files: Files, tmp_path: Path, mask: str, body: dict[str, Any], names: str
) -> None:
    directory = tmp_path / "dir-0.1.tar.gz"
    directory.mkdir()
    api.create("m", _custom("v1", files, "Sum"))
    filled = _filled(body, custom=files.custom, package=files.package, directory=directory)
    check(
        api, "PATCH", "/models/m/versions/v1", BAD, names, params={"updateMask": mask}, json=filled
    )


@pytest.mark.parametrize(
    ("mask", "body", "names"),
    [
        (
            "predictionClass",
            {"predictionClass": _cls("Nope")},
            "Cannot import the prediction class",
        ),
        ("predictionClass", {"predictionClass": "nosuchmodule.Cls"}, "'nosuchmodule.Cls'"),
        ("predictionClass", {"predictionClass": _cls("Raises")}, "from_path broke on purpose"),
        (
            "predictionClass,description,labels",
            {"predictionClass": _cls("Raises"), "description": "new", "labels": {"a": "b"}},
            "from_path broke on purpose",
        ),
    ],
)
def test_a_failed_code_update_changes_nothing_but_its_operation(
    api: Api, files: Files, mask: str, body: dict[str, Any], names: str
) -> None:
    api.create("m", _custom("v1", files, "Sum", description="orig"))
    assert api.predict("m", ROWS) == [6.0]
    before = api.snapshot()
    filled = _filled(body, junk=files.junk)

    operation = api.wait(
        api.ok(api.client.patch("/models/m/versions/v1", params={"updateMask": mask}, json=filled))
    )

    assert operation["error"]["code"] == 3 and names in operation["error"]["message"]
    assert "keeps its previous code" in operation["error"]["message"]
    after = api.snapshot()
    assert after["models"] == before["models"] and after["versions"] == before["versions"]
    assert api.version("m", "v1")["description"] == "orig"
    assert api.predict("m", ROWS) == [6.0]
    api.no_traceback()


def test_a_code_update_to_a_file_that_is_not_a_package_is_refused_naming_it(
    api: Api, files: Files
) -> None:
    api.create("m", _custom("v1", files, "Sum"))
    check(
        api, "PATCH", "/models/m/versions/v1", BAD,
        "'packageUris[0]' field of Version must be an sdist (.tar.gz) or wheel/zip archive",
        params={"updateMask": "packageUris"}, json={"packageUris": [str(files.junk)]},
    )  # fmt: skip


def test_two_racing_code_updates_are_never_both_accepted(
    api: Api, files: Files, gates: Gates
) -> None:
    """The loads are held, so the winner is still UPDATING when the loser is answered."""
    api.create("m", _custom("v1", files, "Sum"))
    path = "/models/m/versions/v1"
    for _ in range(4):
        gates.close_all()
        answers = _in_parallel(
            [
                functools.partial(
                    api.client.patch, path, params=CODE, json={"predictionClass": cls}
                )
                for cls in (_cls("HeldA"), _cls("HeldB"))
            ]
        )
        assert sorted(answer.status_code for answer in answers) == [200, 400]
        (accepted,) = [answer for answer in answers if answer.status_code == 200]
        (refused,) = [answer for answer in answers if answer.status_code == 400]
        api.refused(refused, PRECONDITION, "v1")
        gates.open_all()
        assert "error" not in api.wait(accepted.json())
    api.no_traceback()


def test_an_updating_version_serves_and_explains_its_code_and_cannot_be_changed(
    api: Api, files: Files, gates: Gates
) -> None:
    api.create("m", _custom("v1", files, "Sum", explanationConfig=SHAPLEY))
    operation = api.ok(
        api.client.patch(
            "/models/m/versions/v1", params=CODE, json={"predictionClass": _cls("HeldA")}
        )
    )
    assert api.version("m", "v1")["state"] == "UPDATING"
    for method, path, request, names in [
        ("DELETE", "/models/m/versions/v1", {}, "v1 is UPDATING"),
        (
            "PATCH",
            "/models/m/versions/v1",
            {"params": CODE, "json": {"predictionClass": _cls("Shifted")}},
            "v1 is UPDATING",
        ),
        (
            "PATCH",
            "/models/m/versions/v1",
            {"params": {"updateMask": "description"}, "json": {"description": "x"}},
            "v1 is UPDATING",
        ),
    ]:
        check(api, method, path, PRECONDITION, names, **request)
    explained = api.ok(api.client.post("/models/m:explain", json={"instances": ROWS}))
    label = explained["explanations"][0]["attributions_by_label"][0]
    assert label["example_score"] == 6.0 and label["attributions"]["features"] == [1.0, 2.0, 3.0]
    assert api.predict("m", ROWS) == [6.0]
    gates.open("a")
    assert api.wait(operation)["response"]["predictionClass"] == _cls("HeldA")
    assert api.predict("m", ROWS) == [1006.0]
    api.no_traceback()


def test_a_delete_racing_a_code_update_is_never_accepted_with_it(
    api: Api, files: Files, gates: Gates
) -> None:
    """The update's load is held, so it cannot end before the delete is answered."""
    path = "/models/m/versions/v1"
    for _ in range(3):
        gates.close_all()
        api.create("m", _custom("v1", files, "Sum"))
        assert api.predict("m", ROWS) == [6.0]  # loaded: the delete drains it first
        patched, deleted = _in_parallel(
            [
                lambda: api.client.patch(
                    path, params=CODE, json={"predictionClass": _cls("HeldA")}
                ),
                lambda: api.client.delete(path),
            ]
        )
        gates.open_all()
        if patched.status_code == 200 and deleted.status_code == 200:
            gates.passed("a")  # the orphaned update ends (and logs) within this test
            time.sleep(1)
        assert not (patched.status_code == 200 and deleted.status_code == 200)
        if patched.status_code == 200:
            api.refused(deleted, PRECONDITION, "v1")
            assert "error" not in api.wait(patched.json(), timeout=30)
            api.ok(api.client.delete(path))
        else:
            assert patched.status_code in (400, 404), patched.text
            api.ok(deleted)
        api.no_traceback()


# -- list filters ----------------------------------------------------------------------------------

LIST_PROJECT = "filter-sweep"
LISTS = ["/models", "/models/m/versions", "/operations"]


@pytest.fixture(scope="module")
def listed(module_server: Any, files: Files) -> None:
    """In `LIST_PROJECT`: model ``m`` (labels team=a, description ``first: model``) with ``v1``
    READY and ``v2`` FAILED, model ``n``."""
    api = Api(module_server, LIST_PROJECT)
    try:
        api.ok(
            api.client.post(
                "/models",
                json={"name": "m", "labels": {"team": "a"}, "description": "first: model"},
            )
        )
        api.ok(api.client.post("/models", json={"name": "n"}))
        api.create("m", {"name": "v1", "deploymentUri": str(files.linear)})
        api.create("m", {"name": "v2", "deploymentUri": str(files.broken)})
    finally:
        api.client.close()


@pytest.fixture
def lapi(module_server: Any, listed: None) -> Iterator[Api]:
    made = Api(module_server, LIST_PROJECT)
    try:
        yield made
    finally:
        made.client.close()


def _names(api: Api, path: str, params: dict[str, Any]) -> list[str]:
    """Every page of a filtered list, by short name."""
    key = path.rsplit("/", 1)[-1]
    names: list[str] = []
    params = dict(params)
    while True:
        page = api.ok(api.client.get(path, params=params))
        names += [item["name"].rsplit("/", 1)[-1] for item in page.get(key, [])]
        if "nextPageToken" not in page:
            return names
        params["pageToken"] = page["nextPageToken"]


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize(
    ("filter_text", "names"),
    [
        ("*", "Unsupported filter term '*'"),
        ("name:", "Unsupported filter term 'name:'"),
        ("labels.team:", "Unsupported filter term 'labels.team:'"),
        ('"name:m"', "Unsupported filter term '\"name:m\"'"),
        ('name:"a b"', "Unsupported filter term"),
        ("(name:m)", "Unsupported filter term '(name:m)'"),
        ("-name:m", "Unsupported filter term '-name:m'"),
        ("NOT name:m", "Unsupported filter term 'NOT'"),
        ("name:m OR name:n", "Unsupported filter term 'OR'"),
        ("AND", "Unsupported filter term 'AND'"),
        ("name:m AND", "Unsupported filter term 'AND'"),
        ("name:m AND AND name:n", "Unsupported filter term 'AND'"),
        ("\x00", "Unsupported filter term"),
        ("NAME:m", "Unsupported filter field 'NAME'"),
        ("name.x:m", "Unsupported filter field 'name.x'"),
        ("nom:" + "x" * 10_000, "Unsupported filter field 'nom'"),
        ("é:m", "Unsupported filter term"),
    ],
)
def test_lists_refuse_malformed_filters(lapi: Api, path: str, filter_text: str, names: str) -> None:
    check(lapi, "GET", path, BAD, names, params={"filter": filter_text})


@pytest.mark.parametrize(
    ("path", "filter_text", "expected"),
    [
        ("/models", "name:*", ["m", "n"]),
        ("/models", "name:**", ["m", "n"]),
        ("/models", 'name:"m"', ["m"]),
        ("/models", "name:é", []),
        ("/models", "name:日本*", []),
        ("/models", "name:m\x00", []),
        ("/models", "name:" + "a" * 10_000, []),
        ("/models", " AND ".join(["name:m"] * 900), ["m"]),
        ("/models", "name:m\tlabels.team:a", ["m"]),
        ("/models", "description:first:*", ["m"]),
        ("/models", "description:first:", []),
        ("/models", "labels.team:a*", ["m"]),
        ("/models", "labels.team:*", ["m"]),
        ("/models/m/versions", "name:*", ["v1", "v2"]),
        ("/models/m/versions", "name:projects/filter-sweep/models/m/versions/v1", ["v1"]),
        ("/models/m/versions", "deploymentUri:/*", ["v1", "v2"]),
        ("/models/m/versions", "state:READY state:READY", ["v1"]),
        ("/models/m/versions", "state:ready", []),
        ("/operations", "done:true modelName:m", ["create_m_v1", "create_m_v2"]),
        ("/operations", "done:false", []),
        ("/operations", "name:projects/filter-sweep/operations/create_m_v2*", ["create_m_v2"]),
        ("/operations", "modelName:projects/filter-sweep/models/n", []),
    ],
)
def test_lists_filter_odd_but_valid_values(
    lapi: Api, path: str, filter_text: str, expected: list[str]
) -> None:
    found = _names(lapi, path, {"filter": filter_text, "pageSize": 1})
    if path == "/operations":  # ids end in -<epoch ms><random>
        found = [name.split("-", 1)[0] for name in found]
    assert found == expected
    lapi.no_traceback()


def test_a_filter_value_with_colons_matches_a_create_time(lapi: Api) -> None:
    v1 = lapi.version("m", "v1")
    assert ":" in v1["createTime"]
    for text in (f"createTime:{v1['createTime']}", f'createTime:"{v1["createTime"]}"'):
        assert _names(lapi, "/models/m/versions", {"filter": text}) == ["v1"]


@pytest.mark.parametrize("path", LISTS)
def test_a_filter_continues_an_unfiltered_page_token(lapi: Api, path: str) -> None:
    every = _names(lapi, path, {"pageSize": 100})
    key = path.rsplit("/", 1)[-1]
    first = lapi.ok(lapi.client.get(path, params={"pageSize": 1}))
    assert [item["name"].rsplit("/", 1)[-1] for item in first[key]] == every[:1]
    rest = _names(
        lapi, path, {"filter": "name:*", "pageSize": 1, "pageToken": first["nextPageToken"]}
    )
    assert rest == every[1:]
    check(
        lapi,
        "GET",
        path,
        BAD,
        "'pageToken'",
        params={"filter": "name:*", "pageToken": first["nextPageToken"] + "!"},
    )


@pytest.mark.parametrize("path", ["/models", "/models/m/versions"])
@pytest.mark.parametrize("filter_text", ["labels.:x", "labels..team:a", 'name:"', 'name:"m'])
def test_lists_refuse_an_empty_label_key_and_unbalanced_quotes(
    lapi: Api, path: str, filter_text: str
) -> None:
    check(lapi, "GET", path, BAD, "filter", params={"filter": filter_text})
