"""The loaded versions of a server: a bounded LRU of predictors, each with its micro-batcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Hashable, Mapping, Sequence
from typing import Any

from mlengine.errors import Unavailable, invalid_field
from mlengine.prediction._batcher import BatcherStats, MicroBatcher

__all__ = ["LoadedVersion", "LoadedVersions"]

logger = logging.getLogger("mlengine.prediction.loaded")

_GET_ATTEMPTS = 3
DRAIN_TIMEOUT_S = 60.0
"""How long unloading a version waits for its requests by default (`LoadedVersions`)."""


class LoadedVersion:
    """One loaded version: its predictor and the batcher that feeds it.

    Attributes:
        key: the version's key in `LoadedVersions` (e.g. ``(project, model, version)``).
        predictor: what the loader returned; the batcher calls its
            ``predict(instances, **options)``.
        batcher: the version's `MicroBatcher`.
    """

    def __init__(self, key: Hashable, predictor: Any, batcher: MicroBatcher) -> None:
        self.key = key
        self.predictor = predictor
        self.batcher = batcher
        self.retired = False
        """Its batcher's counts moved to `LoadedVersions`' retired counts (it is unloaded)."""

    @property
    def closed(self) -> bool:
        """True once the version is being unloaded: it takes no new requests."""
        return self.batcher.closed

    def predict(
        self, instances: Sequence[Any], options: Mapping[str, Any] | None = None
    ) -> Coroutine[Any, Any, list[Any]]:
        """Predict `instances` through the version's batcher; see `MicroBatcher.predict`
        (its coroutine, returned as it is: one coroutine less per request).

        Raises:
            Unavailable: the version was unloaded.
            Exception: what the predictor raised on these instances.
        """
        return self.batcher.predict(instances, options)

    def __repr__(self) -> str:
        return f"LoadedVersion({self.key!r}, {type(self.predictor).__name__})"


class LoadedVersions:
    """At most `capacity` loaded versions, least recently used unloaded first.

    Used from one asyncio event loop. `get` returns a loaded version at once, and loads a
    missing one on a worker thread, once however many requests ask for it meanwhile; loading
    one version never holds up requests for others. A load that fails raises to everyone who
    waited for it and is not remembered: the next `get` tries again. Unloading a version (when
    it is evicted, deleted, or at `close`) lets its batcher answer every request it already
    took, then calls the predictor's ``close()`` if it has one.

    Args:
        loader: ``loader(key) -> predictor``, synchronous (it runs on a worker thread); the
            predictor has ``predict(instances, **options) -> outputs`` and may have
            ``close()``.
        capacity: the most versions kept loaded.
        batcher_options: ``batcher_options(key) -> keyword arguments of MicroBatcher`` (e.g.
            ``max_batch_size``, ``max_wait_s``), called on the worker thread before `loader`.
        drain_timeout_s: how long unloading waits for the requests a version took; then its
            predictor is closed under them (a worker process is stopped: they fail) and the
            unload goes on, so that a predict that never returns cannot hold up a delete or
            a shutdown for good.

    Raises:
        InvalidArgument: `capacity` is not an integer >= 1.
    """

    def __init__(
        self,
        loader: Callable[[Hashable], Any],
        *,
        capacity: int = 8,
        batcher_options: Callable[[Hashable], Mapping[str, Any]] | None = None,
        drain_timeout_s: float = DRAIN_TIMEOUT_S,
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise invalid_field("capacity", "LoadedVersions", "an integer >= 1", capacity)
        self.loader = loader
        self.capacity = capacity
        self.batcher_options = batcher_options
        self.drain_timeout_s = drain_timeout_s
        self._entries: OrderedDict[Hashable, LoadedVersion] = OrderedDict()
        self._loading: dict[Hashable, asyncio.Future[LoadedVersion]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._unloading: dict[asyncio.Task[None], LoadedVersion] = {}
        self._draining: set[LoadedVersion] = set()  # batchers finishing their requests
        self._retired: dict[Hashable, BatcherStats] = {}  # of the batchers unloaded, per key
        self._closed = False

    def loaded_keys(self) -> list[Hashable]:
        """The keys of the loaded versions, least recently used first."""
        return list(self._entries)

    def batcher_stats(self) -> dict[Hashable, BatcherStats]:
        """Per version key, the counters of all its batchers since this object was made: the
        loaded one's plus those of the batchers of the key unloaded before (evicted, reloaded
        after an update, deleted), so that they never go back."""
        totals = dict(self._retired)
        live = {*self._entries.values(), *self._unloading.values(), *self._draining}
        for entry in (entry for entry in live if not entry.retired):  # counted once
            totals[entry.key] = totals.get(entry.key, BatcherStats()) + entry.batcher.stats
        return totals

    def peek(self, key: Hashable) -> LoadedVersion | None:
        """The loaded version `key`, or None, without making it the most recently used."""
        return self._entries.get(key)

    def loaded(self, key: Hashable) -> LoadedVersion | None:
        """The loaded version `key` (now the most recently used), or None if it is not loaded:
        `get` without a coroutine, for the hot path of a request."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    async def get(self, key: Hashable) -> LoadedVersion:
        """The loaded version `key`, loaded first if it is not.

        A version that is loaded comes back without yielding to the event loop, so a caller
        that calls ``predict`` on it right away is always answered, even if the version is
        evicted next.

        Args:
            key: the version's key.

        Returns:
            The loaded version.

        Raises:
            Unavailable: `close` was called, or the version kept being unloaded while it loaded.
            Exception: what `loader` or `batcher_options` raised (e.g. `NotFound`).
        """
        for _ in range(_GET_ATTEMPTS):
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry
            if self._closed:
                raise Unavailable("The server is shutting down and loads no more models.")
            pending = self._loading.get(key)
            if pending is None:
                pending = self._start_loading(key)
            entry = await asyncio.shield(pending)
            if not entry.closed:
                return entry
        raise Unavailable(f"The model version {key} was unloaded while it loaded; try again.")

    def reload(self, key: Hashable) -> asyncio.Future[LoadedVersion]:
        """Load `key` again while its loaded entry goes on answering; when the new one is
        ready it takes the old one's place, and the old one finishes the requests it took and
        closes. A reload (or load) of `key` already in progress is shared, not repeated. If the
        new load fails, the old entry stays.

        Returns:
            The load's future (the new entry, or what the loader raised); callers may leave
            it: a failure nobody awaits is not logged here.

        Raises:
            Unavailable: `close` was called.
        """
        if self._closed:
            raise Unavailable("The server is shutting down and loads no more models.")
        pending = self._loading.get(key)
        return pending if pending is not None else self._start_loading(key)

    async def evict(self, key: Hashable) -> None:
        """Unload `key`: finish the requests it took, then close its predictor.

        A load of `key` in progress is waited for first, so that it is unloaded too. Evicting
        a key that is not loaded does nothing.

        Args:
            key: the version's key.
        """
        pending = self._loading.get(key)
        if pending is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(pending)
        entry = self._entries.pop(key, None)
        if entry is not None:
            await self._unload(entry)
        draining = [task for task, other in self._unloading.items() if other.key == key]
        if draining:
            await asyncio.gather(*(asyncio.shield(task) for task in draining))

    async def close(self) -> None:
        """Unload every version, after the loads in progress; `get` refuses from then on."""
        self._closed = True
        while self._loading:
            await asyncio.gather(
                *(asyncio.shield(future) for future in list(self._loading.values())),
                return_exceptions=True,
            )
        entries = list(self._entries.values())
        self._entries.clear()
        await asyncio.gather(*(self._unload(entry) for entry in entries))
        if self._unloading:
            await asyncio.gather(*(asyncio.shield(task) for task in list(self._unloading)))

    # -- loading and unloading -------------------------------------------------------------

    def _start_loading(self, key: Hashable) -> asyncio.Future[LoadedVersion]:
        loop = asyncio.get_running_loop()
        pending: asyncio.Future[LoadedVersion] = loop.create_future()
        self._loading[key] = pending
        task = loop.create_task(self._load(key, pending), name=f"load-{key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return pending

    async def _load(self, key: Hashable, pending: asyncio.Future[LoadedVersion]) -> None:
        try:
            predictor, options = await asyncio.to_thread(self._load_blocking, key)
        except asyncio.CancelledError:
            self._loading.pop(key, None)
            pending.cancel()
            raise
        except Exception as exc:
            self._fail_loading(key, pending, exc)
            return

        def predict(instances: list[Any], options: Mapping[str, Any]) -> Any:
            return predictor.predict(instances, **options)

        try:
            batcher = MicroBatcher(predict, name=_name(key), **options)
        except Exception as exc:  # options it refuses: the load fails, the predictor closes
            self._fail_loading(key, pending, exc)
            await self._close_predictor(predictor, key)
            return
        entry = LoadedVersion(key, predictor, batcher)
        self._loading.pop(key, None)
        if self._closed:
            self._unload_in_background(entry)
        else:
            replaced = self._entries.pop(key, None)  # a reload's old entry
            self._entries[key] = entry
            if replaced is not None:
                self._unload_in_background(replaced)
            while len(self._entries) > self.capacity:
                _, evicted = self._entries.popitem(last=False)
                logger.info("unloading %s to make room for %s", _name(evicted.key), _name(key))
                self._unload_in_background(evicted)
        pending.set_result(entry)

    def _fail_loading(
        self, key: Hashable, pending: asyncio.Future[LoadedVersion], exc: Exception
    ) -> None:
        self._loading.pop(key, None)
        pending.set_exception(exc)
        pending.exception()  # retrieved: with no waiter left, a failed load is not logged

    def _load_blocking(self, key: Hashable) -> tuple[Any, dict[str, Any]]:
        options = dict(self.batcher_options(key)) if self.batcher_options is not None else {}
        return self.loader(key), options

    def _unload_in_background(self, entry: LoadedVersion) -> None:
        task = asyncio.get_running_loop().create_task(self._unload(entry))
        self._unloading[task] = entry
        task.add_done_callback(self._forget_unloading)

    def _forget_unloading(self, task: asyncio.Task[None]) -> None:
        self._unloading.pop(task, None)

    async def _unload(self, entry: LoadedVersion) -> None:
        self._draining.add(entry)
        closing = asyncio.ensure_future(entry.batcher.close())
        try:
            done, _ = await asyncio.wait({closing}, timeout=self.drain_timeout_s)
            if not done:
                logger.warning(
                    "%s still has requests running after %g s: closing its predictor under them",
                    _name(entry.key), self.drain_timeout_s,
                )  # fmt: skip
                await self._close_predictor(entry.predictor, entry.key)
                await asyncio.wait({closing}, timeout=self.drain_timeout_s)
                return
        finally:  # its counts are final (or as final as they get): they move to the key's
            self._draining.discard(entry)  # retired counts at once
            self._retired[entry.key] = (
                self._retired.get(entry.key, BatcherStats()) + entry.batcher.stats
            )
            entry.retired = True  # its task may still be listed as unloading a while
        await self._close_predictor(entry.predictor, entry.key)

    async def _close_predictor(self, predictor: Any, key: Hashable) -> None:
        close = getattr(predictor, "close", None)
        if callable(close):
            try:
                await asyncio.to_thread(close)
            except Exception:
                logger.exception("closing the predictor of %s failed", _name(key))


def _name(key: Hashable) -> str:
    """``p/m/v1`` for a tuple key, else ``str(key)``."""
    if isinstance(key, tuple):
        return "/".join(str(part) for part in key)
    return str(key)
