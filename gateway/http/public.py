"""What both listeners answer: the JWKS, the OpenAPI document, health and metrics."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from aiohttp import web

from gateway.errors import NotFound
from gateway.http.appkeys import METRICS, SERVICES

OPENAPI_FILE = Path(__file__).parent / "openapi.json"
OPENAPI = web.AppKey("openapi", bytes)


async def jwks(request: web.Request) -> web.Response:
    keyring = request.app[SERVICES].keyring
    keyring.reload_if_changed()
    return web.json_response(
        keyring.jwks(),
        content_type="application/jwk-set+json",
        headers={"Cache-Control": "public, max-age=300"},
    )


async def openapi(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[OPENAPI],
        content_type="application/json",
        headers={"Cache-Control": "public, max-age=300"},
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    db = request.app[SERVICES].db
    reachable = await db.ping()
    current = reachable and await db.migrations_current()
    checks = {
        "database": "ok" if reachable else "unreachable",
        "migrations": "current" if current else ("unknown" if not reachable else "pending"),
    }
    ready = reachable and current
    return web.json_response(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status=200 if ready else 503,
        headers={} if ready else {"Retry-After": "5"},
    )


def _loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


async def metrics(request: web.Request) -> web.Response:
    # Counts are not personal data, but they are operational detail: loopback scrapers only
    # (a remote Prometheus reaches them through the host's own agent or a tunnel).
    if not _loopback(request.remote):
        raise NotFound()
    return web.Response(
        body=request.app[METRICS].render(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/.well-known/jwks.json", jwks)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    document = OPENAPI_FILE.read_bytes()
    json.loads(document)  # fail at start-up, not at the first request
    app[OPENAPI] = document
