"""The agenda pack in its three forms, all from one document (docs/meetings.md, "The pack"):
JSON valid against schemas/agenda-1.schema.json, HTML (Jinja2, for a file and for the web pages)
and PDF (reportlab, DejaVu Sans for full Latin coverage, the OFFICIAL-SENSITIVE marking at the
head and foot of every page, page numbers "n of N", and a contents page). Pure."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from gateway.meetings.agenda import SECTIONS
from gateway.meetings.model import MARKING, AgendaVersion, Meeting

FORMATS = ("pdf", "html", "json")
FORMAT = "cmr-agenda/1"
PANEL = "Case Management Review Panel"
BOARD = "Safeguarding Board for Northern Ireland"
ROUTES = {"harm": "Harm, Regulation 17(2)", "good_practice": "Good practice, Regulation 17(3)"}
TEMPLATES = Path(__file__).parent / "templates"
# A table cell's left and right padding together (reportlab's default: 6 pt each), in points.
PADDING = 12.5


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def _long(d: date) -> str:
    return f"{d:%A} {d.day} {d:%B %Y}"


def document(meeting: Meeting, agenda: AgendaVersion, zone: ZoneInfo) -> dict[str, Any]:
    """The pack as JSON: the meeting as it is now (it may have moved since compiling) and one
    version of its agenda."""
    start = meeting.starts_at.astimezone(zone)
    end = meeting.ends_at.astimezone(zone)
    content = agenda.content
    return {
        "format": FORMAT,
        "marking": MARKING,
        "meeting": {
            "id": meeting.public_id,
            "kind": meeting.kind,
            "starts_at": meeting.starts_at.isoformat(),
            "ends_at": meeting.ends_at.isoformat(),
            "timezone": zone.key,
            "local_date": start.date().isoformat(),
            "local_time": f"{start:%H:%M} to {end:%H:%M}",
            "place": meeting.place,
            "online_link": meeting.online_link,
            "reconvenes": meeting.reconvenes,
        },
        "agenda": {
            "version": agenda.version,
            "status": agenda.status,
            "compiled_at": agenda.compiled_at.isoformat(),
            "issued_at": _iso(agenda.issued_at),
            "compared_with_version": content.get("compared_with_version"),
        },
        "sections": content["sections"],
        "removed": content.get("removed", []),
    }


def file_name(doc: Mapping[str, Any], fmt: str) -> str:
    return f"agenda-{doc['meeting']['id']}-v{doc['agenda']['version']}.{fmt}"


def render(doc: Mapping[str, Any], fmt: str) -> bytes:
    if fmt == "json":
        return render_json(doc)
    if fmt == "html":
        return render_html(doc)
    if fmt == "pdf":
        return render_pdf(doc)
    raise ValueError(f"unknown format {fmt!r}")


def render_json(doc: Mapping[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()


def _view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The document with the dates written out for people."""
    issued = doc["agenda"]["issued_at"]
    return {
        **doc,
        "meeting": {
            **doc["meeting"],
            "local_date_text": _long(date.fromisoformat(doc["meeting"]["local_date"])),
        },
        "agenda": {
            **doc["agenda"],
            "issued_at_text": _long(datetime.fromisoformat(issued).date()) if issued else None,
        },
    }


def html_context(doc: Mapping[str, Any]) -> dict[str, Any]:
    """What agenda_body.html needs, for a web page that includes it in its own layout."""
    return {"pack": _view(doc), "panel": PANEL, "routes": ROUTES, "section_titles": SECTIONS}


def render_html(doc: Mapping[str, Any]) -> bytes:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True),
        keep_trailing_newline=True,
    )
    return env.get_template("agenda.html").render(**html_context(doc)).encode()


# -- PDF ------------------------------------------------------------------------------------------


def _answer_text(a: Mapping[str, Any]) -> str:
    parts = []
    if a.get("known_to_agency") is not None:
        parts.append("Known to the agency." if a["known_to_agency"] else "Not known to the agency.")
    if a.get("summary"):
        parts.append(a["summary"])
    if a.get("concerns"):
        parts.append(f"Concerns: {a['concerns']}")
    if a.get("reason"):
        parts.append(f"Declined: {a['reason']}")
    return " ".join(parts) or "-"


