"""The ceiling: how many pre-sealed envelopes one core opens per second with the gateway's own
opener (EnvelopeOpener: the same joserfc registries, header checks and claim checks), the
installation's own gateway key and the agency's registered key. The ingest figure is read
against it: the gateway also speaks HTTP and TLS, validates, encrypts, signs and stores."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from joserfc.jwk import OKPKey

from gateway.bench.harness import Installation
from gateway.bench.loadgen import seal_envelopes
from gateway.clock import SystemClock
from gateway.intake.envelope import EnvelopeOpener
from gateway.keys.keyring import Keyring


@contextlib.contextmanager
def _pinned(cpu: int | None) -> Iterator[None]:
    """This process on `cpu` for the block (where there is more than one to choose from)."""
    before = os.sched_getaffinity(0) if hasattr(os, "sched_setaffinity") else None
    if cpu is not None and before is not None and cpu in before and len(before) > 1:
        os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        if before is not None:
            os.sched_setaffinity(0, before)


def measure(
    installation: Installation, seconds: float, distinct: int = 500, cpu: int | None = 0
) -> dict[str, Any]:
    settings = installation.settings
    keyring = Keyring(settings.keys_dir, SystemClock(), timedelta(days=settings.key_overlap_days))
    opener = EnvelopeOpener(
        settings.max_body_bytes, settings.signing_algorithms, settings.clock_skew_seconds
    )
    raw = json.loads((installation.credentials / "signing-key.jwk").read_text())
    public = OKPKey.import_key({k: v for k, v in raw.items() if k not in ("d",)})
    envelopes = seal_envelopes(installation.credentials, distinct, os.cpu_count() or 1)
    payload_bytes = len(envelopes[0])

    def open_one(envelope: bytes) -> None:
        key = keyring.decryption_key(opener.outer_kid(envelope))
        assert key is not None
        inner = opener.decrypt(envelope, key)
        claims = opener.verify(inner, public, "Ed25519")
        opener.check_claims(claims)

    with _pinned(cpu):
        for envelope in envelopes[:50]:  # warm caches and the allocator
            open_one(envelope)
        count = 0
        started = time.perf_counter()
        cpu_started = time.process_time()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            for envelope in envelopes:
                open_one(envelope)
            count += len(envelopes)
        elapsed = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
    return {
        "opened": count,
        "seconds": round(elapsed, 3),
        "per_second": round(count / elapsed, 1),
        "cpu_per_second": round(count / cpu_seconds, 1) if cpu_seconds else None,
        "envelope_bytes": payload_bytes,
    }


def _rate(work: Callable[[], object], seconds: float) -> float:
    for _ in range(50):  # warm caches and the allocator
        work()
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            work()
        count += 100
    return round(count / (time.perf_counter() - started), 1)


def required_work(
    installation: Installation, storage: Installation, seconds: float, cpu: int | None = 0
) -> dict[str, Any]:
    """What every accepted notification needs besides opening its envelope, timed on the same
    core with the gateway's own code: validation against the published schema (the adapter's
    canonical form of the example), signing its receipt, and storing it (in `storage`, an
    installation of its own). With the HTTP floor they bound ingest / ceiling from above
    (docs/performance.md)."""
    from adapters.formats import default_formats
    from gateway.bench.loadgen import EXAMPLE
    from gateway.intake.receipts import sign_receipt
    from gateway.intake.validation import NotificationValidator
    from gateway.services import SCHEMA_FILE

    settings = installation.settings
    keyring = Keyring(settings.keys_dir, SystemClock(), timedelta(days=settings.key_overlap_days))
    validator = NotificationValidator.from_file(settings.schemas_dir / SCHEMA_FILE)
    adapter = default_formats().get("cmr-notification/1")
    assert adapter is not None
    body = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    now = SystemClock().now()
    signing_key = keyring.signing_key
    digest = "0" * 64

    def validate() -> None:
        validator.validate(adapter.to_canonical(body), now.date())

    def receipt() -> None:
        sign_receipt(signing_key, "PSNI", "PSNI-bench", "CMRN-2026-0001", now, digest)

    with _pinned(cpu):
        return {
            "validations_per_second": _rate(validate, seconds),
            "receipts_per_second": _rate(receipt, seconds),
            "stored_per_cpu_second": _storage_rate(
                storage, validator.validate(adapter.to_canonical(body), now.date()), seconds
            ),
        }


def _storage_rate(installation: Installation, valid: Any, seconds: float) -> float:
    """Notifications stored per second of this process's CPU (its SQLite thread included), in
    batches of 64 through the gateway's own repository: group commit, the durable COMMIT,
    numbers, the key check, children and the audit chain. The receipt is left out (timed on
    its own), the payload is random bytes of the encrypted document's size."""
    import asyncio
    import uuid

    from gateway.audit.chain import AuditEvent
    from gateway.intake.repository import IntakeRepository, NewNotification
    from gateway.storage.database import Database

    kid = json.loads((installation.credentials / "signing-key.jwk").read_text())["kid"]
    document = json.dumps(valid.document, separators=(",", ":"), ensure_ascii=False).encode()
    payload = os.urandom(len(document) + 28)  # AES-GCM's nonce and tag

    def new(now: Any) -> NewNotification:
        return NewNotification(
            agency="PSNI",
            jti=f"PSNI-bench-{uuid.uuid4().hex}",
            envelope_sha256=uuid.uuid4().hex * 2,
            format="cmr-notification/1",
            route=valid.route,
            incident_type=valid.incident_type,
            incident_date=valid.incident_date,
            received_at=now,
            key_id="dk-bench",
            payload=payload,
            children=valid.children,
            signing_kid=kid,
        )

    async def run() -> float:
        db = Database(installation.settings.effective_database_url)
        repo = IntakeRepository(db, True)

        def audit_for(n: NewNotification) -> Callable[[str], AuditEvent]:
            return lambda reference: AuditEvent(
                "agency:PSNI", "notification.received", reference, {"jti": n.jti}
            )

        async def batch() -> None:
            items = [new(SystemClock().now()) for _ in range(64)]
            await asyncio.gather(
                *(repo.insert(n, lambda reference: "receipt", audit_for(n)) for n in items)
            )

        try:
            await batch()  # the thread, its connection and the statements' caches
            count = 0
            cpu_started = time.process_time()
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                await batch()
                count += 64
            return count / max(time.process_time() - cpu_started, 1e-9)
        finally:
            await db.dispose()

    return round(asyncio.run(run()), 1)
