"""Observations from a real collector SQLiteStore filled through its public ingest path
(wire messages -> ``apply``): device facts, agents, interface samples, the SNMP driver's topology
samples (fdb/arp/lldp/ip_address), Wi-Fi profile samples, netwatch stations, audit facts."""
import json
import subprocess
import sys
import time
from pathlib import Path

from campus_sense import wire
from collector.campus.model import load_campus, load_registry
from collector.campus.store import CampusStore
from collector.compliance.build import observations_from_store
from collector.compliance.coverage import evaluate_coverage
from collector.compliance.firmware import evaluate_hardening
from collector.compliance.health import building_health
from collector.compliance.inventory import evaluate_inventory, where_is
from collector.compliance.firmware import load_catalog
from collector.store.sqlite import SQLiteStore
from tests.pg_fixture import pg_server, store_target  # noqa: F401

FIX = Path(__file__).parent / "fixtures" / "campus"
ROOT = Path(__file__).resolve().parent.parent


class Feed:
    """Durable wire messages for one agent, decoded exactly as ingest does, applied to the store."""

    def __init__(self, store: SQLiteStore, agent: str = "agent-a", building: str = "A"):
        self.store, self.agent, self.building, self.seq = store, agent, building, 0

    def send(self, kind: str, items: list[dict]) -> None:
        self.seq += 1
        payload = wire.encode_durable(kind, self.agent, "ep1", self.seq, int(time.time() * 1000),
                                      [wire.encode_item(i) for i in items])
        msg = wire.decode(wire.topic("north", self.building, self.agent, kind), payload)
        res = self.store.apply([msg], [])
        assert len(res.accepted) == 1

    def state(self, kind: str, **body) -> None:
        msg = wire.decode(wire.topic("north", self.building, self.agent, kind),
                          wire.encode_state(kind, self.agent, int(time.time() * 1000), **body))
        self.store.apply([msg], [])


def ifs(device: str, t: int, rows: list[tuple]) -> list[dict]:
    out = []
    for idx, name, speed, up, extra in rows:
        f = {"speed_mbps": speed, "oper_up": up, "admin_up": True, "in_bps": 1.0, **extra}
        out.append(wire.sample("interface", device, t, f, {"ifIndex": str(idx), "ifName": name, "role": "access"}))
    return out


def topo(m: str, device: str, t: int, tags: dict) -> dict:
    # shape of drivers.snmp.topology_samples: device tags first, the entry's tags, field seen=1
    return wire.sample(m, device, t, {"seen": 1}, {"site": "north", **tags})


