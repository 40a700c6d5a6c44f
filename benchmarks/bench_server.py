"""Benchmarks of the inference server (`etude serve`); figures go to docs/benchmarks.md, not into tests.

    infratest   paper Fig. 2: this server with the noop model vs TorchServe with an empty handler, one after the
                other on this machine: closed-loop max throughput (wrk) and an open-loop ramp to 1,000 req/s
                (`etude loadgen`, result folders with --stack infratest --variant etude-noop|torchserve-empty);
                `--only aiohttp-static` measures a bare aiohttp handler, the floor of this machine and client
    model       a real model (default GRU4Rec, C = 1,000,000): open-loop ramps with and without batching, reporting
                the highest rate whose p90 stays within the SLO, plus closed-loop throughput (wrk, random sessions)

Each server runs alone (started, measured, stopped) so it never shares the CPUs with the other one. Client and
server share this machine's cores, as in the reference figures. Run under `flock /tmp/etude-bench.lock`.

    flock /tmp/etude-bench.lock .venv/bin/python benchmarks/bench_server.py infratest --out /tmp/bench/infratest
    flock /tmp/etude-bench.lock .venv/bin/python benchmarks/bench_server.py model --out /tmp/bench/gru4rec

TorchServe lives in its own virtual environment (default /tmp/ts-venv: `python -m venv /tmp/ts-venv &&
/tmp/ts-venv/bin/pip install torchserve torch-model-archiver`; it also needs torch importable, see
benchmarks/torchserve/README.md). wrk comes from Debian (`apt-get install -y wrk`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from etude.processes import wait_ready

log = logging.getLogger("bench_server")

ROOT = Path(__file__).resolve().parent.parent
ETUDE = [sys.executable, "-m", "etude"]
WRK_DIR = ROOT / "benchmarks" / "wrk"
TS_DIR = ROOT / "benchmarks" / "torchserve"
ETUDE_PORT = 8090
STATIC_PORT = 8092
TS_PORT = 8081  # from benchmarks/torchserve/config.properties


# --- processes ------------------------------------------------------------------------------------------------------


@contextmanager
def _server_process(argv: list[str], port: int, ready_s: float, log_path: Path) -> Iterator[str]:
    """Run a loopback server process until the block ends (SIGTERM); yields its URL once /ping answers 200."""
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, ready_s)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def etude_server(model: Path, extra: list[str], log_path: Path) -> AbstractContextManager[str]:
    argv = [*ETUDE, "--log-level", "WARNING", "serve", "--model-uri", str(model), "--host", "127.0.0.1",
            "--port", str(ETUDE_PORT), *extra]  # fmt: skip
    log.info("starting %s", " ".join(argv[2:]))
    return _server_process(argv, ETUDE_PORT, 600, log_path)


def static_server(log_path: Path) -> AbstractContextManager[str]:
    """benchmarks/static_server.py: the bare aiohttp + uvloop floor (static answer, nothing else)."""
    argv = [sys.executable, str(ROOT / "benchmarks" / "static_server.py"), "--port", str(STATIC_PORT)]
    return _server_process(argv, STATIC_PORT, 60, log_path)


@contextmanager
def torchserve(ts_venv: Path, work: Path) -> Iterator[str]:
    """TorchServe with two archives of the empty handler: `v1` version `recommend` and `ping` (see config)."""
    store = work / "ts-store"
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir(parents=True)
    for name, version in (("v1", "recommend"), ("ping", "1.0")):
        subprocess.run([str(ts_venv / "bin" / "torch-model-archiver"), "--model-name", name, "--version", version,
                        "--handler", str(TS_DIR / "empty_handler.py"), "--export-path", str(store), "--force"],
                       check=True)  # fmt: skip
    env = {**os.environ, "PATH": f"{ts_venv / 'bin'}:{os.environ['PATH']}", "LOG_LOCATION": str(work / "ts-logs"),
           "METRICS_LOCATION": str(work / "ts-logs")}  # fmt: skip
    argv = [str(ts_venv / "bin" / "torchserve"), "--start", "--foreground", "--ncs", "--model-store", str(store),
            "--models", "v1=v1.mar", "ping=ping.mar", "--ts-config", str(TS_DIR / "config.properties")]  # fmt: skip
    log.info("starting TorchServe: %s", " ".join(argv))
    with open(work / "torchserve.log", "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=store, env=env)
    base = f"http://127.0.0.1:{TS_PORT}/predictions"
    try:
        wait_ready(base, proc, 180)
        # the `ping` model only answers readiness checks: one worker is enough
        req = urllib.request.Request("http://127.0.0.1:8082/models/ping?min_worker=1&max_worker=1&synchronous=true",
                                     method="PUT")  # fmt: skip
        urllib.request.urlopen(req, timeout=60).read()
        yield base
    finally:
        subprocess.run([str(ts_venv / "bin" / "torchserve"), "--stop"], env=env, check=False, capture_output=True)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


# --- load ----------------------------------------------------------------------------------------------------------


def wrk(url: str, script: str, connections: int, duration_s: int, catalog_size: int) -> dict[str, float]:
    """Closed loop: `connections` connections each send the next request as soon as the last answer arrives."""
    if shutil.which("wrk") is None:
        log.warning("wrk is not installed (apt-get install -y wrk): no closed-loop figures")
        return {"connections": connections, "rps": float("nan")}
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency", "--timeout", "10s",
            "-s", str(WRK_DIR / script), url]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=True,
                          env={**os.environ, "CATALOG_SIZE": str(catalog_size)})  # fmt: skip
    text = done.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if rps is None:
        raise RuntimeError(f"no Requests/sec in wrk's output:\n{text}")
    result = {"connections": connections, "duration_s": duration_s, "rps": float(rps.group(1))}
    for pct in (50, 90, 99):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if m:
            result[f"p{pct}_ms"] = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    result["errors"] = float(int(m.group(1)) if m else 0) + (
        sum(map(int, socket_errors.groups())) if socket_errors else 0
    )
    result["requests"] = float(re.search(r"(\d+) requests in", text).group(1))
    log.info(
        "wrk -c%d %s: %.0f req/s, p50 %.2f ms, p99 %.2f ms, errors %d",
        connections,
        url,
        result["rps"],
        result.get("p50_ms", float("nan")),
        result.get("p99_ms", float("nan")),
        result["errors"],
    )
    return result


def loadgen(
    url: str,
    out: Path,
    *,
    catalog_size: int,
    target_rps: int,
    ramp_s: int,
    hold_s: int,
    variant: str,
    model: str,
    stack: str,
    slo_ms: float = 50.0,
) -> dict[str, object]:
    """Open loop (`etude loadgen`): a linear ramp to `target_rps`, then a hold; returns summary + hold-phase stats."""
    shutil.rmtree(out, ignore_errors=True)
    argv = [*ETUDE, "--log-level", "WARNING", "loadgen", "--url", url, "--catalog-size", str(catalog_size),
            "--target-rps", str(target_rps), "--ramp-seconds", str(ramp_s), "--hold-seconds", str(hold_s),
            "--preset", "bolcom", "--arrivals", "uniform", "--slo-ms", f"{slo_ms:g}", "--timeout-s", "10",
            "--stack", stack,
            "--variant", variant, "--model", model, "--runtime", "jit", "--instance-type", "local-2core",
            "--out", str(out)]  # fmt: skip
    log.info("open loop: %s", " ".join(argv[2:]))
    subprocess.run(argv, check=True, cwd=ROOT)
    summary = json.loads((out / "summary.json").read_text())
    return {"summary": summary, "hold": hold_phase(out, ramp_s)}


def hold_phase(out: Path, ramp_s: int) -> dict[str, float]:
    """Percentiles (nearest rank) and errors of the requests scheduled after the ramp, at the target rate."""
    import numpy as np
    import pyarrow.parquet as pq

    t = pq.read_table(out / "requests.parquet").to_pydict()
    intended = np.asarray(t["intended_ns"])
    sent, received = np.asarray(t["sent_ns"]), np.asarray(t["received_ns"])
    status = np.asarray(t["status"])
    in_hold = intended >= ramp_s * 1_000_000_000
    ok = in_hold & (status == "200") & (received >= 0)
    res: dict[str, float] = {"requests": float(in_hold.sum()), "ok": float(ok.sum()),
                             "errors": float((in_hold & ~(status == "200")).sum())}  # fmt: skip
    for name, start in (("", sent), ("intended_", intended)):
        lat_ms = (received[ok] - start[ok]) / 1e6
        for pct in (50, 90, 99):
            res[f"{name}p{pct}_ms"] = (
                float(np.percentile(lat_ms, pct, method="inverted_cdf")) if lat_ms.size else float("nan")
            )
    batch = np.asarray(t["batch_size"])[ok]
    res["mean_batch_size"] = float(batch.mean()) if batch.size and batch.min() > 0 else float("nan")
    return res


# --- experiments ---------------------------------------------------------------------------------------------------


def export(model: str, catalog_size: int, out: Path) -> Path:
    path = out / f"{model}-c{catalog_size}-jit.pt"
    subprocess.run([*ETUDE, "export", "--model", model, "--catalog-size", str(catalog_size), "--runtime", "jit",
                    "--out", str(path), "--if-missing"], check=True, cwd=ROOT)  # fmt: skip
    return path


def infratest(args: argparse.Namespace) -> dict[str, object]:
    work: Path = args.out
    work.mkdir(parents=True, exist_ok=True)
    model = export("noop", 10_000, args.models)
    results: dict[str, object] = {}
    servers = {
        "etude-noop": lambda: etude_server(model, args.serve_args.split(), work / "etude.log"),
        "torchserve-empty": lambda: torchserve(args.ts_venv, work),
        "aiohttp-static": lambda: static_server(work / "static.log"),
    }
    for variant in args.only.split(","):
        with servers[variant]() as base:
            url = f"{base}/v1/recommend"
            closed = [wrk(url, "recommend.lua", c, args.wrk_seconds, 10_000) for c in args.connections]
            opened = loadgen(
                base,
                work / "loadgen" / variant,
                catalog_size=10_000,
                target_rps=args.target_rps,
                ramp_s=args.ramp_seconds,
                hold_s=args.hold_seconds,
                variant=variant,
                model={"etude-noop": "noop", "torchserve-empty": "empty-handler"}.get(variant, "static"),
                stack="infratest",
            )
        results[variant] = {"closed_loop": closed, "open_loop": opened}
    return results


def model_bench(args: argparse.Namespace) -> dict[str, object]:
    work: Path = args.out
    work.mkdir(parents=True, exist_ok=True)
    model = export(args.model, args.catalog_size, args.models)
    results: dict[str, object] = {}
    for batch in args.max_batch_sizes:
        label = f"batch{batch}" if batch > 1 else "no-batching"
        extra = [*args.serve_args.split(), "--max-batch-size", str(batch)]
        with etude_server(model, extra, work / f"etude-{label}.log") as base:
            variant = f"{args.model}-{label}"
            closed = [
                wrk(f"{base}/v1/recommend", "sessions.lua", c, args.wrk_seconds, args.catalog_size)
                for c in args.connections
            ]
            opened = loadgen(
                base,
                work / "loadgen" / variant,
                catalog_size=args.catalog_size,
                target_rps=args.target_rps if batch > 1 else args.target_rps_unbatched,
                ramp_s=args.ramp_seconds,
                hold_s=args.hold_seconds,
                variant=variant,
                model=args.model,
                stack="serving-model",
                slo_ms=args.slo_ms,
            )
        results[label] = {"max_batch_size": batch, "closed_loop": closed, "open_loop": opened}
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", type=Path, required=True, help="work folder: logs, loadgen result folders, JSON")
    common.add_argument("--models", type=Path, default=Path("/tmp/etude-bench-models"), help="exported models")
    common.add_argument("--serve-args", default="--threads 1", help="extra `etude serve` options")
    common.add_argument("--wrk-seconds", type=int, default=15)
    common.add_argument("--ramp-seconds", type=int, default=60)
    common.add_argument("--hold-seconds", type=int, default=30)
    i = sub.add_parser("infratest", parents=[common])
    i.add_argument("--ts-venv", type=Path, default=Path("/tmp/ts-venv"))
    i.add_argument("--only", default="etude-noop,torchserve-empty", help="also: aiohttp-static (the floor)")
    i.add_argument("--connections", type=lambda s: [int(x) for x in s.split(",")], default=[8, 64])
    i.add_argument("--target-rps", type=int, default=1000)
    m = sub.add_parser("model", parents=[common])
    m.add_argument("--model", default="gru4rec")
    m.add_argument("--catalog-size", type=int, default=1_000_000)
    m.add_argument("--max-batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1024, 1],
                   help="one server run per value; 1 = no batching")  # fmt: skip
    m.add_argument("--connections", type=lambda s: [int(x) for x in s.split(",")], default=[8, 64])
    m.add_argument("--target-rps", type=int, default=1000, help="end of the ramp with batching")
    m.add_argument("--target-rps-unbatched", type=int, default=300, help="end of the ramp without batching")
    m.add_argument("--slo-ms", type=float, default=50.0)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.models.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results = infratest(args) if args.what == "infratest" else model_bench(args)
    report = {"what": args.what, "started": started, "argv": sys.argv, "machine": machine(), "results": results}
    (args.out / "results.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


def machine() -> dict[str, object]:
    model = next((line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True,
                  text=True).stdout.splitlines() if line.startswith("Model name")), "?")  # fmt: skip
    return {"cpu": model, "cores": os.cpu_count(), "load_avg_at_start": os.getloadavg()}


if __name__ == "__main__":
    sys.exit(main())
