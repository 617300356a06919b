"""Working days in Northern Ireland, across its bank holidays."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from gateway.workdays import WorkingDays

WD = WorkingDays()


def test_ni_bank_holidays_are_not_working_days() -> None:
    assert not WD.is_working_day(date(2027, 3, 17))  # St Patrick's Day, a Wednesday
    assert not WD.is_working_day(date(2026, 7, 13))  # 12 July 2026 is a Sunday: observed Monday
    assert not WD.is_working_day(date(2026, 7, 11))  # Saturday
    assert WD.is_working_day(date(2026, 7, 14))
    assert not WD.is_working_day(date(2026, 12, 28))  # Boxing Day observed


def test_adding_working_days_skips_holidays() -> None:
    assert WD.add(date(2027, 3, 5), 10) == date(2027, 3, 22)  # would be the 19th without 17 March
    assert WD.add(date(2026, 7, 6), 5) == date(2026, 7, 14)  # would be the 13th without the Twelfth
    assert WD.add(date(2027, 3, 22), -10) == date(2027, 3, 5)
    assert WD.between(date(2027, 3, 16), date(2027, 3, 22)) == 3


def test_override_table(tmp_path: Path) -> None:
    (tmp_path / "holidays.toml").write_text('extra = ["2027-06-07"]\nremoved = ["2027-03-17"]\n')
    wd = WorkingDays.load(tmp_path)
    assert not wd.is_working_day(date(2027, 6, 7))
    assert wd.is_working_day(date(2027, 3, 17))


@given(st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 12, 31)), st.integers(0, 40))
def test_add_and_between_agree(start: date, n: int) -> None:
    end = WD.add(start, n)
    assert WD.between(start, end) == n
    assert n == 0 or WD.is_working_day(end)
    assert end >= start and (end - start) <= timedelta(days=n * 2 + 10)
