"""The capacity table (the paper's Table I, computed): per use case, model and instance type, how many requests per
second one replica sustains within the SLO (`capacity_rps`, docs/design.md; the median over runs and repeats), how
many replicas the target rate needs, what that costs per month, and which option is the cheapest one that meets
the SLO. Rows measured on this machine (`etude local`) and on a cluster are ranked separately.

Pure functions over run summaries; no I/O besides writing the CSV.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields

from etude.catalog import INSTANCE_TYPES
from etude.resultset import RunResult

MAX_REPLICAS = 100  # the most a stack may declare (etude.spec.Variant.replicas); more counts as "does not meet"
_PRICE_TOLERANCE_USD = 0.01
MAX_SPREAD = 0.20  # repeats whose capacities differ by more than this fraction of their median are flagged


@dataclass(frozen=True)
class UseCase:
    stack: str
    catalog_size: int
    target_rps: int
    slo_percentile: float
    slo_ms: float

    @property
    def slo(self) -> str:
        return f"p{self.slo_percentile:g} <= {self.slo_ms:g} ms"


@dataclass
class CapacityRow:
    stack: str
    catalog_size: int
    target_rps: int
    slo_percentile: float
    slo_ms: float
    model: str
    runtime: str
    instance_type: str
    measured_on: str  # "this machine" (etude local) or "cluster"
    runs: int  # complete runs this row is computed from
    measurements: int  # capacities the median is taken over (each repeat of each run; the paper ran three)
    measured_replicas: int  # of the newest run
    capacity_rps_per_replica: float  # median; a measurement without a capacity counts as 0
    capacity_spread: float | None  # (max - min) / median of the measurements; None for one, or a median of 0
    replicas_needed: int | None  # None: the SLO is not met at any rate, or it would take more than MAX_REPLICAS
    monthly_usd_per_replica: float | None
    monthly_usd: float | None  # replicas_needed x price; None when it does not meet the SLO or has no price
    price_source: str  # "catalog", "run (stack price override)", "run" or "unknown"
    meets_slo: bool
    cheapest: bool = False  # the cheapest option meeting the SLO for this use case and model

    @property
    def use_case(self) -> UseCase:
        return UseCase(self.stack, self.catalog_size, self.target_rps, self.slo_percentile, self.slo_ms)

    @property
    def repeats_disagree(self) -> bool:
        return self.capacity_spread is not None and self.capacity_spread > MAX_SPREAD

    @property
    def extrapolated(self) -> bool:
        """The replica count needed was not the one measured: linear scale-out is assumed."""
        return self.replicas_needed is not None and self.replicas_needed != self.measured_replicas


CSV_COLUMNS = [f.name for f in fields(CapacityRow)] + ["repeats_disagree"]


def replicas_needed(target_rps: float, per_replica_rps: float) -> int | None:
    """ceil(target / per replica), or None when no replica count up to MAX_REPLICAS carries the target."""
    if per_replica_rps <= 0 or not math.isfinite(per_replica_rps):
        return None
    needed = max(1, math.ceil(target_rps / per_replica_rps - 1e-9))
    return needed if needed <= MAX_REPLICAS else None


def run_order(run: RunResult) -> tuple[int, int, str]:
    """Runs in the order they were made: numeric run ids as numbers (2 before 10), then other ids as text."""
    run_id = run.summary.spec.run_id or ""
    return (0, int(run_id), "") if run_id.isdigit() else (1, 0, run_id)


def measurements(run: RunResult) -> list[float]:
    """A run's capacities per replica: one per repeat (one for a run without repeats); none counts as 0."""
    s = run.summary
    values = s.repeat_capacity_rps or [s.capacity_rps]
    return [(v or 0.0) / max(1, s.spec.replicas) for v in values]


