"""The annual report's pure parts: reading history files, computing the figures, suppressing
small numbers, and the forms built from them."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.intake.validation import AGE_BANDS
from gateway.reports.cli import ProgressBar
from gateway.reports.figures import (
    GENDERS,
    BusinessYear,
    CaseRecord,
    Child,
    annual_figures,
    average_months,
)
from gateway.reports.history import (
    ALREADY_IMPORTED,
    HEADER,
    HistoryChild,
    HistoryInvalid,
    RowProblem,
    first_difference,
    parse_history,
)
from gateway.reports.render import render_csv, render_html, tables
from gateway.reports.suppression import SECONDARY, counts, hidden_cells, relations, suppress

AGENCIES = {"PSNI", "EA", "BHSCT"}
TODAY = date(2026, 12, 1)


def row(**fields: str) -> dict[str, str]:
    base = {
        "reference": "H-1",
        "notifying_agency": "PSNI",
        "received_on": "2023-05-02",
        "child_gender": "female",
        "child_date_of_birth": "",
        "child_age_band": "1-5 years",
        "incident_date": "2023-04-28",
        "board_considered_on": "2023-06-01",
        "board_decision": "commissioned",
        "commissioned_on": "2023-06-10",
        "cmr_completed_on": "2024-05-01",
        "recommendations": "9",
    }
    base.update(fields)
    return base


def csv_text(*rows: dict[str, str], header: tuple[str, ...] = HEADER) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(header), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def problems_of(*rows: dict[str, str]) -> list[str]:
    parsed = parse_history(csv_text(*rows), AGENCIES, TODAY)
    assert not parsed.notifications
    return [str(p) for p in parsed.problems]


# -- business years -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("2023-24", date(2023, 4, 1), date(2024, 3, 31)),
        ("2012-13", date(2012, 4, 1), date(2013, 3, 31)),
        ("2099-00", date(2099, 4, 1), date(2100, 3, 31)),
    ],
)
def test_business_year(text: str, start: date, end: date) -> None:
    year = BusinessYear.parse(text)
    assert (year.label, year.start, year.end) == (text, start, end)
    assert BusinessYear.containing(start) == year == BusinessYear.containing(end)
    assert BusinessYear.containing(end + timedelta(days=1)) != year


@pytest.mark.parametrize("text", ["2023-25", "2023", "23-24", "2023/24", "2023-2024", ""])
def test_business_year_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        BusinessYear.parse(text)


# -- reading history files ------------------------------------------------------------------------


def test_rows_of_a_reference_are_one_notification() -> None:
    text = csv_text(
        row(
            reference="A", child_gender="male", child_age_band="", child_date_of_birth="2022-04-28"
        ),
        row(reference="B", child_gender="Female", incident_date="", child_age_band="12-17 YEARS"),
        # The second child of A, further down: rows need not be together.
        row(
            reference="A",
            child_gender="female",
            child_age_band="",
            child_date_of_birth="2022-04-29",
        ),
        row(reference="C", child_age_band="", incident_date="", child_date_of_birth="2023-01-01"),
    )
    parsed = parse_history(text, AGENCIES, TODAY)
    assert parsed.problems == ()
    by_ref = {s.notification.reference: s for s in parsed.notifications}
    assert list(by_ref) == ["A", "B", "C"]
    a = by_ref["A"]
    # Age at the incident (2023-04-28): one year to the day, and one day short of it.
    assert a.notification.children == (
        HistoryChild("male", "1-5 years"),
        HistoryChild("female", "0-11 months"),
    )
    assert [r.line for r in a.rows] == [2, 4]
    assert by_ref["B"].notification.children == (HistoryChild("female", "12-17 years"),)
    # No incident date: the age at receipt (2023-05-02).
    assert by_ref["C"].notification.children == (HistoryChild("female", "0-11 months"),)
    n = a.notification
    assert (n.agency, n.received_on, n.commissioned_on, n.recommendations) == (
        "PSNI",
        date(2023, 5, 2),
        date(2023, 6, 10),
        9,
    )
    assert parsed.children == 4
    # The date of birth goes no further than the reading.
    assert {f.name for f in dataclasses.fields(HistoryChild)} == {"gender", "age_band"}
    assert "2022-04-28" not in repr(parsed)


def test_leap_day_birthday_is_reached_on_1_march() -> None:
    def leap_child(incident: str) -> dict[str, str]:
        return row(
            child_age_band="",
            child_date_of_birth="2008-02-29",
            incident_date=incident,
            received_on="2026-03-05",
            board_considered_on="",
            board_decision="",
            commissioned_on="",
            cmr_completed_on="",
            recommendations="",
        )

    parsed = parse_history(csv_text(leap_child("2026-02-28")), AGENCIES, TODAY)
    assert parsed.notifications[0].notification.children[0].age_band == "12-17 years"
    assert problems_of(leap_child("2026-03-01")) == [
        "line 2, column child_date_of_birth: the child is 18 or over at the incident date"
    ]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"notifying_agency": "XYZ"}, "column notifying_agency: is not an agency of the registry"),
        ({"notifying_agency": ""}, "column notifying_agency: is required"),
        ({"received_on": "2023-13-01"}, "column received_on: must be a date (YYYY-MM-DD)"),
        ({"received_on": "02/05/2023"}, "column received_on: must be a date (YYYY-MM-DD)"),
        ({"received_on": "20230502"}, "column received_on: must be a date (YYYY-MM-DD)"),
        ({"received_on": ""}, "column received_on: is required"),
        (
            {
                "received_on": "2027-01-01",
                "board_considered_on": "",
                "board_decision": "",
                "commissioned_on": "",
                "cmr_completed_on": "",
                "recommendations": "",
            },
            "column received_on: is in the future",
        ),
        (
            {"child_date_of_birth": "2020-01-01"},
            "column child_date_of_birth: give the date of birth or the age band, not both",
        ),
        (
            {"child_age_band": ""},
            "column child_date_of_birth: give the date of birth or the age band",
        ),
        ({"child_age_band": "5-10 years"}, "column child_age_band: must be one of: 0-11 months"),
        (
            {"child_age_band": "", "child_date_of_birth": "2023-05-01"},
            "column child_date_of_birth: is after the incident date",
        ),
        (
            {"child_age_band": "", "child_date_of_birth": "2023-05-03", "incident_date": ""},
            "column child_date_of_birth: is after receipt",
        ),
        (
            {"child_age_band": "", "child_date_of_birth": "2005-04-28"},
            "column child_date_of_birth: the child is 18 or over at the incident date",
        ),
        (
            {"child_gender": "boy"},
            "column child_gender: must be one of: male, female, other, unknown",
        ),
        ({"child_gender": ""}, "column child_gender: is required"),
        ({"reference": ""}, "column reference: is required"),
        ({"reference": "R" * 65}, "column reference: is longer than 64 characters"),
        (
            {"reference": "cmrn-2027-0001"},
            "column reference: is in the gateway's own form CMRN-YYYY-NNNN: give the earlier "
            "system's",
        ),
        ({"incident_date": "2023-05-03"}, "column incident_date: is after received_on"),
        (
            {"board_considered_on": "2023-05-01"},
            "column board_considered_on: is before received_on",
        ),
        (
            {
                "board_considered_on": "",
                "commissioned_on": "",
                "cmr_completed_on": "",
                "recommendations": "",
            },
            "column board_considered_on: is required when board_decision is given",
        ),
        ({"board_decision": "yes"}, "column board_decision: must be one of: commissioned"),
        (
            {"commissioned_on": "", "cmr_completed_on": "", "recommendations": ""},
            "column commissioned_on: is required when board_decision is commissioned",
        ),
        (
            {"board_decision": "not_commissioned", "cmr_completed_on": "", "recommendations": ""},
            "column commissioned_on: is given only when board_decision is commissioned",
        ),
        (
            {"commissioned_on": "2023-05-30"},
            "column commissioned_on: is before board_considered_on",
        ),
        ({"cmr_completed_on": "2023-06-09"}, "column cmr_completed_on: is before commissioned_on"),
        (
            {"board_decision": "", "commissioned_on": ""},
            "column cmr_completed_on: is given only for a commissioned CMR",
        ),
        ({"cmr_completed_on": "2027-01-01"}, "column cmr_completed_on: is in the future"),
        ({"recommendations": "many"}, "column recommendations: must be a whole number"),
        ({"recommendations": "-1"}, "column recommendations: must be a whole number"),
        ({"cmr_completed_on": ""}, "column recommendations: is given only for a completed CMR"),
    ],
)
def test_a_bad_row_is_reported_by_line_and_column(fields: dict[str, str], expected: str) -> None:
    found = problems_of(row(reference="OK"), row(**{"reference": "BAD", **fields}))
    assert found, fields
    assert all(p.startswith("line 3, ") for p in found), found
    assert any(p.startswith("line 3, " + expected) for p in found), found


def test_rows_of_one_reference_must_agree() -> None:
    found = problems_of(
        row(),
        row(child_gender="male", received_on="2023-05-03", notifying_agency="EA"),
        row(child_gender="male", recommendations="10"),
    )
    assert found == [
        "line 3, column notifying_agency: differs from line 2, the first row of its reference",
        "line 3, column received_on: differs from line 2, the first row of its reference",
        "line 4, column recommendations: differs from line 2, the first row of its reference",
    ]


def test_every_bad_row_is_reported_and_nothing_is_returned() -> None:
    parsed = parse_history(
        csv_text(
            row(reference="A"),
            row(reference="B", notifying_agency="NOPE"),
            row(reference="C"),
            row(reference="D", received_on="yesterday", child_date_of_birth="2020-01-01"),
        ),
        AGENCIES,
        TODAY,
    )
    assert parsed.notifications == ()
    assert [str(p) for p in parsed.problems] == [
        "line 3, column notifying_agency: is not an agency of the registry",
        "line 5, column child_date_of_birth: give the date of birth or the age band, not both",
        "line 5, column received_on: must be a date (YYYY-MM-DD)",
    ]
    error = HistoryInvalid(parsed.problems)
    assert (error.code, error.detail) == ("history_invalid", "2 bad rows; nothing was imported")


def test_line_numbers_are_those_of_the_file() -> None:
    good = ",".join(row().values())
    text = (
        "\ufeff" + ",".join(HEADER) + "\r\n"
        "\r\n"  # a blank line
        + good
        + "\r\n"
        + ",,,,,,,,,,,\r\n"  # a spreadsheet's empty row
        + good.replace("H-1", '"H-2\nsecond line"').replace("PSNI", "X")
        + "\r\n"
        + good.replace("H-1", "H-3").replace("2023-05-02", "2023-02-30")
        + "\r\n"
    )
    parsed = parse_history(text, AGENCIES, TODAY)
    assert [str(p) for p in parsed.problems] == [
        "line 5, column notifying_agency: is not an agency of the registry",
        "line 5, column reference: must not contain control characters",
        "line 7, column received_on: must be a date (YYYY-MM-DD)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ["line 1, column reference: the file has no header"]),
        (",".join(HEADER) + "\n", ["line 1, column reference: the file has no rows"]),
        (
            ",".join(h for h in HEADER if h != "recommendations") + ",notes\n",
            [
                "line 1, column notes: is not a column of the import format",
                "line 1, column recommendations: is missing from the header",
            ],
        ),
        (
            ",".join(HEADER) + ",reference\n",
            ["line 1, column reference: appears twice in the header"],
        ),
        (
            ",".join(HEADER) + "\nH-1,PSNI,2023-05-02\n",
            ["line 2, column child_gender: is missing: the row has fewer cells than the header"],
        ),
        (
            ",".join(HEADER) + "\n" + ",".join(row().values()) + ",extra\n",
            ["line 2, column 13: the row has more cells than the header"],
        ),
    ],
)
def test_problems_of_the_file_itself(text: str, expected: list[str]) -> None:
    assert [str(p) for p in parse_history(text, AGENCIES, TODAY).problems] == expected


def test_columns_may_come_in_any_order() -> None:
    header = tuple(reversed(HEADER))
    parsed = parse_history(csv_text(row(), header=header), AGENCIES, TODAY)
    assert parsed.problems == () and len(parsed.notifications) == 1
    # A spreadsheet's empty cells after the last column, in the header and in the rows.
    text = ",".join(HEADER) + ",,\n" + ",".join(row().values()) + ",,\n"
    assert parse_history(text, AGENCIES, TODAY).problems == ()


def test_first_difference_points_at_the_cell() -> None:
    def one(*rows: dict[str, str]) -> Any:
        return parse_history(csv_text(*rows), AGENCIES, TODAY).notifications[0]

    stored = one(row(), row(child_gender="male")).notification
    assert first_difference(one(row(), row(child_gender="male")), stored) is None
    assert first_difference(
        one(row(recommendations="3"), row(child_gender="male", recommendations="3")), stored
    ) == RowProblem(2, "recommendations", ALREADY_IMPORTED)
    assert first_difference(one(row(), row(child_gender="other")), stored) == RowProblem(
        3, "child_gender", ALREADY_IMPORTED
    )
    assert first_difference(
        one(row(), row(child_gender="male", child_age_band="", child_date_of_birth="2010-01-01")),
        stored,
    ) == RowProblem(3, "child_date_of_birth", ALREADY_IMPORTED)
    more = first_difference(one(row(), row(child_gender="male"), row()), stored)
    assert more is not None and (more.line, more.column) == (4, "reference")
    assert more.message.startswith(ALREADY_IMPORTED)


# -- the figures ----------------------------------------------------------------------------------

Y = BusinessYear(2023)


def rec(ref: str, received: str, children: str = "female:1-5 years", **dates: Any) -> CaseRecord:
    kids = tuple(Child(*c.split(":")) for c in children.split(",") if c)
    fields = {
        k: (date.fromisoformat(v) if isinstance(v, str) and k != "board_decision" else v)
        for k, v in dates.items()
    }
    return CaseRecord(ref, date.fromisoformat(received), kids, **fields)


def test_figures_of_a_small_year() -> None:
    records = [
        # Received in the year, commissioned and completed in it.
        rec(
            "A",
            "2023-04-01",
            "male:0-11 months,female:6-11 years",
            board_considered_on="2023-05-01",
            board_decision="commissioned",
            commissioned_on="2023-05-01",
            cmr_completed_on="2024-03-31",
            recommendations=7,
        ),
        # Received late in the previous year, considered in this one.
        rec(
            "B",
            "2023-03-31",
            "unknown:12-17 years",
            board_considered_on="2023-04-20",
            board_decision="not_commissioned",
        ),
        # Received in the year, commissioned only after its end.
        rec(
            "C",
            "2024-02-01",
            "other:1-5 years",
            board_considered_on="2024-03-20",
            board_decision="commissioned",
            commissioned_on="2024-04-02",
        ),
        # An old review completed in the year; commissioned with no date: the decision's date.
        rec(
            "D",
            "2021-06-01",
            "female:1-5 years",
            board_considered_on="2021-09-01",
            board_decision="commissioned",
            cmr_completed_on="2023-09-01",
            recommendations=5,
        ),
        # Completed after the year's end: still under way at its end.
        rec(
            "E",
            "2019-06-01",
            "male:1-5 years",
            board_considered_on="2019-09-01",
            board_decision="commissioned",
            commissioned_on="2019-09-10",
            cmr_completed_on="2024-04-01",
        ),
        rec(
            "F",
            "2014-01-01",
            "male:1-5 years",
            board_considered_on="2014-02-01",
            board_decision="commissioned",
            commissioned_on="2014-02-01",
            cmr_completed_on="2015-02-01",
        ),
        rec("G", "2024-04-01"),
    ]
    f = annual_figures(records, Y)
    assert f["year"] == "2023-24"
    assert f["period"] == {"start": "2023-04-01", "end": "2024-03-31"}
    received = f["notifications_received"]
    assert (received["notifications"], received["children"]) == (2, 3)
    assert received["by_gender"] == {"male": 1, "female": 1, "other": 1, "unknown": 0}
    assert received["by_age_band"]["1-5 years"] == {
        "total": 1,
        "male": 0,
        "female": 0,
        "other": 1,
        "unknown": 0,
    }
    assert list(received["by_age_band"]) == list(AGE_BANDS)
    assert f["considered_by_board"] == {
        "notifications": 3,
        "received_in_previous_years": 1,
        "commissioned": 2,
    }
    assert f["commissioned_from_year_received"] == {
        "notifications": 1,
        "children_by_gender": {"male": 1, "female": 1, "other": 0, "unknown": 0},
    }
    since = f["since_inception"]
    assert (since["commissioned"], since["completed"], since["under_way"]) == (4, 3, 1)
    assert list(since["completed_by_year"]) == [BusinessYear(y).label for y in range(2012, 2024)]
    assert since["completed_by_year"]["2014-15"] == 1
    assert since["completed_by_year"]["2023-24"] == 2
    done = f["completed_in_year"]
    assert (done["reviews"], done["children"], done["recommendations"]) == (2, 3, 12)
    assert done["by_gender"] == {"male": 1, "female": 2, "other": 0, "unknown": 0}
    # Only A has a commissioning date: 335 days.
    assert done["average_completion_months"] == round(335 / 30.4375, 1) == 11.0


def test_an_empty_year_has_every_cell() -> None:
    f = annual_figures([], BusinessYear(2013))
    assert f["notifications_received"]["by_gender"] == dict.fromkeys(GENDERS, 0)
    assert f["completed_in_year"]["by_age_band"] == {
        b: {"total": 0, **dict.fromkeys(GENDERS, 0)} for b in AGE_BANDS
    }
    assert f["since_inception"]["completed_by_year"] == {"2012-13": 0, "2013-14": 0}
    assert f["completed_in_year"]["average_completion_months"] is None


def test_average_months_rounds_half_up_exactly() -> None:
    # 487 days over 64 reviews is exactly 0.25 months: float rounding would give 0.2.
    assert average_months([487] + [0] * 63) == 0.3
    assert average_months([30, 31]) == 1.0
    assert average_months([365]) == 12.0
    assert average_months([]) is None


dates = st.dates(min_value=date(2012, 4, 1), max_value=date(2026, 11, 30))


@st.composite
def records(draw: st.DrawFn) -> CaseRecord:
    received = draw(dates)
    kids = draw(
        st.lists(
            st.builds(Child, st.sampled_from(GENDERS), st.sampled_from(AGE_BANDS)),
            min_size=1,
            max_size=3,
        )
    )
    decision = draw(st.sampled_from([None, "commissioned", "not_commissioned"]))
    considered = received + timedelta(days=draw(st.integers(0, 400))) if decision else None
    commissioned = completed = None
    if decision == "commissioned" and considered is not None:
        commissioned = considered + timedelta(days=draw(st.integers(0, 60)))
        if draw(st.booleans()):
            completed = commissioned + timedelta(days=draw(st.integers(0, 1500)))
    return CaseRecord(
        f"R{draw(st.integers())}",
        received,
        tuple(kids),
        considered,
        decision,
        commissioned,
        completed,
        draw(st.integers(0, 30)) if completed else None,
    )


def _sum_holds(figures: dict[str, Any]) -> None:
    values = dict(counts(figures))
    for total, parts in relations(figures):
        assert values[total] == sum(values[p] for p in parts), (total, parts)


@settings(max_examples=60, deadline=None)
@given(st.lists(records(), max_size=30), st.integers(2012, 2026))
def test_the_figures_add_up(items: list[CaseRecord], start: int) -> None:
    f = annual_figures(items, BusinessYear(start))
    _sum_holds(f)
    since = f["since_inception"]
    assert since["under_way"] >= 0
    assert (
        f["considered_by_board"]["received_in_previous_years"]
        <= f["considered_by_board"]["notifications"]
    )
    assert f["completed_in_year"]["reviews"] == since["completed_by_year"][f["year"]]
    assert (
        sum(f["commissioned_from_year_received"]["children_by_gender"].values())
        <= f["notifications_received"]["children"]
    )
    # Counting as at the year's end: records from after it change nothing.
    after = date(start + 1, 4, 1)
    later = [
        dataclasses.replace(
            r,
            reference=r.reference + "+",
            received_on=after,
            board_considered_on=r.board_considered_on and after,
            commissioned_on=r.commissioned_on and after,
            cmr_completed_on=r.cmr_completed_on and after,
        )
        for r in items
    ]
    assert annual_figures(items + later, BusinessYear(start)) == f


# -- suppression ----------------------------------------------------------------------------------


def test_small_counts_and_the_totals_that_reveal_them_are_hidden() -> None:
    records_ = (
        [rec(f"M{i}", "2023-06-01", "male:1-5 years") for i in range(6)]
        + [rec(f"F{i}", "2023-06-01", "female:1-5 years") for i in range(7)]
        + [rec("O", "2023-06-01", "other:1-5 years")]
    )
    f = annual_figures(records_, Y)
    published = suppress(f, 5)
    received = published["notifications_received"]
    assert received["by_gender"] == {"male": 6, "female": 7, "other": "<5", "unknown": 0}
    # 14 children would give the one "other" child away: hidden, and every total that would
    # lead back to it.
    assert received["children"] == SECONDARY
    band = received["by_age_band"]["1-5 years"]
    assert band == {"total": SECONDARY, "male": 6, "female": 7, "other": "<5", "unknown": 0}
    # 14 notifications is not a sum of anything shown: it stays.
    assert received["notifications"] == 14
    cells = published["suppression"]["cells"]
    assert published["suppression"]["below"] == 5
    assert cells["/notifications_received/by_gender/other"] == "<5"
    assert cells["/notifications_received/children"] == SECONDARY
    assert "/notifications_received/notifications" not in cells
    # The original is left alone.
    assert f["notifications_received"]["children"] == 14
    assert json.loads(json.dumps(published)) == published


def test_suppression_threshold_must_be_two_or_more() -> None:
    with pytest.raises(ValueError):
        suppress(annual_figures([], Y), 1)


@settings(max_examples=60, deadline=None)
@given(st.lists(records(), max_size=30), st.integers(2012, 2026), st.integers(2, 12))
def test_no_hidden_count_can_be_worked_out_from_one_sum(
    items: list[CaseRecord], start: int, below: int
) -> None:
    f = annual_figures(items, BusinessYear(start))
    hidden = hidden_cells(f, below)
    values = dict(counts(f))
    for pointer, value in values.items():
        if 1 <= value < below:
            assert hidden[pointer] == f"<{below}"
        elif pointer in hidden:
            assert hidden[pointer] == SECONDARY and value > 0
    for total, parts in relations(f):
        assert sum(1 for c in (total, *parts) if c in hidden) != 1, (total, parts)
    published = suppress(f, below)
    for _pointer, value in counts(published):
        assert value == 0 or value >= below


# -- the forms and the progress bar ---------------------------------------------------------------


def test_html_escapes_the_marks_and_csv_has_one_table_per_figure() -> None:
    f = suppress(annual_figures([rec("A", "2023-06-01")], Y), 5)
    html = render_html(f).decode()
    assert "&lt;5 notification" in html and "<5" not in html
    assert html.count('src="data:image/png;base64,') == 3
    files = render_csv(f)
    assert set(files) == set(tables(f))
    by_band = list(csv.reader(io.StringIO(files["notifications-by-age-band"].decode())))
    assert by_band[0] == ["Age band", "Male", "Female", "Other", "Not known", "Total"]
    assert by_band[2] == ["1-5 years", "0", "<5", "0", "0", "<5"]
    assert by_band[-1][0] == "All ages"


class Terminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_bar_only_on_a_terminal() -> None:
    for tty in (True, False):
        stream = Terminal(tty)
        bar = ProgressBar("importing", stream)
        bar(0, 4)
        bar(2, 4)
        bar(4, 4)
        bar.close()
        if tty:
            assert stream.getvalue().endswith(f"\rimporting [{'#' * 30}] 4/4\n")
            assert f"[{'#' * 15}{'-' * 15}] 2/4" in stream.getvalue()
        else:
            assert stream.getvalue() == ""
