#!/usr/bin/env python3
"""Embedded store benchmark (issue 10, "Benchmark"): one campus week through SQLiteStore.apply,
beside victoria-metrics fed the same samples over the InfluxDB line protocol, same run.

    .venv/bin/python bench/store.py [--switches 4] [--days 3] [--per-apply 50] [--no-vm]

Data: N switches x 48 ports, one `interface` sample per port every 60 s (+ a few ms of jitter),
with the fields the SNMP driver emits (drivers/snmp/__init__.py poll(), drivers/snmp/ifmib.py
rates): in/out_octets (64-bit counters), in/out_errors, in/out_discards (32-bit, mostly flat),
speed_mbps, admin_up, oper_up, counter_bits, and once a baseline exists in_bps, out_bps,
in/out_errors_ps, in/out_discards_ps, util_in_pct, util_out_pct. Traffic follows a daily cycle
(quiet nights and weekends) with noise; 4 ports admin down, 2 unplugged, one flapping port per
switch, one 32-bit in_discards counter that wraps mid-run (sw-0 port 5) and one device reboot
(sw-1, 3 polls lost, counters back to 0, no rates on the first poll after it, as the driver does).

SQLite path: one wire message per switch poll, as the agent sends it to this collector (its
batcher's wire.tabulate: the 48 ports as one table item; encode_durable; pack), decoded and
validated as collector/ingest.py does (wire.decode), SQLiteStore.apply() in groups of --per-apply
messages (like ingest's commit groups), store.seal(now_ms=data time + 10 min) every simulated hour
(the store's own monotonic seal timer is set out of the way, since wall-clock now is not data
time), and a final seal of everything, under the collector process's GC settings
(collector.ingest.tune_gc). CPU = time.process_time() around decode, apply and seal (building the
messages is the agents' work: reported, not counted); victoria-metrics' CPU includes parsing its
input too. Size = db + -wal after close().

victoria-metrics: the same samples as line protocol (/write?precision=ms, ~10k lines per POST,
bools as 0/1), then /internal/force_flush and /internal/force_merge; size = its data directory;
ingest rate = wall clock of the POSTs + flush; its CPU from /proc/<pid>/stat. Queries use
/api/v1/query_range with nocache=1 (raw 1 h: /api/v1/query with a [1h] range selector).

Not a test: figures depend on the machine.

Measured on 2026-12-07 at 16:37, 2 cores (`--days 7`, the issue's week, ~5 min wall; commit
310ea04). This VM's speed drifts by +-30% within minutes, so read the figures against the same
run's victoria-metrics:

    4 switches x 48 ports x 7 days at 60 s, 50 messages/apply; cpus=2
    1,935,216 samples, 34,831,968 field values (18.0 per sample); 167 hourly seals
                                                     SQLiteStore          victoria-metrics      goal
    ingest CPU s (decode+apply+seal)      11.54 (2.99+4.38+4.17)        23.39 (VM process)
    samples per CPU-second                               167,729                    82,737   >= 150k
      the store alone (apply+seal)                       226,465
      decode / apply / seal alone     646,700 / 442,081 / 464,324
    on disk (MiB)                                          87.64                     82.33
    bytes per value (whole file/dir)                        2.64                      2.48      <= 3
    bytes per value (raw chunks/parts)                      1.79                      2.45
    query 1 hour raw                             0.5 ms (60 pts)           1.0 ms (60 pts)
    query 24 h, step 5m                         6.7 ms (288 pts)          0.8 ms (289 pts)
    query 30 d, step 1h                         7.3 ms (168 pts)          0.8 ms (168 pts)
    query 1 year, step 1d                         5.8 ms (8 pts)            0.7 ms (7 pts)
    query 24 h rate(in_octets) 5m               8.6 ms (288 pts)          0.7 ms (289 pts)

Defaults (3 days) the same day: 171,990 beside victoria-metrics' 87,571 (16:33); `--rows` (one
wire item per sample, agents of before) 121,365 (16:34, no VM); after 49c89ce (a device's rows
remembered) 186,833 (16:39, no VM); at 17:00, a slow phase: 136,361 beside victoria-metrics'
54,309 (the store alone 191,723), and `--per-apply 500` (the collector's batch_messages cap) 169,142.
Instructions per sample for apply + seal (bench/instructions.py, deterministic): 5c6dd5e 57,553;
3c5f48d 32,490; 49c89ce 23,307 (agents sending tables).
"""
from __future__ import annotations

