"""With MLENGINE_API_TOKEN set, every route but the health checks needs the bearer token,
including the prediction fast path."""

from __future__ import annotations

from pathlib import Path

import httpx
import joblib
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

import mlengine
from mlengine.config import Settings
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
    finally:
        server.stop()
