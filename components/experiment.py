"""`EtudeExperiment`: one use case's measurement on Kubernetes, built from the validated spec.

Per variant (model x runtime x instance type x replicas), as children of the component:

1. `<name>-<variant>-server`: a Deployment of `replicas` inference servers on the variant's instance type; a
   built-in model is exported into the bucket first by an init container (`etude export ... --if-missing`);
2. `<name>-<variant>-service`: a ClusterIP Service in front of them;
3. `<name>-<variant>-loadgen`: the load-generator Job, created once the servers are ready, awaited to completion
   (timeout = the measurement's longest duration, `etude.commands.run_duration_s`, + margin); its name carries
   `runId`, so a new runId runs a new Job, servers untouched;
4. `<name>-<variant>-results`: `summary.json` read back from the bucket (`etude.components.results`).

A workload file given as a local path (`clicklog` or `fitted`) is uploaded once, as `<name>-workload` (a
BucketObject under `gs://<bucket>/workloads/`), and the Jobs read it from there; a gs:// URI is passed as is. A
variant's item token list (`itemIds`) is uploaded the same way, as `<name>-<variant>-item-ids`, and a local
`modelUri` or `recbole` checkpoint as `<name>-<variant>-model` (under `gs://<bucket>/models/uploads/`), which the
servers (or their import step) read; the Deployment waits for it.

`sequential: true` chains the variants: once a variant's Job is done, `<name>-<variant>-scale-down` (a
DeploymentPatch) scales its servers to zero, and only then do the next variant's servers start. The variants
never compete for the cluster, and at most one variant's GPUs are held at a time (`peak_gpus`; docs/design.md,
"GPU quota and sequential runs").
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s
from pulumi import Input, Output, ResourceOptions

from etude.commands import (
    export_command,
    loadgen_command,
    model_uri,
    results_uri,
    run_root,
    serve_command,
    upload_object,
)
from etude.components.manifests import (
    job_timeout_s,
    loadgen_job,
    server_deployment,
    server_scale_down,
    server_service,
    server_url,
    shard_arg,
)
from etude.components.results import VariantResults
from etude.spec import PROJECT_DIR, Experiment, SpecError, Variant

SERVER_TIMEOUT = "30m"  # GPU nodes on Autopilot take minutes, a 20M-item model takes minutes to export and load


@dataclass(frozen=True)
class EtudeExperimentArgs:
    experiment: Experiment
    namespace: Input[str]
    service_account: Input[str]  # Kubernetes service account with bucket access (Workload Identity)
    bucket: Input[str]  # models under gs://<bucket>/models, results under gs://<bucket>/results
    project: Input[str]  # the platform's GCP project: the results reader's storage client needs one
    image_cpu: Input[str]  # CPU servers and the load generator
    image_cuda: Input[str]  # GPU servers


class EtudeExperiment(pulumi.ComponentResource):
    """Servers, Service, load-generator Job and results of every variant; results keyed by variant."""

    deployments: dict[str, k8s.apps.v1.Deployment]
    services: dict[str, k8s.core.v1.Service]
    jobs: dict[str, k8s.batch.v1.Job]
    variant_results: dict[str, VariantResults]
    results: Output[dict[str, Any]]
    cheapest_within_slo: Output[dict[str, Any] | None]
    results_root: Output[str]
    workload_file: gcp.storage.BucketObject | None
    item_ids_files: dict[str, gcp.storage.BucketObject | None]  # per variant key
    model_files: dict[str, gcp.storage.BucketObject | None]  # per variant key: a local modelUri or checkpoint

    def __init__(self, name: str, args: EtudeExperimentArgs, opts: ResourceOptions | None = None) -> None:
        super().__init__("etude:index:EtudeExperiment", name, None, opts)
        exp = args.experiment
        bucket = Output.from_input(args.bucket)
        models_root = bucket.apply(lambda b: f"gs://{b}/models")
        runs_root = bucket.apply(lambda b: f"gs://{b}/results")
        self.deployments, self.services, self.jobs, self.variant_results = {}, {}, {}, {}
        wl = exp.scenario.workload
        self.workload_file = self._upload(f"{name}-workload", f"etude:scenario.workload = {wl.file!r}",
                                          wl.local_file(), bucket, "workloads")
        self.item_ids_files = {
            v.key: self._upload(f"{name}-{v.key}-item-ids", f"etude:variants {v.key}: itemIds = {v.item_ids!r}",
                                v.local_item_ids(), bucket, "workloads")
            for v in exp.variants
        }
        self.model_files = {
            v.key: self._upload(f"{name}-{v.key}-model",
                                f"etude:variants {v.key}: {'modelUri' if v.model_uri else 'recbole'} = "
                                f"{v.model_uri or v.recbole!r}", v.local_model_file(), bucket, "models/uploads")
            for v in exp.variants
        }

        after: list[pulumi.Resource] = []
        for variant in exp.variants:
            job = self._variant(name, args, variant, models_root, runs_root, after)
            if exp.sequential:  # the next variant starts once this one's servers are gone
                metadata, patch_spec = server_scale_down(exp, variant, namespace=args.namespace)
                scale_down = k8s.apps.v1.DeploymentPatch(
                    f"{name}-{variant.key}-scale-down", metadata=metadata, spec=patch_spec,
                    opts=ResourceOptions(parent=self, depends_on=[job]))
                after = [job, scale_down]

        self.results = Output.all(**{k: r.metrics for k, r in self.variant_results.items()})
        self.cheapest_within_slo = self.results.apply(lambda r: cheapest_within_slo(r, exp.scenario.target_rps))
        self.results_root = runs_root.apply(lambda r: run_root(exp, r))
        self.register_outputs({
            "results": self.results,
            "cheapestWithinSlo": self.cheapest_within_slo,
            "resultsRoot": self.results_root,
        })

    def _upload(
        self, resource: str, what: str, path: Path | None, bucket: Output[str], folder: str
    ) -> gcp.storage.BucketObject | None:
        """A local file the pods read (the workload, an item token list, a model) as a bucket object under
        `folder`; None when there is none or it is a gs:// URI (passed as is)."""
        if path is None:
            return None
        if not path.is_file():
            raise SpecError(f"{what}: no such file (a path is relative to {PROJECT_DIR})")
        with path.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()  # streamed: a checkpoint may be gigabytes
        return gcp.storage.BucketObject(resource, bucket=bucket, name=upload_object(folder, path.name, digest),
                                        source=pulumi.FileAsset(str(path)), opts=ResourceOptions(parent=self))

    @staticmethod
    def _uri(obj: gcp.storage.BucketObject | None) -> Output[str | None]:
        if obj is None:
            return Output.from_input(None)
        return Output.all(obj.bucket, obj.name).apply(lambda bn: f"gs://{bn[0]}/{bn[1]}")

    def _variant(
        self,
        name: str,
        args: EtudeExperimentArgs,
        v: Variant,
        models_root: Output[str],
        runs_root: Output[str],
        after: list[pulumi.Resource],
    ) -> k8s.batch.v1.Job:
        exp = args.experiment
        base = f"{name}-{v.key}"
        image = args.image_cuda if v.instance.gpus else args.image_cpu

        uploaded = self.model_files[v.key]  # a local modelUri is served, a local checkpoint imported, from its copy
        uploaded_uri = self._uri(uploaded)
        uri = Output.all(models_root, uploaded_uri).apply(lambda ru: model_uri(exp, v, ru[0], ru[1]))
        metadata, spec = server_deployment(
            exp, v,
            namespace=args.namespace,
            service_account=args.service_account,
            image=image,
            serve_argv=uri.apply(lambda u: serve_command(v, u)),
            export_argv=Output.all(uri, uploaded_uri).apply(lambda uc: export_command(exp, v, uc[0], uc[1]))
            if v.needs_export else None,
        )  # fmt: skip
        deployment = k8s.apps.v1.Deployment(f"{base}-server", metadata=metadata, spec=spec, opts=ResourceOptions(
            parent=self, depends_on=[*after, *([uploaded] if uploaded is not None else [])],
            custom_timeouts=pulumi.CustomTimeouts(create=SERVER_TIMEOUT, update=SERVER_TIMEOUT)))

        metadata, service_spec = server_service(exp, v, namespace=args.namespace)
        service = k8s.core.v1.Service(f"{base}-service", metadata=metadata, spec=service_spec,
                                      opts=ResourceOptions(parent=self, depends_on=after))

        out = runs_root.apply(lambda root: results_uri(exp, v, root))
        metadata, job_spec = loadgen_job(
            exp, v,
            namespace=args.namespace,
            service_account=args.service_account,
            image=args.image_cpu,
            loadgen_argv=Output.all(out, self._uri(self.workload_file), self._uri(self.item_ids_files[v.key])).apply(
                lambda ow: loadgen_command(exp, v, url=server_url(exp, v), out=ow[0], shard=shard_arg(exp),
                                           workload_uri=ow[1], item_ids_uri=ow[2])),
        )  # fmt: skip
        timeout = f"{job_timeout_s(exp)}s"
        job = k8s.batch.v1.Job(f"{base}-loadgen", metadata=metadata, spec=job_spec, opts=ResourceOptions(
            parent=self,
            # servers ready (the Deployment's await) and the files it reads uploaded before load
            depends_on=[deployment, service, *after,
                        *[f for f in (self.workload_file, self.item_ids_files[v.key]) if f is not None]],
            custom_timeouts=pulumi.CustomTimeouts(create=timeout, update=timeout),
        ))

        self.deployments[v.key] = deployment
        self.services[v.key] = service
        self.jobs[v.key] = job
        self.variant_results[v.key] = VariantResults(
            f"{base}-results",
            results_uri=out,
            project=args.project,
            monthly_usd=exp.monthly_usd(v),
            job=job.metadata.apply(lambda m: m.name or ""),
            job_uid=job.metadata.apply(lambda m: m.uid or ""),
            opts=ResourceOptions(parent=self, depends_on=[job]),
        )
        return job


