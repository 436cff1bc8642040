"""Rule state follows partitions (collector/README.md "District scale"): two RuleEngines on one
shared alert store in a real PostgreSQL, each running the rules of the sites it owns. A pending
``for:`` alert handed over (``hand_over`` in the old engine, ``take_over`` in the new one) fires at its
original start + ``for``, once; absence and agent_offline fire only in the owning engine, from the
last-seen times in the store, and not just because a partition was taken over; the releasing engine
changes nothing. Explicit clocks, no sleeps."""
from __future__ import annotations

import sqlite3

import pytest

from collector.alertcore import AlertStore, RuleEngine, load_rules
from collector.store.sqldb import Pg
from tests.pg_fixture import pg_server  # noqa: F401

S = 1000
T0 = 1_795_392_000_000
RULES = """\
rules:
  - {name: hot, kind: threshold, measurement: env, field: temp, value: 30, for: 30s}
  - {name: stale, kind: absence, after: 60s}
  - {name: stale-env, kind: absence, measurement: env, after: 60s}
  - {name: agent-offline, kind: agent_offline, after: 60s}
"""
META = {"dA": {"site": "A", "agent": "agA", "type": "sensor"},
        "dB": {"site": "B", "agent": "agB", "type": "sensor"}}
A = lambda s: s == "A"  # noqa: E731 - the partition holding site A


class Clock:
    t = T0

    def __call__(self):
        return self.t


def env(d, t, temp):
    return {"m": "env", "d": d, "t": t, "tags": {}, "f": {"temp": temp}}


@pytest.fixture
def district(tmp_path, pg_server):
    (tmp_path / "rules.yaml").write_text(RULES)
    dsn = pg_server.create_db(f"handover_{tmp_path.name[-20:].replace('-', '_')}")
    clock, owned, stores = Clock(), {}, []

    def engine(n, sites):
        owned[n] = set(sites)
        st = AlertStore(Pg(dsn))
        stores.append(st)
        return RuleEngine(load_rules(tmp_path / "rules.yaml"), st, device_meta=META.get, clock=clock,
                          owns=lambda s: s in owned[n], persist_every_ms=5 * S)
    yield engine, clock, owned
    for st in stores:
        st.close()


def fired(changes):
    return sorted((c.alert.rule, c.alert.subject["id"], c.t_ms) for c in changes if c.kind == "firing")


def snapshot(store):
    return [(a.id, a.state, a.updated_ms) for a in store.query({"state": "all"})], len(store.history())


def at(clock, t):
    clock.t = t
    return t


def test_pending_for_and_liveness_follow_the_partition(district):
    engine, clock, owned = district
    e1, e2 = engine(1, {"A"}), engine(2, {"B"})
    store = e1.store
    at(clock, T0)
    e1.on_agent_state("agA", True, T0, site="A")
    e1.on_samples([env("dA", T0, 35)], agent="agA", site="A")
    e2.on_agent_state("agB", True, T0, site="B")
    e2.on_samples([env("dB", T0, 20)], agent="agB", site="B")
    # data of a site the engine does not own is ignored (a late message of a moved partition)
    assert e1.on_samples([env("dB", T0, 99)], agent="agB", site="B") == []
    assert e1.on_agent_state("agB", False, T0, site="B") == []
    [hot] = store.query({"rule": "hot"})
    assert (hot.state, hot.started_ms, hot.labels["site"]) == ("pending", T0, "A")

    e1.on_samples([env("dA", T0 + 10 * S, 36)], agent="agA", site="A")
    assert e1.tick(at(clock, T0 + 12 * S)) == [] and e2.tick(T0 + 12 * S) == []

    # hand A over: engine 1 forgets it without touching a single alert, engine 2 loads it
    before = snapshot(store)
    owned[1].discard("A")
    e1.hand_over(A)
    assert snapshot(store) == before
    assert not e1._states and not e1._agents and not e1._alive and not e1._active
    owned[2].add("A")
    assert e2.take_over(A) == []
    assert snapshot(store) == before

    # the for: timer continues from the original start: fires at T0 + 30 s, not 30 s after the hand-over
    assert e2.tick(at(clock, T0 + 29_999)) == []
    ch = e2.tick(at(clock, T0 + 31 * S))
    assert [(c.kind, c.alert.rule, c.t_ms) for c in ch] == [("firing", "hot", T0 + 30 * S)]
    [hot] = store.query({"rule": "hot", "state": "all"})
    assert hot.fired_ms == T0 + 30 * S and [h.action for h in store.history(hot.id)] == ["pending", "firing"]

    # absence / agent_offline: only the owner judges, from the last-seen times engine 1 wrote on hand-over
    for t in (T0 + 31 * S, T0 + 71 * S, T0 + 300 * S):
        assert e1.tick(at(clock, t)) == []            # owns nothing any more: never acts
    ch = e2.tick(at(clock, T0 + 69 * S))
    assert fired(ch) == [
        ("agent-offline", "agB", T0 + 60 * S), ("stale", "dB", T0 + 60 * S), ("stale-env", "dB", T0 + 60 * S)]
    ch = e2.tick(at(clock, T0 + 71 * S))                 # A last seen at T0 + 10 s (engine 1's sample)
    assert fired(ch) == [
        ("agent-offline", "agA", T0 + 70 * S), ("stale", "dA", T0 + 70 * S), ("stale-env", "dA", T0 + 70 * S)]
    assert e2.tick(at(clock, T0 + 300 * S)) == [] and e1.tick(T0 + 400 * S) == []
    counts = {}
    for a in store.query({"state": "all"}):
        counts[a.rule] = counts.get(a.rule, 0) + 1
    assert counts == {"hot": 1, "stale": 2, "stale-env": 2, "agent-offline": 2}

    # a collector starting up restores only the sites it owns
    e3 = engine(3, {"B"})
    assert {a.labels["site"] for a in e3._active.values()} == {"B"} and set(e3._agents) == {"agB"}
    assert e3.tick(at(clock, T0 + 500 * S)) == []


