"""The hash chain, as pure functions: how an event is hashed and how a chain is checked.
An event's details must never hold personal data: they are stored in clear."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEvent:
    actor: str
    action: str
    subject: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChainedEvent:
    seq: int
    at: datetime
    actor: str
    action: str
    subject: str | None
    details: str
    prev_hash: str
    hash: str


def event_hash(
    prev_hash: str,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    subject: str | None,
    details: str,
) -> str:
    material = json.dumps(
        [prev_hash, seq, at.isoformat(timespec="microseconds"), actor, action, subject, details],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(material.encode()).hexdigest()


def details_json(details: Mapping[str, Any]) -> str:
    return json.dumps(dict(details), sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    events: int
    problem: str | None = None
    broken_seq: int | None = None
    head: str | None = None


def verify_chain(events: Iterable[ChainedEvent], head_seq: int, head_hash: str) -> VerifyResult:
    """Walk the chain from the start; name the first link that is broken."""
    prev_hash, expected_seq, count = GENESIS, 1, 0
    for ev in events:
        if ev.seq != expected_seq:
            return VerifyResult(False, count, f"event {expected_seq} is missing", expected_seq)
        if ev.prev_hash != prev_hash:
            return VerifyResult(
                False, count, f"event {ev.seq} does not link to its predecessor", ev.seq
            )
        recomputed = event_hash(
            prev_hash, ev.seq, ev.at, ev.actor, ev.action, ev.subject, ev.details
        )
        if recomputed != ev.hash:
            return VerifyResult(False, count, f"event {ev.seq} was altered", ev.seq)
        prev_hash, expected_seq, count = ev.hash, expected_seq + 1, count + 1
    if count != head_seq or prev_hash != head_hash:
        missing = count + 1
        return VerifyResult(
            False, count, f"event {missing} is missing (the chain was cut short)", missing
        )
    return VerifyResult(True, count, head=prev_hash)
