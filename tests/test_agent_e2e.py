"""The agent as a real process against a real Mosquitto, seen by a raw paho subscriber.

The receiver plays the collector's part with a persistent session (fixed client
id, clean_session False, QoS 1), so whatever the broker accepted reaches it
even across a broker restart; the assertions are about seq continuity, not time.
"""
from __future__ import annotations

import hashlib
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

import campus_sense
from campus_sense import wire
from tests.peers import Mosquitto

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def broker(mosquitto):
    """The shared Mosquitto peer (tests/conftest.py), restartable on the same port."""
    return mosquitto


class Receiver:
    def __init__(self, port: int, user: str, password: str):
        self.lock = threading.Lock()
        self.msgs: list[wire.Message] = []
        self.raw: list[bytes] = []
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-rx-{port}", clean_session=False)
        self.c.username_pw_set(user, password)
        self.c.reconnect_delay_set(1, 2)
        self.c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(wire.SUBSCRIPTION, qos=1)
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port, keepalive=5)
        self.c.loop_start()

    def _on_message(self, client, userdata, msg):
        m = wire.decode(msg.topic, msg.payload)  # every message must honour the contract
        with self.lock:
            self.msgs.append(m)
            self.raw.append(msg.payload)

    def of_kind(self, *kinds) -> list[wire.Message]:
        with self.lock:
            return [m for m in self.msgs if m.kind in kinds]

    def durable(self) -> list[tuple[int, bytes]]:
        with self.lock:
            return [(m.seq, raw) for m, raw in zip(self.msgs, self.raw) if m.kind in wire.DURABLE_KINDS]

    def seqs(self) -> list[int]:
        return [s for s, _ in self.durable()]

    def polls(self, device: str, ok: bool | None = None) -> list[dict]:
        out = []
        for m in self.of_kind("metrics"):
            out += [i for i in m.items if i["m"] == "agent_poll" and i["d"] == device
                    and (ok is None or i["f"]["ok"] is ok)]
        return out

    def stop(self):
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def receiver(broker, mqtt_users):
    r = Receiver(broker.port, "collector", mqtt_users["collector"])
    yield r
    r.stop()


def write_config(tmp_path, broker, mqtt_users, devices: str, **publish) -> Path:
    pub = {"batch_interval_s": 0.3, "reconnect_max_s": 1, "heartbeat_s": 5, "selfmetrics_s": 2,
           "shutdown_drain_s": 15, **publish}
    (tmp_path / "mqtt.pass").write_text(mqtt_users["agent-a"] + "\n")
    p = tmp_path / "agent.yaml"
    p.write_text(
        "agent: {id: agent-a, site: north, building: A}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, username: agent-a, password_file: {tmp_path / 'mqtt.pass'},"
        " keepalive_s: 5}\n"
        f"queue: {{path: {tmp_path / 'queue.db'}, max_messages: 100000}}\n"
        f"publish: {{{', '.join(f'{k}: {v}' for k, v in pub.items())}}}\n"
        f"devices:\n{devices}")
    return p


FAST_DEVICES = """\
  - {id: sw1, driver: synthetic, interval_s: 0.5, options: {interfaces: 3}}
  - {id: sw2, driver: synthetic, interval_s: 0.5}
"""


class AgentProc:
    def __init__(self, cfg: Path):
        self.cfg = cfg
        self.log = cfg.parent / "agent.log"
        with open(self.log, "ab") as log:
            self.p = subprocess.Popen([sys.executable, "-m", "campus_sense", "agent", "--config", str(cfg)],
                                      cwd=ROOT, stdout=log, stderr=log)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self, sig=signal.SIGTERM, timeout=40) -> int:
        if self.p.poll() is None:
            self.p.send_signal(sig)
        return self.p.wait(timeout)


@pytest.fixture
def agents():
    started: list[AgentProc] = []
    yield lambda cfg: started.append(AgentProc(cfg)) or started[-1]
    for a in started:
        if a.p.poll() is None:
            a.p.kill()
            a.p.wait()


