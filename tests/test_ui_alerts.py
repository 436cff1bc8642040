"""The web UI's alerts page without a browser (TestClient on an in-process collector app with the
alert engine on a temp SQLite store; people logged in through /ui/login): /ui/alerts with server-side
filters and critical alerts pinned on top, the fragment alerts.js re-fetches (/ui/alerts/live, 401
once the session ended), the detail page with history and the samples that fired the alert, zh-CN
and en, roles (it: network alerts only, no assign/silence/resolve; 403 on acting), scope, the SSE
ticket for a UI session (CSRF required, scoped stream), /console redirecting to /ui/alerts."""
from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from campus_sense import wire
from collector import config as cfgmod
from collector.alerting import Alerting
from collector.api import create_app
from collector.store.sqlite import SQLiteStore
from collector.store.users import UserStore
from collector.ui import passwords
from collector.ui.settings import UISettings
from tests.collector_util import wait_until
from tests.peers import free_port
from tests.test_alerts_support import RULES

PW = "alerts-page-password"


def _msg(seq: int, items: list[dict], kind: str, agent: str, building: str):
    payload = wire.encode_durable(kind, agent, "e1", seq, 0, [wire.encode_item(i) for i in items])
    return wire.decode(wire.topic("north", building, agent, kind), payload)


class Env:
    def __init__(self, d: Path):
        (d / "rules.yaml").write_text(RULES)
        (d / "collector.pass").write_text("unused\n")
        (d / "collector.yaml").write_text(
            "mqtt: {host: 127.0.0.1, port: 1, username: collector, password_file: collector.pass}\n"
            f"store: {{path: {d / 'c.db'}}}\nrules: {{paths: [rules.yaml], db: alerts.db, tick_s: 0.2}}\n")
        self.store = SQLiteStore(str(d / "c.db"))
        self.app = create_app(self.store, None, 180)
        self.app.state.ui_settings = UISettings(timezone="Asia/Shanghai")
        self.alerting = Alerting(cfgmod.load(d / "collector.yaml"), self.store, None)
        self.alerting.mount(self.app)
        self.alerting.start()
        users = UserStore(self.store.path)
        for name, role, scope in (("guard", "security", []), ("net", "it", []), ("guard-b", "security", ["B"])):
            users.user_add(name, role, passwords.hash_password(PW), scope)
        users.close()
        self.seq = 0
        t = int(time.time() * 1000)
        self.feed("metrics", [wire.sample("temperature", "fridge-1", t - 60_000, {"value": 3.0}),
                              wire.sample("temperature", "fridge-1", t, {"value": 9.5})], "ag-a", "A")
        self.feed("events", [wire.event("door-1", "door_forced", t, "critical")], "ag-a", "A")
        self.feed("events", [wire.event("sw-b", "link_down", t, "warning", tags={"ifName": "Gi0/1"})], "ag-b", "B")

        def fired():
            got = {a.rule: a for a in self.alerting.engine.alerts({"state": "active"})}
            return got if {"door-forced", "uplink-down", "fridge-warm"} <= set(got) else None
        self.alerts = wait_until(fired, 30, "alerts fired")

    def feed(self, kind: str, items: list[dict], agent: str, building: str) -> None:
        self.seq += 1
        m = _msg(self.seq, items, kind, agent, building)
        self.store.apply([m], [])
        self.alerting.on_message(m)

    def login(self, name: str, lang: str = "zh-CN") -> TestClient:
        c = TestClient(self.app, headers={"Accept-Language": lang})
        tok = re.search(r'name="csrf" value="([^"]+)"', c.get("/ui/login").text).group(1)
        assert c.post("/ui/login", data={"username": name, "password": PW, "csrf": tok},
                      follow_redirects=False).status_code == 303
        return c

    def close(self) -> None:
        self.app.state.ui_auth.close()
        self.alerting.stop()
        self.store.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = Env(tmp_path_factory.mktemp("ui-alerts"))
    yield e
    e.close()


def csrf_of(html: str) -> str:
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', html).group(1)


def row_ids(html: str, table: str = "h-act") -> list[int]:
    sec = html.split(f'id="{table}"', 1)[1].split("</section>", 1)[0]
    return [int(x) for x in re.findall(r'<tr data-alert-id="(\d+)"', sec)]


