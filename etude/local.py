"""`etude local --stack NAME`: run a use-case stack's experiment on this machine, no cloud (the embedded default).

It reads the same stack file through the same spec as `pulumi up` and, variant after variant, runs the same
command lines the Kubernetes manifests carry (etude.commands) as processes: export the model (cached), start
`etude serve` on a free port, wait for /ping, run `etude loadgen` against it, stop the server, read the summary.
GPU variants run when this machine has a CUDA GPU and are skipped otherwise; a catalog that does not fit this
machine's memory is refused up front. Ctrl-C (or SIGTERM) stops every process it started and keeps the results
of finished variants.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from etude import commands, storage
from etude.errors import UsageError
from etude.processes import Child, Children, NotReady, etude_argv, pick_port, wait_ready
from etude.results import REQUESTS_FILE, SUMMARY_FILE, TIMELINE_FILE, Summary
from etude.resultset import LOCAL_RUN_FILE
from etude.spec import Experiment, Variant, load_stack

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID

    from etude.progress import Live

log = logging.getLogger(__name__)

DEFAULT_OUT = "results/local"
# Measured (benchmarks/memory.py, docs/benchmarks.md "Memory"): export and server each peak at an idle torch process
# (~300 MB) + 1.0 to 1.05 x the model's bytes (no copies while (de)serialising), e.g. RepeatNet at C = 10,000,000:
# 7.2 GB for 6.84 GB of weights. Base + 1.25 x the item tables covers that, with the load generator beside the server.
BASE_MEMORY_BYTES = 1 << 30  # interpreter, torch and the load generator, whatever the model
MODEL_MEMORY_FACTOR = 1.25  # x the model's item tables (C x d float32 each): export and serve peaks
# Runtimes whose export or server holds several copies of the table, from their peaks in docs/benchmarks.md
# "Runtimes" (peak less BASE_MEMORY_BYTES, over the fp32 table, at the largest C measured): ann 2.0x at 10M (the
# index beside the encoder's table), onnx 5.2x over an idle process at 1M (ONNX Runtime's initialisers and folded
# constants; not measured larger). aot (its weights mapped from the file) and bf16/int8 are within the default.
RUNTIME_MEMORY_FACTORS = {"ann": 2.5, "onnx": 6.0}
# Built-in models with more than one item table: RepeatNet's explore decoder scores with its own [C, 2d] matrix.
ITEM_TABLES = {"repeatnet": 3}
EXPORT_TIMEOUT_S = 1800.0
SERVER_STOP_GRACE_S = 10.0
LOADGEN_STOP_GRACE_S = 20.0  # it waits for answers in flight, then writes its results
RUN_MARGIN_S = 120.0  # beyond the measurement's longest duration: readiness check, warm-up and writing
LOG_EVERY_S = 5.0  # progress lines when the terminal shows no live display
LOG_TAIL_LINES = 15
# show(position, variant key, elapsed s, planned s, target rps, live figures): the progress display
Show = Callable[[str, str, float, int, int, "Live"], None]


@dataclass
class Outcome:
    variant: Variant
    status: str  # ok | failed | skipped | interrupted | not run
    reason: str = ""
    summary: Summary | None = None
    results: str | None = None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `local` to the `etude` parser."""
    p = sub.add_parser(
        "local",
        help="run a use-case stack's experiment on this machine (no cloud)",
        description="Export, serve and load-test each variant of a stack, one after another, with the command "
        "lines Kubernetes runs; print latency, throughput and whether the SLO was met.",
    )
    p.add_argument("--stack", required=True, metavar="NAME|FILE",
                   help="stack name (Pulumi.<NAME>.yaml) or the path of a stack file")
    p.add_argument("--only", metavar="MODEL,...",
                   help="comma-separated models or variant names to run (default: every variant)")
    p.add_argument("--ramp-seconds", type=int, metavar="S",
                   help="ramp duration (default: the stack's; shorten it locally)")
    p.add_argument("--hold-seconds", type=int, metavar="S",
                   help="hold duration at the target rate (default: the stack's)")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"results root, a folder or gs:// (default: {DEFAULT_OUT})")
    p.add_argument("--models-dir", default=None, metavar="DIR",
                   help="cache of exported models (default: ~/.cache/etude/models)")
    p.add_argument("--port", type=int, default=commands.SERVER_PORT, metavar="N",
                   help="server port; another if it is taken")
    p.add_argument("--ready-timeout-s", type=float, default=300.0, metavar="S",
                   help="how long a server may take to be ready")
    p.set_defaults(func=_main)


