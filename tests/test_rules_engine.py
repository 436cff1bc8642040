"""Rule types fire and clear at the right (sample) times; deterministic clock."""
import datetime as dt
import textwrap

import pytest

from collector.alertcore import AlertStore, RuleEngine, load_rules

MIN = 60_000
T0 = 1_795_392_000_000  # 2026-11-23T00:00:00Z (a Monday)


class Clock:
    def __init__(self, t=T0):
        self.t = t

    def __call__(self):
        return self.t


def make(tmp_path, text, meta=None, topology=None, db=":memory:"):
    p = tmp_path / "rules.yaml"
    p.write_text(textwrap.dedent(text))
    clock = Clock()
    meta = meta or {}
    eng = RuleEngine(load_rules(p), AlertStore(db), device_meta=meta.get, clock=clock, topology=topology)
    return eng, clock


def s(d, m, minute, tags=None, **f):
    return {"m": m, "d": d, "t": T0 + int(minute * MIN), "tags": tags or {}, "f": f}


def ev(d, typ, minute, tags=None, severity="info", **data):
    return {"d": d, "type": typ, "t": T0 + int(minute * MIN), "severity": severity, "tags": tags or {},
            "data": data}


def mins(changes, kinds=("pending", "firing", "resolved", "cancelled", "severity", "escalated", "flapping")):
    return [(c.kind, c.alert.rule, (c.t_ms - T0) / MIN) for c in changes if c.kind in kinds]


def feed(eng, items, agent=None):
    out = []
    for it in items:
        out += eng.on_samples([it], agent)
    return out


FRIDGE = {"fridge-1": {"type": "fridge", "building": "A", "room": "K1", "site": "north", "agent": "ag-a"}}

THRESHOLD = """
rules:
  - name: fridge-warm
    kind: threshold
    scope: {type: fridge}
    measurement: temperature
    op: ">"
    value: 5
    for: 15m
    clear_for: 5m
    %s
"""


def test_threshold_for_and_clear_for(tmp_path):
    eng, _ = make(tmp_path, THRESHOLD % "", FRIDGE)
    vals = [4.0] * 5 + [7.0] * 25 + [4.8] * 5 + [4.0] * 11
    ch = feed(eng, [s("fridge-1", "temperature", i, value=v) for i, v in enumerate(vals)])
    # pending at the first warm sample, firing exactly 15 min later, resolved after 5 min below the limit
    assert mins(ch) == [("pending", "fridge-warm", 5), ("firing", "fridge-warm", 20),
                        ("resolved", "fridge-warm", 35)]
    (a,) = eng.alerts({"state": "all"})
    assert (a.started_ms, a.fired_ms, a.resolved_ms) == (T0 + 5 * MIN, T0 + 20 * MIN, T0 + 35 * MIN)
    assert a.labels["building"] == "A" and a.labels["device"] == "fridge-1" and a.labels["agent"] == "ag-a"


def test_threshold_hysteresis_separate_clear_value(tmp_path):
    eng, _ = make(tmp_path, THRESHOLD % "clear_value: 4.5", FRIDGE)
    vals = [4.0] * 5 + [7.0] * 25 + [4.8] * 5 + [4.0] * 11
    ch = feed(eng, [s("fridge-1", "temperature", i, value=v) for i, v in enumerate(vals)])
    # 4.8 is below the limit but above the clear value: stays firing until 4.0 held 5 min
    assert mins(ch) == [("pending", "fridge-warm", 5), ("firing", "fridge-warm", 20),
                        ("resolved", "fridge-warm", 40)]


def test_pending_cancelled_when_condition_breaks(tmp_path):
    eng, _ = make(tmp_path, THRESHOLD % "", FRIDGE)
    vals = [7.0] * 10 + [4.0] + [7.0] * 20
    ch = feed(eng, [s("fridge-1", "temperature", i, value=v) for i, v in enumerate(vals)])
    assert mins(ch) == [("pending", "fridge-warm", 0), ("cancelled", "fridge-warm", 10),
                        ("pending", "fridge-warm", 11), ("firing", "fridge-warm", 26)]
    assert len(eng.alerts({"state": "all"})) == 2


