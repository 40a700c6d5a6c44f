"""`etude report`: the capacity table (paper Table I) computed from hand-made result folders whose right answer is
known, the report written end to end (files, cheapest option, CSV), and bad input (not results, empty sets)."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etude import capacity
from etude.catalog import INSTANCE_TYPES
from etude.errors import UsageError
from etude.plots import first_violation
from etude.report import verdict, write_report
from etude.results import SUMMARY_FILE, TIMELINE_COLUMNS, TIMELINE_FILE
from etude.resultset import discover

CPU = INSTANCE_TYPES["cpu"].monthly_usd
T4 = INSTANCE_TYPES["gpu-t4"].monthly_usd


def write_run(
    folder: Path,
    *,
    stack: str = "shop",
    variant: str | None = None,
    model: str = "gru4rec",
    runtime: str = "jit",
    instance_type: str = "cpu",
    replicas: int = 1,
    monthly_usd: float | None = None,
    capacity_rps: float | None = 100.0,
    repeat_capacity_rps: list[float | None] | None = None,
    target_rps: int = 100,
    catalog_size: int = 10_000,
    slo_ms: float = 50.0,
    url: str = "http://etude-server:8080",
    partial: bool = False,
    run_id: str = "1",
    shard: str | None = None,
    repeat: int | None = None,
    timeline: dict[str, list[float]] | None = None,
) -> Path:
    """A result folder; the timeline (if given) is written column by column with the contract's types."""
    folder.mkdir(parents=True, exist_ok=True)
    summary = {
        "schema_version": 1,
        "spec": {
            "stack": stack, "run_id": run_id, "variant": variant or f"{model}-{runtime}-{instance_type}",
            "model": model, "runtime": runtime, "instance_type": instance_type, "replicas": replicas,
            "monthly_usd": monthly_usd, "url": url, "catalog_size": catalog_size, "target_rps": target_rps,
            "ramp_seconds": 10, "hold_seconds": 5, "workload": {"preset": "bolcom"}, "seed": 42,
            "slo_ms": slo_ms, "slo_percentile": 90.0, "shard": shard, "repeat": repeat,
            "repeats": max(1, len(repeat_capacity_rps or [])),
        },
        "partial": partial,
        "started_at": "2026-11-26T06:00:00Z",
        "duration_s": 15.0,
        "requests": 1000,
        "ok": 990,
        "errors": {"503": 10},
        "held_back": 0,
        "achieved_rps": min(capacity_rps or 0.0, target_rps),
        "latency_ms": {"p50": 5.0, "p90": 12.0, "p95": 20.0, "p99": 40.0, "max": 90.0},
        "latency_from_intended_ms": {"p50": 5.5, "p90": 13.0, "p95": 21.0, "p99": 41.0, "max": 95.0},
        "capacity_rps": capacity_rps,
        "repeat_capacity_rps": repeat_capacity_rps or [],
        "slo_met": capacity_rps is not None and capacity_rps >= target_rps,
        "shards": 1,
    }  # fmt: skip
    (folder / SUMMARY_FILE).write_text(json.dumps(summary))
    if timeline is not None:
        arrays = {c: pa.array(timeline[c], type=pa.type_for_alias(t)) for c, t in TIMELINE_COLUMNS.items()}
        pq.write_table(pa.table(arrays), folder / TIMELINE_FILE)
    return folder


