#!/usr/bin/env python3
"""Collector ingest benchmark: MQTT -> (discard | SQLite | InfluxDB v2 sink), same messages, same run.

    .venv/bin/python bench/ingest.py [--messages 600] [--per-message 500] [--profile]

Starts a private Mosquitto (password auth) on a free port and a victoria-metrics
(InfluxDB v2 write API) on another, creates four persistent sessions, pre-publishes
N messages of realistic SNMP interface samples (tags ifIndex/ifName, ~12 fields)
at QoS 1 so the broker queues them for every session, then drains each session:

  (a) broker: a paho subscriber that only acknowledges (the broker's delivery rate)
  (b) collector ingest -> SQLite (decode, dedup, series ids, samples + latest, ack after commit),
      with the default synchronous=FULL (acked data survives a power cut) and, as (b'),
      synchronous=NORMAL (survives a collector crash only; fewer fsyncs)
  (c) collector ingest -> InfluxDB v2 sink (victoria-metrics), metadata in SQLite

Prints points/s side by side. Not a test: numbers depend on the machine.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from campus_sense import wire  # noqa: E402
from collector.config import MQTT, Ingest as IngestCfg  # noqa: E402
from collector.ingest import Ingest  # noqa: E402
from collector.store.sqlite import SQLiteStore  # noqa: E402
from tests.peers import Mosquitto  # noqa: E402

SESSIONS = ("bench-discard", "bench-sqlite", "bench-influx", "bench-sqlite-normal")


def build_messages(n: int, per: int, agent: str, epoch: str, tables: bool = True) -> list[bytes]:
    """n messages, each ``per`` interface samples: 48 ports per switch, 60 s polls; ``tables``: each
    switch's poll as one table item (what agents send since 2026-12-07), else one item per sample."""
    out = []
    t0 = int(time.time() * 1000) - 86400_000
    k = 0
    ports = 48
    for seq in range(1, n + 1):
        items = []
        for _ in range(per):
            dev, port = divmod(k, ports)
            rnd, dev = divmod(dev, 200)
            i = port + 1
            items.append(wire.sample(
                "interface", f"sw-{dev:03d}", t0 + rnd * 60_000,
                {"in_bps": 1234567.0 + k, "out_bps": 7654321.5, "in_octets": 123456789012 + k,
                 "out_octets": 98765432101, "in_errors": 0, "out_errors": 1, "in_discards": 0,
                 "out_discards": 0, "speed_mbps": 1000, "admin_up": True, "oper_up": True,
                 "util_in_pct": 12.5},
                {"ifIndex": str(i), "ifName": f"Gi1/0/{i}"}))
            k += 1
        if tables:    # as agents send them to a collector that reads tables: a switch's poll = one item
            items = wire.tabulate(items)
        out.append(wire.pack(wire.encode_durable("metrics", agent, epoch, seq, t0,
                                                 [wire.encode_item(it) for it in items])))   # as agents send it
    return out


def _client(port, user, pw, cid, manual=False):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5, manual_ack=manual)
    c.username_pw_set(user, pw)
    return c


def _props(recv_max=1000):
    p = Properties(PacketTypes.CONNECT)
    p.SessionExpiryInterval = 3600
    p.ReceiveMaximum = recv_max
    return p


def create_sessions(port, user, pw):
    for cid in SESSIONS:
        c = _client(port, user, pw, cid)
        done = threading.Event()
        c.on_subscribe = lambda *a, **k: done.set()
        c.connect("127.0.0.1", port, clean_start=True, properties=_props())
        c.subscribe(wire.SUBSCRIPTION, qos=1)
        c.loop_start()
        done.wait(10)
        c.disconnect()
        c.loop_stop()


def publish_all(port, user, pw, msgs, agent):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-pub")
    c.username_pw_set(user, pw)
    c.max_inflight_messages_set(100)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    topic = wire.topic("north", "A", agent, "metrics")
    infos = [c.publish(topic, m, qos=1) for m in msgs]
    for i in infos:
        i.wait_for_publish(120)
    c.disconnect()
    c.loop_stop()


def drain_discard(port, user, pw, n) -> float:
    got = [0]
    done = threading.Event()
    c = _client(port, user, pw, SESSIONS[0])

    def on_message(cl, ud, m):
        got[0] += 1
        if got[0] >= n:
            done.set()
    c.on_message = on_message
    t = time.perf_counter()
    cpu = time.process_time()
    c.connect("127.0.0.1", port, clean_start=False, properties=_props())
    c.loop_start()
    done.wait(600)
    dt = time.perf_counter() - t
    cpu = time.process_time() - cpu
    c.disconnect()
    c.loop_stop()
    return dt, cpu


