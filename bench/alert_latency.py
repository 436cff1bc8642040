#!/usr/bin/env python3
"""Alert latency under load: an agent publishes an event (paho, wire format, QoS 1) -> Mosquitto ->
collector process (ingest -> SQLite commit -> rule engine thread -> alert store) -> the console's
SSE stream (/api/v1/alerts/stream). Meanwhile a second agent process pushes metrics batches
(SNMP-like interface samples) at --load points/s through the same broker and collector.

    .venv/bin/python bench/alert_latency.py [--events 1000] [--event-rate 40] [--load 50000]

Each event is a door_forced on its own device, so each opens a new critical alert; latency =
time the SSE `firing` change arrives - time just before the event was published. Prints
p50/p90/p99/max, the load actually achieved (points committed by the collector per second) and
the engine's queue drops, and where the time goes (publish -> the collector emits the change,
which is MQTT + ingest group commit + engine; emitted -> received on the SSE stream).
Goal: p99 < 500 ms. Not a test: numbers depend on the machine.

On the 2-core shared dev VM (1000 events at 40/s, 50k points/s load, rules incl. a threshold on
every interface sample and an absence rule): with ``ingest.batch_ms: 10`` (the collector's default,
``--batch-ms``) p50 ~35-45 ms, p99 ~180-230 ms; with ``--batch-ms 50`` p50 ~100 ms, p99 ~550 ms. Nearly all of the
tail is publish -> commit in ingest (the engine adds ~3-6 ms mean, the SSE hop ~1-20 ms).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402

from campus_sense import wire  # noqa: E402

RULES = """\
rules:
  - name: door-forced
    kind: event
    event: door_forced
    severity: critical
    summary: "Door forced: {device}"
  - name: port-saturated             # evaluated on every interface sample of the load
    kind: threshold
    measurement: interface
    field: util_in_pct
    op: ">"
    value: 95
    for: 5m
  - name: device-stale
    kind: absence
    after: 10m
