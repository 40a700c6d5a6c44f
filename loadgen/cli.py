"""The `etude loadgen` verb: replay a workload against an inference server and write a result folder.

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
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from etude.errors import UsageError
from loadgen.workload_cli import add_workload_args, check_workload, laws_from_args

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Coroutine, Iterator
    from typing import Any

    import numpy as np

    from etude.results import RunSpec, Summary
    from loadgen.runner import RunConfig, Runner, RunResult

log = logging.getLogger(__name__)

_SHARD = re.compile(r"^(\d+)/(\d+)$")
MERGE_GRACE_S = 60.0


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
    p.add_argument("--slo-ms", type=float, default=50.0)
    p.add_argument("--slo-percentile", type=float, default=90.0)
    p.add_argument("--timeout-s", type=float, default=10.0, help="per-request timeout")
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
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    check_workload(args)  # one workload, a synthetic one's flags (or file) checked before anything starts


def workload_spec(args: argparse.Namespace) -> dict[str, object]:
    if args.clicklog is not None:
        return {"clicklog": args.clicklog}
    if args.workload is not None:
        return {"fitted": args.workload}
    if args.preset is not None:
        return {"preset": args.preset}
    return {"alpha_length": args.alpha_length, "alpha_clicks": args.alpha_clicks}


def sessions(args: argparse.Namespace, shard: Shard) -> Iterator[np.ndarray]:
    """The whole workload's session stream, of which this shard takes every n-th session (i, i + n, ...): the
    shards together replay exactly the unsharded stream, with the same catalog popularity."""
    from itertools import islice

    from loadgen.workload import SyntheticWorkload, clicklog_sessions

    if args.clicklog is not None:
        stream = clicklog_sessions(args.clicklog, args.catalog_size, loop=True)
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
    )


def main(args: argparse.Namespace) -> int:
    from loadgen import results
    from loadgen.runner import RunConfig
    from loadgen.schedule import shard_rate, tick_targets

    validate(args)
    url = base_url(args.url)
    shard = parse_shard(args.shard)
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
    if sharded and shard.index == 0:
        results.remove_summary(args.out)
    launched = datetime.now(UTC)
    config = RunConfig(
        base_url=url,
        catalog_size=args.catalog_size,
        targets=tick_targets(rate, args.ramp_seconds, args.hold_seconds),
        timeout_s=args.timeout_s,
        ready_timeout_s=args.ready_timeout_s,
        warmup_requests=args.warmup_requests,
        session_id_offset=shard.index,
        session_id_step=shard.count,
        spin_ns=args.spin_us * 1000,
        max_items=args.max_session_items,
    )
    result, signum = run(config, stream)
    if result is None:
        assert signum is not None
        print(
            f"etude loadgen: stopped by {signal.Signals(signum).name} before the measurement started; "
            "no results written",
            file=sys.stderr,
        )
        return 128 + signum
    spec = run_spec(args, url, shard)
    summary, requests, timeline = results.build(result, spec)
    results.write_or_keep(out, summary, requests, timeline)
    report(summary, out)
    if sharded and shard.index == 0 and signum is None:
        wait_s = args.merge_wait_s
        if wait_s is None:
            wait_s = args.ramp_seconds + args.hold_seconds + args.timeout_s + MERGE_GRACE_S
        # The copies of an Indexed Job start together; one whose measurement began before this copy was even
        # launched (less the time a copy may spend waiting for the server) belongs to an earlier run.
        not_before = launched - timedelta(seconds=args.ready_timeout_s + MERGE_GRACE_S)
        present = results.wait_for_shards(args.out, shard.count, wait_s, not_before)
        report(results.merge(args.out, shard.count, spec, present), args.out)
    if signum is not None:
        print(f"etude loadgen: stopped by {signal.Signals(signum).name}; partial results in {out}", file=sys.stderr)
        return 128 + signum
    return 0


def run(config: RunConfig, stream: Iterator[np.ndarray]) -> tuple[RunResult | None, int | None]:
    """Run the schedule on a fresh event loop (uvloop when installed); SIGINT/SIGTERM stop it early.
    (None, signal) when a signal came before the measurement started."""
    import asyncio

    from loadgen.runner import Runner, client_session

    runner = Runner(config, stream)
    got: list[int] = []

    async def go() -> RunResult:
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()
        assert main_task is not None
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, _on_signal, signum, runner, main_task, got)
        async with client_session(config) as http:
            return await runner.run(http)

    try:
        return new_loop_run(go()), (got[0] if got else None)
    except asyncio.CancelledError:
        return None, got[0]


def _on_signal(signum: int, runner: Runner, main_task: asyncio.Task[Any], got: list[int]) -> None:
    got.append(signum)
    if runner.measuring:
        log.warning("%s: stopping; waiting briefly for answers in flight", signal.Signals(signum).name)
        runner.stop()
    else:
        main_task.cancel()


def new_loop_run(coro: Coroutine[Any, Any, RunResult]) -> RunResult:
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
    print(
        f"{out}: {summary.ok}/{summary.requests} ok, errors {summary.errors or 'none'}, held back "
        f"{summary.held_back}, achieved {summary.achieved_rps:g} rps, {shown} (from intended send); "
        f"max rps within SLO ({p} <= {summary.spec.slo_ms:g} ms) {summary.max_rps_within_slo:g}, "
        f"slo_met {summary.slo_met}{', PARTIAL' if summary.partial else ''}"
    )
