"""`etude local`: the pieces (variant selection, memory refusal, GPU skipping, ports, process groups, live figures
from /metrics) and the whole runner end to end over loopback on a tiny stack written by the test: results and a
report come out, a taken port is avoided, a dying server fails only its variant, Ctrl-C leaves no process behind."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from etude import local
from etude.cli import main
from etude.errors import UsageError
from etude.processes import Children, free_port, pick_port, port_free
from etude.progress import Live, parse, quantile_ms
from etude.report import write_report
from etude.results import SUMMARY_FILE, Summary
from etude.spec import load_stack

TINY = """\
config:
  etude:runId: "t1"
  etude:scenario:
    catalogSize: 1000
    targetRps: 20
    rampSeconds: 3
    holdSeconds: 2
    workload: {{preset: bolcom}}
    slo: {{percentile: 90, latencyMs: 50}}
    seed: 7
  etude:variants:
{variants}
"""
NOOP = "    - {model: noop, runtime: jit, instanceType: cpu}"
GPU_NOOP = "    - {model: noop, runtime: jit, instanceType: gpu-t4}"
GRU = "    - {model: gru4rec, runtime: jit, instanceType: cpu}"


def tiny_stack(tmp_path: Path, *variants: str, name: str = "tiny") -> Path:
    path = tmp_path / f"Pulumi.{name}.yaml"
    path.write_text(TINY.format(variants="\n".join(variants)))
    return path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it holds no port and no memory
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# -- pieces ----------------------------------------------------------------------------------------------------


def test_only_selects_models_and_names_unknown_ones(tmp_path: Path) -> None:
    exp = load_stack(str(tiny_stack(tmp_path, NOOP, GRU, GPU_NOOP)))
    assert [v.key for v in local.select(exp, "gru4rec")] == ["gru4rec-jit-cpu"]
    assert [v.key for v in local.select(exp, "noop")] == ["noop-jit-cpu", "noop-jit-gpu-t4"]
    assert [v.key for v in local.select(exp, "noop-jit-gpu-t4, gru4rec")] == ["gru4rec-jit-cpu", "noop-jit-gpu-t4"]
    with pytest.raises(UsageError, match="sasrec not in stack tiny; its models: gru4rec, noop"):
        local.select(exp, "sasrec")


def test_only_matches_names_whatever_their_case(tmp_path: Path) -> None:
    user = "    - {modelUri: gs://bucket/MyModel.pt, runtime: jit, instanceType: cpu}"
    exp = load_stack(str(tiny_stack(tmp_path, NOOP, user)))
    assert [v.model_label for v in local.select(exp, "MyModel")] == ["MyModel"]
    assert [v.key for v in local.select(exp, "mymodel, NOOP")] == ["noop-jit-cpu", "mymodel-jit-cpu"]
    with pytest.raises(UsageError, match="OtherModel not in stack tiny; its models: MyModel, noop"):
        local.select(exp, "OtherModel")


def test_an_unreadable_summary_is_the_reason_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    exp = load_stack(str(tiny_stack(tmp_path, NOOP)))
    runner = local.LocalRun(exp, out=str(tmp_path / "results"), models_dir=str(tmp_path / "models"), port=0,
                            ramp_seconds=1, hold_seconds=0, ready_timeout_s=1, console=Console(file=io.StringIO()))
    outcome = local.Outcome(exp.variants[0], "not run", results=str(tmp_path / "results" / "v"))
    # a load generator that exits 0 after writing a summary.json that is no summary
    writes = (f"import pathlib; p = pathlib.Path({outcome.results!r}); p.mkdir(parents=True); "
              "(p / 'summary.json').write_text('{\"requests\": \"many\"}')")
    monkeypatch.setattr(local, "etude_argv", lambda argv: [sys.executable, "-c", writes])
    server = runner.children.start("server", ["sleep", "30"], tmp_path / "server.log")
    try:
        runner._load(outcome, "http://127.0.0.1:9", server, tmp_path / "logs", "1/1", lambda *a: None)
    finally:
        runner.children.stop_all(grace_s=1)
    assert outcome.status == "failed" and "exit code" not in outcome.reason
    assert "summary.json is not a load-generator summary (spec: Field required" in outcome.reason


def test_catalog_too_large_is_refused_with_the_figure() -> None:
    exp = load_stack("platform")  # C = 20,000,000, d = 67
    needed = local.memory_needed_bytes(20_000_000, 67)
    assert needed > 20_000_000 * 67 * 4  # at least the embeddings themselves
    with pytest.raises(UsageError, match=rf"needs about {needed / 2**30:.1f} GiB .* has 2.0 GiB available"):
        local.check_memory(exp, available=2 << 30)
    local.check_memory(load_stack("groceries-small"), available=needed)  # 10,000 items fit easily


def test_memory_estimate_counts_repeatnets_three_tables_only_when_it_runs(tmp_path: Path) -> None:
    exp = load_stack(str(tiny_stack(tmp_path, GRU, "    - {model: repeatnet, runtime: jit, instanceType: cpu}")))
    one, three = (local.memory_needed_bytes(exp.scenario.catalog_size, exp.scenario.embedding_dim, t) for t in (1, 3))
    assert three - local.BASE_MEMORY_BYTES == 3 * (one - local.BASE_MEMORY_BYTES) > 0
    with pytest.raises(UsageError, match=r"1.25 x 3 x C x d x 4 bytes"):
        local.check_memory(exp, available=three - 1)
    local.check_memory(exp, available=one, variants=local.select(exp, "gru4rec"))


def test_memory_estimate_follows_each_variants_runtime(tmp_path: Path) -> None:
    """ann holds the index and the encoder's table beside the model: its estimate is the larger, and names it."""
    exp = load_stack(str(tiny_stack(tmp_path, GRU, "    - {model: gru4rec, runtime: ann, instanceType: cpu}")))
    C, d = exp.scenario.catalog_size, exp.scenario.embedding_dim
    jit, ann = (local.memory_needed_bytes(C, d, 1, runtime) for runtime in ("jit", "ann"))
    assert (ann - local.BASE_MEMORY_BYTES) / (jit - local.BASE_MEMORY_BYTES) == pytest.approx(2.5 / 1.25, rel=1e-3)
    with pytest.raises(UsageError, match=r"export and serve gru4rec-ann-cpu \(2.5 x 1 x C x d x 4 bytes"):
        local.check_memory(exp, available=ann - 1)
    local.check_memory(exp, available=jit, variants=local.select(exp, "gru4rec-jit-cpu"))


