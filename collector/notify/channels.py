"""One small sender class per channel type.

``await sender.send(notification, delivery_id)`` returns when the peer accepted the
message and raises ``DeliveryError`` otherwise (``permanent=True`` when retrying cannot
help: HTTP 4xx, invalid robot key/token, signature mismatch, SMTP 5xx).
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import smtplib
import socket
import ssl
import threading
import time
import urllib.parse
import uuid
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import httpx
import orjson

from . import render
from .config import (DingTalkChannel, MQTTChannel, SecretError, SMTPChannel, WebhookChannel,
                     WeComChannel)
from .outbox import DeliveryError

USER_AGENT = "campus-sense-notify/1"


def _secret(ch, name: str) -> str | None:
    try:
        return ch.secret(name)
    except SecretError as e:
        raise DeliveryError(str(e)) from None


class _HTTPSender:
    def __init__(self, name: str, cfg):
        self.name = name
        self.cfg = cfg
        verify: bool | str | ssl.SSLContext = True
        if getattr(cfg, "ca_file", None):
            verify = ssl.create_default_context(cafile=cfg.ca_file)
        self.client = httpx.AsyncClient(timeout=cfg.timeout, verify=verify,
                                        headers={"User-Agent": USER_AGENT}, follow_redirects=False)

    async def _post(self, url: str, body: dict, headers: dict | None = None) -> httpx.Response:
        try:
            r = await self.client.post(url, content=orjson.dumps(body),
                                       headers={"Content-Type": "application/json", **(headers or {})})
        except httpx.TimeoutException as e:
            raise DeliveryError(f"POST {_where(url)}: timeout ({type(e).__name__})") from None
        except httpx.HTTPError as e:
            raise DeliveryError(f"POST {_where(url)}: {_redact(str(e)) or type(e).__name__}") from None
        if r.status_code >= 300:
            permanent = 400 <= r.status_code < 500 and r.status_code not in (408, 425, 429)
            raise DeliveryError(f"POST {_where(url)}: HTTP {r.status_code}: {r.text[:200]}", permanent=permanent)
        return r

    async def close(self) -> None:
        await self.client.aclose()


def _where(url: str) -> str:
    u = urllib.parse.urlsplit(url)
    return f"{u.scheme}://{u.netloc}{u.path}"


def _redact(s: str) -> str:
    """Never put robot keys / tokens / signatures into error messages."""
    return re.sub(r"((?:key|access_token|sign|token)=)[^&\s'\"]+", r"\1***", s)


class WebhookSender(_HTTPSender):
    """POST the notification JSON (see README: payload) to ``url``."""
    cfg: WebhookChannel

    async def send(self, n: dict, delivery_id: int) -> None:
        headers = dict(self.cfg.headers)
        headers["X-Campus-Sense-Delivery"] = str(delivery_id)
        tok = _secret(self.cfg, "bearer_token")
        if tok:
            headers["Authorization"] = f"Bearer {tok}"
        await self._post(self.cfg.url, dict(n, delivery_id=delivery_id), headers)


# errcodes that are worth retrying; any other non-zero errcode is permanent
_ROBOT_RETRY = {-1, 45009, 45033, 130101, 410100}


def _check_errcode(r: httpx.Response, what: str) -> None:
    try:
        j = r.json()
    except ValueError:
        raise DeliveryError(f"{what}: reply is not JSON: {r.text[:200]!r}") from None
    code = j.get("errcode") if isinstance(j, dict) else None
    if code is None:
        raise DeliveryError(f"{what}: reply has no errcode: {r.text[:200]!r}")
    if code != 0:
        raise DeliveryError(f"{what} errcode {code}: {j.get('errmsg', '')}",
                            permanent=code not in _ROBOT_RETRY)


class WeComSender(_HTTPSender):
    """WeCom group robot, markdown message."""
    cfg: WeComChannel

    def body(self, n: dict) -> dict:
        return {"msgtype": "markdown",
                "markdown": {"content": render.wecom_markdown(n, self.cfg.mention_users, self.cfg.title_prefix)}}

    async def send(self, n: dict, delivery_id: int) -> None:
        key = _secret(self.cfg, "key")
        url = self.cfg.base_url.rstrip("/") + "/cgi-bin/webhook/send?" + urllib.parse.urlencode({"key": key})
        r = await self._post(url, self.body(n))
        _check_errcode(r, "wecom")


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk robot signature: base64(HMAC-SHA256(secret, f"{timestamp}\\n{secret}")), URL-encoded."""
    string_to_sign = f"{timestamp_ms}\n{secret}".encode()
    digest = hmac.new(secret.encode(), string_to_sign, hashlib.sha256).digest()
    return urllib.parse.quote_plus(base64.b64encode(digest).decode())


