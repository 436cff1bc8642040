"""collector.alerting in-process: device metadata from the collector store (birth devices list),
LLDP topology, bounded engine queue (drops counted, ingest never blocked), bad data does not
stop the engine thread, config sections."""
from __future__ import annotations

import time

import pytest

from campus_sense import wire
from campus_sense.yamlconf import ConfigError
from collector import config as cfgmod
from collector.alerting import Alerting
from collector.store.sqlite import SQLiteStore
from tests.collector_util import wait_until

RULES = """\
inhibit:
  - {name: switch-down, source: ["rule=switch-down"], topology: true}
rules:
  - {name: door-forced, kind: event, event: door_forced, severity: critical, scope: {type: door}}
  - {name: switch-down, kind: event, event: unreachable, scope: {type: switch}}
  - {name: cam-down, kind: event, event: unreachable, scope: {type: camera}}
  - {name: hot, kind: threshold, measurement: temperature, op: ">", value: 30, labels: {category: facility}}
  - {name: errors, kind: threshold, measurement: interface, field: in_errors_ps, op: ">", value: 10}
"""


def _cfg(tmp_path, queue_max=10000):
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "pw").write_text("x\n")
    (tmp_path / "c.yaml").write_text(
        "mqtt: {host: 127.0.0.1, username: c, password_file: pw}\nstore: {path: c.db}\n"
        f"rules: {{paths: [rules.yaml], db: alerts.db, tick_s: 0.1, queue_max: {queue_max}}}\n")
    return cfgmod.load(tmp_path / "c.yaml")


class Feed:
    """Commits wire messages to the store like ingest does, then hands them to the subscriber."""

    def __init__(self, store, agent="ag-a"):
        self.store, self.agent, self.seq, self.subs = store, agent, 0, []

    def _send(self, kind, payload):
        msg = wire.decode(wire.topic("north", "A", self.agent, kind), payload)
        res = self.store.apply([msg], [])
        for m in res.accepted:
            for s in self.subs:
                s(m)

    def durable(self, kind, items):
        self.seq += 1
        self._send(kind, wire.encode_durable(kind, self.agent, "ep", self.seq, int(time.time() * 1000),
                                             [wire.encode_item(i) for i in items]))

    def state(self, kind, **body):
        self._send(kind, wire.encode_state(kind, self.agent, int(time.time() * 1000), **body))


@pytest.fixture
def env(tmp_path):
    store = SQLiteStore(str(tmp_path / "c.db"))
    al = Alerting(_cfg(tmp_path), store)
    feed = Feed(store)
    feed.subs.append(al.on_message)
    al.start()
    yield al, feed, store
    al.stop()
    store.close()


def test_meta_from_store_topology_and_network_rules(env):
    al, feed, store = env
    now = int(time.time() * 1000)
    devs = [{"id": "door-1", "room": "A-1", "type": "door"}, {"id": "core1", "type": "core"},
            {"id": "sw1", "type": "switch"}, {"id": "cam1", "type": "camera"}]
    feed.state("birth", version="t", devices=devs)
    feed.durable("events", [wire.event("door-1", "door_forced", now, "critical")])
    a = wait_until(lambda: al.engine.alerts({"rule": "door-forced"}), 10, "door alert")[0]
    assert a.labels["building"] == "A" and a.labels["room"] == "A-1" and a.labels["type"] == "door"
    assert a.labels["site"] == "north" and a.labels["agent"] == "ag-a"
    # a device unknown at first: its alert appears once it shows up with metadata (cache invalidated)
    feed.durable("events", [wire.event("door-9", "door_forced", now, "critical")])
    time.sleep(0.3)
    assert not al.engine.alerts({"device": "door-9"})  # no type yet: out of scope
    feed.state("birth", version="t", devices=devs + [{"id": "door-9", "room": "A-9", "type": "door"}])
    feed.durable("events", [wire.event("door-9", "door_forced", now + 1, "critical")])
    wait_until(lambda: al.engine.alerts({"device": "door-9"}), 10, "door-9 alert after birth")
    # LLDP: core1 <-> sw1 <-> cam1 (sysName match), upstream = higher-ranked type
    feed.durable("facts", [wire.facts("sw1", now, {"sysName": "SW1.campus"})])
    feed.durable("metrics", [
        wire.sample("lldp", "core1", now, {"seen": 1}, {"ifIndex": "1", "remote_name": "SW1.campus"}),
        wire.sample("lldp", "sw1", now, {"seen": 1}, {"ifIndex": "2", "remote_name": "core1"}),
        wire.sample("lldp", "sw1", now, {"seen": 1}, {"ifIndex": "3", "remote_name": "cam1"})])
    wait_until(lambda: al.stats["processed"] >= 6, 10, "processed")
    al.topology.invalidate()
    assert al.topology("cam1") == "sw1" and al.topology("sw1") == "core1" and al.topology("core1") is None
    # topology inhibition: the switch is down -> the camera behind it is suppressed
    feed.durable("events", [wire.event("sw1", "unreachable", now + 5, "warning"),
                            wire.event("cam1", "unreachable", now + 5, "warning")])
    cam = wait_until(lambda: [x for x in al.engine.alerts({"rule": "cam-down"}) if x.suppressed], 10, "inhibited")
    assert "switch-down" in cam[0].suppressed
    # network classification for the it role
    assert al.network_rules == {"errors"}
    assert al.is_network(al.engine.alerts({"rule": "switch-down"})[0]) is False


