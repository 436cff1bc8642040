"""Signed callbacks from WeCom and DingTalk: two-way acknowledgement.

``Callbacks(config, replay)`` checks a callback against the channels of notify.yaml that have a
``callback:`` block and returns what to do (``Ack``) or raises ``CallbackError(status, message)``:

* forged (signature does not verify, or WeCom's decrypted receive id is not the CorpID): 401;
* stale (timestamp more than ``max_age_s``, 5 min, away from now): 401;
* replayed (a WeCom nonce, a DingTalk msgId or timestamp+sign seen before): 409;
* a chat user not in ``callback.users``: 403; malformed body: 400.

WeCom (``wecom_app`` channels): ``msg_signature`` = SHA1 of the sorted token / timestamp / nonce /
Encrypt, body AES-256-CBC with the EncodingAESKey (``channels/wecom_crypto.py``); the decrypted
XML is a ``template_card_event`` (button key ``ack:<id>``) or a text message ``ack <id>``.
DingTalk (``dingtalk`` channels): headers ``timestamp`` (ms) and ``sign`` =
base64(HmacSHA256(app_secret, timestamp + "\\n" + app_secret)); the JSON body is the robot message
(``text.content`` = ``ack <id>``, ``senderStaffId``, ``msgId``).
"""
from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, Callable

import orjson

from campus_sense.secret import SecretError

from .channels import dingtalk, wecom_crypto
from .channels.base import parse_ack

MAX_BODY = 64 * 1024


class CallbackError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Ack:
    source: str        # wecom | dingtalk
    channel: str       # notify.yaml channel name
    chat_user: str     # WeCom userid / DingTalk staffId
    user: str          # mapped campus-sense user
    alert_id: int
    t_ms: int


