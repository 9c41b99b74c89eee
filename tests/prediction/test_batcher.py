"""MicroBatcher: merging, batch sizes in instances, options groups, error isolation, cancel, close.

The fake model blocks on a gate to make the model busy on purpose, so every test states exactly
which requests were queued when the model became free; no test asserts a duration.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from mlengine.errors import InvalidArgument, OperationFailed, Unavailable
from mlengine.prediction._batcher import WAITS_BEFORE_THREAD, BatcherStats, MicroBatcher

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class BadInstance(InvalidArgument):
    """What predictors raise: the index counts within the instances they were given."""

    def __init__(self, message: str, instance_index: int | None = None) -> None:
        super().__init__(message)
        self.instance_index = instance_index


class FakeModel:
    """Records every call; answers ``f"{instance}{tag}"``; blocks while `gate` is clear.

    Instances starting with ``bad`` make it raise, the way `how_to_fail` says: ``"attribute"``
    (an ``instance_index`` attribute), ``"message"`` (``instance N:`` in the text only) or
    ``"plain"`` (no index at all).
    """

    def __init__(self, cost_s: float = 0.001, how_to_fail: str = "attribute") -> None:
        self.calls: list[list[Any]] = []
        self.options: list[dict[str, Any]] = []
        self.threads: set[str] = set()
        self.call_threads: list[str] = []
        self.cost_s = cost_s
        self.how_to_fail = how_to_fail
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.output_count: Callable[[int], int] = lambda n: n

    def __call__(self, instances: list[Any], options: Mapping[str, Any]) -> list[Any]:
        self.calls.append(list(instances))
        self.options.append(dict(options))
        self.threads.add(threading.current_thread().name)
        self.call_threads.append(threading.current_thread().name)
        self.entered.set()
        assert self.gate.wait(60), "the test never opened the gate"
        time.sleep(self.cost_s)
        for index, instance in enumerate(instances):
            if isinstance(instance, str) and instance.startswith("bad"):
                if self.how_to_fail == "attribute":
                    raise BadInstance(f"instance {index}: {instance} is malformed", index)
                if self.how_to_fail == "message":
                    raise InvalidArgument(f"instance {index}: {instance} is malformed")
                raise ValueError(f"cannot predict {instance}")
        tag = options.get("tag", "")
        outputs = [f"{instance}{tag}" for instance in instances]
        return outputs[: self.output_count(len(instances))]

    @property
    def sizes(self) -> list[int]:
        return [len(call) for call in self.calls]

    def hold(self) -> None:
        self.entered.clear()
        self.gate.clear()


@pytest.fixture
def model() -> Iterator[FakeModel]:
    fake = FakeModel()
    yield fake
    fake.gate.set()  # never leave a worker thread blocked after a failed test


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Yield to the event loop until `condition` holds (a generous bound catches hangs)."""
    for _ in range(20_000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"never happened: {what}")


async def start_busy(batcher: MicroBatcher, model: FakeModel) -> asyncio.Task[list[Any]]:
    """Make the model busy with a one-instance ``blocker`` request; return its task."""
    model.hold()
    blocker = asyncio.create_task(batcher.predict(["blocker"]))
    await asyncio.to_thread(model.entered.wait, 60)
    return blocker


def request(name: str, size: int) -> list[str]:
    return [f"{name}-{i}" for i in range(size)]


async def test_a_lone_request_is_one_call_of_its_size(model: FakeModel) -> None:
    batcher = MicroBatcher(model, inline_below_s=0, name="p/m/v1")
    assert await batcher.predict(request("a", 5)) == [f"a-{i}" for i in range(5)]
    assert model.sizes == [5]
    assert batcher.stats == BatcherStats(requests=1, batches=1, instances=5, errors=0)
    await batcher.close()


