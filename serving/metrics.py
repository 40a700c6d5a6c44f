"""Prometheus metrics of one server: request counts by status, latency and batch-size histograms, queue depth.

Each server has its own registry (tests run several servers in one process); `/metrics` renders it in the
Prometheus text format.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = tuple(float(2**i) for i in range(11))  # 1 .. 1024
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self, queue_depth: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "etude_requests", "Recommendation requests answered, by HTTP status", ["status"], registry=self.registry
        )
        self._latency = Histogram(
            "etude_request_latency_seconds",
            "Time from reading a recommendation request to answering it",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._batch_size = Histogram(
            "etude_batch_size", "Requests per forward pass", buckets=BATCH_BUCKETS, registry=self.registry
        )
        self._inference = Histogram(
            "etude_batch_inference_seconds",
            "Run time of one batch on the inference thread",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        depth = Gauge("etude_queue_depth", "Requests waiting for a batch", registry=self.registry)
        depth.set_function(lambda: float(queue_depth()))
        self._by_status: dict[int, Counter] = {}

    def request(self, status: int, latency_ns: int) -> None:
        counter = self._by_status.get(status)
        if counter is None:
            counter = self._by_status[status] = self._requests.labels(status=str(status))
        counter.inc()
        self._latency.observe(latency_ns / 1e9)

    def batch(self, size: int, run_ns: int) -> None:
        self._batch_size.observe(size)
        self._inference.observe(run_ns / 1e9)

    def render(self) -> bytes:
        return generate_latest(self.registry)
