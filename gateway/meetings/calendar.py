"""The panel's meeting calendar, read from config/meetings.toml (docs/meetings.md): a rule such
as "the second Thursday of March, June, September and December at 10:00", explicit meetings,
the place, and the panel's members with its Chair. And the two dates each meeting's business
hangs on: the last day on which notice can be served (seven clear days before the meeting,
Schedule 5) and the agenda's cut-off, a number of NI working days before that.

Pure: nothing here reads a clock or a database; loading the file is the only I/O.
"""

from __future__ import annotations

import calendar as stdcal
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.errors import SettingsError
from gateway.workdays import WorkingDays

LONDON = ZoneInfo("Europe/London")
# Schedule 5: notice "at least seven clear days before the meeting". Clear days leave out both
# the day notice is served and the day of the meeting, so the latest day is the eighth before.
NOTICE_CLEAR_DAYS = 7
WEEKDAYS = tuple(d.lower() for d in stdcal.day_name)
MONTHS = tuple(m.lower() for m in stdcal.month_name[1:])
ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "last": -1}
ORDINAL_NAMES = {v: k for k, v in ORDINALS.items()}
MEMBER_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
MEETING_ID = re.compile(r"M-\d{4}-\d{2}(-[0-9A-Za-z]{1,8}){0,2}")


@dataclass(frozen=True)
class Member:
    id: str
    name: str
    email: str
    chair: bool = False


@dataclass(frozen=True)
class Rule:
    """The nth (1-5, or -1 for the last) weekday of each of `months`, at `at` local time."""

    nth: int
    weekday: int  # 0 is Monday
    months: tuple[int, ...]
    at: time

    def day_in(self, year: int, month: int) -> date | None:
        days = [
            d
            for d in stdcal.Calendar().itermonthdates(year, month)
            if d.month == month and d.weekday() == self.weekday
        ]
        if self.nth == -1:
            return days[-1]
        return days[self.nth - 1] if self.nth <= len(days) else None

    def describe(self, zone: str) -> str:
        months = [stdcal.month_name[m] for m in self.months]
        listed = months[0] if len(months) == 1 else ", ".join(months[:-1]) + " and " + months[-1]
        return (
            f"the {ORDINAL_NAMES[self.nth]} {stdcal.day_name[self.weekday]} of {listed}, "
            f"{self.at:%H:%M}, {zone}"
        )


@dataclass(frozen=True)
class Planned:
    """A meeting as the calendar file plans it."""

    public_id: str
    starts_at: datetime  # aware, UTC
    place: str | None
    online_link: str | None


@dataclass(frozen=True)
class MeetingDates:
    """The days a meeting's business hangs on, and the moments the scheduler acts at."""

    notice_by_on: date
    cut_off_on: date
    cut_off_at: datetime  # UTC: the agenda is compiled from then on
    notice_at: datetime  # UTC: from then on the notice goes out if nobody has issued it


def scheduled_id(day: date) -> str:
    return f"M-{day.year}-{day.month:02d}"


def notice_by(meeting_day: date, workdays: WorkingDays) -> date:
    """The last day on which notice can be served: seven clear days before the meeting, moved
    back to a working day, because the secretariat serves it."""
    day = meeting_day - timedelta(days=NOTICE_CLEAR_DAYS + 1)
    while not workdays.is_working_day(day):
        day -= timedelta(days=1)
    return day


def clear_days(served_on: date, meeting_day: date) -> int:
    """Whole days between serving notice and the meeting, neither counted."""
    return (meeting_day - served_on).days - 1


def earliest_meeting_day(today: date) -> date:
    """The first day a meeting called today can be held with seven clear days' notice."""
    return today + timedelta(days=NOTICE_CLEAR_DAYS + 1)


def _parse_time(value: Any, key: str) -> time:
    if isinstance(value, time):
        return value
    if isinstance(value, str):
        try:
            return time.fromisoformat(value)
        except ValueError:
            pass
    raise SettingsError(f"meetings: {key!r} must be a time like 10:00")


def _parse_weekday(value: Any) -> int:
    if isinstance(value, str) and value.strip().lower() in WEEKDAYS:
        return WEEKDAYS.index(value.strip().lower())
    raise SettingsError("meetings: rule.weekday must be a day name like Thursday")