async def test_requests_queued_while_the_model_is_busy_form_the_next_batch(
    model: FakeModel,
) -> None:
    batcher = MicroBatcher(model, inline_below_s=0, max_batch_size=64)
    blocker = await start_busy(batcher, model)
    tasks = [asyncio.create_task(batcher.predict([f"r{i}"])) for i in range(50)]
    await eventually(lambda: batcher.queued_instances == 50, "50 instances queued")
    model.gate.set()
    results = await asyncio.gather(*tasks)
    assert await blocker == ["blocker"]
    assert results == [[f"r{i}"] for i in range(50)]
    assert model.sizes == [1, 50]
    assert model.calls[1] == [f"r{i}" for i in range(50)]  # FIFO
    assert batcher.stats.batches == 2 < batcher.stats.requests == 51
    await batcher.close()


async def test_many_concurrent_callers_are_merged_and_each_gets_its_own_outputs(
    model: FakeModel,
) -> None:
    batcher = MicroBatcher(model, inline_below_s=0, max_batch_size=16)

    async def caller(number: int) -> None:
        for round_ in range(5):
            instances = request(f"c{number}r{round_}", 1 + (number + round_) % 3)
            assert await batcher.predict(instances) == instances

    await asyncio.gather(*(caller(number) for number in range(50)))
    assert len(model.calls) < batcher.stats.requests == 250
    assert max(model.sizes) <= 16
    assert model.threads == {next(iter(model.threads))}  # one thread calls the model
    await batcher.close()


async def test_max_batch_size_counts_instances_and_never_splits_a_request_that_fits(
    model: FakeModel,
) -> None:
    batcher = MicroBatcher(model, inline_below_s=0, max_batch_size=8)
    blocker = await start_busy(batcher, model)
    tasks = [asyncio.create_task(batcher.predict(request(f"r{i}", 3))) for i in range(10)]
    await eventually(lambda: batcher.queued_instances == 30, "30 instances queued")
    model.gate.set()
    results = await asyncio.gather(blocker, *tasks)
    assert results[1:] == [request(f"r{i}", 3) for i in range(10)]
    assert model.sizes == [1, 6, 6, 6, 6, 6]
    for call in model.calls[1:]:
        assert len({instance.split("-")[0] for instance in call}) == 2  # two whole requests
    await batcher.close()


async def test_a_request_larger_than_the_batch_is_split_in_order_and_reassembled(
    model: FakeModel,
) -> None:
    batcher = MicroBatcher(model, inline_below_s=0, max_batch_size=8)
    assert await batcher.predict(request("big", 20)) == request("big", 20)
    assert model.sizes == [8, 8, 4]
    assert [instance for call in model.calls for instance in call] == request("big", 20)

    model.calls.clear()
    blocker = await start_busy(batcher, model)
    big = asyncio.create_task(batcher.predict(request("big", 20)))
    small = asyncio.create_task(batcher.predict(request("small", 3)))
    await eventually(lambda: batcher.queued_instances == 23, "23 instances queued")
    model.gate.set()
    assert await big == request("big", 20)
    assert await small == request("small", 3)
    await blocker
    assert model.sizes == [1, 8, 8, 7]  # the last chunk shares its call with the next request
    await batcher.close()


async def test_lowering_max_batch_size_under_load_still_answers_what_was_queued(
    model: FakeModel,
) -> None:
    """Chunks split under the old size are larger than the new one: each goes alone (the loop
    used to skip them forever, spinning without yielding)."""
    batcher = MicroBatcher(model, inline_below_s=0, max_batch_size=64)
    blocker = await start_busy(batcher, model)
    queued = [asyncio.create_task(batcher.predict(request(f"q{i}", 32))) for i in range(2)]
    await eventually(lambda: batcher.queued_instances == 64, "64 instances queued")
    batcher.configure(max_batch_size=8)
    later = asyncio.create_task(batcher.predict(request("later", 20)))
    await eventually(lambda: batcher.queued_instances == 84, "84 instances queued")
    model.gate.set()
    assert await blocker == ["blocker"]
    assert [await task for task in queued] == [request(f"q{i}", 32) for i in range(2)]
    assert await later == request("later", 20)
    assert model.sizes == [1, 32, 32, 8, 8, 4]
    await batcher.close()