def test_for_deadline_fires_between_samples_and_on_tick(tmp_path):
    eng, _ = make(tmp_path, THRESHOLD % "lookback: 1h", FRIDGE)
    ch = feed(eng, [s("fridge-1", "temperature", 0, value=7.0)])
    ch += eng.tick(T0 + 14 * MIN)
    assert mins(ch) == [("pending", "fridge-warm", 0)]
    ch += eng.tick(T0 + 16 * MIN)
    assert mins(ch)[-1] == ("firing", "fridge-warm", 15)  # the deadline, not the tick time


def test_for_deadline_between_samples_held_value(tmp_path):
    eng, _ = make(tmp_path, THRESHOLD % "lookback: 1h", FRIDGE)
    ch = feed(eng, [s("fridge-1", "temperature", 0, value=7.0), s("fridge-1", "temperature", 30, value=3.0)])
    # the warm value held until minute 30: fired at 15, then below the limit from 30, resolved at 35 by tick
    ch += eng.tick(T0 + 40 * MIN)
    assert mins(ch) == [("pending", "fridge-warm", 0), ("firing", "fridge-warm", 15),
                        ("resolved", "fridge-warm", 35)]


def test_gap_longer_than_lookback_restarts_pending(tmp_path):
    eng, _ = make(tmp_path, THRESHOLD % "", FRIDGE)  # lookback 5m default
    ch = feed(eng, [s("fridge-1", "temperature", 0, value=7.0), s("fridge-1", "temperature", 30, value=7.0)])
    ch += feed(eng, [s("fridge-1", "temperature", m, value=7.0) for m in (34, 38, 42, 46)])
    assert mins(ch) == [("pending", "fridge-warm", 0), ("cancelled", "fridge-warm", 5),
                        ("pending", "fridge-warm", 30), ("firing", "fridge-warm", 45)]
    # data stops while pending: the tick cancels it once the last value is older than lookback
    eng2, _ = make(tmp_path, THRESHOLD % "", FRIDGE)
    ch = feed(eng2, [s("fridge-1", "temperature", 0, value=7.0)]) + eng2.tick(T0 + 60 * MIN)
    assert mins(ch) == [("pending", "fridge-warm", 0), ("cancelled", "fridge-warm", 5)]


def test_out_of_order_samples_ignored(tmp_path):
    eng, _ = make(tmp_path, THRESHOLD % "", FRIDGE)
    ch = feed(eng, [s("fridge-1", "temperature", 10, value=4.0), s("fridge-1", "temperature", 5, value=9.0)])
    assert ch == []


def test_scope_by_building_type_and_tags(tmp_path):
    meta = {"f-a": {"type": "fridge", "building": "A", "tags": {"owner": "kitchen"}},
            "f-b": {"type": "fridge", "building": "B", "tags": {"owner": "kitchen"}},
            "f-a2": {"type": "fridge", "building": "A", "tags": {"owner": "lab"}},
            "t-a": {"type": "thermostat", "building": "A", "tags": {"owner": "kitchen"}}}
    eng, _ = make(tmp_path, """
        rules:
          - name: warm
            kind: threshold
            scope: {building: A, type: [fridge, freezer], tags: {owner: kitch*}}
            measurement: temperature
            value: 5
        """, meta)
    ch = feed(eng, [s(d, "temperature", 0, value=9) for d in meta])
    assert [c.alert.labels["device"] for c in ch if c.kind == "firing"] == ["f-a"]


def test_series_tags_make_separate_subjects_and_item_tag_matchers(tmp_path):
    eng, _ = make(tmp_path, """
        rules:
          - name: util
            kind: threshold
            measurement: interface
            field: util_in_pct
            value: 90
            item_tags: ["ifName=~Te.*"]
        """)
    ch = feed(eng, [s("sw1", "interface", 0, {"ifName": "Te1/0/1"}, util_in_pct=95),
                    s("sw1", "interface", 0, {"ifName": "Te1/0/2"}, util_in_pct=95),
                    s("sw1", "interface", 0, {"ifName": "Gi1/0/3"}, util_in_pct=95),
                    s("sw1", "interface", 1, {"ifName": "Te1/0/1"}, util_in_pct=99)])
    fired = [c.alert for c in ch if c.kind == "firing"]
    assert sorted(a.labels["ifName"] for a in fired) == ["Te1/0/1", "Te1/0/2"]
    assert len({a.fingerprint for a in fired}) == 2


