"""Waking the lease-holding scheduler from another process: real abstract-namespace sockets,
real subprocesses."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid

import pytest

from mlengine.jobs._wakeup import WakeupListener, wake_leader


def _url() -> str:
    return f"sqlite:////tmp/wakeup-{uuid.uuid4().hex}.db"


def _eventually(event: threading.Event, what: str) -> None:
    assert event.wait(10), f"never happened: {what}"


def test_a_listener_is_woken_by_another_process_for_its_database_only() -> None:
    url, other_url = _url(), _url()
    woken = threading.Event()
    listener = WakeupListener(url, woken.set)
    assert listener.open() and listener.listening
    try:
        assert not wake_leader(other_url)  # nobody listens for that database
        sender = subprocess.run(
            [sys.executable, "-c", f"from mlengine.jobs._wakeup import wake_leader as w; "
             f"raise SystemExit(0 if w({url!r}) else 3)"],
            timeout=60,
        )  # fmt: skip
        assert sender.returncode == 0
        _eventually(woken, "woken by another process")
        assert listener.wakeups == 1
    finally:
        listener.close()
    assert not listener.listening
    assert not wake_leader(url)  # closed: the name is free again


def test_one_listener_per_database_at_a_time() -> None:
    url = _url()
    first = WakeupListener(url, lambda: None)
    second = WakeupListener(url, lambda: None)
    assert first.open()
    try:
        assert not second.open()  # the name is taken while the first one lives
    finally:
        first.close()
    assert second.open()  # and free once it is closed
    woken = threading.Event()
    second.on_wake = woken.set
    assert wake_leader(url)
    _eventually(woken, "the second listener woken")
    second.close()


def test_a_failing_callback_does_not_stop_the_listener() -> None:
    url = _url()
    calls: list[float] = []
    woken = threading.Event()

    def on_wake() -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("boom")
        woken.set()

    listener = WakeupListener(url, on_wake)
    assert listener.open()
    try:
        assert wake_leader(url)
        for _ in range(200):
            if calls:
                break
            time.sleep(0.01)
        assert wake_leader(url)
        _eventually(woken, "the second wake-up after a failing one")
        assert len(calls) == 2
    finally:
        listener.close()


def test_off_linux_nothing_listens_and_waking_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    """Abstract socket names are Linux's: elsewhere the leader's poll finds the work."""
    monkeypatch.setattr(sys, "platform", "darwin")
    url = _url()
    listener = WakeupListener(url, lambda: None)
    assert not listener.open() and not listener.listening
    assert not wake_leader(url)
    listener.close()  # harmless when never opened
