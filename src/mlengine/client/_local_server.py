"""Start, stop and inspect a background API server on this machine.

The server's state lives under ``MLENGINE_HOME``: ``server.json`` (pid and URL) and
``server.log``. The client starts one when none answers on a loopback `api_url`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import orjson

from mlengine._processes import child_pids, process_running
from mlengine.config import Settings
from mlengine.errors import InvalidArgument, Unavailable

__all__ = [
    "health",
    "is_loopback",
    "server_address",
    "start_local_server",
    "stop_local_server",
]

_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def server_address(settings: Settings) -> tuple[str, int]:
    """Host and port of `api_url`.

    Raises:
        InvalidArgument: not an ``http://HOST:PORT`` URL.
    """
    parsed = urllib.parse.urlsplit(settings.api_url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InvalidArgument(
            f"The setting 'api_url' must be an http:// URL. Got {settings.api_url!r}."
        )
    return parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)


def is_loopback(settings: Settings) -> bool:
    """True when `api_url` names this machine, so a server may be started for it."""
    return server_address(settings)[0] in _LOOPBACK


def health(settings: Settings, timeout: float = 2.0) -> dict[str, Any] | None:
    """The server's ``/healthz`` answer, or None when nothing answers."""
    try:
        response = httpx.get(f"{settings.api_url.rstrip('/')}/healthz", timeout=timeout)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        answer: dict[str, Any] = response.json()
    except ValueError:
        return None
    return answer


def _state_file(settings: Settings) -> Path:
    return settings.home_path / "server.json"


def log_file(settings: Settings) -> Path:
    """Where a background server writes its log."""
    return settings.home_path / "server.log"


def _environment(settings: Settings) -> dict[str, str]:
    environment = dict(os.environ)
    for name, variable in (
        ("home", "MLENGINE_HOME"),
        ("database_url", "MLENGINE_DATABASE_URL"),
        ("artifact_root", "MLENGINE_ARTIFACT_ROOT"),
        ("api_url", "MLENGINE_API_URL"),
        ("runner", "MLENGINE_RUNNER"),
        ("max_running_jobs", "MLENGINE_MAX_RUNNING_JOBS"),
        ("cancel_grace_seconds", "MLENGINE_CANCEL_GRACE_SECONDS"),
    ):
        environment[variable] = str(settings.values[name])
    if settings.api_token:
        environment["MLENGINE_API_TOKEN"] = settings.api_token
    return environment


def start_local_server(
    settings: Settings, timeout: float = 60.0, workers: int = 1
) -> dict[str, Any]:
    """Start a background server for `settings` (with `workers` processes) unless one
    answers; return its health.

    Raises:
        InvalidArgument: `api_url` is not on this machine.
        Unavailable: the server did not come up (the message holds its log's last lines).
    """
    answer = health(settings)
    if answer is not None:
        return answer
    if not is_loopback(settings):
        raise InvalidArgument(
            f"Cannot start a server for {settings.api_url}: it is not an address of this machine."
        )
    host, port = server_address(settings)
    settings.home_path.mkdir(parents=True, exist_ok=True)
    with open(log_file(settings), "ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlengine",
                "server",
                "run",
                "--host",
                host,
                "--port",
                str(port),
                *(["--workers", str(workers)] if workers > 1 else []),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_environment(settings),
            cwd=settings.home_path,
            start_new_session=True,
        )
    state = {"pid": process.pid, "url": settings.api_url, "started": time.time()}
    temporary = _state_file(settings).with_suffix(".tmp")
    temporary.write_bytes(orjson.dumps(state))
    os.replace(temporary, _state_file(settings))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = health(settings, timeout=1.0)
        if answer is not None:
            return answer
        if process.poll() is not None:
            break
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    tail = _tail(log_file(settings))
    raise Unavailable(
        f"The mlengine server did not start at {settings.api_url}. "
        f"Last lines of {log_file(settings)}:\n{tail}"
    )


def _tail(path: Path, lines: int = 10) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop_local_server(settings: Settings, timeout: float = 30.0) -> int | None:
    """Stop the background server of this ``MLENGINE_HOME``; return its pid, or None when
    none ran. Jobs keep running; the next server adopts them.

    The server is sent SIGTERM: its workers finish the requests they hold (up to 10 s) and
    the builds they run (up to 5 s more). One still there after `timeout` seconds is killed,
    with its workers and predictor processes (its process group, when it leads one, as a
    server `start_local_server` started does); trainers run in groups of their own.

    Raises:
        Unavailable: the server did not stop.
    """
    pid: int | None = None
    with contextlib.suppress(OSError, ValueError):
        pid = int(orjson.loads(_state_file(settings).read_bytes())["pid"])
    answer = health(settings)
    if answer is not None and answer.get("home") == settings.home:
        # the server's own process: with several workers, the one answering is only a worker
        pid = int(answer.get("serverPid") or answer["pid"])
    if pid is None or not process_running(pid):
        _state_file(settings).unlink(missing_ok=True)
        return None
    os.kill(pid, signal.SIGTERM)
    if not _ended(pid, timeout):
        _kill_with_its_group(pid)
        if not _ended(pid, 5.0):
            raise Unavailable(f"The mlengine server (pid {pid}) did not stop.")
    _state_file(settings).unlink(missing_ok=True)
    return pid


def _ended(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for `pid` to end (a zombie has ended)."""
    deadline = time.monotonic() + timeout
    while process_running(pid):
        _reap(pid)
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    _reap(pid)
    return True


def _kill_with_its_group(pid: int) -> None:
    """SIGKILL `pid` with its workers: its process group when it leads one, else (a server
    started by hand, whose group may be the user's shell job) it and its children."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
            return
    for process in (*child_pids(pid), pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(process, signal.SIGKILL)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