def fill(store: SQLiteStore, now_ms: int) -> None:
    a = Feed(store)
    a.state("birth", version="t", config_hash="h", drivers=["snmp"], devices=[])
    old = now_ms - 3600_000                   # an hour ago: outside the topology freshness window
    a.send("facts", [
        wire.facts("a-acc1", now_ms - 60_000, {"model": "S5735-L24T4X-A1", "firmware": "V200R022C00SPC500",
                                              "serial": "2102351HLS10K1000001", "mac": "00:e0:fc:00:00:02",
                                              "sysName": "a-acc1.campus.example", "ipv6": False}),
        wire.facts("a-core", now_ms - 60_000, {"model": "C9300-48P", "sysName": "A-CORE",
                                              "mac": "00:a0:c9:00:00:01"}),
        # audit driver: insecure settings under "insecure"
        wire.facts("a-acc2", now_ms - 60_000, {"model": "WS-C2960X-24PS-L", "serial": "FOC1930W0AB",
                                              "insecure": {"snmp_communities": ["public"], "snmp_versions": ["2c"],
                                                           "telnet_open": True, "http_mgmt": True,
                                                           "https_mgmt": False, "clock_offset_s": 42.0}}),
        # netwatch: passive station table
        wire.facts("probe-a", now_ms - 30_000, {"netwatch_stations": [
            {"mac": "00:1b:1c:00:00:15", "ip": "10.0.5.15", "first_seen": now_ms / 1000 - 900,
             "last_seen": now_ms / 1000 - 30}], "netwatch_stations_total": 1}),
    ])
    a.send("metrics", [
        *ifs("a-acc1", now_ms - 10_000, [
            (2, "GE0/0/2", 100, True, {"util_in_pct": 91.5, "util_out_pct": 3.0}),
            (5, "GE0/0/5", 1000, True, {"in_errors_ps": 4.0, "util_in_pct": 1.0}),
            (25, "XGE0/0/1", 10000, True, {}), (26, "XGE0/0/2", 10000, False, {})]),
        wire.sample("agent_poll", "a-acc1", now_ms - 10_000, {"ok": True, "duration_s": 0.2}, {"driver": "snmp"}),
        wire.sample("agent_poll", "a-acc2", now_ms - 10_000,
                    {"ok": False, "reason": "timeout", "error": "no response"}, {"driver": "snmp"}),
    ])
    # topology: a stale FDB entry (old cycle) and a fresh cycle
    a.send("metrics", [topo("fdb", "a-acc1", old, {"mac": "00:1b:1c:00:00:99", "ifIndex": "4", "ifName": "GE0/0/4",
                                                   "vlan": "50"})])
    a.send("metrics", [
        topo("fdb", "a-acc1", now_ms - 20_000, {"mac": "00:1b:1c:00:00:12", "ifIndex": "5", "ifName": "GE0/0/5",
                                                "vlan": "50"}),
        topo("fdb", "a-acc1", now_ms - 20_000, {"mac": "de:ad:be:ef:00:01", "ifIndex": "2", "ifName": "GE0/0/2",
                                                "vlan": "50"}),
        topo("lldp", "a-acc1", now_ms - 20_000, {"ifIndex": "25", "local_port": "XGE0/0/1",
                                                 "remote_chassis": "00:a0:c9:00:00:01", "remote_port": "Te1/0/1",
                                                 "remote_name": "A-CORE.campus.example"}),
        topo("ip_address", "a-core", now_ms - 20_000, {"ip": "10.0.0.1", "family": "ipv4", "ifIndex": "1"}),
        topo("ip_address", "a-core", now_ms - 20_000, {"ip": "fe80::1", "family": "ipv6", "ifIndex": "1",
                                                       "scope": "link"}),
        topo("ip_address", "a-core", now_ms - 20_000, {"ip": "2001:db8:1::1", "family": "ipv6", "ifIndex": "1"}),
        topo("arp", "a-core", now_ms - 20_000, {"ip": "10.0.5.12", "mac": "00:1b:1c:00:00:12", "ifIndex": "50"}),
    ])
    # Wi-Fi as the SNMP Wi-Fi profiles emit it (controller wlc-1) + an agent survey
    a.send("metrics", [
        wire.sample("wifi_ap", "wlc-1", now_ms - 5_000, {"up": False}, {"ap": "a-ap-103", "ap_mac": "10:4f:58:00:01:03"}),
        wire.sample("wifi_ap", "wlc-1", now_ms - 5_000, {"up": True}, {"ap": "AP-201", "ap_mac": "10:4f:58:00:02:01"}),
        wire.sample("wifi_clients", "wlc-1", now_ms - 5_000, {"clients": 17}, {"ap": "AP-201", "band": "5GHz"}),
        wire.sample("wifi_clients", "wlc-1", now_ms - 5_000, {"clients": 4}, {"ap": "AP-201", "band": "2.4GHz"}),
        # an AP the controller has no name for: tables.py tags it with its MAC
        wire.sample("wifi_ap", "wlc-1", now_ms - 5_000, {"up": True}, {"ap": "10:4f:58:00:01:01",
                                                                       "ap_mac": "10:4f:58:00:01:01"}),
        wire.sample("wifi_clients", "wlc-1", now_ms - 5_000, {"clients": 2}, {"ap": "10:4f:58:00:01:01",
                                                                              "band": "5GHz"}),
        wire.sample("wifi_client", "wlc-1", now_ms - 5_000, {"rssi_dbm": -58, "snr_db": 33},
                    {"mac": "aa:aa:aa:00:00:01", "ap": "AP-201"}),
        wire.sample("wifi_survey", "probe-a", now_ms - 5_000, {"signal_dbm": -79, "noise_dbm": -90},
                    {"ssid": "Campus", "bssid": "10:4f:58:00:01:02", "room": "A-102"}),
    ])


