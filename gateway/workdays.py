"""Working days in Northern Ireland: Monday to Friday less its bank holidays (the `holidays`
package, subdivision NIR), with an override table in config/holidays.toml for days proclaimed
after the package was released. Pure: no I/O after loading."""

from __future__ import annotations

import tomllib
from datetime import date, timedelta
from pathlib import Path

import holidays

from gateway.errors import SettingsError


class WorkingDays:
    def __init__(self, extra: set[date] | None = None, removed: set[date] | None = None) -> None:
        self._extra = extra or set()
        self._removed = removed or set()
        self._calendar = holidays.country_holidays("GB", subdiv="NIR")

    @classmethod
    def load(cls, config_dir: Path) -> WorkingDays:
        path = config_dir / "holidays.toml"
        if not path.exists():
            return cls()
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
            extra = {date.fromisoformat(str(d)) for d in raw.get("extra", [])}
            removed = {date.fromisoformat(str(d)) for d in raw.get("removed", [])}
        except (tomllib.TOMLDecodeError, ValueError) as exc:
            raise SettingsError(f"{path} is not valid: {exc}") from None
        return cls(extra, removed)

    def is_holiday(self, day: date) -> bool:
        if day in self._removed:
            return False
        return day in self._extra or day in self._calendar

    def is_working_day(self, day: date) -> bool:
        return day.weekday() < 5 and not self.is_holiday(day)

    def add(self, start: date, days: int) -> date:
        """The working day `days` working days after `start` (before it if negative)."""
        step = 1 if days >= 0 else -1
        remaining, day = abs(days), start
        while remaining:
            day += timedelta(days=step)
            if self.is_working_day(day):
                remaining -= 1
        return day

    def between(self, start: date, end: date) -> int:
        """Working days after `start` up to and including `end`."""
        count, day = 0, start
        while day < end:
            day += timedelta(days=1)
            count += self.is_working_day(day)
        return count
