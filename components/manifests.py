"""The Kubernetes objects of one variant as typed pulumi-kubernetes Args: server Deployment, Service, loadgen Job.

Pure functions of the spec and a few inputs; `EtudeExperiment` turns them into resources. The container commands
come in whole from `etude.commands` (the very argv lists `etude local` runs) and are not edited here.

Every pod: non-root, read-only root filesystem, all capabilities dropped, no privilege escalation, RuntimeDefault
seccomp (the `restricted` Pod Security Standard), a writable emptyDir at /tmp (torch needs a scratch directory),
the namespace's Workload Identity service account for the bucket.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi_kubernetes as k8s
from pulumi import Input

from etude.commands import PING_PATH, SERVER_PORT, loadgen_shards, run_duration_s
from etude.spec import Experiment, Variant

apps = k8s.apps.v1
batch = k8s.batch.v1
core = k8s.core.v1
meta = k8s.meta.v1

ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
GPU_RESOURCE = "nvidia.com/gpu"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
RUN_AS_USER = 10001  # the `etude` user of the Dockerfile
TERMINATION_GRACE_S = 30
LOADGEN_CPU = "2"
LOADGEN_MEMORY = "4Gi"
TMP_SIZE = "2Gi"
# Time the load-generator Job may take beyond ramp + hold: a node to come up on Autopilot, image pull,
# waiting for /ping, warm-up, writing the results.
JOB_MARGIN_S = 20 * 60


def k8s_name(*parts: str, max_len: int = 52) -> str:
    """A DNS-1035 label from `parts`; shortened with a hash suffix so that distinct inputs stay distinct."""
    raw = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    if not raw or not raw[0].isalpha():
        raw = f"e-{raw}"
    if len(raw) <= max_len:
        return raw
    digest = hashlib.sha1(raw.encode()).hexdigest()[:6]
    return f"{raw[: max_len - 7].rstrip('-')}-{digest}"


def label_value(text: str) -> str:
    """A Kubernetes label value: at most 63 characters, alphanumeric at both ends."""
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value) or "none"


@dataclass(frozen=True)
class VariantNames:
    """Kubernetes names and labels of one variant's objects."""

    server: str  # Deployment and Service
    job: str  # load-generator Job of this run
    labels: dict[str, str]  # common labels
    server_labels: dict[str, str]  # also the Service's selector

    @staticmethod
    def of(exp: Experiment, variant: Variant) -> VariantNames:
        server = k8s_name(exp.stack, variant.key)
        common = {
            "app.kubernetes.io/name": "etude",
            "app.kubernetes.io/part-of": "etude",
            "app.kubernetes.io/instance": server,
            "etude.io/stack": k8s_name(exp.stack, max_len=63),
            "etude.io/variant": k8s_name(variant.key, max_len=63),
        }
        return VariantNames(
            server=server,
            # the run id in the name: a new runId is a new Job (and new results), the servers stay
            job=k8s_name(server, "run", exp.run_id.replace(".", "-").replace("_", "-")),
            labels=common,
            server_labels={**common, "app.kubernetes.io/component": "server"},
        )


def job_timeout_s(exp: Experiment) -> int:
    """How long Pulumi waits for the load-generator Job: the longest the measurement may take + margin."""
    return run_duration_s(exp) + JOB_MARGIN_S


def _container_security() -> core.SecurityContextArgs:
    return core.SecurityContextArgs(
        run_as_non_root=True,
        run_as_user=RUN_AS_USER,
        allow_privilege_escalation=False,
        read_only_root_filesystem=True,
        capabilities=core.CapabilitiesArgs(drop=["ALL"]),
    )


def _pod_security() -> core.PodSecurityContextArgs:
    return core.PodSecurityContextArgs(
        run_as_non_root=True,
        run_as_user=RUN_AS_USER,
        run_as_group=RUN_AS_USER,
        fs_group=RUN_AS_USER,
        seccomp_profile=core.SeccompProfileArgs(type="RuntimeDefault"),
    )


