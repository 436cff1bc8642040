"""Traps and syslog end to end: net-snmp snmptrap/snmpinform and util-linux logger -> a real agent
process (snmp_trap and syslog drivers) -> Mosquitto -> a real collector process with the SHIPPED
rules. Events appear in /api/v1/events under the resolved device id (the sender's address for an
unlisted sender), archive lines only in /api/v1/syslog, and port flapping from traps and syslog
together raises the shipped ``port-flapping`` alert."""
from __future__ import annotations

import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.collector_util import wait_until, write_config
from tests.peers import Mosquitto, free_port
from tests.peers_syslog import logger
from tests.peers_traps import have_net_snmp, run

pytestmark = [pytest.mark.timeout(120), pytest.mark.skipif(not have_net_snmp(), reason="net-snmp tools missing")]
ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
LINK = ["1.3.6.1.2.1.2.2.1.1.5", "i", "5", "1.3.6.1.2.1.31.1.1.1.1.5", "s", "GigabitEthernet0/5"]


@pytest.fixture
def stack(tmp_path):
    users = {"collector": secrets.token_hex(8), "bldg-a": secrets.token_hex(8)}
    (tmp_path / "mosq").mkdir()
    broker = Mosquitto(users, tmp_path / "mosq").start()
    cdir = tmp_path / "collector"
    cdir.mkdir()
    api = free_port()
    cfg = write_config(cdir / "collector.yaml", broker.port, "collector", users["collector"], cdir / "c.db", api,
                       extra=("ingest: {batch_messages: 50, batch_ms: 20}\n"
                              f"rules: {{paths: [{ROOT / 'firmware_configs/rules/campus-default.yaml'}], "
                              "db: alerts.db, tick_s: 0.5}\n"))
    adir = tmp_path / "agent"
    adir.mkdir()
    (adir / "mqtt.pass").write_text(users["bldg-a"] + "\n")
    community = "tr-" + secrets.token_hex(6)
    (adir / "trap.community").write_text(community + "\n")
    trap_port, udp_port, tcp_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM), free_port()
    (adir / "agent.yaml").write_text(
        "agent: {id: bldg-a, site: north, building: A}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, username: bldg-a, password_file: mqtt.pass}}\n"
        "queue: {path: queue.db}\n"
        "publish: {batch_interval_s: 0.2, heartbeat_s: 2, reconnect_max_s: 1}\n"
        "devices:\n"
        "  - id: traps\n    driver: snmp_trap\n    room: A-001\n"
        f"    options: {{listen: \"127.0.0.1:{trap_port}\", communities: [{{community_file: trap.community}}], "
        "devices: {\"127.0.0.1\": a-acc1}}\n"
        "  - id: syslog\n    driver: syslog\n    room: A-001\n"
        f"    options: {{listen_udp: \"127.0.0.1:{udp_port}\", listen_tcp: \"127.0.0.1:{tcp_port}\", "
        "devices: {\"127.0.0.1\": a-acc1}}\n")
    procs = []

    def start(args, log):
        f = open(log, "ab")
        procs.append(subprocess.Popen([PY, "-m", "campus_sense", *args], cwd=ROOT, stdout=f, stderr=f))
        return procs[-1]
    col = start(["collector", "--config", str(cfg)], cdir / "collector.log")
    base = f"http://127.0.0.1:{api}/api/v1"

    def up():
        assert col.poll() is None, (cdir / "collector.log").read_text()[-3000:]
        try:
            return httpx.get(f"{base}/health", timeout=2).json()["ingest"]["connected"]
        except (httpx.HTTPError, ValueError, KeyError):
            return False
    wait_until(up, 60, "collector up")
    agent = start(["agent", "--config", str(adir / "agent.yaml")], adir / "agent.log", )
    tok = subprocess.run([PY, "-m", "campus_sense", "collector", "token", "create", "--role", "admin", "--config",
                          str(cfg)], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    yield {"base": base, "h": {"Authorization": f"Bearer {tok}"}, "agent": agent, "adir": adir, "cdir": cdir,
           "trap": f"127.0.0.1:{trap_port}", "udp": udp_port, "tcp": tcp_port, "community": community}
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    broker.stop()


def test_traps_and_syslog_reach_events_archive_and_alerts(stack):
    base, h = stack["base"], stack["h"]

    def listening():
        assert stack["agent"].poll() is None, (stack["adir"] / "agent.log").read_text()[-3000:]
        return "listening on 127.0.0.1" in (stack["adir"] / "agent.log").read_text() and \
            "syslog syslog: listening" in (stack["adir"] / "agent.log").read_text()
    wait_until(listening, 60, "agent listening")
    for k in range(3):
        oid = "1.3.6.1.6.3.1.1.5.3" if k % 2 == 0 else "1.3.6.1.6.3.1.1.5.4"
        r = run(["snmptrap", "-v2c", "-c", stack["community"], stack["trap"], "", oid, *LINK])
        assert r.returncode == 0, r.stderr
    r = run(["snmpinform", "-v2c", "-c", stack["community"], "-r", "1", "-t", "3", stack["trap"], "",
             "1.3.6.1.2.1.17.0.2"])
    assert r.returncode == 0, r.stderr                          # the agent's receiver answered the INFORM
    for k in range(3):
        st = "up" if k % 2 == 0 else "down"
        logger(stack["udp"], f"%LINK-3-UPDOWN: Interface GigabitEthernet0/5, changed state to {st}", "-d",
               "--rfc3164", tag="", priority="local7.err")
    for k in range(5):
        logger(stack["tcp"], f"Failed password for invalid user admin{k} from 10.9.9.9 port 22 ssh2", "-T",
               "--rfc3164", tag="sshd", priority="auth.warning")

    def events():
        r = httpx.get(f"{base}/events", headers=h, params={"limit": 1000}, timeout=5)
        assert r.status_code == 200, r.text
        return r.json()
    def settled():
        e = events()
        return e if (len([x for x in e if x["type"] in ("link_down", "link_up")]) >= 6
                     and len([x for x in e if x["type"] == "login_failure"]) >= 5) else None
    try:
        ev = wait_until(settled, 60, "events")
    except TimeoutError:
        arch = httpx.get(f"{base}/syslog", headers=h, params={"limit": 100}, timeout=5).json()
        raise AssertionError(f"events: {[(e['type'], e['device'], e['data'].get('trap')) for e in events()]}\n"
                             f"archive: {[(x['program'], x['mnemonic'], x['msg'][:60]) for x in arch['lines']]}\n"
                             + (stack["adir"] / "agent.log").read_text()[-2000:]) from None
    links = [e for e in ev if e["type"] in ("link_down", "link_up")]
    assert len(links) == 6 and {e["device"] for e in links} == {"a-acc1"} and all(e["agent"] == "bldg-a" for e in links)
    traps = [e for e in links if "trap" in e["data"]]
    assert sorted(e["data"]["trap"] for e in traps) == ["linkDown", "linkDown", "linkUp"]
    assert all(e["tags"]["ifName"] == "GigabitEthernet0/5" for e in links)
    assert [e["type"] for e in ev if e["data"].get("trap") == "topologyChange"] == ["stp_topology_change"]
    assert not [e for e in ev if e["type"] == "syslog"]             # the archive is not in /events
    lines = httpx.get(f"{base}/syslog", headers=h, params={"q": "GigabitEthernet0/5", "limit": 100}, timeout=5).json()
    assert len(lines["lines"]) == 3 and {x["device"] for x in lines["lines"]} == {"a-acc1"}
    fails = httpx.get(f"{base}/syslog", headers=h, params={"program": "sshd"}, timeout=5).json()["lines"]
    assert len(fails) == 5 and all(x["severity"] == 4 and x["facility"] == 4 for x in fails)

    def alerts():
        r = httpx.get(f"{base}/alerts", headers=h, params={"state": "all"}, timeout=5)
        assert r.status_code == 200, r.text
        return {a["rule"]: a for a in r.json()}
    got = wait_until(lambda: (a := alerts()) and {"port-flapping", "repeated-login-failures"} <= set(a) and a, 30,
                     "alerts")
    flap = got["port-flapping"]
    assert flap["state"] == "firing" and flap["subject"] == {"id": "a-acc1", "tags": {"ifName": "GigabitEthernet0/5"}}
    assert got["repeated-login-failures"]["subject"]["id"] == "a-acc1"
    # counters of the receivers reach the collector as samples
    dev = wait_until(lambda: [d for d in httpx.get(f"{base}/devices", headers=h, timeout=5).json()
                              if d["id"] in ("traps", "syslog", "a-acc1")] or None, 10, "devices")
    assert {d["id"] for d in dev} >= {"a-acc1"}
