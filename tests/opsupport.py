"""Helpers for the operations tests: real `cmr-gateway serve` processes (logs in files, so a
full pipe never blocks them), agencies built from `issue_credentials`, envelopes sealed up
front, and the checks that nothing was lost or stored twice."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from joserfc.jwk import OKPKey
from sqlalchemy import func, select

from gateway.cli import init_installation, issue_credentials, main
from gateway.clock import SystemClock
from gateway.intake.envelope import AUDIENCE, seal
from gateway.keys.keyring import Keyring
from gateway.services import open_services
from gateway.settings import Settings, load_settings
from gateway.storage.tables import audit_events, notification_children, notifications
from tests.mailsink import free_port
from tests.pgcluster import PgCluster, private_cluster
from tests.support import REPO, example

CLI = [sys.executable, "-m", "gateway"]


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One private PostgreSQL per test process (xdist worker); tests may stop and start it."""
    with private_cluster() as cluster:
        yield cluster


@pytest.fixture
def private_pg(pg_cluster: PgCluster) -> PgCluster:
    pg_cluster.ensure_running()  # a failed test may have left it stopped
    return pg_cluster


def make_installation(data_dir: Path, lines: list[str] | None = None) -> Settings:
    data_dir.mkdir(parents=True)
    if lines:
        (data_dir / "settings.toml").write_text("\n".join(lines) + "\n")
    settings, _ = init_installation(data_dir)
    return settings


def append_settings(settings: Settings, lines: list[str]) -> Settings:
    path = settings.data_dir / "settings.toml"
    path.write_text(path.read_text() + "\n" + "\n".join(lines) + "\n")
    return load_settings(settings.data_dir, environ={})


@dataclass
class Sender:
    """An agency system: its TLS context and signing key, sealing to the gateway's key."""

    code: str
    ssl: ssl.SSLContext
    key: OKPKey
    enc_jwk: dict[str, Any]

    def seal(self, jti: str | None = None, body: Any = None) -> tuple[str, bytes]:
        jti = jti or f"{self.code}-{uuid.uuid4().hex}"
        claims = {
            "iss": self.code,
            "aud": AUDIENCE,
            "iat": int(time.time()),
            "jti": jti,
            "format": "cmr-notification/1",
            "body": example() if body is None else body,
        }
        return jti, seal(claims, self.key, "Ed25519", self.enc_jwk).encode()

    def session(self, base_url: str, timeout: float = 15) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            base_url=base_url,
            connector=aiohttp.TCPConnector(ssl=self.ssl, limit=32),
            timeout=aiohttp.ClientTimeout(total=timeout),
        )


async def sender_for(settings: Settings, code: str = "PSNI") -> Sender:
    out = settings.data_dir.parent / "agencies" / code
    await issue_credentials(settings, code, out)
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(out / "ca.crt"))
    ctx.load_cert_chain(out / "client.crt", out / "client.key")
    key = OKPKey.import_key(json.loads((out / "signing-key.jwk").read_text()))
    ring = Keyring(settings.keys_dir, SystemClock(), timedelta(days=settings.key_overlap_days))
    enc = next(k for k in ring.jwks()["keys"] if k["use"] == "enc")
    return Sender(code, ctx, key, enc)


class GatewayProcess:
    """`cmr-gateway serve` as a real process with its own ports; logs go to files."""

    def __init__(
        self,
        data_dir: Path,
        name: str,
        env: dict[str, str] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.name = name
        self.api_port = free_port()
        self.web_port = free_port()
        self.env = {**os.environ, "CMR_GATEWAY_LOG_FORMAT": "json", **(env or {})}
        self.log_dir = log_dir or data_dir.parent / "logs"
        self.log_dir.mkdir(exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def web_url(self) -> str:
        return f"https://127.0.0.1:{self.web_port}"

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / f"{self.name}-{self.starts}.err"

    def start(self, timeout: float = 60) -> None:
        self.starts += 1
        out_path = self.log_dir / f"{self.name}-{self.starts}.out"
        with out_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [
                    *CLI,
                    "--data-dir",
                    str(self.data_dir),
                    "serve",
                    "--api-port",
                    str(self.api_port),
                    "--web-port",
                    str(self.web_port),
                ],
                env=self.env,
                cwd=REPO,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while "web listener" not in out_path.read_text(errors="replace"):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.stderr_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start in {timeout}s")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def log_events(self, event: str) -> list[dict[str, Any]]:
        """The JSON log lines with this event, across every start of this process."""
        found = []
        for path in sorted(self.log_dir.glob(f"{self.name}-*.err")):
            for line in path.read_text(errors="replace").splitlines():
                if f'"{event}"' in line:
                    with contextlib.suppress(ValueError):
                        found.append(json.loads(line))
        return [e for e in found if e.get("event") == event]


@contextlib.contextmanager
def processes(*procs: GatewayProcess) -> Iterator[None]:
    try:
        yield
    finally:
        for p in procs:
            with contextlib.suppress(Exception):
                p.kill9()


REFERENCE = re.compile(r"CMRN-(\d{4})-(\d{4,})")


async def check_stored_once(
    settings: Settings, receipts: dict[str, tuple[str, str]], expected: int
) -> None:
    """Every receipt given is stored, each notification once, numbered without gaps, with its
    children and its audit event, and the audit chain intact."""
    async with open_services(settings) as s, s.db.transaction() as conn:
        rows = (
            await conn.execute(
                select(
                    notifications.c.id,
                    notifications.c.jti,
                    notifications.c.reference,
                    notifications.c.receipt,
                )
            )
        ).all()
        children = dict(
            (
                await conn.execute(
                    select(notification_children.c.notification_id, func.count()).group_by(
                        notification_children.c.notification_id
                    )
                )
            ).all()
        )
        received = (
            await conn.execute(
                select(audit_events.c.subject).where(
                    audit_events.c.action == "notification.received"
                )
            )
        ).all()
    async with open_services(settings) as s:
        # Not inside the transaction above: on SQLite every connection begins IMMEDIATE.
        verify = await s.audit.verify()
    assert len(rows) == expected, f"{len(rows)} stored, {expected} expected"
    by_jti = {r.jti: r for r in rows}
    assert len(by_jti) == expected
    for jti, (reference, receipt) in receipts.items():
        row = by_jti.get(jti)
        assert row is not None, f"receipted {jti} is not stored"
        assert (row.reference, row.receipt) == (reference, receipt)
    numbers = sorted(int(REFERENCE.fullmatch(r.reference).group(2)) for r in rows)  # type: ignore[union-attr]
    assert numbers == list(range(1, expected + 1)), "reference numbers skipped or repeated"
    kids = len(example()["children"])
    assert all(children.get(r.id) == kids for r in rows), "a notification without its children"
    subjects = sorted(r.subject for r in received)
    assert subjects == sorted(r.reference for r in rows), "notification.received not once each"
    assert verify.ok, verify.problem


def audit_verify(data_dir: Path) -> tuple[int, str]:
    """`cmr-gateway audit verify`, in this process (a new interpreter costs seconds here)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(["--data-dir", str(data_dir), "audit", "verify"])
    return code, out.getvalue()
