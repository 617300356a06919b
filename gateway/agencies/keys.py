"""Agency public signing keys: what a registered key must look like (pure), and its storage."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from gateway.audit.chain import AuditEvent
from gateway.audit.repository import append
from gateway.errors import UsageError
from gateway.storage.coalesce import Coalesce
from gateway.storage.database import Database
from gateway.storage.tables import agency_keys

PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "k", "oth"})


@dataclass(frozen=True)
class AgencyKey:
    agency: str
    kid: str
    alg: str
    jwk: dict[str, Any]
    added_at: datetime
    revoked_at: datetime | None


def public_signing_jwk(raw: Any, allowed_algs: tuple[str, ...]) -> tuple[str, str, dict[str, Any]]:
    """Check an agency's JWK and return (kid, alg, public members only)."""
    if not isinstance(raw, dict):
        raise UsageError("the JWK must be a JSON object")
    kid = raw.get("kid")
    if not isinstance(kid, str) or not 1 <= len(kid) <= 128:
        raise UsageError("the JWK needs a kid of 1 to 128 characters")
    kty, crv = raw.get("kty"), raw.get("crv")
    members: tuple[str, ...]
    if kty == "OKP" and crv == "Ed25519" and isinstance(raw.get("x"), str):
        alg, members = "Ed25519", ("kty", "crv", "x")
    elif (
        kty == "EC"
        and crv == "P-256"
        and isinstance(raw.get("x"), str)
        and isinstance(raw.get("y"), str)
    ):
        alg, members = "ES256", ("kty", "crv", "x", "y")
    else:
        raise UsageError("the JWK must be an Ed25519 (OKP) or P-256 (EC) public key")
    if alg not in allowed_algs:
        raise UsageError(f"{alg} keys are not allowed by the setting 'signing_algorithms'")
    if raw.get("alg") not in (None, alg):
        raise UsageError(f"the JWK's alg must be {alg}")
    if raw.get("use") not in (None, "sig"):
        raise UsageError("the JWK's use must be sig")
    public = {m: raw[m] for m in members}
    public["kid"] = kid
    return kid, alg, public


class AgencyKeyRepository:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Concurrent lookups share one query. No cache here: the intake service keeps the keys
        # it found, and the transaction storing each notification confirms its key.
        self._lookups: Coalesce[tuple[str, str], AgencyKey] = Coalesce(self._fetch)

    async def find(self, agency: str, kid: str) -> AgencyKey | None:
        return await self._lookups.get((agency, kid))

    async def _fetch(self, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], AgencyKey]:
        wanted = set(keys)
        query = select(agency_keys).where(agency_keys.c.kid.in_(sorted({k for _, k in wanted})))
        # A read that never waits behind the intake writer, in one hand-off on SQLite.
        rows = await self.db.run_read(lambda conn: conn.execute(query).all())
        return {
            (row.agency, row.kid): AgencyKey(
                row.agency, row.kid, row.alg, json.loads(row.jwk), row.added_at, row.revoked_at
            )
            for row in rows
            if (row.agency, row.kid) in wanted
        }

    async def all_keys(self, agency: str | None = None) -> list[AgencyKey]:
        query = select(agency_keys).order_by(agency_keys.c.agency, agency_keys.c.added_at)
        if agency:
            query = query.where(agency_keys.c.agency == agency)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            AgencyKey(r.agency, r.kid, r.alg, json.loads(r.jwk), r.added_at, r.revoked_at)
            for r in rows
        ]

    async def add(
        self, agency: str, kid: str, alg: str, jwk: dict[str, Any], actor: str, at: datetime
    ) -> None:
        try:
            async with self.db.transaction() as conn:
                await conn.execute(
                    agency_keys.insert().values(
                        agency=agency, kid=kid, alg=alg, jwk=json.dumps(jwk), added_at=at
                    )
                )
                await append(
                    conn,
                    AuditEvent(actor, "agency_key.added", agency, {"kid": kid, "alg": alg}),
                    at,
                )
        except IntegrityError:
            raise UsageError(f"agency {agency} already has a key with kid {kid}") from None

    async def revoke(self, agency: str, kid: str, actor: str, at: datetime) -> None:
        async with self.db.transaction() as conn:
            result = await conn.execute(
                update(agency_keys)
                .where(
                    agency_keys.c.agency == agency,
                    agency_keys.c.kid == kid,
                    agency_keys.c.revoked_at.is_(None),
                )
                .values(revoked_at=at)
            )
            if result.rowcount != 1:
                raise UsageError(f"agency {agency} has no unrevoked key with kid {kid}")
            await append(conn, AuditEvent(actor, "agency_key.revoked", agency, {"kid": kid}), at)
