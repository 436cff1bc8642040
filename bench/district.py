#!/usr/bin/env python3
"""District mode under load and faults: three collectors, one PostgreSQL, one VictoriaMetrics.

    .venv/bin/python bench/district.py [--agents 200] [--sites 16] [--ports 8] [--interval 1.0]

Starts, on loopback, everything itself: a throwaway PostgreSQL cluster (initdb in a temp dir,
tests/peers_pg.py), victoria-metrics with ``-dedup.minScrapeInterval=1ms`` (collector/README.md),
Mosquitto with persistence, password auth and the shipped ACL shape (user name = agent id, one
``topic write campus/v1/+/+/<agent>/#`` block per agent; no ``use_username_as_clientid``: partition
sessions need their own client ids), a webhook receiver (tests/test_notify_support.py) and three
``campus-sense collector`` processes (``store.kind: postgres``, 16 partitions, ``lease_s`` 4, an
event rule and a threshold rule, notifications to the webhook).

The agents are the real agent code: each of ``--agents`` simulated agents is one
``edge_agent.queue.DurableQueue`` (its own SQLite file, under /dev/shm), one
``edge_agent.batcher.Batcher`` and one ``edge_agent.publisher.Publisher`` (MQTT 5, its own user
and client id, ``delete_on: commit``: rows leave the queue only when the collector's commit
watermark covers them), 100 per worker process on one asyncio loop. Every ``--interval`` each
agent queues ``--ports`` interface samples (in_octets, out_octets) of its switch; every tenth
agent also a fridge temperature, and every tenth (offset 5) a door controller's events.

Timeline (seconds after the agents start): 8 fridges warm up (threshold fires), half the doors are
forced (event rule fires); ~15 kill -9 collector 1; once the survivors hold all partitions the
fridges cool down and the first doors close (the clears land on the partitions' new holders);
the other doors are forced, collector 2 is SIGSTOPped for ``--pause-s`` (``lease_s + 3``) s (collector 3 takes
everything), SIGCONT, those doors close, collector 1 is restarted and the partitions rebalance;
10 s later the agents stop producing and drain their queues.

Then, per agent and seq: produced (the queue's last seq) against PostgreSQL (``seq_state`` hwm,
``gaps``, ``messages_stored`` summed over nodes; events rows by (agent, device, time, type)), and
VictoriaMetrics: per series, the exported sample count and a SHA-256 over the sorted
``timestamp:value`` pairs against what the agents queued. Alert transitions (firing, resolved)
expected from the injected data against ``alert_history``; notifications at the webhook, with
duplicates by (alert id, status) and by delivery id. Partition takeover time: from the signal
until the others hold every partition (``leases``). CPU-seconds per 1,000 samples: each collector
process (/proc/<pid>/stat; collector 1 summed over both of its lives), and PostgreSQL,
VictoriaMetrics, Mosquitto and the agent workers against all samples.

The same workload then runs with ONE collector (no faults, shorter) on a fresh database, broker
and VictoriaMetrics, for comparison. Exit status 1 if anything was lost or duplicated.
Not a test: figures depend on the machine; the whole run takes about 2 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing as mp
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import zlib
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COUNT = 16          # partitions
LEASE_S = 4
PER_WORKER = 100    # agents per worker process
TICK = os.sysconf("SC_CLK_TCK")

RULES = """\
rules:
  - name: door-forced
    kind: event
    event: door_forced
    clear_event: door_closed
    severity: critical
    summary: "Door forced: {device}"
  - name: fridge-warm
    kind: threshold
    measurement: temperature
    field: value
    op: ">"
    value: 5
    severity: warning
    summary: "Fridge {device} at {value:.1f} C"
