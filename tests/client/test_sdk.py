"""The Python SDK against a real server: the same story as the CLI and REST tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import mlengine
from mlengine.config import Settings
from mlengine.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from mlengine.jobs import JobState
from tests.conftest import ServerProcess

pytestmark = pytest.mark.integration


@pytest.fixture
def client(server: ServerProcess, settings: Settings) -> Iterator[mlengine.Client]:
    with mlengine.Client(settings=settings) as instance:
        yield instance


def test_submit_wait_logs(client: mlengine.Client, trainer_package: Path, tmp_path: Path) -> None:
    job = client.jobs.submit_training(
        "sdk_ok",
        module_name="trainer.task",
        package_path=trainer_package,
        job_dir=tmp_path / "out",
        args=["--epochs", "2"],
        labels={"team": "ml"},
    )
    assert job.resource["state"] == "QUEUED"
    assert job.wait(timeout=60) is job
    assert job.state == JobState.SUCCEEDED
    assert job.resource["labels"] == {"team": "ml"}
    messages = [(e["taskName"], e["message"]) for e in job.logs()]
    assert ("master-replica-0", "trainer chief-0 done") in messages
    assert ("service", "Job completed successfully.") in messages
    record = json.loads((tmp_path / "out" / "chief-0.json").read_text())
    assert record["argv"] == ["--epochs", "2", "--job-dir", str(tmp_path / "out")]
    assert [j.job_id for j in client.jobs.list(filter="labels.team:ml")] == ["sdk_ok"]


def test_distributed_job_and_packages(
    client: mlengine.Client, trainer_package: Path, tmp_path: Path
) -> None:
    from mlengine.jobs._packaging import build_package

    sdist = build_package(trainer_package, tmp_path / "dist")
    job = client.jobs.submit_training(
        "sdk_dist",
        module_name="trainer.task",
        packages=[sdist],
        job_dir=tmp_path / "out",
        scale_tier="custom",
        master_machine_type="n1-standard-4",
        worker_machine_type="n1-standard-4",
        worker_count=2,
        parameter_server_machine_type="n1-standard-4",
        parameter_server_count=1,
        args=["--sleep", "2"],  # every replica records itself before the master ends the job
    )
    job.wait(timeout=90)
    assert job.resource["state"] == "SUCCEEDED", job.error_message
    ranks = {}
    for name in ("chief-0", "worker-0", "worker-1", "ps-0"):
        env = json.loads((tmp_path / "out" / f"{name}.json").read_text())["env"]
        cluster = json.loads(env["TF_CONFIG"])["cluster"]
        assert {k: len(v) for k, v in cluster.items()} == {"chief": 1, "worker": 2, "ps": 1}
        ranks[name] = env.get("RANK")
    assert ranks == {"chief-0": "0", "worker-0": "1", "worker-1": "2", "ps-0": None}


def test_errors_are_the_error_tree(
    client: mlengine.Client, trainer_package: Path, tmp_path: Path
) -> None:
    with pytest.raises(NotFound):
        client.jobs.get("missing")
    with pytest.raises(InvalidArgument, match="'jobId'"):
        client.jobs.submit_training(
            "9bad", module_name="trainer.task", package_path=trainer_package
        )
    job = client.jobs.submit_training(
        "sdk_dup", module_name="trainer.task", package_path=trainer_package, args=["--sleep", "30"]
    )
    with pytest.raises(AlreadyExists):
        client.jobs.submit_training(
            "sdk_dup", module_name="trainer.task", package_path=trainer_package
        )
    job.cancel()
    job.wait(timeout=30)
    assert job.resource["state"] == "CANCELLED"
    with pytest.raises(FailedPrecondition, match="already finished"):
        job.cancel()