def test_string_and_bool_fields(tmp_path):
    eng, _ = make(tmp_path, """
        rules:
          - {name: lamp-error, kind: threshold, measurement: projector, field: power_state, op: "==", value: error}
          - {name: port-down, kind: threshold, measurement: interface, field: oper_up, op: "==", value: false}
        """)
    ch = feed(eng, [s("p1", "projector", 0, power_state="error"), s("sw", "interface", 0, oper_up=False),
                    s("p1", "projector", 1, power_state="on"), s("sw", "interface", 1, oper_up=True)])
    assert mins(ch) == [("firing", "lamp-error", 0), ("firing", "port-down", 0),
                        ("resolved", "lamp-error", 1), ("resolved", "port-down", 1)]


def test_rate_of_change_counter(tmp_path):
    eng, _ = make(tmp_path, """
        rules:
          - name: if-errors
            kind: rate
            measurement: interface
            field: in_errors
            counter: true
            per: 1m
            value: 100
        """)
    vals = [0, 50, 300, 10, 20, 30]  # 50/min, 250/min (fires), reset (skipped), 10/min (clears)
    ch = feed(eng, [s("sw1", "interface", i, {"ifName": "g1"}, in_errors=v) for i, v in enumerate(vals)])
    assert mins(ch) == [("firing", "if-errors", 2), ("resolved", "if-errors", 4)]
    a = eng.alerts({"state": "all"})[0]
    assert a.value == pytest.approx(10.0)


def test_rate_gauge_falling_fast(tmp_path):
    eng, _ = make(tmp_path, """
        rules:
          - {name: temp-drop, kind: rate, measurement: temperature, op: "<", value: -2, per: 1m, for: 2m}
        """)
    vals = [20, 19.5, 17, 14, 11, 10.5, 10.4]
    ch = feed(eng, [s("room", "temperature", i, value=v) for i, v in enumerate(vals)])
    assert mins(ch) == [("pending", "temp-drop", 2), ("firing", "temp-drop", 4), ("resolved", "temp-drop", 5)]


STALE = """
staleness:
  default: 10m
  types:
    projector:
      after: 30m
      standby: {measurement: projector, field: power_state, values: [eco_standby], after: null}
rules:
  - {name: stale, kind: absence, severity: warning}
"""


def test_absence_with_type_defaults_and_eco_standby(tmp_path):
    meta = {"fridge-1": {"type": "fridge"}, "proj-1": {"type": "projector"}, "proj-2": {"type": "projector"}}
    eng, _ = make(tmp_path, STALE, meta)
    ch = feed(eng, [s("fridge-1", "temperature", 0, value=4), s("proj-1", "projector", 0, power_state="on"),
                    s("proj-2", "projector", 0, power_state="eco_standby")])
    # the agent keeps trying: failed polls are no sign of life
    for m in range(1, 200, 5):
        ch += feed(eng, [s(d, "agent_poll", m, ok=False, reason="timeout") for d in meta])
        ch += eng.tick(T0 + m * MIN)
    ch += eng.tick(T0 + 200 * MIN)
    assert mins(ch) == [("firing", "stale", 10), ("firing", "stale", 30)]
    assert [c.alert.labels["device"] for c in ch if c.kind == "firing"] == ["fridge-1", "proj-1"]
    # data comes back: resolved at that sample's time
    ch = feed(eng, [s("fridge-1", "agent_poll", 201, ok=True), s("proj-1", "projector", 202, power_state="on")])
    assert mins(ch) == [("resolved", "stale", 201), ("resolved", "stale", 202)]


