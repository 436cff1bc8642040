"""Webhook channel: POST the notification JSON (see README: payload) to ``url``."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import ChannelConfig, HTTPSender, Secret, channel_secret

TYPE = "webhook"


class Config(ChannelConfig):
    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = {}
    #: optional ``Authorization: Bearer <token>``
    bearer_token: Secret | None = None
    #: verify TLS certificates (https URLs); ca_file for a private CA
    ca_file: str | None = None


class Sender(HTTPSender):
    """POST the notification JSON (see README: payload) to ``url``."""
    cfg: Config

    async def send(self, n: dict, delivery_id: int) -> None:
        headers = dict(self.cfg.headers)
        headers["X-Campus-Sense-Delivery"] = str(delivery_id)
        tok = channel_secret(self.cfg, "bearer_token")
        if tok:
            headers["Authorization"] = f"Bearer {tok}"
        await self._post(self.cfg.url, dict(n, delivery_id=delivery_id), headers)
