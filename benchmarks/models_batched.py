"""Batched scoring: a model's cost per session at batch sizes 1, 32, 256 against the machine's bounds.

For each catalog size C (d = ceil(C ** 0.25)), model and runtime, in a fresh process per model: the built-in model
with seeded random weights, made into the runtime's TorchScript module (`to_torchscript`, what is exported),
wrapped in the server's `Predictor` (so a timed batch includes padding the sessions into tensors, as served).
Per batch size B: the server's 3 warm-up batches, then --repeats batches of distinct bol.com-preset sessions (`etude
microbench`'s sessions), k = 21. Bounds, measured at the start and the end of the run on this machine:

- B = 1: the bandwidth bound, C * d * 4 bytes at the measured read bandwidth (`etude.models.microbench`);
- B >= 2: the fp32 compute bound, 2 * B * C * d FLOPs at the measured sgemm rate (the best of several
  4096 x 4096 fp32 products), per session 2 * C * d FLOPs.

RepeatNet scores a [C, 2d] table (twice the FLOPs and bytes of the bound) and a logsumexp over C; its ratios are
against the same bounds as the others. Output: DIR/models_batched.json (median and min ms per batch, per session,
ratio to the bound). Run under `flock /tmp/etude-bench.lock`:

    .venv/bin/python benchmarks/models_batched.py --models gru4rec,sasrec,repeatnet --sizes 1000000,10000000 \\
        --out DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

log = logging.getLogger("models_batched")
K = 21
Row = dict[str, float | int | str]


def measure_model(
    name: str, catalog_size: int, runtimes: list[str], batches: list[int], repeats: int, threads: int, seed: int
) -> list[Row]:
    """Per runtime and batch size: ms per batch (median, min) over `repeats` batches after the warm-up batches."""
    import torch

    from etude.models.export import to_torchscript
    from etude.models.microbench import synthetic_sessions
    from etude.models.registry import build_model
    from etude.serving.model import WARMUP_PASSES, Predictor, Query

    torch.set_num_threads(threads)
    needed = sum(b * (repeats + WARMUP_PASSES) for b in batches)
    sessions = [Query(s.tolist(), K) for s in synthetic_sessions(catalog_size, needed, seed)]
    out: list[Row] = []
    for runtime in runtimes:
        module = to_torchscript(build_model(name, catalog_size, seed), runtime)
        predictor = Predictor(module)
        used = 0
        for b in batches:
            batches_ms = []
            for rep in range(repeats + WARMUP_PASSES):
                queries = sessions[used : used + b]
                used += b
                t0 = time.perf_counter_ns()
                predictor.predict(queries)
                if rep >= WARMUP_PASSES:
                    batches_ms.append((time.perf_counter_ns() - t0) / 1e6)
            med = float(np.median(batches_ms))
            out.append({"model": name, "runtime": runtime, "catalog_size": catalog_size, "batch": b,
                        "batches": len(batches_ms), "median_ms": round(med, 3), "min_ms": round(min(batches_ms), 3),
                        "per_session_ms": round(med / b, 4)})  # fmt: skip
            log.info("%s %s C=%d B=%d: %.2f ms per batch, %.3f ms per session", name, runtime, catalog_size, b,
                     med, med / b)  # fmt: skip
        used = 0
        del predictor, module
    return out


def add_bounds(cells: list[Row], rates: dict[str, float]) -> None:
    """Each cell's bound (bandwidth for B = 1, compute otherwise) and its ratio to it."""
    from etude.models.common import embedding_dim

    for cell in cells:
        c, b = int(cell["catalog_size"]), int(cell["batch"])
        d = embedding_dim(c)
        if b == 1:
            bound_ms = c * d * 4 / rates["read_bandwidth_gbs"] / 1e6
            cell["bound"] = "bandwidth"
        else:
            bound_ms = 2 * b * c * d / rates["sgemm_gflops"] / 1e6
            cell["bound"] = "compute"
        cell["bound_ms"] = round(bound_ms, 3)
        cell["ratio_to_bound"] = round(float(cell["median_ms"]) / bound_ms, 2)


def write_report(out: Path, report: dict[str, object]) -> None:
    tmp = out / "models_batched.json.tmp"
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(out / "models_batched.json")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="gru4rec,sasrec,repeatnet")
    p.add_argument("--sizes", default="1000000,10000000")
    p.add_argument("--batches", default="1,32,256")
    p.add_argument("--runtimes", default="jit,eager")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import torch

    from etude.models.microbench import machine_rates

    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    batches = [int(s) for s in args.batches.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, object] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "argv": sys.argv,
        "threads": args.threads,
        "load_avg_at_start": os.getloadavg(),
        "rates_at_start": (start_rates := machine_rates(max(sizes))),
    }
    log.info("rates at start: %s", report["rates_at_start"])
    cells: list[Row] = []
    for c in sizes:
        for name in args.models.split(","):
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                cells += pool.submit(measure_model, name, c, args.runtimes.split(","), batches, args.repeats,
                                     args.threads, args.seed).result()  # fmt: skip
            add_bounds(cells, start_rates)
            write_report(args.out, report | {"cells": cells, "load_avg_now": os.getloadavg()})
    report["rates_at_end"] = machine_rates(max(sizes))
    report["load_avg_at_end"] = os.getloadavg()
    write_report(args.out, report | {"cells": cells})
    for cell in cells:
        print(f"| {cell['model']} | {cell['runtime']} | {int(cell['catalog_size']):,} | {cell['batch']} | "
              f"{cell['median_ms']} | {cell['per_session_ms']} | {cell['bound']} {cell['bound_ms']} | "
              f"{cell['ratio_to_bound']}x |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
