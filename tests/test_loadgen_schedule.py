"""etude.loadgen.schedule: the per-tick target rate and the send slots are pure functions of time (no sockets); the
arrival processes have the rate and the variability they claim."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from etude.loadgen.schedule import NS_PER_S, Arrivals, due_times_ns, is_hold_tick, rate_at, shard_rate, tick_targets


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


def test_uniform_slots_are_evenly_spread_within_their_tick() -> None:
    due, bounds = due_times_ns([1, 7, 4], Arrivals("uniform"))
    assert bounds.tolist() == [0, 1, 8, 12]
    assert due[0] == 0
    assert due[8:].tolist() == [2 * NS_PER_S + i * NS_PER_S // 4 for i in range(4)]
    gaps = set(np.diff(due[1:8]).tolist())
    assert max(gaps) - min(gaps) <= 1  # integer ns rounding only


def _gap_cv(due: np.ndarray) -> float:
    gaps = np.diff(due.astype(np.float64))
    return float(gaps.std() / gaps.mean())


def test_poisson_arrivals_have_the_rate_and_exponential_gaps() -> None:
    targets = [1000] * 100  # 100,000 expected slots at a constant rate
    due, bounds = due_times_ns(targets, Arrivals("poisson", seed=7))
    assert abs(len(due) / 100_000 - 1) < 0.02
    assert abs(_gap_cv(due) - 1) < 0.05
    assert np.all(np.diff(due) >= 0) and due[0] >= 0 and due[-1] < 100 * NS_PER_S
    per_tick = np.diff(bounds)  # a Poisson count per second: variance = mean
    assert abs(per_tick.var() / per_tick.mean() - 1) < 0.35
    assert np.all(due[bounds[5] : bounds[6]] // NS_PER_S == 5)


def test_poisson_follows_a_ramp() -> None:
    targets = tick_targets(2000, 50, 0)
    due, bounds = due_times_ns(targets, Arrivals("poisson", seed=1))
    assert abs(len(due) / sum(targets) - 1) < 0.02
    first, last = np.diff(bounds)[:10].sum(), np.diff(bounds)[-10:].sum()
    assert abs(first / sum(targets[:10]) - 1) < 0.1 and abs(last / sum(targets[-10:]) - 1) < 0.03


@pytest.mark.parametrize("cv", [1.5, 3.0])
def test_bursty_arrivals_have_the_coefficient_of_variation_asked_for(cv: float) -> None:
    due, _ = due_times_ns([1000] * 100, Arrivals("bursty", burstiness=cv, seed=3))
    assert abs(len(due) / 100_000 - 1) < 0.05
    assert abs(_gap_cv(due) - cv) < 0.05 * cv


def test_arrivals_are_a_pure_function_of_seed_and_stream() -> None:
    a = Arrivals("poisson", seed=5)
    same, _ = due_times_ns([100] * 5, a)
    assert np.array_equal(same, due_times_ns([100] * 5, Arrivals("poisson", seed=5))[0])
    assert not np.array_equal(same[:50], due_times_ns([100] * 5, a.with_stream(1))[0][:50])
    assert not np.array_equal(same[:50], due_times_ns([100] * 5, Arrivals("poisson", seed=6))[0][:50])


def test_bad_arrivals_are_refused() -> None:
    with pytest.raises(ValueError, match="one of"):
        Arrivals("gaussian")
    with pytest.raises(ValueError, match="CV > 1"):
        Arrivals("bursty", burstiness=0.5)


@given(st.integers(1, 100_000), st.integers(1, 64))
def test_shard_rates_add_up_and_differ_by_at_most_one(rate: int, shards: int) -> None:
    parts = [shard_rate(rate, i, shards) for i in range(shards)]
    assert sum(parts) == rate and max(parts) - min(parts) <= 1


def test_hold_ticks_and_the_no_hold_fallback() -> None:
    assert [t for t in range(8) if is_hold_tick(t, 5, 3)] == [5, 6, 7]
    assert [t for t in range(5) if is_hold_tick(t, 5, 0)] == [4]  # the last ramp tick is at the target
