"""The rules of the panel's meetings (Schedule 5, as DESIGN.md "Rules of the domain" sets them
out). Each rule is one small function, named for what it decides. Pure: plain values in, plain
values out; the service turns a broken rule into an error for the person recording.
"""

from __future__ import annotations

import calendar as stdcal
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta

MIN_MEETINGS_A_YEAR = 4
REQUISITION_DAYS = 14

RECOMMEND = "recommend"
DO_NOT_RECOMMEND = "do_not_recommend"
DEFER = "defer"
REQUEST_INFORMATION = "request_information"
WITHDRAWN = "withdrawn"
OUTCOMES = (RECOMMEND, DO_NOT_RECOMMEND, DEFER, REQUEST_INFORMATION, WITHDRAWN)
# A withdrawn notification is a fact reported to the panel, not a decision it votes on.
VOTED_OUTCOMES = frozenset(OUTCOMES) - {WITHDRAWN}
# The notification's state after the panel's outcome (gateway/lifecycle.py).
OUTCOME_STATE = {
    RECOMMEND: "recommended",
    DO_NOT_RECOMMEND: "not_recommended",
    DEFER: "deferred",
    REQUEST_INFORMATION: "information_gathering",
    WITHDRAWN: "withdrawn",
}


def too_few_meetings(count: int) -> bool:
    """Schedule 5: the panel meets at least four times a year."""
    return count < MIN_MEETINGS_A_YEAR


def quorum(members: int) -> int:
    """Schedule 5: the quorum is two thirds of the members, rounded up."""
    return math.ceil(2 * members / 3) if members > 0 else 1


def is_quorate(present: Collection[str], members: Collection[str], chair: str) -> bool:
    """Schedule 5: a meeting is quorate when two thirds of the members (rounded up) are
    present, the Chair among them."""
    attending = set(present) & set(members)
    return chair in attending and len(attending) >= quorum(len(set(members)))


def requisition_valid(requisitioners: Collection[str], members: Collection[str]) -> bool:
    """Schedule 5: three quarters of the members may requisition a meeting."""
    signed = set(requisitioners) & set(members)
    return len(signed) >= math.ceil(3 * len(set(members)) / 4)


def requisitioned_meeting_by(requisitioned_on: date) -> date:
    """Schedule 5: the Chair calls a requisitioned meeting within 14 days."""
    return requisitioned_on + timedelta(days=REQUISITION_DAYS)


def add_month(day: date) -> date:
    """The same day of the next month, or that month's last day if it is shorter."""
    year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    return date(year, month, min(day.day, stdcal.monthrange(year, month)[1]))


def reconvene_by(meeting_day: date) -> date:
    """Schedule 5: an inquorate meeting is reconvened within one month."""
    return add_month(meeting_day)


def may_vote(member: str, present: Collection[str], interested: Collection[str]) -> bool:
    """Schedule 5: only members present vote, and a member who has declared an interest in an
    item takes no part in the decision on it."""
    return member in present and member not in interested


@dataclass(frozen=True)
class Tally:
    votes_for: int
    against: int
    abstaining: int

    @property
    def tied(self) -> bool:
        return self.votes_for == self.against


def tally(votes: Mapping[str, Iterable[str]]) -> Tally:
    return Tally(
        len(list(votes.get("for", ()))),
        len(list(votes.get("against", ()))),
        len(list(votes.get("abstain", ()))),
    )


def carried(t: Tally, casting_vote: str | None) -> bool:
    """Schedule 5: decisions are by a majority of the members present and voting (those who
    abstain are not voting), the Chair having a casting vote when the votes are equal."""
    if t.votes_for == 0 and t.against == 0:
        return False
    if t.tied:
        return casting_vote == "for"
    return t.votes_for > t.against


def vote_problems(
    votes: Mapping[str, Iterable[str]],
    casting_vote: str | None,
    present: Collection[str],
    interested: Collection[str],
    chair: str,
) -> list[str]:
    """What is wrong with the votes recorded on one item, in words; empty when nothing is."""
    problems: list[str] = []
    seen: dict[str, str] = {}
    for way in ("for", "against", "abstain"):
        for member in votes.get(way, ()):
            if member in seen:
                problems.append(f"{member} is recorded as voting both {seen[member]} and {way}")
                continue
            seen[member] = way
            if member not in present:
                problems.append(f"{member} voted but is not recorded as present")
            elif member in interested:
                problems.append(f"{member} declared an interest in this item and may not vote")
    t = tally(votes)
    if casting_vote is not None:
        if not t.tied:
            problems.append("a casting vote is recorded but the votes were not equal")
        elif not may_vote(chair, present, interested):
            problems.append(
                "the Chair declared an interest (or was absent) and has no casting vote"
            )
    elif t.tied and t.votes_for > 0:
        problems.append("the votes are equal: record the Chair's casting vote")
    return problems


def proposed_reconvene_day(meeting_day: date) -> date:
    """The gateway's proposal for reconvening an inquorate meeting: two weeks on, the same
    weekday, which leaves time for seven clear days' notice and is within the month."""
    return meeting_day + timedelta(days=14)
