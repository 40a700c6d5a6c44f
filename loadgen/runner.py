"""The backpressure-aware load generator (paper Algorithm 2), with what the original gets wrong fixed.

One sender coroutine walks the schedule (loadgen/schedule.py): tick k has r_c as its target rate and the send
slots the arrival process put into it. Before each slot it waits until the slot is due; while the number of
pending requests p >= r_c it waits in 1 ms steps (backpressure); slots the tick runs out of are counted as held
back, never dropped silently. Each send is a task in a set bounded by r_c (in flight never exceeds r_c). Sessions
are replayed in order: a session's next click is sent only after the answer to its previous click arrived, and
each request carries the session so far (most recent last; only the `max_items` most recent clicks when that is
set). Every request keeps its intended slot, actual send and receive times (wrk2's fix for coordinated omission),
its status and the server's timing headers.

A run is one or more phases on one clock (a plain run: ramp + hold; a capacity search: a ramp, then holds):
each phase starts at a whole second after the previous phase's answers came back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from array import array
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from etude.commands import DEFAULT_K
from etude.errors import UsageError
from etude.loadgen import client
from etude.loadgen.schedule import NS_PER_S, Arrivals, due_times_ns
from etude.results import COUNT_COLUMNS
from etude.sustained import HOLD_GAP_S

if TYPE_CHECKING:
    import aiohttp
    import numpy as np

log = logging.getLogger(__name__)

SPIN_NS = 1_000_000  # the last stretch before a due slot is waited by yielding, not sleeping (timer granularity)
BACKPRESSURE_WAIT_S = 0.001
BEHIND_NS = 1_000_000  # a send this late is catching up: yield between such sends
PROGRESS_EVERY_TICKS = 10  # a log line per this many seconds (kubectl logs shows a run's progress)
MAX_SLEEP_S = 0.05  # sleeps are chopped so that a stop request is noticed quickly
FILE_MARGIN = 64  # open files beyond the connections: the interpreter, logs, result files


@dataclass(frozen=True)
class RunConfig:
    base_url: str  # http://host:port, no trailing slash
    catalog_size: int
    targets: Sequence[int]  # r_c per tick of a plain run (`Runner.run`)
    arrivals: Arrivals = field(default_factory=Arrivals)
    timeout_s: float = 10.0
    ready_timeout_s: float = 120.0
    warmup_requests: int = 20
    stop_grace_s: float = 5.0  # after a stop request: how long to wait for answers in flight
    max_items: int | None = None  # send at most this many recent clicks; None: the whole session so far
    spin_ns: int = SPIN_NS
    session_id_offset: int = 0  # shard i of n numbers its sessions i, i + n, i + 2n, ...
    session_id_step: int = 1


class Records:
    """Column buffers for the request records: compact arrays, not one Python object per request."""

    def __init__(self) -> None:
        self.session_id = array("q")
        self.position = array("i")
        self.item_id = array("q")
        self.intended_ns = array("q")
        self.sent_ns = array("q")
        self.received_ns = array("q")
        self.status = array("i")
        self.queue_ms = array("d")
        self.inference_ms = array("d")
        self.batch_size = array("i")

    def __len__(self) -> int:
        return len(self.status)

    def columns(self) -> dict[str, np.ndarray]:
        import numpy as np

        return {
            name: np.frombuffer(buf, dtype=buf.typecode).copy() if len(buf) else np.array([], dtype=buf.typecode)
            for name, buf in vars(self).items()
        }


@dataclass
class TickCounters:
    values: dict[str, list[int]] = field(default_factory=lambda: {name: [] for name in COUNT_COLUMNS})

    def add(self, name: str, tick: int, n: int = 1) -> None:
        column = self.values[name]
        if tick >= len(column):
            for other in self.values.values():
                other.extend([0] * (tick + 1 - len(other)))
        column[tick] += n

    def set(self, name: str, tick: int, value: int) -> None:
        self.add(name, tick, 0)
        self.values[name][tick] = value


@dataclass
class RunResult:
    records: dict[str, np.ndarray]  # Records.columns(): status as int codes (client.status_name)
    ticks: dict[str, list[int]]  # COUNT_COLUMNS, one entry per second (ticks of the schedule, then drain seconds)
    started_at: str  # ISO 8601 UTC of the start of the measurement
    duration_s: float
    partial: bool
    late: int  # slots not sent because the generator itself fell behind (included in held_back)


@dataclass(frozen=True)
class Phase:
    """Where one phase of a run lies on the run's clock."""

    first_tick: int
    ticks: int  # scheduled ticks that ran (fewer than planned when it stopped early)
    stopped_early: bool  # by its stop rule (the ramp of a capacity search), not by a signal


