"""The wire contract between edge agents and the collector.

This is the ONE module both sides import. It owns the MQTT topic layout, the
payload schema and its version, size bounds and batch splitting. Nothing else
is shared between agent and collector, so a change here is a protocol change:
bump ``SCHEMA_VERSION`` when an old peer could misread the new payload.

Topics::

    campus/v1/{site}/{building}/{agent}/{kind}

``kind`` is one of ``metrics``, ``events``, ``facts`` (durable: queued on the
agent, carry ``epoch`` + ``seq``, QoS 1) or ``birth``, ``death``, ``heartbeat``
(agent state: not queued; ``death`` is the MQTT Last Will).

Every payload is a UTF-8 JSON object with ``v`` (schema version), ``kind`` and
``agent``. Durable messages add ``epoch`` (random id of the agent's queue
database, so a wiped queue that restarts at seq 1 is not mistaken for
duplicates) and ``seq`` (per agent+epoch, strictly increasing by 1, so the
collector can drop duplicates and record gaps).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import orjson

SCHEMA_VERSION = 1
TOPIC_ROOT = "campus/v1"
SUBSCRIPTION = f"{TOPIC_ROOT}/+/+/+/+"
DURABLE_KINDS = ("metrics", "events", "facts")
STATE_KINDS = ("birth", "death", "heartbeat")
KINDS = DURABLE_KINDS + STATE_KINDS
#: Bound for one MQTT payload. Mosquitto's default limit is far higher; this keeps
#: one message cheap to parse and to retransmit on a flaky building uplink.
MAX_MESSAGE_BYTES = 256 * 1024
SEVERITIES = ("info", "warning", "critical")

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_ITEMS_KEY = {"metrics": "samples", "events": "events", "facts": "facts"}


class WireError(ValueError):
    """A payload or topic that breaks the contract; the message says what and where."""


@dataclass(frozen=True, slots=True)
class TopicParts:
    site: str
    building: str
    agent: str
    kind: str


@dataclass(slots=True)
class Message:
    """A decoded, validated message."""

    topic: TopicParts
    kind: str
    agent: str
    body: dict[str, Any]
    epoch: str | None = None
    seq: int | None = None
    items: list[dict[str, Any]] = field(default_factory=list)


def check_segment(value: str, what: str) -> str:
    """Site, building, agent ids become topic levels: no '/', '+', '#', spaces."""
    if not isinstance(value, str) or not _SEGMENT.match(value):
        raise WireError(f"{what} {value!r} must match {_SEGMENT.pattern} (it is used as an MQTT topic level)")
    return value


def topic(site: str, building: str, agent: str, kind: str) -> str:
    if kind not in KINDS:
        raise WireError(f"unknown message kind {kind!r}")
    for v, w in ((site, "site"), (building, "building"), (agent, "agent id")):
        check_segment(v, w)
    return f"{TOPIC_ROOT}/{site}/{building}/{agent}/{kind}"


def parse_topic(t: str) -> TopicParts:
    parts = t.split("/")
    if len(parts) != 6 or "/".join(parts[:2]) != TOPIC_ROOT:
        raise WireError(f"topic {t!r} is not {TOPIC_ROOT}/<site>/<building>/<agent>/<kind>")
    site, building, agent, kind = parts[2:]
    if kind not in KINDS:
        raise WireError(f"topic {t!r}: unknown kind {kind!r}")
    return TopicParts(site, building, agent, kind)


# ---------------------------------------------------------------- items
def sample(measurement: str, device: str, time_ms: int, fields: dict, tags: dict | None = None) -> dict:
    """One time-series point: measurement, device, time (epoch ms), tags, fields."""
    return {"m": measurement, "d": device, "t": int(time_ms), "tags": tags or {}, "f": fields}


def event(device: str, type_: str, time_ms: int, severity: str = "info", tags: dict | None = None,
          data: dict | None = None) -> dict:
    return {"d": device, "type": type_, "t": int(time_ms), "severity": severity, "tags": tags or {},
            "data": data or {}}


def facts(device: str, time_ms: int, values: dict) -> dict:
    """Device facts for inventory (model, serial, firmware, mac, ip, ...)."""
    return {"d": device, "t": int(time_ms), "facts": values}


# ---------------------------------------------------------------- encoding
def encode_state(kind: str, agent: str, time_ms: int, **body: Any) -> bytes:
    if kind not in STATE_KINDS:
        raise WireError(f"{kind!r} is not a state kind")
    return orjson.dumps({"v": SCHEMA_VERSION, "kind": kind, "agent": agent, "sent_ms": int(time_ms), **body})


def encode_durable(kind: str, agent: str, epoch: str, seq: int, time_ms: int,
                   encoded_items: Iterable[bytes]) -> bytes:
    """Assemble a durable message from items already encoded with ``encode_item``."""
    head = orjson.dumps({"v": SCHEMA_VERSION, "kind": kind, "agent": agent, "epoch": epoch, "seq": seq,
                         "sent_ms": int(time_ms)})
    key = _ITEMS_KEY[kind].encode()
    return head[:-1] + b',"' + key + b'":[' + b",".join(encoded_items) + b"]}"


def encode_item(item: dict) -> bytes:
    # NaN/inf become null; the collector drops null fields.
    return orjson.dumps(item)


def envelope_overhead(kind: str, agent: str, epoch: str) -> int:
    return len(encode_durable(kind, agent, epoch, 2**53, 2**45, [])) + 2


def split(encoded_items: list[bytes], max_bytes: int, overhead: int) -> Iterator[list[bytes]]:
    """Group encoded items into chunks whose message stays within ``max_bytes``.

    Items are never truncated; a single item that cannot fit raises WireError
    (the caller counts it as a drop).
    """
    chunk: list[bytes] = []
    size = overhead
    for it in encoded_items:
        n = len(it) + 1
        if overhead + n > max_bytes:
            raise WireError(f"one item is {len(it)} bytes, above the {max_bytes}-byte message bound")
        if chunk and size + n > max_bytes:
            yield chunk
            chunk, size = [], overhead
        chunk.append(it)
        size += n
    if chunk:
        yield chunk


# ---------------------------------------------------------------- decoding
def _fail(where: str, why: str) -> WireError:
    return WireError(f"{where}: {why}")


def decode_strict(topic_str: str, payload: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    """The reference validator: check everything, raise WireError naming what is wrong."""
    tp = parse_topic(topic_str)
    where = f"topic {topic_str}"
    if len(payload) > max_bytes:
        raise _fail(where, f"payload of {len(payload)} bytes exceeds the {max_bytes}-byte bound")
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        raise _fail(where, f"payload is not UTF-8 JSON ({e})") from None
    if not isinstance(body, dict):
        raise _fail(where, f"payload must be a JSON object, got {type(body).__name__}")
    v = body.get("v")
    if v != SCHEMA_VERSION:
        raise _fail(where, f"unsupported schema version {v!r} (this collector speaks v{SCHEMA_VERSION})")
    kind = body.get("kind")
    if kind != tp.kind:
        raise _fail(where, f"payload kind {kind!r} does not match the topic kind {tp.kind!r}")
    if body.get("agent") != tp.agent:
        raise _fail(where, f"payload agent {body.get('agent')!r} does not match the topic agent {tp.agent!r}")
    msg = Message(tp, kind, tp.agent, body)
    if kind in DURABLE_KINDS:
        epoch, seq = body.get("epoch"), body.get("seq")
        if not isinstance(epoch, str) or not epoch:
            raise _fail(where, "missing 'epoch'")
        if type(seq) is not int or seq < 1:
            raise _fail(where, f"'seq' must be a positive integer, got {seq!r}")
        key = _ITEMS_KEY[kind]
        items = body.get(key)
        if not isinstance(items, list):
            raise _fail(where, f"'{key}' must be a list")
        check = _CHECKS[kind]
        for i, it in enumerate(items):
            err = check(it)
            if err:
                raise _fail(where, f"{key}[{i}]: {err}")
        msg.epoch, msg.seq, msg.items = epoch, seq, items
    return msg


_SCALARS = (int, float, str, bool, type(None))
_SCALAR_TYPES = frozenset(_SCALARS)
_STR = frozenset((str,))
_EMPTY: dict = {}
_topics: dict[str, TopicParts] = {}


def _samples_ok(items: list) -> bool:
    """Lean version of _check_sample for the ingest hot path (exact JSON types, no messages)."""
    scal, strs = _SCALAR_TYPES, _STR
    for it in items:
        if type(it) is not dict:
            return False
        d, m, f, tags = it.get("d"), it.get("m"), it.get("f"), it.get("tags", _EMPTY)
        if not (type(d) is str and d and type(m) is str and m and type(it.get("t")) is int
                and type(f) is dict and f and type(tags) is dict):
            return False
        if tags and not strs.issuperset(map(type, tags.values())):
            return False
        if not scal.issuperset(map(type, f.values())):
            return False
    return True


def decode(topic_str: str, payload: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    """Validate and decode one MQTT message; raise WireError naming what is wrong.

    Well-formed metrics batches (the 150k points/s path) take a lean check; anything
    it does not accept goes through ``decode_strict``, which accepts it or explains why
    not. Both give the same outcome (tests/test_collector_fastwire.py checks it).
    """
    tp = _topics.get(topic_str)
    if tp is None or tp.kind != "metrics" or len(payload) > max_bytes:
        if tp is None and len(_topics) < 100_000:
            try:
                _topics[topic_str] = parse_topic(topic_str)
            except WireError:
                pass
        return decode_strict(topic_str, payload, max_bytes)
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return decode_strict(topic_str, payload, max_bytes)
    if type(body) is not dict:
        return decode_strict(topic_str, payload, max_bytes)
    g = body.get
    epoch, seq, items = g("epoch"), g("seq"), g("samples")
    if (g("v") != SCHEMA_VERSION or g("kind") != "metrics" or g("agent") != tp.agent
            or type(epoch) is not str or not epoch or type(seq) is not int or seq < 1
            or type(items) is not list or not _samples_ok(items)):
        return decode_strict(topic_str, payload, max_bytes)
    return Message(tp, "metrics", tp.agent, body, epoch, seq, items)



def _check_common(it: Any) -> str | None:
    if not isinstance(it, dict):
        return "must be an object"
    if not isinstance(it.get("d"), str) or not it["d"]:
        return "'d' (device id) must be a non-empty string"
    if type(it.get("t")) is not int:
        return "'t' (epoch ms) must be an integer"
    tags = it.get("tags", {})
    if not isinstance(tags, dict) or not all(isinstance(x, str) for x in tags.values()):
        return "'tags' must be an object of strings"
    return None


def _check_sample(it: Any) -> str | None:
    err = _check_common(it)
    if err:
        return err
    if not isinstance(it.get("m"), str) or not it["m"]:
        return "'m' (measurement) must be a non-empty string"
    f = it.get("f")
    if not isinstance(f, dict) or not f:
        return "'f' (fields) must be a non-empty object"
    for k, x in f.items():
        if not isinstance(x, _SCALARS):
            return f"field {k!r} must be a number, string or boolean"
    return None


def _check_event(it: Any) -> str | None:
    err = _check_common(it)
    if err:
        return err
    if not isinstance(it.get("type"), str) or not it["type"]:
        return "'type' must be a non-empty string"
    if it.get("severity", "info") not in SEVERITIES:
        return f"'severity' must be one of {SEVERITIES}"
    if not isinstance(it.get("data", {}), dict):
        return "'data' must be an object"
    return None


def _check_facts(it: Any) -> str | None:
    err = _check_common(it)
    if err:
        return err
    if not isinstance(it.get("facts"), dict):
        return "'facts' must be an object"
    return None


_CHECKS = {"metrics": _check_sample, "events": _check_event, "facts": _check_facts}


def check_item(kind: str, item: Any) -> str | None:
    """Validate one item of a durable ``kind``; return what is wrong, or None."""
    return _CHECKS[kind](item)