def test_gpu_variants_are_skipped_without_a_gpu(tmp_path: Path) -> None:
    import torch

    exp = load_stack(str(tiny_stack(tmp_path, NOOP, GPU_NOOP)))
    reasons = local.gpu_skip_reasons(exp, exp.variants)
    if torch.cuda.is_available():
        assert reasons == {}  # a GPU with room for 1,000 items: it runs
    else:
        assert reasons == {"noop-jit-gpu-t4": reasons["noop-jit-gpu-t4"]}
        assert "torch.cuda.is_available() is False" in reasons["noop-jit-gpu-t4"]


def test_unknown_stack_lists_the_existing_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["local", "--stack", "groceries-medium"]) == 2
    err = capsys.readouterr().err
    assert "groceries-medium" in err and "groceries-small" in err and "platform" in err


def test_a_taken_port_is_avoided() -> None:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        taken = s.getsockname()[1]
        assert not port_free(taken)
        other = pick_port(taken)
        assert other != taken and port_free(other)


def test_stopping_a_child_stops_its_whole_group(tmp_path: Path) -> None:
    children = Children()
    pidfile = tmp_path / "grandchild"
    child = children.start("sh", ["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], tmp_path / "sh.log")
    try:
        deadline = time.monotonic() + 5
        while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.05)
        grandchild = int(pidfile.read_text())
        children.stop(child, grace_s=2)
        time.sleep(0.1)
        assert not pid_alive(child.pid) and not pid_alive(grandchild)
    finally:
        children.stop_all(grace_s=1)


STUBBORN_RUN = """
import sys, time
from pathlib import Path
from rich.console import Console
from etude import local
from etude.spec import load_stack

stack, out, pidfile, marker = sys.argv[1:]
# a child that notes SIGTERM and goes on, with a grandchild that ignores it: only SIGKILL ends them
script = f"trap 'echo term >> {marker}' TERM; (trap '' TERM; exec sleep 60) & echo $$ $! > {pidfile}; "
script += "while :; do wait; done"

def run_variant(self, outcome, position, show):
    self.children.start("stubborn", ["sh", "-c", script], Path(out, "stubborn.log"))
    time.sleep(60)

local.LocalRun._run_variant = run_variant
exp = load_stack(stack)
runner = local.LocalRun(exp, out=out, models_dir=out, port=0, ramp_seconds=1, hold_seconds=0, ready_timeout_s=1,
                        console=Console(stderr=True))
try:
    runner.run(exp.variants, {})
except KeyboardInterrupt:
    sys.exit(130)
"""


@pytest.mark.slow
def test_clean_up_finishes_whatever_signals_arrive(tmp_path: Path) -> None:
    pidfile, marker = tmp_path / "pids", tmp_path / "term"
    proc = subprocess.Popen([sys.executable, "-c", STUBBORN_RUN, str(tiny_stack(tmp_path, NOOP)),
                             str(tmp_path / "out"), str(pidfile), str(marker)], stderr=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while not (pidfile.exists() and len(pidfile.read_text().split()) == 2) and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = [int(p) for p in pidfile.read_text().split()]
        proc.send_signal(signal.SIGTERM)
        while not marker.exists() and time.monotonic() < deadline:  # the clean-up has asked the child to stop
            time.sleep(0.05)
        assert marker.exists()
        proc.send_signal(signal.SIGTERM)  # a second SIGTERM while the clean-up waits for the child
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert not any(pid_alive(pid) for pid in pids), err
    finally:
        proc.kill()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_live_figures_from_prometheus_text() -> None:
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    registry = CollectorRegistry()
    requests = Counter("etude_requests", "answers", ["status"], registry=registry)
    latency = Histogram("etude_request_latency_seconds", "latency", buckets=(0.001, 0.01, 0.1), registry=registry)
    for _ in range(90):
        requests.labels(status="200").inc()
        latency.observe(0.0005)
    for _ in range(10):
        requests.labels(status="503").inc()
        latency.observe(0.05)
    snap = parse(generate_latest(registry).decode(), 0)
    assert snap is not None and (snap.answers, snap.errors) == (100, 10)
    assert quantile_ms(list(snap.buckets), 0.9) == pytest.approx(1.0)  # 90 of 100 answers within 1 ms
    assert quantile_ms(list(snap.buckets), 0.95) == pytest.approx(10 + 90 * 0.5)  # half-way into (10, 100] ms
    assert parse("# nothing here\n", 0) is None
    assert local._live_text(Live(None, None, None)) == "rate - rps, p90 - (server, last 5 s), errors -"


# -- end to end over loopback --------------------------------------------------------------------------------------


class Run:
    """`python -m etude local ...` in the background, its stderr collected line by line."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
        self.proc = subprocess.Popen([sys.executable, "-m", "etude", "local", *args], cwd=cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.err: list[str] = []
        self._out: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True)
        self._reader.start()
        self._out_reader = threading.Thread(target=self._read, args=(self.proc.stdout, self._out), daemon=True)
        self._out_reader.start()

    @staticmethod
    def _read(stream: IO[str] | None, lines: list[str]) -> None:
        assert stream is not None
        for line in stream:
            lines.append(line)

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.err):
                if m := re.search(pattern, line):
                    return m
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(self.err)}")

    def finish(self, timeout_s: float) -> int:
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self._reader.join(timeout=5)
        self._out_reader.join(timeout=5)
        return self.proc.returncode

    @property
    def out(self) -> str:
        return "".join(self._out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")  # exported models are cached across the tests of this module


def _servers(run: Run) -> Iterator[tuple[int, int]]:
    for line in run.err:
        if m := re.search(r"server for \S+: pid (\d+), port (\d+)", line):
            yield int(m[1]), int(m[2])


@pytest.mark.slow
def test_local_end_to_end_then_report(tmp_path: Path, models_dir: Path) -> None:
    import torch

    stack = tiny_stack(tmp_path, NOOP, GRU, GPU_NOOP)
    out = tmp_path / "results"
    with socket.socket() as busy:  # the port asked for is taken: another one is used
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = Run(["--stack", str(stack), "--out", str(out), "--models-dir", str(models_dir), "--port", str(port)],
                  tmp_path)
        rc = run.finish(timeout_s=90)
    assert rc == 0, run.stderr + run.out
    servers = list(_servers(run))
    assert len(servers) == 2 and all(p != port for _, p in servers)
    assert all(not pid_alive(pid) and port_free(p) for pid, p in servers)
    for key in ("noop-jit-cpu", "gru4rec-jit-cpu"):
        summary = Summary.model_validate_json((out / "tiny" / "t1" / key / SUMMARY_FILE).read_text())
        assert summary.spec.variant == key and summary.spec.target_rps == 20 and not summary.partial
        assert summary.ok > 0 and summary.spec.ramp_seconds == 3
        assert re.search(rf"{key}\s+│\s+ok\s", run.out), run.out  # the final table
    if not torch.cuda.is_available():
        assert re.search(r"noop-jit-gpu-t4\s+│\s+skipped\s.*torch\.cuda\.is_available\(\) is False", run.out)
    assert re.search(r"variant 1/3 noop-jit-cpu: \d+/5 s, target ~\d+ rps, rate", run.stderr)  # progress lines

    report = write_report([str(out)], tmp_path / "report")  # the CLI path of `etude report`: test_report.py
    md = (report / "report.md").read_text()
    assert "### tiny: C = 1,000 items, target 20 rps" in md and "noop-jit-cpu" in md
    assert (report / "capacity.csv").read_text().count("this machine") == 2
    if not torch.cuda.is_available():  # local-run.json carries the skipped variant into the report
        assert re.search(r"\| tiny \| noop-jit-gpu-t4 \| skipped \| needs a GPU", md), md


@pytest.mark.slow
def test_a_dying_server_fails_only_its_variant(tmp_path: Path, models_dir: Path) -> None:
    stack = tiny_stack(tmp_path, NOOP.replace("}", ", name: first}"), NOOP.replace("}", ", name: second}"))
    out = tmp_path / "results"
    run = Run(["--stack", str(stack), "--out", str(out), "--models-dir", str(models_dir),
               "--port", str(free_port()), "--ramp-seconds", "2", "--hold-seconds", "1"], tmp_path)
    run.wait_for(r"load generator for first", timeout_s=60)
    pid, _ = next(_servers(run))
    os.kill(pid, signal.SIGKILL)
    rc = run.finish(timeout_s=90)
    assert rc == 1, run.stderr
    assert re.search(r"first\s+│\s+failed\s.*the server exited", run.out), run.out
    assert "variant first failed: the server exited with code -9 during the run; last lines of" in run.stderr
    assert re.search(r"second\s+│\s+ok\s", run.out), run.out
    assert (out / "tiny" / "t1" / "second" / SUMMARY_FILE).exists()


@pytest.mark.slow
def test_ctrl_c_stops_everything_and_keeps_finished_results(tmp_path: Path, models_dir: Path) -> None:
    stack = tiny_stack(tmp_path, NOOP.replace("}", ", name: first}"), NOOP.replace("}", ", name: second}"))
    out = tmp_path / "results"
    run = Run(["--stack", str(stack), "--out", str(out), "--models-dir", str(models_dir), "--port", str(free_port()),
               "--ramp-seconds", "2", "--hold-seconds", "2"], tmp_path)
    loadgen_pid = int(run.wait_for(r"load generator for second: pid (\d+)", timeout_s=60)[1])
    run.proc.send_signal(signal.SIGINT)
    start = time.monotonic()
    rc = run.finish(timeout_s=40)
    assert rc == 130, run.stderr
    assert time.monotonic() - start < 30
    for pid, port in _servers(run):
        assert not pid_alive(pid) and port_free(port)
    assert not pid_alive(loadgen_pid)
    assert (out / "tiny" / "t1" / "first" / SUMMARY_FILE).exists()  # the finished variant's results stay
    assert re.search(r"second\s+│\s+interrupted", run.stderr), run.stderr
