"""The intake pipeline: open the envelope, check it, map and validate the notification, store
it encrypted, and answer with a signed receipt. Pure orchestration over injected parts: no
HTTP and no SQL here, so every channel (API, drop folder, email) runs exactly this."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import structlog
from joserfc.jwk import ECKey, Key, OKPKey

from adapters.formats import FormatRegistry
from gateway.agencies.keys import AgencyKey
from gateway.agencies.registry import AgencyRegistry
from gateway.audit.chain import AuditEvent
from gateway.clock import Clock
from gateway.errors import (
    AgencyMismatch,
    EnvelopeRejected,
    FormatNotAllowed,
    GatewayError,
    NotFound,
    ReplayedMessage,
)
from gateway.intake.envelope import EnvelopeOpener
from gateway.intake.receipts import sign_receipt
from gateway.intake.repository import (
    DuplicateMessage,
    NewNotification,
    NotificationStatus,
    SigningKeyRevoked,
    StoredReceipt,
)
from gateway.intake.validation import NotificationValidator
from gateway.keys.datacipher import DataCipher

log = structlog.get_logger("gateway.intake")
KEYRING_CHECK_SECONDS = 1.0
KEY_NOT_VALID = "signing key not registered or revoked for iss"


class Keys(Protocol):
    def reload_if_changed(self) -> None: ...
    def decryption_key(self, kid: str) -> OKPKey | ECKey | None: ...
    @property
    def signing_key(self) -> OKPKey: ...


class AgencyKeys(Protocol):
    async def find(self, agency: str, kid: str) -> AgencyKey | None: ...


class Notifications(Protocol):
    async def find_by_envelope(self, agency: str, envelope_sha256: str) -> StoredReceipt | None: ...
    async def find_by_jti(self, agency: str, jti: str) -> StoredReceipt | None: ...
    async def insert(
        self, new: NewNotification, sign_receipt: Any, audit: Any
    ) -> StoredReceipt: ...
    async def status(self, agency: str, reference: str) -> NotificationStatus | None: ...


class Audit(Protocol):
    async def record(self, event: AuditEvent, at: datetime) -> None: ...


class IntakeMetrics(Protocol):
    def opened(self, seconds: float) -> None: ...
    def accepted(self, fmt: str) -> None: ...
    def rejected(self, code: str) -> None: ...


class NullIntakeMetrics:
    def opened(self, seconds: float) -> None:
        pass

    def accepted(self, fmt: str) -> None:
        pass

    def rejected(self, code: str) -> None:
        pass


@dataclass(frozen=True)
class SubmitResult:
    created: bool
    reference: str
    receipt: str

    def body(self) -> dict[str, str]:
        return {"reference": self.reference, "receipt": self.receipt}


def _import_agency_key(key: AgencyKey) -> Key:
    return OKPKey.import_key(key.jwk) if key.jwk.get("kty") == "OKP" else ECKey.import_key(key.jwk)


class _KnownKeys:
    """The agency keys this process has found registered and unrevoked, parsed, by (agency,
    kid): asking the database before every envelope was a round trip per request. Safe to keep
    because the transaction that stores a notification confirms its key is still registered
    and unrevoked (SigningKeyRevoked otherwise, and the key is forgotten here): a revocation by
    any process holds from the next commit on. A key that is not found is never kept, so a key
    registered a moment ago is found at once."""

    def __init__(self, agency_keys: AgencyKeys, limit: int = 256) -> None:
        self._agency_keys = agency_keys
        self._keys: dict[tuple[str, str], tuple[AgencyKey, Key]] = {}
        self._limit = limit

    async def find(self, agency: str, kid: str) -> tuple[AgencyKey, Key] | None:
        found = self._keys.get((agency, kid))
        if found is not None:
            return found
        registered = await self._agency_keys.find(agency, kid)
        if registered is None or registered.revoked_at is not None:
            return None
        if len(self._keys) >= self._limit:
            self._keys.clear()
        found = self._keys[(agency, kid)] = (registered, _import_agency_key(registered))
        return found

    def forget(self, agency: str, kid: str) -> None:
        self._keys.pop((agency, kid), None)


class IntakeService:
    def __init__(
        self,
        *,
        clock: Clock,
        keys: Keys,
        agency_keys: AgencyKeys,
        agencies: AgencyRegistry,
        formats: FormatRegistry,
        validator: NotificationValidator,
        cipher: DataCipher,
        notifications: Notifications,
        audit: Audit,
        opener: EnvelopeOpener,
        metrics: IntakeMetrics | None = None,
    ) -> None:
        self.clock = clock
        self.keys = keys
        self.agency_keys = agency_keys
        self.agencies = agencies
        self.formats = formats
        self.validator = validator
        self.cipher = cipher
        self.notifications = notifications
        self.audit = audit
        self.opener = opener
        self.metrics = metrics or NullIntakeMetrics()
        # Run after a new notification is committed (e.g. the intake rule for requests); a
        # failure is logged and never undoes the receipt, which is already durable.
        self.on_accepted: list[Callable[[str, str], Awaitable[object]]] = []
        self._known_keys = _KnownKeys(agency_keys)
        self._keys_checked_at = -KEYRING_CHECK_SECONDS

    async def submit(
        self, agency: str, raw: bytes, request_id: str, channel: str = "api"
    ) -> SubmitResult:
        """`agency` is the one the transport authenticated (the mTLS certificate)."""
        envelope_sha256 = hashlib.sha256(raw).hexdigest()
        try:
            return await self._accept(agency, raw, envelope_sha256, request_id, channel)
        except GatewayError as exc:
            if exc.code == "unavailable":
                raise
            # The same bytes from the same agency were accepted before (a resend whose claims
            # have since expired, say): answer as before. Asked only once something failed: a
            # new envelope never waits for this lookup (a resend that passes every check is
            # answered from its jti at the insert).
            previous = await self.notifications.find_by_envelope(agency, envelope_sha256)
            if previous is not None:
                return SubmitResult(False, previous.reference, previous.receipt)
            self.metrics.rejected(exc.code)
            cause = exc.cause if isinstance(exc, EnvelopeRejected) else None
            log.warning("notification_rejected", code=exc.code, cause=cause, channel=channel)
            details = {"code": exc.code, "request_id": request_id, "channel": channel}
            if cause:
                details["cause"] = cause
            await self.audit.record(
                AuditEvent(f"agency:{agency}", "notification.rejected", None, details),
                self.clock.now(),
            )
            raise

    async def _accept(
        self, agency: str, raw: bytes, envelope_sha256: str, request_id: str, channel: str
    ) -> SubmitResult:
        started = time.perf_counter()
        # The keyring file is looked at once a second, not per envelope (a stat per request
        # showed in the profile), and again whenever a key id is not known: a key that
        # `keys rotate` made a moment ago is found at once.
        if started >= self._keys_checked_at + KEYRING_CHECK_SECONDS:
            self._keys_checked_at = started
            self.keys.reload_if_changed()
        kid = self.opener.outer_kid(raw)
        enc_key = self.keys.decryption_key(kid)
        if enc_key is None:
            self.keys.reload_if_changed()
            enc_key = self.keys.decryption_key(kid)
        if enc_key is None:
            raise EnvelopeRejected("unknown or retired gateway key id")
        inner = self.opener.decrypt(raw, enc_key)
        known = await self._known_keys.find(inner.issuer, inner.kid)
        if known is None:
            raise EnvelopeRejected(KEY_NOT_VALID)
        registered, public_key = known
        claims_raw = self.opener.verify(inner, public_key, registered.alg)
        self.metrics.opened(time.perf_counter() - started)
        if inner.issuer != agency:
            raise AgencyMismatch()
        now = self.clock.now()
        claims = self.opener.check_claims(claims_raw, now.timestamp())

        registered_agency = self.agencies.get(agency)
        adapter = self.formats.get(claims.format)
        if (
            registered_agency is None
            or adapter is None
            or claims.format not in registered_agency.formats
        ):
            raise FormatNotAllowed(f"format {claims.format[:40]!r} is not allowed for {agency}")
        canonical = adapter.to_canonical(claims.body)
        valid = self.validator.validate(canonical, now.date())

        plaintext = json.dumps(valid.document, separators=(",", ":"), ensure_ascii=False).encode()
        key_id, payload = self.cipher.encrypt(plaintext, aad=f"{agency}\x00{claims.jti}".encode())
        new = NewNotification(
            agency=agency,
            jti=claims.jti,
            envelope_sha256=envelope_sha256,
            format=claims.format,
            route=valid.route,
            incident_type=valid.incident_type,
            incident_date=valid.incident_date,
            received_at=now,
            key_id=key_id,
            payload=payload,
            children=valid.children,
            signing_kid=registered.kid,
        )
        signing_key = self.keys.signing_key

        def receipt_for(reference: str) -> str:
            return sign_receipt(signing_key, agency, claims.jti, reference, now, envelope_sha256)

        def audit_for(reference: str) -> AuditEvent:
            return AuditEvent(
                f"agency:{agency}",
                "notification.received",
                reference,
                {
                    "format": claims.format,
                    "jti": claims.jti,
                    "request_id": request_id,
                    "channel": channel,
                    "envelope_sha256": envelope_sha256,
                },
            )

        try:
            stored = await self.notifications.insert(new, receipt_for, audit_for)
        except SigningKeyRevoked:
            self._known_keys.forget(agency, registered.kid)
            raise EnvelopeRejected(KEY_NOT_VALID) from None
        except DuplicateMessage:
            existing = await self.notifications.find_by_jti(agency, claims.jti)
            if existing is not None and existing.envelope_sha256 == envelope_sha256:
                return SubmitResult(False, existing.reference, existing.receipt)
            raise ReplayedMessage() from None
        self.metrics.accepted(claims.format)
        log.info("notification_accepted", reference=stored.reference, format=claims.format)
        for hook in self.on_accepted:
            try:
                await hook(stored.reference, agency)
            except Exception:
                log.exception("after_intake_failed", reference=stored.reference)
        return SubmitResult(True, stored.reference, stored.receipt)

    async def status(self, agency: str, reference: str) -> NotificationStatus:
        found = await self.notifications.status(agency, reference)
        if found is None:
            raise NotFound("no notification of yours has this reference")
        return found
