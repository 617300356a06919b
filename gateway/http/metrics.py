"""Prometheus metrics, in a registry of the app's own (no module-level state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cmr_http_requests",
            "HTTP requests by route and status",
            ["listener", "method", "route", "status"],
            registry=self.registry,
        )
        self.accepted_total = Counter(
            "cmr_notifications_accepted",
            "Notifications accepted, by format",
            ["format"],
            registry=self.registry,
        )
        self.rejected_total = Counter(
            "cmr_notifications_rejected",
            "Notifications rejected, by problem code",
            ["code"],
            registry=self.registry,
        )
        self.open_seconds = Histogram(
            "cmr_envelope_open_seconds",
            "Time to open and verify an envelope",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )

    # The intake service's IntakeMetrics interface.
    def opened(self, seconds: float) -> None:
        self.open_seconds.observe(seconds)

    def accepted(self, fmt: str) -> None:
        self.accepted_total.labels(fmt).inc()

    def rejected(self, code: str) -> None:
        self.rejected_total.labels(code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