class Callbacks:
    def __init__(self, config: Any, replay: Any, clock: Callable[[], float] = time.time, max_age_s: float = 300.0):
        self.config = config          # NotifyConfig (read on every call: reloads apply)
        self.replay = replay          # collector.store.callbacks.ReplayStore
        self.clock = clock
        self.max_age_s = max_age_s

    def _channels(self, type_: str) -> list[tuple[str, Any]]:
        return [(n, c) for n, c in self.config.channels.items() if c.type == type_ and c.callback is not None]

    def _fresh(self, ts_s: float, what: str) -> None:
        if abs(self.clock() - ts_s) > self.max_age_s:
            raise CallbackError(401, f"{what}: timestamp outside ±{self.max_age_s:g}s (stale or replayed)")

    @staticmethod
    def _user(cb, chat_user: str, what: str) -> str:
        user = cb.users.get(chat_user)
        if not user:
            raise CallbackError(403, f"{what}: user {chat_user!r} is not in callback.users")
        return user

    # ------------------------------------------------------------------ WeCom
    def _wecom_channel(self, timestamp: str, nonce: str, encrypt: str, msg_signature: str):
        if not self._channels("wecom_app"):
            raise CallbackError(404, "no wecom_app channel with a callback in notify.yaml")
        for name, ch in self._channels("wecom_app"):
            try:
                token = ch.callback.token.reveal()
            except SecretError:
                continue
            if wecom_crypto.check_signature(token, timestamp, nonce, encrypt, msg_signature):
                return name, ch
        raise CallbackError(401, "wecom: msg_signature does not verify")

    def _wecom_open(self, q: dict, encrypt: str) -> tuple[str, Any, bytes]:
        ts, nonce, sig = q.get("timestamp") or "", q.get("nonce") or "", q.get("msg_signature") or ""
        if not (ts and nonce and sig and encrypt):
            raise CallbackError(401, "wecom: msg_signature, timestamp, nonce and Encrypt are required")
        name, ch = self._wecom_channel(ts, nonce, encrypt, sig)
        try:
            self._fresh(float(ts), "wecom")
        except ValueError:
            raise CallbackError(401, "wecom: bad timestamp") from None
        if not self.replay.claim("wecom", [f"nonce:{nonce}"], int(self.clock() * 1000)):
            raise CallbackError(409, "wecom: nonce seen before (replay)")
        try:
            msg, receive_id = wecom_crypto.decrypt(ch.callback.encoding_aes_key.reveal(), encrypt)
        except (wecom_crypto.WeComCryptoError, SecretError) as e:
            raise CallbackError(401, f"wecom: cannot decrypt: {e}") from None
        if receive_id != ch.corp_id:
            raise CallbackError(401, "wecom: message is not for this CorpID")
        return name, ch, msg

    def wecom_verify_url(self, q: dict) -> str:
        """GET URL verification: the decrypted echostr."""
        _, _, msg = self._wecom_open(q, q.get("echostr") or "")
        return msg.decode("utf-8", "replace")

    def wecom(self, q: dict, body: bytes) -> Ack | None:
        """A POSTed message/event; an Ack for an acknowledge action, None for anything else."""
        encrypt = _xml_field(body, "Encrypt")
        name, ch, msg = self._wecom_open(q, encrypt or "")
        inner = _xml(msg)
        get = lambda k: (inner.findtext(k) or "").strip()  # noqa: E731
        if get("MsgType") == "event" and get("Event") == "template_card_event":
            alert_id = parse_ack(get("EventKey"))
        elif get("MsgType") == "text":
            alert_id = parse_ack(get("Content"))
        else:
            alert_id = None
        if alert_id is None:
            return None
        who = get("FromUserName")
        return Ack("wecom", name, who, self._user(ch.callback, who, "wecom"), alert_id, int(self.clock() * 1000))

    # ------------------------------------------------------------------ DingTalk
    def dingtalk(self, headers: dict, body: bytes) -> Ack | None:
        ts, sign = headers.get("timestamp") or "", headers.get("sign") or ""
        chans = self._channels("dingtalk")
        if not chans:
            raise CallbackError(404, "no dingtalk channel with a callback in notify.yaml")
        if not (ts and sign):
            raise CallbackError(401, "dingtalk: timestamp and sign headers are required")
        found = None
        for name, ch in chans:
            try:
                secret = ch.callback.app_secret.reveal()
            except SecretError:
                continue
            if dingtalk.check_callback_sign(secret, ts, sign):
                found = (name, ch)
                break
        if found is None:
            raise CallbackError(401, "dingtalk: sign does not verify")
        name, ch = found
        try:
            self._fresh(int(ts) / 1000.0, "dingtalk")
        except ValueError:
            raise CallbackError(401, "dingtalk: bad timestamp") from None
        if len(body) > MAX_BODY:
            raise CallbackError(400, "dingtalk: body too large")
        try:
            msg = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise CallbackError(400, "dingtalk: body is not JSON") from None
        if not isinstance(msg, dict):
            raise CallbackError(400, "dingtalk: body is not a JSON object")
        keys = [f"sig:{ts}:{sign}"] + ([f"msg:{msg['msgId']}"] if msg.get("msgId") else [])
        if not self.replay.claim("dingtalk", keys, int(self.clock() * 1000)):
            raise CallbackError(409, "dingtalk: message seen before (replay)")
        text = (msg.get("text") or {}).get("content") if isinstance(msg.get("text"), dict) else None
        alert_id = parse_ack(text)
        if alert_id is None:
            return None
        who = str(msg.get("senderStaffId") or msg.get("senderId") or "")
        return Ack("dingtalk", name, who, self._user(ch.callback, who, "dingtalk"), alert_id,
                   int(self.clock() * 1000))


def _xml(data: bytes) -> ET.Element:
    if len(data) > MAX_BODY:
        raise CallbackError(400, "body too large")
    if b"<!DOCTYPE" in data.upper() or b"<!ENTITY" in data.upper():
        raise CallbackError(400, "XML with a DTD is not accepted")
    try:
        return ET.fromstring(data)
    except ET.ParseError:
        raise CallbackError(400, "body is not XML") from None


def _xml_field(data: bytes, name: str) -> str | None:
    return _xml(data).findtext(name)