def default_models_dir() -> str:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(cache) / "etude" / "models")


def select(exp: Experiment, only: str | None) -> list[Variant]:
    """The variants named by `--only` (models or variant names), in stack order; all without it."""
    if not only:
        return list(exp.variants)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    names = {w.lower() for w in wanted}  # names match whatever their case
    known = {v.model_label.lower() for v in exp.variants} | {v.key.lower() for v in exp.variants}
    unknown = [w for w in wanted if w.lower() not in known]
    if unknown or not wanted:
        raise UsageError(f"--only {only!r}: {', '.join(unknown) or 'empty'} not in stack {exp.stack}; "
                         f"its models: {', '.join(sorted({v.model_label for v in exp.variants}))}; "
                         f"its variants: {', '.join(v.key for v in exp.variants)}")
    return [v for v in exp.variants if v.model_label.lower() in names or v.key.lower() in names]


def memory_factor(runtime: str) -> float:
    """Peak memory to export and serve on `runtime`, in fp32 item tables (C x d x 4 bytes)."""
    return RUNTIME_MEMORY_FACTORS.get(runtime, MODEL_MEMORY_FACTOR)


def memory_needed_bytes(catalog_size: int, embedding_dim: int, tables: int = 1, runtime: str = "jit") -> int:
    """A conservative estimate of the peak memory to export and serve a model with `tables` C x d item tables."""
    return BASE_MEMORY_BYTES + int(memory_factor(runtime) * tables * catalog_size * embedding_dim * 4)


def item_tables(variants: Sequence[Variant]) -> int:
    """The most C x d item tables of any variant's model (a user's model is taken to have one)."""
    return max((_tables(v) for v in variants), default=1)


def _tables(variant: Variant) -> int:
    return ITEM_TABLES.get(variant.model or "", 1)


