"""Backup and restore, as a drill: an installation with notifications is backed up while it
serves, restored into a new data directory (and, on PostgreSQL, a new empty database), served
from there; the notifications decrypt, a resend gets its original receipt, and the audit
chain verifies. Plus what a restore must refuse."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.backup.crypto import CHUNK, DecryptingReader, EncryptingWriter, Protection
from gateway.cli import main
from gateway.clock import FrozenClock
from gateway.errors import UsageError
from gateway.services import open_services
from gateway.settings import Settings, load_settings
from tests import opsupport
from tests.opsupport import make_installation
from tests.pgcluster import PgCluster
from tests.support import example, running_gateway

# The private PostgreSQL (fixtures shared through tests/opsupport.py).
pg_cluster = opsupport.pg_cluster
private_pg = opsupport.private_pg

PASSPHRASE = "correct horse battery staple"


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(list(argv))
    return code, out.getvalue()


async def _decrypted_children(settings: Settings, reference: str) -> list[dict[str, object]]:
    async with open_services(settings) as s:
        doc = await s.requests.repo.notification(reference)
        assert doc is not None
        plain = s.cipher.decrypt(doc.key_id, doc.payload, f"{doc.agency}\x00{doc.jti}".encode())
    children: list[dict[str, object]] = json.loads(plain)["children"]
    return children


async def _drill(
    tmp_path: Path, settings: Settings, how: list[str], restore_how: list[str], extra: list[str]
) -> None:
    clock = FrozenClock(datetime.now(UTC))
    backup = tmp_path / "backups" / "gateway.cmrbak"
    backup.parent.mkdir()
    async with running_gateway(settings, clock) as gw:
        psni = await gw.agency("PSNI")
        sent = []
        for _ in range(3):
            envelope = psni.seal()
            r = await psni.post(envelope)
            assert r.status == 202
            sent.append((envelope, r.json()))
        # Online: the gateway keeps serving while the backup is taken.
        d = str(settings.data_dir)
        code, out = await asyncio.to_thread(
            _cli, "--data-dir", d, "backup", "--out", str(backup), *how
        )
        assert code == 0, out
    assert backup.stat().st_mode & 0o077 == 0
    raw = backup.read_bytes()
    assert b"BEGIN" not in raw and b"CMRN-" not in raw  # nothing readable inside

    target = tmp_path / "restored"
    code, out = await asyncio.to_thread(
        _cli, "restore", str(backup), "--data-dir", str(target), *restore_how, *extra
    )
    assert code == 0, out
    assert "audit chain intact" in out
    restored = load_settings(target, environ={})
    assert (target / "keys" / "keyring.json").exists()
    assert (target / "tls" / "ca.crt").read_bytes() == settings.client_ca.read_bytes()

    child = example()["children"][0]
    for _envelope, body in sent:
        children = await _decrypted_children(restored, body["reference"])
        assert children[0]["given_name"] == child["given_name"]
    async with running_gateway(restored, clock) as gw2:
        psni2 = await gw2.agency("PSNI")
        # The same agency key and CA as before the restore: its earlier envelope answers
        # with the receipt it got before.
        psni2.key, psni2.ssl = psni.key, psni.ssl
        envelope, body = sent[0]
        r = await psni2.post(envelope)
        assert r.status == 200 and r.json() == body
        status = await psni2.get(f"/v1/notifications/{body['reference']}")
        assert status.status == 200
    code, out = await asyncio.to_thread(_cli, "--data-dir", str(target), "audit", "verify")
    assert code == 0 and "audit chain intact" in out


async def test_backup_restore_drill_sqlite_passphrase(
    tmp_path: Path, sqlite_installation: Settings
) -> None:
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE + "\n")
    how = ["--passphrase-file", str(secret)]
    await _drill(tmp_path, sqlite_installation, how, how, [])


@pytest.mark.slow
async def test_backup_restore_drill_postgres_recipient(
    tmp_path: Path, private_pg: PgCluster
) -> None:
    url = private_pg.create_database()
    settings = make_installation(
        tmp_path / "var", [f'database_url = "{url}"', f'pg_bin_dir = "{private_pg.bindir}"']
    )
    key = tmp_path / "backup-key"
    code, out = await asyncio.to_thread(_cli, "backup-keygen", "--out", str(key))
    assert code == 0, out
    assert key.stat().st_mode & 0o077 == 0
    target_url = private_pg.create_database()
    await _drill(
        tmp_path,
        settings,
        ["--recipient", f"{key}.pub"],
        ["--identity", str(key)],
        ["--database-url", target_url],
    )
    # Restoring again into the same, now full, database is refused.
    code, out = await asyncio.to_thread(
        _cli,
        "restore",
        str(tmp_path / "backups" / "gateway.cmrbak"),
        "--data-dir",
        str(tmp_path / "again"),
        "--identity",
        str(key),
        "--database-url",
        target_url,
    )
    assert code == 2 and "not empty" in out
    assert not (tmp_path / "again").exists()


async def test_restore_refuses(tmp_path: Path, sqlite_installation: Settings) -> None:
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE)
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase at all")
    backup = tmp_path / "b.cmrbak"
    d = str(sqlite_installation.data_dir)
    assert (
        _cli("--data-dir", d, "backup", "--out", str(backup), "--passphrase-file", str(secret))[0]
        == 0
    )
    code, out = _cli(
        "--data-dir", d, "backup", "--out", str(backup), "--passphrase-file", str(secret)
    )
    assert code == 2 and "exists" in out

    def restore(into: Path, src: Path = backup, key: Path = secret) -> tuple[int, str]:
        return _cli("restore", str(src), "--data-dir", str(into), "--passphrase-file", str(key))

    # Into a directory that is not empty.
    assert restore(sqlite_installation.data_dir) == (
        2,
        f"error: {sqlite_installation.data_dir} is not empty: restore only into an empty "
        "data directory\n",
    )
    # With the wrong passphrase, or a damaged file: nothing is left behind.
    code, out = restore(tmp_path / "r1", key=wrong)
    assert code == 2 and "wrong passphrase" in out
    assert not (tmp_path / "r1").exists()
    damaged = tmp_path / "damaged.cmrbak"
    data = bytearray(backup.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))
    code, out = restore(tmp_path / "r2", src=damaged)
    assert code == 2 and "damaged" in out
    truncated = tmp_path / "truncated.cmrbak"
    truncated.write_bytes(backup.read_bytes()[: len(data) - 100])
    code, out = restore(tmp_path / "r3", src=truncated)
    assert code == 2 and ("truncated" in out or "damaged" in out)
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()
    short = tmp_path / "short"
    short.write_text("too short")
    code, out = _cli(
        "--data-dir", d, "backup", "--out", str(tmp_path / "x"), "--passphrase-file", str(short)
    )
    assert code == 2 and "at least 12" in out


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK])
def test_stream_round_trip_and_chunk_boundaries(tmp_path: Path, size: int) -> None:
    from gateway.backup.crypto import generate_recipient_key

    # A recipient key, not a passphrase: scrypt's deliberate cost is not what is tested here.
    public = generate_recipient_key(tmp_path / "key")
    protection = Protection(recipient=public, identity=tmp_path / "key")
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    sealed = io.BytesIO()
    writer = EncryptingWriter(sealed, protection)
    writer.write(data[: size // 3])
    writer.write(data[size // 3 :])
    writer.close()
    reader = DecryptingReader(io.BytesIO(sealed.getvalue()), protection)
    assert reader.read() == data
    # Dropping the last chunk (a clean cut at a chunk boundary) is noticed.
    if size > CHUNK:
        cut = sealed.getvalue()[: -(size % CHUNK or CHUNK) - 16 - 4]
        with pytest.raises(UsageError):
            DecryptingReader(io.BytesIO(cut), protection).read()