"""


def _client(port: int, user: str, pw: str, cid: str) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid)
    c.username_pw_set(user, pw)
    c.max_inflight_messages_set(200)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def load_main(port: int, user: str, pw: str, rate: int, per: int, seconds: float) -> None:
    """Child process: publish metrics batches of ``per`` interface samples at ``rate`` points/s."""
    c = _client(port, user, pw, f"bench-load-{os.getpid()}")
    agent, epoch = user, secrets.token_hex(4)
    t0 = int(time.time() * 1000)
    ports = 48
    blobs = []
    for m in range(50):  # 50 templates x per samples, 48-port switches
        items = []
        for k in range(per):
            n = m * per + k
            dev, p = divmod(n, ports)
            items.append(wire.encode_item(wire.sample(
                "interface", f"load-sw-{dev:03d}", t0, {
                    "in_bps": 1e6 + n, "out_bps": 2e6, "in_octets": 10**9 + n, "out_octets": 10**9,
                    "in_errors": 0, "out_errors": 0, "in_discards": 0, "out_discards": 0,
                    "speed_mbps": 1000, "admin_up": True, "oper_up": True, "util_in_pct": 0.1 * p},
                {"ifIndex": str(p + 1), "ifName": f"Gi0/{p + 1}"})))
        blobs.append(items)
    topic = wire.topic("north", "L", agent, "metrics")
    per_s = rate / per
    seq = 0
    start = time.monotonic()
    end = start + seconds
    sent_points = 0
    while time.monotonic() < end:
        due = int((time.monotonic() - start) * per_s) + 1
        while seq < due:
            seq += 1
            payload = wire.encode_durable("metrics", agent, epoch, seq, int(time.time() * 1000),
                                          blobs[seq % len(blobs)])
            c.publish(topic, payload, qos=1)
            sent_points += per
        time.sleep(0.005)
    took = time.monotonic() - start
    print(json.dumps({"load_points": sent_points, "load_seconds": took}), flush=True)
    c.disconnect()
    c.loop_stop()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--event-rate", type=float, default=40, help="events per second")
    ap.add_argument("--load", type=int, default=50_000, help="background points per second (0: none)")
    ap.add_argument("--per-message", type=int, default=500, help="samples per metrics message")
    ap.add_argument("--warmup", type=float, default=5, help="seconds of load before the first event")
    ap.add_argument("--door-rule-only", action="store_true",
                    help="only the door rule (the engine skips the load's samples): isolates ingest latency")
    ap.add_argument("--batch-ms", type=float, default=10,
                    help="collector ingest.batch_ms (default 10 here; the collector's default is 50)")
    ap.add_argument("--_load", nargs=6, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._load:
        port, user, pw, rate, per, secs = a._load
        load_main(int(port), user, pw, int(rate), int(per), float(secs))
        return 0

    from collector.store.sqlite import SQLiteStore
    from tests.peers import Mosquitto, free_port, wait_port

    work = Path(tempfile.mkdtemp(prefix="bench-alerts-"))
    users = {"collector": secrets.token_hex(8), "door-agent": secrets.token_hex(8), "load-agent": secrets.token_hex(8)}
    (work / "mosq").mkdir()
    mosq = Mosquitto(users, work / "mosq").start()
    api = free_port()
    (work / "rules.yaml").write_text(RULES.split("  - name: port-saturated")[0] if a.door_rule_only else RULES)
    (work / "collector.pass").write_text(users["collector"] + "\n")
    (work / "collector.yaml").write_text(
        f"mqtt: {{host: 127.0.0.1, port: {mosq.port}, username: collector, password_file: collector.pass,"
        f" client_id: bench-alert-collector}}\n"
        "store: {path: c.db}\n"
        f"api: {{host: 127.0.0.1, port: {api}}}\n"
        "rules: {paths: [rules.yaml], db: alerts.db, tick_s: 1}\n"
        + f"ingest: {{batch_ms: {a.batch_ms:g}}}\n")
    st = SQLiteStore(str(work / "c.db"))
    _, token = st.token_create("security", "bench")
    _, admin = st.token_create("admin", "bench-admin")
    st.close()
    log = open(work / "collector.log", "ab")
    coll = subprocess.Popen([sys.executable, "-m", "campus_sense", "collector", "--config", str(work / "collector.yaml")],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    load = None
    base = f"http://127.0.0.1:{api}/api/v1"
    h = {"Authorization": f"Bearer {admin}"}
    try:
        wait_port(api, 30)
        end = time.monotonic() + 30
        while not httpx.get(base + "/health").json()["ingest"]["connected"]:
            if time.monotonic() > end:
                raise SystemExit("collector did not connect")
            time.sleep(0.1)
        # SSE reader
        arrived: dict[str, float] = {}
        emitted: dict[str, float] = {}
        ready = threading.Event()
        done = threading.Event()

        def reader():
            try:
                _read()
            except httpx.HTTPError:
                if not done.is_set():
                    raise

        def _read():
            with httpx.Client(timeout=httpx.Timeout(10, read=None)) as cl:
                with cl.stream("GET", f"{base}/alerts/stream?token={token}") as r:
                    ev = None
                    for line in r.iter_lines():
                        if line.startswith("event: "):
                            ev = line[7:]
                        elif line.startswith("data: "):
                            if ev == "hello":
                                ready.set()
                            elif ev == "alert":
                                now = time.time()
                                d = json.loads(line[6:])
                                if d.get("kind") == "firing" and d["alert"]["rule"] == "door-forced":
                                    dev = d["alert"]["labels"]["device"]
                                    if dev not in arrived:
                                        arrived[dev] = now
                                        emitted[dev] = d.get("emitted_ms", now * 1000) / 1000
                        if done.is_set():
                            return

        threading.Thread(target=reader, daemon=True).start()
        if not ready.wait(20):
            raise SystemExit("SSE stream did not open")
        duration = a.warmup + a.events / a.event_rate + 5
        if a.load:
            load = subprocess.Popen([sys.executable, __file__, "--_load", str(mosq.port), "load-agent",
                                     users["load-agent"], str(a.load), str(a.per_message), str(duration)],
                                    stdout=subprocess.PIPE, text=True)
            time.sleep(a.warmup)
        h0 = httpx.get(base + "/health").json()["ingest"]
        t_h0 = time.monotonic()
        pub = _client(mosq.port, "door-agent", users["door-agent"], "bench-door-agent")
        epoch = secrets.token_hex(4)
        topic = wire.topic("north", "A", "door-agent", "events")
        sent: dict[str, float] = {}
        start = time.monotonic()
        for i in range(a.events):
            due = start + i / a.event_rate
            while (d := due - time.monotonic()) > 0:
                time.sleep(d)
            dev = f"door-{i:05d}"
            now = time.time()
            payload = wire.encode_durable("events", "door-agent", epoch, i + 1, int(now * 1000),
                                          [wire.encode_item(wire.event(dev, "door_forced", int(now * 1000), "critical"))])
            sent[dev] = now
            pub.publish(topic, payload, qos=1)
        t_end = time.time() + 30
        while len(arrived) < len(sent) and time.time() < t_end:
            time.sleep(0.1)
        h1 = httpx.get(base + "/health").json()["ingest"]
        t_h1 = time.monotonic()
        stats = httpx.get(base + "/alerting/stats", headers=h)
        stats = stats.json() if stats.status_code == 200 else {}
        done.set()
        pub.disconnect()
        pub.loop_stop()
        lat = [(arrived[d] - sent[d]) * 1000 for d in sent if d in arrived]
        load_out = {}
        if load is not None:
            out, _ = load.communicate(timeout=duration + 60)
            for line in out.splitlines():
                if line.startswith("{"):
                    load_out = json.loads(line)
        pts = (h1["points"] - h0["points"]) / (t_h1 - t_h0)
        print(f"alert latency (agent publish -> console SSE), {len(lat)}/{len(sent)} events received, "
              f"{a.event_rate:g} events/s, collector ingest.batch_ms {a.batch_ms:g}")
        if lat:
            print(f"  p50 {pct(lat, 50):7.1f} ms   p90 {pct(lat, 90):7.1f} ms   p99 {pct(lat, 99):7.1f} ms   "
                  f"max {max(lat):7.1f} ms   mean {statistics.fmean(lat):.1f} ms")
        if lat:
            inside = [(emitted[d] - sent[d]) * 1000 for d in sent if d in arrived]
            sse = [(arrived[d] - emitted[d]) * 1000 for d in sent if d in arrived]
            print(f"  split: publish -> collector emits the change p50 {pct(inside, 50):.1f} / p99 {pct(inside, 99):.1f} ms; "
                  f"emitted -> received on SSE p50 {pct(sse, 50):.1f} / p99 {pct(sse, 99):.1f} ms")
        print(f"  background load: requested {a.load} points/s; published "
              f"{load_out.get('load_points', 0) / max(load_out.get('load_seconds', 1), 1e-9):,.0f} points/s; "
              f"committed by the collector during the event phase {pts:,.0f} points/s")
        print(f"  engine: processed {stats.get('processed')} messages, dropped {stats.get('dropped')}, "
              f"engine CPU {stats.get('engine_cpu_s', 0):.1f}s; collector ingest CPU {h1.get('writer_cpu_s', 0):.1f}s")
        if stats.get("event_lag_n"):
            print(f"  inside the collector, event/state message commit -> evaluated: mean "
                  f"{stats['event_lag_ms_sum'] / stats['event_lag_n']:.1f} ms, max {stats['event_lag_ms_max']:.1f} ms")
        ok = lat and len(lat) == len(sent) and pct(lat, 99) < 500
        print(f"  goal p99 < 500 ms: {'met' if ok else 'NOT met'}")
        return 0 if ok else 1
    finally:
        if load is not None and load.poll() is None:
            load.kill()
        coll.send_signal(signal.SIGTERM)
        try:
            coll.wait(30)
        except subprocess.TimeoutExpired:
            coll.kill()
        mosq.stop()


if __name__ == "__main__":
    sys.exit(main())
