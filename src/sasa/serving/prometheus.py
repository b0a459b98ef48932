"""The server's Prometheus metrics, in a registry of its own (two servers in one process stay apart)."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

SCORE_BUCKETS = (-20, -10, -5, -2, -1, -0.5, 0, 0.5, 1, 2, 5, 10, 20)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)


class ServerMetrics:
    """Requests by outcome, refusals, guard scores, queue depth, batch sizes and latency."""

    def __init__(self, depth: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("sasa_requests", "Chat completion requests by HTTP status and decision",
                                ["status", "decision"], registry=self.registry)
        self.refusals = Counter("sasa_refusals", "Prompts the guard refused before generation", registry=self.registry)
        self.scores = Histogram("sasa_guard_score", "The detector's risk score per guarded prompt",
                                buckets=SCORE_BUCKETS, registry=self.registry)
        self.latency = Histogram("sasa_request_latency_seconds", "Time from arrival to the last byte of an answer",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch = Histogram("sasa_batch_size", "Requests decoded together", buckets=(1, 2, 4, 8, 16, 32, 64),
                               registry=self.registry)
        self.cancelled = Counter("sasa_cancelled_rows", "Rows stopped mid-generation: their client left or "
                                 "their time ran out", registry=self.registry)
        self.queue = Gauge("sasa_queue_depth", "Requests waiting for the model", registry=self.registry)
        self.queue.set_function(depth)

    def render(self) -> bytes:
        return generate_latest(self.registry)
