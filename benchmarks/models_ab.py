"""Interleaved A/B of exported models: the same sessions through each model in turn, call after call.

Each model file is loaded with `etude.models.export.load_model` (as `etude serve` loads it); per batch size, the
calls alternate between the models, so that a change in the machine's speed during the run reaches every model
alike. Prints, per batch size, each model's median ms over --repeats calls and its ratio to the first model's.
Catalog size and sessions: random ids in [0, C) of 8 clicks, C from the first model's `catalog_size`.

    .venv/bin/python benchmarks/models_ab.py OLD.pt NEW.pt [--batches 1,2,3,4,8,32] [--threads 1] [--repeats 31]

E.g. a model exported by an earlier commit of this project against the current one:

    git worktree add /tmp/old COMMIT && (cd /tmp/old && PYTHONPATH=. ../path/to/.venv/bin/python -m etude export \\
        --model gru4rec --catalog-size 1000000 --runtime jit --out /tmp/old.pt)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="exported model files; ratios are to the first")
    p.add_argument("--batches", default="1,2,3,4,8,32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=31)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()

    import torch

    from etude.models.export import load_model

    torch.set_num_threads(args.threads)
    models = [load_model(m) for m in args.models]
    catalog_size = int(models[0].catalog_size)
    g = torch.Generator().manual_seed(args.seed)
    print(f"threads {args.threads}, C = {catalog_size:,}, {args.repeats} interleaved calls per model and batch size")
    for batch in (int(b) for b in args.batches.split(",")):
        seq = torch.randint(0, catalog_size, (batch, 8), generator=g)
        lens = torch.full((batch,), 8, dtype=torch.long)
        for m in models:
            for _ in range(3):
                m(seq, lens, 21)
        times: list[list[float]] = [[] for _ in models]
        for _ in range(args.repeats):
            for m, ts in zip(models, times, strict=True):
                t0 = time.perf_counter_ns()
                m(seq, lens, 21)
                ts.append((time.perf_counter_ns() - t0) / 1e6)
        medians = [statistics.median(ts) for ts in times]
        cells = "  ".join(f"{Path(name).name} {ms:8.1f} ms ({ms / medians[0]:.2f}x)"
                          for name, ms in zip(args.models, medians, strict=True))  # fmt: skip
        print(f"B = {batch:4d}: {cells}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
