"""The two listeners, the published documents, health, metrics and the proxy header."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import aiohttp
import jsonschema
import pytest

from gateway.clock import FrozenClock
from gateway.http.app import create_app
from gateway.http.public import OPENAPI_FILE
from gateway.keys.keyring import Keyring
from gateway.settings import Settings
from tests.support import RunningGateway, running_gateway

OPENAPI = json.loads(OPENAPI_FILE.read_text())


def test_openapi_document_matches_the_routes(sqlite_installation: Settings) -> None:
    app = create_app(sqlite_installation)
    routes = {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        # The stylesheet is a file, not an operation.
        if r.resource is not None and r.method != "HEAD" and r.resource.canonical != "/static"
    }
    documented = {(m, p) for p, ops in OPENAPI["paths"].items() for m in ops}
    assert routes == documented
    assert OPENAPI["openapi"].startswith("3.1")


def _validate(instance: object, name: str) -> None:
    ref = {"$ref": f"#/components/schemas/{name}", "components": OPENAPI["components"]}
    jsonschema.validate(instance, ref)


async def test_responses_match_the_document(gateway: RunningGateway) -> None:
    psni = await gateway.agency("PSNI")
    ok = await psni.post(psni.seal())
    _validate(ok.json(), "Receipted")
    bad = await psni.post(b"x.y.z.w.v")
    _validate(bad.json(), "Problem")
    status = await psni.get(f"/v1/notifications/{ok.json()['reference']}")
    _validate(status.json(), "Status")
    jwks = await psni.get("/.well-known/jwks.json")
    _validate(jwks.json(), "JWKSet")
    ready = await psni.get("/readyz")
    _validate(ready.json(), "Readiness")


async def test_shared_paths_answer_on_both_listeners(gateway: RunningGateway) -> None:
    psni = await gateway.agency("PSNI")
    async with gateway.web_session() as web:
        for path in ("/.well-known/jwks.json", "/openapi.json", "/healthz", "/readyz"):
            on_api = await psni.get(path)
            async with web.get(path) as r:
                on_web = r.status, await r.read()
            assert on_api.status == 200 == on_web[0], path
            if path != "/readyz":
                assert on_api.body == on_web[1]
        # The agency API is not on the web listener.
        async with web.post(
            "/v1/notifications", data=b"x", headers={"Content-Type": "application/jose"}
        ) as r:
            assert r.status == 404
            assert (await r.json(content_type=None))["code"] == "not_found"
        async with web.get("/healthz") as r:
            assert r.headers["Cache-Control"] == "no-store"
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert "default-src 'none'" in r.headers["Content-Security-Policy"]


async def test_readyz_reports_pending_migrations(gateway: RunningGateway) -> None:
    from gateway.storage import database

    # In a thread: the gateway serves on this loop, and DDL waits for its open transactions.
    await asyncio.to_thread(database.downgrade, gateway.settings.effective_database_url, "base")
    async with gateway.web_session() as web, web.get("/readyz") as r:
        body = await r.json()
        assert r.status == 503
        assert r.headers["Retry-After"]
        assert body["checks"]["migrations"] == "pending"
    await asyncio.to_thread(database.upgrade, gateway.settings.effective_database_url)
    async with gateway.web_session() as web, web.get("/readyz") as r:
        assert r.status == 200


async def test_metrics(gateway: RunningGateway) -> None:
    psni = await gateway.agency("PSNI")
    await psni.post(psni.seal())
    await psni.post(b"not-an-envelope")
    async with gateway.web_session() as web, web.get("/metrics") as r:
        assert r.status == 200
        text = await r.text()
    assert 'cmr_notifications_accepted_total{format="cmr-notification/1"} 1.0' in text
    assert 'cmr_notifications_rejected_total{code="envelope_rejected"} 1.0' in text
    assert 'route="/v1/notifications",status="202"' in text
    assert "cmr_envelope_open_seconds_count 1.0" in text


async def test_unknown_path_and_method_are_problems(gateway: RunningGateway) -> None:
    psni = await gateway.agency("PSNI")
    r = await psni.get("/nothing-here")
    assert r.status == 404 and r.json()["code"] == "not_found"
    async with psni.session() as s, s.delete("/v1/notifications") as resp:
        assert resp.status == 405
        assert (await resp.json(content_type=None))["code"] == "method_not_allowed"


async def test_key_rotation_overlap(gateway: RunningGateway) -> None:
    psni = await gateway.agency("PSNI")
    old_jwk = gateway.enc_jwk()
    ring = Keyring(gateway.settings.keys_dir, gateway.clock, timedelta(days=30))
    new_kid = ring.rotate_encryption_key()

    jwks = (await psni.get("/.well-known/jwks.json")).json()
    enc = [k["kid"] for k in jwks["keys"] if k["use"] == "enc"]
    assert enc == [new_kid, old_jwk["kid"]]
    assert all("d" not in k for k in jwks["keys"])

    from gateway.intake.envelope import seal

    def sealed_to_old() -> bytes:
        return seal(psni.claims(), psni.key, "Ed25519", old_jwk).encode()

    assert (await psni.post(sealed_to_old())).status == 202
    assert (await psni.post(psni.seal())).status == 202  # to the new key
    gateway.clock.advance(timedelta(days=31))
    r = await psni.post(sealed_to_old())
    assert r.status == 401 and r.json()["code"] == "envelope_rejected"
    jwks = (await psni.get("/.well-known/jwks.json")).json()
    assert [k["kid"] for k in jwks["keys"] if k["use"] == "enc"] == [new_kid]


@pytest.fixture
def proxied(sqlite_installation: Settings) -> Settings:
    return sqlite_installation.with_overrides(trusted_proxies=("127.0.0.1/32",))


async def test_certificate_from_a_trusted_proxy(proxied: Settings, clock: FrozenClock) -> None:
    async with running_gateway(proxied, clock) as gw:
        psni = await gw.agency("PSNI")
        pem = (psni.dir / "client.crt").read_text()
        envelope = psni.seal()
        async with gw.anonymous_api_session() as s:
            async with s.post(
                "/v1/notifications",
                data=envelope,
                headers={"Content-Type": "application/jose", "X-Client-Certificate": quote(pem)},
            ) as r:
                assert r.status == 202, await r.text()
            # Without the header, or with a certificate no CA of ours signed, nothing passes.
            async with s.post(
                "/v1/notifications", data=psni.seal(), headers={"Content-Type": "application/jose"}
            ) as r:
                assert r.status == 401
                assert (await r.json())["code"] == "client_certificate_required"
            stranger = _self_signed_pem(gw.settings.data_dir.parent)
            async with s.post(
                "/v1/notifications",
                data=psni.seal(),
                headers={
                    "Content-Type": "application/jose",
                    "X-Client-Certificate": quote(stranger),
                },
            ) as r:
                assert r.status == 401


async def test_proxy_header_ignored_from_other_addresses(
    sqlite_installation: Settings, clock: FrozenClock
) -> None:
    # Only a documentation address is trusted (no traffic goes there): 127.0.0.1 is not a proxy.
    settings = sqlite_installation.with_overrides(trusted_proxies=("192.0.2.10",))
    async with running_gateway(settings, clock) as gw:
        psni = await gw.agency("PSNI")
        pem = (psni.dir / "client.crt").read_text()
        async with (
            gw.anonymous_api_session() as s,
            s.post(
                "/v1/notifications",
                data=psni.seal(),
                headers={"Content-Type": "application/jose", "X-Client-Certificate": quote(pem)},
            ) as r,
        ):
            assert r.status == 401
            assert (await r.json())["code"] == "client_certificate_required"
        # A real client certificate still works in proxy mode.
        assert (await psni.post(psni.seal())).status == 202


def _self_signed_pem(where: Path) -> str:
    """A certificate naming PSNI from a CA the gateway does not trust."""
    from gateway.keys import pki

    ca_dir = where / "stranger"
    now = datetime.now(UTC)
    pki.create_ca(ca_dir / "ca.crt", ca_dir / "ca.key", now)
    pki.issue_client_cert(
        ca_dir / "ca.crt", ca_dir / "ca.key", "PSNI", ca_dir / "c.crt", ca_dir / "c.key", now
    )
    return (ca_dir / "c.crt").read_text()


async def test_client_certificate_from_another_ca_fails_the_handshake(
    gateway: RunningGateway,
) -> None:
    import ssl

    stranger_dir = gateway.settings.data_dir.parent / "stranger"
    _self_signed_pem(gateway.settings.data_dir.parent)
    ctx = ssl.create_default_context(cafile=str(gateway.settings.client_ca))
    ctx.load_cert_chain(stranger_dir / "c.crt", stranger_dir / "c.key")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
        with pytest.raises(aiohttp.ClientError):
            async with s.get(gateway.api_url + "/healthz") as r:
                await r.read()


async def test_shutdown_ends_when_a_background_task_ignores_its_cancellation(
    sqlite_installation: Settings,
    clock: FrozenClock,
    log_stream: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fault injected into the outbox sender: it swallows its cancellation, as a library
    can (asyncio.wait_for did on 3.11). The gateway still stops, after its bounded wait, and
    says which task it left."""
    import gateway.http.app as app_module
    from gateway.outbox.sender import OutboxSender

    release = asyncio.Event()
    swallowed = 0

    async def stubborn(self: OutboxSender) -> None:
        nonlocal swallowed
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                swallowed += 1  # and carry on, as if never cancelled

    monkeypatch.setattr(app_module, "STOP_SECONDS", 0.2)
    monkeypatch.setattr(OutboxSender, "run", stubborn)
    async with asyncio.timeout(30):  # a hang fails the test instead of the suite
        async with running_gateway(sqlite_installation, clock) as gw:
            psni = await gw.agency("PSNI")
            assert (await psni.get("/readyz")).status == 200
    assert swallowed == 1
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines() if line[:1] == "{"]
    assert [line["task"] for line in lines if line["event"] == "background_task_did_not_stop"] == [
        "outbox-sender"
    ]
    left = [t for t in asyncio.all_tasks() if t.get_name() == "outbox-sender"]
    release.set()
    await asyncio.gather(*left)
