"""The merged alerts page (/ui/alerts, which the old /console now redirects to) in a real headless
Chromium (Debian's /usr/bin/chromium via playwright) on a 390 px phone, against a real collector
fed through Mosquitto: a security guard logs in through the UI, the page goes live (SSE with a
ticket bought by the session), a door forced by the engine appears without a reload pinned on top in
red with a beep and the count in the title, the building filter holds across live updates,
acknowledge in a real <dialog>, a dropped stream reconnects and shows what changed meanwhile, the detail page shows the history (live too) and the sparkline of
the samples that fired an alert, the mute switch is remembered; axe-core (WCAG 2 A/AA, serious and
critical) on the page, the dialog and the detail page; no request leaves loopback."""
from __future__ import annotations

import json
import os
import re
import urllib.parse
from pathlib import Path

import pytest

from campus_sense import wire
from collector.store.users import UserStore
from collector.ui import passwords
from tests.collector_util import Publisher, wait_until
from tests.test_alerts_support import CollectorProc, now_ms

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
        "--no-first-run", "--disable-component-update", "--disable-sync",
        "--autoplay-policy=no-user-gesture-required"]
AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
PW = "guard-password-1"

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"{CHROMIUM} is missing (apt-get install chromium) - alerts browser test skipped")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python package) is not installed")


@pytest.fixture
def coll(tmp_path, mosquitto, mqtt_users):
    c = CollectorProc(tmp_path, mosquitto, mqtt_users, notify=False)
    users = UserStore(str(tmp_path / "c.db"))
    users.user_add("guard", "security", passwords.hash_password(PW), display_name="保安甲")
    users.close()
    # a second agent in building B (the test broker has no ACL)
    c.pub_b = Publisher(mosquitto.port, "agent-a", mqtt_users["agent-a"], agent="agent-b", building="B")
    yield c
    c.pub_b.close()
    assert c.stop() == 0
    assert "Traceback" not in c.log.read_text()


