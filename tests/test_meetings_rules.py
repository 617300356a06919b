"""The pure parts of the meetings feature: the lifecycle, the calendar and its dates across NI
bank holidays, the Schedule 5 rules (each with a test that fails if the rule breaks), where a
case goes on an agenda, and the marking of changes between versions."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import lifecycle as lc
from gateway.errors import SettingsError
from gateway.meetings import agenda as ag
from gateway.meetings import rules
from gateway.meetings.calendar import (
    MeetingCalendar,
    Rule,
    clear_days,
    earliest_meeting_day,
    notice_by,
)
from gateway.workdays import WorkingDays
from tests.support import example

REPO = Path(__file__).resolve().parent.parent
WORKDAYS = WorkingDays.load(REPO / "config")
CALENDAR = MeetingCalendar.load(REPO / "config" / "meetings.toml")
MEMBERS = [m.id for m in CALENDAR.members]
CHAIR = CALENDAR.chair.id


# -- lifecycle ---------------------------------------------------------------------------------


def test_the_lifecycle_runs_from_receipt_to_a_completed_review() -> None:
    path = [
        lc.RECEIVED,
        lc.INFORMATION_GATHERING,
        lc.READY_FOR_PANEL,
        lc.ON_AGENDA,
        lc.CONSIDERED,
        lc.DEFERRED,
        lc.ON_AGENDA,
        lc.CONSIDERED,
        lc.RECOMMENDED,
        lc.COMMISSIONED,
        lc.CMR_UNDER_WAY,
        lc.CMR_COMPLETED,
    ]
    for current, wanted in itertools.pairwise(path):
        lc.check(current, wanted)
    assert lc.TRANSITIONS[lc.CMR_COMPLETED] == frozenset()


@pytest.mark.parametrize(
    ("current", "wanted"),
    [
        (lc.RECEIVED, lc.COMMISSIONED),
        (lc.INFORMATION_GATHERING, lc.ON_AGENDA),
        (lc.ON_AGENDA, lc.RECOMMENDED),
        (lc.WITHDRAWN, lc.READY_FOR_PANEL),
        (lc.COMMISSIONED, lc.CMR_COMPLETED),
        (lc.READY_FOR_PANEL, lc.READY_FOR_PANEL),
    ],
)
def test_a_skipped_step_is_refused_naming_both_states(current: str, wanted: str) -> None:
    with pytest.raises(lc.TransitionNotAllowed) as raised:
        lc.Transition(1, "CMRN-2027-0001", current, wanted, "test")
    assert current in str(raised.value) and wanted in str(raised.value)
    assert "CMRN-2027-0001" in str(raised.value)


def test_every_state_is_reachable_and_every_target_is_a_state() -> None:
    reachable = {lc.RECEIVED}
    frontier = [lc.RECEIVED]
    while frontier:
        for nxt in lc.TRANSITIONS[frontier.pop()]:
            assert nxt in lc.STATES
            if nxt not in reachable:
                reachable.add(nxt)
                frontier.append(nxt)
    assert reachable == set(lc.STATES)
    assert set(rules.OUTCOME_STATE.values()) <= lc.TRANSITIONS[lc.CONSIDERED]


# -- the calendar ------------------------------------------------------------------------------


def test_the_rule_gives_the_second_thursdays() -> None:
    assert [p.public_id for p in CALENDAR.planned(2027)] == [
        "M-2027-03",
        "M-2027-06",
        "M-2027-09",
        "M-2027-12",
    ]
    days = [p.starts_at.astimezone(CALENDAR.zone) for p in CALENDAR.planned(2027)]
    assert [d.date() for d in days] == [
        date(2027, 3, 11),
        date(2027, 6, 10),
        date(2027, 9, 9),
        date(2027, 12, 9),
    ]
    # 10:00 in Belfast is 09:00 UTC in June (summer time) and 10:00 in December.
    assert all(d.time() == time(10, 0) for d in days)
    assert CALENDAR.planned(2027)[1].starts_at.hour == 9
    assert "second Thursday of March, June, September and December, 10:00" in CALENDAR.describe()


@pytest.mark.parametrize(
    ("meeting", "notice", "cut_off"),
    [
        # No holiday: Thursday 11 March; notice by Wednesday 3 March; three working days back.
        (date(2027, 3, 11), date(2027, 3, 3), date(2027, 2, 26)),
        # The spring bank holiday (Monday 31 May) is not a working day.
        (date(2027, 6, 10), date(2027, 6, 2), date(2027, 5, 27)),
        # The summer bank holiday (Monday 30 August) likewise.
        (date(2027, 9, 9), date(2027, 9, 1), date(2027, 8, 26)),
        # The eighth day before falls on St Patrick's Day: notice moves back to the 16th.
        (date(2027, 3, 25), date(2027, 3, 16), date(2027, 3, 11)),
        # The Twelfth (a Monday in 2027) is skipped counting back from Tuesday the 13th.
        (date(2027, 7, 21), date(2027, 7, 13), date(2027, 7, 7)),
    ],
)
def test_notice_and_cut_off_across_bank_holidays(
    meeting: date, notice: date, cut_off: date
) -> None:
    starts = datetime.combine(meeting, time(10), CALENDAR.zone)
    dates = CALENDAR.dates_for(starts, WORKDAYS)
    assert (dates.notice_by_on, dates.cut_off_on) == (notice, cut_off)
    assert clear_days(dates.notice_by_on, meeting) >= 7
    assert WORKDAYS.between(dates.cut_off_on, dates.notice_by_on) == 3
    assert dates.cut_off_at == datetime.combine(cut_off, time(17), CALENDAR.zone).astimezone(UTC)


@given(st.dates(min_value=date(2026, 1, 1), max_value=date(2030, 12, 31)))
def test_notice_by_is_the_last_working_day_with_seven_clear_days(meeting: date) -> None:
    served = notice_by(meeting, WORKDAYS)
    assert WORKDAYS.is_working_day(served)
    assert clear_days(served, meeting) >= 7
    # No later working day would still leave seven clear days.
    later = served + timedelta(days=1)
    while clear_days(later, meeting) >= 7:
        assert not WORKDAYS.is_working_day(later)
        later += timedelta(days=1)


@given(st.dates(min_value=date(2026, 1, 1), max_value=date(2030, 12, 31)))
def test_a_meeting_called_today_can_have_its_notice(today: date) -> None:
    assert clear_days(today, earliest_meeting_day(today)) == 7
    assert clear_days(today, earliest_meeting_day(today) - timedelta(days=1)) == 6


def test_the_last_and_a_missing_fifth_weekday() -> None:
    last = Rule(-1, 0, (5,), time(10))
    assert last.day_in(2027, 5) == date(2027, 5, 31)
    fifth = Rule(5, 3, (2,), time(10))
    assert fifth.day_in(2027, 2) is None


def _raw(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "place": "Belfast",
        "rule": {"ordinal": "second", "weekday": "Thursday", "months": [3, 6, 9, 12]},
        "members": [
            {"id": "chair", "name": "A", "email": "a@sbni.example", "chair": True},
            {"id": "m2", "name": "B", "email": "b@sbni.example"},
        ],
    }
    raw.update(changes)
    return raw


def test_explicit_meetings_add_to_and_replace_the_rule() -> None:
    cal = MeetingCalendar.parse(
        _raw(
            meetings=[
                {"id": "M-2027-06", "at": "2027-06-17T14:00", "place": "Derry~Londonderry"},
                {"at": "2027-01-20T10:00"},
            ]
        )
    )
    planned = {p.public_id: p for p in cal.planned(2027)}
    assert list(planned) == ["M-2027-01", "M-2027-03", "M-2027-06", "M-2027-09", "M-2027-12"]
    assert planned["M-2027-06"].starts_at == datetime(2027, 6, 17, 13, 0, tzinfo=UTC)
    assert cal.place_of(planned["M-2027-06"]) == ("Derry~Londonderry", None)
    assert cal.place_of(planned["M-2027-03"]) == ("Belfast", None)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"members": []}, "members"),
        (
            {
                "members": [
                    {"id": "a", "name": "A", "email": "a@x.example", "chair": True},
                    {"id": "b", "name": "B", "email": "b@x.example", "chair": True},
                ]
            },
            "exactly one member must be the Chair",
        ),
        ({"rule": {"weekday": "Thorsday", "months": [3]}}, "weekday"),
        ({"colour": "blue"}, "unknown key 'colour'"),
        ({"rule": None, "meetings": []}, r"give a \[rule\]"),
        ({"meetings": [{"at": "2027-05-20T10:00+01:00"}]}, "local date and time"),
        ({"online_link": "http://insecure.example"}, "https://"),
    ],
)
def test_a_bad_calendar_is_one_clear_error(changes: dict[str, Any], message: str) -> None:
    raw = _raw(**changes)
    if changes.get("rule", "keep") is None:
        del raw["rule"]
    with pytest.raises(SettingsError, match=message):
        MeetingCalendar.parse(raw)


# -- Schedule 5 --------------------------------------------------------------------------------


@pytest.mark.parametrize(("members", "needed"), [(9, 6), (10, 7), (3, 2), (6, 4), (1, 1)])
def test_quorum_is_two_thirds_rounded_up(members: int, needed: int) -> None:
    assert rules.quorum(members) == needed


@given(st.integers(min_value=1, max_value=200))
def test_quorum_is_the_least_two_thirds(members: int) -> None:
    q = rules.quorum(members)
    assert 3 * q >= 2 * members
    assert 3 * (q - 1) < 2 * members


def test_quorum_needs_the_chair_and_two_thirds() -> None:
    others = [m for m in MEMBERS if m != CHAIR]
    assert rules.is_quorate([CHAIR, *others[:5]], MEMBERS, CHAIR)  # 6 of 9
    assert not rules.is_quorate([CHAIR, *others[:4]], MEMBERS, CHAIR)  # 5 of 9
    assert not rules.is_quorate(others, MEMBERS, CHAIR)  # 8 of 9, no Chair
    # Someone who is not a member does not make up the numbers.
    assert not rules.is_quorate([CHAIR, *others[:4], "visitor"], MEMBERS, CHAIR)


@given(st.sets(st.sampled_from(MEMBERS)))
def test_quorate_exactly_when_the_rule_says(present: set[str]) -> None:
    expected = CHAIR in present and len(present) >= math.ceil(2 * len(MEMBERS) / 3)
    assert rules.is_quorate(present, MEMBERS, CHAIR) == expected


def test_a_member_with_an_interest_may_not_vote() -> None:
    present = MEMBERS[:7]
    votes = {"for": ["chair", "ea", "bhsct"], "against": ["nhsct"]}
    assert rules.vote_problems(votes, None, present, set(), CHAIR) == []
    problems = rules.vote_problems(votes, None, present, {"bhsct"}, CHAIR)
    assert problems == ["bhsct declared an interest in this item and may not vote"]
    assert not rules.may_vote("bhsct", present, {"bhsct"})
    assert rules.may_vote("ea", present, {"bhsct"})


def test_only_members_present_vote_and_each_once() -> None:
    present = ["chair", "ea", "bhsct"]
    problems = rules.vote_problems(
        {"for": ["chair", "ea", "psni"], "against": ["ea"]}, None, present, set(), CHAIR
    )
    assert "psni voted but is not recorded as present" in problems
    assert "ea is recorded as voting both for and against" in problems


def test_majority_of_those_present_and_voting() -> None:
    assert rules.carried(rules.Tally(3, 2, 0), None)
    assert not rules.carried(rules.Tally(2, 3, 0), None)
    # Abstentions are not votes: 2 for, 1 against, 4 abstaining carries.
    assert rules.carried(rules.Tally(2, 1, 4), None)
    assert not rules.carried(rules.Tally(0, 0, 6), None)


def test_the_chairs_casting_vote_decides_a_tie() -> None:
    tie = {"for": ["chair", "ea"], "against": ["bhsct", "nhsct"]}
    present = MEMBERS
    assert rules.vote_problems(tie, None, present, set(), CHAIR) == [
        "the votes are equal: record the Chair's casting vote"
    ]
    assert rules.vote_problems(tie, "for", present, set(), CHAIR) == []
    assert rules.carried(rules.tally(tie), "for")
    assert not rules.carried(rules.tally(tie), "against")
    assert not rules.carried(rules.tally(tie), None)
    # No casting vote without a tie, and none for a Chair with an interest.
    assert rules.vote_problems({"for": ["ea"]}, "for", present, set(), CHAIR) == [
        "a casting vote is recorded but the votes were not equal"
    ]
    tie_without_chair = {"for": ["ea"], "against": ["bhsct"]}
    assert rules.vote_problems(tie_without_chair, "for", present, {"chair"}, CHAIR) == [
        "the Chair declared an interest (or was absent) and has no casting vote"
    ]


@given(
    st.integers(0, 9),
    st.integers(0, 9),
    st.integers(0, 9),
    st.sampled_from([None, "for", "against"]),
)
def test_carried_is_majority_or_casting(
    votes_for: int, against: int, abstaining: int, casting: str | None
) -> None:
    expected = votes_for > against or (votes_for == against > 0 and casting == "for")
    assert rules.carried(rules.Tally(votes_for, against, abstaining), casting) == expected


def test_requisition_needs_three_quarters_and_a_meeting_within_14_days() -> None:
    assert rules.requisition_valid(MEMBERS[:7], MEMBERS)  # 7 of 9 >= 6.75
    assert not rules.requisition_valid(MEMBERS[:6], MEMBERS)
    assert rules.requisitioned_meeting_by(date(2027, 4, 1)) == date(2027, 4, 15)


def test_an_inquorate_meeting_is_reconvened_within_a_month() -> None:
    assert rules.reconvene_by(date(2027, 3, 11)) == date(2027, 4, 11)
    assert rules.reconvene_by(date(2027, 1, 31)) == date(2027, 2, 28)
    assert rules.reconvene_by(date(2027, 12, 9)) == date(2028, 1, 9)
    day = date(2027, 3, 11)
    assert day < rules.proposed_reconvene_day(day) <= rules.reconvene_by(day)


def test_too_few_meetings() -> None:
    assert rules.too_few_meetings(3)
    assert not rules.too_few_meetings(4)


# -- the agenda --------------------------------------------------------------------------------


def case(reference: str, status: str, *placements: ag.Placement, **kw: Any) -> ag.Case:
    return ag.Case(
        reference=reference,
        agency="PSNI",
        agency_name="Police Service of Northern Ireland",
        received_on=kw.pop("received_on", date(2027, 1, 10)),
        route="harm",
        incident_type="serious_harm",
        status=status,
        children=(ag.Child("0-11 months", "female"),),
        placements=placements,
        document=kw.pop("document", example()),
        **kw,
    )


def test_where_each_case_goes() -> None:
    m = "M-2027-06"
    open_elsewhere = ag.Placement("M-2027-09", True, "new")
    held = ag.Placement("M-2027-03", False, "new", outcome="defer", reason="awaiting trial")
    inquorate = ag.Placement("M-2027-03", False, "new")
    assert ag.place(case("A", lc.READY_FOR_PANEL), m) == ag.Place("new")
    # Kept for a later meeting: not on this one.
    assert ag.place(case("B", lc.READY_FOR_PANEL, open_elsewhere), m) is None
    assert ag.place(case("C", lc.DEFERRED, held), m) == ag.Place("deferred")
    assert ag.place(case("D", lc.ON_AGENDA, inquorate), m) == ag.Place("new", "M-2027-03")
    assert ag.place(case("E", lc.ON_AGENDA, ag.Placement(m, True, "deferred")), m) == ag.Place(
        "deferred"
    )
    assert ag.place(case("F", lc.ON_AGENDA, open_elsewhere), m) is None
    assert ag.place(case("G", lc.INFORMATION_GATHERING), m) == ag.Place("noting")
    assert ag.place(case("H", lc.CMR_UNDER_WAY), m) == ag.Place("cmr_progress")
    for status in (lc.RECOMMENDED, lc.WITHDRAWN, lc.NOT_COMMISSIONED, lc.CMR_COMPLETED):
        assert ag.place(case("I", status), m) is None


def test_deferrals_are_counted_with_their_reasons() -> None:
    c = case(
        "A",
        lc.DEFERRED,
        ag.Placement("M-2027-03", False, "new", "defer", "awaiting the trial"),
        ag.Placement("M-2027-06", False, "deferred", "defer", "awaiting the chronology"),
    )
    item = ag.decision_item(c, ag.Place("deferred"))
    assert item["deferrals"] == {
        "count": 2,
        "history": [
            {"meeting": "M-2027-03", "reason": "awaiting the trial"},
            {"meeting": "M-2027-06", "reason": "awaiting the chronology"},
        ],
    }
    assert "Deferred 2 times before." in item["decision_sought"]


def test_the_checklist_states_the_facts_and_leaves_limb_c_to_the_panel() -> None:
    listed = ag.checklist("harm", example())
    assert listed["met"] == {"17(2)(a)": True, "17(2)(b)": True}
    answers = {r["question"]: r["answer"] for r in listed["rows"]}
    assert answers["The child has been significantly harmed"] == "Yes"
    assert answers["Abuse or neglect of the child is known or suspected"].startswith("Suspected")
    assert next(r for r in listed["rows"] if r["limb"] == "17(2)(c)")["answer"] == (
        "For the panel's judgement"
    )
    good = ag.checklist("good_practice", example("good-practice"))
    assert good["regulation"] == "17(3)" and len(good["rows"]) == 2
    assert "Interpreter needed (Polish)" in ag.learning_flags(example())


def test_a_reissue_marks_what_changed() -> None:
    first = ag.compile_sections(
        "M-2027-03",
        [case("A", lc.READY_FOR_PANEL), case("B", lc.INFORMATION_GATHERING)],
        ["Dates for 2028"],
    )
    answered = ag.AgencyAnswer("EA", "Education Authority", "answered", date(2027, 3, 1))
    second = ag.compile_sections(
        "M-2027-03",
        [
            case("A", lc.ON_AGENDA, ag.Placement("M-2027-03", True, "new")),
            case("B", lc.READY_FOR_PANEL, answers=(answered,)),
            case("C", lc.READY_FOR_PANEL, received_on=date(2027, 2, 1)),
        ],
        [],
    )
    marked, removed = ag.mark_changes(second.sections, first.sections)
    items = {i["reference"]: i for s in marked for i in s["items"]}
    assert items["A"]["change"] is None
    assert items["B"]["change"] == "changed"
    assert items["B"]["changed_fields"][0] == "section"
    assert items["C"]["change"] == "added"
    assert removed == [{"section": "aob", "item": "Dates for 2028"}]
    unmarked, nothing = ag.mark_changes(second.sections, None)
    assert all(i["change"] is None for s in unmarked for i in s["items"]) and nothing == []
    assert ag.same_business(marked, second.sections)
    assert not ag.same_business(first.sections, second.sections)


@given(st.lists(st.sampled_from(sorted(ag.NOTING_STATES | {lc.READY_FOR_PANEL})), max_size=6))
def test_an_unchanged_agenda_marks_nothing(states: list[str]) -> None:
    cases = [case(f"CMRN-2027-{i:04d}", s) for i, s in enumerate(states)]
    sections = ag.compile_sections("M-2027-03", cases, []).sections
    marked, removed = ag.mark_changes(sections, sections)
    assert removed == [] and all(i["change"] is None for s in marked for i in s["items"])
    numbers = [i["number"] for s in marked for i in s["items"]]
    assert len(numbers) == len(set(numbers)) == len(states)
