"""Live figures of a running variant for `etude local`'s progress display, read from the server's `/metrics`
(Prometheus text): answers per second over the last poll, p90 latency over the last few seconds (server side,
from the latency histogram's buckets) and error answers so far. What it cannot read shows as unknown, not an error.
"""

from __future__ import annotations

import logging
import math
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass

log = logging.getLogger(__name__)

REQUESTS_FAMILY = "etude_requests"  # counter by status (serving/metrics.py)
LATENCY_FAMILY = "etude_request_latency_seconds"  # histogram


@dataclass(frozen=True)
class Snapshot:
    t_ns: int
    answers: float  # all answers, any status
    errors: float  # answers with a status other than 200
    buckets: tuple[tuple[float, float], ...]  # (upper bound in s, cumulative count) of the latency histogram


@dataclass(frozen=True)
class Live:
    rate_rps: float | None
    p90_ms: float | None
    errors: int | None


def parse(text: str, t_ns: int) -> Snapshot | None:
    from prometheus_client.parser import text_string_to_metric_families

    answers = errors = 0.0
    buckets: list[tuple[float, float]] = []
    seen = False
    for family in text_string_to_metric_families(text):
        if family.name == REQUESTS_FAMILY:
            seen = True
            for s in family.samples:
                if s.name.endswith("_total"):
                    answers += s.value
                    errors += 0.0 if s.labels.get("status") == "200" else s.value
        elif family.name == LATENCY_FAMILY:
            buckets = [(float(s.labels["le"]), s.value) for s in family.samples if s.name.endswith("_bucket")]
    return Snapshot(t_ns, answers, errors, tuple(sorted(buckets))) if seen else None


def quantile_ms(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The q-quantile of a cumulative histogram, interpolated linearly within its bucket (as PromQL does)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound * 1e3  # beyond the last finite bucket: its bound is all we know
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1.0
            return (lower_bound + (bound - lower_bound) * share) * 1e3
        lower_bound, lower_count = bound, count
    return None


class MetricsProbe:
    """Polls `/metrics`: answers per second since the last poll, p90 over the last `window_s` seconds (so the
    load generator's warm-up and a cold start fade out), errors since `baseline()`."""

    def __init__(self, base_url: str, timeout_s: float = 0.5, window_s: float = 5.0) -> None:
        self.url = f"{base_url.rstrip('/')}/metrics"
        self.timeout_s = timeout_s
        self.window_ns = int(window_s * 1e9)
        self._start: Snapshot | None = None
        self._recent: deque[Snapshot] = deque()

    def _read(self) -> Snapshot | None:
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout_s) as resp:
                return parse(resp.read().decode("utf-8", "replace"), time.perf_counter_ns())
        except (urllib.error.URLError, OSError, ValueError) as err:
            log.debug("no metrics from %s: %s", self.url, err)
            return None

    def baseline(self) -> None:
        self._start = self._read()
        if self._start is not None:
            self._recent.append(self._start)

    def poll(self) -> Live:
        now = self._read()
        if now is None:
            return Live(None, None, None)
        if self._start is None:
            self._start = now
        last = self._recent[-1] if self._recent else None
        while len(self._recent) > 1 and now.t_ns - self._recent[1].t_ns >= self.window_ns:
            self._recent.popleft()
        oldest = self._recent[0] if self._recent else now
        self._recent.append(now)
        rate = None
        if last is not None and now.t_ns > last.t_ns:
            rate = (now.answers - last.answers) / ((now.t_ns - last.t_ns) / 1e9)
        base = dict(oldest.buckets)
        window = [(bound, count - base.get(bound, 0.0)) for bound, count in now.buckets]
        return Live(rate, quantile_ms(window, 0.9), int(now.errors - self._start.errors))
