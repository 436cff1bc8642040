"""WeCom (企业微信) group robot channel, markdown message."""
from __future__ import annotations

import urllib.parse
from typing import ClassVar, Literal

from pydantic import Field

from .. import render
from .base import ChannelConfig, HTTPSender, Secret, channel_secret, check_errcode

TYPE = "wecom"


class Config(ChannelConfig):
    """WeCom (企业微信) group robot: POST {base_url}/cgi-bin/webhook/send?key=KEY."""
    type: Literal["wecom"]
    base_url: str = Field("https://qyapi.weixin.qq.com", pattern=r"^https?://")
    key: Secret | None = None
    #: user ids mentioned as <@userid> in the markdown
    mention_users: list[str] = []
    #: text put in front of the title (e.g. a robot keyword)
    title_prefix: str = ""
    required_secrets: ClassVar[tuple[str, ...]] = ("key",)


class Sender(HTTPSender):
    """WeCom group robot, markdown message."""
    cfg: Config

    def body(self, n: dict) -> dict:
        return {"msgtype": "markdown",
                "markdown": {"content": render.wecom_markdown(n, self.cfg.mention_users, self.cfg.title_prefix)}}

    async def send(self, n: dict, delivery_id: int) -> None:
        key = channel_secret(self.cfg, "key")
        url = self.cfg.base_url.rstrip("/") + "/cgi-bin/webhook/send?" + urllib.parse.urlencode({"key": key})
        r = await self._post(url, self.body(n))
        check_errcode(r, "wecom")