"""


# ============================================================== simulated agents (worker process)
class SimAgent:
    """One agent: the real durable queue, batcher and publisher; remembers what it queued."""

    def __init__(self, idx: int, agent: str, site: str, port: int, password: str, qdir: Path, nports: int):
        from edge_agent.batcher import Batcher
        from edge_agent.publisher import Publisher
        from edge_agent.queue import DurableQueue
        self.idx, self.agent, self.site, self.nports = idx, agent, site, nports
        self.queue = DurableQueue(qdir / f"{agent}.db")
        self.fridge = idx % 10 == 0
        self.door = idx % 10 == 5
        self.temp = 3.0
        self.devices = [{"id": f"{agent}-sw", "driver": "snmp", "room": "A-001", "type": "switch"}]
        if self.fridge:
            self.devices.append({"id": f"{agent}-fridge", "driver": "modbus", "room": "K-001", "type": "fridge"})
        if self.door:
            self.devices.append({"id": f"{agent}-door", "driver": "access", "room": "A-002", "type": "door"})
        self.pub = Publisher(queue=self.queue, site=site, building="A", agent_id=agent, host="127.0.0.1", port=port,
                             username=agent, password=password, protocol="5", inflight=32, heartbeat_s=30,
                             reconnect_max_s=2, confirm_timeout_s=30,
                             birth_body=lambda: {"version": "bench", "config_hash": "x", "drivers": ["snmp"],
                                                 "devices": self.devices})
        self.batcher = Batcher(self.queue, agent, max_message_bytes=256 * 1024, max_items=5000,
                               on_flushed=self.pub.wake)
        self.series: dict[tuple, list[tuple[int, int]]] = defaultdict(list)   # key -> [(ts, value)]
        self.events: list[tuple[str, int, str]] = []                           # (device, ts, type)
        self.tick = 0
        self.last_ms = 0

    def produce(self) -> None:
        from drivers.base import Sample
        now = max(int(time.time() * 1000), self.last_ms + 1)
        self.last_ms = now
        self.tick += 1
        recs = []
        for p in range(1, self.nports + 1):
            f = {"in_octets": self.tick * 1000 + p * 10 + self.idx % 7, "out_octets": self.tick * 500 + p}
            recs.append(Sample("interface", f"{self.agent}-sw", f, {"ifIndex": str(p)}, now))
            for k, v in f.items():
                self.series[(f"interface_{k}", f"{self.agent}-sw", str(p))].append((now, v))
        if self.fridge:
            recs.append(Sample("temperature", f"{self.agent}-fridge", {"value": self.temp}, {}, now))
            self.series[("temperature_value", f"{self.agent}-fridge", "")].append((now, int(self.temp)))
        self.batcher.add(recs)
        self.batcher.flush()

    def event(self, typ: str, severity: str) -> None:
        from drivers.base import Event
        now = max(int(time.time() * 1000), self.last_ms + 1)
        self.last_ms = now
        self.batcher.add([Event(f"{self.agent}-door", typ, severity, {}, {}, now)])
        self.batcher.flush()
        self.events.append((f"{self.agent}-door", now, typ))

    def report(self) -> dict:
        return {"agent": self.agent, "site": self.site, "epoch": self.queue.epoch, "last_seq": self.queue.last_seq,
                "depth": self.queue.depth, "dropped": self.queue.dropped_total, "resent": self.pub.resent_total,
                "samples": sum(len(v) for k, v in self.series.items() if k[0] != "interface_out_octets"),
                "series": {"|".join(k): [len(v), _checksum(v)] for k, v in self.series.items()},
                "events": self.events}


def _checksum(points) -> str:
    return hashlib.sha256("\n".join(f"{t}:{v}" for t, v in sorted(points)).encode()).hexdigest()[:16]


def agent_worker(conn, specs: list, port: int, qdir: str, interval: float, nports: int) -> None:
    import logging
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s agents %(levelname)s %(name)s: %(message)s")
    asyncio.run(_agents_main(conn, specs, port, Path(qdir), interval, nports))


async def _agents_main(conn, specs, port, qdir, interval, nports) -> None:
    loop = asyncio.get_running_loop()
    cmds: asyncio.Queue = asyncio.Queue()

    def reader():
        while True:
            try:
                msg = conn.recv()
            except EOFError:
                msg = ("exit",)
            loop.call_soon_threadsafe(cmds.put_nowait, msg)
            if msg[0] == "exit":
                return
    threading.Thread(target=reader, daemon=True).start()
    sims = [SimAgent(i, a, s, port, pw, qdir, nports) for i, a, s, pw in specs]
    runs = [asyncio.create_task(s.pub.run()) for s in sims]
    producing = asyncio.Event()

    async def ticker():
        nxt = time.monotonic()
        while True:
            await producing.wait()
            for k, s in enumerate(sims):
                s.produce()
                if k % 10 == 9:
                    await asyncio.sleep(0)
            nxt += interval
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            if not producing.is_set():
                nxt = time.monotonic()
    tick_task = asyncio.create_task(ticker())
    conn.send(("ready",))
    while True:
        msg = await cmds.get()
        what = msg[0]
        if what == "connected":
            end = time.monotonic() + 60
            while not all(s.pub.connected for s in sims) and time.monotonic() < end:
                await asyncio.sleep(0.1)
            conn.send(("connected", sum(s.pub.connected for s in sims)))
        elif what == "produce":
            producing.set()
        elif what == "stop":
            producing.clear()
            conn.send(("stopped",))
        elif what == "warm" or what == "cool":
            for s in sims:
                if s.fridge:
                    s.temp = 8.0 if what == "warm" else 3.0
        elif what in ("door_forced", "door_closed"):
            half = msg[1]
            for s in sims:
                if s.door and (s.idx < 100) == (half == 0):
                    s.event(what, "critical" if what == "door_forced" else "info")
        elif what == "drain":
            end = time.monotonic() + msg[1]
            while any(s.queue.depth for s in sims) and time.monotonic() < end:
                await asyncio.sleep(0.2)
            conn.send(("report", [s.report() for s in sims]))
        elif what == "exit":
            break
    tick_task.cancel()
    for t in runs:
        t.cancel()
    await asyncio.gather(tick_task, *runs, return_exceptions=True)
    for s in sims:
        s.queue.close()


# ============================================================== peers and collectors
def cpu_s(pid: int) -> float:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / TICK
    except (OSError, IndexError):
        return 0.0


def pg_cpu_s(pg) -> float:
    """postmaster + backends alive + backends it reaped."""
    import psutil
    try:
        pm = psutil.Process(int((pg.data / "postmaster.pid").read_text().split()[0]))
        t = pm.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for c in pm.children(recursive=True):
            try:
                ct = c.cpu_times()
                total += ct.user + ct.system
            except psutil.Error:
                pass
        return total
    except (OSError, psutil.Error):
        return 0.0


class Broker:
    """Mosquitto like tests/peers.py (persistence, the shipped durability lines) with one user per
    agent and the shipped ACL shape, without use_username_as_clientid."""

    def __init__(self, users: dict[str, str], workdir: Path):
        from tests.peers import Mosquitto
        self.m = Mosquitto({"collector": users["collector"]}, workdir)
        pw = workdir / "passwd"
        pw.write_text("".join(f"{u}:{p}\n" for u, p in users.items()))
        subprocess.run(["mosquitto_passwd", "-U", str(pw)], check=True, capture_output=True)
        os.chmod(pw, 0o600)
        self.m.users = users
        acl = self.m._shipped_acl()
        conf = workdir / "mosquitto.conf"
        conf.write_text(conf.read_text() + f"acl_file {acl}\n")
        self.port = self.m.port

    def start(self):
        self.m.start()
        return self

    def stop(self):
        self.m.stop()

    @property
    def pid(self):
        return self.m.proc.pid


def write_collector(d: Path, name: str, broker_port: int, dsn: str, vm_url: str, api_port: int, sites: list[str],
                    count: int) -> Path:
    (d / f"{name}.dsn").write_text(dsn + "\n")
    p = d / f"{name}.yaml"
    p.write_text(
        f"mqtt: {{host: 127.0.0.1, port: {broker_port}, username: collector, password_file: collector.pass, "
        f"client_id: district}}\n"
        f"store:\n  kind: postgres\n  node: {name}\n  dsn_file: {name}.dsn\n  url: {vm_url}\n  query_url: {vm_url}\n"
        f"  path: {name}-local.db\n"
        f"api: {{host: 127.0.0.1, port: {api_port}}}\n"
        f"partitions: {{count: {count}, lease_s: {LEASE_S}, refresh_s: 2, sites: [{', '.join(sites)}]}}\n"
        f"rules: {{paths: [{d / 'rules.yaml'}], db: {name}-alerts.db, tick_s: 0.5}}\n"
        f"notify: {{config: {d / 'notify.yaml'}}}\n")
    return p


class Run:
    """One workload against n collectors (faults only with 3)."""

    def __init__(self, label: str, args, pg, n_collectors: int, workdir: Path, faults: bool, produce_s: float):
        self.label, self.args, self.pg, self.n, self.faults, self.produce_s = label, args, pg, n_collectors, faults, produce_s
        self.slug = "district" if faults else f"single{n_collectors}"
        self.d = workdir / self.slug
        self.d.mkdir(parents=True)
        self.sites = [f"site{i:02d}" for i in range(args.sites)]
        self.agents = [(i, f"ag{i:03d}", self.sites[i % args.sites]) for i in range(args.agents)]
        self.users = {"collector": secrets.token_hex(8), **{a: secrets.token_hex(8) for _, a, _ in self.agents}}
        self.procs: dict[str, subprocess.Popen] = {}
        self.cpu: Counter = Counter()          # collector node -> CPU s of finished lives
        self.events: list[tuple[float, str]] = []
        self.takeover: dict[str, float] = {}
        self.snaps: dict[str, dict[str, str]] = {}
        self.t0 = time.monotonic()
        self.wall0 = time.time()

    def note(self, what: str) -> None:
        self.events.append((time.monotonic() - self.t0, what))
        print(f"  [{self.label} {time.monotonic() - self.t0:6.1f}s] {what}", flush=True)

    # ---------------------------------------------------------- helpers
    def q(self, sql: str, args=None):
        import psycopg
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as c:
            return c.execute(sql, args).fetchall()

    def held(self) -> dict[str, int]:
        import psycopg
        try:
            rows = self.q("SELECT holder FROM leases WHERE name LIKE 'partition/%' AND expires_at > now()")
        except psycopg.Error:
            return {}
        return dict(Counter(h.split(":")[0] for (h,) in rows))

    def wait(self, cond, timeout: float, what: str, step: float = 0.1):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            v = cond()
            if v:
                return v
            time.sleep(step)
        raise TimeoutError(f"{self.label}: {what} not within {timeout:.0f} s (logs in {self.d})")

    def start_collector(self, name: str) -> None:
        log = open(self.d / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "campus_sense", "collector", "--config", str(self.cfgs[name])], cwd=self.d,
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})

    def balanced(self, live: list[str]) -> bool:
        h = self.held()
        share = -(-COUNT // len(live))
        return set(h) == set(live) and sum(h.values()) == COUNT and max(h.values()) <= share

    def all_to(self, live: list[str]) -> bool:
        h = self.held()
        return set(h) <= set(live) and sum(h.values()) == COUNT

    def cmd(self, *msg) -> None:
        for c in self.conns:
            c.send(msg)

    def snapshot(self, tag: str) -> None:
        """Which collector holds each partition when the agents emit the alerting data of ``tag``."""
        rows = self.q("SELECT name, holder FROM leases WHERE name LIKE 'partition/%' AND expires_at > now()")
        self.snaps[tag] = {n.split("/", 1)[1]: h.split(":")[0] for n, h in rows}

    def holder_of(self, tag: str, site: str) -> str:
        p = zlib.crc32(site.encode()) % COUNT
        return self.snaps.get(tag, {}).get(f"p{p:0{max(2, len(str(COUNT - 1)))}d}", "?")

    def recv_all(self, kind: str, timeout: float):
        out = []
        for c in self.conns:
            if not c.poll(timeout):
                raise TimeoutError(f"{self.label}: agent worker did not answer {kind}")
            m = c.recv()
            assert m[0] == kind, m
            out.append(m[1] if len(m) > 1 else None)
        return out

    # ---------------------------------------------------------- the run
    def execute(self) -> dict:
        from tests.peers import free_port
        from tests.peers_vm import VictoriaMetrics
        from tests.test_notify_support import RobotServer
        self.dsn = self.pg.create_db(f"bench_{self.slug}")
        self.vm = VictoriaMetrics(self.d / "vm", args=("-dedup.minScrapeInterval=1ms",)).start()
        (self.d / "mosq").mkdir()
        self.broker = Broker(self.users, self.d / "mosq").start()
        self.hook = RobotServer().start()
        (self.d / "collector.pass").write_text(self.users["collector"] + "\n")
        (self.d / "rules.yaml").write_text(RULES)
        (self.d / "notify.yaml").write_text(
            f"channels:\n  hook: {{type: webhook, url: '{self.hook.url('/hook/bench')}'}}\n"
            "route: {channels: [hook], group_wait: 0s, group_interval: 0s}\n"
            "outbox: {evaluation_interval: 0.2s}\n")
        names = [f"c{i}" for i in range(1, self.n + 1)]
        self.cfgs = {n: write_collector(self.d, n, self.broker.port, self.dsn, self.vm.url, free_port(), self.sites,
                                        COUNT) for n in names}
        pg_cpu0 = pg_cpu_s(self.pg)
        workers = []
        try:
            for n in names:
                self.start_collector(n)
                if n == "c1":    # the first one migrates the schema alone
                    self.wait(lambda: self.held().get("c1") == COUNT, 60, "c1 holds every partition")
            self.wait(lambda: self.balanced(names), 60, "partitions balanced")
            self.note(f"{self.n} collector(s) up: {self.held()}")
            # agents
            ctx = mp.get_context("spawn")
            qdir = Path(tempfile.mkdtemp(prefix="bench-queues-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
            self.qdir = qdir
            self.conns = []
            for w in range(0, len(self.agents), PER_WORKER):
                specs = [(i, a, s, self.users[a]) for i, a, s in self.agents[w:w + PER_WORKER]]
                parent, child = ctx.Pipe()
                p = ctx.Process(target=agent_worker, args=(child, specs, self.broker.port, str(qdir),
                                                           self.args.interval, self.args.ports), daemon=True)
                p.start()
                workers.append(p)
                self.conns.append(parent)
            self.recv_all("ready", 120)
            self.cmd("connected")
            n_conn = sum(self.recv_all("connected", 90))
            self.note(f"{n_conn} agents connected over {len(workers)} worker processes")
            self.cmd("produce")
            t_prod = time.monotonic()
            time.sleep(8)
            self.snapshot("A-fire")
            self.cmd("warm")
            self.cmd("door_forced", 0)
            self.note("fridges warm, doors (first half) forced")
            if self.faults:
                self.fault_sequence(names)
            else:
                time.sleep(6)
                self.snapshot("A-close")
                self.snapshot("B-fire")
                self.cmd("cool")
                self.cmd("door_closed", 0)
                self.cmd("door_forced", 1)
                self.note("fridges cool, first doors closed, second half forced")
                time.sleep(4)
                self.snapshot("B-close")
                self.cmd("door_closed", 1)
                self.note("second doors closed")
            rest = self.produce_s - (time.monotonic() - t_prod)
            time.sleep(max(rest, 3))
            self.cmd("stop")
            self.recv_all("stopped", 30)
            prod_s = time.monotonic() - t_prod
            self.note(f"agents stopped producing after {prod_s:.0f} s; draining")
            self.cmd("drain", 180)
            reports = [r for rs in self.recv_all("report", 200) for r in rs]
            self.note(f"drained: {sum(r['depth'] for r in reports)} messages left in agent queues")
            return self.measure(reports, names, workers, pg_cpu0, prod_s)
        finally:
            try:
                self.cmd("exit")
            except (OSError, AttributeError):
                pass
            for p in workers:
                p.join(20)
                if p.is_alive():
                    p.kill()
            for p in self.procs.values():
                if p.poll() is None:
                    p.send_signal(signal.SIGCONT)
                    p.send_signal(signal.SIGTERM)
            for p in self.procs.values():
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            self.hook.stop()
            self.broker.stop()
            self.vm.stop()
            if getattr(self, "qdir", None):
                shutil.rmtree(self.qdir, ignore_errors=True)

    def fault_sequence(self, names: list[str]) -> None:
        time.sleep(7)
        # ---- kill -9 c1
        self.cpu["c1"] += cpu_s(self.procs["c1"].pid)
        t = time.monotonic()
        self.procs["c1"].send_signal(signal.SIGKILL)
        self.procs["c1"].wait(10)
        self.note("kill -9 c1")
        self.wait(lambda: self.all_to(["c2", "c3"]), 60, "c2+c3 hold every partition", 0.05)
        self.takeover["kill -9 c1"] = time.monotonic() - t
        self.note(f"c2+c3 hold all partitions after {self.takeover['kill -9 c1']:.2f} s: {self.held()}")
        time.sleep(2)
        self.snapshot("A-close")
        self.cmd("cool")
        self.cmd("door_closed", 0)
        self.note("fridges cool, first doors closed")
        time.sleep(3)
        self.snapshot("B-fire")
        self.cmd("door_forced", 1)
        self.note("second half of doors forced")
        time.sleep(1)
        # ---- SIGSTOP c2 past its lease
        t = time.monotonic()
        self.procs["c2"].send_signal(signal.SIGSTOP)
        self.note("SIGSTOP c2")
        try:
            self.wait(lambda: self.all_to(["c3"]), 60, "c3 holds every partition", 0.05)
            self.takeover["SIGSTOP c2"] = time.monotonic() - t
            self.note(f"c3 holds all partitions after {self.takeover['SIGSTOP c2']:.2f} s")
            time.sleep(max(0.0, self.args.pause_s - (time.monotonic() - t)))
        finally:
            self.procs["c2"].send_signal(signal.SIGCONT)
        self.note(f"SIGCONT c2 after {time.monotonic() - t:.1f} s")
        time.sleep(1)
        self.snapshot("B-close")
        self.cmd("door_closed", 1)
        self.note("second doors closed")
        # ---- restart c1
        self.start_collector("c1")
        t = time.monotonic()
        self.wait(lambda: self.balanced(names), 90, "rebalanced over c1, c2, c3", 0.1)
        self.takeover["rebalance after restart"] = time.monotonic() - t
        self.note(f"c1 restarted, rebalanced after {self.takeover['rebalance after restart']:.2f} s: {self.held()}")
        time.sleep(10)

    # ---------------------------------------------------------- measuring
    def measure(self, reports, names, workers, pg_cpu0, prod_s) -> dict:
        r: dict = {"label": self.label, "collectors": self.n, "agents": len(reports),
                   "sites": len({x["site"] for x in reports}), "produce_s": prod_s}
        produced_msgs = sum(x["last_seq"] for x in reports)
        r["messages produced"] = produced_msgs
        hwm = {(a, e): h for a, e, h in self.q("SELECT agent, epoch, hwm FROM seq_state")}
        gaps = self.q("SELECT agent, epoch, first_seq, last_seq FROM gaps")
        missing = sum(max(0, x["last_seq"] - hwm.get((x["agent"], x["epoch"]), 0)) for x in reports)
        missing += sum(b - a + 1 for _, _, a, b in gaps)
        counters = defaultdict(Counter)
        for name, node, v in self.q("SELECT name, node, value FROM counters"):
            counters[name][node] += v
        # a seq is stored at most once by construction (dedup state); what would show a message applied
        # twice is its content: the samples counter (metrics messages) and the event rows
        r["messages stored (PG, seqs)"] = sum(min(x["last_seq"], hwm.get((x["agent"], x["epoch"]), 0))
                                              for x in reports) - sum(b - a + 1 for _, _, a, b in gaps)
        r["messages lost (PG)"] = missing
        r["redeliveries dropped by dedup"] = sum(counters["duplicates"].values())
        # events: each injected event once
        ev_expected = Counter((e[0], e[1], e[2]) for x in reports for e in x["events"])
        ev_seen = Counter(self.q("SELECT device, ts_ms, type FROM events"))
        r["events produced"] = sum(ev_expected.values())
        r["events lost (PG)"] = sum((ev_expected - ev_seen).values())
        r["events duplicated (PG)"] = sum((ev_seen - ev_expected).values())
        # the same comparison without the time: an event stored once but at another time
        # (collector clock correction, collector/ingest.py) shows here as 0 / 0
        ev_exp_nt = Counter((d, ty) for (d, _, ty) in ev_expected.elements())
        ev_seen_nt = Counter((d, ty) for (d, _, ty) in ev_seen.elements())
        r["events lost / dup. ignoring time"] = \
            f"{sum((ev_exp_nt - ev_seen_nt).values())} / {sum((ev_seen_nt - ev_exp_nt).values())}"
        r["agents with clock offset > 2 s"] = self.q(
            "SELECT count(*) FROM agents WHERE abs(coalesce(clock_offset_ms, 0)) > 2000")[0][0]
        # VictoriaMetrics: count and checksum per series
        exp_series = {}
        for x in reports:
            for key, (n, ck) in x["series"].items():
                name, dev, ifx = key.split("|")
                exp_series[(name, x["agent"], dev, ifx)] = (n, ck)
        got = defaultdict(list)
        self.vm.flush()
        for name in sorted({k[0] for k in exp_series}):
            qs = urllib.parse.urlencode({"match[]": f'{{__name__="{name}"}}', "start": "0",
                                         "end": str(int(time.time()) + 86400)})   # shifted times too
            with urllib.request.urlopen(f"{self.vm.url}/api/v1/export?{qs}", timeout=120) as resp:
                for ln in resp.read().splitlines():
                    if not ln.strip():
                        continue
                    s = json.loads(ln)
                    m = s["metric"]
                    k = (m["__name__"], m.get("agent"), m.get("device"), m.get("ifIndex", ""))
                    got[k].extend(zip(s["timestamps"], [int(v) for v in s["values"]]))
        lost = dup = bad = 0
        for k, (n, ck) in exp_series.items():
            pts = got.get(k, [])
            uniq = set(pts)
            lost += max(0, n - len(uniq))
            dup += len(pts) - len(uniq)
            if _checksum(uniq) != ck:
                bad += 1
        r["samples produced"] = sum(x["samples"] for x in reports)
        r["samples stored (PG counter)"] = sum(counters["points_stored"].values())
        r["samples duplicated (PG counter)"] = r["samples stored (PG counter)"] - r["samples produced"] \
            if not missing else "n/a (loss)"
        r["VM values produced"] = sum(n for n, _ in exp_series.values())
        r["VM values stored"] = sum(len(v) for v in got.values())
        r["VM values lost"] = lost
        r["VM values duplicated"] = dup
        r["VM series"] = f"{len(exp_series)} expected, {len(got)} found, {bad} checksum mismatches"
        r["VM checksum mismatches"] = bad + len(set(got) - set(exp_series))
        # alerts: transitions expected vs seen
        fridges = [x["agent"] for x in reports if int(x["agent"][2:]) % 10 == 0]
        doors = {e[0] for x in reports for e in x["events"]}
        expected = Counter()
        for a in fridges:
            expected[("fridge-warm", f"{a}-fridge", "firing")] += 1
            expected[("fridge-warm", f"{a}-fridge", "resolved")] += 1
        for dev in doors:
            expected[("door-forced", dev, "firing")] += 1
            expected[("door-forced", dev, "resolved")] += 1

        def seen():
            rows = self.q("SELECT a.rule, a.labels, h.action FROM alert_history h JOIN alerts a ON a.id = h.alert_id")
            return Counter((rule, json.loads(lab).get("device"), act) for rule, lab, act in rows
                           if act in ("firing", "resolved"))
        try:
            self.wait(lambda: seen() == expected or None, 20, "alert transitions", 0.5)
        except TimeoutError:
            pass
        hook_n = sum(expected.values())
        try:
            self.wait(lambda: len(self.hook.accepted_on("/hook/bench")) >= hook_n or None, 20, "notifications", 0.5)
        except TimeoutError:
            pass
        time.sleep(3)     # late duplicates would arrive now
        s = seen()
        r["alert transitions expected"] = sum(expected.values())
        r["alert transitions seen"] = sum(s.values())
        r["alert transitions missing"] = sum((expected - s).values())
        r["alert transitions extra"] = sum((s - expected).values())
        site_of = {x["agent"]: x["site"] for x in reports}

        def where(dev: str) -> tuple[str, str]:
            agent = dev.split("-")[0]
            ph = "A" if dev.endswith("-fridge") or int(agent[2:]) < 100 else "B"
            return (self.holder_of(f"{ph}-fire", site_of[agent]), self.holder_of(f"{ph}-close", site_of[agent]))
        moved = {k[1] for k in expected if where(k[1])[0] != where(k[1])[1]}
        r["alerts: partition moved fire->clear"] = f"{len(moved)} of {len(expected) // 2}"
        def detail(k) -> str:
            rows = self.q("SELECT a.state, h.action, h.t_ms FROM alert_history h JOIN alerts a ON a.id = h.alert_id "
                          "WHERE a.rule = %s AND a.labels LIKE %s ORDER BY h.id", (k[0], f'%"{k[1]}"%'))
            hist = ", ".join(f"{act} at {h_ms / 1000 - self.wall0:.1f}s" for _, act, h_ms in rows)
            return "data sent while %s held the site, clear while %s held it; history: %s; state now %s" % (
                *where(k[1]), hist or "-", rows[-1][0] if rows else "-")
        r["_alerts_missing"] = [(*k, detail(k)) for k in sorted(expected - s)]
        r["_alerts_extra"] = [(*k, detail(k)) for k in sorted(s - expected)]
        r["alert transitions missing (moved)"] = sum(v for k, v in (expected - s).items() if k[1] in moved)
        notes = self.hook.accepted_on("/hook/bench")
        per = Counter((a["id"], a["status"]) for n in notes for a in n["body"]["alerts"])
        deliveries = Counter(n["headers"].get("X-Campus-Sense-Delivery") for n in notes)
        r["notifications received"] = sum(per.values())
        # the same (alert, status) received more than once; "same id": with the same X-Campus-Sense-Delivery
        # (a resend the receiver can drop, at-least-once as documented)
        r["duplicate notifications"] = sum(v - 1 for v in per.values() if v > 1)
        r["  of them same delivery id"] = sum(v - 1 for k, v in deliveries.items() if k and v > 1)
        r["takeover"] = dict(self.takeover)
        # CPU
        for n in names:
            p = self.procs.get(n)
            if p is not None and p.poll() is None:
                self.cpu[n] += cpu_s(p.pid)
        pts = counters["points_stored"]
        r["cpu"] = {n: (self.cpu[n], pts.get(n, 0)) for n in names}
        total = sum(pts.values())
        r["points stored"] = total
        r["cpu_peers"] = {"PostgreSQL": pg_cpu_s(self.pg) - pg_cpu0, "VictoriaMetrics": cpu_s(self.vm.proc.pid),
                          "Mosquitto": cpu_s(self.broker.pid),
                          f"agents ({len(workers)} procs)": sum(cpu_s(p.pid) for p in workers)}
        r["agent resends"] = sum(x["resent"] for x in reports)
        r["agent queue left"] = sum(x["depth"] for x in reports)
        r["agent drops"] = sum(x["dropped"] for x in reports)
        for n in names:
            if "Traceback" in (self.d / f"{n}.log").read_text(errors="replace"):
                r.setdefault("tracebacks", []).append(str(self.d / f"{n}.log"))
        return r


# ============================================================== output
def table(runs: list[dict]) -> bool:
    ok = True
    cols = [r["label"] for r in runs]
    w0 = 38
    print("\n" + "figure".ljust(w0) + "".join(c.rjust(22) for c in cols))
    print("-" * (w0 + 22 * len(cols)))

    def row(name, fn):
        print(name.ljust(w0) + "".join(str(fn(r)).rjust(22) for r in runs))
    row("collectors / agents / sites", lambda r: f"{r['collectors']} / {r['agents']} / {r['sites']}")
    row("producing for (s)", lambda r: f"{r['produce_s']:.0f}")
    for k in ("messages produced", "messages stored (PG, seqs)", "messages lost (PG)",
              "redeliveries dropped by dedup", "events produced", "events lost (PG)", "events duplicated (PG)",
              "events lost / dup. ignoring time", "agents with clock offset > 2 s",
              "samples produced", "samples stored (PG counter)", "samples duplicated (PG counter)", "VM values produced", "VM values stored", "VM values lost", "VM values duplicated",
              "VM checksum mismatches", "alert transitions expected", "alert transitions seen",
              "alerts: partition moved fire->clear", "alert transitions missing",
              "alert transitions missing (moved)", "alert transitions extra", "notifications received",
              "duplicate notifications", "  of them same delivery id", "agent resends", "agent queue left"):
        row(k, lambda r, k=k: r[k])
    for ev in ("kill -9 c1", "SIGSTOP c2", "rebalance after restart"):
        row(f"takeover: {ev} (s)", lambda r, ev=ev: f"{r['takeover'][ev]:.2f}" if ev in r["takeover"] else "-")
    print("CPU-seconds per 1,000 samples (samples stored by that process; peers: all samples)")
    names = sorted({n for r in runs for n in r["cpu"]})
    for n in names:
        def f(r, n=n):
            if n not in r["cpu"]:
                return "-"
            c, p = r["cpu"][n]
            return f"{1000 * c / p:.3f} ({c:.0f}s/{p // 1000}k)" if p else f"- ({c:.0f}s/0)"
        row(f"  collector {n}", f)
    row("  all collectors", lambda r: f"{1000 * sum(c for c, _ in r['cpu'].values()) / max(r['points stored'], 1):.3f}")
    for k in runs[0]["cpu_peers"]:
        row(f"  {k}", lambda r, k=k: f"{1000 * r['cpu_peers'].get(k, 0) / max(r['points stored'], 1):.3f}")
    for r in runs:
        for k in ("messages lost (PG)", "samples duplicated (PG counter)", "events lost (PG)", "events duplicated (PG)",
                  "VM values lost", "VM values duplicated", "VM checksum mismatches"):
            if r[k]:
                ok = False
        if r["_alerts_missing"] or r["_alerts_extra"]:
            print(f"{r['label']}: alert transitions missing or extra (partition holder when the data was sent):")
            for k in r["_alerts_missing"]:
                print("   missing", *k)
            for k in r["_alerts_extra"]:
                print("   extra  ", *k)
        if r.get("tracebacks"):
            print(f"{r['label']}: tracebacks in {r['tracebacks']}")
    print(f"\n{'OK: 0 lost, 0 duplicated' if ok else 'FAILED: data lost or duplicated'}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--agents", type=int, default=200)
    ap.add_argument("--sites", type=int, default=16)
    ap.add_argument("--ports", type=int, default=8, help="interface samples per agent and interval")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between an agent's metrics messages")
    ap.add_argument("--pause-s", type=float, default=LEASE_S + 3, help="how long collector 2 stays SIGSTOPped")
    ap.add_argument("--single-s", type=float, default=30, help="producing time of the one-collector run")
    ap.add_argument("--district-only", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = ap.parse_args()
    from tests import peers_pg
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="bench-district-"))
    pg = peers_pg.Postgres().start()
    print(f"PostgreSQL on {pg.port}, work dir {work}", flush=True)
    runs, failed = [], False
    try:
        runs.append(Run("3 collectors+faults", args, pg, 3, work, True, 0).execute())
        if not args.district_only:
            runs.append(Run("1 collector", args, pg, 1, work, False, args.single_s).execute())
    except Exception:
        failed = True
        raise
    finally:
        pg.cleanup()
        if runs:
            failed = not table(runs) or failed
        print(f"total {time.monotonic() - t0:.0f} s")
        if args.keep or failed:
            print(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
