"""Recurring maintenance windows (rules.yaml ``maintenance:``): alerts matching the window's
matchers are muted while its calendar is open — weekly across a DST change (America/New_York),
monthly and exam weeks in DST-free Asia/Shanghai."""
import datetime as dt
import textwrap
from zoneinfo import ZoneInfo

import pytest

from campus_sense.yamlconf import ConfigError
from collector.alertcore import AlertStore, RuleEngine, load_rules

NY, SH = ZoneInfo("America/New_York"), ZoneInfo("Asia/Shanghai")

RULES = """
calendars:
  sunday-night-ny: {timezone: America/New_York, days: [sun], hours: ["01:00-04:00"]}
  first-monday-sh: {timezone: Asia/Shanghai, days: [mon], days_of_month: ["1-7"], hours: ["22:00-02:00"]}
  exam-weeks-sh: {timezone: Asia/Shanghai, dates: ["2026-12-28..2027-01-08"], days: [mon-fri]}
maintenance:
  - {name: ny-patching, matchers: [building=NY], schedule: sunday-night-ny}
  - {name: sh-monthly, matchers: {building: SH}, schedule: first-monday-sh, comment: firmware}
  - {name: exams, matchers: ["type=projector"], schedule: exam-weeks-sh}
rules:
  - {name: down, kind: event, event: down, clear_event: up, severity: critical}
"""


def _ms(*a, tz):
    return int(dt.datetime(*a, tzinfo=tz).timestamp() * 1000)


def _engine(tmp_path, meta):
    p = tmp_path / "rules.yaml"
    p.write_text(textwrap.dedent(RULES))
    clock = {"now": 0}
    eng = RuleEngine(load_rules(p), AlertStore(":memory:"), device_meta=meta.get, clock=lambda: clock["now"])
    return eng, clock


def _fire(eng, clock, d, t):
    clock["now"] = t
    eng.on_events([{"d": d, "type": "down", "t": t}])
    return eng.alerts()[0]


@pytest.mark.parametrize("local, muted", [
    ((2026, 3, 1, 2, 30), True),    # Sunday 02:30 EST
    ((2026, 3, 8, 1, 30), True),    # Sunday 01:30 EST, the night clocks spring forward (02:00 -> 03:00)
    ((2026, 3, 8, 3, 30), True),    # Sunday 03:30 EDT
    ((2026, 3, 8, 4, 30), False),   # Sunday 04:30 EDT
    ((2026, 11, 1, 1, 30), True),   # Sunday, clocks fall back: 01:30 happens twice, both inside
    ((2026, 3, 9, 2, 30), False),   # Monday
])
def test_weekly_window_across_dst(tmp_path, local, muted):
    eng, clock = _engine(tmp_path, {"sw": {"building": "NY"}})
    a = _fire(eng, clock, "sw", _ms(*local, tz=NY))
    assert (a.suppressed == "maintenance:ny-patching") is muted, a.suppressed


def test_dst_change_moves_the_window_in_utc(tmp_path):
    # the same local window is 06:00-09:00Z in winter and 05:00-08:00Z in summer
    eng, clock = _engine(tmp_path, {"sw": {"building": "NY"}})
    a = _fire(eng, clock, "sw", _ms(2026, 3, 15, 8, 30, tz=dt.timezone.utc))      # 04:30 EDT
    assert a.suppressed is None
    eng2, clock2 = _engine(tmp_path, {"sw": {"building": "NY"}})
    a2 = _fire(eng2, clock2, "sw", _ms(2026, 3, 1, 8, 30, tz=dt.timezone.utc))    # 03:30 EST
    assert a2.suppressed == "maintenance:ny-patching"


def test_monthly_window_shanghai_opens_and_closes(tmp_path):
    eng, clock = _engine(tmp_path, {"core": {"building": "SH"}})
    a = _fire(eng, clock, "core", _ms(2026, 12, 7, 23, 0, tz=SH))   # first Monday of December, 23:00
    assert a.suppressed == "maintenance:sh-monthly"
    clock["now"] = _ms(2026, 12, 8, 1, 59, tz=SH)                    # past midnight: still the Monday window
    eng.tick()
    assert eng.alerts()[0].suppressed == "maintenance:sh-monthly"
    clock["now"] = _ms(2026, 12, 8, 2, 0, tz=SH)
    changes = eng.tick()
    assert [c.kind for c in changes] == ["unsuppressed"] and eng.alerts()[0].suppressed is None
    eng2, clock2 = _engine(tmp_path, {"core": {"building": "SH"}})
    assert _fire(eng2, clock2, "core", _ms(2026, 12, 14, 23, 0, tz=SH)).suppressed is None  # second Monday


def test_exam_weeks_mute_only_their_devices(tmp_path):
    eng, clock = _engine(tmp_path, {"p1": {"type": "projector"}, "d1": {"type": "door"}})
    t = _ms(2027, 1, 5, 10, 0, tz=SH)
    clock["now"] = t
    eng.on_events([{"d": "p1", "type": "down", "t": t}, {"d": "d1", "type": "down", "t": t}])
    by = {a.labels["device"]: a.suppressed for a in eng.alerts()}
    assert by == {"p1": "maintenance:exams", "d1": None}
    eng2, clock2 = _engine(tmp_path, {"p1": {"type": "projector"}})
    assert _fire(eng2, clock2, "p1", _ms(2027, 1, 9, 10, 0, tz=SH)).suppressed is None   # Saturday


def test_maintenance_errors(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("maintenance:\n  - {name: m, matchers: [a=b], schedule: nope}\nrules: []\n")
    with pytest.raises(ConfigError, match=r"r.yaml:2: maintenance 'm': schedule: unknown calendar 'nope'"):
        load_rules(p)
    p.write_text("calendars: {c: {days: [mon]}}\nmaintenance:\n  - {name: m, matchers: [], schedule: c}\nrules: []\n")
    with pytest.raises(ConfigError, match="at least one matcher"):
        load_rules(p)
