"""Micro-batching: concurrent predict requests for one loaded version become batched model calls.

One predict loop per batcher takes everything queued (up to `max_batch_size` instances) the
moment the model is free, and the requests that arrive during a model call form the next batch.
An idle batcher adds no wait: a lone request is predicted at once. A busy one batches as deep as
the load allows. `max_wait_s` only ever trades latency for a larger batch, when asked for.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import dataclasses
import functools
import itertools
import logging
import re
import sys
import time
import types
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import orjson

from mlengine.errors import OperationFailed, Unavailable, invalid_field

__all__ = ["BatcherStats", "MicroBatcher"]

logger = logging.getLogger("mlengine.prediction.batcher")

_T = TypeVar("_T")

PredictFunction = Callable[[list[Any], Mapping[str, Any]], Sequence[Any]]
"""``predict(instances, options) -> outputs``: one output per instance, in order."""

_INSTANCE = re.compile(r"\b(instance )(\d+)", re.IGNORECASE)

WAITS_BEFORE_THREAD = 3
"""Calls in a row on the event loop that mostly waited, before a model goes to its thread."""

ARRIVAL_TURNS = 2
"""Event-loop turns a batch is held open under concurrent load (see `MicroBatcher`): one for
the server to read the requests already at its sockets, one for their tasks to queue them."""


@dataclasses.dataclass(frozen=True)
class BatcherStats:
    """Counters of one `MicroBatcher` since it was made.

    Attributes:
        requests: `predict` calls accepted.
        batches: calls of the model, re-runs that isolate a failing request included.
        instances: instances in the accepted requests.
        errors: requests that ended with an error (cancelled callers are not counted).
    """

    requests: int = 0
    batches: int = 0
    instances: int = 0
    errors: int = 0

    @property
    def mean_batch_size(self) -> float:
        """Instances per model call (0.0 before the first call)."""
        return self.instances / self.batches if self.batches else 0.0

    def __add__(self, other: BatcherStats) -> BatcherStats:
        """The counters of two batchers together."""
        return BatcherStats(
            self.requests + other.requests,
            self.batches + other.batches,
            self.instances + other.instances,
            self.errors + other.errors,
        )


class _Chunk:
    """Up to `max_batch_size` consecutive instances of one request, waiting for the model."""

    __slots__ = (
        "enqueued_at",
        "future",
        "instances",
        "key",
        "offset",
        "options",
        "queued",
        "siblings",
    )

    def __init__(
        self,
        instances: list[Any],
        offset: int,
        key: bytes,
        options: Mapping[str, Any],
        future: asyncio.Future[list[Any]],
        enqueued_at: float,
    ) -> None:
        self.instances = instances
        self.offset = offset  # of the first instance within its request
        self.key = key
        self.options = options
        self.future = future
        self.enqueued_at = enqueued_at
        self.queued = True
        self.siblings: Sequence[_Chunk] = ()  # every chunk of a request split in several


class MicroBatcher:
    """Merges concurrent predict requests for one loaded model into batched model calls.

    `predict` is called on an asyncio event loop; the batcher belongs to the loop that first
    uses it. The model function runs off the loop, on `executor`: by default a dedicated
    single-thread executor per batcher, so a slow version never takes threads from another.
    With that default executor, a model whose calls take less than `inline_below_s` (on
    average, as measured so far; the interpreter's thread switch interval, 5 ms, by default)
    is called on the loop itself: handing such a call to a thread and back costs more CPU than
    it saves, since the two threads share the GIL (measured on a 2-core machine: about a third
    of the server's CPU per request for a 100-tree forest). Calls are measured in CPU time, on
    whichever thread makes them. The first call, and any call after the average rises above
    the limit, runs on the thread. A model that waits rather than computes (on I/O, say) is
    sent to the thread for good once `WAITS_BEFORE_THREAD` calls in a row on the loop each
    blocked it for longer than the limit while using less than half of that time on the CPU;
    a lone slow call (the host pausing the virtual machine, say) does not move it.
    Whatever the executor, a batcher makes at most one model call at a time: models that are
    not thread-safe need nothing more.

    Under concurrent load (the last batch held more than one request), the batcher lets the
    event loop turn `ARRIVAL_TURNS` times before it takes a batch that is not full, so that the
    requests the server has already received join it: measured over HTTP at 64 concurrent
    1-instance requests on one core, batches grow from ~27 to 64 instances and the CPU per
    request falls by ~10%, since a forest's cost per call is mostly fixed. A lone client's
    requests are taken at once.

    Batches are counted in instances, not requests. Requests with different options are never
    merged into one call; the oldest waiting request always goes into the next batch, so every
    options group is served in turn. A request larger than `max_batch_size` is split into
    chunks predicted in order and reassembled.

    When a merged call raises, the batch is re-run so that only the bad request fails: the
    request named by the error's instance index (an ``instance_index`` attribute, or
    ``instance N`` in its message) is run alone and the rest together, or, with no index,
    each request alone. The error a caller gets is the model's own, raised on its instances
    alone, so an index in it counts within that request.

    Args:
        predict: ``predict(instances, options) -> outputs``, synchronous, one output per
            instance in order.
        max_batch_size: the most instances in one model call.
        max_wait_s: how long the oldest waiting request may wait for more instances before the
            model is called, while the batch is not full. 0 (the default) never waits on a
            clock (only the loop turns above).
        executor: where the model is called; the default is a dedicated single-thread
            executor, shut down by `close`. A given executor is never shut down here, and
            every call goes to it.
        name: a name for logs and thread names (the version's name).
        inline_below_s: with the default executor, model calls that take less than this on
            average run on the event loop; 0 never does. None: `sys.getswitchinterval()`.

    Raises:
        InvalidArgument: `max_batch_size` is not an integer >= 1 or `max_wait_s` is negative.
    """

    def __init__(
        self,
        predict: PredictFunction,
        *,
        max_batch_size: int = 64,
        max_wait_s: float = 0.0,
        executor: concurrent.futures.Executor | None = None,
        name: str = "",
        inline_below_s: float | None = None,
    ) -> None:
        self.predict_function = predict
        self.max_batch_size = 1
        self.max_wait_s = 0.0
        self.configure(max_batch_size=max_batch_size, max_wait_s=max_wait_s)
        self.name = name
        self._executor = executor
        self._owns_executor = executor is None
        limit = sys.getswitchinterval() if inline_below_s is None else float(inline_below_s)
        self.inline_below_s = limit if executor is None else 0.0
        self._mean_call_s: float | None = None
        self._waits_in_a_row = 0
        self._last_batch_requests = 0
        self._groups: dict[bytes, deque[_Chunk]] = {}
        self._queued: dict[bytes, int] = {}
        self._in_flight: list[_Chunk] = []
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._model_lock: asyncio.Lock | None = None
        self._requests = 0
        self._batches = 0
        self._instances = 0
        self._errors = 0

    def configure(
        self, *, max_batch_size: int | None = None, max_wait_s: float | None = None
    ) -> None:
        """Change the batch size or the wait (those given); batches taken from now on follow
        (a request queued before, split under the old size, keeps its parts' sizes).

        Raises:
            InvalidArgument: `max_batch_size` is not an integer >= 1 or `max_wait_s` is
                negative (nothing is changed).
        """
        if max_batch_size is not None and (
            isinstance(max_batch_size, bool)
            or not isinstance(max_batch_size, int)
            or max_batch_size < 1
        ):
            raise invalid_field("max_batch_size", "MicroBatcher", "an integer >= 1", max_batch_size)
        if max_wait_s is not None and not max_wait_s >= 0:
            raise invalid_field("max_wait_s", "MicroBatcher", "a number >= 0", max_wait_s)
        if max_batch_size is not None:
            self.max_batch_size = max_batch_size
        if max_wait_s is not None:
            self.max_wait_s = float(max_wait_s)

    @property
    def stats(self) -> BatcherStats:
        """The counters so far."""
        return BatcherStats(self._requests, self._batches, self._instances, self._errors)

    @property
    def closed(self) -> bool:
        """True once `close` was called: `predict` refuses new requests."""
        return self._closed

    @property
    def queued_instances(self) -> int:
        """Instances waiting for the model (the one in the model now not included)."""
        return sum(self._queued.values())

    async def predict(
        self, instances: Sequence[Any], options: Mapping[str, Any] | None = None
    ) -> list[Any]:
        """Predict `instances` in the next batch with the same options; one output each.

        The request is queued before this coroutine first yields, so a caller that holds a
        batcher which is not yet closed is always served, even if `close` is called next.

        Args:
            instances: the request's instances.
            options: keyword options for the model (e.g. ``{"probabilities": True}``); requests
                with different options are predicted in different calls.

        Returns:
            The model's outputs for `instances`, in order.

        Raises:
            Unavailable: the batcher is closed (its version is being unloaded).
            OperationFailed: the model returned a wrong number of outputs, or could not be
                called.
            Exception: whatever the model raised on this request's instances alone (e.g.
                `InvalidArgument` for a malformed instance).
        """
        if self._closed:
            raise Unavailable(
                f"The model {self.name or 'version'} is being unloaded and takes no new "
                "requests; send the request again."
            )
        loop = asyncio.get_running_loop()
        task, wakeup = self._task, self._wakeup
        if task is None or wakeup is None or self._loop is not loop or task.done():
            wakeup = self._start(loop)
        self._requests += 1
        if not instances:
            return []
        self._instances += len(instances)
        key = _options_key(options) if options else _NO_OPTIONS_KEY
        frozen_options: Mapping[str, Any] = dict(options) if options else _NO_OPTIONS
        now = loop.time()
        size = self.max_batch_size
        if len(instances) <= size:  # the common case, kept lean: one chunk
            part = instances if isinstance(instances, list) else list(instances)
            future: asyncio.Future[list[Any]] = loop.create_future()
            chunk = _Chunk(part, 0, key, frozen_options, future, now)
            queue = self._groups.get(key)
            if queue is None:
                queue = self._groups[key] = deque()
            queue.append(chunk)
            self._queued[key] = self._queued.get(key, 0) + len(part)
            wakeup.set()
            try:
                return await future
            except Exception:
                self._errors += 1
                raise
            except BaseException:  # cancelled: the caller went away
                if not future.done():
                    future.cancel()
                elif not future.cancelled():
                    future.exception()  # retrieved
                self._drop(chunk)  # if it never ran: drop its instances
                raise
        chunks: list[_Chunk] = []
        for offset in range(0, len(instances), size):
            part = list(instances[offset : offset + size])
            chunk = _Chunk(part, offset, key, frozen_options, loop.create_future(), now)
            self._groups.setdefault(key, deque()).append(chunk)
            self._queued[key] = self._queued.get(key, 0) + len(chunk.instances)
            chunks.append(chunk)
        for chunk in chunks:
            chunk.siblings = chunks
        wakeup.set()
        try:
            outputs: list[Any] = []
            for chunk in chunks:
                outputs.extend(await chunk.future)
            return outputs
        except asyncio.CancelledError:
            raise
        except Exception:
            self._errors += 1
            raise
        finally:
            for chunk in chunks:
                if not chunk.future.done():
                    chunk.future.cancel()
                elif not chunk.future.cancelled():
                    chunk.future.exception()  # retrieved: a later chunk's error is not logged
                self._drop(chunk)  # the caller went away before it ran: drop its instances

    async def run_exclusive(self, function: Callable[..., _T], *args: Any) -> _T:
        """``function(*args)`` on the model's executor, while no batch is being predicted: for
        other uses of the model (deriving its example input, say) that must not overlap a
        model call.

        Raises:
            Unavailable: the batcher is closed.
            Exception: what `function` raised.
        """
        if self._closed:
            raise Unavailable(f"The model {self.name or 'version'} is being unloaded.")
        loop = asyncio.get_running_loop()
        self._start(loop)
        assert self._model_lock is not None
        async with self._model_lock:
            return await loop.run_in_executor(self._executor, functools.partial(function, *args))

    async def close(self) -> None:
        """Stop taking requests; return once every queued and in-flight request is answered.

        Idempotent. A `predict` call after `close` raises `Unavailable`.

        Raises:
            RuntimeError: called on another event loop than the one the batcher runs on,
                while it still has work.
        """
        self._closed = True
        task = self._task
        if task is not None and not task.done():
            if self._loop is not asyncio.get_running_loop():
                raise RuntimeError(f"MicroBatcher {self.name!r} runs on another event loop")
            assert self._wakeup is not None
            self._wakeup.set()
            await asyncio.shield(task)
        self._fail_waiting("closed")
        if self._owns_executor and self._executor is not None:
            self._executor.shutdown(wait=False)

    # -- the predict loop -------------------------------------------------------------------

    def _start(self, loop: asyncio.AbstractEventLoop) -> asyncio.Event:
        """Start the predict loop on `loop` unless it runs; return its wake-up event."""
        if self._task is not None and not self._task.done():
            if self._loop is not loop:
                raise RuntimeError(f"MicroBatcher {self.name!r} runs on another event loop")
            assert self._wakeup is not None
            return self._wakeup
        if self._loop is not None and self._loop is not loop:  # the old loop is gone
            self._groups.clear()
            self._queued.clear()
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"mlengine-predict-{self.name}"
            )
        self._loop = loop
        self._model_lock = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._task = loop.create_task(self._run(self._wakeup), name=f"batcher-{self.name}")
        self._task.add_done_callback(self._on_loop_done)
        return self._wakeup

    def _on_loop_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("the predict loop of %s stopped", self.name, exc_info=task.exception())

    def _drop(self, chunk: _Chunk) -> None:
        """Take a chunk that will not be predicted out of the queued count (it stays in its
        queue, marked done, until the loop skips it). Called where its future is finished
        early, instead of a done-callback per request (a loop callback each)."""
        if chunk.queued:
            chunk.queued = False
            if chunk.key in self._queued:
                self._queued[chunk.key] -= len(chunk.instances)

    async def _run(self, wakeup: asyncio.Event) -> None:
        try:
            while True:
                key = self._oldest_group()
                if key is None:
                    if self._closed:
                        return
                    wakeup.clear()
                    await wakeup.wait()
                    continue
                if self.max_wait_s > 0:
                    await self._wait_for_more(key, wakeup)
                elif self._last_batch_requests > 1 and self._queued[key] < self.max_batch_size:
                    for _ in range(ARRIVAL_TURNS):  # let what the server received join
                        await asyncio.sleep(0)
                    key = self._oldest_group()
                    if key is None:
                        continue
                batch = self._take(key)
                if batch:
                    await self._predict_batch(batch)
        except asyncio.CancelledError:
            self._fail_waiting("stopped")
            raise
        except Exception:  # a bug here: answer every waiting request rather than leave it
            self._fail_waiting("failed")  # waiting (the error is logged by _on_loop_done)
            raise

    def _oldest_group(self) -> bytes | None:
        """The options group of the oldest waiting chunk, or None when nothing waits."""
        oldest: _Chunk | None = None
        for key in list(self._groups):
            queue = self._groups[key]
            while queue and queue[0].future.done():
                self._drop(queue.popleft())
            if not queue:
                del self._groups[key]
                del self._queued[key]
            elif oldest is None or queue[0].enqueued_at < oldest.enqueued_at:
                oldest = queue[0]
        return None if oldest is None else oldest.key

    async def _wait_for_more(self, key: bytes, wakeup: asyncio.Event) -> None:
        """Wait until `key`'s batch is full, or the oldest chunk has waited `max_wait_s`."""
        loop = asyncio.get_running_loop()
        deadline = self._groups[key][0].enqueued_at + self.max_wait_s
        while not self._closed and self._queued.get(key, 0) < self.max_batch_size:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            wakeup.clear()
            try:
                async with asyncio.timeout(remaining):
                    await wakeup.wait()
            except TimeoutError:
                return

    def _take(self, key: bytes) -> list[_Chunk]:
        """Dequeue the next batch of `key`: waiting chunks in order, up to `max_batch_size`.

        The first waiting chunk is always taken, even when it is larger: it was split under a
        larger `max_batch_size` before `configure` lowered it (else it would never be taken).
        """
        queue = self._groups.get(key)
        batch: list[_Chunk] = []
        size = 0
        while queue:
            chunk = queue[0]
            if chunk.future.done():
                self._drop(queue.popleft())
                continue
            count = len(chunk.instances)
            if batch and size + count > self.max_batch_size:
                break
            queue.popleft()
            chunk.queued = False
            size += count
            batch.append(chunk)
        if size:
            self._queued[key] -= size
        return batch

    async def _predict_batch(self, batch: list[_Chunk]) -> None:
        loop = asyncio.get_running_loop()
        parts = [chunk.instances for chunk in batch]
        self._in_flight = batch
        self._last_batch_requests = len(batch)
        inline = self._mean_call_s is not None and self._mean_call_s < self.inline_below_s
        cost = blocked = 0.0
        assert self._model_lock is not None
        try:
            async with self._model_lock:  # no `run_exclusive` call meanwhile
                if inline:
                    started, started_cpu = time.perf_counter(), time.thread_time()
                    outcomes, calls = self._call_isolating(parts, batch[0].options)
                    cost = time.thread_time() - started_cpu
                    blocked = time.perf_counter() - started  # what the loop waited
                else:
                    outcomes, calls, cost = await loop.run_in_executor(
                        self._executor, self._call_timed, parts, batch[0].options
                    )
        except Exception as exc:  # the executor refused the call (e.g. it was shut down)
            outcomes = [_cannot_call(self.name, exc) for _ in batch]
            calls = 0
        finally:
            self._in_flight = []
        if calls:
            self._measured(cost / calls, blocked / calls if inline else None)
        self._batches += calls
        for chunk, outcome in zip(batch, outcomes, strict=True):
            if chunk.future.done():
                continue
            if isinstance(outcome, BaseException):
                chunk.future.set_exception(_shift_instance_index(outcome, chunk.offset))
                for sibling in chunk.siblings:  # the request failed: predict no more of it
                    if not sibling.future.done():
                        sibling.future.cancel()
                        self._drop(sibling)
            else:
                chunk.future.set_result(outcome)
        if inline:  # let the answers go out, and new requests in, before the next batch
            await asyncio.sleep(0)

    def _measured(self, cpu_s: float, blocked_s: float | None) -> None:
        """Account for one model call: `cpu_s` is the CPU time it took on the thread that made
        it (wall time on the model's own thread would count the loop's turns on the GIL
        meanwhile, and keep a short model off the loop); `blocked_s`, for a call on the loop,
        is how long the loop waited for it."""
        if blocked_s is not None:
            waited = blocked_s > self.inline_below_s and cpu_s < blocked_s / 2
            self._waits_in_a_row = self._waits_in_a_row + 1 if waited else 0
            if self._waits_in_a_row >= WAITS_BEFORE_THREAD:
                # the model waits on something (I/O, threads of its own) while it holds the
                # loop: its calls go to the thread from now on
                self.inline_below_s = 0.0
        mean = self._mean_call_s
        self._mean_call_s = cpu_s if mean is None else 0.8 * mean + 0.2 * cpu_s

    def _call_timed(
        self, parts: list[list[Any]], options: Mapping[str, Any]
    ) -> tuple[list[list[Any] | BaseException], int, float]:
        """`_call_isolating` on the executor, with the CPU time it took on this thread."""
        started = time.thread_time()
        outcomes, calls = self._call_isolating(parts, options)
        return outcomes, calls, time.thread_time() - started

    def _call_isolating(
        self, parts: list[list[Any]], options: Mapping[str, Any]
    ) -> tuple[list[list[Any] | BaseException], int]:
        """Call the model on `parts` merged; on error, re-run so only the bad parts fail.

        Runs on the executor. Returns one outcome per part (its outputs, or the error it gets
        on its own) and the number of model calls made.
        """
        outcomes: list[list[Any] | BaseException] = [[] for _ in parts]
        calls = 0
        todo: list[list[int]] = [list(range(len(parts)))]
        while todo:
            group = todo.pop()
            if len(group) == 1:
                instances = parts[group[0]]
            else:
                instances = list(itertools.chain.from_iterable(parts[i] for i in group))
            calls += 1
            try:
                outputs = self.predict_function(instances, options)
            except Exception as exc:
                if len(group) == 1:
                    outcomes[group[0]] = exc
                    continue
                culprit = _part_at(_instance_index(exc), [len(parts[i]) for i in group])
                if culprit is None:
                    todo.extend([i] for i in reversed(group))
                else:
                    todo.append(group[:culprit] + group[culprit + 1 :])
                    todo.append([group[culprit]])
                continue
            try:
                count = len(outputs)
            except TypeError:
                count = -1
            if count != len(instances):
                got = f"{count} outputs" if count >= 0 else f"a {type(outputs).__name__}"
                model = f"The model {self.name}" if self.name else "The model"
                for i in group:
                    outcomes[i] = OperationFailed(
                        f"{model} returned {got} for {len(instances)} instances; a model must "
                        "return exactly one output per instance, in order."
                    )
                continue
            outputs = outputs if isinstance(outputs, list) else list(outputs)
            start = 0
            for i in group:
                end = start + len(parts[i])
                outcomes[i] = outputs if len(group) == 1 else outputs[start:end]
                start = end
        return outcomes, calls

    def _fail_waiting(self, why: str) -> None:
        """Fail every request still waiting or in flight: the loop will not answer them."""
        chunks = [*self._in_flight, *itertools.chain.from_iterable(self._groups.values())]
        for chunk in chunks:
            if not chunk.future.done():
                chunk.future.set_exception(
                    Unavailable(f"The predict loop of {self.name or 'the model'} {why}.")
                )
            self._drop(chunk)


_NO_OPTIONS_KEY = b"{}"
_NO_OPTIONS: Mapping[str, Any] = types.MappingProxyType({})


def _options_key(options: Mapping[str, Any] | None) -> bytes:
    """A hashable key equal for equal options, whatever their order."""
    if not options:
        return _NO_OPTIONS_KEY
    try:
        return orjson.dumps(
            options,
            option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY,
        )
    except TypeError:
        return repr(sorted(options.items(), key=repr)).encode()


def _instance_index(exc: BaseException) -> int | None:
    """The instance an error names: its ``instance_index``, else ``instance N`` in its text."""
    index = getattr(exc, "instance_index", None)
    if isinstance(index, int) and not isinstance(index, bool):
        return index
    match = _INSTANCE.search(str(exc))
    return int(match.group(2)) if match else None


def _part_at(index: int | None, sizes: list[int]) -> int | None:
    """Which part holds instance `index` of the parts of `sizes` laid end to end."""
    if index is None or index < 0:
        return None
    start = 0
    for position, size in enumerate(sizes):
        if index < start + size:
            return position
        start += size
    return None


def _shift_instance_index(exc: BaseException, offset: int) -> BaseException:
    """`exc` with the instance index it names moved by `offset` (a chunk's place in its request).

    Only chunks of a request larger than the batch size have an offset; for them the error's
    ``instance_index`` attribute and the ``instance N`` in its message are rewritten on a copy.
    """
    if offset == 0:
        return exc
    index = _instance_index(exc)
    if index is None:
        return exc
    message = str(exc)
    new_message = message
    match = _INSTANCE.search(message)
    if match and int(match.group(2)) == index:
        new_message = f"{message[: match.start(2)]}{index + offset}{message[match.end(2) :]}"
    try:
        shifted = copy.copy(exc)
        if hasattr(exc, "instance_index"):
            shifted.instance_index = index + offset  # type: ignore[attr-defined]
        if exc.args and exc.args[0] == message:
            shifted.args = (new_message, *exc.args[1:])
        if isinstance(getattr(exc, "message", None), str):
            shifted.message = new_message  # type: ignore[attr-defined]
    except Exception:  # an exception type that cannot be copied keeps its chunk-relative index
        return exc
    shifted.__cause__ = exc.__cause__
    shifted.__context__ = exc.__context__
    return shifted.with_traceback(exc.__traceback__)


def _cannot_call(name: str, exc: Exception) -> OperationFailed:
    error = OperationFailed(f"The model {name or 'version'} could not be called: {exc}")
    error.__cause__ = exc
    return error
