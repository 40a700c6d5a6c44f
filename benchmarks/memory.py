"""Peak memory (RSS) of `etude export` and `etude serve` per model and catalog size, against the model's bytes.

Each cell runs, one after the other in fresh processes: `etude export --model M --catalog-size C --runtime R`,
then `etude serve --model-uri that-file --threads 1` until it answers /ping (loaded and warmed up, batches up to
the default 1,024 sessions), a few recommendations, SIGTERM. The peak RSS of each child is its `ru_maxrss` from
`os.wait4`. The model's bytes are the exported file's size (TorchScript stores the weights uncompressed). The
target is peak <= 1.5 x model bytes + 300 MB; `etude local`'s estimate for the cell is recorded next to it.

Before a cell starts it waits (up to --wait-s) until MemAvailable covers that estimate, so that it does not push
other work on a shared machine into the kernel's OOM killer. Each model file is deleted after its cell.
Output: DIR/memory.json (written after every cell, atomically). Run under `flock /tmp/etude-bench.lock`:

    .venv/bin/python benchmarks/memory.py --models gru4rec,repeatnet --sizes 1000000,10000000 --out DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from etude.local import ITEM_TABLES, memory_needed_bytes  # noqa: E402
from etude.models.common import embedding_dim  # noqa: E402

log = logging.getLogger("memory")
ETUDE = [sys.executable, "-m", "etude", "--log-level", "WARNING"]
SESSION = json.dumps({"session": [1, 2, 3, 4, 5], "k": 21}).encode()


@dataclass(frozen=True)
class Cell:
    model: str
    runtime: str
    catalog_size: int
    embedding_dim: int
    model_bytes: int
    export_peak_rss_bytes: int
    export_s: float
    serve_peak_rss_bytes: int
    serve_ready_s: float
    limit_bytes: int  # 1.5 x model bytes + 300 MB
    local_estimate_bytes: int  # etude local's memory_needed_bytes


def run_child(argv: list[str]) -> tuple[int, float]:
    """Run argv to completion; (peak RSS bytes, seconds). Raises on a non-zero exit."""
    t0 = time.perf_counter_ns()
    proc = subprocess.Popen(argv, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}")
    return usage.ru_maxrss * 1024, (time.perf_counter_ns() - t0) / 1e9


def serve_peak(model_path: Path, ready_timeout_s: float) -> tuple[int, float]:
    """Start a server on the model, wait until it is ready, send a few requests, stop it; (peak RSS, ready s)."""
    port = free_port()
    # --allow-native-code: an aot package is one this script has just built
    argv = [*ETUDE, "serve", "--model-uri", str(model_path), "--host", "127.0.0.1", "--port", str(port),
            "--threads", "1", "--allow-native-code"]  # fmt: skip
    t0 = time.perf_counter_ns()
    proc = subprocess.Popen(argv, cwd=ROOT)
    ready_s = float("nan")
    try:
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"etude serve exited with {proc.returncode} before it was ready")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        ready_s = (time.perf_counter_ns() - t0) / 1e9
                        break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError(f"etude serve was not ready within {ready_timeout_s:g} s")
        for _ in range(20):
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/recommend", data=SESSION,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
            with urllib.request.urlopen(req, timeout=60) as r:
                r.read()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss * 1024, ready_s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mem_available_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def wait_for_memory(needed: int, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while (avail := mem_available_bytes()) < needed:
        if time.monotonic() > deadline:
            raise RuntimeError(f"needs {needed / 1e9:.1f} GB, only {avail / 1e9:.1f} GB available after {wait_s:g} s")
        log.info("waiting for memory: need %.1f GB, %.1f GB available", needed / 1e9, avail / 1e9)
        time.sleep(15)


def measure(model: str, catalog_size: int, runtime: str, work: Path, wait_s: float) -> Cell:
    d = embedding_dim(catalog_size)
    estimate = memory_needed_bytes(catalog_size, d, ITEM_TABLES.get(model, 1), runtime)
    wait_for_memory(estimate, wait_s)
    path = work / f"{model}-c{catalog_size}-{runtime}.pt"
    try:
        export_rss, export_s = run_child([*ETUDE, "export", "--model", model, "--catalog-size", str(catalog_size),
                                          "--runtime", runtime, "--out", str(path)])  # fmt: skip
        size = path.stat().st_size
        serve_rss, ready_s = serve_peak(path, ready_timeout_s=900)
    finally:
        path.unlink(missing_ok=True)
    cell = Cell(model, runtime, catalog_size, d, size, export_rss, round(export_s, 1), serve_rss, round(ready_s, 1),
                int(1.5 * size + 300e6), estimate)  # fmt: skip
    log.info(
        "%s C=%d: model %.0f MB, export peak %.0f MB, serve peak %.0f MB (limit %.0f MB, etude local estimate %.0f MB)",
        model, catalog_size, size / 1e6, export_rss / 1e6, serve_rss / 1e6, cell.limit_bytes / 1e6, estimate / 1e6,
    )  # fmt: skip
    return cell


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="gru4rec")
    p.add_argument("--sizes", default="1000000")
    p.add_argument("--runtime", default="jit")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--wait-s", type=float, default=600, help="how long to wait for free memory before a cell")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, object] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "argv": sys.argv,
        "load_avg_at_start": os.getloadavg(),
        "cells": [],
    }
    cells: list[dict[str, object]] = []
    for c in (int(s) for s in args.sizes.split(",")):
        for model in args.models.split(","):
            cells.append(asdict(measure(model, c, args.runtime, args.out, args.wait_s)))
            report |= {"cells": cells, "load_avg_now": os.getloadavg()}
            tmp = args.out / "memory.json.tmp"
            tmp.write_text(json.dumps(report, indent=1) + "\n")
            tmp.replace(args.out / "memory.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
