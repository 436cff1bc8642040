"""DingTalk (钉钉) robot channel: markdown or actionCard message, signed when a secret is configured.

Two-way acknowledgement (``message: action_card`` + ``callback``): every firing alert gets a button
whose actionURL is ``dtmd://dingtalkclient/sendMessage?content=ack <id>``: tapping it sends
``ack <id>`` to the robot in the conversation; DingTalk POSTs that message to the robot's HTTP
callback ``https://COLLECTOR/api/v1/callbacks/dingtalk`` with headers ``timestamp`` (ms) and
``sign = base64(HmacSHA256(app_secret, timestamp + "\n" + app_secret))``, verified in
``collector/notify/callbacks.py``; the sender's ``senderStaffId`` is mapped through ``callback.users``."""
from __future__ import annotations

import base64
import hashlib
import hmac
import time
import urllib.parse
from typing import ClassVar, Literal

from pydantic import Field

from .. import render
from .base import CallbackUsers, ChannelConfig, HTTPSender, Secret, channel_secret, check_errcode

TYPE = "dingtalk"


class Callback(CallbackUsers):
    """The enterprise robot's AppSecret: signs the messages DingTalk POSTs to the callback."""
    app_secret: Secret


class Config(ChannelConfig):
    """DingTalk (钉钉) group robot: POST {base_url}/robot/send?access_token=T[&timestamp&sign]."""
    type: Literal["dingtalk"]
    base_url: str = Field("https://oapi.dingtalk.com", pattern=r"^https?://")
    access_token: Secret | None = None
    #: the robot's "加签" secret (SEC...); when given, requests are signed (YAML key ``secret``)
    sign_secret: Secret | None = Field(None, alias="secret")
    at_mobiles: list[str] = []
    at_user_ids: list[str] = []
    at_all: bool = False
    #: text put in front of the title; robots in "custom keyword" mode need the keyword here
    title_prefix: str = ""
    #: markdown, or action_card with one "acknowledge" button per firing alert
    message: Literal["markdown", "action_card"] = "markdown"
    callback: Callback | None = None
    required_secrets: ClassVar[tuple[str, ...]] = ("access_token",)


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk robot signature: base64(HMAC-SHA256(secret, f"{timestamp}\\n{secret}")), URL-encoded."""
    string_to_sign = f"{timestamp_ms}\n{secret}".encode()
    digest = hmac.new(secret.encode(), string_to_sign, hashlib.sha256).digest()
    return urllib.parse.quote_plus(base64.b64encode(digest).decode())


def callback_sign(app_secret: str, timestamp: str) -> str:
    """The ``sign`` header DingTalk puts on robot callbacks: base64(HmacSHA256(app_secret,
    timestamp + "\n" + app_secret)) (not URL-encoded)."""
    digest = hmac.new(app_secret.encode(), f"{timestamp}\n{app_secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def check_callback_sign(app_secret: str, timestamp: str, sign: str) -> bool:
    return hmac.compare_digest(callback_sign(app_secret, timestamp), sign or "")


def ack_url(alert_id) -> str:
    """The actionCard button: make the DingTalk client send ``ack <id>`` to the robot."""
    return "dtmd://dingtalkclient/sendMessage?content=" + urllib.parse.quote(f"ack {alert_id}")


class Sender(HTTPSender):
    """DingTalk group robot, markdown message, signed when a secret is configured."""
    cfg: Config

    def body(self, n: dict) -> dict:
        c = self.cfg
        title, text = render.dingtalk_markdown(n, c.at_mobiles, c.at_user_ids, c.at_all, c.title_prefix)
        firing = [a for a in n["alerts"] if a["status"] == "firing"]
        if c.message == "action_card" and firing:
            return {"msgtype": "actionCard",
                    "actionCard": {"title": title, "text": text, "btnOrientation": "0",
                                   "btns": [{"title": f"确认 Acknowledge #{a['id']}", "actionURL": ack_url(a["id"])}
                                            for a in firing[:5]]}}
        return {"msgtype": "markdown", "markdown": {"title": title, "text": text},
                "at": {"atMobiles": list(c.at_mobiles), "atUserIds": list(c.at_user_ids), "isAtAll": c.at_all}}

    def url(self, now: float | None = None) -> str:
        token = channel_secret(self.cfg, "access_token")
        url = self.cfg.base_url.rstrip("/") + "/robot/send?" + urllib.parse.urlencode({"access_token": token})
        secret = channel_secret(self.cfg, "secret") if self.cfg.has_secret("secret") else None
        if secret:
            ts = int((time.time() if now is None else now) * 1000)
            url += f"&timestamp={ts}&sign={dingtalk_sign(secret, ts)}"
        return url

    async def send(self, n: dict, delivery_id: int) -> None:
        r = await self._post(self.url(), self.body(n))
        check_errcode(r, "dingtalk")
