"""Migrations run up and down on both databases, and the model matches the migrations."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect
from sqlalchemy.pool import NullPool

from gateway.storage import database
from gateway.storage.tables import metadata


def _tables(url: str) -> set[str]:
    engine = create_engine(database.sync_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(database_url: str, tmp_path: object) -> None:
    url = database_url or f"sqlite+aiosqlite:///{tmp_path}/m.db"
    if database_url:
        database.downgrade(url, "base")
    assert _tables(url) == set()
    database.upgrade(url)
    assert database.is_current(url)
    assert _tables(url) == set(metadata.tables)
    database.downgrade(url, "base")
    assert _tables(url) == set()
    assert not database.is_current(url)
    database.upgrade(url)
    assert _tables(url) == set(metadata.tables)


def test_one_head() -> None:
    # Branches are merged before a release: a new migration must have exactly one parent.
    assert len(database.script_directory().get_heads()) == 1


def test_no_model_change_without_a_migration(database_url: str, tmp_path: object) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    url = database_url or f"sqlite+aiosqlite:///{tmp_path}/m.db"
    database.upgrade(url)
    engine = create_engine(database.sync_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    assert diff == []
