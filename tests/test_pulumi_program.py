"""The Pulumi program under mocks (no cloud, no Pulumi CLI): every stack file declares what it should, the
results come out as stack outputs, invalid config fails before any resource, and the Pulumi side never loads
the ML stack. Each stack runs once in its own interpreter (infra.mockrun), shared by all assertions."""

from __future__ import annotations

from typing import Any

import pytest

from components.manifests import JOB_MARGIN_S
from components.results import METRIC_KEYS, metrics_from_summary
from etude.commands import results_uri, run_duration_s
from etude.spec import available_stacks, load_stack
from infra import mockrun
from infra.config import read_config
from infra.kubeconfig import gke_kubeconfig
from infra.program import platform_stack_name

USE_CASES = available_stacks()
ALL_STACKS = ["dev", *USE_CASES]
OWN_PLATFORM = {"etude:platformStack": None, "gcp:project": "own-project", "gcp:region": "us-central1"}
SEQUENTIAL = {"etude:sequential": True}
RUN_2 = {"etude:runId": "2"}
PREBUILT = {"etude:image": {"cpu": "ghcr.io/me/etude:cpu-1", "cuda": "ghcr.io/me/etude:cuda-1"}}
UNPROTECTED = {"etude:platform": {"deletionProtection": False, "resultsRetentionDays": 0}}
HEAVY = ("torch", "numpy", "serving", "loadgen", "models", "scipy", "pandas", "matplotlib", "pyarrow")


@pytest.fixture(scope="module", autouse=True)
def _start_all_runs() -> None:
    """Start every run this module needs at once: they run in parallel in their own interpreters."""
    for stack in ALL_STACKS:
        mockrun.start(stack)
    for overrides in (OWN_PLATFORM, SEQUENTIAL, RUN_2, PREBUILT):
        mockrun.start("fashion", overrides)
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
    images = {r["name"] for r in by_type(run, "docker-build:index:Image")}
    wants_cuda = any(v.instance.gpus for v in exp.variants)
    assert images == {f"{stack}-image-cpu"} | ({f"{stack}-image-cuda"} if wants_cuda else set())


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
    assert job["inputs"]["spec"]["template"]["spec"]["serviceAccountName"] == "etude-runner"


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
    assert wi["inputs"]["member"] == "serviceAccount:my-gcp-project.svc.id.goog[etude/etude-runner]"
    (ksa,) = by_type(dev, "kubernetes:core/v1:ServiceAccount")
    assert ksa["inputs"]["metadata"]["annotations"] == {"iam.gke.io/gcp-service-account": email}
    assert ksa["inputs"]["metadata"]["namespace"] == "etude"
    # the only other grant: the nodes may pull images from this one repository
    (pull,) = by_type(dev, "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember")
    assert pull["inputs"]["role"] == "roles/artifactregistry.reader"


def test_dev_outputs_what_use_case_stacks_read_and_the_kubeconfig_is_a_secret(dev: dict[str, Any]) -> None:
    out = dev["outputs"]
    assert set(mockrun.MOCK_PLATFORM) <= set(out)
    assert out["namespace"] == "etude" and out["serviceAccount"] == "etude-runner"
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

INVALID = [
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
