"""Custom prediction classes and pickles of the trainer's own classes, served from their
packages installed in an isolated environment (AI Platform's --prediction-class and
--package-uris)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

import mlengine
from mlengine.config import Settings
from mlengine.errors import OperationFailed
from tests.conftest import ServerProcess
from tests.server._predictor_packages import build_source_package

pytestmark = pytest.mark.integration

PREDICTOR = '''
import os

class ScalePredictor:
    """Multiplies the sum of each instance by the number in scale.txt."""

    def __init__(self, scale):
        self.scale = scale

    @classmethod
    def from_path(cls, model_dir):
        with open(os.path.join(model_dir, "scale.txt")) as handle:
            return cls(float(handle.read()))

    def predict(self, instances, **kwargs):
        if kwargs.get("echo_bytes"):
            return [len(i["image_bytes"]) for i in instances]
        offset = float(kwargs.get("offset", 0))
        return [self.scale * sum(instance) + offset for instance in instances]
'''

TRANSFORMS = """
from sklearn.base import BaseEstimator, TransformerMixin

class AddOne(BaseEstimator, TransformerMixin):
    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X + 1
"""


@pytest.fixture
def client(server: ServerProcess, settings: Settings) -> Iterator[mlengine.Client]:
    with mlengine.Client(settings=settings) as instance:
        yield instance


def test_custom_prediction_class(
    client: mlengine.Client, server: ServerProcess, tmp_path: Path
) -> None:
    sdist = build_source_package(tmp_path / "p1", "scale_predictor", "predictor", PREDICTOR)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "scale.txt").write_text("2")
    (model_dir / "input_example.json").write_text('{"instances": [[1, 2]]}')
    client.models.create("custom")
    version = client.versions.create(
        "custom", "v1", model_dir,
        config={"predictionClass": "scale_predictor.predictor.ScalePredictor",
                "packageUris": [str(sdist)]},
    )  # fmt: skip
    assert version["state"] == "READY"
    assert version["predictionClass"] == "scale_predictor.predictor.ScalePredictor"
    assert "framework" not in version  # AI Platform: unset for custom prediction routines
    assert client.predict("custom", [[1, 2], [3, 4]]) == [6.0, 14.0]
    assert client.predict("custom", [[1, 2]], offset=1) == [7.0]  # extra fields are kwargs
    payload = base64.b64encode(b"12345").decode()
    answer = httpx.post(
        f"{server.url}/v1/projects/default/models/custom:predict",
        json={"instances": [{"image_bytes": {"b64": payload}}], "echo_bytes": True},
    )
    assert answer.json() == {"predictions": [5]}  # b64 decoded before the class sees it
    # the class is not importable in the server's own process: it lives in the version's env
    assert subprocess.run([sys.executable, "-c", "import scale_predictor"]).returncode != 0


def test_custom_prediction_class_from_the_cli(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    server: ServerProcess,
    tmp_path: Path,
) -> None:
    sdist = build_source_package(tmp_path / "p3", "scale_predictor", "predictor", PREDICTOR)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "scale.txt").write_text("3")
    assert run_cli("models", "create", "cli_custom").returncode == 0
    created = run_cli(
        "versions", "create", "v1", "--model", "cli_custom", "--origin", str(model_dir),
        "--prediction-class", "scale_predictor.predictor.ScalePredictor",
        "--package-uris", str(sdist), "--format", "json",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["packageUris"][0].startswith(("/", "file:"))
    request = tmp_path / "request.json"
    request.write_text('{"instances": [[1, 1]]}')
    predicted = run_cli("predict", "--model", "cli_custom", "--json-request", str(request),
                        "--format", "json")  # fmt: skip
    assert json.loads(predicted.stdout) == {"predictions": [6.0]}


def test_sklearn_pipeline_with_trainer_classes_needs_itsbuild_source_package(
    client: mlengine.Client, tmp_path: Path
) -> None:
    sdist = build_source_package(tmp_path / "p2", "trainer_transforms", "transforms", TRANSFORMS)
    script = textwrap.dedent(f"""
        import sys, joblib
        sys.path.insert(0, {str(tmp_path / "p2" / "src")!r})
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from trainer_transforms.transforms import AddOne
        X, y = load_iris(return_X_y=True)
        pipeline = make_pipeline(AddOne(), LogisticRegression(max_iter=500)).fit(X, y)
        joblib.dump(pipeline, {str(tmp_path / "model" / "model.joblib")!r})
        print(pipeline.predict(X[:3]).tolist())
    """)
    (tmp_path / "model").mkdir()
    expected = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()
    client.models.create("pipe")
    with pytest.raises(OperationFailed, match="trainer_transforms"):
        client.versions.create("pipe", "v1", tmp_path / "model", framework="scikit-learn")
    version = client.versions.create(
        "pipe", "v2", tmp_path / "model", config={"packageUris": [str(sdist)]}
    )
    assert version["state"] == "READY" and version["framework"] == "SCIKIT_LEARN"
    from sklearn.datasets import load_iris

    rows = load_iris().data[:3].tolist()
    assert str(client.predict("pipe", rows, version="v2")) == expected
    assert np.allclose(
        np.sum(client.predict("pipe", rows, version="v2", probabilities=True), axis=1), 1.0
    )


UNRULY = '''
import os
import subprocess
import sys


class Unruly:
    """Misbehaves as the request's "mode" says."""

    @classmethod
    def from_path(cls, model_dir):
        return cls()

    def predict(self, instances, **kwargs):
        mode = kwargs.get("mode")
        if mode == "fd":  # past sys.stdout: what a C library or a child program writes
            os.write(1, b"hello from fd 1")
            subprocess.run(["echo", "hello from a child"], check=True)
            print("hello from print")
        elif mode == "stdin":
            sys.stdin.read()
        elif mode == "dict":
            return {f"k{i}": i for i in range(len(instances))}
        elif mode == "set":
            return [1] + [{2}] * (len(instances) - 1)
        elif mode == "short":
            return [1]
        elif mode == "exit":
            os._exit(3)
        return [sum(instance) for instance in instances]
