"""Synthetic click workload (paper Algorithm 1) and replay of a real click log.

Algorithm 1 needs two laws: session lengths and per-item click counts, both discrete truncated power laws
p(x) proportional to x^-alpha on the integers [x_min, x_max]. It samples C click counts once (one per item),
then draws every session's length from the length law and its items by inverse-transform sampling from the
CDF of those C counts: item i is clicked with probability counts[i] / sum(counts).

Laws and supports
- Exponent mode (`--alpha-length A --alpha-clicks B`, 0 < alpha <= 10): session lengths on [1, 200]
  (`SESSION_LENGTH_SUPPORT`), item click counts on [1, 100000] (`ITEM_CLICKS_SUPPORT`).
- Presets reproduce the fits in docs/design.md ("Workload presets"), `scipy.stats.powerlaw(a, loc, scale)` with
  density proportional to (t - loc)^-(1 - a) on [loc, loc + scale]. A click count or session length is an
  integer, so the preset law is the integer part of a draw from that fit (`BinnedPowerLaw`): P(k) = F(k + 1) - F(k) with
  F(t) = ((t - loc) / scale)^a, on [loc, loc + scale - 1]. The integer part (rather than the ceiling) keeps
  the fit's mass at the observed minimum (loc) where the fit puts it; its tail is a power law with
  exponent alpha = 1 - a. A plain x^-(1 - a) law would not reproduce the fit: for bol.com session lengths it
  puts 13% of the sessions at length 2 where the fit puts 67%.

Speed: the C counts are drawn as a histogram (`rng.multinomial`, the same law as C independent draws) and
items are grouped by count (a random permutation keeps popularity uncorrelated with item id), so the CDF of
the C counts is piecewise linear per group: a draw finds its group through a guide table (indexed search,
Chen and Asau 1974) and its item by linear interpolation. That is inverse-transform sampling on the same CDF
(exact up to float64 rounding of u * sum(counts): under 1e-4 of an item's probability while sum(counts) < 1e12),
with one random memory access into an O(C) array per click; nothing is O(N).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from etude.errors import UsageError

MAX_ALPHA = 10.0
SESSION_LENGTH_SUPPORT = (1, 200)
ITEM_CLICKS_SUPPORT = (1, 100_000)
MAX_SUPPORT_SIZE = 10_000_000
# Sessions per internal block: a block is generated at once, vectorised; streams are cut from blocks.
BLOCK_SESSIONS = 1 << 14


@dataclass(frozen=True)
class PowerLaw:
    """Discrete truncated power law: p(x) proportional to x^-alpha on the integers [x_min, x_max]."""

    alpha: float
    x_min: int
    x_max: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.alpha) and 0.0 < self.alpha <= MAX_ALPHA):
            raise UsageError(f"power-law exponent alpha={self.alpha} is out of range; supported: 0 < alpha <= 10")
        if not 1 <= self.x_min <= self.x_max:
            raise UsageError(f"power-law support [{self.x_min}, {self.x_max}] must satisfy 1 <= x_min <= x_max")
        if self.x_max - self.x_min + 1 > MAX_SUPPORT_SIZE:
            raise UsageError(f"power-law support [{self.x_min}, {self.x_max}] has more than {MAX_SUPPORT_SIZE} values")

    def support(self) -> np.ndarray:
        return np.arange(self.x_min, self.x_max + 1, dtype=np.int64)

    def weights(self) -> np.ndarray:
        """Unnormalised probabilities over `support()`."""
        return np.exp(-self.alpha * np.log(self.support().astype(np.float64)))

    @cached_property
    def _cdf(self) -> np.ndarray:
        cdf = np.cumsum(self.weights())
        cdf /= cdf[-1]
        cdf[-1] = 1.0
        cdf.setflags(write=False)
        return cdf

    def cdf(self) -> np.ndarray:
        """P(X <= x) for x in `support()`."""
        return self._cdf

    def pmf(self) -> np.ndarray:
        return np.diff(self._cdf, prepend=0.0)

    def mean(self) -> float:
        return float(self.pmf() @ self.support())

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` independent draws (int64) by inverse-transform sampling over the finite support."""
        return self.x_min + np.searchsorted(self._cdf, rng.random(n), side="right").astype(np.int64)


