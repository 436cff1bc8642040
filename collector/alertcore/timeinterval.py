"""THE time grammar of alerting: durations and named time intervals.

Used by rules.yaml (``calendars``, rule ``schedule``), notify.yaml (``time_windows``, route
``active_time_windows`` / ``mute_time_windows``) and maintenance windows.

Durations: ``500ms``, ``30s``, ``15m``, ``1h30m``, ``2d``, ``1w``, or a number (string or not)
of seconds. ``parse_duration`` returns milliseconds; ``Duration`` / ``OptDuration`` are the
pydantic field types (ms); ``Seconds`` is the same grammar as float seconds.

A time interval is true at an instant when, in its ``timezone`` (IANA name, default UTC):
- ``days``: the weekday is one of them: ``mon``, ``Monday``, or a range ``mon-fri`` (a range
  may wrap: ``fri-mon`` = Fri, Sat, Sun, Mon);
- ``days_of_month``: the day of the month is one of them: ``1``, ``1-7``, ``-1`` (the last day),
  ``-7--1`` (the last week);
- ``dates``: the date is one of them: ``YYYY-MM-DD`` or a range ``YYYY-MM-DD..YYYY-MM-DD``;
- ``holidays``: the date is NOT one of them (same forms as ``dates``);
- ``hours``: the time of day is within one of ``"HH:MM-HH:MM"`` (end exclusive, up to 24:00);
  a range whose end is before its start runs past midnight and belongs to the day it starts
  (``days: [fri], hours: ["22:00-06:00"]`` is Friday night until Saturday 06:00);
- ``exclude``: none of these named intervals contains the instant;
- ``not: other``: the complement of another named interval (no other key allowed with it).
An omitted or empty ``days`` / ``hours`` / ``days_of_month`` means every day / all day.
A named interval may be one such mapping or a list of them (true when any of them is).
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

# ---------------------------------------------------------------- durations
_DUR = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_duration(v: Any) -> int | None:
    """'15m', '1h30m', '90s', '500ms', '2d', or a number of seconds -> milliseconds (None stays None)."""
    if v is None:
        return None
    if isinstance(v, str) and re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", v):
        v = float(v)
    if isinstance(v, bool):
        raise ValueError(f"invalid duration {v!r}")
    if isinstance(v, (int, float)):
        if v < 0:
            raise ValueError(f"duration must not be negative, got {v!r}")
        return int(round(v * 1000))
    if isinstance(v, str):
        s = v.strip().replace(" ", "")
        if s and _DUR.sub("", s) == "" and s[0].isdigit():
            return int(round(sum(float(n) * _UNIT_MS[u] for n, u in _DUR.findall(s))))
    raise ValueError(f"invalid duration {v!r} (use e.g. 30s, 15m, 1h30m, 2d, or a number of seconds)")


def _seconds(v: Any) -> Any:
    return v if v is None else parse_duration(v) / 1000.0


Duration = Annotated[int, BeforeValidator(parse_duration)]
OptDuration = Annotated[Union[int, None], BeforeValidator(parse_duration)]
Seconds = Annotated[float, BeforeValidator(_seconds)]

# ---------------------------------------------------------------- intervals
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")
_MDAY = re.compile(r"^(-?\d{1,2})(?:\s*-\s*(-?\d{1,2}))?$")


def _list(v: Any) -> Any:
    if v is None:
        return None
    return [v] if isinstance(v, (str, int, dt.date)) and not isinstance(v, bool) else v


def parse_days(spec: str) -> list[int]:
    """'mon' / 'Monday' / 'mon-fri' / 'fri-mon' -> weekday numbers (Monday = 0)."""
    parts = [p.strip().lower() for p in str(spec).split("-")]
    idx = []
    for p in parts:
        if len(parts) > 2 or p[:3] not in DAYS or not _FULL[DAYS.index(p[:3])].startswith(p):
            raise ValueError(f"unknown day {spec!r} (use mon, tue, wed, thu, fri, sat, sun, "
                             f"full names, or a range like mon-fri)")
        idx.append(DAYS.index(p[:3]))
    a, b = idx[0], idx[-1]
    return [(a + i) % 7 for i in range((b - a) % 7 + 1)]


_FULL = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def parse_hours(s: str) -> tuple[int, int]:
    m = _HOURS.match(str(s).strip())
    if not m:
        raise ValueError(f"hours {s!r}: expected HH:MM-HH:MM")
    h1, m1, h2, m2 = map(int, m.groups())
    if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59 or (h1 == 24 and m1) or (h2 == 24 and m2):
        raise ValueError(f"hours {s!r}: not a valid time of day")
    a, b = h1 * 60 + m1, h2 * 60 + m2
    if a == b:
        raise ValueError(f"hours {s!r}: empty range (start equals end)")
    return a, b


def parse_dates(s: Any) -> tuple[dt.date, dt.date]:
    if isinstance(s, dt.date):
        return s, s
    a, _, b = str(s).strip().partition("..")
    try:
        d1 = dt.date.fromisoformat(a.strip())
        d2 = dt.date.fromisoformat(b.strip()) if b else d1
    except ValueError:
        raise ValueError(f"date {s!r}: expected YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD") from None
    if d2 < d1:
        raise ValueError(f"date range {s!r}: end before start")
    return d1, d2


def parse_month_days(s: Any) -> tuple[int, int]:
    m = _MDAY.match(str(s).strip())
    ok = m is not None
    if ok:
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) is not None else a
        ok = all(1 <= abs(x) <= 31 for x in (a, b)) and (a > 0) == (b > 0) and a <= b
    if not ok:
        raise ValueError(f"day of month {s!r}: expected 1..31, -1 (last day), or a range like 1-7 or -7--1")
    return a, b


def check_timezone(v: str) -> str:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {v!r} (use an IANA name such as Asia/Shanghai)") from None
    return v


_L = Annotated[Union[list[str], None], BeforeValidator(_list)]


class TimeInterval(BaseModel):
    """One interval of the grammar above (YAML mapping)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    timezone: str = "UTC"
    days: _L = None
    days_of_month: Annotated[Union[list[str | int], None], BeforeValidator(_list)] = None
    hours: _L = None
    dates: Annotated[Union[list[str | dt.date], None], BeforeValidator(_list)] = None
    holidays: Annotated[list[str | dt.date], BeforeValidator(_list)] = Field(default_factory=list)
    exclude: Annotated[list[str], BeforeValidator(_list)] = Field(default_factory=list)
    not_: str | None = Field(None, alias="not")

    @field_validator("timezone")
    @classmethod
    def _tzv(cls, v):
        return check_timezone(v)

    @field_validator("days")
    @classmethod
    def _daysv(cls, v):
        for d in v or []:
            parse_days(d)
        return v

    @field_validator("days_of_month")
    @classmethod
    def _mdaysv(cls, v):
        for d in v or []:
            parse_month_days(d)
        return v

    @field_validator("hours")
    @classmethod
    def _hoursv(cls, v):
        for h in v or []:
            parse_hours(h)
        return v

    @field_validator("dates", "holidays")
    @classmethod
    def _datesv(cls, v):
        for d in v or []:
            parse_dates(d)
        return v

    @model_validator(mode="after")
    def _notv(self):
        if self.not_ is not None and self.model_fields_set - {"not_", "timezone"}:
            raise ValueError("'not' is the complement of another interval: give no other keys with it")
        return self