async def test_requests_with_different_options_are_never_merged(model: FakeModel) -> None:
    batcher = MicroBatcher(model, inline_below_s=0, max_batch_size=64)
    blocker = await start_busy(batcher, model)
    options: list[dict[str, Any]] = [{"tag": "+p"} if i % 2 else {} for i in range(20)]
    tasks = [
        asyncio.create_task(batcher.predict([f"r{i}"], option)) for i, option in enumerate(options)
    ]
    await eventually(lambda: batcher.queued_instances == 20, "20 instances queued")
    model.gate.set()
    results = await asyncio.gather(*tasks)
    await blocker
    assert results == [[f"r{i}" + option.get("tag", "")] for i, option in enumerate(options)]
    assert model.sizes == [1, 10, 10]
    assert model.options[1:] == [{}, {"tag": "+p"}]  # the oldest request's group goes first
    await batcher.close()


async def test_equal_options_in_any_key_order_are_merged(model: FakeModel) -> None:
    batcher = MicroBatcher(model, inline_below_s=0)
    blocker = await start_busy(batcher, model)
    first = asyncio.create_task(batcher.predict(["a"], {"tag": "!", "k": 1}))
    second = asyncio.create_task(batcher.predict(["b"], {"k": 1, "tag": "!"}))
    await eventually(lambda: batcher.queued_instances == 2, "2 instances queued")
    model.gate.set()
    assert (await first, await second) == (["a!"], ["b!"])
    await blocker
    assert model.sizes == [1, 2]
    await batcher.close()


@pytest.mark.parametrize("how_to_fail", ["attribute", "message", "plain"])
async def test_one_bad_request_in_a_merged_batch_fails_alone(
    model: FakeModel, how_to_fail: str
) -> None:
    model.how_to_fail = how_to_fail
    batcher = MicroBatcher(model, inline_below_s=0, max_batch_size=64)
    blocker = await start_busy(batcher, model)
    requests = [request(f"r{i}", 4) for i in range(5)]
    requests[2][1] = "bad-one"  # instance 9 of the merged batch, instance 1 of its request
    tasks = [asyncio.create_task(batcher.predict(instances)) for instances in requests]
    await eventually(lambda: batcher.queued_instances == 20, "20 instances queued")
    model.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await blocker
    for i, result in enumerate(results):
        if i != 2:
            assert result == requests[i]
    error = results[2]
    if how_to_fail == "plain":
        assert isinstance(error, ValueError) and str(error) == "cannot predict bad-one"
    else:
        assert isinstance(error, InvalidArgument)
        assert str(error) == "instance 1: bad-one is malformed"
    if how_to_fail == "attribute":
        assert isinstance(error, BadInstance) and error.instance_index == 1
    assert model.sizes[:2] == [1, 20]
    if how_to_fail == "plain":
        assert model.sizes[2:] == [4, 4, 4, 4, 4]  # no index: each request alone
    else:
        assert sorted(model.sizes[2:]) == [4, 16]  # the bad request alone, the rest together
    assert batcher.stats.errors == 1
    await batcher.close()


@pytest.mark.parametrize("how_to_fail", ["attribute", "message"])
async def test_an_error_in_a_split_request_names_the_index_within_the_request(
    model: FakeModel, how_to_fail: str
) -> None:
    model.how_to_fail = how_to_fail
    batcher = MicroBatcher(model, inline_below_s=0, max_batch_size=8)
    instances = request("big", 20)
    instances[13] = "bad-13"  # instance 5 of the second chunk
    with pytest.raises(InvalidArgument, match=r"^instance 13: bad-13 is malformed$") as caught:
        await batcher.predict(instances)
    if how_to_fail == "attribute":
        assert isinstance(caught.value, BadInstance) and caught.value.instance_index == 13
    assert model.sizes == [8, 8]  # the third chunk is dropped once the request failed
    assert await batcher.predict(["after"]) == ["after"]
    await batcher.close()


async def test_a_lone_failing_request_gets_the_models_own_error(model: FakeModel) -> None:
    batcher = MicroBatcher(model, inline_below_s=0)
    with pytest.raises(BadInstance, match="instance 0: bad is malformed"):
        await batcher.predict(["bad"])
    assert model.sizes == [1]
    assert batcher.stats == BatcherStats(requests=1, batches=1, instances=1, errors=1)
    await batcher.close()