def _parse_month(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 12:
        return value
    if isinstance(value, str) and value.strip().lower() in MONTHS:
        return MONTHS.index(value.strip().lower()) + 1
    raise SettingsError("meetings: rule.months must list months like March or 3")


def _parse_ordinal(value: Any) -> int:
    if isinstance(value, str) and value.strip().lower() in ORDINALS:
        return ORDINALS[value.strip().lower()]
    if isinstance(value, int) and not isinstance(value, bool) and value in ORDINAL_NAMES:
        return value
    raise SettingsError("meetings: rule.ordinal must be first..fifth or last (or 1-5, -1)")


def _text(raw: Mapping[str, Any], key: str, where: str, required: bool = True) -> str | None:
    value = raw.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise SettingsError(f"meetings: {where}{key} must be a non-empty string")
    return value.strip()


def _link(value: str | None, where: str) -> str | None:
    if value is not None and not value.startswith("https://"):
        raise SettingsError(f"meetings: {where}online_link must be an https:// URL")
    return value


@dataclass(frozen=True)
class MeetingCalendar:
    zone: ZoneInfo
    rule: Rule | None
    explicit: tuple[Planned, ...]
    place: str | None
    online_link: str | None
    duration: timedelta
    cut_off_working_days: int
    cut_off_time: time
    notice_time: time
    members: tuple[Member, ...]

    @classmethod
    def load(cls, path: Path) -> MeetingCalendar:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise SettingsError(f"cannot read the meeting calendar {path}: {exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{path} is not valid TOML: {exc}") from None
        return cls.parse(raw)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> MeetingCalendar:
        known = {
            "timezone",
            "place",
            "online_link",
            "duration_minutes",
            "cut_off_working_days",
            "cut_off_time",
            "notice_time",
            "rule",
            "meetings",
            "members",
        }
        unknown = sorted(set(raw) - known)
        if unknown:
            raise SettingsError(f"meetings: unknown key {unknown[0]!r}")
        try:
            zone = ZoneInfo(str(raw.get("timezone", "Europe/London")))
        except (ZoneInfoNotFoundError, ValueError):
            raise SettingsError("meetings: 'timezone' is not a known time zone") from None
        place = _text(raw, "place", "", required=False)
        online_link = _link(_text(raw, "online_link", "", required=False), "")
        if place is None and online_link is None:
            raise SettingsError("meetings: give a place, an online_link or both")
        duration = raw.get("duration_minutes", 180)
        if not isinstance(duration, int) or isinstance(duration, bool) or duration < 15:
            raise SettingsError("meetings: duration_minutes must be a whole number >= 15")
        days = raw.get("cut_off_working_days", 3)
        if not isinstance(days, int) or isinstance(days, bool) or not 0 <= days <= 30:
            raise SettingsError("meetings: cut_off_working_days must be 0 to 30")
        rule = cls._rule(raw.get("rule"))
        explicit = cls._explicit(raw.get("meetings", []), zone)
        if rule is None and not explicit:
            raise SettingsError("meetings: give a [rule], explicit [[meetings]], or both")
        return cls(
            zone=zone,
            rule=rule,
            explicit=explicit,
            place=place,
            online_link=online_link,
            duration=timedelta(minutes=duration),
            cut_off_working_days=days,
            cut_off_time=_parse_time(raw.get("cut_off_time", "17:00"), "cut_off_time"),
            notice_time=_parse_time(raw.get("notice_time", "09:00"), "notice_time"),
            members=cls._members(raw.get("members")),
        )

    @staticmethod
    def _rule(raw: Any) -> Rule | None:
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise SettingsError("meetings: [rule] must be a table")
        months = raw.get("months")
        if not isinstance(months, list) or not months:
            raise SettingsError("meetings: rule.months must list at least one month")
        return Rule(
            nth=_parse_ordinal(raw.get("ordinal", "second")),
            weekday=_parse_weekday(raw.get("weekday")),
            months=tuple(sorted({_parse_month(m) for m in months})),
            at=_parse_time(raw.get("time", "10:00"), "rule.time"),
        )

    @staticmethod
    def _explicit(raw: Any, zone: ZoneInfo) -> tuple[Planned, ...]:
        if not isinstance(raw, list):
            raise SettingsError("meetings: [[meetings]] must be an array of tables")
        found: dict[str, Planned] = {}
        for i, entry in enumerate(raw):
            where = f"meetings[{i}]."
            if not isinstance(entry, dict):
                raise SettingsError(f"meetings: {where[:-1]} must be a table")
            at = entry.get("at")
            if isinstance(at, str):
                try:
                    at = datetime.fromisoformat(at)
                except ValueError:
                    at = None
            if not isinstance(at, datetime) or at.tzinfo is not None:
                raise SettingsError(
                    f"meetings: {where}at must be a local date and time like 2027-05-20T14:00"
                )
            local = at.replace(tzinfo=zone)
            public_id = entry.get("id") or scheduled_id(local.date())
            if not isinstance(public_id, str) or not MEETING_ID.fullmatch(public_id):
                raise SettingsError(f"meetings: {where}id must look like M-2027-05 or M-2027-05-b")
            if public_id in found:
                raise SettingsError(
                    f"meetings: two meetings are {public_id}: give the second an id "
                    f"like {public_id}-b"
                )
            found[public_id] = Planned(
                public_id,
                local.astimezone(UTC),
                _text(entry, "place", where, required=False),
                _link(_text(entry, "online_link", where, required=False), where),
            )
        return tuple(found.values())

    @staticmethod
    def _members(raw: Any) -> tuple[Member, ...]:
        if not isinstance(raw, list) or not raw:
            raise SettingsError("meetings: list the panel's [[members]]")
        members: list[Member] = []
        for i, entry in enumerate(raw):
            where = f"members[{i}]."
            if not isinstance(entry, dict):
                raise SettingsError(f"meetings: {where[:-1]} must be a table")
            member_id = entry.get("id")
            if not isinstance(member_id, str) or not MEMBER_ID.fullmatch(member_id):
                raise SettingsError(f"meetings: {where}id must be lower-case letters and digits")
            email = _text(entry, "email", where)
            if email is None or "@" not in email:
                raise SettingsError(f"meetings: {where}email must be an email address")
            chair = entry.get("chair", False)
            if not isinstance(chair, bool):
                raise SettingsError(f"meetings: {where}chair must be true or false")
            members.append(Member(member_id, _text(entry, "name", where) or "", email, chair))
        if len({m.id for m in members}) != len(members):
            raise SettingsError("meetings: two members have the same id")
        if sum(m.chair for m in members) != 1:
            raise SettingsError("meetings: exactly one member must be the Chair (chair = true)")
        return tuple(members)

    # -- what the file says ------------------------------------------------------------------

    @property
    def chair(self) -> Member:
        return next(m for m in self.members if m.chair)

    def member(self, member_id: str) -> Member | None:
        return next((m for m in self.members if m.id == member_id), None)

    def describe(self) -> str:
        parts = []
        if self.rule is not None:
            parts.append(self.rule.describe(self.zone.key))
        if self.explicit:
            parts.append(f"{len(self.explicit)} meetings listed by date")
        return "; ".join(parts)

    def planned(self, year: int) -> list[Planned]:
        """The year's meetings by the rule, with the explicit ones (an explicit meeting with the
        id of a rule meeting replaces it: that is how one meeting of the rule is moved)."""
        found: dict[str, Planned] = {}
        if self.rule is not None:
            for month in self.rule.months:
                day = self.rule.day_in(year, month)
                if day is None:
                    continue
                local = datetime.combine(day, self.rule.at, self.zone)
                found[scheduled_id(day)] = Planned(
                    scheduled_id(day), local.astimezone(UTC), None, None
                )
        for p in self.explicit:
            if p.public_id in found or p.starts_at.astimezone(self.zone).year == year:
                found[p.public_id] = p
        kept = [p for p in found.values() if p.starts_at.astimezone(self.zone).year == year]
        return sorted(kept, key=lambda p: p.starts_at)

    def place_of(self, planned: Planned) -> tuple[str | None, str | None]:
        if planned.place is None and planned.online_link is None:
            return self.place, self.online_link
        return planned.place, planned.online_link

    def dates_for(self, starts_at: datetime, workdays: WorkingDays) -> MeetingDates:
        day = starts_at.astimezone(self.zone).date()
        last = notice_by(day, workdays)
        cut = workdays.add(last, -self.cut_off_working_days)
        return MeetingDates(
            notice_by_on=last,
            cut_off_on=cut,
            cut_off_at=datetime.combine(cut, self.cut_off_time, self.zone).astimezone(UTC),
            notice_at=datetime.combine(last, self.notice_time, self.zone).astimezone(UTC),
        )

    def local(self, when: datetime) -> datetime:
        return when.astimezone(self.zone)

    def to_utc(self, local: datetime) -> datetime:
        """A local date and time as typed by the secretariat (naive means the panel's zone)."""
        if local.tzinfo is None:
            local = local.replace(tzinfo=self.zone)
        return local.astimezone(UTC)


def count_by_year(days: Iterable[date]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for d in days:
        counts[d.year] = counts.get(d.year, 0) + 1
    return counts