def test_absence_of_one_measurement_and_explicit_after(tmp_path):
    eng, _ = make(tmp_path, """
        rules:
          - {name: no-temp, kind: absence, measurement: temperature, after: 3m}
        """)
    ch = feed(eng, [s("d1", "temperature", 0, value=1)])
    ch += feed(eng, [s("d1", "humidity", m, value=50) for m in range(1, 6)])
    ch += eng.tick(T0 + 6 * MIN)
    assert mins(ch) == [("firing", "no-temp", 3)]


def test_agent_offline_death_and_silence(tmp_path):
    eng, _ = make(tmp_path, """
        rules:
          - {name: agent-offline, kind: agent_offline, after: 5m, severity: critical}
        """)
    ch = feed(eng, [s("dev1", "temperature", 0, value=1)], agent="ag1")
    ch += feed(eng, [s("dev2", "temperature", 0, value=1)], agent="ag2")
    ch += eng.on_agent_state("ag1", False, T0 + 2 * MIN)
    ch += eng.on_agent_state("ag2", True, T0 + 3 * MIN)  # heartbeat
    ch += eng.tick(T0 + 6 * MIN)
    assert mins(ch) == []
    ch += eng.tick(T0 + 8 * MIN)
    assert mins(ch) == [("firing", "agent-offline", 7), ("firing", "agent-offline", 8)]
    ch = eng.on_agent_state("ag1", True, T0 + 9 * MIN)
    ch += feed(eng, [s("dev2", "temperature", 10, value=1)], agent="ag2")
    assert mins(ch) == [("resolved", "agent-offline", 9), ("resolved", "agent-offline", 10)]
    assert {a.labels["agent"] for a in eng.alerts({"state": "all"})} == {"ag1", "ag2"}


EVENTS = """
rules:
  - {name: door-forced, kind: event, event: door_forced, clear_event: door_closed, severity: critical}
  - {name: tamper, kind: event, event: [camera_tamper, video_loss], clear_after: 30m}
  - name: link-down
    kind: event
    event: link_down
    clear_event: link_up
    by: [ifName]
    item_tags: {role: uplink}
    severity: from_event
  - {name: badge, kind: event, event: access, data: {result: denied, reader: "~R-1.*"}}
"""


def test_event_rules(tmp_path):
    eng, _ = make(tmp_path, EVENTS)
    ch = eng.on_events([ev("door-1", "door_forced", 0), ev("door-1", "door_forced", 1)])
    ch += eng.on_events([ev("door-1", "door_closed", 3)])
    assert mins(ch) == [("firing", "door-forced", 0), ("resolved", "door-forced", 3)]
    a = eng.alerts({"state": "all", "rule": "door-forced"})[0]
    assert (a.count, a.severity) == (2, "critical")

    ch = eng.on_events([ev("cam-1", "camera_tamper", 0), ev("cam-1", "video_loss", 10)])
    ch += eng.tick(T0 + 39 * MIN)
    assert mins(ch) == [("firing", "tamper", 0)]
    ch += eng.tick(T0 + 45 * MIN)
    assert mins(ch)[-1] == ("resolved", "tamper", 40)  # 30 min after the last tamper event

    ch = eng.on_events([ev("sw1", "link_down", 0, {"ifName": "Te1", "role": "uplink"}, severity="critical"),
                        ev("sw1", "link_down", 0, {"ifName": "Te2", "role": "uplink"}, severity="warning"),
                        ev("sw1", "link_down", 0, {"ifName": "Gi5", "role": "access"}),
                        ev("sw1", "link_up", 2, {"ifName": "Te1", "role": "uplink"})])
    assert mins(ch) == [("firing", "link-down", 0), ("firing", "link-down", 0), ("resolved", "link-down", 2)]
    firing = eng.alerts({"rule": "link-down"})
    assert [(a.labels["ifName"], a.severity) for a in firing] == [("Te2", "warning")]

    ch = eng.on_events([ev("r", "access", 0, result="ok", reader="R-1a"), ev("r", "access", 0, result="denied",
                                                                                reader="R-2"),
                        ev("r", "access", 1, result="denied", reader="R-17")])
    assert mins(ch) == [("firing", "badge", 1)]


