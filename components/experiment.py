"""`EtudeExperiment`: one use case's measurement on Kubernetes, built from the validated spec.

Per variant (model x runtime x instance type x replicas), as children of the component:

1. `<name>-<variant>-server`: a Deployment of `replicas` inference servers on the variant's instance type; a
   built-in model is exported into the bucket first by an init container (`etude export ... --if-missing`);
2. `<name>-<variant>-service`: a ClusterIP Service in front of them;
3. `<name>-<variant>-loadgen`: the load-generator Job, created once the servers are ready, awaited to completion
   (timeout = the measurement's longest duration, `etude.commands.run_duration_s`, + margin); its name carries
   `runId`, so a new runId runs a new Job, servers untouched;
4. `<name>-<variant>-results`: `summary.json` read back from the bucket (`components.results`).

`sequential: true` chains the variants: each variant's servers and Job wait for the previous variant's Job, so
the variants never compete for the cluster while measured. Earlier variants' servers stay up until `destroy`
(a Pulumi program cannot scale them down after their Job without a second `pulumi up`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pulumi import Input, Output, ResourceOptions

from components.manifests import (
    job_timeout_s,
    loadgen_job,
    server_deployment,
    server_service,
    server_url,
    shard_arg,
)
from components.results import VariantResults
from etude.commands import export_command, loadgen_command, model_uri, results_uri, run_root, serve_command
from etude.spec import Experiment, Variant

SERVER_TIMEOUT = "30m"  # GPU nodes on Autopilot take minutes, a 20M-item model takes minutes to export and load


@dataclass(frozen=True)
class EtudeExperimentArgs:
    experiment: Experiment
    namespace: Input[str]
    service_account: Input[str]  # Kubernetes service account with bucket access (Workload Identity)
    bucket: Input[str]  # models under gs://<bucket>/models, results under gs://<bucket>/results
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

    def __init__(self, name: str, args: EtudeExperimentArgs, opts: ResourceOptions | None = None) -> None:
        super().__init__("etude:index:EtudeExperiment", name, None, opts)
        exp = args.experiment
        bucket = Output.from_input(args.bucket)
        models_root = bucket.apply(lambda b: f"gs://{b}/models")
        runs_root = bucket.apply(lambda b: f"gs://{b}/results")
        self.deployments, self.services, self.jobs, self.variant_results = {}, {}, {}, {}

        previous: k8s.batch.v1.Job | None = None
        for variant in exp.variants:
            after = [previous] if exp.sequential and previous is not None else []
            previous = self._variant(name, args, variant, models_root, runs_root, after)

        self.results = Output.all(**{k: r.metrics for k, r in self.variant_results.items()})
        self.cheapest_within_slo = self.results.apply(lambda r: cheapest_within_slo(r, exp.scenario.target_rps))
        self.results_root = runs_root.apply(lambda r: run_root(exp, r))
        self.register_outputs({
            "results": self.results,
            "cheapestWithinSlo": self.cheapest_within_slo,
            "resultsRoot": self.results_root,
        })

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

        uri = models_root.apply(lambda root: model_uri(exp, v, root))
        metadata, spec = server_deployment(
            exp, v,
            namespace=args.namespace,
            service_account=args.service_account,
            image=image,
            serve_argv=uri.apply(lambda u: serve_command(v, u)),
            export_argv=uri.apply(lambda u: export_command(exp, v, u)) if v.model is not None else None,
        )  # fmt: skip
        deployment = k8s.apps.v1.Deployment(f"{base}-server", metadata=metadata, spec=spec, opts=ResourceOptions(
            parent=self, depends_on=after,
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
            loadgen_argv=out.apply(lambda o: loadgen_command(exp, v, url=server_url(exp, v), out=o,
                                                             shard=shard_arg(exp))),
        )  # fmt: skip
        timeout = f"{job_timeout_s(exp)}s"
        job = k8s.batch.v1.Job(f"{base}-loadgen", metadata=metadata, spec=job_spec, opts=ResourceOptions(
            parent=self,
            depends_on=[deployment, service, *after],  # servers ready (the Deployment's await) before load
            custom_timeouts=pulumi.CustomTimeouts(create=timeout, update=timeout),
        ))

        self.deployments[v.key] = deployment
        self.services[v.key] = service
        self.jobs[v.key] = job
        self.variant_results[v.key] = VariantResults(
            f"{base}-results",
            results_uri=out,
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
