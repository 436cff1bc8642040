"""Local peers for the notify tests: one HTTP server playing a generic webhook, the WeCom
group robot and the DingTalk group robot (verifying keys, tokens and DingTalk signatures,
answering with their published JSON replies), plus an aiosmtpd SMTP server."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.peers import free_port


class RobotServer:
    """POST /hook[/<anything>]          generic webhook (status from ``hook_status``)
    POST /cgi-bin/webhook/send?key=K    WeCom robot
    POST /robot/send?access_token=T&timestamp=..&sign=..   DingTalk robot
    POST /hang                          never answers (slow peer)"""

    def __init__(self, wecom_key: str = "k", dingtalk_token: str = "t", dingtalk_secret: str | None = None,
                 port: int | None = None):
        self.wecom_key = wecom_key
        self.dingtalk_token = dingtalk_token
        self.dingtalk_secret = dingtalk_secret
        self.hook_status = 200
        #: errcode replies the WeCom robot gives before accepting (e.g. [45009] = rate limited once)
        self.wecom_errors: list[int] = []
        self.requests: list[dict] = []      # every request
        self.accepted: list[dict] = []      # requests the "service" accepted
        self.cond = threading.Condition()
        self._release = threading.Event()
        srv = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _reply(self, code: int, body: dict | str):
                data = (json.dumps(body) if isinstance(body, dict) else body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(n)
                u = urllib.parse.urlsplit(self.path)
                q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
                rec = {"path": u.path, "query": q, "raw_query": u.query, "headers": dict(self.headers),
                       "body": json.loads(raw) if raw else None, "at": time.time()}
                with srv.cond:
                    srv.requests.append(rec)
                    srv.cond.notify_all()
                if u.path.startswith("/hang"):
                    srv._release.wait(30)
                    return
                if u.path.startswith("/hook"):
                    code = srv.hook_status
                    if code < 300:
                        srv._accept(rec)
                    return self._reply(code, {"ok": code < 300})
                if u.path == "/cgi-bin/webhook/send":
                    return self._reply(200, srv.wecom(rec))
                if u.path == "/robot/send":
                    return self._reply(200, srv.dingtalk(rec))
                self._reply(404, {"error": "not found"})

        self.port = port or free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _accept(self, rec: dict) -> None:
        with self.cond:
            self.accepted.append(rec)
            self.cond.notify_all()

    # -- WeCom: https://developer.work.weixin.qq.com/document/path/91770
    def wecom(self, rec: dict) -> dict:
        if rec["query"].get("key") != [self.wecom_key]:
            return {"errcode": 93000, "errmsg": "invalid webhook url, hint: [1700000000_1_abc]"}
        if self.wecom_errors:
            code = self.wecom_errors.pop(0)
            return {"errcode": code, "errmsg": "api freq out of limit" if code == 45009 else "error"}
        b = rec["body"] or {}
        if b.get("msgtype") != "markdown" or not isinstance(b.get("markdown", {}).get("content"), str):
            return {"errcode": 40008, "errmsg": "invalid message type"}
        if len(b["markdown"]["content"].encode()) > 4096:
            return {"errcode": 40058, "errmsg": "markdown.content exceed max length 4096"}
        self._accept(rec)
        return {"errcode": 0, "errmsg": "ok"}

    # -- DingTalk: https://open.dingtalk.com/document/robots/customize-robot-security-settings
    def dingtalk(self, rec: dict) -> dict:
        q = rec["query"]
        if q.get("access_token") != [self.dingtalk_token]:
            return {"errcode": 300001, "errmsg": "token is not exist"}
        if self.dingtalk_secret is not None:
            ts = (q.get("timestamp") or [""])[0]
            sign = (q.get("sign") or [""])[0]    # parse_qs already URL-decoded it
            if not ts.isdigit() or abs(int(ts) - time.time() * 1000) > 3600 * 1000:
                return {"errcode": 310000, "errmsg": "invalid timestamp"}
            mac = hmac.new(self.dingtalk_secret.encode(), f"{ts}\n{self.dingtalk_secret}".encode(),
                           hashlib.sha256).digest()
            if not hmac.compare_digest(base64.b64encode(mac).decode(), sign):
                return {"errcode": 310000, "errmsg": "sign not match, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]"}
        b = rec["body"] or {}
        md = b.get("markdown") or {}
        if b.get("msgtype") != "markdown" or not md.get("title") or not md.get("text"):
            return {"errcode": 40035, "errmsg": "缺少参数 markdown"}
        self._accept(rec)
        return {"errcode": 0, "errmsg": "ok"}

    def start(self) -> "RobotServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def accepted_on(self, path: str) -> list[dict]:
        with self.cond:
            return [r for r in self.accepted if r["path"].startswith(path)]

    def requests_on(self, path: str) -> list[dict]:
        with self.cond:
            return [r for r in self.requests if r["path"].startswith(path)]


def closed_port() -> int:
    """A loopback port with nothing listening (connection refused)."""
    return free_port()


class SMTPPeer:
    """aiosmtpd on a free loopback port; optional AUTH and STARTTLS."""

    def __init__(self, users: dict[str, str] | None = None, tls_cert: tuple[Path, Path] | None = None,
                 implicit_tls: bool = False):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        self.messages: list = []
        self.cond = threading.Condition()
        peer = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                with peer.cond:
                    peer.messages.append(envelope)
                    peer.cond.notify_all()
                return "250 Message accepted for delivery"

        def authenticator(server, session, envelope, mechanism, auth_data):
            if isinstance(auth_data, LoginPassword) and users and \
                    users.get(auth_data.login.decode()) == auth_data.password.decode():
                return AuthResult(success=True)
            return AuthResult(success=False, handled=False)

        kw: dict = {}
        if users:
            # aiosmtpd only counts STARTTLS as TLS; an implicit-TLS listener is encrypted anyway
            kw.update(authenticator=authenticator, auth_required=True,
                      auth_require_tls=bool(tls_cert) and not implicit_tls)
        if tls_cert:
            import ssl
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(tls_cert[0]), str(tls_cert[1]))
            if implicit_tls:
                kw.update(ssl_context=ctx)
            else:
                kw.update(tls_context=ctx, require_starttls=True)
        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **kw)

    def start(self) -> "SMTPPeer":
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


def self_signed_cert(d: Path) -> tuple[Path, Path]:
    cert, key = d / "smtp.crt", d / "smtp.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


async def wait_until(pred, timeout: float = 30.0, what: str = "condition"):
    """Poll ``pred`` until truthy (behavioural wait; the timeout only guards against hangs)."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def port_is_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def alert_change(aid, rule, severity, state, labels, summary="", description="", started_at=None, value=None,
                 acked=False, silenced=False, ended_at=None, t=None):
    """The alerting core's AlertChange for one alert (times in epoch seconds), as the engine emits it."""
    from collector.alertcore.model import Alert, AlertChange

    def ms(s):
        return None if s is None else int(round(s * 1000))
    a = Alert(id=aid, fingerprint=f"fp-{aid}", rule=rule, kind="threshold", subject={"id": labels.get("device", "")},
              state=state, severity=severity, labels=dict(labels), summary=summary, value=value,
              started_ms=ms(started_at) or 0, fired_ms=ms(started_at) if state != "pending" else None,
              resolved_ms=ms(ended_at), acked_by="tester" if acked else None,
              suppressed="silence:1" if silenced else None)
    return AlertChange(state, a, ms(t if t is not None else ended_at if ended_at is not None else started_at) or 0,
                       detail={"description": description} if description else {})
