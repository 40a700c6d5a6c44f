"""etude.loadgen.results: the summary's definitions on hand-made runs, merging shards, and atomic result folders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from etude import storage
from etude.loadgen import client, results
from etude.loadgen.runner import RunResult
from etude.results import REQUEST_COLUMNS, SUMMARY_FILE, TIMELINE_COLUMNS, RunSpec, Summary

MS = 1_000_000
S = 1_000_000_000


def spec(ramp: int, hold: int, rate: int, slo_ms: float = 50.0, shard: str | None = None) -> RunSpec:
    return RunSpec(
        url="http://x",
        catalog_size=10,
        target_rps=rate,
        ramp_seconds=ramp,
        hold_seconds=hold,
        workload={"preset": "bolcom"},
        seed=0,
        slo_ms=slo_ms,
        slo_percentile=90.0,
        shard=shard,
    )


def fake_run(
    latency_ms_per_tick: Sequence[Sequence[float]],
    targets: list[int],
    *,
    status: dict[int, int] | None = None,
    held: dict[int, int] | None = None,
    first_session: int = 0,
) -> RunResult:
    """A run where tick k sends len(latency_ms_per_tick[k]) requests at its slots with those latencies."""
    rows: dict[str, list[float]] = {name: [] for name in REQUEST_COLUMNS}
    ticks = {name: [0] * (len(targets) + 1) for name in results.COUNT_COLUMNS}
    ticks["target_rps"][: len(targets)] = targets
    n = 0
    for k, lats in enumerate(latency_ms_per_tick):
        for i, lat in enumerate(lats):
            due = k * S + i * S // max(1, len(lats))
            code = (status or {}).get(n, client.OK)
            received = due + int(lat * MS) if code > 0 else -1
            for name, value in (
                ("session_id", first_session + n),
                ("position", 0),
                ("item_id", 1),
                ("intended_ns", due),
                ("sent_ns", due),
                ("received_ns", received),
                ("status", code),
                ("queue_ms", np.nan),
                ("inference_ms", np.nan),
                ("batch_size", -1),
            ):
                rows[name].append(value)
            done = (due + int(lat * MS)) // S
            ticks["sent"][k] += 1
            ticks["completed"][done] += 1
            ticks["ok" if code == client.OK else "errors"][done] += 1
            n += 1
    for k, h in (held or {}).items():
        ticks["held_back"][k] = h
    dtypes = {
        "session_id": "q",
        "position": "i",
        "item_id": "q",
        "status": "i",
        "batch_size": "i",
        "queue_ms": "d",
        "inference_ms": "d",
    }
    records = {name: np.array(v, dtype=dtypes.get(name, "q")) for name, v in rows.items()}
    return RunResult(records, ticks, "2026-01-01T00:00:00+00:00", float(len(targets)), False, 0)


def test_summary_definitions_on_a_known_run() -> None:
    # ramp 3 ticks (2, 4, 6 rps), hold 2 ticks at 6; latencies grow with the rate; one error in the last tick
    lats = [[10, 10], [20] * 4, [60] * 6, [30] * 6, [30] * 6]
    run = fake_run(lats, [2, 4, 6, 6, 6], status={23: 503})
    summary, requests, timeline = results.build(run, spec(3, 2, 6, slo_ms=50.0))
    assert summary.requests == 24 and summary.ok == 23 and summary.errors == {"503": 1}
    hold = summary.holds[0]  # the hold: ticks 3 and 4, 12 requests, one error
    assert (hold.rate_rps, hold.seconds, hold.requests, hold.answers, hold.errors) == (6, 2, 12, 11, 1)
    assert hold.percentile_ms == 30 and not hold.slo_met
    assert not summary.slo_met and summary.capacity_rps is None  # an error during the hold
    assert summary.capacity_bracket == (None, 6)
    assert summary.achieved_rps == pytest.approx((6 + 5) / 2)  # ok answers received during the hold, per second
    assert summary.latency_ms is not None and summary.latency_ms.p50 == 30 and summary.latency_ms.max == 60
    assert timeline.column_names == list(TIMELINE_COLUMNS) and requests.column_names == list(REQUEST_COLUMNS)
    assert timeline.column("p90_ms").to_pylist()[:5] == [10, 20, 60, 30, 30]
    # the per-second rule the report marks: too slow at second 2, an error at second 4
    assert timeline.column("slo_violated").to_pylist()[:5] == [False, False, True, False, True]


def test_a_tick_with_held_back_sends_does_not_count_as_sustained() -> None:
    run = fake_run([[5] * 2, [5] * 4], [2, 4], held={1: 1})
    summary, _, timeline = results.build(run, spec(2, 0, 4))
    assert summary.held_back == 1 and summary.holds[0].held_back == 1
    assert not summary.slo_met  # no hold: judged on the last ramp tick, which held a send back
    assert summary.capacity_rps is None
    assert timeline.column("slo_violated").to_pylist()[:2] == [False, True]


@pytest.mark.parametrize(("answers", "met"), [(200, True), (199, False)])
def test_slo_met_at_target_with_a_clean_hold_of_enough_answers(answers: int, met: bool) -> None:
    # p90 needs 200 answers (20 of them above the percentile); a hold of fewer establishes nothing
    run = fake_run([[5.0] * 100, [5.0] * 200, [5.0] * answers], [100, 200, 200])
    summary, _, _ = results.build(run, spec(2, 1, 200))
    assert summary.holds[0].min_answers == 200 and summary.holds[0].answers == answers
    assert summary.slo_met is met and abs(summary.achieved_rps - answers) <= 1  # by arrival second
    assert summary.capacity_rps == (200 if met else None)


def test_a_plain_run_that_misses_the_slo_has_no_capacity() -> None:
    run = fake_run([[5.0] * 100, [5.0] * 200, [5.0] * 100 + [80.0] * 100], [100, 200, 200])
    summary, _, _ = results.build(run, spec(2, 1, 200))
    assert summary.holds[0].percentile_ms == 80 and not summary.slo_met and summary.capacity_rps is None


def test_repeats_aggregate_to_the_median_capacity_and_its_spread() -> None:
    base = results.build(fake_run([[5] * 2], [2]), spec(1, 0, 2))[0]
    parts = [base.model_copy(update={"capacity_rps": c}) for c in (100.0, None, 90.0)]
    summary, middle = results.aggregate_repeats(spec(1, 0, 100), parts)
    assert summary.repeat_capacity_rps == [100.0, None, 90.0] and middle == 2
    assert summary.capacity_rps == 90.0 and summary.capacity_spread == round(100 / 90, 4)  # None counts as 0
    assert not summary.slo_met


def test_error_kinds_are_named_and_timeouts_have_no_answer() -> None:
    run = fake_run([[5] * 4], [4], status={0: client.TIMEOUT, 1: client.BAD_RESPONSE, 2: client.CONNECT})
    summary, requests, _ = results.build(run, spec(1, 0, 4))
    assert summary.errors == {"timeout": 1, "bad_response": 1, "connect": 1} and summary.ok == 1
    assert requests.column("received_ns").to_pylist()[:3] == [-1, -1, -1]
    assert requests.schema == pa.schema([(n, pa.type_for_alias(t)) for n, t in REQUEST_COLUMNS.items()])


RUN_START = datetime(2026, 1, 1, tzinfo=UTC)  # fake_run's started_at


def write_shard(out: str, i: int, n: int, lat_ms: float, partial: bool = False, started_at: str | None = None) -> None:
    run = fake_run([[lat_ms] * 10, [lat_ms] * 10], [10, 10], first_session=i * 1000)
    run.partial = partial
    if started_at is not None:
        run = replace(run, started_at=started_at)
    summary, requests, timeline = results.build(run, spec(1, 1, 10 * n, shard=f"{i}/{n}"))
    results.write(results.shard_dir(out, i), summary, requests, timeline)


def test_merge_recomputes_percentiles_over_all_requests(tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    write_shard(out, 0, 2, 1.0)
    write_shard(out, 1, 2, 100.0)
    present = results.wait_for_shards(out, 2, wait_s=1.0, not_before=RUN_START)
    merged = results.merge(out, 2, spec(1, 1, 20, shard="0/2"), present)
    summary, requests, timeline = results.read(out)
    assert summary == merged and summary.shards == 2 and not summary.partial and summary.spec.shard is None
    assert summary.requests == 40 and requests.num_rows == 40
    assert summary.latency_ms is not None
    assert summary.latency_ms.p50 == 1.0 and summary.latency_ms.p90 == 100.0  # not an average of shard figures
    assert timeline.column("target_rps").to_pylist()[:2] == [20, 20]
    assert summary.achieved_rps == 20


def test_merge_with_a_missing_shard_is_partial(tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    write_shard(out, 0, 3, 1.0)
    write_shard(out, 2, 3, 1.0)
    present = results.wait_for_shards(out, 3, wait_s=0.3, not_before=RUN_START, poll_s=0.1)
    assert present == [0, 2]
    summary = results.merge(out, 3, spec(1, 1, 30, shard="0/3"), present)
    assert summary.partial and summary.requests == 40


def test_a_shard_summary_from_an_earlier_run_is_not_merged(tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    write_shard(out, 0, 2, 1.0)
    write_shard(out, 1, 2, 1.0, started_at="2025-12-31T23:00:00+00:00")  # left over from the previous run
    assert results.wait_for_shards(out, 2, wait_s=0.3, not_before=RUN_START, poll_s=0.1) == [0]


def test_merge_puts_shards_on_one_clock(tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    write_shard(out, 0, 2, 1.0)
    write_shard(out, 1, 2, 1.0, started_at="2026-01-01T00:00:03+00:00")  # its pod started 3 s later
    results.merge(out, 2, spec(1, 1, 20, shard="0/2"), [0, 1])
    _, requests, timeline = results.read(out)
    assert timeline.column("target_rps").to_pylist()[:5] == [10, 10, 0, 10, 10]
    shard1 = requests.filter(pa.compute.greater_equal(requests.column("session_id"), 1000))
    assert min(shard1.column("intended_ns").to_pylist()) == 3 * S


def test_summary_is_written_last_and_a_stale_one_removed_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    summary, requests, timeline = results.build(fake_run([[5]], [1]), spec(1, 0, 1))
    results.write(str(out), summary, requests, timeline)
    order: list[str] = []
    real = storage.write_bytes

    def failing_write(uri: str, data: bytes) -> None:
        order.append(Path(uri).name)
        if uri.endswith("timeline.parquet"):
            raise storage.StorageError(f"cannot write {uri}: disk full")
        real(uri, data)

    monkeypatch.setattr(storage, "write_bytes", failing_write)
    with pytest.raises(storage.StorageError):
        results.write(str(out), summary, requests, timeline)
    assert not (out / SUMMARY_FILE).exists()  # a reader never sees an old summary next to new files
    monkeypatch.setattr(storage, "write_bytes", lambda uri, data: (order.append(Path(uri).name), real(uri, data)))
    order.clear()
    results.write(str(out), summary, requests, timeline)
    assert order[-1] == SUMMARY_FILE and len(order) == 3


def test_results_that_cannot_be_written_are_kept_locally_and_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    summary, requests, timeline = results.build(fake_run([[5]], [1]), spec(1, 0, 1))
    with pytest.raises(storage.StorageError, match="kept in") as err:
        results.write_or_keep(str(blocker / "run"), summary, requests, timeline)
    kept = str(err.value).rsplit("kept in ", 1)[1]
    assert Summary.model_validate_json(Path(kept, SUMMARY_FILE).read_bytes()) == summary


def test_gcs_folder_round_trip(gcs_bucket: str) -> None:
    out = f"gs://{gcs_bucket}/stack/1/variant"
    results.check_writable(out)
    summary, requests, timeline = results.build(fake_run([[5] * 3], [3]), spec(1, 0, 3))
    results.write(out, summary, requests, timeline)
    got = results.read(out)
    nan_free = ["queue_ms", "inference_ms"]  # NaN != NaN
    assert got[0] == summary and got[1].drop_columns(nan_free).equals(requests.drop_columns(nan_free))
    assert got[1].schema == requests.schema and got[2].schema == timeline.schema
    assert got[2].column("sent").equals(timeline.column("sent"))
    names = sorted(b.name for b in storage.gcs_client().list_blobs(gcs_bucket))
    assert names == [f"stack/1/variant/{f}" for f in ("requests.parquet", "summary.json", "timeline.parquet")]
