"""The security console in a real headless Chromium (Debian's /usr/bin/chromium via playwright):
log in with a security token, an event published through Mosquitto appears without a reload,
Acknowledge / Assign / Silence clicked on the page (assign and silence in real <dialog>s, no
browser prompt()) change the alert (and silences) in the API."""
from __future__ import annotations

import os

import pytest

from campus_sense import wire
from tests.collector_util import wait_until
from tests.test_alerts_support import CollectorProc, now_ms

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
        "--no-first-run", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"{CHROMIUM} is missing (apt-get install chromium) - console browser test skipped")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python package) is not installed")


@pytest.fixture
def coll(tmp_path, mosquitto, mqtt_users):
    c = CollectorProc(tmp_path, mosquitto, mqtt_users, notify=False)
    yield c
    assert c.stop() == 0
    assert "Traceback" not in c.log.read_text()


def test_console_live_alert_and_ack(coll):
    c = coll
    c.birth([{"id": "door-1", "driver": "test", "room": "A-101", "type": "door"},
             {"id": "fridge-1", "driver": "test", "room": "K-1", "type": "fridge"}])
    # one warning before the page opens: loaded by the initial list
    t = now_ms()
    c.metrics(wire.sample("temperature", "fridge-1", t - 30_000, {"value": 4.0}),
              wire.sample("temperature", "fridge-1", t, {"value": 8.0}))
    warm = c.wait_alert("fridge-warm", "fridge-1")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(c.base + "/console")
            # a bad token: clear 401 message, stays on the login form
            page.fill("#token", "cs_wrong")
            page.click("#login button[type=submit]")
            page.wait_for_selector("#error:not([hidden])")
            assert "401" in page.inner_text("#error")
            page.fill("#token", c.tokens["security"])
            page.click("#login button[type=submit]")
            page.wait_for_selector(f"tr[data-alert-id='{warm['id']}']")
            page.wait_for_selector("#live.on")  # SSE stream connected
            assert "security" in page.inner_text("#who") and page.is_hidden("#login")
            # the door is forced: pushed to the page, no reload
            page.evaluate("window.__marker = 1")
            c.events(wire.event("door-1", "door_forced", now_ms(), "critical"))
            row = page.wait_for_selector("tr.sev-critical.pinned", timeout=20_000)
            assert page.evaluate("window.__marker") == 1  # same document
            alert_id = int(row.get_attribute("data-alert-id"))
            assert "door-1" in row.inner_text() and "A / A-101" in row.inner_text()
            # pinned on top, red
            first = page.query_selector("#alerts tbody tr")
            assert first.get_attribute("data-alert-id") == str(alert_id)
            bg = page.eval_on_selector("tr.pinned", "e => getComputedStyle(e).borderLeftColor")
            assert bg == "rgb(198, 40, 40)"
            # a beep was played for the new critical alert (WebAudio; counted on the body)
            wait_until(lambda: int(page.evaluate("document.body.dataset.beeps || 0")) >= 1, 10, "beep")
            # filters
            page.select_option("#f-severity", "warning")
            page.wait_for_selector(f"tr[data-alert-id='{alert_id}']", state="detached")
            page.select_option("#f-severity", "")
            page.wait_for_selector(f"tr[data-alert-id='{alert_id}']")
            # detail panel with history
            page.click(f"tr[data-alert-id='{alert_id}'] .rule")
            page.wait_for_selector("#detail:not([hidden]) .history li")
            assert "firing" in page.inner_text("#detail .history")
            # acknowledge
            page.click(f"tr[data-alert-id='{alert_id}'] button.ack")
            page.wait_for_selector(f"tr[data-alert-id='{alert_id}'] .ackd")
            a = c.get(f"/alerts/{alert_id}", "admin").json()
            assert a["acked"] and a["acked_by"] == "security-user (security)"
            # the fridge detail has a sparkline of the samples that fired it
            page.click(f"tr[data-alert-id='{warm['id']}'] .rule")
            line = page.wait_for_selector("#detail svg.spark polyline", state="attached")
            assert len(line.get_attribute("points").split()) == 2
            # acknowledge from the detail panel with a comment and an expiry
            page.fill("#detail form.ack-form input", "probe checked")
            page.select_option("#detail form.ack-form select", "60")
            t_ack = now_ms()
            page.click("#detail form.ack-form button[type=submit]")
            page.wait_for_selector("#detail .acked-by")
            w = c.get(f"/alerts/{warm['id']}", "admin").json()
            assert w["acked"] and w["ack_comment"] == "probe checked"
            assert t_ack + 55 * 60_000 < w["ack_expires_ms"] < now_ms() + 65 * 60_000
            page.wait_for_selector(f"tr[data-alert-id='{warm['id']}'] .ackd")
            # no browser prompt()/confirm() anywhere: those would fail the test
            page.on("dialog", lambda d: (errors.append(f"browser {d.type}(): {d.message}"), d.dismiss()))
            # assign in a real <dialog>: focus moves into it; Esc cancels (nothing sent, focus back on the button)
            page.click(f"tr[data-alert-id='{alert_id}'] button.assign")
            page.wait_for_selector("#dlg-assign[open]")
            assert page.evaluate("document.activeElement.id") == "dlg-assignee"
            assert "door-1" in page.inner_text("#dlg-assign .dlg-summary")
            page.keyboard.press("Escape")
            page.wait_for_selector("#dlg-assign", state="hidden")
            assert page.evaluate("document.activeElement.className") == "assign"
            assert c.get(f"/alerts/{alert_id}", "admin").json()["assignee"] is None
            # assign -> shown on the row and in the API
            page.click(f"tr[data-alert-id='{alert_id}'] button.assign")
            page.fill("#dlg-assignee", "guard-2")
            page.click("#dlg-assign button[type=submit]")
            page.wait_for_selector(f"tr[data-alert-id='{alert_id}'] .assignee")
            assert "guard-2" in page.inner_text(f"tr[data-alert-id='{alert_id}'] .assignee")
            assert c.get(f"/alerts/{alert_id}", "admin").json()["assignee"] == "guard-2"
            # silence the fridge alert for 30 minutes -> a silence in the API, the alert suppressed,
            # pushed to the page (no reload)
            page.click(f"tr[data-alert-id='{warm['id']}'] button.silence")
            page.wait_for_selector("#dlg-silence[open]")
            assert "fridge-warm" in page.inner_text("#dlg-silence .dlg-summary")
            page.fill("#dlg-minutes", "0")              # refused by the form itself: nothing sent
            page.click("#dlg-silence button[type=submit]")
            assert page.is_visible("#dlg-silence") and not c.get("/silences?active=true", "admin").json()
            page.fill("#dlg-minutes", "30")
            page.click("#dlg-silence button[type=submit]")
            sil = wait_until(lambda: c.get("/silences?active=true", "admin").json(), 10, "silence")
            assert sorted(sil[0]["matchers"]) == ['device="fridge-1"', 'rule="fridge-warm"']
            assert 29 * 60_000 < sil[0]["ends_ms"] - sil[0]["starts_ms"] <= 30 * 60_000
            assert sil[0]["created_by"] == "security-user (security)"
            page.wait_for_selector(f"tr[data-alert-id='{warm['id']}'] .muted-by", timeout=20_000)
            assert page.inner_text(f"tr[data-alert-id='{warm['id']}'] .muted-by") == f"silence:{sil[0]['id']}"
            assert c.get(f"/alerts/{warm['id']}", "admin").json()["suppressed"] == f"silence:{sil[0]['id']}"
            assert page.evaluate("window.__marker") == 1
            assert not errors, errors
        finally:
            browser.close()
