#!/usr/bin/env python3
"""CPU cost of polling IF-MIB + FDB tables: campus-sense's SNMP driver vs Prometheus snmp_exporter.

One snmpsim serves a recording of a real device (default: the Cisco 3750 in
tests/fixtures/snmprec_vendors/); in the same run we poll the same columns with

  * pysnmp   -- drivers.snmp.client.SnmpSession (pysnmp 7, v2c/v3 path)
  * fast     -- drivers.snmp.fastv2c.FastV2cSession (own BER codec, v2c walks)
  * exporter -- Debian's prometheus-snmp-exporter (Go), scraped over HTTP

then the same over SNMPv3 authPriv (SHA/AES-128, a second snmpsim in its v3 architecture):
pysnmp v3, drivers.snmp.fastv3.FastV3Session and the exporter with a v3 ``auth:`` block.

and print CPU-seconds per 10k varbinds for each (only the client's CPU: our process time
for the Python clients, /proc utime+stime of the exporter process for Go) and the ratios.
snmpsim's own CPU is not counted.

    .venv/bin/python bench/snmp_vs_exporter.py [--rounds 40] [--recording path.snmprec]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drivers.snmp.fastv2c import FastV2cSession  # noqa: E402
from tests.peers_snmp import Snmpsim  # noqa: E402

IF_COLS = {  # name -> (oid, exporter type)
    "ifDescr": ("1.3.6.1.2.1.2.2.1.2", "DisplayString"),
    "ifAdminStatus": ("1.3.6.1.2.1.2.2.1.7", "gauge"),
    "ifOperStatus": ("1.3.6.1.2.1.2.2.1.8", "gauge"),
    "ifInErrors": ("1.3.6.1.2.1.2.2.1.14", "counter"),
    "ifOutErrors": ("1.3.6.1.2.1.2.2.1.20", "counter"),
    "ifInDiscards": ("1.3.6.1.2.1.2.2.1.13", "counter"),
    "ifOutDiscards": ("1.3.6.1.2.1.2.2.1.19", "counter"),
    "ifName": ("1.3.6.1.2.1.31.1.1.1.1", "DisplayString"),
    "ifHCInOctets": ("1.3.6.1.2.1.31.1.1.1.6", "counter"),
    "ifHCOutOctets": ("1.3.6.1.2.1.31.1.1.1.10", "counter"),
    "ifHighSpeed": ("1.3.6.1.2.1.31.1.1.1.15", "gauge"),
}
FDB_COLS = {
    "dot1dBasePortIfIndex": ("1.3.6.1.2.1.17.1.4.1.2", "gauge", "dot1dBasePort", "gauge"),
    "dot1dTpFdbPort": ("1.3.6.1.2.1.17.4.3.1.2", "gauge", "dot1dTpFdbAddress", "PhysAddress48"),
    "ipNetToMediaPhysAddress": ("1.3.6.1.2.1.4.22.1.2", "PhysAddress48", None, None),
}
COLUMNS = [v[0] for v in IF_COLS.values()] + [v[0] for v in FDB_COLS.values()]


def exporter_config(auth: list[str], version: int = 2) -> str:
    """snmp_exporter 0.21 module 'campus'; ``auth``: the lines under ``auth:``."""
    lines = ["campus:", "  walk:"]
    lines += [f"  - {oid}" for oid in COLUMNS]
    lines += ["  metrics:"]
    for name, (oid, typ) in IF_COLS.items():
        lines += [f"  - name: {name}", f"    oid: {oid}", f"    type: {typ}", f"    help: {name}",
                  "    indexes:", "    - labelname: ifIndex", "      type: gauge"]
    for name, (oid, typ, idx, ityp) in FDB_COLS.items():
        lines += [f"  - name: {name}", f"    oid: {oid}", f"    type: {typ}", f"    help: {name}", "    indexes:"]
        if name == "ipNetToMediaPhysAddress":
            lines += ["    - labelname: ipNetToMediaIfIndex", "      type: gauge",
                      "    - labelname: ipNetToMediaNetAddress", "      type: InetAddressIPv4"]
        else:
            lines += [f"    - labelname: {idx}", f"      type: {ityp}"]
    lines += [f"  version: {version}", "  max_repetitions: 25", "  retries: 1", "  timeout: 5s", "  auth:"]
    lines += [f"    {a}" for a in auth]
    return "\n".join(lines) + "\n"


def free_tcp() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu(pid: int) -> float:
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


async def bench_python(make_session, rounds: int) -> tuple[float, int]:
    s = make_session()
    await s.walk(COLUMNS)  # warm-up (socket, engine, caches)
    vb = 0
    c0 = time.process_time()
    for _ in range(rounds):
        r = await s.walk(COLUMNS, 25)
        vb += sum(len(v) for v in r.values())
    cpu = time.process_time() - c0
    await s.close()
    return cpu, vb


class _Counting:
    """Session proxy counting the varbinds handed to the driver."""

    def __init__(self, inner):
        self.inner = inner
        self.count = 0

    async def get(self, oids):
        r = await self.inner.get(oids)
        self.count += len(r)
        return r

    async def walk(self, columns, max_repetitions=25):
        r = await self.inner.walk(columns, max_repetitions)
        self.count += sum(len(v) for v in r.values())
        return r

    async def close(self):
        await self.inner.close()


async def bench_driver(make_session, port: int, community: str | None, rounds: int,
                       v3: dict | None = None) -> tuple[float, int]:
    """The agent's whole SNMP driver poll (IF-MIB records, rates, events, health/PoE sections)."""
    from drivers.snmp import create
    opts = {"host": "127.0.0.1", "port": port, **({"version": "3", **v3} if v3 else {"community": community})}
    d = create("bench", opts, {})
    d.session = _Counting(make_session())
    await d.poll()  # warm-up (also the once-per-facts-interval entity/IP walk)
    d.session.count = 0
    c0 = time.process_time()
    for _ in range(rounds):
        await d.poll()
    cpu = time.process_time() - c0
    vb = d.session.count
    await d.close()
    return cpu, vb