def test_alerts_page_live_on_a_phone(coll):
    c = coll
    c.birth([{"id": "door-1", "driver": "test", "room": "A-101", "type": "door"},
             {"id": "fridge-1", "driver": "test", "room": "K-1", "type": "fridge"}])
    c.pub_b.state("birth", version="test", config_hash="x", drivers=["test"],
                  devices=[{"id": "sw-b", "driver": "test", "room": "B-001", "type": "switch"}])
    # one warning before the page opens: in the first rendering
    t = now_ms()
    c.metrics(wire.sample("temperature", "fridge-1", t - 30_000, {"value": 4.0}),
              wire.sample("temperature", "fridge-1", t, {"value": 8.0}))
    warm = c.wait_alert("fridge-warm", "fridge-1")
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
            ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, locale="zh-CN",
                                      extra_http_headers={"Accept-Language": "zh-CN,zh;q=0.9"})
            ctx.route("**/*", guard)
            ctx.route(c.base + "/__test__/axe.min.js", lambda r: r.fulfill(path=str(AXE), content_type="text/javascript"))
            page = ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("dialog", lambda d: (errors.append(f"browser {d.type}(): {d.message}"), d.dismiss()))

            def axe(name: str):
                page.add_script_tag(url=c.base + "/__test__/axe.min.js")
                res = page.evaluate("axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa']}})")
                bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in res["violations"]
                       if v["impact"] in ("serious", "critical")]
                assert not bad, f"{name}: axe-core violations {json.dumps(bad, ensure_ascii=False)}"

            def fits(name: str):
                w = page.evaluate("document.documentElement.scrollWidth")
                assert w <= 390, f"{name} is {w}px wide on a 390px phone"

            def active_ids() -> list[str]:
                return page.eval_on_selector_all("section[aria-labelledby=h-act] tr[data-alert-id]",
                                                 "rs => rs.map(r => r.dataset.alertId)")

            # ---- the old console bookmark leads to the UI login, then to the alerts page
            page.goto(c.base + "/console")
            assert "/ui/login" in page.url and "next=%2Fui%2Falerts" in page.url
            page.fill("#username", "guard")
            page.fill("#password", PW)
            page.click("form.login button[type=submit]")
            page.wait_for_url(re.compile(r"/ui/alerts$"))
            assert "保安甲" in page.inner_text("#who")
            page.wait_for_selector("#live-status[data-state=on]")          # SSE stream connected
            assert page.inner_text("#live-status") == "实时：告警变化自动更新"
            assert page.get_attribute("#live-status", "aria-live") == "polite"
            assert active_ids() == [str(warm["id"])]
            axe("alerts")
            fits("alerts")
            page.click("h1")                                              # a gesture: sound may play

            # ---- a door forced: pushed to the page (no reload), pinned on top in red, a beep, the title
            page.evaluate("window.__marker = 1")
            c.events(wire.event("door-1", "door_forced", now_ms(), "critical"))
            row = page.wait_for_selector("tr.pinned[data-severity=critical]", timeout=20_000)
            door = row.get_attribute("data-alert-id")
            assert page.evaluate("window.__marker") == 1
            assert "door-1" in row.inner_text() and active_ids()[0] == door
            assert page.eval_on_selector("tr.pinned td", "e => getComputedStyle(e).backgroundColor") == "rgb(255, 235, 233)"
            assert page.eval_on_selector("tr.pinned td", "e => getComputedStyle(e).boxShadow").startswith("rgb(207, 34, 46)")
            wait_until(lambda: int(page.evaluate("document.body.dataset.beeps || 0")) >= 1, 10, "beep")
            assert page.title().startswith("(1) ")
            assert "新的严重告警" in page.inner_text("#flash")
            fits("alerts with a critical alert")

            # ---- filter by building (server side): B only, and it stays so across live updates
            page.select_option("#f-building", "B")
            page.click("form.filter button[type=submit]")
            page.wait_for_url(re.compile(r"building=B"))
            page.wait_for_selector("#live-status[data-state=on]")
            assert active_ids() == []
            page.evaluate("window.__marker = 2")
            c.events(wire.event("door-1", "door_forced", now_ms(), "critical", tags={"door": "back"}))
            c.pub_b.durable("events", 1, [wire.event("sw-b", "link_down", now_ms(), "warning", tags={"ifName": "Gi0/1"})])
            link = c.wait_alert("uplink-down", "sw-b")
            page.wait_for_selector(f"tr[data-alert-id='{link['id']}']", timeout=20_000)
            assert page.evaluate("window.__marker") == 2
            assert active_ids() == [str(link["id"])]                      # building A's alerts stay out
            page.click("form.filter a")                                    # clear the filters
            page.wait_for_url(re.compile(r"/ui/alerts$"))
            assert door in active_ids() and str(link["id"]) in active_ids()

            # ---- acknowledge in a real <dialog>: focus moves in, the row and the API change
            page.click(f"tr[data-alert-id='{door}'] button[data-action=ack]")
            page.wait_for_selector("#dlg-ack[open]")
            assert page.evaluate("document.activeElement.id") == "ack-comment"
            axe("ack dialog")
            page.fill("#ack-comment", "保安已到现场")
            page.click("#dlg-ack button[type=submit]")
            page.wait_for_selector("#flash:text('确认 ✓')")
            assert "已由 guard (security) 确认" in page.inner_text(f"tr[data-alert-id='{door}']")
            a = c.get(f"/alerts/{door}", "admin").json()
            assert a["acked"] and a["acked_by"] == "guard (security)" and a["ack_comment"] == "保安已到现场"
            assert not page.query_selector(f"tr[data-alert-id='{door}'] button[data-action=ack]")

            # ---- a dropped stream: "reconnecting", then live again with what changed meanwhile
            page.evaluate("window.__marker = 4")
            ctx.set_offline(True)
            page.wait_for_selector("#live-status[data-state=reconnecting]", timeout=20_000)
            assert c.post(f"/alerts/{link['id']}/ack", {"comment": "offline"}).status_code == 200
            ctx.set_offline(False)
            page.wait_for_selector("#live-status[data-state=on]", timeout=20_000)
            page.wait_for_selector(f"tr[data-alert-id='{link['id']}']:not(:has(button[data-action=ack]))", timeout=20_000)
            assert page.evaluate("window.__marker") == 4

            # ---- detail page: history (live), from the row's link
            page.click(f"tr[data-alert-id='{door}'] a[href='/ui/alerts/{door}']")
            page.wait_for_url(re.compile(rf"/ui/alerts/{door}$"))
            hist = page.inner_text("table.history")
            assert "触发" in hist and "已确认" in hist and "保安已到现场" in hist
            assert "door_forced" in page.inner_text("#h-evs ~ .table-wrap")
            page.wait_for_selector("#live-status[data-state=on]", state="attached")
            page.evaluate("window.__marker = 3")
            assert c.post(f"/alerts/{door}/comment", {"text": "门已锁好"}).status_code == 200
            page.wait_for_selector("table.history :text('门已锁好')", timeout=20_000)
            assert page.evaluate("window.__marker") == 3
            axe("detail")
            fits("detail")
            # the fridge: a sparkline of the samples that fired it, with the limit
            page.goto(f"{c.base}/ui/alerts/{warm['id']}")
            line = page.wait_for_selector("svg.spark polyline", state="attached")
            assert len(line.get_attribute("points").split()) == 2
            assert "阈值 5" in page.get_attribute("svg.spark", "aria-label")

            # ---- mute: remembered across pages
            page.goto(c.base + "/ui/alerts")
            page.click("#mute")
            assert page.get_attribute("#mute", "aria-pressed") == "true"
            page.reload()
            assert page.get_attribute("#mute", "aria-pressed") == "true"
            assert not [e for e in errors if "ERR_INTERNET_DISCONNECTED" not in e], errors   # offline: expected
        finally:
            browser.close()
    assert outside == [], f"requests left loopback: {outside}"