class Interval:
    """A compiled named interval: ``contains(t_ms)`` (cached per minute, the grammar's resolution)."""

    def __init__(self, name: str, parts: list[TimeInterval]):
        self.name = name
        self.parts = [_Part(p) for p in parts]
        self.negate: Interval | None = None
        self._cache_min: int | None = None
        self._cache_val = False

    def contains(self, t_ms: int) -> bool:
        minute = int(t_ms // 60_000)
        if minute != self._cache_min:
            if self.negate is not None:
                val = not self.negate.contains(t_ms)
            else:
                val = any(p.contains(t_ms) for p in self.parts)
            self._cache_min, self._cache_val = minute, val
        return self._cache_val


class _Part:
    def __init__(self, ti: TimeInterval):
        self.tz = ZoneInfo(ti.timezone)
        self.days = frozenset(i for d in ti.days or [] for i in parse_days(d)) or None
        self.mdays = [parse_month_days(d) for d in ti.days_of_month or []] or None
        self.hours = [parse_hours(h) for h in ti.hours or []] or None
        self.dates = None if ti.dates is None else [parse_dates(d) for d in ti.dates]
        self.holidays = [parse_dates(d) for d in ti.holidays]
        self.exclude_names = list(ti.exclude)
        self.exclude: list[Interval] = []

    def _day_ok(self, day: dt.date) -> bool:
        if self.days is not None and day.weekday() not in self.days:
            return False
        if self.mdays is not None:
            last = ((day.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)).day
            if not any(a <= (day.day if a > 0 else day.day - last - 1) <= b for a, b in self.mdays):
                return False
        if self.dates is not None and not any(a <= day <= b for a, b in self.dates):
            return False
        return not any(a <= day <= b for a, b in self.holidays)

    def contains(self, t_ms: int) -> bool:
        local = dt.datetime.fromtimestamp(t_ms / 1000, self.tz)
        day = local.date()
        if self.hours is None:
            ok = self._day_ok(day)
        else:
            mins = local.hour * 60 + local.minute
            ok = False
            for a, b in self.hours:
                if a < b:
                    ok = a <= mins < b and self._day_ok(day)
                else:  # runs past midnight: belongs to the day it starts
                    ok = (mins >= a and self._day_ok(day)) or (mins < b and self._day_ok(day - dt.timedelta(days=1)))
                if ok:
                    break
        return ok and not any(ex.contains(t_ms) for ex in self.exclude)


def compile_intervals(named: dict[str, TimeInterval | list[TimeInterval]], what: str = "calendar") -> dict[str, Interval]:
    """Compile named intervals, resolving ``exclude`` / ``not`` references; raises ValueError
    naming the interval for an unknown or circular reference."""
    parts = {n: (v if isinstance(v, list) else [v]) for n, v in named.items()}
    out = {n: Interval(n, ps) for n, ps in parts.items()}

    def refs(n: str) -> list[str]:
        return [r for p in parts[n] for r in ([p.not_] if p.not_ else []) + list(p.exclude)]

    for n in parts:
        for r in refs(n):
            if r not in out:
                raise ValueError(f"{what} {n!r}: refers to unknown {what} {r!r}")
        for p, cp in zip(parts[n], out[n].parts):
            cp.exclude = [out[r] for r in p.exclude]
        nots = [p.not_ for p in parts[n] if p.not_]
        if nots:
            if len(parts[n]) > 1:
                raise ValueError(f"{what} {n!r}: 'not' must be the only entry")
            out[n].negate = out[nots[0]]

    def visit(n: str, stack: list[str]) -> None:
        if n in stack:
            raise ValueError(f"{what} {n!r}: circular reference ({' -> '.join(stack + [n])})")
        for r in refs(n):
            visit(r, stack + [n])

    for n in parts:
        visit(n, [])
    return out


def compile_one(name: str, spec: TimeInterval | list[TimeInterval], known: dict[str, Interval],
                what: str = "calendar") -> Interval:
    """Compile one interval whose ``exclude`` / ``not`` may refer to already compiled ``known`` ones
    (e.g. a maintenance window made through the API referring to rules.yaml calendars)."""
    parts = spec if isinstance(spec, list) else [spec]
    out = Interval(name, parts)
    for p, cp in zip(parts, out.parts):
        for r in list(p.exclude) + ([p.not_] if p.not_ else []):
            if r not in known:
                raise ValueError(f"{what} {name!r}: refers to unknown {what} {r!r}")
        cp.exclude = [known[r] for r in p.exclude]
    nots = [p.not_ for p in parts if p.not_]
    if nots:
        if len(parts) > 1:
            raise ValueError(f"{what} {name!r}: 'not' must be the only entry")
        out.negate = known[nots[0]]
    return out