def wait_for(pred, what: str, agent: AgentProc | None = None, timeout: float = 60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n--- agent log ---\n{agent.tail() if agent else ''}")


def queue_state(cfg: Path) -> tuple[str, int, int]:
    """(epoch, last seq, rows still queued), read from the agent's database."""
    with closing(sqlite3.connect(cfg.parent / "queue.db", timeout=10)) as db:
        meta = dict(db.execute("SELECT key, value FROM meta"))
        depth = db.execute("SELECT count(*) FROM messages").fetchone()[0]
    return meta["epoch"], int(meta["next_seq"]) - 1, depth


def assert_complete(rx: Receiver, epoch: str, last: int) -> int:
    """Every seq 1..last arrived, each seq always with the same payload; return the duplicate count."""
    by_seq: dict[int, set[bytes]] = {}
    for seq, raw in rx.durable():
        by_seq.setdefault(seq, set()).add(raw)
    assert {m.epoch for m in rx.of_kind(*wire.DURABLE_KINDS)} == {epoch}
    missing = sorted(set(range(1, last + 1)) - set(by_seq))
    assert not missing, f"gaps: {missing[:20]}"
    assert max(by_seq) == last
    reused = [s for s, payloads in by_seq.items() if len(payloads) > 1]
    assert not reused, f"seq reused with different payloads: {reused[:10]}"
    return len(rx.durable()) - len(by_seq)


def test_birth_has_config_hash_and_death_is_the_last_will(tmp_path, broker, receiver, mqtt_users, agents):
    cfg = write_config(tmp_path, broker, mqtt_users, FAST_DEVICES)
    agent = agents(cfg)
    wait_for(lambda: receiver.of_kind("birth"), "birth", agent)
    birth = receiver.of_kind("birth")[0].body
    assert birth["config_hash"] == hashlib.sha256(cfg.read_bytes()).hexdigest()
    assert birth["drivers"] == ["synthetic"]
    assert [d["id"] for d in birth["devices"]] == ["sw1", "sw2"]
    assert birth["version"] == campus_sense.__version__
    wait_for(lambda: receiver.durable(), "first metrics", agent)
    agent.stop(signal.SIGKILL)
    wait_for(lambda: receiver.of_kind("death"), "the Last Will after SIGKILL", agent, timeout=20)
    death = receiver.of_kind("death")[0].body
    assert death["reason"] == "lost" and death["epoch"] == birth["epoch"]


def test_slow_device_does_not_delay_others(tmp_path, broker, receiver, mqtt_users, agents):
    devices = """\
  - {id: fast, driver: synthetic, interval_s: 0.1}
  - {id: slow, driver: synthetic, interval_s: 0.2, deadline_s: 1, options: {delay_s: 3600}}
  - {id: dead, driver: synthetic, interval_s: 0.5, options: {fail: true}}
"""
    agent = agents(write_config(tmp_path, broker, mqtt_users, devices))
    wait_for(lambda: len(receiver.polls("slow")) >= 3, "three timed-out polls of the slow device", agent)
    slow, fast = receiver.polls("slow"), receiver.polls("fast")
    assert {(p["f"]["ok"], p["f"]["reason"]) for p in slow} == {(False, "timeout")}
    assert all(p["f"]["duration_s"] >= 0.99 for p in slow)
    # Had the slow device held up the loop, fast could not have been polled more than
    # once per slow cycle.
    assert all(p["f"]["ok"] for p in fast) and len(fast) > 3 * len(slow)
    dead = receiver.polls("dead")
    assert dead and {p["f"]["reason"] for p in dead} == {"unreachable"}
    assert all("configured to fail" in p["f"]["error"] and p["tags"] == {"driver": "synthetic"} for p in dead)
    assert agent.stop() == 0


def test_broker_outage_replays_backlog_without_gaps(tmp_path, broker, receiver, mqtt_users, agents):
    # agent <-> broker only (no collector to publish watermarks): delete on PUBACK
    cfg = write_config(tmp_path, broker, mqtt_users, FAST_DEVICES, delete_on="puback")
    agent = agents(cfg)
    wait_for(lambda: len(receiver.durable()) >= 3, "first messages", agent)
    broker.stop()
    _, seq_at_stop, _ = queue_state(cfg)
    time.sleep(30)  # the outage: the agent keeps polling into its queue
    assert agent.p.poll() is None
    epoch, seq_before_restart, backlog = queue_state(cfg)
    assert seq_before_restart - seq_at_stop >= 10 and backlog >= 10, "no backlog built up during the outage"
    broker.start()
    wait_for(lambda: max(receiver.seqs()) > seq_before_restart, "the backlog and new messages", agent)
    assert agent.stop() == 0
    epoch, last, depth = queue_state(cfg)
    assert depth == 0, "queue not drained"
    wait_for(lambda: set(range(1, last + 1)) <= set(receiver.seqs()), "every seq", agent)
    dups = assert_complete(receiver, epoch, last)
    print(f"outage: {last} messages, {backlog} queued during the outage, {dups} MQTT-level duplicates")
    wait_for(lambda: receiver.of_kind("death"), "death on clean shutdown", agent, timeout=10)
    assert receiver.of_kind("death")[-1].body["reason"] == "shutdown"
    log = agent.log.read_text()
    assert "retrying" in log and "pending publish calls" not in log


def test_sigkill_then_restart_keeps_every_persisted_seq(tmp_path, broker, receiver, mqtt_users, agents):
    # agent <-> broker only (no collector to publish watermarks): delete on PUBACK
    cfg = write_config(tmp_path, broker, mqtt_users, FAST_DEVICES, delete_on="puback")
    first = agents(cfg)
    wait_for(lambda: len(receiver.durable()) >= 3, "first messages", first)
    # Take the broker away so the agent dies with unpublished rows on disk.
    broker.stop()
    wait_for(lambda: queue_state(cfg)[2] >= 4, "a backlog in the queue", first)
    first.stop(signal.SIGKILL)
    epoch, killed_last, backlog = queue_state(cfg)
    broker.start()
    second = agents(cfg)
    wait_for(lambda: max(receiver.seqs()) >= killed_last + 3, "messages after the restart", second)
    assert second.stop() == 0
    epoch2, last, depth = queue_state(cfg)
    assert epoch2 == epoch and depth == 0
    wait_for(lambda: set(range(1, last + 1)) <= set(receiver.seqs()), "every seq", second)
    dups = assert_complete(receiver, epoch, last)
    print(f"sigkill: {backlog} rows on disk at kill (last seq {killed_last}), {last} total, {dups} duplicates")


def test_tls_and_mqtt5(tmp_path, mqtt_users, agents):
    """Server-authenticated TLS (CA file) with MQTT v5; the receiver checks the same CA."""
    d = tmp_path / "tls"
    d.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")], check=True, capture_output=True)
    tls = Mosquitto(mqtt_users, d)
    with open(tls.dir / "mosquitto.conf", "a") as f:  # options of the (only) listener
        f.write(f"cafile {d / 'cert.pem'}\ncertfile {d / 'cert.pem'}\nkeyfile {d / 'key.pem'}\n")
    tls.start()
    try:
        rx_client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tls-rx")
        got: list[wire.Message] = []
        rx_client.tls_set(ca_certs=str(d / "cert.pem"))
        rx_client.username_pw_set("collector", mqtt_users["collector"])
        rx_client.on_connect = lambda cl, u, f, rc, p: cl.subscribe(wire.SUBSCRIPTION, qos=1)
        rx_client.on_message = lambda cl, u, m: got.append(wire.decode(m.topic, m.payload))
        rx_client.connect("127.0.0.1", tls.port)
        rx_client.loop_start()
        cfg = write_config(tmp_path, tls, mqtt_users, FAST_DEVICES)
        text = cfg.read_text().replace("keepalive_s: 5}", f"keepalive_s: 5, protocol: '5', tls: {{ca_file: {d / 'cert.pem'}}}}}")
        cfg.write_text(text)
        agent = agents(cfg)
        wait_for(lambda: any(m.kind == "metrics" for m in got), "metrics over TLS", agent)
        assert agent.stop() == 0
        assert any(m.kind == "birth" for m in got)
        rx_client.loop_stop()
        rx_client.disconnect()
    finally:
        tls.stop()