@pytest.mark.parametrize("returns", ["one too few", "none"])
async def test_a_wrong_number_of_outputs_fails_the_batch_clearly(
    model: FakeModel, returns: str
) -> None:
    batcher = MicroBatcher(model, inline_below_s=0, name="p/m/v1")
    blocker = await start_busy(batcher, model)
    tasks = [asyncio.create_task(batcher.predict(request(f"r{i}", 2))) for i in range(3)]
    await eventually(lambda: batcher.queued_instances == 6, "6 instances queued")
    if returns == "none":
        batcher.predict_function = lambda instances, options: None  # type: ignore[assignment,return-value]
    else:
        model.output_count = lambda n: n - 1 if n > 1 else n  # not the blocker
    model.gate.set()
    await blocker
    results = await asyncio.gather(*tasks, return_exceptions=True)
    got = "a NoneType" if returns == "none" else "5 outputs"
    for result in results:
        assert isinstance(result, OperationFailed)
        assert str(result) == (
            f"The model p/m/v1 returned {got} for 6 instances; a model must return exactly "
            "one output per instance, in order."
        )
    assert len({id(result) for result in results}) == 3  # one error object per caller
    await batcher.close()


async def test_cancelled_callers_are_dropped_and_the_loop_goes_on(model: FakeModel) -> None:
    batcher = MicroBatcher(model, inline_below_s=0)
    blocker = await start_busy(batcher, model)
    tasks = [asyncio.create_task(batcher.predict(request(f"r{i}", 2))) for i in range(5)]
    await eventually(lambda: batcher.queued_instances == 10, "10 instances queued")
    tasks[1].cancel()
    tasks[3].cancel()
    await eventually(lambda: batcher.queued_instances == 6, "cancelled instances dropped")
    model.gate.set()
    await blocker
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[1], asyncio.CancelledError)
    assert isinstance(results[3], asyncio.CancelledError)
    assert [results[0], results[2], results[4]] == [request(f"r{i}", 2) for i in (0, 2, 4)]
    assert model.calls[1] == request("r0", 2) + request("r2", 2) + request("r4", 2)

    # a caller cancelled while its batch is in the model: the others still get their answers
    model.hold()
    doomed = asyncio.create_task(batcher.predict(["doomed"]))
    await asyncio.to_thread(model.entered.wait, 60)
    doomed.cancel()
    model.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert await batcher.predict(["later"]) == ["later"]
    assert batcher.stats.errors == 0
    await batcher.close()


async def test_a_split_request_that_fails_drops_its_other_chunks(model: FakeModel) -> None:
    batcher = MicroBatcher(model, inline_below_s=0, max_batch_size=4)
    blocker = await start_busy(batcher, model)
    doomed = asyncio.create_task(batcher.predict(["bad-0", *request("x", 9)]))  # 3 chunks
    await eventually(lambda: batcher.queued_instances == 10, "10 instances queued")
    model.gate.set()
    await blocker
    with pytest.raises(BadInstance, match="instance 0"):
        await doomed
    assert batcher.queued_instances == 0  # the two later chunks were never predicted
    assert [call for call in model.calls if "x-8" in call] == []
    assert await batcher.predict(["after"]) == ["after"]
    await batcher.close()


async def test_close_answers_queued_and_in_flight_requests_then_refuses(
    model: FakeModel,
) -> None:
    batcher = MicroBatcher(model, inline_below_s=0, max_batch_size=4, name="p/m/v1")
    blocker = await start_busy(batcher, model)
    tasks = [asyncio.create_task(batcher.predict(request(f"r{i}", 3))) for i in range(4)]
    await eventually(lambda: batcher.queued_instances == 12, "12 instances queued")
    closing = asyncio.create_task(batcher.close())
    await eventually(lambda: batcher.closed, "close started")
    with pytest.raises(Unavailable, match="p/m/v1 is being unloaded"):
        await batcher.predict(["too late"])
    assert not closing.done()
    model.gate.set()
    await closing
    assert all(task.done() for task in tasks)  # answered before close returned
    assert [task.result() for task in tasks] == [request(f"r{i}", 3) for i in range(4)]
    assert await blocker == ["blocker"]
    with pytest.raises(Unavailable):
        await batcher.predict(["after"])
    await batcher.close()  # idempotent