def cheapest_within_slo(results: Mapping[str, Mapping[str, Any]], target_rps: int) -> dict[str, Any] | None:
    """The variant whose measured capacity (`capacityRps`, docs/design.md) carries the target rate as deployed, at
    the lowest monthly cost (None when none does)."""
    met = [(r["monthlyUsd"], key) for key, r in results.items()
           if r and not r.get("partial") and r.get("capacityRps") is not None and r["capacityRps"] >= target_rps]
    if not met:
        return None
    usd, key = min(met)
    return {"variant": key, "monthlyUsd": usd}


def peak_gpus(exp: Experiment, *, sequential: bool | None = None) -> dict[str, int]:
    """GPUs per accelerator type that the experiment's servers hold at the same time.

    Parallel variants hold all their GPUs at once (the sum); sequential ones one variant at a time (the largest
    variant), since each is scaled to zero before the next starts. Quota is counted per node, so for the minutes
    Autopilot takes to remove a finished variant's nodes the next one may wait for it.
    """
    sequential = exp.sequential if sequential is None else sequential
    peak: dict[str, int] = {}
    for v in exp.variants:
        inst = v.instance
        if inst.gpus and inst.accelerator:
            held = v.replicas * inst.gpus
            peak[inst.accelerator] = max(peak.get(inst.accelerator, 0), held) if sequential else (
                peak.get(inst.accelerator, 0) + held)
    return dict(sorted(peak.items()))
