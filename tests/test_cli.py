"""The command line as an operator and an agency integrator use it: init, serve, credentials,
send, key registration, audit verify. Real processes where the README says so."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from gateway.audit.chain import AuditEvent
from gateway.cli import main
from gateway.clock import SystemClock
from gateway.services import open_services
from gateway.settings import Settings
from tests.support import EXAMPLES, REPO

CLI = [sys.executable, "-m", "gateway"]


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith("gateway.db")
    }


def test_init_twice_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "var"
    assert main(["init", "--data-dir", str(data)]) == 0
    first = tree_digest(data)
    assert {"settings.toml", "keys/keyring.json", "tls/ca.crt", "tls/server.crt"} <= set(first)
    assert (data / "gateway.db").exists()
    capsys.readouterr()
    assert main(["init", "--data-dir", str(data)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert tree_digest(data) == first
    assert oct((data / "keys").stat().st_mode & 0o777) == "0o700"
    key_files = [p for p in (data / "keys").iterdir() if p.suffix in (".jwk", ".key")]
    assert key_files and all(p.stat().st_mode & 0o077 == 0 for p in key_files)


def test_quick_start_serve_and_send(tmp_path: Path) -> None:
    """What the README tells a new user to do, as real processes."""
    data = tmp_path / "var"
    env = {**os.environ, "CMR_GATEWAY_DATA_DIR": str(data)}
    subprocess.run([*CLI, "init"], env=env, check=True, capture_output=True, cwd=REPO)
    serve = subprocess.Popen(
        [*CLI, "serve", "--api-port", "0", "--web-port", "0"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert serve.stdout is not None
        api = serve.stdout.readline().strip()
        web = serve.stdout.readline().strip()
        assert re.search(r"https://127\.0\.0\.1:\d+$", api), api
        assert re.search(r"https://127\.0\.0\.1:\d+$", web), web
        hint = serve.stdout.readline() + serve.stdout.readline() + serve.stdout.readline()
        assert "agency credentials" in hint and "send --credentials" in hint
        api_url = api.split()[-1]
        creds = data / "credentials" / "PSNI"
        subprocess.run(
            [*CLI, "agency", "credentials", "PSNI", "--out", str(creds)],
            env=env,
            check=True,
            capture_output=True,
            cwd=REPO,
        )
        assert {p.name for p in creds.iterdir()} == {
            "signing-key.jwk",
            "client.crt",
            "client.key",
            "ca.crt",
            "gateway.jwks.json",
        }
        sent = subprocess.run(
            [
                *CLI,
                "send",
                "--credentials",
                str(creds),
                "--url",
                api_url,
                str(EXAMPLES / "harm-route.notification.json"),
            ],
            env=env,
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert sent.returncode == 0, sent.stderr
        assert re.search(r"accepted: CMRN-\d{4}-0001", sent.stdout)
        assert "receipt verified" in sent.stdout
    finally:
        serve.send_signal(signal.SIGTERM)
        _out, err = serve.communicate(timeout=20)
    assert serve.returncode == 0
    assert "Traceback" not in err


async def test_add_key_and_revoke_key(installation: Settings, tmp_path: Path) -> None:
    from joserfc.jwk import ECKey

    key = ECKey.generate_key("P-256", private=True)
    key.ensure_kid()
    public_file = tmp_path / "public.jwk"
    public_file.write_text(json.dumps(key.as_dict(private=False)))
    private_file = tmp_path / "private.jwk"
    private_file.write_text(json.dumps(key.as_dict(private=True)))
    d = str(installation.data_dir)
    assert (
        await asyncio.to_thread(
            main, ["--data-dir", d, "agency", "add-key", "SPPG", "--jwk", str(private_file)]
        )
        == 2
    )
    assert (
        await asyncio.to_thread(
            main, ["--data-dir", d, "agency", "add-key", "SPPG", "--jwk", str(public_file)]
        )
        == 0
    )
    assert (
        await asyncio.to_thread(
            main, ["--data-dir", d, "agency", "add-key", "SPPG", "--jwk", str(public_file)]
        )
        == 2
    )
    assert (
        await asyncio.to_thread(
            main, ["--data-dir", d, "agency", "add-key", "NOPE", "--jwk", str(public_file)]
        )
        == 2
    )
    async with open_services(installation) as s:
        found = await s.agency_keys.find("SPPG", str(key.kid))
        assert found is not None and found.alg == "ES256" and found.revoked_at is None
        assert "d" not in found.jwk
    assert (
        await asyncio.to_thread(
            main, ["--data-dir", d, "agency", "revoke-key", "SPPG", "--", str(key.kid)]
        )
        == 0
    )
    assert (
        await asyncio.to_thread(
            main, ["--data-dir", d, "agency", "revoke-key", "SPPG", "--", str(key.kid)]
        )
        == 2
    )
    async with open_services(installation) as s:
        found = await s.agency_keys.find("SPPG", str(key.kid))
        assert found is not None and found.revoked_at is not None
        actions = [e.action for e in await s.audit.events("SPPG")]
    assert actions == ["agency_key.added", "agency_key.revoked"]


async def _some_events(settings: Settings, n: int = 5) -> None:
    async with open_services(settings) as s:
        for i in range(n):
            await s.audit.record(
                AuditEvent("test", "test.event", None, {"i": i}), SystemClock().now()
            )


async def _tamper(settings: Settings, sql: str) -> None:
    async with open_services(settings) as s, s.db.transaction() as conn:
        await conn.execute(text(sql))


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "UPDATE audit_events SET details = 'changed' WHERE seq = 3",
            "broken at event 3: event 3 was altered",
        ),
        ("DELETE FROM audit_events WHERE seq = 2", "broken at event 2: event 2 is missing"),
        ("DELETE FROM audit_events WHERE seq = 5", "broken at event 5"),
        ("UPDATE audit_events SET actor = 'someone-else' WHERE seq = 1", "broken at event 1"),
    ],
)
async def test_audit_verify_names_the_first_broken_link(
    installation: Settings, sql: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await _some_events(installation)
    d = str(installation.data_dir)
    assert await asyncio.to_thread(main, ["--data-dir", d, "audit", "verify"]) == 0
    assert "intact: 5 events" in capsys.readouterr().out
    await _tamper(installation, sql)
    assert await asyncio.to_thread(main, ["--data-dir", d, "audit", "verify"]) == 1
    err = capsys.readouterr().err
    assert expected in err


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "CMR_GATEWAY_DATA_DIR": str(tmp_path / "missing")}
    cases = [
        [*CLI, "audit", "verify"],
        [*CLI, "send", "--credentials", str(tmp_path), str(tmp_path / "nofile.json")],
        [*CLI, "agency", "credentials", "PSNI"],
        [*CLI, "no-such-command"],
    ]
    for argv in cases:
        r = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=REPO, timeout=60)
        assert r.returncode != 0, argv
        assert "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip().splitlines()[-1].startswith("error: "), r.stderr


def test_database_unavailable_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "var"
    data.mkdir()
    (data / "settings.toml").write_text(
        'database_url = "postgresql+asyncpg://nobody@127.0.0.1:1/none"\n'
    )
    r = subprocess.run(
        [*CLI, "--data-dir", str(data), "init"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert r.returncode == 3
    assert r.stderr.strip() == "error: the database is unavailable"


@pytest.mark.postgres
def test_postgres_is_reachable_in_strict_mode(pg_url: str) -> None:
    """The suite must not silently lose its PostgreSQL half."""
    with psycopg.connect(pg_url.replace("+asyncpg", "")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
