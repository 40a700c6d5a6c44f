"""The Kubernetes objects the Pulumi program declares (under mocks, etude.infra.mockrun): valid against the Kubernetes
schema in strict mode, locked down, scheduled on the right hardware, and running exactly the command lines of
etude.commands, the ones `etude local` runs too."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from etude.commands import (
    SERVER_PORT,
    export_command,
    loadgen_command,
    loadgen_shards,
    model_uri,
    results_uri,
    serve_command,
)
from etude.components.manifests import (
    ACCELERATOR_LABEL,
    COMPLETION_INDEX_ANNOTATION,
    GPU_RESOURCE,
    MODEL_FILE_FACTOR,
    SERVER_SCRATCH_BASE_BYTES,
    TMP_SIZE,
    job_timeout_s,
    k8s_name,
    label_value,
)
from etude.infra import mockrun
from etude.spec import Experiment, available_stacks, load_stack, spec_from_config, stack_file

K8S_VERSION = "1.33.0"  # GKE's REGULAR channel
USE_CASES = available_stacks()
BUCKET = mockrun.MOCK_PLATFORM["bucket"]
MODELS_ROOT, RESULTS_ROOT = f"gs://{BUCKET}/models", f"gs://{BUCKET}/results"


def _fashion_config() -> dict[str, Any]:
    return yaml.safe_load(stack_file("fashion").read_text())["config"]


# 5,000 req/s needs three load-generator pods; one variant serves a user's own model.
SHARDED = {"etude:scenario": {**_fashion_config()["etude:scenario"], "targetRps": 5000}}
OWN_MODEL = {"etude:variants": [
    {"modelUri": "gs://my-bucket/models/my-sbr.pt", "runtime": "jit", "instanceType": "cpu", "replicas": 2,
     "name": "mine"},
    {"model": "gru4rec", "instanceType": "gpu-l4"},
    {"recbole": "gs://my-bucket/recbole/SASRec-Dec-01-2026.pth", "name": "trained"},
]}  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _start_runs() -> None:
    for stack in ["dev", *USE_CASES]:
        mockrun.start(stack)
    mockrun.start("fashion", SHARDED)
    mockrun.start("fashion", OWN_MODEL)
    mockrun.start("fashion", SEQUENTIAL)


def experiment_of(stack: str, overrides: dict[str, Any] | None = None) -> Experiment:
    if not overrides:
        return load_stack(stack)
    return spec_from_config(stack, {k: v for k, v in {**_fashion_config(), **overrides}.items()
                                    if k.startswith("etude:")})


def manifest(resource: dict[str, Any]) -> dict[str, Any]:
    """A mock's recorded inputs as a Kubernetes manifest (RPC numbers come back as floats)."""

    def ints(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: ints(x) for k, x in v.items()}
        if isinstance(v, list):
            return [ints(x) for x in v]
        if isinstance(v, float) and v.is_integer():
            return int(v)
        return v

    return ints(resource["inputs"])


def objects(run: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [{"pulumi_name": r["name"], **manifest(r)} for r in run["resources"] if r["type"].endswith(f":{kind}")
            and r["type"].startswith("kubernetes:")]


def one(run: dict[str, Any], name: str) -> dict[str, Any]:
    return next({"pulumi_name": name, **manifest(r)} for r in run["resources"] if r["name"] == name)


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


SEQUENTIAL = {"etude:sequential": True}
RUNS = [("dev", None), *[(s, None) for s in USE_CASES], ("fashion", SHARDED), ("fashion", OWN_MODEL),
        ("fashion", SEQUENTIAL)]


@pytest.mark.parametrize(("stack", "overrides"), RUNS, ids=[f"{s}{'+' if o else ''}" for s, o in RUNS])
def test_every_kubernetes_object_validates_strictly(stack: str, overrides: dict[str, Any] | None) -> None:
    run = mockrun.result(stack, overrides)
    assert run["error"] is None
    k8s_objects = [r for r in run["resources"] if r["type"].startswith("kubernetes:")
                   and not r["type"].startswith("kubernetes:index:") and "providers" not in r["type"]]
    assert k8s_objects
    for resource in k8s_objects:
        obj = manifest(resource)
        if resource["type"].endswith("Patch"):  # a partial object by design: its fields, strictly, and a name
            assert obj["metadata"]["name"]
            obj = {**obj, "spec": {**obj["spec"], "selector": {}, "template": {}}}
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("stack", USE_CASES)
def test_every_pod_is_locked_down(stack: str) -> None:
    run = mockrun.result(stack)
    pods = [pod_spec(o) for kind in ("Deployment", "Job") for o in objects(run, kind)]
    assert pods
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["serviceAccountName"] == mockrun.MOCK_PLATFORM["serviceAccount"]
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
        assert all(set(v) == {"name", "emptyDir"} for v in pod["volumes"])
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]  # torch needs a writable /tmp
            assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"


