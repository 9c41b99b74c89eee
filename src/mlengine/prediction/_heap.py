"""Keeps the garbage collector off the long-lived objects of a serving process.

A server holds a large, long-lived heap (the libraries, the loaded models: a 100-tree forest
alone is thousands of objects) and allocates many short-lived ones per request. CPython's
oldest-generation collections walk the whole heap every time, which showed up as a third of
the CPU per request and as latency spikes under load (measured with 32-instance requests on
one core). Moving what survives start-up and model loading into the permanent generation
(`gc.freeze`) keeps those collections down to the objects made since.

Young collections are the other cost: CPython starts one whenever 700 more container objects
were made than freed, and a server under load makes that many in one batch of concurrent
requests (each holds a task, its coroutines, a future, its parsed body until it is answered),
so it walked every in-flight request about once a batch (~4% of the instructions per request,
measured over HTTP at 64 concurrent 1-instance requests). `serving_collections` raises that
threshold while a server runs: garbage without cycles is freed at once either way, and the
rarer collections still find cyclic garbage.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["SERVING_YOUNG_THRESHOLD", "serving_collections", "settle_heap"]

SERVING_YOUNG_THRESHOLD = 20_000
"""Net new container objects that start a young collection while a server runs."""

_lock = threading.Lock()
_servers = 0
_threshold_before: tuple[int, int, int] | None = None


def settle_heap() -> None:
    """Collect everything collectable (frozen objects included, so that models unloaded since
    the last call are freed), then freeze what is left.

    Call it after start-up and after loading a model: it costs a full collection (tens of
    milliseconds for a large heap)."""
    with _lock:
        gc.unfreeze()
        gc.collect()
        gc.freeze()


@contextlib.contextmanager
def serving_collections() -> Iterator[None]:
    """Raise the young-generation threshold to `SERVING_YOUNG_THRESHOLD` (never lower it)
    while the block runs; the thresholds before the first of overlapping blocks come back when
    the last one ends (several apps may serve in one process, in tests say)."""
    global _servers, _threshold_before
    with _lock:
        if _servers == 0:
            _threshold_before = gc.get_threshold()
            young, *older = _threshold_before
            gc.set_threshold(max(young, SERVING_YOUNG_THRESHOLD), *older)
        _servers += 1
    try:
        yield
    finally:
        with _lock:
            _servers -= 1
            if _servers == 0 and _threshold_before is not None:
                gc.set_threshold(*_threshold_before)
                _threshold_before = None
