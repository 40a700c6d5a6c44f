"""The load schedule of Algorithm 2 as pure functions of time: no sockets, no clocks.

The run is a sequence of one-second ticks. During the ramp (`ramp_seconds` ticks) the per-tick target rate r_c
grows linearly to the target r; the hold phase then keeps r for `hold_seconds` ticks (the paper's generator stops
when it reaches r, so no steady state is ever measured; the hold fixes that). Within a tick the r_c requests get
evenly spread send slots: slot i of tick k is due at k s + i/r_c s.
"""

from __future__ import annotations

import math

NS_PER_S = 1_000_000_000


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


def slot_ns(tick: int, slot: int, rate: int) -> int:
    """When slot `slot` of a tick with `rate` evenly spread slots is due, in ns since the start."""
    return tick * NS_PER_S + slot * NS_PER_S // rate


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