@pytest.mark.parametrize("stack", USE_CASES)
def test_servers_and_load_generators_are_safe_from_evictions(stack: str) -> None:
    run, exp = mockrun.result(stack), load_stack(stack)
    for v in exp.variants:
        for suffix in ("server", "loadgen"):
            template = one(run, f"{stack}-{v.key}-{suffix}")["spec"]["template"]
            assert template["metadata"]["annotations"] == {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}
        spec = one(run, f"{stack}-{v.key}-loadgen")["spec"]
        # retried when the cluster takes the pod away (not counted against backoffLimit 0), failed on its own error
        assert spec["backoffLimit"] == 0
        assert spec["podFailurePolicy"] == {"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [0]}},
        ]}


def _bytes(quantity: str) -> int:
    units = {"Mi": 1 << 20, "Gi": 1 << 30}
    return int(quantity[:-2]) * units[quantity[-2:]]


@pytest.mark.parametrize("stack", USE_CASES)
def test_scratch_space_is_requested_from_the_model_size(stack: str) -> None:
    run, exp = mockrun.result(stack), load_stack(stack)
    sc = exp.scenario
    model_bytes = sc.catalog_size * sc.embedding_dim * 4  # the item embeddings, float32
    for v in exp.variants:
        pod = pod_spec(one(run, f"{stack}-{v.key}-server"))
        (tmp,) = pod["volumes"]
        limit = tmp["emptyDir"]["sizeLimit"]
        assert SERVER_SCRATCH_BASE_BYTES + MODEL_FILE_FACTOR * model_bytes <= _bytes(limit) < (
            SERVER_SCRATCH_BASE_BYTES + MODEL_FILE_FACTOR * model_bytes + (1 << 20))
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            assert c["resources"]["requests"]["ephemeral-storage"] == limit  # Autopilot's default is smaller
        job = pod_spec(one(run, f"{stack}-{v.key}-loadgen"))
        assert job["volumes"][0]["emptyDir"]["sizeLimit"] == TMP_SIZE
        assert job["containers"][0]["resources"]["requests"]["ephemeral-storage"] == TMP_SIZE


@pytest.mark.parametrize("stack", USE_CASES)
def test_gpu_containers_find_the_nvidia_driver(stack: str) -> None:
    run, exp = mockrun.result(stack), load_stack(stack)
    for v in exp.variants:
        pod = pod_spec(one(run, f"{stack}-{v.key}-server"))
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        if v.instance.gpus:
            assert "/usr/local/nvidia/lib64" in env["LD_LIBRARY_PATH"].split(":")
            path = env["PATH"].split(":")
            assert "/usr/local/nvidia/bin" in path and "/opt/etude/bin" in path  # `etude` still found
        else:
            assert "LD_LIBRARY_PATH" not in env and "PATH" not in env


