"""The annual report as the secretariat uses it: a history file built here, imported with
`history import`, and `report annual` checked figure by figure against counts this file makes
itself from the rows; live notifications counted like imported ones; bad files refused whole.
On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import random
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pypdf import PdfReader
from sqlalchemy import create_engine, func, insert, select
from sqlalchemy.pool import NullPool

from gateway.cli import main
from gateway.settings import Settings
from gateway.storage import database
from gateway.storage.tables import (
    audit_events,
    audit_head,
    case_outcomes,
    history_children,
    history_notifications,
    notifications,
)
from tests.support import RunningGateway

HEADER = [
    "reference",
    "notifying_agency",
    "received_on",
    "child_gender",
    "child_date_of_birth",
    "child_age_band",
    "incident_date",
    "board_considered_on",
    "board_decision",
    "commissioned_on",
    "cmr_completed_on",
    "recommendations",
]
BANDS = ["0-11 months", "1-5 years", "6-11 years", "12-17 years"]
GENDERS = ["male", "female", "other", "unknown"]
AGENCIES = ["EA", "BHSCT", "NHSCT", "SEHSCT", "SHSCT", "WHSCT", "PBNI", "PHA", "PSNI", "SPPG"]
TODAY = datetime.now(ZoneInfo("Europe/London")).date()
PNG = b"\x89PNG\r\n\x1a\n"


# -- a history file, and what its report must say ------------------------------------------------


def iso(day: date | None) -> str:
    return day.isoformat() if day else ""


def history_rows(seed: int = 2012) -> list[dict[str, str]]:
    """Notifications since April 2012, some with several children, in shuffled order."""
    rnd = random.Random(seed)
    first, last = date(2012, 4, 1), TODAY - timedelta(days=20)
    rows: list[dict[str, str]] = []

    def add(reference: str, children: list[tuple[str, date | None, str]], **n: Any) -> None:
        for gender, birth, band in children:
            rows.append(
                {
                    "reference": reference,
                    "notifying_agency": n["agency"],
                    "received_on": iso(n["received"]),
                    "child_gender": gender,
                    "child_date_of_birth": iso(birth),
                    "child_age_band": band,
                    "incident_date": iso(n.get("incident")),
                    "board_considered_on": iso(n.get("considered")),
                    "board_decision": n.get("decision") or "",
                    "commissioned_on": iso(n.get("commissioned")),
                    "cmr_completed_on": iso(n.get("completed")),
                    "recommendations": "" if n.get("recs") is None else str(n["recs"]),
                }
            )

    for i in range(60):
        received = first + timedelta(days=rnd.randrange((last - first).days))
        incident = received - timedelta(days=rnd.randrange(90)) if rnd.random() < 0.8 else None
        on = incident or received
        considered = decision = commissioned = completed = recs = None
        if rnd.random() < 0.85 and received + timedelta(days=240) < TODAY:
            considered = received + timedelta(days=rnd.randrange(7, 240))
            decision = rnd.choice(["commissioned", "commissioned", "not_commissioned", None])
        if decision == "commissioned" and considered:
            commissioned = min(considered + timedelta(days=rnd.randrange(45)), TODAY)
            end = commissioned + timedelta(days=rnd.randrange(120, 1100))
            if rnd.random() < 0.75 and end <= TODAY:
                completed = end
                recs = rnd.randrange(25) if rnd.random() < 0.9 else None
        children = []
        for _ in range(rnd.choice([1, 1, 1, 2, 2, 3])):
            gender = rnd.choice(["male"] * 5 + ["female"] * 5 + ["other", "unknown"])
            if rnd.random() < 0.6:
                children.append((gender, on - timedelta(days=rnd.randrange(17 * 365)), ""))
            else:
                children.append((gender, None, rnd.choice(BANDS)))
        add(
            f"H{i:03d}",
            children,
            agency=rnd.choice(AGENCIES),
            received=received,
            incident=incident,
            considered=considered,
            decision=decision,
            commissioned=commissioned,
            completed=completed,
            recs=recs,
        )

    # The edges of 2023-24: received late in 2022-23 and considered in 2023-24; completed on
    # its last day; a child one year old to the day.
    add(
        "EDGE-LATE",
        [("female", date(2022, 3, 20), ""), ("male", None, "6-11 years")],
        agency="PSNI",
        received=date(2023, 3, 30),
        incident=date(2023, 3, 20),
        considered=date(2023, 4, 12),
        decision="commissioned",
        commissioned=date(2023, 4, 20),
        completed=date(2024, 3, 31),
        recs=4,
    )
    # Received in 2023-24 and commissioned only in 2024-25.
    add(
        "EDGE-NEXT",
        [("other", None, "12-17 years")],
        agency="EA",
        received=date(2024, 2, 15),
        considered=date(2024, 3, 28),
        decision="commissioned",
        commissioned=date(2024, 4, 3),
    )
    add(
        "EDGE-2012",
        [("unknown", date(2012, 1, 5), "")],
        agency="SPPG",
        received=date(2012, 4, 1),
        considered=date(2012, 5, 1),
        decision="commissioned",
        commissioned=date(2012, 6, 1),
        completed=date(2013, 3, 31),
        recs=0,
    )
    rnd.shuffle(rows)
    return rows


def write_csv(path: Path, rows: Iterable[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _day(text: str) -> date | None:
    return date.fromisoformat(text) if text else None


def _band(birth: date, on: date) -> str:
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    if years < 1:
        return "0-11 months"
    if years <= 5:
        return "1-5 years"
    return "6-11 years" if years <= 11 else "12-17 years"


def expected_report(rows: list[dict[str, str]], label: str) -> dict[str, Any]:
    """The report, counted here from the rows (not with the gateway's code)."""
    notes: dict[str, dict[str, Any]] = {}
    for r in rows:
        n = notes.setdefault(
            r["reference"],
            {
                "received": _day(r["received_on"]),
                "considered": _day(r["board_considered_on"]),
                "decision": r["board_decision"],
                "commissioned": _day(r["commissioned_on"]),
                "completed": _day(r["cmr_completed_on"]),
                "recs": int(r["recommendations"] or 0),
                "children": [],
            },
        )
        on = _day(r["incident_date"]) or n["received"]
        birth = _day(r["child_date_of_birth"])
        n["children"].append(
            (r["child_gender"], _band(birth, on) if birth else r["child_age_band"])
        )

    y = int(label[:4])
    start, end = date(y, 4, 1), date(y + 1, 3, 31)

    def within(day: date | None, a: date = start, b: date = end) -> bool:
        return day is not None and a <= day <= b

    def genders(kids: list[tuple[str, str]]) -> dict[str, int]:
        return {g: sum(1 for k in kids if k[0] == g) for g in GENDERS}

    def bands(kids: list[tuple[str, str]]) -> dict[str, dict[str, int]]:
        return {
            b: {
                "total": sum(1 for k in kids if k[1] == b),
                **{g: sum(1 for k in kids if k == (g, b)) for g in GENDERS},
            }
            for b in BANDS
        }

    def commissioned(n: dict[str, Any]) -> bool:
        return n["decision"] == "commissioned" and n["commissioned"] <= end

    def completed(n: dict[str, Any]) -> bool:
        return commissioned(n) and n["completed"] is not None and n["completed"] <= end

    all_notes = list(notes.values())
    received = [n for n in all_notes if within(n["received"])]
    received_kids = [k for n in received for k in n["children"]]
    considered = [n for n in all_notes if within(n["considered"])]
    from_year = [n for n in received if commissioned(n)]
    done = [n for n in all_notes if completed(n) and within(n["completed"])]
    done_kids = [k for n in done for k in n["children"]]
    months = [(n["completed"] - n["commissioned"]).days / 30.4375 for n in done]
    return {
        "year": label,
        "period": {"start": start.isoformat(), "end": end.isoformat()},
        "notifications_received": {
            "notifications": len(received),
            "children": len(received_kids),
            "by_gender": genders(received_kids),
            "by_age_band": bands(received_kids),
        },
        "considered_by_board": {
            "notifications": len(considered),
            "received_in_previous_years": sum(1 for n in considered if n["received"] < start),
            "commissioned": sum(1 for n in considered if n["decision"] == "commissioned"),
        },
        "commissioned_from_year_received": {
            "notifications": len(from_year),
            "children_by_gender": genders([k for n in from_year for k in n["children"]]),
        },
        "since_inception": {
            "commissioned": sum(1 for n in all_notes if commissioned(n)),
            "completed": sum(1 for n in all_notes if completed(n)),
            "under_way": sum(1 for n in all_notes if commissioned(n) and not completed(n)),
            "completed_by_year": {
                f"{z}-{(z + 1) % 100:02d}": sum(
                    1
                    for n in all_notes
                    if completed(n) and within(n["completed"], date(z, 4, 1), date(z + 1, 3, 31))
                )
                for z in range(2012, y + 1)
            },
        },
        "completed_in_year": {
            "reviews": len(done),
            "children": len(done_kids),
            "by_gender": genders(done_kids),
            "by_age_band": bands(done_kids),
            "average_completion_months": round(sum(months) / len(months), 1) if months else None,
            "recommendations": sum(n["recs"] for n in done),
        },
    }


# -- running the commands -------------------------------------------------------------------------


def cli(settings: Settings, *args: str) -> int:
    return main(["--data-dir", str(settings.data_dir), *args])


def report(settings: Settings, out: Path, year: str, *extra: str) -> dict[str, Any]:
    assert cli(settings, "report", "annual", "--year", year, "--out", str(out), *extra) == 0
    result: dict[str, Any] = json.loads((out / f"learning-report-{year}.json").read_text())
    return result


def state(settings: Settings) -> tuple[int, int, int, str]:
    """What an import could change: the history rows, and the audit chain."""
    engine = create_engine(database.sync_url(settings.effective_database_url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            count = lambda t: int(conn.execute(select(func.count()).select_from(t)).scalar_one())  # noqa: E731
            head = conn.execute(select(audit_head.c.hash)).scalar_one()
            return count(history_notifications), count(history_children), count(audit_events), head
    finally:
        engine.dispose()


def imported_events(settings: Settings) -> list[Any]:
    engine = create_engine(database.sync_url(settings.effective_database_url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    select(audit_events).where(audit_events.c.action == "history.imported")
                )
            )
    finally:
        engine.dispose()


YEARS = ["2012-13", "2016-17", "2022-23", "2023-24", "2024-25"]


def test_history_is_imported_once_and_reported_figure_by_figure(
    installation: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = history_rows()
    references = {r["reference"] for r in rows}
    file = write_csv(tmp_path / "history.csv", rows)

    assert cli(installation, "history", "import", str(file)) == 0
    out = capsys.readouterr().out
    assert out == (
        f"imported {len(references)} notifications ({len(rows)} children) from {file}; "
        "0 already imported\n"
    )
    events = imported_events(installation)
    assert sorted(e.subject for e in events) == sorted(references)
    assert all(e.actor == "cli:history-import" for e in events)
    details = json.loads(events[0].details)
    assert set(details) == {"source_sha256", "agency", "children", "line"}

    for year in YEARS:
        assert report(installation, tmp_path / "out", year) == expected_report(rows, year), year
    # A figure that the test data must exercise, lest the comparison above prove little.
    late = expected_report(rows, "2023-24")
    assert late["considered_by_board"]["received_in_previous_years"] >= 1
    assert late["completed_in_year"]["reviews"] >= 1

    # The same file again, and the same rows in another order: nothing changes.
    before = state(installation)
    assert cli(installation, "history", "import", str(file)) == 0
    assert "imported 0 notifications (0 children)" in capsys.readouterr().out
    reordered = write_csv(tmp_path / "again.csv", reversed(rows))
    assert cli(installation, "history", "import", str(reordered)) == 0
    assert f"{len(references)} already imported" in capsys.readouterr().out
    assert state(installation) == before

    # A reference already imported, now with other values: a bad row; nothing is imported.
    changed = [dict(r) for r in rows]
    target = next(i for i, r in enumerate(changed) if r["reference"] == "EDGE-2012")
    changed[target]["recommendations"] = "3"
    changed.append({**rows[0], "reference": "NEW-1"})
    assert cli(installation, "history", "import", str(write_csv(tmp_path / "c.csv", changed))) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"line {target + 2}, column recommendations: reference already imported with other values",
        f"error: {tmp_path / 'c.csv'}: 1 bad row; nothing was imported",
    ]
    assert state(installation) == before
    assert cli(installation, "audit", "verify") == 0


def test_bad_rows_are_reported_by_line_and_column_and_nothing_is_imported(
    installation: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = history_rows()[:5]
    base = {**good[0], "reference": "B"}
    bad = [
        *good,
        {**base, "reference": "B1", "notifying_agency": "HSCB"},
        {**base, "reference": "B2", "received_on": "2023-02-29"},
        {
            **base,
            "reference": "B3",
            "child_date_of_birth": "2015-01-01",
            "child_age_band": "1-5 years",
        },
        {**base, "reference": "B4", "child_date_of_birth": "", "child_age_band": ""},
        {**base, "reference": "B5", "child_gender": "male"},
        {
            **base,
            "reference": "B5",
            "child_gender": "female",
            "notifying_agency": "PHA" if base["notifying_agency"] != "PHA" else "EA",
        },
    ]
    before = state(installation)
    file = write_csv(tmp_path / "bad.csv", bad)
    assert cli(installation, "history", "import", str(file)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "line 7, column notifying_agency: is not an agency of the registry",
        "line 8, column received_on: must be a date (YYYY-MM-DD)",
        "line 9, column child_date_of_birth: give the date of birth or the age band, not both",
        "line 10, column child_date_of_birth: give the date of birth or the age band",
        "line 12, column notifying_agency: differs from line 11, the first row of its reference",
        f"error: {file}: 5 bad rows; nothing was imported",
    ]
    assert state(installation) == before

    assert cli(installation, "history", "import", str(tmp_path / "missing.csv")) == 2
    assert capsys.readouterr().err.startswith("error: cannot read ")
    (tmp_path / "latin1.csv").write_bytes(",".join(HEADER).encode() + b"\nH\xe9,EA\n")
    assert cli(installation, "history", "import", str(tmp_path / "latin1.csv")) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'latin1.csv'} is not UTF-8 text\n"


def test_html_pdf_and_csv_read_like_the_report(
    installation: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = history_rows()
    assert cli(installation, "history", "import", str(write_csv(tmp_path / "h.csv", rows))) == 0
    capsys.readouterr()
    figures = expected_report(rows, "2023-24")
    received = figures["notifications_received"]
    done = figures["completed_in_year"]
    out = tmp_path / "out"
    for fmt in ("html", "pdf", "csv"):
        assert (
            cli(
                installation,
                "report",
                "annual",
                "--year",
                "2023-24",
                "--format",
                fmt,
                "--out",
                str(out),
            )
            == 0
        )
    printed = capsys.readouterr().out.split()
    assert len(printed) == 10 and all(Path(p).is_file() for p in printed)

    html = (out / "learning-report-2023-24.html").read_text()
    images = html.split('src="data:image/png;base64,')[1:]
    assert len(images) == 3
    assert all(base64.b64decode(i.split('"')[0]).startswith(PNG) for i in images)
    for chart in ("notified-age-range", "completed-per-year", "completed-gender-age"):
        assert f'<figure id="{chart}">' in html
    assert (
        f"received {received['notifications']} notifications concerning "
        f"{received['children']} children" in html
    )

    pdf = PdfReader(out / "learning-report-2023-24.pdf")
    assert sum(len(page.images) for page in pdf.pages) == 3
    text = " ".join(" ".join(page.extract_text().split()) for page in pdf.pages)
    assert "Learning from Case Management Reviews 2023-24" in text
    assert (
        f"received {received['notifications']} notifications concerning "
        f"{received['children']} children ({received['by_gender']['male']} male, "
        f"{received['by_gender']['female']} female" in text
    )
    assert f"{done['reviews']} CMRs were completed in 2023-24" in text
    assert f"the Board has commissioned {figures['since_inception']['commissioned']} CMRs" in text
    assert f"took {done['average_completion_months']:.1f} months" in text
    for name in ("Figure 1", "Figure 2", "Figure 3"):
        assert name in text

    def table(name: str) -> list[list[str]]:
        path = out / f"learning-report-2023-24-{name}.csv"
        return list(csv.reader(io.StringIO(path.read_text())))

    per_year = table("completed-by-year")
    assert per_year[0] == ["Year", "CMRs completed"]
    assert {y: int(n) for y, n in per_year[1:]} == figures["since_inception"]["completed_by_year"]
    by_band = table("notifications-by-age-band")
    for band, *cells in by_band[1:5]:
        counts = received["by_age_band"][band]
        assert [int(c) for c in cells] == [*(counts[g] for g in GENDERS), counts["total"]]
    assert by_band[5] == [
        "All ages",
        *(str(received["by_gender"][g]) for g in GENDERS),
        str(received["children"]),
    ]


def test_suppression_for_publication(
    installation: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = history_rows()
    assert cli(installation, "history", "import", str(write_csv(tmp_path / "h.csv", rows))) == 0
    exact = expected_report(rows, "2023-24")
    out = tmp_path / "out"
    published = report(installation, out, "2023-24", "--suppress-below", "5")
    cells = published["suppression"]["cells"]
    assert published["suppression"]["below"] == 5 and cells
    for pointer, mark in cells.items():
        node: Any = published
        truth: Any = exact
        for key in pointer.strip("/").split("/"):
            node, truth = node[key], truth[key]
        assert node == mark
        assert mark == "[c]" or 1 <= truth < 5

    # Every count from 1 to 4 is hidden.
    def walk(a: Any, b: Any, path: str = "") -> None:
        if isinstance(a, dict):
            for key in a:
                walk(a[key], b[key], f"{path}/{key}")
        elif isinstance(a, int) and 1 <= a < 5:
            assert path in cells and b == "<5", path

    walk(exact, published)
    for fmt in ("html", "pdf"):
        assert (
            cli(
                installation,
                "report",
                "annual",
                "--year",
                "2023-24",
                "--format",
                fmt,
                "--out",
                str(out),
                "--suppress-below",
                "5",
            )
            == 0
        )
    html = (out / "learning-report-2023-24.html").read_text()
    assert "&lt;5" in html and "numbers from 1 to 4 are shown as" in html
    text = " ".join(p.extract_text() for p in PdfReader(out / "learning-report-2023-24.pdf").pages)
    assert "<5" in text


async def test_live_notifications_count_like_imported_ones(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    # Received on 20 March 2026 (2025-26); the Board decides in 2026-27.
    received = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
    gateway.clock.set(received)
    psni = await gateway.agency("PSNI")
    response = await psni.post(psni.seal(iat=int(received.timestamp())))
    assert response.status == 202, response.body
    reference = response.json()["reference"]
    outcome = {
        "board_considered_on": date(2026, 4, 15),
        "board_decision": "commissioned",
        "commissioned_on": date(2026, 4, 20),
        "cmr_completed_on": date(2026, 10, 30),
        "recommendations": 7,
    }
    db = database.Database(gateway.settings.effective_database_url)
    try:
        async with db.transaction() as conn:
            notification_id = (
                await conn.execute(
                    select(notifications.c.id).where(notifications.c.reference == reference)
                )
            ).scalar_one()
            await conn.execute(
                insert(case_outcomes).values(
                    notification_id=notification_id, updated_at=received, **outcome
                )
            )
    finally:
        await db.dispose()

    # The same facts as rows of a history file: the shipped example's two children.
    def as_rows(ref: str) -> list[dict[str, str]]:
        common = {
            "reference": ref,
            "notifying_agency": "PSNI",
            "received_on": "2026-03-20",
            "child_age_band": "",
            "incident_date": "2026-02-10",
            "board_considered_on": "2026-04-15",
            "board_decision": "commissioned",
            "commissioned_on": "2026-04-20",
            "cmr_completed_on": "2026-10-30",
            "recommendations": "7",
        }
        return [
            {**common, "child_gender": "female", "child_date_of_birth": "2025-08-02"},
            {**common, "child_gender": "male", "child_date_of_birth": "2019-03-14"},
        ]

    settings = gateway.settings
    live = as_rows(reference)
    imported = as_rows("TWIN-1")
    for year in ("2025-26", "2026-27"):
        got = await asyncio.to_thread(report, settings, tmp_path / "a", year)
        assert got == expected_report(live, year), year
    file = write_csv(tmp_path / "twin.csv", imported)
    assert await asyncio.to_thread(cli, settings, "history", "import", str(file)) == 0
    for year in ("2025-26", "2026-27"):
        alone = expected_report(live, year)
        both = await asyncio.to_thread(report, settings, tmp_path / "b", year)
        assert both == expected_report(live + imported, year), year
        assert (
            both["notifications_received"]["children"]
            == 2 * alone["notifications_received"]["children"]
        )
        assert both["completed_in_year"]["reviews"] == 2 * alone["completed_in_year"]["reviews"]
    assert both["completed_in_year"]["reviews"] == 2
    assert both["considered_by_board"]["received_in_previous_years"] == 2
    # A history row may not take the reference of a live notification.
    clash = write_csv(tmp_path / "clash.csv", as_rows(reference))
    assert await asyncio.to_thread(cli, settings, "history", "import", str(clash)) == 2


def test_usage_errors_are_one_line(
    sqlite_installation: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = sqlite_installation
    cases = [
        (["--year", "2023-25"], "error: --year '2023-25': give a business year like 2023-24"),
        (
            ["--year", "2023-24", "--suppress-below", "1"],
            "error: --suppress-below must be 2 or more",
        ),
        (
            ["--year", "2023-24", "--format", "pdf", "--out", "-"],
            "error: --out - prints JSON only: give a directory for the other formats",
        ),
    ]
    for args, message in cases:
        assert cli(s, "report", "annual", *args) == 2
        assert capsys.readouterr().err == message + "\n"
    assert cli(s, "report", "annual", "--year", "2013-14", "--out", "-") == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["since_inception"]["completed_by_year"] == {"2012-13": 0, "2013-14": 0}
