"""`campus-sense discover` against real peers on distinct loopback addresses of 127.0.1.0/27:
snmpsimd processes serving recordings of real devices (Cisco 2960X access switch, Huawei S5720 as
the core, Ruckus ZoneDirector, UniFi AP, a Linux host answering SNMPv3 only), PJLink projectors
(one with a password), an ONVIF camera behind a spec-built WS-Discovery responder, and a sentinel
on 127.0.1.200 (outside the scope, but an LLDP and CDP neighbour of the access switch) that must
receive nothing. The access switch sees the core over CDP only (the Huawei in `lldp compliance cdp`
mode), the core sees the access switch over LLDP. The proposed agent.yaml passes `agent --check`
and, run, delivers data of every device to a real collector; the campus fragment carries the
uplink seen over CDP.
"""
from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.collector_util import wait_until, write_config
from tests.peers import Mosquitto, free_port
from tests.peers_discover import (FIX, OnvifSimAt, PJLinkAt, Sentinel, SnmpsimAt, cdp_lines, derive_recording,
                                  lldp_lines)
from tests.wsd_responder import WsdResponder

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
NET = "127.0.1.0/27"
ACC, CORE, WLC, AP, LINUX, PJ1, PJ2, CAM, OUTSIDE = ("127.0.1.1", "127.0.1.29", "127.0.1.3", "127.0.1.4",
                                                     "127.0.1.5", "127.0.1.10", "127.0.1.11", "127.0.1.20",
                                                     "127.0.1.200")


