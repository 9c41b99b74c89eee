"""LoadedVersions: one load per key however many ask, LRU at capacity, failed loads, draining."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Hashable, Iterator, Mapping
from typing import Any

import pytest

from mlengine.errors import InvalidArgument, NotFound, Unavailable
from mlengine.prediction._loaded import LoadedVersion, LoadedVersions

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakePredictor:
    """AI Platform's predictor shape: ``predict(instances, **kwargs)`` and ``close()``."""

    def __init__(self, key: Hashable, events: list[str]) -> None:
        self.key = key
        self.events = events
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.calls: list[tuple[list[Any], dict[str, Any]]] = []

    def predict(self, instances: list[Any], **kwargs: Any) -> list[Any]:
        self.calls.append((list(instances), kwargs))
        self.entered.set()
        assert self.gate.wait(60), "the test never opened the gate"
        time.sleep(0.001)
        suffix = "!" if kwargs.get("shout") else ""
        return [f"{self.key}:{instance}{suffix}" for instance in instances]

    def close(self) -> None:
        self.events.append(f"close {self.key}")

    def hold(self) -> None:
        self.entered.clear()
        self.gate.clear()


class Loader:
    """Counts loads per key; keys in `failing` raise NotFound; `gates` hold a key's load."""

    def __init__(self) -> None:
        self.loads: dict[Hashable, int] = {}
        self.events: list[str] = []
        self.predictors: dict[Hashable, FakePredictor] = {}
        self.failing: set[Hashable] = set()
        self.gates: dict[Hashable, threading.Event] = {}
        self.started: dict[Hashable, threading.Event] = {}
        self.lock = threading.Lock()

    def __call__(self, key: Hashable) -> FakePredictor:
        with self.lock:
            self.loads[key] = self.loads.get(key, 0) + 1
            started = self.started.setdefault(key, threading.Event())
        started.set()
        missing = key in self.failing  # as the registry answers when the load starts
        gate = self.gates.get(key)
        if gate is not None:
            assert gate.wait(60), "the test never opened the load gate"
        if missing:
            raise NotFound(f"Version {key} not found.")
        predictor = FakePredictor(key, self.events)
        self.predictors[key] = predictor
        return predictor

    def hold(self, key: Hashable) -> threading.Event:
        self.gates[key] = threading.Event()
        return self.gates[key]

    async def wait_started(self, key: Hashable) -> None:
        event = self.started.setdefault(key, threading.Event())
        assert await asyncio.to_thread(event.wait, 60)


@pytest.fixture
def loader() -> Iterator[Loader]:
    fake = Loader()
    yield fake
    for gate in fake.gates.values():
        gate.set()
    for predictor in fake.predictors.values():
        predictor.gate.set()


async def eventually(condition: Any, what: str) -> None:
    for _ in range(20_000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"never happened: {what}")


async def test_concurrent_gets_of_one_key_load_it_once(loader: Loader) -> None:
    versions = LoadedVersions(loader)
    gate = loader.hold("a")
    getters = [asyncio.create_task(versions.get("a")) for _ in range(20)]
    await loader.wait_started("a")
    gate.set()
    entries = await asyncio.gather(*getters)
    assert loader.loads == {"a": 1}
    assert len({id(entry) for entry in entries}) == 1
    entry = entries[0]
    assert isinstance(entry, LoadedVersion) and entry.predictor is loader.predictors["a"]
    assert await versions.get("a") is entry  # a hit loads nothing
    assert loader.loads == {"a": 1}
    assert await entry.predict(["x", "y"]) == ["a:x", "a:y"]
    assert await entry.predict(["x"], {"shout": True}) == ["a:x!"]
    assert loader.predictors["a"].calls[-1] == (["x"], {"shout": True})
    await versions.close()


async def test_the_least_recently_used_version_is_unloaded_at_capacity(loader: Loader) -> None:
    versions = LoadedVersions(loader, capacity=2)
    a = await versions.get("a")
    b = await versions.get("b")
    await versions.get("a")  # a is now more recent than b
    predictor_b = loader.predictors["b"]
    predictor_b.hold()
    in_flight = asyncio.create_task(b.predict(["x"]))
    await asyncio.to_thread(predictor_b.entered.wait, 60)

    await versions.get("c")
    assert versions.loaded_keys() == ["a", "c"]
    assert b.closed and not a.closed
    await asyncio.sleep(0.01)
    assert "close b" not in loader.events  # still answering its in-flight request
    predictor_b.gate.set()
    assert await in_flight == ["b:x"]
    await eventually(lambda: "close b" in loader.events, "b closed after draining")

    again = await versions.get("b")  # an evicted version loads again on demand
    assert again is not b and loader.loads["b"] == 2
    assert versions.loaded_keys() == ["c", "b"]
    await versions.close()
    assert sorted(loader.events) == ["close a", "close b", "close b", "close c"]


