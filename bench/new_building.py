#!/usr/bin/env python3
"""A scripted "new building" (issue 12, "Measure"): enrol -> install the bundle -> discover -> agent ->
data of every device in the collector's API, wall time per step.

    .venv/bin/python bench/new_building.py [--agent-python /tmp/venv-agent/bin/python]

Already running before the clock starts (a campus that exists): Mosquitto with the shipped ACL and
the collector user, the collector (enrol block: the broker's passwd/acl files, SIGHUP reload), and
the building's devices on 127.0.5.0/28 (snmpsimd: Cisco 2960X access switch, Huawei S5720 core
with LLDP between them, Ruckus ZoneDirector, UniFi AP; a PJLink projector). Then, timed, the
commands a technician types: `campus-sense enrol`, `campus-sense agent enrol BUNDLE`,
`campus-sense discover 127.0.5.0/28 --credentials ... --output agent.yaml`, `campus-sense agent`,
until GET /api/v1/devices lists every discovered device as reachable.
Not a test: figures depend on the machine.
"""
from __future__ import annotations

import argparse
import json
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.collector_util import wait_until, write_config  # noqa: E402
from tests.peers import Mosquitto, free_port  # noqa: E402
from tests.peers_discover import FIX, PJLinkAt, SnmpsimAt, derive_recording, lldp_lines  # noqa: E402

PY = str(ROOT / ".venv/bin/python")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent-python", default=PY, help="python of the agent side (e.g. a .[agent] venv)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="new-building-"))
    users = {"collector": secrets.token_hex(8)}
    (tmp / "mosq").mkdir()
    broker = Mosquitto(users, tmp / "mosq", shipped=True).start()
    port = free_port(socket.SOCK_DGRAM)
    community = "c" + secrets.token_hex(6)
    rec = tmp / "rec"
    rec.mkdir()
    net = "127.0.5"
    acc = derive_recording(FIX / "snmprec/cisco_ios_c2960x.snmprec", rec / "acc.snmprec", "b-acc1", "Room B-101",
                           lldp_lines(11149, 1, "b4:fb:f9:ad:b8:81", "XGigabitEthernet0/0/1", "b-core", "Huawei",
                                      f"{net}.2"))
    core = derive_recording(FIX / "snmprec/huawei_vrp_s5720.snmprec", rec / "core.snmprec", "b-core", "B-001")
    sims = [SnmpsimAt({community: acc}, f"{net}.1", port), SnmpsimAt({community: core}, f"{net}.2", port),
            SnmpsimAt({community: FIX / "snmprec_vendors/ruckus_zd1200.snmprec"}, f"{net}.3", port),
            SnmpsimAt({community: FIX / "snmprec_vendors/unifi_uap_radio_vap.snmprec"}, f"{net}.4", port)]
    for s in sims:
        s.start()
    pj = PJLinkAt(f"{net}.10")
    procs: list[subprocess.Popen] = []
    try:
        for s in sims:
            s.wait()
        cdir = tmp / "collector"
        cdir.mkdir()
        api = free_port()
        cfg = write_config(cdir / "collector.yaml", broker.port, "collector", users["collector"], cdir / "c.db", api,
                           extra=("enrol:\n  broker_host: 127.0.0.1\n"
                                  f"  broker_port: {broker.port}\n  passwd_file: {broker.dir / 'passwd'}\n"
                                  f"  acl_file: {broker.dir / 'acl'}\n"
                                  f"  reload_command: [kill, -HUP, '{broker.proc.pid}']\n"))
        with open(cdir / "log", "ab") as f:
            procs.append(subprocess.Popen([PY, "-m", "campus_sense", "collector", "--config", str(cfg)], cwd=ROOT,
                                          stdout=f, stderr=f))
        base = f"http://127.0.0.1:{api}/api/v1"

        def up():
            try:
                return httpx.get(f"{base}/health", timeout=2).json()["ingest"]["connected"]
            except (httpx.HTTPError, ValueError, KeyError):
                return False
        wait_until(up, 60, "collector")
        tok = subprocess.run([PY, "-m", "campus_sense", "collector", "token", "create", "--role", "admin",
                              "--config", str(cfg)], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        (tmp / "secrets").mkdir()
        (tmp / "secrets/ro").write_text(community + "\n")
        (tmp / "creds.yaml").write_text("snmp:\n  v2c:\n    - {community_file: secrets/ro}\n")
        pi = tmp / "pi"
        steps: list[tuple[str, float]] = []
        t0 = time.monotonic()

        def step(name: str, argv: list[str], python: str = PY) -> subprocess.CompletedProcess:
            t = time.monotonic()
            r = subprocess.run([python, "-m", "campus_sense", *argv], cwd=ROOT, capture_output=True, text=True)
            steps.append((name, time.monotonic() - t))
            if r.returncode != 0:
                raise SystemExit(f"{name} failed: {r.stderr}")
            return r
        step("enrol", ["enrol", "bldg-b", "--site", "north", "--building", "B", "-c", str(cfg)])
        bundle = cdir / "bundles" / "bldg-b.tar.gz"
        step("agent enrol", ["agent", "enrol", str(bundle), "--prefix", str(pi)], a.agent_python)
        agent_yaml = pi / "etc/campus-sense/agent.yaml"
        r = step("discover", ["discover", f"{net}.0/28", "--credentials", str(tmp / "creds.yaml"), "--snmp-port",
                              str(port), "--output", str(agent_yaml), "--json", "--interval", "10"], a.agent_python)
        found = [d["id"] for d in json.loads(r.stdout)["devices"]]
        t = time.monotonic()
        with open(pi / "agent.log", "ab") as f:
            procs.append(subprocess.Popen([a.agent_python, "-m", "campus_sense", "agent", "--config", str(agent_yaml)],
                                          cwd=ROOT, stdout=f, stderr=f))

        def all_reachable():
            r = httpx.get(f"{base}/devices", headers={"Authorization": f"Bearer {tok}"}, timeout=5)
            return r.status_code == 200 and set(found) <= {d["id"] for d in r.json() if d.get("reachable")}
        wait_until(all_reachable, 120, "every device in the API")
        steps.append(("agent start -> all devices in the API", time.monotonic() - t))
        total = time.monotonic() - t0
        for name, s in steps:
            print(f"  {name:40s} {s:6.2f} s")
        print(f"new building (enrol -> discover -> agent -> {len(found)} devices in the API: {', '.join(found)}): "
              f"{total:.1f} s wall")
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        pj.stop()
        for s in sims:
            s.stop()
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
