"""Backlog replay of the edge agent's publisher, and what the commit watermark costs.

    .venv/bin/python bench/agent_replay.py [messages] [inflight]

Fills a fresh durable queue with ``messages`` metrics messages (50 samples each,
like a busy building after an outage) and replays it three times, one Mosquitto:

  (a) replay rate: agent -> broker only, ``delete_on: puback`` (no collector), time until
      every PUBACK came back and the queue is empty;
  (b) ``delete_on: puback`` against a real collector process (SQLite store);
  (c) ``delete_on: commit`` (the default) against a real collector process: rows are
      deleted only when the collector's commit watermark covers them.

For (b) and (c): the agent's CPU per message (the publisher runs in this process's
main thread: ``time.thread_time`` from start until its queue is empty), the wall time
until the collector stored every seq, and the broker traffic: data messages and bytes
(topic + payload) against the watermarks (collector ``/api/v1/ingest/stats`` ->
``ingest.watermarks_published``; their bytes counted by a tap subscriber on
``campus/v1/commit/#``). Each watermark crosses the broker twice (collector -> broker
-> agent). The agent runs MQTT 5 like the real one. Not a test: numbers depend on the machine.
"""
from __future__ import annotations

import asyncio
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402

from campus_sense import wire  # noqa: E402
from edge_agent.publisher import Publisher  # noqa: E402
from edge_agent.queue import DurableQueue  # noqa: E402
from tests.collector_util import wait_until, write_config  # noqa: E402
from tests.peers import Mosquitto, free_port  # noqa: E402

AGENT = "bench"


class Tap:
    """Counts what crosses the broker: data messages of the agent and the collector's watermarks."""

    def __init__(self, port: int, pw: str):
        self.lock = threading.Lock()
        self.reset()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-tap")
        self.c.username_pw_set("tap", pw)
        self.c.on_connect = lambda cl, u, f, rc, p: cl.subscribe([(wire.SUBSCRIPTION, 0),
                                                                    (f"{wire.COMMIT_ROOT}/#", 0)])
        self.c.on_message = self._on
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def reset(self) -> None:
        with self.lock:
            self.data_n = self.data_b = self.mark_n = self.mark_b = 0

    def _on(self, client, userdata, m) -> None:
        if m.retain:     # the retained watermark of an earlier run, replayed on subscribe
            return
        b = len(m.payload) + len(m.topic)
        with self.lock:
            if m.topic.startswith(wire.COMMIT_ROOT + "/"):
                self.mark_n += 1
                self.mark_b += b
            elif m.topic.endswith(("/metrics", "/events", "/facts")):
                self.data_n += 1
                self.data_b += b

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def fill(n: int, items: list[bytes]) -> DurableQueue:
    q = DurableQueue(Path(tempfile.mkdtemp(prefix="bench-q-")) / "q.db", max_messages=n + 1)
    q.append("metrics", AGENT, [items] * n)
    return q


async def replay(q: DurableQueue, port: int, pw: str, inflight: int, delete_on: str) -> tuple[float, float]:
    """(wall s, agent main-thread CPU s) until the queue is empty."""
    pub = Publisher(queue=q, site="s", building="b", agent_id=AGENT, host="127.0.0.1", port=port,
                    username=AGENT, password=pw, protocol="5", inflight=inflight, heartbeat_s=3600,
                    delete_on=delete_on, confirm_timeout_s=60)
    t0, c0 = time.perf_counter(), time.thread_time()
    task = asyncio.create_task(pub.run())
    while q.depth:
        await asyncio.sleep(0.01)
    dt, cpu = time.perf_counter() - t0, time.thread_time() - c0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return dt, cpu


def hwm(db: Path, epoch: str) -> int:
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as c:
            r = c.execute("SELECT hwm FROM seq_state WHERE agent = ? AND epoch = ?", (AGENT, epoch)).fetchone()
            return r[0] if r else 0
    except sqlite3.OperationalError:
        return 0


