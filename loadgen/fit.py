"""Real click logs: reading them, and fitting the two power laws of Algorithm 1 to them (`etude fit`).

A click log is CSV (`.csv`, `.csv.gz`, `.tsv`) or Parquet (`.parquet`, `.pq`), a local path or `gs://`, with
columns `session_id` and `item_id` (any type) and optionally `timestamp` (numbers or date-times).

Fitting follows Clauset, Shalizi and Newman (2009), "Power-law distributions in empirical data", for a discrete
power law truncated to the observed maximum: for each candidate x_min the exponent is the maximum-likelihood
estimate of p(x) = x^-alpha / Z(alpha) on the integers [x_min, x_max], Z(alpha) = sum of x^-alpha over that
range, and the x_min kept is the one whose fitted law is closest to the data in Kolmogorov-Smirnov distance.
Details: candidates are the distinct observed values with at least MIN_TAIL observations and MIN_DISTINCT
distinct values at or above them (a tail of two or three values fits any one-parameter law perfectly); at most
MAX_CANDIDATES of them, log-spaced, dense at small values; all the data when no value qualifies. The
log-likelihood is concave in alpha, so a golden-section search on [0.01, 10] finds its maximum, for all
candidates at once. Z is a short exact sum plus an Euler-Maclaurin tail, accurate to ~1e-12 relative, so a fit
costs O(distinct values), not O(x_max).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from etude.errors import UsageError

COLUMNS = ("session_id", "item_id")
CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
MIN_TAIL = 50
MIN_DISTINCT = 10
MAX_CANDIDATES = 100
ALPHA_BOUNDS = (0.01, 10.0)
DECAY_BOUNDS = (1e-6, 30.0)
_HEAD_TERMS = 32
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class ClickLog:
    """One row per click: session code (dense int), item id (as in the file), timestamp or None."""

    session_codes: np.ndarray
    item_ids: np.ndarray
    timestamps: np.ndarray | None

    def __len__(self) -> int:
        return len(self.session_codes)

    def session_lengths(self) -> np.ndarray:
        return np.bincount(self.session_codes)

    def item_clicks(self) -> np.ndarray:
        """Click count of every distinct item."""
        return np.unique(self.item_ids, return_counts=True)[1]

    def item_ranks(self) -> np.ndarray:
        """Per row: the item's popularity rank (0 = most clicked; ties broken by item id)."""
        _, inverse, counts = np.unique(self.item_ids, return_inverse=True, return_counts=True)
        by_popularity = np.lexsort((np.arange(len(counts)), -counts))
        rank = np.empty(len(counts), dtype=np.int64)
        rank[by_popularity] = np.arange(len(counts))
        return rank[inverse.ravel()]

    def replay_order(self) -> np.ndarray:
        """Row order that replays sessions by first click time, each session's clicks by time (file order on ties)."""
        rows = np.arange(len(self))
        if self.timestamps is None:
            first = np.full(self.session_codes.max() + 1, len(self))
            np.minimum.at(first, self.session_codes, rows)
            return np.lexsort((rows, first[self.session_codes]))
        start = np.full(self.session_codes.max() + 1, np.inf)
        np.minimum.at(start, self.session_codes, self.timestamps)
        return np.lexsort((rows, self.timestamps, self.session_codes, start[self.session_codes]))


