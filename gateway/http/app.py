"""The app factory (aiohttp's pattern): one Application, its resources opened and closed in
cleanup_ctx, typed AppKeys, served on two listeners (the agency API with mutual TLS, and the
web listener for people) that differ in their SSL context and so in which routes they answer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.clock import Clock, SystemClock
from gateway.http import middleware, public
from gateway.http.appkeys import CLOCK, LISTENERS, METRICS, PROXIES, SERVICES, SETTINGS, Listeners
from gateway.http.metrics import Metrics
from gateway.http.tls import ProxyCertificates, api_context, web_context
from gateway.intake import http as intake_http
from gateway.jobs.scheduler import Scheduler
from gateway.requests import http as requests_http
from gateway.services import open_services
from gateway.settings import Settings
from gateway.web import render

SCHEDULER = web.AppKey("scheduler", Scheduler)


def create_app(settings: Settings, clock: Clock | None = None) -> web.Application:
    app = web.Application(
        # The web listener takes attachments; the API caps its own body in the handler.
        client_max_size=max(settings.max_body_bytes, settings.respond_max_bytes),
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
    app.cleanup_ctx.append(_background)
    app.on_response_prepare.append(middleware.security_headers)
    render.setup(app)
    public.setup(app)
    intake_http.setup(app)
    requests_http.setup(app)
    return app


async def _services(app: web.Application) -> AsyncIterator[None]:
    async with open_services(app[SETTINGS], app[CLOCK], metrics=app[METRICS]) as services:
        app[SERVICES] = services
        yield


async def _background(app: web.Application) -> AsyncIterator[None]:
    """The outbox sender on every process; the scheduler where allowed (one leader runs it)."""
    services = app[SERVICES]
    tasks = [asyncio.create_task(services.sender.run(), name="outbox-sender")]
    if services.settings.scheduler == "on":
        scheduler = Scheduler(services)
        app[SCHEDULER] = scheduler
        tasks.append(asyncio.create_task(scheduler.run(), name="scheduler"))
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