async def test_max_wait_waits_for_a_fuller_batch_only_until_it_is_full(model: FakeModel) -> None:
    batcher = MicroBatcher(model, inline_below_s=0, max_batch_size=4, max_wait_s=60.0)
    first = asyncio.create_task(batcher.predict(request("a", 2)))
    await eventually(lambda: batcher.queued_instances == 2, "first request queued")
    for _ in range(5):
        await asyncio.sleep(0)
    assert model.calls == []  # waiting for more instances
    second = asyncio.create_task(batcher.predict(request("b", 2)))
    assert await first == request("a", 2)
    assert await second == request("b", 2)
    assert model.sizes == [4]  # full: called without waiting out max_wait_s

    third = asyncio.create_task(batcher.predict(["c"]))
    await eventually(lambda: batcher.queued_instances == 1, "third request queued")
    await batcher.close()  # close does not wait out max_wait_s either
    assert await third == ["c"]
    assert model.sizes == [4, 1]


async def test_with_max_wait_a_lone_request_is_predicted_once_the_wait_is_over(
    model: FakeModel,
) -> None:
    batcher = MicroBatcher(model, inline_below_s=0, max_batch_size=64, max_wait_s=0.05)
    assert await batcher.predict(["a"]) == ["a"]
    assert model.sizes == [1]
    await batcher.close()


async def test_a_given_executor_is_used_and_left_open(model: FakeModel) -> None:
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="given") as executor:
        batcher = MicroBatcher(model, executor=executor)
        assert await batcher.predict(["a"]) == ["a"]
        await batcher.close()
        assert executor.submit(lambda: 1).result() == 1
    assert all(name.startswith("given") for name in model.threads)


async def test_a_shut_down_executor_fails_the_batch_and_the_loop_goes_on(
    model: FakeModel,
) -> None:
    executor = concurrent.futures.ThreadPoolExecutor(1)
    batcher = MicroBatcher(model, executor=executor, name="v")
    assert await batcher.predict(["a"]) == ["a"]
    executor.shutdown()
    with pytest.raises(OperationFailed, match="The model v could not be called"):
        await batcher.predict(["b"])
    batcher._executor = concurrent.futures.ThreadPoolExecutor(1)
    assert await batcher.predict(["c"]) == ["c"]
    batcher._executor.shutdown()
    await batcher.close()


