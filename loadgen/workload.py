"""Synthetic click workload (paper Algorithm 1) and replay of a real click log.

Algorithm 1 needs two laws: session lengths and per-item click counts, both discrete truncated power laws
p(x) proportional to x^-alpha on the integers [x_min, x_max]. It samples C click counts once (one per item),
then draws every session's length from the length law and its items by inverse-transform sampling from the
CDF of those C counts: item i is clicked with probability counts[i] / sum(counts).

Laws and supports
- Exponent mode (`--alpha-length A --alpha-clicks B`, 0 < alpha <= 10): session lengths on [1, 200]
  (`SESSION_LENGTH_SUPPORT`), item click counts on [1, 100000] (`ITEM_CLICKS_SUPPORT`).
- A fitted workload (`--workload FILE`, `etude.loadgen.fitted`): `TabulatedLaw`s, drawn by quantiles in shuffled
  passes and from an urn of item clicks (see `TabulatedLaw`, `ItemUrn`, `Shuffle`).
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

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from etude.errors import UsageError

logger = logging.getLogger(__name__)

MAX_ALPHA = 10.0
SESSION_LENGTH_SUPPORT = (1, 200)
ITEM_CLICKS_SUPPORT = (1, 100_000)
MAX_SUPPORT_SIZE = 10_000_000
# Sessions per internal block: a block is generated at once, vectorised; streams are cut from blocks.
BLOCK_SESSIONS = 1 << 14


class DiscreteLaw:
    """What every law on the integers [x_min, x_max] given by its CDF (`cdf()`) offers."""

    x_min: int
    x_max: int

    def cdf(self) -> np.ndarray:
        raise NotImplementedError

    def support(self) -> np.ndarray:
        return np.arange(self.x_min, self.x_max + 1, dtype=np.int64)

    def pmf(self) -> np.ndarray:
        return np.diff(self.cdf(), prepend=0.0)

    def mean(self) -> float:
        return float(self.pmf() @ self.support())

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` independent draws (int64) by inverse-transform sampling over the finite support."""
        return self.x_min + np.searchsorted(self.cdf(), rng.random(n), side="right").astype(np.int64)


@dataclass(frozen=True)
class PowerLaw(DiscreteLaw):
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

    def sampler(self, rng: np.random.Generator) -> Callable[[int], np.ndarray]:
        """A stream of independent draws: each call takes `n`."""
        return lambda n: self.sample(rng, n)

    def popularity(self, catalog_size: int, rng: np.random.Generator) -> ItemPopularity:
        """Algorithm 1's catalog: C independent click counts from this law, items drawn in proportion to them."""
        return ItemPopularity(catalog_size, self, rng)


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
        self._build(item_clicks.support(), rng.multinomial(catalog_size, item_clicks.pmf()), rng)

    def _build(self, support: np.ndarray, per_value: np.ndarray, rng: np.random.Generator) -> None:
        """Group the items by click count: `per_value[j]` items have `support[j]` clicks."""
        present = np.flatnonzero(per_value)
        self.values = support[present]  # [G] click count of each group, ascending
        self.sizes = per_value[present]  # [G] items per group
        self.start = np.cumsum(self.sizes) - self.sizes  # [G] first position of each group in `order`
        mass = (self.values * self.sizes).astype(np.float64)  # exact below 2^53 clicks in total
        self.cum_mass = np.cumsum(mass)  # [G] the CDF of the C counts (unnormalised), per group
        self.below = self.cum_mass - mass
        self.total = float(self.cum_mass[-1])
        self._top = np.nextafter(self.total, 0.0)
        # Which item holds which count: a uniformly random assignment.
        catalog_size = int(self.sizes.sum())
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
        return self._items_at(np.minimum(rng.random(n) * self.total, self._top))

    def sampler(self, rng: np.random.Generator) -> Callable[[int], np.ndarray]:
        """A stream of draws: each call takes `n` item ids (int64), independent draws as in `sample`."""
        return lambda n: self.sample(rng, n)

    def _items_at(self, x: np.ndarray) -> np.ndarray:
        """The item at each position `x` in [0, total) of the cumulative count axis."""
        g = self._guide[(x * (self._m / self.total)).astype(np.intp)]
        late = np.flatnonzero(self.cum_mass[g] <= x)
        while late.size:  # a few steps at most: the table has >= 2 buckets per group
            g[late] += 1
            late = late[self.cum_mass[g[late]] <= x[late]]
        within = ((x - self.below[g]) / self.values[g]).astype(np.int64)
        np.minimum(within, self.sizes[g] - 1, out=within)  # guards float rounding at a group's top
        return np.asarray(self.order[self.start[g] + within], dtype=np.int64)


