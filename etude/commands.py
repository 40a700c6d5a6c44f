"""The command lines of an experiment: what Kubernetes runs in its containers and `etude local` runs as processes.

One function per command, used by both sides, so that what runs on GKE is what was run on a laptop.
Every command is an argv list that starts with `etude`.
"""

from __future__ import annotations

import hashlib
import math

from etude import sustained
from etude.server_defaults import MAX_BATCH_SIZE, MAX_DELAY_MS
from etude.spec import Experiment, SpecError, Variant

SERVER_PORT = 8080
# The server's HTTP API (docs/design.md, "HTTP API of the inference server"):
# readiness, recommendations, and the number of items asked for by default.
PING_PATH = "/ping"
RECOMMEND_PATH = "/v1/recommend"
DEFAULT_K = 21
LOADGEN_RPS_PER_POD = 2000  # one load-generator process sustains more (docs/benchmarks.md); keep headroom
LOADGEN_TIMEOUT_S = 10.0  # the load generator's per-request timeout


def model_uri(exp: Experiment, variant: Variant, models_root: str, model_file_uri: str | None = None) -> str:
    """Where the variant's serialized model lives: a user's URI as is (or `model_file_uri`, where its local file
    is read from: its absolute path, or its copy in the bucket), a built-in or imported one under `models_root`,
    named by everything the file depends on, the device it is exported for included (a CPU and a GPU artifact
    differ); an imported one by its checkpoint's stem and a digest of the checkpoint's URI."""
    if variant.model_uri is not None:
        return model_file_uri or variant.model_uri
    root = models_root.rstrip("/")
    device = variant.instance.device
    if variant.recbole is not None:
        digest = hashlib.sha256(variant.recbole.encode()).hexdigest()[:10]
        return f"{root}/recbole-{variant.model_label}-{digest}-{variant.runtime}-{device}.pt"
    sc = exp.scenario
    return f"{root}/{variant.model}-c{sc.catalog_size}-{variant.runtime}-{device}-s{sc.seed}.pt"


def run_root(exp: Experiment, results_root: str) -> str:
    """Where this run's results go: `<root>/<stack>/<runId>`."""
    return f"{results_root.rstrip('/')}/{exp.stack}/{exp.run_id}"


def results_uri(exp: Experiment, variant: Variant, results_root: str) -> str:
    """Where one variant's results of this run go: `<root>/<stack>/<runId>/<variant>`."""
    return f"{run_root(exp, results_root)}/{variant.key}"


def upload_object(folder: str, file_name: str, digest: str) -> str:
    """The bucket object a local file is uploaded to: `<folder>/<sha256 prefix>-<file name>` (a changed file is a
    new object, so a new Job or server), `workloads` for what the load generator reads, `models/uploads` for a
    user's model file or RecBole checkpoint."""
    return f"{folder}/{digest[:16]}-{file_name}"


def export_command(exp: Experiment, variant: Variant, out: str, checkpoint_uri: str | None = None) -> list[str]:
    """Export a built-in model with random weights (seeded) to `out`, unless it is there already; or import the
    variant's RecBole checkpoint to `out` (every run: the checkpoint may have been retrained in place), read from
    `checkpoint_uri` when given (its copy in the bucket). Either is written for the device the variant serves on
    (the export itself runs on the CPU)."""
    if variant.recbole is not None:
        return ["etude", "import-recbole", checkpoint_uri or variant.recbole, "--runtime", variant.runtime,
                "--device", variant.instance.device, "--out", out]  # fmt: skip
    if variant.model is None:
        raise ValueError(f"variant {variant.key} serves a user model ({variant.model_uri}); nothing to export")
    sc = exp.scenario
    return [
        "etude", "export",
        "--model", variant.model,
        "--catalog-size", str(sc.catalog_size),
        "--runtime", variant.runtime,
        "--device", variant.instance.device,
        "--seed", str(sc.seed),
        "--out", out,
        "--if-missing",
    ]  # fmt: skip


def serve_command(
    variant: Variant,
    uri: str,
    *,
    host: str = "0.0.0.0",
    port: int = SERVER_PORT,
    device: str | None = None,
    threads: int | None = None,
) -> list[str]:
    """The inference server for a variant. Device and threads default to what the instance type has.

    In a pod it listens on every interface (the Service routes to it); the local runner passes 127.0.0.1. A model
    the export step built (a built-in or an imported RecBole checkpoint) may be an aot package, whose native code
    the server may then run; a user's `modelUri` never gets that permission.
    """
    inst = variant.instance
    native = ["--allow-native-code"] if variant.needs_export and variant.runtime == "aot" else []
    return [
        "etude", "serve",
        "--model-uri", uri,
        "--host", host,
        "--port", str(port),
        "--device", device or inst.device,
        "--threads", str(threads or inst.threads),
        "--max-batch-size", str(MAX_BATCH_SIZE),
        "--max-delay-ms", str(MAX_DELAY_MS),
        *native,
    ]  # fmt: skip


