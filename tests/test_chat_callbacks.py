"""Two-way acknowledgement from WeCom and DingTalk (issue 11): the alert goes out as a WeCom
application template_card / DingTalk actionCard with an acknowledge action; the signed callback
(POST /api/v1/callbacks/wecom, /dingtalk) acknowledges the alert as the mapped user - in the alert's
history and the audit log. Valid, forged (401) and replayed (409, or 401 for a stale timestamp)
callbacks for both; the WeCom crypto against the published sample."""
from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient

from campus_sense import wire
from collector import config as cfgmod
from collector.alerting import Alerting
from collector.api import create_app
from collector.notify.channels import dingtalk as dt
from collector.notify.channels import wecom_crypto as wc
from collector.store.sqlite import SQLiteStore
from tests.collector_util import wait_until
from tests.peers import free_port
from tests.test_alerts_support import RULES

CORP, TOKEN, AES = "wwcampus01", "cbToken1", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
DING_SECRET = "ding-app-secret-123"


def test_wecom_crypto_published_sample():
    # the sample in WeCom's 加解密 documentation (VerifyURL)
    echostr = "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ=="
    assert wc.signature("QDG6eK", "1409659589", "263014780", echostr) == "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3"
    assert wc.decrypt(AES, echostr) == (b"1616140317555161061", "wx5823bf96d3bd56c7")
    enc = wc.encrypt(AES, "确认".encode(), CORP)
    assert wc.decrypt(AES, enc) == ("确认".encode(), CORP)
    # DingTalk robot callback: base64(HmacSHA256(app_secret, timestamp + "\n" + app_secret)), computed here
    # independently of the module
    import base64
    import hashlib
    import hmac
    exp = base64.b64encode(hmac.new(b"testappSecret", b"1546084445901\ntestappSecret", hashlib.sha256).digest())
    assert dt.callback_sign("testappSecret", "1546084445901") == exp.decode()
    assert dt.check_callback_sign("testappSecret", "1546084445901", exp.decode())
    assert not dt.check_callback_sign("testappSecret", "1546084445902", exp.decode())


class FakeWeCom:
    """gettoken + message/send of the WeCom server API (enough to see what the channel sends)."""

    def __init__(self):
        self.sent: list[dict] = []
        srv = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _reply(self, body):
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                if q.get("corpid") == [CORP] and q.get("corpsecret") == ["corp-secret"]:
                    return self._reply({"errcode": 0, "access_token": "AT1", "expires_in": 7200})
                self._reply({"errcode": 40001, "errmsg": "invalid credential"})

            def do_POST(self):
                q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if q.get("access_token") != ["AT1"]:
                    return self._reply({"errcode": 40014, "errmsg": "invalid access_token"})
                srv.sent.append(body)
                self._reply({"errcode": 0, "errmsg": "ok"})

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def env(tmp_path):
    wecom = FakeWeCom()
    d = tmp_path
    (d / "rules.yaml").write_text(RULES)
    (d / "notify.yaml").write_text(f"""
channels:
  guards-wecom:
    type: wecom_app
    base_url: http://127.0.0.1:{wecom.port}
    corp_id: {CORP}
    agent_id: 1000002
    corp_secret: corp-secret
    to_user: [zhangsan]
    callback: {{token: {TOKEN}, encoding_aes_key: {AES}, users: {{zhangsan: guard-zhang}}}}
  noc-ding:
    type: dingtalk
    base_url: http://127.0.0.1:{free_port()}
    access_token: at
    message: action_card
    retry: {{max_attempts: 1}}
    callback: {{app_secret: {DING_SECRET}, users: {{staff-li: guard-li}}}}
route: {{channels: [guards-wecom, noc-ding], group_wait: 0s, group_interval: 0s}}
outbox: {{evaluation_interval: 0.1s}}
""")
    (d / "collector.pass").write_text("unused\n")
    (d / "collector.yaml").write_text(
        "mqtt: {host: 127.0.0.1, port: 1, username: collector, password_file: collector.pass}\n"
        f"store: {{path: {d / 'c.db'}}}\nrules: {{paths: [rules.yaml], db: alerts.db, tick_s: 0.1}}\n"
        "notify: {config: notify.yaml}\n")
    cfg = cfgmod.load(d / "collector.yaml")
    store = SQLiteStore(str(d / "c.db"))
    app = create_app(store, None, 180)
    al = Alerting(cfg, store, None)
    al.mount(app)
    al.start()
    client = TestClient(app, raise_server_exceptions=False)
    t = int(time.time() * 1000)
    payload = wire.encode_durable("events", "ag", "e1", 1, 0, [wire.encode_item(i) for i in (
        wire.event("door-1", "door_forced", t, "critical"),
        wire.event("sw1", "link_down", t, "warning", tags={"ifName": "Gi0/1"}))])
    m = wire.decode(wire.topic("north", "A", "ag", "events"), payload)
    store.apply([m], [])
    al.on_message(m)
    ids = wait_until(lambda: (lambda g: g if len(g) == 2 else None)(
        {a.rule: a.id for a in al.engine.alerts({"state": "active"})}), 10, "alerts")
    yield al, client, ids, wecom
    client.close()
    al.stop()
    store.close()
    wecom.stop()


