"""The serving process's garbage-collector settings: frozen long-lived heap, rarer young
collections while a server runs, and everything put back afterwards."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from mlengine.prediction._heap import SERVING_YOUNG_THRESHOLD, serving_collections, settle_heap


@pytest.fixture(autouse=True)
def thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield gc.get_threshold()
    gc.set_threshold(*before)


def test_serving_raises_the_young_threshold_and_puts_it_back() -> None:
    with serving_collections():
        assert gc.get_threshold() == (SERVING_YOUNG_THRESHOLD, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)


def test_overlapping_servers_put_the_thresholds_back_when_the_last_one_stops() -> None:
    first, second = serving_collections(), serving_collections()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first server stops while the second still serves
    assert gc.get_threshold()[0] == SERVING_YOUNG_THRESHOLD
    second.__exit__(None, None, None)
    assert gc.get_threshold() == (700, 10, 10)


def test_a_higher_threshold_set_by_the_user_is_kept() -> None:
    gc.set_threshold(SERVING_YOUNG_THRESHOLD * 2, 5, 5)
    with serving_collections():
        assert gc.get_threshold() == (SERVING_YOUNG_THRESHOLD * 2, 5, 5)
    assert gc.get_threshold() == (SERVING_YOUNG_THRESHOLD * 2, 5, 5)


def test_the_thresholds_come_back_when_the_server_fails() -> None:
    with pytest.raises(RuntimeError), serving_collections():
        raise RuntimeError("the server stopped")
    assert gc.get_threshold() == (700, 10, 10)


def test_settle_heap_frees_cycles_and_freezes_the_survivors() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self

    survivors = [Node() for _ in range(100)]
    garbage = weakref.ref(Node())  # a cycle nothing refers to
    try:
        settle_heap()
        assert garbage() is None
        assert gc.get_freeze_count() >= len(survivors)
    finally:
        gc.unfreeze()
