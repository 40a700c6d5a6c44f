"""The Kubernetes objects of one variant as typed pulumi-kubernetes Args: server Deployment, Service, loadgen Job.

Pure functions of the spec and a few inputs; `EtudeExperiment` turns them into resources. The container commands
come in whole from `etude.commands` (the very argv lists `etude local` runs) and are not edited here.

Every pod: non-root, read-only root filesystem, all capabilities dropped, no privilege escalation, RuntimeDefault
seccomp (the `restricted` Pod Security Standard), a writable emptyDir at /tmp (torch needs a scratch directory)
with a matching ephemeral-storage request, the namespace's Workload Identity service account for the bucket, and
`safe-to-evict: "false"`, so that Autopilot does not move a pod in the middle of a measurement (scale-down,
node upgrades). A load-generator pod that is evicted anyway (a `DisruptionTarget` condition) is run again; one
that fails on its own fails the Job at once.
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
SAFE_TO_EVICT = {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}
PATCH_FORCE = "pulumi.com/patchForce"  # take `spec.replicas` over from the other writer (sequential runs)
RUN_ID_ANNOTATION = "etude.io/run-id"
# GKE mounts the NVIDIA driver's libraries and tools into GPU containers at /usr/local/nvidia and asks for them on
# LD_LIBRARY_PATH and PATH; neither the device plugin nor the python base image sets them. PATH keeps the image's
# own entries (the Dockerfile: /opt/etude/bin first, where `etude` lives).
NVIDIA_LIB_DIR = "/usr/local/nvidia/lib64"
NVIDIA_BIN_DIR = "/usr/local/nvidia/bin"
IMAGE_PATH = "/opt/etude/bin:/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
RUN_AS_USER = 10001  # the `etude` user of the Dockerfile
TERMINATION_GRACE_S = 30
LOADGEN_CPU = "2"
LOADGEN_MEMORY = "4Gi"
TMP_SIZE = "2Gi"  # the load generator's scratch space
SERVER_SCRATCH_BASE_BYTES = 1 << 30  # torch's caches, logs
# A server pod's scratch space: its base plus this many copies of the model file (a download or an export that
# spills to /tmp). The built-in models' file is about the size of their item embeddings, C x d x 4 bytes.
MODEL_FILE_FACTOR = 1
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


def server_scratch(exp: Experiment) -> str:
    """The ephemeral storage of a server pod (emptyDir limit and request): base + factor x the model's size."""
    size = SERVER_SCRATCH_BASE_BYTES + MODEL_FILE_FACTOR * exp.scenario.embedding_bytes
    return f"{-(-size // (1 << 20))}Mi"


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
_GPU_ENV = [
    core.EnvVarArgs(name="LD_LIBRARY_PATH", value=NVIDIA_LIB_DIR),
    core.EnvVarArgs(name="PATH", value=f"{NVIDIA_BIN_DIR}:{IMAGE_PATH}"),
]
_TMP_MOUNT = [core.VolumeMountArgs(name="tmp", mount_path="/tmp")]


def _tmp_volume(size: str) -> list[core.VolumeArgs]:
    return [core.VolumeArgs(name="tmp", empty_dir=core.EmptyDirVolumeSourceArgs(size_limit=size))]


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
    scratch = server_scratch(exp)
    requests = {"cpu": inst.cpu, "memory": inst.memory, "ephemeral-storage": scratch}
    limits: dict[str, str] = {"memory": inst.memory}
    if inst.gpus:
        limits[GPU_RESOURCE] = str(inst.gpus)
    init = []
    if export_argv is not None:  # a built-in model exported (skipped when it is there) or a RecBole one imported
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
        env=_ENV + _GPU_ENV if inst.gpus else _ENV,
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
        volumes=_tmp_volume(scratch),
    )
    # Sequential runs scale a measured variant to zero (`server_scale_down`); a new runId applies `replicas` again
    # and takes the field back.
    annotations = {PATCH_FORCE: "true", RUN_ID_ANNOTATION: exp.run_id} if exp.sequential else None
    metadata = meta.ObjectMetaArgs(name=names.server, namespace=namespace, labels=names.server_labels,
                                   annotations=annotations)
    spec = apps.DeploymentSpecArgs(
        replicas=variant.replicas,
        selector=meta.LabelSelectorArgs(match_labels=names.server_labels),
        # Recreate: a changed server never needs a second set of (GPU) machines during the rollout.
        strategy=apps.DeploymentStrategyArgs(type="Recreate"),
        template=core.PodTemplateSpecArgs(
            metadata=meta.ObjectMetaArgs(labels=names.server_labels, annotations=SAFE_TO_EVICT), spec=pod),
    )
    return metadata, spec


def server_scale_down(
    exp: Experiment, variant: Variant, *, namespace: Input[str]
) -> tuple[meta.ObjectMetaPatchArgs, apps.DeploymentSpecPatchArgs]:
    """A patch that scales a measured variant's servers to zero (sequential runs), once per runId."""
    names = VariantNames.of(exp, variant)
    metadata = meta.ObjectMetaPatchArgs(name=names.server, namespace=namespace,
                                        annotations={PATCH_FORCE: "true", RUN_ID_ANNOTATION: exp.run_id})
    return metadata, apps.DeploymentSpecPatchArgs(replicas=0)


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
            requests={"cpu": LOADGEN_CPU, "memory": LOADGEN_MEMORY, "ephemeral-storage": TMP_SIZE},
            limits={"memory": LOADGEN_MEMORY}),
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
        volumes=_tmp_volume(TMP_SIZE),
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
        # A failed measurement is reported, not silently repeated: no retry counts against backoffLimit 0, and
        # the policy fails the Job on the generator's own non-zero exit. A pod the cluster took away
        # (DisruptionTarget: eviction, preemption, node shutdown) is ignored, i.e. run again, uncounted.
        backoff_limit=0,
        pod_failure_policy=batch.PodFailurePolicyArgs(rules=[
            batch.PodFailurePolicyRuleArgs(action="Ignore", on_pod_conditions=[
                batch.PodFailurePolicyOnPodConditionsPatternArgs(type="DisruptionTarget", status="True")]),
            batch.PodFailurePolicyRuleArgs(action="FailJob", on_exit_codes=(
                batch.PodFailurePolicyOnExitCodesRequirementArgs(operator="NotIn", values=[0]))),
        ]),
        completions=shards,
        parallelism=shards,
        completion_mode="Indexed" if shards > 1 else None,
        active_deadline_seconds=job_timeout_s(exp),
        template=core.PodTemplateSpecArgs(metadata=meta.ObjectMetaArgs(labels=labels, annotations=SAFE_TO_EVICT),
                                          spec=pod),
    )
    return metadata, spec
