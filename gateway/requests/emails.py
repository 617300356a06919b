"""The mails of the request cycle. They carry no personal data: the reference, the agency,
the deadline and the link, nothing about the child."""

from __future__ import annotations

from datetime import date
from html import escape

from gateway.outbox.model import OutgoingMail


def _deadline(d: date) -> str:
    return d.strftime("%A %d %B %Y")


def _html(paragraphs: list[str], link: str | None = None) -> str:
    body = "".join(f"<p>{escape(p)}</p>" for p in paragraphs)
    if link:
        body += f'<p><a href="{escape(link)}">Open the request</a></p>'
    return f'<!doctype html><html lang="en"><body>{body}</body></html>'


def request_mail(
    recipient: str, agency_name: str, reference: str, public_id: str, deadline: date, link: str
) -> OutgoingMail:
    lines = [
        f"The Case Management Review Panel of the Safeguarding Board for Northern Ireland asks "
        f"{agency_name} for information it holds about notification {reference}.",
        f"Please respond by the end of {_deadline(deadline)}.",
        "Open the secure link below in your office browser. It works once: after you submit "
        "your answer it closes. Do not forward this email.",
    ]
    text = "\n\n".join([*lines, link, f"Request {public_id}"]) + "\n"
    return OutgoingMail(
        kind="request",
        recipient=recipient,
        subject=f"Information request {public_id} for CMR notification {reference}",
        text=text,
        html=_html([*lines, f"Request {public_id}"], link),
        about=public_id,
    )


def withdrawn_mail(
    recipient: str, agency_name: str, reference: str, public_id: str
) -> OutgoingMail:
    lines = [
        f"Notification {reference} has been withdrawn, so the information request {public_id} "
        f"to {agency_name} is no longer needed. Its link has been closed.",
        "If you had started an answer, nothing more is needed from you.",
    ]
    return OutgoingMail(
        kind="request_withdrawn",
        recipient=recipient,
        subject=f"No longer needed: information request {public_id} ({reference} withdrawn)",
        text="\n\n".join(lines) + "\n",
        html=_html(lines),
        about=public_id,
    )


def reminder_mail(
    recipient: str,
    agency_name: str,
    reference: str,
    public_id: str,
    deadline: date,
    link_note: str,
    days_left: int,
) -> OutgoingMail:
    lines = [
        f"Reminder: the information request {public_id} to {agency_name} about notification "
        f"{reference} is due by the end of {_deadline(deadline)} "
        f"({days_left} working day{'s' if days_left != 1 else ''} left).",
        link_note,
    ]
    return OutgoingMail(
        kind="reminder",
        recipient=recipient,
        subject=f"Reminder: information request {public_id} due {deadline.isoformat()}",
        text="\n\n".join(lines) + "\n",
        html=_html(lines),
        about=public_id,
    )


def overdue_summary_mail(
    recipient: str, on: date, rows: list[tuple[str, str, str, date]]
) -> OutgoingMail:
    """rows: (request id, reference, agency, deadline) of requests past their deadline."""
    header = f"Information requests past their deadline, {on.isoformat()}:"
    table = [f"{rid}  {ref}  {agency}  due {d.isoformat()}" for rid, ref, agency, d in rows]
    text = "\n".join([header, "", *table]) + "\n"
    html_rows = "".join(
        f"<tr><td>{escape(r)}</td><td>{escape(ref)}</td><td>{escape(a)}</td><td>{d.isoformat()}</td></tr>"
        for r, ref, a, d in rows
    )
    html = (
        f'<!doctype html><html lang="en"><body><p>{escape(header)}</p><table>'
        "<tr><th>Request</th><th>Reference</th><th>Agency</th><th>Deadline</th></tr>"
        f"{html_rows}</table></body></html>"
    )
    return OutgoingMail(
        "overdue_summary",
        recipient,
        f"Overdue information requests {on.isoformat()}",
        text,
        html,
        about=on.isoformat(),
    )
