"""Maintenance windows made through the API (persisted in the alert store, ``alert_maintenance``),
with the same schedule grammar as rules.yaml ``maintenance:``: ``schedule`` is the name of a
rules.yaml calendar, or an inline calendar (one mapping or a list of mappings of the
``timeinterval.py`` grammar, which may ``exclude`` / ``not`` rules.yaml calendars by name).

``collect: false`` ("without data collection"): agents may stop polling the matching devices, so
data gaps inside the window are expected: absence and agent_offline alerts matching the window
are not raised while it is open, and their staleness counts from the window's end.
"""
from __future__ import annotations

from typing import Any, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .config import Maintenance, MaintenanceWindow
from .model import AlertError
from .timeinterval import Interval, TimeInterval, compile_one

Schedule = Union[str, TimeInterval, list[TimeInterval]]
_SCHEDULE = TypeAdapter(Schedule)

#: alert kinds whose alerts a collect: false window keeps from being raised
GAP_KINDS = frozenset({"absence", "agent_offline"})


class MaintenanceSpec(BaseModel):
    """Body of ``POST /api/v1/maintenance``."""
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")
    matchers: list[str] | dict[str, str] = Field(max_length=100)
    schedule: Schedule = Field(description="a rules.yaml calendar name or an inline calendar (mapping or list)")
    collect: bool = True
    comment: str = Field("", max_length=10_000)


def compile_schedule(name: str, schedule: Any, calendars: dict[str, Interval]) -> Interval:
    """The Interval of ``schedule`` (calendar name or inline calendar); raises AlertError naming the problem."""
    if isinstance(schedule, str):
        if schedule not in calendars:
            raise AlertError(f"maintenance {name!r}: schedule: unknown calendar {schedule!r} "
                             f"(defined: {', '.join(sorted(calendars)) or 'none'})")
        return calendars[schedule]
    try:
        spec = _SCHEDULE.validate_python(schedule)
    except ValidationError as e:
        raise AlertError(f"maintenance {name!r}: schedule: {e.errors()[0]['msg']}") from None
    try:
        return compile_one(f"maintenance:{name}", spec, calendars)
    except ValueError as e:
        raise AlertError(f"maintenance {name!r}: schedule: {e}") from None


def schedule_json(schedule: Any) -> Any:
    """The schedule as stored / listed (inline calendars as plain mappings)."""
    if isinstance(schedule, TimeInterval):
        return schedule.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    if isinstance(schedule, list):
        return [schedule_json(x) for x in schedule]
    return schedule


def window(row: dict, calendars: dict[str, Interval]) -> MaintenanceWindow:
    """A stored (API-made) window compiled against the current rules.yaml calendars."""
    m = Maintenance(name=row["name"], matchers=row["matchers"], schedule="-", comment=row.get("comment") or "",
                    collect=row.get("collect", True))
    cal = compile_schedule(row["name"], row["schedule"], calendars)
    return MaintenanceWindow(m, cal, source="api", schedule=row["schedule"], created_by=row.get("created_by"),
                             created_ms=row.get("created_ms"))


def check_matchers(name: str, matchers: Any) -> list[str]:
    """The matchers as strings; a window needs at least one (AlertError otherwise)."""
    try:
        m = Maintenance(name=name, matchers=matchers, schedule="-")
    except ValidationError as e:
        raise AlertError(f"maintenance {name!r}: {e.errors()[0]['msg']}") from None
    from .labels import parse_matchers
    return [str(x) for x in parse_matchers(m.matchers)]
