"""Ingest -> SQLite -> API against a real Mosquitto (password auth, persistent session)."""
import logging
import time

import orjson
import pytest
from fastapi.testclient import TestClient

from campus_sense import wire
from collector.api import create_app
from collector.config import MQTT, Ingest as IngestCfg
from collector.ingest import Ingest
from collector.store.sqlite import SQLiteStore, stored_samples
from tests.collector_util import Publisher, iface, wait_until


@pytest.fixture
def stack(tmp_path, mosquitto, mqtt_users):
    store = SQLiteStore(str(tmp_path / "c.db"))
    cfg = MQTT(host="127.0.0.1", port=mosquitto.port, username="collector", password=mqtt_users["collector"],
               client_id="collector-ingest-test")
    ing = Ingest(cfg, store, IngestCfg(batch_ms=5)).start()
    assert ing.connected.wait(10)
    pub = Publisher(mosquitto.port, "agent-a", mqtt_users["agent-a"])
    seen = []
    ing.subscribers.append(seen.append)
    _, admin = store.token_create("admin", "t")
    client = TestClient(create_app(store, ing, offline_after_s=60))
    client.headers["Authorization"] = f"Bearer {admin}"
    yield store, ing, pub, client, seen
    pub.close()
    ing.stop()
    store.close()


def stored(store, n):
    return wait_until(lambda: store.counters.get("messages_stored", 0) >= n, what=f"{n} stored messages")


def test_ingest_to_api(stack):
    store, ing, pub, client, seen = stack
    now = int(time.time() * 1000)
    pub.state("birth", version="1.2.3", config_hash="abc", drivers=["snmp"], devices=2)
    pub.durable("facts", 1, [wire.facts("sw1", now, {"model": "C9300", "serial": "S1", "firmware": "17.9"})])
    pub.durable("metrics", 2, [iface("sw1", now - 60000, i) for i in range(1, 5)] +
                [wire.sample("agent_poll", "sw1", now, {"ok": True, "duration_s": 0.4}, {"driver": "snmp"}),
                 wire.sample("agent_poll", "ap7", now, {"ok": False, "duration_s": 20.0, "reason": "timeout",
                                                       "error": "no reply from 10.0.0.7"}, {"driver": "snmp"}),
                 wire.sample("agent", "agent-a", now, {"queue_depth": 17, "dropped_total": 3})])
    pub.durable("metrics", 3, [iface("sw1", now, i, in_bps=42.0) for i in range(1, 5)])
    pub.durable("events", 4, [wire.event("door-3", "door_forced", now, "critical", data={"door": "D3"})])
    stored(store, 5)

    agents = client.get("/api/v1/agents").json()
    a = agents[0]
    assert a["id"] == "agent-a" and a["online"] and a["version"] == "1.2.3" and a["config_hash"] == "abc"
    assert a["drivers"] == ["snmp"] and a["queue_depth"] == 17 and a["dropped_total"] == 3
    assert a["site"] == "north" and a["building"] == "A" and a["gaps"] == []

    devs = {d["id"]: d for d in client.get("/api/v1/devices").json()}
    assert devs["sw1"]["facts"]["model"] == "C9300" and devs["sw1"]["reachable"] is True
    assert "agent-a" not in devs and devs["sw1"]["agent"] == "agent-a" and devs["sw1"]["building"] == "A"
    assert devs["ap7"]["reachable"] is False and devs["ap7"]["reason"] == "timeout"
    assert "10.0.0.7" in devs["ap7"]["error"] and devs["ap7"]["last_poll_ms"] == now
    assert client.get("/api/v1/devices/sw1").json()["facts"]["serial"] == "S1"
    assert client.get("/api/v1/devices/nope").status_code == 404

    ifs = client.get("/api/v1/devices/sw1/interfaces").json()
    assert [i["name"] for i in ifs] == ["Gi0/1", "Gi0/2", "Gi0/3", "Gi0/4"]
    assert all(i["in_bps"] == 42.0 and i["ts_ms"] == now for i in ifs)  # latest value wins
    assert ifs[0]["speed_mbps"] == 1000 and ifs[0]["admin_up"] is True and ifs[0]["oper_up"] is True
    assert ifs[1]["oper_up"] is False

    s = client.get("/api/v1/series", params={"measurement": "interface", "device": "sw1", "field": "in_bps",
                                             "tags": "ifName=Gi0/2"}).json()["series"]
    assert len(s) == 1 and s[0]["points"] == [[now - 60000, 2000.0], [now, 42.0]]
    s = client.get("/api/v1/series", params={"measurement": "interface", "device": "sw1", "field": "in_bps",
                                             "tags": "ifName=Gi0/2", "step": 3600_000,
                                             "start": now - 3600_000}).json()["series"]
    assert len(s[0]["points"]) in (1, 2)
    assert sum(v for _, v in s[0]["points"]) / len(s[0]["points"]) <= 2000.0
    allf = client.get("/api/v1/series", params={"measurement": "interface", "device": "sw1"}).json()["series"]
    assert len(allf) == 4 and allf[0]["points"][0][1]["speed_mbps"] == 1000

    ev = client.get("/api/v1/events").json()
    assert ev[0]["type"] == "door_forced" and ev[0]["severity"] == "critical" and ev[0]["data"] == {"door": "D3"}
    assert {m.kind for m in seen} == {"birth", "facts", "metrics", "events"}
    h = client.get("/api/v1/health", headers={"Authorization": ""}).json()
    assert h["ok"] and h["ingest"]["connected"]

    pub.state("heartbeat", epoch="ep1", queue_depth=5, dropped_total=4, oldest_age_s=1.5, last_seq=9)
    wait_until(lambda: client.get("/api/v1/agents").json()[0]["queue_depth"] == 5, what="heartbeat applied")
    a = client.get("/api/v1/agents").json()[0]
    assert a["dropped_total"] == 4 and a["oldest_age_s"] == 1.5 and a["seq_lag"] == 5
    assert a["heartbeat_ms"] and a["info"]["last_seq"] == 9
    pub.state("death")
    wait_until(lambda: not client.get("/api/v1/agents").json()[0]["online"], what="agent offline after death")


