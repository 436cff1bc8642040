#!/usr/bin/env python3
"""Agent CPU share for a realistic building: 20 access switches x 48 ports + one Wi-Fi
controller with 60 APs, everything polled every 60 s.

Switches: snmpsim serves the real Cisco 3750 recording (59 interfaces, ENTITY, ARP, PoE...);
each of the 20 switches is a separate session polling it. Controller: a *generated*
AIRESPACE-WIRELESS-MIB recording (60 APs, 120 radios, --clients per AP) -- synthetic, only
used to size the work, the Wi-Fi parsers are exercised against it too.

Per switch per cycle: IF-MIB counters (11 columns) + all network-depth sections
(entity, lldp, fdb, arp, ip_addresses, poe, health) -- a worst case, since inventory-type
sections would normally run every few minutes. Per controller: IF-MIB + wifi + health.
Prints agent CPU-seconds per cycle and the share of one core at a 60 s interval, for the
pysnmp client, the fast v2c path and the fast v3 path (authPriv SHA/AES-128 against a second
snmpsim in its v3 architecture, one session per device per cycle), then the same building through the agent's real
driver (SnmpDriver.poll: records, rates, topology every 5th cycle). snmpsim's CPU is not counted.

    .venv/bin/python bench/building_cpu.py [--cycles 3] [--clients 25] [--concurrency 8]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drivers.snmp.fastv2c import FastV2cSession  # noqa: E402
from drivers.snmp.fastv3 import FastV3Session  # noqa: E402
from drivers.snmp.tables import collect_sections  # noqa: E402
from tests.peers_snmp import Snmpsim  # noqa: E402

IF_COLUMNS = ["1.3.6.1.2.1.2.2.1.2", "1.3.6.1.2.1.2.2.1.7", "1.3.6.1.2.1.2.2.1.8", "1.3.6.1.2.1.2.2.1.13",
              "1.3.6.1.2.1.2.2.1.14", "1.3.6.1.2.1.2.2.1.19", "1.3.6.1.2.1.2.2.1.20", "1.3.6.1.2.1.31.1.1.1.1",
              "1.3.6.1.2.1.31.1.1.1.6", "1.3.6.1.2.1.31.1.1.1.10", "1.3.6.1.2.1.31.1.1.1.15"]
SYS = ["1.3.6.1.2.1.1.2.0", "1.3.6.1.2.1.1.3.0", "1.3.6.1.2.1.1.5.0"]


def wlc_recording(path: Path, aps: int, clients_per_ap: int) -> None:
    """Synthetic Cisco WLC: system, a few interfaces, bsnAPTable, bsnAPIfTable, load, clients."""
    rnd = random.Random(7)
    rows: list[tuple[tuple[int, ...], str]] = []

    def add(oid: str, typ: str, val) -> None:
        rows.append((tuple(int(x) for x in oid.split(".")), f"{oid}|{typ}|{val}"))

    add("1.3.6.1.2.1.1.2.0", 6, "1.3.6.1.4.1.9.1.2170")
    add("1.3.6.1.2.1.1.3.0", 67, 123456)
    add("1.3.6.1.2.1.1.5.0", 4, "wlc-bench")
    for i in range(1, 5):
        add(f"1.3.6.1.2.1.2.2.1.2.{i}", 4, f"TenGigabitEthernet0/0/{i}")
        for c in (7, 8, 13, 14, 19, 20):
            add(f"1.3.6.1.2.1.2.2.1.{c}.{i}", 2 if c in (7, 8) else 65, 1 if c in (7, 8) else rnd.randint(0, 99))
        add(f"1.3.6.1.2.1.31.1.1.1.1.{i}", 4, f"Te0/0/{i}")
        add(f"1.3.6.1.2.1.31.1.1.1.6.{i}", 70, rnd.randint(0, 1 << 40))
        add(f"1.3.6.1.2.1.31.1.1.1.10.{i}", 70, rnd.randint(0, 1 << 40))
        add(f"1.3.6.1.2.1.31.1.1.1.15.{i}", 66, 10000)
    for a in range(aps):
        mac = [0, 0x3a, 0x98, 0, a // 256, a % 256]
        m = ".".join(map(str, mac))
        b = "AP"
        add(f"1.3.6.1.4.1.14179.2.2.1.1.3.{m}", 4, f"{b}-{a:03d}")
        add(f"1.3.6.1.4.1.14179.2.2.1.1.6.{m}", 2, 1 if a % 17 else 2)
        add(f"1.3.6.1.4.1.14179.2.2.1.1.8.{m}", 4, "8.10.185.0")
        add(f"1.3.6.1.4.1.14179.2.2.1.1.16.{m}", 4, "AIR-AP2802I-E-K9")
        add(f"1.3.6.1.4.1.14179.2.2.1.1.17.{m}", 4, f"FCW22{a:06d}")
        add(f"1.3.6.1.4.1.14179.2.2.1.1.19.{m}", 64, f"10.20.{a // 200}.{a % 200 + 10}")
        for slot, (typ, ch) in enumerate(((1, rnd.choice((1, 6, 11))), (2, rnd.choice((36, 44, 52, 100))))):
            add(f"1.3.6.1.4.1.14179.2.2.2.1.2.{m}.{slot}", 2, typ)
            add(f"1.3.6.1.4.1.14179.2.2.2.1.4.{m}.{slot}", 2, ch)
            add(f"1.3.6.1.4.1.14179.2.2.2.1.6.{m}.{slot}", 2, rnd.randint(1, 8))
            add(f"1.3.6.1.4.1.14179.2.2.2.1.15.{m}.{slot}", 2, clients_per_ap // 2)
            add(f"1.3.6.1.4.1.14179.2.2.13.1.3.{m}.{slot}", 2, rnd.randint(0, 90))
        for c in range(clients_per_ap):
            cm = ".".join(map(str, [0x02, a // 256, a % 256, c, 0x10, 0x20]))
            add(f"1.3.6.1.4.1.14179.2.1.4.1.2.{cm}", 64, f"10.30.{a}.{c + 10}")
            add(f"1.3.6.1.4.1.14179.2.1.4.1.4.{cm}", "4x", "".join("%02x" % x for x in mac))
            add(f"1.3.6.1.4.1.14179.2.1.4.1.5.{cm}", 2, c % 2)
            add(f"1.3.6.1.4.1.14179.2.1.4.1.7.{cm}", 4, "campus")
            add(f"1.3.6.1.4.1.14179.2.1.6.1.1.{cm}", 2, -rnd.randint(40, 85))
            add(f"1.3.6.1.4.1.14179.2.1.6.1.26.{cm}", 2, rnd.randint(5, 50))
    rows.sort()
    path.write_text("\n".join(r[1] for r in rows) + "\n")


async def cycle(make, switches: int, concurrency: int) -> tuple[float, float, int, dict]:
    sem = asyncio.Semaphore(concurrency)
    vbs = 0
    sample: dict = {}

    async def device(community: str, soid_hint: str | None) -> None:
        nonlocal vbs, sample
        async with sem:
            s = make(community)
            try:
                sysv = await s.get(SYS)
                r = await s.walk(IF_COLUMNS, 25)
                vbs += sum(len(v) for v in r.values()) + len(sysv)
                sec = await collect_sections(s, sysv.get(SYS[0]) or soid_hint, deadline_s=50)
                vbs += sec.get("_varbinds", 0)
                if community == "wlc":
                    sample = sec
            finally:
                await s.close()

    c0, w0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*([device("sw", None) for _ in range(switches)] + [device("wlc", None)]))
    return time.process_time() - c0, time.perf_counter() - w0, vbs, sample


async def driver_cycles(port: int, switches: int, concurrency: int, cycles: int,
                        topology_every: int) -> tuple[float, int, int]:
    """The agent's real path: one drivers.snmp SnmpDriver per device (fast v2c session, IF-MIB
    records and rates, health/PoE/Wi-Fi every poll, entity/IP facts hourly, topology tables
    (lldp/fdb/arp/ip_address samples) every ``topology_every`` cycles, i.e. the default
    topology_interval_s 300 at a 60 s interval). Returns CPU s over ``cycles`` cycles after a
    warm-up poll, records produced, and cycles."""
    from drivers.snmp import create
    sem = asyncio.Semaphore(concurrency)
    drivers = [create(f"sw{i}", {"host": "127.0.0.1", "port": port, "community": "sw", "timeout_s": 5}, {})
               for i in range(switches)]
    drivers.append(create("wlc", {"host": "127.0.0.1", "port": port, "community": "wlc", "timeout_s": 5}, {}))
    records = 0

    async def one(d) -> None:
        nonlocal records
        async with sem:
            records += len(await d.poll())
            if d._topo_task is not None:          # let the background topology walk finish
                await asyncio.gather(d._topo_task, return_exceptions=True)
                records += len(await d._topology(None))

    try:
        await asyncio.gather(*(one(d) for d in drivers))   # warm-up: facts, entity, first topology
        records = 0
        c0 = time.process_time()
        for n in range(cycles):
            if n % topology_every == topology_every - 1:
                for d in drivers:
                    d._topo_at = float("-inf")
            await asyncio.gather(*(one(d) for d in drivers))
        return time.process_time() - c0, records, cycles
    finally:
        for d in drivers:
            await d.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cycles", type=int, default=3)
    ap.add_argument("--switches", type=int, default=20)
    ap.add_argument("--aps", type=int, default=60)
    ap.add_argument("--clients", type=int, default=25, help="Wi-Fi clients per AP")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--interval", type=float, default=60.0)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bldg-"))
    wlc_recording(work / "wlc.snmprec", a.aps, a.clients)
    sim = Snmpsim({"sw": ROOT / "tests/fixtures/snmprec_vendors/cisco_c3750.snmprec", "wlc": work / "wlc.snmprec"}).start()
    clients = {"fast v2c": lambda c: FastV2cSession("127.0.0.1", sim.port, c, timeout=5, retries=1)}
    v3 = {"user": "bldg3", "auth_proto": "SHA", "auth_key": "a-" + os.urandom(6).hex(), "priv_proto": "AES",
          "priv_key": "p-" + os.urandom(6).hex()}
    sim3 = Snmpsim({"sw": ROOT / "tests/fixtures/snmprec_vendors/cisco_c3750.snmprec", "wlc": work / "wlc.snmprec"},
                   v3=v3).start()
    clients["fast v3"] = lambda c: FastV3Session("127.0.0.1", sim3.port, v3["user"], "SHA", v3["auth_key"], "AES",
                                                 v3["priv_key"], context=c, timeout=5, retries=1)
    try:
        from drivers.snmp.client import SnmpSession, SnmpTarget
        clients["pysnmp 7"] = lambda c: SnmpSession(SnmpTarget("127.0.0.1", port=sim.port, community=c, timeout=5))
    except ImportError:
        pass
    print(f"building: {a.switches} switches (real Cisco 3750 recording, 59 ifs) + 1 WLC "
          f"({a.aps} APs, {2 * a.aps} radios, {a.aps * a.clients} clients, synthetic); "
          f"interval {a.interval:g}s; concurrency {a.concurrency}")
    try:
        for name, make in clients.items():
            asyncio.run(cycle(make, 1, 1))  # warm-up
            cpus, walls = [], []
            for _ in range(a.cycles):
                cpu, wall, vbs, sample = asyncio.run(cycle(make, a.switches, a.concurrency))
                cpus.append(cpu)
                walls.append(wall)
            cpu = min(cpus)
            w = sample.get("wifi", {})
            print(f"{name:9}: {vbs} varbinds/cycle, agent CPU {cpu:.2f} s/cycle "
                  f"(min of {a.cycles}; wall {min(walls):.1f} s, bounded by snmpsim) -> "
                  f"{100 * cpu / a.interval:.2f}% of one core; "
                  f"{cpu / vbs * 1e4:.3f} CPU s/10k vb; wifi: {len(w.get('aps', []))} APs, "
                  f"{len(w.get('radios', []))} radios, {len(w.get('clients', []))} clients")
        cpu, recs, n = asyncio.run(driver_cycles(sim.port, a.switches, a.concurrency, 5, 5))
        print(f"agent driver (SnmpDriver.poll, fast v2c, topology every 5th cycle): {recs / n:.0f} records/cycle, "
              f"agent CPU {cpu / n:.2f} s/cycle (mean of {n}) -> {100 * cpu / n / a.interval:.2f}% of one core")
    finally:
        sim.stop()
        sim3.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
