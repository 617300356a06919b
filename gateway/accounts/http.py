"""The sign-in pages (password, then the TOTP code), signing out, the set-up pages behind the
one-time link, and the guard every staff page stands behind: `requires(*roles)` finds the
signed-in account, answers 403 outside the role, and checks CSRF on every POST, so that no
handler has to remember either."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.accounts.repository import Account
from gateway.accounts.service import (
    TOTP_ROLES,
    AccountLocked,
    CodeRejected,
    Forbidden,
    NotSignedIn,
    PasswordRejected,
    SetupLinkGone,
    SignInFailed,
)
from gateway.errors import RateLimited
from gateway.http.appkeys import SERVICES, SETTINGS
from gateway.http.middleware import only_on
from gateway.web import csrf
from gateway.web.ratelimit import TokenBuckets
from gateway.web.render import add_templates, html_route, page

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SESSION_COOKIE = "__Host-cmr-session"
PRINCIPAL = web.RequestKey("principal", Account)
SESSION_ID = web.RequestKey("session_id", str)
LOGIN_LIMIT = web.AppKey("login_limit", TokenBuckets)
# Each feature adds the links of its pages for a role: (role, href, label).
MENU: web.AppKey[list[tuple[str, str, str]]] = web.AppKey("menu")
HOME: web.AppKey[dict[str, str]] = web.AppKey("home")
TEMPLATES = Path(__file__).parent / "templates"

SIGNED_OUT_MESSAGES = {
    "out": "You have signed out.",
    "everywhere": "You have signed out on every device.",
    "ready": "Your account is ready. Sign in with your email address and new password.",
    "expired": "You were signed out because the page was left idle. Sign in again.",
}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


async def form_of(request: web.Request) -> dict[str, str]:
    """The urlencoded form, as text fields only."""
    return {k: _str(v) for k, v in (await request.post()).items()}


def requires(*roles: str) -> Callable[[Handler], Handler]:
    """Guard a staff page: a signed-in session, one of `roles`, and on POST the CSRF token."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            session_id = request.cookies.get(SESSION_COOKIE, "")
            account = await request.app[SERVICES].accounts.authenticate(session_id)
            if account is None:
                if request.method == "GET":
                    where = "/login?m=expired" if session_id else "/login"
                    raise web.HTTPSeeOther(where)
                raise NotSignedIn("Your session has ended. Sign in again, then repeat the action.")
            if account.role not in roles:
                raise Forbidden(
                    "Your account does not give access to this page. Use the links at the top "
                    "of the page."
                )
            if request.method == "POST":
                csrf.check(request, (await form_of(request)).get(csrf.FIELD))
            request[PRINCIPAL] = account
            request[SESSION_ID] = session_id
            return await handler(request)

        guarded.roles = frozenset(roles)  # type: ignore[attr-defined]
        return guarded

    return wrap


def add_page(
    app: web.Application, method: str, path: str, handler: Handler, *roles: str
) -> web.AbstractRoute:
    """A page for people on the web listener; with `roles`, behind the guard."""
    route = app.router.add_route(method, path, requires(*roles)(handler) if roles else handler)
    only_on(html_route(route), "web")
    return route


def staff_page(
    request: web.Request, template: str, context: dict[str, Any], status: int = 200
) -> web.Response:
    """A page for a signed-in person: with their menu and the sign-out button."""
    me = request[PRINCIPAL]
    menu = [(href, label) for role, href, label in request.app[MENU] if role == me.role]
    context = {**context, "me": me, "menu": menu, "here": request.path}
    return page(request, template, context, status=status)


def _set_session(response: web.StreamResponse, session_id: str) -> None:
    # No Max-Age: the cookie dies with the browser; the server ends it when idle anyway.
    response.set_cookie(
        SESSION_COOKIE, session_id, secure=True, httponly=True, samesite="Strict", path="/"
    )


def _clear_session(response: web.StreamResponse) -> None:
    response.del_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="Strict")


def _limit(request: web.Request) -> None:
    wait = request.app[LOGIN_LIMIT].take(request.remote or "?")
    if wait:
        raise RateLimited(wait)


