"""Benchmark of the sustained-capacity search (`etude loadgen --find-capacity --repeats N`) under uniform, Poisson
and bursty arrivals, against a server of known capacity and against GRU4Rec.

- `refserver`: loadgen/refserver.py `fifo` (one FIFO worker, a fixed service time). Its capacity is known:
  1 / service time under evenly spread arrivals, the M/D/1 value for the SLO under Poisson arrivals (Erlang's
  formula), and for bursty (gamma) arrivals a Lindley-recursion simulation of the same queue (numpy).
- `gru4rec`: `etude serve --threads 1` with GRU4Rec at C = 1,000,000 (exported with random weights).

Server on core 1, load generator on core 0 (taskset). Raw figures (every summary.json, the holds) go to OUT.

    flock /tmp/etude-bench.lock .venv/bin/python benchmarks/bench_capacity.py --out /tmp/bench/capacity
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from etude.loadgen.refserver import md1_capacity_rps

log = logging.getLogger("bench_capacity")
ROOT = Path(__file__).resolve().parent.parent
ETUDE = [sys.executable, "-m", "etude"]
PORT = 8095
SERVICE_MS = 5.0
BURSTINESS = 2.0
ARRIVALS = ("uniform", "poisson", "bursty")


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def lindley_capacity(service_s: float, slo_s: float, percentile: float, cv: float, n: int = 2_000_000) -> float:
    """The highest rate at which the `percentile` of the time in system of a FIFO D server stays within `slo_s`
    under gamma inter-arrival times of coefficient of variation `cv` (simulated: W_n = max(0, W_n-1 + S - gap))."""
    shape = 1 / cv**2
    unit_gaps = np.random.default_rng(0).gamma(shape, 1 / shape, n)  # mean 1, scaled by 1 / rate below

    def within(rate: float) -> bool:
        steps = np.concatenate([[0.0], np.cumsum(service_s - unit_gaps[1:] / rate)])
        wait = steps - np.minimum.accumulate(np.minimum(steps, 0.0))
        return float(np.percentile(wait + service_s, percentile, method="inverted_cdf")) <= slo_s

    lo, hi = 0.0, 1 / service_s
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if within(mid) else (lo, mid)
    return lo


@contextmanager
def server(argv: list[str], log_path: Path, ready_s: float) -> Iterator[str]:
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(["taskset", "-c", "1", *argv], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{PORT}"
    deadline = time.monotonic() + ready_s
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}; see {log_path}")
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready within {ready_s:g} s; see {log_path}")
            time.sleep(0.25)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def search(url: str, out: Path, *, arrivals: str, catalog_size: int, target_rps: int, slo_ms: float, ramp_s: int,
           hold_s: int, repeats: int) -> dict[str, object]:
    shutil.rmtree(out, ignore_errors=True)
    argv = ["taskset", "-c", "0", *ETUDE, "--log-level", "INFO", "loadgen", "--url", url,
            "--catalog-size", str(catalog_size), "--target-rps", str(target_rps), "--ramp-seconds", str(ramp_s),
            "--hold-seconds", str(hold_s), "--preset", "bolcom", "--slo-ms", f"{slo_ms:g}", "--slo-percentile", "90",
            "--arrivals", arrivals, "--find-capacity", "--repeats", str(repeats), "--out", str(out)]  # fmt: skip
    if arrivals == "bursty":
        argv += ["--burstiness", f"{BURSTINESS:g}"]
    before, start = loadavg(), time.monotonic()
    with open(out.with_suffix(".log"), "w") as logf:
        subprocess.run(argv, check=True, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT)
    summary = json.loads((out / "summary.json").read_text())
    holds = [json.loads((out / f"repeat-{i}" / "summary.json").read_text())["holds"] for i in range(repeats)]
    return {"arrivals": arrivals, "capacity_rps": summary["capacity_rps"],
            "repeat_capacity_rps": summary["repeat_capacity_rps"], "capacity_spread": summary["capacity_spread"],
            "holds_per_repeat": [len(h) for h in holds], "wall_s": round(time.monotonic() - start, 1),
            "loadavg_before": before, "loadavg_after": loadavg(), "command": " ".join(argv[3:])}  # fmt: skip


def markdown(report: dict[str, object]) -> str:
    """The table docs/benchmarks.md shows, from results.json."""
    known = report.get("refserver_known_rps") or {}
    assert isinstance(known, dict)
    lines = ["| server | arrivals | capacity_rps per repeat | median | spread | known capacity | holds | wall s | "
             "load before/after |", "|---|---|---|---|---|---|---|---|---|"]
    runs = report["runs"]
    assert isinstance(runs, dict)
    for name, rows in runs.items():
        for r in rows:
            ref = known.get(r["arrivals"])
            lines.append(
                f"| {name} | {r['arrivals']} | {', '.join(str(c) for c in r['repeat_capacity_rps'])} | "
                f"**{r['capacity_rps']}** | {r['capacity_spread']} | {'-' if ref is None else f'{ref:.1f}'} | "
                f"{r['holds_per_repeat']} | {r['wall_s']} | {r['loadavg_before']} / {r['loadavg_after']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--markdown", action="store_true", help="print the table of OUT/results.json and exit")
    parser.add_argument("--only", default="refserver,gru4rec")
    parser.add_argument("--arrivals", default=",".join(ARRIVALS), help="comma-separated subset of the processes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ramp-seconds", type=int, default=10)
    parser.add_argument("--hold-seconds", type=int, default=3)
    parser.add_argument("--models", type=Path, default=Path("/tmp/bench/models"))
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads((args.out / "results.json").read_text())))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, object] = {"lscpu": subprocess.run(["lscpu"], capture_output=True, text=True).stdout,
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                                 "loadavg_start": Path("/proc/loadavg").read_text().strip(), "runs": {}}  # fmt: skip
    runs: dict[str, list[dict[str, object]]] = {}
    report["runs"] = runs
    arrivals = [a for a in args.arrivals.split(",") if a in ARRIVALS]
    common = {"ramp_s": args.ramp_seconds, "hold_s": args.hold_seconds, "repeats": args.repeats}

    def save() -> None:  # after every search: a run cut short keeps what it measured
        report["loadavg_end"] = Path("/proc/loadavg").read_text().strip()
        (args.out / "results.json").write_text(json.dumps(report, indent=2))

    if "refserver" in args.only:
        s, slo = SERVICE_MS / 1e3, 0.020
        report["refserver_known_rps"] = {"uniform": 1 / s, "poisson": md1_capacity_rps(s, slo, 90),
                                         "bursty": lindley_capacity(s, slo, 90, BURSTINESS)}  # fmt: skip
        argv = [sys.executable, "-m", "etude.loadgen.refserver", "--port", str(PORT), "--behaviour", "fifo",
                "--delay-ms", f"{SERVICE_MS:g}"]  # fmt: skip
        with server(argv, args.out / "refserver.log", 30) as url:
            for a in arrivals:
                runs.setdefault("refserver", []).append(search(
                    url, args.out / f"refserver-{a}", arrivals=a, catalog_size=10_000, target_rps=150, slo_ms=20.0,
                    **common))  # fmt: skip
                save()
    if "gru4rec" in args.only:
        args.models.mkdir(parents=True, exist_ok=True)
        model = args.models / "gru4rec-c1000000-jit.pt"
        subprocess.run([*ETUDE, "export", "--model", "gru4rec", "--catalog-size", "1000000", "--runtime", "jit",
                        "--out", str(model), "--if-missing"], check=True, cwd=ROOT)  # fmt: skip
        argv = [*ETUDE, "--log-level", "WARNING", "serve", "--model-uri", str(model), "--host", "127.0.0.1",
                "--port", str(PORT), "--threads", "1"]  # fmt: skip
        with server(argv, args.out / "gru4rec.log", 600) as url:
            for a in arrivals:
                runs.setdefault("gru4rec", []).append(search(
                    url, args.out / f"gru4rec-{a}", arrivals=a, catalog_size=1_000_000, target_rps=250,
                    slo_ms=50.0, **common))  # fmt: skip
                save()
    save()
    print(json.dumps({k: v for k, v in report.items() if k != "lscpu"}, indent=2))


if __name__ == "__main__":
    main()
