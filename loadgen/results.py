"""Result folders of a load-generator run (contract: etude/results.py, docs/design.md): building, writing, merging.

Definitions (also in docs/benchmarks.md and the README):
- Percentiles are nearest-rank (`numpy.percentile(method="inverted_cdf")`): p90 <= X means at least 90 % of the
  answers took X or less.
- Summary `latency_ms` / `latency_from_intended_ms`: ok answers of the whole run, from the actual send / from the
  intended send slot. The timeline's window percentiles and every SLO judgement use latency from the intended slot
  (what a user would have seen; equal to the former while the generator keeps its schedule).
- A tick "sustains" its target rate when the answers completed in that tick's one-second window include at least
  one ok, no errors, nothing was held back in it, and their SLO percentile is <= the SLO. `max_rps_within_slo`
  is the highest target rate of such a tick (0 when none).
- `slo_met`: over the requests whose slot lies in the hold phase (with no hold: the last ramp tick, at target):
  at least one ok, no errors, nothing held back, SLO percentile <= SLO.
- `achieved_rps`: ok answers received during the hold phase per second (with no hold: during the whole schedule;
  of a run stopped early: during the part of that window that ran).

A folder is written file by file (each atomically), `summary.json` last and any stale one removed first, so a
reader that sees `summary.json` sees a complete folder.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from etude import storage
from etude.results import (
    REQUEST_COLUMNS,
    REQUESTS_FILE,
    SUMMARY_FILE,
    TIMELINE_COLUMNS,
    TIMELINE_FILE,
    Latency,
    RunSpec,
    Summary,
)
from loadgen import client
from loadgen.schedule import NS_PER_S, is_hold_tick

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from loadgen.runner import RunResult

log = logging.getLogger(__name__)

COUNT_COLUMNS = ("target_rps", "sent", "completed", "ok", "held_back", "in_flight", "errors")
OK_STATUS = str(client.OK)


def _schema(columns: dict[str, str]) -> pa.Schema:
    import pyarrow as pa

    return pa.schema([(name, pa.type_for_alias(kind)) for name, kind in columns.items()])


def requests_table(records: dict[str, np.ndarray]) -> pa.Table:
    """The requests.parquet table from the runner's columns (status codes become names)."""
    import numpy as np
    import pyarrow as pa

    codes, inverse = np.unique(records["status"], return_inverse=True)
    names = np.array([client.status_name(int(code)) for code in codes], dtype=object)
    status = names[inverse.ravel()] if len(codes) else np.array([], dtype=object)
    arrays = [
        pa.array(status if name == "status" else records[name], type=pa.type_for_alias(kind))
        for name, kind in REQUEST_COLUMNS.items()
    ]
    return pa.Table.from_arrays(arrays, schema=_schema(REQUEST_COLUMNS))


def counts_table(ticks: Mapping[str, Sequence[int]]) -> pa.Table:
    """Per-second counters (TICK_COUNTERS of the runner) as a table, percentiles still missing."""
    import pyarrow as pa

    n = max(len(v) for v in ticks.values())
    data = {"second": list(range(n))}
    data.update({name: list(ticks[name]) + [0] * (n - len(ticks[name])) for name in COUNT_COLUMNS})
    return pa.table({k: pa.array(v, pa.int32()) for k, v in data.items()})


def percentile(values: np.ndarray, q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q, method="inverted_cdf")) if len(values) else float("nan")


def _latency(values_ms: np.ndarray) -> Latency | None:
    if not len(values_ms):
        return None
    return Latency(**{f"p{q}": percentile(values_ms, q) for q in (50, 90, 95, 99)}, max=float(values_ms.max()))


