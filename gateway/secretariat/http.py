"""The staff pages: the secretariat's cases, requests, meetings, Board decisions and CMR
progress; the panel members' meetings; the administrators' users, agencies and settings.
Thin handlers: read the form, call a service, render or redirect (post/redirect/get). The
guard (`requires`) does sign-in, role and CSRF; the services hold every rule."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo

import aiohttp_jinja2
from aiohttp import web
from sqlalchemy.engine import make_url

from gateway import lifecycle as lc
from gateway.accounts.http import HOME, MENU, PRINCIPAL, add_page, form_of, staff_page
from gateway.agencies.keys import PRIVATE_MEMBERS, public_signing_jwk
from gateway.errors import GatewayError, UsageError
from gateway.http.appkeys import SERVICES, SETTINGS
from gateway.meetings.model import RecordInvalid
from gateway.secretariat.forms import lines, record_document
from gateway.secretariat.repository import StateChanged
from gateway.secretariat.service import STATE_LABELS, label
from gateway.web.render import add_templates

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LONDON = ZoneInfo("Europe/London")
TEMPLATES = Path(__file__).parent / "templates"

DONE = {
    "screening": "Screening has started.",
    "returned": "The notification was returned to the agency; its contact has been emailed.",
    "withdrawn": "The notification was withdrawn.",
    "ready": "The notification is ready for the panel.",
    "requested": "The information request was sent.",
    "revoked": "The request was revoked; its link no longer works.",
    "reissued": "A new request was sent; the old link no longer works.",
    "disabled": "The account was disabled; its sessions have ended.",
    "key_added": "The key was registered.",
    "key_revoked": "The key was revoked: notifications signed with it are refused from now.",
    "added": "The meeting was added.",
    "compiled": "The agenda was compiled: check it, then issue it.",
    "unchanged": "Nothing has changed since the last version: no new version was made.",
    "issued": "The agenda was issued and the notice sent to every member.",
    "recorded": "The meeting was recorded.",
    "decided": "The Board's decision was recorded.",
    "cmr_started": "The review's start was recorded.",
    "cmr_completed": "The review's completion was recorded.",
}
PACK_TYPES = {"pdf": "application/pdf", "html": "text/html", "json": "application/json"}


class ActionRefused(GatewayError):
    code = "action_refused"
    status = 409
    title = "That could not be done"


def refusals(handler: Handler) -> Handler:
    """A rule the service enforces, broken by the person acting, is a page that says which
    (409), not a server error."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except StateChanged:
            raise ActionRefused(
                "The notification changed meanwhile (someone else acted on it). Reload the "
                "page and try again."
            ) from None
        except UsageError as exc:
            raise ActionRefused(exc.detail or exc.title) from None

    wrapped.__name__ = handler.__name__
    return wrapped


def when(value: datetime | None) -> str:
    if value is None:
        return ""
    return f"{value.astimezone(LONDON):%d %b %Y %H:%M}"


def _me(request: web.Request) -> str:
    return request[PRINCIPAL].actor


