"""The engine, its SQLite pragmas, transactions that turn an unreachable database into
`Unavailable`, and the migrations (Alembic, run with the sync driver of the same database)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from gateway.errors import Unavailable

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
READ_ONLY_OPTION = "cmr_read_only"
# Threads (and connections) for synchronous units of work: the intake writer and the
# coalesced lookups, each of which has at most one unit under way.
UNIT_THREADS = 3
# On PostgreSQL, as the async engine's command timeout: a unit never waits for ever.
PG_STATEMENT_TIMEOUT_MS = 30_000

T = TypeVar("T")


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
    # A read (Database.read) takes no write lock: in WAL mode readers never wait for the
    # writer, and a BEGIN IMMEDIATE would queue them behind it in SQLite's busy handler.
    read_only = conn.get_execution_options().get(READ_ONLY_OPTION, False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


# SQLSTATEs that say the server is away, shutting down, starting up, out of resources, or that
# the transaction lost a race it may win when tried again: an outage to the client, not a bug.
# Some drivers raise these as plain DBAPIError ("the database system is shutting down").
# 57014: a statement cancelled by the statement timeout of the units' connections.
_TRANSIENT_SQLSTATES = ("08", "53", "57014", "57P01", "57P02", "57P03", "58", "40001", "40P01")


def is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError | InterfaceError | OSError | TimeoutError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return isinstance(state, str) and state.startswith(_TRANSIENT_SQLSTATES)


class Database:
    def __init__(self, url: str, pool_size: int = 10) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = "sqlite" if parsed.drivername.startswith("sqlite") else "postgresql"
        # A pre-ping finds server connections that died; an SQLite file has none, and the
        # ping is one more round trip to the driver's thread on every checkout.
        kwargs: dict[str, Any] = {"pool_pre_ping": self.dialect == "postgresql"}
        if self.dialect == "postgresql":
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_timeout=10)
            kwargs["connect_args"] = {"timeout": 5, "command_timeout": 30}
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        self._sync: tuple[Engine, ThreadPoolExecutor] | None = None
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

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only unit of work: on SQLite a deferred transaction (no write lock)."""
        try:
            async with self.engine.connect() as conn:
                await conn.execution_options(**{READ_ONLY_OPTION: True})
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

    # -- whole units of work as synchronous functions ------------------------------------------
    #
    # Through the async SQLite driver every statement is several hand-offs to the driver's
    # thread (cursor, execute, fetch, close) and a transaction a few more; under load those
    # hand-offs cost more than SQLite itself (docs/performance.md). On PostgreSQL each statement
    # of a unit awaited on the event loop waits its turn behind every request the loop is
    # serving, so a batch of ten statements took tens of milliseconds under load. A hot unit
    # of work written as a function of a synchronous Connection therefore runs in one hand-off,
    # in a thread of the Database's own with a synchronous engine on the same database (on
    # SQLite the same pragmas and BEGIN IMMEDIATE for writers; on PostgreSQL psycopg).

    async def run_transaction(self, fn: Callable[[Connection], T]) -> T:
        """`fn(conn)` in one transaction, committed when it returns."""
        return await self._in_unit_thread(fn, read_only=False)

    async def run_read(self, fn: Callable[[Connection], T]) -> T:
        """`fn(conn)` as a read-only unit of work (no write lock on SQLite)."""
        return await self._in_unit_thread(fn, read_only=True)

    def _unit_threads(self) -> tuple[Engine, ThreadPoolExecutor]:
        if self._sync is None:
            sqlite = self.dialect == "sqlite"
            engine = create_engine(
                sync_url(self.url),
                pool_size=UNIT_THREADS,
                max_overflow=0,
                pool_pre_ping=not sqlite,
                connect_args=(
                    {"check_same_thread": False}
                    if sqlite
                    else {
                        "connect_timeout": 5,
                        "options": f"-c statement_timeout={PG_STATEMENT_TIMEOUT_MS}",
                    }
                ),
            )
            if sqlite:
                event.listen(engine, "connect", _sqlite_pragmas)
                event.listen(engine, "begin", _sqlite_begin)
            executor = ThreadPoolExecutor(UNIT_THREADS, thread_name_prefix=f"{self.dialect}-unit")
            self._sync = (engine, executor)
        return self._sync

    async def _in_unit_thread(self, fn: Callable[[Connection], T], read_only: bool) -> T:
        engine, executor = self._unit_threads()

        def unit() -> T:
            with engine.connect() as conn:
                if read_only:
                    conn.execution_options(**{READ_ONLY_OPTION: True})
                with conn.begin():
                    return fn(conn)

        try:
            # Once started the unit runs to its end: a caller that stops waiting does not
            # stop a commit half-way (the database's own atomicity covers a killed process).
            return await asyncio.get_running_loop().run_in_executor(executor, unit)
        except Exception as exc:
            if is_unavailable(exc):
                raise Unavailable() from exc
            raise

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._sync is not None:
            engine, executor = self._sync
            self._sync = None
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)
            engine.dispose()


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    return cfg


def _run(url: str, fn: Any, *args: Any) -> None:
    engine = _sync_engine(url)
    try:
        with engine.begin() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            fn(cfg, *args)
    finally:
        engine.dispose()


def is_current(url: str) -> bool:
    """Synchronously: is the database at the head migration? (False when unreachable.)"""
    engine = _sync_engine(url)
    try:
        with engine.connect() as conn:
            heads = MigrationContext.configure(conn).get_current_heads()
        return set(heads) == set(script_directory().get_heads())
    except Exception:
        return False
    finally:
        engine.dispose()


def _sync_engine(url: str) -> Any:
    # A serving gateway may hold SQLite's write lock for a moment: wait for it, as the async
    # engine does, rather than failing a migration with "database is locked".
    connect_args = {"timeout": 30} if url.startswith("sqlite") else {}
    return create_engine(sync_url(url), poolclass=NullPool, connect_args=connect_args)


def upgrade(url: str, revision: str = "head") -> None:
    _run(url, command.upgrade, revision)


def downgrade(url: str, revision: str = "base") -> None:
    _run(url, command.downgrade, revision)