def summarize(
    requests: pa.Table,
    counts: pa.Table,
    spec: RunSpec,
    *,
    started_at: str,
    duration_s: float,
    partial: bool,
    shards: int = 1,
) -> tuple[Summary, pa.Table]:
    """The summary and the full timeline (counts + window percentiles) of a run or of merged shards."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    status = requests.column("status")
    ok = pc.equal(status, OK_STATUS).to_numpy(zero_copy_only=False)
    intended = requests.column("intended_ns").to_numpy()
    sent = requests.column("sent_ns").to_numpy()
    received = requests.column("received_ns").to_numpy()
    from_sent_ms = (received[ok] - sent[ok]) / 1e6
    from_intended_ms = (received[ok] - intended[ok]) / 1e6
    done_tick = received[ok] // NS_PER_S

    n_ticks = counts.num_rows
    tick_ok = counts.column("ok").to_numpy()
    tick_err = counts.column("errors").to_numpy()
    tick_held = counts.column("held_back").to_numpy()
    tick_target = counts.column("target_rps").to_numpy()
    window: dict[str, list[float]] = {"p50_ms": [], "p90_ms": [], "p99_ms": []}
    order = np.argsort(done_tick, kind="stable")
    bounds = np.searchsorted(done_tick[order], np.arange(n_ticks + 1))
    max_rps = 0.0
    violated: list[bool] = []
    for tick in range(n_ticks):
        lat = from_intended_ms[order[bounds[tick] : bounds[tick + 1]]]
        for q, name in ((50, "p50_ms"), (90, "p90_ms"), (99, "p99_ms")):
            window[name].append(percentile(lat, q))
        too_slow = bool(len(lat)) and percentile(lat, spec.slo_percentile) > spec.slo_ms
        violated.append(bool(tick_err[tick] or tick_held[tick] or too_slow))
        if len(lat) and tick_ok[tick] and not violated[-1]:
            max_rps = max(max_rps, float(tick_target[tick]))
    timeline = counts
    for name, values in window.items():
        timeline = timeline.append_column(name, pa.array(values, pa.float64()))
    timeline = timeline.append_column("slo_violated", pa.array(violated, pa.bool_()))
    timeline = timeline.select(list(TIMELINE_COLUMNS)).cast(_schema(TIMELINE_COLUMNS))

    hold_ticks = [t for t in range(n_ticks) if is_hold_tick(t, spec.ramp_seconds, spec.hold_seconds)]
    in_hold = np.isin(intended // NS_PER_S, hold_ticks)
    hold_lat = (received[in_hold & ok] - intended[in_hold & ok]) / 1e6
    slo_met = bool(
        len(hold_lat)
        and not np.any(in_hold & ~ok)
        and not tick_held[hold_ticks].sum()
        and percentile(hold_lat, spec.slo_percentile) <= spec.slo_ms
    )
    if spec.hold_seconds:
        lo_s, window_s = spec.ramp_seconds, spec.hold_seconds
    else:
        lo_s, window_s = 0, spec.ramp_seconds
    ok_received_s = received[ok] / NS_PER_S
    scheduled_s = int(np.count_nonzero(tick_target))  # fewer than ramp + hold when the run was stopped early
    hi_s = min(lo_s + window_s, scheduled_s)
    in_window = (ok_received_s >= lo_s) & (ok_received_s < hi_s)
    achieved = float(np.count_nonzero(in_window)) / (hi_s - lo_s) if hi_s > lo_s else 0.0

    errors = pc.value_counts(pc.filter(status, pc.invert(pc.equal(status, OK_STATUS)))).to_pylist()
    summary = Summary(
        spec=spec,
        partial=partial,
        started_at=started_at,
        duration_s=round(duration_s, 3),
        requests=requests.num_rows,
        ok=int(ok.sum()),
        errors={e["values"]: e["counts"] for e in sorted(errors, key=lambda e: str(e["values"]))},
        held_back=int(tick_held.sum()),
        achieved_rps=round(achieved, 3),
        latency_ms=_latency(from_sent_ms),
        latency_from_intended_ms=_latency(from_intended_ms),
        max_rps_within_slo=max_rps,
        slo_met=slo_met,
        shards=shards,
    )
    return summary, timeline


def build(result: RunResult, spec: RunSpec) -> tuple[Summary, pa.Table, pa.Table]:
    """Summary, requests and timeline tables of one runner result."""
    requests = requests_table(result.records)
    summary, timeline = summarize(
        requests,
        counts_table(result.ticks),
        spec,
        started_at=result.started_at,
        duration_s=result.duration_s,
        partial=result.partial,
    )
    return summary, requests, timeline


# -- writing and reading -------------------------------------------------------------------------------------


def _parquet_bytes(table: pa.Table) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def check_writable(out: str) -> None:
    """Fail early (UsageError) when `out` cannot take results: write and remove a probe object."""
    if not storage.is_gcs(out) and Path(out).exists() and not Path(out).is_dir():
        raise storage.StorageError(f"{out}: exists and is not a folder")
    created = None if storage.is_gcs(out) else _first_missing(Path(out))
    probe = storage.join(out, f".write-probe-{os.getpid()}")
    storage.write_bytes(probe, b"")
    storage.delete(probe)
    if created is not None:  # leave no empty folders behind: `write` makes them again
        for folder in [Path(out), *Path(out).parents]:
            try:
                folder.rmdir()
            except OSError:  # another process (a sibling shard) is writing there now: it is not ours to remove
                break
            if folder == created:
                break


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (None when `path` exists)."""
    missing = None
    for folder in [path, *path.parents]:
        if folder.exists():
            break
        missing = folder
    return missing


def write(out: str, summary: Summary, requests: pa.Table, timeline: pa.Table) -> None:
    """Write a run folder; summary.json last (readers treat it as 'complete')."""
    storage.delete(storage.join(out, SUMMARY_FILE))
    storage.write_bytes(storage.join(out, REQUESTS_FILE), _parquet_bytes(requests))
    storage.write_bytes(storage.join(out, TIMELINE_FILE), _parquet_bytes(timeline))
    storage.write_bytes(storage.join(out, SUMMARY_FILE), summary.model_dump_json(indent=2).encode())


