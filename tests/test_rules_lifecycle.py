"""Alert lifecycle: flap damping, escalation, silences, inhibition, human actions and audit history,
no duplicates after a restart or under concurrency, CSV export."""
import csv
import io
import itertools
import textwrap
import threading
from pathlib import Path

import pytest

from collector.alertcore import AlertError, AlertStore, RuleEngine, export_alerts_csv, export_history_csv, load_rules
from tests.pg_fixture import pg_server, store_target  # noqa: F401 - every test on SQLite and PostgreSQL

MIN = 60_000
T0 = 1_795_392_000_000  # 2026-11-23T00:00:00Z (a Monday)


class Clock:
    def __init__(self, t=T0):
        self.t = t

    def __call__(self):
        return self.t

    def at(self, minute):
        self.t = T0 + int(minute * MIN)
        return self.t


_BACKEND: dict = {}
_fresh = itertools.count()


@pytest.fixture(autouse=True)
def backend(store_target):
    _BACKEND["new"] = store_target
    yield store_target
    _BACKEND.clear()


def target(db):
    """The test's backend: ":memory:" -> a fresh database, a file path -> the database of that name
    (the same one again after a "restart")."""
    new = _BACKEND["new"]
    if new.kind == "sqlite":
        return db
    return new(f"mem{next(_fresh)}" if db == ":memory:" else Path(db).stem)


def make(tmp_path, text, meta=None, topology=None, db=":memory:", clock=None):
    p = tmp_path / "rules.yaml"
    p.write_text(textwrap.dedent(text))
    clock = clock or Clock()
    meta = meta or {}
    store = db if isinstance(db, AlertStore) else AlertStore(target(db))
    eng = RuleEngine(load_rules(p), store, device_meta=meta.get, clock=clock, topology=topology)
    return eng, clock


def s(d, minute, m="temperature", **f):
    return {"m": m, "d": d, "t": T0 + int(minute * MIN), "tags": {}, "f": f or {"value": 0}}


def ev(d, typ, minute, **tags):
    return {"d": d, "type": typ, "t": T0 + int(minute * MIN), "severity": "info", "tags": tags, "data": {}}


def mins(changes, kinds=None):
    return [(c.kind, c.alert.rule, (c.t_ms - T0) / MIN) for c in changes if kinds is None or c.kind in kinds]


def feed(eng, items, agent=None):
    out = []
    for it in items:
        out += eng.on_samples([it], agent)
    return out


WARM = """
defaults: {escalate_after: 30m}
rules:
  - name: warm
    kind: threshold
    measurement: temperature
    value: 5
    %s
"""


# ------------------------------------------------------------------ flap damping
def test_flapping_alert_stays_firing_instead_of_spamming(tmp_path):
    eng, _ = make(tmp_path, WARM % "flap: {max_flips: 3, window: 1h}")
    vals = [7, 3] * 5 + [3] * 80
    ch = feed(eng, [s("d1", i, value=v) for i, v in enumerate(vals)])
    assert mins(ch, ("firing", "resolved", "flapping")) == [
        ("firing", "warm", 0), ("resolved", "warm", 1), ("firing", "warm", 2),
        ("flapping", "warm", 3),  # 4th flip within the window: stays firing, marked flapping
        ("resolved", "warm", 69)]  # resolved once clear for the whole window (since the last high at 8)
    alerts = eng.alerts({"state": "all"})
    assert len(alerts) == 2 and alerts[0].flapping is True
    assert [h.action for h in eng.history(alerts[0].id)] == ["firing", "flapping", "resolved"]


# ------------------------------------------------------------------ escalation and acks
def test_unacknowledged_warning_escalates_to_critical(tmp_path):
    eng, clock = make(tmp_path, WARM % "")
    feed(eng, [s("d1", 0, value=9), s("d2", 0, value=9)])
    a1, a2 = sorted(eng.alerts(), key=lambda a: a.labels["device"])
    clock.at(10)
    eng.ack(a2.id, "alice", "looking", expires_ms=T0 + 20 * MIN)
    assert mins(eng.tick(T0 + 19 * MIN)) == []
    ch = eng.tick(T0 + 31 * MIN)
    # d1: escalated at exactly 30 min; d2's ack lapsed at 20 and restarted its escalation timer
    assert sorted(mins(ch), key=lambda x: x[2]) == [("ack_expired", "warm", 20), ("escalated", "warm", 30)]
    assert eng.alert(a1.id).severity == "critical" and eng.alert(a2.id).severity == "warning"
    ch = eng.tick(T0 + 50 * MIN)
    assert mins(ch) == [("escalated", "warm", 50)]
    assert [h.action for h in eng.history(a2.id)] == ["firing", "acked", "ack_expired", "escalated"]


