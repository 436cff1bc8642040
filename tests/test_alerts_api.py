"""Alert API end to end: agent publisher -> real Mosquitto -> collector process (rules + notify)
-> /api/v1/alerts, actions, roles, silences, rules, CSV, notifications, SSE stream."""
from __future__ import annotations

import csv
import io
import json
import threading

import httpx
import pytest

from campus_sense import wire
from tests.collector_util import wait_until
from tests.test_alerts_support import CollectorProc, now_ms

DEVICES = [{"id": "door-1", "driver": "test", "room": "A-101", "type": "door"},
           {"id": "fridge-1", "driver": "test", "room": "K-1", "type": "fridge"},
           {"id": "sw1", "driver": "test", "room": "A-000", "type": "switch"}]


@pytest.fixture
def coll(tmp_path, mosquitto, mqtt_users):
    c = CollectorProc(tmp_path, mosquitto, mqtt_users)
    yield c
    rc = c.stop()
    log = c.log.read_text()
    assert rc == 0, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


def _actions(c, alert_id, role="security"):
    return [h["action"] for h in c.get(f"/alerts/{alert_id}", role).json()["history"]]


def test_alert_lifecycle_roles_csv_notifications(coll):
    c = coll
    c.birth(DEVICES)
    t = now_ms()
    c.events(wire.event("door-1", "door_forced", t, "critical", data={"door": "north"}))
    door = c.wait_alert("door-forced", "door-1", role="security")
    assert door["state"] == "firing" and door["severity"] == "critical"
    assert door["labels"]["building"] == "A" and door["labels"]["room"] == "A-101"
    assert door["summary"] == "Door forced: door-1 in A/A-101" and door["network"] is False

    # threshold on samples: the detail shows the samples that fired it
    c.metrics(wire.sample("temperature", "fridge-1", t - 60_000, {"value": 3.0}),
              wire.sample("temperature", "fridge-1", t, {"value": 9.5}))
    fridge = c.wait_alert("fridge-warm", "fridge-1")
    d = c.get(f"/alerts/{fridge['id']}", "security").json()
    pts = d["samples"]["series"][0]["points"]
    assert [p[1] for p in pts] == [3.0, 9.5] and d["samples"]["measurement"] == "temperature"
    assert [h["action"] for h in d["history"]] == ["firing"]

    # a network alert (link event)
    c.events(wire.event("sw1", "link_down", t, "warning", tags={"ifName": "Gi0/1"}))
    link = c.wait_alert("uplink-down", "sw1")
    assert link["network"] is True and link["labels"]["ifName"] == "Gi0/1"
    ev = c.get(f"/alerts/{link['id']}", "it").json()["events"]
    assert ev and ev[0]["type"] == "link_down"

    # ---- auth: 401 without / with a bad token, also on the stream
    assert c.http.get("/alerts").status_code == 401
    assert c.http.get("/alerts", headers={"Authorization": "Bearer cs_nope"}).status_code == 401
    assert c.http.get("/alerts/stream?token=cs_nope").status_code == 401
    assert c.http.get("/alerts/stream?ticket=forged").status_code == 401
    # ---- it: network alerts only
    seen = {a["rule"] for a in c.get("/alerts", "it").json()}
    assert seen == {"uplink-down"}
    assert c.get(f"/alerts/{door['id']}", "it").status_code == 403
    assert c.post(f"/alerts/{door['id']}/ack", {}, role="it").status_code == 403
    r = c.post(f"/alerts/{link['id']}/ack", {"comment": "looking"}, role="it")
    assert r.status_code == 200 and r.json()["acked_by"] == "it-user (it)"
    assert c.post(f"/alerts/{link['id']}/assign", {"assignee": "x"}, role="it").status_code == 403
    assert c.post("/silences", {"matchers": ["building=A"], "duration_ms": 60000}, role="it").status_code == 403
    assert c.get("/me", "it").json()["can"]["view"] == "network"
    # ---- security: everything on alerts, not rules
    assert {a["rule"] for a in c.get("/alerts", "security").json()} == {"door-forced", "fridge-warm", "uplink-down"}
    r = c.http.put("/rules", content=b"rules: []\n", headers=c.h("security"))
    assert r.status_code == 403 and "admin" in r.json()["detail"]
    assert c.get("/rules", "security").json()["files"][0]["text"] is None  # file content: admin only

    # ---- actions by security -> state and history
    r = c.post(f"/alerts/{door['id']}/ack", {"comment": "guard on the way"})
    assert r.status_code == 200 and r.json()["acked"] and r.json()["ack_comment"] == "guard on the way"
    r = c.post(f"/alerts/{door['id']}/assign", {"assignee": "guard-7"})
    assert r.json()["assignee"] == "guard-7"
    assert c.post(f"/alerts/{door['id']}/comment", {"text": "door closed again"}).status_code == 200
    assert c.post(f"/alerts/{door['id']}/comment", {"text": ""}).status_code == 422
    hist = c.get(f"/alerts/{door['id']}", "security").json()["history"]
    assert [h["action"] for h in hist] == ["firing", "acked", "assigned", "commented"]
    assert hist[1]["actor"] == "security-user (security)" and hist[3]["detail"]["comment"] == "door closed again"
    assert c.post(f"/alerts/{door['id']}/unack").json()["acked"] is False
    assert [a["id"] for a in c.get("/alerts?acked=false&severity=critical", "security").json()] == [door["id"]]
    assert c.get("/alerts?building=B", "security").json() == []
    assert c.post("/alerts/999999/ack").status_code == 404

    # ---- silences
    r = c.post("/silences", {"matchers": ["rule=fridge-warm", "device=fridge-1"], "duration_ms": 3_600_000,
                             "comment": "defrosting"})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    wait_until(lambda: (c.get(f"/alerts/{fridge['id']}").json()["suppressed"] or "") == f"silence:{sid}",
               10, "fridge alert silenced")
    assert "suppressed" in _actions(c, fridge["id"])
    assert any(s["id"] == sid for s in c.get("/silences?active=true", "it").json())
    assert c.post("/silences", {"matchers": [], "duration_ms": 1000}).status_code == 400
    assert c.http.delete(f"/silences/{sid}", headers=c.h("security")).status_code == 200
    wait_until(lambda: c.get(f"/alerts/{fridge['id']}").json()["suppressed"] is None, 10, "unsilenced")

    # ---- resolve by hand
    r = c.post(f"/alerts/{door['id']}/resolve", {"comment": "checked"})
    assert r.status_code == 200 and r.json()["state"] == "resolved"
    assert c.post(f"/alerts/{door['id']}/ack", {}).status_code == 409
    assert door["id"] not in [a["id"] for a in c.get("/alerts", "security").json()]

    # ---- CSV export (all states by default)
    r = c.get("/alerts/export.csv", "security")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    by_rule = {row["rule"]: row for row in rows}
    assert set(by_rule) == {"door-forced", "fridge-warm", "uplink-down"}
    assert by_rule["door-forced"]["state"] == "resolved"
    it_rows = list(csv.DictReader(io.StringIO(c.get("/alerts/export.csv", "it").text)))
    assert [row["rule"] for row in it_rows] == ["uplink-down"]
    # audit history as CSV: every transition and human action with its actor
    r = c.get(f"/alerts/history.csv?alert_id={door['id']}", "security")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    hrows = list(csv.DictReader(io.StringIO(r.text)))
    assert [h["action"] for h in hrows][:4] == ["firing", "acked", "assigned", "commented"]
    assert hrows[-1]["action"] == "manually_resolved" and hrows[-1]["actor"] == "security-user (security)"
    assert "guard on the way" in hrows[1]["detail"]
    all_rules = {h["rule"] for h in csv.DictReader(io.StringIO(c.get("/alerts/history.csv", "admin").text))}
    assert all_rules == {"door-forced", "fridge-warm", "uplink-down"}
    it_hist = list(csv.DictReader(io.StringIO(c.get("/alerts/history.csv", "it").text)))
    assert it_hist and {h["rule"] for h in it_hist} == {"uplink-down"}
    assert c.get(f"/alerts/history.csv?alert_id={door['id']}", "it").status_code == 403

    # ---- notifications: the failing channel is visible
    st = wait_until(lambda: (s := c.get("/notifications/status", "security").json())
                    and s["channels"]["broken-hook"]["failed"] >= 1 and s, 30, "failed delivery")
    ch = st["channels"]["broken-hook"]
    assert ch["ok"] is False and ch["last_error"] and st["running"] is True
    dl = c.get("/notifications/deliveries?state=failed", "it").json()
    assert dl and dl[0]["channel"] == "broken-hook" and dl[0]["last_error"]

    # ---- rules: only admin edits; invalid YAML names file:line; valid reloads
    bad = "rules:\n  - name: x\n    kind: threshold\n    measurement: t\n    op: '>>'\n    value: 1\n"
    r = c.http.put("/rules", content=bad.encode(), headers=c.h("admin"))
    assert r.status_code == 422 and "rules.yaml:" in r.json()["detail"] and "op" in r.json()["detail"]
    rules = c.get("/rules", "admin").json()
    new = rules["files"][0]["text"] + ("  - name: smoke\n    kind: event\n    event: smoke_detected\n"
                                        "    severity: critical\n")
    r = c.http.put("/rules", content=new.encode(), headers=c.h("admin"))
    assert r.status_code == 200, r.text
    assert "smoke" in [x["name"] for x in c.get("/rules", "security").json()["rules"]]
    c.events(wire.event("door-1", "smoke_detected", now_ms(), "critical"))
    c.wait_alert("smoke", "door-1")
    # the link alert and its ack survived the reload
    assert c.get(f"/alerts/{link['id']}", "it").json()["acked_by"] == "it-user (it)"
    assert c.get("/alerting/stats", "it").json()["dropped"] == 0