import argparse
import math
import os
import sqlite3
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from campus_sense import wire  # noqa: E402
from collector.ingest import tune_gc  # noqa: E402
from collector.store.sqlite import SQLiteStore  # noqa: E402

PORTS = 48
POLL_MS = 60_000
HOUR = 3_600_000
DAY = 24 * HOUR
W32 = 2**32
AGENT, EPOCH = "bldg-a", "bench0001"
TOPIC = wire.topic("north", "A", AGENT, "metrics")
GOAL_BPV, GOAL_SPS = 3.0, 150_000


# --------------------------------------------------------------------------- the simulated week
class Switch:
    """One switch's ports, counters and the driver's rate computation (ifmib.Rates.update)."""

    def __init__(self, idx: int, npolls: int, seed: int):
        self.name = f"sw-{idx}"
        self.rng = np.random.default_rng(seed)
        r = self.rng
        self.speed = np.array([1000] * 44 + [10000] * 4, dtype=np.int64)
        self.admin = np.ones(PORTS, bool)
        self.admin[40:44] = False                   # 4 ports shut
        self.plugged = np.ones(PORTS, bool)
        self.plugged[[29, 30]] = False              # 2 ports unplugged (admin up, oper down)
        self.flap = 16 + idx % 8                     # one flapping port
        self.oper = self.admin & self.plugged
        base = r.lognormal(math.log(4e6), 1.0, PORTS)          # access ports ~ a few Mbit/s peak
        base[44:] = r.lognormal(math.log(8e8), 0.3, 4)          # uplinks ~ 800 Mbit/s peak
        self.base_in = base
        self.out_ratio = r.uniform(0.2, 3.0, PORTS)
        self.in_oct = r.integers(0, 2**40, PORTS).astype(np.float64)
        self.out_oct = r.integers(0, 2**40, PORTS).astype(np.float64)
        self.err = r.integers(0, 50, (2, PORTS)).astype(np.int64)      # in/out errors
        self.disc = r.integers(0, 5000, (2, PORTS)).astype(np.int64)   # in/out discards
        self.wrap_port = 4 if idx == 0 else None
        if self.wrap_port is not None:              # ~1000 discards/poll: wraps half-way through
            self.disc[0, 4] = W32 - 1000 * (npolls // 2)
        self.reboot_at = npolls * 3 // 7 if idx == 1 else None
        self.offset = 1000 + idx * 2371             # poll phase within the minute
        self.prev_t = None
        self.prev = None

    def poll(self, k: int, t0: int) -> tuple[int, list[dict]] | None:
        r = self.rng
        if self.reboot_at is not None and self.reboot_at <= k < self.reboot_at + 3:
            if k == self.reboot_at + 2:             # back up: counters start from 0
                self.in_oct[:] = 0
                self.out_oct[:] = 0
                self.err[:] = 0
                self.disc[:] = 0
                self.prev = None                     # the driver sees sysUpTime go back: no rates
            return None
        t = t0 + k * POLL_MS + self.offset + int(r.normal(0, 4))
        dt = (t - self.prev_t) / 1000 if self.prev_t is not None else 60.0
        # link state: the flapping port goes down now and then, comes back after a few polls
        f = self.flap
        if self.oper[f]:
            self.oper[f] = r.random() > 0.01
        else:
            self.oper[f] = r.random() < 0.3
        up = self.oper
        # traffic: daily cycle (office hours, quiet weekends) x noise
        tod = ((t % DAY) / HOUR)
        wd = (t // DAY + 4) % 7                      # 0 = Monday (1970-01-01 was a Thursday)
        cyc = 0.03 + 0.97 * max(0.0, math.sin(math.pi * (tod - 7) / 12)) if 7 <= tod <= 19 else 0.03
        if wd >= 5:
            cyc *= 0.1
        bps_in = self.base_in * cyc * r.lognormal(0, 0.35, PORTS) * up
        bps_out = bps_in * self.out_ratio * r.lognormal(0, 0.2, PORTS)
        self.in_oct += np.floor(bps_in / 8 * dt)
        self.out_oct += np.floor(bps_out / 8 * dt)
        self.err += (r.random((2, PORTS)) < 0.002) * r.integers(1, 6, (2, PORTS)) * up
        self.disc += (r.random((2, PORTS)) < 0.01) * r.integers(1, 50, (2, PORTS)) * up
        if self.wrap_port is not None:
            self.disc[0, self.wrap_port] += int(r.normal(1000, 50))
        disc = self.disc % W32
        cur = (self.in_oct.astype(np.int64), self.out_oct.astype(np.int64), self.err[0] % W32,
               self.err[1] % W32, disc[0], disc[1])
        rates = None
        if self.prev is not None:
            p = self.prev
            d = [(c - q) for c, q in zip(cur, p)]
            for i in range(2, 6):                    # 32-bit counters: wrap (counter_delta)
                d[i] = np.where(d[i] < 0, d[i] + W32, d[i])
            rates = [x / dt for x in d]
        self.prev, self.prev_t = cur, t
        cl = [c.tolist() for c in cur]
        adm, op, spd = self.admin.tolist(), up.tolist(), self.speed.tolist()
        if rates is not None:
            rl = [x.tolist() for x in rates]
        out = []
        for i in range(PORTS):
            fl = {"in_octets": cl[0][i], "out_octets": cl[1][i], "in_errors": cl[2][i], "out_errors": cl[3][i],
                  "in_discards": cl[4][i], "out_discards": cl[5][i], "speed_mbps": spd[i], "admin_up": adm[i],
                  "oper_up": op[i], "counter_bits": 64}
            if rates is not None:
                ib, ob = rl[0][i] * 8, rl[1][i] * 8
                sb = spd[i] * 1_000_000
                fl.update(in_bps=ib, out_bps=ob, in_errors_ps=rl[2][i], out_errors_ps=rl[3][i],
                          in_discards_ps=rl[4][i], out_discards_ps=rl[5][i],
                          util_in_pct=ib / sb * 100.0, util_out_pct=ob / sb * 100.0)
            out.append(fl)
        return t, out


def week(switches: int, days: float, t0: int, seed: int = 7):
    """Yield (time_ms, device, [fields per port]) per switch poll, in time order."""
    npolls = int(days * DAY // POLL_MS)
    sws = [Switch(i, npolls, seed * 1000 + i) for i in range(switches)]
    for k in range(npolls):
        for sw in sws:
            got = sw.poll(k, t0)
            if got is not None:
                yield got[0], sw.name, got[1]


def tags(i: int) -> dict:
    return {"ifIndex": str(i + 1), "ifName": f"Gi1/0/{i + 1}"}


def encoded_items(dev: str, t: int, ports: list[dict], tables: bool = True) -> list[bytes]:
    """One poll's samples as the agent's batcher encodes them: the ports as one table (to a
    collector that reads tables), else one item per port."""
    items = [wire.sample("interface", dev, t, f, tags(i)) for i, f in enumerate(ports)]
    return [wire.encode_item(it) for it in (wire.tabulate(items) if tables else items)]


# --------------------------------------------------------------------------- SQLite
def run_sqlite(path: str, a, t0: int, t_end: int) -> dict:
    tune_gc()                            # the collector's GC settings (ingest sets them when it starts)
    store = SQLiteStore(path, seal_interval_s=1e9)
    cpu_apply = cpu_seal = cpu_build = cpu_decode = 0.0
    samples = values = 0
    seq = 0
    group: list = []
    next_seal = t0 + HOUR
    seals = 0
    wall = time.perf_counter()

    def flush(group):
        nonlocal cpu_apply
        c = time.process_time()
        r = store.apply(group, [])
        cpu_apply += time.process_time() - c
        assert len(r.accepted) == len(group), (len(r.accepted), len(group))

    c = time.process_time()
    for t, dev, ports in week(a.switches, a.days, t0):
        seq += 1
        items = encoded_items(dev, t, ports, not a.rows)
        payload = wire.pack(wire.encode_durable("metrics", AGENT, EPOCH, seq, t, items))
        cd = time.process_time()
        m = wire.decode(TOPIC, payload)  # as collector/ingest.py does (validation included)
        m.raw = payload                  # the head log keeps it as received
        cpu_decode += time.process_time() - cd
        group.append(m)
        samples += len(ports)
        values += sum(map(len, ports))
        if len(group) >= a.per_apply:
            cpu_build += time.process_time() - c
            flush(group)
            group = []
            if t >= next_seal:           # every simulated hour, with a now consistent with the data
                cs = time.process_time()
                store.seal(now_ms=t + 600_000)
                cpu_seal += time.process_time() - cs
                seals += 1
                next_seal = t - t % HOUR + HOUR
            c = time.process_time()
    cpu_build += time.process_time() - c
    if group:
        flush(group)
    cs = time.process_time()
    store.seal(now_ms=t_end + 600_000)
    store.seal(now_ms=t_end + 600_000, cutoff=t_end - t_end % HOUR + HOUR)   # and the last, partial hour
    cpu_seal += time.process_time() - cs
    wall = time.perf_counter() - wall
    ro = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    chunks = {res: (b, n) for res, b, n in ro.execute("SELECT res, sum(length(data)), sum(rows) FROM chunks GROUP BY res")}
    head = ro.execute("SELECT count(*) FROM head_log").fetchone()[0] if ro.execute(
        "SELECT 1 FROM sqlite_master WHERE name='head_log'").fetchone() else None
    page = ro.execute("PRAGMA page_size").fetchone()[0]
    free = ro.execute("PRAGMA freelist_count").fetchone()[0] * page
    ro.close()
    # queries: one port of sw-0, ending at the end of the data
    q = {}
    dev, tg = "sw-0", {"ifIndex": "7"}
    for name, span, step, field, agg in QUERIES:
        best, n = float("inf"), 0
        for _ in range(3):
            s = time.perf_counter()
            res = store.series("interface", dev, field, t_end - span, t_end, step, tg, 100000, agg=agg)
            best = min(best, time.perf_counter() - s)
            n = sum(len(e["points"]) for e in res)
        q[name] = (best, n)
    store.close()
    size = sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
    return dict(samples=samples, values=values, cpu_apply=cpu_apply, cpu_seal=cpu_seal,
                cpu_build=cpu_build - cpu_decode, cpu_decode=cpu_decode,
                wall=wall, size=size, free=free, chunks=chunks, head=head, queries=q, seals=seals)


QUERIES = [  # name, span, step, field, agg
    ("1 hour raw", HOUR, None, "in_bps", "avg"),
    ("24 h, step 5m", DAY, 300_000, "in_bps", "avg"),
    ("30 d, step 1h", 30 * DAY, 3_600_000, "in_bps", "avg"),
    ("1 year, step 1d", 365 * DAY, 86_400_000, "in_bps", "avg"),
    ("24 h rate(in_octets) 5m", DAY, 300_000, "in_octets", "rate"),
]


# --------------------------------------------------------------------------- victoria-metrics
def _proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        st = f.read().rsplit(")", 1)[1].split()
    return (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")


def _dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def _num(v) -> str:
    if v is True:
        return "1"
    if v is False:
        return "0"
    return repr(v) if isinstance(v, float) else str(v)


def run_vm(vm, a, t0: int, t_end: int) -> dict:
    url = vm.url + "/write?precision=ms"
    cpu0 = _proc_cpu(vm.proc.pid)
    post_wall = 0.0
    lines: list[str] = []
    samples = values = 0

    def post(lines):
        nonlocal post_wall
        body = ("\n".join(lines) + "\n").encode()
        s = time.perf_counter()
        urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=120).read()
        post_wall += time.perf_counter() - s

    for t, dev, ports in week(a.switches, a.days, t0):
        for i, f in enumerate(ports):
            lines.append(f"interface,device={dev},ifIndex={i + 1},ifName=Gi1/0/{i + 1} "
                         + ",".join(f"{k}={_num(v)}" for k, v in f.items()) + f" {t}")
            values += len(f)
        samples += len(ports)
        if len(lines) >= 10_000:
            post(lines)
            lines = []
    if lines:
        post(lines)
    s = time.perf_counter()
    vm.flush()
    post_wall += time.perf_counter() - s
    cpu_ingest = _proc_cpu(vm.proc.pid) - cpu0
    try:
        urllib.request.urlopen(vm.url + "/internal/force_merge?partition_prefix=", timeout=300).read()
    except Exception as e:  # noqa: BLE001 - older builds
        print(f"  (force_merge: {e})")
    last, stable = -1, 0
    for _ in range(60):                               # merges may run in the background
        time.sleep(0.5)
        sz = _dir_size(vm.dir / "data")
        stable = stable + 1 if sz == last else 0
        last = sz
        if stable >= 3:
            break
    data = vm.dir / "data"
    size = _dir_size(data)
    size_parts = _dir_size(data / "data") if (data / "data").exists() else size
    sel = 'interface_{f}{{device="sw-0",ifIndex="7"}}'
    q = {}
    for name, span, step, field, agg in QUERIES:
        m = sel.format(f=field)
        if step is None:
            path, params = "/api/v1/query", {"query": f"{m}[{span // 1000}s]", "time": str(t_end / 1000)}
        else:
            fn = "rate" if agg == "rate" else "avg_over_time"
            params = {"query": f"{fn}({m}[{step // 1000}s])", "start": str((t_end - span) / 1000),
                      "end": str(t_end / 1000), "step": f"{step // 1000}s"}
            path = "/api/v1/query_range"
        params["nocache"] = "1"
        u = vm.url + path + "?" + urllib.parse.urlencode(params)
        best, n = float("inf"), 0
        for _ in range(3):
            s = time.perf_counter()
            body = orjson.loads(urllib.request.urlopen(u, timeout=60).read())
            best = min(best, time.perf_counter() - s)
        res = body["data"]["result"]
        n = sum(len(e.get("values", [])) for e in res)
        q[name] = (best, n)
    return dict(samples=samples, values=values, wall=post_wall, cpu=cpu_ingest, size=size,
                size_parts=size_parts, queries=q)


# --------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--switches", type=int, default=4)
    ap.add_argument("--days", type=float, default=3, help="7 = the issue's week (~4-5 min on 2 shared cores)")
    ap.add_argument("--per-apply", type=int, default=50, help="messages per SQLiteStore.apply (commit group)")
    ap.add_argument("--no-vm", action="store_true")
    ap.add_argument("--rows", action="store_true", help="one wire item per sample (agents before tables)")
    a = ap.parse_args()
    now = int(time.time() * 1000)
    t_end = now - now % HOUR                    # the week ends at the last full hour: all of it is recent
    t0 = t_end - int(a.days * DAY)
    work = Path(tempfile.mkdtemp(prefix="bench-store-"))
    vm = None
    try:
        print(f"{a.switches} switches x {PORTS} ports x {a.days:g} days at 60 s, {a.per_apply} messages/apply; "
              f"cpus={os.cpu_count()}")
        s = run_sqlite(str(work / "store.db"), a, t0, t_end)
        v = None
        if not a.no_vm:
            from tests.peers_vm import VictoriaMetrics
            vm = VictoriaMetrics(work / "vm").start()
            v = run_vm(vm, a, t0, t_end)
        report(s, v)
    finally:
        if vm:
            vm.stop()
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(s: dict, v: dict | None) -> None:
    n, nv = s["samples"], s["values"]
    cpu = s["cpu_apply"] + s["cpu_seal"]
    raw_b, raw_rows = s["chunks"].get(0, (0, 0))
    print(f"{n:,} samples, {nv:,} field values ({nv / n:.1f} per sample); {s['seals']} hourly seals; "
          f"building messages (the agents' work) {s['cpu_build']:.1f} CPU s (not counted)")
    print("SQLite chunks by res (bytes, rows): " + ", ".join(
        f"{r}: {b / 2**20:.2f} MiB/{k:,}" for r, (b, k) in sorted(s["chunks"].items()))
        + f"; head_log rows left {s['head']}; free pages {s['free'] / 2**20:.2f} MiB")
    W = 26
    print(f"\n{'':<34}{'SQLiteStore':>{W}}{'victoria-metrics':>{W}}{'goal':>10}")

    def row(name, a, b="", goal=""):
        print(f"{name:<34}{a:>{W}}{b:>{W}}{goal:>10}")
    row("samples / field values", f"{n:,} / {nv:,}", f"{v['samples']:,} / {v['values']:,}" if v else "")
    dec = s["cpu_decode"]
    row("ingest CPU s (decode+apply+seal)", f"{dec + cpu:.2f} ({dec:.2f}+{s['cpu_apply']:.2f}+{s['cpu_seal']:.2f})",
        f"{v['cpu']:.2f} (VM process)" if v else "")
    row("samples per CPU-second", f"{n / (dec + cpu):,.0f}",
        f"{v['samples'] / v['cpu']:,.0f}" if v and v["cpu"] else "", f">= {GOAL_SPS // 1000}k")
    row("  the store alone (apply+seal)", f"{n / cpu:,.0f}", "")
    row("  decode / apply / seal alone", f"{n / max(dec, 1e-9):,.0f} / {n / s['cpu_apply']:,.0f} / "
                                         f"{n / max(s['cpu_seal'], 1e-9):,.0f}", "")
    row("samples per wall second", f"{n / s['wall']:,.0f}", f"{v['samples'] / v['wall']:,.0f}" if v else "")
    row("on disk (MiB)", f"{s['size'] / 2**20:.2f}", f"{v['size'] / 2**20:.2f}" if v else "")
    row("bytes per value (whole file/dir)", f"{s['size'] / nv:.2f}", f"{v['size'] / v['values']:.2f}" if v else "",
        f"<= {GOAL_BPV:g}")
    row("bytes per value (raw chunks/parts)", f"{raw_b / nv:.2f}",
        f"{v['size_parts'] / v['values']:.2f}" if v else "")
    for name, *_ in QUERIES:
        t, k = s["queries"][name]
        vt = ""
        if v:
            t2, k2 = v["queries"][name]
            vt = f"{t2 * 1000:.1f} ms ({k2} pts)"
        row(f"query {name}", f"{t * 1000:.1f} ms ({k} pts)", vt)
    print("(CPU s: this process's time.process_time() around decode, apply and seal; VM CPU from /proc/<pid>/stat\n"
          " over the POSTs + force_flush. Query: best of 3, one port (sw-0 ifIndex 7), ending at the data's end;\n"
          " 30 d and 1 year cover the run's days only. VM: avg_over_time/rate with window = step, nocache=1)")


if __name__ == "__main__":
    sys.exit(main())
