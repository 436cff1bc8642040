"""Rule files: validation errors name the file, line, rule and key; the shipped example loads."""
import textwrap
from pathlib import Path

import pytest

from campus_sense.yamlconf import ConfigError
from collector.alertcore import RuleSet, load_rules, parse_duration, parse_matchers

REPO = Path(__file__).resolve().parent.parent


def _err(tmp_path, text, name="rules.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip())
    with pytest.raises(ConfigError) as e:
        load_rules(p)
    return str(e.value), str(p)


def test_shipped_campus_default_rules_load():
    rs = load_rules(REPO / "firmware_configs" / "rules" / "campus-default.yaml")
    names = {r.name for r in rs.rules}
    assert {"fridge-warm", "freezer-warm", "hot-holding-danger-zone", "gas-level", "door-forced", "camera-tamper",
            "fire-alarm", "uplink-down", "agent-offline", "projector-stale", "interface-errors"} <= names
    assert set(rs.calendars) >= {"school-day", "after-hours", "holidays"}
    assert rs.staleness.types["projector"].standby.values == ["eco_standby", "standby"]


def test_bad_duration_names_file_line_rule_and_key(tmp_path):
    msg, path = _err(tmp_path, """
        rules:
          - name: ok
            kind: threshold
            measurement: t
            value: 1
          - name: fridge-warm
            kind: threshold
            measurement: temperature
            value: 5
            for: 15 minutes
        """)
    assert msg.startswith(f"{path}:10: rule 'fridge-warm' (rules[1]): for: invalid duration '15 minutes'"), msg


def test_unknown_key_and_missing_field(tmp_path):
    msg, path = _err(tmp_path, """
        rules:
          - name: gas
            kind: threshold
            measurement: gas
            value: 10
            treshold: 3
          - name: door
            kind: event
        """)
    lines = msg.splitlines()
    assert f"{path}:6: rule 'gas' (rules[0]): treshold: Extra inputs are not permitted" in lines
    assert f"{path}:7: rule 'door' (rules[1]): event: Field required" in lines


def test_missing_or_unknown_kind(tmp_path):
    msg, path = _err(tmp_path, """
        rules:
          - name: a
            measurement: x
          - name: b
            kind: threshhold
        """)
    assert f"{path}:2: rule 'a' (rules[0]): kind: Unable to extract tag using discriminator 'kind'" in msg
    assert f"{path}:5: rule 'b' (rules[1]): kind: Input tag 'threshhold' found using 'kind' does not match" in msg


def test_semantic_errors(tmp_path):
    msg, path = _err(tmp_path, """
        calendars:
          school: {timezone: Europe/Berlin, days: [mon]}
        rules:
          - {name: a, kind: threshold, measurement: x, value: 1, schedule: schol}
          - {name: a, kind: threshold, measurement: x, value: 1}
          - name: e
            kind: exposure
            measurement: t
            inside: [5, 60]
            levels: [{at: soon}]
        """)
    assert f"{path}:4: rule 'a' (rules[0]): schedule: unknown calendar 'schol' (defined: school)" in msg
    assert f"{path}:5: rule 'a' (rules[1]): name: duplicate rule name (first defined at {path}:4)" in msg
    assert "rule 'e' (rules[2]): levels: levels[0].at: invalid duration 'soon'" in msg or \
        "rule 'e' (rules[2]): levels:" in msg
    msg, path = _err(tmp_path, """
        rules:
          - {name: h, kind: threshold, measurement: x, value: 5, clear_value: 7}
        """)
    assert f"{path}:2: rule 'h' (rules[0]): (rule): clear_value 7.0 must be <= value 5.0" in msg


def test_calendar_errors(tmp_path):
    msg, path = _err(tmp_path, """
        calendars:
          school: {timezone: Europe/Berln, days: [mon, fry], hours: ["7-17"]}
        rules: []
        """)
    assert f"{path}:2: calendar 'school': timezone: unknown timezone 'Europe/Berln'" in msg
    assert "calendar 'school': days: unknown day 'fry'" in msg
    assert "calendar 'school': hours: hours '7-17': expected HH:MM-HH:MM" in msg
    msg, _ = _err(tmp_path, """
        calendars:
          a: {not: b}
          b: {exclude: [a]}
        rules: []
        """)
    assert "circular reference" in msg


def test_yaml_syntax_error_and_empty_file(tmp_path):
    msg, path = _err(tmp_path, "rules:\n  - name: a\n   kind: x\n")
    assert msg.startswith(f"{path}:3: invalid YAML")
    msg, path = _err(tmp_path, "", name="empty.yaml")
    assert msg == f"{path}: file is empty"


def test_directory_of_rule_files_merges(tmp_path):
    (tmp_path / "a.yaml").write_text("calendars: {day: {hours: ['08:00-16:00']}}\nrules: [{name: x, kind: event, "
                                     "event: e}]\n")
    (tmp_path / "b.yml").write_text("rules: [{name: y, kind: event, event: e, schedule: day}]\n")
    rs = load_rules(tmp_path)
    assert [r.name for r in rs.rules] == ["x", "y"]
    (tmp_path / "c.yaml").write_text("rules: [{name: x, kind: event, event: f}]\n")
    with pytest.raises(ConfigError, match=r"c.yaml:1: rule 'x' \(rules\[0\]\): name: duplicate rule name"):
        load_rules(tmp_path)


def test_durations_and_matchers():
    assert parse_duration("1h30m") == 5_400_000
    assert parse_duration("500ms") == 500
    assert parse_duration(90) == 90_000
    assert parse_duration("2d") == 172_800_000
    for bad in ("15 minutes", "m", "-5m", True, "1x"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    ms = parse_matchers(["building=A", 'rule=~"fridge.*"', "device!=x", "room!~K.*"])
    labels = {"building": "A", "rule": "fridge-warm", "device": "y", "room": "L1"}
    assert all(m.matches(labels) for m in ms)
    assert not parse_matchers("rule=~fridge")[0].matches(labels)  # anchored
    assert [str(m) for m in parse_matchers({"building": "A"})] == ['building="A"']
    with pytest.raises(ValueError):
        parse_matchers(["building"])


def test_ruleset_from_dict():
    rs = RuleSet.from_dict({"rules": [{"name": "x", "kind": "absence"}]})
    assert rs.rules[0].kind == "absence"
    with pytest.raises(ConfigError, match=r"<dict>:\?: rule 'x' \(rules\[0\]\): after"):
        RuleSet.from_dict({"rules": [{"name": "x", "kind": "absence", "after": "later"}]})
