"""Runtimes benchmark: each model x runtime x catalog size exported, loaded as `etude serve` loads it, and timed.

Per cell, three fresh processes (so that each peak RSS is its own):
1. `exact`: the fp32 model answers the benchmark's sessions (the recall reference);
2. `export`: `etude.models.export.export_model` writes the artifact (wall time, peak RSS);
3. `serve`: `etude.models.export.load_model` (the server's loader and contract check), a warm-up, then serial batches
   of B = 1, 32 and 256 bolcom sessions (Algorithm 1), the latency of each call; recall@21 of the B = 1 answers
   against the exact ones; the process's peak RSS.

    python benchmarks/bench_runtimes.py --models gru4rec,sasrec --runtimes jit,aot,bf16,int8,onnx,ann \
        --catalog-sizes 1000000 --out results/runtimes
    python benchmarks/bench_runtimes.py --markdown results/runtimes [results/rerun ...]

Writes OUT/cells.jsonl (one raw record per cell, appended as it finishes), OUT/runtimes.csv (medians) and
OUT/bounds.json (per catalog size, the machine's read bandwidth and fp32 sgemm rate, measured before its cells).
A cell that fails or passes --cell-timeout-s is recorded with its error and the run goes on. `--markdown` prints
the tables of docs/benchmarks.md from such folders (a later folder's cell replaces an earlier one's), each ratio to
the bounds of the run that measured the cell.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("bench_runtimes")
K = 21
BATCHES = (1, 32, 256)
SECONDS_PER_BATCH_SIZE = 4.0  # time budget per batch size after the warm-up (at least 3 calls)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _sessions(catalog_size: int, n: int) -> list[np.ndarray]:
    from etude.models.microbench import synthetic_sessions

    return synthetic_sessions(catalog_size, n, seed=42)


def _batch(sessions: list[np.ndarray]) -> tuple[Any, Any]:
    import torch

    width = max(len(s) for s in sessions)
    seq = torch.zeros(len(sessions), width, dtype=torch.long)
    for i, s in enumerate(sessions):
        seq[i, : len(s)] = torch.from_numpy(s)
    return seq, torch.tensor([len(s) for s in sessions], dtype=torch.long)


def child_exact(model: str, catalog_size: int, n: int, out: str) -> dict[str, Any]:
    import torch

    from etude.models.registry import build_model

    m = build_model(model, catalog_size, 42)
    ids = []
    with torch.inference_mode():
        for s in _sessions(catalog_size, n):
            ids.append(m(*_batch([s]), K)[0].numpy())
    np.save(out, np.stack(ids))
    return {"peak_rss_mb": _peak_rss_mb()}


def child_export(model: str, catalog_size: int, runtime: str, out: str) -> dict[str, Any]:
    from etude.models.export import export_model

    t0 = time.perf_counter_ns()
    export_model(model, catalog_size, runtime, out, seed=42)
    return {
        "export_s": (time.perf_counter_ns() - t0) / 1e9,
        "export_peak_rss_mb": _peak_rss_mb(),
        "artifact_mb": os.path.getsize(out) / 1e6,
    }


def child_serve(path: str, catalog_size: int, n: int, exact_path: str) -> dict[str, Any]:
    import torch

    from etude.models.export import load_model

    t0 = time.perf_counter_ns()
    module = load_model(path, "cpu", allow_native_code=True)  # the package this benchmark exported
    load_s = (time.perf_counter_ns() - t0) / 1e9
    sessions = _sessions(catalog_size, max(n, max(BATCHES)))
    record: dict[str, Any] = {"load_s": load_s, "ann": getattr(module, "meta", None)}
    with torch.inference_mode():
        answers = [module(*_batch([s]), K)[0].tolist() for s in sessions[:n]]
        exact = np.load(exact_path).tolist()
        record["recall"] = float(np.mean([len(set(a) & set(e)) / K for a, e in zip(answers, exact, strict=True)]))
        for b in BATCHES:
            seq, lens = _batch(sessions[:b])
            warm = time.perf_counter_ns()
            for _ in range(5):  # warm-up: 5 calls, or fewer where they take over half the time budget
                module(seq, lens, K)
                if (time.perf_counter_ns() - warm) / 1e9 > SECONDS_PER_BATCH_SIZE / 2:
                    break
            times_ms: list[float] = []
            started = time.perf_counter_ns()
            while len(times_ms) < 3 or (time.perf_counter_ns() - started) / 1e9 < SECONDS_PER_BATCH_SIZE:
                t = time.perf_counter_ns()
                module(seq, lens, K)
                times_ms.append((time.perf_counter_ns() - t) / 1e6)
                if len(times_ms) >= 200:
                    break
            record[f"b{b}_ms"] = times_ms
    record["serve_peak_rss_mb"] = _peak_rss_mb()
    return record


def _loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def _run_child(args: list[str], timeout_s: float) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, timeout=timeout_s
    )
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(lines[-1] if lines else f"exit {proc.returncode}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def markdown(folders: list[str]) -> None:
    """The tables of docs/benchmarks.md, one per catalog size, from the cells and bounds of `folders`."""
    from etude.spec import RUNTIMES, embedding_dim

    cells: dict[tuple[int, str, str], dict[str, Any]] = {}
    bounds: dict[tuple[str, int], dict[str, float]] = {}
    for folder in folders:
        bounds.update({(folder, int(c)): b for c, b in json.loads((Path(folder) / "bounds.json").read_text()).items()})
        for line in (Path(folder) / "cells.jsonl").read_text().splitlines():
            cell = json.loads(line)
            cells[(cell["catalog_size"], cell["model"], cell["runtime"])] = {**cell, "folder": folder}
    for c in sorted({key[0] for key in cells}):
        d = embedding_dim(c)
        print(f"C = {c:,}, d = {d}; bounds per run: " + "; ".join(
            f"{f}: {b['read_bandwidth_gbs']} GB/s, {b['sgemm_gflops']} GFLOP/s" for (f, cc), b in bounds.items()
            if cc == c))  # fmt: skip
        print(
            "\n| model | runtime | artifact MB | export s | export peak MB | serve peak MB | recall@21 | "
            "B=1 p50 ms (x bound) | B=32 ms/session (x bound) | B=256 ms/session (x bound) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for key in sorted((k for k in cells if k[0] == c), key=lambda k: (k[1], RUNTIMES.index(k[2]))):
            cell = cells[key]
            if cell.get("error"):
                print(f"| {key[1]} | {key[2]} | {cell['error'][:100]} | | | | | | | |")
                continue
            b = bounds[(cell["folder"], c)]
            b1_bound = c * d * 4 / (b["read_bandwidth_gbs"] * 1e9) * 1e3
            session_bound = 2 * c * d / (b["sgemm_gflops"] * 1e9) * 1e3
            lat = {n: float(np.median(cell[f"b{n}_ms"])) for n in BATCHES}
            print(
                f"| {key[1]} | {key[2]} | {cell['artifact_mb']:.0f} | {cell['export_s']:.1f} | "
                f"{cell['export_peak_rss_mb']:.0f} | {cell['serve_peak_rss_mb']:.0f} | {cell['recall']:.3f} | "
                f"{lat[1]:.1f} ({lat[1] / b1_bound:.1f}x) | "
                + " | ".join(f"{lat[n] / n:.2f} ({lat[n] / n / session_bound:.1f}x)" for n in BATCHES[1:])
                + " |"
            )
        print()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    p.add_argument("--models", default="gru4rec,sasrec")
    p.add_argument("--runtimes", default="jit,aot,bf16,int8,onnx,ann")
    p.add_argument("--catalog-sizes", default="1000000")
    p.add_argument("--sessions", type=int, default=100, help="sessions for recall@21 (B = 1)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cell-timeout-s", type=float, default=600.0)
    p.add_argument("--out", help="output folder (required)")
    p.add_argument("--markdown", nargs="+", metavar="DIR", help="print the tables of these output folders")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.child:
        kind, *rest = args.child
        if kind == "exact":
            result = child_exact(rest[0], int(rest[1]), int(rest[2]), rest[3])
        elif kind == "export":
            result = child_export(rest[0], int(rest[1]), rest[2], rest[3])
        else:
            result = child_serve(rest[0], int(rest[1]), int(rest[2]), rest[3])
        print(json.dumps(result))
        return 0
    if args.markdown:
        markdown(args.markdown)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not args.out:
        p.error("--out is required")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "artifacts"
    work.mkdir(exist_ok=True)
    from etude.models.microbench import machine_rates

    rows = []
    for c in (int(x) for x in args.catalog_sizes.split(",")):
        bounds_file = out / "bounds.json"
        bounds = json.loads(bounds_file.read_text()) if bounds_file.exists() else {}
        bounds[str(c)] = machine_rates(c)
        bounds_file.write_text(json.dumps(bounds, indent=2))
        log.info("bounds for C = %d: %s", c, bounds[str(c)])
        for model in args.models.split(","):
            exact = str(work / f"{model}-c{c}-exact.npy")
            exact_info = _run_child(["exact", model, str(c), str(args.sessions), exact], args.cell_timeout_s)
            for runtime in args.runtimes.split(","):
                cell: dict[str, Any] = {
                    "model": model,
                    "runtime": runtime,
                    "catalog_size": c,
                    "threads": args.threads,
                    "loadavg_before": _loadavg(),
                    "exact_peak_rss_mb": exact_info["peak_rss_mb"],
                }
                path = str(work / f"{model}-c{c}-{runtime}.bin")
                try:
                    cell.update(_run_child(["export", model, str(c), runtime, path], args.cell_timeout_s))
                    cell.update(_run_child(["serve", path, str(c), str(args.sessions), exact], args.cell_timeout_s))
                except (RuntimeError, subprocess.TimeoutExpired) as err:
                    cell["error"] = str(err).splitlines()[0][:300]
                finally:
                    if os.path.exists(path):
                        os.remove(path)
                cell["loadavg_after"] = _loadavg()
                with (out / "cells.jsonl").open("a") as f:
                    f.write(json.dumps(cell) + "\n")
                row = {
                    k: cell.get(k)
                    for k in (
                        "model",
                        "runtime",
                        "catalog_size",
                        "export_s",
                        "artifact_mb",
                        "export_peak_rss_mb",
                        "serve_peak_rss_mb",
                        "recall",
                        "error",
                    )
                }
                for b in BATCHES:
                    times = cell.get(f"b{b}_ms")
                    row[f"b{b}_p50_ms"] = round(float(np.median(times)), 3) if times else None
                    row[f"b{b}_per_session_ms"] = round(float(np.median(times)) / b, 4) if times else None
                    row[f"b{b}_calls"] = len(times) if times else 0
                rows.append(row)
                log.info("%s", row)
    with (out / "runtimes.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
