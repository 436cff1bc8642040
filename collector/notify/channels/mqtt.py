"""MQTT channel: publish the notification JSON with QoS 1 (or 2); one short connection per message."""
from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
import uuid
from typing import ClassVar, Literal

import orjson
from pydantic import Field, field_validator

from .base import ChannelConfig, DeliveryError, Secret, channel_secret

TYPE = "mqtt"


class Config(ChannelConfig):
    type: Literal["mqtt"]
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    username: str = Field(min_length=1)
    password: Secret | None = None
    #: may contain {label} placeholders filled from the group's common labels
    topic: str = Field(min_length=1)
    qos: Literal[1, 2] = 1
    retain: bool = False
    client_id: str | None = None
    tls: bool = False
    ca_file: str | None = None
    required_secrets: ClassVar[tuple[str, ...]] = ("password",)

    @field_validator("topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        if "+" in v or "#" in v:
            raise ValueError("publish topic must not contain wildcards + or #")
        return v


_TOPIC_SAFE = re.compile(r"[^A-Za-z0-9_.:\-]")


def mqtt_topic(template: str, labels: dict[str, str]) -> str:
    """Fill ``{label}`` placeholders from the group's common labels; values are made topic-safe."""
    def sub(m: re.Match) -> str:
        v = labels.get(m.group(1), "") or "unknown"
        return _TOPIC_SAFE.sub("_", v)
    return re.sub(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", sub, template)


class Sender:
    """Publish the notification JSON with QoS 1 (or 2); one short connection per message."""

    def __init__(self, name: str, cfg: Config):
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
        pw = channel_secret(self.cfg, "password")
        topic = mqtt_topic(self.cfg.topic, n.get("common_labels") or {})
        payload = orjson.dumps(dict(n, delivery_id=delivery_id))
        await asyncio.to_thread(self._publish_sync, topic, payload, pw)

    async def close(self) -> None:
        pass
