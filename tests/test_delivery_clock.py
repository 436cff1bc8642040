"""Issue 9, clock row: an agent whose clock is a day ahead or behind (faketime) is measured, its
item times are stored corrected, the agent-clock-skew alert fires, and staleness neither flaps
nor goes blind: the device is not stale while it reports, and is once it stops."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.collector_util import wait_until
from tests.test_alerts_support import CollectorProc

ROOT = Path(__file__).resolve().parent.parent

RULES = """
staleness: {default: 15s}
rules:
  - {name: device-stale, kind: absence, severity: warning}
  - {name: agent-offline, kind: agent_offline, after: 15s, severity: critical}
  - {name: agent-clock-skew, kind: event, event: agent_clock_skew, clear_event: agent_clock_skew_cleared}
"""

LIBFAKETIME = next((str(p) for p in Path("/usr/lib").glob("*/faketime/libfaketime.so.1")), None)
pytestmark = pytest.mark.skipif(LIBFAKETIME is None, reason="libfaketime is not installed "
                                "(scripts/install.sh --test installs the faketime package)")


@pytest.mark.parametrize("skew", ["+1d", "-1d", "+0"])
def test_skewed_agent_is_corrected_and_alerted(tmp_path, skew, shipped_broker, shipped_users):
    broker, users = shipped_broker, shipped_users
    col = CollectorProc(tmp_path, broker, users, rules=RULES, notify=False)
    # agent-b: CollectorProc keeps a publisher connected as agent-a, and the shipped broker binds the client
    # id to the user name (two connections of one user take the session from each other)
    (tmp_path / "mqtt.pass").write_text(users["agent-b"] + "\n")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        "agent: {id: agent-b, site: north, building: A}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, username: agent-b, password_file: {tmp_path / 'mqtt.pass'}}}\n"
        f"queue: {{path: {tmp_path / 'queue.db'}}}\n"
        "publish: {batch_interval_s: 0.3, heartbeat_s: 1, selfmetrics_s: 2, confirm_timeout_s: 5}\n"
        "devices:\n  - {id: sw1, driver: synthetic, interval_s: 1, options: {interfaces: 2}}\n")
    # libfaketime preloaded into the agent itself (the `faketime` wrapper would stay the parent, and
    # killing it would leave the agent running)
    env = dict(os.environ, LD_PRELOAD=LIBFAKETIME, FAKETIME=skew, FAKETIME_DONT_FAKE_MONOTONIC="1")
    agent = subprocess.Popen([sys.executable, "-m", "campus_sense", "agent", "--config", str(cfg)], cwd=ROOT, env=env,
                             stdout=open(tmp_path / "agent.log", "ab"), stderr=subprocess.STDOUT)
    sign = 1 if skew.startswith("+") else -1
    try:
        def offset():
            a = [x for x in col.get("/agents").json() if x["id"] == "agent-b"]
            return a[0]["clock_offset_s"] if a else None
        wait_until(lambda: offset() is not None, 60, "a clock estimate")
        assert abs(offset() - sign * 86400 * (skew != "+0")) < 30, offset()
        # stored at collector time: the last minute has points, the agent's "tomorrow"/"yesterday" none
        now = int(time.time() * 1000)
        wait_until(lambda: col.get("/series", params={"measurement": "interface", "device": "sw1",
                                                      "field": "in_bps", "start": now - 60_000,
                                                      "end": now + 60_000}).json()["series"], 30, "recent points")
        far = col.get("/series", params={"measurement": "interface", "device": "sw1", "field": "in_bps",
                                         "start": now + sign * 86400_000 - 3600_000,
                                         "end": now + sign * 86400_000 + 3600_000}).json()
        assert far["series"] == [] or skew == "+0"
        if skew != "+0":
            wait_until(lambda: any(a["labels"]["rule"] == "agent-clock-skew" for a in col.get("/alerts").json()),
                       30, "the agent-clock-skew alert")
        # 20 s of reporting: nothing stale, agent not offline (no flapping)
        time.sleep(20)
        hist = col.get("/alerts", params={"state": "all"}).json()
        assert not [a for a in hist if a["labels"]["rule"] in ("device-stale", "agent-offline")], hist
        # it stops: the device goes stale and the agent offline (not blind)
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        wait_until(lambda: {"device-stale", "agent-offline"} <= {a["labels"]["rule"] for a in
                                                                 col.get("/alerts").json()}, 60,
                   "stale device and offline agent after the agent stopped")
    finally:
        if agent.poll() is None:
            agent.kill()
        col.pub.close()
        col.proc.send_signal(signal.SIGTERM)
        col.proc.wait(20)
