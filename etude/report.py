"""`etude report DIR... --out DIR`: a Markdown report with PNG plots from result folders (each local or gs://).

It holds the capacity table (the paper's Table I, computed; also written as capacity.csv), every run's summary,
latency and throughput over each run (Fig. 4), and, when present, the infrastructure test (Fig. 2, runs of the
stack `infratest`) and micro-benchmarks (Fig. 3, `microbench.csv`). Files appear whole or not at all.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import overload

from etude import capacity, storage
from etude.errors import UsageError
from etude.resultset import ResultSet, RunResult, discover, read_timeline

log = logging.getLogger(__name__)

REPORT_FILE = "report.md"
CAPACITY_FILE = "capacity.csv"
FIGURES_DIR = "figures"
INFRATEST_STACK = "infratest"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `report` to the `etude` parser."""
    p = sub.add_parser(
        "report",
        help="Markdown report, capacity table and plots from result folders",
        description="Read every result (summary.json, timeline.parquet) and microbench.csv under the given folders "
        "or gs:// prefixes and write report.md, capacity.csv and PNG figures.",
    )
    p.add_argument("roots", nargs="+", metavar="DIR", help="result folders or gs://bucket/prefix, searched recursively")
    p.add_argument("--out", required=True,
                   help="folder or gs://bucket/prefix for report.md, capacity.csv and figures/")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    out: str = write_report(args.roots, args.out)
    print(f"report: {storage.join(out, REPORT_FILE)}")
    print(f"capacity table: {storage.join(out, CAPACITY_FILE)}")
    return 0