def read_clicklog(path: str) -> ClickLog:
    """Read and check a click log; UsageError naming the file and the problem when it cannot be used."""
    import pyarrow as pa

    table = _read_table(path)
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise UsageError(f"{path}: missing column(s) {', '.join(missing)}; found: {', '.join(table.column_names)}")
    if table.num_rows == 0:
        raise UsageError(f"{path}: no clicks (the file has a header but no rows)")
    wanted = [*COLUMNS, *(["timestamp"] if "timestamp" in table.column_names else [])]
    for name in wanted:
        nulls = table.column(name).null_count
        if nulls:
            raise UsageError(f"{path}: {nulls} empty value(s) in column {name}")
    sessions = _as_numpy(table.column("session_id"))
    items = _as_numpy(table.column("item_id"))
    timestamps = None
    if "timestamp" in table.column_names:
        col = table.column("timestamp")
        if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
            col = col.cast(pa.timestamp("us")).cast(pa.int64())
        elif not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
            raise UsageError(f"{path}: column timestamp must hold numbers or date-times, found {col.type}")
        timestamps = col.to_numpy().astype(np.float64)
    session_codes = np.unique(sessions, return_inverse=True)[1].ravel().astype(np.int64)
    return ClickLog(session_codes=session_codes, item_ids=items, timestamps=timestamps)


