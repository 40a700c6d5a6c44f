"""The sustained-capacity search (`etude loadgen --find-capacity`): a ramp to find the knee, then holds at candidate
rates, bracketed and bisected (etude.sustained.Search). Rules and definitions: docs/design.md, "Capacity".
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from etude import sustained
from etude.loadgen import results
from etude.loadgen.runner import Phase, Runner, StopRule
from etude.loadgen.schedule import Arrivals, tick_targets

if TYPE_CHECKING:
    from etude.results import Hold, RunSpec

log = logging.getLogger(__name__)


def knee_rps(targets: list[int], violated: list[bool], run_seconds: int) -> int:
    """The rate of the last second before the first `run_seconds` consecutive seconds that violated the SLO (the
    ramp's lowest rate when they start at once); the last rate when no such run occurred."""
    streak = 0
    for i, bad in enumerate(violated):
        streak = streak + 1 if bad else 0
        if streak == run_seconds or (bad and i == len(violated) - 1):
            start = i - streak + 1
            return targets[max(0, start - 1)]
    return targets[-1]


def _judge(runner: Runner, spec: RunSpec, phase: Phase, rate_rps: int) -> Hold:
    snap = runner.snapshot()
    counts = results.counts_table(snap.ticks)
    return results.judge_hold(results.answers(results.requests_table(snap.records)), counts, spec,
                              phase.first_tick, phase.ticks, rate_rps)


async def find_capacity(runner: Runner, spec: RunSpec, arrivals: Arrivals) -> results.Search:
    """Run the search on a started runner; its holds in the order held and what they bracket."""
    max_rps = sustained.search_max_rps(spec.target_rps, spec.search_max_rps)
    search = sustained.Search(max_rps, sustained.search_floor_rps(max_rps))
    ramp = tick_targets(max_rps, spec.ramp_seconds, 0)
    rule = StopRule(spec.slo_ms, spec.slo_percentile, sustained.KNEE_RUN_SECONDS)
    phase = await runner.phase(ramp, arrivals.with_stream(0), rule)
    snap = runner.snapshot()
    counts = results.counts_table(snap.ticks)
    win = results.windows(results.answers(results.requests_table(snap.records)), counts, spec)
    span = slice(phase.first_tick, phase.first_tick + phase.ticks)
    knee = knee_rps(ramp[: phase.ticks], win.violated[span], sustained.KNEE_RUN_SECONDS)
    log.info("ramp to %d rps: knee at %d rps%s", max_rps, knee, " (ended early)" if phase.stopped_early else "")

    holds: list[Hold] = []
    rate: int | None = search.first(knee)
    while rate is not None and not runner.stopped:
        seconds = sustained.hold_seconds_at(rate, spec.hold_seconds, spec.slo_percentile)
        phase = await runner.phase([rate] * seconds, arrivals.with_stream(len(holds) + 1))
        if runner.stopped:
            break
        hold = _judge(runner, spec, phase, rate)
        holds.append(hold)
        log.info("hold %d at %d rps for %d s: %d answers, p%g %s ms, errors %d, held back %d: %s", len(holds), rate,
                 seconds, hold.answers, spec.slo_percentile, hold.percentile_ms, hold.errors, hold.held_back,
                 "meets the SLO" if hold.slo_met else "fails")
        rate = search.record(rate, hold.slo_met)
    met = None if search.met is None else float(search.met)
    failed = None if search.failed is None else float(search.failed)
    return results.Search(holds=holds, capacity_rps=met, bracket=(met, failed))
