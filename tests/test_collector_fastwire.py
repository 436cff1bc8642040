"""wire.decode (with its lean metrics fast path) must give exactly wire.decode_strict's outcome."""
import random

import orjson
import pytest

from campus_sense import wire

T = "campus/v1/north/A/a1/metrics"
GOOD = {"v": 1, "kind": "metrics", "agent": "a1", "epoch": "e1", "seq": 3, "sent_ms": 1,
        "samples": [{"m": "interface", "d": "sw1", "t": 5, "tags": {"ifName": "g1"},
                     "f": {"a": 1, "b": 2.5, "c": True, "d": None, "e": "x"}}]}


def _variants():
    yield GOOD
    rnd = random.Random(7)
    bad_values = [None, 0, -1, 1.5, "", "x", True, [], {}, [1], {"k": 1}, {"k": [1]}, {"k": None}, 2**60, -5]
    paths = [("v",), ("kind",), ("agent",), ("epoch",), ("seq",), ("samples",), ("samples", 0),
             ("samples", 0, "m"), ("samples", 0, "d"), ("samples", 0, "t"), ("samples", 0, "tags"),
             ("samples", 0, "f"), ("samples", 0, "tags", "ifName"), ("samples", 0, "f", "a")]
    for p in paths:
        for v in bad_values:
            b = orjson.loads(orjson.dumps(GOOD))
            o = b
            for k in p[:-1]:
                o = o[k]
            o[p[-1]] = v
            yield b
        b = orjson.loads(orjson.dumps(GOOD))
        o = b
        for k in p[:-1]:
            o = o[k]
        if isinstance(o, dict):
            del o[p[-1]]
            yield b
    for _ in range(200):
        b = orjson.loads(orjson.dumps(GOOD))
        b["samples"] = [dict(GOOD["samples"][0], t=rnd.choice([1, "1", 1.0, None]),
                             f=rnd.choice([{"a": 1}, {}, {"a": [1]}, {"a": False}]))
                        for _ in range(rnd.randint(0, 3))]
        yield b


def _outcome(fn, topic, payload):
    try:
        m = fn(topic, payload)
        return ("ok", m.kind, m.agent, m.epoch, m.seq, m.items, m.body, m.topic)
    except wire.WireError as e:
        return ("err", str(e))


@pytest.mark.parametrize("topic", [T, "campus/v1/north/A/a2/metrics", "campus/v1/north/A/a1/events", "x/y"])
def test_same_outcome_as_wire(topic):
    n = 0
    for body in _variants():
        payload = orjson.dumps(body)
        assert _outcome(wire.decode, topic, payload) == _outcome(wire.decode_strict, topic, payload), body
        n += 1
    for payload in (b"", b"\xff", b"[]", b"{", b"null", b'{"v":1}', orjson.dumps(GOOD) + b" ",
                    orjson.dumps(dict(GOOD, samples=[GOOD["samples"][0]] * 3000))):
        assert _outcome(wire.decode, topic, payload) == _outcome(wire.decode_strict, topic, payload)
    assert n > 200
