"""Fixtures that build real backends: a temporary MLENGINE_HOME, a real API server process on
an ephemeral 127.0.0.1 port, and tiny trainer packages written on the fly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from mlengine.config import Settings

REPO = Path(__file__).resolve().parent.parent

TRAINER = r'''
"""A tiny trainer used by the tests: records how it was started, then behaves as asked."""
import json, os, signal, subprocess, sys, time

def main():
    argv = sys.argv[1:]
    job_dir = argv[argv.index("--job-dir") + 1] if "--job-dir" in argv else None
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    name = f"{task.get('type', 'master')}-{task.get('index', 0)}"
    record = {"argv": argv, "cwd": os.getcwd(), "pid": os.getpid(),
              "env": {k: v for k, v in os.environ.items()
                      if k.startswith(("TF_CONFIG", "CLUSTER_SPEC", "CLOUD_ML", "AIP_", "MASTER_",
                                       "WORLD_SIZE", "RANK"))}}
    if job_dir:
        os.makedirs(job_dir, exist_ok=True)
        with open(os.path.join(job_dir, f"{name}.json"), "w") as handle:
            json.dump(record, handle)
        with open(os.path.join(job_dir, "starts.log"), "a") as handle:
            handle.write(f"{name} {os.getpid()}\n")
    with open("relative-output.txt", "w") as handle:  # trainers write relative paths
        handle.write(name)
    print(f"trainer {name} started with {argv}", flush=True)
    print(f"a warning from {name}", file=sys.stderr, flush=True)
    if "--spawn-child" in argv:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)"])
        if job_dir:
            with open(os.path.join(job_dir, f"{name}.child"), "w") as handle:
                handle.write(str(child.pid))
    if "--ignore-sigterm" in argv:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if "--sleep" in argv:
        seconds = float(argv[argv.index("--sleep") + 1])
        deadline = time.time() + seconds
        while time.time() < deadline:
            time.sleep(0.05)
    if "--kill-self" in argv:
        os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer does
    if "--crash" in argv:
        raise RuntimeError("the trainer crashed on purpose")
    if "--exit" in argv:
        sys.exit(int(argv[argv.index("--exit") + 1]))
    print(f"trainer {name} done", flush=True)

if __name__ == "__main__":
    main()
'''


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def trainer_package(tmp_path: Path) -> Path:
    """``<tmp>/src/trainer`` with ``task.py`` (the test trainer); its parent has no setup.py."""
    package = tmp_path / "src" / "trainer"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "task.py").write_text(textwrap.dedent(TRAINER))
    return package


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh MLENGINE_HOME, set in the environment, with an API URL on a free port."""
    directory = tmp_path / "home"
    monkeypatch.setenv("MLENGINE_HOME", str(directory))
    monkeypatch.setenv("MLENGINE_API_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLENGINE_CANCEL_GRACE_SECONDS", "2")
    for variable in (
        "MLENGINE_DATABASE_URL",
        "MLENGINE_ARTIFACT_ROOT",
        "MLENGINE_PROJECT",
        "MLENGINE_CONFIG",
        "MLENGINE_API_TOKEN",
        "MLENGINE_WAREHOUSE_PATH",
        "TF_CONFIG",
    ):
        monkeypatch.delenv(variable, raising=False)
    return directory


@pytest.fixture
def settings(home: Path) -> Settings:
    """Settings resolved from the temporary home."""
    return Settings.load()


class ServerProcess:
    """A real ``mlengine server run`` process."""

    def __init__(self, settings: Settings, *args: str) -> None:
        self.settings = settings
        self.args = args  # more `server run` options, e.g. "--workers", "2"
        self.url = settings.api_url
        self.process: subprocess.Popen[bytes] | None = None
        self.log = settings.home_path / "test-server.log"

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.settings.home_path.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mlengine",
                    "server",
                    "run",
                    "--log-level",
                    "warning",
                    *self.args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(os.environ),
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        if self.process.poll() is None:  # not answering: leave no server behind the error
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        raise RuntimeError(f"server did not start:\n{self.log.read_text()}")

    def kill(self) -> None:
        """kill -9, as a crash would."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def server(settings: Settings) -> Iterator[ServerProcess]:
    """A running API server (with its scheduler) on the temporary home."""
    process = ServerProcess(settings).start()
    yield process
    process.stop()


@pytest.fixture
def run_cli(home: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python -m mlengine ARGS`` as a user would; returns the completed process."""

    def run(
        *args: str, timeout: float = 120, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mlengine", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            env={**os.environ, **(env or {})},
        )

    return run
