"""Process checks: a zombie has ended (`process_running`), children are found by parent pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from mlengine._processes import child_pids, process_exists, process_running


def test_a_zombie_exists_but_is_not_running() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 60
        while process_running(process.pid):  # not reaped: a zombie once it ends
            assert time.monotonic() < deadline, "the child never ended"
            time.sleep(0.05)
        assert process_exists(process.pid)
    finally:
        process.wait()
    assert not process_exists(process.pid) and not process_running(process.pid)


def test_child_pids_finds_the_children_of_a_process() -> None:
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', " \
           "'import time; time.sleep(60)']); time.sleep(60)"  # fmt: skip
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while not child_pids(parent.pid):
            assert time.monotonic() < deadline, "the grandchild never started"
            time.sleep(0.05)
        (child,) = child_pids(parent.pid)
        assert process_running(child) and child_pids(child) == []
        assert parent.pid in child_pids(os.getpid())
        os.kill(child, signal.SIGKILL)
    finally:
        parent.kill()
        parent.wait()