@pytest.mark.parametrize("stack", USE_CASES)
def test_gpu_variants_get_gpus_and_cpu_variants_none(stack: str) -> None:
    run, exp = mockrun.result(stack), load_stack(stack)
    for v in exp.variants:
        dep = one(run, f"{stack}-{v.key}-server")
        pod = pod_spec(dep)
        (server,) = pod["containers"]
        res = server["resources"]
        assert res["requests"]["cpu"] == v.instance.cpu and res["requests"]["memory"] == v.instance.memory
        assert dep["spec"]["replicas"] == v.replicas
        if v.instance.gpus:
            assert pod["nodeSelector"] == {ACCELERATOR_LABEL: v.instance.accelerator}
            assert res["limits"][GPU_RESOURCE] == str(v.instance.gpus)
            assert server["image"].startswith(f"{mockrun.MOCK_PLATFORM['registry']}/etude-{stack}:cuda@sha256:")
        else:
            assert "nodeSelector" not in pod
            assert GPU_RESOURCE not in res["limits"] and GPU_RESOURCE not in res["requests"]
            assert server["image"].startswith(f"{mockrun.MOCK_PLATFORM['registry']}/etude-{stack}:cpu@sha256:")
        for c in pod.get("initContainers", []):
            assert GPU_RESOURCE not in c["resources"].get("limits", {})


@pytest.mark.parametrize("stack", USE_CASES)
def test_containers_run_exactly_the_command_lines_of_etude_commands(stack: str) -> None:
    run, exp = mockrun.result(stack), load_stack(stack)
    for v in exp.variants:
        uri = model_uri(exp, v, MODELS_ROOT)
        pod = pod_spec(one(run, f"{stack}-{v.key}-server"))
        assert pod["containers"][0]["command"] == serve_command(v, uri)
        assert [c["command"] for c in pod["initContainers"]] == [export_command(exp, v, uri)]
        assert "--if-missing" in pod["initContainers"][0]["command"] and uri.startswith("gs://")
        # one artifact per device: a GPU server never loads the file exported (and optimised) for a CPU one
        device = "cuda" if v.instance.gpus else "cpu"
        assert f"-{v.runtime}-{device}-" in uri.rsplit("/", 1)[1]
        argv = pod["initContainers"][0]["command"]
        assert argv[argv.index("--device") + 1] == device
        service = one(run, f"{stack}-{v.key}-service")
        job = one(run, f"{stack}-{v.key}-loadgen")
        url = f"http://{service['metadata']['name']}:{SERVER_PORT}"
        (loadgen,) = pod_spec(job)["containers"]
        assert loadgen["command"] == loadgen_command(exp, v, url=url, out=results_uri(exp, v, RESULTS_ROOT))
        assert loadgen["image"].startswith(f"{mockrun.MOCK_PLATFORM['registry']}/etude-{stack}:cpu@")