def _wecom_post(client, inner: str, nonce: str = "n1", ts: int | None = None, token: str = TOKEN,
                aes: str = AES, corp: str = CORP):
    ts = int(time.time()) if ts is None else ts
    enc = wc.encrypt(aes, inner.encode(), corp)
    sig = wc.signature(token, str(ts), nonce, enc)
    body = (f"<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><AgentID><![CDATA[1000002]]></AgentID>"
            f"<Encrypt><![CDATA[{enc}]]></Encrypt></xml>")
    return client.post("/api/v1/callbacks/wecom", content=body.encode(),
                       params={"msg_signature": sig, "timestamp": str(ts), "nonce": nonce})


def _card_click(user: str, key: str) -> str:
    return (f"<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[{user}]]></FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            "<Event><![CDATA[template_card_event]]></Event>"
            f"<EventKey><![CDATA[{key}]]></EventKey><TaskId><![CDATA[cs1]]></TaskId>"
            "<CardType><![CDATA[button_interaction]]></CardType><AgentID>1000002</AgentID></xml>")


def test_wecom_card_button_acknowledges_valid_forged_replayed(env):
    al, client, ids, wecom = env
    door = ids["door-forced"]
    # the alert went out as a template_card with an acknowledge button carrying ack:<id>
    card = wait_until(lambda: next((b for b in wecom.sent if b.get("msgtype") == "template_card"), None), 10, "card")
    assert card["agentid"] == 1000002 and card["touser"] == "zhangsan"
    keys = {b["key"] for b in card["template_card"]["button_list"]}
    assert f"ack:{door}" in keys and card["template_card"]["card_type"] == "button_interaction"

    # URL verification (GET with echostr)
    ts, enc = str(int(time.time())), wc.encrypt(AES, b"echo-42", CORP)
    r = client.get("/api/v1/callbacks/wecom", params={"msg_signature": wc.signature(TOKEN, ts, "v1", enc),
                                                       "timestamp": ts, "nonce": "v1", "echostr": enc})
    assert r.status_code == 200 and r.text == "echo-42"

    # forged: wrong token (signature), another corp's message, wrong AES key
    assert _wecom_post(client, _card_click("zhangsan", f"ack:{door}"), "f1", token="nope").status_code == 401
    assert _wecom_post(client, _card_click("zhangsan", f"ack:{door}"), "f2", corp="wwother").status_code == 401
    other_key = "A" * 42 + "E"
    assert _wecom_post(client, _card_click("zhangsan", f"ack:{door}"), "f3", aes=other_key).status_code == 401
    # stale: timestamp 10 minutes old, correctly signed
    assert _wecom_post(client, _card_click("zhangsan", f"ack:{door}"), "f4",
                       ts=int(time.time()) - 600).status_code == 401
    # an unmapped WeCom user may not acknowledge
    assert _wecom_post(client, _card_click("mallory", f"ack:{door}"), "f5").status_code == 403
    assert al.engine.alert(door).acked_by is None

    # valid: acknowledged as the mapped user, in the history and the audit log
    t0 = int(time.time() * 1000)
    r = _wecom_post(client, _card_click("zhangsan", f"ack:{door}"), "good-1")
    assert r.status_code == 200 and r.json()["ok"] is True, r.text
    a = al.engine.alert(door)
    assert a.acked_by == "guard-zhang (wecom:zhangsan)" and a.acked_ms >= t0
    h = al.engine.history(door)[-1]
    assert h.action == "acked" and h.actor == "guard-zhang (wecom:zhangsan)" and h.t_ms >= t0
    e = al.audit.entries(action="alert.ack")[-1]
    assert e["via"] == "wecom" and e["actor"] == "guard-zhang" and e["target"] == f"alert:{door}"
    assert e["before"]["acked_by"] is None and e["after"]["acked_by"] == "guard-zhang (wecom:zhangsan)"
    assert e["detail"] == {"chat_user": "zhangsan", "channel": "guards-wecom"}

    # replayed: the very same request (same nonce) -> 409, nothing new in the audit log
    n = len(al.audit.entries())
    assert _wecom_post(client, _card_click("zhangsan", f"ack:{door}"), "good-1").status_code == 409
    assert len(al.audit.entries()) == n
    # a text message "ack <id>" in the app chat works too
    link = ids["uplink-down"]
    text = (f"<xml><ToUserName>{CORP}</ToUserName><FromUserName>zhangsan</FromUserName><MsgType>text</MsgType>"
            f"<Content>ack {link}</Content><MsgId>1</MsgId><AgentID>1000002</AgentID></xml>")
    assert _wecom_post(client, text, "good-2").json()["ok"] is True
    assert al.engine.alert(link).acked_by == "guard-zhang (wecom:zhangsan)"