async def test_a_failed_load_raises_to_every_waiter_is_not_cached_and_spares_others(
    loader: Loader,
) -> None:
    versions = LoadedVersions(loader)
    good = await versions.get("good")
    loader.failing.add("bad")
    gate = loader.hold("bad")
    waiters = [asyncio.create_task(versions.get("bad")) for _ in range(5)]
    await loader.wait_started("bad")
    # while "bad" is loading, a loaded version answers as usual
    assert await (await versions.get("good")).predict(["x"]) == ["good:x"]
    gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(result, NotFound) for result in results)
    assert loader.loads["bad"] == 1
    assert versions.loaded_keys() == ["good"]

    loader.failing.discard("bad")
    fixed = await versions.get("bad")  # the next get tries again
    assert loader.loads["bad"] == 2
    assert await fixed.predict(["y"]) == ["bad:y"]
    assert await good.predict(["z"]) == ["good:z"]
    await versions.close()


async def test_evict_finishes_in_flight_requests_then_closes_the_predictor(
    loader: Loader,
) -> None:
    versions = LoadedVersions(loader)
    entry = await versions.get(("p", "m", "v1"))
    predictor = loader.predictors[("p", "m", "v1")]
    predictor.hold()
    first = asyncio.create_task(entry.predict(["x"]))
    await asyncio.to_thread(predictor.entered.wait, 60)
    second = asyncio.create_task(entry.predict(["y"]))  # queued behind the first
    await eventually(lambda: entry.batcher.queued_instances == 1, "second request queued")

    evicting = asyncio.create_task(versions.evict(("p", "m", "v1")))
    await eventually(lambda: entry.closed, "eviction started")
    assert versions.loaded_keys() == []
    assert not evicting.done() and loader.events == []
    with pytest.raises(Unavailable):
        await entry.predict(["too late"])
    predictor.gate.set()
    await evicting
    assert (first.result(), second.result()) == (["('p', 'm', 'v1'):x"], ["('p', 'm', 'v1'):y"])
    assert loader.events == ["close ('p', 'm', 'v1')"]
    assert entry.batcher.name == "p/m/v1"

    await versions.evict(("p", "m", "v1"))  # not loaded: nothing to do
    await versions.close()


async def test_evict_during_a_load_unloads_what_was_loaded(loader: Loader) -> None:
    versions = LoadedVersions(loader)
    gate = loader.hold("a")

    async def request() -> list[Any]:
        entry = await versions.get("a")
        return await entry.predict(["x"])

    in_flight = asyncio.create_task(request())
    await loader.wait_started("a")
    evicting = asyncio.create_task(versions.evict("a"))
    loader.failing.add("a")  # deleted meanwhile: a reload fails
    gate.set()
    await evicting
    assert versions.loaded_keys() == []
    assert loader.events == ["close a"]
    try:  # answered before the unload, or refused as deleted; never stuck, never Unavailable
        assert await in_flight == ["a:x"]
    except NotFound:
        assert loader.loads["a"] == 2
    await versions.close()


async def test_a_reload_answers_with_the_old_entry_until_the_new_one_replaces_it(
    loader: Loader,
) -> None:
    versions = LoadedVersions(loader)
    old = await versions.get("a")
    old_predictor = loader.predictors["a"]
    loader.started["a"].clear()
    gate = loader.hold("a")

    reloading = versions.reload("a")
    assert versions.reload("a") is reloading  # one reload at a time
    await loader.wait_started("a")
    assert await versions.get("a") is old  # answering meanwhile, without waiting
    old_predictor.hold()
    in_flight = asyncio.create_task(old.predict(["y"]))
    await asyncio.to_thread(old_predictor.entered.wait, 60)
    gate.set()
    new = await reloading

    assert new is not old and new.predictor is loader.predictors["a"] is not old_predictor
    assert await versions.get("a") is new
    assert versions.loaded_keys() == ["a"]
    assert not in_flight.done() and loader.events == []  # the old one drains first
    old_predictor.gate.set()
    assert await in_flight == ["a:y"]
    await eventually(lambda: loader.events == ["close a"], "the old predictor closed")
    assert loader.loads == {"a": 2}

    loader.failing.add("a")  # a reload that fails leaves the loaded entry
    with pytest.raises(NotFound):
        await versions.reload("a")
    assert await versions.get("a") is new and not new.closed
    await versions.close()
    with pytest.raises(Unavailable):
        versions.reload("a")


