"""The iris example trainers (examples/iris), run as real subprocesses the way a job runs them:
``python -m trainer.<module> ... --job-dir DIR`` with the package's parent as working directory.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split

IRIS_DIR = Path(__file__).resolve().parents[2] / "examples" / "iris"

_SCRUBBED_ENV = (
    "TF_CONFIG",
    "AIP_MODEL_DIR",
    "CLOUD_ML_HP_METRIC_FILE",
    "CLOUD_ML_TRIAL_ID",
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _SCRUBBED_ENV}
    env["CLOUD_ML_HP_METRIC_FILE"] = str(tmp_path / "hypertune" / "output.metrics")
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # keep examples/iris free of __pycache__
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def _run(
    module: str, args: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=IRIS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"{module} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _iris() -> tuple[np.ndarray, np.ndarray]:
    iris = load_iris()
    return np.asarray(iris.data, dtype=np.float32), np.asarray(iris.target, dtype=np.int64)


def _test_split(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The trainers' held-out rows: stratified 80/20 with `random_state=seed`."""
    x, y = _iris()
    _, x_test, _, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
    return x_test, y_test


def _hypertune_lines(tmp_path: Path) -> list[dict[str, str]]:
    path = tmp_path / "hypertune" / "output.metrics"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _exported_predict(path: Path, rows: np.ndarray) -> np.ndarray:
    import torch

    module = torch.export.load(str(path)).module()
    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(rows))).numpy()


def test_task_trains_exports_and_reports(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    proc = _run("trainer.task", ["--epochs", "20", "--job-dir", str(job_dir)], _env(tmp_path))

    assert "epoch 1 loss " in proc.stdout
    assert "epoch 20 loss " in proc.stdout
    model_dir = job_dir / "model"
    metadata = _read_json(model_dir / "metadata.json")
    assert metadata["framework"] == "PYTORCH"
    assert metadata["classes"] == ["setosa", "versicolor", "virginica"]
    assert len(metadata["feature_names"]) == 4
    assert metadata["output"] == "probabilities"
    metrics = _read_json(job_dir / "metrics.json")
    assert metrics["accuracy"] == metadata["accuracy"]
    assert np.isfinite(metrics["loss"])

    # The exported program takes raw features, any batch size, and returns probabilities.
    x, y = _iris()
    for batch in (1, 5, 30):
        probabilities = _exported_predict(model_dir / "model.pt2", x[:batch])
        assert probabilities.shape == (batch, 3)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    x_test, y_test = _test_split(seed=0)
    predicted = _exported_predict(model_dir / "model.pt2", x_test).argmax(axis=1)
    assert float((predicted == y_test).mean()) == pytest.approx(metadata["accuracy"])
    all_rows = _exported_predict(model_dir / "model.pt2", x).argmax(axis=1)
    assert float((all_rows == y).mean()) > 0.8

    reports = [line for line in _hypertune_lines(tmp_path) if "accuracy" in line]
    assert reports, "no hypertune line with the accuracy tag"
    assert float(reports[-1]["accuracy"]) == pytest.approx(metadata["accuracy"])
    assert reports[-1]["global_step"] == "20"


def test_task_uses_trial_dir_and_aip_model_dir(tmp_path: Path) -> None:
    job_dir, aip_dir = tmp_path / "job", tmp_path / "aip-model"
    tf_config = {"cluster": {}, "task": {"type": "master", "index": 0, "trial": "7"}}
    env = _env(tmp_path, TF_CONFIG=json.dumps(tf_config), AIP_MODEL_DIR=str(aip_dir))
    _run("trainer.task", ["--epochs", "1", "--hidden-units", "8", f"--job-dir={job_dir}"], env)

    assert (job_dir / "7" / "metrics.json").is_file()
    assert (aip_dir / "model.pt2").is_file()
    assert (aip_dir / "metadata.json").is_file()
    assert not (job_dir / "model").exists()
    assert not (job_dir / "7" / "model").exists()
    assert _exported_predict(aip_dir / "model.pt2", _iris()[0][:3]).shape == (3, 3)


@pytest.mark.parametrize("model", ["logreg", "forest"])
def test_sklearn_task_saves_a_pipeline(tmp_path: Path, model: str) -> None:
    import joblib

    job_dir = tmp_path / "job"
    args = ["--model", model, "--n-estimators", "25", "--seed", "1", "--job-dir", str(job_dir)]
    _run("trainer.sklearn_task", args, _env(tmp_path))

    pipeline = joblib.load(job_dir / "model" / "model.joblib")
    x, y = _iris()
    assert float((pipeline.predict(x) == y).mean()) > 0.9
    metadata = _read_json(job_dir / "model" / "metadata.json")
    assert metadata["framework"] == "SCIKIT_LEARN"
    assert metadata["model"] == model
    x_test, y_test = _test_split(seed=1)
    assert float((pipeline.predict(x_test) == y_test).mean()) == pytest.approx(metadata["accuracy"])
    assert _read_json(job_dir / "metrics.json")["accuracy"] == metadata["accuracy"]
    assert any("accuracy" in line for line in _hypertune_lines(tmp_path))


def test_ddp_task_without_rank_exits_cleanly(tmp_path: Path) -> None:
    tf_config = {"cluster": {}, "task": {"type": "ps", "index": 0}}
    proc = _run(
        "trainer.ddp_task",
        ["--job-dir", str(tmp_path / "job")],
        _env(tmp_path, TF_CONFIG=json.dumps(tf_config)),
    )
    assert "no RANK" in proc.stdout
    assert not (tmp_path / "job").exists()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
@pytest.mark.integration
def test_ddp_task_averages_gradients_across_two_processes(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    port = str(_free_port())
    procs: list[tuple[subprocess.Popen[str], Path]] = []
    try:
        for rank in (0, 1):
            env = _env(
                tmp_path, MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE="2", RANK=str(rank)
            )
            log = tmp_path / f"rank-{rank}.log"
            with log.open("w") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "trainer.ddp_task", "--job-dir", str(job_dir)],
                    cwd=IRIS_DIR,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            procs.append((proc, log))
        for proc, log in procs:
            returncode = proc.wait(timeout=120)
            assert returncode == 0, f"{log.name} exited {returncode}:\n{log.read_text()}"
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    records = [_read_json(job_dir / "ddp" / f"rank-{rank}.json") for rank in (0, 1)]
    assert [record["rank"] for record in records] == [0, 1]
    assert all(record["world_size"] == 2 for record in records)
    local = np.array([record["local_grad"] for record in records])
    assert local.shape[1] > 0
    # Each rank saw different rows, so the test is not vacuous...
    assert not np.allclose(local[0], local[1], atol=1e-4)
    # ...and DDP left every rank with the mean of the per-rank gradients.
    mean = local.mean(axis=0)
    for record in records:
        assert np.allclose(record["ddp_grad"], mean, atol=1e-6)
        assert not np.allclose(record["ddp_grad"], record["local_grad"], atol=1e-4)
    assert records[0]["final_param_checksum"] == pytest.approx(
        records[1]["final_param_checksum"], rel=1e-12, abs=1e-12
    )

    # Rank 0 exported the model like trainer.task.
    metadata = _read_json(job_dir / "model" / "metadata.json")
    assert metadata["framework"] == "PYTORCH"
    assert _exported_predict(job_dir / "model" / "model.pt2", _iris()[0][:5]).shape == (5, 3)
    assert "epoch 1 loss " in (tmp_path / "rank-1.log").read_text()
