"""Accounts over real HTTPS, on SQLite and PostgreSQL: the one-time set-up link from the
command line, TOTP enrolment and sign-in, lockout and idle expiry by moving the clock, signing
out here and everywhere, CSRF refused on every form, and every page closed to the roles it is
not for."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from collections.abc import AsyncIterator
from datetime import timedelta

import pyotp
import pytest
from sqlalchemy import select

from gateway.cli import main
from gateway.clock import FrozenClock
from gateway.http.app import create_app
from gateway.settings import Settings
from gateway.storage.tables import account_sessions, account_setup_links, accounts
from tests.staff import FAST_HASHING, PASSWORD, Person, add_account, person, signed_in
from tests.support import RunningGateway, running_gateway


@pytest.fixture
async def web_gw(installation: Settings, clock: FrozenClock) -> AsyncIterator[RunningGateway]:
    # The per-address limit on sign-in is off here: these tests sign in many times from one
    # address, and it is the lockout that is under test.
    settings = installation.with_overrides(web_login_rate_per_minute=0, **FAST_HASHING)
    async with running_gateway(settings, clock) as gw:
        yield gw


def cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(args))
    return code, out.getvalue()


async def test_setup_link_totp_enrolment_and_sign_in(web_gw: RunningGateway) -> None:
    gw = web_gw
    data_dir = str(gw.settings.data_dir)
    code, out = await asyncio.to_thread(
        cli, "--data-dir", data_dir, "user", "add", "Lead@SBNI.example", "--role", "secretariat"
    )
    assert code == 0, out
    link = re.search(r"https://\S+/account/setup/[A-Za-z0-9_-]{43}", out)
    assert link and "lead@sbni.example (secretariat)" in out
    # The link's port is the installation's; the running test gateway has its own.
    path = "/account/setup/" + link.group(0).rsplit("/", 1)[1]

    async with person(gw, "lead@sbni.example") as p:
        for _ in range(2):  # a mail scanner's GET changes nothing
            page = await p.get(path)
            assert page.status == 200 and "lead@sbni.example" in page.html
        weak = await p.post(path, {"password": "short", "confirm": "short"})
        assert weak.status == 422 and "at least 12 characters" in weak.html
        await p.get(path)
        common = await p.post(path, {"password": "password1234", "confirm": "password1234"})
        assert common.status == 422 and "too easy to guess" in common.html
        await p.get(path)
        enrol = await p.post(path, {"password": PASSWORD, "confirm": PASSWORD})
        assert enrol.status == 200
        secret = re.search(r'<code id="secret">([A-Z2-7 ]+)</code>', enrol.html)
        assert secret
        p.secret = secret.group(1).replace(" ", "")
        uri = re.search(r'<code id="uri">([^<]+)</code>', enrol.html)
        assert uri
        parsed = pyotp.parse_uri(uri.group(1).replace("&amp;", "&"))
        assert parsed.secret == p.secret and parsed.issuer == "SBNI CMR panel"
        wrong = await p.post(path + "/code", {"code": p.code(offset=5)})
        assert wrong.status == 422 and p.secret[:4] in wrong.html
        done = await p.post(path + "/code", {"code": p.code()})
        assert done.status == 200 and "Your account is ready" in done.html
        assert (await p.get(path)).status == 410

        # The code of the enrolment cannot be used again to sign in.
        await p.get("/login")
        page = await p.post("/login", {"email": "LEAD@sbni.example ", "password": PASSWORD})
        assert page.url.endswith("/login/code")
        replay = await p.post("/login/code", {"code": p.code()})
        assert replay.status == 401 and "used already" in replay.text()
        gw.clock.advance(timedelta(seconds=30))
        async with p.session.post(
            gw.web_url + "/login/code",
            data={"csrf": replay.csrf, "code": p.code()},
            allow_redirects=False,
        ) as r:
            assert r.status == 303 and r.headers["Location"] == "/"
            set_cookie = r.headers["Set-Cookie"]
        assert set_cookie.startswith("__Host-cmr-session=")
        attributes = {a.strip().split("=")[0].lower() for a in set_cookie.split(";")[1:]}
        assert attributes == {"httponly", "path", "samesite", "secure"}, set_cookie
        assert "SameSite=Strict" in set_cookie and "Path=/" in set_cookie
        page = await p.get("/")
        assert page.url.endswith("/cases")

        wrong = await p.sign_in(password="not the password at all")
        assert wrong.status == 401 and "email address or password is wrong" in wrong.html

        async with gw.services() as s:
            async with s.db.read() as conn:
                row = (await conn.execute(select(accounts))).one()
                links = (await conn.execute(select(account_setup_links))).all()
                sessions = (await conn.execute(select(account_sessions))).all()
            actions = [e.action for e in await s.audit.events(f"account:{row.id}")]
        assert row.password_hash.startswith("$argon2id$")
        assert p.secret.encode() not in row.totp_secret and row.totp_pending is None
        assert links == []
        assert len(sessions) == 1 and len(sessions[0].id_hash) == 64
        assert actions[:2] == ["account.created", "account.set_up"]
        assert "account.signed_in" in actions and "account.sign_in_failed" in actions

        code, out = await asyncio.to_thread(cli, "--data-dir", data_dir, "user", "list")
        assert code == 0 and "lead@sbni.example\tsecretariat\tactive" in out
        code, out = await asyncio.to_thread(
            cli, "--data-dir", data_dir, "user", "disable", "lead@sbni.example"
        )
        assert code == 0
        async with p.session.get(gw.web_url + "/cases", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"].startswith("/login")
        code, out = await asyncio.to_thread(
            cli, "--data-dir", data_dir, "user", "add", "lead@sbni.example", "--role", "panel"
        )
        assert code == 2


async def test_panel_member_needs_no_second_factor(web_gw: RunningGateway) -> None:
    link = await add_account(web_gw, "member@sbni.example", "panel")
    async with person(web_gw, "member@sbni.example") as p:
        await p.set_up(link)
        assert p.secret == ""
        page = await p.sign_in()
        assert page.status == 200 and page.url.endswith("/panel")


async def test_lockout_after_repeated_failures(web_gw: RunningGateway) -> None:
    gw = web_gw
    async with signed_in(gw, "clerk@sbni.example", "secretariat") as clerk:
        pass
    async with person(gw, "clerk@sbni.example") as p:
        p.secret = clerk.secret
        for attempt in range(1, 5):
            page = await p.sign_in(password=f"wrong password {attempt}")
            assert page.status == 401, attempt
        page = await p.sign_in(password="wrong password 5")
        assert page.status == 429 and "blocked for 15 more minutes" in page.text()
        assert page.headers["Retry-After"] == "900"
        # Locked: the right password is refused too, with the same clear message.
        gw.clock.advance(timedelta(minutes=14))
        page = await p.sign_in()
        assert page.status == 429 and "1 more minute." in page.text()
        gw.clock.advance(timedelta(minutes=1, seconds=30))
        page = await p.sign_in()
        assert page.status == 200 and page.url.endswith("/cases")

    # An address without an account locks the same way: the answer tells no one which exist.
    async with person(gw, "nobody@sbni.example") as p:
        for _ in range(4):
            assert (await p.sign_in(password="guess guess guess")).status == 401
        page = await p.sign_in(password="guess guess guess")
        assert page.status == 429 and "blocked for 15 more minutes" in page.text()

    # Wrong codes count too; the fifth ends the half-signed-in session.
    gw.clock.advance(timedelta(minutes=1))
    async with person(gw, "clerk@sbni.example") as p:
        p.secret = clerk.secret
        await p.get("/login")
        await p.post("/login", {"email": p.email, "password": PASSWORD})
        for _ in range(4):
            page = await p.post("/login/code", {"code": "000000"})
            assert page.status == 401
        page = await p.post("/login/code", {"code": "000000"})
        assert page.status == 429 and "blocked for 15 more minutes" in page.text()
        page = await p.get("/login/code")
        assert page.url.endswith("/login")
    async with gw.services() as s:
        account = await s.accounts.repo.by_email("clerk@sbni.example")
        assert account is not None
        actions = [e.action for e in await s.audit.events(f"account:{account.account.id}")]
    assert actions.count("account.locked") == 2


async def test_sessions_end_when_idle_or_old(web_gw: RunningGateway) -> None:
    gw = web_gw
    async with signed_in(gw, "clerk@sbni.example", "secretariat") as p:
        for _ in range(3):  # in use: each page keeps it alive
            gw.clock.advance(timedelta(minutes=29))
            assert (await p.get("/cases")).url.endswith("/cases")
        gw.clock.advance(timedelta(minutes=30))
        page = await p.get("/cases")
        assert page.url.endswith("/login?m=expired")
        assert "left idle" in page.html
        page = await p.post("/cases/CMRN-2026-0001/screening")
        assert page.status == 401

    async with signed_in(gw, "clerk2@sbni.example", "secretariat") as p:
        for _ in range(30):
            gw.clock.advance(timedelta(minutes=25))
            page = await p.get("/account")
        assert page.url.endswith("/login?m=expired")


async def test_sign_out_here_and_everywhere(web_gw: RunningGateway) -> None:
    gw = web_gw
    email = "clerk@sbni.example"
    async with (
        signed_in(gw, email, "secretariat") as a,
        person(gw, email) as b,
        person(gw, email) as c,
    ):
        b.secret = c.secret = a.secret
        gw.clock.advance(timedelta(seconds=30))
        assert (await b.sign_in()).url.endswith("/cases")
        gw.clock.advance(timedelta(seconds=30))
        assert (await c.sign_in()).url.endswith("/cases")
        page = await a.get("/account")
        assert "Signed-in sessions 3" in page.text()

        page = await a.post("/logout")
        assert page.url.endswith("/login?m=out") and "You have signed out" in page.html
        assert (await a.get("/cases")).url.endswith("/login")
        assert (await b.get("/cases")).url.endswith("/cases")

        await b.get("/account")
        page = await b.post("/logout/everywhere")
        assert "every device" in page.html
        # This browser's cookie is gone; the other's names a session that is no more.
        assert (await b.get("/cases")).url.endswith("/login")
        assert (await c.get("/cases")).url.endswith("/login?m=expired")


ROLES = ("secretariat", "panel", "admin")
# Pages anyone may reach; everything else on the web listener is behind the guard.
PUBLIC = {
    "/login",
    "/login/code",
    "/account/setup/{token}",
    "/account/setup/{token}/code",
    "/respond/{token}",
    "/respond/{token}/open",
}


def staff_routes(settings: Settings) -> list[tuple[str, str, frozenset[str]]]:
    app = create_app(settings)
    found = []
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method == "HEAD":
            continue
        listeners = getattr(resource, "listeners", frozenset({"api", "web"}))
        if listeners != frozenset({"web"}) or resource.canonical in ("/static",):
            continue
        roles = getattr(route.handler, "roles", None)
        if roles is None:
            assert resource.canonical in PUBLIC, f"{resource.canonical} has no guard"
            continue
        found.append((route.method, resource.canonical, roles))
    return found


def concrete(path: str) -> str:
    return (
        path.replace("{reference}", "CMRN-2026-0001")
        .replace("{public_id}", "R-AAAAAAAA")
        .replace("{meeting}", "M-2026-12")
        .replace("{fmt}", "pdf")
        .replace("{token}", "x" * 43)
        .replace("{request}", "R-AAAAAAAA")
        .replace("{attachment}", "1")
    )


async def test_every_page_is_closed_to_other_roles(web_gw: RunningGateway) -> None:
    gw = web_gw
    routes = staff_routes(gw.settings)
    assert len(routes) > 30
    async with contextlib.AsyncExitStack() as stack:
        people: dict[str, Person] = {}
        for role in ROLES:
            people[role] = await stack.enter_async_context(
                signed_in(gw, f"{role}@sbni.example", role)
            )
        anonymous = await stack.enter_async_context(person(gw))
        await anonymous.get("/login")
        for method, path, roles in routes:
            url = gw.web_url + concrete(path)
            for role in ROLES:
                if role in roles:
                    continue
                p = people[role]
                await p.get("/account")
                async with p.session.request(
                    method,
                    url,
                    data={"csrf": p.last.csrf if p.last else ""},
                    allow_redirects=False,
                ) as r:
                    assert r.status == 403, (role, method, path, r.status)
                    assert "not open to your role" in await r.text()
            async with anonymous.session.request(
                method,
                url,
                data={"csrf": anonymous.last.csrf if anonymous.last else ""},
                allow_redirects=False,
            ) as r:
                if method == "GET":
                    assert r.status == 303 and r.headers["Location"] == "/login", path
                else:
                    assert r.status == 401, (method, path)


async def test_csrf_is_required_on_every_form(web_gw: RunningGateway) -> None:
    gw = web_gw
    posts = [(path, roles) for method, path, roles in staff_routes(gw.settings) if method == "POST"]
    posts += [(p, frozenset()) for p in sorted(PUBLIC) if p not in ("/login/code",)]
    posts.append(("/login/code", frozenset()))
    async with contextlib.AsyncExitStack() as stack:
        people = {
            role: await stack.enter_async_context(signed_in(gw, f"{role}@sbni.example", role))
            for role in ("secretariat", "admin")
        }
        anonymous = await stack.enter_async_context(person(gw))
        await anonymous.get("/login")
        checked = 0
        for path, roles in posts:
            p = people[sorted(roles)[0]] if roles else anonymous
            for forged in ({}, {"csrf": "forged" * 7 + "x"}):
                async with p.session.post(
                    gw.web_url + concrete(path), data=forged, allow_redirects=False
                ) as r:
                    assert r.status == 403, (path, forged, r.status)
                    text = await r.text()
                    assert "did not come from this site" in text, path
            checked += 1
        assert checked > 20
        # And a form from another site carries no cookie at all.
        clerk = people["secretariat"]
        await clerk.get("/account")
        token = clerk.last.csrf if clerk.last else ""
        async with (
            person(gw) as outsider,
            outsider.session.post(
                gw.web_url + "/logout/everywhere", data={"csrf": token}, allow_redirects=False
            ) as r,
        ):
            assert r.status == 401
        assert (await clerk.get("/cases")).url.endswith("/cases")
