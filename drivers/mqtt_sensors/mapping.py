"""Topic mapping and payload decoding for mqtt_sensors (pure code, no network).

A message is matched against the configured topic filters (MQTT ``+`` / ``#``),
the device id is filled from the matched levels (``{1}`` = first ``+`` level,
``{#}`` = what ``#`` matched), and the payload (JSON object, or a bare JSON
number / ``true``) is turned into ``{measurement: {field: value}}`` with the
field map's dotted paths (``DS18B20.Temperature``, ``sensors.0.temp``; ``$`` is
the whole payload).
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Zigbee2MQTT-style keys used when a topic has no ``fields:``.
DEFAULT_FIELDS: dict[str, str] = {
    "temperature": "temperature.value",
    "humidity": "humidity.value",
    "battery": "battery.pct",
    "linkquality": "radio.linkquality",
}

_PLACEHOLDER = re.compile(r"\{(\d+|#)\}")


class FieldMap(BaseModel):
    model_config = ConfigDict(extra="forbid")
    measurement: str = Field(min_length=1)
    field: str = Field("value", min_length=1)
    scale: float = 1.0
    offset: float = 0.0
    values: dict[str, float | bool] = Field(default_factory=dict)  # strings -> values, e.g. {"ON": true}


def _field_map(v: Any) -> Any:
    if isinstance(v, str):
        m, _, f = v.partition(".")
        if not m:
            raise ValueError(f"{v!r}: expected 'measurement' or 'measurement.field'")
        return {"measurement": m, "field": f or "value"}
    return v


def check_filter(t: str) -> str:
    if not t or len(t.encode()) > 65535:
        raise ValueError("topic filter must not be empty")
    levels = t.split("/")
    for i, lv in enumerate(levels):
        if "#" in lv and (lv != "#" or i != len(levels) - 1):
            raise ValueError(f"{t!r}: '#' must be a whole level and the last one")
        if "+" in lv and lv != "+":
            raise ValueError(f"{t!r}: '+' must be a whole level")
    return t


class TopicMap(BaseModel):
    model_config = ConfigDict(extra="forbid")
    topic: str  # MQTT filter, e.g. zigbee2mqtt/+ or tele/+/SENSOR
    device: str = Field(min_length=1)  # device id; {1},{2}.. = the '+' levels, {#} = the '#' part
    type: str | None = None  # fridge | freezer | hot_holding | gas_sensor | ...
    room: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    vendor: str | None = None
    model: str | None = None
    fields: dict[str, FieldMap] = Field(default_factory=lambda: {k: FieldMap(**_field_map(v))
                                                                 for k, v in DEFAULT_FIELDS.items()})
    exclude: list[str] = Field(default_factory=list)  # filters not to treat as sensors (zigbee2mqtt/bridge/#)

    @field_validator("fields", mode="before")
    @classmethod
    def _fields(cls, v: Any) -> Any:
        if isinstance(v, dict):
            if not v:
                raise ValueError("at least one field")
            return {k: _field_map(x) for k, x in v.items()}
        return v

    @field_validator("topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        return check_filter(v)

    @field_validator("exclude")
    @classmethod
    def _exclude(cls, v: list[str]) -> list[str]:
        return [check_filter(x) for x in v]

    @model_validator(mode="after")
    def _placeholders(self) -> "TopicMap":
        levels = self.topic.split("/")
        plus = levels.count("+")
        for ph in _PLACEHOLDER.findall(self.device):
            if ph == "#" and levels[-1] != "#":
                raise ValueError(f"device {self.device!r} uses {{#}} but topic {self.topic!r} has no '#'")
            if ph != "#" and not 1 <= int(ph) <= plus:
                raise ValueError(f"device {self.device!r} uses {{{ph}}} but topic {self.topic!r} has {plus} '+' level(s)")
        seen: dict[tuple[str, str], str] = {}
        for path, fm in self.fields.items():
            key = (fm.measurement, fm.field)
            if key in seen:
                raise ValueError(f"fields {seen[key]!r} and {path!r} both map to {fm.measurement}.{fm.field}")
            seen[key] = path
        return self


def match(filt: str, topic: str) -> list[str] | None:
    """Captured levels ('+' levels, then the '#' remainder) if ``topic`` matches ``filt``, else None."""
    f, t = filt.split("/"), topic.split("/")
    caps: list[str] = []
    for i, lv in enumerate(f):
        if lv == "#":
            if i == 0 and topic.startswith("$"):
                return None
            caps.append("/".join(t[i:]))
            return caps
        if i >= len(t):
            return None
        if lv == "+":
            if i == 0 and t[0].startswith("$"):
                return None
            caps.append(t[i])
        elif lv != t[i]:
            return None
    return caps if len(f) == len(t) else None


def device_id(tm: TopicMap, caps: list[str]) -> str:
    levels = tm.topic.split("/")
    hash_part = caps[-1] if levels[-1] == "#" else ""
    plus_caps = caps[:-1] if levels[-1] == "#" else caps
    return _PLACEHOLDER.sub(lambda m: hash_part if m.group(1) == "#" else plus_caps[int(m.group(1)) - 1], tm.device)


class Malformed(ValueError):
    pass


def lookup(obj: Any, path: str) -> Any:
    """Dotted path into decoded JSON; KeyError if absent."""
    if path in ("$", ""):
        return obj
    if path.startswith("$."):
        path = path[2:]
    cur = obj
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.lstrip("-").isdigit() and -len(cur) <= int(part) < len(cur):
            cur = cur[int(part)]
        else:
            raise KeyError(path)
    return cur


def convert(v: Any, fm: FieldMap) -> float | int | bool:
    if isinstance(v, str):
        if v in fm.values:
            return fm.values[v]
        try:
            v = float(v.strip())
        except ValueError:
            raise Malformed(f"not a number: {v[:40]!r}") from None
    if isinstance(v, bool):
        return v
    if not isinstance(v, (int, float)):
        raise Malformed(f"not a number: {type(v).__name__}")
    if not math.isfinite(v):
        raise Malformed(f"not a finite number: {v}")
    if fm.scale == 1.0 and fm.offset == 0.0:
        return v
    return round(v * fm.scale + fm.offset, 6)


def decode_payload(payload: bytes, tm: TopicMap) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """-> ({measurement: {field: value}}, per-field problems). Raises Malformed when nothing usable."""
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise Malformed(f"not JSON ({e})") from None
    if not isinstance(obj, (dict, int, float, bool)):
        raise Malformed(f"expected a JSON object or number, got {type(obj).__name__}")
    out: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for path, fm in tm.fields.items():
        try:
            v = lookup(obj, path)
        except KeyError:
            continue
        if v is None:
            continue
        try:
            out.setdefault(fm.measurement, {})[fm.field] = convert(v, fm)
        except Malformed as e:
            problems.append(f"{path}: {e}")
    if not out:
        why = "; ".join(problems) if problems else f"none of the mapped keys present ({', '.join(tm.fields)})"
        raise Malformed(why)
    return out, problems
