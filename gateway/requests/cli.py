"""`cmr-gateway request ...`: the secretariat's commands until its pages exist (and for
scripts after)."""

from __future__ import annotations

import argparse
import json
from typing import Any
from zoneinfo import ZoneInfo

from gateway.cliutil import command, group, run, settings_from
from gateway.services import open_services

LONDON = ZoneInfo("Europe/London")


def register(sub: Any) -> None:
    req = group(sub, "request", "information requests to other agencies")
    p = command(req, "create", "ask an agency for what it knows about a notification", cmd_create)
    p.add_argument("reference")
    p.add_argument("--agency", required=True)
    p.add_argument("--deadline-days", type=int)
    p = command(req, "list", "list requests, of one notification or all", cmd_list)
    p.add_argument("reference", nargs="?")
    p = command(
        req, "show", "show a request and its answer (personal data: mind the screen)", cmd_show
    )
    p.add_argument("id")
    p = command(req, "revoke", "revoke an open request; its link dies at once", cmd_revoke)
    p.add_argument("id")
    p = command(req, "reissue", "revoke a request and send a new link", cmd_reissue)
    p.add_argument("id")
    p.add_argument("--deadline-days", type=int)
    command(req, "chase", "send due reminders and expire what has passed its deadline", cmd_chase)

    box = group(sub, "outbox", "the mail outbox")
    p = command(box, "list", "list mail and its delivery state", cmd_outbox_list)
    p.add_argument("--status", choices=["pending", "sending", "delivered", "failed"])
    p = command(box, "retry", "send a failed mail again", cmd_outbox_retry)
    p.add_argument("id", type=int)
    command(box, "deliver", "deliver what is due now", cmd_outbox_deliver)


def _actor() -> str:
    import getpass

    return f"cli:{getpass.getuser()}"


def cmd_create(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with open_services(settings_from(args)) as s:
            return await s.requests.create(
                args.reference, args.agency, _actor(), args.deadline_days
            )

    created = run(go())
    print(
        f"request {created.public_id} to {args.agency} for {args.reference}, "
        f"due {created.deadline_on.isoformat()}; the mail is in the outbox"
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with open_services(settings_from(args)) as s:
            return await s.requests.all_requests(args.reference)

    rows = run(go())
    for r in rows:
        print(
            f"{r.public_id}\t{r.reference}\t{r.agency}\t{r.status}\tdue {r.deadline_on}\t"
            f"created {r.created_at.astimezone(LONDON):%Y-%m-%d %H:%M}"
        )
    if not rows:
        print("no requests")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with open_services(settings_from(args)) as s:
            row = await s.requests.get(args.id)
            return row, await s.requests.read_answer(args.id)

    row, answer = run(go())
    print(f"{row.public_id} {row.reference} {row.agency} {row.status} due {row.deadline_on}")
    if answer:
        print(
            json.dumps(
                {**answer, "received_at": answer["received_at"].isoformat()},
                indent=2,
                ensure_ascii=False,
            )
        )
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    async def go() -> None:
        async with open_services(settings_from(args)) as s:
            await s.requests.revoke(args.id, _actor())

    run(go())
    print(f"revoked {args.id}")
    return 0


def cmd_reissue(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with open_services(settings_from(args)) as s:
            return await s.requests.reissue(args.id, _actor(), args.deadline_days)

    created = run(go())
    print(f"revoked {args.id}; new request {created.public_id}, due {created.deadline_on}")
    return 0


def cmd_chase(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with open_services(settings_from(args)) as s:
            return await s.requests.chase()

    result = run(go())
    print(f"{result.reminders} reminders queued, {result.expired} requests expired")
    return 0


def cmd_outbox_list(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with open_services(settings_from(args)) as s:
            return await s.outbox.entries(args.status)

    for e in run(go()):
        when = e.delivered_at or e.next_attempt_at
        print(
            f"{e.id}\t{e.kind}\t{e.about or '-'}\t{e.recipient}\t{e.status}\t"
            f"attempts {e.attempts}\t{when.astimezone(LONDON):%Y-%m-%d %H:%M}"
            + (f"\t{e.last_error}" if e.last_error else "")
        )
    return 0


def cmd_outbox_retry(args: argparse.Namespace) -> int:
    from gateway.audit.chain import AuditEvent
    from gateway.audit.repository import append
    from gateway.errors import UsageError

    async def go() -> bool:
        async with open_services(settings_from(args)) as s, s.db.transaction() as conn:
            now = s.clock.now()
            done = await s.outbox.retry(conn, args.id, now)
            if done:
                await append(conn, AuditEvent(_actor(), "mail.retried", f"outbox:{args.id}"), now)
            return done

    if not run(go()):
        raise UsageError(f"outbox mail {args.id} is not a failed mail")
    print(f"mail {args.id} will be sent again")
    return 0


def cmd_outbox_deliver(args: argparse.Namespace) -> int:
    async def go() -> int:
        async with open_services(settings_from(args)) as s:
            return await s.sender.deliver_due()

    print(f"{run(go())} mails delivered")
    return 0