def _back(path: str, done: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(f"{path}?done={done}")


def _done(request: web.Request) -> str:
    return DONE.get(request.query.get("done", ""), "")


# -- cases --------------------------------------------------------------------------------------


async def inbox(request: web.Request) -> web.StreamResponse:
    state = request.query.get("state") or None
    view = await request.app[SERVICES].secretariat.inbox(state)
    return staff_page(
        request,
        "secretariat/inbox.html",
        {"inbox": view, "label": label(state) if state else "All states"},
    )


async def case(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    file = await services.secretariat.case_file(request.match_info["reference"], _me(request))
    agencies = [a for a in services.agencies if a.contact and a.code != file.summary.agency]
    return staff_page(
        request,
        "secretariat/case.html",
        {
            "file": file,
            "doc": file.document,
            "state": label(file.summary.status),
            "agencies": agencies,
            "done": _done(request),
            "deadline_days": services.settings.request_deadline_days,
        },
    )


async def start_screening(request: web.Request) -> web.StreamResponse:
    reference = request.match_info["reference"]
    await request.app[SERVICES].secretariat.start_screening(reference, _me(request))
    raise _back(f"/cases/{reference}", "screening")


async def return_to_agency(request: web.Request) -> web.StreamResponse:
    reference = request.match_info["reference"]
    form = await form_of(request)
    await request.app[SERVICES].secretariat.return_to_agency(
        reference, form.get("reason", ""), _me(request)
    )
    raise _back(f"/cases/{reference}", "returned")


async def withdraw(request: web.Request) -> web.StreamResponse:
    reference = request.match_info["reference"]
    form = await form_of(request)
    await request.app[SERVICES].cases.withdraw(reference, form.get("reason", ""), _me(request))
    raise _back(f"/cases/{reference}", "withdrawn")


async def ready(request: web.Request) -> web.StreamResponse:
    reference = request.match_info["reference"]
    await request.app[SERVICES].cases.mark_ready(reference, _me(request))
    raise _back(f"/cases/{reference}", "ready")


def _days(raw: str) -> int | None:
    if not raw.strip():
        return None
    try:
        return int(raw)
    except ValueError:
        raise UsageError("give the deadline as a number of working days") from None


async def create_request(request: web.Request) -> web.StreamResponse:
    reference = request.match_info["reference"]
    form = await form_of(request)
    await request.app[SERVICES].requests.create(
        reference, form.get("agency", ""), _me(request), _days(form.get("deadline_days", ""))
    )
    raise _back(f"/cases/{reference}", "requested")


async def revoke_request(request: web.Request) -> web.StreamResponse:
    requests = request.app[SERVICES].requests
    row = await requests.get(request.match_info["public_id"])
    await requests.revoke(row.public_id, _me(request))
    raise _back(f"/cases/{row.reference}", "revoked")


async def reissue_request(request: web.Request) -> web.StreamResponse:
    requests = request.app[SERVICES].requests
    row = await requests.get(request.match_info["public_id"])
    form = await form_of(request)
    await requests.reissue(row.public_id, _me(request), _days(form.get("deadline_days", "")))
    raise _back(f"/cases/{row.reference}", "reissued")


# -- meetings -----------------------------------------------------------------------------------


def _date(raw: str, what: str) -> date:
    try:
        return date.fromisoformat(raw.strip())
    except ValueError:
        raise UsageError(f"give the {what} date as YYYY-MM-DD") from None


def _int(raw: str, what: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise UsageError(f"give {what} as a whole number") from None


async def _multi(request: web.Request) -> dict[str, list[str]]:
    form = await request.post()
    return {k: [v for v in form.getall(k) if isinstance(v, str)] for k in set(form.keys())}


async def meetings(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    return staff_page(
        request,
        "secretariat/meetings.html",
        {
            "meetings": await services.meetings.meetings(),
            "warnings": await services.meetings.calendar_warnings(),
            "zone": services.meetings.zone,
            "done": _done(request),
        },
    )


async def add_meeting(request: web.Request) -> web.StreamResponse:
    form = await form_of(request)
    try:
        starts_at = datetime.fromisoformat(form.get("starts_at", ""))
    except ValueError:
        raise UsageError("give the date and time of the meeting") from None
    added = await request.app[SERVICES].meetings.add_meeting(
        starts_at, _me(request), place=form.get("place", "").strip() or None
    )
    raise _back(f"/meetings/{added.public_id}", "added")


async def _meeting_page(
    request: web.Request, problems: list[str] | None = None, status: int = 200
) -> web.Response:
    services = request.app[SERVICES]
    view = await services.secretariat.meeting_page(request.match_info["meeting"], _me(request))
    references: list[str] = []
    if view.may_record:
        issued = await services.meetings.issued_agenda(view.meeting.public_id)
        references = issued.decision_references() if issued else []
    return staff_page(
        request,
        "secretariat/meeting.html",
        {
            "view": view,
            "m": view.meeting,
            "zone": services.meetings.zone,
            "references": references,
            "problems": problems or [],
            "done": _done(request),
        },
        status=status,
    )


async def meeting(request: web.Request) -> web.StreamResponse:
    return await _meeting_page(request)


async def compile_agenda(request: web.Request) -> web.StreamResponse:
    public_id = request.match_info["meeting"]
    form = await form_of(request)
    result = await request.app[SERVICES].meetings.compile(
        public_id, _me(request), lines(form.get("aob", ""))
    )
    raise _back(f"/meetings/{public_id}", "compiled" if result.changed else "unchanged")


async def issue_agenda(request: web.Request) -> web.StreamResponse:
    public_id = request.match_info["meeting"]
    await request.app[SERVICES].meetings.issue(public_id, _me(request))
    raise _back(f"/meetings/{public_id}", "issued")


async def record_meeting(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    public_id = request.match_info["meeting"]
    issued = await services.meetings.issued_agenda(public_id)
    if issued is None:
        raise UsageError(f"meeting {public_id} has no issued agenda to record against")
    document = record_document(
        public_id,
        [m.id for m in services.meetings.calendar.members],
        issued.decision_references(),
        await _multi(request),
    )
    try:
        await services.meetings.record(document, _me(request))
    except RecordInvalid as exc:
        return await _meeting_page(request, exc.problems, status=422)
    raise _back(f"/meetings/{public_id}", "recorded")


async def pack_page(request: web.Request) -> web.StreamResponse:
    public_id = request.match_info["meeting"]
    version, body = await request.app[SERVICES].secretariat.issued_pack(
        public_id, request[PRINCIPAL]
    )
    return staff_page(
        request,
        "secretariat/pack.html",
        {"body": body, "meeting": public_id, "version": version},
    )


async def pack_download(request: web.Request) -> web.StreamResponse:
    version = request.query.get("version")
    name, data = await request.app[SERVICES].secretariat.pack_file(
        request.match_info["meeting"],
        request.match_info["fmt"],
        request[PRINCIPAL],
        _int(version, "the version") if version else None,
    )
    return web.Response(
        body=data,
        content_type=PACK_TYPES[request.match_info["fmt"]],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def attachment_disposition(filename: str) -> str:
    """The agency chose the name: a plain-ASCII fallback with nothing that could end the
    quoted string or the header, and the exact name as RFC 6266 filename*."""
    plain = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in filename
    )
    exact = quote(filename, safe="")
    return f"attachment; filename=\"{plain or 'attachment'}\"; filename*=UTF-8''{exact}"


async def answer_attachment(request: web.Request) -> web.StreamResponse:
    m = request.match_info
    found = await request.app[SERVICES].secretariat.attachment(
        m["reference"], m["request"], int(m["attachment"]), _me(request)
    )
    return web.Response(
        body=found.data,
        content_type=found.content_type,
        # Always a download, never rendered in the gateway's origin (nosniff: middleware).
        headers={
            "Content-Disposition": attachment_disposition(found.filename),
            "Content-Security-Policy": "sandbox",
        },
    )


async def panel(request: web.Request) -> web.StreamResponse:
    me = request[PRINCIPAL]
    secretariat = request.app[SERVICES].secretariat
    return staff_page(
        request,
        "secretariat/panel.html",
        {
            "meetings": await secretariat.panel_meetings(me.email),
            "member": secretariat.is_member(me.email),
            "zone": request.app[SERVICES].meetings.zone,
        },
    )


# -- the Board's decisions and the reviews ------------------------------------------------------


async def board(request: web.Request) -> web.StreamResponse:
    cases = request.app[SERVICES].cases
    return staff_page(
        request,
        "secretariat/board.html",
        {
            "waiting": await cases.cases([lc.RECOMMENDED, lc.NOT_RECOMMENDED]),
            "decided": await cases.cases(
                [lc.COMMISSIONED, lc.NOT_COMMISSIONED, lc.CMR_UNDER_WAY, lc.CMR_COMPLETED]
            ),
            "today": cases.today(),
            "done": _done(request),
        },
    )


async def board_decide(request: web.Request) -> web.StreamResponse:
    form = await form_of(request)
    await request.app[SERVICES].cases.board_decide(
        request.match_info["reference"],
        form.get("decision", ""),
        _date(form.get("on", ""), "decision"),
        _me(request),
    )
    raise _back("/board", "decided")


async def progress(request: web.Request) -> web.StreamResponse:
    cases = request.app[SERVICES].cases
    return staff_page(
        request,
        "secretariat/progress.html",
        {
            "commissioned": await cases.cases([lc.COMMISSIONED]),
            "under_way": await cases.cases([lc.CMR_UNDER_WAY]),
            "completed": await cases.cases([lc.CMR_COMPLETED]),
            "today": cases.today(),
            "done": _done(request),
        },
    )


async def cmr_start(request: web.Request) -> web.StreamResponse:
    form = await form_of(request)
    await request.app[SERVICES].cases.start_cmr(
        request.match_info["reference"], _date(form.get("on", ""), "start"), _me(request)
    )
    raise _back("/progress", "cmr_started")


async def cmr_complete(request: web.Request) -> web.StreamResponse:
    form = await form_of(request)
    await request.app[SERVICES].cases.complete_cmr(
        request.match_info["reference"],
        _date(form.get("on", ""), "completion"),
        _int(form.get("recommendations", ""), "the number of recommendations"),
        lines(form.get("themes", "")),
        _me(request),
    )
    raise _back("/progress", "cmr_completed")


# -- administration -----------------------------------------------------------------------------


async def users(request: web.Request) -> web.StreamResponse:
    accounts = await request.app[SERVICES].accounts.all_accounts()
    return staff_page(
        request, "secretariat/users.html", {"accounts": accounts, "done": _done(request)}
    )


async def add_user(request: web.Request) -> web.StreamResponse:
    form = await form_of(request)
    account, link = await request.app[SERVICES].accounts.add(
        form.get("email", ""), form.get("role", ""), form.get("name", ""), _me(request)
    )
    return staff_page(
        request, "secretariat/user_link.html", {"account": account, "link": link, "new": True}
    )


async def reset_user(request: web.Request) -> web.StreamResponse:
    form = await form_of(request)
    account, link = await request.app[SERVICES].accounts.reset(form.get("email", ""), _me(request))
    return staff_page(
        request, "secretariat/user_link.html", {"account": account, "link": link, "new": False}
    )


async def disable_user(request: web.Request) -> web.StreamResponse:
    form = await form_of(request)
    if form.get("email", "").strip().lower() == request[PRINCIPAL].email:
        raise UsageError("you cannot disable your own account: ask another administrator")
    await request.app[SERVICES].accounts.disable(form.get("email", ""), _me(request))
    raise _back("/admin/users", "disabled")


async def agencies(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    keys = await services.agency_keys.all_keys()
    return staff_page(
        request,
        "secretariat/agencies.html",
        {"agencies": list(services.agencies), "keys": keys, "done": _done(request)},
    )


async def add_key(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    form = await form_of(request)
    code = form.get("agency", "")
    if code not in services.agencies:
        raise UsageError("choose one of the registered agencies")
    try:
        raw = json.loads(form.get("jwk", ""))
    except ValueError:
        raise UsageError("the key must be a JWK (a JSON object)") from None
    if isinstance(raw, dict) and PRIVATE_MEMBERS & set(raw):
        raise UsageError("that JWK holds a private key: register the public key only")
    kid, alg, public = public_signing_jwk(raw, services.settings.signing_algorithms)
    await services.agency_keys.add(code, kid, alg, public, _me(request), services.clock.now())
    raise _back("/admin/agencies", "key_added")


async def revoke_key(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    form = await form_of(request)
    await services.agency_keys.revoke(
        form.get("agency", ""), form.get("kid", ""), _me(request), services.clock.now()
    )
    raise _back("/admin/agencies", "key_revoked")


async def settings_page(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    rows = [
        (f.name, getattr(settings, f.name))
        for f in dataclasses.fields(settings)
        if f.name != "extra"
    ]
    # A password written into the URL by mistake is still a secret.
    rows = [
        (
            name,
            make_url(value).render_as_string(hide_password=True)
            if name == "database_url" and value
            else value,
        )
        for name, value in rows
    ]
    return staff_page(request, "secretariat/settings.html", {"rows": rows})


SECRETARIAT = ("secretariat",)
ADMIN = ("admin",)
# The issued pack: the secretariat, and members of the panel (the service checks membership).
PACK_READERS = ("secretariat", "panel")


def setup(app: web.Application) -> None:
    add_templates(app, "secretariat", TEMPLATES)
    env = aiohttp_jinja2.get_env(app)
    env.filters["when"] = when
    env.filters["label"] = label
    env.globals["STATE_LABELS"] = STATE_LABELS
    app[HOME].update({"secretariat": "/cases", "admin": "/admin/users", "panel": "/panel"})
    app[MENU].extend(
        [
            ("secretariat", "/cases", "Cases"),
            ("secretariat", "/meetings", "Meetings"),
            ("secretariat", "/board", "Board decisions"),
            ("secretariat", "/progress", "CMR progress"),
            ("panel", "/panel", "Your meetings"),
            ("admin", "/admin/users", "Users"),
            ("admin", "/admin/agencies", "Agencies"),
            ("admin", "/admin/settings", "Settings"),
        ]
    )

    def page(method: str, path: str, handler: Handler, roles: tuple[str, ...]) -> None:
        add_page(app, method, path, refusals(handler), *roles)

    page("GET", "/cases", inbox, SECRETARIAT)
    page("GET", "/cases/{reference}", case, SECRETARIAT)
    page(
        "GET",
        r"/cases/{reference}/requests/{request}/attachments/{attachment:\d{1,18}}",
        answer_attachment,
        SECRETARIAT,
    )
    page("POST", "/cases/{reference}/screening", start_screening, SECRETARIAT)
    page("POST", "/cases/{reference}/return", return_to_agency, SECRETARIAT)
    page("POST", "/cases/{reference}/withdraw", withdraw, SECRETARIAT)
    page("POST", "/cases/{reference}/ready", ready, SECRETARIAT)
    page("POST", "/cases/{reference}/requests", create_request, SECRETARIAT)
    page("POST", "/requests/{public_id}/revoke", revoke_request, SECRETARIAT)
    page("POST", "/requests/{public_id}/reissue", reissue_request, SECRETARIAT)
    page("GET", "/meetings", meetings, SECRETARIAT)
    page("POST", "/meetings", add_meeting, SECRETARIAT)
    page("GET", "/meetings/{meeting}", meeting, SECRETARIAT)
    page("POST", "/meetings/{meeting}/compile", compile_agenda, SECRETARIAT)
    page("POST", "/meetings/{meeting}/issue", issue_agenda, SECRETARIAT)
    page("POST", "/meetings/{meeting}/record", record_meeting, SECRETARIAT)
    page("GET", "/meetings/{meeting}/pack", pack_page, PACK_READERS)
    page("GET", "/meetings/{meeting}/pack/{fmt}", pack_download, PACK_READERS)
    page("GET", "/panel", panel, ("panel",))
    page("GET", "/board", board, SECRETARIAT)
    page("POST", "/cases/{reference}/board", board_decide, SECRETARIAT)
    page("GET", "/progress", progress, SECRETARIAT)
    page("POST", "/cases/{reference}/cmr/start", cmr_start, SECRETARIAT)
    page("POST", "/cases/{reference}/cmr/complete", cmr_complete, SECRETARIAT)
    page("GET", "/admin/users", users, ADMIN)
    page("POST", "/admin/users", add_user, ADMIN)
    page("POST", "/admin/users/reset", reset_user, ADMIN)
    page("POST", "/admin/users/disable", disable_user, ADMIN)
    page("GET", "/admin/agencies", agencies, ADMIN)
    page("POST", "/admin/agencies/keys", add_key, ADMIN)
    page("POST", "/admin/agencies/keys/revoke", revoke_key, ADMIN)
    page("GET", "/admin/settings", settings_page, ADMIN)
