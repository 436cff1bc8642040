"""Through the real collector process (Mosquitto, MQTT ingest, engine thread, API): one alert per
rule + subject under a burst of concurrent messages and across a collector restart (same id,
ack kept, count continues); the fire alarm raises its own critical alert and suppresses
door-forced in its building; an agent's death message suppresses its devices' alerts and
raises agent-offline, its next birth lifts both."""
from __future__ import annotations

from campus_sense import wire
from tests.collector_util import wait_until
from tests.test_alerts_support import CollectorProc, now_ms

RULES = """\
inhibit:
  - {name: fire-over-doors, source: ["rule=fire-alarm"], target: ["rule=door-forced"], equal: [building]}
rules:
  - {name: door-forced, kind: event, event: door_forced, severity: critical}
  - {name: fire-alarm, kind: event, event: fire_alarm, clear_event: fire_alarm_reset, severity: critical}
  - {name: agent-offline, kind: agent_offline, after: 1s}
"""
DEVICES = [{"id": "door-1", "driver": "test", "room": "A-101", "type": "door"},
           {"id": "fire-1", "driver": "test", "room": "A-000", "type": "fire_panel"}]


def _active(c, rule):
    return [a for a in c.get(f"/alerts?state=active&rule={rule}").json()]


def test_one_alert_per_subject_across_burst_and_restart(tmp_path, mosquitto, mqtt_users):
    c = CollectorProc(tmp_path, mosquitto, mqtt_users, rules=RULES, notify=False)
    try:
        c.birth(DEVICES)
        t = now_ms()
        # a burst: 30 messages in flight at once, each with a door_forced of the same door
        infos = []
        for i in range(30):
            c.seq += 1
            infos.append(c.pub.durable("events", c.seq, [wire.event("door-1", "door_forced", t + i, "critical")],
                                       wait=False))
        for info in infos:
            info.wait_for_publish(10)
        door = wait_until(lambda: [a for a in _active(c, "door-forced") if a["count"] == 30], 30, "30 events")[0]
        assert len(c.get("/alerts?state=all&rule=door-forced").json()) == 1
        assert c.post(f"/alerts/{door['id']}/ack", {"comment": "guard sent"}).status_code == 200
        seq = c.seq
    finally:
        rc = c.stop()
    assert rc == 0 and "Traceback" not in c.log.read_text()

    # restart the collector on the same databases
    c = CollectorProc(tmp_path, mosquitto, mqtt_users, rules=RULES, notify=False)
    try:
        c.seq = seq
        c.events(wire.event("door-1", "door_forced", now_ms(), "critical"))
        again = wait_until(lambda: [a for a in _active(c, "door-forced") if a["count"] == 31], 30, "31st event")[0]
        assert again["id"] == door["id"] and again["acked_by"] == "security-user (security)"
        assert len(c.get("/alerts?state=all&rule=door-forced").json()) == 1

        # fire alarm: its own critical alert, door-forced in the same building suppressed
        c.events(wire.event("fire-1", "fire_alarm", now_ms(), "critical"))
        fire = c.wait_alert("fire-alarm", "fire-1", state="firing")
        assert fire["severity"] == "critical" and not fire["suppressed"]
        wait_until(lambda: "fire-over-doors" in (c.get(f"/alerts/{door['id']}").json()["suppressed"] or ""),
                   10, "door alert inhibited by the fire alarm")
        c.events(wire.event("fire-1", "fire_alarm_reset", now_ms(), "info"))
        wait_until(lambda: c.get(f"/alerts/{door['id']}").json()["suppressed"] is None, 10, "inhibition lifted")

        # the agent dies: agent-offline fires, the door alert of its device is suppressed
        c.pub.state("death", reason="lost")
        off = c.wait_alert("agent-offline", state="firing")
        assert off["labels"]["agent"] == "agent-a"
        wait_until(lambda: "agent" in (c.get(f"/alerts/{door['id']}").json()["suppressed"] or ""),
                   10, "door alert suppressed while its agent is offline")
        c.birth(DEVICES)
        wait_until(lambda: not _active(c, "agent-offline"), 10, "agent-offline resolved")
        wait_until(lambda: c.get(f"/alerts/{door['id']}").json()["suppressed"] is None, 10, "unsuppressed")
        assert len(c.get("/alerts?state=all&rule=door-forced").json()) == 1
    finally:
        assert c.stop() == 0
    assert "Traceback" not in c.log.read_text()