def loadgen_shards(exp: Experiment) -> int:
    """How many load-generator processes the target rate needs. A capacity search and repeats run in one process,
    so their highest rate must fit one."""
    sc = exp.scenario
    if not sc.capacity.search and sc.repeats == 1:
        return max(1, math.ceil(sc.target_rps / LOADGEN_RPS_PER_POD))
    top = sustained.search_max_rps(sc.target_rps, sc.capacity.max_rps) if sc.capacity.search else sc.target_rps
    if top > LOADGEN_RPS_PER_POD:
        raise SpecError(f"etude:scenario: a capacity search or repeats run in one load-generator process, which "
                        f"sends up to {LOADGEN_RPS_PER_POD} req/s; this one would need {top} (lower capacity.maxRps)")
    return 1


def run_duration_s(exp: Experiment, ramp_seconds: int | None = None, hold_seconds: int | None = None) -> int:
    """The longest the load generator may measure for this scenario (every repeat; a search's every hold), without
    its readiness wait: what the Kubernetes Job's timeout and `etude local` allow beyond their margins."""
    sc = exp.scenario
    return sustained.worst_case_seconds(
        ramp_seconds=sc.ramp_seconds if ramp_seconds is None else ramp_seconds,
        hold_seconds=sc.hold_seconds if hold_seconds is None else hold_seconds,
        target_rps=sc.target_rps,
        percentile=sc.slo.percentile,
        timeout_s=LOADGEN_TIMEOUT_S,
        find_capacity=sc.capacity.search,
        max_rps=sc.capacity.max_rps,
        repeats=sc.repeats,
    )


def loadgen_command(
    exp: Experiment,
    variant: Variant,
    *,
    url: str,
    out: str,
    shard: str | None = None,
    ramp_seconds: int | None = None,
    hold_seconds: int | None = None,
    workload_uri: str | None = None,
    item_ids_uri: str | None = None,
) -> list[str]:
    """The load generator against `url`, writing results to `out`.

    `shard` is `i/n` (Kubernetes passes `$(JOB_COMPLETION_INDEX)/n`); ramp and hold may be shortened locally;
    `workload_uri` and `item_ids_uri` replace the paths of the workload file and of the variant's item token list
    (their copies in the bucket, `upload_object`, or their absolute local paths).
    The variant's identity is echoed into summary.json so results are self-describing.
    """
    sc = exp.scenario
    argv = [
        "etude", "loadgen",
        "--url", url,
        "--catalog-size", str(sc.catalog_size),
        "--target-rps", str(sc.target_rps),
        "--ramp-seconds", str(sc.ramp_seconds if ramp_seconds is None else ramp_seconds),
        "--hold-seconds", str(sc.hold_seconds if hold_seconds is None else hold_seconds),
        *sc.workload.cli_args(workload_uri),
        "--seed", str(sc.seed),
        "--arrivals", sc.arrivals,
        "--slo-ms", f"{sc.slo.latency_ms:g}",
        "--slo-percentile", f"{sc.slo.percentile:g}",
        "--stack", exp.stack,
        "--run-id", exp.run_id,
        "--variant", variant.key,
        "--model", variant.model_label,
        "--runtime", variant.runtime,
        "--instance-type", variant.instance_type,
        "--replicas", str(variant.replicas),
        "--monthly-usd", f"{exp.monthly_usd(variant):.2f}",
        "--out", out,
    ]  # fmt: skip
    if variant.item_ids is not None:
        argv += ["--item-ids", item_ids_uri or variant.item_ids]
    if sc.burstiness is not None:
        argv += ["--burstiness", f"{sc.burstiness:g}"]
    if sc.capacity.search:
        argv += ["--find-capacity"]
    if sc.capacity.max_rps is not None:
        argv += ["--search-max-rps", str(sc.capacity.max_rps)]
    if sc.repeats > 1:
        argv += ["--repeats", str(sc.repeats)]
    if shard is not None:
        argv += ["--shard", shard]
    return argv
