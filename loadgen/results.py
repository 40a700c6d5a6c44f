"""Result folders of a load-generator run (contract: etude/results.py, docs/design.md): building, writing, merging.

What the figures mean (percentiles, the per-second rule, a hold's verdict, `slo_met`, `capacity_rps`,
`achieved_rps`) is defined once, in docs/design.md ("Capacity"); the pure functions below compute exactly that:
`answers` (the ok answers' latencies), `windows` (the timeline's per-second percentiles and rule), `judge_hold`
(one hold's figures and verdict) and `achieved_rps`, put together by `summarize`.

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
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from etude import storage
from etude.loadgen import client
from etude.loadgen.schedule import NS_PER_S, is_hold_tick
from etude.results import (
    COUNT_COLUMNS,
    REQUEST_COLUMNS,
    REQUESTS_FILE,
    SUMMARY_FILE,
    TIMELINE_COLUMNS,
    TIMELINE_FILE,
    Hold,
    Latency,
    RunSpec,
    Summary,
)
from etude.sustained import min_answers

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from etude.loadgen.runner import RunResult

log = logging.getLogger(__name__)

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
    """Per-second counters (COUNT_COLUMNS) as a table, percentiles still missing."""
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


@dataclass(frozen=True)
class Answers:
    """The requests of a run as arrays: every request's intended tick and status; the ok answers' latencies."""

    intended_ns: np.ndarray
    received_ns: np.ndarray
    ok: np.ndarray  # bool per request
    from_sent_ms: np.ndarray  # ok answers only, in request order
    from_intended_ms: np.ndarray
    done_tick: np.ndarray  # the second each ok answer arrived in


def answers(requests: pa.Table) -> Answers:
    import pyarrow.compute as pc

    ok = pc.equal(requests.column("status"), OK_STATUS).to_numpy(zero_copy_only=False)
    intended = requests.column("intended_ns").to_numpy()
    sent = requests.column("sent_ns").to_numpy()
    received = requests.column("received_ns").to_numpy()
    return Answers(intended, received, ok, (received[ok] - sent[ok]) / 1e6, (received[ok] - intended[ok]) / 1e6,
                   received[ok] // NS_PER_S)


@dataclass(frozen=True)
class Windows:
    """Per second: percentiles of the ok answers completed in it (from the intended send) and the per-second rule."""

    percentiles_ms: dict[str, list[float]]  # p50_ms, p90_ms, p99_ms
    violated: list[bool]


def windows(ans: Answers, counts: pa.Table, spec: RunSpec) -> Windows:
    import numpy as np

    n_ticks = counts.num_rows
    errors = counts.column("errors").to_numpy()
    held = counts.column("held_back").to_numpy()
    order = np.argsort(ans.done_tick, kind="stable")
    bounds = np.searchsorted(ans.done_tick[order], np.arange(n_ticks + 1))
    window: dict[str, list[float]] = {"p50_ms": [], "p90_ms": [], "p99_ms": []}
    violated: list[bool] = []
    for tick in range(n_ticks):
        lat = ans.from_intended_ms[order[bounds[tick] : bounds[tick + 1]]]
        for q, name in ((50, "p50_ms"), (90, "p90_ms"), (99, "p99_ms")):
            window[name].append(percentile(lat, q))
        too_slow = bool(len(lat)) and percentile(lat, spec.slo_percentile) > spec.slo_ms
        violated.append(bool(errors[tick] or held[tick] or too_slow))
    return Windows(window, violated)


def achieved_rps(ans: Answers, lo_s: int, hi_s: int) -> float:
    """Ok answers received in seconds [lo_s, hi_s) of the run, per second (0 for an empty window)."""
    import numpy as np

    if hi_s <= lo_s:
        return 0.0
    return float(np.count_nonzero((ans.done_tick >= lo_s) & (ans.done_tick < hi_s))) / (hi_s - lo_s)


def judge_hold(ans: Answers, counts: pa.Table, spec: RunSpec, first_tick: int, ticks: int, rate_rps: int) -> Hold:
    """The figures and the verdict of the requests scheduled in ticks [first_tick, first_tick + ticks)."""
    import numpy as np

    tick = ans.intended_ns // NS_PER_S
    in_hold = (tick >= first_tick) & (tick < first_tick + ticks)
    ok = in_hold & ans.ok
    latency_ms = (ans.received_ns[ok] - ans.intended_ns[ok]) / 1e6
    held = int(counts.column("held_back").to_numpy()[first_tick : first_tick + ticks].sum())
    errors = int(np.count_nonzero(in_hold & ~ans.ok))
    need = min_answers(spec.slo_percentile)
    pct = percentile(latency_ms, spec.slo_percentile) if len(latency_ms) else None
    met = bool(len(latency_ms) >= need and not errors and not held and pct is not None and pct <= spec.slo_ms)
    return Hold(rate_rps=rate_rps, seconds=ticks, requests=int(np.count_nonzero(in_hold)) + held,
                answers=len(latency_ms), held_back=held, errors=errors,
                percentile_ms=None if pct is None else round(pct, 3), min_answers=need,
                achieved_rps=round(achieved_rps(ans, first_tick, first_tick + ticks), 3), slo_met=met)


@dataclass(frozen=True)
class Search:
    """A capacity search's outcome, for `summarize`: the holds as held and what they bracket."""

    holds: list[Hold] = field(default_factory=list)
    capacity_rps: float | None = None
    bracket: tuple[float | None, float | None] = (None, None)