def drain_collector(port, user, pw, store, cid, points, profile=None) -> float:
    ing = Ingest(MQTT(host="127.0.0.1", port=port, username=user, password=pw, client_id=cid), store,
                 IngestCfg(batch_messages=int(os.environ.get("BENCH_BATCH", "500"))))
    if profile is not None:
        orig = ing.process

        def process(group):
            profile.enable()
            try:
                orig(group)
            finally:
                profile.disable()
        ing.process = process
    t = time.perf_counter()
    c = time.process_time()
    ing.start()
    while store.counters.get("points_stored", 0) < points:
        time.sleep(0.01)
    dt = time.perf_counter() - t
    cpu = time.process_time() - c
    print(f"  writer thread CPU {ing.stats['writer_cpu_s']:.2f}s of {cpu:.2f}s process CPU, "
          f"{ing.stats['committed_groups']} commit groups")
    ing.stop()
    return dt, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=600)
    ap.add_argument("--per-message", type=int, default=500)
    ap.add_argument("--profile", action="store_true", help="cProfile the SQLite writer path")
    ap.add_argument("--no-influx", action="store_true")
    ap.add_argument("--rows", action="store_true", help="one item per sample (agents before tables, old collectors)")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    users = {"agent": secrets.token_hex(8), "collector": secrets.token_hex(8)}
    (work / "mosq").mkdir()
    mosq = Mosquitto(users, work / "mosq").start()
    vm = None
    try:
        if not a.no_influx:
            from tests.peers_vm import VictoriaMetrics
            vm = VictoriaMetrics(work / "vm").start()
        msgs = build_messages(a.messages, a.per_message, "agent", secrets.token_hex(4), tables=not a.rows)
        points = a.messages * a.per_message
        size = sum(map(len, msgs))
        print(f"{a.messages} messages x {a.per_message} samples = {points} points, "
              f"{size / len(msgs) / 1024:.0f} KiB/message, {size / 2**20:.0f} MiB total; cpus={os.cpu_count()}")
        create_sessions(mosq.port, "collector", users["collector"])
        t = time.perf_counter()
        publish_all(mosq.port, "agent", users["agent"], msgs, "agent")
        print(f"pre-published in {time.perf_counter() - t:.1f}s")
        del msgs
        rows = []
        dt = drain_discard(mosq.port, "collector", users["collector"], a.messages)
        rows.append(("(a) broker -> discarding paho subscriber", dt))
        prof = cProfile.Profile() if a.profile else None
        # (b) the default, synchronous=FULL: what was acked survives a power cut;
        # (b') synchronous=NORMAL: survives a collector crash only, fewer fsyncs.
        for label, sync, session in (("(b) collector ingest -> SQLite (synchronous=FULL, default)", "FULL", 1),
                                     ("(b') collector ingest -> SQLite (synchronous=NORMAL)", "NORMAL", 3)):
            store = SQLiteStore(str(work / f"sqlite-{sync}.db"), synchronous=sync)
            dt = drain_collector(mosq.port, "collector", users["collector"], store, SESSIONS[session], points, prof)
            from collector.store.sqlite import stored_samples
            n = len(stored_samples(store.path))
            assert n == points, (n, points)
            store.close()
            rows.append((label, dt))
        if vm:
            from collector.store.influx import InfluxSink
            store = SQLiteStore(str(work / "influx-meta.db"), sink=InfluxSink(vm.url, "", "campus", "campus"))
            dt = drain_collector(mosq.port, "collector", users["collector"], store, SESSIONS[2], points)
            store.close()
            rows.append(("(c) collector ingest -> InfluxDB v2 sink (victoria-metrics)", dt))
        print(f"\n{'path':<64}{'seconds':>8}{'msgs/s':>8}{'points/s':>11}{'CPU s':>7}{'points/CPU-s':>14}")
        for name, (dt, cpu) in rows:
            print(f"{name:<64}{dt:>8.2f}{a.messages / dt:>8.0f}{points / dt:>11,.0f}{cpu:>7.2f}"
                  f"{points / cpu:>14,.0f}")
        print("(CPU s = CPU time of this Python process during the drain, all threads; points/CPU-s is the\n"
              " rate one fully available core would give; the broker and victoria-metrics run separately)")
        db = work / "sqlite-FULL.db"
        print(f"\nSQLite file {db.stat().st_size / 2**20:.0f} MiB "
              f"({db.stat().st_size / points:.0f} bytes/point incl. index)")
        if prof:
            pstats.Stats(prof).sort_stats("tottime").print_stats(18)
    finally:
        mosq.stop()
        if vm:
            vm.stop()
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