_ENV = [
    core.EnvVarArgs(name="PYTHONUNBUFFERED", value="1"),
    core.EnvVarArgs(name="PYTHONDONTWRITEBYTECODE", value="1"),
    core.EnvVarArgs(name="HOME", value="/tmp"),  # caches of torch and friends go to the writable /tmp
    core.EnvVarArgs(name="XDG_CACHE_HOME", value="/tmp/.cache"),
]
_TMP_MOUNT = [core.VolumeMountArgs(name="tmp", mount_path="/tmp")]
_TMP_VOLUME = [core.VolumeArgs(name="tmp", empty_dir=core.EmptyDirVolumeSourceArgs(size_limit=TMP_SIZE))]


def server_deployment(
    exp: Experiment,
    variant: Variant,
    *,
    namespace: Input[str],
    service_account: Input[str],
    image: Input[str],
    serve_argv: Input[Sequence[str]],
    export_argv: Input[Sequence[str]] | None,
) -> tuple[meta.ObjectMetaArgs, apps.DeploymentSpecArgs]:
    """The inference servers of a variant: `replicas` pods on the variant's instance type, ready on GET /ping."""
    names = VariantNames.of(exp, variant)
    inst = variant.instance
    requests = {"cpu": inst.cpu, "memory": inst.memory}
    limits: dict[str, str] = {"memory": inst.memory}
    if inst.gpus:
        limits[GPU_RESOURCE] = str(inst.gpus)
    init = []
    if export_argv is not None:  # a built-in model: exported once into the bucket, skipped when it is there
        init.append(core.ContainerArgs(
            name="export-model",
            image=image,
            command=export_argv,
            env=_ENV,
            resources=core.ResourceRequirementsArgs(requests=requests, limits={"memory": inst.memory}),
            security_context=_container_security(),
            volume_mounts=_TMP_MOUNT,
            termination_message_policy="FallbackToLogsOnError",
        ))
    server = core.ContainerArgs(
        name="server",
        image=image,
        command=serve_argv,
        env=_ENV,
        ports=[core.ContainerPortArgs(name="http", container_port=SERVER_PORT, protocol="TCP")],
        # Ready = model loaded and warmed up. No liveness probe: an overloaded server answers slowly by design
        # and must not be restarted in the middle of a measurement.
        readiness_probe=core.ProbeArgs(
            http_get=core.HTTPGetActionArgs(path=PING_PATH, port=SERVER_PORT),
            period_seconds=5,
            timeout_seconds=2,
            failure_threshold=3,
        ),
        resources=core.ResourceRequirementsArgs(requests=requests, limits=limits),
        security_context=_container_security(),
        volume_mounts=_TMP_MOUNT,
        termination_message_policy="FallbackToLogsOnError",
    )
    pod = core.PodSpecArgs(
        service_account_name=service_account,
        node_selector={ACCELERATOR_LABEL: inst.accelerator} if inst.accelerator else None,
        security_context=_pod_security(),
        termination_grace_period_seconds=TERMINATION_GRACE_S,
        init_containers=init or None,
        containers=[server],
        volumes=_TMP_VOLUME,
    )
    metadata = meta.ObjectMetaArgs(name=names.server, namespace=namespace, labels=names.server_labels)
    spec = apps.DeploymentSpecArgs(
        replicas=variant.replicas,
        selector=meta.LabelSelectorArgs(match_labels=names.server_labels),
        # Recreate: a changed server never needs a second set of (GPU) machines during the rollout.
        strategy=apps.DeploymentStrategyArgs(type="Recreate"),
        template=core.PodTemplateSpecArgs(metadata=meta.ObjectMetaArgs(labels=names.server_labels), spec=pod),
    )
    return metadata, spec


def server_service(
    exp: Experiment, variant: Variant, *, namespace: Input[str]
) -> tuple[meta.ObjectMetaArgs, core.ServiceSpecArgs]:
    """A ClusterIP Service in front of the servers (never public): `http://<name>:8080` inside the namespace."""
    names = VariantNames.of(exp, variant)
    metadata = meta.ObjectMetaArgs(name=names.server, namespace=namespace, labels=names.server_labels)
    spec = core.ServiceSpecArgs(
        type="ClusterIP",
        selector=names.server_labels,
        ports=[core.ServicePortArgs(name="http", port=SERVER_PORT, target_port=SERVER_PORT, protocol="TCP")],
    )
    return metadata, spec