def test_observations_from_real_store(tmp_path):
    now = time.time()
    now_ms = int(now * 1000)
    store = SQLiteStore(str(tmp_path / "c.db"))
    fill(store, now_ms)
    campus = load_campus(FIX / "campus.yaml").value
    obs = observations_from_store(store, campus, now)

    assert obs.devices["a-acc1"].online is True and obs.devices["a-acc2"].online is False
    assert obs.devices["a-acc1"].facts["firmware"] == "V200R022C00SPC500"
    # topology samples: only the fresh FDB cycle; ifName/vlan/time from the sample
    assert sorted((e.switch, e.port, e.mac, e.vlan) for e in obs.fdb) == [
        ("a-acc1", "GE0/0/2", "de:ad:be:ef:00:01", 50), ("a-acc1", "GE0/0/5", "00:1b:1c:00:00:12", 50)]
    assert abs(obs.fdb[0].last_seen - (now - 20)) < 1
    assert [(l.local_port, l.remote_device, l.remote_port) for l in obs.lldp] == [("XGE0/0/1", "a-core", "Te1/0/1")]
    assert obs.ipv6["a-core"] == ["2001:db8:1::1", "fe80::1"] and obs.ipv6["a-acc1"] == []
    assert [(e.ip, e.mac, e.device) for e in obs.arp] == [("10.0.5.12", "00:1b:1c:00:00:12", "a-core")]
    # interfaces carry load/error figures
    ge2 = obs.interface("a-acc1", "GE0/0/2")
    assert ge2.speed_mbps == 100 and ge2.util_in_pct == 91.5
    # Wi-Fi: AP by name or by MAC, per-band client counts summed, client RSSI, survey
    assert obs.aps["a-ap-103"].up is False and obs.aps["a-ap-201"].up is True and obs.aps["a-ap-201"].clients == 21
    assert obs.aps["a-ap-101"].clients == 2
    assert {(w.source, w.ap, w.room) for w in obs.wifi} == {("ap_client", "a-ap-201", None),
                                                           ("survey", None, "A-102")}
    # netwatch station -> sighting; audit facts reach the device
    assert [(s.mac, s.ip, s.source) for s in obs.sightings] == [("00:1b:1c:00:00:15", "10.0.5.15", "netwatch")]
    assert obs.devices["a-acc2"].facts["insecure"]["telnet_open"] is True
    assert [a.id for a in obs.agents] == ["agent-a"] and obs.agents[0].online

    cov = {(r.check, r.subject): r.status for r in evaluate_coverage(campus, obs, building="A")}
    assert cov[("desk_port_speed", "a-acc1 GE0/0/2")] == "fail"
    assert cov[("uplink_redundancy", "a-acc1")] == "fail"          # second uplink down
    assert cov[("wifi_coverage", "A-102")] == "fail" and cov[("wifi_coverage", "A-201")] == "pass"
    assert cov[("wifi_coverage", "A-103")] == "unknown"
    assert cov[("ipv6", "a-core")] == "pass"
    hard = {(r.check, r.device): r.status for r in evaluate_hardening(campus, obs)}
    assert hard[("telnet", "a-acc2")] == "fail" and hard[("clock_drift", "a-acc2")] == "fail"

    reg = load_registry(FIX / "assets.csv", campus=campus).value
    inv = {(r.check, r.subject): r for r in evaluate_inventory(campus, reg, obs)}
    assert inv[("inventory_moved", "AT-0012")].status == "fail"    # FDB sample: GE0/0/5 = A-103, registered A-102
    assert any(c == "inventory_unknown" and "de:ad:be:ef:00:01" in s for c, s in inv)
    w = where_is("de:ad:be:ef:00:01", campus, reg, obs)
    m = w["matches"][0]
    assert (m["switch"], m["port"], m["room"]) == ("a-acc1", "GE0/0/2", "A-102") and m["last_seen"]
    w = where_is("10.0.5.12", campus, reg, obs)
    assert w["matches"][0]["port"] == "GE0/0/5"

    h = building_health("A", campus, reg, obs, load_catalog(FIX / "firmware"))
    assert h["interfaces"]["with_errors"][0]["name"] == "GE0/0/5"
    assert h["interfaces"]["top_utilisation"][0]["name"] == "GE0/0/2"
    assert h["ap_load"]["clients_total"] == 23 and h["ap_load"]["aps"][0]["ap"] == "a-ap-201"
    store.close()



