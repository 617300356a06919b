"""Middleware: request ids and log context, the one place errors become problem+json, which
listener answers which route, and the agency of the mTLS connection."""

from __future__ import annotations

import json
import secrets
import ssl
from collections.abc import Awaitable, Callable
from typing import Literal

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.errors import GatewayError, NotFound, PayloadTooLarge, RateLimited, Unavailable
from gateway.http.appkeys import CLOCK, LISTENERS, METRICS, PROXIES, SERVICES
from gateway.http.tls import peer_agency
from gateway.storage.database import is_unavailable
from gateway.web.ratelimit import TokenBuckets

log = structlog.get_logger("gateway.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Listener = Literal["api", "web"]

REQUEST_ID = web.RequestKey("request_id", str)
LISTENER = web.RequestKey("listener", str)
AGENCY = web.RequestKey("agency", str)
# Per agency on the API. In process memory: with N processes an agency gets up to N times
# the setting (docs/operations.md); nothing else depends on it.
API_LIMITS = web.AppKey("api_limits", TokenBuckets)

PROBLEM_JSON = "application/problem+json"


class ClientCertificateRequired(GatewayError):
    code = "client_certificate_required"
    status = 401
    title = "A client certificate naming one registered agency is required"


class MethodNotAllowed(GatewayError):
    code = "method_not_allowed"
    status = 405
    title = "Method not allowed"


class BadRequest(GatewayError):
    code = "bad_request"
    status = 400
    title = "Bad request"


def problem_response(
    exc: GatewayError, request_id: str, request: web.Request | None = None
) -> web.Response:
    resource = request.match_info.route.resource if request is not None else None
    if resource is not None and getattr(resource, "html", False):
        return _problem_page(request, exc, request_id)  # type: ignore[arg-type]
    body = exc.problem()
    body["request_id"] = request_id
    return web.Response(
        status=exc.status,
        text=json.dumps(body),
        content_type=PROBLEM_JSON,
        headers=exc.headers(),
    )


def _problem_page(request: web.Request, exc: GatewayError, request_id: str) -> web.Response:
    import aiohttp_jinja2

    messages = {
        "csrf_failed": "The form has expired or did not come from this site. Go back to the "
        "email and open the link again.",
        "rate_limited": "Too many requests from your address. Wait a minute and try again.",
        "payload_too_large": "What you sent is too large. Attach smaller files.",
    }
    response = aiohttp_jinja2.render_template(
        "error.html",
        request,
        {
            "title": exc.title,
            "message": messages.get(exc.code, exc.detail or ""),
            "request_id": request_id,
        },
        status=exc.status,
    )
    response.headers.update(exc.headers())
    return response


def _listener_of(request: web.Request) -> Listener:
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    if isinstance(ssl_object, ssl.SSLObject) and ssl_object.context is request.app[LISTENERS].api:
        return "api"
    return "web"


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = secrets.token_hex(8)
    listener = _listener_of(request)
    request[REQUEST_ID] = request_id
    request[LISTENER] = listener
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id, listener=listener)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers["X-Request-ID"] = request_id
        return response
    finally:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        request.app[METRICS].requests.labels(listener, request.method, name, str(status)).inc()
        structlog.contextvars.clear_contextvars()


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request[REQUEST_ID]
    try:
        if request.content_type.startswith("multipart/") and "boundary=" not in (
            request.headers.get("Content-Type", "").lower()
        ):
            raise BadRequest("a multipart body needs a boundary")
        return await handler(request)
    except GatewayError as exc:
        return problem_response(exc, request_id, request)
    except HttpProcessingError:
        # A malformed part of a body (its headers, its framing), found while a handler read it.
        return problem_response(BadRequest("malformed request body"), request_id, request)
    except web.HTTPRequestEntityTooLarge:
        return problem_response(PayloadTooLarge(), request_id, request)
    except web.HTTPNotFound:
        return problem_response(NotFound(), request_id, request)
    except web.HTTPMethodNotAllowed:
        return problem_response(MethodNotAllowed(), request_id, request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem_response(BadRequest(exc.reason), request_id, request)
    except Exception as exc:
        if is_unavailable(exc):
            # A database error that escaped a repository's own mapping is still an outage,
            # and the client should retry rather than give up.
            log.warning("database_unavailable", error=type(exc).__name__)
            return problem_response(Unavailable(), request_id, request)
        # The route's pattern, not the path: a path can hold a response link's token.
        route = request.match_info.route.resource
        log.exception("unhandled_error", route=route.canonical if route else "unmatched")
        return problem_response(GatewayError(), request_id, request)


@web.middleware
async def listener_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A route answers only on the listeners it is made for, and an API route only for a
    request that carries a verified agency certificate."""
    info = request.match_info.route.resource
    allowed: frozenset[str] = (
        getattr(info, "listeners", frozenset({"api", "web"})) if info else frozenset()
    )
    listener = request[LISTENER]
    if info is not None and listener not in allowed:
        raise NotFound()
    if listener == "api" and "api" in allowed and "web" not in allowed:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        agency = peer_agency(ssl_object)
        proxies = request.app[PROXIES]
        if agency is None and proxies.trusted(request.remote):
            header = request.headers.get(request.app[SERVICES].settings.client_cert_header)
            if header:
                agency = proxies.agency(header, request.app[CLOCK].now())
        if agency is None or agency not in request.app[SERVICES].agencies:
            raise ClientCertificateRequired()
        request[AGENCY] = agency
        structlog.contextvars.bind_contextvars(agency=agency)
        wait = request.app[API_LIMITS].take(agency)
        if wait:
            raise RateLimited(wait)
    return await handler(request)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers.setdefault("Cache-Control", "no-store")
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "no-referrer"
    headers["Strict-Transport-Security"] = "max-age=31536000"
    headers.setdefault(
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'",
    )
    headers["X-Frame-Options"] = "DENY"


def only_on(route: web.AbstractRoute, *listeners: Listener) -> None:
    """Mark which listeners answer a route's resource (both when never marked)."""
    assert route.resource is not None
    route.resource.listeners = frozenset(listeners)  # type: ignore[attr-defined]
