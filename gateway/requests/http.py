"""The response pages behind the emailed link. GET changes nothing (mail scanners fetch
links); opening is a POST; the submitting POST spends the token. Every dead link gets the
same 410 page."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from aiohttp import BodyPartReader, web

from gateway.errors import PayloadTooLarge, RateLimited
from gateway.http.appkeys import SERVICES, SETTINGS
from gateway.http.middleware import only_on
from gateway.requests.service import LONDON, Answer, AnswerInvalid, LinkGone, Upload
from gateway.web import csrf
from gateway.web.ratelimit import TokenBuckets
from gateway.web.render import html_route, page

RESPOND_LIMIT = web.AppKey("respond_limit", TokenBuckets)
FORM_FIELDS = frozenset(
    {
        "csrf",
        "action",
        "known",
        "involvement_from",
        "involvement_to",
        "nature",
        "summary",
        "concerns",
        "respondent_name",
        "respondent_role",
        "reason",
    }
)


def _limit(request: web.Request) -> None:
    wait = request.app[RESPOND_LIMIT].take(request.remote or "?")
    if wait:
        raise RateLimited(wait)


def _gone(request: web.Request) -> web.Response:
    return page(request, "respond_gone.html", {}, status=410)


async def landing(request: web.Request) -> web.Response:
    _limit(request)
    token = request.match_info["token"]
    try:
        view = await request.app[SERVICES].requests.landing(token)
    except LinkGone:
        return _gone(request)
    return page(request, "respond_landing.html", {"landing": view, "token": token})


async def open_request(request: web.Request) -> web.Response:
    _limit(request)
    form = await request.post()
    csrf.check(request, _str(form.get("csrf")))
    token = request.match_info["token"]
    try:
        opened = await request.app[SERVICES].requests.open(token)
    except LinkGone:
        return _gone(request)
    return _form(request, token, opened, Answer(), {})


def _form(
    request: web.Request,
    token: str,
    opened: Any,
    answer: Answer,
    problems: dict[str, str],
    status: int = 200,
) -> web.Response:
    max_mb = request.app[SETTINGS].respond_max_bytes // (1024 * 1024)
    return page(
        request,
        "respond_form.html",
        {
            "opened": opened,
            "token": token,
            "answer": answer,
            "problems": problems,
            "max_mb": max_mb,
        },
        status=status,
    )


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


async def _read_form(request: web.Request) -> tuple[dict[str, str], list[Upload]]:
    """The multipart body, read by hand so that the size limit covers files too."""
    limit = request.app[SETTINGS].respond_max_bytes
    fields: dict[str, str] = {}
    uploads: list[Upload] = []
    total = 0
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        data = bytearray()
        while chunk := await part.read_chunk(65536):
            total += len(chunk)
            if total > limit:
                raise PayloadTooLarge()
            data.extend(chunk)
        name = part.name or ""
        if name == "attachments":
            if part.filename and data:
                content_type = part.headers.get("Content-Type", "application/octet-stream")
                uploads.append(
                    Upload(part.filename[:200], content_type.split(";")[0].strip(), bytes(data))
                )
        elif name in FORM_FIELDS or name.startswith("q-"):
            fields[name] = data.decode("utf-8", errors="replace")
    return fields, uploads


async def submit(request: web.Request) -> web.Response:
    _limit(request)
    if not request.content_type.startswith("multipart/"):
        form = await request.post()
        fields = {k: _str(v) for k, v in form.items()}
        uploads: list[Upload] = []
    else:
        fields, uploads = await _read_form(request)
    csrf.check(request, fields.get("csrf"))
    token = request.match_info["token"]
    service = request.app[SERVICES].requests
    action = fields.get("action", "answer")
    try:
        if action == "decline":
            done = await service.decline(token, fields.get("reason", ""))
            kind = "declined"
        else:
            answer = Answer(
                known=fields.get("known", ""),
                involvement_from=fields.get("involvement_from", ""),
                involvement_to=fields.get("involvement_to", ""),
                nature=fields.get("nature", ""),
                summary=fields.get("summary", ""),
                concerns=fields.get("concerns", ""),
                respondent_name=fields.get("respondent_name", ""),
                respondent_role=fields.get("respondent_role", ""),
                extra={k[2:]: v for k, v in fields.items() if k.startswith("q-")},
            )
            try:
                done = await service.submit(token, answer, uploads)
            except AnswerInvalid as exc:
                # Re-showing the form needs the request's details again; opening is idempotent.
                opened = await service.open(token)
                return _form(request, token, opened, answer, exc.problems, status=422)
            kind = "answered"
    except LinkGone:
        return _gone(request)
    return page(
        request,
        "respond_done.html",
        {
            "kind": kind,
            "received_at": done.received_at.astimezone(LONDON).strftime("%d %B %Y at %H:%M:%S")
            + f" ({done.received_at.astimezone(UTC):%H:%M:%S} UTC)",
            "reference": done.reference,
        },
    )


def setup(app: web.Application) -> None:
    settings = app[SETTINGS]
    app[RESPOND_LIMIT] = TokenBuckets(settings.respond_rate_per_minute)
    for route in (
        app.router.add_get("/respond/{token}", landing),
        app.router.add_post("/respond/{token}/open", open_request),
        app.router.add_post("/respond/{token}", submit),
    ):
        only_on(html_route(route), "web")
