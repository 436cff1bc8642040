"""The shipped default rule ``uplink-down`` fires when a real uplink goes down, end to end:
simulated 48-port access switch (SNMP v2c, campus_sense.sim.snmp_agent) -> real agent process (snmp
driver, device tagged ``role: access`` as the agent README shows) -> Mosquitto -> real collector
process with the SHIPPED rules (firmware_configs/rules/campus-default.yaml) and a campus model whose
``ports:`` say which port is the uplink. A desk port going down raises nothing; the uplink going
down fires ``uplink-down`` for that port, coming back resolves it.

Before the fix the port roles of the campus model never reached the engine, and the device tag
``role`` (copied into every interface item) would have hidden them anyway.
"""
from __future__ import annotations

import asyncio
import secrets
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from campus_sense.sim.snmp_agent import start_simulated_device
from tests.collector_util import wait_until, write_config
from tests.peers import Mosquitto, free_port

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable

CAMPUS = """\
sites:
  - id: north
    buildings:
      - id: A
        rooms:
          - {id: A-001, type: server}
devices:
  - {id: a-core, type: switch, role: core, room: A-001}
  - {id: a-acc1, type: switch, role: access, room: A-001}
ports:
  - {device: a-acc1, port: Te1/1/1, role: uplink, peer: a-core}
  - {device: a-acc1, port: te1/1/2, role: uplink, peer: a-core}   # case as typed by a human
"""


