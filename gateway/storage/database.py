"""The engine, its SQLite pragmas, transactions that turn an unreachable database into
`Unavailable`, and the migrations (Alembic, run with the sync driver of the same database)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from gateway.errors import Unavailable

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def sync_url(url: str) -> str:
    """The same database through a synchronous driver (for Alembic and the job store)."""
    u = make_url(url)
    if u.drivername.startswith("sqlite"):
        u = u.set(drivername="sqlite")
    elif u.drivername.startswith("postgresql"):
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Our own BEGIN IMMEDIATE (below) instead of the driver's deferred BEGIN: concurrent
    # read-then-write transactions otherwise fail with "database is locked".
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    # First, so that the pragmas below wait for a busy database too.
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    # A receipt is a promise: the commit must survive power loss.
    cur.execute("PRAGMA synchronous=FULL")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError | InterfaceError | OSError | TimeoutError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


class Database:
    def __init__(self, url: str, pool_size: int = 10) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = "sqlite" if parsed.drivername.startswith("sqlite") else "postgresql"
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if self.dialect == "postgresql":
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_timeout=10)
            kwargs["connect_args"] = {"timeout": 5, "command_timeout": 30}
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self.engine.sync_engine, "begin", _sqlite_begin)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One transaction; committed when the block ends without an exception."""
        try:
            async with self.engine.begin() as conn:
                yield conn
        except Exception as exc:
            if is_unavailable(exc):
                raise Unavailable() from exc
            raise

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def migrations_current(self) -> bool:
        def check(sync_conn: Connection) -> bool:
            current = MigrationContext.configure(sync_conn).get_current_heads()
            return set(current) == set(script_directory().get_heads())

        try:
            async with self.engine.connect() as conn:
                return await conn.run_sync(check)
        except Exception:
            return False

    async def dispose(self) -> None:
        await self.engine.dispose()


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    return cfg


def _run(url: str, fn: Any, *args: Any) -> None:
    engine = create_engine(sync_url(url), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            fn(cfg, *args)
    finally:
        engine.dispose()


def is_current(url: str) -> bool:
    """Synchronously: is the database at the head migration? (False when unreachable.)"""
    engine = create_engine(sync_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            heads = MigrationContext.configure(conn).get_current_heads()
        return set(heads) == set(script_directory().get_heads())
    except Exception:
        return False
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "heads") -> None:
    _run(url, command.upgrade, revision)


def downgrade(url: str, revision: str = "base") -> None:
    _run(url, command.downgrade, revision)