def _price(newest: RunResult, instance_type: str) -> tuple[float | None, str]:
    """Monthly USD per replica: the catalog's, unless the newest run echoed another (a stack's `etude:prices`; a
    price of 0 is a price)."""
    catalog = INSTANCE_TYPES[instance_type].monthly_usd if instance_type in INSTANCE_TYPES else None
    spec = newest.summary.spec
    if spec.monthly_usd is not None:
        run_price = round(spec.monthly_usd / max(1, spec.replicas), 2)
        if catalog is None:
            return run_price, "run"
        if abs(run_price - catalog) > _PRICE_TOLERANCE_USD:
            return run_price, "run (stack price override)"
    if catalog is not None:
        return catalog, "catalog"
    return None, "unknown"


def capacity_rows(runs: Iterable[RunResult]) -> list[CapacityRow]:
    """One row per use case x model x runtime x instance type, from complete (not partial) runs."""
    groups: dict[tuple[UseCase, str, str, str, str], list[RunResult]] = defaultdict(list)
    for run in runs:
        s = run.summary.spec
        if run.summary.partial:
            continue
        case = UseCase(run.stack, s.catalog_size, s.target_rps, s.slo_percentile, s.slo_ms)
        where = "this machine" if run.measured_locally else "cluster"
        groups[(case, s.model or run.label, s.runtime or "-", s.instance_type or "unknown", where)].append(run)

    rows = []
    for (case, model, runtime, itype, where), group in sorted(groups.items(), key=lambda kv: _sort_key(kv[0])):
        group.sort(key=run_order)
        values = [v for run in group for v in measurements(run)]
        per_replica = statistics.median(values)
        spread = (max(values) - min(values)) / per_replica if len(values) > 1 and per_replica > 0 else None
        needed = replicas_needed(case.target_rps, per_replica)
        price, source = _price(group[-1], itype)
        rows.append(CapacityRow(
            stack=case.stack, catalog_size=case.catalog_size, target_rps=case.target_rps,
            slo_percentile=case.slo_percentile, slo_ms=case.slo_ms, model=model, runtime=runtime,
            instance_type=itype, measured_on=where, runs=len(group), measurements=len(values),
            measured_replicas=group[-1].summary.spec.replicas,
            capacity_rps_per_replica=round(per_replica, 3),
            capacity_spread=None if spread is None else round(spread, 3), replicas_needed=needed,
            monthly_usd_per_replica=price,
            monthly_usd=None if needed is None or price is None else round(needed * price, 2),
            price_source=source, meets_slo=needed is not None,
        ))  # fmt: skip
    _mark_cheapest(rows)
    return rows


def _sort_key(key: tuple[UseCase, str, str, str, str]) -> tuple[object, ...]:
    case, model, runtime, itype, where = key
    order = list(INSTANCE_TYPES).index(itype) if itype in INSTANCE_TYPES else len(INSTANCE_TYPES)
    return (case.stack, case.catalog_size, case.target_rps, model, runtime, order, itype, where)


def _mark_cheapest(rows: list[CapacityRow]) -> None:
    """Per use case, model and runtime, among rows measured in the same place (this machine vs a cluster)."""
    by_model: dict[tuple[UseCase, str, str, str], list[CapacityRow]] = defaultdict(list)
    for row in rows:
        by_model[(row.use_case, row.model, row.runtime, row.measured_on)].append(row)
    for group in by_model.values():
        best = cheapest(group)
        if best is not None:
            best.cheapest = True


def cheapest(rows: Iterable[CapacityRow]) -> CapacityRow | None:
    """The lowest monthly cost among rows that meet the SLO (fewer replicas, then name, break ties)."""
    priced = [r for r in rows if r.meets_slo and r.monthly_usd is not None]
    if not priced:
        return None
    return min(priced, key=lambda r: (r.monthly_usd, r.replicas_needed, r.instance_type, r.model, r.runtime))


def use_cases(rows: Iterable[CapacityRow]) -> dict[UseCase, list[CapacityRow]]:
    grouped: dict[UseCase, list[CapacityRow]] = {}
    for row in rows:
        grouped.setdefault(row.use_case, []).append(row)
    return grouped


def to_csv(rows: Iterable[CapacityRow]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        values = {**asdict(row), "repeats_disagree": row.repeats_disagree}
        writer.writerow({k: "" if v is None else v for k, v in values.items()})
    return out.getvalue()
