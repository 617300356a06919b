"""The notice of a meeting (Schedule 5: the business to be transacted, served on each member):
an email to every member and the secretariat, with an iCalendar invitation whose UID stays the
meeting's for life and whose SEQUENCE goes up each time the meeting moves, so calendars update
the event instead of adding another.

No personal data: the mail and the invitation carry the date, the place, the business in outline
(counts and references, nothing about anyone) and a link to the pack on the web listener. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

from icalendar import Calendar, Event, Timezone, vCalAddress, vText

from gateway.meetings.model import MARKING, RECONVENED, Meeting
from gateway.outbox.model import MailAttachment, OutgoingMail

PANEL = "Case Management Review Panel"
BOARD = "Safeguarding Board for Northern Ireland"
PRODID = "-//SBNI//CMR gateway meetings//EN"
KINDS = {
    "notice": ("meeting_notice", "Notice of meeting"),
    "revised": ("meeting_revised", "Revised agenda"),
    "moved": ("meeting_moved", "Meeting moved"),
}


def pack_link(base_url: str, public_id: str) -> str:
    return f"{base_url.rstrip('/')}/meetings/{public_id}/pack"


def outline(content: Mapping[str, Any]) -> list[str]:
    """The business in outline: each section with its number of items, and the references of
    the cases for decision (a reference names nobody)."""
    lines = []
    for s in content["sections"]:
        items = s["items"]
        line = f"{s['number']}. {s['title']}: {len(items)}"
        if s["id"] in ("new", "deferred") and items:
            line += f" ({', '.join(i['reference'] for i in items)})"
        if s["id"] == "aob":
            line = f"{s['number']}. {s['title']}: {len(items)} item{'s' if len(items) != 1 else ''}"
        lines.append(line)
    return lines


def _day(d: date) -> str:
    return f"{d:%A} {d.day} {d:%B %Y}"


@dataclass(frozen=True)
class Notice:
    meeting: Meeting
    zone: ZoneInfo
    outline: Sequence[str]
    link: str
    version: int
    organizer: str
    # Served later than seven clear days before the meeting.
    late: bool = False

    def when(self) -> list[tuple[str, str]]:
        start = self.meeting.starts_at.astimezone(self.zone)
        end = self.meeting.ends_at.astimezone(self.zone)
        rows = [
            ("Meeting", self._title()),
            ("Date", _day(start.date())),
            ("Time", f"{start:%H:%M} to {end:%H:%M} ({self.zone.key})"),
        ]
        if self.meeting.place:
            rows.append(("Place", self.meeting.place))
        if self.meeting.online_link:
            rows.append(("Online", self.meeting.online_link))
        return rows

    def _title(self) -> str:
        m = self.meeting
        if m.kind == RECONVENED and m.reconvenes:
            return f"{m.public_id} (reconvening the inquorate meeting {m.reconvenes})"
        if m.kind == "extra":
            return f"{m.public_id} (an additional meeting)"
        return m.public_id


def invitation(notice: Notice, recipient: str, now: datetime) -> bytes:
    """An iCalendar REQUEST for one recipient (RFC 5545/5546)."""
    m = notice.meeting
    start = m.starts_at.astimezone(notice.zone)
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("method", "REQUEST")
    event = Event()
    event.add("uid", m.ics_uid)
    event.add("sequence", m.ics_sequence)
    event.add("dtstamp", now.astimezone(UTC))
    event.add("dtstart", start)
    event.add("dtend", m.ends_at.astimezone(notice.zone))
    event.add("summary", f"{PANEL} meeting {m.public_id}")
    location = m.place or m.online_link
    if location:
        event.add("location", location)
    event.add("url", notice.link)
    event.add(
        "description",
        "\n".join(["Business:", *notice.outline, "", f"Agenda pack ({MARKING}): {notice.link}"]),
    )
    event.add("status", "CONFIRMED")
    organizer = vCalAddress(f"mailto:{notice.organizer}")
    organizer.params["cn"] = vText(f"{PANEL} secretariat")
    event.add("organizer", organizer)
    attendee = vCalAddress(f"mailto:{recipient}")
    attendee.params["role"] = vText("REQ-PARTICIPANT")
    attendee.params["rsvp"] = vText("TRUE")
    event.add("attendee", attendee)
    cal.add_component(
        Timezone.from_tzinfo(
            notice.zone,
            notice.zone.key,
            first_date=date(start.year, 1, 1),
            last_date=date(start.year + 1, 1, 1),
        )
    )
    cal.add_component(event)
    return bytes(cal.to_ical())


def notice_mail(kind: str, recipient: str, notice: Notice, now: datetime) -> OutgoingMail:
    mail_kind, heading = KINDS[kind]
    m = notice.meeting
    intro = {
        "notice": f"Notice is given of a meeting of the {PANEL} of the {BOARD}.",
        "revised": (
            f"The agenda of this meeting of the {PANEL} has been revised (version "
            f"{notice.version}); changed items are marked in the pack."
        ),
        "moved": (
            f"This meeting of the {PANEL} has moved. The invitation attached replaces the "
            "earlier one in your calendar."
        ),
    }[kind]
    paragraphs = [intro]
    if notice.late:
        paragraphs.append(
            "This notice is served less than seven clear days before the meeting: business "
            "it adds may be taken only if the panel agrees."
        )
    when = [f"{label}: {value}" for label, value in notice.when()]
    pack = (
        f"The agenda pack, version {notice.version} ({MARKING}), is on the gateway's web "
        "pages; sign in to read it. This email holds no case details: do not forward it."
    )
    text = "\n\n".join(
        [
            *paragraphs,
            "\n".join(when),
            "Business to be transacted:\n" + "\n".join(notice.outline),
            pack,
            notice.link,
            "An invitation for your calendar is attached.",
        ]
    )
    rows = "".join(
        f"<tr><th>{escape(label)}</th><td>{escape(value)}</td></tr>"
        for label, value in notice.when()
    )
    business = "".join(f"<li>{escape(line)}</li>" for line in notice.outline)
    html = (
        '<!doctype html><html lang="en"><body>'
        + "".join(f"<p>{escape(p)}</p>" for p in paragraphs)
        + f"<table>{rows}</table><p>Business to be transacted:</p><ul>{business}</ul>"
        + f'<p>{escape(pack)}</p><p><a href="{escape(notice.link)}">Open the agenda pack</a></p>'
        + "</body></html>"
    )
    start = m.starts_at.astimezone(notice.zone)
    return OutgoingMail(
        kind=mail_kind,
        recipient=recipient,
        subject=f"{heading}: {PANEL}, {_day(start.date())} at {start:%H:%M} ({m.public_id})",
        text=text + "\n",
        html=html,
        about=m.public_id,
        attachments=(
            MailAttachment(
                f"{m.public_id}.ics", "text/calendar", invitation(notice, recipient, now)
            ),
        ),
    )
