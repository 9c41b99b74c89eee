"""Exactly one scheduler per metadata database, however many servers share it."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from mlengine.config import Settings
from mlengine.jobs._packaging import build_package
from tests.conftest import ServerProcess, free_port

pytestmark = pytest.mark.integration


def test_two_servers_on_one_database_run_each_job_once(
    settings: Settings, trainer_package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ServerProcess(settings).start()
    monkeypatch.setenv("MLENGINE_API_URL", f"http://127.0.0.1:{free_port()}")
    second = ServerProcess(Settings.load()).start()
    try:
        leaders = [httpx.get(f"{s.url}/healthz").json()["schedulerLeader"] for s in (first, second)]
        deadline = time.monotonic() + 10
        while sum(leaders) != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
            leaders = [
                httpx.get(f"{s.url}/healthz").json()["schedulerLeader"] for s in (first, second)
            ]
        assert sorted(leaders) == [False, True]
        sdist = build_package(trainer_package, tmp_path / "dist")
        for index in range(4):
            server = (first, second)[index % 2]
            uri = httpx.post(
                f"{server.url}/upload/v1/projects/p/packages",
                params={"name": sdist.name},
                content=sdist.read_bytes(),
            ).json()["uri"]
            body = {
                "jobId": f"once_{index}",
                "trainingInput": {
                    "pythonModule": "trainer.task",
                    "packageUris": [uri],
                    "jobDir": str(tmp_path / f"out{index}"),
                },
            }
            assert httpx.post(f"{server.url}/v1/projects/p/jobs", json=body).status_code == 200
        for index in range(4):
            deadline = time.monotonic() + 60
            while True:
                state = httpx.get(f"{second.url}/v1/projects/p/jobs/once_{index}").json()["state"]
                if state in ("SUCCEEDED", "FAILED") or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert state == "SUCCEEDED"
            starts = (tmp_path / f"out{index}" / "starts.log").read_text().splitlines()
            assert len(starts) == 1, starts
    finally:
        first.stop()
        second.stop()
