"""Test helpers for the staff pages: people with real accounts, set up from the one-time link
and signed in over real HTTPS with their cookies, the way a browser does it."""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from html import unescape
from typing import Any

import aiohttp
import pyotp

from tests.support import RunningGateway

PASSWORD = "correct horse battery staple"


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def secret_of(html: str) -> str:
    found = re.search(r'<code id="secret">([A-Z2-7 ]+)</code>', html)
    assert found, html
    return found.group(1).replace(" ", "")


@dataclass
class Page:
    status: int
    html: str
    headers: dict[str, str]
    url: str

    @property
    def csrf(self) -> str:
        return csrf_of(self.html)

    def text(self) -> str:
        """The page's words without markup, for asserting on what a person reads."""
        return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", self.html)))


@dataclass
class Person:
    gw: RunningGateway
    session: aiohttp.ClientSession
    email: str = ""
    secret: str = ""
    last: Page | None = field(default=None)

    async def get(self, path: str, **kwargs: Any) -> Page:
        async with self.session.get(self._url(path), **kwargs) as r:
            self.last = Page(r.status, await r.text(), dict(r.headers), str(r.url))
        return self.last

    async def get_bytes(self, path: str) -> tuple[int, bytes, dict[str, str]]:
        async with self.session.get(self._url(path)) as r:
            return r.status, await r.read(), dict(r.headers)

    async def post(
        self, path: str, data: dict[str, str] | None = None, csrf: str | None = None, **kwargs: Any
    ) -> Page:
        """POST a form with the CSRF value of the last page (or the one given)."""
        form = dict(data or {})
        if csrf is None and self.last is not None and 'name="csrf"' in self.last.html:
            csrf = self.last.csrf
        if csrf is not None:
            form.setdefault("csrf", csrf)
        async with self.session.post(self._url(path), data=form, **kwargs) as r:
            self.last = Page(r.status, await r.text(), dict(r.headers), str(r.url))
        return self.last

    def _url(self, path: str) -> str:
        return path if path.startswith("https://") else self.gw.web_url + path

    def code(self, offset: int = 0) -> str:
        return pyotp.TOTP(self.secret).at(self.gw.clock.now(), counter_offset=offset)

    async def set_up(self, link: str, password: str = PASSWORD) -> Page:
        page = await self.get(link)
        assert page.status == 200, page.html
        page = await self.post(link, {"password": password, "confirm": password})
        if '<code id="secret">' in page.html:
            self.secret = secret_of(page.html)
            page = await self.post(link + "/code", {"code": self.code()})
        assert page.status == 200 and "Your account is ready" in page.html, page.html
        return page

    async def sign_in(self, password: str = PASSWORD, code: str | None = None) -> Page:
        await self.get("/login")
        page = await self.post("/login", {"email": self.email, "password": password})
        if "/login/code" in page.url:
            page = await self.post("/login/code", {"code": code or self.code()})
        return page


@asynccontextmanager
async def person(gw: RunningGateway, email: str = "") -> AsyncIterator[Person]:
    ctx = ssl.create_default_context(cafile=str(gw.settings.client_ca))
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ctx), cookie_jar=aiohttp.CookieJar(unsafe=True)
    ) as s:
        yield Person(gw, s, email)


async def add_account(gw: RunningGateway, email: str, role: str, name: str = "") -> str:
    async with gw.services() as s:
        _, link = await s.accounts.add(email, role, name, "cli:test")
    return link.url


@asynccontextmanager
async def signed_in(gw: RunningGateway, email: str, role: str) -> AsyncIterator[Person]:
    """A person with a new account of `role`, set up and signed in."""
    link = await add_account(gw, email, role)
    async with person(gw, email) as p:
        await p.set_up(link)
        # A code is good once: the sign-in needs the next time step's.
        gw.clock.advance(timedelta(seconds=30))
        page = await p.sign_in()
        assert page.status == 200, page.html
        yield p


# Still argon2id, at the least memory the settings allow: tests hash many passwords.
FAST_HASHING = {"web_password_memory_kib": 8192}
