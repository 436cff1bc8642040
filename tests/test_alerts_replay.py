"""Stored but never evaluated events are replayed (collector/README.md "Alerts", RuleEngine.replay).

Ingest commits a group, acknowledges it and only then queues it for the rule engine: a collector
killed in between (or, in a district, paused past its lease) leaves an event in the store that no
engine saw, and the broker never redelivers it. A starting ``Alerting`` and every ``take_over``
evaluate the stored events of the last ``rules.replay_s`` again, idempotently: what the alert store
shows as evaluated changes nothing (no second alert, no count, no notification, no re-open).

The crash window is reproduced exactly by committing messages through the store's ``apply`` without
handing them to the engine (what ingest does up to the moment of the kill). SQLite with the real
``Alerting`` wiring (wall clock), and two engines on a real PostgreSQL sharing the alert store.
"""
from __future__ import annotations

import time

import pytest

from campus_sense import wire
from collector import config as cfgmod
from collector.alertcore import AlertStore, RuleEngine, load_rules
from collector.alerting import Alerting
from collector.store.sqldb import Pg
from collector.store.sqlite import SQLiteStore
from tests.collector_util import wait_until
from tests.pg_fixture import pg_server  # noqa: F401

RULES = """\
rules:
  - {name: door-forced, kind: event, event: door_forced, clear_event: door_closed, severity: critical}
  - {name: login-fails, kind: event_count, event: login_failed, count: 3, within: 10m}
"""


def _now():
    return int(time.time() * 1000)


class Collector:
    """The store + Alerting of one collector run (``start`` = a process start, ``stop`` = its end)."""

    def __init__(self, tmp_path):
        (tmp_path / "rules.yaml").write_text(RULES)
        (tmp_path / "pw").write_text("x\n")
        (tmp_path / "c.yaml").write_text(
            "mqtt: {host: 127.0.0.1, username: c, password_file: pw}\nstore: {path: c.db}\n"
            "rules: {paths: [rules.yaml], db: alerts.db, tick_s: 0.1, replay_s: 600}\n")
        self.tmp, self.seq, self.al, self.changes = tmp_path, 0, None, []
        self.store = SQLiteStore(str(tmp_path / "c.db"))

    def commit(self, *items, kind="events", evaluate=False):
        """What ingest does: commit (and acknowledge); ``evaluate=False`` = killed before the engine saw it."""
        self.seq += 1
        msg = wire.decode(wire.topic("north", "A", "ag-a", kind), wire.encode_durable(
            kind, "ag-a", "ep", self.seq, _now(), [wire.encode_item(i) for i in items]))
        assert self.store.apply([msg], []).accepted
        if evaluate:
            self.al.on_message(msg)

    def start(self):
        self.changes = []
        self.al = Alerting(cfgmod.load(self.tmp / "c.yaml"), self.store)
        self.al.engine.listeners.append(self.changes.append)    # where notifications and the SSE hub listen
        self.al.start()
        return self.al

    def stop(self):
        self.al.stop()

    def state(self):
        st = self.al.alert_store
        return ([(a.id, a.rule, a.state, a.count) for a in st.query({"state": "all"})],
                [(h.alert_id, h.action) for h in st.history()])


@pytest.fixture
def col(tmp_path):
    c = Collector(tmp_path)
    yield c
    if c.al is not None and c.al._thread is not None and c.al._thread.is_alive():
        c.stop()
    c.store.close()


def test_stored_not_evaluated_event_fires_once_across_restarts(col):
    """(a) door_forced committed, the collector killed before evaluation: the next start fires it once
    (listeners = notifications see it); another restart changes nothing."""
    col.commit(wire.event("door-1", "door_forced", _now() - 5_000, "critical"))
    col.start()
    [a] = col.al.alert_store.query({"state": "all"})
    assert (a.rule, a.state, a.count) == ("door-forced", "firing", 1)
    assert [(c.kind, c.alert.id) for c in col.changes] == [("firing", a.id)]
    assert [h.action for h in col.al.engine.history(a.id)] == ["firing"]
    before = col.state()
    col.stop()
    col.start()
    assert col.state() == before and col.changes == []
    col.stop()


