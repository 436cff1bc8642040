"""Issue 9 fault rows about content: poison messages, an agent under another site/building, two
samples of one series in the same millisecond. Real Mosquitto (shipped ACL and client-id binding),
a real collector process with the shipped default rules, agents' own credentials."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest

from campus_sense import wire
from tests.collector_util import Publisher, iface, wait_until
from tests.test_alerts_support import CollectorProc

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RULES = (ROOT / "firmware_configs" / "rules" / "campus-default.yaml").read_text()


@pytest.fixture
def col(tmp_path, shipped_broker, shipped_users):
    c = CollectorProc(tmp_path, shipped_broker, shipped_users, rules=DEFAULT_RULES, notify=False)
    yield c
    c.pub.close()
    if c.proc.poll() is None:
        c.proc.send_signal(signal.SIGTERM)
        c.proc.wait(20)


def _hwm(col, agent: str) -> int:
    for a in col.get("/agents").json():
        if a["id"] == agent:
            return max((e["hwm"] for e in a["epochs"]), default=0)
    return 0


def _retained_watermark(port: int, user: str, password: str) -> dict:
    """What an agent reads on its commit topic (the shipped ACL lets it read only its own)."""
    got: list[bytes] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.username_pw_set(user, password)
    c.on_message = lambda cl, ud, m: got.append(m.payload)
    c.connect("127.0.0.1", port)
    c.subscribe(wire.commit_topic(user), qos=1)
    c.loop_start()
    try:
        wait_until(lambda: got, 10, f"the retained watermark of {user}")
    finally:
        c.loop_stop()
        c.disconnect()
    return orjson.loads(got[-1])


def _deep(levels: int) -> bytes:
    return b'{"x":' * levels + b"1" + b"}" * levels


def test_poison_from_one_agent_never_blocks_the_others(col, shipped_broker, shipped_users):
    now = int(time.time() * 1000)
    a = col.pub                                                        # agent-a, its own credentials
    b = Publisher(shipped_broker.port, "agent-b", shipped_users["agent-b"], agent="agent-b", building="B", epoch="eb")
    # seq 1: a sample at t = 2^63 (the store could not even index it); seq 2: event data nested 300
    # levels (beyond what a JSON encoder writes back); seq 3: a good one
    a.raw("metrics", orjson.dumps({"v": 1, "kind": "metrics", "agent": "agent-a", "epoch": a.epoch, "seq": 1,
                                   "sent_ms": now, "samples": [{"m": "interface", "d": "sw-a", "t": 2**63,
                                                                "tags": {}, "f": {"in_bps": 1.0}}]}))
    a.raw("events", b'{"v":1,"kind":"events","agent":"agent-a","epoch":"%s","seq":2,"sent_ms":%d,"events":'
                    b'[{"d":"sw-a","type":"x","t":%d,"severity":"info","tags":{},"data":%s}]}'
          % (a.epoch.encode(), now, now, _deep(300)))
    # seq 3: a zstd frame of 4 KiB that decompresses to 600 KiB (above the message bound)
    a.raw("metrics", wire.pack(wire.encode_durable("metrics", "agent-a", a.epoch, 3, now, [wire.encode_item(
        wire.sample("interface", "sw-a", now, {"s": "x" * 600_000}))])))
    for seq in range(1, 41):
        b.durable("metrics", seq, [iface("sw-b", now + seq, 1, in_bps=float(seq))])
    a.durable("metrics", 4, [iface("sw-a", now, 1, in_bps=3.0)])
    wait_until(lambda: _hwm(col, "agent-b") == 40, 30, "agent-b's 40 messages")
    wait_until(lambda: _hwm(col, "agent-a") == 4, 30, "agent-a's good message after the poison")
    stats = col.get("/ingest/stats").json()
    dead = {(d["agent"], d["seq"]): d for d in stats["dead_letters"]}
    assert dead[("agent-a", 1)]["reason"] == "bad_item" and "'t'" in dead[("agent-a", 1)]["error"]
    assert dead[("agent-a", 2)]["reason"] == "bad_item" and "nested deeper" in dead[("agent-a", 2)]["error"]
    assert dead[("agent-a", 3)]["reason"] == "oversized" and "decompressed exceeds" in dead[("agent-a", 3)]["error"]
    assert stats["gaps"] == []                       # dead letters count as committed: no gap, no replay
    assert col.get("/devices/sw-a/interfaces").json()[0]["in_bps"] == 3.0
    # the agent's watermark moved past its poison: it may delete it
    w = _retained_watermark(shipped_broker.port, "agent-a", shipped_users["agent-a"])
    assert (w["epoch"], w["seq"]) == (a.epoch, 4)
    h = col.http.get("/health")
    assert h.status_code == 200 and h.json()["ok"] is True
    # the security office sees it as an alert on the agent
    wait_until(lambda: any(x["labels"].get("rule") == "ingest-dead-letter" and x["labels"].get("device") == "agent-a"
                           for x in col.get("/alerts").json()), 20, "the ingest-dead-letter alert")
    # a restarted collector is not stuck on a redelivery either
    col.proc.send_signal(signal.SIGKILL)
    col.proc.wait(10)
    col.proc = subprocess.Popen([sys.executable, "-m", "campus_sense", "collector", "--config", str(col.cfg)],
                                cwd=ROOT, stdout=open(col.log, "ab"), stderr=subprocess.STDOUT)
    wait_until(col._connected, 30, "collector back")
    for seq in range(41, 51):
        b.durable("metrics", seq, [iface("sw-b", now + seq, 1, in_bps=float(seq))])
    wait_until(lambda: _hwm(col, "agent-b") == 50, 30, "agent-b after the restart")
    stats = col.get("/ingest/stats").json()
    assert len([d for d in stats["dead_letters"] if d["agent"] == "agent-a"]) == 3   # stored once
    b.close()


def test_agent_under_another_site_is_refused_until_moved(col, shipped_broker, shipped_users, tmp_path):
    now = int(time.time() * 1000)
    a = col.pub
    a.durable("metrics", 1, [iface("sw-a", now, 1)])
    wait_until(lambda: _hwm(col, "agent-a") == 1, 30, "first message")
    moved = Publisher(shipped_broker.port, "agent-a", shipped_users["agent-a"], agent="agent-a", site="south",
                      building="Z", epoch=a.epoch)
    a.close()
    moved.durable("metrics", 2, [iface("sw-a", now + 1, 2)])
    wait_until(lambda: _hwm(col, "agent-a") == 2, 30, "the moved message dealt with")
    dev = col.get("/devices/sw-a").json()
    assert (dev["site"], dev["building"]) == ("north", "A")          # its devices did not move
    dl = [d for d in col.get("/ingest/stats").json()["dead_letters"] if d["reason"] == "agent_moved"]
    assert len(dl) == 1 and dl[0]["seq"] == 2 and "collector agent move agent-a" in dl[0]["error"]
    ag = [x for x in col.get("/agents").json() if x["id"] == "agent-a"][0]
    assert (ag["site"], ag["building"]) == ("north", "A")
    # an admin decides it really moved
    r = subprocess.run([sys.executable, "-m", "campus_sense", "collector", "agent", "move", "agent-a", "--site",
                        "south", "--building", "Z", "--config", str(col.cfg)], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    moved.durable("metrics", 3, [iface("sw-a", now + 2, 3)])
    wait_until(lambda: col.get("/devices/sw-a").json()["building"] == "Z", 30, "the device in its new building")
    assert len([d for d in col.get("/ingest/stats").json()["dead_letters"] if d["reason"] == "agent_moved"]) == 1
    moved.close()
    # the fixture closes col.pub
    col.pub = Publisher(shipped_broker.port, "agent-a", shipped_users["agent-a"], agent="agent-a")


def test_same_series_same_millisecond_is_merged_and_counted(col, shipped_broker, shipped_users):
    now = int(time.time() * 1000)
    tags = {"ifIndex": "1", "ifName": "Gi0/1"}
    col.pub.durable("metrics", 1, [wire.sample("interface", "sw-a", now, {"in_bps": 1.0}, tags),
                                   wire.sample("interface", "sw-a", now, {"out_bps": 2.0}, tags)])
    wait_until(lambda: _hwm(col, "agent-a") == 1, 30, "stored")
    r = col.get("/series", params={"measurement": "interface", "device": "sw-a"}).json()
    assert [p[1] for p in r["series"][0]["points"]] == [{"in_bps": 1.0, "out_bps": 2.0}]
    assert col.get("/ingest/stats").json()["counters"]["same_time_merged"] == 1


def test_dead_letter_payload_is_kept_raw(col):
    col.pub.raw("metrics", b'{"v":1,"kind":"metrics","agent":"agent-a","epoch":"ep1","seq":7,"samples":[1]}')
    wait_until(lambda: col.get("/ingest/stats").json()["dead_letters"], 30, "the dead letter")
    d = col.get("/ingest/stats").json()["dead_letters"][0]
    assert (d["agent"], d["epoch"], d["seq"], d["reason"]) == ("agent-a", "ep1", 7, "bad_item")
    assert d["bytes"] > 0 and "samples[0]" in d["error"]
    json.dumps(d)
