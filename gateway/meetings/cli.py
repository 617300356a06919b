"""Commands of the panel's work (docs/meetings.md): `meeting list|add|move|compile|issue|pack|
record|tick`, `case ready|withdraw|show`, `board decide`, and `cmr start|complete`."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

from gateway.cliutil import command, group, run, settings_from
from gateway.errors import UsageError
from gateway.meetings.model import Meeting
from gateway.meetings.pack import FORMATS, file_name, render
from gateway.services import Services, open_services


def _actor() -> str:
    import getpass

    return f"cli:{getpass.getuser()}"


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2027-03-11") from None


def _local(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date and time like 2027-05-20T14:00"
        ) from None
    if when.tzinfo is not None:
        raise argparse.ArgumentTypeError("give the local time, without an offset")
    return when


def register(sub: Any) -> None:
    meeting = group(sub, "meeting", "the panel's meetings: calendar, agendas, notices, records")
    p = command(meeting, "list", "list the meetings; warn of a year with fewer than four", cmd_list)
    p.add_argument("--year", type=int)
    p = command(meeting, "add", "add a meeting (for example one requisitioned)", cmd_add)
    p.add_argument("at", type=_local, help="local date and time, like 2027-05-20T14:00")
    p.add_argument("--place")
    p.add_argument("--online-link")
    p.add_argument(
        "--requisitioned-by", help="comma-separated ids of the members who requisitioned it"
    )
    p.add_argument("--requisitioned-on", type=_day)
    p = command(meeting, "move", "move a meeting; members get the invitation again", cmd_move)
    p.add_argument("id")
    p.add_argument("at", type=_local)
    p.add_argument("--place")
    p.add_argument("--online-link")
    p = command(meeting, "compile", "compile a draft of the agenda from the cases now", cmd_compile)
    p.add_argument("id")
    p.add_argument("--aob", action="append", default=[], help="an item of any other business")
    p = command(meeting, "issue", "issue the draft agenda and serve the notice", cmd_issue)
    p.add_argument("id")
    p = command(meeting, "pack", "write the agenda pack (OFFICIAL-SENSITIVE: mind where)", cmd_pack)
    p.add_argument("id")
    p.add_argument("--version", type=int)
    p.add_argument("--format", choices=FORMATS, default="pdf")
    p.add_argument("--out", type=Path, default=Path("."))
    p = command(meeting, "record", "record a meeting from a JSON record file", cmd_record)
    p.add_argument("file", type=Path)
    command(meeting, "tick", "do what is due now: compile at cut-offs, serve notices", cmd_tick)

    case = group(sub, "case", "a notification's way through the panel")
    p = command(case, "ready", "mark ready for the panel (every request settled)", cmd_ready)
    p.add_argument("reference")
    p.add_argument("--meeting", help="keep it for this meeting's agenda")
    p = command(case, "withdraw", "withdraw a notification", cmd_withdraw)
    p.add_argument("reference")
    p.add_argument("--reason", required=True)
    p = command(case, "show", "the state of a notification, its agendas and outcome", cmd_show)
    p.add_argument("reference")

    board = group(sub, "board", "the SBNI Board's decisions")
    p = command(board, "decide", "record the Board's decision on the panel's outcome", cmd_decide)
    p.add_argument("reference")
    p.add_argument("decision", choices=["commissioned", "not-commissioned"])
    p.add_argument("--on", type=_day, required=True)

    cmr = group(sub, "cmr", "commissioned Case Management Reviews")
    p = command(cmr, "start", "record the start of a commissioned review", cmd_cmr_start)
    p.add_argument("reference")
    p.add_argument("--on", type=_day, required=True)
    p = command(cmr, "complete", "record the completion of a review", cmd_cmr_complete)
    p.add_argument("reference")
    p.add_argument("--on", type=_day, required=True)
    p.add_argument("--recommendations", type=int, required=True)
    p.add_argument("--theme", action="append", default=[], help="a theme of the recommendations")


def _with(args: argparse.Namespace, fn: Any) -> Any:
    async def go() -> Any:
        async with open_services(settings_from(args)) as s:
            return await fn(s)

    return run(go())


def _line(m: Meeting, zone: Any) -> str:
    local = m.starts_at.astimezone(zone)
    sent = m.notice_sent_at.astimezone(zone).strftime("%Y-%m-%d %H:%M") if m.notice_sent_at else "-"
    where = m.place or m.online_link or "-"
    extra = f" (reconvenes {m.reconvenes})" if m.reconvenes else ""
    return (
        f"{m.public_id}\t{local:%a %d %b %Y %H:%M}\t{m.kind}{extra}\t{m.status}\t"
        f"cut-off {m.cut_off_on}\tnotice by {m.notice_by_on}\tnotice sent {sent}\t{where}"
    )


def cmd_list(args: argparse.Namespace) -> int:
    async def go(s: Services) -> tuple[list[Meeting], list[str], str, Any]:
        found = await s.meetings.meetings(args.year)
        years = [args.year] if args.year else None
        warnings = await s.meetings.calendar_warnings(years)
        return found, warnings, s.meetings.calendar.describe(), s.meetings.zone

    found, warnings, described, zone = _with(args, go)
    for w in warnings:
        print(w, file=sys.stderr)
    print(f"calendar: {described}")
    for m in found:
        print(_line(m, zone))
    if not found:
        print("no meetings")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    signers = [x.strip() for x in (args.requisitioned_by or "").split(",") if x.strip()]

    async def go(s: Services) -> tuple[Meeting, Any]:
        m = await s.meetings.add_meeting(
            args.at,
            _actor(),
            place=args.place,
            online_link=args.online_link,
            requisitioned_by=signers,
            requisitioned_on=args.requisitioned_on,
        )
        return m, s.meetings.zone

    m, zone = _with(args, go)
    print(f"added {_line(m, zone)}")
    return 0


def cmd_move(args: argparse.Namespace) -> int:
    async def go(s: Services) -> tuple[Meeting, Any]:
        m = await s.meetings.move_meeting(
            args.id, args.at, _actor(), place=args.place, online_link=args.online_link
        )
        return m, s.meetings.zone

    m, zone = _with(args, go)
    print(f"moved {_line(m, zone)} (invitation sequence {m.ics_sequence})")
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    result = _with(args, lambda s: s.meetings.compile(args.id, _actor(), args.aob))
    counts = ", ".join(f"{k} {v}" for k, v in result.counts.items())
    if not result.changed:
        print(f"{result.meeting}: no change since version {result.version} ({counts})")
    else:
        marked = f"; {result.changes} changes marked" if result.changes else ""
        print(f"{result.meeting}: draft version {result.version} compiled ({counts}){marked}")
    return 0


def cmd_issue(args: argparse.Namespace) -> int:
    result = _with(args, lambda s: s.meetings.issue(args.id, _actor()))
    what = "notice" if result.notice == "notice" else "revised agenda"
    print(
        f"{result.meeting}: version {result.version} issued; {what} to "
        f"{result.recipients} recipients is in the outbox"
    )
    if result.late:
        print("warning: served less than seven clear days before the meeting", file=sys.stderr)
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    doc = _with(args, lambda s: s.meetings.pack_document(args.id, args.version))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / file_name(doc, args.format)
    path.write_bytes(render(doc, args.format))
    path.chmod(0o600)
    print(f"wrote {path}")
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    try:
        document = json.loads(args.file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read a JSON record from {args.file}: {exc}") from None
    result = _with(args, lambda s: s.meetings.record(document, _actor()))
    if result.already_recorded:
        print(f"{result.meeting}: already recorded from this file; nothing changed")
    elif result.quorate:
        outcomes = ", ".join(f"{ref} {o}" for ref, o in result.outcomes.items()) or "none"
        print(
            f"{result.meeting}: recorded, quorate ({result.present} present, quorum "
            f"{result.quorum}); outcomes: {outcomes}"
        )
    else:
        print(
            f"{result.meeting}: recorded as inquorate ({result.present} present, quorum "
            f"{result.quorum}); reconvened as {result.reconvened}"
        )
    return 0


def cmd_tick(args: argparse.Namespace) -> int:
    result = _with(args, lambda s: s.meetings.tick())
    print(
        f"scheduled {len(result.scheduled)}, compiled {', '.join(result.compiled) or 'none'}, "
        f"notices served {', '.join(result.noticed) or 'none'}"
    )
    return 0


def cmd_ready(args: argparse.Namespace) -> int:
    case = _with(args, lambda s: s.cases.mark_ready(args.reference, _actor(), args.meeting))
    kept = f", kept for {args.meeting}" if args.meeting else ""
    print(f"{case.reference} is {case.status}{kept}")
    return 0


def cmd_withdraw(args: argparse.Namespace) -> int:
    case = _with(args, lambda s: s.cases.withdraw(args.reference, args.reason, _actor()))
    print(f"{case.reference} is {case.status}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    case = _with(args, lambda s: s.cases.case(args.reference))
    print(f"{case.reference}\t{case.agency}\t{case.route}\t{case.status}")
    for meeting, section, outcome in case.placements:
        print(f"  {meeting}\t{section}\t{outcome or 'undecided'}")
    o = case.outcome
    if o is not None:
        print(
            f"  Board: {o.board_decision or '-'} on {o.board_considered_on or '-'}; "
            f"started {o.cmr_started_on or '-'}; completed {o.cmr_completed_on or '-'}; "
            f"recommendations {o.recommendations if o.recommendations is not None else '-'}"
            + (f"; themes: {', '.join(o.themes)}" if o.themes else "")
        )
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
    case = _with(
        args, lambda s: s.cases.board_decide(args.reference, args.decision, args.on, _actor())
    )
    print(f"{case.reference} is {case.status} (Board decision of {args.on.isoformat()})")
    return 0


def cmd_cmr_start(args: argparse.Namespace) -> int:
    case = _with(args, lambda s: s.cases.start_cmr(args.reference, args.on, _actor()))
    print(f"{case.reference} is {case.status} from {args.on.isoformat()}")
    return 0


def cmd_cmr_complete(args: argparse.Namespace) -> int:
    case = _with(
        args,
        lambda s: s.cases.complete_cmr(
            args.reference, args.on, args.recommendations, args.theme, _actor()
        ),
    )
    print(
        f"{case.reference} is {case.status} on {args.on.isoformat()} with "
        f"{args.recommendations} recommendations"
    )
    return 0
