"""Notifications already stored, for the growth figure, put in the fastest honest way: rows
built exactly as intake builds them (the example notification validated and encrypted with the
installation's data key and the row's own associated data, a real signed receipt, its children,
its audit event chained onto the real head), then bulk-inserted with executemany through the
synchronous driver in large transactions. Only HTTP, TLS and envelope opening are skipped, which
is what the figure is not about: how the rate changes when the tables and indexes are big."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import create_engine, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from gateway.audit.chain import details_json, event_hash
from gateway.bench.harness import AGENCY, Installation
from gateway.bench.loadgen import EXAMPLE
from gateway.clock import SystemClock
from gateway.intake.receipts import sign_receipt
from gateway.intake.repository import LONDON, format_reference
from gateway.intake.validation import NotificationValidator
from gateway.keys.datacipher import DataCipher
from gateway.keys.keyring import Keyring
from gateway.services import SCHEMA_FILE
from gateway.storage.database import sync_url
from gateway.storage.tables import (
    audit_events,
    audit_head,
    notification_children,
    notifications,
    reference_counters,
)

CHUNK = 5000


def stored_count(installation: Installation) -> int:
    engine = create_engine(
        sync_url(installation.settings.effective_database_url), poolclass=NullPool
    )
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(notifications)).scalar_one())
    finally:
        engine.dispose()


def _settle(engine: Engine) -> None:
    """What a database that grew over months has and a bulk load has not yet: statistics
    (ANALYZE, else PostgreSQL plans for an empty table) and the load's WAL written back
    (CHECKPOINT / wal_checkpoint), else the run measures the aftermath of the load."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE")
        if engine.dialect.name == "postgresql":
            # Needs pg_checkpoint (or superuser); without it the run shares the load's I/O.
            with contextlib.suppress(DBAPIError):
                conn.exec_driver_sql("CHECKPOINT")
        else:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def seed(installation: Installation, target: int) -> dict[str, Any]:
    """Top the notifications table up to `target` rows (the gateway must not be running)."""
    settings = installation.settings
    clock = SystemClock()
    keyring = Keyring(settings.keys_dir, clock, timedelta(days=settings.key_overlap_days))
    cipher = DataCipher(lambda: keyring.current_data_kid, keyring.data_key)
    validator = NotificationValidator.from_file(settings.schemas_dir / SCHEMA_FILE)
    body = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    now = clock.now()
    valid = validator.validate(body, now.date())
    plaintext = json.dumps(valid.document, separators=(",", ":"), ensure_ascii=False).encode()
    signing_key = keyring.signing_key
    engine = create_engine(sync_url(settings.effective_database_url), poolclass=NullPool)
    started = time.perf_counter()
    added = 0
    try:
        with engine.connect() as conn:
            have = int(conn.execute(select(func.count()).select_from(notifications)).scalar_one())
        # Spread over the past hours of this London year so that the rows look received.
        year = now.astimezone(LONDON).year
        while have + added < target:
            n = min(CHUNK, target - have - added)
            with engine.begin() as conn:
                last = conn.execute(
                    select(reference_counters.c.last_number).where(
                        reference_counters.c.year == year
                    )
                ).scalar_one_or_none()
                if last is None:
                    conn.execute(reference_counters.insert().values(year=year, last_number=0))
                    last = 0
                head = conn.execute(select(audit_head).where(audit_head.c.id == 1)).one()
                seq, prev = int(head.seq), str(head.hash)
                rows: list[dict[str, Any]] = []
                events: list[dict[str, Any]] = []
                for i in range(n):
                    number = int(last) + i + 1
                    reference = format_reference(year, number)
                    jti = f"{AGENCY}-seed-{uuid.uuid4().hex}"
                    envelope_sha256 = hashlib.sha256(os.urandom(32)).hexdigest()
                    received_at = max(
                        now - timedelta(seconds=(target - number)),
                        datetime(year, 1, 1, 12, tzinfo=UTC),
                    )
                    key_id, payload = cipher.encrypt(plaintext, aad=f"{AGENCY}\x00{jti}".encode())
                    receipt = sign_receipt(
                        signing_key, AGENCY, jti, reference, received_at, envelope_sha256
                    )
                    rows.append(
                        {
                            "reference": reference,
                            "agency": AGENCY,
                            "jti": jti,
                            "envelope_sha256": envelope_sha256,
                            "format": "cmr-notification/1",
                            "status": "received",
                            "route": valid.route,
                            "incident_type": valid.incident_type,
                            "incident_date": valid.incident_date,
                            "received_at": received_at,
                            "updated_at": received_at,
                            "key_id": key_id,
                            "payload": payload,
                            "receipt": receipt,
                        }
                    )
                    seq += 1
                    details = details_json(
                        {
                            "format": "cmr-notification/1",
                            "jti": jti,
                            "request_id": "bench-seed",
                            "channel": "bench-seed",
                            "envelope_sha256": envelope_sha256,
                        }
                    )
                    actor, action = f"agency:{AGENCY}", "notification.received"
                    digest = event_hash(prev, seq, received_at, actor, action, reference, details)
                    events.append(
                        {
                            "seq": seq,
                            "at": received_at,
                            "actor": actor,
                            "action": action,
                            "subject": reference,
                            "details": details,
                            "prev_hash": prev,
                            "hash": digest,
                        }
                    )
                    prev = digest
                ids = conn.execute(
                    notifications.insert().returning(
                        notifications.c.id, sort_by_parameter_order=True
                    ),
                    rows,
                ).scalars()
                children = [
                    {
                        "notification_id": notification_id,
                        "position": position,
                        "gender": child.gender,
                        "age_band": child.age_band,
                    }
                    for notification_id in ids
                    for position, child in enumerate(valid.children)
                ]
                conn.execute(notification_children.insert(), children)
                conn.execute(audit_events.insert(), events)
                conn.execute(
                    update(audit_head).where(audit_head.c.id == 1).values(seq=seq, hash=prev)
                )
                conn.execute(
                    update(reference_counters)
                    .where(reference_counters.c.year == year)
                    .values(last_number=int(last) + n)
                )
            added += n
        _settle(engine)
    finally:
        engine.dispose()
    return {
        "added": added,
        "stored": have + added,
        "seconds": round(time.perf_counter() - started, 1),
    }
