"""The result-file contract of one load-generator run, shared by loadgen, report and Pulumi outputs; what its
figures mean is defined in docs/design.md ("Capacity").

A run folder (local or `gs://bucket/prefix`) holds `summary.json` (this module's `Summary`),
`requests.parquet` (one row per request) and `timeline.parquet` (one row per one-second tick). A run with
`repeats` > 1 keeps each repeat's folder under `repeat-<i>/` and puts their aggregate at the top.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

SUMMARY_FILE = "summary.json"
REQUESTS_FILE = "requests.parquet"
TIMELINE_FILE = "timeline.parquet"
SCHEMA_VERSION = 1

# requests.parquet columns (at least): name -> arrow type
REQUEST_COLUMNS = {
    "session_id": "int64",
    "position": "int32",  # index of the click within its session, 0-based
    "item_id": "int64",
    "intended_ns": "int64",  # the send slot the schedule assigned (monotonic ns since run start)
    "sent_ns": "int64",
    "received_ns": "int64",  # -1 when no answer arrived
    "status": "string",  # HTTP code ("200", "503", ...) or error kind ("timeout", "connect", "bad_response")
    "queue_ms": "float64",  # from Server-Timing; NaN when absent
    "inference_ms": "float64",
    "batch_size": "int32",  # from X-Batch-Size; -1 when absent
}
# The per-second counters of a run (the load generator counts them, timeline.parquet stores them as int32):
# target_rps (r_c of the tick; 0 between phases and after the schedule), scheduled (send slots the arrival process
# put into the tick), sent, completed, ok, held_back (scheduled but not sent), in_flight (at the end of the
# tick), errors. Sent counts by the second of the send, completed/ok/errors by the second of the answer.
COUNT_COLUMNS = ("target_rps", "scheduled", "sent", "completed", "ok", "held_back", "in_flight", "errors")
# timeline.parquet columns: one row per tick (second) of the run
TIMELINE_COLUMNS = {
    "second": "int32",
    **dict.fromkeys(COUNT_COLUMNS, "int32"),
    "p50_ms": "float64",  # window percentiles of requests completed in this tick (NaN when none)
    "p90_ms": "float64",
    "p99_ms": "float64",
    # the per-second rule (docs/design.md): errors, held-back sends, or the window's SLO percentile (from the
    # intended send) above the SLO. The report marks the first such second; a capacity search's ramp uses it to
    # find the knee. It never decides a capacity (one-second windows are too noisy).
    "slo_violated": "bool",
}

# microbench.csv (etude microbench, read by etude report): one row per model x runtime x device x catalog size;
# recall: mean recall@21 of the runtime's answers against fp32 exact scoring of the same sessions
MICROBENCH_FILE = "microbench.csv"
MICROBENCH_COLUMNS = (
    "model", "runtime", "device", "catalog_size", "embedding_dim", "requests", "p50_ms", "p90_ms", "mean_ms",
    "recall",
)  # fmt: skip


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Latency(_Strict):
    p50: float
    p90: float
    p95: float
    p99: float
    max: float


class RunSpec(_Strict):
    """What was measured, echoed from the load generator's command line."""

    stack: str | None = None
    run_id: str | None = None
    variant: str | None = None
    model: str | None = None
    runtime: str | None = None
    instance_type: str | None = None
    replicas: int = 1
    monthly_usd: float | None = None
    url: str
    catalog_size: int
    target_rps: int
    ramp_seconds: int
    hold_seconds: int
    workload: dict[str, object]
    seed: int
    slo_ms: float
    slo_percentile: float
    shard: str | None = None
    arrivals: str = "uniform"  # summaries written before the arrival process was a choice had evenly spread slots
    burstiness: float | None = None
    arrival_seed: int | None = None
    find_capacity: bool = False
    search_max_rps: int | None = None
    repeats: int = 1
    repeat: int | None = None  # this folder is repeat i of `repeats` (under repeat-<i>/ of the run)


class Hold(_Strict):
    """One hold at a constant rate and its verdict (docs/design.md, "Capacity")."""

    rate_rps: int
    seconds: int
    requests: int  # scheduled in the hold (sent or held back)
    answers: int  # ok answers to them
    held_back: int
    errors: int
    percentile_ms: float | None  # the SLO percentile of those answers, from the intended send
    min_answers: int  # what the verdict needs
    achieved_rps: float  # ok answers received during the hold per second
    slo_met: bool


class Summary(_Strict):
    schema_version: int = SCHEMA_VERSION
    spec: RunSpec
    partial: bool = False  # stopped early (signal) or a shard missing from a merge
    started_at: str  # ISO 8601 UTC
    duration_s: float
    requests: int  # sent
    ok: int
    errors: dict[str, int] = Field(default_factory=dict)  # by kind: HTTP code or error kind
    held_back: int  # scheduled sends that backpressure held back
    achieved_rps: float  # ok answers per second during the hold phase (whole run when hold is 0)
    latency_ms: Latency | None  # of ok answers, from the actual send; None when there were none
    latency_from_intended_ms: Latency | None  # of ok answers, from the intended send slot
    slo_met: bool  # the SLO holds at the target rate (docs/design.md)
    capacity_rps: float | None = None  # the sustained capacity (docs/design.md); None when not established
    capacity_bracket: tuple[float | None, float | None] | None = None  # (highest met, lowest failed) held rates
    holds: list[Hold] = Field(default_factory=list)  # every hold, in the order held
    repeat_capacity_rps: list[float | None] = Field(default_factory=list)  # per repeat, when repeats > 1
    capacity_spread: float | None = None  # (max - min) / median of the repeats' capacities
    shards: int = 1
