"""Markdown tables from one or more `etude microbench` folders: p50/p90 per cell and the ratio to the bandwidth bound.

.venv/bin/python benchmarks/microbench_table.py DIR [DIR ...]

With several folders (repeated runs), a cell shows the median over the runs of each run's p50 and p90, with the
range of the p50s; a ratio is the median over the runs of p50 / bound, each measured in one run (its own
read-bandwidth measurement).
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def main(folders: list[str]) -> None:
    cell: dict[tuple[str, str, int], list[tuple[float, float, float]]] = defaultdict(list)  # (p50, p90, ratio)
    metas = [json.loads((Path(f) / "microbench.json").read_text()) for f in folders]
    for folder, meta in zip(folders, metas, strict=True):
        for r in csv.DictReader((Path(folder) / "microbench.csv").open()):
            c = int(r["catalog_size"])
            bound = meta["bound_ms"].get(str(c))
            p50 = float(r["p50_ms"])
            cell[(r["model"], r["runtime"], c)].append((p50, float(r["p90_ms"]), p50 / bound if bound else 0.0))
    sizes = sorted({c for _, _, c in cell})
    models = sorted({m for m, _, _ in cell})
    runtimes = [rt for rt in ("python", "eager", "jit") if any(k[1] == rt for k in cell)]
    for folder, meta in zip(folders, metas, strict=True):
        print(f"{folder}: device {meta['device']}, {meta['threads']} threads, "
              f"read bandwidth {meta['read_bandwidth_gbs']} GB/s")  # fmt: skip
    many = len(folders) > 1
    head = "median p50 / p90 ms (p50 range)" if many else "p50 / p90 ms"
    print("\n| model | runtime | " + " | ".join(f"C={c:,} {head}" for c in sizes) + " |")
    print("|---|---|" + "---|" * len(sizes))
    for model in models:
        for rt in runtimes:
            vals = []
            for c in sizes:
                runs = cell.get((model, rt, c), [])
                if not runs:
                    vals.append("")
                    continue
                p50s = [r[0] for r in runs]
                text = f"{statistics.median(p50s):.2f} / {statistics.median(r[1] for r in runs):.2f}"
                vals.append(text + (f" ({min(p50s):.2f}-{max(p50s):.2f})" if many else ""))
            print(f"| {model} | {rt} | " + " | ".join(vals) + " |")
    big = [c for c in sizes if c >= 1_000_000]
    if not big:
        return
    print(f"\nRatio p50 / bound (bound = C*d*4 bytes / read bandwidth{'; median over the runs' if many else ''}):\n")
    print("| model | " + " | ".join(f"{rt} C={c:,}" for c in big for rt in runtimes) + " |")
    print("|---|" + "---|" * (len(big) * len(runtimes)))
    for model in models:
        vals = []
        for c in big:
            for rt in runtimes:
                runs = cell.get((model, rt, c), [])
                vals.append(f"{statistics.median(r[2] for r in runs):.2f}x" if runs else "")
        print(f"| {model} | " + " | ".join(vals) + " |")
    for folder, meta in zip(folders, metas, strict=True):
        print(f"\n{folder} bound ms: " + ", ".join(f"C={c:,}: {meta['bound_ms'][str(c)]}" for c in big
                                                  if str(c) in meta["bound_ms"]))  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: microbench_table.py DIR [DIR ...]")
    main(sys.argv[1:])
