"""Benchmark the synthetic workload (paper Algorithm 1): clicks/s in-process and through `etude generate`.

    flock /tmp/etude-bench.lock .venv/bin/python benchmarks/bench_workload.py [--catalog-size C] [--quick]

In-process: `SyntheticWorkload.clicks()` consumed chunk by chunk (one core: numpy runs these kernels single-
threaded), and the lazy `sessions()` stream the load generator reads. End to end: the `etude generate` console
command writing Parquet and CSV, timed from outside (Python start-up and catalog set-up included), with the peak
resident memory of that process. Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from etude.loadgen.workload import SyntheticWorkload, workload_laws  # noqa: E402

WORKLOADS: dict[str, dict[str, object]] = {
    "preset bolcom": {"preset": "bolcom"},
    "preset rsc15": {"preset": "rsc15"},
    "alpha 2.0 / 1.5": {"alpha_length": 2.0, "alpha_clicks": 1.5},
}


def cli_flags(workload: dict[str, object]) -> list[str]:
    return [f"--{k.replace('_', '-')}={v}" for k, v in workload.items()]


def in_process(catalog_size: int, n_clicks: int, n_sessions: int, repeat: int) -> list[str]:
    rows = []
    for name, workload in WORKLOADS.items():
        laws = workload_laws(**workload)  # type: ignore[arg-type]
        t0 = time.perf_counter_ns()
        gen = SyntheticWorkload(catalog_size, *laws, seed=1)
        setup_s = (time.perf_counter_ns() - t0) / 1e9
        best = 0.0
        for _ in range(repeat):
            t0 = time.perf_counter_ns()
            got = sum(len(items) for _, items, _ in gen.clicks(n_clicks))
            best = max(best, got / ((time.perf_counter_ns() - t0) / 1e9))
        t0 = time.perf_counter_ns()
        for _ in itertools.islice(gen.sessions(), n_sessions):
            pass
        sessions_per_s = n_sessions / ((time.perf_counter_ns() - t0) / 1e9)
        rows.append(f"| {name} | {catalog_size:,} | {n_clicks:,} | {setup_s:.2f} | {best / 1e6:.1f} M "
                    f"| {sessions_per_s / 1e3:,.0f} k |")  # fmt: skip
        del gen
    return rows


def end_to_end(catalog_size: int, n_clicks: int, repeat: int) -> list[str]:
    etude = Path(sys.executable).with_name("etude")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, workload in WORKLOADS.items():
            for suffix in (".parquet", ".csv"):
                out = Path(tmp, f"clicks{suffix}")
                best_s, peak_mib = float("inf"), 0.0
                for _ in range(repeat):
                    argv = [str(etude), "--log-level", "WARNING", "generate", f"--catalog-size={catalog_size}",
                            f"--clicks={n_clicks}", *cli_flags(workload), "--seed=1", f"--out={out}"]  # fmt: skip
                    t0 = time.perf_counter_ns()
                    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
                    _, status, usage = os.wait4(proc.pid, 0)
                    seconds = (time.perf_counter_ns() - t0) / 1e9
                    if os.waitstatus_to_exitcode(status) != 0:
                        raise SystemExit(f"{' '.join(argv)} failed")
                    best_s = min(best_s, seconds)
                    peak_mib = max(peak_mib, usage.ru_maxrss / 1024)
                size_mib = out.stat().st_size / 2**20
                rows.append(f"| {name} | {suffix[1:]} | {catalog_size:,} | {n_clicks:,} | {best_s:.2f} "
                            f"| {n_clicks / best_s / 1e6:.2f} M | {peak_mib:,.0f} | {size_mib:,.0f} |")  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog-size", type=int, default=10_000_000)
    parser.add_argument("--clicks", type=int, default=50_000_000, help="clicks per in-process run")
    parser.add_argument("--cli-clicks", type=int, default=20_000_000, help="clicks per `etude generate` run")
    parser.add_argument("--sessions", type=int, default=200_000, help="sessions read from the lazy stream")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the best is reported")
    parser.add_argument("--quick", action="store_true", help="small sizes, to check that the script runs")
    args = parser.parse_args()
    if args.quick:
        args.catalog_size, args.clicks, args.cli_clicks, args.sessions = 100_000, 1_000_000, 200_000, 10_000
        args.repeat = 1
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    print(f"numpy {np.__version__}, Python {platform.python_version()}, {cpu}, {os.cpu_count()} cores")
    print("\nIn-process (one core), best of", args.repeat)
    print("| workload | C | clicks per run | catalog set-up s | clicks/s | sessions/s (lazy stream) |")
    print("|---|---|---|---|---|---|")
    print("\n".join(in_process(args.catalog_size, args.clicks, args.sessions, args.repeat)), flush=True)
    print(f"\nEnd to end through `etude generate` (wall time incl. start-up), best of {args.repeat}")
    print("| workload | format | C | clicks | seconds | clicks/s | peak RSS MiB | file MiB |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(end_to_end(args.catalog_size, args.cli_clicks, args.repeat)))
    print(f"\nbenchmark process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
