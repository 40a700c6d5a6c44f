"""The Pulumi program under mocks (no cloud, no Pulumi CLI): every stack file declares what it should, the
results come out as stack outputs, invalid config fails before any resource, and the Pulumi side never loads
the ML stack. Each stack runs once in its own interpreter (etude.infra.mockrun), shared by all assertions."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from etude.commands import results_uri, run_duration_s
from etude.components.experiment import peak_gpus
from etude.components.manifests import JOB_MARGIN_S, PATCH_FORCE, RUN_ID_ANNOTATION
from etude.components.results import METRIC_KEYS, metrics_from_summary
from etude.infra import mockrun
from etude.infra.config import read_config
from etude.infra.kubeconfig import gke_kubeconfig
from etude.infra.program import platform_stack_name
from etude.spec import PROJECT_DIR, available_stacks, load_stack, stack_file

USE_CASES = available_stacks()
ALL_STACKS = ["dev", *USE_CASES]
OWN_PLATFORM = {"etude:platformStack": None, "gcp:project": "own-project", "gcp:region": "us-central1"}
SEQUENTIAL = {"etude:sequential": True}
RUN_2 = {"etude:runId": "2"}
SEQUENTIAL_RUN_2 = {**SEQUENTIAL, **RUN_2}
PREBUILT = {"etude:image": {"cpu": "ghcr.io/me/etude:cpu-1", "cuda": "ghcr.io/me/etude:cuda-1"}}
UNPROTECTED = {"etude:platform": {"deletionProtection": False, "resultsRetentionDays": 0}}
WORKLOAD_FILE = Path(tempfile.mkdtemp(prefix="etude-workload-")) / "fitted.json"  # written by _start_all_runs


def with_workload(workload: dict[str, str], stack: str = "groceries-small") -> dict[str, Any]:
    scenario = yaml.safe_load(stack_file(stack).read_text())["config"]["etude:scenario"]
    return {"etude:scenario": {**scenario, "workload": workload}}


LOCAL_FITTED = with_workload({"fitted": str(WORKLOAD_FILE)})
LOCAL_CLICKLOG = with_workload({"clicklog": str(WORKLOAD_FILE.with_name("clicks.csv"))})
GCS_FITTED = with_workload({"fitted": "gs://team-bucket/workloads/rsc15.json"})
ITEM_IDS_FILE = WORKLOAD_FILE.with_name("items.txt")
MAPPED_REPLAY = {**LOCAL_CLICKLOG, "etude:variants": [
    {"recbole": "gs://team-bucket/ckpt/NARM.pth", "itemIds": str(ITEM_IDS_FILE), "name": "mapped"},
    {"recbole": "gs://team-bucket/ckpt/NARM.pth", "itemIds": "gs://team-bucket/items.txt", "name": "remote"},
    {"model": "narm", "name": "builtin"}]}  # fmt: skip
MODEL_FILE, CHECKPOINT_FILE = WORKLOAD_FILE.with_name("mine.pt"), WORKLOAD_FILE.with_name("NARM-trained.pth")
LOCAL_MODELS = {"etude:variants": [
    {"modelUri": str(MODEL_FILE), "name": "served"},
    {"recbole": str(CHECKPOINT_FILE), "name": "imported"},
    {"modelUri": "gs://team-bucket/models/theirs.pt", "name": "remote"}]}  # fmt: skip
HEAVY = ("torch", "numpy", "etude.serving", "etude.loadgen", "etude.models", "scipy", "pandas", "matplotlib", "pyarrow")


@pytest.fixture(scope="module", autouse=True)
def _start_all_runs() -> None:
    """Start every run this module needs at once: they run in parallel in their own interpreters."""
    WORKLOAD_FILE.write_text('{"version": 1}\n')
    WORKLOAD_FILE.with_name("clicks.csv").write_text("session_id,item_id\n1,1\n")
    ITEM_IDS_FILE.write_text("[PAD]\n1\n")
    MODEL_FILE.write_bytes(b"a serialized model")
    CHECKPOINT_FILE.write_bytes(b"a RecBole checkpoint")
    for workload in (LOCAL_FITTED, LOCAL_CLICKLOG, GCS_FITTED, MAPPED_REPLAY, LOCAL_MODELS):
        mockrun.start("groceries-small", workload)
    for stack in ALL_STACKS:
        mockrun.start(stack)
    for overrides in (OWN_PLATFORM, SEQUENTIAL, RUN_2, PREBUILT, SEQUENTIAL_RUN_2):
        mockrun.start("fashion", overrides)
    for stack in ("platform", "ecommerce"):
        mockrun.start(stack, SEQUENTIAL)
    mockrun.start("dev", UNPROTECTED)
    for stack, overrides, _ in INVALID:
        mockrun.start(stack, overrides)
    for stack in ("dev", "fashion"):
        mockrun.start(stack, preview=True)


def by_type(run: dict[str, Any], typ: str) -> list[dict[str, Any]]:
    return [r for r in run["resources"] if r["type"] == typ]


def named(run: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in run["resources"] if r["name"] == name)


def urn_of(run: dict[str, Any], name: str) -> str:
    return named(run, name)["urn"]


@pytest.mark.parametrize("stack", USE_CASES)
def test_every_use_case_declares_one_server_service_job_and_reader_per_variant(stack: str) -> None:
    run = mockrun.result(stack)
    assert run["error"] is None
    exp = load_stack(stack)
    n = len(exp.variants)
    assert len(by_type(run, "etude:index:EtudeExperiment")) == 1
    for typ in ("kubernetes:apps/v1:Deployment", "kubernetes:core/v1:Service", "kubernetes:batch/v1:Job",
                mockrun.RESULTS_TYPE):
        assert len(by_type(run, typ)) == n, typ
    component = by_type(run, "etude:index:EtudeExperiment")[0]
    for v in exp.variants:
        for suffix in ("server", "service", "loadgen", "results"):
            child = named(run, f"{stack}-{v.key}-{suffix}")  # names derive from the component's name
            assert child["parent"] == component["urn"]
    # on the shared platform: no cluster or bucket of its own, the platform through a StackReference
    assert not by_type(run, "gcp:container/cluster:Cluster")
    refs = by_type(run, "pulumi:pulumi:StackReference")
    assert [r["name"] for r in refs] == ["organization/etude/dev"]
    # images: CPU always (servers and load generator), CUDA only where a GPU variant needs it
    images = {r["name"]: r["inputs"] for r in by_type(run, "docker-build:index:Image")}
    wants_cuda = any(v.instance.gpus for v in exp.variants)
    assert set(images) == {f"{stack}-image-cpu"} | ({f"{stack}-image-cuda"} if wants_cuda else set())
    for name, inputs in images.items():
        flavour = name.rsplit("-", 1)[1]
        # the stack's own image name: destroying this stack deletes nothing another stack pulls
        assert inputs["tags"] == [f"{mockrun.MOCK_PLATFORM['registry']}/etude-{stack}:{flavour}"]
        # relative to the project: the same inputs from any checkout, so a preview shows no change
        assert inputs["context"] == {"location": "."}
        assert inputs["dockerfile"] == {"location": "Dockerfile"}
    # the results reader's storage client gets the platform's project (a use-case stack sets no gcp:project)
    assert {r["inputs"]["project"] for r in by_type(run, mockrun.RESULTS_TYPE)} == {mockrun.MOCK_PROJECT}


def expected_peak(stack: str, *, sequential: bool) -> dict[str, int]:
    """GPUs per type held at once, counted here from the stack file: sum over variants, or the largest one."""
    held: dict[str, list[int]] = {}
    for v in load_stack(stack).variants:
        if v.instance.gpus:
            held.setdefault(str(v.instance.accelerator), []).append(v.replicas * v.instance.gpus)
    return {acc: max(n) if sequential else sum(n) for acc, n in held.items()}


def peak_message(run: dict[str, Any]) -> dict[str, Any]:
    (log,) = [m for m in run["logs"] if "peak GPUs" in m["message"] or "no GPU quota" in m["message"]]
    return log


@pytest.mark.parametrize("stack", USE_CASES)
def test_peak_gpus_per_type_are_said_before_anything_is_created(stack: str) -> None:
    run = mockrun.result(stack)
    expected = expected_peak(stack, sequential=False)
    assert run["outputs"]["peakGpus"] == expected
    assert peak_gpus(load_stack(stack), sequential=True) == expected_peak(stack, sequential=True)
    log = peak_message(run)
    assert log["level"] == "info" and log["resources_before"] == 0  # printed before the first resource
    for accelerator, n in expected.items():
        assert f"{n} x {accelerator}" in log["message"]


def test_peak_gpus_of_the_issue_stacks_and_sequential_lowers_them() -> None:
    """The known answers: platform holds 18 A100s at once, ecommerce 30 T4s and 12 A100s; one variant at a time
    needs 3 A100s and 5 T4s + 2 A100s."""
    assert mockrun.result("platform")["outputs"]["peakGpus"] == {"nvidia-tesla-a100": 18}
    assert mockrun.result("ecommerce")["outputs"]["peakGpus"] == {"nvidia-tesla-a100": 12, "nvidia-tesla-t4": 30}
    platform, ecommerce = mockrun.result("platform", SEQUENTIAL), mockrun.result("ecommerce", SEQUENTIAL)
    assert platform["outputs"]["peakGpus"] == {"nvidia-tesla-a100": 3}
    assert ecommerce["outputs"]["peakGpus"] == {"nvidia-tesla-a100": 2, "nvidia-tesla-t4": 5}
    assert "NVIDIA_T4_GPUS >= 5" in peak_message(ecommerce)["message"]
    assert "NVIDIA_A100_GPUS >= 18" in peak_message(mockrun.result("platform"))["message"]


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_the_pulumi_side_never_loads_the_ml_stack(stack: str) -> None:
    run = mockrun.result(stack)
    assert run["error"] is None
    assert "pulumi" in run["modules"]
    assert not set(HEAVY) & set(run["modules"]), "the Pulumi program must not import torch/numpy/runtime packages"


@pytest.mark.parametrize("stack", USE_CASES)
def test_results_of_every_variant_are_stack_outputs(stack: str) -> None:
    run = mockrun.result(stack)
    exp = load_stack(stack)
    results = run["outputs"]["results"]
    assert set(results) == {v.key for v in exp.variants}
    for v in exp.variants:
        uri = results_uri(exp, v, f"gs://{mockrun.MOCK_PLATFORM['bucket']}/results")
        expected = metrics_from_summary(mockrun.mock_summary(exp, v.key), results_uri=uri,
                                        monthly_usd=exp.monthly_usd(v))
        got = results[v.key]
        assert set(got) == set(METRIC_KEYS)
        assert got == pytest.approx(expected), v.key
        assert got["monthlyUsd"] == pytest.approx(v.replicas * v.instance.monthly_usd)
    met = [(r["monthlyUsd"], k) for k, r in results.items() if r["sloMet"]]
    cheapest = run["outputs"]["cheapestWithinSlo"]
    assert cheapest == {"variant": min(met)[1], "monthlyUsd": min(met)[0]}
    assert run["outputs"]["resultsRoot"] == f"gs://{mockrun.MOCK_PLATFORM['bucket']}/results/{stack}/{exp.run_id}"


@pytest.mark.parametrize("stack", USE_CASES)
def test_jobs_wait_for_ready_servers_and_get_a_timeout_beyond_ramp_and_hold(stack: str) -> None:
    run = mockrun.result(stack)
    exp = load_stack(stack)
    expected_s = run_duration_s(exp) + JOB_MARGIN_S
    assert run_duration_s(exp) >= exp.scenario.ramp_seconds + exp.scenario.hold_seconds
    for v in exp.variants:
        job = named(run, f"{stack}-{v.key}-loadgen")
        assert urn_of(run, f"{stack}-{v.key}-server") in job["dependencies"]
        assert urn_of(run, f"{stack}-{v.key}-service") in job["dependencies"]
        assert job["customTimeouts"]["create"] == f"{expected_s}s"
        assert expected_s > 10 * 60  # the provider's default (10 minutes) would cut the paper's ramp short
        reader = named(run, f"{stack}-{v.key}-results")
        assert job["urn"] in reader["dependencies"]  # results are read after the Job completed
        assert reader["inputs"]["results_uri"] == results_uri(exp, v, f"gs://{mockrun.MOCK_PLATFORM['bucket']}/results")


@pytest.mark.parametrize("stack", ["dev", "fashion"])
def test_preview_declares_the_same_resources_as_up(stack: str) -> None:
    up, preview = mockrun.result(stack), mockrun.result(stack, preview=True)
    assert preview["error"] is None
    assert sorted(r["urn"] for r in preview["resources"]) == sorted(r["urn"] for r in up["resources"])


def test_sequential_chains_each_variant_after_the_previous_job() -> None:
    parallel, sequential = mockrun.result("fashion"), mockrun.result("fashion", SEQUENTIAL)
    assert sequential["error"] is None
    keys = [v.key for v in load_stack("fashion").variants]
    for before, after in zip(keys, keys[1:], strict=False):
        previous_job = urn_of(sequential, f"fashion-{before}-loadgen")
        for suffix in ("server", "loadgen"):
            assert previous_job in named(sequential, f"fashion-{after}-{suffix}")["dependencies"]
            assert urn_of(parallel, f"fashion-{before}-loadgen") not in named(parallel, f"fashion-{after}-{suffix}")[
                "dependencies"]


def test_sequential_scales_each_measured_variant_to_zero_before_the_next_starts() -> None:
    parallel, sequential = mockrun.result("fashion"), mockrun.result("fashion", SEQUENTIAL)
    assert not by_type(parallel, "kubernetes:apps/v1:DeploymentPatch")
    keys = [v.key for v in load_stack("fashion").variants]
    assert len(by_type(sequential, "kubernetes:apps/v1:DeploymentPatch")) == len(keys)
    for i, key in enumerate(keys):
        patch, server = named(sequential, f"fashion-{key}-scale-down"), named(sequential, f"fashion-{key}-server")
        assert patch["inputs"]["spec"] == {"replicas": 0}
        assert patch["inputs"]["metadata"]["name"] == server["inputs"]["metadata"]["name"]
        assert patch["inputs"]["metadata"]["namespace"] == server["inputs"]["metadata"]["namespace"]
        assert urn_of(sequential, f"fashion-{key}-loadgen") in patch["dependencies"]  # after the measurement
        if i + 1 < len(keys):  # the next variant's servers wait for the scale-down
            assert patch["urn"] in named(sequential, f"fashion-{keys[i + 1]}-server")["dependencies"]
        # both writers of spec.replicas force it, and both carry the run id: a new runId scales up, then down
        for obj in (patch, server):
            assert obj["inputs"]["metadata"]["annotations"] == {PATCH_FORCE: "true", RUN_ID_ANNOTATION: "1"}
    again = mockrun.result("fashion", SEQUENTIAL_RUN_2)
    for key in keys:
        for suffix in ("scale-down", "server"):
            annotations = named(again, f"fashion-{key}-{suffix}")["inputs"]["metadata"]["annotations"]
            assert annotations[RUN_ID_ANNOTATION] == "2"
    assert "one variant at a time" in peak_message(sequential)["message"]


def test_a_new_run_id_makes_new_jobs_and_results_but_keeps_the_servers() -> None:
    one, two = mockrun.result("fashion"), mockrun.result("fashion", RUN_2)
    assert two["error"] is None
    for kind in ("kubernetes:apps/v1:Deployment", "kubernetes:core/v1:Service"):
        def inputs(run: dict[str, Any], kind: str = kind) -> dict[str, Any]:
            return {r["name"]: r["inputs"] for r in by_type(run, kind)}

        assert inputs(one) == inputs(two)
    jobs_one = {r["name"]: r["inputs"]["metadata"]["name"] for r in by_type(one, "kubernetes:batch/v1:Job")}
    jobs_two = {r["name"]: r["inputs"]["metadata"]["name"] for r in by_type(two, "kubernetes:batch/v1:Job")}
    assert jobs_one.keys() == jobs_two.keys()
    assert all(jobs_one[k] != jobs_two[k] and jobs_two[k].endswith("-run-2") for k in jobs_one)
    uris = [v["resultsUri"] for v in two["outputs"]["results"].values()]
    assert uris and all("/results/fashion/2/" in u for u in uris)


def test_a_use_case_without_platform_stack_builds_its_own_platform() -> None:
    run = mockrun.result("fashion", OWN_PLATFORM)
    assert run["error"] is None
    assert not by_type(run, "pulumi:pulumi:StackReference")
    assert len(by_type(run, "gcp:container/cluster:Cluster")) == 1
    assert len(by_type(run, "kubernetes:batch/v1:Job")) == len(load_stack("fashion").variants)
    assert run["outputs"]["project"] == "own-project"
    # the experiment runs in the platform's namespace with its service account
    job = by_type(run, "kubernetes:batch/v1:Job")[0]
    assert job["inputs"]["metadata"]["namespace"] == "etude"
    assert job["inputs"]["spec"]["template"]["spec"]["serviceAccountName"] == "etude-runner-fashion"
    # a principal of its own: not the dev platform's `etude/etude-runner-dev` (same principal in every cluster)
    (wi,) = by_type(run, "gcp:serviceaccount/iAMMember:IAMMember")
    assert wi["inputs"]["member"] == "serviceAccount:own-project.svc.id.goog[etude/etude-runner-fashion]"
    assert {r["inputs"]["project"] for r in by_type(run, mockrun.RESULTS_TYPE)} == {"own-project"}


def test_prebuilt_images_from_config_are_used_as_is_and_nothing_is_built() -> None:
    run = mockrun.result("fashion", PREBUILT)
    assert run["error"] is None
    assert not by_type(run, "docker-build:index:Image")
    for dep in by_type(run, "kubernetes:apps/v1:Deployment"):
        gpu = "nodeSelector" in dep["inputs"]["spec"]["template"]["spec"]
        image = dep["inputs"]["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == PREBUILT["etude:image"]["cuda" if gpu else "cpu"]
    for job in by_type(run, "kubernetes:batch/v1:Job"):
        assert job["inputs"]["spec"]["template"]["spec"]["containers"][0]["image"] == PREBUILT["etude:image"]["cpu"]


@pytest.mark.parametrize("overrides", [LOCAL_FITTED, LOCAL_CLICKLOG], ids=["fitted", "clicklog"])
def test_a_local_workload_file_is_uploaded_and_the_jobs_read_it_from_the_bucket(overrides: dict[str, Any]) -> None:
    import hashlib

    run = mockrun.result("groceries-small", overrides)
    assert run["error"] is None
    (obj,) = by_type(run, "gcp:storage/bucketObject:BucketObject")
    path = Path(next(iter(overrides["etude:scenario"]["workload"].values())))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert obj["inputs"]["bucket"] == mockrun.MOCK_PLATFORM["bucket"]
    assert obj["inputs"]["name"] == f"workloads/{digest[:16]}-{path.name}"
    flag = "--workload" if "fitted" in overrides["etude:scenario"]["workload"] else "--clicklog"
    jobs = by_type(run, "kubernetes:batch/v1:Job")
    assert jobs
    for job in jobs:
        argv = job["inputs"]["spec"]["template"]["spec"]["containers"][0]["command"]
        assert argv[argv.index(flag) + 1] == f"gs://{mockrun.MOCK_PLATFORM['bucket']}/{obj['inputs']['name']}"
        assert obj["urn"] in job["dependencies"]  # uploaded before the Job starts


def test_a_gcs_workload_is_passed_as_is_and_nothing_is_uploaded() -> None:
    run = mockrun.result("groceries-small", GCS_FITTED)
    assert run["error"] is None
    assert not by_type(run, "gcp:storage/bucketObject:BucketObject")
    for job in by_type(run, "kubernetes:batch/v1:Job"):
        argv = job["inputs"]["spec"]["template"]["spec"]["containers"][0]["command"]
        assert argv[argv.index("--workload") + 1] == "gs://team-bucket/workloads/rsc15.json"


def test_a_variants_local_item_token_list_is_uploaded_and_only_its_job_reads_it() -> None:
    import hashlib

    run = mockrun.result("groceries-small", MAPPED_REPLAY)
    assert run["error"] is None
    objects = {o["name"]: o for o in by_type(run, "gcp:storage/bucketObject:BucketObject")}
    assert set(objects) == {"groceries-small-workload", "groceries-small-mapped-item-ids"}  # gs:// passed as is
    obj = objects["groceries-small-mapped-item-ids"]
    digest = hashlib.sha256(ITEM_IDS_FILE.read_bytes()).hexdigest()
    assert obj["inputs"]["name"] == f"workloads/{digest[:16]}-items.txt"
    for job in by_type(run, "kubernetes:batch/v1:Job"):
        argv = job["inputs"]["spec"]["template"]["spec"]["containers"][0]["command"]
        item_ids = argv[argv.index("--item-ids") + 1] if "--item-ids" in argv else None
        if job["name"] == "groceries-small-mapped-loadgen":
            assert item_ids == f"gs://{mockrun.MOCK_PLATFORM['bucket']}/{obj['inputs']['name']}"
            assert obj["urn"] in job["dependencies"]  # uploaded before the Job starts
        elif job["name"] == "groceries-small-remote-loadgen":
            assert item_ids == "gs://team-bucket/items.txt"
        else:
            assert item_ids is None


def test_a_local_model_file_or_checkpoint_is_uploaded_and_its_servers_read_it_from_the_bucket() -> None:
    import hashlib

    run = mockrun.result("groceries-small", LOCAL_MODELS)
    assert run["error"] is None
    objects = {o["name"]: o for o in by_type(run, "gcp:storage/bucketObject:BucketObject")}
    assert set(objects) == {"groceries-small-served-model", "groceries-small-imported-model"}  # gs:// as is
    bucket = mockrun.MOCK_PLATFORM["bucket"]
    for key, path in (("served", MODEL_FILE), ("imported", CHECKPOINT_FILE)):
        obj = objects[f"groceries-small-{key}-model"]
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert obj["inputs"]["name"] == f"models/uploads/{digest[:16]}-{path.name}"
        server = named(run, f"groceries-small-{key}-server")
        assert obj["urn"] in server["dependencies"]  # uploaded before the servers start
        pod = server["inputs"]["spec"]["template"]["spec"]
        serve = pod["containers"][0]["command"]
        if key == "served":  # served from its copy; nothing to export
            assert serve[serve.index("--model-uri") + 1] == f"gs://{bucket}/{obj['inputs']['name']}"
            assert not pod.get("initContainers")
        else:  # imported from its copy into the models folder, served from there
            (init,) = pod["initContainers"]
            argv = init["command"]
            assert argv[argv.index("import-recbole") + 1] == f"gs://{bucket}/{obj['inputs']['name']}"
            assert serve[serve.index("--model-uri") + 1] == argv[argv.index("--out") + 1]
    remote = named(run, "groceries-small-remote-server")["inputs"]["spec"]["template"]["spec"]["containers"][0]
    assert remote["command"][remote["command"].index("--model-uri") + 1] == "gs://team-bucket/models/theirs.pt"


def test_a_missing_local_workload_file_fails_with_its_name() -> None:
    run = mockrun.result("groceries-small", with_workload({"fitted": "no/such/workload.json"}))
    assert run["error"] is not None and "no/such/workload.json" in run["error"] and "no such file" in run["error"]


# ---- the platform stack (dev) ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dev() -> dict[str, Any]:
    run = mockrun.result("dev")
    assert run["error"] is None
    return run


def test_dev_declares_a_regional_autopilot_cluster_with_settings_from_config(dev: dict[str, Any]) -> None:
    (cluster,) = by_type(dev, "gcp:container/cluster:Cluster")
    cfg = read_config("dev", {"platform": {"releaseChannel": "REGULAR", "deletionProtection": True}})
    inputs = cluster["inputs"]
    assert inputs["enableAutopilot"] is True
    assert inputs["location"] == "europe-west4"  # gcp:region of Pulumi.dev.yaml: a region, not a zone
    assert inputs["releaseChannel"] == {"channel": cfg.platform.release_channel}
    assert inputs["deletionProtection"] is True
    assert inputs["workloadIdentityConfig"] == {"workloadPool": "my-gcp-project.svc.id.goog"}
    apis = {r["inputs"]["service"] for r in by_type(dev, "gcp:projects/service:Service")}
    assert {"container.googleapis.com", "artifactregistry.googleapis.com", "storage.googleapis.com"} <= apis
    assert "cloudresourcemanager.googleapis.com" in apis  # get_project_output (the image-pull grant) needs it
    pull = by_type(dev, "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember")[0]
    crm = named(dev, "etude-api-cloudresourcemanager")
    assert crm["urn"] in named(dev, "etude-images")["dependencies"] and pull["inputs"]["member"].startswith(
        "serviceAccount:123456789012-compute@")
    assert all(r["inputs"]["disableOnDestroy"] is False for r in by_type(dev, "gcp:projects/service:Service"))


def test_dev_bucket_is_private_uniform_and_expires_old_results(dev: dict[str, Any]) -> None:
    (bucket,) = by_type(dev, "gcp:storage/bucket:Bucket")
    assert bucket["inputs"]["uniformBucketLevelAccess"] is True
    assert bucket["inputs"]["publicAccessPrevention"] == "enforced"
    (rule,) = bucket["inputs"]["lifecycleRules"]
    assert rule["action"]["type"] == "Delete"
    assert rule["condition"]["age"] == 90 and rule["condition"]["matchesPrefixes"] == ["results/"]
    assert bucket["inputs"]["forceDestroy"] is False  # while deletion protection is on


def test_dev_can_be_destroyed_once_protection_is_switched_off() -> None:
    run = mockrun.result("dev", UNPROTECTED)
    assert run["error"] is None
    (cluster,) = by_type(run, "gcp:container/cluster:Cluster")
    (bucket,) = by_type(run, "gcp:storage/bucket:Bucket")
    assert cluster["inputs"]["deletionProtection"] is False
    assert bucket["inputs"]["forceDestroy"] is True
    assert not bucket["inputs"].get("lifecycleRules")  # retention 0: results are kept


def test_dev_grants_the_workload_object_access_on_the_bucket_only(dev: dict[str, Any]) -> None:
    types = {r["type"] for r in dev["resources"]}
    project_wide = {t for t in types if t.startswith(("gcp:projects/iAM", "gcp:organizations/iAM", "gcp:folder/iAM"))}
    assert not project_wide, "no project-, folder- or organization-wide role"
    assert not {t for t in types if t.startswith("gcp:serviceaccount/key")}, "no service-account keys"
    (gsa,) = by_type(dev, "gcp:serviceaccount/account:Account")
    email = gsa["state"]["email"]
    (grant,) = by_type(dev, "gcp:storage/bucketIAMMember:BucketIAMMember")
    assert grant["inputs"]["role"] == "roles/storage.objectUser"
    assert grant["inputs"]["member"] == f"serviceAccount:{email}"
    assert grant["inputs"]["bucket"] == by_type(dev, "gcp:storage/bucket:Bucket")[0]["state"]["name"]
    (wi,) = by_type(dev, "gcp:serviceaccount/iAMMember:IAMMember")
    assert wi["inputs"]["role"] == "roles/iam.workloadIdentityUser"
    assert wi["inputs"]["member"] == "serviceAccount:my-gcp-project.svc.id.goog[etude/etude-runner-dev]"
    (ksa,) = by_type(dev, "kubernetes:core/v1:ServiceAccount")
    assert ksa["inputs"]["metadata"]["annotations"] == {"iam.gke.io/gcp-service-account": email}
    assert ksa["inputs"]["metadata"]["namespace"] == "etude"
    # the only other grant: the nodes may pull images from this one repository
    (pull,) = by_type(dev, "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember")
    assert pull["inputs"]["role"] == "roles/artifactregistry.reader"


def test_dev_outputs_what_use_case_stacks_read_and_the_kubeconfig_is_a_secret(dev: dict[str, Any]) -> None:
    out = dev["outputs"]
    assert set(mockrun.MOCK_PLATFORM) <= set(out)
    assert out["namespace"] == "etude" and out["serviceAccount"] == "etude-runner-dev"
    assert out["registry"] == "europe-west4-docker.pkg.dev/my-gcp-project/etude-dev"
    kubeconfig = out["kubeconfig"]["secret"]
    assert "gke-gcloud-auth-plugin" in kubeconfig and "auth-provider" not in kubeconfig
    assert kubeconfig == gke_kubeconfig("gke_my-gcp-project_europe-west4_etude-cluster-mock", "203.0.113.10",
                                        "bW9jay1jYQ==")
    (ns,) = by_type(dev, "kubernetes:core/v1:Namespace")
    assert ns["inputs"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    (repo,) = by_type(dev, "gcp:artifactregistry/repository:Repository")
    assert repo["inputs"]["format"] == "DOCKER"


def test_the_platform_stack_reference_name() -> None:
    assert platform_stack_name("acme/etude/dev") == "acme/etude/dev"


# ---- invalid config fails before any resource ------------------------------------------------------------------

INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("fashion", {"etude:variants": [{"model": "sasrec", "instanceType": "tpu-v5"}]},
     "etude:variants.0.instanceType = 'tpu-v5': unknown instance type; known: cpu, gpu-t4"),
    ("fashion", {"etude:sequentail": True}, "etude:sequentail: unknown key"),
    ("dev", {"etude:platform": {"releaseChannel": "NIGHTLY"}}, "etude:platform.releaseChannel = 'NIGHTLY'"),
    ("dev", {"gcp:project": None}, "gcp:project: missing"),
]


@pytest.mark.parametrize(("stack", "overrides", "message"), INVALID, ids=[m.split(" ")[0] for *_, m in INVALID])
def test_invalid_config_fails_before_any_resource(stack: str, overrides: dict[str, Any], message: str) -> None:
    run = mockrun.result(stack, overrides)
    assert run["error"] is not None and message in run["error"]
    assert run["resources"] == []


# ---- around the program: the image and the preview workflow ------------------------------------------------


def test_the_gpu_containers_path_keeps_the_images_own() -> None:
    """GPU containers replace PATH (to add the NVIDIA tools), so it must still start with the image's."""
    from etude.components.manifests import IMAGE_PATH

    final_stage = (PROJECT_DIR / "Dockerfile").read_text().rsplit("\nFROM ", 1)[1]
    (env,) = [line for line in final_stage.splitlines() if line.startswith("ENV PATH=")]
    image_dirs = env.split()[1].removeprefix("PATH=").split(":")[:-1]  # before the base image's $PATH
    assert image_dirs and IMAGE_PATH.split(":")[: len(image_dirs)] == image_dirs


def test_the_preview_workflow_runs_trusted_code_with_read_only_roles() -> None:
    workflow = yaml.safe_load((PROJECT_DIR / ".github/workflows/preview.yml").read_text())
    text = (PROJECT_DIR / ".github/workflows/preview.yml").read_text()
    (job,) = workflow["jobs"].values()
    assert job["environment"] == "pulumi-preview"  # protected: required reviewers, its own secrets
    assert job["if"] == "github.event.pull_request.head.repo.full_name == github.repository"  # no forks
    uses = [step["uses"] for step in job["steps"] if "uses" in step]
    assert "pulumi/actions@v7" in uses
    assert "container.developer" not in text and "roles/container.viewer" in text