def report(*a):
    """`campus-sense report ...` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "campus_sense", "report", *a], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def _coverage_checks(*target) -> dict:
    """(check, subject) -> status of building A's coverage report, from --db or --config."""
    r = report("coverage", "--building", "A", "--format", "json", *target, "--firmware-dir", str(FIX / "firmware"))
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    return {(c["check"], c["subject"]): c["status"] for b in rep["buildings"]
            for c in b["checks"] + [x for room in b["rooms"] for x in room["checks"]]}

def test_cli_report_reads_collector_db(tmp_path):
    now_ms = int(time.time() * 1000)
    db = tmp_path / "c.db"
    store = SQLiteStore(str(db))
    fill(store, now_ms)
    store.close()
    cs = CampusStore(db)
    cs.save_campus(load_campus(FIX / "campus.yaml").value)
    cs.save_registry(load_registry(FIX / "assets.csv").value)

    checks = _coverage_checks("--db", str(db))
    assert checks[("desk_port_speed", "a-acc1 GE0/0/2")] == "fail"
    assert checks[("wifi_coverage", "A-102")] == "fail"
    r = report("compliance", "--format", "csv", "--db", str(db), "--firmware-dir", str(FIX / "firmware"))
    assert r.returncode == 0, r.stderr
    assert "inventory_moved" in r.stdout and "telnet" in r.stdout
    r = report("where", "de:ad:be:ef:00:01", "--db", str(db))
    assert r.returncode == 0 and json.loads(r.stdout)["matches"][0]["port"] == "GE0/0/2"
    hist = json.loads(report("history", "--db", str(db), "--kind", "coverage", "--building", "A").stdout)
    assert len(hist) == 1                                          # the coverage run above was recorded
    # a DB without collector tables: clear error, exit 2
    other = tmp_path / "campus-only.db"
    CampusStore(other).save_campus(load_campus(FIX / "campus.yaml").value)
    r = report("coverage", "--db", str(other))
    assert r.returncode == 2 and "not a collector database" in r.stderr


def test_external_sink_latest_table(tmp_path):
    """store.kind influxdb: samples go to the sink, the collector keeps the `latest` table;
    observations (in the collector and via `report --db`) read topology and interfaces from it."""
    from collector.compliance.build import open_collector_db
    from collector.store.base import TimeSeriesSink

    class Sink(TimeSeriesSink):
        def __init__(self):
            self.n = 0

        def write(self, samples):
            self.n += len(samples)

    now = time.time()
    sink = Sink()
    store = SQLiteStore(str(tmp_path / "c.db"), sink=sink)
    fill(store, int(now * 1000))
    assert sink.n > 0
    campus = load_campus(FIX / "campus.yaml").value
    for src in (store, open_collector_db(str(tmp_path / "c.db"))):
        obs = observations_from_store(src, campus, now)
        assert sorted(e.mac for e in obs.fdb) == ["00:1b:1c:00:00:12", "de:ad:be:ef:00:01"]   # stale one left out
        assert obs.interface("a-acc1", "GE0/0/2").speed_mbps == 100
        assert obs.ipv6["a-core"] == ["2001:db8:1::1", "fe80::1"]
    src.close()
    store.close()