@pytest.mark.parametrize("inline_below_s", [0.0, 60.0], ids=["on-thread", "on-loop"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
async def test_random_traffic_keeps_every_promise(seed: int, inline_below_s: float) -> None:
    """Random sizes, options, bad instances and cancellations; print the seed to replay."""
    rng = random.Random(seed)
    model = FakeModel(cost_s=0.0, how_to_fail=rng.choice(["attribute", "message", "plain"]))
    batcher = MicroBatcher(
        model,
        inline_below_s=inline_below_s,
        max_batch_size=rng.choice([1, 4, 16]),
        max_wait_s=0.0,
    )
    expected: dict[int, tuple[list[str], str, int | None]] = {}
    tasks: dict[int, asyncio.Task[list[Any]]] = {}
    for number in range(200):
        instances = request(f"r{number}", rng.randint(1, 20))
        bad = rng.randrange(len(instances)) if rng.random() < 0.05 else None
        if bad is not None:
            instances[bad] = f"bad-{number}"
        tag = rng.choice(["", "+p"])
        expected[number] = (instances, tag, bad)
        tasks[number] = asyncio.create_task(batcher.predict(instances, {"tag": tag} if tag else {}))
        if rng.random() < 0.3:
            await asyncio.sleep(0)
        if rng.random() < 0.05:
            tasks[rng.randrange(number + 1)].cancel()
    await asyncio.gather(*tasks.values(), return_exceptions=True)
    for number, task in tasks.items():
        instances, tag, bad = expected[number]
        if task.cancelled():
            continue
        if bad is None:
            assert task.result() == [f"{instance}{tag}" for instance in instances], number
        elif model.how_to_fail == "plain":
            assert isinstance(task.exception(), ValueError), number
        else:
            assert str(task.exception()).startswith(f"instance {bad}: "), (number, seed)
    for call, options in zip(model.calls, model.options, strict=True):
        assert len(call) <= batcher.max_batch_size
        tags = {expected[int(re.findall(r"\d+", instance)[0])][1] for instance in call}
        assert tags == {options.get("tag", "")}, "requests with different options merged"
    await batcher.close()


async def test_short_model_calls_run_on_the_loop_after_the_first() -> None:
    model = FakeModel(cost_s=0.0)
    batcher = MicroBatcher(model, max_batch_size=8, inline_below_s=60.0)
    assert await batcher.predict(["a"]) == ["a"]  # the first call measures, on the thread
    results = await asyncio.gather(*(batcher.predict(request(f"r{n}", 3)) for n in range(20)))
    assert results == [request(f"r{n}", 3) for n in range(20)]
    assert model.threads == {"mlengine-predict-_0", threading.current_thread().name}
    assert max(model.sizes) <= 8 and len(model.calls) < 21  # still merged
    await batcher.close()


async def after_turns(turns: int, batcher: MicroBatcher, instance: str) -> list[Any]:
    """A one-instance request made `turns` event-loop turns from now: one the server reads a
    little later than another."""
    for _ in range(turns):
        await asyncio.sleep(0)
    return await batcher.predict([instance])


async def test_under_concurrent_load_requests_read_in_the_next_turns_join_the_batch() -> None:
    model = FakeModel(cost_s=0.0)
    batcher = MicroBatcher(model, max_batch_size=64, inline_below_s=60.0)
    assert await batcher.predict(["warm"]) == ["warm"]  # measured on the thread; inline now
    # a lone client: its request is taken at once, the late ones form the next batch
    lone = await asyncio.gather(
        batcher.predict(["a"]), after_turns(2, batcher, "b"), after_turns(2, batcher, "c")
    )
    assert lone == [["a"], ["b"], ["c"]]
    assert model.calls[1:] == [["a"], ["b", "c"]]
    # concurrent load (the last batch held two requests): the batch waits ARRIVAL_TURNS
    # turns, so the requests read meanwhile join it
    merged = await asyncio.gather(
        batcher.predict(["d"]), after_turns(2, batcher, "e"), after_turns(2, batcher, "f")
    )
    assert merged == [["d"], ["e"], ["f"]]
    assert model.calls[3:] == [["d", "e", "f"]]
    assert len(model.threads) == 2  # the thread once, then the loop
    await batcher.close()


async def test_slow_model_calls_stay_on_the_thread() -> None:
    def busy(instances: list[Any], options: Mapping[str, Any]) -> list[Any]:
        threads.add(threading.current_thread().name)
        deadline = time.thread_time() + 0.02
        while time.thread_time() < deadline:  # CPU-bound, as most models are
            pass
        return list(instances)

    threads: set[str] = set()
    batcher = MicroBatcher(busy, inline_below_s=0.005)
    for n in range(3):
        assert await batcher.predict([f"x{n}"]) == [f"x{n}"]
    assert threading.current_thread().name not in threads
    await batcher.close()


async def test_a_model_that_waits_goes_back_to_the_thread_after_a_few_calls_on_the_loop() -> None:
    model = FakeModel(cost_s=0.05)  # sleeps: little CPU on its thread, a long wait on the loop
    batcher = MicroBatcher(model, inline_below_s=0.005)
    for n in range(6):
        assert await batcher.predict([f"x{n}"]) == [f"x{n}"]
    loop_thread = threading.current_thread().name
    on_loop = [n for n, name in enumerate(model.call_threads) if name == loop_thread]
    # measured on the thread first, tried on the loop, sent back after WAITS_BEFORE_THREAD
    assert on_loop == list(range(1, 1 + WAITS_BEFORE_THREAD))
    assert batcher.inline_below_s == 0.0
    await batcher.close()


async def test_a_lone_slow_call_on_the_loop_does_not_move_the_model() -> None:
    """A call the host stalled (a virtual machine's CPU taken away for a while) looks like a
    wait once; the model stays on the loop, and the calls after it run there too."""
    stalls = {2}  # the third call stalls
    calls: list[str] = []

    def model(instances: list[Any], options: Mapping[str, Any]) -> list[Any]:
        calls.append(threading.current_thread().name)
        if len(calls) - 1 in stalls:
            time.sleep(0.05)
        return list(instances)

    batcher = MicroBatcher(model, inline_below_s=0.005)
    for n in range(6):
        assert await batcher.predict([f"x{n}"]) == [f"x{n}"]
    loop_thread = threading.current_thread().name
    assert [n for n, name in enumerate(calls) if name == loop_thread] == [1, 2, 3, 4, 5]
    assert batcher.inline_below_s == 0.005
    await batcher.close()


async def test_run_exclusive_never_overlaps_a_model_call(model: FakeModel) -> None:
    batcher = MicroBatcher(model, inline_below_s=0)
    model.gate.clear()
    in_flight = asyncio.create_task(batcher.predict(["a"]))
    await asyncio.to_thread(model.entered.wait, 10)  # the model is busy now
    events: list[str] = []

    def other_use() -> str:
        events.append(f"other use, batch done: {in_flight.done()}")
        return "examples"

    exclusive = asyncio.create_task(batcher.run_exclusive(other_use))
    await asyncio.sleep(0.05)
    assert events == []  # waits for the model call to end
    model.gate.set()
    assert await exclusive == "examples"
    assert await in_flight == ["a"]
    assert len(events) == 1
    await batcher.close()
    with pytest.raises(Unavailable):
        await batcher.run_exclusive(other_use)


async def test_a_given_executor_gets_every_call() -> None:
    model = FakeModel(cost_s=0.0)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="given") as executor:
        batcher = MicroBatcher(model, executor=executor, inline_below_s=60.0)
        for n in range(3):
            assert await batcher.predict([f"x{n}"]) == [f"x{n}"]
        assert model.threads == {"given_0"}
        await batcher.close()


async def test_an_empty_request_needs_no_model_call(model: FakeModel) -> None:
    batcher = MicroBatcher(model, inline_below_s=0)
    assert await batcher.predict([]) == []
    assert model.calls == []
    await batcher.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_batch_size": 0}, "The 'max_batch_size' field of MicroBatcher must be an integer"),
        ({"max_batch_size": 2.5}, "The 'max_batch_size' field of MicroBatcher must be an integer"),
        ({"max_wait_s": -1}, "The 'max_wait_s' field of MicroBatcher must be a number >= 0"),
    ],
)
def test_bad_settings_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        MicroBatcher(lambda instances, options: instances, **options)


async def test_a_predict_loop_that_fails_answers_its_waiting_requests_and_restarts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unexpected error in the batcher's own loop (a bug, simulated here) fails the
    requests it queued instead of leaving them waiting forever; the next request starts a
    new loop and is served."""
    model = FakeModel()
    batcher = MicroBatcher(model, name="v1")
    original = batcher._take
    broken = True

    def take(key: bytes) -> Any:
        if broken:
            raise RuntimeError("a bug in the loop")
        return original(key)

    batcher._take = take  # type: ignore[method-assign]
    waiting = asyncio.ensure_future(batcher.predict(["a"]))
    done, _ = await asyncio.wait({waiting}, timeout=30)
    assert done, "the request was left waiting"
    with pytest.raises(Unavailable, match="The predict loop of v1 failed"):
        waiting.result()
    assert "the predict loop of v1 stopped" in caplog.text
    broken = False
    assert await batcher.predict(["b"]) == ["b"]
    await batcher.close()
