"""MQTT sensors: off-the-shelf sensors publishing JSON to a site broker, as samples.

Zigbee2MQTT (``zigbee2mqtt/<name>`` -> ``{"temperature": 4.2, "humidity": 50,
"battery": 90}``), Tasmota (``tele/<name>/SENSOR`` -> ``{"DS18B20":
{"Temperature": 4.2}}``), Shelly/ESPHome-style single values. Each configured topic
filter names the device (one agent.yaml entry covers many sensors), its type and
room (so the canteen rules apply: fridge / freezer / hot_holding / gas_sensor) and
maps dotted JSON paths to measurement.field with scale/offset.

A bad payload is logged with its topic, counted and skipped; the driver keeps
running. Counters go out every ``stats_interval_s`` as ``Sample("mqtt_sensors")``.
Broker credentials are required (no anonymous access). See README.md.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import time
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from campus_sense.secret import Secret, SecretError, SecretFields
from drivers.base import DeviceError, Facts, Record, Sample, now_ms

from .mapping import Malformed, TopicMap, decode_payload, device_id, match

log = logging.getLogger(__name__)


class TLSOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _files(self) -> "TLSOptions":
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (client certificate)")
        for name in ("ca_file", "cert_file", "key_file"):
            f = getattr(self, name)
            if f is not None and not f.is_file():
                raise ValueError(f"{name}: {f} does not exist")
        return self


class Options(SecretFields):
    model_config = ConfigDict(extra="forbid")
    host: str = Field(min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    # No defaults for credentials: the sensor broker must not accept anonymous clients either.
    username: str = Field(min_length=1)
    #: a secret (campus_sense.secret): password / password_file / password_env; read per (re)connect
    password: Secret | None = None
    tls: TLSOptions | None = None
    client_id: str | None = None
    keepalive_s: int = Field(30, ge=5, le=3600)
    qos: int = Field(0, ge=0, le=1)
    ignore_retained: bool = True  # a retained value is old data with a fresh timestamp
    stats_interval_s: float = Field(60.0, gt=0)
    facts_interval_s: float = Field(3600.0, gt=0)
    topics: list[TopicMap] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_password(self) -> "Options":
        if self.password is None:
            raise ValueError("set exactly one of password or password_file or password_env "
                             "(anonymous access is not allowed)")
        return self

    def secret(self) -> str:
        """The password, read now: called on every (re)connect (campus_sense.secret rotation rule)."""
        try:
            return self.password.reveal()  # type: ignore[union-attr]
        except SecretError as e:
            raise DeviceError("config", str(e)) from None


_META_TAGS = ("type", "room")


class MqttSensorsDriver:
    name = "mqtt_sensors"

    def __init__(self, device_id: str, options: Options, tags: dict[str, str]):
        self.device_id, self.opts = device_id, options
        # the gateway entry's own type/room do not describe the sensors behind it
        self.tags = {k: v for k, v in tags.items() if k not in _META_TAGS}
        self.stats = {"messages": 0, "samples": 0, "malformed": 0, "unmatched": 0, "retained_ignored": 0,
                      "bad_fields": 0}
        self.malformed_by_topic: dict[str, int] = {}
        self.last_malformed: tuple[str, str] | None = None  # (topic, reason)
        self.sensors: dict[str, str] = {}  # device id -> topic it last came from
        self.connected = asyncio.Event()  # set once subscribed (tests, diagnostics)
        self._facts_at: dict[str, float] = {}
        self._logged_at: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    # ------------------------------------------------------------ message handling (no network)
    def handle(self, topic: str, payload: bytes, retain: bool = False, t_ms: int | None = None) -> list[Record]:
        """One MQTT message -> records. Never raises for bad input."""
        self.stats["messages"] += 1
        if retain and self.opts.ignore_retained:
            self.stats["retained_ignored"] += 1
            return []
        for tm in self.opts.topics:
            caps = match(tm.topic, topic)
            if caps is None or any(match(x, topic) is not None for x in tm.exclude):
                continue
            dev = device_id(tm, caps).strip()
            if not dev or len(dev) > 128:
                self._malformed(topic, f"device id {dev[:40]!r} from {tm.device!r} is empty or too long")
                return []
            try:
                values, problems = decode_payload(payload, tm)
            except Malformed as e:
                self._malformed(topic, str(e), payload)
                return []
            if problems:
                self.stats["bad_fields"] += len(problems)
                log.debug("%s: topic %s: skipped fields: %s", self.device_id, topic, "; ".join(problems))
            return self._records(tm, dev, topic, values, t_ms or now_ms())
        self.stats["unmatched"] += 1
        return []

    def _records(self, tm: TopicMap, dev: str, topic: str, values: dict, t: int) -> list[Record]:
        out: list[Record] = []
        self.sensors[dev] = topic
        mono = time.monotonic()
        last = self._facts_at.get(dev)
        if last is None or mono - last >= self.opts.facts_interval_s:
            self._facts_at[dev] = mono
            facts = {"type": tm.type, "room": tm.room, "vendor": tm.vendor, "model": tm.model,
                     "source": "mqtt", "topic": topic, "gateway": self.device_id}
            out.append(Facts(dev, {k: v for k, v in facts.items() if v is not None}, t))
        tags = {**self.tags, **tm.tags}
        if tm.room:
            tags["room"] = tm.room
        if tm.type:
            tags["type"] = tm.type
        for m, fields in values.items():
            out.append(Sample(m, dev, fields, dict(tags), t))
        self.stats["samples"] += len(values)
        return out

    def _malformed(self, topic: str, reason: str, payload: bytes = b"") -> None:
        self.stats["malformed"] += 1
        self.malformed_by_topic[topic] = self.malformed_by_topic.get(topic, 0) + 1
        self.last_malformed = (topic, reason)
        mono = time.monotonic()
        if mono - self._logged_at.get(topic, -1e9) >= 60:  # at most one line per topic per minute
            more = self._suppressed.pop(topic, 0)
            log.warning("%s: malformed payload on topic %s: %s; payload %r%s", self.device_id, topic, reason,
                        payload[:120], f" ({more} more since the last report)" if more else "")
            self._logged_at[topic] = mono
        else:
            self._suppressed[topic] = self._suppressed.get(topic, 0) + 1

    def stats_sample(self) -> Sample:
        return Sample("mqtt_sensors", self.device_id, {**self.stats, "sensors": len(self.sensors)}, dict(self.tags))

    # ------------------------------------------------------------ network
    def _tls(self) -> ssl.SSLContext | None:
        t = self.opts.tls
        if t is None:
            return None
        ctx = ssl.create_default_context(cafile=str(t.ca_file) if t.ca_file else None)
        if t.cert_file:
            ctx.load_cert_chain(str(t.cert_file), str(t.key_file))
        return ctx

    async def run(self, emit: Callable[[Record], None]) -> None:
        import aiomqtt  # lazily: only agents with MQTT sensors need it

        o = self.opts
        client = aiomqtt.Client(o.host, o.port, username=o.username, password=o.secret(), identifier=o.client_id,
                                keepalive=o.keepalive_s, tls_context=self._tls(), timeout=10,
                                clean_session=True)
        where = f"{o.host}:{o.port}"
        try:
            async with client:
                for tm in o.topics:
                    await client.subscribe(tm.topic, qos=o.qos)
                self.connected.set()
                log.info("%s: subscribed to %s on %s", self.device_id, ", ".join(t.topic for t in o.topics), where)
                stats = asyncio.create_task(self._stats_loop(emit))
                try:
                    async for msg in client.messages:
                        topic = msg.topic.value
                        payload = msg.payload if isinstance(msg.payload, (bytes, bytearray)) else \
                            str(msg.payload).encode()
                        try:
                            recs = self.handle(topic, bytes(payload), bool(msg.retain))
                        except Exception as e:  # a bug in a mapping must not stop the other sensors
                            log.exception("%s: message on %s could not be handled", self.device_id, topic)
                            self._malformed(topic, f"{type(e).__name__}: {e}")
                            continue
                        for rec in recs:
                            emit(rec)
                finally:
                    stats.cancel()
                    emit(self.stats_sample())
        except aiomqtt.MqttCodeError as e:
            rc = getattr(e, "rc", None)
            text = str(e)
            if rc in (4, 5, 134, 135) or "authori" in text.lower() or "password" in text.lower():
                raise DeviceError("auth", f"broker {where} refused user {o.username!r}: {text}") from None
            raise DeviceError("protocol", f"broker {where}: {text}") from None
        except aiomqtt.MqttError as e:
            text = str(e)
            if self.connected.is_set():
                raise DeviceError("unreachable", f"connection to broker {where} lost: {text}") from None
            if "timed out" in text.lower():
                raise DeviceError("timeout", f"broker {where}: no answer ({text})") from None
            raise DeviceError("unreachable", f"cannot connect to broker {where}: {text}") from None
        finally:
            self.connected.clear()
        raise DeviceError("unreachable", f"broker {where} closed the connection")

    async def _stats_loop(self, emit: Callable[[Record], None]) -> None:
        while True:
            emit(self.stats_sample())
            await asyncio.sleep(self.opts.stats_interval_s)


def create(device_id: str, options: Options, tags: dict[str, str]) -> MqttSensorsDriver:
    return MqttSensorsDriver(device_id, options, tags)
