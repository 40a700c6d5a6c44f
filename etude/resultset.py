"""Find and read result folders (local or `gs://`): every `summary.json` under the given roots, their timelines,
and micro-benchmark CSVs. What is not a result is skipped with a warning, never a crash.

Light imports only at module level; pyarrow is imported where a timeline is read.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from etude import storage
from etude.results import (
    MICROBENCH_COLUMNS,
    MICROBENCH_FILE,
    SUMMARY_FILE,
    TIMELINE_COLUMNS,
    TIMELINE_FILE,
    Summary,
)

log = logging.getLogger(__name__)

LOCAL_RUN_FILE = "local-run.json"  # written by `etude local`: every variant's status, including those without results

_LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]", "0.0.0.0")


@dataclass(frozen=True)
class RunResult:
    """One load-generator run: where it lives and what its summary says."""

    uri: str  # the folder holding summary.json
    summary: Summary

    @property
    def label(self) -> str:
        s = self.summary.spec
        return s.variant or f"{s.model or 'model'}-{s.runtime or 'runtime'}-{s.instance_type or 'instance'}"

    @property
    def stack(self) -> str:
        return self.summary.spec.stack or "(no stack)"

    @property
    def measured_locally(self) -> bool:
        """True when the load generator talked to this machine (`etude local`), not to a cluster service."""
        host = self.summary.spec.url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
        return host in _LOCAL_HOSTS


@dataclass
class ResultSet:
    runs: list[RunResult] = field(default_factory=list)
    microbench: list[dict[str, Any]] = field(default_factory=list)  # rows of every microbench.csv found
    microbench_sources: list[str] = field(default_factory=list)
    not_measured: list[dict[str, Any]] = field(default_factory=list)  # `etude local` variants without results
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        log.warning("%s", message)
        self.warnings.append(message)


def _list_files(root: str, names: tuple[str, ...]) -> list[str]:
    """URIs of files called one of `names` anywhere under `root` (a folder, a gs:// prefix, or such a file)."""
    if storage.is_gcs(root):
        bucket, prefix = storage.split_gcs(root)
        prefix = prefix.rstrip("/")
        try:
            blobs = storage.gcs_client().list_blobs(bucket, prefix=f"{prefix}/" if prefix else None)
            return sorted(f"gs://{bucket}/{b.name}" for b in blobs if b.name.rsplit("/", 1)[-1] in names)
        except Exception as err:  # noqa: BLE001 - a bad bucket is a warning, the other roots still count
            raise storage.StorageError(f"cannot list {root}: {err}") from err
    path = Path(root)
    if path.is_file():
        return [str(path)] if path.name in names else []
    if not path.is_dir():
        raise storage.StorageError(f"{root}: no such folder")
    return sorted(str(p) for p in path.rglob("*") if p.name in names and p.is_file())


def _parent(uri: str) -> str:
    return uri.rsplit("/", 1)[0] if storage.is_gcs(uri) else str(Path(uri).parent)


def discover(roots: Iterable[str]) -> ResultSet:
    """Every run and micro-benchmark under `roots`; unreadable or foreign files become warnings."""
    found = ResultSet()
    seen: set[str] = set()
    for root in roots:
        try:
            files = _list_files(root, (SUMMARY_FILE, MICROBENCH_FILE, LOCAL_RUN_FILE))
        except storage.StorageError as err:
            found.warn(f"skipped {root}: {err}")
            continue
        if not files:
            found.warn(f"skipped {root}: no {SUMMARY_FILE} or {MICROBENCH_FILE} under it")
        for uri in files:
            key = uri if storage.is_gcs(uri) else str(Path(uri).resolve())
            if key in seen:
                continue
            seen.add(key)
            if uri.endswith(MICROBENCH_FILE):
                _read_microbench(uri, found)
            elif uri.endswith(LOCAL_RUN_FILE):
                _read_local_record(uri, found)
            else:
                _read_summary(uri, found)
    _drop_shard_pieces(found)
    return found


def _read_summary(uri: str, found: ResultSet) -> None:
    try:
        summary = Summary.model_validate_json(storage.read_bytes(uri))
    except storage.StorageError as err:
        found.warn(f"skipped {uri}: {err}")
        return
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(document)"
        found.warn(f"skipped {uri}: not an etude result summary ({where}: {first['msg']})")
        return
    found.runs.append(RunResult(uri=_parent(uri), summary=summary))


def _read_microbench(uri: str, found: ResultSet) -> None:
    try:
        text = storage.read_bytes(uri).decode("utf-8")
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in MICROBENCH_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            found.warn(f"skipped {uri}: not a micro-benchmark CSV (missing columns {', '.join(missing)})")
            return
        rows = []
        for row in reader:
            rows.append({
                "model": row["model"], "runtime": row["runtime"], "device": row["device"],
                "catalog_size": int(float(row["catalog_size"])), "embedding_dim": int(float(row["embedding_dim"])),
                "requests": int(float(row["requests"])), "p50_ms": float(row["p50_ms"]),
                "p90_ms": float(row["p90_ms"]), "mean_ms": float(row["mean_ms"]), "recall": float(row["recall"]),
            })  # fmt: skip
    except (storage.StorageError, UnicodeDecodeError, ValueError, csv.Error) as err:
        found.warn(f"skipped {uri}: unreadable micro-benchmark CSV ({err})")
        return
    found.microbench.extend(rows)
    found.microbench_sources.append(uri)


def _read_local_record(uri: str, found: ResultSet) -> None:
    try:
        record = json.loads(storage.read_bytes(uri))
        entries = [{"stack": str(record["stack"]), "variant": str(v["variant"]), "status": str(v["status"]),
                    "reason": str(v.get("reason") or "")} for v in record["variants"]]
    except (storage.StorageError, ValueError, KeyError, TypeError) as err:
        found.warn(f"skipped {uri}: not an `etude local` record ({err})")
        return
    found.not_measured.extend(e for e in entries if e["status"] not in ("ok", "interrupted"))


def _drop_shard_pieces(found: ResultSet) -> None:
    """Per-shard and per-repeat summaries are parts of a merged one: keep the merged run (it carries the repeats'
    capacities), warn about pieces without one."""

    def piece(run: RunResult) -> str | None:
        spec = run.summary.spec
        if spec.shard is not None:
            return f"shard {spec.shard}"
        return None if spec.repeat is None else f"repeat {spec.repeat}"

    merged = {(r.summary.spec.stack, r.summary.spec.run_id, r.label) for r in found.runs if piece(r) is None}
    kept = []
    for run in found.runs:
        what = piece(run)
        if what is None:
            kept.append(run)
        elif (run.summary.spec.stack, run.summary.spec.run_id, run.label) not in merged:
            found.warn(f"skipped {run.uri}: {what} of a run without a merged summary")
    found.runs = sorted(kept, key=lambda r: (r.stack, r.summary.spec.run_id or "", r.label, r.uri))


def read_timeline(run: RunResult) -> dict[str, list[float]] | None:
    """The run's per-second timeline as columns (None, with a log line, when absent or unreadable)."""
    import pyarrow.parquet as pq

    uri = storage.join(run.uri, TIMELINE_FILE)
    try:
        table = pq.read_table(io.BytesIO(storage.read_bytes(uri)))
    except Exception as err:  # noqa: BLE001 - a missing timeline costs the plot, not the report
        log.warning("no timeline for %s: %s", run.uri, err)
        return None
    missing = [c for c in ("second", "target_rps", "p50_ms", "p90_ms", "p99_ms", "slo_violated")
               if c not in table.column_names]
    if missing:
        log.warning("timeline of %s lacks columns %s", run.uri, ", ".join(missing))
        return None
    columns = {c: table.column(c).to_pylist() for c in TIMELINE_COLUMNS if c in table.column_names}
    order = sorted(range(len(columns["second"])), key=lambda i: columns["second"][i])
    return {c: [float("nan") if v[i] is None else float(v[i]) for i in order] for c, v in columns.items()}
