"""What "sustained" means and how the sustained-capacity search walks: light rules shared by the load generator
(which runs the search) and the command builders (which bound how long a run may take). Definitions:
docs/design.md, "Capacity".

No numpy, no I/O: the Pulumi side imports this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

ARRIVALS = ("poisson", "uniform", "bursty")
DEFAULT_ARRIVALS = "poisson"
ANSWERS_ABOVE_PERCENTILE = 20  # a hold's SLO percentile rests on at least this many answers above it
# A hold is planned for more than the answers it needs: random (Poisson, bursty) arrivals put a random number of
# requests into it, and a count short of the minimum would fail a hold that met its SLO. n + 8 sqrt(n) falls short
# of n with probability < 1e-9 for Poisson counts and about 1e-3 for gamma gaps of CV 2 (count sd ~ 2 sqrt(n)).
PLANNED_MARGIN_SD = 8
SEARCH_MAX_FACTOR = 2  # the search goes up to this multiple of the target rate unless told otherwise
SEARCH_FLOOR_DIVISOR = 256  # the lowest rate held: max rate / this (at least 1 request/s)
SEARCH_TOLERANCE = 0.03  # stop once the lowest failed rate is within this fraction above the highest met one
SEARCH_UP = 1.25  # after a met hold with nothing failed yet: the next candidate
SEARCH_DOWN = 0.7  # after a failed hold with nothing met yet: the next candidate
MAX_HOLDS = 12  # holds of one search at most
KNEE_RUN_SECONDS = 3  # the ramp's knee: the first of this many consecutive seconds that violate the SLO
HOLD_GAP_S = 1.0  # between phases: whole seconds for the answers of the previous phase, beyond the timeout


def min_answers(percentile: float) -> int:
    """Answers a hold needs so that at least ANSWERS_ABOVE_PERCENTILE of them lie above the SLO percentile:
    200 for p90, 400 for p95, 2,000 for p99."""
    return math.ceil(ANSWERS_ABOVE_PERCENTILE / (1 - percentile / 100) - 1e-9)


def hold_seconds_at(rate_rps: int, hold_seconds: int, percentile: float) -> int:
    """How long a hold at `rate_rps` lasts: at least `hold_seconds`, and long enough that even random arrivals
    bring `min_answers` (planned for n + PLANNED_MARGIN_SD sqrt(n) requests)."""
    n = min_answers(percentile)
    return max(hold_seconds, math.ceil((n + PLANNED_MARGIN_SD * math.sqrt(n)) / max(1, rate_rps)))


def search_max_rps(target_rps: int, given: int | None) -> int:
    return given if given is not None else SEARCH_MAX_FACTOR * target_rps


def search_floor_rps(max_rps: int) -> int:
    return max(1, max_rps // SEARCH_FLOOR_DIVISOR)


@dataclass
class Search:
    """The bracketing search over held rates (MLPerf LoadGen's FindPeakPerformance idea): start at the ramp's knee,
    step up while holds meet the SLO and down while they fail, then bisect the bracket. Once the bracket is within
    SEARCH_TOLERANCE, the highest met rate is held once more unless it already met twice: a hold near the capacity
    passes or fails by chance, and a single lucky pass must not become the answer. `met` is the highest held rate
    whose holds all met the SLO, `failed` the lowest rate that failed a hold."""

    max_rps: int
    floor_rps: int
    met: int | None = None
    failed: int | None = None
    holds: int = 0
    passes: dict[int, int] = field(default_factory=dict)  # rate -> holds met there, for rates below `failed`

    def first(self, knee_rps: int) -> int:
        return min(self.max_rps, max(self.floor_rps, knee_rps))

    def record(self, rate_rps: int, met: bool) -> int | None:
        """Note a hold's verdict; the next rate to hold, or None when the search is done."""
        self.holds += 1
        if met and (self.failed is None or rate_rps < self.failed):
            self.passes[rate_rps] = self.passes.get(rate_rps, 0) + 1
        elif not met:
            self.failed = rate_rps if self.failed is None else min(self.failed, rate_rps)
            self.passes = {r: n for r, n in self.passes.items() if r < self.failed}
        self.met = max(self.passes, default=None)
        if self.holds >= MAX_HOLDS:
            return None
        if self.failed is None:
            assert self.met is not None
            if self.met < self.max_rps:
                return min(self.max_rps, math.ceil(self.met * SEARCH_UP))
            return None if self.passes[self.met] >= 2 else self.met
        if self.met is None:
            return None if self.failed <= self.floor_rps else max(self.floor_rps, int(self.failed * SEARCH_DOWN))
        if self.failed - self.met <= max(1.0, SEARCH_TOLERANCE * self.met):
            return None if self.passes[self.met] >= 2 else self.met
        return (self.met + self.failed) // 2


def worst_case_seconds(
    *,
    ramp_seconds: int,
    hold_seconds: int,
    target_rps: int,
    percentile: float,
    timeout_s: float,
    find_capacity: bool,
    max_rps: int | None,
    repeats: int,
) -> int:
    """The longest one load-generator process may measure: every repeat's ramp and holds (a search: MAX_HOLDS holds,
    each as long as one at the lowest rate it may hold), each phase followed by its answers' timeout and a gap."""
    gap_s = timeout_s + HOLD_GAP_S + 1
    if find_capacity:
        floor = search_floor_rps(search_max_rps(target_rps, max_rps))
        one = ramp_seconds + gap_s + MAX_HOLDS * (hold_seconds_at(floor, hold_seconds, percentile) + gap_s)
    else:
        one = ramp_seconds + hold_seconds + gap_s
    return math.ceil(repeats * one)
