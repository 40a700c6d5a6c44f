"""The `etude loadgen` verb: replay a workload against an inference server and write a result folder.

With `--find-capacity` it searches for the sustained capacity (a ramp to find the knee, then holds at candidate
rates); `--repeats N` measures N times (OUT/repeat-<i>/, their aggregate in OUT). Definitions: docs/design.md.

Exit status: 0 when the schedule ran to its end (whatever the latencies and errors: a slow model is a result);
2 with a one-line reason for bad arguments, a target that never became ready or results that could not be written;
130 / 143 after SIGINT / SIGTERM (sending stops, answers in flight get a few seconds, partial results are written).
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from etude import sustained
from etude.commands import LOADGEN_TIMEOUT_S
from etude.errors import UsageError
from etude.loadgen.workload_cli import add_workload_args, check_workload, laws_from_args

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Coroutine, Iterator
    from typing import Any

    import numpy as np

    from etude.loadgen.results import Search
    from etude.loadgen.runner import RunConfig, Runner, RunResult
    from etude.loadgen.schedule import Arrivals
    from etude.results import RunSpec, Summary

log = logging.getLogger(__name__)
T = TypeVar("T")

_SHARD = re.compile(r"^(\d+)/(\d+)$")
MERGE_GRACE_S = 60.0
START_LEAD_S = 2.0  # shard 0 sets the shared start this far ahead, once every shard is ready
CLOCK_POLL_S = 0.2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's verbs to the `etude` parser."""
    p = sub.add_parser(
        "loadgen",
        help="replay sessions against an inference server (paper Algorithm 2)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url", required=True, help="base URL of the server, e.g. http://127.0.0.1:8080")
    p.add_argument("--catalog-size", type=int, required=True, help="C: item ids are drawn from [0, C)")
    p.add_argument("--target-rps", type=int, required=True, help="r: requests per second at the end of the ramp")
    p.add_argument("--ramp-seconds", type=int, default=600, help="ticks of the linear ramp to r (>= 1)")
    p.add_argument("--hold-seconds", type=int, default=60, help="ticks at r after the ramp (>= 0)")
    add_workload_args(p, clicklog=True)
    p.add_argument("--seed", type=int, default=42)
    traffic = p.add_argument_group("arrivals and capacity (docs/design.md, Capacity)")
    traffic.add_argument("--arrivals", choices=sustained.ARRIVALS, default=sustained.DEFAULT_ARRIVALS,
                         help=f"send-slot process within the per-second rates (default {sustained.DEFAULT_ARRIVALS})")
    traffic.add_argument("--burstiness", type=float, metavar="CV",
                         help="bursty: coefficient of variation of the gaps, > 1 (Poisson is 1)")
    traffic.add_argument("--arrival-seed", type=int, metavar="N",
                         help="seed of the send slots (default: --seed; a stream separate from the sessions')")
    traffic.add_argument("--find-capacity", action="store_true",
                         help="search for the sustained capacity: a ramp to the knee, then holds at candidate rates")
    traffic.add_argument("--search-max-rps", type=int, metavar="R",
                         help=f"the search's highest rate (default {sustained.SEARCH_MAX_FACTOR} x --target-rps)")
    traffic.add_argument("--repeats", type=int, default=1, metavar="N",
                         help="measure N times: OUT/repeat-<i>/ each, their median capacity in OUT")
    p.add_argument("--slo-ms", type=float, default=50.0)
    p.add_argument("--slo-percentile", type=float, default=90.0)
    p.add_argument("--timeout-s", type=float, default=LOADGEN_TIMEOUT_S, help="per-request timeout")
    p.add_argument("--ready-timeout-s", type=float, default=120.0, help="how long to wait for GET /ping -> 200")
    p.add_argument("--warmup-requests", type=int, default=20, help="sent before the measurement, not recorded")
    p.add_argument("--max-session-items", type=int, default=None, metavar="N",
                   help="send only the N most recent clicks of a session (default: the whole session so far; "
                   "the server keeps as many as its model takes)")
    p.add_argument(
        "--spin-us",
        type=int,
        default=1000,
        help="wait the last stretch before a send slot by polling: exact send times for some CPU; 0 = off",
    )
    p.add_argument("--shard", help="i/n: this is copy i of n; each sends 1/n of the rate and of the sessions")
    p.add_argument(
        "--merge-wait-s",
        type=float,
        help="shard 0: how long to wait for the other shards (default ramp + hold + timeout + 60)",
    )
    p.add_argument("--out", required=True, help="result folder: a path or gs://bucket/prefix")
    ident = p.add_argument_group("identity (only echoed into summary.json)")
    for flag in ("--stack", "--run-id", "--variant", "--model", "--runtime", "--instance-type"):
        ident.add_argument(flag)
    ident.add_argument("--replicas", type=int, default=1)
    ident.add_argument("--monthly-usd", type=float)
    p.set_defaults(func=main)


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1
    given: str | None = None  # as on the command line


