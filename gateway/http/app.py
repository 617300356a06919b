"""The app factory (aiohttp's pattern): one Application, its resources opened and closed in
cleanup_ctx, typed AppKeys, served on two listeners (the agency API with mutual TLS, and the
web listener for people) that differ in their SSL context and so in which routes they answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from adapters.channels.base import Channel
from gateway.accounts import http as accounts_http
from gateway.channels import build_channels
from gateway.clock import Clock, SystemClock
from gateway.http import middleware, public
from gateway.http.appkeys import CLOCK, LISTENERS, METRICS, PROXIES, SERVICES, SETTINGS, Listeners
from gateway.http.metrics import Metrics
from gateway.http.tls import ProxyCertificates, api_context, web_context
from gateway.intake import http as intake_http
from gateway.jobs.scheduler import Scheduler
from gateway.requests import http as requests_http
from gateway.secretariat import http as secretariat_http
from gateway.services import open_services
from gateway.settings import Settings
from gateway.web import render
from gateway.web.ratelimit import TokenBuckets

SCHEDULER = web.AppKey("scheduler", Scheduler)
CHANNELS: web.AppKey[list[Channel]] = web.AppKey("channels")

log = structlog.get_logger("gateway.http")
# How long the background tasks get to end once cancelled, at shutdown.
STOP_SECONDS = 10.0


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
    app[middleware.API_LIMITS] = TokenBuckets(settings.api_rate_per_minute)
    app[METRICS].watch_certificate("api", settings.server_cert)
    app[METRICS].watch_certificate("web", settings.web_cert)
    app.cleanup_ctx.append(_services)
    app.cleanup_ctx.append(_background)
    app.on_response_prepare.append(middleware.security_headers)
    render.setup(app)
    public.setup(app)
    intake_http.setup(app)
    requests_http.setup(app)
    accounts_http.setup(app)
    secretariat_http.setup(app)
    return app


async def _services(app: web.Application) -> AsyncIterator[None]:
    async with open_services(app[SETTINGS], app[CLOCK], metrics=app[METRICS]) as services:
        app[SERVICES] = services
        # Schedule 5 asks for four meetings a year: a short calendar is said loudly at start.
        await services.meetings.log_calendar_warnings()
        yield


async def _background(app: web.Application) -> AsyncIterator[None]:
    """The outbox sender on every process; the scheduler where allowed (one leader runs it);
    the channels (drop folder, email) that are switched on, started first so that one that
    cannot start stops the gateway before anything else runs."""
    services = app[SERVICES]
    channels = build_channels(services)
    for channel in channels:
        await channel.start()
    app[CHANNELS] = channels
    services.sender.metrics = app[METRICS]
    tasks = [asyncio.create_task(services.sender.run(), name="outbox-sender")]
    tasks += [
        asyncio.create_task(c.run(services.intake.submit), name=f"channel-{c.name}")
        for c in channels
    ]
    if services.settings.scheduler == "on":
        scheduler = Scheduler(services)
        scheduler.on_leader = app[METRICS].leader
        app[SCHEDULER] = scheduler
        tasks.append(asyncio.create_task(scheduler.run(), name="scheduler"))
    yield
    for task in tasks:
        task.cancel()
    # Bounded: a background task that does not end when cancelled (a library swallowing the
    # cancellation, as asyncio.wait_for did on 3.11) must not keep the process from stopping.
    # What it was doing is safe to abandon: mail is leased and retried, intake is not here.
    _, stuck = await asyncio.wait(tasks, timeout=STOP_SECONDS)  # the sender is always one
    for task in stuck:
        log.error("background_task_did_not_stop", task=task.get_name())