def plain_hold(ans: Answers, counts: pa.Table, spec: RunSpec) -> Hold:
    """A plain run's hold: the hold phase at the target (no hold: the last ramp tick, at the target)."""
    import numpy as np

    target = counts.column("target_rps").to_numpy()
    hold_ticks = [t for t in range(counts.num_rows)
                  if target[t] and is_hold_tick(t, spec.ramp_seconds, spec.hold_seconds)]  # as far as it ran
    first = hold_ticks[0] if hold_ticks else spec.ramp_seconds + spec.hold_seconds
    hold = judge_hold(ans, counts, spec, first, len(hold_ticks), spec.target_rps)
    if spec.hold_seconds == 0:  # no hold: achieved over the whole schedule, as far as it ran
        scheduled_s = int(np.count_nonzero(target))
        hold = hold.model_copy(update={"achieved_rps": round(achieved_rps(ans, 0, scheduled_s), 3)})
    return hold


def summarize(
    requests: pa.Table,
    counts: pa.Table,
    spec: RunSpec,
    *,
    started_at: str,
    duration_s: float,
    partial: bool,
    shards: int = 1,
    search: Search | None = None,
) -> tuple[Summary, pa.Table]:
    """The summary and the full timeline (counts + window percentiles) of a run, merged shards or a search."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ans = answers(requests)
    win = windows(ans, counts, spec)
    timeline = counts
    for name, values in win.percentiles_ms.items():
        timeline = timeline.append_column(name, pa.array(values, pa.float64()))
    timeline = timeline.append_column("slo_violated", pa.array(win.violated, pa.bool_()))
    timeline = timeline.select(list(TIMELINE_COLUMNS)).cast(_schema(TIMELINE_COLUMNS))

    if search is None:
        hold = plain_hold(ans, counts, spec)
        holds, capacity = [hold], (float(spec.target_rps) if hold.slo_met else None)
        bracket: tuple[float | None, float | None] = (capacity, None if hold.slo_met else float(spec.target_rps))
        achieved, slo_met = hold.achieved_rps, hold.slo_met
    else:
        holds, capacity, bracket = search.holds, search.capacity_rps, search.bracket
        at = [h for h in holds if capacity is not None and h.rate_rps == capacity and h.slo_met]
        achieved = at[-1].achieved_rps if at else 0.0
        slo_met = capacity is not None and capacity >= spec.target_rps

    status = requests.column("status")
    errors = pc.value_counts(pc.filter(status, pc.invert(pc.equal(status, OK_STATUS)))).to_pylist()
    summary = Summary(
        spec=spec,
        partial=partial,
        started_at=started_at,
        duration_s=round(duration_s, 3),
        requests=requests.num_rows,
        ok=int(ans.ok.sum()),
        errors={e["values"]: e["counts"] for e in sorted(errors, key=lambda e: str(e["values"]))},
        held_back=int(counts.column("held_back").to_numpy().sum()),
        achieved_rps=achieved,
        latency_ms=_latency(ans.from_sent_ms),
        latency_from_intended_ms=_latency(ans.from_intended_ms),
        slo_met=slo_met and not partial,
        capacity_rps=None if partial else capacity,
        capacity_bracket=bracket,
        holds=holds,
        shards=shards,
    )
    return summary, timeline


def build(result: RunResult, spec: RunSpec, search: Search | None = None) -> tuple[Summary, pa.Table, pa.Table]:
    """Summary, requests and timeline tables of one runner result (of a capacity search when `search` is given)."""
    requests = requests_table(result.records)
    summary, timeline = summarize(
        requests,
        counts_table(result.ticks),
        spec,
        started_at=result.started_at,
        duration_s=result.duration_s,
        partial=result.partial,
        search=search,
    )
    return summary, requests, timeline


def repeat_dir(out: str, repeat: int) -> str:
    return storage.join(out, f"repeat-{repeat}")


def aggregate_repeats(spec: RunSpec, summaries: Sequence[Summary]) -> tuple[Summary, int]:
    """The top-level summary of repeated measurements, and which repeat it takes its other figures from (the one
    whose capacity is nearest the median, the first on a tie). A repeat without a capacity counts as 0 rps. The
    counts (requests, ok, held back, errors) add up every repeat's."""
    import statistics
    from collections import Counter

    values = [s.capacity_rps for s in summaries]
    counted = [v or 0.0 for v in values]
    median = statistics.median(counted)
    middle = min(range(len(counted)), key=lambda i: (abs(counted[i] - median), i))
    spread = (max(counted) - min(counted)) / median if median > 0 else None
    base = summaries[middle]
    partial = any(s.partial for s in summaries)
    summary = base.model_copy(update={
        "spec": spec,
        "partial": partial,
        "capacity_rps": None if partial or median <= 0 else median,
        "slo_met": not partial and median >= spec.target_rps,
        "repeat_capacity_rps": values,
        "capacity_spread": None if spread is None else round(spread, 4),
        "duration_s": round(sum(s.duration_s for s in summaries), 3),
        "requests": sum(s.requests for s in summaries),  # the counts are every repeat's together
        "ok": sum(s.ok for s in summaries),
        "held_back": sum(s.held_back for s in summaries),
        "errors": dict(sum((Counter(s.errors) for s in summaries), Counter())),
    })  # fmt: skip
    return summary, middle


def write_repeats(out: str, spec: RunSpec, summaries: Sequence[Summary]) -> Summary:
    """Write the aggregate of the repeats at `out` (summary.json, and the timeline of the repeat it takes its other
    figures from); each repeat's own folder stays under repeat-<i>/."""
    import pyarrow.parquet as pq

    summary, middle = aggregate_repeats(spec, summaries)
    timeline = pq.read_table(io.BytesIO(storage.read_bytes(storage.join(repeat_dir(out, middle), TIMELINE_FILE))))
    storage.delete(storage.join(out, SUMMARY_FILE))
    storage.write_bytes(storage.join(out, TIMELINE_FILE), _parquet_bytes(timeline))
    storage.write_bytes(storage.join(out, SUMMARY_FILE), summary.model_dump_json(indent=2).encode())
    return summary


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
