"""PNG figures of the report (matplotlib, Agg backend, imported inside the functions):

- `latency_throughput`: one run over time, latency p50/p90/p99 with the SLO line and the first violation, and
  achieved vs target throughput (the paper's Fig. 4);
- `infrastructure_test`: servers without model side by side, p90 over time and errors (the paper's Fig. 2);
- `microbench`: serial latency vs catalog size, log-log, per model x runtime x device (the paper's Fig. 3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from etude.resultset import RunResult

Timeline = dict[str, list[float]]


def first_violation(timeline: Timeline) -> int | None:
    """The first second the load generator marked as violating the SLO (`slo_violated`); None when none did."""
    for second, violated in zip(timeline["second"], timeline["slo_violated"], strict=True):
        if violated:
            return int(second)
    return None


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _log_ms_axis(ax: Any) -> None:
    """A log scale labelled with plain numbers (0.5, 2, 50) rather than powers of ten."""
    from matplotlib.ticker import FuncFormatter

    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))


def _positive(values: list[float]) -> list[float]:
    """Latencies for a log axis: NaN (no answers that second) and non-positive values are gaps."""
    return [v if v > 0 else float("nan") for v in values]


def latency_throughput(run: RunResult, timeline: Timeline, path: Path) -> int | None:
    """Fig. 4 for one run; returns the first violating second (None when the SLO held throughout)."""
    plt = _pyplot()
    spec = run.summary.spec
    violation = first_violation(timeline)
    seconds = timeline["second"]
    fig, (ax_lat, ax_rps) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    for column, style in (("p50_ms", ":"), ("p90_ms", "-"), ("p99_ms", "--")):
        ax_lat.plot(seconds, _positive(timeline[column]), style, label=column.removesuffix("_ms"))
    ax_lat.axhline(spec.slo_ms, color="tab:red", linewidth=1,
                   label=f"SLO p{spec.slo_percentile:g} <= {spec.slo_ms:g} ms")
    _log_ms_axis(ax_lat)
    ax_lat.set_ylabel("latency per second (ms)")
    ax_rps.plot(seconds, timeline["target_rps"], color="tab:gray", linestyle="--", linewidth=2.5, label="target rps")
    achieved = timeline.get("ok", timeline.get("completed"))
    if achieved is not None:
        ax_rps.plot(seconds, achieved, color="tab:blue", linewidth=1.2, label="achieved rps (ok answers)")
    ax_rps.set_ylim(bottom=0)
    if "errors" in timeline and any(e > 0 for e in timeline["errors"] if not math.isnan(e)):
        ax_rps.bar(seconds, timeline["errors"], color="tab:red", alpha=0.5, width=1.0, label="errors")
    if "held_back" in timeline and any(h > 0 for h in timeline["held_back"] if not math.isnan(h)):
        ax_rps.plot(seconds, timeline["held_back"], color="tab:orange", linewidth=1, label="held back")
    ax_rps.set_ylabel("requests per second")
    ax_rps.set_xlabel("second of the run")
    for ax in (ax_lat, ax_rps):
        if spec.hold_seconds > 0 and seconds and seconds[-1] >= spec.ramp_seconds:
            ax.axvspan(spec.ramp_seconds - 0.5, seconds[-1] + 0.5, color="tab:green", alpha=0.07,
                       label="hold at target" if ax is ax_rps else None)
        if violation is not None:
            ax.axvline(violation, color="tab:red", linestyle="-.", linewidth=1,
                       label=f"first SLO violation (s {violation})" if ax is ax_lat else None)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", fontsize="small")
    where = "this machine" if run.measured_locally else "cluster"
    fig.suptitle(f"{run.stack} / {run.label}: {spec.model} {spec.runtime} on {spec.replicas}x "
                 f"{spec.instance_type} ({where}), C = {spec.catalog_size:,}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return violation


def infrastructure_test(runs: Sequence[tuple[RunResult, Timeline]], path: Path) -> None:
    """Fig. 2: one column per server (noop model vs TorchServe), p90 over time and errors per second."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 4.2), sharey=True, squeeze=False)
    top_errors = max((e for _, t in runs for e in t.get("errors", []) if not math.isnan(e)), default=0.0)
    for ax, (run, timeline) in zip(axes[0], runs, strict=True):
        ax.plot(timeline["second"], _positive(timeline["p90_ms"]), color="tab:blue", label="p90 latency")
        _log_ms_axis(ax)
        ax.set_xlabel("second of the run")
        ax.set_title(run.label)
        ax.grid(True, alpha=0.3)
        errors_ax = ax.twinx()
        errors_ax.bar(timeline["second"], timeline.get("errors", [0.0] * len(timeline["second"])),
                      color="tab:red", alpha=0.4, width=1.0, label="errors per second")
        errors_ax.set_ylabel("errors per second")
        errors_ax.set_ylim(0, max(1.0, top_errors * 1.1))
        lines = ax.get_legend_handles_labels()
        bars = errors_ax.get_legend_handles_labels()
        ax.legend(lines[0] + bars[0], lines[1] + bars[1], loc="upper left", fontsize="small")
    axes[0][0].set_ylabel("p90 latency per second (ms)")
    fig.suptitle("Infrastructure test: servers without model inference")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def microbench(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Fig. 3: p90 latency of serial requests vs catalog size, log-log; a panel per model, a line per runtime
    (and device, when the rows hold several)."""
    import math

    plt = _pyplot()
    names = sorted({row["model"] for row in rows})
    devices = sorted({row["device"] for row in rows})
    cols = min(4, len(names))
    nrows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.6 * nrows), squeeze=False, sharex=True)
    styles = {"python": "^:", "eager": "o--", "jit": "s-", "aot": "d-", "bf16": "v-", "int8": "<-", "onnx": "p-",
              "ann": "*-"}
    for ax, name in zip(axes.flat, names, strict=False):
        series: dict[tuple[str, str], list[tuple[int, float]]] = {}
        for row in rows:
            if row["model"] == name:
                series.setdefault((row["runtime"], row["device"]), []).append((row["catalog_size"], row["p90_ms"]))
        for (runtime, device), points in sorted(series.items()):
            label = runtime if len(devices) == 1 else f"{runtime} {device}"
            ax.plot(*zip(*sorted(points), strict=True), styles.get(runtime, "x-"), label=label, markersize=4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("catalog size")
    for ax in axes[:, 0]:
        ax.set_ylabel("p90 latency (ms)")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"Serial inference latency vs catalog size ({', '.join(devices)})", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
