"""The drop-folder channel: only complete files are taken, each result is written beside the
file, storage trouble leaves the file for later, and a gateway killed while it works through
200 files processes each of them exactly once after the restart."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import OKPKey
from sqlalchemy import func, select

from adapters.channels.dropfolder import DropFolder
from gateway.cli import issue_credentials, main
from gateway.clock import SystemClock
from gateway.errors import Unavailable
from gateway.intake.envelope import AUDIENCE, seal
from gateway.intake.receipts import verify_receipt
from gateway.intake.service import SubmitResult
from gateway.keys.keyring import Keyring
from gateway.services import open_services
from gateway.settings import Settings
from gateway.storage.tables import notifications
from tests.conftest import make_installation
from tests.mailsink import free_port
from tests.support import REPO, example

Sealer = Callable[..., bytes]


async def sealer(settings: Settings, code: str = "PSNI") -> Sealer:
    """Seal envelopes as agency `code` would, with credentials registered in `settings`."""
    out = settings.data_dir.parent / "agencies" / code
    await issue_credentials(settings, code, out)
    key = OKPKey.import_key(json.loads((out / "signing-key.jwk").read_text()))
    ring = Keyring(settings.keys_dir, SystemClock(), timedelta(days=settings.key_overlap_days))
    enc = next(k for k in ring.jwks()["keys"] if k["use"] == "enc")
    counter = iter(range(10**6))

    def make(jti: str | None = None, **overrides: Any) -> bytes:
        claims = {
            "iss": code,
            "aud": AUDIENCE,
            "iat": int(time.time()),
            "jti": jti or f"{code}-drop-{os.getpid()}-{next(counter)}-{time.time_ns()}",
            "format": "cmr-notification/1",
            "body": example(),
            **overrides,
        }
        return seal(claims, key, "Ed25519", enc).encode()

    return make


def drop(folder: Path, name: str, data: bytes) -> Path:
    """What an SFTP client that follows the contract does: write `.part`, then rename."""
    part = folder / f"{name}.part"
    part.write_bytes(data)
    final = folder / name
    part.rename(final)
    return final


def jwks_of(settings: Settings) -> dict[str, Any]:
    ring = Keyring(settings.keys_dir, SystemClock(), timedelta(days=settings.key_overlap_days))
    return ring.jwks()


async def stored_count(settings: Settings) -> int:
    async with open_services(settings) as s, s.db.transaction() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(notifications))).scalar_one()
        )


def channel(root: Path, agencies: tuple[str, ...] = ("PSNI", "EA")) -> DropFolder:
    return DropFolder(root, agencies, poll_seconds=1, max_bytes=1024 * 1024)


async def test_only_complete_files_are_taken_and_results_are_written(
    installation: Settings, tmp_path: Path
) -> None:
    make = await sealer(installation)
    root = tmp_path / "drop"
    folder = channel(root)
    await folder.start()
    incoming = root / "PSNI" / "incoming"
    assert sorted(p.name for p in (root / "PSNI").iterdir()) == ["failed", "incoming", "processed"]

    envelope = make()
    (incoming / "first.jwe.part").write_bytes(envelope[: len(envelope) // 2])
    (incoming / ".hidden.jwe").write_bytes(make())
    (incoming / "notes.txt").write_text("not an envelope")
    async with open_services(installation) as s:
        assert await folder.scan(s.intake.submit) == 0
        assert await stored_count(installation) == 0
        assert (incoming / "first.jwe.part").exists()

        # The upload completes: the client writes the rest, then renames.
        (incoming / "first.jwe.part").write_bytes(envelope)
        (incoming / "first.jwe.part").rename(incoming / "first.jwe")
        assert await folder.scan(s.intake.submit) == 1

        processed = root / "PSNI" / "processed"
        assert (processed / "first.jwe").read_bytes() == envelope
        result = json.loads((processed / "first.receipt.json").read_text())
        assert set(result) == {"reference", "receipt"}
        assert result["reference"].startswith("CMRN-")
        payload = verify_receipt(result["receipt"], jwks_of(installation))
        assert payload["sub"] == "PSNI"
        assert payload["envelope_sha256"] == hashlib.sha256(envelope).hexdigest()
        assert not (incoming / "first.jwe").exists()
        assert sorted(p.name for p in incoming.iterdir()) == [".hidden.jwe", "notes.txt"]

        # Killed after the result was written and before the move: the file is still in
        # incoming. It is submitted again and filed under its own name with the same result.
        os.rename(processed / "first.jwe", incoming / "first.jwe")
        assert await folder.scan(s.intake.submit) == 1
        assert json.loads((processed / "first.receipt.json").read_text()) == result
        assert sorted(p.name for p in processed.iterdir()) == ["first.jwe", "first.receipt.json"]

        # The same file again, under the same name: the original receipt, filed beside the first.
        drop(incoming, "first.jwe", envelope)
        assert await folder.scan(s.intake.submit) == 1
        again = json.loads((processed / "first~1.receipt.json").read_text())
        assert again == result
        assert (processed / "first.receipt.json").exists()
        assert await stored_count(installation) == 1
        events = [e.action for e in await s.audit.events(result["reference"])]
        assert events == ["notification.received"]


async def test_rejected_files_go_to_failed_with_the_problem(
    installation: Settings, tmp_path: Path
) -> None:
    make = await sealer(installation)
    root = tmp_path / "drop"
    folder = channel(root)
    await folder.start()
    incoming = root / "PSNI" / "incoming"
    good = make()
    tampered = good[:-10] + (b"A" if good[-10:-9] != b"A" else b"B") + good[-9:]
    drop(incoming, "tampered.jwe", tampered)
    # PSNI's envelope dropped into EA's folder: the folder is the sender.
    drop(root / "EA" / "incoming", "misfiled.jwe", make())
    (incoming / "huge.jwe").write_bytes(b"x" * (1024 * 1024 + 1))
    async with open_services(installation) as s:
        assert await folder.scan(s.intake.submit) == 3
        assert (await s.audit.verify()).ok
    assert await stored_count(installation) == 0

    failed = root / "PSNI" / "failed"
    assert (failed / "tampered.jwe").read_bytes() == tampered
    problem = json.loads((failed / "tampered.problem.json").read_text())
    assert problem["code"] == "envelope_rejected"
    assert problem["status"] == 401
    assert len(problem["request_id"]) == 16
    assert "cause" not in problem  # the cause is for the log, never for the sender
    assert json.loads((failed / "huge.problem.json").read_text())["code"] == "payload_too_large"
    misfiled = json.loads((root / "EA" / "failed" / "misfiled.problem.json").read_text())
    assert misfiled["code"] == "agency_mismatch"
    assert list(incoming.iterdir()) == []
    assert list((root / "PSNI" / "processed").iterdir()) == []


async def test_storage_down_leaves_the_file_for_the_next_pass(tmp_path: Path) -> None:
    root = tmp_path / "drop"
    folder = channel(root, ("PSNI",))
    await folder.start()
    incoming = root / "PSNI" / "incoming"
    drop(incoming, "a.jwe", b"envelope-a")
    drop(incoming, "b.jwe", b"envelope-b")
    target = tmp_path / "elsewhere.jwe"
    target.write_bytes(b"not the agency's")
    (incoming / "link.jwe").symlink_to(target)
    calls: list[tuple[str, bytes, str]] = []
    down = True

    async def submit(agency: str, raw: bytes, request_id: str, channel: str) -> SubmitResult:
        calls.append((agency, raw, channel))
        if down:
            raise Unavailable()
        return SubmitResult(True, f"CMRN-2026-{len(calls):04d}", f"receipt-{raw.decode()}")

    assert await folder.scan(submit) == 0
    # The first file met the outage; the pass stopped there rather than failing the rest.
    assert calls == [("PSNI", b"envelope-a", "dropfolder")]
    assert sorted(p.name for p in incoming.iterdir()) == ["a.jwe", "b.jwe", "link.jwe"]
    assert list((root / "PSNI" / "failed").iterdir()) == []

    down = False
    assert await folder.scan(submit) == 2
    processed = root / "PSNI" / "processed"
    assert sorted(p.name for p in processed.iterdir()) == [
        "a.jwe",
        "a.receipt.json",
        "b.jwe",
        "b.receipt.json",
    ]
    assert json.loads((processed / "b.receipt.json").read_text())["receipt"] == "receipt-envelope-b"
    # A symbolic link is never followed: whoever writes here cannot make the gateway read files.
    assert [p.name for p in incoming.iterdir()] == ["link.jwe"]
    assert b"not the agency's" not in b"".join(raw for _, raw, _ in calls)


# -- a real gateway process, killed while it works ---------------------------------------------


def _start_gateway(data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CMR_GATEWAY_DATA_DIR": str(data_dir),
        "CMR_GATEWAY_LOG_LEVEL": "warning",
        "CMR_GATEWAY_LOG_FORMAT": "json",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--api-port",
                str(free_port()),
                "--web-port",
                str(free_port()),
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def _wait(condition: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the gateway exited: {log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {log.read_text()[-3000:]}")
        await asyncio.sleep(0.005)


def _count(folder: Path, suffix: str) -> int:
    return sum(1 for p in folder.iterdir() if p.name.endswith(suffix))


@pytest.mark.slow
async def test_killed_gateway_processes_every_file_exactly_once(tmp_path: Path) -> None:
    settings = make_installation(tmp_path / "var")
    root = tmp_path / "drop"
    with (settings.data_dir / "settings.toml").open("a") as fh:
        fh.write(f'\ndrop_dir = "{root}"\ndrop_poll_seconds = 1\nscheduler = "off"\n')
    make = await sealer(settings)
    incoming = root / "PSNI" / "incoming"
    processed = root / "PSNI" / "processed"
    incoming.mkdir(parents=True)
    envelopes = {f"n{i:03d}.jwe": make() for i in range(200)}
    names = sorted(envelopes)
    for name in names[:120]:
        drop(incoming, name, envelopes[name])

    log = tmp_path / "gateway.log"
    proc = _start_gateway(settings.data_dir, log)
    try:
        await _wait(lambda: processed.exists() and _count(processed, ".jwe") >= 10, proc, log)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    at_kill = _count(processed, ".jwe")
    print("KILL", time.monotonic(), at_kill)
    assert 0 < at_kill < 120, "the gateway was not killed in the middle of its work"
    # More arrive while the gateway is down.
    for name in names[120:]:
        drop(incoming, name, envelopes[name])

    proc = _start_gateway(settings.data_dir, log)
    try:
        await _wait(
            lambda: _count(processed, ".jwe") >= 200 and not any(incoming.iterdir()), proc, log
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert "drop folder:" in log.read_text()

    # Every file once, with its own receipt; nothing failed, nothing left, nothing twice.
    assert sorted(p.name for p in incoming.iterdir()) == []
    assert list((root / "PSNI" / "failed").iterdir()) == []
    files = sorted(p.name for p in processed.iterdir())
    assert files == sorted([*names, *(n.replace(".jwe", ".receipt.json") for n in names)])
    jwks = jwks_of(settings)
    references = []
    for name in names:
        assert (processed / name).read_bytes() == envelopes[name]
        result = json.loads((processed / name.replace(".jwe", ".receipt.json")).read_text())
        payload = verify_receipt(result["receipt"], jwks)
        assert payload["envelope_sha256"] == hashlib.sha256(envelopes[name]).hexdigest()
        assert payload["reference"] == result["reference"]
        references.append(result["reference"])
    assert len(set(references)) == 200

    assert await stored_count(settings) == 200
    async with open_services(settings) as s:
        received = [e for e in await s.audit.events() if e.action == "notification.received"]
        assert (await s.audit.verify()).ok
    assert len(received) == 200
    assert Counter(e.subject for e in received).most_common(1)[0][1] == 1
    # The operator's check, as the operator runs it (in a thread: it runs its own event loop).
    code = await asyncio.to_thread(main, ["--data-dir", str(settings.data_dir), "audit", "verify"])
    assert code == 0
