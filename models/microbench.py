"""The micro-benchmark (paper Fig. 3): serial requests, one model x runtime x catalog size at a time.

Each cell builds the built-in model with seeded random weights on the device, turns it into what the runtime
serves (`etude.models.export.runtime_module`: the same export and loader as `etude export` and `etude serve`),
warms it up, then sends `requests` synthetic sessions one after another and times each call from building the
input tensors to the top-k ids back on the host (`torch.cuda.synchronize` on a GPU). Sessions follow the bol.com preset
(`etude.loadgen.workload`, Algorithm 1) and keep their most recent 50 items, as the server does.

Runtimes: every runtime of etude.spec.RUNTIMES (models/export.py, models/runtimes.py); `python` (not exportable,
only measured here) runs the nn.Module in Python eager mode, the paper's "eager execution". Each cell's recall is
the mean recall@21 of its answers against fp32 exact scoring (the `python` module) of the same sessions.

Output: DIR/microbench.csv (model, runtime, device, catalog_size, embedding_dim, requests, p50_ms, p90_ms,
mean_ms, recall), DIR/microbench.png (log-log p90 latency vs catalog size per model and runtime) and
DIR/microbench.json (the machine's measured read bandwidth and each cell's bandwidth bound C*d*4 bytes / bw).
"""

from __future__ import annotations

import csv
import gc
import json
import logging
import math
import multiprocessing
import platform
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from etude.commands import DEFAULT_K
from etude.errors import UsageError
from etude.results import MICROBENCH_COLUMNS, MICROBENCH_FILE

log = logging.getLogger(__name__)

WARMUP_REQUESTS = 3
# From this catalog size on, each model is measured in a fresh process: a frozen TorchScript module's weights are
# constants of its graph, which lives in torch's global compilation unit and is never freed (2.3 GB at C = 10M).
ISOLATE_FROM_CATALOG_SIZE = 1_000_000


@dataclass(frozen=True)
class Cell:
    model: str
    runtime: str
    device: str
    catalog_size: int
    embedding_dim: int
    requests: int
    p50_ms: float
    p90_ms: float
    mean_ms: float
    recall: float


def default_requests(catalog_size: int) -> int:
    """Enough requests for a stable p90 while keeping a full CPU run to minutes."""
    if catalog_size <= 100_000:
        return 200
    if catalog_size <= 1_000_000:
        return 50
    return 15


def read_bandwidth_gbs(device: str = "cpu", size_bytes: int = 1 << 30, repeats: int = 5) -> float:
    """Sustained read bandwidth: the best of `repeats` sums over a `size_bytes` float32 array (GB/s)."""
    import torch

    x = torch.ones(size_bytes // 4, dtype=torch.float32, device=device)
    best_ns = math.inf
    for _ in range(repeats + 1):
        _sync(device)
        t0 = time.perf_counter_ns()
        x.sum().item()
        best_ns = min(best_ns, time.perf_counter_ns() - t0)
    del x
    return size_bytes / best_ns


def sgemm_gflops(size: int = 4096, repeats: int = 5) -> float:
    """The best fp32 matrix-product rate of `repeats` size x size products on the CPU (GFLOP/s)."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best_ns = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        a @ b
        best_ns = min(best_ns, time.perf_counter_ns() - t0)
    return 2 * size**3 / best_ns


def machine_rates(catalog_size: int) -> dict[str, float]:
    """The CPU's bounds for scoring C items: fp32 sgemm GFLOP/s and read GB/s (over 4x the item table, capped)."""
    from etude.models.common import embedding_dim

    size = min(1 << 30, max(1 << 26, 4 * catalog_size * embedding_dim(catalog_size) * 4))
    return {"sgemm_gflops": round(sgemm_gflops(), 1), "read_bandwidth_gbs": round(read_bandwidth_gbs("cpu", size), 1)}


def synthetic_sessions(catalog_size: int, n: int, seed: int, max_len: int = 50) -> list[np.ndarray]:
    """n sessions from the bol.com preset (Algorithm 1), each cut to its most recent `max_len` items."""
    try:
        from etude.loadgen.workload import SyntheticWorkload, workload_laws
    except ImportError:  # the load-generator package is optional here: lengths 2..50, uniform items
        log.warning("etude.loadgen.workload not available; sampling uniform sessions instead of the bol.com preset")
        rng = np.random.default_rng(seed)
        return [rng.integers(0, catalog_size, size=int(rng.integers(2, max_len + 1))) for _ in range(n)]
    lengths, clicks = workload_laws("bolcom")
    it = SyntheticWorkload(catalog_size, lengths, clicks, seed).sessions()
    return [np.asarray(next(it), dtype=np.int64)[-max_len:] for _ in range(n)]


def time_requests(
    module: Any, sessions: Sequence[np.ndarray], device: str, k: int = DEFAULT_K
) -> tuple[np.ndarray, list[list[int]]]:
    """Serial calls, one session each; returns each call's latency in ms and its answer."""
    import torch

    latencies_ns = np.empty(len(sessions), dtype=np.int64)
    answers: list[list[int]] = []
    with torch.inference_mode():
        for i, session in enumerate(sessions):
            _sync(device)
            t0 = time.perf_counter_ns()
            seq = torch.from_numpy(session).view(1, -1).to(device)
            lens = torch.tensor([len(session)], dtype=torch.long, device=device)
            ids = module(seq, lens, k).cpu()
            _sync(device)
            latencies_ns[i] = time.perf_counter_ns() - t0
            answers.append(ids[0].tolist())
    return latencies_ns / 1e6, answers


def recall(answers: Sequence[list[int]], exact: Sequence[list[int]]) -> float:
    """Mean over sessions of |answer & exact| / |exact|."""
    return float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(answers, exact, strict=True)]))


