"""The results reader (a Pulumi dynamic provider) against a local GCS emulator, and the stack-config reader."""

from __future__ import annotations

import pytest

from etude import storage
from etude.components.experiment import cheapest_within_slo
from etude.components.results import METRIC_KEYS, ResultsReader
from etude.infra.config import parse_value, read_config
from etude.infra.mockrun import mock_summary
from etude.results import SUMMARY_FILE
from etude.spec import SpecError, load_stack


def test_reader_turns_summary_json_in_the_bucket_into_outputs(gcs_bucket: str) -> None:
    exp = load_stack("fashion")
    variant = exp.variants[1]
    uri = f"gs://{gcs_bucket}/results/fashion/1/{variant.key}"
    summary = mock_summary(exp, variant.key)
    storage.write_bytes(f"{uri}/{SUMMARY_FILE}", summary.model_dump_json().encode())

    props = {"results_uri": uri, "monthly_usd": exp.monthly_usd(variant), "job": "j", "job_uid": "u", "metrics": None}
    created = ResultsReader().create(props)
    assert created.outs is not None
    metrics = created.outs["metrics"]
    assert set(metrics) == set(METRIC_KEYS)
    assert metrics["p90Ms"] == pytest.approx(summary.latency_ms.p90)
    assert summary.capacity_rps is not None and metrics["capacityRps"] == pytest.approx(summary.capacity_rps)
    assert metrics["errors"] == sum(summary.errors.values()) > 0
    assert metrics["sloMet"] is summary.slo_met
    assert metrics["monthlyUsd"] == pytest.approx(3 * 108.09)
    assert metrics["resultsUri"] == uri and created.id == uri


def test_reader_without_results_fails_naming_where_it_looked_and_the_job(gcs_bucket: str) -> None:
    uri = f"gs://{gcs_bucket}/results/fashion/1/nothing-here"
    props = {"results_uri": uri, "monthly_usd": 1.0, "job": "fashion-x-run-1", "job_uid": "u", "metrics": None}
    with pytest.raises(RuntimeError, match=r"no results.*nothing-here/summary\.json.*kubectl logs job/fashion-x-run-1"):
        ResultsReader().create(props)


def test_reader_rejects_a_file_that_is_not_a_summary(gcs_bucket: str) -> None:
    uri = f"gs://{gcs_bucket}/results/broken"
    storage.write_bytes(f"{uri}/{SUMMARY_FILE}", b'{"spec": {}}')
    with pytest.raises(RuntimeError, match="not a valid summary"):
        ResultsReader().create({"results_uri": uri, "monthly_usd": 1.0, "job": "", "job_uid": "", "metrics": None})


