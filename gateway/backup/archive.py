"""Making and restoring a backup. The archive is a tar (streamed through the encryption, so
no plaintext copy of the keys is written) of:

    manifest.json        what is inside, with a SHA-256 of every file
    settings.toml        the installation's settings
    keys/, tls/          the gateway keys and certificates (the development CA too)
    database/gateway.db  SQLite: a consistent copy through SQLite's online backup API
    database/pg.dump     PostgreSQL: `pg_dump --format=custom` of the database

A restore writes into an empty data directory only, checks every file against the manifest,
and loads a PostgreSQL dump into an empty database (the one in the restored settings, or
--database-url)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from gateway.backup.crypto import DecryptingReader, EncryptingWriter, Protection
from gateway.errors import UsageError
from gateway.settings import SETTINGS_FILE, Settings, load_settings

FORMAT = "cmr-gateway-backup"
SQLITE_MEMBER = "database/gateway.db"
PG_MEMBER = "database/pg.dump"
ALLOWED = re.compile(
    r"(manifest\.json|settings\.toml|(keys|tls)/[^/]+|database/(gateway\.db|pg\.dump))"
)


@dataclass
class Manifest:
    created_at: str
    dialect: str
    files: dict[str, str] = field(default_factory=dict)
    outside: list[str] = field(default_factory=list)

    def as_json(self) -> bytes:
        return json.dumps(
            {
                "format": FORMAT,
                "version": 1,
                "created_at": self.created_at,
                "dialect": self.dialect,
                "files": self.files,
                "outside": self.outside,
            },
            indent=2,
            sort_keys=True,
        ).encode()

    @classmethod
    def parse(cls, raw: bytes) -> Manifest:
        try:
            data = json.loads(raw)
            if data.get("format") != FORMAT or data.get("version") != 1:
                raise ValueError
            return cls(data["created_at"], data["dialect"], dict(data["files"]), data["outside"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UsageError("the backup's manifest is damaged or of a newer version") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tool(settings: Settings, name: str) -> str:
    if settings.pg_bin_dir is not None:
        return str(settings.pg_bin_dir / name)
    found = shutil.which(name)
    if found is None:
        raise UsageError(f"{name} is not installed (or set pg_bin_dir)")
    return found


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A libpq URL without its password, and the environment that carries the password (so
    that it never shows in the process list)."""
    u = make_url(url)
    env = dict(os.environ)
    if u.password:
        env["PGPASSWORD"] = str(u.password)
    plain = u.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _run_pg(argv: list[str], env: dict[str, str], what: str) -> None:
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=3600)
    except OSError as exc:
        raise UsageError(f"cannot run {argv[0]}: {exc.strerror}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise UsageError(f"{what} failed: {last}")


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database:
        raise UsageError("an in-memory database cannot be backed up")
    return Path(database)


def _snapshot_database(settings: Settings, work: Path) -> tuple[str, str, Path]:
    url = settings.effective_database_url
    if url.startswith("sqlite"):
        target = work / "gateway.db"
        src = sqlite3.connect(_sqlite_path(url), timeout=30)
        dst = sqlite3.connect(target)
        try:
            # Online: pages are copied while the gateway keeps writing.
            src.backup(dst)
        finally:
            dst.close()
            src.close()
        return "sqlite", SQLITE_MEMBER, target
    target = work / "pg.dump"
    dsn, env = _libpq(url)
    _run_pg(
        [
            _tool(settings, "pg_dump"),
            "--format=custom",
            "--no-owner",
            "--no-privileges",
            f"--file={target}",
            f"--dbname={dsn}",
        ],
        env,
        "pg_dump",
    )
    return "postgresql", PG_MEMBER, target


def _files(settings: Settings) -> Iterator[tuple[str, Path]]:
    settings_file = settings.data_dir / SETTINGS_FILE
    if settings_file.exists():
        yield SETTINGS_FILE, settings_file
    for folder in ("keys", "tls"):
        root = settings.data_dir / folder
        if root.is_dir():
            for path in sorted(root.iterdir()):
                if path.is_file() and not path.name.endswith(".tmp"):
                    yield f"{folder}/{path.name}", path


def _outside(settings: Settings) -> list[str]:
    """Files the settings name outside the data directory: the operator backs them up."""
    names = []
    for key in (
        "tls_cert_file",
        "tls_key_file",
        "agency_ca_file",
        "web_tls_cert_file",
        "web_tls_key_file",
        "database_password_file",
        "smtp_password_file",
        "smtp_ca_file",
    ):
        path = getattr(settings, key)
        if path is not None and not Path(path).resolve().is_relative_to(settings.data_dir):
            names.append(f"{key} = {path}")
    return names


def _normalised(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def create_backup(settings: Settings, out: Path, protection: Protection) -> Manifest:
    if out.exists():
        raise UsageError(f"{out} exists: choose another name")
    if out.resolve().is_relative_to(settings.data_dir):
        raise UsageError("write the backup outside the data directory")
    partial = out.with_name(out.name + ".part")
    with tempfile.TemporaryDirectory(prefix="cmr-backup-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o700)
        dialect, member, snapshot = _snapshot_database(settings, work)
        entries = [*_files(settings), (member, snapshot)]
        manifest = Manifest(
            datetime.now(UTC).isoformat(timespec="seconds"),
            dialect,
            {name: _sha256(path) for name, path in entries},
            _outside(settings),
        )
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                writer = EncryptingWriter(fh, protection)
                with tarfile.open(fileobj=writer, mode="w|") as tar:  # type: ignore[call-overload]
                    raw = manifest.as_json()
                    info = _normalised(tarfile.TarInfo("manifest.json"))
                    info.size, info.mode = len(raw), 0o600
                    tar.addfile(info, io.BytesIO(raw))
                    for name, path in entries:
                        tar.add(path, arcname=name, recursive=False, filter=_normalised)
                writer.close()
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(partial, out)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    return manifest


def _check_empty(data_dir: Path) -> None:
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise UsageError(f"{data_dir} is not empty: restore only into an empty data directory")


def _set_database_url(settings_file: Path, url: str) -> None:
    text = settings_file.read_text(encoding="utf-8")
    line = f"database_url = {json.dumps(url)}"
    pattern = re.compile(r"^database_url\s*=.*$", re.MULTILINE)
    if pattern.search(text):
        text = pattern.sub(lambda _m: line, text, count=1)
    else:
        text = line + "\n" + text
    settings_file.write_text(text, encoding="utf-8")


def _pg_is_empty(url: str) -> bool:
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.pool import NullPool

    from gateway.storage.database import is_unavailable, sync_url

    engine = create_engine(sync_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return not inspect(conn).get_table_names()
    except Exception as exc:
        if is_unavailable(exc):
            raise UsageError("the database to restore into is unreachable") from None
        raise
    finally:
        engine.dispose()


def _extract(src: Path, protection: Protection, data_dir: Path) -> Manifest:
    manifest: Manifest | None = None
    seen: dict[str, str] = {}
    with src.open("rb") as fh:
        reader = DecryptingReader(fh, protection)
        with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
            for info in tar:
                if not info.isfile() or not ALLOWED.fullmatch(info.name):
                    raise UsageError(f"the backup holds an unexpected entry {info.name!r}")
                stream = tar.extractfile(info)
                assert stream is not None
                if info.name == "manifest.json":
                    manifest = Manifest.parse(stream.read())
                    continue
                target = data_dir / info.name
                target.parent.mkdir(mode=0o700, exist_ok=True)
                digest = hashlib.sha256()
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    for block in iter(lambda: stream.read(1 << 20), b""):  # noqa: B023
                        digest.update(block)
                        out.write(block)
                seen[info.name] = digest.hexdigest()
    if manifest is None:
        raise UsageError("the backup has no manifest")
    if seen != manifest.files:
        raise UsageError("the backup's files do not match its manifest")
    return manifest


@dataclass(frozen=True)
class Restored:
    manifest: Manifest
    settings: Settings
    notes: list[str]


def restore_backup(
    src: Path, data_dir: Path, protection: Protection, database_url: str | None = None
) -> Restored:
    data_dir = data_dir.expanduser().resolve()
    _check_empty(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    try:
        manifest = _extract(src, protection, data_dir)
        settings_file = data_dir / SETTINGS_FILE
        if database_url:
            _set_database_url(settings_file, database_url)
        staged = data_dir / "database"
        settings = load_settings(data_dir, environ={})
        url = settings.effective_database_url
        if manifest.dialect == "sqlite":
            if not url.startswith("sqlite"):
                raise UsageError(
                    "this backup holds an SQLite database: restore it without "
                    "--database-url and without a PostgreSQL database_url"
                )
            os.replace(staged / "gateway.db", _sqlite_path(url))
        else:
            if not url.startswith("postgresql"):
                raise UsageError(
                    "this backup holds a PostgreSQL dump: give --database-url "
                    "of an empty PostgreSQL database"
                )
            if not _pg_is_empty(url):
                raise UsageError("the database to restore into is not empty")
            dsn, env = _libpq(url)
            _run_pg(
                [
                    _tool(settings, "pg_restore"),
                    "--no-owner",
                    "--no-privileges",
                    "--exit-on-error",
                    "--single-transaction",
                    f"--dbname={dsn}",
                    str(staged / "pg.dump"),
                ],
                env,
                "pg_restore",
            )
        shutil.rmtree(staged, ignore_errors=True)
    except BaseException:
        # Leave nothing that looks like an installation behind a failed restore.
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    notes = [f"not in the backup, restore it separately: {o}" for o in manifest.outside]
    return Restored(manifest, settings, notes)


def describe(manifest: Manifest) -> dict[str, Any]:
    return {
        "created_at": manifest.created_at,
        "dialect": manifest.dialect,
        "files": len(manifest.files),
    }
