"""Benchmark of the load generator: how many requests/s one process on one core sustains, how exactly it keeps
its schedule, and how much it adds to a server's latency.

Runs `etude loadgen` pinned to one core (taskset) against the raw-asyncio reference server (loadgen/refserver.py)
pinned to the other core, for a series of target rates, and reads the result folders:
- send-time error = actual send - intended slot (p50/p99/max over the hold phase), held back, achieved rps,
  CPU seconds the load generator used per wall second;
- against a server with a fixed delay D: reported latency from the send minus D = client overhead (plus the
  reference server's own timer lateness, measured at D = 0 too).

    flock /tmp/etude-bench.lock .venv/bin/python benchmarks/bench_loadgen.py [--rates 1000,5000] [--loop uvloop]

Each setting runs --repeat times and the best run is shown (fewest held back, then lowest send-error p99; for
the fixed delay, lowest p50): on a shared VM other processes take the core at times, which no client can help.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from etude.loadgen import results
from etude.processes import NotReady, free_port, wait_ready

PY = sys.executable


def start_server(core: int, delay_ms: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = ["taskset", "-c", str(core), PY, "-m", "etude.loadgen.refserver", "--port", str(port),
           "--delay-ms", str(delay_ms)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, timeout_s=10)
    except NotReady:
        proc.kill()
        raise
    return proc, url


def run_loadgen(url: str, core: int, rate: int, ramp_s: int, hold_s: int, loop: str, spin_us: int) -> dict[str, float]:
    out = tempfile.mkdtemp(prefix="bench-loadgen-")
    cmd = [
        "taskset",
        "-c",
        str(core),
        PY,
        "-m",
        "etude",
        "--log-level",
        "INFO",
        "loadgen",
        "--url",
        url,
        "--catalog-size",
        "10000",
        "--target-rps",
        str(rate),
        "--ramp-seconds",
        str(ramp_s),
        "--hold-seconds",
        str(hold_s),
        "--preset",
        "bolcom",
        "--arrivals",
        "uniform",
        "--warmup-requests",
        "100",
        "--spin-us",
        str(spin_us),
        "--out",
        out,
    ]
    proc = subprocess.run(
        cmd,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ETUDE_LOADGEN_LOOP": loop},
    )
    cpu = re.search(r"client CPU: ([\d.]+) s in ([\d.]+) s", proc.stderr)
    assert cpu, proc.stderr
    summary, requests, _ = results.read(out)
    intended = requests.column("intended_ns").to_numpy()
    sent = requests.column("sent_ns").to_numpy()
    hold = intended >= ramp_s * 1_000_000_000
    err_ms = (sent[hold] - intended[hold]) / 1e6
    lat = summary.latency_ms
    return {
        "target": rate,
        "achieved": summary.achieved_rps,
        "held_back": summary.held_back,
        "errors": sum(summary.errors.values()),
        "err_p50": float(np.percentile(err_ms, 50)),
        "err_p99": float(np.percentile(err_ms, 99)),
        "err_max": float(err_ms.max()),
        "cpu": float(cpu[1]) / float(cpu[2]),  # CPU seconds per second of the run (the runner logs it)
        "lat_p50": lat.p50 if lat else float("nan"),
        "lat_p99": lat.p99 if lat else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="500,1000,2000,3000,5000,6000,7000,8000,10000")
    parser.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"])
    parser.add_argument("--spin-us", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per setting; the best one is shown")
    parser.add_argument("--ramp-s", type=int, default=2)
    parser.add_argument("--hold-s", type=int, default=8)
    parser.add_argument("--delays-ms", default="0,5,20")
    parser.add_argument("--delay-rate", type=int, default=500)
    args = parser.parse_args()
    Path(tempfile.gettempdir()).mkdir(exist_ok=True)

    print(
        f"## throughput and schedule accuracy ({args.loop}, --spin-us {args.spin_us}; "
        "loadgen on core 0, reference server on core 1)"
    )
    print(
        "| target rps | achieved rps | held back | errors | send error p50 / p99 / max ms | CPU (cores) "
        "| latency p50 / p99 ms |"
    )
    print("|---|---|---|---|---|---|---|")
    server, url = start_server(1, 0.0)
    try:
        for rate in (int(r) for r in args.rates.split(",")):
            # best of --repeat (lowest send-error p99): other processes on the shared VM take the core at times
            runs = [
                run_loadgen(url, 0, rate, args.ramp_s, args.hold_s, args.loop, args.spin_us) for _ in range(args.repeat)
            ]
            m = min(runs, key=lambda r: (r["held_back"], r["err_p99"]))
            print(
                f"| {rate} | {m['achieved']:.0f} | {m['held_back']:.0f} | {m['errors']:.0f} "
                f"| {m['err_p50']:.3f} / {m['err_p99']:.3f} / {m['err_max']:.1f} | {m['cpu']:.2f} "
                f"| {m['lat_p50']:.2f} / {m['lat_p99']:.2f} |",
                flush=True,
            )
    finally:
        server.kill()

    print(f"\n## latency against a fixed-delay server ({args.delay_rate} rps, {args.loop}, --spin-us {args.spin_us})")
    print("| server delay ms | reported latency p50 / p99 ms | p50 minus delay ms |")
    print("|---|---|---|")
    for delay in (float(d) for d in args.delays_ms.split(",")):
        server, url = start_server(1, delay)
        try:
            runs = [
                run_loadgen(url, 0, args.delay_rate, args.ramp_s, args.hold_s, args.loop, args.spin_us)
                for _ in range(args.repeat)
            ]
            m = min(runs, key=lambda r: r["lat_p50"])
        finally:
            server.kill()
        print(f"| {delay:g} | {m['lat_p50']:.2f} / {m['lat_p99']:.2f} | {m['lat_p50'] - delay:.2f} |", flush=True)


if __name__ == "__main__":
    main()
