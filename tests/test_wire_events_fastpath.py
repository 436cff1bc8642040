"""wire.decode's lean path for event batches (trap and syslog storms) gives exactly
wire.decode_strict's outcome: same accepted items, or the strict error."""
import random

import orjson
import pytest

from campus_sense import wire

T = "campus/v1/north/A/a1/events"
T0 = 1_795_392_000_000
GOOD = {"v": 1, "kind": "events", "agent": "a1", "epoch": "e1", "seq": 3, "sent_ms": 1,
        "events": [{"d": "sw1", "type": "syslog", "t": T0, "severity": "warning", "tags": {"site": "north"},
                    "data": {"archive": True, "facility": 23, "severity": 3, "msg": "x", "pid": None, "r": 1.5}},
                   {"d": "sw1", "type": "link_down", "t": T0 + 1, "data": {"ifIndex": 5}}]}


def _variants():
    yield GOOD
    rnd = random.Random(11)
    bad = [None, 0, -1, 1.5, "", "x", True, [], {}, [1], {"k": 1}, {"k": [1]}, 2**60, T0, "critical", "a" * 2000]
    paths = [("events",), ("events", 0), ("events", 0, "d"), ("events", 0, "type"), ("events", 0, "t"),
             ("events", 0, "severity"), ("events", 0, "tags"), ("events", 0, "data"), ("events", 0, "tags", "site"),
             ("events", 0, "data", "msg"), ("seq",), ("epoch",), ("agent",), ("kind",), ("v",)]
    for p in paths:
        for v in bad:
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
    deep = {"a": 1}
    for _ in range(20):
        deep = {"n": deep}
    for _ in range(100):
        b = orjson.loads(orjson.dumps(GOOD))
        b["events"][1]["data"] = rnd.choice([{"a": 1}, {}, {"a": [1, {"b": 2}]}, {"a": {"b": None}}, deep])
        b["events"][0]["tags"] = rnd.choice([{}, {"k" * 1025: "v"}, {"k": "v" * 1025}, {str(i): "v" for i in range(65)}])
        yield b


def _outcome(fn, payload):
    try:
        m = fn(T, payload)
        return ("ok", m.kind, m.epoch, m.seq, orjson.dumps(m.items))
    except wire.WireError as e:
        return ("error", str(e))


@pytest.mark.parametrize("body", list(_variants()))
def test_same_outcome_as_strict(body):
    payload = orjson.dumps(body)
    assert _outcome(wire.decode, payload) == _outcome(wire.decode_strict, payload)


def test_good_batch_takes_the_lean_path(monkeypatch):
    called = []
    monkeypatch.setattr(wire, "decode_strict", lambda *a, **k: called.append(1))
    wire._topics.pop(T, None)
    wire.decode(T, orjson.dumps(GOOD))          # first sight of the topic: parsed through strict
    called.clear()
    m = wire.decode(T, orjson.dumps(GOOD))
    assert called == [] and m.kind == "events" and len(m.items) == 2