def test_acknowledged_alert_does_not_escalate(tmp_path):
    eng, clock = make(tmp_path, WARM % "escalate_after: 10m")
    feed(eng, [s("d1", 0, value=9)])
    (a,) = eng.alerts()
    clock.at(5)
    eng.ack(a.id, "bob")
    assert mins(eng.tick(T0 + 120 * MIN)) == []
    assert eng.alert(a.id).severity == "warning"


# ------------------------------------------------------------------ human actions, audit history
def test_ack_assign_comment_audit_history_and_csv(tmp_path):
    eng, clock = make(tmp_path, WARM % "")
    feed(eng, [s("d1", 0, value=9)])
    (a,) = eng.alerts()
    clock.at(1)
    eng.ack(a.id, "alice", "on my way", expires_ms=T0 + 60 * MIN)
    clock.at(2)
    eng.assign(a.id, "alice", "bob", "bob has the key")
    clock.at(3)
    eng.comment(a.id, "bob", "compressor iced up")
    feed(eng, [s("d1", 4, value=3)])
    clock.at(5)
    eng.comment(a.id, "bob", "defrosted")  # comments on resolved alerts are fine
    with pytest.raises(AlertError, match="resolved"):
        eng.ack(a.id, "carol")
    with pytest.raises(AlertError, match="user"):
        eng.comment(a.id, "", "x")
    with pytest.raises(AlertError, match="does not exist"):
        eng.ack(999, "carol")
    hist = eng.history(a.id)
    assert [(h.action, h.actor, (h.t_ms - T0) // MIN) for h in hist] == [
        ("firing", None, 0), ("acked", "alice", 1), ("assigned", "alice", 2), ("commented", "bob", 3),
        ("resolved", None, 4), ("commented", "bob", 5)]
    assert hist[1].detail == {"comment": "on my way", "expires_ms": T0 + 60 * MIN}
    a = eng.alert(a.id)
    assert (a.acked_by, a.assignee, a.state) == ("alice", "bob", "resolved")

    buf = io.StringIO()
    assert export_history_csv(eng.store, buf) == 6
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert [r["action"] for r in rows] == ["firing", "acked", "assigned", "commented", "resolved", "commented"]
    assert rows[3]["actor"] == "bob" and "compressor" in rows[3]["detail"] and rows[0]["rule"] == "warm"
    buf = io.StringIO()
    assert export_alerts_csv(eng.store, buf) == 1
    row = next(csv.DictReader(io.StringIO(buf.getvalue())))
    assert (row["rule"], row["state"], row["device"], row["acked_by"], row["assignee"]) == \
        ("warm", "resolved", "d1", "alice", "bob")


def test_manual_resolve_for_event_alert_without_clear(tmp_path):
    eng, clock = make(tmp_path, "rules: [{name: tamper, kind: event, event: tamper}]")
    eng.on_events([ev("cam", "tamper", 0)])
    (a,) = eng.alerts()
    clock.at(3)
    eng.resolve(a.id, "guard", "lens cleaned")
    assert eng.alerts() == [] and eng.alert(a.id).resolved_ms == T0 + 3 * MIN
    ch = eng.on_events([ev("cam", "tamper", 4)])
    assert mins(ch) == [("firing", "tamper", 4)] and ch[0].alert.id != a.id


# ------------------------------------------------------------------ silences
def test_silences_match_labels_and_expire(tmp_path):
    meta = {"fa": {"building": "A", "type": "fridge"}, "fb": {"building": "B", "type": "fridge"}}
    eng, clock = make(tmp_path, WARM % "", meta)
    sil = eng.silence_create(["building=A", "rule=~wa.*"], "alice", "defrost", duration_ms=30 * MIN)
    maint = eng.silence_create({"device": "fb"}, "bob", "maintenance window", starts_ms=T0 + 60 * MIN,
                               ends_ms=T0 + 90 * MIN)
    ch = feed(eng, [s("fa", 5, value=9), s("fb", 5, value=9)])
    fa, fb = (eng.alerts({"device": d})[0] for d in ("fa", "fb"))
    assert fa.suppressed == f"silence:{sil.id}" and fb.suppressed is None
    assert [c.kind for c in ch if c.alert.id == fa.id] == ["firing", "suppressed"]
    assert [x.id for x in eng.silence_list(active_only=True)] == [sil.id]
    ch = eng.tick(T0 + 30 * MIN)  # the silence ends
    assert mins(ch) == [("unsuppressed", "warm", 30)]
    ch = eng.tick(T0 + 60 * MIN)  # the maintenance window starts
    # fb escalated (30 min unacknowledged); fa's escalation timer restarted when its silence ended
    assert [(c.kind, c.alert.labels["device"], (c.t_ms - T0) // MIN) for c in ch] == [
        ("escalated", "fa", 60), ("escalated", "fb", 35), ("suppressed", "fb", 60)]
    clock.at(70)
    eng.silence_expire(maint.id, "bob")
    assert eng.alert(fb.id).suppressed is None
    with pytest.raises(AlertError, match="already expired"):
        eng.silence_expire(maint.id, "bob")
    with pytest.raises(AlertError):
        eng.silence_create([], "bob", duration_ms=MIN)
    with pytest.raises(ValueError):
        eng.silence_create(["building=~("], "bob", duration_ms=MIN)
    assert [h.action for h in eng.history(fb.id)] == ["firing", "escalated", "suppressed", "unsuppressed"]
    assert eng.history(fb.id)[-1].actor == "bob"


def test_silenced_alert_does_not_escalate(tmp_path):
    eng, clock = make(tmp_path, WARM % "")
    eng.silence_create(["device=d1"], "alice", duration_ms=600 * MIN)
    feed(eng, [s("d1", 0, value=9)])
    assert mins(eng.tick(T0 + 120 * MIN), ("escalated",)) == []


# ------------------------------------------------------------------ inhibition
INHIBIT = """
staleness: {default: 10m}
inhibit:
  - name: fire-over-doors
    source: ["rule=fire-alarm"]
    target: ["rule=door-forced"]
    equal: [building]
  - name: switch-down
    source: ["rule=switch-offline"]
    target: []
    topology: true
rules:
  - {name: agent-offline, kind: agent_offline, after: 5m, severity: critical}
  - {name: warm, kind: threshold, measurement: temperature, value: 5}
  - {name: stale, kind: absence, scope: {type: [camera, fridge]}}
  - {name: switch-offline, kind: absence, scope: {type: switch}, after: 3m, severity: critical}
  - {name: door-forced, kind: event, event: door_forced, clear_event: door_closed, severity: critical}
  - {name: fire-alarm, kind: event, event: fire_alarm, clear_event: fire_alarm_reset, severity: critical}
"""


def test_agent_offline_suppresses_its_devices(tmp_path):
    meta = {"f1": {"type": "fridge", "agent": "ag-a"}, "f2": {"type": "fridge", "agent": "ag-b"}}
    eng, _ = make(tmp_path, INHIBIT, meta)
    feed(eng, [s("f1", 0, value=9)], agent="ag-a")
    feed(eng, [s("f2", 0, value=1)], agent="ag-b")
    ch = eng.on_agent_state("ag-a", False, T0 + 1 * MIN)
    warm = eng.alerts({"rule": "warm"})[0]
    assert warm.suppressed == "inhibited:agent ag-a offline" and mins(ch) == [("suppressed", "warm", 1)]
    eng.on_agent_state("ag-b", False, T0 + 2 * MIN)
    ch = eng.tick(T0 + 15 * MIN)
    assert sorted(mins(ch, ("firing",))) == [("firing", "agent-offline", 6), ("firing", "agent-offline", 7),
                                             ("firing", "stale", 10), ("firing", "stale", 10)]
    stale = {a.labels["device"]: a for a in eng.alerts({"rule": "stale"})}
    assert stale["f1"].suppressed and stale["f2"].suppressed == "inhibited:agent ag-b offline"
    assert all(a.suppressed is None for a in eng.alerts({"rule": "agent-offline"}))
    # the agent comes back with data: its alert resolves, the device alerts are no longer suppressed
    ch = eng.on_agent_state("ag-b", True, T0 + 16 * MIN)
    assert eng.alerts({"device": "f2"}) == [] or eng.alerts({"device": "f2"})[0].suppressed is None
    assert ("resolved", "agent-offline", 16) in mins(ch)


def test_switch_down_suppresses_devices_behind_it(tmp_path):
    meta = {"core": {"type": "switch"}, "access": {"type": "switch"}, "cam1": {"type": "camera"},
            "cam2": {"type": "camera"}}
    topo = {"cam1": "access", "access": "core", "cam2": "other-switch"}
    eng, _ = make(tmp_path, INHIBIT, meta, topology=topo)
    feed(eng, [s(d, 0, m="system", uptime_s=1) for d in meta])
    feed(eng, [s("access", m, m="system", uptime_s=1) for m in range(1, 12)])
    ch = eng.tick(T0 + 12 * MIN)
    assert sorted((c.alert.labels["device"], c.alert.rule) for c in ch if c.kind == "firing") == [
        ("cam1", "stale"), ("cam2", "stale"), ("core", "switch-offline")]
    by_dev = {a.labels["device"]: a for a in eng.alerts()}
    assert by_dev["cam1"].suppressed.startswith("inhibited:switch-down by alert")  # two hops behind core
    assert "core" in by_dev["cam1"].suppressed
    assert by_dev["cam2"].suppressed is None and by_dev["core"].suppressed is None
    ch = feed(eng, [s("core", 13, m="system", uptime_s=5)])
    assert ("unsuppressed", "stale", 13) in mins(ch)


def test_fire_alarm_suppresses_door_forced_in_same_building(tmp_path):
    meta = {"fire-A": {"building": "A"}, "door-A1": {"building": "A"}, "door-B1": {"building": "B"}}
    eng, _ = make(tmp_path, INHIBIT, meta)
    ch = eng.on_events([ev("fire-A", "fire_alarm", 0)])
    assert [(c.kind, c.alert.severity) for c in ch] == [("firing", "critical")]
    ch = eng.on_events([ev("door-A1", "door_forced", 1), ev("door-B1", "door_forced", 1)])
    doors = {a.labels["device"]: a for a in eng.alerts({"rule": "door-forced"})}
    assert doors["door-A1"].suppressed.startswith("inhibited:fire-over-doors")
    assert doors["door-B1"].suppressed is None
    ch = eng.on_events([ev("fire-A", "fire_alarm_reset", 9)])
    assert mins(ch) == [("resolved", "fire-alarm", 9), ("unsuppressed", "door-forced", 9)]


# ------------------------------------------------------------------ restart and concurrency
def test_no_duplicate_alert_after_restart(tmp_path):
    db = str(tmp_path / "alerts.db")
    text = WARM % "for: 5m"
    eng, _ = make(tmp_path, text, db=db)
    feed(eng, [s("d1", m, value=9) for m in range(0, 7)] + [s("d2", 0, value=9)])
    (a1,) = eng.alerts({"state": "firing"})
    (p2,) = eng.alerts({"state": "pending"})
    eng.store.close()

    eng2, _ = make(tmp_path, text, db=db)  # collector restarted
    ch = feed(eng2, [s("d1", m, value=9) for m in range(7, 12)] + [s("d2", m, value=9) for m in range(1, 7)])
    assert mins(ch) == [("firing", "warm", 5)]  # the restored pending alert of d2 fires on schedule
    assert ch[0].alert.id == p2.id
    assert len(eng2.alerts({"state": "all"})) == 2
    ch = feed(eng2, [s("d1", 12, value=1)])
    assert [(c.kind, c.alert.id) for c in ch] == [("resolved", a1.id)]
    con = eng2.store._db
    assert con.execute("SELECT count(*) FROM alerts").fetchone()[0] == 2
    with pytest.raises(con.IntegrityError):  # the database itself refuses a second active alert
        con.execute("INSERT INTO alerts(fingerprint, rule, kind, subject, state, severity, labels, started_ms,"
                    " updated_ms) SELECT fingerprint, rule, kind, subject, 'firing', severity, labels, 0, 0 "
                    "FROM alerts WHERE state != 'resolved'")


def test_restart_resolves_alerts_of_removed_rules(tmp_path):
    db = str(tmp_path / "alerts.db")
    eng, _ = make(tmp_path, WARM % "", db=db)
    feed(eng, [s("d1", 0, value=9)])
    eng.store.close()
    eng2, _ = make(tmp_path, "rules: [{name: other, kind: threshold, measurement: x, value: 1}]", db=db)
    (a,) = eng2.alerts({"state": "all"})
    assert a.state == "resolved" and eng2.history(a.id)[-1].action == "rule_removed"


def test_concurrent_on_samples_do_not_duplicate(tmp_path):
    eng, _ = make(tmp_path, WARM % "", db=str(tmp_path / "c.db"))
    got = []
    eng.listeners.append(got.append)
    barrier = threading.Barrier(8)

    def worker(k):
        barrier.wait()
        for i in range(200):
            eng.on_samples([s(f"d{i % 5}", i, value=9), s(f"d{i % 5}", i, value=9)], agent="ag")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    alerts = eng.alerts({"state": "all"})
    assert len(alerts) == 5 and len({a.fingerprint for a in alerts}) == 5
    assert sorted(c.alert.labels["device"] for c in got if c.kind == "firing") == [f"d{i}" for i in range(5)]


def test_two_engines_on_one_database_share_alerts(tmp_path):
    db = str(tmp_path / "shared.db")
    e1, _ = make(tmp_path, WARM % "", db=db)
    e2, _ = make(tmp_path, WARM % "", db=db)
    barrier = threading.Barrier(2)

    def run(e):
        barrier.wait()
        for i in range(50):
            e.on_samples([s(f"d{i % 10}", 0, value=9)])

    ts = [threading.Thread(target=run, args=(e,)) for e in (e1, e2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(AlertStore(target(db)).query({"state": "all"})) == 10


def test_last_seen_survives_restart_so_dead_devices_still_go_stale(tmp_path):
    db = str(tmp_path / "alerts.db")
    text = """
        rules:
          - {name: stale, kind: absence, after: 10m}
          - {name: agent-offline, kind: agent_offline, after: 5m}
        """
    eng, _ = make(tmp_path, text, db=db)
    feed(eng, [s("d1", 0, value=1), s("d2", 0, value=1)], agent="ag")
    eng.on_agent_state("ag", False, T0 + 2 * MIN)
    eng.tick(T0 + 1 * MIN)
    eng.tick(T0 + 2 * MIN + 1)  # persisted every minute of engine time
    eng.store.close()
    eng2, _ = make(tmp_path, text, db=db)  # the collector was down while the devices died
    ch = eng2.tick(T0 + 30 * MIN)
    assert sorted(mins(ch, ("firing",))) == [("firing", "agent-offline", 7), ("firing", "stale", 10),
                                             ("firing", "stale", 10)]
    assert all(a.suppressed == "inhibited:agent ag offline" for a in eng2.alerts({"rule": "stale"}))


def test_alert_filters_and_unack(tmp_path):
    meta = {"fa": {"building": "A", "site": "north"}, "fb": {"building": "B", "site": "north"}}
    eng, clock = make(tmp_path, WARM % "", meta)
    feed(eng, [s("fa", 0, value=9), s("fb", 0, value=9), s("fc", 0, value=9)])
    fa = eng.alerts({"building": "A"})[0]
    eng.ack(fa.id, "alice")
    assert [a.labels["device"] for a in eng.alerts({"acked": True})] == ["fa"]
    assert sorted(a.labels["device"] for a in eng.alerts({"acked": False})) == ["fb", "fc"]
    assert [a.labels["device"] for a in eng.alerts({"matchers": ["building=~A|B", "device!=fa"]})] == ["fb"]
    assert len(eng.alerts({"site": "north", "severity": "warning", "rule": "warm"})) == 2
    assert eng.alerts({"state": "resolved"}) == [] and len(eng.alerts({"limit": 1})) == 1
    with pytest.raises(ValueError, match="unknown alert filter"):
        eng.alerts({"colour": "red"})
    clock.at(5)
    eng.unack(fa.id, "alice", "not mine after all")
    ch = eng.tick(T0 + 34 * MIN)
    assert sorted((c.kind, c.alert.labels["device"], (c.t_ms - T0) // MIN) for c in ch) == [
        ("escalated", "fb", 30), ("escalated", "fc", 30)]
    ch = eng.tick(T0 + 36 * MIN)
    assert [(c.kind, c.alert.labels["device"], (c.t_ms - T0) // MIN) for c in ch] == [("escalated", "fa", 35)]


def test_track_device_makes_never_seen_devices_go_stale(tmp_path):
    eng, _ = make(tmp_path, "rules: [{name: stale, kind: absence, after: 10m}]")
    eng.track_device("never-seen", T0, agent="ag")
    ch = eng.tick(T0 + 11 * MIN)
    assert mins(ch) == [("firing", "stale", 10)] and ch[0].alert.labels["agent"] == "ag"


def test_reload_rules_keeps_alerts_of_kept_rules(tmp_path):
    eng, _ = make(tmp_path, """
        rules:
          - {name: warm, kind: threshold, measurement: temperature, value: 5}
          - {name: gone, kind: threshold, measurement: temperature, value: 6}
        """, db=str(tmp_path / "r.db"))
    got = []
    eng.listeners.append(got.append)
    feed(eng, [s("d1", 0, value=9)])
    warm = eng.alerts({"rule": "warm"})[0]
    p = tmp_path / "new.yaml"
    p.write_text("rules: [{name: warm, kind: threshold, measurement: temperature, value: 10}]\n")
    eng.reload(load_rules(p))
    assert [a.id for a in eng.alerts()] == [warm.id]
    assert eng.history(eng.alerts({"state": "all", "rule": "gone"})[0].id)[-1].action == "rule_removed"
    ch = feed(eng, [s("d1", 1, value=9)])  # below the new limit
    assert [(c.kind, c.alert.id) for c in ch] == [("resolved", warm.id)] and got[-1].kind == "resolved"
