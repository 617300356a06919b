"""Test helpers: a running gateway on real sockets, agencies with real credentials, and ways
to build envelopes, good and hostile, the way an outside client would."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from joserfc import jwe
from joserfc.jwe import JWERegistry
from joserfc.jwk import ECKey, Key, OKPKey

from gateway.cli import issue_credentials, serve
from gateway.clock import FrozenClock
from gateway.intake.envelope import AUDIENCE, JWE_ALG, JWE_ENC, NOTIFICATION_TYP, seal
from gateway.services import Services, open_services
from gateway.settings import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "schemas" / "examples"


def example(name: str = "harm-route") -> dict[str, Any]:
    result: dict[str, Any] = json.loads((EXAMPLES / f"{name}.notification.json").read_text())
    return result


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


@dataclass
class Agency:
    code: str
    dir: Path
    key: Key
    alg: str
    ssl: ssl.SSLContext
    gateway: RunningGateway

    def claims(self, body: Any = None, **overrides: Any) -> dict[str, Any]:
        claims = {
            "iss": self.code,
            "aud": AUDIENCE,
            "iat": int(time.time()),
            "jti": f"{self.code}-{uuid.uuid4().hex}",
            "format": "cmr-notification/1",
            "body": example() if body is None else body,
        }
        claims.update(overrides)
        return claims

    def seal(self, claims: dict[str, Any] | None = None, **overrides: Any) -> bytes:
        return seal(
            claims or self.claims(**overrides), self.key, self.alg, self.gateway.enc_jwk()
        ).encode()

    def sign_raw(self, header: dict[str, Any], payload: bytes, key: Key | None = None) -> str:
        """A JWS with exactly this header, signed by hand (no library checks), for hostile
        inputs. HS256 when `key` is an OctKey, Ed25519 otherwise."""
        import hashlib
        import hmac

        from joserfc.jwk import OctKey

        signing_input = f"{b64json(header)}.{b64(payload)}".encode()
        key = key or self.key
        if isinstance(key, OctKey):
            sig = hmac.new(key.raw_value, signing_input, hashlib.sha256).digest()
        else:
            sig = key.get_op_key("sign").sign(signing_input)  # type: ignore[union-attr]
        return f"{signing_input.decode()}.{b64(sig)}"

    def encrypt_raw(self, token: str | bytes, header: dict[str, Any] | None = None) -> bytes:
        protected = {
            "alg": JWE_ALG,
            "enc": JWE_ENC,
            "kid": self.gateway.enc_jwk()["kid"],
            "cty": "JWT",
        }
        protected.update(header or {})
        algs = [
            protected["alg"],
            protected["enc"],
            *([protected["zip"]] if "zip" in protected else []),
        ]
        registry = JWERegistry(strict_check_header=False, algorithms=algs)
        jwk = self.gateway.enc_jwk()
        key = OKPKey.import_key(jwk) if jwk["kty"] == "OKP" else ECKey.import_key(jwk)
        return jwe.encrypt_compact(protected, token, key, registry=registry).encode()

    def inner_header(self, **extra: Any) -> dict[str, Any]:
        return {"alg": self.alg, "kid": self.key.kid, "typ": NOTIFICATION_TYP, **extra}

    def session(self, **kwargs: Any) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            base_url=self.gateway.api_url, connector=aiohttp.TCPConnector(ssl=self.ssl), **kwargs
        )

    async def post(self, envelope: bytes, content_type: str = "application/jose") -> Response:
        async with (
            self.session() as s,
            s.post("/v1/notifications", data=envelope, headers={"Content-Type": content_type}) as r,
        ):
            return await Response.read(r)

    async def get(self, path: str) -> Response:
        async with self.session() as s, s.get(path) as r:
            return await Response.read(r)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @classmethod
    async def read(cls, r: aiohttp.ClientResponse) -> Response:
        return cls(r.status, dict(r.headers), await r.read())

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0]


@dataclass
class RunningGateway:
    settings: Settings
    clock: FrozenClock
    api_url: str
    web_url: str
    agencies: dict[str, Agency] = field(default_factory=dict)

    def services(self) -> contextlib.AbstractAsyncContextManager[Services]:
        """The gateway's services as a second process would open them, on the same clock."""
        return open_services(self.settings, self.clock)

    def enc_jwk(self) -> dict[str, Any]:
        keyring_jwks = self.jwks()
        return next(k for k in keyring_jwks["keys"] if k["use"] == "enc")

    def jwks(self) -> dict[str, Any]:
        from datetime import timedelta

        from gateway.keys.keyring import Keyring

        ring = Keyring(
            self.settings.keys_dir, self.clock, timedelta(days=self.settings.key_overlap_days)
        )
        return ring.jwks()

    async def agency(self, code: str = "PSNI") -> Agency:
        if code not in self.agencies:
            out = self.settings.data_dir.parent / "agencies" / code
            await issue_credentials(self.settings, code, out)
            raw = json.loads((out / "signing-key.jwk").read_text())
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(out / "ca.crt"))
            ctx.load_cert_chain(out / "client.crt", out / "client.key")
            self.agencies[code] = Agency(code, out, OKPKey.import_key(raw), "Ed25519", ctx, self)
        return self.agencies[code]

    def web_session(self, **kwargs: Any) -> aiohttp.ClientSession:
        ctx = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(self.settings.client_ca)
        )
        return aiohttp.ClientSession(
            base_url=self.web_url, connector=aiohttp.TCPConnector(ssl=ctx), **kwargs
        )

    def anonymous_api_session(self) -> aiohttp.ClientSession:
        ctx = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(self.settings.client_ca)
        )
        return aiohttp.ClientSession(base_url=self.api_url, connector=aiohttp.TCPConnector(ssl=ctx))


@contextlib.asynccontextmanager
async def running_gateway(
    settings: Settings, clock: FrozenClock, scheduler: bool = False
) -> AsyncIterator[RunningGateway]:
    stop = asyncio.Event()
    ports: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
    from tests.mailsink import free_port

    # Real port numbers (not 0): the links in mails are built from the web port.
    overrides: dict[str, Any] = {"api_port": free_port(), "web_port": free_port()}
    if not scheduler:
        overrides["scheduler"] = "off"
    settings = settings.with_overrides(**overrides)
    task = asyncio.create_task(
        serve(
            settings,
            lambda _line: None,
            stop=stop,
            clock=clock,
            started=lambda a, w: ports.set_result((a, w)),
        )
    )
    done, _ = await asyncio.wait({task, ports}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises the start-up error
    api_port, web_port = ports.result()
    try:
        yield RunningGateway(
            settings, clock, f"https://127.0.0.1:{api_port}", f"https://127.0.0.1:{web_port}"
        )
    finally:
        stop.set()
        await task


CONTACTS = {"EA": "cmr@ea.example", "PSNI": "cmr@psni.example", "BHSCT": "cmr@belfasttrust.example"}


def with_contacts(settings: Settings, **extra: Any) -> Settings:
    """The installation with agency contacts and a secretariat address in its settings."""
    lines = ['secretariat_email = "secretariat@sbni.example"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    for code, addr in CONTACTS.items():
        lines += [f"[agencies.{code}]", f'contact = "{addr}"']
    path = settings.data_dir / "settings.toml"
    path.write_text(path.read_text() + "\n" + "\n".join(lines) + "\n")
    return load_settings(settings.data_dir, environ={})
