"""Coverage / compliance on live data, end to end:

snmpsim (real vendor recordings: Cisco C3750 access switch with FDB/ARP, Huawei S5720 with LLDP)
  <- real edge agent process (SNMP driver, topology samples) -> real Mosquitto -> real collector
  process (campus model + registry imported from its config) -> GET /api/v1/compliance/...
and ``campus-sense report ... --db`` on the same database.

No SNMP source here produces Wi-Fi survey readings, AP status or audit findings, so those are
published as wire messages by this test (``FED BY THE TEST`` below), in exactly the shapes the
collector documents (``wifi_survey``; ``wifi_ap``/``wifi_clients`` as drivers/snmp/tables.py emits
them; ``insecure`` facts as the audit driver sends them).

Deliberate gaps and where they come from:
  A-101 classroom without coverage    survey hears only a guest SSID            (test-fed survey)
  a-acc1 Fa3/0/48 desk port 100 Mb/s   C3750 recording: ifHighSpeed 100, up      (SNMP)
  a-acc1 single uplink                 campus model: one uplink, no LLDP         (SNMP + model)
  a-acc2 unknown device                polled Huawei switch not in the registry  (SNMP)
  68:99:cd:a5:9f:88 unknown device     MAC learnt on Fa3/0/48 (FDB sample)       (SNMP topology)
  a-acc1 outdated firmware             12.2(55)SE10, approval expired            (SNMP entity facts)
  a-acc1 telnet open                   audit facts                               (test-fed facts)
"""
import json
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from campus_sense import wire
from tests.collector_util import Publisher, wait_until, write_config
from tests.peers import free_port
from tests.peers_snmp import Snmpsim

ROOT = Path(__file__).resolve().parent.parent
VENDORS = ROOT / "tests" / "fixtures" / "snmprec_vendors"
SNMPREC = ROOT / "tests" / "fixtures" / "snmprec"
FDB_MAC = "68:99:cd:a5:9f:88"          # dot1dTpFdb entry of the C3750 recording, port Fa3/0/48

pytestmark = pytest.mark.skipif(not shutil.which("snmpsimd") or not shutil.which("mosquitto"),
                                reason="needs snmpsim and mosquitto")

CAMPUS = """
sites:
  - id: north
    buildings:
      - id: A
        name: Teaching building A
        floors:
          - id: A-1
            level: 1
            rooms:
              - {id: A-001, name: Wiring closet, type: server}
              - {id: A-101, name: Classroom 101, type: teaching}
              - {id: A-102, name: Classroom 102, type: teaching}
devices:
  - {id: CE-NG, type: switch, role: core, room: A-001}
  - {id: a-acc1, type: switch, role: access, room: A-001, model: WS-C3750-48PS-S}
  - {id: a-acc2, type: switch, role: access, room: A-001}
  - {id: a-ap-102, type: ap, room: A-102, bssids: ["10:4f:58:00:01:02"]}
ports:
  - {device: a-acc1, port: Fa3/0/48, role: desk, room: A-102}
  - {device: a-acc1, port: Fa3/0/43, role: uplink, peer: CE-NG}
  - {device: a-acc2, port: XGigabitEthernet0/0/1, role: uplink, peer: CE-NG}
  - {device: a-acc2, port: XGigabitEthernet0/0/4, role: uplink, peer: CE-NG}
"""

ASSETS = ("asset_tag,device_type,model,serial,mac,assigned_ip,room,owner,device_id\n"
          "AT-1,switch,WS-C3750-48PS-S,CAT0952N20R,00:16:c7:02:6e:83,,A-001,Network team,a-acc1\n"
          "AT-2,pc,OptiPlex 7090,CN0PC0002,aa:bb:cc:00:00:02,,A-102,Teacher Wang,\n"
          "AT-3,pc,OptiPlex 7090,CN0PC0003,not-a-mac,,A-101,Teacher Li,\n")      # bad row: reported, skipped