def test_login_required(env):
    c = TestClient(env.app)
    for path in ("/ui/alerts", f"/ui/alerts/{env.alerts['door-forced'].id}"):
        r = c.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login?next=")
    # the fragments the page re-fetches: 401, not a login form
    assert c.get("/ui/alerts/live").status_code == 401
    assert c.get(f"/ui/alerts/{env.alerts['door-forced'].id}/live").status_code == 401
    assert c.post("/api/v1/alerts/stream/ticket").status_code == 401


def test_page_pins_critical_filters_and_zh_strings(env):
    c = env.login("guard")
    r = c.get("/ui/alerts")
    assert r.status_code == 200 and "default-src 'self'" in r.headers["content-security-policy"]
    html = r.text
    door, fridge, link = (env.alerts[k].id for k in ("door-forced", "fridge-warm", "uplink-down"))
    assert row_ids(html)[0] == door                                   # critical firing pinned on top
    assert f'<tr data-alert-id="{door}" data-severity="critical" class="pinned">' in html
    assert {fridge, link} <= set(row_ids(html))
    for s in ("活动告警", "筛选", "全部", "楼宇", "严重", "静音提示音", "活动 3 条，其中严重告警 1 条"):
        assert s in html, s
    assert f'<a href="/ui/alerts/{door}">' in html and 'id="live-status"' in html and 'aria-live="polite"' in html
    assert 'data-live="/ui/alerts/live"' in html and "/ui/static/alerts.js" in html
    assert 'data-action="assign"' in html and 'data-action="silence"' in html     # security may
    # filters: server side, kept in the fragment URL the page re-fetches
    b = c.get("/ui/alerts", params={"building": "B"}).text
    assert row_ids(b) == [link] and 'data-live="/ui/alerts/live?building=B"' in b
    assert '<option value="B" selected>' in b
    s = c.get("/ui/alerts", params={"severity": "critical"}).text
    assert row_ids(s) == [door] and "export.csv?severity=critical" in s
    assert row_ids(c.get("/ui/alerts", params={"severity": "bogus"}).text) == row_ids(html)   # ignored
    # the fragment: the same tables, a digest header so the page replaces only what changed
    f = c.get("/ui/alerts/live", params={"building": "A", "severity": "warning"})
    assert f.status_code == 200 and row_ids(f.text) == [fridge] and "<html" not in f.text
    assert re.fullmatch(r"[0-9a-f]{16}", f.headers["x-digest"])
    assert f.headers["x-digest"] == c.get("/ui/alerts/live?building=A&severity=warning").headers["x-digest"]
    # English
    en = env.login("guard", "en").get("/ui/alerts").text
    assert "Active alerts" in en and "Mute alarm sound" in en and "3 active, 1 critical firing" in en


def test_detail_page_history_and_samples(env):
    c = env.login("guard")
    fridge = env.alerts["fridge-warm"].id
    c.post(f"/api/v1/alerts/{fridge}/comment", json={"text": "看过了"},
           headers={"X-CSRF-Token": csrf_of(c.get("/ui/alerts").text)})
    r = c.get(f"/ui/alerts/{fridge}")
    assert r.status_code == 200
    h = r.text
    for s in ("历史记录", "触发告警的采样（temperature.value）", "规则", "fridge-warm", "触发", "备注", "看过了",
              "guard (security)", "阈值 5", "最新 9.5"):
        assert s in h, s
    pts = re.search(r'<svg class="spark"[^>]*role="img"[^>]*>.*?<polyline points="([^"]+)"', h).group(1)
    assert len(pts.split()) == 2
    assert f'data-live="/ui/alerts/{fridge}/live"' in h and 'data-action="ack"' in h
    assert 'href="/ui/alerts"' in h                                      # breadcrumb back to the list
    en = env.login("guard", "en").get(f"/ui/alerts/{fridge}").text
    assert "History" in en and "Samples that fired it (temperature.value)" in en and "limit 5" in en
    door = env.alerts["door-forced"].id
    d = c.get(f"/ui/alerts/{door}/live")
    assert d.status_code == 200 and "触发告警的事件" in d.text and "door_forced" in d.text
    assert c.get("/ui/alerts/999999").status_code == 404
    assert c.get("/ui/alerts/99999999999999999999999").status_code == 404


