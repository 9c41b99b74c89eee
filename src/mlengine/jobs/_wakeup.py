"""Waking the lease-holding scheduler from another server process of the same machine.

`mlengine server run --workers N` runs N processes on one metadata database, and only the one
holding the scheduler lease runs jobs. A job created or cancelled through another process
would wait for the leader's idle poll (a second). So the leader listens on a datagram socket
named after the database, in Linux's abstract namespace (no file to clean up: it goes away with
the process), and any process of the machine sends it a byte after creating or cancelling a
job. Where nothing listens (another OS, a leader on another machine sharing a PostgreSQL
database), sending does nothing and the poll remains the way work is found.

A datagram only asks for an earlier pass of the scheduler; it carries nothing else, so a
local process sending one can do no more than that.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import sys
import threading
from collections.abc import Callable

__all__ = ["WakeupListener", "wake_leader"]

logger = logging.getLogger("mlengine.scheduler")

_RECEIVE_TIMEOUT_S = 0.5
"""How often the listening thread checks whether it was closed."""


def _address(database_url: str) -> str | None:
    """The abstract socket name for `database_url`'s scheduler, or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    digest = hashlib.sha256(database_url.encode()).hexdigest()[:32]
    return f"\0mlengine-scheduler-{digest}"


def wake_leader(database_url: str) -> bool:
    """Ask the scheduler that holds `database_url`'s lease on this machine for a pass now.

    Returns:
        True when a listener took the datagram; False when none listens here (the leader's
        poll will find the work).
    """
    address = _address(database_url)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.setblocking(False)
            sender.sendto(b"!", address)
    except OSError:  # nobody listens, or its queue is full (a pass is coming anyway)
        return False
    return True


class WakeupListener:
    """Calls `on_wake` for each datagram sent by `wake_leader` for the same database, from a
    daemon thread, while open.

    Args:
        database_url: the metadata database whose scheduler this is.
        on_wake: called (on the listener's thread) for each wake-up.
    """

    def __init__(self, database_url: str, on_wake: Callable[[], None]) -> None:
        self.database_url = database_url
        self.on_wake = on_wake
        self.wakeups = 0
        self._socket: socket.socket | None = None
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def listening(self) -> bool:
        """True while the socket is bound and its thread receives."""
        return self._socket is not None and not self._closed.is_set()

    def open(self) -> bool:
        """Bind the socket and start receiving; False when that is not possible here (not
        Linux, or another live process of this machine still listens for this database)."""
        if self.listening:
            return True
        address = _address(self.database_url)
        if address is None:
            return False
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            listener.bind(address)
        except OSError as error:
            listener.close()
            logger.info("scheduler wake-ups from other processes are off: %s", error)
            return False
        listener.settimeout(_RECEIVE_TIMEOUT_S)
        self._socket = listener
        self._closed.clear()
        self._thread = threading.Thread(
            target=self._receive, args=(listener,), name="mlengine-scheduler-wakeup", daemon=True
        )
        self._thread.start()
        return True

    def close(self) -> None:
        """Stop receiving and free the name (another scheduler may then take it)."""
        self._closed.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(2 * _RECEIVE_TIMEOUT_S + 1)
        listener, self._socket = self._socket, None
        if listener is not None:
            listener.close()

    def _receive(self, listener: socket.socket) -> None:
        while not self._closed.is_set():
            try:
                listener.recv(16)
            except TimeoutError:
                continue
            except OSError:  # closed under us
                return
            self.wakeups += 1
            try:
                self.on_wake()
            except Exception:  # the scheduler's wake is an Event.set: never expected
                logger.exception("scheduler wake-up failed")
