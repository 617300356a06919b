"""CSRF protection by double submit: a random value in a __Host- cookie (Secure, HttpOnly,
SameSite=Strict) and the same value in each form; a POST must carry both, equal, compared in
constant time. A cross-site form can carry neither."""

from __future__ import annotations

import hmac
import secrets

from aiohttp import web

from gateway.errors import GatewayError

COOKIE = "__Host-cmr-csrf"
FIELD = "csrf"
CSRF_TOKEN = web.RequestKey("csrf_token", str)


class CsrfFailed(GatewayError):
    code = "csrf_failed"
    status = 403
    title = "The form has expired or did not come from this site"


def token_for(request: web.Request) -> str:
    """The CSRF value for forms on this page (the cookie's, or a new one set on the way out)."""
    if CSRF_TOKEN in request:
        return request[CSRF_TOKEN]
    existing = request.cookies.get(COOKIE, "")
    value = existing if len(existing) == 43 else secrets.token_urlsafe(32)
    request[CSRF_TOKEN] = value
    return value


def set_cookie(request: web.Request, response: web.StreamResponse) -> None:
    if CSRF_TOKEN in request and request.cookies.get(COOKIE) != request[CSRF_TOKEN]:
        response.set_cookie(
            COOKIE, request[CSRF_TOKEN], secure=True, httponly=True, samesite="Strict", path="/"
        )


def check(request: web.Request, submitted: str | None) -> None:
    cookie = request.cookies.get(COOKIE, "")
    if not cookie or not submitted or not hmac.compare_digest(cookie.encode(), submitted.encode()):
        raise CsrfFailed()