@pytest.mark.parametrize("stack", USE_CASES)
def test_service_and_server_wiring(stack: str) -> None:
    run, exp = mockrun.result(stack), load_stack(stack)
    for v in exp.variants:
        dep, service = one(run, f"{stack}-{v.key}-server"), one(run, f"{stack}-{v.key}-service")
        assert service["spec"]["type"] == "ClusterIP"  # never public
        assert service["spec"]["ports"] == [{"name": "http", "port": SERVER_PORT, "targetPort": SERVER_PORT,
                                             "protocol": "TCP"}]
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"] == pod_labels == dep["spec"]["selector"]["matchLabels"]
        (server,) = pod_spec(dep)["containers"]
        assert server["readinessProbe"]["httpGet"] == {"path": "/ping", "port": SERVER_PORT}
        assert server["ports"][0]["containerPort"] == SERVER_PORT
        assert "livenessProbe" not in server  # an overloaded server must not be restarted mid-measurement
        assert pod_spec(dep)["terminationGracePeriodSeconds"] >= 10
        assert dep["spec"]["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize("stack", USE_CASES)
def test_load_generator_job_runs_once_away_from_the_servers(stack: str) -> None:
    run, exp = mockrun.result(stack), load_stack(stack)
    for v in exp.variants:
        job, dep = one(run, f"{stack}-{v.key}-loadgen"), one(run, f"{stack}-{v.key}-server")
        spec = job["spec"]
        assert spec["backoffLimit"] == 0 and pod_spec(job)["restartPolicy"] == "Never"
        assert spec["activeDeadlineSeconds"] == job_timeout_s(exp)
        assert spec["completions"] == spec["parallelism"] == 1 and "completionMode" not in spec
        assert exp.run_id in job["metadata"]["name"]
        (term,) = pod_spec(job)["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        server_labels = dep["spec"]["template"]["metadata"]["labels"]
        assert term["labelSelector"]["matchLabels"].items() <= server_labels.items()
        job_labels = spec["template"]["metadata"]["labels"]
        assert not term["labelSelector"]["matchLabels"].items() <= job_labels.items()


def test_a_rate_beyond_one_generator_makes_an_indexed_job_with_one_shard_per_pod() -> None:
    run, exp = mockrun.result("fashion", SHARDED), experiment_of("fashion", SHARDED)
    shards = loadgen_shards(exp)
    assert shards == 3
    for v in exp.variants:
        job = one(run, f"fashion-{v.key}-loadgen")
        spec = job["spec"]
        assert spec["completionMode"] == "Indexed"
        assert spec["completions"] == spec["parallelism"] == shards
        (c,) = pod_spec(job)["containers"]
        url = f"http://{one(run, f'fashion-{v.key}-service')['metadata']['name']}:{SERVER_PORT}"
        assert c["command"] == loadgen_command(exp, v, url=url, out=results_uri(exp, v, RESULTS_ROOT),
                                               shard=f"$(JOB_COMPLETION_INDEX)/{shards}")
        env = {e["name"]: e for e in c["env"]}
        assert env["JOB_COMPLETION_INDEX"]["valueFrom"] == {
            "fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}}


def test_a_users_own_model_is_served_from_its_uri_without_export() -> None:
    run, exp = mockrun.result("fashion", OWN_MODEL), experiment_of("fashion", OWN_MODEL)
    mine, builtin, trained = exp.variants
    pod = pod_spec(one(run, "fashion-mine-server"))
    assert "initContainers" not in pod
    assert pod["containers"][0]["command"] == serve_command(mine, "gs://my-bucket/models/my-sbr.pt")
    assert run["outputs"]["results"]["mine"]["replicas"] == 2
    l4 = pod_spec(one(run, f"fashion-{builtin.key}-server"))
    assert l4["nodeSelector"] == {ACCELERATOR_LABEL: "nvidia-l4"}
    # a RecBole checkpoint: imported by the init container into the models folder, then served from there
    pod = pod_spec(one(run, "fashion-trained-server"))
    uri = model_uri(exp, trained, MODELS_ROOT)
    assert uri.startswith(f"{MODELS_ROOT}/recbole-SASRec-Dec-01-2026-") and uri.endswith("-jit-cpu.pt")
    assert [c["command"] for c in pod["initContainers"]] == [
        ["etude", "import-recbole", "gs://my-bucket/recbole/SASRec-Dec-01-2026.pth", "--runtime", "jit",
         "--device", "cpu", "--out", uri]
    ]
    assert pod["containers"][0]["command"] == serve_command(trained, uri)


def test_kubernetes_names_are_dns_labels_and_stay_distinct() -> None:
    long_a, long_b = "a" * 30 + "-x", "a" * 30 + "-y"
    a, b = k8s_name("groceries-large", long_a), k8s_name("groceries-large", long_b)
    assert a != b and len(a) <= 52 and len(b) <= 52
    assert k8s_name("Fashion", "SASRec_jit") == "fashion-sasrec-jit"
    assert k8s_name("1st")[0].isalpha()
    assert label_value("_2024.01-") == "2024.01" and label_value("...") == "none"


def test_the_container_commands_parse_with_the_real_command_line() -> None:
    """What Kubernetes runs must be accepted by `etude`'s own parser (the verbs of serving/, loadgen/, models/)."""
    from etude.cli import build_parser

    parser = build_parser()
    checked = 0
    for stack, overrides in (("fashion", None), ("fashion", SHARDED), ("fashion", OWN_MODEL)):
        run = mockrun.result(stack, overrides)
        for kind in ("Deployment", "Job"):
            for obj in objects(run, kind):
                pod = pod_spec(obj)
                for c in [*pod.get("initContainers", []), *pod["containers"]]:
                    argv = c["command"]
                    assert argv[0] == "etude"
                    try:
                        args = parser.parse_args(argv[1:])
                    except SystemExit as err:  # argparse's way of saying no
                        pytest.fail(f"{obj['pulumi_name']}/{c['name']}: `{' '.join(argv)}` rejected ({err})")
                    assert args.verb == argv[1]
                    checked += 1
    assert checked > 0