def cli(*args, timeout=180):
    return subprocess.run([PY, "-m", "campus_sense", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def building(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("discover")
    snmp_port = free_port(__import__("socket").SOCK_DGRAM)
    community = "c" + secrets.token_hex(6)
    v3 = {"user": "mon" + secrets.token_hex(2), "auth_key": "a-" + secrets.token_hex(8), "auth_proto": "SHA",
          "priv_key": "p-" + secrets.token_hex(8), "priv_proto": "AES"}
    rec = tmp / "rec"
    rec.mkdir()
    acc = derive_recording(FIX / "snmprec/cisco_ios_c2960x.snmprec", rec / "acc.snmprec", "a-acc1",
                           "Building A, Room A-101",
                           # the core: CDP only (a Catalyst runs CDP, LLDP is off by default)
                           cdp_lines(11149, 1, "a-core", "XGigabitEthernet0/0/1", "S5720-56C-PWR-EI-AC",
                                     "Huawei Versatile Routing Platform Software", CORE)
                           # x-core-2 (outside): LLDP without a management address + CDP with one: one neighbour
                           + lldp_lines(11150, 2, "48:8e:ef:71:61:60", "Te1/0/1", "x-core-2",
                                        "Cisco IOS XE", None)
                           + cdp_lines(11150, 3, "x-core-2.campus.local", "TenGigabitEthernet1/0/1",
                                       "cisco C9500-24Y4C", "Cisco IOS Software [Amsterdam], Catalyst L3 Switch",
                                       OUTSIDE))
    core = derive_recording(FIX / "snmprec/huawei_vrp_s5720.snmprec", rec / "core.snmprec", "a-core", "A-001",
                            lldp_lines(54, 1, "00:11:22:33:44:01", "Gi3/0/49", "a-acc1", "Cisco IOS", ACC))
    wlc = derive_recording(FIX / "snmprec_vendors/ruckus_zd1200.snmprec", rec / "wlc.snmprec", location="A-001")
    ap = derive_recording(FIX / "snmprec_vendors/unifi_uap_radio_vap.snmprec", rec / "ap.snmprec",
                          location="room/A-102")
    peers: list = []
    sims = [SnmpsimAt({community: acc}, ACC, snmp_port), SnmpsimAt({community: core}, CORE, snmp_port),
            SnmpsimAt({community: wlc}, WLC, snmp_port), SnmpsimAt({community: ap}, AP, snmp_port),
            SnmpsimAt({"hostres": FIX / "snmprec_vendors/linux_netsnmp_hostres.snmprec"}, LINUX, snmp_port, v3=v3)]
    for s in sims:
        s.start()
        peers.append(s)
    pj_pw = "pj-" + secrets.token_hex(4)
    peers += [PJLinkAt(PJ1), PJLinkAt(PJ2, password=pj_pw)]
    cam_user, cam_pw = "monitor", "o-" + secrets.token_hex(6)
    cam = OnvifSimAt(cam_user, cam_pw).start_at(CAM)
    wsd = WsdResponder(CAM, [f"http://{CAM}:{cam.port}/onvif/device_service"],
                       ["onvif://www.onvif.org/type/video_encoder", "onvif://www.onvif.org/location/room/A-103",
                        "onvif://www.onvif.org/name/cam-a103", "onvif://www.onvif.org/hardware/SC-200"]).start()
    sentinel = Sentinel(OUTSIDE, [snmp_port, 3702], [4352])
    for s in sims[:4]:  # (the v3-only one cannot answer the v2c readiness probe)
        s.wait()
    # credentials: a wrong community first, then the right one; the v3 user; onvif and pjlink secrets
    sec = tmp / "secrets"
    sec.mkdir()
    for name, value in (("wrong", "nope-" + secrets.token_hex(3)), ("ro", community), ("auth", v3["auth_key"]),
                        ("priv", v3["priv_key"]), ("onvif", cam_pw), ("pjlink", pj_pw)):
        (sec / name).write_text(value + "\n")
    creds = tmp / "creds.yaml"
    creds.write_text(
        "snmp:\n  v2c:\n    - {community_file: secrets/wrong}\n    - {community_file: secrets/ro}\n"
        f"  v3:\n    - {{user: {v3['user']}, auth_protocol: SHA, auth_key_file: secrets/auth, priv_protocol: AES,"
        " priv_key_file: secrets/priv, context: hostres}\n"
        f"onvif:\n  - {{username: {cam_user}, password_file: secrets/onvif}}\n"
        "pjlink:\n  - {password_file: secrets/pjlink}\n")
    yield {"tmp": tmp, "snmp_port": snmp_port, "creds": creds, "sentinel": sentinel, "wsd": wsd,
           "community": community}
    wsd.stop()
    cam.stop()
    sentinel.stop()
    for p in peers:
        p.stop()


def test_dry_run_sends_nothing(building):
    s = building["sentinel"]
    before = len(s.hits)
    r = cli("discover", f"{OUTSIDE}/32", "--community", "x", "--snmp-port", str(building["snmp_port"]),
            "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["addresses"] == 1 and plan["protocols"] == ["snmp", "onvif", "pjlink"] and not plan["multicast"]
    assert len(s.hits) == before


@pytest.fixture
def broker(tmp_path):
    users = {"collector": secrets.token_hex(8), "bldg-a": secrets.token_hex(8)}
    (tmp_path / "mosq").mkdir()
    b = Mosquitto(users, tmp_path / "mosq").start()
    b.users = users
    yield b
    b.stop()


def test_discover_propose_check_and_deliver(building, broker, tmp_path):
    tmp, port = building["tmp"], building["snmp_port"]
    users = broker.users
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "mqtt.pass").write_text(users["bldg-a"] + "\n")
    (etc / "agent.yaml").write_text(
        "# enrolled by campus-sense enrol\n"
        "agent: {id: bldg-a, site: north, building: A}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, username: bldg-a, password_file: mqtt.pass}}\n"
        "queue: {path: queue.db}\n"
        "publish: {batch_interval_s: 0.3, heartbeat_s: 2}\n"
        "devices: []\n")
    r = cli("discover", NET, "--credentials", str(building["creds"]), "--snmp-port", str(port),
            "--output", str(etc / "agent.yaml"), "--json", "--timeout", "0.5", "--concurrency", "4",
            "--interval", "2", "--rate", "200")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    kinds = {d["ip"]: (d["kind"], d["id"]) for d in doc["devices"]}
    assert kinds == {ACC: ("switch", "a-acc1"), CORE: ("switch", "a-core"), WLC: ("controller", "controller-127-0-1-3"),
                     AP: ("ap", "ap-127-0-1-4"), LINUX: ("server", "server-127-0-1-5"),
                     PJ1: ("projector", "projector-A-101"), PJ2: ("projector", "projector-A-101-2"),
                     CAM: ("camera", "cam-a103")}, kinds
    by = {d["ip"]: d for d in doc["devices"]}
    assert by[CORE]["via"] == "cdp"                   # probed as the access switch's CDP neighbour
    acc_nb = {n["sys_name"]: n for n in by[ACC]["neighbours"]}
    assert acc_nb["a-core"] == {"local_port": "Gi3/0/49", "sys_name": "a-core", "port_id": "XGigabitEthernet0/0/1",
                                "mgmt_ip": CORE, "protocols": ["cdp"]}
    assert acc_nb["x-core-2"]["protocols"] == ["lldp", "cdp"] and len(acc_nb) == 2   # seen by both: once
    assert acc_nb["x-core-2"]["mgmt_ip"] == OUTSIDE and acc_nb["x-core-2"]["local_port"] == "Gi3/0/50"
    assert [n["mgmt_ip"] for n in by[CORE]["neighbours"] if n["protocols"] == ["lldp"]] == [ACC]
    assert by[ACC]["room"] == "A-101" and by[AP]["room"] == "A-102" and by[CAM]["room"] == "A-103"
    assert by[CAM]["protocols"] == ["onvif"] and by[CAM]["onvif"]["xaddr"].startswith(f"http://{CAM}:")
    assert [o.get("protocols") for o in doc["outside"] if o.get("ip") == OUTSIDE] == [["lldp", "cdp"]]
    assert building["sentinel"].hits == []            # nothing beyond the CIDR, LLDP/CDP neighbour included
    assert "progress" not in r.stdout and "addresses" in r.stderr   # progress on stderr
    # ---- the proposal: base sections kept, credentials referenced (files, not values), --check passes
    text = (etc / "agent.yaml").read_text()
    assert text.startswith("# enrolled by campus-sense enrol\nagent: {id: bldg-a")
    assert building["community"] not in text and "community_file: " in text
    assert (etc / "agent.yaml.bak").exists()
    r2 = cli("agent", "--config", str(etc / "agent.yaml"), "--check")
    assert r2.returncode == 0 and "8 devices" in r2.stdout, r2.stdout + r2.stderr
    frag = (etc / "campus.discovered.yaml").read_text()
    assert "{device: a-acc1, port: Gi3/0/49, role: uplink, peer: a-core, peer_port: XGigabitEthernet0/0/1}" in frag
    assert frag.count("{device: a-acc1, port: Gi3/0/50, role: uplink}") == 1   # x-core-2: not discovered
    assert "peer_port: XGigabitEthernet0/0/1}   # CDP" in frag
    assert "{id: a-core, role: core}" in frag and "{id: a-acc1, role: access}" in frag
    assert "{id: A-101, type: other}" in frag
    # the fragment imports into the campus model on top of what the agent declares (no type/room repeated)
    from campus_sense.yamlconf import load_yaml
    from collector.campus.declared import device_type
    from collector.campus.model import Building, CampusModel, Device, Room, Site, load_campus
    agent_cfg, _ = load_yaml(etc / "agent.yaml")
    decl = CampusModel(sites={"north": Site(id="north")}, buildings={"A": Building(id="A", site="north")})
    for dv in agent_cfg["devices"]:
        if dv.get("room"):
            decl.rooms.setdefault(dv["room"], Room(id=dv["room"], building="A", type="other"))
        decl.devices[dv["id"]] = Device(id=dv["id"], type=device_type(dv.get("type")), room=dv.get("room"),
                                        building="A")
    res = load_campus([etc / "campus.discovered.yaml"], base=decl, declared=decl)
    assert not res.errors, res.errors
    assert res.value.devices["a-acc1"].role == "access" and res.value.devices["a-acc1"].type == "switch"
    assert res.value.ports[("a-acc1", "Gi3/0/49")].peer == "a-core"
    # a second run adds nothing: every device is already configured
    r3 = cli("discover", NET, "--credentials", str(building["creds"]), "--snmp-port", str(port),
             "--output", str(etc / "agent.yaml"), "--json", "--timeout", "0.5", "--no-lldp")
    assert r3.returncode == 0 and json.loads(r3.stdout)["proposed"] == [], r3.stderr

    # ---- run it: every proposed device delivers data to a real collector
    api = free_port()
    cdir = tmp_path / "collector"
    cdir.mkdir()
    cfg = write_config(cdir / "collector.yaml", broker.port, "collector", users["collector"], cdir / "c.db", api,
                       extra="ingest: {batch_messages: 50, batch_ms: 20}\n")
    procs = []
    try:
        for args, log in ((["collector", "--config", str(cfg)], cdir / "log"),
                          (["agent", "--config", str(etc / "agent.yaml")], etc / "agent.log")):
            with open(log, "ab") as f:
                procs.append(subprocess.Popen([PY, "-m", "campus_sense", *args], cwd=ROOT, stdout=f, stderr=f))
        tok = wait_until(lambda: cli("collector", "token", "create", "--role", "admin", "--config",
                                     str(cfg)).stdout.strip(), 30, "token")
        want = {v[1] for v in kinds.values()}
        last: dict = {}

        def ok_devices():
            for p, log in zip(procs, (cdir / "log", etc / "agent.log")):
                assert p.poll() is None, log.read_text()[-3000:]
            try:
                r = httpx.get(f"http://127.0.0.1:{api}/api/v1/devices", headers={"Authorization": f"Bearer {tok}"},
                              timeout=5)
            except httpx.HTTPError:
                return False
            last["devices"] = {d["id"]: (d.get("reachable"), d.get("reason"), d.get("error"))
                               for d in r.json()} if r.status_code == 200 else r.text
            return r.status_code == 200 and want <= {d["id"] for d in r.json() if d.get("reachable")}
        try:
            wait_until(ok_devices, 150, "every proposed device polled successfully")
        except TimeoutError:
            pytest.fail(f"devices: {last}\nagent log: {(etc / 'agent.log').read_text()[-3000:]}")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


async def test_modbus_device_identification_probe():
    """--modbus: Read Device Identification (0x2B/0x0E) against pymodbus' server; classified as a sensor,
    proposed as a modbus device that agent.yaml validation accepts."""
    from pymodbus.datastore import ModbusDeviceContext, ModbusServerContext, ModbusSparseDataBlock
    from pymodbus.pdu.device import ModbusDeviceIdentification
    from pymodbus.server import ModbusTcpServer

    from edge_agent.discover import creds as credmod
    from edge_agent.discover import propose
    from edge_agent.discover.probes import Scope
    from edge_agent.discover.sweep import Discovery, Settings
    host, port = "127.0.1.40", free_port()
    ident = ModbusDeviceIdentification(info_name={"VendorName": "Acme Cold", "ProductCode": "CC-9",
                                                  "MajorMinorRevision": "1.2"})
    ctx = ModbusServerContext(devices={1: ModbusDeviceContext(hr=ModbusSparseDataBlock({0: 30}))}, single=False)
    srv = ModbusTcpServer(ctx, address=(host, port), identity=ident)
    import asyncio
    task = asyncio.create_task(srv.serve_forever())
    await asyncio.sleep(0.3)
    try:
        s = Settings(snmp=False, onvif=False, pjlink=False, modbus=True, modbus_port=port, timeout=1.0)
        res = await Discovery(Scope([f"{host}/32"]), credmod.load(None), s).run()
    finally:
        await srv.shutdown()
        task.cancel()
    f = res.found[host]
    assert (f.kind, f.modbus["vendor"], f.modbus["product_code"]) == ("sensor", "Acme Cold", "CC-9")
    propose.assign_ids(res.found, set())
    dev, _ = propose.device_entry(f, credmod.load(None), propose.Secrets(None, False), 30)
    assert dev["driver"] == "modbus" and dev["options"] == {"host": host, "unit": 1, "port": port}


def test_merge_lldp_and_cdp_neighbours():
    """A neighbour both protocols report on the same local port counts once (by address or host
    name, CDP's domain and serial suffix ignored); another device on that port stays apart."""
    from edge_agent.discover.probes import cdp_neighbour, merge_neighbours
    lldp = [{"local_port": "Gi1/0/1", "ifIndex": 1, "sys_name": "dist-1", "port_id": "Te1/1"},
            {"local_port": "Gi1/0/2", "ifIndex": 2, "sys_name": "ap-7", "mgmt_ip": "10.0.0.7"}]
    cdp = [cdp_neighbour(r) for r in (
        {"ifIndex": 1, "local_port": "Gi1/0/1", "device_index": 3, "device_id": "DIST-1.campus.local(FOC1234X)",
         "device_port": "TenGigabitEthernet1/1", "platform": "cisco WS-C3850", "address_type": "ip",
         "address": "10.0.0.2"},
        {"ifIndex": 2, "local_port": "Gi1/0/2", "device_index": 4, "device_id": "SEP0011223344",
         "device_port": "Port 1", "platform": "Cisco IP Phone 7841", "address_type": "ip", "address": "10.0.0.9"},
        {"ifIndex": 3, "local_port": "Gi1/0/3", "device_index": 5, "device_id": "acc-9", "address_type": "254",
         "address": "0a0b"})]
    got = merge_neighbours(lldp, cdp)
    assert [(n["local_port"], n.get("mgmt_ip"), n["protocols"]) for n in got] == [
        ("Gi1/0/1", "10.0.0.2", ["lldp", "cdp"]), ("Gi1/0/2", "10.0.0.7", ["lldp"]),
        ("Gi1/0/2", "10.0.0.9", ["cdp"]), ("Gi1/0/3", None, ["cdp"])]
    assert got[0]["sys_name"] == "dist-1" and got[0]["port_id"] == "Te1/1"   # LLDP's values kept