'''


def test_an_unruly_predictor_gets_clear_answers_and_never_breaks_its_version(
    client: mlengine.Client, server: ServerProcess, tmp_path: Path
) -> None:
    """Output on fd 1 does not corrupt the worker's channel; outputs that are not one JSON
    value per instance are 400s naming the problem; a worker that died starts again."""
    sdist = build_source_package(tmp_path / "p9", "unruly", "predictor", UNRULY)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "input_example.json").write_text('{"instances": [[1, 2]]}')
    shadow = model_dir / "unruly"  # a copy in the model directory must not shadow the package
    shadow.mkdir()
    (shadow / "__init__.py").write_text("")
    (shadow / "predictor.py").write_text(
        "class Unruly:\n    from_path = classmethod(lambda cls, d: cls())\n"
        "    def predict(self, instances, **kwargs):\n        return ['shadow'] * len(instances)\n"
    )
    client.models.create("unruly")
    client.versions.create(
        "unruly", "v1", model_dir,
        config={"predictionClass": "unruly.predictor.Unruly", "packageUris": [str(sdist)]},
    )  # fmt: skip
    url = f"{server.url}/v1/projects/default/models/unruly:predict"

    def post(mode: str | None, **extra: object) -> httpx.Response:
        body = {"instances": [[1, 2], [3, 4]], "mode": mode, **extra}
        return httpx.post(url, json=body, timeout=60)

    for mode in ("fd", "stdin"):
        answer = post(mode)
        assert answer.json() == {"predictions": [3, 7]}, (mode, answer.text)
    for mode, expected in (
        ("dict", "the predictor returned a dict; predict must return a list"),
        ("set", "output for instance 1 is not JSON-serialisable"),
        ("short", "returned 1 outputs for 2 instances"),
    ):
        answer = post(mode)
        assert answer.status_code == 400, (mode, answer.text)
        assert expected in answer.json()["error"], answer.text
    named_self = post(None, self=1)
    assert named_self.status_code == 400 and "'self'" in named_self.json()["error"]
    died = post("exit")
    assert died.status_code >= 500 and "starts again" in died.json()["error"], died.text
    assert post(None).json() == {"predictions": [3, 7]}  # a new worker answers