def test_take_over_is_no_reason_for_agent_offline(district):
    """The store's last-seen time of a live agent is older than ``after`` when the partition arrives
    (a slow take-over): the new holder waits ``takeover_grace_ms`` for the agent's messages instead of
    declaring it offline; the agent's next message keeps it online."""
    engine, clock, owned = district
    e1, e2 = engine(1, {"A"}), engine(2, set())
    at(clock, T0)
    e1.on_agent_state("agA", True, T0, site="A")
    e1.on_samples([env("dA", T0, 20)], agent="agA", site="A")
    e1.tick(T0 + 5 * S)
    e1.tick(T0 + 10 * S)                 # persisted (every 5 s), then the collector dies: no hand_over
    owned[1].clear()                     # its lease ran out
    assert e1.tick(at(clock, T0 + 200 * S)) == []
    owned[2].add("A")
    at(clock, T0 + 65 * S)               # taken over after `after` (60 s) already passed
    assert e2.take_over(A) == []
    assert e2.tick(T0 + 66 * S) == [] and e2.tick(T0 + 90 * S) == []
    e2.on_samples([env("dA", T0 + 91 * S, 20)], agent="agA", site="A")     # redelivered / new data
    assert e2.tick(T0 + 96 * S) == [] and e2.tick(T0 + 150 * S) == []
    assert e2.store.query({"state": "all"}) == []
    ch = e2.tick(T0 + 152 * S)           # silent for real now: the owner reports it
    assert [x[0] for x in fired(ch)] == ["agent-offline", "stale", "stale-env"]


def test_lost_partition_changes_nothing_before_hand_over(district):
    """A collector whose lease ran out (paused, cut off) still has the partition's state until it
    notices: meanwhile neither its ticks nor a silence made through it change that partition's alerts;
    the new holder applies the silence, once."""
    engine, clock, owned = district
    e1, e2 = engine(1, {"A"}), engine(2, set())
    at(clock, T0)
    e1.on_agent_state("agA", True, T0, site="A")
    e1.on_samples([env("dA", T0, 35)], agent="agA", site="A")
    assert fired(e1.tick(at(clock, T0 + 31 * S))) == [("hot", "dA", T0 + 30 * S)]
    owned[1].clear()                                  # lease lost, hand_over not yet called
    before = snapshot(e1.store)
    e1.silence_create(["site=A"], "ops", duration_ms=3600 * S)
    assert e1.tick(at(clock, T0 + 200 * S)) == [] and snapshot(e1.store) == before
    owned[2].add("A")
    e2.take_over(A)
    e2.tick(at(clock, T0 + 201 * S))
    [hot] = e2.store.query({"rule": "hot"})
    assert hot.suppressed and [h.action for h in e2.store.history(hot.id)] == ["pending", "firing", "suppressed"]


def test_sqlite_liveness_gets_a_site_column(tmp_path):
    """An alerts.db from before sites were recorded: the column is added, old rows still load."""
    db = tmp_path / "old.db"
    c = sqlite3.connect(db)
    c.execute("CREATE TABLE alert_liveness(kind TEXT NOT NULL, key TEXT NOT NULL, t_ms INTEGER NOT NULL, "
              "extra TEXT, PRIMARY KEY (kind, key))")
    c.execute("INSERT INTO alert_liveness VALUES ('device', 'd1', 5, 'ag')")
    c.commit()
    c.close()
    st = AlertStore(str(db))
    st.save_liveness([("device", "d2", 7, None, "A")])
    assert sorted(st.load_liveness()) == [("device", "d1", 5, "ag", None), ("device", "d2", 7, None, "A")]
    st.close()
