"""etude.serving.batcher.DynamicBatcher without HTTP: when batches run, how big they get, how failures fan out."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Sequence
from typing import Any

import pytest

from etude.serving.batcher import DynamicBatcher
from etude.serving.errors import BatchFailed, NotReady, Overloaded


def run(coro: Coroutine[Any, Any, Any], timeout_s: float = 20) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


class Recorder:
    """A run_batch that sleeps, records each batch and its thread, and echoes items doubled."""

    def __init__(self, sleep_s: float = 0.0) -> None:
        self.sleep_s = sleep_s
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()

    def __call__(self, items: list[int]) -> Sequence[int]:
        self.threads.add(threading.current_thread().name)
        self.batches.append(list(items))
        time.sleep(self.sleep_s)
        return [2 * i for i in items]


def test_idle_request_runs_at_once_even_with_a_long_max_delay() -> None:
    async def body() -> None:
        rec = Recorder()
        b = DynamicBatcher(rec, max_batch_size=8, max_delay_ms=5000, max_queue=100)
        t0 = time.perf_counter()
        answer = await b.submit(21)
        assert answer.value == 42 and answer.batch_size == 1
        assert time.perf_counter() - t0 < 1.0  # nowhere near the 5 s max delay
        assert rec.threads and threading.current_thread().name not in rec.threads  # off the event loop
        await b.drain()

    run(body())


def test_requests_arriving_during_a_batch_share_the_next_one_capped_at_max_size() -> None:
    async def body() -> None:
        rec = Recorder(sleep_s=0.1)
        b = DynamicBatcher(rec, max_batch_size=3, max_delay_ms=2, max_queue=100)
        first = b.submit(0)
        await asyncio.sleep(0.02)  # batch [0] is running
        rest = [b.submit(i) for i in range(1, 8)]
        answers = await asyncio.gather(first, *rest)
        assert [a.value for a in answers] == [2 * i for i in range(8)]  # everyone gets their own answer
        assert rec.batches == [[0], [1, 2, 3], [4, 5, 6], [7]]
        assert [a.batch_size for a in answers] == [1, 3, 3, 3, 3, 3, 3, 1]
        assert all(a.queue_ns >= 0 and a.inference_ns > 0 for a in answers)
        await b.drain()

    run(body())


def test_under_load_a_forming_batch_is_held_at_most_max_delay_and_never_at_light_load() -> None:
    async def body() -> None:
        rec = Recorder(sleep_s=0.02)
        b = DynamicBatcher(rec, max_batch_size=100, max_delay_ms=400, max_queue=100)
        # light load: a request arriving during a batch runs right after it, never held
        first = b.submit(0)
        await asyncio.sleep(0.005)
        pair = await asyncio.gather(first, b.submit(1))
        assert pair[1].queue_ns / 1e9 < 0.2 and b.busy_share < 0.5
        # load: back-to-back batches keep the inference thread busy
        for i in range(20):
            await b.submit(i)
        assert b.busy_share > 0.5
        rec.batches.clear()
        first = b.submit(0)
        await asyncio.sleep(0.005)
        second = b.submit(1)  # arrives while [0] runs, under load: held to let the batch fill
        await asyncio.sleep(0.2)
        third = b.submit(2)  # still within the second's 400 ms: joins its batch
        a1, a2, a3 = await asyncio.gather(first, second, third)
        assert rec.batches == [[0], [1, 2]]
        assert 0.3 <= a2.queue_ns / 1e9 < 1.0  # held for about max_delay, not forever
        await b.drain()

    run(body())


def test_failing_batch_fails_only_its_own_requests() -> None:
    def flaky(items: list[int]) -> list[int]:
        time.sleep(0.05)
        if 13 in items:
            raise ValueError("unlucky item")
        return items

    async def body() -> None:
        b = DynamicBatcher(flaky, max_batch_size=10, max_delay_ms=0, max_queue=100)
        ok_before = b.submit(1)
        await asyncio.sleep(0.01)
        bad, neighbour = b.submit(13), b.submit(2)  # these two form the second batch
        results = await asyncio.gather(ok_before, bad, neighbour, return_exceptions=True)
        assert results[0].value == 1
        for r in results[1:]:
            assert isinstance(r, BatchFailed) and "ValueError: unlucky item" in r.message
        assert (await b.submit(3)).value == 3  # and the batcher keeps serving
        await b.drain()

    run(body())


def test_wrong_result_count_fails_every_waiter_of_the_batch() -> None:
    async def body() -> None:
        b: DynamicBatcher[int, int] = DynamicBatcher(lambda items: items[:-1], max_batch_size=10, max_delay_ms=0,
                                                     max_queue=100)
        results = await asyncio.gather(b.submit(1), b.submit(2), return_exceptions=True)
        assert all(isinstance(r, BatchFailed) and "results for a batch of" in r.message for r in results)
        await b.drain()

    run(body())


def test_full_queue_sheds_at_once_and_drain_finishes_what_is_queued() -> None:
    async def body() -> None:
        rec = Recorder(sleep_s=0.1)
        b = DynamicBatcher(rec, max_batch_size=1, max_delay_ms=2, max_queue=2)
        futures = [b.submit(i) for i in range(3)]  # one runs, two wait
        assert b.queue_depth == 2
        with pytest.raises(Overloaded) as shed:
            b.submit(99)
        assert shed.value.status == 503 and shed.value.headers == {"Retry-After": "1"}
        drained = asyncio.create_task(b.drain())
        await asyncio.sleep(0)
        with pytest.raises(NotReady):
            b.submit(100)
        await drained
        assert [f.result().value for f in futures] == [0, 2, 4]

    run(body())


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        DynamicBatcher(lambda items: items, max_batch_size=0, max_delay_ms=2, max_queue=1)


def test_drain_during_warm_up_leaves_the_event_loop_free() -> None:
    async def body() -> None:
        b = DynamicBatcher(Recorder(), max_batch_size=4, max_delay_ms=2, max_queue=100)
        warm_up = b.on_thread(time.sleep, 1.0)  # like the server's warm-up on the inference thread
        await asyncio.sleep(0.05)
        draining = asyncio.create_task(b.drain())
        t0 = time.perf_counter()
        await asyncio.sleep(0.01)
        assert time.perf_counter() - t0 < 0.5  # the loop still runs while the thread finishes the warm-up
        assert not draining.done()
        await draining
        await warm_up

    run(body())


def test_a_failing_on_batch_callback_strands_no_request() -> None:
    def on_batch(size: int, run_ns: int) -> None:
        raise RuntimeError("metrics broke")

    async def body() -> None:
        b = DynamicBatcher(Recorder(sleep_s=0.05), max_batch_size=1, max_delay_ms=0, max_queue=100,
                           on_batch=on_batch)
        answers = await asyncio.gather(*(b.submit(i) for i in range(4)))
        assert [a.value for a in answers] == [0, 2, 4, 6]
        await asyncio.wait_for(b.drain(), 5)

    run(body(), timeout_s=10)
