"""loadgen.schedule: the per-tick target rate and the send slots are pure functions of time (no sockets)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadgen.schedule import NS_PER_S, is_hold_tick, rate_at, shard_rate, slot_ns, tick_targets


def test_ramp_is_linear_to_the_target_then_holds() -> None:
    assert tick_targets(10, 5, 3) == [2, 4, 6, 8, 10, 10, 10, 10]
    assert tick_targets(1000, 1, 0) == [1000]


def test_every_ramp_tick_sends_something_even_below_one_request_per_tick() -> None:
    assert tick_targets(2, 5, 1) == [1, 1, 2, 2, 2, 2]


def test_rate_is_a_function_of_time_and_zero_outside_the_run() -> None:
    assert rate_at(-0.5, 100, 4, 2) == 0
    assert rate_at(0.0, 100, 4, 2) == rate_at(0.999, 100, 4, 2) == 25
    assert rate_at(3.5, 100, 4, 2) == 100
    assert rate_at(5.999, 100, 4, 2) == 100
    assert rate_at(6.0, 100, 4, 2) == 0


@pytest.mark.parametrize("args", [(0, 5, 1), (10, 0, 1), (10, 5, -1)])
def test_invalid_schedules_are_refused(args: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError):
        rate_at(0, *args)


@given(st.integers(1, 20_000), st.integers(1, 600), st.integers(0, 600))
def test_ramp_never_decreases_and_ends_at_the_target(rate: int, ramp: int, hold: int) -> None:
    targets = tick_targets(rate, ramp, hold)
    assert len(targets) == ramp + hold
    assert all(a <= b for a, b in zip(targets, targets[1:], strict=False))
    assert targets[ramp - 1] == rate and min(targets) >= 1


def test_slots_are_evenly_spread_within_their_tick() -> None:
    due = [slot_ns(3, i, 4) for i in range(4)]
    assert due == [3 * NS_PER_S + i * NS_PER_S // 4 for i in range(4)]
    assert slot_ns(0, 0, 1) == 0
    seven = [slot_ns(0, i, 7) for i in range(7)]
    gaps = {b - a for a, b in zip(seven, seven[1:], strict=False)}
    assert max(gaps) - min(gaps) <= 1  # integer ns rounding only


@given(st.integers(1, 100_000), st.integers(1, 64))
def test_shard_rates_add_up_and_differ_by_at_most_one(rate: int, shards: int) -> None:
    parts = [shard_rate(rate, i, shards) for i in range(shards)]
    assert sum(parts) == rate and max(parts) - min(parts) <= 1


def test_hold_ticks_and_the_no_hold_fallback() -> None:
    assert [t for t in range(8) if is_hold_tick(t, 5, 3)] == [5, 6, 7]
    assert [t for t in range(5) if is_hold_tick(t, 5, 0)] == [4]  # the last ramp tick is at the target
