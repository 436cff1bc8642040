"""The audit log (等保 evidence): every change made through the API and the console (an API client
sending X-Campus-Sense-Client: console) - alert actions, silences, maintenance windows, rule file
replacement, tokens - lands in it with who (token id, name, role), when, what and before/after;
GET /api/v1/audit is admin only, filters by time, exports CSV that parses; the hash chain shows edits."""
from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import pytest

from collector.store.audit import CSV_COLUMNS, AuditStore
from tests.pg_fixture import pg_server, store_target  # noqa: F401 - both backends
from tests.test_api_fuzz import Env

CONSOLE = {"X-Campus-Sense-Client": "console"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = Env(tmp_path_factory.mktemp("audit"))
    yield e
    e.close()


def _last(env, action):
    rows = env.client.get(f"/api/v1/audit?action={action}", headers=env.h("admin")).json()
    assert rows, action
    return rows[-1]


def test_every_api_and_console_change_is_audited(env):
    c, h = env.client, env.h
    t0 = int(time.time() * 1000)
    door, fridge = env.alert_ids["door-forced"], env.alert_ids["fridge-warm"]
    tok = env.store.token_list()
    sec_id = next(t["id"] for t in tok if t["name"] == "security-user")
    calls = [  # (method, path, body, role, via, action, target)
        ("post", f"/alerts/{door}/ack", {"comment": "on my way"}, "security", "console", "alert.ack", f"alert:{door}"),
        ("post", f"/alerts/{door}/unack", {}, "security", "api", "alert.unack", f"alert:{door}"),
        ("post", f"/alerts/{door}/comment", {"text": "guard sent"}, "it", "api", "alert.comment", None),
        ("post", f"/alerts/{door}/assign", {"assignee": "li"}, "security", "console", "alert.assign", None),
        ("post", f"/alerts/{fridge}/escalate", {"comment": "smell"}, "security", "api", "alert.escalate", None),
        ("post", f"/alerts/{fridge}/resolve", {"comment": "fixed"}, "admin", "api", "alert.resolve", None),
        ("post", "/silences", {"matchers": ["device=door-9"], "duration_ms": 60_000}, "security", "console",
         "silence.create", None),
        ("post", "/maintenance", {"name": "ups", "matchers": ["building=A"], "collect": False,
                                  "schedule": {"timezone": "Asia/Shanghai", "days": ["sun"]}}, "admin", "api",
         "maintenance.create", "maintenance:ups"),
        ("delete", "/maintenance/ups", None, "security", "console", "maintenance.delete", "maintenance:ups"),
        ("post", "/tokens", {"role": "it", "name": "night-shift"}, "admin", "console", "token.create", None),
    ]
    for method, path, body, role, via, action, target in calls:
        hdr = {**h(role), **(CONSOLE if via == "console" else {})}
        if role == "it" and "comment" in path:   # it sees network alerts only: comment the link alert
            path = path.replace(str(door), str(env.alert_ids["uplink-down"]))
            target = f"alert:{env.alert_ids['uplink-down']}"
        r = c.request(method.upper(), "/api/v1" + path, json=body, headers=hdr)
        assert r.status_code in (200, 201), (path, r.status_code, r.text)
        e = _last(env, action)
        assert e["via"] == via and e["actor_role"] == role and e["t_ms"] >= t0, e
        assert e["actor"] == f"{role}-user ({role})" and isinstance(e["actor_token_id"], int)
        if target:
            assert e["target"] == target
    # before / after
    ack = _last(env, "alert.ack")
    assert ack["before"]["acked_by"] is None and ack["after"]["acked_by"] == "security-user (security)"
    assert ack["detail"]["comment"] == "on my way"
    esc = _last(env, "alert.escalate")
    assert esc["before"]["severity"] == "warning" and esc["after"]["severity"] == "critical"
    res = _last(env, "alert.resolve")
    assert res["before"]["state"] == "firing" and res["after"]["state"] == "resolved"
    mc, md = _last(env, "maintenance.create"), _last(env, "maintenance.delete")
    assert mc["before"] is None and mc["after"]["collect"] is False
    assert md["before"]["name"] == "ups" and md["after"] is None
    tc = _last(env, "token.create")
    assert tc["after"]["name"] == "night-shift" and "token" not in tc["after"]  # never the secret
    # revoke the token just made; silence expire
    new_id = tc["after"]["id"]
    assert c.delete(f"/api/v1/tokens/{new_id}", headers=h("admin")).status_code == 200
    tr = _last(env, "token.revoke")
    assert tr["before"]["revoked_ms"] is None and tr["after"]["revoked_ms"] is not None
    sid = _last(env, "silence.create")["after"]["id"]
    assert c.delete(f"/api/v1/silences/{sid}", headers={**h("security"), **CONSOLE}).status_code == 200
    se = _last(env, "silence.expire")
    assert se["before"]["expired_ms"] is None and se["after"]["expired_by"] == "security-user (security)"
    assert se["via"] == "console"
    assert sec_id


def test_rule_replacement_is_audited_with_the_file_before_and_after(env):
    c, h = env.client, env.h
    path = Path(env.dir / "rules.yaml")
    old = path.read_text()
    new = old + "  - {name: extra, kind: event, event: extra_ev}\n"
    r = c.put("/api/v1/rules", content=new.encode(), headers={**h("admin"), **CONSOLE})
    assert r.status_code == 200, r.text
    e = _last(env, "rules.replace")
    assert "extra" not in e["before"]["rules"] and "extra" in e["after"]["rules"]
    assert e["before"]["files"][str(path)] == old and e["after"]["files"][str(path)] == new
    assert e["via"] == "console" and e["actor_role"] == "admin"
    # a rejected file changes nothing and records nothing
    n = len(c.get("/api/v1/audit", headers=h("admin")).json())
    assert c.put("/api/v1/rules", content=b"rules: [{kind: nope}]", headers=h("admin")).status_code == 422
    assert len(c.get("/api/v1/audit", headers=h("admin")).json()) == n


def test_audit_api_admin_only_time_filter_and_csv(env):
    c, h = env.client, env.h
    for role in ("it", "security"):
        assert c.get("/api/v1/audit", headers=h(role)).status_code == 403
    assert c.get("/api/v1/audit").status_code == 401
    c.post(f"/api/v1/alerts/{env.alert_ids['door-forced']}/comment", json={"text": "csv, \"quoted\"\nline 2"},
           headers=h("security"))
    rows = c.get("/api/v1/audit", headers=h("admin")).json()
    assert len(rows) >= 2
    mid = rows[-1]["t_ms"]
    assert all(x["t_ms"] >= mid for x in c.get(f"/api/v1/audit?since={mid}", headers=h("admin")).json())
    assert all(x["t_ms"] < mid for x in c.get(f"/api/v1/audit?until={mid}", headers=h("admin")).json())
    r = c.get("/api/v1/audit?format=csv", headers=h("admin"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    parsed = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert tuple(parsed[0].keys()) == CSV_COLUMNS and len(parsed) == len(rows)
    last = parsed[-1]
    assert last["action"] == "alert.comment" and last["time"].endswith("Z")
    import json
    assert json.loads(last["detail"])["text"] == "csv, \"quoted\"\nline 2"
    assert json.loads(last["after"])["id"] == env.alert_ids["door-forced"]
    assert env.alerting.audit.verify() == []


def test_hash_chain_shows_edited_rows(store_target):
    a = AuditStore(store_target("a"))           # SQLite and PostgreSQL
    for i in range(3):
        a.record(1000 + i, "u", "alert.ack", f"alert:{i}", {"x": i}, {"x": i + 1})
    assert a.verify() == []
    a._db.execute("UPDATE audit_log SET actor='someone else' WHERE id=2")
    assert a.verify() == [2]


def test_one_chain_for_concurrent_writers(store_target):
    """Two stores on one database (two collectors) appending at once still make one valid chain."""
    import threading
    t = store_target("shared")
    stores = [AuditStore(t), AuditStore(t)]

    def run(st, k):
        for i in range(25):
            st.record(1000 + i, f"u{k}", "alert.ack", f"alert:{i}")

    ts = [threading.Thread(target=run, args=(st, k)) for k, st in enumerate(stores)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    assert len(stores[0].entries()) == 50 and stores[1].verify() == []


def test_the_web_ui_sends_the_client_header():
    """Every API call of the web UI (alerts page included) is audited as made through the console."""
    js = (Path(__file__).parents[1] / "collector/ui/static/ui.js").read_text()
    assert '"X-Campus-Sense-Client": "console"' in js