def server_url(exp: Experiment, variant: Variant) -> str:
    return f"http://{VariantNames.of(exp, variant).server}:{SERVER_PORT}"


def shard_arg(exp: Experiment) -> str | None:
    """`--shard` for an Indexed Job: every pod expands $(JOB_COMPLETION_INDEX) to its own index."""
    n = loadgen_shards(exp)
    return None if n == 1 else f"$(JOB_COMPLETION_INDEX)/{n}"


def loadgen_job(
    exp: Experiment,
    variant: Variant,
    *,
    namespace: Input[str],
    service_account: Input[str],
    image: Input[str],
    loadgen_argv: Input[Sequence[str]],
) -> tuple[meta.ObjectMetaArgs, batch.JobSpecArgs]:
    """The load generator: runs once to completion on a node without servers, one pod per shard (Indexed Job)."""
    names = VariantNames.of(exp, variant)
    shards = loadgen_shards(exp)
    labels = {**names.labels, "app.kubernetes.io/component": "loadgen", "etude.io/run-id": label_value(exp.run_id)}
    env = list(_ENV)
    if shards > 1:
        # Declared so that $(JOB_COMPLETION_INDEX) in the arguments is expanded by the kubelet.
        env.append(core.EnvVarArgs(name="JOB_COMPLETION_INDEX", value_from=core.EnvVarSourceArgs(
            field_ref=core.ObjectFieldSelectorArgs(
                field_path=f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"))))
    container = core.ContainerArgs(
        name="loadgen",
        image=image,
        command=loadgen_argv,
        env=env,
        resources=core.ResourceRequirementsArgs(
            requests={"cpu": LOADGEN_CPU, "memory": LOADGEN_MEMORY}, limits={"memory": LOADGEN_MEMORY}),
        security_context=_container_security(),
        volume_mounts=_TMP_MOUNT,
        # On failure the last log lines (the load generator's one-line reason) become the termination message,
        # which Pulumi's Job await reports: a failed run fails `pulumi up` with that reason.
        termination_message_policy="FallbackToLogsOnError",
    )
    avoid_servers = core.AffinityArgs(pod_anti_affinity=core.PodAntiAffinityArgs(
        required_during_scheduling_ignored_during_execution=[core.PodAffinityTermArgs(
            label_selector=meta.LabelSelectorArgs(match_labels={
                "app.kubernetes.io/name": "etude", "app.kubernetes.io/component": "server"}),
            topology_key="kubernetes.io/hostname",
        )],
    ))
    pod = core.PodSpecArgs(
        restart_policy="Never",
        service_account_name=service_account,
        affinity=avoid_servers,
        security_context=_pod_security(),
        termination_grace_period_seconds=TERMINATION_GRACE_S,  # SIGTERM: the generator writes partial results
        containers=[container],
        volumes=_TMP_VOLUME,
    )
    metadata = meta.ObjectMetaArgs(
        name=names.job,
        namespace=namespace,
        labels=labels,
        # Deliberately no `pulumi.com/skipAwait`: Pulumi waits for the Job to complete (or fail, with the pod's
        # termination message), which is what lets the results be read right after it. A Job that failed in an
        # earlier `pulumi up` is replaced (run again) instead of being awaited forever.
        annotations={"pulumi.com/replaceUnready": "true"},
    )
    spec = batch.JobSpecArgs(
        backoff_limit=0,  # a failed measurement is reported, not silently repeated
        completions=shards,
        parallelism=shards,
        completion_mode="Indexed" if shards > 1 else None,
        active_deadline_seconds=job_timeout_s(exp),
        template=core.PodTemplateSpecArgs(metadata=meta.ObjectMetaArgs(labels=labels), spec=pod),
    )
    return metadata, spec