FIRMWARE = """
vendor: Cisco
models: ["WS-C3750-*"]
versions:
  - version: "12.2(55)SE10"
    valid_from: 2015-01-01
    valid_until: 2019-12-31
  - version: "12.2(55)SE12"
    valid_from: 2019-01-01
    valid_until: 2030-12-31
    preferred: true
"""


# the alert engine is wired too: building health counts its open alerts
RULES = """
rules:
  - name: slow-desk-port
    kind: threshold
    measurement: interface
    field: speed_mbps
    op: "<"
    value: 1000
    item_tags: ["ifName=Fa3/0/48"]
    for: 0s
    summary: "{device} {ifName} at {value} Mb/s"
"""


@pytest.fixture
def mqtt_users():
    return {"agent-a": secrets.token_hex(8), "collector": secrets.token_hex(8), "probe-a": secrets.token_hex(8)}


def _combine(*paths: Path) -> str:
    rows = {}
    for p in paths:
        for line in p.read_text().splitlines():
            if line.strip():
                rows[line.split("|", 1)[0]] = line
    return "\n".join(rows[k] for k in sorted(rows, key=lambda o: tuple(int(x) for x in o.split(".")))) + "\n"


def checks_of(rep: dict) -> dict:
    out = {}
    for b in rep["buildings"]:
        for c in b["checks"] + [x for r in b["rooms"] for x in r["checks"]]:
            out.setdefault((c["check"], c["subject"]), c)
    return out