@overload
def write_report(roots: list[str], out: Path) -> Path: ...
@overload
def write_report(roots: list[str], out: str) -> str: ...
def write_report(roots: list[str], out: Path | str) -> Path | str:
    """Discover results under `roots` and write the report into `out` (a folder or gs://bucket/prefix); a
    UsageError when there is nothing to show. Returns `out`."""
    found = discover(roots)
    if not found.runs and not found.microbench:
        details = "; ".join(found.warnings) or "nothing found"
        raise UsageError(f"no results under {', '.join(roots)} ({details})")
    gcs = isinstance(out, str) and storage.is_gcs(out)
    if gcs:
        storage.split_gcs(str(out))  # a URI without a bucket is refused before any work
    local = None if gcs else Path(out)
    try:
        if local is not None:
            local.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=local, prefix=".report-"))
    except OSError as err:
        raise UsageError(f"--out {out}: cannot write the report there: {err.strerror or err}") from None
    try:
        rows = capacity.capacity_rows(r for r in found.runs if r.stack != INFRATEST_STACK)
        (staging / CAPACITY_FILE).write_text(capacity.to_csv(rows))
        markdown = _markdown(roots, found, rows, staging)
        (staging / REPORT_FILE).write_text(markdown)
        _publish(staging, str(out))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _publish(staging: Path, out: str) -> None:
    """Move (or upload) the staged files into place, figures first and report.md last."""
    for path in sorted(staging.rglob("*"), key=lambda p: (p.name == REPORT_FILE, str(p))):
        if not path.is_file():
            continue
        relative = path.relative_to(staging)
        if storage.is_gcs(out):
            storage.write_bytes(storage.join(out, *relative.parts), path.read_bytes())
        else:
            target = Path(out, relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def _one_line(text: str, limit: int = 300) -> str:
    """A reason for a table cell: the first line and the last log line, pipes escaped."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    short = lines[0] if len(lines) < 2 else f"{lines[0]} ... {lines[-1]}"
    return short[:limit].replace("|", "\\|")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}" if value >= 10 else f"{value:,.2f}"


def _rps(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:,.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return lines + [""]


def _markdown(roots: list[str], found: ResultSet, rows: list[capacity.CapacityRow], staging: Path) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    md = [
        "# ETUDE report",
        "",
        f"{len(found.runs)} run(s) and {len(found.microbench)} micro-benchmark row(s) from "
        f"{', '.join(f'`{r}`' for r in roots)}; written {now}.",
        "",
    ]
    md += _capacity_section(rows)
    md += _runs_section(found.runs)
    md += _timeline_section([r for r in found.runs if r.stack != INFRATEST_STACK], staging)
    md += _infratest_section([r for r in found.runs if r.stack == INFRATEST_STACK], staging)
    md += _microbench_section(found, staging)
    if found.not_measured:
        md += ["## Variants without results", "", "From `etude local` runs: variants that failed or could not run "
               "on that machine.", ""]
        md += _table(["stack", "variant", "status", "reason"],
                     [[e["stack"], e["variant"], e["status"], _one_line(e["reason"])] for e in found.not_measured])
    if found.warnings:
        md += ["## Skipped inputs", ""] + [f"- {w}" for w in found.warnings] + [""]
    return "\n".join(md)


def _capacity_section(rows: list[capacity.CapacityRow]) -> list[str]:
    md = ["## Capacity: which option meets the SLO at the target rate, and at what cost (Table I)", ""]
    if not rows:
        return md + ["No complete end-to-end runs to compute capacity from.", ""]
    md += [
        f"Per use case and model, for each instance type: the sustained capacity of one replica (`capacity_rps` / "
        f"replicas, the median over runs and repeats; defined in ETUDE's docs/design.md, Capacity), "
        f"the replicas the target rate needs (ceil(target / per replica), at most {capacity.MAX_REPLICAS}) and their "
        f"monthly cost. **Bold** marks the cheapest option meeting the SLO for each model; rows measured on this "
        f"machine are ranked apart from cluster rows. Also in `{CAPACITY_FILE}`.",
        "",
    ]
    notes: set[str] = set()
    for case, case_rows in capacity.use_cases(rows).items():
        md += [f"### {case.stack}: C = {case.catalog_size:,} items, target {case.target_rps:,} rps, SLO {case.slo}",
               ""]
        cluster = [r for r in case_rows if r.measured_on == "cluster"]
        best = capacity.cheapest(cluster) or capacity.cheapest(case_rows)
        if best is None:
            md += ["No measured option meets the SLO at the target rate.", ""]
        else:
            tied = [r for r in case_rows if r.meets_slo and r.monthly_usd == best.monthly_usd
                    and r.measured_on == best.measured_on]
            options = " or ".join(f"{r.model} ({r.runtime}) on {r.replicas_needed} x {r.instance_type}" for r in tied)
            where = "" if best.measured_on == "cluster" else " (measured on this machine, no cluster rows)"
            md += [f"Cheapest option meeting the SLO{where}: **{options}, {_usd(best.monthly_usd)} per month**.", ""]
        table = []
        for r in case_rows:
            cost = _usd(r.monthly_usd)
            if r.price_source.startswith("run"):
                cost += " (price from the run)"
                notes.add("price")
            needed = "-" if r.replicas_needed is None else str(r.replicas_needed)
            if r.extrapolated:
                needed += f" (measured {r.measured_replicas})"
                notes.add("extrapolated")
            if r.measured_on == "this machine":
                notes.add("local")
            per_replica = f"{r.capacity_rps_per_replica:,.1f}"
            if r.capacity_spread is not None:
                per_replica += f" (spread {100 * r.capacity_spread:.0f} %, {r.measurements} measurements)"
            if r.repeats_disagree:
                per_replica += " **repeats disagree**"
                notes.add("spread")
            cells = [r.model, r.runtime, r.instance_type, r.measured_on, str(r.runs), per_replica, needed, cost,
                     verdict(r)]
            table.append([f"**{c}**" for c in cells] if r.cheapest else cells)
        md += _table(["model", "runtime", "instance type", "measured on", "runs", "capacity per replica (rps)",
                      "replicas needed", "monthly cost", ""], table)
    md += ["Notes:", ""]
    md += ["- A run without `capacity: {search: true}` only tells whether its target was sustained: its capacity is "
           "the target when its hold met the SLO (a lower bound: the load never went higher) and none otherwise."]
    if "local" in notes:
        md += ["- Rows measured on *this machine* come from `etude local`: their cost is what the instance type "
               "would cost if it performed like the machine that ran the test, which it need not."]
    if "extrapolated" in notes:
        md += ["- Where the replicas needed differ from the replicas measured, linear scale-out is assumed."]
    if "price" in notes:
        md += ["- *price from the run*: the stack set its own price (`etude:prices`), echoed in summary.json."]
    if "spread" in notes:
        md += [f"- *repeats disagree*: the measurements differ by more than {100 * capacity.MAX_SPREAD:.0f} % of "
               "their median; measure again before relying on the figure."]
    return md + [""]


def verdict(row: capacity.CapacityRow) -> str:
    """The last cell of a capacity row. "meets SLO" only where the replicas measured carried the target."""
    if not row.meets_slo:
        return "does not meet SLO"
    measured = row.replicas_needed is not None and row.replicas_needed <= row.measured_replicas
    word = "cheapest" if row.cheapest else "meets SLO"
    return word if measured else f"{word} if {row.replicas_needed} replicas scale linearly"


def _runs_section(runs: list[RunResult]) -> list[str]:
    if not runs:
        return []
    table = []
    for r in runs:
        s, spec = r.summary, r.summary.spec
        lat = s.latency_ms
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(s.errors.items())) or "0"
        table.append([r.stack, r.label, spec.model or "-", spec.runtime or "-",
                      f"{spec.replicas} x {spec.instance_type}",
                      f"{s.requests:,}", f"{s.ok:,}", errors, f"{s.held_back:,}", _ms(lat.p50 if lat else None),
                      _ms(lat.p90 if lat else None), _ms(lat.p99 if lat else None), f"{s.achieved_rps:,.1f}",
                      _rps(s.capacity_rps), "yes" if s.slo_met else "no",
                      "partial" if s.partial else "complete"])
    return ["## Runs", "", "Latency in ms of ok answers, from the actual send.", ""] + _table(
        ["stack", "variant", "model", "runtime", "instances", "requests", "ok", "errors", "held back", "p50", "p90",
         "p99", "achieved rps", "capacity rps", "SLO met", "run"], table)


def _timeline_section(runs: list[RunResult], staging: Path) -> list[str]:
    from etude import plots

    if not runs:
        return []
    md = ["## Latency and throughput over each run (Fig. 4)", ""]
    for run in runs:
        spec = run.summary.spec
        md += [f"### {run.stack} / {run.label}", ""]
        timeline = read_timeline(run)
        if timeline is None or not timeline["second"]:
            md += [f"No readable timeline in `{run.uri}`.", ""]
            continue
        name = f"{FIGURES_DIR}/fig4-{_slug(run.stack)}-{_slug(spec.run_id or 'run')}-{_slug(run.label)}.png"
        violation = plots.latency_throughput(run, timeline, staging / name)
        if violation is None:
            slo = f"p{spec.slo_percentile:g} <= {spec.slo_ms:g} ms, no errors, nothing held back"
            md += [f"The SLO ({slo}) held every second.", ""]
        else:
            i = [int(s) for s in timeline["second"]].index(violation)
            md += [f"First SLO violation at second {violation}, at a target of {timeline['target_rps'][i]:,.0f} rps.",
                   ""]
        md += [f"![{run.label}]({name})", ""]
    return md


def _infratest_section(runs: list[RunResult], staging: Path) -> list[str]:
    from etude import plots

    pairs = [(r, t) for r in runs if (t := read_timeline(r)) is not None and t["second"]]
    if not pairs:
        return []
    name = f"{FIGURES_DIR}/fig2-infratest.png"
    plots.infrastructure_test(pairs, staging / name)
    md = ["## Infrastructure test: servers without model inference (Fig. 2)", ""]
    for run, _ in pairs:
        s = run.summary
        errors = sum(s.errors.values())
        p90 = _ms(s.latency_ms.p90 if s.latency_ms else None)
        md += [f"- **{run.label}**: target {s.spec.target_rps:,} rps, p90 {p90} ms, "
               f"{errors:,} errors of {s.requests:,} requests, capacity {_rps(s.capacity_rps)} rps."]
    return md + ["", f"![infrastructure test]({name})", ""]


def _microbench_section(found: ResultSet, staging: Path) -> list[str]:
    from etude import plots

    if not found.microbench:
        return []
    name = f"{FIGURES_DIR}/fig3-microbench.png"
    plots.microbench(found.microbench, staging / name)
    rows = sorted(found.microbench, key=lambda r: (r["model"], r["runtime"], r["device"], r["catalog_size"]))
    table = [[r["model"], r["runtime"], r["device"], f"{r['catalog_size']:,}", str(r["embedding_dim"]),
              f"{r['requests']:,}", _ms(r["p50_ms"]), _ms(r["p90_ms"]), _ms(r["mean_ms"]), f"{r['recall']:.3f}"]
             for r in rows]
    return [
        "## Micro-benchmark: latency of serial requests vs catalog size (Fig. 3)",
        "",
        f"From {', '.join(f'`{s}`' for s in found.microbench_sources)}.",
        "",
        f"![micro-benchmark]({name})",
        "",
        "recall@21: the share of each answer's 21 items that fp32 exact scoring returns too (1 = exact).",
        "",
        *_table(["model", "runtime", "device", "catalog size", "d", "requests", "p50 ms", "p90 ms", "mean ms",
                 "recall@21"], table),
    ]