EXPOSURE = """
rules:
  - name: hot-holding
    kind: exposure
    measurement: temperature
    inside: [5, 60]
    levels: [{at: 2h, severity: warning}, {at: 4h, severity: critical}]
    reset_after: 30m
  - name: vaccine
    kind: exposure
    measurement: vaccine_temp
    outside: [2, 8]
    mode: degree_minutes
    levels: [{at: 60, severity: warning}]
"""


def test_exposure_time_in_zone_levels_and_reset(tmp_path):
    eng, _ = make(tmp_path, EXPOSURE)
    temps = {m: 70 for m in range(0, 30, 10)}
    temps.update({m: 50 for m in range(30, 310, 10)})   # in the danger zone from minute 30
    temps.update({m: 80 for m in range(310, 400, 10)})  # hot again from 310
    ch = feed(eng, [s("bain-marie", "temperature", m, value=v) for m, v in sorted(temps.items())])
    assert mins(ch) == [("firing", "hot-holding", 150), ("severity", "hot-holding", 270),
                        ("resolved", "hot-holding", 340)]
    a = eng.alerts({"state": "all"})[0]
    assert a.severity == "critical" and a.resolved_ms == T0 + 340 * MIN


def test_exposure_degree_minutes(tmp_path):
    eng, _ = make(tmp_path, EXPOSURE)
    ch = feed(eng, [s("fridge-v", "vaccine_temp", m, value=10.0) for m in range(0, 40)])
    assert mins(ch) == [("firing", "vaccine", 30)]  # 2 degrees over x 30 min = 60 degree-minutes
    assert ch[0].alert.value == 60


def test_exposure_gap_is_capped(tmp_path):
    eng, _ = make(tmp_path, EXPOSURE.replace("reset_after: 30m", "reset_after: 30m\n    max_gap: 10m"))
    # a 3 h hole in the data counts as at most 10 min in the zone
    ch = feed(eng, [s("bm", "temperature", 0, value=50), s("bm", "temperature", 180, value=50)]
              + [s("bm", "temperature", m, value=50) for m in range(190, 320, 10)])
    assert mins(ch) == [("firing", "hot-holding", 290)]


CAL = """
calendars:
  holidays: {timezone: Europe/Berlin, dates: ["2026-12-21..2027-01-06", 2026-10-03]}
  school-day: {timezone: Europe/Berlin, days: [mon, tue, wed, thu, fri], hours: ["07:00-17:00"], exclude: [holidays]}
  after-hours: {timezone: Europe/Berlin, not: school-day}
  night: {timezone: Europe/Berlin, hours: ["22:00-06:00"]}
rules:
  - {name: door-after-hours, kind: event, event: door_open, schedule: after-hours, clear_after: 1m}
  - {name: warm-at-school, kind: threshold, measurement: temperature, value: 26, schedule: school-day}
"""


def _utc(s):
    return int(dt.datetime.fromisoformat(s).replace(tzinfo=dt.timezone.utc).timestamp() * 1000)


def test_schedules_timezone_weekend_holiday_dst(tmp_path):
    rs = load_rules(_write(tmp_path, CAL))
    school, after, night = rs.calendars["school-day"], rs.calendars["after-hours"], rs.calendars["night"]
    assert school.contains(_utc("2026-11-24T09:00:00"))          # Tue 10:00 CET
    assert not school.contains(_utc("2026-11-24T16:30:00"))      # Tue 17:30 CET
    assert not school.contains(_utc("2026-11-28T09:00:00"))      # Saturday
    assert not school.contains(_utc("2026-12-22T09:00:00"))      # winter break
    assert not school.contains(_utc("2026-10-03T09:00:00"))      # holiday (a Saturday anyway)
    assert school.contains(_utc("2026-03-30T05:30:00"))          # Mon 07:30 CEST (after the DST change)
    assert not school.contains(_utc("2026-03-27T05:30:00"))      # Fri 06:30 CET
    assert after.contains(_utc("2026-11-24T19:00:00")) and not after.contains(_utc("2026-11-24T09:00:00"))
    assert night.contains(_utc("2026-11-24T22:00:00")) and night.contains(_utc("2026-11-24T04:00:00"))
    assert not night.contains(_utc("2026-11-24T12:00:00"))