def write_or_keep(out: str, summary: Summary, requests: pa.Table, timeline: pa.Table) -> None:
    """`write`; when that fails, keep the results in a local temporary folder and name it in the error."""
    try:
        write(out, summary, requests, timeline)
    except storage.StorageError as err:
        keep = tempfile.mkdtemp(prefix="etude-loadgen-")
        try:
            write(keep, summary, requests, timeline)
        except storage.StorageError:
            raise err from None
        raise storage.StorageError(f"{err}; the results were kept in {keep}") from None


def read(out: str) -> tuple[Summary, pa.Table, pa.Table]:
    import pyarrow.parquet as pq

    summary = Summary.model_validate_json(storage.read_bytes(storage.join(out, SUMMARY_FILE)))
    requests = pq.read_table(io.BytesIO(storage.read_bytes(storage.join(out, REQUESTS_FILE))))
    timeline = pq.read_table(io.BytesIO(storage.read_bytes(storage.join(out, TIMELINE_FILE))))
    return summary, requests, timeline


# -- shards --------------------------------------------------------------------------------------------------


def shard_dir(out: str, shard: int) -> str:
    return storage.join(out, f"shard-{shard}")


def remove_summary(out: str) -> None:
    """Remove a run folder's summary.json, so that nobody takes a previous run's for this one's."""
    storage.delete(storage.join(out, SUMMARY_FILE))


def wait_for_shards(
    out: str, shards: int, wait_s: float, not_before: datetime, poll_s: float = 1.0
) -> list[int]:
    """Wait up to `wait_s` until every shard folder has a summary.json of this run; the shards that have one.

    A shard's summary counts only when its measurement started at `not_before` or later: a folder reused by a
    new run (same run id) may still hold the summary of a shard that has not started again yet.
    """
    deadline_ns = time.perf_counter_ns() + int(wait_s * NS_PER_S)
    done: set[int] = set()

    def fresh(i: int) -> bool:
        uri = storage.join(shard_dir(out, i), SUMMARY_FILE)
        if not storage.exists(uri):
            return False
        started = datetime.fromisoformat(Summary.model_validate_json(storage.read_bytes(uri)).started_at)
        return started >= not_before

    while True:
        done |= {i for i in range(shards) if i not in done and fresh(i)}
        if len(done) == shards or time.perf_counter_ns() >= deadline_ns:
            return sorted(done)
        log.info("waiting for shards %s", sorted(set(range(shards)) - done))
        time.sleep(poll_s)


def merge(out: str, shards: int, spec: RunSpec, present: Sequence[int]) -> Summary:
    """Combine the shard folders `present` into one run at `out`: requests concatenated, timelines added per
    second, percentiles recomputed over all requests. Partial when a shard is missing or was partial."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = [read(shard_dir(out, i)) for i in present]
    # Each shard counts time from the start of its own measurement; put them all on the earliest shard's clock
    # (whole seconds for the per-second counts, nanoseconds for the request times).
    starts = [datetime.fromisoformat(p[0].started_at) for p in parts]
    offsets_ns = [int((t - min(starts)).total_seconds() * NS_PER_S) for t in starts]
    shifted = []
    for (_, reqs, _), offset_ns in zip(parts, offsets_ns, strict=True):
        for name in ("intended_ns", "sent_ns", "received_ns"):
            col = reqs.column(name)
            moved = pc.if_else(pc.less(col, 0), col, pc.add(col, offset_ns)) if name == "received_ns" else pc.add(
                col, offset_ns)
            reqs = reqs.set_column(reqs.schema.get_field_index(name), name, moved)
        shifted.append(reqs)
    requests = pa.concat_tables(shifted)
    ticks = [round(o / NS_PER_S) for o in offsets_ns]
    n = max(tick + p[2].num_rows for p, tick in zip(parts, ticks, strict=True))
    counts = {"second": pa.array(range(n), pa.int32())}
    for name in COUNT_COLUMNS:
        total = [0] * n
        for (_, _, tl), tick in zip(parts, ticks, strict=True):
            for i, v in enumerate(tl.column(name).to_pylist()):
                total[tick + i] += v
        counts[name] = pa.array(total, pa.int32())
    missing = sorted(set(range(shards)) - set(present))
    if missing:
        log.warning("merging without shards %s (no summary.json in time)", missing)
    summary, timeline = summarize(
        requests,
        pa.table(counts),
        spec.model_copy(update={"shard": None}),
        started_at=min(p[0].started_at for p in parts),
        duration_s=max(p[0].duration_s for p in parts),
        partial=bool(missing) or any(p[0].partial for p in parts),
        shards=shards,
    )
    write(out, summary, requests.sort_by([("intended_ns", "ascending")]), timeline)
    return summary
