"""The experiment spec: every stack file validates to what the paper's Table I measures; bad config names the
key, the value and what is allowed; the command lines of both sides come from one place."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest
import yaml

from etude import catalog, commands
from etude.catalog import INSTANCE_TYPES
from etude.spec import SpecError, available_stacks, load_stack, spec_from_config

TABLE_I = {  # use case: (catalog size, target req/s, {instance type: replicas})
    "groceries-small": (10_000, 100, {"cpu": 1, "gpu-t4": 1}),
    "groceries-large": (100_000, 250, {"cpu": 1, "gpu-t4": 1}),
    "fashion": (1_000_000, 500, {"cpu": 3, "gpu-t4": 1, "gpu-a100": 1}),
    "ecommerce": (10_000_000, 1000, {"gpu-t4": 5, "gpu-a100": 2}),
    "platform": (20_000_000, 1000, {"gpu-a100": 3}),
}
TABLE_I_MODELS = {"core", "gru4rec", "narm", "sasrec", "sine", "stamp"}


def test_the_five_use_cases_of_the_paper_are_there() -> None:
    assert available_stacks() == sorted(TABLE_I)


@pytest.mark.parametrize("stack", sorted(TABLE_I))
def test_stack_file_measures_table_i(stack: str) -> None:
    exp = load_stack(stack)
    catalog_size, rps, types = TABLE_I[stack]
    assert exp.scenario.catalog_size == catalog_size
    assert exp.scenario.target_rps == rps
    assert (exp.scenario.slo.percentile, exp.scenario.slo.latency_ms) == (90, 50)
    assert exp.scenario.embedding_dim == math.ceil(catalog_size**0.25)
    seen = {(v.model, v.instance_type): v.replicas for v in exp.variants}
    assert seen == {(m, t): n for m in TABLE_I_MODELS for t, n in types.items()}
    assert all(v.runtime == "jit" for v in exp.variants)
    assert len({v.key for v in exp.variants}) == len(exp.variants)


def test_cost_is_replicas_times_catalog_price_unless_overridden() -> None:
    exp = load_stack("fashion")
    cpu = next(v for v in exp.variants if v.instance_type == "cpu")
    assert exp.monthly_usd(cpu) == pytest.approx(3 * 108.09)
    cheaper = exp.model_copy(update={"prices": {"cpu": 100.0}})
    assert cheaper.monthly_usd(cpu) == pytest.approx(300.0)


def _config(**scenario_overrides: object) -> dict[str, object]:
    scenario = {"catalogSize": 1000, "targetRps": 10, "workload": {"preset": "bolcom"}} | scenario_overrides
    return {"etude:scenario": scenario, "etude:variants": [{"model": "gru4rec"}], "gcp:project": "ignored"}


def test_minimal_config_gets_the_papers_defaults() -> None:
    exp = spec_from_config("tiny", _config())
    assert exp.scenario.slo.percentile == 90 and exp.scenario.slo.latency_ms == 50
    (v,) = exp.variants
    assert (v.runtime, v.instance_type, v.replicas, v.key) == ("jit", "cpu", 1, "gru4rec-jit-cpu")


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (_config(catalogSize=0), ["etude:scenario.catalogSize", "0", "greater than or equal to 1"]),
        (_config(targetRps="fast"), ["etude:scenario.targetRps", "'fast'", "integer"]),
        (_config(workload={"preset": "amazon"}), ["etude:scenario.workload.preset", "'amazon'", "'bolcom' or 'rsc15'"]),
        (_config(workload={"preset": "bolcom", "clicklog": "x.csv"}), ["etude:scenario.workload", "exactly one of"]),
        (_config(workload={"fitted": "w.json", "clicklog": "x.csv"}), ["etude:scenario.workload", "exactly one of"]),
        (_config(workload={"fitted": ""}), ["etude:scenario.workload.fitted", "at least 1 character"]),
        (_config(workload={"alphaLength": 1.5}), ["alphaLength and alphaClicks go together"]),
        (_config(workload={"alphaLength": -1, "alphaClicks": 1}), ["alphaLength", "-1", "greater than 0"]),
        (_config(slo={"percentile": 100}), ["etude:scenario.slo.percentile", "100", "less than 100"]),
        (_config(rampSecs=3), ["etude:scenario.rampSecs", "unknown key"]),
        (
            {**_config(), "etude:variants": [{"model": "bert4rec"}]},
            ["etude:variants.0.model", "'bert4rec'", "built-in models: core, gcsan, gru4rec"],
        ),
        (
            {**_config(), "etude:variants": [{"model": "narm", "instanceType": "tpu-v5"}]},
            ["etude:variants.0.instanceType", "'tpu-v5'", "known: cpu, gpu-t4, gpu-l4, gpu-a100, gpu-h100"],
        ),
        ({**_config(), "etude:variants": [{"model": "narm", "runtime": "trt"}]}, ["runtime", "known runtimes: eager"]),
        ({**_config(), "etude:variants": [{"model": "narm", "replicas": 0}]}, ["replicas", "0"]),
        ({**_config(), "etude:variants": [{"runtime": "jit"}]}, ["exactly one of model", "modelUri"]),
        ({**_config(), "etude:variants": []}, ["etude:variants", "at least 1"]),
        ({**_config(), "etude:variants": [{"model": "narm"}, {"model": "narm"}]}, ["repeated: narm-jit-cpu"]),
        ({**_config(), "etude:prices": {"tpu": 3.0}}, ["unknown instance types ['tpu']"]),
        ({**_config(), "etude:runId": "has space"}, ["etude:runId", "'has space'"]),
        ({**_config(), "etude:rampup": 3}, ["etude:rampup: unknown key; allowed: scenario, variants"]),
        ({"etude:variants": [{"model": "narm"}]}, ["etude:scenario: missing"]),
    ],
)
def test_bad_config_names_key_value_and_what_is_allowed(config: dict[str, object], expected: list[str]) -> None:
    with pytest.raises(SpecError) as err:
        spec_from_config("bad", config)
    for fragment in expected:
        assert fragment in str(err.value)


@pytest.mark.parametrize(
    ("workload", "flags"),
    [
        ({"fitted": "workloads/rsc15.json"}, ["--workload", "workloads/rsc15.json"]),
        ({"fitted": "gs://team/w.json"}, ["--workload", "gs://team/w.json"]),
        ({"clicklog": "clicks.csv"}, ["--clicklog", "clicks.csv"]),
        ({"preset": "rsc15"}, ["--preset", "rsc15"]),
    ],
)
def test_a_workload_becomes_the_load_generators_flags(workload: dict[str, str], flags: list[str]) -> None:
    exp = spec_from_config("w", _config(workload=workload))
    argv = commands.loadgen_command(exp, exp.variants[0], url="http://x:8080", out="/tmp/o")
    assert argv[argv.index(flags[0]) : argv.index(flags[0]) + 2] == flags
    in_bucket = commands.loadgen_command(exp, exp.variants[0], url="http://x:8080", out="/tmp/o",
                                         workload_uri="gs://b/workloads/0123-w.json")  # fmt: skip
    file = exp.scenario.workload.file
    expected = [flags[0], "gs://b/workloads/0123-w.json"] if file else flags
    assert in_bucket[in_bucket.index(flags[0]) : in_bucket.index(flags[0]) + 2] == expected


def test_a_relative_workload_file_is_taken_from_the_project_folder(tmp_path: Path) -> None:
    from etude.spec import PROJECT_DIR, Workload

    assert Workload(fitted="w/rsc15.json").local_file() == PROJECT_DIR / "w" / "rsc15.json"
    assert Workload(clicklog="c.csv").local_file(tmp_path) == tmp_path / "c.csv"
    assert Workload(fitted=str(tmp_path / "a.json")).local_file() == tmp_path / "a.json"
    assert Workload(fitted="gs://b/w.json").local_file() is None and Workload(preset="bolcom").local_file() is None


def test_user_model_variant(tmp_path: Path) -> None:
    cfg = {**_config(), "etude:variants": [{"modelUri": "gs://team/models/my-ranker.pt", "runtime": "eager"}]}
    (v,) = spec_from_config("custom", cfg).variants
    assert v.model is None and v.model_label == "my-ranker" and v.key == "my-ranker-eager-cpu"


def test_unknown_stack_lists_the_existing_ones() -> None:
    with pytest.raises(SpecError, match="stacks here: ecommerce, fashion, groceries-large, groceries-small, platform"):
        load_stack("groceries-medium")


def test_stack_file_by_path_and_broken_files(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.tiny.yaml"
    path.write_text(yaml.safe_dump({"config": _config()}))
    assert load_stack(str(path)).stack == "tiny"
    path.write_text("config: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_stack(str(path))
    path.write_text("encryptionsalt: x\n")
    with pytest.raises(SpecError, match="no `config:` mapping"):
        load_stack(str(path))


def test_catalog_entries() -> None:
    assert INSTANCE_TYPES["gpu-t4"].accelerator == "nvidia-tesla-t4" and INSTANCE_TYPES["cpu"].accelerator is None
    assert {t.device for t in INSTANCE_TYPES.values()} == {"cpu", "cuda"}
    assert all(t.price_source and t.machine for t in INSTANCE_TYPES.values())
    # the paper's figures are its one-year-commitment prices, the others on-demand list prices with a date
    paper = {n for n, t in INSTANCE_TYPES.items() if t.price_basis == catalog.PAPER_COMMITMENT}
    assert paper == {"cpu", "gpu-t4", "gpu-a100"}
    assert all(t.price_basis == catalog.ON_DEMAND and re.search(r"\(20\d\d-\d\d\)", t.price_source)
               for n, t in INSTANCE_TYPES.items() if n not in paper)
    assert "N1" in INSTANCE_TYPES["gpu-t4"].machine and "e2" not in INSTANCE_TYPES["gpu-t4"].machine.lower()
    assert all(t.gpu_quota for t in INSTANCE_TYPES.values() if t.gpus)


def test_gpu_pods_fit_the_autopilot_request_maxima() -> None:
    gpu_types = [t for t in INSTANCE_TYPES.values() if t.gpus]
    assert {t.accelerator for t in gpu_types} <= set(catalog.AUTOPILOT_GPU_MAXIMA)
    for t in gpu_types:
        assert catalog.autopilot_gpu_misfit(t) is None, catalog.autopilot_gpu_misfit(t)
    too_big = dataclasses.replace(INSTANCE_TYPES["gpu-a100"], memory="80Gi")
    assert "at most 11 vCPU / 74 GiB" in str(catalog.autopilot_gpu_misfit(too_big))
    assert catalog.autopilot_gpu_misfit(dataclasses.replace(INSTANCE_TYPES["gpu-t4"], cpu="37")) is not None
    assert catalog.cpu_vcpu("5500m") == 5.5 and catalog.memory_gib("512Mi") == 0.5


def test_command_lines_carry_the_spec() -> None:
    exp = load_stack("fashion")
    cpu, t4 = exp.variants[0], next(v for v in exp.variants if v.instance_type == "gpu-t4")
    uri = commands.model_uri(exp, cpu, "gs://bucket/models/")
    assert uri == "gs://bucket/models/core-c1000000-jit-cpu-s42.pt"
    t4_uri = commands.model_uri(exp, t4, "gs://bucket/models")  # same model, another device: another file
    assert t4_uri == f"gs://bucket/models/{t4.model}-c1000000-jit-cuda-s42.pt"
    export_t4 = commands.export_command(exp, t4, t4_uri)
    assert export_t4[export_t4.index("--device") + 1] == "cuda"
    assert commands.export_command(exp, cpu, uri)[:2] == ["etude", "export"]
    serve = commands.serve_command(cpu, uri)
    assert serve[serve.index("--device") + 1] == "cpu" and serve[serve.index("--port") + 1] == "8080"
    assert commands.serve_command(t4, uri)[commands.serve_command(t4, uri).index("--device") + 1] == "cuda"
    out = commands.results_uri(exp, cpu, "gs://bucket/results")
    assert out == "gs://bucket/results/fashion/1/core-jit-cpu"
    lg = commands.loadgen_command(exp, cpu, url="http://core-jit-cpu:8080", out=out, hold_seconds=5)
    flags = dict(zip(lg[2::2], lg[3::2], strict=False))
    assert flags["--target-rps"] == "500" and flags["--catalog-size"] == "1000000"
    assert flags["--hold-seconds"] == "5" and flags["--ramp-seconds"] == "600"
    assert flags["--preset"] == "bolcom" and flags["--replicas"] == "3" and flags["--monthly-usd"] == "324.27"
    assert commands.loadgen_shards(load_stack("groceries-small")) == 1
    custom = spec_from_config("c", {**_config(), "etude:variants": [{"modelUri": "/m/x.pt"}]})
    with pytest.raises(ValueError, match="nothing to export"):
        commands.export_command(custom, custom.variants[0], "/tmp/x.pt")
    assert commands.model_uri(custom, custom.variants[0], "gs://b/models") == "/m/x.pt"
    copy = "gs://b/models/uploads/0123-x.pt"  # where a local modelUri is read from once uploaded
    assert commands.model_uri(custom, custom.variants[0], "gs://b/models", copy) == copy


def test_a_recbole_checkpoint_is_a_variant_imported_in_the_export_step(tmp_path: Path) -> None:
    cfg = {**_config(), "etude:variants": [{"recbole": "/ckpt/NARM-Dec.pth", "runtime": "eager"},
                                           {"recbole": "/other/NARM-Dec.pth"}]}  # fmt: skip
    exp = spec_from_config("r", cfg)
    a, b = exp.variants
    assert a.needs_export and a.model_label == "NARM-Dec" and a.key == "narm-dec-eager-cpu"
    uri_a, uri_b = (commands.model_uri(exp, v, "gs://b/models") for v in (a, b))
    assert uri_a.startswith("gs://b/models/recbole-NARM-Dec-") and uri_a.endswith("-eager-cpu.pt")
    assert uri_a.replace("-eager", "") != uri_b.replace("-jit", "")  # same stem, different checkpoints
    assert commands.export_command(exp, a, uri_a) == [
        "etude", "import-recbole", "/ckpt/NARM-Dec.pth", "--runtime", "eager", "--device", "cpu",
        "--out", uri_a]  # fmt: skip
    copy = "gs://b/models/uploads/0123-NARM-Dec.pth"  # the bucket's copy of a local checkpoint
    assert commands.export_command(exp, a, uri_a, copy)[2] == copy
    assert commands.model_uri(exp, a, "gs://b/models", copy) == uri_a  # imported into the models folder, as before
    assert a.local_model_file() == Path("/ckpt/NARM-Dec.pth")
    relative = spec_from_config("r", {**_config(), "etude:variants": [{"modelUri": "models/mine.pt"}]}).variants[0]
    assert relative.local_model_file(tmp_path) == tmp_path / "models/mine.pt"
    remote = spec_from_config("r", {**_config(), "etude:variants": [{"recbole": "gs://b/c.pth"}]}).variants[0]
    assert remote.local_model_file() is None
    for bad in ({"recbole": "/c.pth", "model": "narm"}, {"recbole": "/c.pth", "modelUri": "/m.pt"}, {"recbole": " "}):
        with pytest.raises(SpecError, match="etude:variants"):
            spec_from_config("r", {**_config(), "etude:variants": [bad]})


def test_item_ids_map_a_replayed_click_log_for_a_trained_model_only(tmp_path: Path) -> None:
    replay = _config(workload={"clicklog": "logs/clicks.csv"})
    cfg = {**replay, "etude:variants": [{"recbole": "/ckpt/NARM.pth", "itemIds": "data/items.txt"},
                                        {"model": "narm", "name": "builtin"}]}  # fmt: skip
    exp = spec_from_config("r", cfg)
    mapped, builtin = exp.variants
    assert mapped.local_item_ids(tmp_path) == tmp_path / "data/items.txt"
    argv = commands.loadgen_command(exp, mapped, url="http://s", out="/o", item_ids_uri="gs://b/workloads/items")
    assert argv[argv.index("--item-ids") + 1] == "gs://b/workloads/items"
    local = commands.loadgen_command(exp, mapped, url="http://s", out="/o")
    assert local[local.index("--item-ids") + 1] == "data/items.txt"
    assert "--item-ids" not in commands.loadgen_command(exp, builtin, url="http://s", out="/o")
    for bad, words in (
        ({**replay, "etude:variants": [{"model": "narm", "itemIds": "i.txt"}]}, ["itemIds", "built-in model"]),
        ({**_config(), "etude:variants": [{"recbole": "/c.pth", "itemIds": "i.txt"}]}, ["not a clicklog"]),
    ):
        with pytest.raises(SpecError) as err:
            spec_from_config("r", bad)
        assert all(w in str(err.value) for w in words), str(err.value)


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ({"arrivals": "gaussian"}, ["etude:scenario.arrivals", "'gaussian'", "known: poisson, uniform, bursty"]),
        ({"arrivals": "bursty"}, ["burstiness", "goes with arrivals: bursty"]),
        ({"arrivals": "poisson", "burstiness": 2.0}, ["burstiness", "goes with arrivals: bursty"]),
        ({"arrivals": "bursty", "burstiness": 1.0}, ["etude:scenario.burstiness", "greater than 1"]),
        ({"repeats": 0}, ["etude:scenario.repeats", "0"]),
        ({"capacity": {"maxRps": 50}}, ["capacity.maxRps goes with capacity.search: true"]),
        ({"capacity": {"search": True, "maxRps": 0}}, ["etude:scenario.capacity.maxRps", "0"]),
        ({"capacity": {"serach": True}}, ["etude:scenario.capacity.serach", "unknown key"]),
    ],
)
def test_bad_arrivals_and_capacity_keys_are_one_line_errors(scenario: dict[str, object], expected: list[str]) -> None:
    with pytest.raises(SpecError) as err:
        spec_from_config("bad", _config(**scenario))
    assert len(str(err.value).splitlines()) == 1
    for fragment in expected:
        assert fragment in str(err.value)


def test_arrivals_repeats_and_search_reach_the_load_generator() -> None:
    plain = spec_from_config("c", _config())
    assert plain.scenario.arrivals == "poisson" and plain.scenario.repeats == 1
    argv = commands.loadgen_command(plain, plain.variants[0], url="http://x:8080", out="/o")
    assert argv[argv.index("--arrivals") + 1] == "poisson" and "--find-capacity" not in argv
    exp = spec_from_config("c", _config(arrivals="bursty", burstiness=2.5, repeats=3,
                                        capacity={"search": True, "maxRps": 30}))
    argv = commands.loadgen_command(exp, exp.variants[0], url="http://x:8080", out="/o")
    flags = dict(zip(argv[2::2], argv[3::2], strict=False))
    assert "--find-capacity" in argv and argv[argv.index("--search-max-rps") + 1] == "30"
    assert argv[argv.index("--burstiness") + 1] == "2.5" and argv[argv.index("--repeats") + 1] == "3"
    assert flags["--arrivals"] == "bursty"
    assert commands.run_duration_s(exp) > 3 * commands.run_duration_s(plain)  # every hold of every repeat
    too_fast = spec_from_config("c", _config(targetRps=1500, capacity={"search": True}))
    with pytest.raises(SpecError, match="one load-generator process"):
        commands.loadgen_shards(too_fast)


@pytest.mark.parametrize("stack", ["groceries-small", "groceries-large", "fashion", "ecommerce", "platform"])
def test_use_case_stacks_assume_poisson_arrivals(stack: str) -> None:
    assert load_stack(stack).scenario.arrivals == "poisson"


def test_only_models_the_export_step_built_may_run_native_code_in_the_server() -> None:
    cfg = {**_config(), "etude:variants": [{"model": "gru4rec", "runtime": "aot"},
                                           {"modelUri": "gs://b/theirs.pt2", "runtime": "aot", "name": "theirs"},
                                           {"model": "gru4rec", "runtime": "jit"}]}  # fmt: skip
    built, theirs, jit = spec_from_config("n", cfg).variants
    assert "--allow-native-code" in commands.serve_command(built, "gs://b/m.pt")
    assert "--allow-native-code" not in commands.serve_command(theirs, "gs://b/theirs.pt2")
    assert "--allow-native-code" not in commands.serve_command(jit, "gs://b/m.pt")
