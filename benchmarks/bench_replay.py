"""The paper's workload validation (end of Section III-A): replay a real click log, then the synthetic workload
fitted to it, against the same server at the same rate; hold-phase latency percentiles side by side.

    flock /tmp/etude-bench.lock .venv/bin/python benchmarks/bench_replay.py --out /tmp/bench/replay

Per log (../shared/data) and configuration (model at a catalog size; `C=items` is the log's item count), one
`etude serve` process (taskset -c 1, one torch thread) serves both workloads; `etude loadgen` (taskset -c 0)
runs `--repeats` x (replay with --clicklog, synthetic with --workload from `etude fit --out`), interleaved, each
a --ramp-s ramp to the configuration's rate and a --hold-s hold. Percentiles are nearest-rank over the ok
answers scheduled in the hold, from the intended send; the server's own inference time (Server-Timing) beside
them. Writes results.json (every run) into --out and prints the medians over the repeats.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_server import ETUDE, ROOT, _server_process, export, hold_phase, machine  # noqa: E402

log = logging.getLogger("bench_replay")
PORT = 8094
LOGS = ("rsc15_100k_sessionrec.csv", "diginetica_sample_srgnn.csv")


def run_loadgen(url: str, out: Path, catalog_size: int, workload: list[str], args: argparse.Namespace) -> dict:
    argv = ["taskset", "-c", "0", *ETUDE, "--log-level", "WARNING", "loadgen", "--url", url,
            "--catalog-size", str(catalog_size), "--target-rps", str(args.rps), "--ramp-seconds", str(args.ramp_s),
            "--hold-seconds", str(args.hold_s), *workload, "--seed", "42", "--out", str(out)]  # fmt: skip
    subprocess.run(argv, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return {**hold_phase(out, args.ramp_s), **server_side(out, args.ramp_s)}


def server_side(out: Path, ramp_s: int) -> dict[str, float]:
    """Nearest-rank p50/p90 of the server's own inference time (Server-Timing) and the mean number of clicks per
    request (position + 1), over the ok answers scheduled in the hold."""
    import numpy as np
    import pyarrow.parquet as pq

    t = pq.read_table(out / "requests.parquet", columns=["intended_ns", "status", "inference_ms", "position"])
    ok = (np.asarray(t["intended_ns"]) >= ramp_s * 1_000_000_000) & (np.asarray(t["status"]) == "200")
    inference = np.asarray(t["inference_ms"])[ok]
    res = {f"inference_p{p}_ms": float(np.percentile(inference, p, method="inverted_cdf")) for p in (50, 90)}
    return res | {"mean_clicks_per_request": float((np.asarray(t["position"])[ok] + 1).mean())}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--configs", default="sasrec@items@40,gru4rec@1000000@8",
                   help="model@C@rps, C = items: the log's item count")
    p.add_argument("--logs", default=",".join(LOGS))
    p.add_argument("--ramp-s", type=int, default=5)
    p.add_argument("--hold-s", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    models = args.out / "models"
    models.mkdir(exist_ok=True)
    report: dict[str, object] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "argv": sys.argv,
                                 "machine": machine(), "runs": []}  # fmt: skip
    runs: list[dict[str, object]] = report["runs"]  # type: ignore[assignment]
    for name in args.logs.split(","):
        clicklog = args.data / name
        fitted = args.out / f"{Path(name).stem}.workload.json"
        subprocess.run([*ETUDE, "fit", str(clicklog), "--out", str(fitted)], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        items = json.loads(fitted.read_text())["items"]
        for config in args.configs.split(","):
            model, size, rps = config.split("@")
            catalog_size = items if size == "items" else int(size)
            args.rps = int(rps)
            path = export(model, catalog_size, models)
            argv = ["taskset", "-c", "1", *ETUDE, "--log-level", "WARNING", "serve", "--model-uri", str(path),
                    "--host", "127.0.0.1", "--port", str(PORT), "--threads", "1"]  # fmt: skip
            with _server_process(argv, PORT, 600, args.out / "serve.log") as url:
                for repeat in range(args.repeats):
                    for kind, workload in (("replay", ["--clicklog", str(clicklog)]),
                                           ("synthetic", ["--workload", str(fitted)])):  # fmt: skip
                        out = args.out / f"{Path(name).stem}-{model}-c{catalog_size}-{kind}-{repeat}"
                        hold = run_loadgen(url, out, catalog_size, workload, args)
                        row = {"log": name, "model": model, "catalog_size": catalog_size, "workload": kind,
                               "rps": args.rps, "repeat": repeat, "load_avg": list(os_loadavg()), **hold}  # fmt: skip
                        log.info("%s", row)
                        runs.append(row)
                        (args.out / "results.json").write_text(json.dumps(report, indent=1))
    report["load_avg_at_end"] = list(os_loadavg())
    (args.out / "results.json").write_text(json.dumps(report, indent=1))
    print(table(runs))
    return 0


def os_loadavg() -> tuple[float, float, float]:
    import os

    return os.getloadavg()


def table(runs: list[dict[str, object]]) -> str:
    """Median over the repeats of the hold-phase p50/p90/p99 (from the intended send), replay vs synthetic."""
    lines = ["| log | model | C | rps | ok answers/run | replay p50 / p90 / p99 ms | synthetic p50 / p90 / p99 ms | "
             "synthetic/replay p50, p90 | inference p50 / p90 ms, replay vs synthetic | clicks/request, replay vs "
             "synthetic |", "|---|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(str(r["log"]), str(r["model"]), int(r["catalog_size"])) for r in runs})  # type: ignore[call-overload]
    for log_name, model, size in keys:
        med: dict[str, dict[str, float]] = {}
        n_req, rps = [], 0
        for kind in ("replay", "synthetic"):
            rows = [r for r in runs if (r["log"], r["model"], r["catalog_size"], r["workload"])
                    == (log_name, model, size, kind)]  # fmt: skip
            med[kind] = {key: statistics.median(float(r[col]) for r in rows)  # type: ignore[arg-type]
                         for key, col in (("p50", "intended_p50_ms"), ("p90", "intended_p90_ms"),
                                          ("p99", "intended_p99_ms"), ("i50", "inference_p50_ms"),
                                          ("i90", "inference_p90_ms"), ("clicks", "mean_clicks_per_request"))}
            rps = int(rows[0]["rps"])  # type: ignore[call-overload]
            n_req += [int(r["ok"]) for r in rows]  # type: ignore[call-overload]
        fmt = lambda m: " / ".join(f"{m[p]:.2f}" for p in ("p50", "p90", "p99"))  # noqa: E731
        ratio = ", ".join(f"{med['synthetic'][p] / med['replay'][p]:.2f}" for p in ("p50", "p90"))
        inference = " vs ".join(f"{med[k]['i50']:.2f} / {med[k]['i90']:.2f}" for k in ("replay", "synthetic"))
        clicks = " vs ".join(f"{med[k]['clicks']:.2f}" for k in ("replay", "synthetic"))
        lines.append(f"| {log_name} | {model} | {size:,} | {rps} | {min(n_req)}-{max(n_req)} | {fmt(med['replay'])} | "
                     f"{fmt(med['synthetic'])} | {ratio} | {inference} | {clicks} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
