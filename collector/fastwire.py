"""A faster ``wire.decode`` for the ingest hot path, with exactly the same outcome.

``decode`` accepts a message only if ``campus_sense.wire.decode`` would accept it
and returns the same ``Message``: the envelope checks are the same, and metrics
items are checked with a leaner test that is at least as strict as
``wire._check_sample`` (exact JSON types instead of isinstance, which is the same
thing for values produced by orjson). Anything the fast path does not accept is
handed to ``wire.decode`` itself, which then either raises the contract's own
``WireError`` (naming topic and reason) or accepts it. So the contract stays in
``wire.py``; this only avoids ~10 Python-level isinstance calls per sample.
"""
from __future__ import annotations

import orjson

from campus_sense import wire

_loads = orjson.loads
_SCALAR_TYPES = frozenset((int, float, str, bool, type(None)))
_STR = frozenset((str,))
_EMPTY: dict = {}
_topics: dict[str, wire.TopicParts] = {}


def _items_ok(items: list) -> bool:
    scal = _SCALAR_TYPES
    s = _STR
    for it in items:
        if type(it) is not dict:
            return False
        d = it.get("d")
        m = it.get("m")
        f = it.get("f")
        tags = it.get("tags", _EMPTY)
        if not (type(d) is str and d and type(m) is str and m and type(it.get("t")) is int
                and type(f) is dict and f and type(tags) is dict):
            return False
        if tags and not s.issuperset(map(type, tags.values())):
            return False
        if not scal.issuperset(map(type, f.values())):
            return False
    return True


def decode(topic_str: str, payload: bytes, max_bytes: int = wire.MAX_MESSAGE_BYTES) -> wire.Message:
    tp = _topics.get(topic_str)
    if tp is None or tp.kind != "metrics" or len(payload) > max_bytes:
        if tp is None and len(_topics) < 100_000:
            try:
                _topics[topic_str] = wire.parse_topic(topic_str)
            except wire.WireError:
                pass
        return wire.decode(topic_str, payload, max_bytes)
    try:
        body = _loads(payload)
    except orjson.JSONDecodeError:
        return wire.decode(topic_str, payload, max_bytes)
    if type(body) is not dict:
        return wire.decode(topic_str, payload, max_bytes)
    g = body.get
    epoch = g("epoch")
    seq = g("seq")
    items = g("samples")
    if (g("v") != wire.SCHEMA_VERSION or g("kind") != "metrics" or g("agent") != tp.agent
            or type(epoch) is not str or not epoch or type(seq) is not int or seq < 1
            or type(items) is not list or not _items_ok(items)):
        return wire.decode(topic_str, payload, max_bytes)
    return wire.Message(tp, "metrics", tp.agent, body, epoch, seq, items)