def test_it_sees_network_alerts_and_may_not_assign(env):
    c = env.login("net")
    html = c.get("/ui/alerts").text
    link, door = env.alerts["uplink-down"].id, env.alerts["door-forced"].id
    assert row_ids(html) == [link]
    assert 'data-action="ack"' in html and 'data-action="assign"' not in html and 'data-action="silence"' not in html
    assert c.get(f"/ui/alerts/{door}").status_code == 403            # not a network alert
    assert c.get(f"/ui/alerts/{link}").status_code == 200
    tok = csrf_of(html)
    r = c.post(f"/api/v1/alerts/{link}/assign", json={"assignee": "x"}, headers={"X-CSRF-Token": tok})
    assert r.status_code == 403
    assert c.post(f"/api/v1/alerts/{door}/ack", json={}, headers={"X-CSRF-Token": tok}).status_code == 403


def test_scoped_login_sees_its_building(env):
    c = env.login("guard-b")
    html = c.get("/ui/alerts").text
    assert row_ids(html) == [env.alerts["uplink-down"].id]
    assert c.get(f"/ui/alerts/{env.alerts['door-forced'].id}").status_code == 404
    assert row_ids(c.get("/ui/alerts/live?building=A").text) == []
    # the page's CSV link: the alerts of its building only (campus-wide for an unscoped login)
    rows = c.get("/api/v1/alerts/export.csv").text.splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [env.alerts["uplink-down"].id]
    assert len(env.login("guard").get("/api/v1/alerts/export.csv").text.splitlines()) - 1 == len(env.alerts)


def test_stream_ticket_for_a_session_needs_csrf_and_is_scoped(env):
    """The page's live stream: a ticket bought with the session cookie + CSRF token; a scoped
    session's stream carries only its buildings' alerts (real server: SSE through TestClient blocks)."""
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(env.app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: srv.started, 10, "uvicorn")
        got: dict[str, list[str]] = {"guard": [], "guard-b": []}
        for name in got:
            cl = httpx.Client(base_url=base, timeout=10)
            page = cl.get("/ui/login")
            tok = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
            assert cl.post("/ui/login", data={"username": name, "password": PW, "csrf": tok}).status_code == 303
            assert cl.post("/api/v1/alerts/stream/ticket").status_code == 403               # no CSRF token
            csrf = csrf_of(cl.get("/ui/alerts").text)
            assert cl.post("/api/v1/alerts/stream/ticket", headers={"X-CSRF-Token": csrf,
                                                                    "Origin": "http://evil.example"}).status_code == 403
            r = cl.post("/api/v1/alerts/stream/ticket", headers={"X-CSRF-Token": csrf})
            assert r.status_code == 200, r.text
            ticket = r.json()["ticket"]
            cl.close()

            def listen(name=name, ticket=ticket, stop={"guard": "door-forced", "guard-b": "uplink-down"}[name]):
                with httpx.Client(base_url=base, timeout=30) as s, \
                        s.stream("GET", f"/api/v1/alerts/stream?ticket={ticket}&heartbeat_s=1") as resp:
                    for line in resp.iter_lines():
                        got[name].append(line)
                        if stop in line:
                            return
            threading.Thread(target=listen, daemon=True).start()
        wait_until(lambda: all(any("hello" in x for x in v) for v in got.values()), 10, "both streams open")
        tr = env.login("guard")
        h = {"X-CSRF-Token": csrf_of(tr.get("/ui/alerts").text)}
        assert tr.post(f"/api/v1/alerts/{env.alerts['door-forced'].id}/comment", json={"text": "A"},
                       headers=h).status_code == 200
        assert tr.post(f"/api/v1/alerts/{env.alerts['uplink-down'].id}/comment", json={"text": "B"},
                       headers=h).status_code == 200
        wait_until(lambda: any("uplink-down" in x for x in got["guard-b"]), 10, "B's change on the scoped stream")
        wait_until(lambda: any("door-forced" in x for x in got["guard"]), 10, "A's change on the campus stream")
        assert not any("door-forced" in x for x in got["guard-b"])      # building A: not in B's stream
    finally:
        srv.should_exit = True
        th.join(10)


def test_console_redirects_to_the_alerts_page(env):
    c = TestClient(env.app)
    for path in ("/console", "/console/"):
        r = c.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/ui/alerts"
    assert c.get("/console/static/console.js").status_code == 404