class SimThread:
    """The simulated switch on its own event loop thread (the agent polls it from another process)."""

    def __init__(self, community: str):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.dev = asyncio.run_coroutine_threadsafe(
            start_simulated_device("access", community, seed=7), self.loop).result(10)

    def set_oper(self, idx: int, up: bool) -> None:
        self.loop.call_soon_threadsafe(self.dev.set_oper, idx, up)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.dev.close)
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture
def stack(tmp_path):
    users = {"collector": secrets.token_hex(8), "bldg-a": secrets.token_hex(8)}
    (tmp_path / "mosq").mkdir()
    broker = Mosquitto(users, tmp_path / "mosq").start()
    community = "c-" + secrets.token_hex(6)
    sim = SimThread(community)
    cdir = tmp_path / "collector"
    cdir.mkdir()
    (cdir / "campus.yaml").write_text(CAMPUS)
    api = free_port()
    cfg = write_config(cdir / "collector.yaml", broker.port, "collector", users["collector"], cdir / "c.db", api,
                       extra=("ingest: {batch_messages: 50, batch_ms: 20}\n"
                              f"rules: {{paths: [{ROOT / 'firmware_configs/rules/campus-default.yaml'}], "
                              "db: alerts.db, tick_s: 0.5}\n"
                              "campus: {model: [campus.yaml], snapshot_interval_s: 0}\n"))
    adir = tmp_path / "agent"
    adir.mkdir()
    (adir / "mqtt.pass").write_text(users["bldg-a"] + "\n")
    (adir / "community").write_text(community + "\n")
    (adir / "agent.yaml").write_text(
        "agent: {id: bldg-a, site: north, building: A}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, username: bldg-a, password_file: mqtt.pass}}\n"
        "queue: {path: queue.db}\n"
        "publish: {batch_interval_s: 0.2, heartbeat_s: 2, reconnect_max_s: 1}\n"
        "devices:\n"
        "  - id: a-acc1\n    driver: snmp\n    interval_s: 1\n    room: A-001\n    type: switch\n"
        "    tags: {role: access}\n"
        f"    options: {{host: 127.0.0.1, port: {sim.dev.port}, community_file: community, "
        "topology_interval_s: 0}\n")
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
    agent = start(["agent", "--config", str(adir / "agent.yaml")], adir / "agent.log")
    tok = subprocess.run([PY, "-m", "campus_sense", "collector", "token", "create", "--role", "admin", "--config",
                          str(cfg)], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    yield {"sim": sim, "base": base, "h": {"Authorization": f"Bearer {tok}"}, "agent": agent, "adir": adir,
           "cdir": cdir}
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    sim.close()
    broker.stop()


def test_shipped_uplink_down_fires_for_the_campus_uplink_only(stack):
    base, h, sim = stack["base"], stack["h"], stack["sim"]

    def alerts():
        assert stack["agent"].poll() is None, (stack["adir"] / "agent.log").read_text()[-3000:]
        r = httpx.get(f"{base}/alerts", headers=h, params={"state": "all"} , timeout=5)
        assert r.status_code == 200, r.text
        return [a for a in r.json() if a["rule"] == "uplink-down"]

    def polled():
        r = httpx.get(f"{base}/devices", headers=h, timeout=5)
        return r.status_code == 200 and any(d["id"] == "a-acc1" and d.get("last_poll_ms") for d in r.json())
    wait_until(polled, 60, "a-acc1 polled")

    sim.set_oper(5, False)          # a desk port (Gi1/0/5): not an uplink, no alert
    sim.set_oper(50, False)         # Te1/1/2: an uplink, declared in lower case in campus.yaml
    fired = wait_until(lambda: [a for a in alerts() if a["state"] == "firing"], 60, "uplink-down firing")
    assert [a["subject"]["tags"]["ifName"] for a in fired] == ["Te1/1/2"], fired
    assert fired[0]["severity"] == "critical" and "Uplink Te1/1/2 on a-acc1 is down" in fired[0]["summary"]
    sim.set_oper(49, False)         # Te1/1/1 as well
    wait_until(lambda: len([a for a in alerts() if a["state"] == "firing"]) == 2, 60, "second uplink firing")
    assert {a["subject"]["tags"]["ifName"] for a in alerts()} == {"Te1/1/1", "Te1/1/2"}

    sim.set_oper(50, True)
    wait_until(lambda: [a["subject"]["tags"]["ifName"] for a in alerts() if a["state"] == "firing"] == ["Te1/1/1"],
               60, "Te1/1/2 resolved by link_up")


def test_port_roles_reach_the_engine_and_win_over_a_device_tag(tmp_path):
    """In process: campus model in the collector DB -> PortRoles -> DeviceMeta -> RuleEngine, with the
    shipped rules. A re-imported model applies without restarting (the view reads through)."""
    from collector.alertcore.topology import DeviceMeta
    from collector.campus.model import load_campus
    from collector.alertcore import AlertStore, RuleEngine, load_rules
    from collector.store.campus import CampusStore
    from collector.store.sqlite import SQLiteStore

    db = str(tmp_path / "c.db")
    store = SQLiteStore(db)
    try:
        (tmp_path / "campus.yaml").write_text(CAMPUS)
        CampusStore(db).save_campus(load_campus([tmp_path / "campus.yaml"], strict=True).value)
        t = 1_795_392_000_000
        from campus_sense import wire
        birth = wire.encode_state("birth", "bldg-a", t, devices=[{"id": "a-acc1", "type": "switch", "room": "A-001",
                                                                  "tags": {"role": "access"}}])
        metrics = wire.encode_durable("metrics", "bldg-a", "e1", 1, t, [wire.encode_item(
            wire.sample("agent_poll", "a-acc1", t, {"ok": True, "duration_s": 0.1}, {"driver": "snmp"}))])
        store.apply([wire.decode(wire.topic("north", "A", "bldg-a", "birth"), birth),
                     wire.decode(wire.topic("north", "A", "bldg-a", "metrics"), metrics)], [])
        meta = DeviceMeta(store)
        assert meta("a-acc1")["tags"] == {"role": "access"} and meta("a-acc1")["ports"]["TE1/1/1"] == "uplink"
        eng = RuleEngine(load_rules(ROOT / "firmware_configs/rules/campus-default.yaml"), AlertStore(":memory:"),
                         device_meta=meta, clock=lambda: t + 1000)

        def ev(typ, ifname, idx, dt=0):
            return {"d": "a-acc1", "type": typ, "t": t + dt, "severity": "warning",
                    "tags": {"role": "access", "room": "A-001", "type": "switch", "ifIndex": str(idx), "ifName": ifname}}
        ch = eng.on_events([ev("link_down", "Gi1/0/5", 5), ev("link_down", "Te1/1/1", 49)], agent="bldg-a")
        assert [(c.kind, c.alert.rule, c.alert.labels["ifName"]) for c in ch if c.kind == "firing"] == \
            [("firing", "uplink-down", "Te1/1/1")]
        # the model changes: Gi1/0/5 becomes an uplink (by ifIndex); the engine sees it on the next refresh
        (tmp_path / "more.yaml").write_text("ports:\n  - {device: a-acc1, port: Gi1/0/5, if_index: 5, "
                                            "role: uplink, peer: a-core}\n")
        CampusStore(db).save_campus(load_campus([tmp_path / "more.yaml"], base=CampusStore(db).load_campus()).value)
        meta.ports.invalidate()
        ch = eng.on_events([ev("link_down", "GigabitEthernet1/0/5", 5, 10)], agent="bldg-a")
        assert [c.alert.labels["ifName"] for c in ch if c.kind == "firing"] == ["GigabitEthernet1/0/5"]
    finally:
        store.close()
