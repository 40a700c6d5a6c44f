"""`etude loadgen` as a user runs it: the contract's command line, result folders (local and gs://), exit codes,
bad input as one-line errors, SIGTERM -> partial results, and shards merged into one run."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import pytest

from etude import storage
from etude.cli import main
from etude.commands import loadgen_command
from etude.loadgen import results
from etude.loadgen.refserver import Behaviour, ServerThread
from etude.loadgen.runner import pool_size
from etude.loadgen.schedule import NS_PER_S
from etude.processes import free_port
from etude.results import REQUEST_COLUMNS, SUMMARY_FILE, TIMELINE_COLUMNS, TIMELINE_FILE, Summary
from etude.spec import spec_from_config

ROOT = Path(__file__).resolve().parents[1]


def contract_argv(
    url: str,
    out: str,
    *,
    rps: int = 20,
    ramp: int = 1,
    hold: int = 1,
    shard: str | None = None,
    workload: dict[str, object] | None = None,
    arrivals: str = "uniform",
) -> list[str]:
    """The command line Kubernetes and `etude local` run (etude.commands.loadgen_command), minus `etude`."""
    exp = spec_from_config(
        "groceries-small",
        {
            "scenario": {
                "catalogSize": 500,
                "targetRps": rps,
                "workload": workload or {"preset": "bolcom"},
                "slo": {"latencyMs": 50, "percentile": 90},
                "seed": 7,
                "arrivals": arrivals,  # evenly spread slots: exact counts to assert on
            },
            "variants": [{"model": "gru4rec", "runtime": "jit", "instanceType": "cpu"}],
        },
    )
    argv = loadgen_command(exp, exp.variants[0], url=url, out=out, shard=shard, ramp_seconds=ramp, hold_seconds=hold)
    assert argv[:2] == ["etude", "loadgen"]
    return argv[1:]


def test_contract_command_line_writes_a_complete_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results" / "run"
    with ServerThread(Behaviour("ok", delay_ms=2)) as url:
        assert main(contract_argv(url, str(out), rps=100, hold=2)) == 0
    summary, requests, timeline = results.read(str(out))
    assert sorted(p.name for p in out.iterdir()) == ["requests.parquet", "summary.json", "timeline.parquet"]
    assert requests.column_names == list(REQUEST_COLUMNS) and timeline.column_names == list(TIMELINE_COLUMNS)
    assert summary.ok == summary.requests == 300 and not summary.partial
    assert summary.slo_met and summary.capacity_rps == 100  # 200 answers in the hold: enough for a p90 verdict
    s = summary.spec
    assert (s.stack, s.model, s.runtime, s.instance_type, s.workload) == (
        "groceries-small",
        "gru4rec",
        "jit",
        "cpu",
        {"preset": "bolcom"},
    )
    assert s.monthly_usd is not None and s.target_rps == 100 and s.seed == 7 and s.arrivals == "uniform"
    assert "300/300 ok" in capsys.readouterr().out


def test_clicklog_workload_and_gcs_output(tmp_path: Path, gcs_bucket: str) -> None:
    log = tmp_path / "clicks.csv"
    log.write_text(
        "session_id,item_id,timestamp\n"
        + "".join(f"{s},{900 + s * 3 + i},{s * 10 + i}\n" for s in range(4) for i in range(3))
    )
    out = f"gs://{gcs_bucket}/groceries-small/1/gru4rec"
    with ServerThread(Behaviour("ok", record=True)) as url:
        assert main(contract_argv(url, out, rps=12, ramp=1, hold=0, workload={"clicklog": str(log)})) == 0
    summary, requests, _ = results.read(out)
    assert summary.ok == 12 and summary.spec.workload == {"clicklog": str(log)}
    assert requests.column("item_id").to_pylist() and max(requests.column("item_id").to_pylist()) < 500


def test_a_clicklog_with_item_ids_sends_the_trained_models_ids(tmp_path: Path) -> None:
    log = tmp_path / "clicks.csv"
    log.write_text("session_id,item_id,timestamp\n1,t7,1\n1,t42,2\n2,t499,3\n2,unknown,4\n")
    items = tmp_path / "items.txt"  # line j (after [PAD]) is the model's id j - 1, here in reverse token order
    items.write_text("[PAD]\n" + "".join(f"t{499 - i}\n" for i in range(500)))
    out = tmp_path / "out"
    with ServerThread(Behaviour("ok", record=True)) as url:
        argv = contract_argv(url, str(out), rps=6, ramp=1, hold=0, workload={"clicklog": str(log)})
        assert main([*argv, "--item-ids", str(items)]) == 0
    summary, requests, _ = results.read(str(out))
    assert summary.ok == 6 and summary.spec.workload == {"clicklog": str(log), "item_ids": str(items)}
    assert set(requests.column("item_id").to_pylist()) == {499 - 7, 499 - 42, 0}


def test_fitted_workload_from_gcs(tmp_path: Path, gcs_bucket: str) -> None:
    import numpy as np

    from etude.loadgen.fit import ClickLog
    from etude.loadgen.fitted import fit_workload

    rng = np.random.default_rng(3)
    lengths = rng.geometric(0.3, 300)
    log = ClickLog(np.repeat(np.arange(300), lengths), rng.zipf(1.7, int(lengths.sum())), None)
    uri = f"gs://{gcs_bucket}/workloads/w.json"
    storage.write_bytes(uri, fit_workload(log).model_dump_json().encode())
    out = tmp_path / "run"
    with ServerThread(Behaviour("ok", record=True)) as url:
        assert main(contract_argv(url, str(out), rps=12, ramp=1, hold=0, workload={"fitted": uri})) == 0
    summary, requests, _ = results.read(str(out))
    assert summary.ok == 12 and summary.spec.workload == {"fitted": uri}
    assert max(requests.column("item_id").to_pylist()) < 500


def test_a_workload_file_of_another_version_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "w.json"
    path.write_text('{"version": 2, "sessions": 3}')
    out = tmp_path / "out"
    assert main(contract_argv("http://127.0.0.1:1", str(out), workload={"fitted": str(path)})) == 2
    err = capsys.readouterr().err.strip()
    assert "workload model version 2" in err and len(err.splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--url": "ftp://127.0.0.1:1"}, "not an http"),
        ({"--url": "localhost"}, "not an http"),
        ({"--url": "http://127.0.0.1:99999"}, "out of range"),
        ({"--target-rps": "0"}, "--target-rps 0"),
        ({"--ramp-seconds": "0"}, "--ramp-seconds 0"),
        ({"--hold-seconds": "-1"}, "--hold-seconds -1"),
        ({"--catalog-size": "0"}, "--catalog-size 0"),
        ({"--slo-percentile": "100"}, "--slo-percentile"),
        ({"--timeout-s": "0"}, "--timeout-s"),
        ({"--shard": "2/2"}, "--shard"),
        ({"--shard": "one/two"}, "--shard"),
        ({"--shard": "45/50"}, "below the shard count"),
        ({"--preset": "nope"}, "unknown preset"),
        ({"--clicklog": "clicks.csv"}, "not both"),
        ({"--item-ids": "items.txt"}, "--item-ids maps the items of a click log: give it with --clicklog"),
        ({"--alpha-clicks": "1.5"}, "not both"),
        ({"--workload": "w.json"}, "not both --workload and --preset"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, str], message: str
) -> None:
    out = tmp_path / "out"
    argv = [*contract_argv("http://127.0.0.1:1", str(out)), "--ready-timeout-s", "1"]  # bounded if it got through
    for flag, value in change.items():
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_unwritable_output_and_unready_target_fail_fast_with_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(contract_argv("http://127.0.0.1:1", str(blocker / "run"))) == 2
    assert "cannot write" in capsys.readouterr().err
    out = tmp_path / "out"
    start = time.perf_counter()
    assert main([*contract_argv(f"http://127.0.0.1:{free_port()}", str(out)), "--ready-timeout-s", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "never became ready within 0.5 s" in err and len(err.strip().splitlines()) == 1
    assert time.perf_counter() - start < 5 and not (out / SUMMARY_FILE).exists()


def test_missing_bucket_is_a_one_line_error(gcs_emulator: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(contract_argv("http://127.0.0.1:1", "gs://no-such-bucket-here/run")) == 2
    err = capsys.readouterr().err.strip()
    assert "gs://no-such-bucket-here/run" in err and len(err.splitlines()) == 1


def spawn(argv: list[str], log_level: str = "WARNING") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "etude", "--log-level", log_level, *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )


def test_sigterm_stops_sending_and_writes_partial_results(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with ServerThread(Behaviour("ok", delay_ms=5)) as url:
        proc = spawn(contract_argv(url, str(out), rps=20, ramp=2, hold=30), log_level="INFO")
        assert proc.stderr is not None
        for line in proc.stderr:  # the measurement starts right after the warm-up
            if "warm-up:" in line:
                break
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err
    summary, requests, _ = results.read(str(out))
    assert summary.partial and 0 < summary.requests < 20 * 5 and requests.num_rows == summary.requests


def test_shards_split_rate_and_sessions_and_shard_zero_merges(tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    with ServerThread(Behaviour("ok", delay_ms=2)) as url:
        procs = [spawn(contract_argv(url, out, rps=30, ramp=1, hold=1, shard=f"{i}/2")) for i in (1, 0)]
        for p in procs:
            _, err = p.communicate(timeout=30)
            assert p.returncode == 0, err
    shard0, shard1 = (results.read(results.shard_dir(out, i)) for i in (0, 1))
    assert shard0[0].requests == 30 and shard1[0].requests == 30  # 15 + 15 rps each
    sessions0 = set(shard0[1].column("session_id").to_pylist())
    sessions1 = set(shard1[1].column("session_id").to_pylist())
    assert not sessions0 & sessions1 and all(s % 2 == 0 for s in sessions0)
    merged, requests, timeline = results.read(out)
    assert merged.shards == 2 and not merged.partial and merged.requests == 60 and requests.num_rows == 60
    assert timeline.column("target_rps").to_pylist()[:2] == [30, 30]
    assert merged.spec.target_rps == 30 and merged.spec.shard is None
    assert storage.exists(storage.join(out, SUMMARY_FILE))


def test_shard_zero_alone_merges_partial_after_a_bounded_wait(tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    with ServerThread(Behaviour("ok")) as url:
        argv = [*contract_argv(url, out, rps=4, ramp=1, hold=0, shard="0/2"), "--merge-wait-s", "0.5"]
        assert main([*argv, "--ready-timeout-s", "1"]) == 0  # it waits that long for shard 1 to be ready
    merged = results.read(out)[0]
    assert merged.partial and merged.shards == 2 and merged.requests == 2


def test_shards_start_on_one_clock_when_one_starts_two_seconds_late(tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    with ServerThread(Behaviour("ok", delay_ms=2)) as url:
        first = spawn(contract_argv(url, out, rps=20, ramp=1, hold=2, shard="0/2"))
        time.sleep(2.0)
        late = spawn(contract_argv(url, out, rps=20, ramp=1, hold=2, shard="1/2"))
        for p in (late, first):
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
    shard0, shard1 = (results.read(results.shard_dir(out, i))[0] for i in (0, 1))
    assert shard0.started_at == shard1.started_at  # one start instant, written by shard 0
    merged, requests, timeline = results.read(out)
    assert not merged.partial and merged.requests == 60
    assert timeline.column("target_rps").to_pylist()[:3] == [20, 20, 20]  # per-second windows line up
    late_rows = requests.filter(pa.compute.equal(pa.compute.bit_wise_and(requests.column("session_id"), 1), 1))
    assert min(late_rows.column("intended_ns").to_pylist()) < NS_PER_S  # not shifted by the late start


def test_a_pool_the_file_limit_cannot_hold_is_refused_up_front(tmp_path: Path) -> None:
    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    argv = contract_argv("http://127.0.0.1:9", str(tmp_path / "run"), rps=1000)
    proc = subprocess.run([sys.executable, "-m", "etude", *argv], cwd=ROOT, capture_output=True, text=True,
                          preexec_fn=low_limit, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "needs 1064 open files (1000 connections" in proc.stderr and "256" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert pool_size(1000, 10.0) == 1000 and pool_size(1000, 0.25) == 250


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--arrivals", "bursty"], "--burstiness > 1"),
        (["--arrivals", "bursty", "--burstiness", "1"], "--burstiness > 1"),
        (["--burstiness", "2"], "goes with --arrivals bursty"),
        (["--search-max-rps", "50"], "goes with --find-capacity"),
        (["--repeats", "0"], "--repeats 0"),
        (["--find-capacity", "--shard", "0/2"], "leave out --shard"),
    ],
)
def test_bad_arrival_and_capacity_flags_are_one_line_errors(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a for a in contract_argv("http://127.0.0.1:9", str(tmp_path / "run")) if a != "uniform"]
    argv = [a for a in argv if a != "--arrivals"]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_repeats_write_each_repeat_and_the_median_on_top(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with ServerThread(Behaviour("ok", delay_ms=1)) as url:
        assert main([*contract_argv(url, str(out), rps=200, ramp=1, hold=1), "--repeats", "3"]) == 0
    top = Summary.model_validate_json((out / SUMMARY_FILE).read_bytes())
    assert (out / TIMELINE_FILE).is_file()  # the median repeat's; requests stay in each repeat's folder
    assert top.spec.repeats == 3 and top.repeat_capacity_rps == [200.0, 200.0, 200.0]
    assert top.capacity_rps == 200 and top.capacity_spread == 0 and top.slo_met
    for i in range(3):
        part = results.read(str(out / f"repeat-{i}"))[0]
        assert part.spec.repeat == i and part.capacity_rps == 200 and part.requests == 400
    assert (top.requests, top.ok, top.held_back, top.errors) == (1200, 1200, 0, {})  # every repeat's counts
