"""WeCom (企业微信) application messages with an acknowledge button (two-way acknowledgement).

Sending: ``GET {base_url}/cgi-bin/gettoken?corpid&corpsecret`` (access token cached until it
expires, re-fetched on errcode 40014/42001), then ``POST /cgi-bin/message/send?access_token`` with a
``template_card`` of ``card_type: button_interaction``: one "Acknowledge" button per firing alert
(key ``ack:<alert id>``, at most 6); notifications with only resolved alerts are ``text`` messages.

Receiving: the application's "API 接收消息" URL is ``https://COLLECTOR/api/v1/callbacks/wecom``
with ``callback.token`` and ``callback.encoding_aes_key`` (see ``wecom_crypto.py``); a button click
arrives as a ``template_card_event`` with ``EventKey = ack:<id>`` and ``FromUserName = userid``,
mapped through ``callback.users`` (``collector/notify/callbacks.py``).
"""
from __future__ import annotations

import time
import urllib.parse
from typing import ClassVar, Literal

from pydantic import Field

from .. import render
from .base import (CallbackUsers, ChannelConfig, DeliveryError, HTTPSender, Secret, StrList, ack_key,
                   channel_secret, check_errcode)

TYPE = "wecom_app"

#: access token expired / invalid: fetch a new one and retry once
_TOKEN_ERRORS = {40014, 42001}


class Callback(CallbackUsers):
    token: Secret
    encoding_aes_key: Secret


class Config(ChannelConfig):
    """WeCom application (自建应用): corp_id, agent_id, corp_secret; recipients to_user/to_party/to_tag."""
    type: Literal["wecom_app"]
    base_url: str = Field("https://qyapi.weixin.qq.com", pattern=r"^https?://")
    corp_id: str = Field(min_length=1)
    agent_id: int
    corp_secret: Secret | None = None
    to_user: StrList = []
    to_party: StrList = []
    to_tag: StrList = []
    title_prefix: str = ""
    callback: Callback | None = None
    required_secrets: ClassVar[tuple[str, ...]] = ("corp_secret",)


class Sender(HTTPSender):
    cfg: Config

    def __init__(self, name: str, cfg: Config):
        super().__init__(name, cfg)
        self._token: tuple[str, float] | None = None

    def _to(self) -> dict:
        c = self.cfg
        out = {"touser": "|".join(c.to_user), "toparty": "|".join(c.to_party), "totag": "|".join(c.to_tag)}
        if not any(out.values()):
            out["touser"] = "@all"
        return out

    def body(self, n: dict, delivery_id: int) -> dict:
        c = self.cfg
        firing = [a for a in n["alerts"] if a["status"] == "firing"]
        if not firing:
            return {**self._to(), "msgtype": "text", "agentid": c.agent_id,
                    "text": {"content": (c.title_prefix + " " + render.text(n)).strip()[:2000]}}
        title = (c.title_prefix + " " + (n.get("title") or render.title(n))).strip()
        desc = "; ".join(f"#{a['id']} {a['severity']} {a['rule']} {a.get('summary') or ''}".strip()
                         for a in firing)
        card = {"card_type": "button_interaction",
                "main_title": {"title": title[:36], "desc": desc[:44]},
                "sub_title_text": render.text(n)[:1000],
                "task_id": f"cs{delivery_id}t{int(time.time() * 1000)}",
                "button_list": [{"text": f"确认 Ack #{a['id']}"[:10], "style": 1, "key": ack_key(a["id"])}
                                for a in firing[:6]]}
        return {**self._to(), "msgtype": "template_card", "agentid": c.agent_id, "template_card": card}

    async def access_token(self, refresh: bool = False) -> str:
        if self._token and not refresh and self._token[1] > time.monotonic():
            return self._token[0]
        secret = channel_secret(self.cfg, "corp_secret")
        url = self.cfg.base_url.rstrip("/") + "/cgi-bin/gettoken?" + urllib.parse.urlencode(
            {"corpid": self.cfg.corp_id, "corpsecret": secret})
        try:
            r = await self.client.get(url)
        except Exception as e:  # noqa: BLE001
            raise DeliveryError(f"wecom_app gettoken: {type(e).__name__}") from None
        check_errcode(r, "wecom_app gettoken")
        j = r.json()
        tok = j.get("access_token")
        if not tok:
            raise DeliveryError("wecom_app gettoken: no access_token in the reply")
        self._token = (tok, time.monotonic() + max(60, int(j.get("expires_in", 7200)) - 300))
        return tok

    async def send(self, n: dict, delivery_id: int) -> None:
        body = self.body(n, delivery_id)
        for attempt in (0, 1):
            tok = await self.access_token(refresh=attempt == 1)
            url = self.cfg.base_url.rstrip("/") + "/cgi-bin/message/send?" + urllib.parse.urlencode(
                {"access_token": tok})
            r = await self._post(url, body)
            try:
                code = r.json().get("errcode")
            except ValueError:
                code = None
            if code in _TOKEN_ERRORS and attempt == 0:
                self._token = None
                continue
            check_errcode(r, "wecom_app")
            return
