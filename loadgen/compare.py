"""A click log beside the synthetic workload fitted to it (`etude fit CLICKLOG --compare`): the shape of both
marginals in numbers, and a log-log plot of their complementary CDFs.

Percentiles are nearest-rank over sessions; the KS distance is the two-sample statistic over session lengths;
the share of the top q of items is the share of all clicks that go to the ceil(q x C) most clicked items of
the catalog of C items (an item never clicked counts as 0 clicks); items clicked is the number with >= 1 click.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from etude.loadgen.workload import Law

TOP_SHARES = (0.01, 0.10, 0.50)


def nearest_rank(sorted_values: np.ndarray, percentile: float) -> int:
    """The nearest-rank percentile of ascending `sorted_values`."""
    rank = max(1, math.ceil(percentile / 100.0 * len(sorted_values)))
    return int(sorted_values[rank - 1])


def shape(lengths: np.ndarray, item_clicks: np.ndarray, catalog_size: int) -> dict[str, float | int]:
    """The figures of one log: session lengths (one per session) and click counts (one per clicked item)."""
    lengths = np.sort(np.asarray(lengths, dtype=np.int64))
    counts = np.sort(np.asarray(item_clicks, dtype=np.int64))[::-1]
    clicks = int(counts.sum())
    row: dict[str, float | int] = {
        "clicks": clicks,
        "sessions": int(len(lengths)),
        "mean_length": round(float(lengths.mean()), 4),
        "median_length": nearest_rank(lengths, 50),
        "p90_length": nearest_rank(lengths, 90),
        "p99_length": nearest_rank(lengths, 99),
        "max_length": int(lengths[-1]),
    }
    cum = np.cumsum(counts)
    for q in TOP_SHARES:
        top = min(math.ceil(q * catalog_size), len(counts))
        row[f"top_{round(q * 100)}pct_share"] = round(float(cum[top - 1]) / clicks, 4) if top else 0.0
    row["items_clicked"] = int(np.count_nonzero(counts))
    row["catalog_size"] = catalog_size
    return row


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic of integer samples `a` and `b`."""
    a, b = np.sort(a), np.sort(b)
    at = np.union1d(a, b)
    fa = np.searchsorted(a, at, side="right") / len(a)
    fb = np.searchsorted(b, at, side="right") / len(b)
    return float(np.abs(fa - fb).max())


def side_by_side(
    real: tuple[np.ndarray, np.ndarray], synthetic: tuple[np.ndarray, np.ndarray], catalog_size: int
) -> dict[str, object]:
    """{"real": shape, "synthetic": shape, "session_length_ks": KS} for (lengths, item clicks) of each."""
    return {
        "real": shape(*real, catalog_size),
        "synthetic": shape(*synthetic, catalog_size),
        "session_length_ks": round(ks_distance(real[0], synthetic[0]), 4),
    }


def synthetic_marginals(
    laws: tuple[Law, Law], clicks: int, catalog_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(session lengths, per-item click counts of the items clicked) of `clicks` synthetic clicks of a
    `SyntheticWorkload` built from `laws` = (session length law, item clicks law)."""
    from etude.loadgen.workload import SyntheticWorkload

    synthetic = SyntheticWorkload(catalog_size, laws[0], laws[1], seed)
    sessions, items = [], []
    for session_ids, item_ids, _ in synthetic.clicks(clicks):
        sessions.append(session_ids)
        items.append(item_ids)
    lengths = np.bincount(np.concatenate(sessions))[1:]
    counts = np.bincount(np.concatenate(items), minlength=catalog_size)
    return lengths, counts[counts > 0]


def ccdf_plot(
    real: tuple[np.ndarray, np.ndarray], synthetic: tuple[np.ndarray, np.ndarray], title: str, path: Path
) -> None:
    """Log-log P(X >= x) of session lengths and of per-item click counts, real beside synthetic (PNG)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    from etude.plots import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, index, label in ((axes[0], 0, "session length (clicks)"), (axes[1], 1, "clicks per item")):
        for values, name, style in ((real[index], "real", "o"), (synthetic[index], "synthetic", "-")):
            x, ccdf = _ccdf(values)
            if style == "o":
                ax.plot(x, ccdf, "o", markersize=3, label=name, alpha=0.7)
            else:
                ax.step(x, ccdf, where="post", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel("P(X >= x)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ccdf(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniq, cnt = np.unique(values, return_counts=True)
    at_least = cnt[::-1].cumsum()[::-1] / cnt.sum()
    return uniq, at_least