def test_fired_and_closed_both_stored_resolve_once(col):
    """(b) door_forced and door_closed both committed, neither evaluated: one alert fired and resolved;
    a second restart re-opens nothing."""
    t = _now() - 60_000
    col.commit(wire.event("door-1", "door_forced", t, "critical"))
    col.commit(wire.event("door-1", "door_closed", t + 20_000, "info"))
    col.start()
    [a] = col.al.alert_store.query({"state": "all"})
    assert (a.state, a.fired_ms, a.resolved_ms) == ("resolved", t, t + 20_000)
    assert [(c.kind, c.t_ms) for c in col.changes] == [("firing", t), ("resolved", t + 20_000)]
    before = col.state()
    col.stop()
    col.start()
    assert col.state() == before and col.changes == []
    col.stop()


def test_evaluated_events_change_nothing_on_restart(col):
    """(c) events the engine evaluated before the stop (a firing alert with count 2) are replayed at the
    restart and skipped: count still 2, no history row; a stored, unevaluated repeat after them counts."""
    col.start()
    t = _now() - 30_000
    col.commit(wire.event("door-1", "door_forced", t, "critical"), evaluate=True)
    col.commit(wire.event("door-1", "door_forced", t + 1_000, "critical"), evaluate=True)
    wait_until(lambda: [a for a in col.al.engine.alerts() if a.count == 2], 10, "count 2")
    before = col.state()
    col.stop()
    col.start()
    assert col.state() == before and col.changes == []
    col.commit(wire.event("door-1", "door_forced", t + 2_000, "critical"))    # killed before evaluation
    col.stop()
    col.start()
    [a] = col.al.engine.alerts()
    assert a.count == 3 and col.state()[1] == before[1] and col.changes == []
    col.stop()


def test_event_count_window_rebuilt_not_fired_twice(col):
    """event_count: its window is in memory only; the replay rebuilds it (the third failed login, never
    evaluated, fires), and a restart neither fires it again nor counts the replayed events."""
    t = _now() - 120_000
    col.start()
    col.commit(wire.event("srv-1", "login_failed", t, "warning"), evaluate=True)
    col.commit(wire.event("srv-1", "login_failed", t + 1_000, "warning"), evaluate=True)
    wait_until(lambda: col.al.stats["processed"] >= 2, 10, "two evaluated")
    col.stop()
    col.commit(wire.event("srv-1", "login_failed", t + 2_000, "warning"))     # killed before evaluation
    col.start()
    [a] = col.al.engine.alerts()
    assert (a.rule, a.state, a.fired_ms, a.count, a.value) == ("login-fails", "firing", t + 2_000, 1, 3)
    before = col.state()
    col.stop()
    col.start()
    assert col.state() == before and col.changes == []
    col.stop()


def test_replay_off_and_bad_rows(col, tmp_path):
    """``replay_s: 0`` replays nothing; a stored event the engine cannot use does not stop the start."""
    col.commit(wire.event("door-1", "door_forced", _now() - 1_000, "critical"))
    (tmp_path / "c.yaml").write_text((tmp_path / "c.yaml").read_text().replace("replay_s: 600", "replay_s: 0"))
    col.start()
    assert col.al.alert_store.query({"state": "all"}) == []
    col.stop()
    eng = RuleEngine(load_rules(tmp_path / "rules.yaml"), AlertStore(":memory:"), replay_ms=60_000,
                     events_since=lambda since, types: [{"agent": "ag", "site": "s", "device": "d", "ts_ms": "x",
                                                         "type": "door_forced", "severity": "critical",
                                                         "tags": None, "data": None}])
    assert eng.replay() == 1 and eng.bad_items == 1 and eng.alerts() == []


