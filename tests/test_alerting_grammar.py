"""The two YAML grammars of alerting, pinned through their public loaders:
rules.yaml (`collector.alertcore.load_rules`: calendars, matchers, durations, severities) and
notify.yaml (`collector.notify.config`: time windows, route matchers, durations).

Both files share one grammar for matchers, durations and time intervals; the tests marked
"same in both" run every form through both loaders.
"""
from __future__ import annotations

import datetime as dt
import textwrap
from zoneinfo import ZoneInfo

import pytest

from campus_sense.yamlconf import ConfigError
from collector.notify.config import from_dict as notify_from_dict
from collector.alertcore import load_rules, parse_duration, parse_matchers

SH = ZoneInfo("Asia/Shanghai")


def _ms(*a, tz=SH) -> int:
    return int(dt.datetime(*a, tzinfo=tz).timestamp() * 1000)


def rules(tmp_path, text: str):
    p = tmp_path / "rules.yaml"
    p.write_text(textwrap.dedent(text))
    return load_rules(p)


def rules_err(tmp_path, text: str) -> str:
    with pytest.raises(ConfigError) as e:
        rules(tmp_path, text)
    return str(e.value)


def calendar(tmp_path, **spec):
    """A rules.yaml calendar named c -> contains(t_ms)."""
    import json
    rs = rules(tmp_path, f"calendars:\n  c: {json.dumps(spec)}\nrules: []\n")
    return rs.calendars["c"].contains


def window(**spec):
    """A notify.yaml time window (one range) -> contains(t_ms)."""
    cfg = notify_from_dict({"channels": {"h": {"type": "webhook", "url": "http://127.0.0.1:9/x"}},
                            "time_windows": {"w": [spec]}, "route": {"channels": ["h"]}})
    return cfg.windows["w"].contains


def notify_err(**route) -> str:
    with pytest.raises(ConfigError) as e:
        notify_from_dict({"channels": {"h": {"type": "webhook", "url": "http://127.0.0.1:9/x"}},
                          "route": {"channels": ["h"], **route}})
    return str(e.value)


# ------------------------------------------------------------------ durations
def test_rules_durations_are_milliseconds():
    assert parse_duration("15m") == 900_000 and parse_duration("1h30m") == 5_400_000
    assert parse_duration("90s") == 90_000 and parse_duration("500ms") == 500
    assert parse_duration("2d") == 172_800_000 and parse_duration("1w") == 604_800_000
    assert parse_duration(30) == 30_000 and parse_duration(1.5) == 1500 and parse_duration(None) is None
    assert parse_duration("1h 30m") == 5_400_000
    for bad in ("15 minutes", -1, True, "", "m5", "5x"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)


def test_rules_duration_error_names_rule_and_key(tmp_path):
    msg = rules_err(tmp_path, """
        rules:
          - {name: r, kind: threshold, measurement: t, value: 1, for: 15 minutes}
        """)
    assert "rules.yaml:3: rule 'r' (rules[0]): for: invalid duration '15 minutes'" in msg


def test_notify_durations_are_seconds():
    cfg = notify_from_dict({"channels": {"h": {"type": "webhook", "url": "http://127.0.0.1:9/x", "timeout": "500ms"}},
                            "route": {"channels": ["h"], "group_wait": "1h30m", "group_interval": 90,
                                      "repeat_interval": "2d"}})
    assert (cfg.route.group_wait, cfg.route.group_interval, cfg.route.repeat_interval) == (5400, 90, 172800)
    assert cfg.channels["h"].timeout == 0.5
    assert "invalid duration" in notify_err(group_wait="5 minutes")


# ------------------------------------------------------------------ matchers
@pytest.mark.parametrize("spec, labels, hit", [
    ("building=A", {"building": "A"}, True),
    ('building="A"', {"building": "A"}, True),
    ("building!=A", {}, True),                      # a missing label is the empty string
    ("room=~A-1.*", {"room": "A-101"}, True),
    ("room=~A-1", {"room": "A-101"}, False),        # regexes are anchored
    ("building!~B|C", {"building": "A"}, True),
    ("type=", {}, True),
])
def test_matcher_forms_same_in_both(spec, labels, hit):
    assert all(m.matches(labels) for m in parse_matchers(spec)) is hit
    cfg = notify_from_dict({"channels": {"h": {"type": "webhook", "url": "http://127.0.0.1:9/x"}},
                            "route": {"channels": ["h"], "routes": [{"matchers": [spec]}]}})
    assert cfg.route.routes[0].matches(labels) is hit


