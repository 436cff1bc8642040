#!/usr/bin/env python3
"""Agent memory (issue 12, "Measure"): RSS of `campus-sense agent` polling N simulated 48-port access
switches (campus_sense/sim/snmp_agent.py: 48 x 1G + 2 x 10G + Vlan1 each, real SNMP v2c on
loopback) and publishing to a real Mosquitto.

    .venv/bin/python bench/agent_rss.py [--switches 20] [--interval 10] [--seconds 120]
        [--agent-python /tmp/venv-agent/bin/python]   # e.g. a fresh `pip install .[agent]` venv

Reports VmRSS / VmHWM of the agent process every interval and at the end, plus the agent's
cycles (agent_poll samples queued). delete_on: puback (no collector here: the queue must not grow).
Not a test: figures depend on the machine.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from campus_sense.sim.snmp_agent import start_simulated_device  # noqa: E402
from tests.peers import Mosquitto  # noqa: E402


def rss_kb(pid: int) -> tuple[int, int]:
    d = {}
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = ln.partition(":")
        if k in ("VmRSS", "VmHWM"):
            d[k] = int(v.split()[0])
    return d.get("VmRSS", 0), d.get("VmHWM", 0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--switches", type=int, default=20)
    ap.add_argument("--interval", type=float, default=10)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--agent-python", default=str(ROOT / ".venv/bin/python"))
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="agent-rss-"))
    community = "c-" + secrets.token_hex(6)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    devs = [asyncio.run_coroutine_threadsafe(start_simulated_device("access", community, seed=i), loop).result(10)
            for i in range(a.switches)]
    users = {"bench": secrets.token_hex(8)}
    (tmp / "mosq").mkdir()
    broker = Mosquitto(users, tmp / "mosq").start()
    (tmp / "p").write_text(users["bench"] + "\n")
    (tmp / "c").write_text(community + "\n")
    (tmp / "agent.yaml").write_text(
        "agent: {id: bench, site: s, building: b}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, username: bench, password_file: p}}\n"
        "queue: {path: q.db}\npublish: {delete_on: puback}\ndevices:\n" + "".join(
            f"  - {{id: sw{i}, driver: snmp, interval_s: {a.interval}, type: switch, "
            f"options: {{host: 127.0.0.1, port: {d.port}, community_file: c}}}}\n" for i, d in enumerate(devs)))
    log = open(tmp / "agent.log", "ab")
    p = subprocess.Popen([a.agent_python, "-m", "campus_sense", "agent", "--config", str(tmp / "agent.yaml")],
                         cwd=tmp, stdout=log, stderr=log)
    samples = []
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < a.seconds:
            time.sleep(a.interval)
            if p.poll() is not None:
                print((tmp / "agent.log").read_text()[-2000:])
                return 1
            rss, hwm = rss_kb(p.pid)
            samples.append(rss)
            print(f"t={time.monotonic() - t0:5.0f}s  RSS {rss / 1024:6.1f} MiB  peak {hwm / 1024:6.1f} MiB", flush=True)
        rss, hwm = rss_kb(p.pid)
        steady = samples[len(samples) // 2:]
        print(f"{a.switches} switches x 51 interfaces every {a.interval:g}s ({a.agent_python}): "
              f"steady RSS {min(steady) / 1024:.1f}-{max(steady) / 1024:.1f} MiB, peak (VmHWM) {hwm / 1024:.1f} MiB")
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
        broker.stop()
        for d in devs:
            loop.call_soon_threadsafe(d.close)
    errs = [ln for ln in (tmp / "agent.log").read_text().splitlines() if " ERROR " in ln]
    print(f"agent log errors: {len(errs)}" + (f" (first: {errs[0]})" if errs else ""))
    _ = os
    return 0


if __name__ == "__main__":
    sys.exit(main())