def test_topology_from_fdb_behind_access_ports(env):
    """Devices that speak no LLDP: the switch whose FDB learned their MAC on an access port is
    upstream (a port facing another switch per LLDP is a trunk; among several switches the port
    with the fewest MACs wins); a device known only by IP is resolved through ARP."""
    al, feed, store = env
    now = int(time.time() * 1000)
    feed.state("birth", version="t", devices=[
        {"id": "core1", "type": "core"}, {"id": "sw1", "type": "switch"}, {"id": "sw2", "type": "switch"},
        {"id": "cam1", "type": "camera"}, {"id": "proj1", "type": "projector"}])
    feed.durable("facts", [wire.facts("cam1", now, {"mac": "00:1A:2B:3C:4D:5E"}),
                           wire.facts("proj1", now, {"ip": "10.0.0.50"})])
    fdb = lambda sw, port, mac: wire.sample("fdb", sw, now, {"seen": 1},  # noqa: E731
                                            {"ifIndex": port, "ifName": f"p{port}", "mac": mac, "vlan": "10"})
    feed.durable("metrics", [
        wire.sample("lldp", "core1", now, {"seen": 1}, {"ifIndex": "1", "remote_name": "sw1"}),
        wire.sample("lldp", "core1", now, {"seen": 1}, {"ifIndex": "2", "remote_name": "sw2"}),
        wire.sample("arp", "core1", now, {"seen": 1}, {"ip": "10.0.0.50", "mac": "aa-bb-cc-00-00-50"}),
        # cam1: on core1's trunk to sw1 (LLDP: not an access port), on sw1's access port 5,
        # and on sw2's port 24 (an uplink without LLDP, many MACs)
        fdb("core1", "1", "001a.2b3c.4d5e"), fdb("sw1", "5", "00:1a:2b:3c:4d:5e"),
        fdb("sw2", "24", "00:1a:2b:3c:4d:5e"), fdb("sw2", "24", "00:00:00:00:00:01"),
        fdb("sw2", "24", "00:00:00:00:00:02"),
        # proj1 (IP only, MAC from ARP) on sw2's access port 7
        fdb("sw2", "7", "AA:BB:CC:00:00:50")])
    wait_until(lambda: al.stats["processed"] >= 3, 10, "processed")
    al.topology.invalidate()
    assert al.topology("cam1") == "sw1" and al.topology("proj1") == "sw2"
    assert al.topology("sw1") == "core1" and al.topology("sw2") == "core1" and al.topology("core1") is None
    # through the engine: sw1 unreachable suppresses the alert of the camera behind it
    feed.durable("events", [wire.event("sw1", "unreachable", now + 5, "warning"),
                            wire.event("cam1", "unreachable", now + 5, "warning")])
    cam = wait_until(lambda: [x for x in al.engine.alerts({"rule": "cam-down"}) if x.suppressed], 10, "inhibited")
    assert "switch-down" in cam[0].suppressed


