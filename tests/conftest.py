"""Fixtures: installations on SQLite and on PostgreSQL (every functional test runs on both),
and a gateway serving on real TLS sockets. With CMR_TEST_STRICT=1 (CI), a missing PostgreSQL
fails the run instead of skipping."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from gateway import logging as gwlog
from gateway.cli import init_installation
from gateway.clock import FrozenClock
from gateway.settings import Settings
from gateway.storage import database
from tests.browser import browser_context  # noqa: F401  (a fixture)
from tests.mailsink import MailSink
from tests.support import RunningGateway, running_gateway, with_contacts

STRICT = os.environ.get("CMR_TEST_STRICT") == "1"
PG_ADMIN = os.environ.get("CMR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _async_url(name: str) -> str:
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def pg_template(worker_id: str) -> Iterator[str]:
    try:
        conn = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        if STRICT:
            pytest.fail(f"PostgreSQL is required here but unreachable: {exc}")
        pytest.skip("PostgreSQL is not reachable (set CMR_TEST_STRICT=1 to fail instead)")
    name = f"cmr_tpl_{worker_id}_{os.getpid()}"
    with conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
        database.upgrade(_async_url(name))
        yield name
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    name = f"cmr_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    try:
        yield _async_url(name)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(db_kind: str, request: pytest.FixtureRequest) -> str:
    if db_kind == "sqlite":
        return ""
    return str(request.getfixturevalue("pg_url"))


def make_installation(data_dir: Path, database_url: str = "") -> Settings:
    data_dir.mkdir(parents=True)
    if database_url:
        (data_dir / "settings.toml").write_text(f'database_url = "{database_url}"\n')
    settings, _ = init_installation(data_dir)
    return settings


@pytest.fixture
def installation(tmp_path: Path, database_url: str) -> Settings:
    return make_installation(tmp_path / "var", database_url)


@pytest.fixture
def sqlite_installation(tmp_path: Path) -> Settings:
    return make_installation(tmp_path / "var")


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    gwlog.configure("debug", "json", stream)
    yield stream
    gwlog.configure("info", "json")


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime.now(UTC))


@pytest.fixture
async def gateway(
    installation: Settings, clock: FrozenClock, log_stream: io.StringIO
) -> AsyncIterator[RunningGateway]:
    async with running_gateway(installation, clock) as gw:
        yield gw


@pytest.fixture
def sink(installation: Settings) -> Iterator[MailSink]:
    s = MailSink(installation.server_cert, installation.server_key)
    s.start()
    yield s
    s.stop()


@pytest.fixture
def mail_settings(installation: Settings, sink: MailSink) -> Settings:
    settings = with_contacts(installation)
    return settings.with_overrides(
        **sink.settings(settings.data_dir / "smtp-password", settings.client_ca)
    )


@pytest.fixture
async def gw(mail_settings: Settings, clock: FrozenClock) -> AsyncIterator[RunningGateway]:
    async with running_gateway(mail_settings, clock) as g:
        yield g
