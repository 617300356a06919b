"""The app factory (aiohttp's pattern): one Application, its resources opened and closed in
cleanup_ctx, typed AppKeys, served on two listeners (the agency API with mutual TLS, and the
web listener for people) that differ in their SSL context and so in which routes they answer."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from gateway.clock import Clock, SystemClock
from gateway.http import middleware, public
from gateway.http.appkeys import CLOCK, LISTENERS, METRICS, PROXIES, SERVICES, SETTINGS, Listeners
from gateway.http.metrics import Metrics
from gateway.http.tls import ProxyCertificates, api_context, web_context
from gateway.intake import http as intake_http
from gateway.services import open_services
from gateway.settings import Settings


def create_app(settings: Settings, clock: Clock | None = None) -> web.Application:
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[middleware.request_context, middleware.problems, middleware.listener_guard],
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock or SystemClock()
    app[METRICS] = Metrics()
    app[LISTENERS] = Listeners(
        api=api_context(
            settings.server_cert,
            settings.server_key,
            settings.client_ca,
            proxy_mode=bool(settings.trusted_proxies),
        ),
        web=web_context(settings.web_cert, settings.web_key),
    )
    app[PROXIES] = ProxyCertificates(settings.trusted_proxies, settings.client_ca)
    app.cleanup_ctx.append(_services)
    app.on_response_prepare.append(middleware.security_headers)
    public.setup(app)
    intake_http.setup(app)
    return app


async def _services(app: web.Application) -> AsyncIterator[None]:
    async with open_services(app[SETTINGS], app[CLOCK], metrics=app[METRICS]) as services:
        app[SERVICES] = services
        yield