def _ding_post(client, content: str, msg_id: str, staff: str = "staff-li", ts: int | None = None,
               secret: str = DING_SECRET, sign: str | None = None):
    ts = int(time.time() * 1000) if ts is None else ts
    body = {"msgtype": "text", "text": {"content": content}, "msgId": msg_id, "createAt": ts,
            "conversationType": "2", "conversationId": "cid1", "senderId": "$:LWCP_v1:$x",
            "senderNick": "Li", "senderStaffId": staff, "robotCode": "dingrobot", "chatbotUserId": "$:bot"}
    return client.post("/api/v1/callbacks/dingtalk", content=json.dumps(body).encode(),
                       headers={"timestamp": str(ts), "sign": sign or dt.callback_sign(secret, str(ts)),
                                "Content-Type": "application/json"})


def test_dingtalk_action_card_acknowledges_valid_forged_replayed(env):
    al, client, ids, _ = env
    link = ids["uplink-down"]
    # the actionCard button sends "ack <id>" to the robot
    payload = wait_until(lambda: next((d["payload"] for d in al.notifier.deliveries(payload=True)
                                       if d["channel"] == "noc-ding"), None), 10, "dingtalk delivery")
    from collector.notify.channels import CHANNELS
    body = CHANNELS["dingtalk"].Sender("noc-ding", al.notifier.config.channels["noc-ding"]).body(payload)
    assert body["msgtype"] == "actionCard"
    urls = [b["actionURL"] for b in body["actionCard"]["btns"]]
    assert f"dtmd://dingtalkclient/sendMessage?content=ack%20{link}" in urls

    # forged: wrong secret / garbage sign; stale timestamp
    assert _ding_post(client, f"ack {link}", "m-f1", secret="guess").status_code == 401
    assert _ding_post(client, f"ack {link}", "m-f2", sign="AAAA").status_code == 401
    assert _ding_post(client, f"ack {link}", "m-f3", ts=int(time.time() * 1000) - 6 * 60_000).status_code == 401
    assert _ding_post(client, f"ack {link}", "m-f4", staff="eve").status_code == 403
    assert al.engine.alert(link).acked_by is None

    ts = int(time.time() * 1000)
    r = _ding_post(client, f"ack {link}", "m-ok", ts=ts)
    assert r.status_code == 200 and r.json()["ok"] is True, r.text
    assert f"#{link} acknowledged by guard-li" in r.json()["text"]["content"]
    a = al.engine.alert(link)
    assert a.acked_by == "guard-li (dingtalk:staff-li)" and a.acked_ms >= ts - 1000
    assert al.engine.history(link)[-1].actor == "guard-li (dingtalk:staff-li)"
    e = al.audit.entries(action="alert.ack")[-1]
    assert e["via"] == "dingtalk" and e["actor"] == "guard-li" and e["after"]["acked_by"].startswith("guard-li")

    # replayed: same message again; same timestamp+sign with another msgId; same msgId, new signature
    assert _ding_post(client, f"ack {link}", "m-ok", ts=ts).status_code == 409
    assert _ding_post(client, f"ack {ids['door-forced']}", "m-new", ts=ts).status_code == 409
    assert _ding_post(client, f"ack {link}", "m-ok").status_code == 409
    assert al.engine.alert(ids["door-forced"]).acked_by is None
