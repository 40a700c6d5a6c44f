"""Markdown tables from an `etude microbench` folder: p50/p90 per cell and the ratio to the bandwidth bound.

.venv/bin/python benchmarks/microbench_table.py DIR
"""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from pathlib import Path


def main(folder: str) -> None:
    rows = list(csv.DictReader((Path(folder) / "microbench.csv").open()))
    meta = json.loads((Path(folder) / "microbench.json").read_text())
    sizes = sorted({int(r["catalog_size"]) for r in rows})
    runtimes = [rt for rt in ("python", "eager", "jit") if any(r["runtime"] == rt for r in rows)]
    cell: defaultdict[tuple[str, str], dict[int, tuple[float, float]]] = defaultdict(dict)
    for r in rows:
        cell[(r["model"], r["runtime"])][int(r["catalog_size"])] = (float(r["p50_ms"]), float(r["p90_ms"]))
    print(f"device {meta['device']}, {meta['threads']} threads, read bandwidth {meta['read_bandwidth_gbs']} GB/s\n")
    print("| model | runtime | " + " | ".join(f"C={c:,} p50 / p90 ms" for c in sizes) + " |")
    print("|---|---|" + "---|" * len(sizes))
    for model in sorted({r["model"] for r in rows}):
        for rt in runtimes:
            vals = [cell[(model, rt)].get(c) for c in sizes]
            print(f"| {model} | {rt} | " + " | ".join(f"{v[0]:.2f} / {v[1]:.2f}" if v else "" for v in vals) + " |")
    big = [c for c in sizes if c >= 1_000_000]
    if not big:
        return
    print("\nRatio p50 / bound (bound = C*d*4 bytes / read bandwidth):\n")
    print("| model | " + " | ".join(f"{rt} C={c:,}" for c in big for rt in runtimes) + " |")
    print("|---|" + "---|" * (len(big) * len(runtimes)))
    for model in sorted({r["model"] for r in rows}):
        ratios = []
        for c in big:
            for rt in runtimes:
                v = cell[(model, rt)].get(c)
                ratios.append(f"{v[0] / meta['bound_ms'][str(c)]:.2f}x" if v else "")
        print(f"| {model} | " + " | ".join(ratios) + " |")
    print("\nbound ms: " + ", ".join(f"C={c:,}: {meta['bound_ms'][str(c)]}" for c in big))


if __name__ == "__main__":
    main(sys.argv[1])