def _redirect(location: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(location)


# -- signing in ---------------------------------------------------------------------------------


def _login_page(
    request: web.Request, email: str = "", error: str = "", status: int = 200, notice: str = ""
) -> web.Response:
    return page(
        request,
        "accounts/login.html",
        {"email": email, "error": error, "notice": notice},
        status=status,
    )


async def login_form(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    if await services.accounts.authenticate(request.cookies.get(SESSION_COOKIE)):
        raise _redirect("/")
    notice = SIGNED_OUT_MESSAGES.get(request.query.get("m", ""), "")
    return _login_page(request, notice=notice)


async def login(request: web.Request) -> web.StreamResponse:
    _limit(request)
    form = await form_of(request)
    csrf.check(request, form.get(csrf.FIELD))
    email = form.get("email", "")
    try:
        signed_in = await request.app[SERVICES].accounts.sign_in(email, form.get("password", ""))
    except SignInFailed as exc:
        return _login_page(request, email, exc.title, status=401)
    except AccountLocked as exc:
        response = _login_page(request, email, exc.detail or exc.title, status=429)
        response.headers.update(exc.headers())
        return response
    response = web.HTTPSeeOther("/login/code" if signed_in.needs_code else "/")
    _set_session(response, signed_in.session_id)
    raise response


async def code_form(request: web.Request) -> web.StreamResponse:
    pending = await request.app[SERVICES].accounts.awaiting_code(
        request.cookies.get(SESSION_COOKIE, "")
    )
    if pending is None:
        raise _redirect("/login")
    return page(request, "accounts/code.html", {"error": ""})


async def code(request: web.Request) -> web.StreamResponse:
    _limit(request)
    form = await form_of(request)
    csrf.check(request, form.get(csrf.FIELD))
    accounts = request.app[SERVICES].accounts
    try:
        session_id = await accounts.second_factor(
            request.cookies.get(SESSION_COOKIE, ""), form.get("code", "")
        )
    except NotSignedIn:
        raise _redirect("/login") from None
    except CodeRejected as exc:
        return page(request, "accounts/code.html", {"error": exc.title}, status=401)
    except AccountLocked as exc:
        response = _login_page(request, "", exc.detail or exc.title, status=429)
        response.headers.update(exc.headers())
        _clear_session(response)
        return response
    response = web.HTTPSeeOther("/")
    _set_session(response, session_id)
    raise response


async def home(request: web.Request) -> web.StreamResponse:
    raise _redirect(request.app[HOME].get(request[PRINCIPAL].role, "/account"))


async def logout(request: web.Request) -> web.StreamResponse:
    await request.app[SERVICES].accounts.sign_out(request[SESSION_ID], request[PRINCIPAL])
    response = web.HTTPSeeOther("/login?m=out")
    _clear_session(response)
    raise response


async def logout_everywhere(request: web.Request) -> web.StreamResponse:
    await request.app[SERVICES].accounts.sign_out_everywhere(request[PRINCIPAL])
    response = web.HTTPSeeOther("/login?m=everywhere")
    _clear_session(response)
    raise response


async def my_account(request: web.Request) -> web.StreamResponse:
    me = request[PRINCIPAL]
    sessions = await request.app[SERVICES].accounts.sessions(me)
    return staff_page(
        request,
        "accounts/account.html",
        {"sessions": sessions, "totp": me.role in TOTP_ROLES},
    )


# -- set-up from the one-time link -------------------------------------------------------------


def _gone(request: web.Request) -> web.Response:
    return page(request, "accounts/setup_gone.html", {}, status=410)


async def setup_form(request: web.Request) -> web.StreamResponse:
    token = request.match_info["token"]
    try:
        account = await request.app[SERVICES].accounts.setup_landing(token)
    except SetupLinkGone:
        return _gone(request)
    return _setup_page(request, token, account, {})


def _setup_page(
    request: web.Request, token: str, account: Account, problems: dict[str, str], status: int = 200
) -> web.Response:
    return page(
        request,
        "accounts/setup.html",
        {
            "token": token,
            "account": account,
            "problems": problems,
            "totp": account.role in TOTP_ROLES,
        },
        status=status,
    )


async def setup_password(request: web.Request) -> web.StreamResponse:
    _limit(request)
    form = await form_of(request)
    csrf.check(request, form.get(csrf.FIELD))
    token = request.match_info["token"]
    accounts = request.app[SERVICES].accounts
    try:
        enrolment = await accounts.choose_password(
            token, form.get("password", ""), form.get("confirm", "")
        )
    except SetupLinkGone:
        return _gone(request)
    except PasswordRejected as exc:
        account = await accounts.setup_landing(token)
        return _setup_page(request, token, account, exc.problems, status=422)
    if enrolment is None:
        raise _redirect("/login?m=ready")
    return page(
        request, "accounts/enrol.html", {"token": token, "enrolment": enrolment, "error": ""}
    )


async def setup_code(request: web.Request) -> web.StreamResponse:
    _limit(request)
    form = await form_of(request)
    csrf.check(request, form.get(csrf.FIELD))
    token = request.match_info["token"]
    accounts = request.app[SERVICES].accounts
    try:
        await accounts.confirm_enrolment(token, form.get("code", ""))
    except SetupLinkGone:
        return _gone(request)
    except CodeRejected as exc:
        return page(
            request,
            "accounts/enrol.html",
            {"token": token, "enrolment": await accounts.enrolment(token), "error": exc.title},
            status=422,
        )
    raise _redirect("/login?m=ready")


ANY_ROLE = ("secretariat", "panel", "admin")


def setup(app: web.Application) -> None:
    app[LOGIN_LIMIT] = TokenBuckets(app[SETTINGS].web_login_rate_per_minute)
    app[MENU] = []
    app[HOME] = {}
    add_templates(app, "accounts", TEMPLATES)
    add_page(app, "GET", "/", home, *ANY_ROLE)
    add_page(app, "GET", "/login", login_form)
    add_page(app, "POST", "/login", login)
    add_page(app, "GET", "/login/code", code_form)
    add_page(app, "POST", "/login/code", code)
    add_page(app, "POST", "/logout", logout, *ANY_ROLE)
    add_page(app, "POST", "/logout/everywhere", logout_everywhere, *ANY_ROLE)
    add_page(app, "GET", "/account", my_account, *ANY_ROLE)
    add_page(app, "GET", "/account/setup/{token}", setup_form)
    add_page(app, "POST", "/account/setup/{token}", setup_password)
    add_page(app, "POST", "/account/setup/{token}/code", setup_code)