def test_rules_matcher_shapes():
    assert [str(m) for m in parse_matchers({"device": "sw1", "building": "A"})] == ['device="sw1"', 'building="A"']
    assert [str(m) for m in parse_matchers({"name": "a", "value": "x.*", "isRegex": True})] == ['a=~"x.*"']
    assert [str(m) for m in parse_matchers({"name": "a", "value": "x", "isEqual": False})] == ['a!="x"']
    assert [str(m) for m in parse_matchers({"name": "a", "op": "!~", "value": "x"})] == ['a!~"x"']
    assert [str(m) for m in parse_matchers(["a.b-c=1", "x!=y"])] == ['a.b-c="1"', 'x!="y"']
    assert parse_matchers(None) == []
    for bad in ("no operator", "a=~(", 5):
        with pytest.raises(ValueError):
            parse_matchers(bad if bad != 5 else [5])


def test_matcher_errors_in_files(tmp_path):
    msg = rules_err(tmp_path, """
        inhibit:
          - {source: ["room=~A-("], target: []}
        rules: []
        """)
    assert "inhibit.0.source" in msg and "invalid regex" in msg
    assert "invalid regex" in notify_err(routes=[{"matchers": ["room=~A-("]}])


# ------------------------------------------------------------------ time intervals
def test_rules_calendar_days_hours_dates(tmp_path):
    c = calendar(tmp_path, timezone="Asia/Shanghai", days=["mon", "Tuesday"], hours=["08:00-12:00", "13:00-24:00"])
    assert c(_ms(2026, 11, 23, 8, 0)) and not c(_ms(2026, 11, 23, 12, 0))       # Mon; end exclusive
    assert c(_ms(2026, 11, 24, 23, 59)) and not c(_ms(2026, 11, 25, 9, 0))       # Tue ("Tuesday"); Wed
    d = calendar(tmp_path, timezone="Asia/Shanghai", dates=["2026-11-23", "2026-12-01..2026-12-03"],
                 holidays=["2026-12-02"])
    assert d(_ms(2026, 11, 23, 0, 0)) and not d(_ms(2026, 11, 24, 0, 0))
    assert d(_ms(2026, 12, 3, 23, 0)) and not d(_ms(2026, 12, 2, 12, 0))          # a holiday inside the range
    n = calendar(tmp_path, timezone="Asia/Shanghai", hours=["22:00-06:00"])
    assert n(_ms(2026, 11, 23, 23, 0)) and n(_ms(2026, 11, 24, 5, 59)) and not n(_ms(2026, 11, 24, 6, 0))
    utc = calendar(tmp_path, hours=["00:00-01:00"])                                # default time zone UTC
    assert utc(_ms(2026, 11, 23, 0, 30, tz=dt.timezone.utc))


def test_rules_calendar_references(tmp_path):
    rs = rules(tmp_path, """
        calendars:
          closed: {timezone: UTC, dates: ["2026-11-24"]}
          work: {timezone: UTC, days: [mon, tue], exclude: [closed]}
          free: {not: work}
        rules: []
        """)
    work, free = rs.calendars["work"].contains, rs.calendars["free"].contains
    mon, tue = _ms(2026, 11, 23, 12, tz=dt.timezone.utc), _ms(2026, 11, 24, 12, tz=dt.timezone.utc)
    assert work(mon) and not work(tue) and not free(mon) and free(tue)
    assert "unknown calendar 'nope'" in rules_err(tmp_path, "calendars: {a: {not: nope}}\nrules: []\n")


@pytest.mark.parametrize("spec, words", [
    ({"timezone": "Mars/Olympus"}, "unknown timezone"),
    ({"days": ["fry"]}, "day"),
    ({"hours": ["8-18"]}, "HH:MM"),
    ({"hours": ["25:00-26:00"]}, "time"),
    ({"dates": ["2026-13-01"]}, "YYYY-MM-DD"),
    ({"dates": ["2026-12-03..2026-12-01"]}, "end before start"),
])
def test_rules_calendar_errors(tmp_path, spec, words):
    import json
    msg = rules_err(tmp_path, f"calendars:\n  c: {json.dumps(spec)}\nrules: []\n")
    assert "rules.yaml:2: calendar 'c': " in msg and words in msg, msg