def test_live_coverage_compliance_where_is_and_cli(tmp_path, mosquitto, mqtt_users):
    hw = tmp_path / "huawei.snmprec"
    hw.write_text(_combine(VENDORS / "huawei_s5720_lldp.snmprec", SNMPREC / "huawei_vrp_s5720.snmprec"))
    c_cisco, c_hw = "c3750" + secrets.token_hex(4), "s5720" + secrets.token_hex(4)
    sim = Snmpsim({c_cisco: VENDORS / "cisco_c3750.snmprec", c_hw: hw}).start()

    (tmp_path / "campus.yaml").write_text(CAMPUS)
    (tmp_path / "assets.csv").write_text(ASSETS)
    (tmp_path / "fw").mkdir()
    (tmp_path / "fw" / "cisco-c3750.yaml").write_text(FIRMWARE)
    db = tmp_path / "c.db"
    api_port = free_port()
    ccfg = write_config(tmp_path / "collector.yaml", mosquitto.port, "collector", mqtt_users["collector"], db,
                        api_port, client_id="collector-compliance-e2e",
                        extra="agents: {offline_after_s: 60}\n"
                              "campus: {model: [campus.yaml], registry: [assets.csv], firmware_dir: fw, cache_s: 0}\n"
                              "rules: {paths: [rules.yaml], db: alerts.db}\n")
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "agent.pass").write_text(mqtt_users["agent-a"] + "\n")
    acfg = tmp_path / "agent.yaml"
    acfg.write_text(
        "agent: {id: agent-a, site: north, building: A}\n"
        f"mqtt: {{host: 127.0.0.1, port: {mosquitto.port}, username: agent-a, "
        f"password_file: {tmp_path / 'agent.pass'}, keepalive_s: 5}}\n"
        f"queue: {{path: {tmp_path / 'queue.db'}, max_messages: 100000}}\n"
        "publish: {batch_interval_s: 0.3, heartbeat_s: 1, selfmetrics_s: 1}\n"
        "devices:\n"
        f"  - {{id: a-acc1, driver: snmp, interval_s: 4, room: A-001, type: switch, options: "
        f"{{host: 127.0.0.1, port: {sim.port}, version: '2c', community: {c_cisco}, timeout_s: 3}}}}\n"
        f"  - {{id: a-acc2, driver: snmp, interval_s: 4, room: A-001, type: switch, options: "
        f"{{host: 127.0.0.1, port: {sim.port}, version: '2c', community: {c_hw}, timeout_s: 3}}}}\n")

    def cli(*a, **kw):
        return subprocess.run([sys.executable, "-m", "campus_sense", *a], cwd=ROOT, capture_output=True, text=True,
                              timeout=120, **kw)

    tok = {r: cli("collector", "token", "create", "--role", r, "--config", str(ccfg), check=True).stdout.strip()
           for r in ("admin", "it", "security")}
    run = lambda *a: subprocess.Popen([sys.executable, "-m", "campus_sense", *a], cwd=ROOT,  # noqa: E731
                                      stdout=open(tmp_path / f"{a[0]}.log", "ab"), stderr=subprocess.STDOUT)
    coll = run("collector", "--config", str(ccfg))
    agent = probe = None
    base = f"http://127.0.0.1:{api_port}/api/v1"

    def req(method, path, role="it", **kw):
        return httpx.request(method, base + path, headers={"Authorization": f"Bearer {tok[role]}"}, timeout=30, **kw)

    def get(path, role="it", **kw):
        try:
            r = req("GET", path, role, **kw)
            return r.json() if r.status_code == 200 else None
        except httpx.HTTPError:
            return None

    try:
        wait_until(lambda: (get("/health") or {}).get("ingest", {}).get("connected"), 30, "collector subscribed")
        agent = run("agent", "--config", str(acfg))

        # ---- FED BY THE TEST (no SNMP source for these): survey probe, controller AP status, audit facts
        probe = Publisher(mosquitto.port, "probe-a", mqtt_users["probe-a"], agent="probe-a", building="A")
        now = int(time.time() * 1000)
        probe.durable("metrics", 1, [
            wire.sample("wifi_survey", "probe-a", now, {"signal_dbm": -48, "noise_dbm": -92, "channel": 6},
                        {"ssid": "Guest-Cafe", "bssid": "02:00:00:00:99:01", "room": "A-101"}),
            wire.sample("wifi_survey", "probe-a", now, {"signal_dbm": -55, "snr_db": 35, "channel": 36},
                        {"ssid": "Campus", "bssid": "10:4f:58:00:01:02", "room": "A-102"}),
            wire.sample("wifi_ap", "wlc-a", now, {"up": True}, {"ap": "AP-102", "ap_mac": "10:4f:58:00:01:00"}),
            wire.sample("wifi_clients", "wlc-a", now, {"clients": 23}, {"ap": "AP-102", "band": "5GHz"}),
        ])
        probe.durable("facts", 2, [wire.facts("a-acc1", now, {"insecure": {
            "snmp_communities": [c_cisco], "snmp_versions": ["2c"], "telnet_open": True, "http_mgmt": False,
            "https_mgmt": True, "clock_offset_s": 0.4}})])

        # ---- wait for live SNMP data: interfaces (first poll) and FDB/LLDP topology samples
        def where_fdb():
            w = get("/compliance/where", params={"q": FDB_MAC})
            return w if w and w["matches"] and w["matches"][0]["port"] else None
        w = wait_until(where_fdb, 120, "FDB sample of the C3750 reaches where-is")
        m = w["matches"][0]
        assert (m["switch"], m["port"], m["room"], m["building"]) == ("a-acc1", "Fa3/0/48", "A-102", "A")
        assert m["last_seen"] and m["asset_tag"] is None
        wait_until(lambda: (d := get("/compliance/devices/a-acc2")) and d["lldp"], 120, "LLDP samples of the S5720")

        # ---- coverage: each gap found
        cov = req("GET", "/compliance/coverage", params={"building": "A"}).json()
        c = checks_of(cov)
        assert c[("wifi_coverage", "A-101")]["status"] == "fail"                     # classroom without coverage
        assert "not heard" in c[("wifi_coverage", "A-101")]["message"]
        assert c[("wifi_coverage", "A-102")]["status"] == "pass"
        desk = c[("desk_port_speed", "a-acc1 Fa3/0/48")]
        assert desk["status"] == "fail" and desk["room"] == "A-102"                  # 100 Mb/s desk port
        assert c[("uplink_redundancy", "a-acc1")]["status"] == "fail"                # single uplink
        assert c[("uplink_redundancy", "a-acc2")]["status"] == "pass"                # two 10G uplinks up
        assert c[("agent_online", "A")]["status"] == "pass"

        # ---- compliance: unknown devices, outdated firmware, telnet
        comp = req("GET", "/compliance/report", params={"building": "A"}, role="admin").json()
        k = checks_of(comp)
        unknown = {s for (chk, s) in k if chk == "inventory_unknown" and k[(chk, s)]["status"] == "fail"}
        assert "48:8e:ef:71:66:e0" in unknown, unknown                               # a-acc2 (Huawei): not registered
        assert any(FDB_MAC in s for s in unknown), unknown                           # learnt on a desk port
        fw = k[("firmware", "a-acc1")]
        assert fw["status"] == "fail" and "12.2(55)SE10" in json.dumps(fw)            # approval expired
        assert k[("telnet", "a-acc1")]["status"] == "fail"
        csv = req("GET", "/compliance/report", params={"format": "csv"})
        assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
        assert "firmware" in csv.text and FDB_MAC in csv.text
        html = req("GET", "/compliance/coverage", params={"format": "html", "building": "A"})
        assert "text/html" in html.headers["content-type"] and "Fa3/0/48" in html.text

        # ---- admin health + device detail with live data
        h = get("/compliance/buildings/A/health")
        assert h["devices"]["online"] >= 2 and h["ap_load"]["clients_total"] == 23
        assert h["interfaces"]["total"] > 100
        h = wait_until(lambda: (x := get("/compliance/buildings/A/health")) and x.get("open_alerts") and x, 60,
                       "the alert engine's open alert counted in building health")
        assert h["open_alerts"] == 1
        d = get("/compliance/devices/a-acc1")
        assert d["facts"]["serial"] == "CAT0952N20R" and d["collector"]["reachable"] is True
        assert d["firmware"]["status"] == "expired"
        d2 = get("/compliance/devices/a-acc2")
        assert {(x["local_port"], x["remote_device"]) for x in d2["lldp"]} >= {("XGigabitEthernet0/0/1", "CE-NG")}

        # ---- roles + history
        assert req("GET", "/compliance/coverage", role="security").status_code == 403
        assert req("POST", "/compliance/snapshot", role="it").status_code == 403
        assert req("POST", "/compliance/snapshot", role="admin").json()["history_rows"] > 0
        hist = get("/compliance/history", params={"kind": "compliance", "building": "A"})
        assert len(hist) == 1 and hist[0]["fail"] >= 3

        # ---- the CLI on the same (live) database, read-only
        r = cli("report", "coverage", "--building", "A", "--format", "json", "--db", str(db), "--no-record")
        assert r.returncode == 0, r.stderr
        c2 = checks_of(json.loads(r.stdout))
        assert c2[("desk_port_speed", "a-acc1 Fa3/0/48")]["status"] == "fail"
        assert c2[("wifi_coverage", "A-101")]["status"] == "fail"
        assert c2[("uplink_redundancy", "a-acc1")]["status"] == "fail"
        r = cli("report", "compliance", "--building", "A", "--format", "csv", "--db", str(db),
                "--firmware-dir", str(tmp_path / "fw"), "--no-record")
        assert r.returncode == 0, r.stderr
        assert FDB_MAC in r.stdout and "12.2(55)SE10" in r.stdout
        r = cli("report", "where", FDB_MAC, "--db", str(db))
        assert r.returncode == 0 and json.loads(r.stdout)["matches"][0]["port"] == "Fa3/0/48"
    finally:
        if probe is not None:
            probe.close()
        for p in (agent, coll):
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
        sim.stop()
    assert coll.returncode == 0
    log = (tmp_path / "collector.log").read_text()
    assert "Traceback" not in log
    assert "assets.csv: row 4, column 'mac'" in log                                   # bad registry row named
