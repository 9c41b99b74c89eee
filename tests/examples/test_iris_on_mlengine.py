"""The iris example trained through mlengine: DDP over local train, scikit-learn as a job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris

import mlengine
from mlengine.config import Settings
from tests.conftest import REPO, ServerProcess, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PACKAGE = REPO / "examples" / "iris" / "trainer"


def test_ddp_averages_gradients_across_two_processes(tmp_path: Path, home: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mlengine", "local", "train", "--module-name", "trainer.ddp_task",
         "--package-path", str(PACKAGE), "--job-dir", str(tmp_path / "job"), "--distributed",
         "--worker-count", "1", "--parameter-server-count", "0", "--start-port", str(free_port()),
         "--", "--epochs", "2"],
        capture_output=True, text=True, timeout=240,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "master-replica-0: " in result.stdout and "worker-replica-0: " in result.stdout
    ranks = [json.loads((tmp_path / "job" / "ddp" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    local = np.array([r["local_grad"] for r in ranks])
    assert not np.allclose(local[0], local[1])  # the shards differ, so averaging shows
    for rank in ranks:
        assert np.allclose(rank["ddp_grad"], local.mean(axis=0), atol=1e-6)
    assert ranks[0]["final_param_checksum"] == ranks[1]["final_param_checksum"]


def test_sklearn_variant_as_a_queued_job(
    server: ServerProcess, settings: Settings, tmp_path: Path
) -> None:
    with mlengine.Client(settings=settings) as client:
        job = client.jobs.submit_training(
            "iris_sklearn", module_name="trainer.sklearn_task", package_path=PACKAGE,
            job_dir=tmp_path / "job", labels={"example": "iris"},
        )  # fmt: skip
        job.wait(timeout=180)
    assert job.resource["state"] == "SUCCEEDED", job.error_message
    model = joblib.load(tmp_path / "job" / "model" / "model.joblib")
    iris = load_iris()
    assert (model.predict(iris.data) == iris.target).mean() > 0.9
