"""Prometheus metrics, in a registry of the app's own (no module-level state)."""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


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
        # Operations (deploy/prometheus-alerts.yml alerts on each of these).
        self.scheduler_leader = Gauge(
            "cmr_scheduler_leader",
            "1 while this process holds the scheduler leadership, else 0",
            registry=self.registry,
        )
        self.outbox_pending = Gauge(
            "cmr_outbox_pending",
            "Mail in the outbox not yet delivered nor failed (as of the last sender pass)",
            registry=self.registry,
        )
        self.mail_failed_total = Counter(
            "cmr_mail_failed",
            "Mail given up on (permanent refusal or out of attempts)",
            registry=self.registry,
        )
        self.certificate_expiry = Gauge(
            "cmr_certificate_expiry_seconds",
            "Seconds until the listener's server certificate expires",
            ["listener"],
            registry=self.registry,
        )

    def watch_certificate(self, listener: str, cert_file: Path) -> None:
        """Computed at every scrape, so the value never goes stale in a long-running process."""
        from cryptography import x509

        not_after = x509.load_pem_x509_certificate(cert_file.read_bytes()).not_valid_after_utc
        expires = not_after.timestamp()
        self.certificate_expiry.labels(listener).set_function(lambda: expires - time.time())

    # The scheduler's and the outbox sender's hooks.
    def leader(self, is_leader: bool) -> None:
        self.scheduler_leader.set(1 if is_leader else 0)

    def mail_pending(self, count: int) -> None:
        self.outbox_pending.set(count)

    def mail_failed(self) -> None:
        self.mail_failed_total.inc()

    # The intake service's IntakeMetrics interface.
    def opened(self, seconds: float) -> None:
        self.open_seconds.observe(seconds)

    def accepted(self, fmt: str) -> None:
        self.accepted_total.labels(fmt).inc()

    def rejected(self, code: str) -> None:
        self.rejected_total.labels(code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
