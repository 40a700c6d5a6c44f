"""Dynamic request batching: one queue, per-request futures, one inference thread, no polling loop.

The event loop calls `submit(item)` and awaits the returned future; a dedicated thread runs `run_batch(items)`
(torch releases the GIL, so the loop keeps parsing and answering meanwhile). When to run a batch:

- idle: the inference thread is free and no batch is forming -> a lone request runs at once (no fixed wait);
- busy: requests that arrive while a batch runs form the next batch, which starts as soon as that batch ends;
- under load, i.e. the inference thread was busy at least half of the recent time (a moving average over
  batches): when the running batch ends, the next one starts at once if it is full (`max_batch_size`) or its
  oldest request has waited `max_delay_ms`; otherwise a timer (not a polling loop) starts it when that deadline
  comes, or earlier when it fills up. Fewer, larger batches then relieve the busy thread. No request waits
  longer than `max_delay_ms` for a batch to fill, and `max_delay_ms=0` never waits.

Holding batches back only pays when the thread is the bottleneck: at light load it would add up to
`max_delay_ms` to every request that happens to arrive during a (short) batch, for nothing.

A batch whose `run_batch` raises, or returns a result count that differs from its size, fails every request of
that batch (and only those) with `BatchFailed`. A full queue (`max_queue` waiting requests) raises `Overloaded`
at once; after `drain()` starts, `submit` raises `NotReady` while queued requests still complete.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from etude.serving.errors import BatchFailed, NotReady, Overloaded

log = logging.getLogger(__name__)

BUSY_TO_HOLD = 0.5  # hold forming batches only when the inference thread was busy at least this share of the time
BUSY_SMOOTHING = 0.1  # weight of the newest batch in the moving average of the busy share

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Answer(Generic[R]):
    """One request's result and where its time went."""

    value: R
    queue_ns: int  # from submit to the start of its batch
    inference_ns: int  # the batch's run time
    batch_size: int


@dataclass(slots=True)
class _Waiter(Generic[T, R]):
    item: T
    future: asyncio.Future[Answer[R]]
    enqueued_ns: int


@dataclass(slots=True)
class _Outcome(Generic[R]):
    values: Sequence[R] | None
    error: BaseException | None
    start_ns: int
    end_ns: int


class DynamicBatcher(Generic[T, R]):
    """Batches items submitted on one event loop and runs them on one dedicated thread."""

    def __init__(
        self,
        run_batch: Callable[[list[T]], Sequence[R]],
        *,
        max_batch_size: int,
        max_delay_ms: float,
        max_queue: int,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_delay_ms < 0:
            raise ValueError("need max_batch_size >= 1, max_queue >= 1 and max_delay_ms >= 0")
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self._max_delay_ns = int(max_delay_ms * 1e6)
        self._on_batch = on_batch  # (batch size, run time ns), called on the loop after each batch
        self._pending: deque[_Waiter[T, R]] = deque()
        self._running = False
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._busy_share = 0.0  # moving average of (batch run time / time since the previous batch ended)
        self._last_end_ns = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch (not counting the batch that runs now)."""
        return len(self._pending)

    def submit(self, item: T) -> asyncio.Future[Answer[R]]:
        """Queue `item`; the future resolves to its `Answer` or raises `BatchFailed`. Call on the event loop."""
        if self._closing:
            raise NotReady("server is shutting down")
        if len(self._pending) >= self.max_queue:
            raise Overloaded(f"queue full ({self.max_queue} requests waiting); retry later")
        future: asyncio.Future[Answer[R]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Waiter(item, future, time.perf_counter_ns()))
        self._idle.clear()
        if not self._running and (self._timer is None or len(self._pending) >= self.max_batch_size):
            self._flush()  # idle: run at once; or a forming batch just filled up
        return future

    async def drain(self) -> None:
        """Refuse new requests, finish every queued one, then stop the inference thread.

        Work outside the queue (a warm-up) is not waited for on the loop: the loop stays free while the thread
        finishes it."""
        self._closing = True
        if self._timer is not None and not self._running:
            self._flush()
        await self._idle.wait()
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)

    def on_thread(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run `fn(*args)` on the inference thread, outside the queue (loading, warm-up); await the result."""
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        n = min(len(self._pending), self.max_batch_size)
        batch = [self._pending.popleft() for _ in range(n)]
        self._running = True
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self._executor, self._run, [w.item for w in batch])
        done.add_done_callback(lambda f: self._finish(batch, _outcome_of(f)))

    def _run(self, items: list[T]) -> _Outcome[R]:  # on the inference thread
        start_ns = time.perf_counter_ns()
        try:
            values = self._run_batch(items)
        except Exception as err:  # noqa: BLE001 - a failing batch fails its requests, never the server
            return _Outcome(None, err, start_ns, time.perf_counter_ns())
        return _Outcome(values, None, start_ns, time.perf_counter_ns())

    @property
    def busy_share(self) -> float:
        """Moving average of the share of time the inference thread spends running batches."""
        return self._busy_share

    def _finish(self, batch: list[_Waiter[T, R]], out: _Outcome[R]) -> None:
        self._running = False
        n = len(batch)
        run_ns = out.end_ns - out.start_ns
        cycle_ns = out.end_ns - self._last_end_ns
        share = min(1.0, run_ns / cycle_ns) if self._last_end_ns and cycle_ns > 0 else 0.0
        self._busy_share += BUSY_SMOOTHING * (share - self._busy_share)
        self._last_end_ns = out.end_ns
        error: BatchFailed | None = None
        if out.error is not None:
            error = BatchFailed(f"inference failed for a batch of {n}: {short_reason(out.error)}")
            log.error("%s", error.message, exc_info=out.error)
        elif out.values is None or len(out.values) != n:
            got = "no" if out.values is None else len(out.values)
            error = BatchFailed(f"model returned {got} results for a batch of {n} requests")
            log.error("%s", error.message)
        for i, w in enumerate(batch):
            if w.future.done():  # the client went away
                continue
            if error is not None:
                w.future.set_exception(error)
            else:
                assert out.values is not None
                w.future.set_result(Answer(out.values[i], out.start_ns - w.enqueued_ns, run_ns, n))
        if self._on_batch is not None:
            try:
                self._on_batch(n, run_ns)
            except Exception:  # noqa: BLE001 - a failing observer must not strand the queued requests
                log.exception("the on_batch callback failed")
        self._next()

    def _next(self) -> None:
        if not self._pending:
            self._idle.set()
            return
        wait_ns = self._pending[0].enqueued_ns + self._max_delay_ns - time.perf_counter_ns()
        if (
            self._closing
            or wait_ns <= 0
            or len(self._pending) >= self.max_batch_size
            or self._busy_share < BUSY_TO_HOLD
        ):
            self._flush()
        else:
            self._timer = asyncio.get_running_loop().call_later(wait_ns / 1e9, self._flush)


def _outcome_of(done: asyncio.Future[_Outcome[R]]) -> _Outcome[R]:
    """`_run` catches Exception; this also covers a cancelled run or a BaseException, so no batch hangs."""
    try:
        return done.result()
    except BaseException as err:  # noqa: BLE001
        now_ns = time.perf_counter_ns()
        return _Outcome(None, err, now_ns, now_ns)


def short_reason(err: BaseException, limit: int = 300) -> str:
    """One line for a client: the last line of the message (TorchScript errors put the original exception there)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[-1] if lines else type(err).__name__
    if text.startswith("builtins."):
        text = text.removeprefix("builtins.")
    elif not text.startswith(type(err).__name__):
        text = f"{type(err).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
