"""Run one trainer replica, log its output as JSON lines and record its exit code.

Usage: ``python _supervisor.py --log-file L --exit-file E --cwd D -- COMMAND...``

Standard library only, run by file path (the local runner starts it with ``python -S -E``), so
it starts fast and does not depend on the environment it supervises. It:

* starts COMMAND in D (stdin from /dev/null, stdout and stderr as pipes) and writes
  ``{"supervisor": <its pid>, "child": <trainer pid>}`` to ``E.pids``;
* appends every output line to L as ``{"time": <epoch float>, "stream": "stdout"|"stderr",
  "message": <line without its newline>}``, flushed line by line;
* writes the trainer's exit code to E (via ``E.tmp`` and ``os.replace``) when it exits: -N when
  a signal N killed it, 127 when it could not be started;
* survives SIGTERM, SIGINT and SIGHUP (with a handler, not SIG_IGN, so that the trainer gets
  default dispositions): the runner signals the whole process group, and the supervisor must
  outlive the trainer to record how it ended. The runner starts it with these signals blocked
  and it unblocks them once its handler is in place; one that arrives before the trainer is
  started is sent to the trainer right after;
* is the child subreaper of the run (Linux): descendants orphaned by the trainer become its
  children, and it exits only once they are all gone and reaped, rather than leave zombies to
  an init process that may not reap them.

It survives the process that started it: it is a session leader of its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

try:  # json's C string encoder without importing json (and re): startup time matters here
    from _json import encode_basestring as _json_string
except ImportError:  # pragma: no cover - other Pythons
    from json import dumps as _json_string

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any

_PR_SET_CHILD_SUBREAPER = 36
_DRAIN_S = 1.0
"""How long to wait for the output of a trainer that has exited (descendants may hold its
pipes open) before its exit code is recorded."""
_MAX_LINE = 1 << 16


def _write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


_early_signals: list[int] = []
_spawned = False
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _on_signal(signum: int, frame: Any) -> None:
    """Survive: the trainer, in the same process group, gets the signal too. A signal that
    comes before the trainer exists is remembered and handed on once it does."""
    if not _spawned:
        _early_signals.append(signum)


def _become_subreaper() -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: orphans go to init as usual
        pass


class _Log:
    def __init__(self, path: str) -> None:
        self._file = open(path, "ab")  # noqa: SIM115 - lives as long as the process
        self._lock = threading.Lock()

    def write(self, stream: str, message: str) -> None:
        message = _json_string(message)
        with self._lock:  # the clock is read under the lock: times never go back in a file
            line = f'{{"time": {time.time()!r}, "stream": "{stream}", "message": {message}}}\n'
            self._file.write(line.encode("utf-8", "replace"))
            self._file.flush()

    def pump(self, pipe: IO[bytes], stream: str) -> None:
        for raw in iter(lambda: pipe.readline(_MAX_LINE), b""):
            text = raw.decode("utf-8", "replace")
            if text.endswith("\n"):
                text = text[:-1]
                if text.endswith("\r"):
                    text = text[:-1]
            self.write(stream, text)
        pipe.close()


def _parse(argv: list[str]) -> tuple[str, str, str, list[str]]:
    options: dict[str, str] = {}
    i = 0
    while i < len(argv) and argv[i] != "--":
        options[argv[i]] = argv[i + 1]
        i += 2
    command = argv[i + 1 :]
    if not command or {"--log-file", "--exit-file", "--cwd"} - options.keys():
        raise SystemExit("usage: _supervisor.py --log-file L --exit-file E --cwd D -- COMMAND...")
    return options["--log-file"], options["--exit-file"], options["--cwd"], command


def _reap_others() -> None:
    """Reap the adopted orphans that have exited, without blocking."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main(argv: list[str]) -> int:
    """Supervise one trainer process; returns 0 once its exit code is recorded."""
    log_file, exit_file, cwd, command = _parse(argv)
    global _spawned
    for signum in _STOP_SIGNALS:
        signal.signal(signum, _on_signal)
    # The runner starts us with these signals blocked, so none is lost before the handlers.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    _become_subreaper()
    log = _Log(log_file)
    try:
        child = subprocess.Popen(
            command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
    except OSError as e:
        log.write("stderr", f"mlengine: cannot start {command[0]!r} in {cwd!r}: {e}")
        _write_atomic(exit_file, "127\n")
        return 0
    _spawned = True
    if _early_signals:
        os.kill(child.pid, _early_signals[0])
    _write_atomic(exit_file + ".pids", f'{{"supervisor": {os.getpid()}, "child": {child.pid}}}')
    assert child.stdout is not None and child.stderr is not None
    pumps = [
        threading.Thread(target=log.pump, args=(child.stdout, "stdout"), daemon=True),
        threading.Thread(target=log.pump, args=(child.stderr, "stderr"), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    code = None
    while code is None:
        # os.wait (not Popen.wait) also reaps the orphans this subreaper adopts.
        pid, status = os.wait()
        if pid == child.pid:
            code = os.waitstatus_to_exitcode(status)
    child.returncode = code
    deadline = time.monotonic() + _DRAIN_S
    for pump in pumps:
        pump.join(max(0.0, deadline - time.monotonic()))
    _write_atomic(exit_file, f"{code}\n")
    while any(pump.is_alive() for pump in pumps):
        _reap_others()
        for pump in pumps:
            pump.join(0.1)
    # Stay until every adopted orphan is reaped (a `stop` kills them); leaving earlier would
    # hand them to an init that may never reap them.
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