@dataclass(frozen=True)
class StopRule:
    """End a phase once `run_seconds` consecutive seconds violated the SLO (the per-second rule of the timeline)."""

    slo_ms: float
    percentile: float
    run_seconds: int


class Runner:
    """One run against one server: `start`, then one or more `phase`s, then `result`. `sessions` must yield sessions
    (item ids) for as long as needed."""

    def __init__(self, config: RunConfig, sessions: Iterator[Sequence[int] | np.ndarray]) -> None:
        self.config = config
        self._sessions = sessions
        self._url = client.recommend_url(config.base_url)
        self._records = Records()
        self._ticks = TickCounters()
        self._ready: deque[tuple[int, list[int], int]] = deque()  # (session id, items, next position)
        self._next_session = 0
        self._in_flight: set[asyncio.Task[None]] = set()
        self._t0_ns = 0
        self._cpu0_ns = 0
        self._started_at = ""
        self._next_tick = 0
        self._rule: StopRule | None = None
        self._within: dict[int, int] = {}  # ok answers within the stop rule's SLO, per second of completion
        self._http: aiohttp.ClientSession | None = None
        self.measuring = False
        self._stop = False
        self._exhausted = False
        self._late = 0
        self._crash: BaseException | None = None  # a request task that failed in our own code

    def stop(self) -> None:
        """Stop sending (signal handler): answers in flight get `stop_grace_s`, then the run ends as partial."""
        self._stop = True

    @property
    def stopped(self) -> bool:
        return self._stop or self._exhausted

    async def run(self, http: aiohttp.ClientSession) -> RunResult:
        """A plain run: the config's targets as one phase."""
        await self.start(http)
        await self.phase(self.config.targets, self.config.arrivals)
        return self.result()

    async def start(
        self, http: aiohttp.ClientSession, start_epoch_ns: Callable[[], Awaitable[int]] | None = None
    ) -> None:
        """Wait for the server and warm up. The clock starts with the first phase, or at the wall-clock instant
        `start_epoch_ns` returns (the shared start of the shards of a run; the first slots wait for it)."""
        cfg = self.config
        await client.wait_ready(http, cfg.base_url, cfg.ready_timeout_s)
        await client.warm_up(http, self._url, cfg.catalog_size, cfg.warmup_requests)
        self._prime()
        self._http = http
        self.measuring = True
        if start_epoch_ns is not None:
            epoch_ns = await start_epoch_ns()
            self._start_clock(time.perf_counter_ns() + (epoch_ns - time.time_ns()),
                              datetime.fromtimestamp(epoch_ns / NS_PER_S, UTC))

    def _start_clock(self, t0_ns: int, started: datetime) -> None:
        self._t0_ns = t0_ns
        self._started_at = started.isoformat(timespec="milliseconds")
        self._cpu0_ns = time.process_time_ns()

    async def phase(self, targets: Sequence[int], arrivals: Arrivals, stop_rule: StopRule | None = None) -> Phase:
        """Send `targets` (r_c per tick) from the next whole second on, then wait for the answers (the timeout; the
        grace period once stopped)."""
        due, bounds = due_times_ns(targets, arrivals)  # before the clock starts: the first slot is due at once
        if not self._started_at:
            self._start_clock(time.perf_counter_ns(), datetime.now(UTC))
        first = self._next_tick
        self._rule = stop_rule
        ran, early = await self._send_schedule(first, targets, due + first * NS_PER_S, bounds)
        self._rule = None
        cfg = self.config
        await self._drain(cfg.stop_grace_s if self.stopped else cfg.timeout_s + HOLD_GAP_S)
        self._next_tick = max(first + ran, -(-self._now() // NS_PER_S))
        return Phase(first, ran, early)

    def snapshot(self) -> RunResult:
        """Everything the phases recorded so far."""
        if self._crash is not None:  # a bug, not a result: never report a run that silently lost requests
            raise RuntimeError("a request task failed; the run is not valid") from self._crash
        return RunResult(self._records.columns(), self._ticks.values, self._started_at, self._now() / 1e9,
                         self.stopped, self._late)

    def result(self) -> RunResult:
        """Everything the phases recorded, at the end of the run (with a word on the client's own load)."""
        result = self.snapshot()
        duration_s = result.duration_s
        cpu_s = (time.process_time_ns() - self._cpu0_ns) / 1e9
        log.info("client CPU: %.2f s in %.2f s (%.0f%% of a core)", cpu_s, duration_s,
                 100 * cpu_s / max(duration_s, 1e-9))
        if self._late:
            log.warning(
                "the load generator fell behind its own schedule: %d slots unsent (counted as held back); "
                "the measurement is limited by this client, not the server",
                self._late,
            )
        return result

    def _prime(self) -> None:
        """Draw the first session before the clock starts (a synthetic stream generates its first block then)."""
        click = self._next_click()
        if click is not None:
            self._ready.append(click)

    # -- the sender --------------------------------------------------------------------------------------------

    def _now(self) -> int:
        return time.perf_counter_ns() - self._t0_ns

    async def _wait_until(self, due_ns: int) -> int:
        """Sleep until `due_ns`; the last `spin_ns` by yielding to the loop (sleep timers have ~1 ms granularity)."""
        while True:
            now = self._now()
            left = due_ns - now
            if left <= 0 or self._stop:
                return now
            if left > self.config.spin_ns:
                await asyncio.sleep(min((left - self.config.spin_ns) / 1e9, MAX_SLEEP_S))
            else:
                await asyncio.sleep(0)

    async def _send_schedule(
        self, first: int, targets: Sequence[int], due: np.ndarray, bounds: np.ndarray
    ) -> tuple[int, bool]:
        """Ticks sent and whether the stop rule ended the phase."""
        for k, rate in enumerate(targets):
            tick = first + k
            tick_end = (tick + 1) * NS_PER_S
            slots = due[bounds[k] : bounds[k + 1]].tolist()
            self._ticks.set("target_rps", tick, rate)
            self._ticks.set("scheduled", tick, len(slots))
            sent = 0
            held = False  # backpressure made this tick wait at least once
            for slot_due in slots:
                now = await self._wait_until(slot_due)
                while len(self._in_flight) >= rate and now < tick_end and not self._stop:
                    held = True
                    await asyncio.sleep(BACKPRESSURE_WAIT_S)
                    now = self._now()
                if now >= tick_end or self._stop or not self._launch(slot_due):
                    break
                sent += 1
                if now - slot_due > BEHIND_NS:
                    # Behind schedule: let the request just launched (and answers) run before the next one, so that
                    # catching up does not turn into a burst that opens a connection per late slot.
                    await asyncio.sleep(0)
            if self.stopped:
                return k + 1, False
            if sent < len(slots):
                self._ticks.set("held_back", tick, len(slots) - sent)
                if not held:
                    self._late += len(slots) - sent
            await self._wait_until(tick_end)
            self._ticks.set("in_flight", tick, len(self._in_flight))
            if (k + 1) % PROGRESS_EVERY_TICKS == 0 or k + 1 == len(targets):
                self._progress(tick, k, len(targets))
            if self._rule is not None and self._violated_run(first, tick, self._rule):
                log.info("second %d: %d seconds in a row violated the SLO; ending this phase", tick + 1,
                         self._rule.run_seconds)
                return k + 1, True
        return len(targets), False

    def _violated_run(self, first: int, tick: int, rule: StopRule) -> bool:
        """Whether the `rule.run_seconds` seconds up to `tick` (all of this phase) each violated the SLO: errors,
        held-back sends, or fewer than the percentile's share of the ok answers completed within the SLO."""
        if tick - rule.run_seconds + 1 < first:
            return False
        v = self._ticks.values
        for t in range(tick - rule.run_seconds + 1, tick + 1):
            ok = v["ok"][t]
            slow = ok > 0 and self._within.get(t, 0) < math.ceil(rule.percentile / 100 * ok - 1e-9)
            if not (v["errors"][t] or v["held_back"][t] or slow):
                return False
        return True

    def _progress(self, tick: int, k: int, ticks: int) -> None:
        v = self._ticks.values
        log.info(
            "second %d (%d/%d of this phase): target %d rps, sent %d, ok %d, errors %d, held back %d, in flight %d",
            tick + 1,
            k + 1,
            ticks,
            v["target_rps"][tick],
            v["sent"][tick],
            v["ok"][tick],
            v["errors"][tick],
            v["held_back"][tick],
            v["in_flight"][tick],
        )

    def _launch(self, due_ns: int) -> bool:
        click = self._next_click()
        if click is None:
            return False
        task = asyncio.get_running_loop().create_task(self._request(*click, due_ns))
        self._in_flight.add(task)
        task.add_done_callback(self._done)
        return True

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None and self._crash is None:
            self._crash = task.exception()
            self._stop = True

    def _next_click(self) -> tuple[int, list[int], int] | None:
        if self._ready:
            return self._ready.popleft()
        while True:
            try:
                session = next(self._sessions)
            except StopIteration:
                log.warning("the workload ran out of sessions; stopping early")
                self._exhausted = True
                return None
            items = session.tolist() if hasattr(session, "tolist") else list(session)
            if items:
                break
        sid = self.config.session_id_offset + self._next_session * self.config.session_id_step
        self._next_session += 1
        return sid, items, 0

    async def _request(self, sid: int, items: list[int], position: int, due_ns: int) -> None:
        first = 0 if self.config.max_items is None else max(0, position + 1 - self.config.max_items)
        window = items[first : position + 1]
        body = json.dumps({"session": window, "k": DEFAULT_K}).encode()
        sent_ns = self._now()
        self._ticks.add("sent", sent_ns // NS_PER_S)
        assert self._http is not None
        try:
            answer = await client.recommend(self._http, self._url, body)
        except asyncio.CancelledError:
            answer = client.Answer(client.CANCELLED, -1)
        done_tick = self._now() // NS_PER_S
        received_ns = answer.received_ns - self._t0_ns if answer.received_ns >= 0 else -1
        r = self._records
        r.session_id.append(sid)
        r.position.append(position)
        r.item_id.append(items[position])
        r.intended_ns.append(due_ns)
        r.sent_ns.append(sent_ns)
        r.received_ns.append(received_ns)
        r.status.append(answer.status)
        r.queue_ms.append(answer.queue_ms)
        r.inference_ms.append(answer.inference_ms)
        r.batch_size.append(answer.batch_size)
        self._ticks.add("completed", done_tick)
        self._ticks.add("ok" if answer.status == client.OK else "errors", done_tick)
        rule = self._rule
        if rule is not None and answer.status == client.OK and received_ns - due_ns <= rule.slo_ms * 1e6:
            self._within[done_tick] = self._within.get(done_tick, 0) + 1
        if position + 1 < len(items) and answer.status != client.CANCELLED:
            self._ready.append((sid, items, position + 1))

    async def _drain(self, wait_s: float) -> None:
        """Wait up to `wait_s` for answers in flight, noting in-flight counts per second; cancel what is left."""
        deadline_ns = self._now() + int(wait_s * NS_PER_S)
        stop_seen = self._stop
        while self._in_flight and self._now() < deadline_ns:
            now = self._now()
            if self._stop and not stop_seen:  # stopped while draining: only the grace period is left
                stop_seen = True
                deadline_ns = min(deadline_ns, now + int(self.config.stop_grace_s * NS_PER_S))
            second_end = (now // NS_PER_S + 1) * NS_PER_S
            await asyncio.wait(set(self._in_flight), timeout=(min(second_end, deadline_ns) - now) / 1e9)
            self._ticks.set("in_flight", (self._now() - 1) // NS_PER_S, len(self._in_flight))
        leftover = set(self._in_flight)
        for task in leftover:
            task.cancel()
        if leftover:
            log.warning("%d requests still unanswered at the end were cancelled", len(leftover))
            await asyncio.gather(*leftover, return_exceptions=True)


def client_session(config: RunConfig, max_rate: int | None = None) -> aiohttp.ClientSession:
    """The one HTTP client of a run: a pool as large as the most requests that can be in flight, the per-request
    timeout, no cookies. `max_rate`: the highest r_c of every phase (default: the config's targets)."""
    import aiohttp

    limit = connection_limit(max_rate if max_rate is not None else max(config.targets, default=1), config.timeout_s)
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=config.timeout_s), cookie_jar=aiohttp.DummyCookieJar()
    )


def pool_size(max_rate: int, timeout_s: float) -> int:
    """Connections a run needs so that a stamped request never waits for one: backpressure keeps at most r_c in
    flight, and a request is in flight for at most the timeout, so at most min(r_c, ceil(r_c x timeout)) at once
    (the latter bound matters for timeouts under a second)."""
    return max(1, min(max_rate, math.ceil(max_rate * timeout_s)))


def connection_limit(max_rate: int, timeout_s: float) -> int:
    """`pool_size`, after raising the file limit as far as needed and allowed; a UsageError naming the figure
    when the hard limit is too low (a smaller pool would make requests queue in the client, timed as latency)."""
    import resource

    pool = pool_size(max_rate, timeout_s)
    want = pool + FILE_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return pool
    if hard != resource.RLIM_INFINITY and hard < want:
        raise UsageError(
            f"this run needs {want} open files ({pool} connections for up to {max_rate} requests/s + {FILE_MARGIN}); "
            f"the limit here is {hard} (ulimit -Hn): raise it or lower the rate"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return pool