def test_bounded_queue_drops_and_bad_data(tmp_path, caplog):
    store = SQLiteStore(str(tmp_path / "c.db"))
    al = Alerting(_cfg(tmp_path, queue_max=5), store)  # not started: nothing drains the queue
    feed = Feed(store)
    feed.subs.append(al.on_message)
    t0 = time.monotonic()
    for i in range(50):
        feed.durable("metrics", [wire.sample("temperature", "t1", int(time.time() * 1000) + i, {"value": 1.0})])
    assert al.stats["dropped"] == 45 and al.stats["queued"] == 5
    assert "alert engine queue full" in caplog.text
    assert time.monotonic() - t0 < 30
    # an event queue of its own: events are still taken while metrics overflow
    feed.durable("events", [wire.event("t1", "door_forced", int(time.time() * 1000))])
    assert al.stats["queued"] == 6
    # the engine thread survives an exception and keeps going
    boom = {"n": 0}
    orig = al.engine.on_samples

    def bad(*a, **k):
        boom["n"] += 1
        if boom["n"] == 1:
            raise RuntimeError("boom")
        return orig(*a, **k)
    al.engine.on_samples = bad
    al.start()
    wait_until(lambda: al.stats["processed"] == 6, 10, "queue drained")
    assert al.stats["engine_errors"] == 1
    feed.durable("metrics", [wire.sample("temperature", "t1", int(time.time() * 1000) + 1000, {"value": 99.0})])
    wait_until(lambda: al.engine.alerts({"rule": "hot"}), 10, "alert after the error")
    al.stop()
    store.close()


def test_config_sections(tmp_path):
    (tmp_path / "pw").write_text("x\n")
    (tmp_path / "c.yaml").write_text("mqtt: {host: h, username: c, password_file: pw}\n"
                                     "rules: {paths: [r.yaml, /abs/dir], tick_s: 2}\nnotify: {config: n.yaml}\n")
    cfg = cfgmod.load(tmp_path / "c.yaml")
    assert cfg.rules.paths == [str(tmp_path / "r.yaml"), "/abs/dir"] and cfg.rules.tick_s == 2
    assert cfg.rules.db == str(tmp_path / "alerts.db") and cfg.notify.config == str(tmp_path / "n.yaml")
    assert cfgmod.load(tmp_path / "c.yaml").rules is not None
    (tmp_path / "c.yaml").write_text("mqtt: {host: h, username: c, password_file: pw}\nrules: {paths: []}\n")
    with pytest.raises(ConfigError, match=r"c.yaml:2: rules.paths"):
        cfgmod.load(tmp_path / "c.yaml")
    # a broken rule file: ConfigError naming the rule file
    (tmp_path / "rules.yaml").write_text("rules:\n  - {name: x, kind: nope}\n")
    (tmp_path / "c.yaml").write_text("mqtt: {host: h, username: c, password_file: pw}\nrules: {paths: [rules.yaml]}\n")
    store = SQLiteStore(str(tmp_path / "c.db"))
    with pytest.raises(ConfigError, match="rules.yaml:2"):
        Alerting(cfgmod.load(tmp_path / "c.yaml"), store)
    store.close()


def test_collector_exits_2_on_bad_rules(tmp_path):
    import subprocess
    import sys
    (tmp_path / "pw").write_text("x\n")
    (tmp_path / "rules.yaml").write_text("rules:\n  - {name: x, kind: threshold, measurement: t, op: '=>', value: 1}\n")
    (tmp_path / "c.yaml").write_text("mqtt: {host: 127.0.0.1, port: 1, username: c, password_file: pw}\n"
                                     "store: {path: c.db}\napi: {port: 0}\nrules: {paths: [rules.yaml]}\n")
    r = subprocess.run([sys.executable, "-m", "campus_sense", "collector", "--config", str(tmp_path / "c.yaml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "rules.yaml:2" in r.stderr and "Traceback" not in r.stderr