def test_dedup_and_gaps(stack):
    store, ing, pub, client, seen = stack
    now = int(time.time() * 1000)
    pub.durable("metrics", 1, [iface("sw1", now, 1)])
    pub.durable("metrics", 1, [iface("sw1", now, 1)])          # duplicate
    pub.durable("metrics", 2, [iface("sw1", now + 1, 1)])
    pub.durable("metrics", 6, [iface("sw1", now + 5, 1)])      # 3..5 missing
    wait_until(lambda: store.counters.get("messages_stored", 0) + store.counters.get("duplicates", 0) >= 4)
    assert store.counters["duplicates"] == 1
    n = len(stored_samples(store.path))
    assert n == 3
    a = client.get("/api/v1/agents").json()[0]
    assert [(g["first_seq"], g["last_seq"]) for g in a["gaps"]] == [(3, 5)] and a["missing_total"] == 3
    stats = client.get("/api/v1/ingest/stats").json()
    assert stats["missing_total"] == 3 and stats["gaps"][0]["epoch"] == "ep1"

    pub.durable("metrics", 4, [iface("sw1", now + 3, 1)])      # late arrival splits the gap
    stored(store, 4)
    a = client.get("/api/v1/agents").json()[0]
    assert [(g["first_seq"], g["last_seq"]) for g in a["gaps"]] == [(3, 3), (5, 5)]
    pub.durable("metrics", 4, [iface("sw1", now + 3, 1)])      # duplicate of a late arrival
    pub.durable("metrics", 3, [iface("sw1", now + 2, 1)])
    pub.durable("metrics", 5, [iface("sw1", now + 4, 1)])
    stored(store, 6)
    wait_until(lambda: store.counters.get("duplicates", 0) >= 2)
    assert client.get("/api/v1/agents").json()[0]["gaps"] == []
    assert len(stored_samples(store.path)) == 6
    # a new epoch (agent queue wiped) restarts at seq 1 and is not a duplicate
    pub.durable("metrics", 1, [iface("sw1", now + 10, 1)], epoch="ep2")
    stored(store, 7)
    assert len(stored_samples(store.path)) == 7


def test_bad_input_rejected_and_ingest_continues(stack, caplog):
    store, ing, pub, client, seen = stack
    caplog.set_level(logging.WARNING, logger="collector.ingest")
    now = int(time.time() * 1000)
    pub.raw("metrics", b'{"v": 1, "kind": "metrics", "agent": ')                 # malformed JSON
    pub.raw("metrics", bytes(range(256)) * 4)                                     # binary garbage
    pub.raw("metrics", orjson.dumps({"v": 99, "kind": "metrics", "agent": "agent-a", "epoch": "e", "seq": 1,
                                     "samples": []}))                             # wrong schema version
    big = [wire.sample("interface", "sw1", now, {"descr": "x" * 1000}, {"ifIndex": str(i)}) for i in range(300)]
    pub.durable("metrics", 1, big)                                                # oversized (> 256 KiB)
    pub.durable("metrics", 2, [{"m": "interface", "d": "sw1", "t": "now", "f": {"a": 1}}])  # bad item
    pub.c.publish("campus/v1/north/A/agent-a/bogus", b"{}", qos=1).wait_for_publish(10)  # no such kind
    pub.durable("metrics", 3, [iface("sw1", now, 1, in_bps=7.0)])                # good one after
    stored(store, 1)
    wait_until(lambda: store.counters.get("rejected", 0) >= 6, what="6 rejects")
    stats = client.get("/api/v1/ingest/stats").json()
    rej = {k: v["count"] for k, v in stats["rejected"].items()}
    assert rej == {"bad_json": 2, "schema_version": 1, "oversized": 1, "bad_item": 1, "bad_topic": 1}
    assert stats["rejected"]["oversized"]["last_topic"] == "campus/v1/north/A/agent-a/metrics"
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("campus/v1/north/A/agent-a/metrics" in m for m in msgs) >= 5
    assert any("unsupported schema version 99" in m for m in msgs)
    assert any("exceeds" in m for m in msgs)
    ifs = client.get("/api/v1/devices/sw1/interfaces").json()
    assert ifs[0]["in_bps"] == 7.0
    # the refused seq 1/2 are dead letters (stored raw, counted as committed: no gap), the good one stored
    assert stats["gaps"] == []
    dead = {d["seq"]: d for d in stats["dead_letters"] if d["epoch"] == pub.epoch}
    assert dead[1]["reason"] == "oversized" and dead[2]["reason"] == "bad_item"
    assert dead[2]["agent"] == "agent-a" and "'t' (epoch ms) must be an integer" in dead[2]["error"]
    assert len(stats["dead_letters"]) == 6
    raw = store.dead_letter(dead[2]["id"])["payload"]
    assert b'"t":"now"' in raw