def test_events_since_newest_first_limited_oldest_first_returned(col):
    """``Store.events_since``: only the types asked for, the newest ``limit`` of them, oldest first, with
    the agent's site (the PostgreSQL store: the district test below)."""
    t = _now() - 10_000
    col.commit(*[wire.event("door-1", typ, t + i, "critical") for i, typ in
                 enumerate(["door_forced", "x", "door_forced", "door_forced"])])
    rows = col.store.events_since(t, {"door_forced"}, limit=2)
    assert [(e["ts_ms"], e["type"], e["site"], e["agent"]) for e in rows] == \
        [(t + 2, "door_forced", "north", "ag-a"), (t + 3, "door_forced", "north", "ag-a")]
    assert col.store.events_since(t, set()) == [] and len(col.store.events_since(t + 1)) == 3


# ---------------------------------------------------------------- district: two engines, PostgreSQL
S = 1000


class Clock:
    t = 0

    def __call__(self):
        return self.t


def test_take_over_replays_the_lost_sites_events_once(tmp_path, pg_server):
    """(d) Engine 1 holds site A; a door_forced of A is committed (PostgreSQL events) but engine 1 loses
    A before evaluating it (a pause past the lease: its queue is dropped). Engine 2 ``take_over`` fires
    it exactly once; engine 1 taking A back later fires nothing again; site B's event stays with B."""
    from collector.store.postgres import PostgresStore
    from tests.test_store_postgres import Mem
    (tmp_path / "rules.yaml").write_text(RULES)
    dsn = pg_server.create_db(f"replay_{tmp_path.name[-20:].replace('-', '_')}")
    events = PostgresStore(dsn, sink=Mem())
    clock, owned, stores = Clock(), {1: {"A", "B"}, 2: set()}, []
    t0 = clock.t = _now()

    def engine(n):
        st = AlertStore(Pg(dsn))
        stores.append(st)
        return RuleEngine(load_rules(tmp_path / "rules.yaml"), st, clock=clock, owns=lambda s: s in owned[n],
                          events_since=events.events_since, replay_ms=600 * S)

    def commit(site, agent, seq, item):
        msg = wire.decode(wire.topic(site, "X", agent, "events"), wire.encode_durable(
            "events", agent, "ep", seq, t0, [wire.encode_item(item)]))
        assert events.apply([msg], []).accepted

    try:
        e1, e2 = engine(1), engine(2)
        commit("A", "agA", 1, wire.event("doorA", "door_forced", t0, "critical"))
        commit("B", "agB", 1, wire.event("doorB", "door_forced", t0 + 1, "critical"))
        e1.on_events([wire.event("doorB", "door_forced", t0 + 1, "critical")], agent="agB", site="B")
        # engine 1 loses A before it evaluated doorA's event; engine 2 takes A over
        owned[1].discard("A")
        e1.hand_over(lambda s: s == "A")
        clock.t = t0 + 20 * S
        owned[2].add("A")
        fired = []
        e2.listeners.append(fired.append)
        e2.take_over(lambda s: s == "A")
        assert [(c.kind, c.alert.subject["id"], c.t_ms) for c in fired] == [("firing", "doorA", t0)]
        store = e1.store
        snap = ([(a.id, a.state, a.count, a.updated_ms) for a in store.query({"state": "all"})], len(store.history()))
        assert sorted(a.subject["id"] for a in store.query({"state": "all"})) == ["doorA", "doorB"]
        # A moves back to engine 1 (and engine 2 takes B, whose event engine 1 evaluated): nothing new
        owned[2].discard("A")
        e2.hand_over(lambda s: s == "A")
        owned[1].add("A")
        assert e1.take_over(lambda s: s == "A") == []
        owned[1].discard("B")
        e1.hand_over(lambda s: s == "B")
        owned[2].add("B")
        e2.take_over(lambda s: s == "B")
        assert ([(a.id, a.state, a.count, a.updated_ms) for a in store.query({"state": "all"})],
                len(store.history())) == snap
        assert len(fired) == 1
    finally:
        for st in stores:
            st.close()
        events.close()
