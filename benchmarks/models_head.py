"""The top-k head on its own: what scoring all C items costs against the memory-bandwidth bound.

Compares, per catalog size and batch size: the read bandwidth bound (C*d*4 bytes / measured bandwidth),
plain `topk(q @ E.T)` (materialises B x C scores), the blockwise head of models/common.py (fp32, the one the
models use), the same head scripted, and bf16 storage of the item table (half the bytes, but torch's CPU
bf16 matmul returns bf16 scores: ~3 significant digits, so near-ties in the top-k reorder; measured, not used).
Prints one line per cell (min and median ms over the repeats). `--layouts` instead compares the layouts of one
block's product, [B, d] x [d, n] (batch-major scores) and [n, d] x [d, B] (item-major, what the head uses) of the
table's rows, and [B, d] x [d, n] of the block stored transposed (a layout the head does not use), in GFLOP/s next
to a 4096 x 4096 sgemm. Run under `flock /tmp/etude-bench.lock`.

    .venv/bin/python benchmarks/models_head.py [--sizes 1000000,10000000] [--batches 1,32] [--repeats 15]
    .venv/bin/python benchmarks/models_head.py --layouts [--batches 32,256] [--repeats 15] [--threads 1]
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from collections.abc import Callable

import numpy as np
import torch

from etude.models.common import top_k_items
from etude.models.microbench import read_bandwidth_gbs

K = 21


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        fn()
        ts.append(time.perf_counter_ns() - t0)
    return min(ts) / 1e6, float(np.median(ts)) / 1e6


def bench_size(c: int, batches: list[int], repeats: int, scripted: Callable[..., object]) -> None:
    d = math.ceil(c**0.25)
    table = torch.randn(c + 1, d)
    bf16 = table.to(torch.bfloat16)
    bw = read_bandwidth_gbs("cpu", min(1 << 30, max(1 << 26, 4 * c * d * 4)))
    bound_ms = c * d * 4 / bw / 1e6
    for b in batches:
        q = torch.randn(b, d)
        cells = {
            "plain": lambda q=q: torch.topk(q @ table[1:].t(), K),
            "head": lambda q=q: top_k_items(q, table, 1, c, K),
            "head-scripted": lambda q=q: scripted(q, table, 1, c, K, None, None),
            "head-bf16": lambda q=q: top_k_items(q, bf16, 1, c, K),
        }
        line = [f"C={c} d={d} B={b} bw={bw:.1f}GB/s bound={bound_ms:.2f}ms"]
        for name, fn in cells.items():
            lo, med = timed(fn, repeats)
            line.append(f"{name} {lo:.2f}/{med:.2f}ms ({med / bound_ms:.1f}x)")
        print("  ".join(line), flush=True)


def layouts(batches: list[int], repeats: int) -> None:
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    print(f"sgemm 4096: {2 * 4096**3 / timed(lambda: a @ b, 3)[0] / 1e6:.0f} GFLOP/s (best of 3)")
    for d in (32, 57):
        for batch in batches:
            n = max(4096, (1 << 20) // batch)  # 2^20 scores, the head's block (which has at most 2^18 rows)
            q, block = torch.randn(batch, d), torch.randn(n, d)
            stored_t = block.t().contiguous()  # the block stored transposed, [d, n]: a layout the head does not use
            flop = 2 * batch * n * d
            by_batch = flop / timed(functools.partial(torch.mm, q, block.t()), repeats)[0] / 1e6
            by_item = flop / timed(functools.partial(torch.mm, block, q.t()), repeats)[0] / 1e6
            transposed = flop / timed(functools.partial(torch.mm, q, stored_t), repeats)[0] / 1e6
            print(f"d={d} B={batch} n={n}: [B,d]x[d,n] {by_batch:.0f} GFLOP/s, [n,d]x[d,B] {by_item:.0f} GFLOP/s, "
                  f"[B,d]x[d,n] stored [d,n] {transposed:.0f} GFLOP/s (min of {repeats})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--layouts", action="store_true", help="compare the layouts of a block's product")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.layouts:
        layouts([int(s) for s in args.batches.split(",")], args.repeats)
        return
    scripted = torch.jit.script(top_k_items)
    print(f"threads={torch.get_num_threads()}")
    for c in (int(s) for s in args.sizes.split(",")):
        bench_size(c, [int(s) for s in args.batches.split(",")], args.repeats, scripted)


if __name__ == "__main__":
    main()