@dataclass(frozen=True)
class BinnedPowerLaw(PowerLaw):
    """Integer part of a continuous power law with density proportional to (t - x_min)^-alpha on [x_min, x_max + 1).

    That is `floor(X)` for X ~ `scipy.stats.powerlaw(a=1 - alpha, loc=x_min, scale=x_max - x_min + 1)`, the
    form of the fitted statistics in docs/design.md ("Workload presets"); needs alpha < 1. Its tail decays as x^-alpha.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alpha >= 1.0:
            raise UsageError(f"a binned power law needs alpha < 1, got {self.alpha}")

    @classmethod
    def from_scipy(cls, a: float, loc: int, scale: int) -> BinnedPowerLaw:
        return cls(alpha=1.0 - a, x_min=loc, x_max=loc + scale - 1)

    @property
    def scipy_params(self) -> tuple[float, int, int]:
        """(a, loc, scale) of the `scipy.stats.powerlaw` this law discretises."""
        return 1.0 - self.alpha, self.x_min, self.x_max - self.x_min + 1

    @cached_property
    def _cdf(self) -> np.ndarray:
        a, loc, scale = self.scipy_params
        cdf = ((self.support() - loc + 1) / scale) ** a  # F(k + 1), exact, no cumulative rounding
        cdf[-1] = 1.0
        cdf.setflags(write=False)
        return cdf

    def weights(self) -> np.ndarray:
        return self.pmf()


# (session length, item clicks) per preset: the scipy.stats.powerlaw(a, loc, scale) fits (docs/design.md).
PRESETS: dict[str, tuple[PowerLaw, PowerLaw]] = {
    "bolcom": (BinnedPowerLaw.from_scipy(0.07004, 2, 277), BinnedPowerLaw.from_scipy(0.04069, 1, 2335)),
    "rsc15": (BinnedPowerLaw.from_scipy(0.10325, 1, 199), BinnedPowerLaw.from_scipy(0.07981, 1, 147418)),
}


def workload_laws(
    preset: str | None = None, alpha_length: float | None = None, alpha_clicks: float | None = None
) -> tuple[PowerLaw, PowerLaw]:
    """(session length law, item clicks law) for a preset or for a pair of exponents; UsageError otherwise."""
    exponents = alpha_length is not None or alpha_clicks is not None
    if preset is not None and exponents:
        raise UsageError("give either --preset or --alpha-length with --alpha-clicks, not both")
    if preset is not None:
        if preset not in PRESETS:
            raise UsageError(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
        return PRESETS[preset]
    if alpha_length is None or alpha_clicks is None:
        raise UsageError("give a workload: --preset bolcom|rsc15, or both --alpha-length and --alpha-clicks")
    for flag, alpha in (("--alpha-length", alpha_length), ("--alpha-clicks", alpha_clicks)):
        if not (math.isfinite(alpha) and 0.0 < alpha <= MAX_ALPHA):
            raise UsageError(f"{flag} {alpha} is out of range; supported: 0 < alpha <= {MAX_ALPHA:g}")
    return PowerLaw(alpha_length, *SESSION_LENGTH_SUPPORT), PowerLaw(alpha_clicks, *ITEM_CLICKS_SUPPORT)


class ItemPopularity:
    """The C click counts of Algorithm 1 (sampled once) and inverse-transform draws of items from their CDF."""

    def __init__(self, catalog_size: int, item_clicks: PowerLaw, rng: np.random.Generator) -> None:
        # Group sizes: how many of the C items got each count; the histogram of C independent draws.
        per_value = rng.multinomial(catalog_size, item_clicks.pmf())
        present = np.flatnonzero(per_value)
        self.values = item_clicks.support()[present]  # [G] click count of each group, ascending
        self.sizes = per_value[present]  # [G] items per group
        self.start = np.cumsum(self.sizes) - self.sizes  # [G] first position of each group in `order`
        mass = (self.values * self.sizes).astype(np.float64)  # exact below 2^53 clicks in total
        self.cum_mass = np.cumsum(mass)  # [G] the CDF of the C counts (unnormalised), per group
        self.below = self.cum_mass - mass
        self.total = float(self.cum_mass[-1])
        self._top = np.nextafter(self.total, 0.0)
        # Which item holds which count: a uniformly random assignment.
        dtype = np.int32 if catalog_size < 2**31 else np.int64
        self.order = np.arange(catalog_size, dtype=dtype)
        rng.shuffle(self.order)
        # Guide table: guide[b] = first group whose CDF exceeds b / M.
        self._m = 1 << max(1, math.ceil(math.log2(2 * len(self.values))))
        self._guide = np.searchsorted(self.cum_mass, np.arange(self._m + 1) * (self.total / self._m), side="right")

    @property
    def catalog_size(self) -> int:
        return len(self.order)

    def counts(self) -> np.ndarray:
        """The sampled click count of every item, int64 [C] (built on demand)."""
        counts = np.empty(self.catalog_size, dtype=np.int64)
        counts[self.order] = np.repeat(self.values, self.sizes)
        return counts

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` item ids (int64), item i with probability counts[i] / sum(counts)."""
        u = rng.random(n)
        x = np.minimum(u * self.total, self._top)  # position on the cumulative count axis
        g = self._guide[(u * self._m).astype(np.intp)]
        late = np.flatnonzero(self.cum_mass[g] <= x)
        while late.size:  # a few steps at most: the table has >= 2 buckets per group
            g[late] += 1
            late = late[self.cum_mass[g[late]] <= x[late]]
        within = ((x - self.below[g]) / self.values[g]).astype(np.int64)
        np.minimum(within, self.sizes[g] - 1, out=within)  # guards float rounding at a group's top
        return np.asarray(self.order[self.start[g] + within], dtype=np.int64)