def test_reader_gives_the_storage_client_the_platforms_project(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a project, storage.Client() raises where none can be inferred (a use-case stack sets no
    gcp:project); the reader passes the platform's."""
    from google.cloud import storage as gcs

    exp = load_stack("fashion")
    variant = exp.variants[0]
    summary = mock_summary(exp, variant.key).model_dump_json().encode()
    clients: list[str | None] = []

    class Blob:
        def download_as_bytes(self) -> bytes:
            return summary

    class Client:
        def __init__(self, project: str | None = None, **_: object) -> None:
            if project is None:
                raise OSError("Project was not passed and could not be determined from the environment.")
            clients.append(project)

        def bucket(self, _name: str) -> Client:
            return self

        def blob(self, _path: str) -> Blob:
            return Blob()

    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setattr(gcs, "Client", Client)
    storage.gcs_client.cache_clear()
    try:
        props = {"results_uri": "gs://b/results/fashion/1/x", "project": "platform-project", "monthly_usd": 1.0,
                 "job": "j", "job_uid": "u", "metrics": None}
        outs = ResultsReader().create(props).outs
        assert outs is not None and outs["metrics"]["variant"] == variant.key
        assert clients == ["platform-project"]
        with pytest.raises(RuntimeError, match="no results.*could not be determined"):
            ResultsReader().create({**props, "project": None})
    finally:
        storage.gcs_client.cache_clear()  # the emulator's client for the tests after this one


def test_reader_reads_again_when_the_run_changes_and_never_deletes_results() -> None:
    old = {"results_uri": "gs://b/results/s/1/v", "monthly_usd": 1.0, "job": "j1", "job_uid": "u1",
           "metrics": {"p50Ms": 1.0}, "__provider": "x"}
    same = {**old, "metrics": None, "__provider": "y", "project": "p"}  # whom the read is billed to: no new read
    assert ResultsReader().diff("id", old, same).changes is False
    new = {**same, "results_uri": "gs://b/results/s/2/v", "job": "j2", "job_uid": "u2"}
    diff = ResultsReader().diff("id", old, new)
    assert diff.changes is True and set(diff.replaces or []) == {"results_uri", "job", "job_uid"}
    assert ResultsReader().delete("id", old) is None  # the bucket keeps the files


def test_cheapest_within_slo_uses_the_capacity_and_ignores_misses_and_partial_runs() -> None:
    results: dict[str, dict[str, object]] = {
        "a": {"monthlyUsd": 300.0, "capacityRps": 120.0, "sloMet": True, "partial": False},
        "b": {"monthlyUsd": 100.0, "capacityRps": None, "sloMet": False, "partial": False},
        "c": {"monthlyUsd": 200.0, "capacityRps": 100.0, "sloMet": True, "partial": True},
        "d": {"monthlyUsd": 250.0, "capacityRps": 100.0, "sloMet": True, "partial": False},
        "e": {"monthlyUsd": 150.0, "capacityRps": 99.0, "sloMet": False, "partial": False},  # short of the target
    }
    assert cheapest_within_slo(results, 100) == {"variant": "d", "monthlyUsd": 250.0}
    assert cheapest_within_slo({"b": results["b"], "e": results["e"]}, 100) is None


def test_config_kinds_of_stack() -> None:
    dev = read_config("dev", {"etude:platform": {"deletionProtection": False}, "gcp:project": "p"})
    assert dev.experiment is None and dev.builds_platform and dev.platform.deletion_protection is False
    exp = load_stack("fashion")
    use_case = read_config("fashion", {"scenario": exp.scenario.model_dump(by_alias=True),
                                       "variants": [{"model": "sasrec"}], "platformStack": "dev",
                                       "image": "ghcr.io/me/etude:1"})
    assert not use_case.builds_platform
    assert use_case.image is not None and use_case.image.cpu == use_case.image.for_gpu == "ghcr.io/me/etude:1"
    with pytest.raises(SpecError, match="etude:scenario: missing"):
        read_config("x", {"platformStack": "dev"})
    with pytest.raises(SpecError, match="etude:image.cuda"):
        read_config("x", {"image": {"cpu": "a", "cuda": 3}})


def test_config_values_arrive_as_text_and_keep_their_types() -> None:
    assert parse_value("runId", "1") == "1"  # a run id stays a string
    assert parse_value("sequential", "true") is True
    assert parse_value("scenario", '{"catalogSize": 10}') == {"catalogSize": 10}
    assert parse_value("image", "europe-docker.pkg.dev/p/r/etude:1") == "europe-docker.pkg.dev/p/r/etude:1"


def test_the_provider_survives_serialization_into_a_fresh_interpreter(tmp_path) -> None:
    """Pulumi pickles the provider (dill) into the state; its host process must rebuild it and find the code."""
    import subprocess
    import sys

    from pulumi.dynamic.dynamic import serialize_provider

    blob = serialize_provider(ResultsReader())
    (tmp_path / "provider.b64").write_text(blob)
    code = (
        "import base64, dill, pathlib, sys\n"
        "p = dill.loads(base64.b64decode(pathlib.Path(sys.argv[1]).read_text()))\n"
        "print(type(p).__module__, type(p).__name__)\n"
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "provider.b64")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["etude.components.results", "ResultsReader"]


def test_config_as_the_pulumi_engine_passes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """`pulumi up` hands the program its config as JSON text in PULUMI_CONFIG; typos in `etude:` keys surface."""
    import json

    from etude.infra.config import config_from_pulumi

    engine = {"etude:runId": "7", "etude:sequential": "true", "etude:platformStack": "dev", "gcp:project": "p",
              "etude:scenario": json.dumps({"catalogSize": 10, "targetRps": 5}),
              "etude:variants": json.dumps([{"model": "gru4rec"}])}
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(engine))
    cfg = read_config("x", config_from_pulumi())
    assert cfg.experiment is not None and cfg.experiment.run_id == "7" and cfg.experiment.sequential is True
    assert not cfg.builds_platform
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({**engine, "etude:sequentail": "true"}))
    with pytest.raises(SpecError, match="etude:sequentail: unknown key"):
        read_config("x", config_from_pulumi())
