"""Rules fed by a real edge agent (subprocess, synthetic driver) through Mosquitto into a real
collector: ``scope: {tags: ...}`` works with the tags of the agent config (the agent's birth
message carries each device's tags/type/room; the collector's device_meta reads them)."""
from __future__ import annotations

import subprocess
import sys

from tests.collector_util import wait_until
from tests.test_alerts_support import ROOT, CollectorProc

RULES = """\
rules:
  - name: lab-link
    kind: threshold
    scope: {tags: {zone: lab}}
    measurement: interface
    field: speed_mbps
    op: ">="
    value: 1
    severity: warning
  - name: camera-room
    kind: threshold
    scope: {type: camera, room: "A-1*"}
    measurement: interface
    field: speed_mbps
    op: ">="
    value: 1
    severity: info
"""


def test_scope_by_tag_type_room_from_agent_birth(tmp_path, mosquitto, mqtt_users):
    c = CollectorProc(tmp_path, mosquitto, mqtt_users, rules=RULES, notify=False)
    (tmp_path / "mqtt.pass").write_text(mqtt_users["agent-a"] + "\n")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        "agent: {id: agent-a, site: north, building: A}\n"
        f"mqtt: {{host: 127.0.0.1, port: {mosquitto.port}, username: agent-a, password_file: {tmp_path / 'mqtt.pass'}}}\n"
        f"queue: {{path: {tmp_path / 'queue.db'}}}\n"
        "publish: {batch_interval_s: 0.2, heartbeat_s: 5, selfmetrics_s: 5}\n"
        "devices:\n"
        "  - {id: syn-lab, driver: synthetic, interval_s: 0.5, room: B-7, type: switch, tags: {zone: lab},"
        " options: {interfaces: 1}}\n"
        "  - {id: syn-office, driver: synthetic, interval_s: 0.5, room: A-12, type: camera, tags: {zone: office},"
        " options: {interfaces: 1}}\n")
    log = open(tmp_path / "agent.log", "ab")
    agent = subprocess.Popen([sys.executable, "-m", "campus_sense", "agent", "--config", str(cfg)],
                             cwd=ROOT, stdout=log, stderr=log)
    try:
        a = c.wait_alert("lab-link", state="firing")
        assert a["labels"]["device"] == "syn-lab" and a["labels"]["room"] == "B-7"
        cam = c.wait_alert("camera-room", state="firing")
        assert cam["labels"]["device"] == "syn-office" and cam["labels"]["type"] == "camera"
        # a few more polls of both devices: still no alert of the other rule
        def polled():
            return [c.get(f"/devices/{d}").json().get("last_poll_ms") or 0 for d in ("syn-lab", "syn-office")]
        before = polled()
        wait_until(lambda: all(x > y for x, y in zip(polled(), before)), 20, "more polls")
        by_rule = {}
        for x in c.get("/alerts?state=all").json():
            by_rule.setdefault(x["rule"], set()).add(x["labels"]["device"])
        assert by_rule == {"lab-link": {"syn-lab"}, "camera-room": {"syn-office"}}
    finally:
        agent.terminate()
        agent.wait(30)
        log.close()
        assert c.stop() == 0
    assert "Traceback" not in c.log.read_text()