def _read_table(path: str) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from etude import storage

    name = path.lower()
    if not name.endswith(CSV_SUFFIXES + PARQUET_SUFFIXES):
        raise UsageError(f"{path}: unknown click log format; use {', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}")
    try:
        if storage.is_gcs(path):
            source: Any = pa.BufferReader(storage.read_bytes(path))
            if name.endswith(".gz"):
                source = pa.CompressedInputStream(source, "gzip")
        else:
            if not Path(path).is_file():
                raise UsageError(f"{path}: no such file")
            source = path
        if name.endswith(PARQUET_SUFFIXES):
            return pq.read_table(source)
        delimiter = "\t" if ".tsv" in name else ","
        return pacsv.read_csv(source, parse_options=pacsv.ParseOptions(delimiter=delimiter))
    except UsageError:
        raise
    except (pa.ArrowException, OSError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UsageError(f"cannot read click log {path}: {reason}") from err


def _as_numpy(column: Any) -> np.ndarray:
    import pyarrow as pa

    if pa.types.is_integer(column.type):
        return np.asarray(column.to_numpy(), dtype=np.int64)
    return np.asarray(column.cast(pa.string()).to_numpy(zero_copy_only=False), dtype=object)


# --- the fit ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PowerLawFit:
    alpha: float
    x_min: int
    x_max: int
    ks: float
    n_tail: int

    def as_dict(self) -> dict[str, float | int]:
        return {"alpha": round(self.alpha, 4), "x_min": self.x_min, "x_max": self.x_max, "ks": round(self.ks, 4)}


def power_sum(alpha: Any, a: Any, b: Any) -> np.ndarray:
    """Sum of x^-alpha over the integers [a, b] (0 where a > b), elementwise over broadcast arrays; a >= 1."""
    alpha, a, b = np.broadcast_arrays(np.asarray(alpha, float), np.asarray(a, float), np.asarray(b, float))
    x = a[..., None] + np.arange(_HEAD_TERMS)
    head = np.where(x <= b[..., None], np.exp(-alpha[..., None] * np.log(x)), 0.0).sum(axis=-1)
    m = a + _HEAD_TERMS  # Euler-Maclaurin for the rest, [m, b], where m <= b
    has_tail = m <= b
    m, bb, al = np.where(has_tail, m, 1.0), np.where(has_tail, b, 1.0), np.where(has_tail, alpha, 1.0)
    s = 1.0 - al
    log_ratio = np.log(bb / m)
    with np.errstate(divide="ignore", invalid="ignore"):
        integral = np.where(np.abs(s) < 1e-12, log_ratio, np.expm1(s * log_ratio) / s) * m**s
    f = lambda x: x**-al  # noqa: E731
    d1 = lambda x: -al * x ** (-al - 1)  # noqa: E731
    d3 = lambda x: -al * (al + 1) * (al + 2) * x ** (-al - 3)  # noqa: E731
    d5 = lambda x: -al * (al + 1) * (al + 2) * (al + 3) * (al + 4) * x ** (-al - 5)  # noqa: E731
    tail = (integral + (f(m) + f(bb)) / 2 + (d1(bb) - d1(m)) / 12 - (d3(bb) - d3(m)) / 720
            + (d5(bb) - d5(m)) / 30240)  # fmt: skip
    return np.asarray(head + np.where(has_tail, tail, 0.0))


def fit_power_law(values: np.ndarray, what: str = "values", max_x_min: int | None = None) -> PowerLawFit:
    """Discrete truncated power-law fit with x_min chosen by KS distance (see the module docstring); x_min is at
    most `max_x_min` when given."""
    uniq, cnt, n_tail, cands = _tail_candidates(values, what, max_x_min)
    x_max = int(uniq[-1])
    log_tail = np.cumsum((cnt * np.log(uniq))[::-1])[::-1]
    alphas = _mle(uniq[cands].astype(float), log_tail[cands] / n_tail[cands], float(x_max))
    best: PowerLawFit | None = None
    for i, alpha in zip(cands.tolist(), alphas.tolist(), strict=True):
        ks = _ks(alpha, uniq[i:], cnt[i:], x_max)
        if best is None or ks < best.ks:
            best = PowerLawFit(alpha=alpha, x_min=int(uniq[i]), x_max=x_max, ks=ks, n_tail=int(n_tail[i]))
    assert best is not None
    return best


@dataclass(frozen=True)
class GeometricFit:
    """Discrete truncated exponential (geometric) tail: p(x) proportional to exp(-decay * x) on [x_min, x_max]."""

    decay: float
    x_min: int
    x_max: int
    ks: float
    n_tail: int


def fit_geometric(values: np.ndarray, what: str = "values", max_x_min: int | None = None) -> GeometricFit:
    """Maximum-likelihood geometric tail, x_min chosen by KS distance on the same candidates as the power law."""
    uniq, cnt, n_tail, cands = _tail_candidates(values, what, max_x_min)
    x_max = int(uniq[-1])
    sum_tail = np.cumsum((cnt * uniq.astype(float))[::-1])[::-1]
    x_min = uniq[cands].astype(float)
    decays = _mle_geometric(sum_tail[cands] / n_tail[cands] - x_min, x_max - x_min + 1)
    best: GeometricFit | None = None
    for i, decay in zip(cands.tolist(), decays.tolist(), strict=True):
        ks = _ks_cdf(lambda u, d=decay, lo=int(uniq[i]): geometric_cdf(d, lo, x_max, u), uniq[i:], cnt[i:])
        if best is None or ks < best.ks:
            best = GeometricFit(decay=decay, x_min=int(uniq[i]), x_max=x_max, ks=ks, n_tail=int(n_tail[i]))
    assert best is not None
    return best


def geometric_cdf(decay: float, x_min: int, x_max: int, u: np.ndarray) -> np.ndarray:
    """P(X <= u) of the truncated geometric law on [x_min, x_max] (u >= x_min - 1)."""
    out: np.ndarray = np.expm1(-decay * (np.asarray(u, float) - x_min + 1)) / np.expm1(-decay * (x_max - x_min + 1))
    return out


def _tail_candidates(
    values: np.ndarray, what: str, max_x_min: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(distinct values, their counts, observations at or above each, indices of the x_min candidates)."""
    values = np.asarray(values, dtype=np.int64)
    if values.size == 0 or values.min() < 1:
        raise UsageError(f"cannot fit {what}: need positive counts")
    uniq, cnt = np.unique(values, return_counts=True)
    if len(uniq) < 2:
        raise UsageError(f"cannot fit {what}: all {values.size} values are {uniq[0]}, no power law to fit")
    n_tail = np.cumsum(cnt[::-1])[::-1]  # observations >= uniq[i]
    ok = n_tail[: len(uniq) - MIN_DISTINCT + 1] >= MIN_TAIL
    if max_x_min is not None:
        ok &= uniq[: len(ok)] <= max_x_min
    cands = np.flatnonzero(ok)
    if cands.size == 0:
        cands = np.array([0])
    if cands.size > MAX_CANDIDATES:
        cands = cands[np.unique(np.geomspace(1, cands.size, MAX_CANDIDATES).round().astype(int) - 1)]
    return uniq, cnt, n_tail, cands


def _mle(x_min: np.ndarray, mean_log: np.ndarray, x_max: float) -> np.ndarray:
    """Per candidate: argmax of the mean log-likelihood -alpha * mean(log x) - log Z(alpha), golden section."""

    def loglik(alpha: np.ndarray) -> np.ndarray:
        return np.asarray(-alpha * mean_log - np.log(power_sum(alpha, x_min, x_max)))

    return _golden_max(loglik, np.full_like(x_min, ALPHA_BOUNDS[0]), np.full_like(x_min, ALPHA_BOUNDS[1]))


def _mle_geometric(mean_excess: np.ndarray, span: np.ndarray) -> np.ndarray:
    """Per candidate: the decay d maximising -d * mean(x - x_min) + log(1 - e^-d) - log(1 - e^(-d * span)), the
    mean log-likelihood of the truncated geometric law (concave in d: an exponential family), golden section."""

    def loglik(d: np.ndarray) -> np.ndarray:
        out: np.ndarray = -d * mean_excess + np.log(-np.expm1(-d)) - np.log(-np.expm1(-d * span))
        return out

    return _golden_max(loglik, np.full_like(mean_excess, DECAY_BOUNDS[0]), np.full_like(mean_excess, DECAY_BOUNDS[1]))


def _golden_max(f: Any, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Elementwise argmax of a concave `f` on [lo, hi] by golden-section search."""
    c, d = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
    fc, fd = f(c), f(d)
    for _ in range(64):  # shrinks the bracket by 0.618^64 ~ 1e-13
        left = fc >= fd  # the maximum lies in [lo, d]
        hi = np.where(left, d, hi)
        lo = np.where(left, lo, c)
        new = np.where(left, hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo))
        fnew = f(new)
        c, d, fc, fd = (np.where(left, new, d), np.where(left, c, new),
                        np.where(left, fnew, fd), np.where(left, fc, fnew))  # fmt: skip
    return np.asarray((lo + hi) / 2)


def _ks(alpha: float, uniq: np.ndarray, cnt: np.ndarray, x_max: int) -> float:
    """KS distance of the power law with exponent `alpha` on [uniq[0], x_max] to the tail `uniq` with counts `cnt`."""
    z = power_sum(alpha, uniq[0], x_max)
    return _ks_cdf(lambda u: 1.0 - power_sum(alpha, u + 1, x_max) / z, uniq, cnt)


def _ks_cdf(model_cdf: Any, uniq: np.ndarray, cnt: np.ndarray) -> float:
    """Sup over integers x of |empirical CDF - model CDF| for the tail `uniq` (distinct values) with counts `cnt`;
    `model_cdf(u)` is P(X <= u) elementwise."""
    model_at = model_cdf(uniq)  # P(X <= u)
    model_before = model_cdf(uniq - 1)  # P(X <= u - 1)
    empirical = np.cumsum(cnt) / cnt.sum()
    empirical_before = np.concatenate(([0.0], empirical[:-1]))
    return float(max(np.abs(empirical - model_at).max(), np.abs(empirical_before - model_before).max()))


def fit_clicklog(path: str) -> dict[str, Any]:
    """The JSON `etude fit` prints: both fits and the size of the log."""
    return summary(read_clicklog(path))


def summary(log: ClickLog) -> dict[str, Any]:
    """Both power-law fits and the size of `log`."""
    lengths = log.session_lengths()
    clicks = log.item_clicks()
    return {
        "session_length": fit_power_law(lengths, "session lengths").as_dict(),
        "item_clicks": fit_power_law(clicks, "item click counts").as_dict(),
        "sessions": int(len(lengths)),
        "clicks": int(len(log)),
        "items": int(len(clicks)),
    }
