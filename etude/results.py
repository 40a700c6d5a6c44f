"""The result-file contract of one load-generator run (docs/design.md), shared by loadgen, report and Pulumi outputs.

A run folder (local or `gs://bucket/prefix`) holds `summary.json` (this module's `Summary`),
`requests.parquet` (one row per request) and `timeline.parquet` (one row per one-second tick).
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
# timeline.parquet columns: one row per tick (second) of the run
TIMELINE_COLUMNS = {
    "second": "int32",
    "target_rps": "int32",
    "sent": "int32",
    "completed": "int32",
    "ok": "int32",
    "held_back": "int32",
    "in_flight": "int32",  # at the end of the tick
    "errors": "int32",
    "p50_ms": "float64",  # window percentiles of requests completed in this tick (NaN when none)
    "p90_ms": "float64",
    "p99_ms": "float64",
    # the one per-second SLO rule (loadgen/results.py): errors, held-back sends, or the window's SLO percentile
    # (from the intended send) above the SLO. `max_rps_within_slo` is the highest target of an answered second
    # without it; the report marks the first second with it.
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
    max_rps_within_slo: float  # highest tick target rate with window SLO percentile <= SLO ms and no errors
    slo_met: bool  # during the hold at target: SLO percentile <= SLO ms, no errors, nothing held back
    shards: int = 1
