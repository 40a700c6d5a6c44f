"""The load schedule of Algorithm 2 as pure functions of time: no sockets, no clocks.

The run is a sequence of one-second ticks. During the ramp (`ramp_seconds` ticks) the per-tick target rate r_c
grows linearly to the target r; the hold phase then keeps r for `hold_seconds` ticks (the paper's generator stops
when it reaches r, so no steady state is ever measured; the hold fixes that).

Send slots (`due_times_ns`) are one continuous process over the whole schedule, drawn in "operational time" u,
the cumulative target count: tick k covers u in [R_k, R_k + r_k) with R_k = r_0 + ... + r_(k-1), and a slot at u
lies in that tick at k s + (u - R_k) / r_k s. The slots' gaps in u decide the arrival process:
- `uniform`: gaps of exactly 1, starting at u = 0: the paper's evenly spread slots, slot i of tick k at
  k s + i / r_k s, exactly r_k per tick;
- `poisson`: exponential gaps of mean 1: a Poisson process whose rate is r_k in tick k (non-homogeneous across
  ticks; the count of a tick is Poisson-distributed with mean r_k);
- `bursty`: gamma gaps of mean 1 and coefficient of variation `burstiness` (> 1): burstier than Poisson.
The draw is a pure function of (seed, stream): its own random stream, separate from the sessions' (which use the
same seed without a stream key), so changing the arrival process never changes the sessions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from etude.sustained import ARRIVALS, DEFAULT_ARRIVALS

if TYPE_CHECKING:
    import numpy as np

NS_PER_S = 1_000_000_000
ARRIVAL_STREAM = 1  # the first spawn-key element of every arrival draw (sessions use none)


def rate_at(t_s: float, target_rps: int, ramp_seconds: int, hold_seconds: int) -> int:
    """The target rate r_c of the tick that contains time `t_s` (seconds since the start); 0 outside the run.

    Ramp tick k (0-based) targets ceil(r * (k + 1) / ramp_seconds), so the last ramp tick reaches r and the first
    one sends at least one request; every hold tick targets r.
    """
    if target_rps < 1 or ramp_seconds < 1 or hold_seconds < 0:
        raise ValueError("need target_rps >= 1, ramp_seconds >= 1, hold_seconds >= 0")
    if t_s < 0:
        return 0
    tick = int(t_s)
    if tick < ramp_seconds:
        return max(1, math.ceil(target_rps * (tick + 1) / ramp_seconds))
    if tick < ramp_seconds + hold_seconds:
        return target_rps
    return 0


def tick_targets(target_rps: int, ramp_seconds: int, hold_seconds: int) -> list[int]:
    """r_c for every tick of the run: `ramp_seconds + hold_seconds` entries."""
    return [rate_at(k, target_rps, ramp_seconds, hold_seconds) for k in range(ramp_seconds + hold_seconds)]


@dataclass(frozen=True)
class Arrivals:
    kind: str = DEFAULT_ARRIVALS  # one of ARRIVALS
    burstiness: float | None = None  # bursty: the coefficient of variation of the gaps (> 1)
    seed: int = 0
    stream: tuple[int, ...] = ()  # e.g. (shard, repeat, phase): independent draws of one seed

    def __post_init__(self) -> None:
        if self.kind not in ARRIVALS:
            raise ValueError(f"arrivals {self.kind!r}: expected one of {', '.join(ARRIVALS)}")
        if self.kind == "bursty" and not (self.burstiness is not None and self.burstiness > 1):
            raise ValueError(f"burstiness {self.burstiness}: bursty arrivals need a CV > 1 (1 is Poisson)")

    def with_stream(self, *stream: int) -> Arrivals:
        return Arrivals(self.kind, self.burstiness, self.seed, (*self.stream, *stream))


def _gaps(arrivals: Arrivals, rng: np.random.Generator, n: int) -> np.ndarray:
    if arrivals.kind == "poisson":
        return rng.exponential(1.0, n)
    assert arrivals.burstiness is not None
    shape = 1.0 / arrivals.burstiness**2  # gamma: CV = 1 / sqrt(shape); mean shape x scale = 1
    return rng.gamma(shape, 1.0 / shape, n)


def due_times_ns(targets: Sequence[int], arrivals: Arrivals) -> tuple[np.ndarray, np.ndarray]:
    """Every send slot of a schedule, in ns since its start (ascending), and per tick k the index range
    [bounds[k], bounds[k + 1]) of its slots."""
    import numpy as np

    rates = np.asarray(targets, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(rates)])  # R_k
    total = int(starts[-1])
    if arrivals.kind == "uniform":
        u = np.arange(total, dtype=np.int64)
        tick = np.searchsorted(starts, u, side="right") - 1
        offset = (u - starts[tick]) * NS_PER_S // rates[tick]  # exact integers, as slot i x 1 s / r_k
    else:
        rng = np.random.default_rng(np.random.SeedSequence(arrivals.seed, spawn_key=(ARRIVAL_STREAM, *arrivals.stream)))
        chunks, reached = [], 0.0
        while reached < total:
            gaps = _gaps(arrivals, rng, max(1024, int(1.1 * (total - reached)) + 64))
            points = reached + np.cumsum(gaps)
            chunks.append(points)
            reached = float(points[-1])
        uf = np.concatenate(chunks) if chunks else np.array([], dtype=np.float64)
        uf = uf[uf < total]
        tick = np.searchsorted(starts, uf, side="right") - 1
        offset = ((uf - starts[tick]) / rates[tick] * NS_PER_S).astype(np.int64)
    due = tick * NS_PER_S + offset
    bounds = np.searchsorted(tick, np.arange(len(rates) + 1), side="left")
    return due.astype(np.int64), bounds


def shard_rate(target_rps: int, shard: int, shards: int) -> int:
    """This shard's part of the target rate: the n parts differ by at most one and add up to the target."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} outside 0..{shards - 1}")
    return target_rps // shards + (1 if shard < target_rps % shards else 0)


def is_hold_tick(tick: int, ramp_seconds: int, hold_seconds: int) -> bool:
    """Whether a tick measures the steady state at the target. With no hold, the last ramp tick (at r) counts."""
    if hold_seconds == 0:
        return tick == ramp_seconds - 1
    return ramp_seconds <= tick < ramp_seconds + hold_seconds