def memory_available_bytes() -> int:
    """MemAvailable from /proc/meminfo; free physical pages where there is none."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def check_memory(exp: Experiment, available: int | None = None, variants: Sequence[Variant] | None = None) -> None:
    """UsageError when a variant to run (default: all of the stack's) needs more memory than is available."""
    sc = exp.scenario
    chosen = list(exp.variants if variants is None else variants)
    if not chosen:
        return
    available = memory_available_bytes() if available is None else available

    def needs(v: Variant) -> int:
        return memory_needed_bytes(sc.catalog_size, sc.embedding_dim, _tables(v), v.runtime)

    worst = max(chosen, key=needs)
    needed = needs(worst)
    if needed > available:
        raise UsageError(
            f"stack {exp.stack}: a catalog of {sc.catalog_size:,} items (d = {sc.embedding_dim}) needs about "
            f"{_gib(needed)} of memory to export and serve {worst.key} ({memory_factor(worst.runtime):g} x "
            f"{_tables(worst)} x C x d x 4 bytes + {_gib(BASE_MEMORY_BYTES)}); this machine has {_gib(available)} "
            "available. Run it on GKE (pulumi up) or on a larger machine.")


def gpu_skip_reasons(exp: Experiment, variants: Sequence[Variant]) -> dict[str, str]:
    """Why each GPU variant cannot run here (no CUDA GPU, or too little GPU memory); empty when all can."""
    gpu = [v for v in variants if v.instance.device == "cuda"]
    if not gpu:
        return {}
    import torch

    if not torch.cuda.is_available():
        why = f"needs a GPU ({gpu[0].instance.accelerator or 'cuda'}); torch.cuda.is_available() is False here"
        return {v.key: why for v in gpu}
    free_b, total_b = torch.cuda.mem_get_info()
    needed = memory_needed_bytes(exp.scenario.catalog_size, exp.scenario.embedding_dim, item_tables(gpu))
    needed -= BASE_MEMORY_BYTES
    if needed > free_b:
        why = f"needs about {_gib(needed)} of GPU memory; {torch.cuda.get_device_name()} has {_gib(free_b)} free"
        return {v.key: why for v in gpu}
    return {}


def _main(args: argparse.Namespace) -> int:
    from rich.console import Console

    if args.ramp_seconds is not None and args.ramp_seconds < 1:
        raise UsageError(f"--ramp-seconds {args.ramp_seconds}: give at least 1")
    if args.hold_seconds is not None and args.hold_seconds < 0:
        raise UsageError(f"--hold-seconds {args.hold_seconds}: give 0 or more")
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: give a TCP port, 1 to 65535")
    exp = load_stack(args.stack)
    variants = select(exp, args.only)
    check_memory(exp, variants=variants)
    skips = gpu_skip_reasons(exp, variants)
    runner = LocalRun(exp, out=args.out, models_dir=args.models_dir or default_models_dir(), port=args.port,
                      ramp_seconds=args.ramp_seconds, hold_seconds=args.hold_seconds,
                      ready_timeout_s=args.ready_timeout_s,
                      console=Console(stderr=True, width=None if sys.stderr.isatty() else 200))
    outcomes = runner.run(variants, skips)
    print_table(exp, outcomes, Console(width=None if sys.stdout.isatty() else 200))
    print(f"results in {args.out}; next: etude report {args.out} --out results/report")
    if not any(o.status == "ok" for o in outcomes):
        return 1
    return 1 if any(o.status == "failed" for o in outcomes) else 0


CLEANUP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _interrupt_once(signum: int, frame: object) -> None:
    """The first Ctrl-C or SIGTERM interrupts the run; later ones are ignored so that the clean-up finishes."""
    for sig in CLEANUP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt


class LocalRun:
    """One `etude local` run of a stack: the child processes it started and where everything goes."""

    def __init__(self, exp: Experiment, *, out: str, models_dir: str, port: int, ramp_seconds: int | None,
                 hold_seconds: int | None, ready_timeout_s: float, console: Console) -> None:
        self.exp = exp
        self.out = out
        self.models_dir = models_dir
        self.port = port
        self.ramp_s = exp.scenario.ramp_seconds if ramp_seconds is None else ramp_seconds
        self.hold_s = exp.scenario.hold_seconds if hold_seconds is None else hold_seconds
        self.ready_timeout_s = ready_timeout_s
        self.console = console
        self.threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self.children = Children()

    def run(self, variants: Sequence[Variant], skips: dict[str, str]) -> list[Outcome]:
        """Every variant in turn. On Ctrl-C (or SIGTERM) the one running is marked interrupted and the rest stay
        "not run"; the table so far is printed, every child is stopped, and the KeyboardInterrupt goes on."""
        outcomes = [Outcome(v, "skipped", skips[v.key]) if v.key in skips else Outcome(v, "not run")
                    for v in variants]
        for o in outcomes:
            if o.status == "skipped":
                log.warning("skipping %s: %s", o.variant.key, o.reason)
        previous = {sig: signal.signal(sig, _interrupt_once) for sig in CLEANUP_SIGNALS}
        current: Outcome | None = None
        try:
            with self._display() as show:
                for i, outcome in enumerate(outcomes):
                    if outcome.status == "skipped":
                        continue
                    current = outcome
                    self._run_variant(outcome, f"{i + 1}/{len(outcomes)}", show)
                    current = None
        except KeyboardInterrupt:
            if current is not None:
                current.status, current.reason = "interrupted", "stopped by Ctrl-C"
                current.summary = self._read_summary(current)[0]
            print_table(self.exp, outcomes, self.console)
            raise
        finally:
            for sig in CLEANUP_SIGNALS:  # let the clean-up finish, whatever arrives
                signal.signal(sig, signal.SIG_IGN)
            try:
                self.children.stop_all(grace_s=5.0)
                self._write_record(outcomes)
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        return outcomes

    def _write_record(self, outcomes: Sequence[Outcome]) -> None:
        """local-run.json next to the variants' folders: what ran, what failed or was skipped, and why."""
        record = {
            "stack": self.exp.stack,
            "run_id": self.exp.run_id,
            "ramp_seconds": self.ramp_s,
            "hold_seconds": self.hold_s,
            "threads": self.threads,
            "variants": [{"variant": o.variant.key, "model": o.variant.model_label, "runtime": o.variant.runtime,
                          "instance_type": o.variant.instance_type, "status": o.status, "reason": o.reason,
                          "results": o.results} for o in outcomes],
        }
        uri = storage.join(commands.run_root(self.exp, self.out), LOCAL_RUN_FILE)
        try:
            storage.write_bytes(uri, json.dumps(record, indent=2).encode())
        except storage.StorageError as err:
            log.warning("could not write %s: %s", uri, err)

    # -- one variant -------------------------------------------------------------------------------------------
    def _run_variant(self, outcome: Outcome, position: str, show: Show) -> None:
        v, exp = outcome.variant, self.exp
        outcome.results = commands.results_uri(exp, v, self.out)
        logs = self._logs_dir(outcome.results)
        self._clear_previous(outcome.results, logs)
        model_file = v.local_model_file()  # a local modelUri or checkpoint; a relative path is the project folder's
        model_file_uri = None if model_file is None else str(model_file)
        uri = commands.model_uri(exp, v, self.models_dir, model_file_uri)
        log.info("variant %s %s: %s %s on %s", position, v.key, v.model_label, v.runtime, v.instance_type)
        if v.needs_export and not self._export(outcome, uri, model_file_uri, logs / "export.log"):
            return
        port = pick_port(self.port)
        server_cmd = etude_argv(commands.serve_command(v, uri, host="127.0.0.1", port=port, threads=self.threads))
        server = self.children.start("server", server_cmd, logs / "server.log")
        log.info("server for %s: pid %d, port %d, log %s", v.key, server.pid, port, server.log_path)
        base_url = f"http://127.0.0.1:{port}"
        try:
            try:
                took_s = wait_ready(base_url, server.proc, self.ready_timeout_s)
            except NotReady as err:
                self._fail(outcome, str(err), server.tail(LOG_TAIL_LINES), server.log_path)
                return
            log.info("server for %s ready after %.1f s", v.key, took_s)
            self._load(outcome, base_url, server, logs, position, show)
        finally:
            self.children.stop(server, SERVER_STOP_GRACE_S)

    def _export(self, outcome: Outcome, uri: str, checkpoint_uri: str | None, log_path: Path) -> bool:
        argv = etude_argv(commands.export_command(self.exp, outcome.variant, uri, checkpoint_uri))
        start_ns = time.perf_counter_ns()
        child = self.children.start("export", argv, log_path)
        try:
            rc: int | None = child.proc.wait(timeout=EXPORT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            rc = None
        self.children.stop(child, 5.0)
        if rc is None:
            self._fail(outcome, f"export did not finish within {EXPORT_TIMEOUT_S:.0f} s", child.tail(LOG_TAIL_LINES),
                       log_path)
            return False
        if rc != 0:
            self._fail(outcome, f"export failed with exit code {rc}", child.tail(LOG_TAIL_LINES), log_path)
            return False
        log.info("model for %s at %s (%.1f s)", outcome.variant.key, uri, (time.perf_counter_ns() - start_ns) / 1e9)
        return True

    def _load(self, outcome: Outcome, base_url: str, server: Child, logs: Path, position: str, show: Show) -> None:
        """Run the load generator(s) against the server: as many shards as Kubernetes would run (shard 0 merges
        their results), watched once a second for the progress display and for a dying server."""
        from etude.progress import MetricsProbe

        assert outcome.results is not None
        v = outcome.variant
        shards = commands.loadgen_shards(self.exp)
        probe = MetricsProbe(base_url)
        probe.baseline()
        loadgens = []
        workload_file = self.exp.scenario.workload.local_file()  # a relative path is the project folder's
        item_ids_file = v.local_item_ids()
        for i in range(shards):
            argv = etude_argv(commands.loadgen_command(
                self.exp, v, url=base_url, out=outcome.results, shard=None if shards == 1 else f"{i}/{shards}",
                ramp_seconds=self.ramp_s, hold_seconds=self.hold_s,
                workload_uri=None if workload_file is None else str(workload_file),
                item_ids_uri=None if item_ids_file is None else str(item_ids_file)))
            name = "loadgen" if shards == 1 else f"loadgen-{i}"
            loadgens.append(self.children.start(name, argv, logs / f"{name}.log"))
            log.info("load generator for %s: pid %d, log %s", v.key, loadgens[-1].pid, loadgens[-1].log_path)
        planned_s = self.ramp_s + self.hold_s
        limit_s = commands.run_duration_s(self.exp, self.ramp_s, self.hold_s) + RUN_MARGIN_S + self.ready_timeout_s
        start_ns = time.perf_counter_ns()
        server_died = timed_out = False
        try:
            while any(lg.running() for lg in loadgens):
                if not server.running():
                    server_died = True
                    break
                elapsed_s = (time.perf_counter_ns() - start_ns) / 1e9
                if elapsed_s > limit_s:
                    timed_out = True
                    break
                show(position, v.key, elapsed_s, planned_s, self._target_at(elapsed_s), probe.poll())
                try:
                    next(lg for lg in loadgens if lg.running()).proc.wait(timeout=1.0)
                except (subprocess.TimeoutExpired, StopIteration):
                    pass
        finally:  # also on Ctrl-C: the load generators write what they have (partial) before the server stops
            codes = [self.children.stop(lg, LOADGEN_STOP_GRACE_S) for lg in loadgens]
        summary, unreadable = self._read_summary(outcome)
        outcome.summary = summary
        failed = next((lg for lg, rc in zip(loadgens, codes, strict=True) if rc != 0), loadgens[0])
        if server_died:
            self._fail(outcome, f"the server exited with code {server.proc.returncode} during the run",
                       server.tail(LOG_TAIL_LINES), server.log_path)
        elif timed_out:
            self._fail(outcome, f"the load generator did not finish within {limit_s:.0f} s",
                       failed.tail(LOG_TAIL_LINES), failed.log_path)
        elif any(rc != 0 for rc in codes):
            self._fail(outcome, f"the load generator failed (exit code {failed.proc.returncode})",
                       failed.tail(LOG_TAIL_LINES), failed.log_path)
        elif summary is None:
            self._fail(outcome, f"the load generator finished but its results are unusable: {unreadable}",
                       failed.tail(LOG_TAIL_LINES), failed.log_path)
        else:
            outcome.status = "ok"
            log.info("variant %s done: results in %s", v.key, outcome.results)

    def _target_at(self, elapsed_s: float) -> int:
        from etude.loadgen.schedule import rate_at

        return rate_at(elapsed_s, self.exp.scenario.target_rps, self.ramp_s, self.hold_s)

    # -- helpers -----------------------------------------------------------------------------------------------
    def _fail(self, outcome: Outcome, reason: str, log_tail: str, log_path: Path) -> None:
        outcome.status = "failed"
        outcome.reason = f"{reason}; last lines of {log_path}:\n{log_tail}" if log_tail else reason
        log.error("variant %s failed: %s", outcome.variant.key, outcome.reason)

    def _read_summary(self, outcome: Outcome) -> tuple[Summary | None, str]:
        """The variant's summary, or None and why there is none."""
        if outcome.results is None:
            return None, "no results folder"
        uri = storage.join(outcome.results, SUMMARY_FILE)
        try:
            return Summary.model_validate_json(storage.read_bytes(uri)), ""
        except storage.StorageError as err:
            return None, str(err)
        except ValidationError as err:  # not JSON, or not a summary
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in err.errors()[:3])
            return None, f"{uri} is not a load-generator summary ({problems})"

    def _logs_dir(self, results: str) -> Path:
        if storage.is_gcs(results):
            return Path(tempfile.gettempdir(), "etude-local", *storage.split_gcs(results))
        return Path(results)

    def _clear_previous(self, results: str, logs: Path) -> None:
        """A stale summary from an earlier run must not pass for this one's (local folders only)."""
        for path in [logs / "export.log", logs / "server.log", *logs.glob("loadgen*.log")]:
            path.unlink(missing_ok=True)
        if not storage.is_gcs(results):
            for name in (SUMMARY_FILE, REQUESTS_FILE, TIMELINE_FILE):
                Path(results, name).unlink(missing_ok=True)

    @contextmanager
    def _display(self) -> Iterator[Show]:
        """A `show(position, key, elapsed_s, planned_s, target, live)` callable: a live progress bar on a
        terminal, a log line every few seconds otherwise."""
        if not self.console.is_terminal:
            last_ns = [0]

            def log_line(position: str, key: str, elapsed_s: float, planned_s: int, target: int, live: Live) -> None:
                now = time.perf_counter_ns()
                if now - last_ns[0] >= LOG_EVERY_S * 1e9:
                    last_ns[0] = now
                    log.info("variant %s %s: %.0f/%d s, target ~%d rps, %s", position, key, elapsed_s, planned_s,
                             target, _live_text(live))

            yield log_line
            return
        from rich.logging import RichHandler
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(TextColumn("[bold]variant {task.fields[position]}[/] {task.description}"), BarColumn(),
                            TextColumn("{task.completed:.0f}/{task.total:.0f} s"), TimeElapsedColumn(),
                            TextColumn("{task.fields[live]}"), console=self.console, transient=False)
        tasks: dict[str, TaskID] = {}

        def update(position: str, key: str, elapsed_s: float, planned_s: int, target: int, live: Live) -> None:
            if key not in tasks:
                tasks[key] = progress.add_task(key, total=planned_s, position=position, live="")
            progress.update(tasks[key], completed=min(elapsed_s, planned_s),
                            live=f"target ~{target} rps, {_live_text(live)}")

        root = logging.getLogger()
        plain = [h for h in root.handlers if type(h) is logging.StreamHandler]
        rich_handler = RichHandler(console=self.console, show_path=False)
        for h in plain:
            root.removeHandler(h)
        root.addHandler(rich_handler)
        try:
            with progress:
                yield update
        finally:
            root.removeHandler(rich_handler)
            for h in plain:
                root.addHandler(h)


def _live_text(live: Live) -> str:
    rate = "-" if live.rate_rps is None else f"{live.rate_rps:.0f}"
    p90 = "-" if live.p90_ms is None else f"{live.p90_ms:.1f} ms"
    errors = "-" if live.errors is None else str(live.errors)
    return f"rate {rate} rps, p90 {p90} (server, last 5 s), errors {errors}"


def _capacity_text(s: Summary | None) -> str:
    """The run's `capacity_rps` (docs/design.md), with the repeats' spread when there were repeats."""
    if s is None or s.capacity_rps is None:
        return "-"
    text = f"{s.capacity_rps:.0f}"
    return text if s.capacity_spread is None else f"{text} (spread {100 * s.capacity_spread:.0f} %)"


def print_table(exp: Experiment, outcomes: Sequence[Outcome], console: Console) -> None:
    from rich.table import Table

    sc = exp.scenario
    table = Table(title=f"etude local: {exp.stack}, C = {sc.catalog_size:,}, target {sc.target_rps:,} rps, "
                  f"SLO p{sc.slo.percentile:g} <= {sc.slo.latency_ms:g} ms")
    for name, justify in (("variant", "left"), ("status", "left"), ("p50 ms", "right"), ("p90 ms", "right"),
                          ("p99 ms", "right"), ("achieved rps", "right"), ("capacity rps", "right"),
                          ("SLO met", "center"), ("note", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for o in outcomes:
        s = o.summary
        lat = s.latency_ms if s else None
        cells = [f"{x:.1f}" if x is not None else "-" for x in (lat and lat.p50, lat and lat.p90, lat and lat.p99)]
        note = o.reason
        if s is not None and s.partial:
            note = "partial results" + (f"; {note}" if note else "")
        table.add_row(o.variant.key, o.status, *cells, f"{s.achieved_rps:.1f}" if s else "-",
                      _capacity_text(s), ("yes" if s.slo_met else "no") if s else "-",
                      note)
    console.print(table)