def bench_exporter(sim_port: int, config: str, rounds: int, workdir: Path) -> tuple[float, int]:
    exe = shutil.which("prometheus-snmp-exporter")
    if not exe:
        raise RuntimeError("prometheus-snmp-exporter not installed")
    cfg = workdir / "snmp.yml"
    cfg.write_text(config)
    port = free_tcp()
    log = open(workdir / "exporter.log", "wb")
    p = subprocess.Popen([exe, f"--config.file={cfg}", f"--web.listen-address=127.0.0.1:{port}"],
                         stdout=log, stderr=log)
    try:
        url = f"http://127.0.0.1:{port}/snmp?target=127.0.0.1:{sim_port}&module=campus"
        for _ in range(100):
            try:
                body = urllib.request.urlopen(url, timeout=30).read().decode()  # warm-up
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("exporter did not come up: " + (workdir / "exporter.log").read_text()[-500:])
        m = re.search(r"^snmp_scrape_pdus_returned (\d+)", body, re.M)
        per = int(m.group(1)) if m else 0
        if not per:
            raise RuntimeError("exporter returned no PDUs:\n" + body[-1000:])
        c0 = proc_cpu(p.pid)
        vb = 0
        for _ in range(rounds):
            body = urllib.request.urlopen(url, timeout=60).read().decode()
            vb += int(re.search(r"^snmp_scrape_pdus_returned (\d+)", body, re.M).group(1))
        return proc_cpu(p.pid) - c0, vb
    finally:
        p.terminate()
        p.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--recording", default=str(ROOT / "tests/fixtures/snmprec_vendors/cisco_c3750.snmprec"))
    a = ap.parse_args()
    community = "bench"
    sim = Snmpsim({community: Path(a.recording)}).start()
    work = Path(tempfile.mkdtemp(prefix="snmpbench-"))
    results: dict[str, tuple[float, int]] = {}
    try:
        try:
            from drivers.snmp.client import SnmpSession, SnmpTarget
            results["pysnmp 7 (client.py)"] = asyncio.run(bench_python(
                lambda: SnmpSession(SnmpTarget("127.0.0.1", port=sim.port, community=community)), a.rounds))
        except ImportError as e:
            print(f"pysnmp client not available: {e}")
        results["fast v2c (fastv2c.py)"] = asyncio.run(bench_python(
            lambda: FastV2cSession("127.0.0.1", sim.port, community), a.rounds))
        results["snmp_exporter (Go)"] = bench_exporter(sim.port, exporter_config([f"community: {community}"]),
                                                       a.rounds, work)
        try:
            from drivers.snmp.client import SnmpSession, SnmpTarget
            results["driver poll, pysnmp"] = asyncio.run(bench_driver(
                lambda: SnmpSession(SnmpTarget("127.0.0.1", port=sim.port, community=community)),
                sim.port, community, a.rounds))
        except ImportError:
            pass
        results["driver poll, fast v2c"] = asyncio.run(bench_driver(
            lambda: FastV2cSession("127.0.0.1", sim.port, community), sim.port, community, a.rounds))
    finally:
        sim.stop()
    v3_results = bench_v3(Path(a.recording), a.rounds, work)
    shutil.rmtree(work, ignore_errors=True)
    print(f"recording: {Path(a.recording).name}; {len(COLUMNS)} columns (IF-MIB x{len(IF_COLS)}, "
          f"BRIDGE/ARP x{len(FDB_COLS)}); {a.rounds} rounds each")
    print("raw walk rows: the same 14 columns; 'driver poll' rows: drivers.snmp SnmpDriver.poll() end to end\n"
          "(IF-MIB + rates + records + health/PoE sections) with the given session, varbinds it received")
    print(f"{'client':26} {'varbinds':>9} {'CPU s':>8} {'CPU s/10k vb':>13} {'vs exporter':>12}")
    for group, base in ((results, results["snmp_exporter (Go)"]), (v3_results, v3_results["snmp_exporter v3 (Go)"])):
        base_rate = base[0] / base[1] * 1e4 if base[1] else float("nan")
        for name, (cpu, vb) in group.items():
            rate = cpu / vb * 1e4 if vb else float("nan")
            print(f"{name:26} {vb:9d} {cpu:8.3f} {rate:13.4f} {rate / base_rate:11.1f}x")
    print("v3 rows: authPriv SHA/AES-128, compared with the exporter's own v3 scrape")
    return 0