def parse_shard(text: str | None) -> Shard:
    if text is None:
        return Shard()
    m = _SHARD.match(text.strip())
    if not m:
        raise UsageError(f"--shard {text!r}: expected i/n with integers 0 <= i < n, e.g. 0/4")
    index, count = int(m[1]), int(m[2])
    if count < 1 or index >= count:
        raise UsageError(f"--shard {text!r}: need n >= 1 and 0 <= i < n")
    return Shard(index, count, text.strip())


def base_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--url {url!r}: not an http(s) URL with a host, e.g. http://127.0.0.1:8080")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as err:
        raise UsageError(f"--url {url!r}: {err}") from None
    return url.strip().rstrip("/")


def validate(args: argparse.Namespace) -> None:
    checks = [
        (args.catalog_size >= 1, f"--catalog-size {args.catalog_size}: must be >= 1"),
        (args.target_rps >= 1, f"--target-rps {args.target_rps}: must be >= 1"),
        (args.ramp_seconds >= 1, f"--ramp-seconds {args.ramp_seconds}: must be >= 1"),
        (args.hold_seconds >= 0, f"--hold-seconds {args.hold_seconds}: must be >= 0"),
        (args.seed >= 0, f"--seed {args.seed}: must be >= 0"),
        (args.slo_ms > 0, f"--slo-ms {args.slo_ms:g}: must be > 0"),
        (0 < args.slo_percentile < 100, f"--slo-percentile {args.slo_percentile:g}: must be in (0, 100)"),
        (args.timeout_s > 0, f"--timeout-s {args.timeout_s:g}: must be > 0"),
        (args.ready_timeout_s > 0, f"--ready-timeout-s {args.ready_timeout_s:g}: must be > 0"),
        (args.spin_us >= 0, f"--spin-us {args.spin_us}: must be >= 0"),
        (args.warmup_requests >= 0, f"--warmup-requests {args.warmup_requests}: must be >= 0"),
        (args.max_session_items is None or args.max_session_items >= 1,
         f"--max-session-items {args.max_session_items}: must be >= 1"),
        (args.replicas >= 1, f"--replicas {args.replicas}: must be >= 1"),
        (args.burstiness is None or args.arrivals == "bursty",
         f"--burstiness goes with --arrivals bursty, not {args.arrivals}"),
        (args.arrivals != "bursty" or (args.burstiness is not None and args.burstiness > 1),
         f"--arrivals bursty needs --burstiness > 1 (the gaps' coefficient of variation), got {args.burstiness}"),
        (args.arrival_seed is None or args.arrival_seed >= 0, f"--arrival-seed {args.arrival_seed}: must be >= 0"),
        (args.search_max_rps is None or args.find_capacity, "--search-max-rps goes with --find-capacity"),
        (args.search_max_rps is None or args.search_max_rps >= 1,
         f"--search-max-rps {args.search_max_rps}: must be >= 1"),
        (args.repeats >= 1, f"--repeats {args.repeats}: must be >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    check_workload(args)  # one workload, a synthetic one's flags (or file) checked before anything starts


def workload_spec(args: argparse.Namespace) -> dict[str, object]:
    if args.clicklog is not None:
        return {"clicklog": args.clicklog, **({"item_ids": args.item_ids} if args.item_ids is not None else {})}
    if args.workload is not None:
        return {"fitted": args.workload}
    if args.preset is not None:
        return {"preset": args.preset}
    return {"alpha_length": args.alpha_length, "alpha_clicks": args.alpha_clicks}


def sessions(args: argparse.Namespace, shard: Shard) -> Iterator[np.ndarray]:
    """The whole workload's session stream, of which this shard takes every n-th session (i, i + n, ...): the
    shards together replay exactly the unsharded stream, with the same catalog popularity."""
    from itertools import islice

    from etude.loadgen.workload import SyntheticWorkload, clicklog_sessions

    if args.clicklog is not None:
        stream = clicklog_sessions(args.clicklog, args.catalog_size, loop=True, item_ids=args.item_ids)
    else:
        stream = SyntheticWorkload(args.catalog_size, *laws_from_args(args), seed=args.seed).sessions()
    return islice(stream, shard.index, None, shard.count)


def run_spec(args: argparse.Namespace, url: str, shard: Shard) -> RunSpec:
    from etude.results import RunSpec

    return RunSpec(
        stack=args.stack,
        run_id=args.run_id,
        variant=args.variant,
        model=args.model,
        runtime=args.runtime,
        instance_type=args.instance_type,
        replicas=args.replicas,
        monthly_usd=args.monthly_usd,
        url=url,
        catalog_size=args.catalog_size,
        target_rps=args.target_rps,
        ramp_seconds=args.ramp_seconds,
        hold_seconds=args.hold_seconds,
        workload=workload_spec(args),
        seed=args.seed,
        slo_ms=args.slo_ms,
        slo_percentile=args.slo_percentile,
        shard=shard.given,
        arrivals=args.arrivals,
        burstiness=args.burstiness,
        arrival_seed=arrival_seed(args),
        find_capacity=args.find_capacity,
        search_max_rps=args.search_max_rps,
        repeats=args.repeats,
    )


def arrival_seed(args: argparse.Namespace) -> int:
    return args.seed if args.arrival_seed is None else int(args.arrival_seed)


def main(args: argparse.Namespace) -> int:
    from etude.loadgen import results
    from etude.loadgen.runner import RunConfig
    from etude.loadgen.schedule import Arrivals, shard_rate, tick_targets

    validate(args)
    url = base_url(args.url)
    shard = parse_shard(args.shard)
    if shard.count > 1 and (args.find_capacity or args.repeats > 1):
        raise UsageError("--find-capacity and --repeats run in one process: leave out --shard")
    rate = shard_rate(args.target_rps, shard.index, shard.count)
    if rate < 1:
        raise UsageError(
            f"--target-rps {args.target_rps} is below the shard count {shard.count}: shard "
            f"{shard.index} would send nothing"
        )
    sharded = shard.count > 1
    out = results.shard_dir(args.out, shard.index) if sharded else args.out
    stream = sessions(args, shard)
    results.check_writable(out)
    results.remove_summary(out)  # a reused folder must not look complete before this run wrote it
    if (sharded and shard.index == 0) or args.repeats > 1:
        results.remove_summary(args.out)
    launched = datetime.now(UTC)
    # The copies of an Indexed Job start together; one whose measurement began before this copy was even
    # launched (less the time a copy may spend waiting for the server) belongs to an earlier run.
    not_before = launched - timedelta(seconds=args.ready_timeout_s + MERGE_GRACE_S)
    config = RunConfig(
        base_url=url,
        catalog_size=args.catalog_size,
        targets=tick_targets(rate, args.ramp_seconds, args.hold_seconds),
        arrivals=Arrivals(args.arrivals, args.burstiness, arrival_seed(args), (shard.index,)),
        timeout_s=args.timeout_s,
        ready_timeout_s=args.ready_timeout_s,
        warmup_requests=args.warmup_requests,
        session_id_offset=shard.index,
        session_id_step=shard.count,
        spin_ns=args.spin_us * 1000,
        max_items=args.max_session_items,
    )
    spec = run_spec(args, url, shard)
    max_rate = sustained.search_max_rps(rate, args.search_max_rps) if args.find_capacity else max(config.targets)
    summaries = []
    signum: int | None = None
    for repeat in range(args.repeats):
        where = results.repeat_dir(args.out, repeat) if args.repeats > 1 else out
        if args.repeats > 1:
            results.remove_summary(where)
        arrivals = config.arrivals.with_stream(repeat)
        clock = SharedClock(args.out, shard, not_before, args.ready_timeout_s) if sharded else None
        result, search, signum = run(config, stream, spec, arrivals, max_rate, clock)
        if result is None:
            assert signum is not None
            print(
                f"etude loadgen: stopped by {signal.Signals(signum).name} before the measurement started; "
                "no results written",
                file=sys.stderr,
            )
            return 128 + signum
        one = spec if args.repeats == 1 else spec.model_copy(update={"repeat": repeat})
        summary, requests, timeline = results.build(result, one, search)
        results.write_or_keep(where, summary, requests, timeline)
        report(summary, where)
        summaries.append(summary)
        if signum is not None:
            break
    if args.repeats > 1:
        report(results.write_repeats(args.out, spec, summaries), args.out)
    if sharded and shard.index == 0 and signum is None:
        wait_s = args.merge_wait_s
        if wait_s is None:
            wait_s = args.ramp_seconds + args.hold_seconds + args.timeout_s + MERGE_GRACE_S
        present = results.wait_for_shards(args.out, shard.count, wait_s, not_before)
        report(results.merge(args.out, shard.count, spec, present), args.out)
    if signum is not None:
        print(f"etude loadgen: stopped by {signal.Signals(signum).name}; partial results in {out}", file=sys.stderr)
        return 128 + signum
    return 0


class SharedClock:
    """The shards of a run start their schedules at one wall-clock instant: each writes `OUT/clock/ready-<i>` once
    ready (server answering, warm-up done); shard 0 waits for all of them (up to the readiness timeout: a shard
    not ready by then is not coming), then writes `OUT/clock/start.json` with an instant START_LEAD_S ahead; the
    others wait for it (up to the readiness timeout + a grace period). Files older than `not_before` belong to an
    earlier run and are ignored."""

    def __init__(self, out: str, shard: Shard, not_before: datetime, ready_timeout_s: float) -> None:
        self.out = out
        self.shard = shard
        self.not_before_ns = int(not_before.timestamp() * 1e9)
        self.ready_timeout_s = ready_timeout_s

    def _uri(self, name: str) -> str:
        from etude import storage

        return storage.join(self.out, "clock", name)

    def _read_ns(self, name: str) -> int | None:
        import json

        from etude import storage

        uri = self._uri(name)
        try:
            if not storage.exists(uri):
                return None
            value = int(json.loads(storage.read_bytes(uri))["epoch_ns"])
        except (storage.StorageError, ValueError, KeyError, TypeError):
            return None  # half-visible or foreign: look again
        return value if value >= self.not_before_ns else None

    def _write_ns(self, name: str, epoch_ns: int) -> None:
        import json

        from etude import storage

        storage.write_bytes(self._uri(name), json.dumps({"epoch_ns": epoch_ns}).encode())

    def start_ns(self) -> int:
        """Blocking: the shared start instant (ns since the epoch)."""
        import time

        self._write_ns(f"ready-{self.shard.index}", time.time_ns())
        if self.shard.index == 0:
            deadline = time.monotonic() + self.ready_timeout_s
            waiting = set(range(1, self.shard.count))
            while waiting and time.monotonic() < deadline:
                waiting = {i for i in waiting if self._read_ns(f"ready-{i}") is None}
                if waiting:
                    time.sleep(CLOCK_POLL_S)
            if waiting:
                log.warning("shards %s not ready in time; starting without waiting for them", sorted(waiting))
            start = time.time_ns() + int(START_LEAD_S * 1e9)
            self._write_ns("start.json", start)
            return start
        wait_s = self.ready_timeout_s + MERGE_GRACE_S
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            shared = self._read_ns("start.json")
            if shared is not None:
                return shared
            time.sleep(CLOCK_POLL_S)
        raise UsageError(f"shard 0 wrote no start time to {self._uri('start.json')} within {wait_s:g} s")


def run(
    config: RunConfig,
    stream: Iterator[np.ndarray],
    spec: RunSpec,
    arrivals: Arrivals,
    max_rate: int,
    clock: SharedClock | None = None,
) -> tuple[RunResult | None, Search | None, int | None]:
    """Run a plain schedule or a capacity search (`spec.find_capacity`) on a fresh event loop (uvloop when
    installed); SIGINT/SIGTERM stop it early. (None, None, signal) when a signal came before the measurement."""
    import asyncio

    from etude.loadgen.runner import Runner, client_session
    from etude.loadgen.search import find_capacity

    runner = Runner(config, stream)
    got: list[int] = []

    async def go() -> tuple[RunResult, Search | None]:
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()
        assert main_task is not None
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, _on_signal, signum, runner, main_task, got)
        async with client_session(config, max_rate) as http:
            await runner.start(http, None if clock is None else lambda: asyncio.to_thread(clock.start_ns))
            if spec.find_capacity:
                search = await find_capacity(runner, spec, arrivals)
                return runner.result(), search
            await runner.phase(config.targets, arrivals)
            return runner.result(), None

    try:
        result, search = new_loop_run(go())
    except asyncio.CancelledError:
        return None, None, got[0]
    return result, search, (got[0] if got else None)


def _on_signal(signum: int, runner: Runner, main_task: asyncio.Task[Any], got: list[int]) -> None:
    got.append(signum)
    if runner.measuring:
        log.warning("%s: stopping; waiting briefly for answers in flight", signal.Signals(signum).name)
        runner.stop()
    else:
        main_task.cancel()


def new_loop_run(coro: Coroutine[Any, Any, T]) -> T:
    """uvloop when installed, unless ETUDE_LOADGEN_LOOP=asyncio (the benchmark compares both)."""
    import asyncio
    import os

    if os.environ.get("ETUDE_LOADGEN_LOOP", "uvloop") == "asyncio":
        return asyncio.run(coro)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def report(summary: Summary, out: str) -> None:
    """One line a person reads at the end of a run (deliberate CLI output)."""
    lat = summary.latency_from_intended_ms
    p = f"p{summary.spec.slo_percentile:g}"
    shown = f"p50 {lat.p50:.1f} ms, p90 {lat.p90:.1f} ms, p99 {lat.p99:.1f} ms" if lat else "no ok answers"
    capacity = "not established" if summary.capacity_rps is None else f"{summary.capacity_rps:g} rps"
    if summary.repeat_capacity_rps:
        capacity += f" (median of {summary.repeat_capacity_rps}, spread {summary.capacity_spread})"
    print(
        f"{out}: {summary.ok}/{summary.requests} ok, errors {summary.errors or 'none'}, held back "
        f"{summary.held_back}, achieved {summary.achieved_rps:g} rps, {shown} (from intended send); "
        f"capacity ({p} <= {summary.spec.slo_ms:g} ms, {summary.spec.arrivals} arrivals) {capacity}, "
        f"slo_met {summary.slo_met}{', PARTIAL' if summary.partial else ''}"
    )