def test_rules_apply_only_in_their_window(tmp_path):
    eng, _ = make(tmp_path, CAL)
    day, evening = _utc("2026-11-24T09:00:00"), _utc("2026-11-24T19:00:00")
    ch = eng.on_events([{"d": "door-1", "type": "door_open", "t": day}])
    ch += eng.on_events([{"d": "door-1", "type": "door_open", "t": evening}])
    assert [(c.kind, c.t_ms) for c in ch if c.kind == "firing"] == [("firing", evening)]
    ch = eng.on_samples([{"m": "temperature", "d": "r1", "t": evening, "f": {"value": 30}}])
    ch += eng.on_samples([{"m": "temperature", "d": "r1", "t": day + 86_400_000, "f": {"value": 30}}])
    assert [(c.kind, c.t_ms) for c in ch if c.kind == "firing"] == [("firing", day + 86_400_000)]


def _write(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def test_listeners_get_changes_and_a_broken_listener_does_not_stop_the_engine(tmp_path):
    eng, _ = make(tmp_path, THRESHOLD % "", FRIDGE)
    got = []

    def broken(c):
        raise RuntimeError("boom")

    eng.listeners += [broken, got.append]
    feed(eng, [s("fridge-1", "temperature", i, value=9) for i in range(17)])
    assert [c.kind for c in got] == ["pending", "firing"]
    assert got[1].alert.state == "firing" and got[1].to_dict()["alert"]["rule"] == "fridge-warm"


def test_unrelated_measurements_and_bad_items_are_cheap_and_harmless(tmp_path):
    eng, _ = make(tmp_path, THRESHOLD % "", FRIDGE)
    ch = eng.on_samples([{"m": "humidity", "d": "x", "t": T0, "f": {"value": 1}}, {"bogus": 1}, "junk",
                         {"m": "temperature", "d": "fridge-1", "t": "soon", "f": {"value": 9}},
                         {"m": "temperature", "d": "fridge-1", "t": T0, "f": {"value": "n/a"}}])
    assert ch == [] and eng.bad_items == 3


def test_port_role_from_device_meta_for_item_matchers(tmp_path):
    meta = {"sw1": {"type": "switch", "ports": {"Te1/0/1": "uplink", "Gi1/0/5": {"role": "desk"}}}}
    eng, _ = make(tmp_path, EVENTS, meta)
    ch = eng.on_events([ev("sw1", "link_down", 0, {"ifName": "Te1/0/1"}), ev("sw1", "link_down", 0,
                                                                                 {"ifName": "Gi1/0/5"})])
    assert [(c.kind, c.alert.labels["ifName"]) for c in ch] == [("firing", "Te1/0/1")]


def test_tables_give_the_same_alerts_as_samples(tmp_path):
    """Agents send a poll's samples of one device as a table (wire.table); the engine reads every
    row of a table a rule needs, and one row (a sign of life) of any other."""
    from campus_sense import wire
    polls = [[s("fridge-1", "temperature", minute, {"probe": str(p)}, value=v)
              for p, v in enumerate((3.0, 9.0 if minute >= 5 else 4.0, 4.5))] for minute in range(0, 40, 5)]
    got = {}
    for mode in ("samples", "tables"):
        eng, clock = make(tmp_path, THRESHOLD % "", FRIDGE)
        out = []
        for poll in polls:
            clock.t = poll[0]["t"]
            items = poll if mode == "samples" else eng.samples_of(wire.tabulate(poll))
            out += eng.on_samples(items, "ag-a")
        got[mode] = mins(out)
    assert got["tables"] == got["samples"] and ("firing", "fridge-warm", 20.0) in got["samples"]
    eng, _ = make(tmp_path, THRESHOLD % "", FRIDGE)
    other = wire.tabulate([s("fridge-1", "door", 1, {"n": str(i)}, open=i) for i in range(4)])
    assert eng.samples_of(other) == [s("fridge-1", "door", 1, {"n": "0"}, open=0)]
    assert len(eng.samples_of(wire.tabulate(polls[0]))) == 3
