"""Every channel against a real local peer: webhook / WeCom / DingTalk HTTP endpoints,
aiosmtpd, Mosquitto."""
from __future__ import annotations

import email
import json
import secrets
import threading
import urllib.parse
from email import policy

import paho.mqtt.client as mqtt
import pytest

from collector.notify import Notifier
from collector.notify.channels import dingtalk_sign
from collector.notify.config import from_dict
from tests.test_notify_support import RobotServer, SMTPPeer, self_signed_cert, wait_until, alert_change

T0 = 1_795_000_000.0


def _change(aid="a1", state="firing", severity="critical", building="A", rule="cpu_high", **kw):
    return alert_change(aid, rule, severity, state,
                        labels={"site": "north", "building": building, "room": f"{building}-101",
                               "device": "core-sw1", "type": "switch"},
                       summary=kw.pop("summary", "CPU above 90%"), description="5 min average",
                       started_at=T0 - 600, value=97.5, **kw)


@pytest.fixture
def secrets_env(monkeypatch, tmp_path):
    s = {"wecom_key": secrets.token_hex(16), "dt_token": secrets.token_hex(16),
         "dt_secret": "SEC" + secrets.token_hex(24)}
    (tmp_path / "wecom.key").write_text(s["wecom_key"] + "\n")
    monkeypatch.setenv("TEST_DT_TOKEN", s["dt_token"])
    (tmp_path / "dt.secret").write_text(s["dt_secret"])
    return s


@pytest.fixture
def robots(secrets_env):
    r = RobotServer(secrets_env["wecom_key"], secrets_env["dt_token"], secrets_env["dt_secret"]).start()
    yield r
    r.stop()


def _cfg(tmp_path, channels: dict, **route):
    return from_dict({"channels": channels,
                      "route": {"channels": list(channels), "group_wait": 0, **route},
                      "outbox": {"retry": {"max_attempts": 3, "initial_backoff": 0.05, "max_backoff": 0.2}}},
                     base_dir=tmp_path)


async def test_webhook_wecom_dingtalk_delivered_and_verified(tmp_path, robots, secrets_env):
    cfg = _cfg(tmp_path, {
        "hook": {"type": "webhook", "url": robots.url("/hook/ops"), "headers": {"X-Team": "noc"}},
        "wecom": {"type": "wecom", "base_url": robots.url(), "key_file": "wecom.key",
                  "mention_users": ["zhangsan"]},
        "ding": {"type": "dingtalk", "base_url": robots.url(), "access_token_env": "TEST_DT_TOKEN",
                 "secret_file": "dt.secret", "at_mobiles": ["13800000000"], "title_prefix": "【校园】"},
    })
    n = Notifier(cfg, tmp_path / "n.db", clock=lambda: T0)
    await n.start()
    try:
        n.on_alert_change(_change())
        await wait_until(lambda: all(c["sent"] == 1 for c in n.status()["channels"].values()), what="3 sent")
    finally:
        await n.stop()

    hook = robots.accepted_on("/hook/ops")[0]
    body = hook["body"]
    assert hook["headers"]["X-Team"] == "noc"
    assert hook["headers"]["X-Campus-Sense-Delivery"] == str(body["delivery_id"])
    assert body["status"] == "firing" and body["severity"] == "critical"
    a = body["alerts"][0]
    assert (a["id"], a["rule"], a["status"], a["value"]) == ("a1", "cpu_high", "firing", 97.5)
    assert a["labels"]["building"] == "A" and a["summary"] == "CPU above 90%"
    assert a["started_at"].endswith("Z")
    assert body["common_labels"]["room"] == "A-101"

    wc = robots.accepted_on("/cgi-bin/webhook/send")[0]
    assert wc["body"]["msgtype"] == "markdown"
    content = wc["body"]["markdown"]["content"]
    assert "FIRING:1" in content and "cpu_high" in content and "CPU above 90%" in content
    assert "<@zhangsan>" in content and 'color="warning"' in content

    dt = robots.accepted_on("/robot/send")[0]
    md = dt["body"]["markdown"]
    assert md["title"].startswith("【校园】 [FIRING:1]") and "cpu_high" in md["text"]
    assert dt["body"]["at"] == {"atMobiles": ["13800000000"], "atUserIds": [], "isAtAll": False}
    assert "@13800000000" in md["text"]
    # signature parameters present, signed with the configured secret
    q = dt["query"]
    assert q["timestamp"][0].isdigit() and q["sign"][0]
    n.close()


