"""``mlengine server start --workers N`` and ``server stop``: stop ends the whole server, not
only the worker that answered its health check."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from mlengine.config import Settings

Cli = Callable[..., subprocess.CompletedProcess[str]]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_background_server_with_two_workers_starts_and_stops_whole(
    run_cli: Cli, home: Path
) -> None:
    settings = Settings.load()
    started = run_cli("server", "start", "--workers", "2")
    try:
        assert started.returncode == 0, started.stderr
        workers: set[int] = set()
        servers: set[int] = set()
        deadline = time.monotonic() + 60
        while len(workers) < 2:  # a new connection each time: either worker answers
            assert time.monotonic() < deadline, f"only {workers} answered"
            answer = httpx.get(f"{settings.api_url}/healthz", timeout=10).json()
            workers.add(answer["pid"])
            servers.add(answer["serverPid"])
        (server,) = servers
        assert server not in workers and f"(pid {server}," in started.stderr
        status = run_cli("server", "status", "--format", "json")
        assert status.returncode == 0 and json.loads(status.stdout)["serverPid"] == server
    finally:
        stopped = run_cli("server", "stop")
    assert stopped.returncode == 0 and "Stopped" in stopped.stderr, stopped.stderr
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in (server, *workers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in (server, *workers))
    assert run_cli("server", "status").returncode == 1


@pytest.mark.parametrize("workers", ["0", "two"])
def test_bad_worker_counts_are_refused(run_cli: Cli, home: Path, workers: str) -> None:
    refused = run_cli("server", "start", "--workers", workers)
    assert refused.returncode == 2 and "--workers" in refused.stderr