class DingTalkSender(_HTTPSender):
    """DingTalk group robot, markdown message, signed when a secret is configured."""
    cfg: DingTalkChannel

    def body(self, n: dict) -> dict:
        c = self.cfg
        title, text = render.dingtalk_markdown(n, c.at_mobiles, c.at_user_ids, c.at_all, c.title_prefix)
        return {"msgtype": "markdown", "markdown": {"title": title, "text": text},
                "at": {"atMobiles": list(c.at_mobiles), "atUserIds": list(c.at_user_ids), "isAtAll": c.at_all}}

    def url(self, now: float | None = None) -> str:
        token = _secret(self.cfg, "access_token")
        url = self.cfg.base_url.rstrip("/") + "/robot/send?" + urllib.parse.urlencode({"access_token": token})
        secret = _secret(self.cfg, "secret") if self.cfg.has_secret("secret") else None
        if secret:
            ts = int((time.time() if now is None else now) * 1000)
            url += f"&timestamp={ts}&sign={dingtalk_sign(secret, ts)}"
        return url

    async def send(self, n: dict, delivery_id: int) -> None:
        r = await self._post(self.url(), self.body(n))
        _check_errcode(r, "dingtalk")


class SMTPSender:
    """E-mail via smtplib in a worker thread (starttls / ssl / none, optional AUTH)."""

    def __init__(self, name: str, cfg: SMTPChannel):
        self.name = name
        self.cfg = cfg

    def message(self, n: dict, delivery_id: int) -> EmailMessage:
        c = self.cfg
        m = EmailMessage()
        m["Subject"] = f"{c.subject_prefix} {n.get('title') or render.title(n)}".strip()
        m["From"] = c.from_
        m["To"] = ", ".join(c.to)
        m["Date"] = formatdate(localtime=False)
        m["Message-ID"] = make_msgid(domain=c.from_.rpartition("@")[2] or None)
        m["X-Campus-Sense-Delivery"] = str(delivery_id)
        m.set_content(render.text(n))
        return m

    def _context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.cfg.ca_file) if self.cfg.ca_file else ssl.create_default_context()
        if self.cfg.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _send_sync(self, msg: EmailMessage, password: str | None) -> None:
        c = self.cfg
        try:
            if c.security == "ssl":
                s = smtplib.SMTP_SSL(c.host, c.port, local_hostname=c.hello, timeout=c.timeout,
                                     context=self._context())
            else:
                s = smtplib.SMTP(c.host, c.port, local_hostname=c.hello, timeout=c.timeout)
            try:
                s.ehlo()
                if c.security == "starttls":
                    if not s.has_extn("starttls"):
                        raise DeliveryError(f"smtp {c.host}:{c.port} does not offer STARTTLS")
                    s.starttls(context=self._context())
                    s.ehlo()
                if c.username:
                    s.login(c.username, password or "")
                s.send_message(msg)
            finally:
                try:
                    s.quit()
                except (smtplib.SMTPException, OSError):
                    s.close()
        except DeliveryError:
            raise
        except smtplib.SMTPAuthenticationError as e:
            raise DeliveryError(f"smtp auth failed: {e.smtp_code} {_b(e.smtp_error)}", permanent=True) from None
        except smtplib.SMTPRecipientsRefused as e:
            raise DeliveryError(f"smtp recipients refused: {', '.join(e.recipients)}",
                                permanent=all(v[0] >= 500 for v in e.recipients.values())) from None
        except smtplib.SMTPResponseException as e:
            raise DeliveryError(f"smtp {e.smtp_code} {_b(e.smtp_error)}", permanent=e.smtp_code >= 500) from None
        except (smtplib.SMTPException, OSError, ssl.SSLError) as e:
            raise DeliveryError(f"smtp {c.host}:{c.port}: {type(e).__name__}: {e}") from None

    async def send(self, n: dict, delivery_id: int) -> None:
        pw = _secret(self.cfg, "password") if self.cfg.username else None
        await asyncio.to_thread(self._send_sync, self.message(n, delivery_id), pw)

    async def close(self) -> None:
        pass