def test_dingtalk_sign_matches_published_algorithm():
    # https://open.dingtalk.com/document/robots/customize-robot-security-settings (Python sample)
    import base64, hashlib, hmac
    secret, ts = "SECabc", 1_700_000_000_000
    mac = hmac.new(secret.encode("utf-8"), f"{ts}\n{secret}".encode("utf-8"), digestmod=hashlib.sha256).digest()
    assert dingtalk_sign(secret, ts) == urllib.parse.quote_plus(base64.b64encode(mac))


async def test_robot_error_replies_are_failures(tmp_path, robots, monkeypatch):
    """errcode != 0 in a 200 reply is a failed delivery; bad sign (310000) / bad key (93000)
    are permanent: failed at once, with the robot's message visible."""
    (tmp_path / "wrong.secret").write_text("SECwrong")
    (tmp_path / "wrong.key").write_text("nope")
    cfg = _cfg(tmp_path, {
        "ding": {"type": "dingtalk", "base_url": robots.url(), "access_token_env": "TEST_DT_TOKEN",
                 "secret_file": "wrong.secret"},
        "wecom": {"type": "wecom", "base_url": robots.url(), "key_file": "wrong.key"},
    })
    n = Notifier(cfg, tmp_path / "n.db", clock=lambda: T0)
    await n.start()
    try:
        n.on_alert_change(_change())
        await wait_until(lambda: len(n.deliveries(state="failed")) == 2, what="2 failed")
    finally:
        await n.stop()
    failed = {d["channel"]: d for d in n.deliveries(state="failed")}
    assert "errcode 310000" in failed["ding"]["last_error"] and "sign not match" in failed["ding"]["last_error"]
    assert "errcode 93000" in failed["wecom"]["last_error"]
    assert failed["ding"]["attempts"] == 1 and failed["wecom"]["attempts"] == 1
    assert "permanent" in failed["ding"]["last_error"]
    # secrets never leak into errors
    assert "nope" not in json.dumps(n.status())
    assert robots.accepted == []
    n.close()


async def test_robot_rate_limit_is_retried(tmp_path, robots):
    robots.wecom_errors = [45009, 45009]            # "api freq out of limit" twice
    cfg = _cfg(tmp_path, {"wecom": {"type": "wecom", "base_url": robots.url(), "key_file": "wecom.key"}})
    n = Notifier(cfg, tmp_path / "n.db", clock=lambda: T0)
    await n.start()
    try:
        n.on_alert_change(_change())
        await wait_until(lambda: n.deliveries(state="sent") or n.deliveries(state="failed"), what="done")
    finally:
        await n.stop()
    d = n.deliveries()[0]
    assert d["state"] == "sent" and d["attempts"] == 3
    assert len(robots.requests_on("/cgi-bin/webhook/send")) == 3
    n.close()