def test_store_failure_not_acked_then_retried(tmp_path, mosquitto, mqtt_users):
    """A sink outage rolls the group back and retries; the connection stays up (pings), data lands once."""
    from collector.store.base import TimeSeriesSink

    class Flaky(TimeSeriesSink):
        def __init__(self):
            self.calls = 0
            self.got = []

        def write(self, samples):
            self.calls += 1
            if self.calls <= 2:
                health.append(TestClient(create_app(store, ing)).get("/api/v1/health"))
                raise ConnectionError("sink down")
            self.got.extend(samples)

    health: list = []

    sink = Flaky()
    store = SQLiteStore(str(tmp_path / "c.db"), sink=sink)
    ing = Ingest(MQTT(host="127.0.0.1", port=mosquitto.port, username="collector",
                      password=mqtt_users["collector"], client_id="collector-flaky"), store,
                 IngestCfg(batch_ms=5)).start()
    pub = Publisher(mosquitto.port, "agent-a", mqtt_users["agent-a"])
    try:
        assert ing.connected.wait(10)
        pub.durable("metrics", 1, [iface("sw1", int(time.time() * 1000), 1)])
        wait_until(lambda: store.counters.get("messages_stored", 0) == 1, 30, "stored after retries")
        assert ing.stats["commit_errors"] == 2 and len(sink.got) == 1 and ing.stats["acked"] == 1
        assert ing.stats["connects"] == 1
        # while the store was down /health said so (the 2nd attempt: the 1st failure was known by then)
        assert health[1].status_code == 503 and "store unavailable" in health[1].json()["reason"]
        assert TestClient(create_app(store, ing)).get("/api/v1/health").status_code == 200
    finally:
        pub.close()
        ing.stop()
        store.close()


def test_store_refusing_one_message_isolates_it_and_commits_the_rest(tmp_path, mosquitto, mqtt_users):
    """A message the store refuses for its own content (here: a marker device the store raises
    OverflowError on, as SQLite does for a 65-bit integer) becomes a dead letter; the rest of its
    group commits; a storage outage (StorageUnavailable) would instead hold and retry."""
    class Picky(SQLiteStore):
        def apply(self, messages, rejects, clock=None):
            messages = list(messages)
            if any(it.get("d") == "poison" for m in messages for it in m.items):
                raise OverflowError("Python int too large to convert to SQLite INTEGER")
            return super().apply(messages, rejects, clock)

    store = Picky(str(tmp_path / "c.db"))
    cfg = MQTT(host="127.0.0.1", port=mosquitto.port, username="collector", password=mqtt_users["collector"],
               client_id="collector-isolate")
    ing = Ingest(cfg, store, IngestCfg(batch_ms=300)).start()   # one group for all of them
    assert ing.connected.wait(10)
    pub = Publisher(mosquitto.port, "agent-a", mqtt_users["agent-a"])
    try:
        now = int(time.time() * 1000)
        for seq in range(1, 11):
            pub.durable("metrics", seq, [iface("poison" if seq == 4 else "sw1", now + seq, 1)], wait=False)
        wait_until(lambda: store.ingest_stats()["dead_letters"] and store.counters.get("messages_stored", 0) >= 9,
                   20, "nine stored and one dead letter")
        dead = store.ingest_stats()["dead_letters"]
        assert [(d["seq"], d["reason"]) for d in dead] == [(4, "store_refused")]
        assert "OverflowError" in dead[0]["error"]
        assert store.watermark("agent-a", "ep1").seq == 10
        assert ing.stats["isolations"] >= 1 and ing.health() == (True, None)
    finally:
        pub.close()
        ing.stop()
        store.close()
