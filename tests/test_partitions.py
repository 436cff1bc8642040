"""Partitioned ingest with leases (collector/partitions.py) with real PostgreSQL, Mosquitto and
VictoriaMetrics: two collector processes share 8 partitions; kill -9 one, the other takes its
partitions over (no lease overlap) and the broker redelivers what was not acknowledged; SIGSTOP
the survivor past its lease: its partitions move, and after SIGCONT its held group is refused by
the fencing check. Every produced seq is stored exactly once (PostgreSQL dedup state, per-node
counters, and every sample once in VictoriaMetrics)."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import zlib

import httpx
import paho.mqtt.client as mqtt
import pytest

from campus_sense import wire
from collector.partitions import client_id, partition_of, site_topic
from tests import peers_pg
from tests.collector_util import wait_until
from tests.peers import free_port
from tests.test_store_postgres import _count, _up, _vm, collector_config

pytestmark = pytest.mark.skipif(not peers_pg.available(), reason="PostgreSQL/psycopg missing")

COUNT = 8
LEASE_S = 3
SITES = [f"s{i:02d}" for i in range(12)]
AGENTS = [(f"ag{i:02d}", SITES[i % len(SITES)]) for i in range(20)]   # twenty agents over twelve sites
K = 10


def test_partition_hash_and_names_are_stable():
    assert partition_of("north", 64) == zlib.crc32(b"north") % 64 == partition_of("north", 64)
    assert client_id("campus-collector", 3, 64) == "campus-collector-p03"
    assert client_id("c", 7, 1000) == "c-p007"
    assert site_topic("north") == "campus/v1/north/+/+/+"


class Producer:
    """All agents over one connection, QoS 1; remembers what it produced."""

    def __init__(self, port, user, password):
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"producer-{id(self)}")
        self.c.username_pw_set(user, password)
        self.c.max_inflight_messages_set(100)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.seq = {a: 0 for a, _ in AGENTS}
        self.t0 = int(time.time() * 1000) - 3600_000

    def one_round(self):
        infos = []
        for i, (agent, site) in enumerate(AGENTS):
            self.seq[agent] += 1
            seq = self.seq[agent]
            items = [wire.sample("interface", f"{agent}-sw", self.t0 + seq * 1000, {"n": i * 1_000_000 + seq * 100 + j},
                                 {"ifIndex": str(j)}) for j in range(K)]
            payload = wire.encode_durable("metrics", agent, "ep1", seq, int(time.time() * 1000),
                                          [wire.encode_item(x) for x in items])
            infos.append(self.c.publish(wire.topic(site, "A", agent, "metrics"), payload, qos=1))
        return infos

    def rounds(self, n, pause=0.01):
        for _ in range(n):
            for info in self.one_round():
                info.wait_for_publish(10)
            time.sleep(pause)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def _leases(dsn):
    import psycopg
    with psycopg.connect(dsn, autocommit=True) as c:
        try:
            return {n: (h.split(":")[0], e, exp, acq) for n, h, e, exp, acq in c.execute(
                "SELECT name, holder, epoch, expires_at, acquired_at FROM leases WHERE name LIKE 'partition/%' "
                "AND expires_at > now() ORDER BY name")}
        except psycopg.errors.UndefinedTable:     # the first collector has not migrated yet
            return {}


def _held_by(dsn):
    out: dict[str, int] = {}
    for node, *_ in _leases(dsn).values():
        out[node] = out.get(node, 0) + 1
    return out


def _queued(port: int) -> int:
    """Messages a collector received and holds for its next commit group."""
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).json()["ingest"]["queued"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return 0


def test_two_collectors_kill_and_pause(tmp_path, pg, mosquitto, mqtt_users):
    dsn = pg.create_db("t_partitions")
    vm = _vm().start()
    ports = {n: free_port() for n in ("c1", "c2")}
    extra = (f"partitions: {{count: {COUNT}, lease_s: {LEASE_S}, refresh_s: 1, sites: [{', '.join(SITES)}]}}\n"
             "ingest: {batch_messages: 100000, batch_ms: 1500}\n")
    cfgs = {n: collector_config(tmp_path / f"{n}.yaml", mosquitto, mqtt_users["collector"], dsn, vm.url, ports[n],
                                client_id="district", extra=extra) for n in ports}
    for n, p in cfgs.items():      # per-node counters
        p.write_text(p.read_text().replace("  kind: postgres\n", f"  kind: postgres\n  node: {n}\n"))
    logs = {n: open(tmp_path / f"{n}.log", "ab") for n in ports}
    procs: dict[str, subprocess.Popen] = {}

    def start(n):
        procs[n] = subprocess.Popen([sys.executable, "-m", "campus_sense", "collector", "--config", str(cfgs[n])],
                                    stdout=logs[n], stderr=subprocess.STDOUT)
    prod = None
    try:
        start("c1")
        wait_until(lambda: _held_by(dsn) == {"c1": COUNT}, 60, "c1 holds every partition")
        start("c2")
        wait_until(lambda: _held_by(dsn) == {"c1": COUNT // 2, "c2": COUNT // 2}, 60, "4 + 4 after c2 joined")
        wait_until(lambda: _up(ports["c1"]) and _up(ports["c2"]), 60, "both connected")

        prod = Producer(mosquitto.port, "agent-a", mqtt_users["agent-a"])
        # ---- phase 1: kill -9 c1 while agents publish
        done = threading.Event()

        def produce():
            prod.rounds(60)
            done.set()
        th = threading.Thread(target=produce)
        th.start()
        wait_until(lambda: _count(dsn, "SELECT sum(value) FROM counters WHERE name='messages_stored' AND node='c1'")
                   > 0, 60, "c1 committed something")
        before = {n: v for n, v in _leases(dsn).items() if v[0] == "c1"}
        procs["c1"].send_signal(signal.SIGKILL)
        procs["c1"].wait(10)
        wait_until(lambda: _held_by(dsn) == {"c2": COUNT}, 60, "c2 took c1's partitions")
        after = _leases(dsn)
        for name, (_node, epoch, expires, _acq) in before.items():
            assert after[name][1] > epoch                    # a new fencing token
            assert after[name][3] >= expires                 # taken only after c1's lease expired
        th.join(120)
        assert done.is_set()
        total = 60
        wait_until(lambda: _count(dsn, f"SELECT count(*) FROM seq_state WHERE hwm = {total}") == len(AGENTS),
                   120, "every agent's seq 1..60 stored")

        # ---- phase 2: c1 comes back (4 + 4), then c2 is paused past its lease with a group in hand
        start("c1")
        wait_until(lambda: _held_by(dsn) == {"c1": COUNT // 2, "c2": COUNT // 2}, 60, "rebalanced")
        wait_until(lambda: _up(ports["c1"]), 60, "c1 connected")
        c2_parts = {n for n, v in _leases(dsn).items() if v[0] == "c2"}
        c2_sites = [s for s in SITES if f"partition/p{partition_of(s, COUNT):02d}" in c2_parts]
        assert c2_sites
        prod.rounds(20, pause=0)      # delivered at once; held by c2 for batch_ms (1.5 s)
        # paused once c2 holds messages in its commit group (a fixed sleep lost the race on a loaded machine)
        wait_until(lambda: _queued(ports["c2"]) > 0, 30, "c2 holding a commit group")
        procs["c2"].send_signal(signal.SIGSTOP)
        try:
            wait_until(lambda: _held_by(dsn) == {"c1": COUNT}, 60, "c1 took the paused c2's partitions")
            total = 80
            wait_until(lambda: _count(dsn, f"SELECT count(*) FROM seq_state WHERE hwm = {total}") == len(AGENTS),
                       120, "every agent's seq 1..80 stored (redelivered by the broker)")
        finally:
            procs["c2"].send_signal(signal.SIGCONT)
        # the paused collector tries to commit what it held, with its old epoch: refused
        wait_until(lambda: "no longer current" in (tmp_path / "c2.log").read_text(), 30, "c2's stale commit refused")
        wait_until(lambda: _held_by(dsn) == {"c1": COUNT // 2, "c2": COUNT // 2}, 60, "c2 back in, rebalanced")
        prod.rounds(5)
        total = 85
        wait_until(lambda: _count(dsn, f"SELECT count(*) FROM seq_state WHERE hwm = {total}") == len(AGENTS),
                   120, "every agent's seq 1..85 stored")
        time.sleep(1.0)   # late redeliveries arrive (and are dropped)

        # ---- produced vs stored: nothing lost, nothing twice
        produced = len(AGENTS) * total
        assert _count(dsn, "SELECT count(*) FROM gaps") == 0
        assert _count(dsn, "SELECT sum(value) FROM counters WHERE name='messages_stored'") == produced
        values = [v for s in vm.export('{__name__="interface_n"}') for v in s["values"]]
        assert len(values) == produced * K and len(set(values)) == produced * K
        for n in ("c1", "c2"):
            procs[n].send_signal(signal.SIGTERM)
            assert procs[n].wait(60) == 0
    finally:
        if prod is not None:
            prod.close()
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait()
        for f in logs.values():
            f.close()
        vm.stop()
    for n in ("c1", "c2"):
        assert "Traceback" not in (tmp_path / f"{n}.log").read_text(), n
