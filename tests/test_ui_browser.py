"""The web UI in Debian's Chromium (playwright, executable_path=/usr/bin/chromium) against a live
collector fed by a real agent run: snmpsim (Cisco C3750 with FDB, Huawei S5720 with LLDP) -> real
`campus-sense agent` -> real Mosquitto -> real `campus-sense collector` (campus model, registry,
rules). A person logs in (user made with `campus-sense collector user add`), goes campus ->
building -> device, a traffic graph renders from /api/v1/series, zooms to 7 days, where-is finds a
MAC the agent learnt from the switch's FDB, acknowledges an alert in a real dialog, switches the
language (remembered), prints a report (PDF) and exports CSV, opens /docs and /redoc; the pages fit
1366x768 and a phone, pass axe-core (WCAG 2 A/AA, serious/critical), Chinese text is drawn with a
CJK font, and no request leaves loopback. Screenshots go to <tmp_path>/artefacts."""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import httpx
import pytest

from campus_sense import wire
from tests.collector_util import Publisher, wait_until, write_config
from tests.peers import free_port
from tests.peers_snmp import Snmpsim

ROOT = Path(__file__).resolve().parent.parent
VENDORS = ROOT / "tests" / "fixtures" / "snmprec_vendors"
SNMPREC = ROOT / "tests" / "fixtures" / "snmprec"
AXE = ROOT / "tests" / "vendor" / "axe-core" / "axe.min.js"
FDB_MAC = "68:99:cd:a5:9f:88"          # learnt on the C3750's Fa3/0/48
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSWORD = "Ui-test-" + secrets.token_urlsafe(9)

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM) or not shutil.which("snmpsimd")
                                or not shutil.which("mosquitto"), reason="needs chromium, snmpsim and mosquitto")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python package) is not installed")

CAMPUS = """
sites:
  - id: north
    buildings:
      - id: A
        name: Teaching building A
        floors:
          - id: A-0
            level: 0
            name: Ground
            rooms:
              - {id: A-001, name: Wiring closet, type: server}
          - id: A-1
            level: 1
            name: First
            rooms:
              - {id: A-101, name: Classroom 101, type: teaching}
              - {id: A-102, name: Classroom 102, type: teaching}
devices:
  - {id: CE-NG, type: switch, role: core, room: A-001}
  - {id: a-acc1, type: switch, role: access, room: A-001, model: WS-C3750-48PS-S}
  - {id: a-acc2, type: switch, role: access, room: A-001}
ports:
  - {device: a-acc1, port: Fa3/0/48, role: desk, room: A-102}
  - {device: a-acc1, port: Fa3/0/43, role: uplink, peer: CE-NG}
"""
ASSETS = ("asset_tag,device_type,model,serial,mac,assigned_ip,room,owner,device_id\n"
          "AT-1,switch,WS-C3750-48PS-S,CAT0952N20R,00:16:c7:02:6e:83,,A-001,Network team,a-acc1\n")
RULES = """
rules:
  - name: slow-desk-port
    kind: threshold
    measurement: interface
    field: speed_mbps
    op: "<"
    value: 1000
    item_tags: ["ifName=Fa3/0/48"]
    for: 0s
    severity: warning
    summary: "{device} {ifName} at {value} Mb/s"
"""


def _combine(*paths: Path) -> str:
    rows = {}
    for p in paths:
        for line in p.read_text().splitlines():
            if line.strip():
                rows[line.split("|", 1)[0]] = line
    return "\n".join(rows[k] for k in sorted(rows, key=lambda o: tuple(int(x) for x in o.split(".")))) + "\n"


@pytest.fixture
def mqtt_users():
    return {"agent-a": secrets.token_hex(8), "collector": secrets.token_hex(8), "probe-a": secrets.token_hex(8)}