def test_netwatch_survey_samples_reach_wifi_coverage(tmp_path):
    """The netwatch driver's own ``wifi_survey`` samples (tags ssid/bssid/security/channel + the
    agent's device tags incl. room; fields signal_dbm[, noise_dbm]) through ingest -> store ->
    observations -> wifi_coverage: the room comes from the surveying device's room."""
    from drivers.base import Sample
    from drivers.netwatch import Options, create

    now = time.time()
    drv = create("probe-b", Options.model_validate({"wifi_scan": {"enabled": True, "interface": "wlan0"}}),
                 {"site": "north", "building": "B", "room": "B-101"})
    wifi = drv.watch.wifi
    wifi.observe("10:4f:58:00:0b:01", "Campus", 36, -55, "WPA2", now - 3, noise_dbm=-95)   # campus AP, SNR 40
    wifi.observe("66:66:66:00:00:01", "Campus", 6, -40, "open", now - 2)                    # evil twin, no noise
    records: list = []
    drv._survey(records.append)
    survey = [r for r in records if isinstance(r, Sample) and r.measurement == "wifi_survey"]
    assert len(survey) == 2

    store = SQLiteStore(str(tmp_path / "c.db"))
    b = Feed(store, agent="agent-b", building="B")
    b.state("birth", version="t", config_hash="h", drivers=["netwatch"], devices=[])
    b.send("metrics", [wire.sample(r.measurement, r.device, r.time_ms, r.fields, r.tags) for r in survey])
    campus = load_campus(FIX / "campus.yaml").value
    obs = observations_from_store(store, campus, now)
    got = sorted((w.room, w.bssid, w.signal_dbm, w.snr, w.channel, w.source, w.agent) for w in obs.wifi)
    assert got == [("B-101", "10:4f:58:00:0b:01", -55, 40, 36, "survey", "agent-b"),
                   ("B-101", "66:66:66:00:00:01", -40, None, 6, "survey", "agent-b")]
    r = next(r for r in evaluate_coverage(campus, obs, building="B") if r.check == "wifi_coverage")
    assert (r.subject, r.status) == ("B-101", "pass")
    assert r.evidence[0]["bssid"] == "10:4f:58:00:0b:01" and r.evidence[0]["ap"] == "b-ap-101"
    assert r.evidence[0]["snr_db"] == 40 and r.evidence[0]["time"]

    # only the reading without noise: signal is strong but SNR unknown -> unknown, never pass
    store2 = SQLiteStore(str(tmp_path / "c2.db"))
    b2 = Feed(store2, agent="agent-b", building="B")
    b2.send("metrics", [wire.sample(r.measurement, r.device, r.time_ms, r.fields, r.tags) for r in survey
                        if "noise_dbm" not in r.fields])
    r = next(r for r in evaluate_coverage(campus, observations_from_store(store2, campus, now), building="B")
             if r.check == "wifi_coverage")
    assert r.status == "unknown" and "no SNR" in r.message
    store.close()
    store2.close()


def test_fingerprint_changes_with_every_save_on_both_backends(store_target):
    """What ComplianceService compares to notice an import by another collector (shared database)."""
    from collector.campus.model import Asset, CampusModel, Room
    from collector.store.campus import CampusStore as Store
    a, b = Store(store_target("db")), Store(store_target("db"))
    empty = a.fingerprint()
    m = CampusModel()
    m.rooms["R-1"] = Room(id="R-1", building="A", type="teaching")
    b.save_campus(m)
    one = a.fingerprint()
    assert one != empty
    b.save_campus(m)                                  # unchanged rows: same fingerprint
    assert a.fingerprint() == one
    b.save_registry([Asset(asset_tag="AT-1", device_type="pc")])
    assert a.fingerprint() != one


def test_report_cli_on_the_shared_postgresql_through_the_collector_config(tmp_path, pg_server):
    """District: `campus-sense report ... --config collector.yaml` imports into, reports from and reads
    the history of the PostgreSQL database the collectors share (store.kind postgres)."""
    from collector.store.postgres import PostgresStore
    from tests.test_store_postgres import Mem
    dsn = pg_server.create_db("t_report_cli")
    store = PostgresStore(dsn, sink=Mem())
    fill(store, int(time.time() * 1000))
    store.close()
    (tmp_path / "c.dsn").write_text(dsn + "\n")
    (tmp_path / "pw").write_text("x\n")
    cfg = tmp_path / "collector.yaml"
    cfg.write_text("mqtt:\n  host: 127.0.0.1\n  username: collector\n  password_file: pw\n"
                   "store:\n  kind: postgres\n  dsn_file: c.dsn\n  url: http://127.0.0.1:9\n")

    r = report("import", "--config", str(cfg), "--campus", str(FIX / "campus.yaml"), "--registry", str(FIX / "assets.csv"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rooms"] > 0 and dsn not in r.stdout + r.stderr   # the DSN never printed
    checks = _coverage_checks("--config", str(cfg))
    assert checks[("desk_port_speed", "a-acc1 GE0/0/2")] == "fail"
    r = report("where", "de:ad:be:ef:00:01", "--config", str(cfg))
    assert r.returncode == 0 and json.loads(r.stdout)["matches"][0]["port"] == "GE0/0/2"
    hist = json.loads(report("history", "--config", str(cfg), "--kind", "coverage", "--building", "A").stdout)
    assert len(hist) == 1                        # recorded in PostgreSQL, where every collector sees it
    r = report("coverage", "--db", "x.db", "--config", str(cfg))
    assert r.returncode == 2 and "not allowed with" in r.stderr