def measure_model(
    name: str, catalog_size: int, runtimes: list[str], device: str, sessions: list[np.ndarray], seed: int, threads: int
) -> list[tuple[str, np.ndarray, float]]:
    """Latencies (ms) and recall@k of one model at one catalog size, per runtime, after a warm-up."""
    import torch

    from etude.models.export import runtime_module
    from etude.models.registry import build_model
    from etude.models.runtimes import unsupported

    torch.set_num_threads(threads)
    timed = sessions[WARMUP_REQUESTS:]
    reference = build_model(name, catalog_size, seed).to(device)
    _, exact = time_requests(reference, timed, device)  # fp32 exact scoring: the recall's reference
    del reference
    results = []
    for runtime in runtimes:
        model = build_model(name, catalog_size, seed).to(device)
        reason = unsupported(model, name, runtime)
        if reason is not None:
            log.warning("not measured: %s", reason)
            continue
        module = model if runtime == "python" else runtime_module(model, name, runtime, device)
        del model
        time_requests(module, sessions[:WARMUP_REQUESTS], device)
        latencies_ms, answers = time_requests(module, timed, device)
        results.append((runtime, latencies_ms, recall(answers, exact)))
        del module
        gc.collect()
    return results


def run(
    models: Sequence[str],
    catalog_sizes: Sequence[int],
    runtimes: Sequence[str],
    device: str,
    out_dir: str,
    *,
    requests: int | None = None,
    seed: int = 42,
    threads: int | None = None,
) -> list[Cell]:
    """Measure every cell, write the CSV, JSON and plot to out_dir, return the cells."""
    import torch

    from etude.models.common import embedding_dim
    from etude.models.registry import check_name

    models = [check_name(m) for m in models]
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available to torch here")
    if threads is not None:
        torch.set_num_threads(threads)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"--out {out}: cannot write there: {err.strerror or err}") from None
    largest = max(catalog_sizes)
    bandwidth = read_bandwidth_gbs(device, min(1 << 30, max(1 << 26, 4 * largest * embedding_dim(largest) * 4)))
    log.info("read bandwidth on %s: %.1f GB/s (%d threads)", device, bandwidth, torch.get_num_threads())
    cells: list[Cell] = []
    meta: dict[str, Any] = {
        "device": _device_name(device),
        "threads": torch.get_num_threads(),
        "read_bandwidth_gbs": round(bandwidth, 2),
        "k": DEFAULT_K,
        "bound_ms": {},
    }
    for c in catalog_sizes:
        d = embedding_dim(c)
        n = requests or default_requests(c)
        sessions = synthetic_sessions(c, n + WARMUP_REQUESTS, seed)
        meta["bound_ms"][str(c)] = round(c * d * 4 / bandwidth / 1e6, 3)
        for name in models:
            args = (name, c, list(runtimes), device, sessions, seed, torch.get_num_threads())
            if c >= ISOLATE_FROM_CATALOG_SIZE:  # a fresh process per model: frozen constants are never freed
                with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                    results = pool.submit(measure_model, *args).result()
            else:
                results = measure_model(*args)
            for runtime, lat_ms, rec in results:
                cell = Cell(
                    name,
                    runtime,
                    device,
                    c,
                    d,
                    n,
                    round(float(np.percentile(lat_ms, 50, method="inverted_cdf")), 3),
                    round(float(np.percentile(lat_ms, 90, method="inverted_cdf")), 3),
                    round(float(lat_ms.mean()), 3),
                    round(rec, 4),
                )
                cells.append(cell)
                log.info(
                    "%-9s %-6s C=%-9d d=%-3d p50 %8.2f ms  p90 %8.2f ms  recall %.4f  (bound %.2f ms)",
                    name,
                    runtime,
                    c,
                    d,
                    cell.p50_ms,
                    cell.p90_ms,
                    cell.recall,
                    meta["bound_ms"][str(c)],
                )
            write_csv(cells, out / MICROBENCH_FILE)
    (out / "microbench.json").write_text(json.dumps(meta, indent=2) + "\n")
    from etude.plots import microbench as plot_microbench

    plot_microbench([asdict(c) for c in cells], out / "microbench.png")
    return cells


def write_csv(cells: Sequence[Cell], path: Path) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MICROBENCH_COLUMNS)
        writer.writeheader()
        for cell in cells:
            writer.writerow(asdict(cell))
    tmp.replace(path)



def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
