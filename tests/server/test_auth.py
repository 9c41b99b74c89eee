"""With MLENGINE_API_TOKEN set, every route but the health checks needs the bearer token,
including the prediction fast path, the TF Serving and v2 routes and /metrics; the SDK and the
CLI send it."""

from __future__ import annotations

from pathlib import Path

import httpx
import joblib
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

import mlengine
from mlengine.config import Settings
from mlengine.errors import Unauthenticated
from tests.conftest import ServerProcess

pytestmark = pytest.mark.integration


def test_token_guards_the_api_and_predictions(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLENGINE_API_TOKEN", "s3cret")
    settings = Settings.load()
    iris = load_iris()
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    joblib.dump(LogisticRegression(max_iter=500).fit(iris.data, iris.target),
                model_dir / "model.joblib")  # fmt: skip
    server = ServerProcess(settings).start()
    try:
        with mlengine.Client(settings=settings) as client:
            client.models.create("guarded")
            client.versions.create("guarded", "v1", model_dir)
            assert len(client.predict("guarded", iris.data[:2].tolist())) == 2
        url = f"{server.url}/v1/projects/default/models/guarded"
        for path in ("", "/versions/v1"):
            anonymous = httpx.post(f"{url}{path}:predict", json={"instances": [[1, 2, 3, 4]]})
            assert anonymous.status_code == 401
            assert anonymous.json()["error"]["status"] == "UNAUTHENTICATED"
        assert httpx.get(url).status_code == 401
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        wrong = httpx.post(f"{url}:predict", json={"instances": [[1, 2, 3, 4]]},
                           headers={"authorization": "Bearer nope"})  # fmt: skip
        assert wrong.status_code == 401
        body = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
        v2_body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64",
                               "data": [5.1, 3.5, 1.4, 0.2]}]}  # fmt: skip
        guarded = [
            ("POST", f"{url}:predict", body),
            ("POST", f"{url}/versions/v1:predict", body),
            ("POST", f"{server.url}/v1/models/guarded:predict", body),
            ("GET", f"{server.url}/v1/models/guarded", None),
            ("POST", f"{server.url}/v2/models/guarded/infer", v2_body),
            ("GET", f"{server.url}/v2/models/guarded", None),
            ("GET", f"{server.url}/v2", None),
            ("GET", f"{server.url}/metrics", None),
            ("GET", f"{server.url}/v1/projects/default/jobs", None),
        ]
        for method, target, payload in guarded:
            assert httpx.request(method, target, json=payload).status_code == 401, target
            for scheme in ("Bearer", "bearer", "BEARER"):  # the scheme in any case (RFC 9110)
                headers = {"authorization": f"{scheme} s3cret"}
                answer = httpx.request(method, target, json=payload, headers=headers)
                assert answer.status_code == 200, (target, answer.text)
            # several Authorization headers: one carrying the token is enough, on every path
            headers_list = [("authorization", "Bearer nope"), ("authorization", "Bearer s3cret")]
            answer = httpx.request(method, target, json=payload, headers=headers_list)
            assert answer.status_code == 200, (target, answer.text)
        for path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"):
            assert httpx.get(f"{server.url}{path}").status_code == 200, path
        wrong_token = Settings.load(flags={"api_token": "nope"})
        with mlengine.Client(settings=wrong_token) as client, pytest.raises(Unauthenticated):
            next(client.models.list())
    finally:
        server.stop()
