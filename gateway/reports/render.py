"""The report's forms: JSON (the figures as computed, or as suppressed), HTML and PDF that read
like the published report (sentences, tables, charts), and CSV (one table per figure).

The forms are all built from the same figures: once suppressed, a hidden count is gone from
every form, the charts included (a hidden bar is drawn at zero with its mark above it).
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from gateway.intake.validation import AGE_BANDS
from gateway.pdffonts import register_fonts
from gateway.reports.figures import FIRST_YEAR, GENDERS

FORMATS = ("json", "html", "pdf", "csv")
TITLE = "Learning from Case Management Reviews"
BOARD = "Safeguarding Board for Northern Ireland"
GENDER_NAMES = {"male": "Male", "female": "Female", "other": "Other", "unknown": "Not known"}
# Okabe-Ito colours: told apart with the common colour-vision deficiencies.
MALE, FEMALE, SINGLE = "#0072B2", "#E69F00", "#009E73"

Cell = int | float | str | None


def show(value: Cell) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def height(value: Cell) -> int:
    return value if isinstance(value, int) else 0


def _long_date(iso: str) -> str:
    day = date.fromisoformat(iso)
    return f"{day.day} {day:%B %Y}"


def _count(value: Cell, singular: str, plural: str) -> str:
    return f"{show(value)} {singular if value == 1 else plural}"


def _genders(counts: dict[str, Cell]) -> str:
    return ", ".join(f"{show(counts[g])} {GENDER_NAMES[g].lower()}" for g in GENDERS)


@dataclass(frozen=True)
class Table:
    id: str
    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    description: str
    png: bytes
    # Width over height, so the PDF keeps the shape.
    aspect: float

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode()


@dataclass(frozen=True)
class Section:
    title: str
    paragraphs: tuple[str, ...]
    charts: tuple[Chart, ...] = ()
    tables: tuple[Table, ...] = ()


# -- tables ---------------------------------------------------------------------------------------


def _measures(id: str, title: str, rows: Sequence[tuple[str, Cell]]) -> Table:
    return Table(id, title, ("Measure", "Number"), tuple((name, show(v)) for name, v in rows))


def _band_table(id: str, title: str, section: dict[str, Any]) -> Table:
    bands = section["by_age_band"]
    rows = [
        (band, *(show(bands[band][g]) for g in GENDERS), show(bands[band]["total"]))
        for band in AGE_BANDS
    ]
    rows.append(
        ("All ages", *(show(section["by_gender"][g]) for g in GENDERS), show(section["children"]))
    )
    header = ("Age band", *(GENDER_NAMES[g] for g in GENDERS), "Total")
    return Table(id, title, header, tuple(rows))


def tables(figures: dict[str, Any]) -> dict[str, Table]:
    received = figures["notifications_received"]
    considered = figures["considered_by_board"]
    from_year = figures["commissioned_from_year_received"]
    since = figures["since_inception"]
    done = figures["completed_in_year"]
    found = [
        _measures(
            "notifications-received",
            "Notifications received",
            [("Notifications", received["notifications"]), ("Children", received["children"])],
        ),
        _band_table(
            "notifications-by-age-band",
            "Children notified, by age band and gender",
            received,
        ),
        _measures(
            "considered-by-board",
            "Notifications considered by the Board",
            [
                ("Notifications considered", considered["notifications"]),
                ("of which received in previous years", considered["received_in_previous_years"]),
                ("CMRs commissioned", considered["commissioned"]),
            ],
        ),
        _measures(
            "commissioned-from-year-received",
            "CMRs commissioned from the year's notifications",
            [
                ("Notifications", from_year["notifications"]),
                *(
                    (f"Children: {GENDER_NAMES[g].lower()}", from_year["children_by_gender"][g])
                    for g in GENDERS
                ),
            ],
        ),
        _measures(
            "since-inception",
            f"CMRs since {FIRST_YEAR}",
            [
                ("Commissioned", since["commissioned"]),
                ("Completed", since["completed"]),
                ("Under way", since["under_way"]),
            ],
        ),
        Table(
            "completed-by-year",
            "CMRs completed in each year",
            ("Year", "CMRs completed"),
            tuple((y, show(n)) for y, n in since["completed_by_year"].items()),
        ),
        _measures(
            "completed-in-year",
            "CMRs completed in the year",
            [
                ("Reviews completed", done["reviews"]),
                ("Children in the reviews", done["children"]),
                ("Average completion time (months)", done["average_completion_months"]),
                ("Recommendations", done["recommendations"]),
            ],
        ),
        _band_table(
            "completed-by-age-band",
            "Children in the completed reviews, by age band and gender",
            done,
        ),
    ]
    return {t.id: t for t in found}


# -- charts ---------------------------------------------------------------------------------------


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    # No software stamp, so the same figures give the same bytes.
    fig.savefig(buffer, format="png", dpi=150, metadata={"Software": None})
    return buffer.getvalue()


def _bars(
    ax: Any, categories: Sequence[str], series: Sequence[tuple[str, list[Cell], str]]
) -> None:
    from matplotlib.ticker import MaxNLocator

    width = 0.8 / len(series)
    for i, (label, values, colour) in enumerate(series):
        offset = (i - (len(series) - 1) / 2) * width
        xs = [x + offset for x in range(len(categories))]
        bars = ax.bar(xs, [height(v) for v in values], width, label=label, color=colour)
        ax.bar_label(bars, labels=[show(v) for v in values], padding=2, fontsize=8)
    ax.set_xticks(range(len(categories)), categories)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, max([1, *(height(v) for _, vs, _ in series for v in vs)]) * 1.15)
    ax.spines[["top", "right"]].set_visible(False)
    if len(series) > 1:
        ax.legend(frameon=False, fontsize=9)


def _by_band(section: dict[str, Any], gender: str) -> list[Cell]:
    return [section["by_age_band"][band][gender] for band in AGE_BANDS]


def charts(figures: dict[str, Any]) -> dict[str, Chart]:
    from matplotlib.figure import Figure

    year = figures["year"]
    received = figures["notifications_received"]
    done = figures["completed_in_year"]
    per_year = figures["since_inception"]["completed_by_year"]
    found: list[Chart] = []

    size = (7.0, 3.2)
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.subplots()
    _bars(
        ax,
        AGE_BANDS,
        [
            ("Male", _by_band(received, "male"), MALE),
            ("Female", _by_band(received, "female"), FEMALE),
        ],
    )
    ax.set_ylabel("Children")
    found.append(
        Chart(
            "notified-age-range",
            f"Figure 1: age range of children notified in {year}",
            "Bar chart: children notified in the year in each age band, male and female side by "
            "side.",
            _png(fig),
            size[0] / size[1],
        )
    )

    fig = Figure(figsize=size, layout="constrained")
    ax = fig.subplots()
    _bars(ax, list(per_year), [("CMRs completed", list(per_year.values()), SINGLE)])
    ax.tick_params(axis="x", labelsize=8)
    for label in ax.get_xticklabels():
        label.set(rotation=45, ha="right", rotation_mode="anchor")
    ax.set_ylabel("CMRs completed")
    found.append(
        Chart(
            "completed-per-year",
            f"Figure 2: CMRs completed in each year since {FIRST_YEAR}",
            "Bar chart: the number of CMRs completed in each business year.",
            _png(fig),
            size[0] / size[1],
        )
    )

    fig = Figure(figsize=size, layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[2, 3])
    _bars(
        left,
        [GENDER_NAMES[g] for g in GENDERS],
        [("Children", [done["by_gender"][g] for g in GENDERS], SINGLE)],
    )
    left.tick_params(axis="x", labelsize=8)
    left.set_title("Gender", fontsize=10)
    left.set_ylabel("Children")
    _bars(
        right,
        AGE_BANDS,
        [("Male", _by_band(done, "male"), MALE), ("Female", _by_band(done, "female"), FEMALE)],
    )
    right.tick_params(axis="x", labelsize=8)
    right.set_title("Age range", fontsize=10)
    found.append(
        Chart(
            "completed-gender-age",
            f"Figure 3: gender and age range of children in the CMRs completed in {year}",
            "Bar charts: the children in the reviews completed in the year by gender, and by age "
            "band with male and female side by side.",
            _png(fig),
            size[0] / size[1],
        )
    )
    return {c.id: c for c in found}


# -- the text -------------------------------------------------------------------------------------


def suppression_note(figures: dict[str, Any]) -> str | None:
    suppression = figures.get("suppression")
    if not suppression:
        return None
    below = suppression["below"]
    return (
        f"To protect the children's identities, numbers from 1 to {below - 1} are shown as "
        f"<{below}, and [c] marks a number withheld so that such a number cannot be worked out "
        "from the others."
    )


def sections(figures: dict[str, Any], with_charts: bool = True) -> list[Section]:
    year = figures["year"]
    start, end = (_long_date(figures["period"][k]) for k in ("start", "end"))
    received = figures["notifications_received"]
    considered = figures["considered_by_board"]
    from_year = figures["commissioned_from_year_received"]
    since = figures["since_inception"]
    done = figures["completed_in_year"]
    t = tables(figures)
    c = charts(figures) if with_charts else {}

    def chart(id: str) -> tuple[Chart, ...]:
        return (c[id],) if id in c else ()

    completed_text: list[str]
    if done["reviews"] == 0:
        completed_text = [f"No CMR was completed in {year}."]
    else:
        completed_text = [
            f"{_count(done['reviews'], 'CMR was', 'CMRs were')} completed in {year}, concerning "
            f"{_count(done['children'], 'child', 'children')} ({_genders(done['by_gender'])}); "
            "Figure 3 shows their gender and age range."
        ]
        average = done["average_completion_months"]
        if average is not None:
            completed_text.append(
                f"On average a review took {show(average)} months from being commissioned to "
                "being completed."
            )
        recommendations = done["recommendations"]
        text = f"The reviews made {_count(recommendations, 'recommendation', 'recommendations')}"
        if isinstance(recommendations, int) and isinstance(done["reviews"], int):
            text += f", {recommendations / done['reviews']:.1f} per review on average"
        completed_text.append(text + ".")

    under_way = since["under_way"]
    return [
        Section(
            "Notifications received",
            (
                f"Between {start} and {end} the Case Management Review Panel received "
                f"{_count(received['notifications'], 'notification', 'notifications')} "
                f"concerning {_count(received['children'], 'child', 'children')} "
                f"({_genders(received['by_gender'])}). Figure 1 shows their age range: a child's "
                "age is taken at the date of the incident.",
            ),
            chart("notified-age-range"),
            (t["notifications-received"], t["notifications-by-age-band"]),
        ),
        Section(
            "Notifications considered by the Board",
            (
                f"The SBNI Board considered "
                f"{_count(considered['notifications'], 'notification', 'notifications')} in "
                f"{year}, {show(considered['received_in_previous_years'])} of them received in "
                f"previous years, and commissioned "
                f"{_count(considered['commissioned'], 'CMR', 'CMRs')}.",
                f"Of the notifications received in {year}, {show(from_year['notifications'])} "
                f"had led to a CMR being commissioned by {end}; the children concerned: "
                f"{_genders(from_year['children_by_gender'])}.",
            ),
            (),
            (t["considered-by-board"], t["commissioned-from-year-received"]),
        ),
        Section(
            f"CMRs since {FIRST_YEAR}",
            (
                f"Since the first CMRs were commissioned in {FIRST_YEAR}, the Board has "
                f"commissioned {_count(since['commissioned'], 'CMR', 'CMRs')}. By {end}, "
                f"{show(since['completed'])} had been completed and {show(under_way)} "
                f"{'was' if under_way == 1 else 'were'} under way. Figure 2 shows the CMRs "
                "completed in each year.",
            ),
            chart("completed-per-year"),
            (t["since-inception"], t["completed-by-year"]),
        ),
        Section(
            f"CMRs completed in {year}",
            tuple(completed_text),
            chart("completed-gender-age"),
            (t["completed-in-year"], t["completed-by-age-band"]),
        ),
    ]


def _period(figures: dict[str, Any]) -> str:
    period = figures["period"]
    return f"{_long_date(period['start'])} to {_long_date(period['end'])}"


def title(figures: dict[str, Any]) -> str:
    return f"{TITLE} {figures['year']}"


# -- the forms ------------------------------------------------------------------------------------


def render_json(figures: dict[str, Any]) -> bytes:
    return (json.dumps(figures, indent=2, ensure_ascii=False) + "\n").encode()


def render_html(figures: dict[str, Any]) -> bytes:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=select_autoescape(default=True),
        keep_trailing_newline=True,
    )
    template = env.get_template("annual.html")
    return template.render(
        title=title(figures),
        board=BOARD,
        period=_period(figures),
        sections=sections(figures),
        note=suppression_note(figures),
    ).encode()


def render_csv(figures: dict[str, Any]) -> dict[str, bytes]:
    """One CSV per table, by table id."""
    out: dict[str, bytes] = {}
    for table in tables(figures).values():
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer)
        writer.writerow(table.header)
        writer.writerows(table.rows)
        out[table.id] = buffer.getvalue().encode()
    return out


def render_pdf(figures: dict[str, Any]) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import (
        Image,
        KeepTogether,
        Paragraph,
        SimpleDocTemplate,
        Spacer,
        TableStyle,
    )
    from reportlab.platypus import Table as PdfTable

    regular, bold = register_fonts()
    body = ParagraphStyle("body", fontName=regular, fontSize=10, leading=14, spaceAfter=6)
    small = ParagraphStyle("small", parent=body, fontSize=8.5, leading=11)
    h1 = ParagraphStyle("h1", fontName=bold, fontSize=18, leading=22, spaceAfter=4)
    h2 = ParagraphStyle("h2", fontName=bold, fontSize=13, leading=17, spaceBefore=10, spaceAfter=6)
    h3 = ParagraphStyle("h3", fontName=bold, fontSize=10, leading=13, spaceBefore=6, spaceAfter=3)

    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=20 * mm,
        rightMargin=20 * mm,
        topMargin=18 * mm,
        bottomMargin=18 * mm,
        title=title(figures),
        author=BOARD,
        subject="Case Management Review Panel annual learning report",
        invariant=True,
    )
    width = doc.width
    story: list[Any] = [
        Paragraph(escape(title(figures)), h1),
        Paragraph(
            escape(f"{BOARD}: {_period(figures)}"),
            body,
        ),
    ]
    note = suppression_note(figures)
    if note:
        story.append(Paragraph(escape(note), small))
    for section in sections(figures):
        story.append(Paragraph(escape(section.title), h2))
        story.extend(Paragraph(escape(p), body) for p in section.paragraphs)
        for chart in section.charts:
            story.append(
                KeepTogether(
                    [
                        Paragraph(escape(chart.title), h3),
                        Image(io.BytesIO(chart.png), width=width, height=width / chart.aspect),
                    ]
                )
            )
        for table in section.tables:
            grid = PdfTable(
                [list(table.header), *(list(r) for r in table.rows)],
                hAlign="LEFT",
                repeatRows=1,
            )
            grid.setStyle(
                TableStyle(
                    [
                        ("FONTNAME", (0, 0), (-1, -1), regular),
                        ("FONTNAME", (0, 0), (-1, 0), bold),
                        ("FONTSIZE", (0, 0), (-1, -1), 9),
                        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#E8EEF4")),
                        ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#8899AA")),
                        ("ALIGN", (1, 1), (-1, -1), "RIGHT"),
                    ]
                )
            )
            story.append(KeepTogether([Paragraph(escape(table.title), h3), grid, Spacer(1, 4)]))
    doc.build(story)
    return buffer.getvalue()


def report_files(figures: dict[str, Any], fmt: str) -> dict[str, bytes]:
    """File name -> content for one format."""
    stem = f"learning-report-{figures['year']}"
    if fmt == "json":
        return {f"{stem}.json": render_json(figures)}
    if fmt == "html":
        return {f"{stem}.html": render_html(figures)}
    if fmt == "pdf":
        return {f"{stem}.pdf": render_pdf(figures)}
    if fmt == "csv":
        return {f"{stem}-{id}.csv": content for id, content in render_csv(figures).items()}
    raise ValueError(f"unknown format {fmt!r}")