async def with_collector(n: int, items: list[bytes], broker: Mosquitto, users: dict, tap: Tap, inflight: int,
                         delete_on: str) -> dict:
    d = Path(tempfile.mkdtemp(prefix=f"bench-col-{delete_on}-"))
    api = free_port()
    cfg = write_config(d / "collector.yaml", broker.port, "collector", users["collector"], d / "c.db", api,
                       client_id=f"bench-collector-{delete_on}")
    log = open(d / "collector.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "campus_sense", "collector", "--config", str(cfg)], cwd=ROOT,
                            stdout=log, stderr=log)
    try:
        def connected():
            try:
                return httpx.get(f"http://127.0.0.1:{api}/api/v1/health", timeout=1).json()["ingest"]["connected"]
            except (httpx.HTTPError, ValueError, KeyError):
                return False
        wait_until(connected, 60, "collector connected")
        tok = subprocess.run([sys.executable, "-m", "campus_sense", "collector", "token", "create", "--role", "admin",
                              "--config", str(cfg)], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        q = fill(n, items)
        await asyncio.sleep(0.5)
        tap.reset()
        t0 = time.perf_counter()
        dt, cpu = await replay(q, broker.port, users[AGENT], inflight, delete_on)
        await asyncio.to_thread(wait_until, lambda: hwm(d / "c.db", q.epoch) >= n, 300, "every seq stored")
        stored_s = time.perf_counter() - t0
        await asyncio.sleep(1.0)   # the last watermarks reach the tap
        stats = httpx.get(f"http://127.0.0.1:{api}/api/v1/ingest/stats",
                          headers={"Authorization": f"Bearer {tok}"}, timeout=10).json()["ingest"]
        with tap.lock:
            t = dict(data_n=tap.data_n, data_b=tap.data_b, mark_n=tap.mark_n, mark_b=tap.mark_b)
        q.close()
        return {"mode": delete_on, "empty_s": dt, "stored_s": stored_s, "cpu_s": cpu,
                "wm_published": stats["watermarks_published"], "groups": stats["committed_groups"],
                "duplicates": stats["duplicates"], **t}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


async def main(n: int, inflight: int) -> None:
    users = {AGENT: secrets.token_hex(8), "collector": secrets.token_hex(8), "tap": secrets.token_hex(8)}
    broker = Mosquitto(users).start()   # no ACL: the tap may read everything
    tap = Tap(broker.port, users["tap"])
    try:
        items = [wire.encode_item(wire.sample("interface", f"sw{i}", 1_700_000_000_000, {"in_octets": i, "out_octets": i},
                                              {"ifIndex": str(i)})) for i in range(50)]
        size = sum(len(i) + 1 for i in items)
        t0 = time.perf_counter()
        q = fill(n, items)
        fill_s = time.perf_counter() - t0
        dt, cpu = await replay(q, broker.port, users[AGENT], inflight, "puback")
        q.close()
        print(f"(a) {n} messages (~{size} B each): queued in {fill_s:.2f} s, replayed in {dt:.2f} s "
              f"= {n / dt:.0f} msg/s, {50 * n / dt:.0f} samples/s (inflight {inflight}, puback, no collector; "
              f"agent CPU {1e6 * cpu / n:.0f} us/msg)")
        rows = []
        for mode in ("puback", "commit"):
            rows.append(await with_collector(n, items, broker, users, tap, inflight, mode))
        print(f"\n{n} messages x 50 samples against a real collector (SQLite), inflight {inflight}, MQTT 5")
        hdr = ("delete_on", "queue empty s", "all stored s", "agent CPU us/msg", "data msgs", "data MB",
               "watermarks (stats)", "wm seen", "wm kB", "wm/data msgs", "wm/data bytes", "collector groups")
        print(" | ".join(hdr))
        for r in rows:
            print(" | ".join([
                r["mode"], f"{r['empty_s']:.2f}", f"{r['stored_s']:.2f}", f"{1e6 * r['cpu_s'] / n:.0f}",
                str(r["data_n"]), f"{r['data_b'] / 1e6:.2f}", str(r["wm_published"]), str(r["mark_n"]),
                f"{r['mark_b'] / 1e3:.1f}", f"{r['mark_n'] / max(r['data_n'], 1):.3f}",
                f"{r['mark_b'] / max(r['data_b'], 1):.4%}", str(r["groups"])]))
        p, c = rows
        print(f"\ncommit watermark: agent CPU {1e6 * (c['cpu_s'] - p['cpu_s']) / n:+.0f} us/msg "
              f"({(c['cpu_s'] / p['cpu_s'] - 1) if p['cpu_s'] else 0:+.0%}); broker traffic +{c['mark_n']} "
              f"watermark publishes ({c['mark_b']} B collector->broker, the same again broker->agent) "
              f"= {2 * c['mark_b'] / max(c['data_b'], 1):.3%} of the data bytes")
    finally:
        tap.close()
        broker.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000, int(sys.argv[2]) if len(sys.argv) > 2 else 32))