def ramp_timeline(target_rps: int, seconds: int, *, slow_from_rps: float | None, errors_at: int | None = None
                  ) -> dict[str, list[float]]:
    """A linear ramp; latency jumps from 10 to 80 ms once the target rate reaches `slow_from_rps`."""
    cols: dict[str, list[float]] = {c: [] for c in TIMELINE_COLUMNS}
    for s in range(seconds):
        rate = math.ceil(target_rps * (s + 1) / seconds)
        slow = slow_from_rps is not None and rate >= slow_from_rps
        values = {
            "second": s, "target_rps": rate, "scheduled": rate, "sent": rate, "completed": rate, "ok": rate,
            "held_back": 0,
            "in_flight": 1, "errors": 3 if s == errors_at else 0,
            "p50_ms": 40.0 if slow else 5.0, "p90_ms": 80.0 if slow else 10.0, "p99_ms": 120.0 if slow else 20.0,
            "slo_violated": slow or s == errors_at,
        }  # fmt: skip
        for c, v in values.items():
            cols[c].append(v if isinstance(v, bool) else float(v))
    return cols


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """One use case (C = 10,000, 100 rps, p90 <= 50 ms) measured on several instance types."""
    root = tmp_path / "results"
    tl = ramp_timeline(100, 10, slow_from_rps=None)
    # gru4rec: 40 rps per CPU -> 3 CPUs ($324.27); 150 rps on one T4 -> 1 T4 ($268.09): the T4 is cheaper
    write_run(root / "shop/1/gru-cpu", variant="gru-cpu", capacity_rps=40, timeline=ramp_timeline(
        100, 10, slow_from_rps=41))
    write_run(root / "shop/1/gru-t4", variant="gru-t4", instance_type="gpu-t4", capacity_rps=150, timeline=tl)
    # sasrec: 2 CPU replicas carried 240 rps -> 120 per replica -> 1 CPU ($108.09); the T4 never met the SLO
    write_run(root / "shop/1/sas-cpu", variant="sas-cpu", model="sasrec", replicas=2, capacity_rps=240,
              timeline=tl)
    write_run(root / "shop/1/sas-t4", variant="sas-t4", model="sasrec", instance_type="gpu-t4",
              capacity_rps=0, timeline=ramp_timeline(100, 10, slow_from_rps=1))
    # narm: three runs 30, 55, 200 rps -> median 55 -> 2 CPUs; a partial run does not count
    for run_id, rps in (("1", 30), ("2", 55), ("3", 200)):
        write_run(root / f"shop/{run_id}/narm-cpu", variant="narm-cpu", model="narm", run_id=run_id,
                  capacity_rps=rps)
    write_run(root / "shop/4/narm-cpu", variant="narm-cpu", model="narm", run_id="4", capacity_rps=1,
              partial=True)
    # core on 2 x L4 with a stack price of $500 each (monthly_usd echoes replicas x price): 50 per replica -> 2
    write_run(root / "shop/1/core-l4", variant="core-l4", model="core", instance_type="gpu-l4", replicas=2,
              monthly_usd=1000.0, capacity_rps=100)
    return root


def test_capacity_table_has_the_known_answer(shop: Path) -> None:
    rows = capacity.capacity_rows(discover([str(shop)]).runs)
    got = {(r.model, r.instance_type): (r.capacity_rps_per_replica, r.replicas_needed, r.monthly_usd,
                                        r.cheapest, r.meets_slo) for r in rows}
    assert got == {
        ("gru4rec", "cpu"): (40, 3, round(3 * CPU, 2), False, True),
        ("gru4rec", "gpu-t4"): (150, 1, T4, True, True),
        ("sasrec", "cpu"): (120, 1, CPU, True, True),
        ("sasrec", "gpu-t4"): (0, None, None, False, False),
        ("narm", "cpu"): (55, 2, round(2 * CPU, 2), True, True),
        ("core", "gpu-l4"): (50, 2, 1000.0, True, True),
    }
    narm = next(r for r in rows if r.model == "narm")
    assert narm.runs == 3  # the partial run is left out
    core = next(r for r in rows if r.model == "core")
    assert core.price_source.startswith("run") and core.monthly_usd_per_replica == 500.0
    assert capacity.cheapest(rows).model == "sasrec"


def test_replicas_needed_edges() -> None:
    assert capacity.replicas_needed(100, 100 / 3) == 3  # no float drift to 4
    assert capacity.replicas_needed(100, 100.0) == 1
    assert capacity.replicas_needed(100, 0.0) is None
    assert capacity.replicas_needed(100, 100 / (capacity.MAX_REPLICAS + 1)) is None


def test_first_violation_is_the_first_second_the_load_generator_marked() -> None:
    assert first_violation(ramp_timeline(100, 10, slow_from_rps=41)) == 4  # ceil(100*5/10) = 50 >= 41
    assert first_violation(ramp_timeline(100, 10, slow_from_rps=None)) is None
    assert first_violation(ramp_timeline(100, 10, slow_from_rps=None, errors_at=7)) == 7