def test_notify_windows():
    office = window(days=["mon-fri"], hours=["08:00-18:00"], timezone="Asia/Shanghai")
    assert office(_ms(2026, 11, 23, 8, 0)) and office(_ms(2026, 11, 27, 17, 59))
    assert not office(_ms(2026, 11, 23, 18, 0)) and not office(_ms(2026, 11, 28, 10, 0))
    assert window(days=["sun-mon"], timezone="UTC")(_ms(2026, 11, 23, 12, tz=dt.timezone.utc))
    night = window(days=["fri"], hours=["22:00-06:00"], timezone="Asia/Shanghai")
    assert night(_ms(2026, 11, 27, 23, 0)) and night(_ms(2026, 11, 28, 5, 59))   # Friday night, into Saturday
    assert not night(_ms(2026, 11, 28, 23, 0))
    assert window(timezone="UTC")(0)                                               # no days/hours: always


@pytest.mark.parametrize("spec, words", [
    ({"timezone": "Mars/Olympus"}, "unknown timezone"),
    ({"days": ["monday-funday"], "timezone": "UTC"}, "day"),
    ({"days": ["mon-tue-wed"], "timezone": "UTC"}, "day"),
    ({"hours": ["8-18"], "timezone": "UTC"}, "time"),
    ({"hours": ["08:00-08:00"], "timezone": "UTC"}, "empty range"),
])
def test_notify_window_errors(spec, words):
    with pytest.raises(ConfigError) as e:
        window(**spec)
    assert "time_windows.w.0" in str(e.value) and words in str(e.value), str(e.value)


# ------------------------------------------------------------------ one grammar in both files
DAY_FORMS = [(["mon-fri"], [0, 1, 2, 3, 4]), (["fri-mon"], [4, 5, 6, 0]), (["sat", "sun"], [5, 6]),
             (["Monday"], [0]), (["tues", "Thursday"], [1, 3]), (["sat-sun", "wed"], [2, 5, 6]), ("mon", [0])]


@pytest.mark.parametrize("days, weekdays", DAY_FORMS)
def test_day_ranges_same_in_both(tmp_path, days, weekdays):
    c = calendar(tmp_path, timezone="Asia/Shanghai", days=days)   # rules.yaml kept only "mon" of "mon-fri"
    w = window(days=days, timezone="Asia/Shanghai")
    for i in range(7):  # 2026-11-23 is a Monday
        t = _ms(2026, 11, 23 + i, 12, 0)
        assert c(t) is (i in weekdays), (days, i)
        assert w(t) is (i in weekdays), (days, i)


def test_wrapping_hours_belong_to_the_day_they_start_in_both(tmp_path):
    c = calendar(tmp_path, timezone="Asia/Shanghai", days=["fri"], hours=["22:00-06:00"])
    w = window(timezone="Asia/Shanghai", days=["fri"], hours=["22:00-06:00"])
    for f in (c, w):
        assert f(_ms(2026, 11, 27, 23, 0)) and f(_ms(2026, 11, 28, 5, 59))
        assert not f(_ms(2026, 11, 27, 5, 0)) and not f(_ms(2026, 11, 28, 23, 0))


@pytest.mark.parametrize("days", [["monkey"], ["mon-tue-wed"], ["mon-"], ["fri-funday"]])
def test_bad_days_rejected_in_both(tmp_path, days):
    assert "unknown day" in rules_err(tmp_path, f"calendars:\n  c: {{days: {days}}}\nrules: []\n")
    with pytest.raises(ConfigError, match="unknown day"):
        window(days=days, timezone="UTC")


def test_dates_holidays_and_month_days_same_in_both(tmp_path):
    spec = dict(timezone="Asia/Shanghai", dates=["2026-11-01..2026-12-31"], holidays=["2026-11-30"],
                days_of_month=["1-7", -1])
    for f in (calendar(tmp_path, **spec), window(**spec)):
        assert f(_ms(2026, 11, 2, 12)) and f(_ms(2026, 12, 31, 12)) and not f(_ms(2026, 11, 8, 12))
        assert not f(_ms(2026, 11, 30, 12))                      # last day of November, but a holiday
        assert not f(_ms(2027, 1, 1, 12))                        # outside the dates
    with pytest.raises(ConfigError, match="day of month"):
        window(days_of_month=[32], timezone="UTC")


def test_empty_hours_rejected_in_both(tmp_path):
    assert "empty range" in rules_err(tmp_path, "calendars:\n  c: {hours: ['08:00-08:00']}\nrules: []\n")