def bench_v3(recording: Path, rounds: int, work: Path) -> dict[str, tuple[float, int]]:
    """The same walks over SNMPv3 authPriv (SHA / AES-128) against snmpsim's v3 architecture."""
    from drivers.snmp.client import SnmpSession, SnmpTarget, close_engines
    from drivers.snmp.fastv3 import FastV3Session

    user = {"user": "bench3", "auth_key": "a-" + os.urandom(6).hex(), "priv_key": "p-" + os.urandom(6).hex()}
    sim = Snmpsim({"bench": recording}, v3={"user": user["user"], "auth_proto": "SHA", "auth_key": user["auth_key"],
                                            "priv_proto": "AES", "priv_key": user["priv_key"]}).start()
    kw = dict(user=user["user"], auth_protocol="SHA", auth_key=user["auth_key"], priv_protocol="AES",
              priv_key=user["priv_key"], context="bench")
    res: dict[str, tuple[float, int]] = {}

    async def py(make):
        try:
            return await bench_python(make, rounds)
        finally:
            await close_engines()

    try:
        res["pysnmp 7 v3"] = asyncio.run(py(lambda: SnmpSession(SnmpTarget("127.0.0.1", sim.port, version="3", **kw))))
        res["fast v3 (fastv3.py)"] = asyncio.run(py(lambda: FastV3Session("127.0.0.1", sim.port, **kw)))
        res["snmp_exporter v3 (Go)"] = bench_exporter(sim.port, exporter_config(
            [f"username: {user['user']}", "security_level: authPriv", f"password: {user['auth_key']}",
             "auth_protocol: SHA", "priv_protocol: AES", f"priv_password: {user['priv_key']}",
             "context_name: bench"], version=3), rounds, work)
        drv = {"user": user["user"], "auth_protocol": "SHA", "auth_key": user["auth_key"], "priv_protocol": "AES",
               "priv_key": user["priv_key"], "context": "bench"}
        res["driver poll, fast v3"] = asyncio.run(bench_driver(
            lambda: FastV3Session("127.0.0.1", sim.port, **kw), sim.port, None, rounds, drv))
    finally:
        sim.stop()
    return res


if __name__ == "__main__":
    sys.exit(main())
