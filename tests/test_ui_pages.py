"""Web UI pages without a browser (TestClient on a real SQLiteStore fed with wire messages):
catalogs complete in zh-CN and en, language negotiation and the remembered switch, times in the
campus time zone, building/device/port/where-is pages from store data, static files (no path
escape, no source maps), /docs and /redoc with local assets only, vendored licences, CSP."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from campus_sense import wire
from collector.api.app import create_app
from collector.store.sqlite import SQLiteStore
from collector.store.users import UserStore
from collector.ui import i18n, passwords
from collector.ui.render import JS_KEYS, Ctx
from collector.ui.settings import UISettings

UI = Path(__file__).resolve().parent.parent / "collector" / "ui"
PW = "pages-test-password"
MAC = "68:99:cd:a5:9f:88"


def msg(seq, items, kind="metrics", agent="ag-a", site="north", building="A"):
    payload = wire.encode_durable(kind, agent, "e1", seq, 0, [wire.encode_item(i) for i in items])
    return wire.decode(wire.topic(site, building, agent, kind), payload)


def test_catalogs_have_every_key_the_code_uses():
    en, zh = i18n.catalog("en"), i18n.catalog("zh-CN")
    assert set(en) <= set(zh), set(en) - set(zh)
    # zh-only: check titles and compliance messages (English in the code; tests/test_compliance_report.py)
    assert not [k for k in zh if k not in en and not k.startswith(("check.", "msg."))]
    src = "\n".join(p.read_text() for p in [*UI.glob("*.py"), UI.parent / "compliance" / "report.py"])
    used = set(re.findall(r'["\']((?:col|nav|search|campus|bld|dev|graph|port|alert|alerts|dialog|reports|login|'
                          r'status|sev|state|group|range|role|lang|fact|csv|cat|ago|user|footer|notfound|error|'
                          r'forbidden|agents|rpt)\.[A-Za-z0-9_./-]+)["\']', src))
    assert {"rpt.signoff", "rpt.by_building", "col.devices"} <= used     # the printable report's labels
    used |= set(JS_KEYS)
    missing = sorted(k for k in used if k not in en and not k.endswith(".") and not k.endswith(".js"))
    assert not missing, missing
    # dynamic keys: every value they are built from
    for s in ("ok", "warning", "critical", "unknown", "up", "down", "admin_down", "online", "offline", "gone",
              "pass", "fail", "n/a"):
        assert "status." + s in en and "status." + s in zh
    for g in ("network", "wifi", "camera", "sensor", "projector", "access", "other"):
        assert f"group.{g}" in zh and f"group.{g}s" in zh
    from collector.compliance.results import CHECKS
    assert {f"check.{c}" for c in CHECKS} <= set(zh)
    # placeholders agree between the languages
    for k, v in en.items():
        assert set(re.findall(r"{(\w+)}", v)) == set(re.findall(r"{(\w+)}", zh[k])), k


def test_language_negotiation():
    n = i18n.negotiate
    assert n(None, None) == "zh-CN" and n(None, None, "en") == "en"
    assert n(None, "en-US,en;q=0.9") == "en"
    assert n(None, "de-DE,zh-TW;q=0.5,en;q=0.4") == "zh-CN"
    assert n(None, "zh-CN;q=0.2,en;q=0.8") == "en"
    assert n("en", "zh-CN") == "en" and n("xx", "en") == "en"


def test_times_in_the_campus_time_zone():
    t0 = 1_795_000_000_000        # 2026-11-18 11:06:40 UTC
    assert Ctx(t=i18n.T("en"), tz="Asia/Shanghai", path="/").time(t0) == "2026-11-18 19:06"
    assert Ctx(t=i18n.T("en"), tz="America/New_York", path="/").time(t0) == "2026-11-18 06:06"


@pytest.fixture
def ui(tmp_path):
    store = SQLiteStore(str(tmp_path / "c.db"))
    now = int(time.time() * 1000)
    store.apply([
        msg(1, [wire.facts("sw1", now, {"serial": "SN-12345", "model": "S5720", "ip": "10.0.0.2"})], "facts"),
        msg(2, [wire.sample("interface", "sw1", now - 120_000 + i * 30_000,
                            {"in_bps": 1e6 * (i + 1), "out_bps": 5e5, "oper_up": idx != 2, "admin_up": True,
                             "speed_mbps": 1000, "in_errors_ps": 0.5 if idx == 3 else 0.0},
                            {"ifIndex": str(idx), "ifName": f"Gi0/{idx}"}) for i in range(4) for idx in (1, 2, 3)]),
        msg(3, [wire.sample("fdb", "sw1", now, {"seen": 1}, {"mac": MAC, "ifIndex": "1", "ifName": "Gi0/1",
                                                            "vlan": "10"})]),
    ], [])
    app = create_app(store)
    app.state.ui_settings = UISettings(timezone="Asia/Shanghai")
    UserStore(store.path).user_add("it1", "it", passwords.hash_password(PW))
    c = TestClient(app)
    tok = re.search(r'name="csrf" value="([^"]+)"', c.get("/ui/login").text).group(1)
    assert c.post("/ui/login", data={"username": "it1", "password": PW, "csrf": tok},
                  follow_redirects=False).status_code == 303
    yield c
    app.state.ui_auth.close()
    store.close()


def test_pages_from_store_data(ui):
    r = ui.get("/ui/")
    assert r.status_code == 200 and "default-src 'self'" in r.headers["content-security-policy"]
    assert '<main id="main"' in r.text and 'role="search"' in r.text and 'class="skip"' in r.text
    assert "/ui/buildings/A" in r.text
    b = ui.get("/ui/buildings/A").text
    assert "sw1" in b and "Gi0/2" in b and "Gi0/3" in b          # one port down, one erroring
    d = ui.get("/ui/devices/sw1").text
    assert "SN-12345" in d and 'data-device="sw1"' in d and "uPlot.iife.min.js" in d
    assert '<meter min="0" max="100"' in d
    p = ui.get("/ui/devices/sw1/ports/1").text
    assert MAC in p and 'data-tags="ifIndex=1"' in p and 'class="tl-bar open"' in p
    for q in (MAC, MAC.replace(":", "").upper(), "SN-12345", "sw1"):
        s = ui.get("/ui/search", params={"q": q}).text
        assert "/ui/devices/sw1" in s, q
    assert ui.get("/ui/devices/nope").status_code == 404
    assert ui.get("/ui/alerts").status_code == 200               # no alert engine: says so


def test_language_switch_is_remembered(ui):
    assert 'lang="zh-CN"' in ui.get("/ui/").text
    r = ui.get("/ui/lang/en", params={"next": "/ui/agents"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/agents"
    assert "cs_lang=en" in r.headers["set-cookie"]
    page = ui.get("/ui/").text
    assert 'lang="en"' in page and "Campus overview" in page
    # no open redirect through next=
    assert ui.get("/ui/lang/zh-CN", params={"next": "//evil.example/"},
                  follow_redirects=False).headers["location"] == "/ui/"
    assert ui.get("/ui/lang/fr").status_code == 404


def test_static_docs_and_licences(ui):
    assert ui.get("/ui/static/ui.css").headers["content-type"].startswith("text/css")
    for bad in ("../auth.py", "..%2Fauth.py", "vendor/../../routes.py", ".hidden", "vendor/uplot/nope.js"):
        assert ui.get("/ui/static/" + bad).status_code == 404, bad
    for lic in ("uplot/LICENSE", "swagger-ui/LICENSE", "redoc/LICENSE"):
        assert ui.get("/ui/static/vendor/" + lic).status_code == 200
    assert (UI.parent.parent / "tests/vendor/axe-core/LICENSE").exists()
    for path in ("/docs", "/redoc"):
        html = ui.get(path).text
        urls = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
        assert urls and all(u.startswith("/") for u in urls), urls
        assert "cdn" not in html.lower() and "fonts.googleapis" not in html
    assert ui.get("/openapi.json").status_code == 200
    vendored = (UI / "static/vendor/redoc/redoc.standalone.js").read_text()
    assert "cdn.redoc.ly" not in vendored


def test_report_needs_compliance_and_role(ui):
    assert ui.get("/ui/reports/coverage").status_code == 404      # not configured here: a clear 404 page
    assert "覆盖率" in ui.get("/ui/reports/coverage").text
    assert json.loads(ui.get("/api/v1/devices").text)[0]["id"] == "sw1"