async def test_smtp_plain_relay_with_auth(tmp_path):
    pw = secrets.token_hex(8)
    (tmp_path / "smtp.pass").write_text(pw)
    smtp = SMTPPeer(users={"notify": pw}).start()
    try:
        cfg = _cfg(tmp_path, {"mail": {
            "type": "smtp", "host": "127.0.0.1", "port": smtp.port, "security": "none",
            "insecure_auth": True, "username": "notify", "password_file": "smtp.pass",
            "from": "campus-sense@example.edu", "to": ["noc@example.edu", "oncall@example.edu"],
            "subject_prefix": "[campus]"}})
        cfg.display_timezone = "Asia/Shanghai"
        n = Notifier(cfg, tmp_path / "n.db", clock=lambda: T0)
        await n.start()
        try:
            n.on_alert_change(_change())
            await wait_until(lambda: smtp.messages, what="mail")
            await wait_until(lambda: n.status()["channels"]["mail"]["sent"] == 1, what="sent state")
        finally:
            await n.stop()
        env = smtp.messages[0]
        assert env.mail_from == "campus-sense@example.edu"
        assert sorted(env.rcpt_tos) == ["noc@example.edu", "oncall@example.edu"]
        msg = email.message_from_bytes(env.content, policy=policy.default)
        assert msg["Subject"].startswith("[campus] [FIRING:1]")
        assert "cpu_high" in msg["Subject"]
        body = msg.get_content()
        assert "[CRITICAL] cpu_high: CPU above 90%" in body
        assert "building: A" in body and "value: 97.5" in body and "alert id: a1" in body
        # started_at = T0 - 600 shown in the display timezone (UTC+8)
        assert "started: 2026-11-18 18:56:40 CST" in body, body
        n.close()
    finally:
        smtp.stop()


async def test_smtp_starttls_and_bad_password(tmp_path):
    cert, key = self_signed_cert(tmp_path)
    pw = secrets.token_hex(8)
    (tmp_path / "good.pass").write_text(pw)
    (tmp_path / "bad.pass").write_text("wrong")
    smtp = SMTPPeer(users={"notify": pw}, tls_cert=(cert, key)).start()
    try:
        base = {"type": "smtp", "host": "127.0.0.1", "port": smtp.port, "security": "starttls",
                "ca_file": str(cert), "username": "notify", "from": "cs@example.edu", "to": "noc@example.edu"}
        cfg = _cfg(tmp_path, {"good": {**base, "password_file": "good.pass"},
                              "bad": {**base, "password_file": "bad.pass"}})
        n = Notifier(cfg, tmp_path / "n.db", clock=lambda: T0)
        await n.start()
        try:
            n.on_alert_change(_change())
            await wait_until(lambda: n.status()["channels"]["good"]["sent"] == 1, what="sent")
            await wait_until(lambda: n.status()["channels"]["bad"]["failed"] == 1, what="failed")
        finally:
            await n.stop()
        assert len(smtp.messages) == 1
        err = n.status()["channels"]["bad"]["last_error"]
        assert "auth failed" in err and "535" in err
        n.close()
    finally:
        smtp.stop()


async def test_smtp_implicit_tls_verifies_certificate(tmp_path):
    cert, key = self_signed_cert(tmp_path)
    pw = secrets.token_hex(8)
    (tmp_path / "smtp.pass").write_text(pw)
    smtp = SMTPPeer(users={"notify": pw}, tls_cert=(cert, key), implicit_tls=True).start()
    try:
        base = {"type": "smtp", "host": "127.0.0.1", "port": smtp.port, "security": "ssl",
                "username": "notify", "password_file": "smtp.pass", "from": "cs@example.edu",
                "to": ["noc@example.edu"], "retry": {"max_attempts": 1}}
        cfg = _cfg(tmp_path, {"trusted": {**base, "ca_file": str(cert)},
                              "untrusted": base})              # system CAs do not know this cert
        n = Notifier(cfg, tmp_path / "n.db", clock=lambda: T0)
        await n.start()
        try:
            n.on_alert_change(_change(state="firing"))
            await wait_until(lambda: n.status()["channels"]["trusted"]["sent"] == 1, what="sent")
            await wait_until(lambda: n.status()["channels"]["untrusted"]["failed"] == 1, what="failed")
        finally:
            await n.stop()
        assert len(smtp.messages) == 1
        assert "CERTIFICATE_VERIFY_FAILED" in n.status()["channels"]["untrusted"]["last_error"]
        n.close()
    finally:
        smtp.stop()


