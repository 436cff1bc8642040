"""Topology as state (issue 10): the SNMP driver's fdb/arp/lldp/ip_address samples go through the
real ingest path (wire encode -> decode -> SQLiteStore.apply) and are kept as intervals
(collector/store/topology.py), not as series: MAC/port history, IP<->MAC history, LLDP neighbour
history, the gap rule, external-sink configuration, retention, read-only open and the API."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from campus_sense import wire
from collector.api import create_app
from collector.store.base import TimeSeriesSink
from collector.store.sqlite import SQLiteStore

T0 = 1_795_000_000_000          # 2026-11-16, realistic epoch ms (the wire rejects tiny times)
CYCLE = 300_000                 # the driver's default topology_interval_s
MAC = "00:1a:2b:3c:4d:5e"


class Feed:
    """Durable metrics messages of one agent, encoded and decoded exactly as ingest does."""

    def __init__(self, store: SQLiteStore, agent: str = "agent-a"):
        self.store, self.agent, self.seq = store, agent, 0

    def send(self, items: list[dict]) -> None:
        self.seq += 1
        payload = wire.encode_durable("metrics", self.agent, "ep1", self.seq, T0,
                                      [wire.encode_item(i) for i in items])
        res = self.store.apply([wire.decode(wire.topic("north", "A", self.agent, "metrics"), payload)], [])
        assert len(res.accepted) == 1


def topo(m: str, device: str, t: int, tags: dict) -> dict:
    # the shape of drivers.snmp.topology_samples: device tags first, the entry's tags, field seen=1
    return wire.sample(m, device, t, {"seen": 1}, {"role": "access", **tags})


def fdb(device: str, t: int, mac: str, port: str, vlan: str = "10") -> dict:
    return topo("fdb", device, t, {"mac": mac, "ifIndex": port, "ifName": f"GE0/0/{port}", "vlan": vlan})


def at(k: float) -> int:
    """Time of topology collection number k."""
    return T0 + int(k * CYCLE)


def spans(rows: list[dict], *attrs: str) -> list[tuple]:
    """(attrs..., first collection, last collection) per interval."""
    return [(*(r[a] for a in attrs), round((r["first_seen_ms"] - T0) / CYCLE, 2),
             round((r["last_seen_ms"] - T0) / CYCLE, 2)) for r in rows]


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(str(tmp_path / "c.db"))
    yield s
    s.close()


def test_mac_moving_between_ports_and_where_it_was(store):
    """A laptop on sw1 GE0/0/5 for three collections, then on GE0/0/7 (the core learns it on its
    uplink all along); every MAC notation finds it; no series per MAC."""
    f = Feed(store)
    other = "aa:bb:cc:00:00:01"
    for k in range(6):
        t = at(k)
        port = "5" if k < 3 else "7"
        f.send([fdb("sw1", t, MAC.upper() if k % 2 else MAC, port),         # devices differ in notation
                fdb("sw1", t + 3, other, "9"),
                fdb("core1", t + 40, "001a.2b3c.4d5e", "1"),
                wire.sample("interface", "sw1", t, {"in_bps": 1.0, "oper_up": True}, {"ifIndex": "5"})])

    h = store.mac_history("00-1A-2B-3C-4D-5E")
    assert h["mac"] == MAC
    assert spans(h["fdb"], "device", "port", "vlan") == [       # oldest first
        ("sw1", "GE0/0/5", "10", 0.0, 2.0),
        ("core1", "GE0/0/1", "10", 0.0, 5.0),
        ("sw1", "GE0/0/7", "10", 3.0, 5.0)]
    assert [r["observations"] for r in h["fdb"]] == [3, 6, 3]
    old = h["fdb"][0]
    assert old["superseded_ms"] == at(3) and old["open"] is False and h["fdb"][2]["open"] is True
    assert old["tags"]["role"] == "access" and old["ifIndex"] == "5"

    # where was it between t1 and t2: intervals seen inside [t1, t2)
    def where(t1, t2):
        return [(r["device"], r["port"]) for r in store.mac_history(MAC, t1, t2)["fdb"]]
    assert where(at(0.5), at(1.5)) == [("sw1", "GE0/0/5"), ("core1", "GE0/0/1")]
    assert where(at(2.5), at(3.5)) == [("core1", "GE0/0/1"), ("sw1", "GE0/0/7")]
    assert where(at(1.5), at(3.5)) == [("sw1", "GE0/0/5"), ("core1", "GE0/0/1"), ("sw1", "GE0/0/7")]
    assert where(at(6), at(9)) == []
    assert where(at(-3), at(-1)) == []

    # now: one port per MAC on sw1 (the move superseded GE0/0/5)
    cur = store.topology_current("fdb", "sw1")
    assert sorted((r["mac"], r["port"]) for r in cur) == [(MAC, "GE0/0/7"), (other, "GE0/0/9")]
    assert {r["device"] for r in store.topology_current("fdb")} == {"core1", "sw1"}

    # state, not series: nothing of fdb in the time series, interfaces still there
    assert store.series("fdb", None, None, None, None, None, None, 1000) == []
    assert store.latest("sw1", "fdb") == []
    assert [t["ifIndex"] for t, _ts, _f in store.latest("sw1", "interface")] == ["5"]
    assert store.device("sw1")["last_seen_ms"] == at(5) + 3     # topology keeps the device seen


def test_disappearing_entry_opens_a_new_interval(tmp_path):
    """Gap = 3 x the time between collections: one or two missed collections keep the interval,
    a longer absence opens a new one when the entry comes back; state survives a restart."""
    path = str(tmp_path / "c.db")
    store = SQLiteStore(path)
    f = Feed(store)
    steady, flaky, gone = "aa:bb:cc:00:00:01", "aa:bb:cc:00:00:02", "aa:bb:cc:00:00:03"
    for k in range(12):
        items = [fdb("sw1", at(k), steady, "1")]
        if k != 4 and k != 5:                      # two collections missed: within the gap
            items.append(fdb("sw1", at(k), flaky, "2"))
        if k <= 2 or k >= 7:                       # away for four collections (20 min > 3 x 5 min)
            items.append(fdb("sw1", at(k), gone, "3"))
        f.send(items)
        if k == 5:                                 # the collector restarts meanwhile
            store.close()
            store = SQLiteStore(path)
            f.store = store
    assert spans(store.mac_history(steady)["fdb"], "port") == [("GE0/0/1", 0.0, 11.0)]
    assert spans(store.mac_history(flaky)["fdb"], "port") == [("GE0/0/2", 0.0, 11.0)]
    h = store.mac_history(gone)["fdb"]
    assert spans(h, "port") == [("GE0/0/3", 0.0, 2.0), ("GE0/0/3", 7.0, 11.0)]
    assert [r["open"] for r in h] == [False, True] and h[0]["superseded_ms"] is None
    # nothing seen while it was away
    assert store.mac_history(gone, at(3), at(6.5))["fdb"] == []
    # a late sighting (older than what is stored, e.g. a backlog) extends the interval it belongs to
    f.send([fdb("sw1", at(6.5), gone, "3")])
    assert spans(store.mac_history(gone)["fdb"], "port") == [("GE0/0/3", 0.0, 2.0), ("GE0/0/3", 6.5, 11.0)]
    store.close()


def test_arp_ip_to_mac_changes(store):
    f = Feed(store)
    a, b = "00:1b:1c:00:00:12", "00:1b:1c:00:00:99"
    for k in range(6):
        f.send([topo("arp", "core1", at(k), {"ip": "10.0.5.12", "mac": a if k < 3 else b, "ifIndex": "50"}),
                topo("arp", "core1", at(k), {"ip": "10.0.5.13", "mac": "00:1b:1c:00:00:13", "ifIndex": "50"}),
                topo("ip_address", "core1", at(k), {"ip": "10.0.5.1", "family": "ipv4", "ifIndex": "50"})])
    h = store.ip_history("10.0.5.12")
    assert spans(h["arp"], "device", "mac") == [("core1", a, 0.0, 2.0), ("core1", b, 3.0, 5.0)]
    assert h["arp"][0]["superseded_ms"] == at(3) and h["arp"][1]["open"]
    assert [r["mac"] for r in store.ip_history("10.0.5.12", at(0), at(1))["arp"]] == [a]
    # the other direction: which IPs did a MAC have
    assert spans(store.mac_history(a)["arp"], "ip") == [("10.0.5.12", 0.0, 2.0)]
    assert store.mac_history(a)["fdb"] == []
    # current table: one MAC per IP
    assert sorted((r["ip"], r["mac"]) for r in store.topology_current("arp", "core1")) == [
        ("10.0.5.12", b), ("10.0.5.13", "00:1b:1c:00:00:13")]
    # interface addresses
    assert spans(store.ip_history("10.0.5.1")["ip_address"], "device", "ifIndex") == [("core1", "50", 0.0, 5.0)]


def test_lldp_neighbour_history(store):
    f = Feed(store)

    def nb(t, name, chassis, rport):
        return topo("lldp", "sw1", t, {"ifIndex": "25", "local_port": "XGE0/0/1", "remote_chassis": chassis,
                                       "remote_port": rport, "remote_name": name})
    for k in range(8):
        items = [nb(at(k), "core1", "00:a0:c9:00:00:01", "Te1/0/1") if k < 4 else
                 nb(at(k), "core2", "00:a0:c9:00:00:02", "Te1/0/7"),
                 topo("lldp", "sw1", at(k), {"ifIndex": "26", "local_port": "XGE0/0/2",
                                             "remote_chassis": "00:a0:c9:00:00:02", "remote_port": "Te1/0/8",
                                             "remote_name": "core2"})]
        f.send(items)
    h = store.neighbour_history("sw1")
    assert spans(h, "port", "remote", "ifIndex") == [
        ("XGE0/0/1", "core1", "25", 0.0, 3.0), ("XGE0/0/2", "core2", "26", 0.0, 7.0),
        ("XGE0/0/1", "core2", "25", 4.0, 7.0)]
    assert h[0]["tags"]["remote_port"] == "Te1/0/1"
    assert [r["remote"] for r in store.neighbour_history("sw1", at(5), at(6))] == ["core2", "core2"]
    assert store.neighbour_history("other") == []
    # three collections after core1 was last seen it is no longer a current neighbour
    assert sorted((r["port"], r["remote"]) for r in store.topology_current("lldp", "sw1")) == [
        ("XGE0/0/1", "core2"), ("XGE0/0/2", "core2")]
    assert store.topology_history("lldp", "sw1", at(0), at(1)) == h[:2]


def test_external_sink_gets_no_topology(tmp_path):
    """store.kind influxdb: interface samples go to the sink, topology to the intervals."""
    class Sink(TimeSeriesSink):
        name = "test-sink"

        def __init__(self):
            self.samples: list[dict] = []

        def write(self, samples):
            self.samples.extend(samples)

    sink = Sink()
    store = SQLiteStore(str(tmp_path / "c.db"), sink=sink)
    f = Feed(store)
    for k in range(3):
        f.send([fdb("sw1", at(k), MAC, "5"),
                topo("arp", "core1", at(k), {"ip": "10.0.5.12", "mac": MAC}),
                wire.sample("interface", "sw1", at(k), {"in_bps": 1.0}, {"ifIndex": "5"})])
    f.send([fdb("sw1", at(3), MAC, "5")])                 # a message of topology only
    assert {s["m"] for s in sink.samples} == {"interface"} and len(sink.samples) == 3
    assert spans(store.mac_history(MAC)["fdb"], "port") == [("GE0/0/5", 0.0, 3.0)]
    assert [r["ip"] for r in store.topology_current("arp")] == ["10.0.5.12"]
    assert store.latest("sw1", "fdb") == [] and store.latest("sw1", "interface")
    store.close()


def test_retention_and_read_only_open(tmp_path):
    path = str(tmp_path / "c.db")
    store = SQLiteStore(path)
    # an older collector.db has no topology tables: the queries answer empty
    assert store.mac_history(MAC) == {"mac": MAC, "fdb": [], "arp": []}
    assert store.topology_current("lldp") == [] and store.topology_retention(at(0)) == 0
    f = Feed(store)
    for k in range(3):
        f.send([fdb("sw1", at(k), MAC, "5")])
    for k in range(10, 13):
        f.send([fdb("sw1", at(k), MAC, "7"), fdb("sw2", at(k), "aa:bb:cc:00:00:01", "1")])
    assert len(store.mac_history(MAC)["fdb"]) == 2
    assert store.topology_retention(at(5)) == 1              # the interval that ended before the cutoff
    assert spans(store.mac_history(MAC)["fdb"], "port") == [("GE0/0/7", 10.0, 12.0)]
    store.close()

    ro = SQLiteStore.open_readonly(path)
    try:
        assert spans(ro.mac_history(MAC)["fdb"], "port") == [("GE0/0/7", 10.0, 12.0)]
        assert {r["device"] for r in ro.topology_current("fdb")} == {"sw1", "sw2"}
    finally:
        ro.close()
    with pytest.raises(ValueError, match="no such database"):
        SQLiteStore.open_readonly(str(tmp_path / "nope.db"))
    with pytest.raises(ValueError):
        store.topology_current("vlan")


def test_topology_api(store):
    f = Feed(store)
    for k in range(4):
        f.send([fdb("sw1", at(k), MAC, "5" if k < 2 else "7"),
                topo("arp", "core1", at(k), {"ip": "10.0.5.12", "mac": MAC}),
                topo("lldp", "sw1", at(k), {"ifIndex": "25", "local_port": "XGE0/0/1", "remote_name": "core1"})])
    _, sec = store.token_create("security", "guard")
    c = TestClient(create_app(store))
    h = {"Authorization": f"Bearer {sec}"}
    paths = (f"/api/v1/topology/mac/{MAC}", "/api/v1/topology/ip/10.0.5.12", "/api/v1/topology/fdb",
             "/api/v1/topology/lldp/history?device=sw1")
    for p in paths:
        r = c.get(p)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", p
        assert c.get(p, headers={"Authorization": "Bearer cs_wrong"}).status_code == 401
        assert c.get(p, headers=h).status_code == 200, p

    r = c.get("/api/v1/topology/mac/001a.2b3c.4d5e", params={"start": at(0), "end": at(1.5)}, headers=h).json()
    assert [(x["device"], x["port"]) for x in r["fdb"]] == [("sw1", "GE0/0/5")] and r["truncated"] is False
    assert [x["ip"] for x in r["arp"]] == ["10.0.5.12"]
    r = c.get(f"/api/v1/topology/mac/{MAC}", params={"start": at(0.5)}, headers=h).json()
    assert [x["port"] for x in r["fdb"]] == ["GE0/0/5", "GE0/0/7"]
    r = c.get("/api/v1/topology/fdb", params={"device": "sw1"}, headers=h).json()
    assert [x["port"] for x in r["entries"]] == ["GE0/0/7"]
    r = c.get("/api/v1/topology/fdb/history", params={"device": "sw1", "limit": 1}, headers=h).json()
    assert len(r["intervals"]) == 1 and r["truncated"] is True
    r = c.get("/api/v1/topology/ip/10.0.5.12", headers=h).json()
    assert [x["mac"] for x in r["arp"]] == [MAC]
    assert [x["remote"] for x in c.get("/api/v1/topology/lldp", headers=h).json()["entries"]] == ["core1"]
    assert "/api/v1/topology/mac/{mac}" in c.get("/openapi.json").json()["paths"]

    # bad parameters: 4xx naming them
    def bad(path, params, name, status=422):
        r = c.get(path, params=params, headers=h)
        assert r.status_code == status, (path, params, r.text)
        assert name in r.text, (name, r.text)
    bad(f"/api/v1/topology/mac/{MAC}", {"start": -1}, "start")
    bad(f"/api/v1/topology/mac/{MAC}", {"end": 2**64}, "end")
    bad("/api/v1/topology/fdb", {"limit": 0}, "limit")
    bad("/api/v1/topology/fdb", {"limit": 10**6}, "limit")
    bad("/api/v1/topology/fdb", {"since": "yesterday"}, "since")
    bad("/api/v1/topology/vlan", {}, "kind")
    bad("/api/v1/topology/vlan/history", {}, "kind")
    bad("/api/v1/topology/mac/not-a-mac", {}, "mac")
    bad("/api/v1/topology/ip/10.0.5.300", {}, "ip")
    bad("/api/v1/topology/arp/history", {"start": at(2), "end": at(1)}, "end", 400)