def test_sse_stream_ticket_and_role_filter(coll):
    c = coll
    c.birth(DEVICES)
    got: dict[str, list] = {"security": [], "it": []}
    ready = {k: threading.Event() for k in got}
    stop = threading.Event()

    def listen(role: str, url: str, headers: dict):
        with httpx.Client(base_url=c.base + "/api/v1", timeout=httpx.Timeout(5, read=60)) as cl:
            with cl.stream("GET", url, headers=headers) as r:
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
                event = None
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        if event == "hello":
                            ready[role].set()
                        elif event == "alert":
                            got[role].append(json.loads(line[6:]))
                    if stop.is_set() or any(x["alert"]["rule"] == "door-forced" for x in got[role]):
                        return

    ticket = c.post("/alerts/stream/ticket", role="security").json()["ticket"]
    threads = [threading.Thread(target=listen, args=("security", f"/alerts/stream?ticket={ticket}", {}), daemon=True),
               threading.Thread(target=listen, args=("it", "/alerts/stream", c.h("it")), daemon=True)]
    for th in threads:
        th.start()
    assert all(e.wait(20) for e in ready.values())
    # the ticket was single-use
    assert c.http.get(f"/alerts/stream?ticket={ticket}").status_code == 401
    t = now_ms()
    c.events(wire.event("sw1", "link_down", t, "warning", tags={"ifName": "Gi0/2"}))
    c.events(wire.event("door-1", "door_forced", t, "critical"))
    threads[0].join(30)
    wait_until(lambda: got["it"], 30, "it sees the link alert")
    stop.set()
    sec = [(x["kind"], x["alert"]["rule"]) for x in got["security"]]
    assert ("firing", "uplink-down") in sec and ("firing", "door-forced") in sec
    door = next(x for x in got["security"] if x["alert"]["rule"] == "door-forced")
    assert door["alert"]["severity"] == "critical" and door["alert"]["labels"]["room"] == "A-101" and door["alert"]["id"]
    assert all(x["alert"]["rule"] == "uplink-down" for x in got["it"])
    # one more change so the it stream wakes up and ends
    c.events(wire.event("sw1", "link_up", now_ms(), "info", tags={"ifName": "Gi0/2"}))
    threads[1].join(30)
    assert [x["kind"] for x in got["it"]][-1] in ("firing", "resolved")
