"""Storage of accounts, set-up links, sessions and failed sign-ins. Every change that matters
commits with its audit event; the counting of failures is one locked read-modify-write, so
parallel guesses cannot slip past the limit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.audit.chain import AuditEvent
from gateway.audit.repository import append
from gateway.storage.database import Database
from gateway.storage.tables import (
    account_login_failures,
    account_sessions,
    account_setup_links,
    accounts,
)


@dataclass(frozen=True)
class Account:
    """What may be shown about an account: no hash, no secret."""

    id: int
    email: str
    name: str
    role: str
    status: str
    created_at: datetime

    @property
    def actor(self) -> str:
        return f"user:{self.email}"


@dataclass(frozen=True)
class StoredAccount:
    account: Account
    password_hash: str | None
    totp_key_id: str | None
    totp_secret: bytes | None
    totp_pending: bytes | None
    totp_last_step: int | None


@dataclass(frozen=True)
class StoredSession:
    stored: StoredAccount
    stage: str
    created_at: datetime
    last_seen_at: datetime


@dataclass(frozen=True)
class Failures:
    failures: int
    locked_until: datetime | None
    last_failure_at: datetime


class AccountExists(Exception):
    pass


def _stored(r: object) -> StoredAccount:
    m = r._mapping  # type: ignore[attr-defined]
    return StoredAccount(
        Account(m["id"], m["email"], m["name"], m["role"], m["status"], m["created_at"]),
        m["password_hash"],
        m["totp_key_id"],
        m["totp_secret"],
        m["totp_pending"],
        m["totp_last_step"],
    )


class AccountsRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- accounts and set-up links ------------------------------------------------------------

    async def add(
        self,
        email: str,
        name: str,
        role: str,
        link_hash: str,
        link_expires: datetime,
        audit: Callable[[int], AuditEvent],
        at: datetime,
    ) -> Account:
        try:
            async with self.db.transaction() as conn:
                account_id = (
                    await conn.execute(
                        accounts.insert()
                        .values(
                            email=email,
                            name=name,
                            role=role,
                            status="pending",
                            created_at=at,
                            updated_at=at,
                        )
                        .returning(accounts.c.id)
                    )
                ).scalar_one()
                await self._new_link(conn, account_id, link_hash, link_expires, at)
                await append(conn, audit(account_id), at)
        except IntegrityError:
            raise AccountExists() from None
        return Account(account_id, email, name, role, "pending", at)

    async def _new_link(
        self,
        conn: AsyncConnection,
        account_id: int,
        link_hash: str,
        expires: datetime,
        at: datetime,
    ) -> None:
        # One live link per account: a new one kills the old.
        await conn.execute(
            delete(account_setup_links).where(account_setup_links.c.account_id == account_id)
        )
        await conn.execute(
            account_setup_links.insert().values(
                token_hash=link_hash, account_id=account_id, created_at=at, expires_at=expires
            )
        )

    async def by_email(self, email: str) -> StoredAccount | None:
        async with self.db.read() as conn:
            r = (await conn.execute(select(accounts).where(accounts.c.email == email))).first()
        return _stored(r) if r else None

    async def all_accounts(self) -> list[Account]:
        async with self.db.read() as conn:
            rows = (await conn.execute(select(accounts).order_by(accounts.c.email))).all()
        return [_stored(r).account for r in rows]

    async def by_link(self, link_hash: str, now: datetime) -> StoredAccount | None:
        query = (
            select(accounts)
            .join(account_setup_links, account_setup_links.c.account_id == accounts.c.id)
            .where(
                account_setup_links.c.token_hash == link_hash,
                account_setup_links.c.expires_at > now,
                accounts.c.status != "disabled",
            )
        )
        async with self.db.read() as conn:
            r = (await conn.execute(query)).first()
        return _stored(r) if r else None

    async def set_password(
        self,
        account_id: int,
        link_hash: str,
        password_hash: str,
        pending: tuple[str, bytes] | None,
        audit: AuditEvent | None,
        at: datetime,
    ) -> bool:
        """Store the chosen password. With `pending` (a TOTP secret awaiting its first code) the
        link stays live for the second step; without, the account is active and the link spent."""
        values: dict[str, object] = {"password_hash": password_hash, "updated_at": at}
        if pending is None:
            values.update(status="active", totp_pending=None)
        else:
            values.update(totp_key_id=pending[0], totp_pending=pending[1])
        async with self.db.transaction() as conn:
            if not await self._link_live(conn, account_id, link_hash, at):
                return False
            await conn.execute(update(accounts).where(accounts.c.id == account_id).values(values))
            if pending is None:
                await self._spend_links(conn, account_id)
            if audit is not None:
                await append(conn, audit, at)
        return True

    async def enrol_totp(
        self,
        account_id: int,
        link_hash: str,
        key_id: str,
        secret: bytes,
        step: int,
        audit: AuditEvent,
        at: datetime,
    ) -> bool:
        async with self.db.transaction() as conn:
            if not await self._link_live(conn, account_id, link_hash, at):
                return False
            await conn.execute(
                update(accounts)
                .where(accounts.c.id == account_id, accounts.c.password_hash.is_not(None))
                .values(
                    status="active",
                    totp_key_id=key_id,
                    totp_secret=secret,
                    totp_pending=None,
                    totp_last_step=step,
                    updated_at=at,
                )
            )
            await self._spend_links(conn, account_id)
            await append(conn, audit, at)
        return True

    async def _link_live(
        self, conn: AsyncConnection, account_id: int, link_hash: str, at: datetime
    ) -> bool:
        found = (
            await conn.execute(
                select(account_setup_links.c.account_id).where(
                    account_setup_links.c.token_hash == link_hash,
                    account_setup_links.c.account_id == account_id,
                    account_setup_links.c.expires_at > at,
                )
            )
        ).first()
        return found is not None

    async def _spend_links(self, conn: AsyncConnection, account_id: int) -> None:
        await conn.execute(
            delete(account_setup_links).where(account_setup_links.c.account_id == account_id)
        )

    async def reset(
        self,
        account_id: int,
        link_hash: str,
        link_expires: datetime,
        audit: AuditEvent,
        at: datetime,
    ) -> None:
        """Back to pending with a new link: password, second factor and sessions gone."""
        async with self.db.transaction() as conn:
            await conn.execute(
                update(accounts)
                .where(accounts.c.id == account_id)
                .values(
                    status="pending",
                    password_hash=None,
                    totp_key_id=None,
                    totp_secret=None,
                    totp_pending=None,
                    totp_last_step=None,
                    updated_at=at,
                )
            )
            await conn.execute(
                delete(account_sessions).where(account_sessions.c.account_id == account_id)
            )
            await self._new_link(conn, account_id, link_hash, link_expires, at)
            await append(conn, audit, at)

    async def disable(self, account_id: int, audit: AuditEvent, at: datetime) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                update(accounts)
                .where(accounts.c.id == account_id)
                .values(status="disabled", updated_at=at)
            )
            await conn.execute(
                delete(account_sessions).where(account_sessions.c.account_id == account_id)
            )
            await self._spend_links(conn, account_id)
            await append(conn, audit, at)

    async def rehash(self, account_id: int, password_hash: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                update(accounts)
                .where(accounts.c.id == account_id)
                .values(password_hash=password_hash)
            )

    async def accept_step(self, account_id: int, step: int) -> bool:
        """Record a TOTP time step as used; False if it (or a later one) already was."""
        async with self.db.transaction() as conn:
            result = await conn.execute(
                update(accounts)
                .where(
                    accounts.c.id == account_id,
                    (accounts.c.totp_last_step.is_(None)) | (accounts.c.totp_last_step < step),
                )
                .values(totp_last_step=step)
            )
        return bool(result.rowcount == 1)

    # -- failed sign-ins ----------------------------------------------------------------------

    async def failures(self, email: str) -> Failures | None:
        async with self.db.read() as conn:
            r = (
                await conn.execute(
                    select(account_login_failures).where(account_login_failures.c.email == email)
                )
            ).first()
        return Failures(r.failures, r.locked_until, r.last_failure_at) if r else None

    async def record_failure(
        self,
        email: str,
        step: Callable[[Failures | None], Failures],
        audit: Callable[[Failures], AuditEvent | None],
        at: datetime,
    ) -> Failures:
        insert = pg_insert if self.db.dialect == "postgresql" else sqlite_insert
        table = account_login_failures
        async with self.db.transaction() as conn:
            # The row first (if missing), then a locked read: two guesses at once count twice.
            await conn.execute(
                insert(table)
                .values(email=email, failures=0, locked_until=None, last_failure_at=at)
                .on_conflict_do_nothing()
            )
            r = (
                await conn.execute(select(table).where(table.c.email == email).with_for_update())
            ).one()
            previous = (
                Failures(r.failures, r.locked_until, r.last_failure_at) if r.failures else None
            )
            now = step(previous)
            await conn.execute(
                update(table)
                .where(table.c.email == email)
                .values(
                    failures=now.failures,
                    locked_until=now.locked_until,
                    last_failure_at=now.last_failure_at,
                )
            )
            event = audit(now)
            if event is not None:
                await append(conn, event, at)
        return now

    async def clear_failures(self, email: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                delete(account_login_failures).where(account_login_failures.c.email == email)
            )

    # -- sessions -----------------------------------------------------------------------------

    async def new_session(
        self,
        id_hash: str,
        account_id: int,
        stage: str,
        at: datetime,
        replaces: str | None = None,
        audit: AuditEvent | None = None,
        stale_before: datetime | None = None,
    ) -> None:
        async with self.db.transaction() as conn:
            if stale_before is not None:
                # Sessions that idled out are never read again: drop them as new ones come.
                await conn.execute(
                    delete(account_sessions).where(account_sessions.c.last_seen_at < stale_before)
                )
            if replaces is not None:
                await conn.execute(
                    delete(account_sessions).where(account_sessions.c.id_hash == replaces)
                )
            await conn.execute(
                account_sessions.insert().values(
                    id_hash=id_hash,
                    account_id=account_id,
                    stage=stage,
                    created_at=at,
                    last_seen_at=at,
                )
            )
            if audit is not None:
                await append(conn, audit, at)

    async def session(self, id_hash: str) -> StoredSession | None:
        query = (
            select(
                accounts,
                account_sessions.c.stage,
                account_sessions.c.created_at.label("session_created_at"),
                account_sessions.c.last_seen_at,
            )
            .join(account_sessions, account_sessions.c.account_id == accounts.c.id)
            .where(account_sessions.c.id_hash == id_hash)
        )
        async with self.db.read() as conn:
            r = (await conn.execute(query)).first()
        if r is None:
            return None
        return StoredSession(_stored(r), r.stage, r.session_created_at, r.last_seen_at)

    async def touch(self, id_hash: str, at: datetime) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                update(account_sessions)
                .where(account_sessions.c.id_hash == id_hash)
                .values(last_seen_at=at)
            )

    async def end_session(self, id_hash: str, audit: AuditEvent | None, at: datetime) -> None:
        async with self.db.transaction() as conn:
            result = await conn.execute(
                delete(account_sessions).where(account_sessions.c.id_hash == id_hash)
            )
            if audit is not None and result.rowcount:
                await append(conn, audit, at)

    async def end_all(
        self, account_id: int, audit: Callable[[int], AuditEvent], at: datetime
    ) -> int:
        async with self.db.transaction() as conn:
            result = await conn.execute(
                delete(account_sessions).where(account_sessions.c.account_id == account_id)
            )
            ended = int(result.rowcount)
            await append(conn, audit(ended), at)
        return ended

    async def session_count(self, account_id: int) -> int:
        async with self.db.read() as conn:
            return int(
                (
                    await conn.execute(
                        select(func.count())
                        .select_from(account_sessions)
                        .where(
                            account_sessions.c.account_id == account_id,
                            account_sessions.c.stage == "full",
                        )
                    )
                ).scalar_one()
            )