class SyntheticWorkload:
    """Algorithm 1: synthetic sessions for a catalog of `catalog_size` items; deterministic given `seed`.

    Every call to `sessions()` or `clicks()` replays the same stream from the start, so the file written by
    `etude generate` and the sessions the load generator sends agree for the same seed.
    """

    def __init__(self, catalog_size: int, session_length: PowerLaw, item_clicks: PowerLaw, seed: int) -> None:
        if isinstance(catalog_size, bool) or not isinstance(catalog_size, int | np.integer) or catalog_size < 1:
            raise UsageError(f"catalog size must be an integer >= 1, got {catalog_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise UsageError(f"seed must be an integer >= 0, got {seed!r}")
        self.catalog_size = int(catalog_size)
        self.session_length = session_length
        self.item_clicks = item_clicks
        self.seed = int(seed)
        catalog_seed, self._lengths_seed, self._items_seed = np.random.SeedSequence(self.seed).spawn(3)
        self.items = ItemPopularity(self.catalog_size, item_clicks, np.random.default_rng(catalog_seed))

    def _blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Endless (session lengths [B], items [sum of lengths]) blocks of BLOCK_SESSIONS sessions."""
        lengths_rng, items_rng = np.random.default_rng(self._lengths_seed), np.random.default_rng(self._items_seed)
        while True:
            lengths = self.session_length.sample(lengths_rng, BLOCK_SESSIONS)
            yield lengths, self.items.sample(items_rng, int(lengths.sum()))

    def sessions(self) -> Iterator[np.ndarray]:
        """Endless lazy stream of sessions, each an int64 array of item ids in [0, C), oldest click first."""
        for lengths, items in self._blocks():
            ends = np.cumsum(lengths).tolist()
            begin = 0
            for end in ends:
                yield items[begin:end]
                begin = end

    def clicks(self, n_clicks: int, batch: int = 1 << 20) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(session_id, item_id, timestamp) int64 column chunks of at most `batch` clicks.

        Whole sessions until at least `n_clicks` clicks (Algorithm 1's `while n < N`); a chunk may end inside a
        session, the stream never does. Session ids and timestamps (a logical clock, one tick per click, as
        in Algorithm 1) count from 1. Memory is O(batch + one block), whatever `n_clicks`.
        """
        if n_clicks < 1:
            raise UsageError(f"number of clicks must be >= 1, got {n_clicks}")
        if batch < 1:
            raise UsageError(f"batch must be >= 1, got {batch}")
        return self._clicks(n_clicks, batch)

    def _clicks(self, n_clicks: int, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        session, tick, remaining = 1, 1, n_clicks
        for lengths, items in self._blocks():
            ends = np.cumsum(lengths)
            if ends[-1] >= remaining:
                last = int(np.searchsorted(ends, remaining, side="left"))
                lengths, items = lengths[: last + 1], items[: ends[last]]
            session_ids = np.repeat(np.arange(session, session + len(lengths), dtype=np.int64), lengths)
            ticks = np.arange(tick, tick + len(items), dtype=np.int64)
            for at in range(0, len(items), batch):
                yield session_ids[at : at + batch], items[at : at + batch], ticks[at : at + batch]
            session, tick, remaining = session + len(lengths), tick + len(items), remaining - len(items)
            if remaining <= 0:
                return


def clicklog_sessions(path: str, catalog_size: int, *, loop: bool = False) -> Iterator[np.ndarray]:
    """Replay a real click log session by session, sessions ordered by their first click, clicks by time.

    Item ids are mapped onto [0, C) by popularity rank modulo C (rank 0 = most clicked; ties by item id), so
    the most popular items of the log are the most popular of the catalog. Without a timestamp column the
    file's order is kept. `loop=True` starts over at the end. The file is read and checked before this
    returns: a missing, unreadable, empty or malformed log raises UsageError here, not during iteration.
    """
    from loadgen.fit import read_clicklog

    if isinstance(catalog_size, bool) or not isinstance(catalog_size, int | np.integer) or catalog_size < 1:
        raise UsageError(f"catalog size must be an integer >= 1, got {catalog_size!r}")
    log = read_clicklog(path)
    items = log.item_ranks() % catalog_size
    order = log.replay_order()
    items = items[order]
    sessions = log.session_codes[order]
    bounds = np.flatnonzero(np.diff(sessions)) + 1
    starts = np.concatenate(([0], bounds)).tolist()
    ends = np.concatenate((bounds, [len(items)])).tolist()
    return _replay(items, starts, ends, loop)


def _replay(items: np.ndarray, starts: list[int], ends: list[int], loop: bool) -> Iterator[np.ndarray]:
    while True:
        for begin, end in zip(starts, ends, strict=True):
            yield items[begin:end]
        if not loop:
            return
