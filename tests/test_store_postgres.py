"""PostgresStore (collector/store/postgres.py) against a real PostgreSQL started by the test.

The backend-neutral store behaviour (dedup and gaps across restarts, rollback on a sink failure,
retention, devices/facts/polls/agents/events, dead letters, binding, tokens, topology intervals)
runs against both the embedded SQLiteStore (with a sink, as kind influxdb) and PostgresStore;
then what only PostgreSQL does: migrations, two collectors on one database, fencing; and one
end-to-end run: real Mosquitto -> collector process -> PostgreSQL + VictoriaMetrics -> /series and
/agents, with a SIGKILL of the collector mid-stream (produced vs stored seqs counted)."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from campus_sense import wire
from collector.store.base import Reject, StorageUnavailable, TimeSeriesSink
from collector.store.sqlite import SQLiteStore
from tests.collector_util import iface, wait_until
from tests.peers import free_port
from tests import peers_pg

pytestmark = pytest.mark.skipif(not peers_pg.available(), reason="PostgreSQL/psycopg missing")

T0 = 1_795_000_000_000
CYCLE = 300_000
MAC = "00:1a:2b:3c:4d:5e"


class Mem(TimeSeriesSink):
    name = "mem"

    def __init__(self):
        self.fail = False
        self.got: list[dict] = []

    def write(self, samples):
        if self.fail:
            raise ConnectionError("victoria-metrics down")
        self.got.extend(samples)


class Backend:
    """Opens (and re-opens: a collector restart) one store of a kind on its own database."""

    def __init__(self, kind, tmp_path, pg, request):
        self.kind = kind
        self.opened = []
        if kind == "sqlite":
            self.path = str(tmp_path / "c.db")
        else:
            self.dsn = pg.create_db("t_" + request.node.name.replace("[", "_").replace("]", "").lower()[:50])

    def open(self, sink=None, **kw):
        sink = sink or Mem()
        if self.kind == "sqlite":
            s = SQLiteStore(self.path, sink=sink, **kw)
        else:
            from collector.store.postgres import PostgresStore
            s = PostgresStore(self.dsn, sink=sink, **kw)
        self.opened.append(s)
        return s

    def close_all(self):
        for s in self.opened:
            try:
                s.close()
            except Exception:  # noqa: BLE001
                pass


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path):
    pg = request.getfixturevalue("pg") if request.param == "postgres" else None
    b = Backend(request.param, tmp_path, pg, request)
    yield b
    b.close_all()


def msg(seq, items, kind="metrics", agent="a1", epoch="e1", site="s", building="b"):
    payload = wire.encode_durable(kind, agent, epoch, seq, 0, [wire.encode_item(i) for i in items])
    m = wire.decode(wire.topic(site, building, agent, kind), payload)
    m.raw = payload
    return m


def state(kind, agent="a1", site="s", building="b", **body):
    payload = wire.encode_state(kind, agent, T0, **body)
    return wire.decode(wire.topic(site, building, agent, kind), payload)


# ---------------------------------------------------------------- backend-neutral behaviour
def test_gaps_persist_across_restart(backend):
    s = backend.open()
    r = s.apply([msg(1, [iface("sw", T0 + 1, 1)]), msg(4, [iface("sw", T0 + 4, 1)])], [])
    assert [(m.seq, m.hwm, m.gaps) for m in r.marks] == [(1, 4, ((2, 3),))]
    s.close()
    s = backend.open()
    r = s.apply([msg(4, [iface("sw", T0 + 4, 1)]), msg(2, [iface("sw", T0 + 2, 1)])], [])
    assert r.duplicates == 1 and len(r.accepted) == 1
    assert [(g["first_seq"], g["last_seq"]) for g in s.ingest_stats()["gaps"]] == [(3, 3)]
    assert s.watermark("a1", "e1").seq == 2
    a = s.agents(int(time.time() * 1000), 180)[0]
    assert a["missing_total"] == 1 and a["epochs"][0]["hwm"] == 4


def test_sink_failure_rolls_back_everything(backend):
    sink = Mem()
    sink.fail = True
    s = backend.open(sink=sink)
    m = msg(1, [iface("sw", T0 + 1, 1)])
    with pytest.raises(StorageUnavailable):
        s.apply([m], [Reject("t", "bad_json", "x")])
    assert s.ingest_stats()["rejected_total"] == 0 and s.devices() == [] and s.agents(T0, 180) == []
    sink.fail = False
    r = s.apply([m], [Reject("t", "bad_json", "x")])   # the redelivery after the failure is not a duplicate
    assert len(r.accepted) == 1 and len(sink.got) == 1
    assert s.ingest_stats()["rejected_total"] == 1
    assert s.interfaces("sw")[0]["in_bps"] == 1000.0
    assert s.counters["messages_stored"] == 1 and s.counters["points_stored"] == 1


def test_retention_deletes_old_events(backend):
    s = backend.open(events_days=1)
    now = int(time.time() * 1000)
    s.apply([msg(3, [wire.event("d", "x", now - 2 * 86400_000), wire.event("d", "y", now)], kind="events")], [])
    assert s.retention(now).get("events") == 1
    assert s.retention(now).get("events") is None
    assert [e["type"] for e in s.events(None, None, None, None, None, 10)] == ["y"]


def test_devices_facts_polls_agents_and_events(backend):
    s = backend.open()
    s.apply([state("birth", version="1.2", epoch="e1", last_seq=0, devices=[{"id": "sw", "room": "A-1"}])], [])
    items = [iface("sw", T0 + 1000, 1), iface("sw", T0 + 1000, 2),
             wire.sample("agent_poll", "sw", T0 + 1000, {"ok": False, "duration_s": 2.5, "reason": "timeout",
                                                         "error": "no answer"}, {"driver": "snmp"}),
             wire.sample("agent", "a1", T0 + 1000, {"queue_depth": 7, "dropped_total": 0, "oldest_age_s": 1.5})]
    ev = [wire.event("door-1", "door_forced", T0 + 5, "critical"), wire.event("door-2", "tamper", T0 + 6, "warning")]
    facts = [{"d": "sw", "t": T0 + 10, "facts": {"model": "S5720", "insecure": {"telnet_open": True, "x": 1}}}]
    r = s.apply([msg(1, items), msg(2, ev, kind="events"), msg(3, facts, kind="facts")], [])
    assert len(r.accepted) == 3 and r.points == 4
    # a newer facts message merges (RFC 7396, as SQLite's json_patch), an older one is ignored
    s.apply([msg(4, [{"d": "sw", "t": T0 + 20, "facts": {"serial": "X1", "insecure": {"x": None}}}], kind="facts"),
             msg(5, [{"d": "sw", "t": T0 + 15, "facts": {"model": "old"}}], kind="facts"),
             msg(6, [wire.sample("agent_poll", "sw", T0 + 2000, {"ok": True, "duration_s": 0.5}, {"driver": "snmp"}),
                     iface("sw", T0 + 2000, 1, in_bps=5.0)])], [])
    d = s.device("sw")
    assert d["facts"] == {"model": "S5720", "serial": "X1", "insecure": {"telnet_open": True}}
    assert d["reachable"] is True and d["last_poll_ms"] == T0 + 2000 and d["driver"] == "snmp" and d["reason"] is None
    assert d["agent"] == "a1" and d["site"] == "s" and d["last_seen_ms"] == T0 + 2000
    assert [x["id"] for x in s.devices()] == ["door-1", "door-2", "sw"]
    ifs = s.interfaces("sw")
    assert [(i["ifIndex"], i["in_bps"], i["ts_ms"]) for i in ifs] == [(1, 5.0, T0 + 2000), (2, 2000.0, T0 + 1000)]
    assert [e["type"] for e in s.events(None, None, None, None, None, 10)] == ["tamper", "door_forced"]
    assert [e["device"] for e in s.events(None, None, None, "critical", None, 10)] == ["door-1"]
    assert s.events("door-2", T0, T0 + 6, None, None, 10) == []
    a = s.agents(int(time.time() * 1000), 1e9)[0]
    assert (a["id"], a["version"], a["state"], a["queue_depth"], a["oldest_age_s"]) == ("a1", "1.2", "online", 7, 1.5)
    assert a["online"] and a["seq_lag"] == 0 and a["info"]["devices"] == [{"id": "sw", "room": "A-1"}]
    assert s.agent_info("a1")["epoch"] == "e1" and s.agent_info("nope") is None
    s.apply([state("heartbeat", last_seq=9, epoch="e1"), state("death")], [])
    a = s.agents(int(time.time() * 1000), 1e9)[0]
    assert a["state"] == "offline" and a["offline_reason"] == "death" and a["seq_lag"] == 3
    assert a["info"]["devices"] == [{"id": "sw", "room": "A-1"}]          # merged, not replaced
    s.apply([], [], clock={"a1": (-4000, T0)})
    assert s.agents(T0, 1e9)[0]["clock_offset_s"] == -4.0


def test_dead_letters_binding_and_tokens(backend):
    s = backend.open()
    raw = b"\x00not json"
    r = s.apply([], [Reject("campus/v1/s/b/a1/metrics", "bad_json", "not UTF-8 JSON", raw, "a1", "e1", 1)])
    assert len(r.dead) == 1 and r.marks[0].hwm == 1
    r = s.apply([], [Reject("campus/v1/s/b/a1/metrics", "bad_json", "not UTF-8 JSON", raw, "a1", "e1", 1)])
    assert r.duplicates == 1 and r.dead == []                # a redelivered dead letter: stored once
    st = s.ingest_stats()
    assert st["rejected"]["bad_json"]["count"] == 1 and st["dead_letters"][0]["bytes"] == len(raw)
    assert s.dead_letter(st["dead_letters"][0]["id"])["payload"] == raw
    # the agent is bound to where it was first seen
    s.apply([msg(2, [iface("sw", T0, 1)])], [])
    r = s.apply([msg(3, [iface("sw", T0 + 1, 1)], site="elsewhere")], [])
    assert [d.reason for d in r.dead] == ["agent_moved"] and r.accepted == []
    assert s.agent_move("a1", "elsewhere", "b")
    r = s.apply([msg(4, [iface("sw", T0 + 2, 1)], site="elsewhere")], [])
    assert len(r.accepted) == 1 and s.device("sw")["site"] == "elsewhere"
    assert s.agent_enrol("a2", "n", "A") == {} and s.agent_binding("a2")["site"] == "n"
    assert s.agent_revoke("a2") and not s.agent_revoke("nobody")
    s._revoked_at = float("-inf")
    r = s.apply([msg(1, [iface("x", T0, 1)], agent="a2", site="n", building="A")], [])
    assert [d.reason for d in r.dead] == ["agent_revoked"]
    assert s.agent_enrol("a2", "n", "A")["revoked_ms"] is not None
    # tokens
    tid, tok = s.token_create("it", "grafana")
    assert s.token_role(tok) == (tid, "it") and s.token_name(tid) == "grafana"
    assert [t["name"] for t in s.token_list()] == ["grafana"]
    assert s.token_revoke("grafana") == 1 and s.token_role(tok) is None
    with pytest.raises(ValueError):
        s.token_create("root")


class Feed:
    def __init__(self, store, agent="agent-a"):
        self.store, self.agent, self.seq = store, agent, 0

    def send(self, items):
        self.seq += 1
        payload = wire.encode_durable("metrics", self.agent, "ep1", self.seq, T0, [wire.encode_item(i) for i in items])
        res = self.store.apply([wire.decode(wire.topic("north", "A", self.agent, "metrics"), payload)], [])
        assert len(res.accepted) == 1


def topo(m, device, t, tags):
    return wire.sample(m, device, t, {"seen": 1}, {"role": "access", **tags})


def fdb(device, t, mac, port, vlan="10"):
    return topo("fdb", device, t, {"mac": mac, "ifIndex": port, "ifName": f"GE0/0/{port}", "vlan": vlan})


def at(k):
    return T0 + int(k * CYCLE)


def spans(rows, *attrs):
    return [(*(r[a] for a in attrs), round((r["first_seen_ms"] - T0) / CYCLE, 2),
             round((r["last_seen_ms"] - T0) / CYCLE, 2)) for r in rows]


def test_topology_intervals(backend):
    """tests/test_store_topology.py's cases on both stores: a MAC moving ports, the gap rule across
    a restart, ARP IP->MAC changes, LLDP neighbours, retention; none of it reaches the sink."""
    sink = Mem()
    store = backend.open(sink=sink)
    f = Feed(store)
    other = "aa:bb:cc:00:00:01"
    for k in range(6):
        t = at(k)
        f.send([fdb("sw1", t, MAC.upper() if k % 2 else MAC, "5" if k < 3 else "7"), fdb("sw1", t + 3, other, "9"),
                fdb("core1", t + 40, "001a.2b3c.4d5e", "1"),
                wire.sample("interface", "sw1", t, {"in_bps": 1.0, "oper_up": True}, {"ifIndex": "5"})])
    h = store.mac_history("00-1A-2B-3C-4D-5E")
    assert spans(h["fdb"], "device", "port", "vlan") == [
        ("sw1", "GE0/0/5", "10", 0.0, 2.0), ("core1", "GE0/0/1", "10", 0.0, 5.0), ("sw1", "GE0/0/7", "10", 3.0, 5.0)]
    assert [r["observations"] for r in h["fdb"]] == [3, 6, 3]
    assert h["fdb"][0]["superseded_ms"] == at(3) and h["fdb"][0]["open"] is False and h["fdb"][2]["open"] is True
    assert [(r["device"], r["port"]) for r in store.mac_history(MAC, at(2.5), at(3.5))["fdb"]] == [
        ("core1", "GE0/0/1"), ("sw1", "GE0/0/7")]
    assert sorted((r["mac"], r["port"]) for r in store.topology_current("fdb", "sw1")) == [
        (MAC, "GE0/0/7"), (other, "GE0/0/9")]
    assert {s["m"] for s in sink.got} == {"interface"} and store.latest("sw1", "fdb") == []
    assert store.device("sw1")["last_seen_ms"] == at(5) + 3
    # gap rule across a restart
    store.close()
    store = backend.open(sink=sink)
    f.store = store
    gone = "aa:bb:cc:00:00:03"
    for k in range(6, 18):
        items = [fdb("sw2", at(k), "aa:bb:cc:00:00:01", "1")]
        if k <= 8 or k >= 13:
            items.append(fdb("sw2", at(k), gone, "3"))
        f.send(items)
    assert spans(store.mac_history(gone)["fdb"], "port") == [("GE0/0/3", 6.0, 8.0), ("GE0/0/3", 13.0, 17.0)]
    # arp and lldp
    a, b = "00:1b:1c:00:00:12", "00:1b:1c:00:00:99"
    for k in range(6):
        f.send([topo("arp", "core1", at(k), {"ip": "10.0.5.12", "mac": a if k < 3 else b, "ifIndex": "50"}),
                topo("lldp", "sw1", at(k), {"ifIndex": "25", "local_port": "XGE0/0/1", "remote_chassis": "c1",
                                            "remote_port": "Te1/0/1", "remote_name": "core1"})])
    assert spans(store.ip_history("10.0.5.12")["arp"], "mac") == [(a, 0.0, 2.0), (b, 3.0, 5.0)]
    assert [r["remote"] for r in store.neighbour_history("sw1")] == ["core1"]
    assert len(store.topology_history("arp", "core1", at(0), at(1))) == 1
    # retention: intervals that ended before the cutoff
    # fdb: sw1 x3, core1, the first "gone" interval; arp x2; lldp
    assert store.topology_retention(at(10)) == 8
    assert spans(store.mac_history(gone)["fdb"], "port") == [("GE0/0/3", 13.0, 17.0)]


def test_tables_store_like_samples(backend):
    """Agents send a poll's samples of one device as tables (wire.tabulate): interface rows,
    topology entries and the poll status come out of both stores and the sink as from samples."""
    sink = Mem()
    store = backend.open(sink=sink)
    rows = [iface("sw1", T0 + 1, i) for i in range(1, 5)]
    rows += [fdb("sw1", T0 + 1, f"aa:bb:cc:00:00:0{i}", str(i)) for i in range(1, 4)]
    rows += [wire.sample("agent_poll", "sw1", T0 + 1, {"ok": True, "duration_s": 0.2}, {"driver": "snmp"})]
    items = wire.tabulate(rows)
    assert [it.get("rows") for it in items] == [4, 3, None]
    r = store.apply([msg(1, items)], [])
    assert r.points == 8
    assert sorted((i["ifIndex"], i["in_bps"], i["oper_up"]) for i in store.interfaces("sw1")) == [
        (i, 1000.0 * i, i % 2 == 1) for i in range(1, 5)]
    assert [(s["m"], s["tags"], s["f"]) for s in sink.got] == [(x["m"], x["tags"], x["f"]) for x in rows
                                                               if x["m"] != "fdb"]
    assert sorted(x["mac"] for x in store.topology_current("fdb", "sw1")) == [f"aa:bb:cc:00:00:0{i}" for i in (1, 2, 3)]
    assert store.device("sw1")["reachable"] is True


# ---------------------------------------------------------------- PostgreSQL only
def test_syslog_archive_search_and_retention(backend):
    s = backend.open(syslog_days=1)
    now = int(time.time() * 1000)

    def line(t, host, msg, sev=3, mn=None):
        return wire.event(host, "syslog", t, "info", data={"archive": True, "host": host, "severity": sev,
                                                           "program": "IOS", "mnemonic": mn, "msg": msg})
    s.apply([msg(1, [line(now - 3 * 86400_000, "sw1", "old line GigabitEthernet0/9 down"),
                     line(now - 1000, "sw1", "Interface GigabitEthernet0/1, changed state to down", 3,
                          "LINK-3-UPDOWN"),
                     line(now - 500, "sw2", "Interface GigabitEthernet0/1, changed state to up", 5, "LINK-3-UPDOWN"),
                     wire.event("sw1", "link_down", now - 400, "warning")], kind="events")], [])
    assert [e["type"] for e in s.events(None, None, None, None, None, 10)] == ["link_down"]   # not in events
    hits = s.syslog(q="GigabitEthernet0/1 down")
    assert [h["host"] for h in hits] == ["sw1"] and hits[0]["mnemonic"] == "LINK-3-UPDOWN"
    assert [h["host"] for h in s.syslog(q="gigabitethernet0/1")] == ["sw2", "sw1"]     # newest first, any case
    assert [h["host"] for h in s.syslog(host="sw2")] == ["sw2"]
    assert [h["severity"] for h in s.syslog(severity=3, since_ms=now - 86400_000)] == [3]
    assert s.retention(now).get("syslog") == 1
    assert len(s.syslog()) == 2


def test_migrations_are_versioned_and_run_once(pg):
    import psycopg

    from collector.store.postgres import MIGRATIONS, PostgresStore, migrate, schema_version
    dsn = pg.create_db("t_migrations")
    stores = []
    errs = []

    def open_one():
        try:
            stores.append(PostgresStore(dsn, sink=Mem()))
        except Exception as e:  # noqa: BLE001
            errs.append(e)
    ths = [threading.Thread(target=open_one) for _ in range(3)]   # three collectors starting together
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    assert errs == [] and len(stores) == 3
    newest = max(int(p.name.split("_")[0]) for p in MIGRATIONS.glob("*.sql"))
    with psycopg.connect(dsn, autocommit=True) as c:
        assert schema_version(c) == newest
        assert migrate(c) == []
        assert c.execute("SELECT count(*) FROM schema_version").fetchone()[0] == newest
    for s in stores:
        s.close()
    with pytest.raises(StorageUnavailable, match="PostgreSQL"):
        PostgresStore(f"host=127.0.0.1 port={free_port()} user=x password=y dbname=z connect_timeout=2", sink=Mem(),
                      connect_timeout_s=2)


def test_two_collectors_one_database_each_seq_once(pg):
    """Two stores (two collector processes) apply the same messages concurrently, in different
    orders: every seq is stored once, the other sees a duplicate; counters are summed over nodes."""
    from collector.store.postgres import PostgresStore
    dsn = pg.create_db("t_two")
    sinks = [Mem(), Mem()]
    s1, s2 = PostgresStore(dsn, sink=sinks[0], node="c1"), PostgresStore(dsn, sink=sinks[1], node="c2")
    msgs = [msg(seq, [iface(f"sw{a}", T0 + seq, 1)], agent=f"a{a}") for a in range(4) for seq in range(1, 41)]
    res = {0: [], 1: []}

    def run(i, store, order):
        for k in range(0, len(order), 10):
            res[i].append(store.apply(order[k:k + 10], []))
    ths = [threading.Thread(target=run, args=(0, s1, msgs)), threading.Thread(target=run, args=(1, s2, msgs[::-1]))]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    accepted = sum(len(r.accepted) for rs in res.values() for r in rs)
    dups = sum(r.duplicates for rs in res.values() for r in rs)
    assert accepted == len(msgs) and dups == len(msgs)
    assert s1.ingest_stats()["gaps"] == []                    # late arrivals filled every gap
    assert {e["hwm"] for a in s1.agents(T0, 1e9) for e in a["epochs"]} == {40}
    assert s2.counters["messages_stored"] == len(msgs) and s1.counters["duplicates"] == len(msgs)
    s1.close()
    s2.close()


def test_fencing_refuses_a_stale_lease_holder(pg):
    from collector.store.leases import Leases
    from collector.store.postgres import LeaseLost, PostgresStore
    dsn = pg.create_db("t_fence")
    s = PostgresStore(dsn, sink=Mem())
    old, new = Leases(dsn, "old", 1.0), Leases(dsn, "new", 1.0)
    assert old.acquire("partition/p00") == 1 and new.acquire("partition/p00") is None
    r = s.apply([msg(1, [iface("sw", T0, 1)])], [], fence=old.fence("partition/p00"))
    assert len(r.accepted) == 1
    stale = old.fence("partition/p00")
    time.sleep(1.2)                                         # old's lease expires (it was paused)
    assert new.acquire("partition/p00") == 2
    with pytest.raises(LeaseLost):
        s.apply([msg(2, [iface("sw", T0 + 1, 1)])], [], fence=stale)
    assert old.renew(["partition/p00"]) == ["partition/p00"]
    assert s.watermark("a1", "e1").hwm == 1                # nothing of the refused group committed
    r = s.apply([msg(2, [iface("sw", T0 + 1, 1)])], [], fence=new.fence("partition/p00"))
    assert len(r.accepted) == 1
    # singletons: one holder at a time
    assert new.singleton("retention") and not old.singleton("retention") and new.singleton("retention")
    s.singleton = old.singleton
    assert s.retention() == {}                               # not the holder: nothing runs
    old.close()
    new.close()
    s.close()


# ---------------------------------------------------------------- end to end
N = 300
K = 20


def _vm():
    from tests.peers_vm import VM_BIN, VictoriaMetrics
    if not __import__("pathlib").Path(VM_BIN).exists():
        pytest.skip("victoria-metrics missing")
    return VictoriaMetrics(args=("-dedup.minScrapeInterval=1ms",))


def collector_config(path, mosquitto, password, dsn, vm_url, api_port, client_id="collector-pg", extra=""):
    (path.parent / "collector.pass").write_text(password + "\n")
    (path.parent / f"{path.stem}.dsn").write_text(dsn + "\n")
    path.write_text(
        f"mqtt:\n  host: 127.0.0.1\n  port: {mosquitto.port}\n  username: collector\n"
        f"  password_file: collector.pass\n  client_id: {client_id}\n"
        f"store:\n  kind: postgres\n  dsn_file: {path.stem}.dsn\n  url: {vm_url}\n  query_url: {vm_url}\n"
        f"  path: {path.stem}-local.db\n"
        f"api:\n  host: 127.0.0.1\n  port: {api_port}\n" + extra)
    return path


def start_district(tmp_path, nodes, mosquitto, password, dsn, vm_url, extra) -> tuple[dict, dict]:
    """Collector processes named ``nodes`` (per-node counters) on one PostgreSQL, sharing the partition
    sessions ``district-pNN``: ({node: API port}, {node: Popen}); logs in tmp_path/<node>.log. The
    caller stops them."""
    ports = {n: free_port() for n in nodes}
    procs: dict[str, subprocess.Popen] = {}
    for n, port in ports.items():
        p = collector_config(tmp_path / f"{n}.yaml", mosquitto, password, dsn, vm_url, port, client_id="district",
                             extra=extra)
        p.write_text(p.read_text().replace("  kind: postgres\n", f"  kind: postgres\n  node: {n}\n"))
        procs[n] = subprocess.Popen([sys.executable, "-m", "campus_sense", "collector", "--config", str(p)],
                                    stdout=open(tmp_path / f"{n}.log", "ab"), stderr=subprocess.STDOUT)
    return ports, procs


def lease_holder(dsn: str, lease: str) -> str | None:
    """The node holding ``lease`` now (holder ``<node>:<pid>:<rand>``), None when nobody does (or no
    collector has created the table yet)."""
    import psycopg
    with psycopg.connect(dsn, autocommit=True) as c:
        try:
            r = c.execute("SELECT holder FROM leases WHERE name=%s AND expires_at > now()", (lease,)).fetchone()
        except psycopg.errors.UndefinedTable:
            return None
    return r[0].split(":")[0] if r else None


def _up(port):
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).json()["ingest"]["connected"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return False


def _count(dsn, sql):
    import psycopg
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as c:
            r = c.execute(sql).fetchone()
            return (r[0] or 0) if r else 0
    except psycopg.Error:
        return 0


def test_e2e_mosquitto_postgres_victoriametrics_sigkill(tmp_path, pg, mosquitto, mqtt_users):
    from tests.collector_util import Publisher
    dsn = pg.create_db("t_e2e")
    vm = _vm().start()
    api_port = free_port()
    cfg = collector_config(tmp_path / "collector.yaml", mosquitto, mqtt_users["collector"], dsn, vm.url, api_port,
                           extra="ingest: {batch_messages: 20, batch_ms: 20}\n")
    log = open(tmp_path / "collector.log", "ab")

    def start():
        return subprocess.Popen([sys.executable, "-m", "campus_sense", "collector", "--config", str(cfg)],
                                stdout=log, stderr=subprocess.STDOUT)
    proc = start()
    try:
        wait_until(lambda: _up(api_port), 60, "collector connected")
        pub = Publisher(mosquitto.port, "agent-a", mqtt_users["agent-a"])
        pub.state("birth", epoch="ep1", last_seq=0, version="9.9")
        killed = threading.Event()
        t0 = int(time.time() * 1000) - 3600_000

        def publish():
            for seq in range(1, N + 1):
                if seq == N // 2 + 1:
                    killed.wait(60)            # the second half goes to the broker while the collector is dead
                items = [wire.sample("interface", f"sw{j % 4}", t0 + seq * 1000, {"n": seq * 1000 + j, "in_bps": 1.5},
                                     {"ifIndex": str(j)}) for j in range(K)]
                pub.durable("metrics", seq, items, wait=False)
                time.sleep(0.002)
        th = threading.Thread(target=publish)
        th.start()
        stored = "SELECT sum(value) FROM counters WHERE name='messages_stored'"
        wait_until(lambda: _count(dsn, stored) >= N // 6, 60, "some messages stored")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        at_kill = _count(dsn, "SELECT hwm FROM seq_state WHERE agent='agent-a'")
        killed.set()
        th.join(60)
        assert at_kill < N
        proc = start()
        wait_until(lambda: _count(dsn, "SELECT hwm FROM seq_state WHERE agent='agent-a'") == N, 120, "all seqs stored")
        time.sleep(0.5)   # any redelivered duplicate arrives (and is dropped)
        # produced vs stored: PostgreSQL (dedup state) and VictoriaMetrics (every sample once)
        assert _count(dsn, "SELECT count(*) FROM gaps") == 0
        assert _count(dsn, stored) == N + 1                                       # N metrics + the birth
        series = vm.export('{__name__="interface_n"}')
        values = [v for s in series for v in s["values"]]
        assert len(values) == N * K and len(set(values)) == N * K, (len(values), len(set(values)))
        assert min(values) == 1000 and max(values) == N * 1000 + K - 1
        # the API answers from PostgreSQL and VictoriaMetrics
        tok = subprocess.run([sys.executable, "-m", "campus_sense", "collector", "token", "create", "--role", "it",
                              "--config", str(cfg)], capture_output=True, text=True, check=True).stdout.strip()
        h = {"Authorization": f"Bearer {tok}"}
        base = f"http://127.0.0.1:{api_port}/api/v1"
        agents = httpx.get(f"{base}/agents", headers=h).json()
        assert agents[0]["id"] == "agent-a" and agents[0]["gaps"] == [] and agents[0]["epochs"][0]["hwm"] == N
        assert agents[0]["version"] == "9.9" and agents[0]["site"] == "north"
        r = httpx.get(f"{base}/series", headers=h, params={"measurement": "interface", "device": "sw1", "field": "n",
                                                          "tags": "ifIndex=1", "start": t0, "end": t0 + (N + 1) * 1000})
        assert r.status_code == 200, r.text
        pts = r.json()["series"][0]["points"]
        assert [p[1] for p in pts] == [seq * 1000 + 1 for seq in range(1, N + 1)]
        r = httpx.get(f"{base}/devices/sw1/interfaces", headers=h)
        assert r.status_code == 200 and {i["ifIndex"] for i in r.json()} == {1, 5, 9, 13, 17}, r.text
        stats = httpx.get(f"{base}/ingest/stats", headers=h).json()
        assert stats["counters"]["points_stored"] >= N * K
        pub.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        vm.stop()
    assert "Traceback" not in (tmp_path / "collector.log").read_text()
