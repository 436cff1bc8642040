"""Embedded MQTT broker (amqtt) for the demo: password auth, no anonymous access.

Production uses Mosquitto or EMQX (see docker/); this exists so `campus-sense demo`
needs no service installed beforehand.
"""
from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass, field

from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin

log = logging.getLogger(__name__)


class PasswordAuth(BaseAuthPlugin):
    """Accepts only the configured username/password pairs (constant-time compare)."""

    @dataclass
    class Config:
        users: dict[str, str] = field(default_factory=dict)

    async def authenticate(self, *, session) -> bool:
        users = self.context.config.users
        expected = users.get(session.username or "")
        ok = expected is not None and hmac.compare_digest(expected, session.password or "")
        if not ok:
            log.warning("MQTT login refused for user %r", session.username)
        return ok


async def start_broker(port: int, users: dict[str, str], host: str = "127.0.0.1") -> Broker:
    if not users:
        raise ValueError("the embedded broker needs at least one user (no anonymous access)")
    broker = Broker({
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {f"{__name__}.PasswordAuth": {"users": dict(users)}},
    })
    await broker.start()
    return broker