class ItemUrn(ItemPopularity):
    """Items drawn without replacement from an urn that holds counts[i] clicks of item i, refilled when empty:
    any E = sum(counts) consecutive draws from the start of an epoch hold item i exactly counts[i] times."""

    def __init__(self, support: np.ndarray, per_value: np.ndarray, rng: np.random.Generator) -> None:
        self._build(support, per_value, rng)
        self.epoch = Shuffle(int((self.values.astype(object) * self.sizes.astype(object)).sum()))

    def sampler(self, rng: np.random.Generator) -> Callable[[int], np.ndarray]:
        """A fresh stream from the start of an epoch: each call takes the next `n` item ids (int64)."""
        positions = self.epoch.stream(rng)
        return lambda n: self._items_at(positions(n).astype(np.float64))


class Shuffle:
    """Shuffled passes over the positions [0, size): a keyed pseudo-random permutation per pass (epoch).

    The permutation is a 4-round Feistel network on the next even number of bits (SplitMix64 as round
    function), cycle-walking the values >= size; each epoch takes fresh keys from the stream's generator.
    O(1) memory whatever the size, and each epoch visits every position exactly once.
    """

    ROUNDS = 4

    def __init__(self, size: int) -> None:
        if not 1 <= size < 2**53:
            raise UsageError(f"an epoch of {size} draws is outside the supported [1, 2^53)")
        self.size = size
        half = max(1, math.ceil(math.log2(max(size, 2)) / 2))
        self._half, self._mask = np.uint64(half), np.uint64((1 << half) - 1)

    def stream(self, rng: np.random.Generator) -> Callable[[int], np.ndarray]:
        """Each call returns the next `n` positions (uint64), epoch after epoch."""
        drawn, keys = self.size, np.zeros(self.ROUNDS, dtype=np.uint64)

        def take(n: int) -> np.ndarray:
            nonlocal drawn, keys
            parts = [np.empty(0, dtype=np.uint64)]
            while n > 0:
                if drawn == self.size:  # a new epoch, a new permutation
                    keys, drawn = rng.integers(0, 2**63, self.ROUNDS, dtype=np.uint64), 0
                count = min(n, self.size - drawn)
                parts.append(self.permute(np.arange(drawn, drawn + count, dtype=np.uint64), keys))
                drawn += count
                n -= count
            return np.concatenate(parts)

        return take

    def permute(self, k: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """The bijection of [0, size) keyed by `keys`, applied to `k` (uint64)."""
        out = self._feistel(k, keys)
        outside = np.flatnonzero(out >= self.size)
        while outside.size:  # cycle walking: the network permutes [0, 2^bits), a superset of [0, size)
            out[outside] = self._feistel(out[outside], keys)
            outside = outside[out[outside] >= self.size]
        return out

    def _feistel(self, x: np.ndarray, keys: np.ndarray) -> np.ndarray:
        left, right = x >> self._half, x & self._mask
        for key in keys:
            left, right = right, left ^ (_splitmix64(right ^ key) & self._mask)
        return (left << self._half) | right


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser (Steele, Lea and Flood 2014), a 64-bit mixing bijection, on uint64 arrays."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    out: np.ndarray = z ^ (z >> np.uint64(31))
    return out


class TabulatedLaw(DiscreteLaw):
    """A discrete law given by its probabilities on 1, 2, ..., len(pmf): a fitted workload's marginal.

    Both uses take the law's quantiles at n evenly spread points, Q((j + 1/2) / n) for j < n, Q the quantile
    function, and draw them without replacement in shuffled passes (`Shuffle`), so every pass reproduces the
    law as closely as n values can:
    - session lengths (`sampler`): n = `epoch`, the fitted log's number of sessions; a synthetic log of the
      fitted log's size holds (nearly) the same histogram of lengths;
    - per-item click counts (`popularity`): n = C, the item of popularity rank r (0 = most clicked) gets
      Q(1 - (r + 1/2) / C), so the share-of-clicks curve by item quantile is the law's at every C, and at C =
      the fitted log's item count the numbers of items per count are the log's; clicks come from an `ItemUrn`.
    """

    def __init__(self, pmf: np.ndarray, epoch: int) -> None:
        pmf = np.asarray(pmf, dtype=np.float64)
        if pmf.ndim != 1 or pmf.size == 0 or not np.isfinite(pmf).all() or (pmf < 0).any() or pmf.sum() <= 0:
            raise UsageError("a tabulated law needs finite, non-negative probabilities that are not all zero")
        if pmf.size > MAX_SUPPORT_SIZE:
            raise UsageError(f"a tabulated law has more than {MAX_SUPPORT_SIZE} values")
        cdf = np.cumsum(pmf / pmf.sum())
        cdf[-1] = 1.0
        cdf.setflags(write=False)
        self._cdf = cdf
        self.x_min, self.x_max = 1, int(pmf.size)
        if epoch < 1:
            raise UsageError(f"a tabulated law's epoch must be >= 1, got {epoch}")
        self.epoch = int(epoch)

    def cdf(self) -> np.ndarray:
        return self._cdf

    def quantile_histogram(self, n: int) -> np.ndarray:
        """How many of the n quantile points fall on each value of `support()`."""
        at_or_below = np.minimum(np.floor(self._cdf * n + 0.5), n).astype(np.int64)
        at_or_below[-1] = n
        return np.diff(at_or_below, prepend=0)

    def sampler(self, rng: np.random.Generator) -> Callable[[int], np.ndarray]:
        """Session lengths: each call takes the next `n` (int64) of shuffled passes over `epoch` quantiles."""
        ends = np.cumsum(self.quantile_histogram(self.epoch))  # the sorted quantiles: value v up to ends[v - 1]
        positions = Shuffle(self.epoch).stream(rng)
        return lambda n: 1 + np.searchsorted(ends, positions(n).astype(np.int64), side="right").astype(np.int64)

    def popularity(self, catalog_size: int, rng: np.random.Generator) -> ItemUrn:
        return ItemUrn(self.support(), self.quantile_histogram(catalog_size), rng)


Law = PowerLaw | TabulatedLaw


class SyntheticWorkload:
    """Algorithm 1: synthetic sessions for a catalog of `catalog_size` items; deterministic given `seed`.

    Every call to `sessions()` or `clicks()` replays the same stream from the start, so the file written by
    `etude generate` and the sessions the load generator sends agree for the same seed.
    """

    def __init__(self, catalog_size: int, session_length: Law, item_clicks: Law, seed: int) -> None:
        if isinstance(catalog_size, bool) or not isinstance(catalog_size, int | np.integer) or catalog_size < 1:
            raise UsageError(f"catalog size must be an integer >= 1, got {catalog_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise UsageError(f"seed must be an integer >= 0, got {seed!r}")
        self.catalog_size = int(catalog_size)
        self.session_length = session_length
        self.item_clicks = item_clicks
        self.seed = int(seed)
        catalog_seed, self._lengths_seed, self._items_seed = np.random.SeedSequence(self.seed).spawn(3)
        self.items = item_clicks.popularity(self.catalog_size, np.random.default_rng(catalog_seed))

    def _blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Endless (session lengths [B], items [sum of lengths]) blocks of BLOCK_SESSIONS sessions."""
        draw_lengths = self.session_length.sampler(np.random.default_rng(self._lengths_seed))
        draw_items = self.items.sampler(np.random.default_rng(self._items_seed))
        while True:
            lengths = draw_lengths(BLOCK_SESSIONS)
            yield lengths, draw_items(int(lengths.sum()))

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


def clicklog_sessions(
    path: str, catalog_size: int, *, loop: bool = False, item_ids: str | None = None
) -> Iterator[np.ndarray]:
    """Replay a real click log session by session, sessions ordered by their first click, clicks by time.

    Item ids are mapped onto [0, C) by popularity rank modulo C (rank 0 = most clicked; ties by item id), so
    the most popular items of the log are the most popular of the catalog. With `item_ids` (a token list,
    `read_item_ids`) an item is instead the id the model was trained with: token on line j -> id j - 1; clicks
    on tokens the list lacks are left out. Without a timestamp column the file's order is kept. `loop=True`
    starts over at the end. The files are read and checked before this returns: a missing, unreadable, empty or
    malformed log or list raises UsageError here, not during iteration.
    """
    from etude.loadgen.fit import read_clicklog

    if isinstance(catalog_size, bool) or not isinstance(catalog_size, int | np.integer) or catalog_size < 1:
        raise UsageError(f"catalog size must be an integer >= 1, got {catalog_size!r}")
    log = read_clicklog(path)
    order = log.replay_order()
    sessions = log.session_codes[order]
    if item_ids is None:
        items = (log.item_ranks() % catalog_size)[order]
    else:
        tokens, inverse = np.unique(log.item_ids[order], return_inverse=True)
        names = [str(t) for t in tokens.tolist()]
        ids = read_item_ids(item_ids, catalog_size, set(names))
        items = np.array([ids.get(t, -1) for t in names], dtype=np.int64)[inverse.ravel()]
        known = items >= 0
        if not known.any():
            raise UsageError(f"{item_ids}: none of the items of {path} is in this token list")
        if not known.all():
            logger.warning("%s: %d of %d clicks are on items %s does not list; they are left out",
                         path, int((~known).sum()), len(items), item_ids)
        items, sessions = items[known], sessions[known]
    bounds = np.flatnonzero(np.diff(sessions)) + 1
    starts = np.concatenate(([0], bounds)).tolist()
    ends = np.concatenate((bounds, [len(items)])).tolist()
    return _replay(items, starts, ends, loop)


def read_item_ids(path: str, catalog_size: int, wanted: set[str]) -> dict[str, int]:
    """The ids a trained model knows the `wanted` item tokens by, from its token list (a text file, local or
    gs://, one token per line in the order of the model's internal ids: line 0 the padding token, line j the item
    the model knows as j; RecBole's `dataset.field2id_token['item_id']`): token -> j - 1, the id the server takes.
    Only the wanted tokens are kept (a list of 10 million tokens is not held as a dict). UsageError when the file
    is unreadable, lists a wanted token twice, or does not list exactly C items after the padding line."""
    import io

    from etude import storage

    try:
        text = storage.read_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a UTF-8 text file of item tokens") from None
    ids: dict[str, int] = {}
    lines = 0
    for j, line in enumerate(io.StringIO(text)):
        lines = j + 1
        token = line.rstrip("\r\n")
        if j > 0 and token in wanted:
            if token in ids:
                raise UsageError(f"{path}: item token {token!r} is listed more than once")
            ids[token] = j - 1
    if lines - 1 != catalog_size:
        raise UsageError(f"{path}: {max(lines - 1, 0)} item tokens after the padding line, but the catalog "
                         f"has {catalog_size} items")
    return ids


def _replay(items: np.ndarray, starts: list[int], ends: list[int], loop: bool) -> Iterator[np.ndarray]:
    while True:
        for begin, end in zip(starts, ends, strict=True):
            yield items[begin:end]
        if not loop:
            return