def test_report_end_to_end(shop: Path, tmp_path: Path) -> None:
    (shop / "notes").mkdir()
    (shop / "notes" / SUMMARY_FILE).write_text('{"hello": "world"}')  # not a result: skipped with a warning
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "etude", "report", str(shop), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    assert f"Cheapest option meeting the SLO: **sasrec (jit) on 1 x cpu, ${CPU:,.2f} per month**" in md
    assert "notes" in md and "not an etude result summary" in md  # the skipped folder is named
    assert "First SLO violation at second 4" in md  # gru-cpu's timeline
    for name in ("gru-cpu", "gru-t4", "sas-cpu", "sas-t4"):
        png = out / "figures" / f"fig4-shop-1-{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png.relative_to(out)})" in md
    with open(out / "capacity.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["model"] for r in table if r["cheapest"] == "True"] == ["core", "gru4rec", "narm", "sasrec"]
    gru_cpu = next(r for r in table if (r["model"], r["instance_type"]) == ("gru4rec", "cpu"))
    assert (gru_cpu["replicas_needed"], float(gru_cpu["monthly_usd"])) == ("3", round(3 * CPU, 2))
    sas_t4 = next(r for r in table if (r["model"], r["instance_type"]) == ("sasrec", "gpu-t4"))
    assert (sas_t4["replicas_needed"], sas_t4["monthly_usd"], sas_t4["meets_slo"]) == ("", "", "False")
    assert not list(out.glob(".report-*"))  # no staging left behind


def test_local_runs_are_flagged(tmp_path: Path) -> None:
    write_run(tmp_path / "r/a", url="http://127.0.0.1:8080", capacity_rps=100)
    out = write_report([str(tmp_path / "r")], tmp_path / "out")
    rows = list(csv.DictReader(open(out / "capacity.csv")))
    assert rows[0]["measured_on"] == "this machine"
    assert "come from `etude local`" in (out / "report.md").read_text()


def test_infratest_and_microbench_figures(tmp_path: Path) -> None:
    root = tmp_path / "r"
    for variant, slow in (("etude-noop", None), ("torchserve-empty", 300)):
        write_run(root / "infratest/1" / variant, stack="infratest", variant=variant, model="noop", target_rps=1000,
                  capacity_rps=1000 if slow is None else 290,
                  timeline=ramp_timeline(1000, 20, slow_from_rps=slow, errors_at=15 if slow else None))
    bench = root / "bench" / "microbench.csv"
    bench.parent.mkdir(parents=True)
    lines = ["model,runtime,device,catalog_size,embedding_dim,requests,p50_ms,p90_ms,mean_ms,recall"]
    for c in (10_000, 100_000, 1_000_000):
        d = math.ceil(c**0.25)
        lines += [f"gru4rec,{rt},cpu,{c},{d},200,{c / 1e5 * f:.3f},{c / 1e5 * f * 1.2:.3f},{c / 1e5 * f:.3f},{r}"
                  for rt, f, r in (("eager", 2.0, 1.0), ("jit", 1.0, 1.0), ("int8", 0.7, 0.9876))]
    bench.write_text("\n".join(lines) + "\n")
    out = write_report([str(root)], tmp_path / "out")
    md = (out / "report.md").read_text()
    assert "(Fig. 2)" in md and "**torchserve-empty**" in md and "**etude-noop**" in md
    assert "(Fig. 3)" in md and "1,000,000" in md
    assert "| int8 | cpu | 1,000,000 |" in md and "| 0.988 |" in md  # the runtime and its recall@21
    assert (out / "figures/fig2-infratest.png").stat().st_size > 1000
    assert (out / "figures/fig3-microbench.png").stat().st_size > 1000
    assert "No complete end-to-end runs" in md  # the infrastructure test is no use case


def test_empty_set_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no results under"):
        write_report([str(tmp_path / "empty"), str(tmp_path / "missing")], tmp_path / "out")
    assert not (tmp_path / "out" / "report.md").exists()
    proc = subprocess.run([sys.executable, "-m", "etude", "report", str(tmp_path / "empty"), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no results under" in proc.stderr and "Traceback" not in proc.stderr


def test_not_results_are_skipped_with_a_warning(tmp_path: Path) -> None:
    root = tmp_path / "r"
    write_run(root / "good", capacity_rps=100)
    (root / "bad").mkdir()
    (root / "bad" / SUMMARY_FILE).write_text("not json at all")
    (root / "csv").mkdir()
    (root / "csv" / "microbench.csv").write_text("a,b\n1,2\n")
    found = discover([str(root)])
    assert [r.label for r in found.runs] == ["gru4rec-jit-cpu"]
    assert any("bad" in w and "not an etude result" in w for w in found.warnings)
    assert any("not a micro-benchmark CSV" in w for w in found.warnings)


def test_reads_results_from_gcs(gcs_bucket: str, shop: Path, tmp_path: Path) -> None:
    from etude import storage

    for path in shop.rglob("*"):
        if path.is_file():
            storage.write_bytes(f"gs://{gcs_bucket}/runs/{path.relative_to(shop)}", path.read_bytes())
    out = write_report([f"gs://{gcs_bucket}/runs", "gs://no-such-bucket/runs"], tmp_path / "out")
    assert "skipped gs://no-such-bucket/runs: cannot list" in (out / "report.md").read_text()
    local = capacity.to_csv(capacity.capacity_rows(discover([str(shop)]).runs))
    assert (out / "capacity.csv").read_text() == local
    assert (out / "figures" / "fig4-shop-1-gru-cpu.png").exists()


def test_timeline_columns_round_trip(tmp_path: Path) -> None:
    """The hand-made timelines use exactly the contract's columns and types."""
    write_run(tmp_path / "r", timeline=ramp_timeline(10, 3, slow_from_rps=None))
    table = pq.read_table(tmp_path / "r" / TIMELINE_FILE)
    assert table.schema == pa.schema([(c, pa.type_for_alias(t)) for c, t in TIMELINE_COLUMNS.items()])
    assert json.loads((tmp_path / "r" / SUMMARY_FILE).read_text())["spec"]["stack"] == "shop"


def test_shard_pieces_count_once_through_their_merged_run(tmp_path: Path) -> None:
    root = tmp_path / "r"
    write_run(root / "merged", capacity_rps=100)
    for i in range(2):
        write_run(root / "merged" / f"shard-{i}", shard=f"{i}/2", capacity_rps=50)
    write_run(root / "orphan" / "shard-1", variant="orphan", shard="1/2")
    found = discover([str(root)])
    assert [(r.label, r.summary.capacity_rps) for r in found.runs] == [("gru4rec-jit-cpu", 100)]
    assert any("shard 1/2 of a run without a merged summary" in w for w in found.warnings)


def test_report_to_gcs_lands_in_the_bucket_not_in_a_local_folder(
    gcs_bucket: str, shop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from etude import storage
    from etude.cli import main

    monkeypatch.chdir(tmp_path)
    out = f"gs://{gcs_bucket}/reports/r1"
    assert main(["report", str(shop), "--out", out]) == 0
    assert not (tmp_path / "gs:").exists()
    md = storage.read_bytes(f"{out}/report.md").decode()
    assert "Cheapest option meeting the SLO: **sasrec (jit) on 1 x cpu" in md
    assert storage.read_bytes(f"{out}/figures/fig4-shop-1-gru-cpu.png")[:8] == b"\x89PNG\r\n\x1a\n"
    local = capacity.to_csv(capacity.capacity_rows(discover([str(shop)]).runs))
    assert storage.read_bytes(f"{out}/capacity.csv").decode() == local
    with pytest.raises(UsageError, match="no bucket"):
        write_report([str(shop)], "gs:///reports")


def test_capacity_table_never_says_meets_for_a_run_that_missed_the_slo(tmp_path: Path) -> None:
    root = tmp_path / "r"
    write_run(root / "miss", variant="miss", capacity_rps=None)  # a plain run whose hold failed
    write_run(root / "short", variant="short", model="narm", capacity_rps=60)  # a search: 60 < 100 on 1 replica
    out = write_report([str(root)], tmp_path / "out")
    table = list(csv.DictReader(open(out / "capacity.csv")))
    md = (out / "report.md").read_text()
    by_model = {r["model"]: r for r in table}
    assert by_model["gru4rec"]["meets_slo"] == "False" and by_model["gru4rec"]["replicas_needed"] == ""
    for run in discover([str(root)]).runs:
        assert not run.summary.slo_met
        row = next(r for r in capacity.capacity_rows([run]))
        cell = verdict(row)
        assert cell not in ("meets SLO", "cheapest")  # at most "... if 2 replicas scale linearly"
    assert "| does not meet SLO |" in md and "if 2 replicas scale linearly" in md


def test_repeats_give_median_and_spread_and_disagreement_is_flagged(tmp_path: Path) -> None:
    root = tmp_path / "r"
    write_run(root / "calm", variant="calm", capacity_rps=100, repeat_capacity_rps=[100, 95, 104])
    for i, c in enumerate((100, 95, 104)):  # its pieces are not counted again
        write_run(root / "calm" / f"repeat-{i}", variant="calm", capacity_rps=c, repeat=i)
    write_run(root / "wild", variant="wild", model="narm", capacity_rps=100, repeat_capacity_rps=[60, 100, None])
    rows = {r.model: r for r in capacity.capacity_rows(discover([str(root)]).runs)}
    calm, wild = rows["gru4rec"], rows["narm"]
    assert (calm.capacity_rps_per_replica, calm.measurements, calm.runs) == (100, 3, 1)
    assert calm.capacity_spread == 0.09 and not calm.repeats_disagree
    assert wild.capacity_rps_per_replica == 60 and wild.capacity_spread == round(100 / 60, 3) and wild.repeats_disagree
    md = (write_report([str(root)], tmp_path / "out") / "report.md").read_text()
    assert "**repeats disagree**" in md


def test_local_rows_never_compete_with_cluster_rows_and_the_newest_run_prices(tmp_path: Path) -> None:
    root = tmp_path / "r"
    write_run(root / "cluster", variant="c", instance_type="gpu-t4", capacity_rps=100)
    write_run(root / "laptop", variant="l", url="http://127.0.0.1:8080", capacity_rps=100)  # cheaper cpu, local
    # the same cluster variant on cpu in runs 2 and 10: run 10 is the newest (numeric order), its price 0 counts
    write_run(root / "2/cpu", variant="x", run_id="2", replicas=2, monthly_usd=500.0, capacity_rps=200)
    write_run(root / "10/cpu", variant="x", run_id="10", replicas=1, monthly_usd=0.0, capacity_rps=100)
    rows = capacity.capacity_rows(discover([str(root)]).runs)
    cpu = next(r for r in rows if r.instance_type == "cpu" and r.measured_on == "cluster")
    assert (cpu.monthly_usd_per_replica, cpu.measured_replicas, cpu.runs) == (0.0, 1, 2)
    assert cpu.cheapest  # $0 beats the T4 among cluster rows
    local = next(r for r in rows if r.measured_on == "this machine")
    assert local.cheapest  # the cheapest of this machine's rows, ranked on their own
    md = (write_report([str(root)], tmp_path / "out") / "report.md").read_text()
    assert "Cheapest option meeting the SLO: **gru4rec (jit) on 1 x cpu, $0.00 per month**" in md
    # sasrec: only a T4 on the cluster and a (cheaper) cpu on this machine: the cluster row is the answer
    write_run(root / "sas-t4", variant="st", model="sasrec", instance_type="gpu-t4", capacity_rps=100)
    write_run(root / "sas-local", variant="sl", model="sasrec", url="http://127.0.0.1:1", capacity_rps=100)
    sas = [r for r in capacity.capacity_rows(discover([str(root)]).runs) if r.model == "sasrec"]
    t4 = next(r for r in sas if r.measured_on == "cluster")
    assert t4.cheapest and capacity.cheapest([r for r in sas if r.measured_on == "cluster"]) is t4
