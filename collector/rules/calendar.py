"""Calendars (schedules) for rules: school day, after hours, holidays.

A calendar is true at an instant when, in its time zone, the local date's
weekday is in ``days``, the local date is in ``dates`` (if given) and not in
``holidays`` nor in any ``exclude`` calendar, and the local time is within one
of ``hours`` (``"HH:MM-HH:MM"``; an end before the start wraps past midnight,
e.g. ``"18:00-07:00"``). ``not: other`` is the complement of another calendar.
"""
from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")


class Calendar(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    timezone: str = "UTC"
    days: list[str] | None = None
    hours: list[str] | None = None
    dates: list[str | dt.date] | None = None
    holidays: list[str | dt.date] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    not_: str | None = Field(None, alias="not")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v):
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {v!r} (use an IANA name such as Europe/Berlin)") from None
        return v

    @field_validator("days")
    @classmethod
    def _days(cls, v):
        if v is None:
            return v
        out = []
        for d in v:
            d2 = str(d).strip().lower()[:3]
            if d2 not in DAYS:
                raise ValueError(f"unknown day {d!r} (use mon, tue, wed, thu, fri, sat, sun)")
            out.append(d2)
        return out

    @field_validator("hours")
    @classmethod
    def _hours(cls, v):
        for h in v or []:
            _parse_hours(h)
        return v

    @field_validator("dates", "holidays")
    @classmethod
    def _dates(cls, v):
        for d in v or []:
            _parse_dates(d)
        return v


def _parse_hours(s: str) -> tuple[int, int]:
    m = _HOURS.match(str(s).strip())
    if not m:
        raise ValueError(f"hours {s!r}: expected HH:MM-HH:MM")
    h1, m1, h2, m2 = map(int, m.groups())
    if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59 or (h1 == 24 and m1) or (h2 == 24 and m2):
        raise ValueError(f"hours {s!r}: not a valid time of day")
    return h1 * 60 + m1, h2 * 60 + m2


def _parse_dates(s) -> tuple[dt.date, dt.date]:
    if isinstance(s, dt.date):
        return s, s
    txt = str(s).strip()
    a, _, b = txt.partition("..")
    try:
        d1 = dt.date.fromisoformat(a.strip())
        d2 = dt.date.fromisoformat(b.strip()) if b else d1
    except ValueError:
        raise ValueError(f"date {s!r}: expected YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD") from None
    if d2 < d1:
        raise ValueError(f"date range {s!r}: end before start")
    return d1, d2


class CompiledCalendar:
    """``contains(t_ms)``; results are cached per minute (calendars have minute resolution)."""

    def __init__(self, name: str, cal: Calendar):
        self.name = name
        self.tz = ZoneInfo(cal.timezone)
        self.days = None if cal.days is None else frozenset(DAYS.index(d) for d in cal.days)
        self.hours = None if cal.hours is None else [_parse_hours(h) for h in cal.hours]
        self.dates = None if cal.dates is None else [_parse_dates(d) for d in cal.dates]
        self.holidays = [_parse_dates(d) for d in cal.holidays]
        self.exclude: list[CompiledCalendar] = []
        self.negate: CompiledCalendar | None = None
        self._cache_min = None
        self._cache_val = False

    def contains(self, t_ms: int) -> bool:
        minute = t_ms // 60_000
        if minute == self._cache_min:
            return self._cache_val
        val = self._eval(t_ms)
        self._cache_min, self._cache_val = minute, val
        return val

    def _eval(self, t_ms: int) -> bool:
        if self.negate is not None:
            return not self.negate.contains(t_ms)
        local = dt.datetime.fromtimestamp(t_ms / 1000, self.tz)
        day = local.date()
        if self.days is not None and local.weekday() not in self.days:
            return False
        if self.dates is not None and not any(a <= day <= b for a, b in self.dates):
            return False
        if any(a <= day <= b for a, b in self.holidays):
            return False
        if self.hours is not None:
            mins = local.hour * 60 + local.minute
            ok = False
            for start, end in self.hours:
                if (start <= mins < end) if start <= end else (mins >= start or mins < end):
                    ok = True
                    break
            if not ok:
                return False
        for ex in self.exclude:
            if ex.contains(t_ms):
                return False
        return True


def compile_calendars(cals: dict[str, Calendar]) -> dict[str, CompiledCalendar]:
    out = {name: CompiledCalendar(name, c) for name, c in cals.items()}
    for name, c in cals.items():
        for ref in ([c.not_] if c.not_ else []) + list(c.exclude):
            if ref not in out:
                raise ValueError(f"calendar {name!r}: refers to unknown calendar {ref!r}")
        out[name].exclude = [out[r] for r in c.exclude]
        if c.not_:
            out[name].negate = out[c.not_]
    # reject cycles
    def visit(n, stack):
        if n in stack:
            raise ValueError(f"calendar {n!r}: circular reference ({' -> '.join(stack + [n])})")
        c = cals[n]
        for ref in ([c.not_] if c.not_ else []) + list(c.exclude):
            visit(ref, stack + [n])
    for n in cals:
        visit(n, [])
    return out