async def test_batcher_counters_of_a_key_never_go_back(loader: Loader) -> None:
    """Evictions, reloads and draining batchers add to a key's counters (Prometheus reads
    them as counters: a drop would read as a restart)."""
    versions = LoadedVersions(loader, capacity=1)
    first = await versions.get("a")
    predictor = loader.predictors["a"]
    predictor.hold()  # before any call: the first call runs on a thread, not on the loop
    in_flight = asyncio.create_task(first.predict(["z"]))
    await asyncio.to_thread(predictor.entered.wait, 60)
    await versions.get("b")  # evicts a while its request runs: still counted
    assert versions.batcher_stats()["a"].requests == 1
    predictor.gate.set()
    await in_flight
    await eventually(lambda: "close a" in loader.events, "a unloaded")
    assert versions.batcher_stats()["a"].requests == 1

    again = await versions.get("a")  # loaded again: it adds to what the first one counted
    for _ in range(3):
        await again.predict(["x", "y"])
    reloaded = await versions.reload("a")
    await reloaded.predict(["v"])
    totals = versions.batcher_stats()
    assert (totals["a"].requests, totals["a"].instances) == (5, 8)
    assert totals["b"].requests == 0 and versions.loaded_keys() == ["a"]
    await versions.close()
    assert versions.batcher_stats()["a"].requests == 5


async def test_unloading_stops_waiting_for_a_request_that_never_ends(loader: Loader) -> None:
    """After `drain_timeout_s` the predictor is closed under the request (an isolated worker
    is stopped, failing it) and the unload goes on: a hung predict cannot hold a delete."""
    versions = LoadedVersions(loader, drain_timeout_s=0.2)
    entry = await versions.get("a")
    predictor = loader.predictors["a"]
    predictor.hold()

    def close() -> None:  # as closing a worker does: the call it held ends
        loader.events.append("close a")
        predictor.gate.set()

    predictor.close = close  # type: ignore[method-assign]
    in_flight = asyncio.create_task(entry.predict(["x"]))
    await asyncio.to_thread(predictor.entered.wait, 60)
    await versions.evict("a")
    assert loader.events == ["close a"] and versions.loaded_keys() == []
    assert await in_flight == ["a:x"]
    await versions.close()
    assert loader.events == ["close a"]  # closed once


async def test_batcher_options_come_per_key(loader: Loader) -> None:
    seen: list[Hashable] = []

    def options(key: Hashable) -> Mapping[str, Any]:
        seen.append(key)
        return {"max_batch_size": 3, "max_wait_s": 0.0}

    versions = LoadedVersions(loader, batcher_options=options)
    entry = await versions.get("a")
    assert seen == ["a"] and entry.batcher.max_batch_size == 3
    assert await entry.predict(["1", "2", "3", "4"]) == ["a:1", "a:2", "a:3", "a:4"]
    assert [len(call[0]) for call in loader.predictors["a"].calls] == [3, 1]
    await versions.close()


async def test_batcher_options_the_batcher_refuses_fail_the_load_not_hang_it(
    loader: Loader,
) -> None:
    """A load whose batcher cannot be made raises to every waiter (it used to leave them
    waiting forever), closes the predictor it loaded, is not remembered, spares others."""
    sizes = {"bad": 0, "good": 2}
    versions = LoadedVersions(loader, batcher_options=lambda key: {"max_batch_size": sizes[key]})
    waiters = [asyncio.ensure_future(versions.get("bad")) for _ in range(3)]
    done, pending = await asyncio.wait(waiters, timeout=30)
    assert not pending, "a waiter was left hanging"
    for waiter in done:
        with pytest.raises(InvalidArgument, match="max_batch_size"):
            waiter.result()
    assert loader.loads["bad"] == 1
    await eventually(lambda: loader.events == ["close bad"], "the loaded predictor closed")
    assert versions.loaded_keys() == []
    assert await (await versions.get("good")).predict(["1"]) == ["good:1"]
    sizes["bad"] = 4
    assert await (await versions.get("bad")).predict(["1"]) == ["bad:1"]  # tried again
    await versions.close()


async def test_close_unloads_everything_and_refuses_new_loads(loader: Loader) -> None:
    versions = LoadedVersions(loader)
    for key in "abc":
        await versions.get(key)
    await versions.close()
    assert sorted(loader.events) == ["close a", "close b", "close c"]
    assert versions.loaded_keys() == []
    with pytest.raises(Unavailable):
        await versions.get("a")


def test_capacity_must_be_positive(loader: Loader) -> None:
    with pytest.raises(InvalidArgument, match="The 'capacity' field of LoadedVersions"):
        LoadedVersions(loader, capacity=0)
