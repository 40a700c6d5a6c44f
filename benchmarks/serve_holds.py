"""Sustained rate of one `etude serve` at fixed offered rates: 5 s ramp + 20 s hold per rate, server and client
pinned to different cores.

The server (`etude serve --threads 1`, default batching) runs on core 1 (`taskset -c 1`) for the whole run; for each
rate R and repeat, `etude loadgen` runs on core 0 with a 5 s ramp to R then a 20 s hold (the load generator's
uniform send slots, bol.com sessions). A rate is met in a repeat when the hold's p90 latency (nearest rank over
every request scheduled in the hold, from the intended send slot) is <= the SLO and no request failed. Output:
DIR/holds.json with each hold's figures; prints one line per rate (p90 per repeat, met count). Run under
`flock /tmp/etude-bench.lock`:

    .venv/bin/python benchmarks/serve_holds.py --model gru4rec --catalog-size 1000000 --rates 200,280,350 \\
        --repeats 3 --out DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_server import ETUDE, ROOT, _server_process, export, hold_phase  # noqa: E402

log = logging.getLogger("serve_holds")
PORT = 8096
SERVER_CORE, CLIENT_CORE = "1", "0"


def one_hold(url: str, out: Path, *, catalog_size: int, rps: int, ramp_s: int, hold_s: int, slo_ms: float,
             model: str) -> dict[str, float]:  # fmt: skip
    shutil.rmtree(out, ignore_errors=True)
    argv = ["taskset", "-c", CLIENT_CORE, *ETUDE, "--log-level", "WARNING", "loadgen", "--url", url,
            "--catalog-size", str(catalog_size), "--target-rps", str(rps), "--ramp-seconds", str(ramp_s),
            "--hold-seconds", str(hold_s), "--preset", "bolcom", "--slo-ms", f"{slo_ms:g}", "--timeout-s", "10",
            "--stack", "serve-holds", "--variant", f"{model}-{rps}", "--model", model, "--runtime", "jit",
            "--instance-type", "local-1core", "--out", str(out)]  # fmt: skip
    subprocess.run(argv, check=True, cwd=ROOT)
    return hold_phase(out, ramp_s)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gru4rec")
    p.add_argument("--catalog-size", type=int, default=1_000_000)
    p.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")], required=True)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ramp-seconds", type=int, default=5)
    p.add_argument("--hold-seconds", type=int, default=20)
    p.add_argument("--slo-ms", type=float, default=50.0)
    p.add_argument("--serve-args", default="--threads 1", help="extra `etude serve` options")
    p.add_argument("--models", type=Path, help="where the model is exported (default: OUT/models)")
    p.add_argument("--model-uri", type=Path, help="serve this exported file instead of exporting --model")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    args.models = args.models or args.out / "models"
    args.models.mkdir(parents=True, exist_ok=True)
    model = args.model_uri or export(args.model, args.catalog_size, args.models)
    serve = ["taskset", "-c", SERVER_CORE, *ETUDE, "--log-level", "WARNING", "serve", "--model-uri", str(model),
             "--host", "127.0.0.1", "--port", str(PORT), *args.serve_args.split()]  # fmt: skip
    report: dict[str, object] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "argv": sys.argv,
                                 "load_avg_at_start": os.getloadavg()}  # fmt: skip
    holds: list[dict[str, object]] = []
    with _server_process(serve, PORT, 600, args.out / "serve.log") as url:
        for repeat in range(args.repeats):
            for rps in args.rates:
                res = one_hold(url, args.out / "loadgen" / f"r{rps}-{repeat}", catalog_size=args.catalog_size,
                               rps=rps, ramp_s=args.ramp_seconds, hold_s=args.hold_seconds, slo_ms=args.slo_ms,
                               model=args.model)  # fmt: skip
                met = res["intended_p90_ms"] <= args.slo_ms and res["errors"] == 0 and res["ok"] == res["requests"]
                holds.append({"rps": rps, "repeat": repeat, "met": met, **res})
                log.info("R=%d repeat %d: p90 %.1f ms (from intended send), %d/%d ok, mean batch %.1f -> %s", rps,
                         repeat, res["intended_p90_ms"], res["ok"], res["requests"], res["mean_batch_size"],
                         "met" if met else "missed")  # fmt: skip
    report |= {"holds": holds, "load_avg_at_end": os.getloadavg()}
    (args.out / "holds.json").write_text(json.dumps(report, indent=1) + "\n")
    for rps in args.rates:
        mine = [h for h in holds if h["rps"] == rps]
        p90s = ", ".join(f"{h['intended_p90_ms']:.1f}" for h in mine)
        print(f"R={rps}: p90 ms per repeat {p90s}; met {sum(bool(h['met']) for h in mine)}/{len(mine)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