def _b(x) -> str:
    return x.decode(errors="replace") if isinstance(x, bytes) else str(x)


_TOPIC_SAFE = re.compile(r"[^A-Za-z0-9_.:\-]")


def mqtt_topic(template: str, labels: dict[str, str]) -> str:
    """Fill ``{label}`` placeholders from the group's common labels; values are made topic-safe."""
    def sub(m: re.Match) -> str:
        v = labels.get(m.group(1), "") or "unknown"
        return _TOPIC_SAFE.sub("_", v)
    return re.sub(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", sub, template)


class MQTTSender:
    """Publish the notification JSON with QoS 1 (or 2); one short connection per message."""

    def __init__(self, name: str, cfg: MQTTChannel):
        self.name = name
        self.cfg = cfg

    def _publish_sync(self, topic: str, payload: bytes, password: str) -> None:
        import paho.mqtt.client as mqtt

        c = self.cfg
        cid = c.client_id or f"campus-notify-{self.name}-{uuid.uuid4().hex[:8]}"
        cl = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv311,
                         clean_session=True)
        cl.username_pw_set(c.username, password)
        if c.tls:
            cl.tls_set(ca_certs=c.ca_file)
        connected = threading.Event()
        result: dict = {}

        def on_connect(client, userdata, flags, reason_code, properties):
            result["rc"] = reason_code
            connected.set()

        cl.on_connect = on_connect
        deadline = time.monotonic() + c.timeout
        try:
            cl.connect(c.host, c.port, keepalive=max(5, int(c.timeout) + 5))
        except (OSError, socket.error) as e:
            raise DeliveryError(f"mqtt {c.host}:{c.port}: {e}") from None
        cl.loop_start()
        try:
            if not connected.wait(max(0.1, deadline - time.monotonic())):
                raise DeliveryError(f"mqtt {c.host}:{c.port}: no CONNACK within {c.timeout:g}s")
            rc = result["rc"]
            if rc.is_failure:
                raise DeliveryError(f"mqtt {c.host}:{c.port}: connection refused: {rc}")
            info = cl.publish(topic, payload, qos=c.qos, retain=c.retain)
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            if not info.is_published():
                raise DeliveryError(f"mqtt {c.host}:{c.port}: publish not acknowledged within {c.timeout:g}s")
        except RuntimeError as e:  # paho raises when the connection dropped while waiting
            raise DeliveryError(f"mqtt {c.host}:{c.port}: {e}") from None
        finally:
            try:
                cl.disconnect()
            finally:
                cl.loop_stop()

    async def send(self, n: dict, delivery_id: int) -> None:
        pw = _secret(self.cfg, "password")
        topic = mqtt_topic(self.cfg.topic, n.get("common_labels") or {})
        payload = orjson.dumps(dict(n, delivery_id=delivery_id))
        await asyncio.to_thread(self._publish_sync, topic, payload, pw)

    async def close(self) -> None:
        pass


SENDERS = {"webhook": WebhookSender, "wecom": WeComSender, "dingtalk": DingTalkSender,
           "smtp": SMTPSender, "mqtt": MQTTSender}


def make_sender(name: str, cfg):
    return SENDERS[cfg.type](name, cfg)