@pytest.fixture
def stack(tmp_path, mosquitto, mqtt_users):
    hw = tmp_path / "huawei.snmprec"
    hw.write_text(_combine(VENDORS / "huawei_s5720_lldp.snmprec", SNMPREC / "huawei_vrp_s5720.snmprec"))
    c_cisco, c_hw = "c3750" + secrets.token_hex(4), "s5720" + secrets.token_hex(4)
    sim = Snmpsim({c_cisco: VENDORS / "cisco_c3750.snmprec", c_hw: hw}).start()
    (tmp_path / "campus.yaml").write_text(CAMPUS)
    (tmp_path / "assets.csv").write_text(ASSETS)
    (tmp_path / "rules.yaml").write_text(RULES)
    api_port = free_port()
    ccfg = write_config(tmp_path / "collector.yaml", mosquitto.port, "collector", mqtt_users["collector"],
                        tmp_path / "c.db", api_port, client_id="collector-ui-e2e",
                        extra="agents: {offline_after_s: 60}\n"
                              "campus: {model: [campus.yaml], registry: [assets.csv], cache_s: 0}\n"
                              "rules: {paths: [rules.yaml], db: alerts.db}\n"
                              "ui: {timezone: Asia/Shanghai}\n")
    (tmp_path / "agent.pass").write_text(mqtt_users["agent-a"] + "\n")
    acfg = tmp_path / "agent.yaml"
    acfg.write_text(
        "agent: {id: agent-a, site: north, building: A}\n"
        f"mqtt: {{host: 127.0.0.1, port: {mosquitto.port}, username: agent-a, "
        f"password_file: {tmp_path / 'agent.pass'}, keepalive_s: 5}}\n"
        f"queue: {{path: {tmp_path / 'queue.db'}, max_messages: 100000}}\n"
        "publish: {batch_interval_s: 0.3, heartbeat_s: 1, selfmetrics_s: 1}\n"
        "devices:\n"
        f"  - {{id: a-acc1, driver: snmp, interval_s: 5, room: A-001, type: switch, options: "
        f"{{host: 127.0.0.1, port: {sim.port}, version: '2c', community: {c_cisco}, timeout_s: 3}}}}\n"
        f"  - {{id: a-acc2, driver: snmp, interval_s: 5, room: A-001, type: switch, options: "
        f"{{host: 127.0.0.1, port: {sim.port}, version: '2c', community: {c_hw}, timeout_s: 3}}}}\n")
    r = subprocess.run([sys.executable, "-m", "campus_sense", "collector", "user", "add", "admin", "--role", "admin",
                        "--name", "管理员甲", "--password-stdin", "--config", str(ccfg)], cwd=ROOT, input=PASSWORD + "\n",
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    procs = []

    def run(*a):
        p = subprocess.Popen([sys.executable, "-m", "campus_sense", *a], cwd=ROOT,
                             stdout=open(tmp_path / f"{a[0]}.log", "ab"), stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    base = f"http://127.0.0.1:{api_port}"
    coll = run("collector", "--config", str(ccfg))
    probe = None
    try:
        wait_until(lambda: _health(base), 30, "collector subscribed")
        run("agent", "--config", str(acfg))
        # Wi-Fi AP status is fed by the test (no SNMP source here has a controller)
        probe = Publisher(mosquitto.port, "probe-a", mqtt_users["probe-a"], agent="probe-a", building="A")
        now = int(time.time() * 1000)
        probe.durable("metrics", 1, [
            wire.sample("wifi_ap", "a-acc2", now, {"up": True}, {"ap": "AP-102", "ap_mac": "10:4f:58:00:01:00"}),
            wire.sample("wifi_clients", "a-acc2", now, {"clients": 23}, {"ap": "AP-102", "band": "5GHz"})])
        yield {"base": base, "tmp": tmp_path}
    finally:
        if probe is not None:
            probe.close()
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
        sim.stop()
    assert coll.returncode == 0
    assert "Traceback" not in (tmp_path / "collector.log").read_text()


def _health(base: str):
    try:
        return httpx.get(base + "/api/v1/health", timeout=3).json().get("ingest", {}).get("connected")
    except (httpx.HTTPError, ValueError):
        return None


def test_ui_end_to_end(stack):
    base, art = stack["base"], stack["tmp"] / "artefacts"
    art.mkdir()
    outside: list[str] = []

    def guard(route):
        host = urllib.parse.urlsplit(route.request.url).hostname or ""
        if route.request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            ctx = browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN",
                                      extra_http_headers={"Accept-Language": "zh-CN,zh;q=0.9"})
            ctx.route("**/*", guard)
            page = ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

            def shot(name: str):
                page.screenshot(path=str(art / f"{name}.png"), full_page=True)

            def fits(name: str):
                w = page.evaluate("document.documentElement.scrollWidth")
                vw = page.evaluate("window.innerWidth")
                assert w <= vw, f"{name}: page is {w}px wide in a {vw}px window"

            def axe(name: str):
                page.add_script_tag(url=base + "/__test__/axe.min.js")
                res = page.evaluate("axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa']}})")
                bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in res["violations"]
                       if v["impact"] in ("serious", "critical")]
                assert not bad, f"{name}: axe-core violations {json.dumps(bad, ensure_ascii=False)}"

            # axe-core is a test-only file, served from the page's own origin (the CSP allows 'self' only)
            ctx.route(base + "/__test__/axe.min.js", lambda r: r.fulfill(path=str(AXE), content_type="text/javascript"))

            # ---- / leads to the UI, which asks for a login (Chinese: the browser asks for zh-CN)
            page.goto(base + "/")
            assert "/ui/login" in page.url
            assert page.get_attribute("html", "lang") == "zh-CN" and "登录" in page.inner_text("h1")
            axe("login")
            page.fill("#username", "admin")
            page.fill("#password", "wrong password")
            page.click("form.login button[type=submit]")
            assert "用户名或密码错误" in page.inner_text("#login-error")
            page.fill("#username", "admin")
            page.fill("#password", PASSWORD)
            page.click("form.login button[type=submit]")
            page.wait_for_url(re.compile(r"/ui/$"))
            assert "管理员甲" in page.inner_text("#who")
            errors.clear()          # the wrong password's 401 above was expected

            # ---- campus: building A with its agent once the agent reported
            def campus_ready():
                page.reload()
                row = page.query_selector("#h-ag ~ .table-wrap tr:has(td:text-is('agent-a'))")
                return page.query_selector("a[href='/ui/buildings/A']") and row and "在线" in row.inner_text()
            wait_until(campus_ready, 60, "building A with its online agent on the campus page")

            def polled():   # the same session cookie works for the API
                devs = {d["id"]: d for d in page.request.get(base + "/api/v1/devices").json()}
                return all(devs.get(d, {}).get("reachable") for d in ("a-acc1", "a-acc2")) and \
                    devs["a-acc1"]["facts"].get("serial")
            wait_until(polled, 90, "both switches polled (reachable, facts)")
            page.reload()
            assert page.query_selector("main section h2#h-ag")            # agents table for admins
            shot("1-campus")
            fits("campus")
            axe("campus")

            # ---- building: devices by floor/room, ports, Wi-Fi fed above
            page.click("a[href='/ui/buildings/A']")
            page.wait_for_selector("#h-floors")
            main = page.inner_text("main")
            assert "a-acc1" in main and "A-001" in main and "Ground" in main
            assert "AP-102" in main and "23" in main
            shot("2-building")
            fits("building")
            axe("building")

            # ---- device: facts, interfaces, a traffic graph drawn from live series data
            page.click("main a[href='/ui/devices/a-acc1']")
            page.wait_for_selector("#h-facts")

            def facts():
                page.reload()
                return "CAT0952N20R" in page.inner_text("dl.facts") and page.query_selector("#g-traffic")
            wait_until(facts, 60, "serial from the SNMP entity facts and interfaces on the device page")
            assert "Fa3/0/48" in page.inner_text("main")

            def graph_points():
                v = page.get_attribute("#g-traffic", "data-points")
                if v in (None, "0", "error"):
                    if v is not None:
                        page.click("#g-traffic button[data-range='3600']")
                    return None
                return int(v)
            wait_until(graph_points, 60, "traffic graph with points")
            assert page.query_selector("#g-traffic .plot canvas") is not None   # uPlot drew it
            assert "最新" in page.inner_text("#g-traffic .gsummary")
            page.click("#g-traffic button[data-range='604800']")            # zoom out to 7 days (5m rollups)
            page.wait_for_function("document.querySelector('#g-traffic').dataset.points !== undefined && "
                                   "document.querySelector('#g-traffic button[data-range=\"604800\"]')"
                                   ".getAttribute('aria-pressed') === 'true'")
            wait_until(lambda: page.get_attribute("#g-traffic", "data-points") not in ("error",), 20, "7-day graph")
            shot("3-device")
            fits("device")
            axe("device")

            # ---- port page: MAC timeline from the topology store
            page.click("main a:text-is('Fa3/0/48')")
            page.wait_for_selector("#h-macs")

            def mac_on_port():
                page.reload()
                return FDB_MAC in page.inner_text("main")
            wait_until(mac_on_port, 120, "FDB MAC on the port page")
            assert page.query_selector("svg.tl rect.tl-bar")
            shot("4-port")

            # ---- where-is from the header search on any page
            page.fill("#where-q", FDB_MAC.upper().replace(":", "-"))
            page.press("#where-q", "Enter")
            page.wait_for_selector("#h-sf")
            txt = page.inner_text("main")
            assert "a-acc1" in txt and "Fa3/0/48" in txt
            shot("5-where-is")
            axe("where-is")

            # ---- alerts: the slow desk port fired; acknowledge it in a real dialog (no prompt())
            page.on("dialog", lambda d: (errors.append("native dialog: " + d.type), d.dismiss()))
            page.goto(base + "/ui/alerts")

            def ack_button():
                page.reload()
                return page.query_selector("button[data-action='ack']")
            btn = wait_until(ack_button, 60, "an active alert with an Acknowledge button")
            row_text = page.inner_text("table.alerts tbody tr")
            assert "a-acc1" in row_text
            assert page.query_selector("table.alerts a[href='/ui/devices/a-acc1']")
            assert page.query_selector("table.alerts a[href='/ui/buildings/A']")
            btn.click()
            page.wait_for_selector("#dlg-ack[open]")
            assert page.evaluate("document.activeElement.id") == "ack-comment"   # focus moved into the dialog
            axe("alerts-dialog")
            page.fill("#ack-comment", "桌面端口降速，已派人处理")
            page.click("#dlg-ack button[type=submit]")
            page.wait_for_selector("#flash:not(:empty)")
            assert "已由" in page.inner_text("table.alerts tbody tr")
            acked = [a for a in page.request.get(base + "/api/v1/alerts").json() if a["rule"] == "slow-desk-port"]
            assert acked[0]["acked_by"] == "admin (admin)"                 # the person, in history and audit
            audit = page.request.get(base + "/api/v1/audit?action=alert.ack").json()
            assert audit[-1]["actor"] == "admin (admin)" and audit[-1]["via"] == "console"
            assert page.query_selector("#h-res")                             # recently resolved section
            shot("6-alerts")

            # ---- switch language: English, remembered by the cookie
            page.click(".langs a[hreflang='en']")
            page.wait_for_load_state()
            assert page.get_attribute("html", "lang") == "en" and "Alerts" in page.inner_text("h1")
            page.goto(base + "/ui/")
            assert "Campus overview" in page.inner_text("h1") and "Buildings" in page.inner_text("main")
            shot("7-campus-en")

            # ---- reports: in the browser, print (PDF through the print stylesheet) and CSV
            page.goto(base + "/ui/reports/compliance?building=A")
            assert "Compliance report" in page.inner_text("h1") and "Approved firmware" in page.inner_text("main")
            csv = page.request.get(base + "/ui/reports/compliance.csv?building=A")
            assert csv.status == 200 and csv.headers["content-type"].startswith("text/csv")
            assert "Approved firmware" in csv.text() and "a-acc1" in csv.text()
            page.emulate_media(media="print")
            assert page.is_hidden("header.top") and page.is_hidden("#print")
            pdf = page.pdf(format="A4")
            assert pdf.startswith(b"%PDF") and len(pdf) > 5000
            (art / "compliance-A-en.pdf").write_bytes(pdf)
            page.emulate_media(media="screen")
            axe("report")
            # Chinese report: labels drawn with a CJK font (not boxes)
            page.click(".langs a[hreflang='zh-CN']")
            page.wait_for_load_state()
            assert "合规报告" in page.inner_text("h1") and "已批准固件" in page.inner_text("main")
            csv = page.request.get(base + "/ui/reports/coverage.csv?building=A")
            assert csv.text().startswith("\ufeff楼宇,房间,检查项")
            cdp = ctx.new_cdp_session(page)
            cdp.send("DOM.enable")
            cdp.send("CSS.enable")
            root = cdp.send("DOM.getDocument")["root"]["nodeId"]
            h1 = cdp.send("DOM.querySelector", {"nodeId": root, "selector": "h1"})["nodeId"]
            fonts = [f["familyName"] for f in cdp.send("CSS.getPlatformFontsForNode", {"nodeId": h1})["fonts"]]
            assert any("CJK" in f or "WenQuanYi" in f for f in fonts), fonts
            page.emulate_media(media="print")
            (art / "compliance-A-zh.pdf").write_bytes(page.pdf(format="A4"))
            page.emulate_media(media="screen")
            shot("8-report-zh")

            # ---- agents page
            page.goto(base + "/ui/agents")
            assert "agent-a" in page.inner_text("main") and "在线" in page.inner_text("main")
            axe("agents")

            # ---- a phone (a guard on patrol): the pages fit 390 px
            phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                        storage_state=ctx.storage_state())
            phone.route("**/*", guard)
            pp = phone.new_page()
            for path in ("/ui/", "/ui/buildings/A", "/ui/devices/a-acc1", "/ui/alerts"):
                pp.goto(base + path)
                w = pp.evaluate("document.documentElement.scrollWidth")
                assert w <= 390, f"{path} is {w}px wide on a 390px phone"
            pp.screenshot(path=str(art / "9-phone-alerts.png"), full_page=True)
            phone.close()

            # ---- keyboard: the skip link is the first stop and lands on <main>
            page.goto(base + "/ui/")
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.className") == "skip"
            page.keyboard.press("Enter")
            assert page.evaluate("location.hash") == "#main"

            # ---- API docs with local assets only
            page.goto(base + "/docs")
            page.wait_for_selector(".swagger-ui .info", timeout=30_000)
            page.goto(base + "/redoc")
            page.wait_for_selector("redoc .api-info, [role=navigation], h1", timeout=30_000)
            shot("10-redoc")
        finally:
            browser.close()
    assert outside == [], f"requests left loopback: {outside}"
    assert not [e for e in errors if "favicon" not in e], errors
