"""Prometheus metrics for ``agentspool worker run --metrics-port N``.

Counters move as the loop works; gauges (queue depths, sessions by state, dead
letters, producers' dropped events) are refreshed on the loop's periodic check, so
a scrape never touches the queue files itself. The HTTP server listens on
127.0.0.1 unless ``AGENTSPOOL_METRICS_ADDR`` says otherwise.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from agentspool.worker import state as st

SYNC_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_drained = Counter(
            "agentspool_events_drained",
            "Queue items applied to replicas or dead-lettered.",
            registry=r,
        )
        self.sync_attempts = Counter(
            "agentspool_sync_attempts",
            "Sync batch requests sent (each carries many sessions).",
            registry=r,
        )
        self.sync_failures = Counter(
            "agentspool_sync_failures",
            "Failed batch requests, by kind of failure.",
            ["kind"],
            registry=r,
        )
        self.sync_seconds = Histogram(
            "agentspool_sync_seconds",
            "Duration of successful batch requests.",
            buckets=SYNC_BUCKETS,
            registry=r,
        )
        self.last_sync_success = Gauge(
            "agentspool_last_sync_success_timestamp_seconds",
            "When a sync last succeeded (Unix time).",
            registry=r,
        )
        self.queue_depth = Gauge(
            "agentspool_queue_depth",
            "Items waiting in a producer's queue.",
            ["producer"],
            registry=r,
        )
        self.producer_dropped = Gauge(
            "agentspool_producer_dropped_events",
            "Events a producer reported dropping (buffer full, spool closed).",
            ["producer"],
            registry=r,
        )
        self.sessions = Gauge(
            "agentspool_sessions", "Sessions by sync state.", ["state"], registry=r
        )
        self.dead_letters = Gauge("agentspool_dead_letters", "Dead-lettered items.", registry=r)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

    def refresh(self, state: st.StateStore, producers: dict[str, tuple[int, int]]) -> None:
        """``producers``: producer id -> (items waiting, events it dropped)."""
        for name, count in state.counts().items():
            self.sessions.labels(state=name).set(count)
        self.dead_letters.set(state.dead_letter_count())
        self.queue_depth.clear()
        self.producer_dropped.clear()
        for producer_id, (depth, dropped) in producers.items():
            self.queue_depth.labels(producer=producer_id).set(depth)
            self.producer_dropped.labels(producer=producer_id).set(dropped)