def _details(item: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = [
        (
            "Notifying agency",
            f"{item['notifying_agency']['name']} ({item['notifying_agency']['code']})",
        )
    ]
    if item.get("received_on"):
        rows.append(("Received", item["received_on"]))
    if item.get("route"):
        rows.append(("Route", ROUTES.get(item["route"], item["route"])))
    if item.get("children"):
        rows.append(
            ("Children", "; ".join(f"{c['age_band']}, {c['gender']}" for c in item["children"]))
        )
    if item.get("status"):
        rows.append(("Status", item["status"].replace("_", " ")))
    for key, label in (("commissioned_on", "Commissioned"), ("started_on", "Started")):
        if item.get(key):
            rows.append((label, item[key]))
    if item.get("carried_from"):
        rows.append(("Carried from", f"{item['carried_from']} (inquorate)"))
    if "answered" in item:
        rows.append(("Answered", ", ".join(item["answered"]) or "none"))
        rows.append(("Not answered", ", ".join(item["not_answered"]) or "none"))
    return rows


def render_pdf(doc: Mapping[str, Any]) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.pdfbase.pdfmetrics import stringWidth
    from reportlab.pdfgen.canvas import Canvas
    from reportlab.platypus import (
        BaseDocTemplate,
        Frame,
        PageBreak,
        PageTemplate,
        Paragraph,
        Spacer,
        Table,
        TableStyle,
    )
    from reportlab.platypus.tables import CellStyle

    from gateway.pdffonts import register_fonts

    regular, bold = register_fonts()
    body = ParagraphStyle("body", fontName=regular, fontSize=9.5, leading=13, spaceAfter=4)
    cell = ParagraphStyle("cell", parent=body, fontSize=8.5, leading=11, spaceAfter=0)
    h1 = ParagraphStyle("h1", fontName=bold, fontSize=17, leading=21, spaceAfter=6)
    h2 = ParagraphStyle("h2", fontName=bold, fontSize=13, leading=17, spaceBefore=10, spaceAfter=5)
    # keepWithNext: a heading is never the last line of a page (cheaper than KeepTogether,
    # which lays its contents out once more to measure them).
    h3 = ParagraphStyle(
        "h3",
        fontName=bold,
        fontSize=10.5,
        leading=14,
        spaceBefore=8,
        spaceAfter=3,
        keepWithNext=1,
    )
    toc0 = ParagraphStyle("toc0", fontName=bold, fontSize=10, leading=14)
    toc1 = ParagraphStyle("toc1", fontName=regular, fontSize=9, leading=12, leftIndent=12)
    meeting, agenda = doc["meeting"], doc["agenda"]
    footer_left = f"{meeting['id']}, agenda version {agenda['version']} ({agenda['status']})"

    class NumberedCanvas(Canvas):  # type: ignore[misc]
        """Draws the marking and "page n of N" once the page count is known."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._pages: list[dict[str, Any]] = []

        def showPage(self) -> None:
            self._pages.append(dict(self.__dict__))
            self._startPage()

        def save(self) -> None:
            total = len(self._pages)
            for state in self._pages:
                self.__dict__.update(state)
                self._furniture(total)
                super().showPage()
            super().save()

        def _furniture(self, total: int) -> None:
            width, height = A4
            self.saveState()
            self.setFont(bold, 10)
            self.setFillColor(colors.HexColor("#8B0000"))
            self.drawCentredString(width / 2, height - 11 * mm, MARKING)
            self.drawCentredString(width / 2, 8 * mm, MARKING)
            self.setFillColor(colors.black)
            self.setFont(regular, 8)
            self.drawString(18 * mm, 13 * mm, footer_left)
            self.drawRightString(width - 18 * mm, 13 * mm, f"Page {self._pageNumber} of {total}")
            self.restoreState()

    class PackTemplate(BaseDocTemplate):  # type: ignore[misc]
        def afterFlowable(self, flowable: Any) -> None:
            # Each heading is an entry of the PDF's outline (the reader's side panel), where a
            # contents page with page numbers would need the whole pack laid out twice or
            # three times (multiBuild): a 1,000-item pack took 25 s instead of 8.
            level = getattr(flowable, "_toc_level", None)
            if level is not None:
                key = f"h-{self.seq.nextf('toc')}"
                self.canv.bookmarkPage(key)
                self.canv.addOutlineEntry(flowable.getPlainText(), key, level=level)

    def heading(text: str, style: ParagraphStyle, level: int | None) -> Paragraph:
        p = Paragraph(escape(text), style)
        p._toc_level = level
        return p

    # Every cell has the same style: one object for them all, where a Table makes one per cell and
    # sets each (safe shared, as the tables' own commands are a grid and a background only).
    every_cell = CellStyle("pack")
    every_cell.fontname, every_cell.fontsize, every_cell.leading = regular, 8.5, 11
    every_cell.valign = "TOP"
    plain = TableStyle([("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#8899AA"))])
    headed = TableStyle([("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#E8EEF4"))], parent=plain)

    def grid(rows: list[list[str]], widths: list[float], header: bool = False) -> Table:
        # A cell whose text fits on one line is drawn as a plain string: a Paragraph costs a
        # markup parse and line breaking on every layout, most of a large pack's time.
        cells = [
            [
                text
                if "\n" not in text and stringWidth(text, regular, 8.5) <= w - PADDING
                else para(text)
                for text, w in zip(row, widths, strict=True)
            ]
            for row in rows
        ]
        table = Table(
            cells,
            colWidths=widths,
            hAlign="LEFT",
            repeatRows=1 if header else 0,
            cellStyles=[[every_cell] * len(widths) for _ in cells],
        )
        table.setStyle(headed if header else plain)
        return table

    def para(text: str, style: ParagraphStyle = cell) -> Paragraph:
        return Paragraph(escape(text), style)

    buffer = io.BytesIO()
    doc_template = PackTemplate(
        buffer,
        pagesize=A4,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=18 * mm,
        bottomMargin=20 * mm,
        title=f"{PANEL} agenda {meeting['id']} v{agenda['version']} ({MARKING})",
        author=BOARD,
        subject=MARKING,
        invariant=True,
    )
    frame = Frame(
        doc_template.leftMargin,
        doc_template.bottomMargin,
        doc_template.width,
        doc_template.height,
        id="body",
    )
    doc_template.addPageTemplates([PageTemplate(id="pack", frames=[frame])])
    width = doc_template.width

    when = [
        [
            "Meeting",
            meeting["id"]
            + (f" (reconvening {meeting['reconvenes']})" if meeting["reconvenes"] else ""),
        ],
        ["Date", _long(date.fromisoformat(meeting["local_date"]))],
        ["Time", f"{meeting['local_time']} ({meeting['timezone']})"],
    ]
    if meeting["place"]:
        when.append(["Place", meeting["place"]])
    if meeting["online_link"]:
        when.append(["Online", meeting["online_link"]])
    status = f"version {agenda['version']}, {agenda['status']}"
    if agenda["issued_at"]:
        status += f", issued {_long(datetime.fromisoformat(agenda['issued_at']).date())}"
    if agenda["compared_with_version"]:
        status += f"; changes since version {agenda['compared_with_version']} are marked"
    when.append(["Agenda", status])
    contents: list[Any] = []
    for section in doc["sections"]:
        contents.append(para(f"{section['number']}. {section['title']}", toc0))
        contents += [
            para(f"{item['number']} {item.get('reference') or item.get('title') or ''}", toc1)
            for item in section["items"]
        ]
    story: list[Any] = [
        Paragraph(escape(f"{PANEL}: agenda"), h1),
        Paragraph(escape(BOARD), body),
        grid([[a, b] for a, b in when], [30 * mm, width - 30 * mm]),
        Spacer(1, 6),
        Paragraph("Contents", h2),
        *contents,
        PageBreak(),
    ]
    if doc["removed"]:
        story.append(heading(f"Removed since version {agenda['compared_with_version']}", h2, 0))
        for r in doc["removed"]:
            story.append(para(f"{r['item']} ({SECTIONS.get(r['section'], r['section'])})", body))
    for section in doc["sections"]:
        story.append(heading(f"{section['number']}. {section['title']}", h2, 0))
        if not section["items"]:
            story.append(para("None.", body))
        for item in section["items"]:
            label = item.get("reference") or item.get("title") or ""
            mark = ""
            if item.get("change"):
                fields = ", ".join(item.get("changed_fields") or [])
                mark = f" [{item['change'].upper()}{': ' + fields if fields else ''}]"
            parts: list[Any] = [heading(f"{item['number']} {label}{mark}", h3, 1)]
            if item.get("reference"):
                parts.append(
                    grid(
                        [[a, b] for a, b in _details(item)],
                        [32 * mm, width - 32 * mm],
                    )
                )
            story += parts
            checklist = item.get("checklist")
            if checklist:
                story.append(Spacer(1, 4))
                story.append(para(f"Regulation {checklist['regulation']} checklist", h3))
                rows = [["Limb", "Criterion", "As notified"]]
                rows += [[r["limb"], r["question"], r["answer"]] for r in checklist["rows"]]
                story.append(grid(rows, [20 * mm, 70 * mm, width - 90 * mm], header=True))
            if item.get("learning_flags"):
                story.append(
                    para("Points for the panel: " + "; ".join(item["learning_flags"]), body)
                )
            history = (item.get("deferrals") or {}).get("history") or []
            if history:
                story.append(
                    para(f"Deferred {len(history)} time{'s' if len(history) != 1 else ''}:", body)
                )
                for d in history:
                    story.append(para(f"{d['meeting']}: {d['reason']}", body))
            if item.get("answers"):
                story.append(para("Information from agencies", h3))
                rows = [["Agency", "Status", "Summary"]]
                for a in item["answers"]:
                    state = a["status"] + (
                        f" {a['answered_on']}" if a["answered_on"] else f", due {a['deadline_on']}"
                    )
                    rows.append(
                        [
                            f"{a['agency_name']} ({a['agency']})",
                            state,
                            _answer_text(a),
                        ]
                    )
                story.append(grid(rows, [38 * mm, 28 * mm, width - 66 * mm], header=True))
            if item.get("decision_sought"):
                story.append(Spacer(1, 3))
                story.append(para(f"Decision sought: {item['decision_sought']}", body))
    doc_template.build(story, canvasmaker=NumberedCanvas)
    return buffer.getvalue()
