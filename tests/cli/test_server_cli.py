"""``mlengine server start --workers N`` and ``server stop``: stop ends the whole server, not
only the worker that answered its health check."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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


_STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
worker = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
open(sys.argv[1], "w").write(str(worker.pid))
time.sleep(120)
"""


@pytest.mark.parametrize("own_group", [True, False], ids=["started-by-start", "started-by-hand"])
def test_stop_kills_a_server_that_ignores_sigterm_with_its_workers(
    home: Path, tmp_path: Path, own_group: bool
) -> None:
    """A server whose worker hangs (here: both ignore SIGTERM) is killed after the timeout,
    workers included, and stop reports it stopped (a zombie has stopped)."""
    from mlengine._processes import process_running
    from mlengine.client import stop_local_server

    settings = Settings.load()
    settings.home_path.mkdir(parents=True, exist_ok=True)
    worker_file = tmp_path / "worker.pid"
    server = subprocess.Popen(
        [sys.executable, "-c", _STUBBORN, str(worker_file)], start_new_session=own_group
    )
    worker = 0
    try:
        deadline = time.monotonic() + 60
        while not worker_file.exists() or not worker_file.read_text():
            assert time.monotonic() < deadline, "the fake server never started its worker"
            time.sleep(0.05)
        worker = int(worker_file.read_text())
        (settings.home_path / "server.json").write_text(json.dumps({"pid": server.pid}))
        assert stop_local_server(settings, timeout=1.0) == server.pid
        assert server.poll() is not None  # reaped: this test process is its parent
        deadline = time.monotonic() + 30
        while process_running(worker):
            assert time.monotonic() < deadline, "the worker outlived the server"
            time.sleep(0.05)
        assert not (settings.home_path / "server.json").exists()
    finally:
        for pid in (server.pid, worker):
            if pid and process_running(pid):
                os.kill(pid, signal.SIGKILL)
        server.wait()
