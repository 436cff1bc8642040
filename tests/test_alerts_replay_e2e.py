"""Through the real collector process (Mosquitto, MQTT ingest, engine thread, notifier): a door_forced
committed by a collector that is killed -9 before its engine evaluated it raises its alert (and its
notification) once, after the restart; a second restart adds nothing (collector/README.md "Alerts":
the stored events of the last ``rules.replay_s`` are replayed, idempotently).

Deterministic crash window: the test holds the write lock of the collector's alert store
(``alerts.db``, a separate SQLite file, ``BEGIN IMMEDIATE``), so the engine thread blocks on its first
alert write (``open_alert``) while ingest commits the event to ``c.db`` and acknowledges it. The test
waits until the event is in ``c.db``, SIGKILLs the collector, and only then releases the lock (its
transaction rolls back): the event is stored and acknowledged, and no alert, history row or outbox
entry exists, exactly the state a kill between commit and evaluation leaves."""
from __future__ import annotations

import signal
import sqlite3

from campus_sense import wire
from tests.collector_util import wait_until
from tests.test_alerts_support import CollectorProc, now_ms

RULES = """\
rules:
  - {name: door-forced, kind: event, event: door_forced, severity: critical}
"""


def _stored(db) -> int:
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return c.execute("SELECT count(*) FROM events WHERE type='door_forced'").fetchone()[0]
    finally:
        c.close()


def _alerts(c):
    return [(x["id"], x["state"], x["count"], x["updated_ms"]) for x in c.get("/alerts?state=all").json()]


def test_kill_between_commit_and_evaluation_fires_once_after_restart(tmp_path, mosquitto, mqtt_users):
    c = CollectorProc(tmp_path, mosquitto, mqtt_users, rules=RULES)
    lock = sqlite3.connect(tmp_path / "alerts.db", isolation_level=None, timeout=30)
    try:
        lock.execute("BEGIN IMMEDIATE")         # the engine's next alert write waits for this lock
        t = now_ms()
        c.events(wire.event("door-1", "door_forced", t, "critical"))
        wait_until(lambda: _stored(tmp_path / "c.db") == 1, 30, "door_forced committed")
        c.proc.send_signal(signal.SIGKILL)
        c.proc.wait(10)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
        c.stop()
    alerts = sqlite3.connect(tmp_path / "alerts.db")
    assert alerts.execute("SELECT count(*) FROM alerts").fetchone()[0] == 0      # never evaluated
    alerts.close()

    c = CollectorProc(tmp_path, mosquitto, mqtt_users, rules=RULES)
    try:
        a = c.wait_alert("door-forced", "door-1", state="firing")
        assert (a["started_ms"], a["count"]) == (t, 1)
        hist = c.get(f"/alerts/{a['id']}").json()["history"]
        assert [h["action"] for h in hist] == ["firing"]
        sent = wait_until(lambda: c.get("/notifications/deliveries").json(), 30, "a notification attempt")
        assert len(sent) == 1 and "door-forced" in sent[0]["title"]
        before = _alerts(c)
    finally:
        assert c.stop() == 0
    assert _stored(tmp_path / "c.db") == 1

    c = CollectorProc(tmp_path, mosquitto, mqtt_users, rules=RULES)
    try:
        assert _alerts(c) == before
        assert [h["action"] for h in c.get(f"/alerts/{a['id']}").json()["history"]] == ["firing"]
        assert [d["id"] for d in c.get("/notifications/deliveries").json()] == [sent[0]["id"]]
    finally:
        assert c.stop() == 0
    assert "Traceback" not in c.log.read_text()
