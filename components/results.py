"""Reading a finished run's `summary.json` back from the bucket as Pulumi outputs (a small dynamic provider).

`VariantResults` is created after the variant's load-generator Job completed; its `create` reads
`<results_uri>/summary.json` with google-cloud-storage (the caller's application default credentials, e.g.
`gcloud auth application-default login`, billed to the platform's project, passed explicitly: a use-case stack
sets no `gcp:project` and the credentials may name none) and turns it into flat metrics. Any input change (a new
runId, a new Job) replaces it, i.e. reads the new results. `delete` does nothing: results stay in the bucket.

`metrics_from_summary` is the pure part, shared with the tests' mocks.
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider

from etude.results import SUMMARY_FILE, Summary

METRIC_KEYS = (
    "variant", "model", "runtime", "instanceType", "replicas", "monthlyUsd",
    "p50Ms", "p90Ms", "p99Ms", "achievedRps", "capacityRps", "requests", "errors", "sloMet", "partial",
    "resultsUri",
)  # fmt: skip


def metrics_from_summary(summary: Summary, *, results_uri: str, monthly_usd: float) -> dict[str, Any]:
    """The stack-output view of one run: latency percentiles in ms (from the actual send), rates, errors, cost.
    `capacityRps` and `sloMet` are the summary's (docs/design.md, Capacity)."""
    lat = summary.latency_ms
    spec = summary.spec
    return {
        "variant": spec.variant,
        "model": spec.model,
        "runtime": spec.runtime,
        "instanceType": spec.instance_type,
        "replicas": spec.replicas,
        "monthlyUsd": monthly_usd,
        "p50Ms": None if lat is None else round(lat.p50, 3),
        "p90Ms": None if lat is None else round(lat.p90, 3),
        "p99Ms": None if lat is None else round(lat.p99, 3),
        "achievedRps": round(summary.achieved_rps, 2),
        "capacityRps": None if summary.capacity_rps is None else round(summary.capacity_rps, 2),
        "requests": summary.requests,
        "errors": sum(summary.errors.values()),
        "sloMet": summary.slo_met,
        "partial": summary.partial,
        "resultsUri": results_uri,
    }


def read_metrics(results_uri: str, monthly_usd: float, job: str = "", project: str | None = None) -> dict[str, Any]:
    """Read and validate `<results_uri>/summary.json` (storage client of `project`); a missing or malformed file
    is an error that says where."""
    from etude import storage  # google-cloud-storage is imported lazily inside

    uri = storage.join(results_uri, SUMMARY_FILE)
    try:
        raw = storage.read_bytes(uri, project=project)
    except storage.StorageError as err:
        hint = f"; see `kubectl logs job/{job}`" if job else ""
        raise RuntimeError(f"the load generator left no results: {err}{hint}") from None
    try:
        summary = Summary.model_validate_json(raw)
    except ValueError as err:
        raise RuntimeError(f"{uri} is not a valid summary: {err}") from None
    return metrics_from_summary(summary, results_uri=results_uri, monthly_usd=monthly_usd)


_NOT_COMPARED = {"__provider", "metrics", "project"}  # provider code; the output; whom reading is billed to


class ResultsReader(ResourceProvider):
    """CRUD of `VariantResults`: create = read the summary, delete = forget it (the bucket keeps the files)."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        metrics = read_metrics(props["results_uri"], float(props["monthly_usd"]), props.get("job") or "",
                               props.get("project") or None)
        return CreateResult(id_=props["results_uri"], outs={**props, "metrics": metrics})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in news if k not in _NOT_COMPARED and olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=changed, delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs=props)  # results are immutable once written

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None


class VariantResults(Resource, module="etude", name="VariantResults"):
    """One variant's results as outputs; `metrics` holds `METRIC_KEYS`."""

    metrics: pulumi.Output[dict[str, Any]]
    results_uri: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        results_uri: pulumi.Input[str],
        project: pulumi.Input[str],
        monthly_usd: float,
        job: pulumi.Input[str],
        job_uid: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "results_uri": results_uri,
            "project": project,
            "monthly_usd": monthly_usd,
            "job": job,
            "job_uid": job_uid,  # a replaced Job (same name, new run) means new results
            "metrics": None,
        }
        super().__init__(ResultsReader(), name, props, opts)