async def test_mqtt_qos1_publish(tmp_path, mosquitto, mqtt_users):
    (tmp_path / "mqtt.pass").write_text(mqtt_users["collector"])
    got: list = []
    ready = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-sub")
    sub.username_pw_set("agent-a", mqtt_users["agent-a"])
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("campus/alerts/#", qos=1)
    sub.on_subscribe = lambda *a: ready.set()
    sub.on_message = lambda c, u, m: got.append(m)
    sub.connect("127.0.0.1", mosquitto.port)
    sub.loop_start()
    try:
        assert ready.wait(10)
        cfg = _cfg(tmp_path, {"bus": {"type": "mqtt", "host": "127.0.0.1", "port": mosquitto.port,
                                      "username": "collector", "password_file": "mqtt.pass",
                                      "topic": "campus/alerts/{building}/{severity}"}},
                   group_by=["building", "severity"])
        n = Notifier(cfg, tmp_path / "n.db", clock=lambda: T0)
        await n.start()
        try:
            n.on_alert_change(_change(building="B/2#"))   # unsafe topic characters in a label
            await wait_until(lambda: got, what="mqtt message")
            await wait_until(lambda: n.status()["channels"]["bus"]["sent"] == 1, what="sent")
        finally:
            await n.stop()
        m = got[0]
        assert m.topic == "campus/alerts/B_2_/critical" and m.qos == 1
        p = json.loads(m.payload)
        assert p["alerts"][0]["id"] == "a1" and p["status"] == "firing"
        n.close()
    finally:
        sub.loop_stop()
        sub.disconnect()


async def test_mqtt_bad_password_is_visible(tmp_path, mosquitto):
    (tmp_path / "mqtt.pass").write_text("not-the-password")
    cfg = from_dict({"channels": {"bus": {"type": "mqtt", "host": "127.0.0.1", "port": mosquitto.port,
                                          "username": "collector", "password_file": "mqtt.pass",
                                          "topic": "campus/alerts", "timeout": 5,
                                          "retry": {"max_attempts": 2, "initial_backoff": 0.05}}},
                     "route": {"channels": ["bus"], "group_wait": 0}}, base_dir=tmp_path)
    n = Notifier(cfg, tmp_path / "n.db", clock=lambda: T0)
    await n.start()
    try:
        n.on_alert_change(_change())
        await wait_until(lambda: n.deliveries(state="failed"), what="failed")
    finally:
        await n.stop()
    d = n.deliveries(state="failed")[0]
    assert "connection refused" in d["last_error"] and d["attempts"] == 2
    n.close()


async def test_large_group_fits_robot_limits(tmp_path, robots):
    """300 alerts in one group: WeCom content stays within 4096 bytes (the robot server rejects
    more), DingTalk text is bounded, the webhook gets every alert."""
    cfg = from_dict({
        "channels": {
            "hook": {"type": "webhook", "url": robots.url("/hook/big")},
            "wecom": {"type": "wecom", "base_url": robots.url(), "key_file": "wecom.key"},
            "ding": {"type": "dingtalk", "base_url": robots.url(), "access_token_env": "TEST_DT_TOKEN",
                     "secret_file": "dt.secret"}},
        "route": {"channels": ["hook", "wecom", "ding"], "group_by": ["building"], "group_wait": "30s"}},
        base_dir=tmp_path)
    n = Notifier(cfg, tmp_path / "n.db", clock=lambda: T0)
    for i in range(300):
        n.on_alert_change(_change(aid=f"a{i}", summary=f"温度过高 {i} — 机房空调故障"))
    assert n.deliveries() == []                 # group_wait
    assert n.tick(T0 + 30) == 3
    await n.start()
    try:
        await wait_until(lambda: sum(c["sent"] for c in n.status()["channels"].values()) == 3
                         or n.deliveries(state="failed"), what="delivered")
    finally:
        await n.stop()
    assert n.deliveries(state="failed") == []
    content = robots.accepted_on("/cgi-bin/webhook/send")[0]["body"]["markdown"]["content"]
    assert len(content.encode()) <= 4096 and "more" in content and "温度过高" in content
    assert "FIRING:300" in content
    text = robots.accepted_on("/robot/send")[0]["body"]["markdown"]["text"]
    assert len(text.encode()) <= 20000
    assert len(robots.accepted_on("/hook/big")[0]["body"]["alerts"]) == 300
    n.close()
