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


T0 = 1_765_000_000_000
ROW = {"m": "interface", "d": "sw1", "t": T0, "tags": {"ifName": "g1"}, "f": {"a": 1, "b": 2.5, "c": True, "e": "x"}}
TABLE = {"m": "interface", "d": "sw1", "t": T0, "rows": 3, "tags": {"ifName": ["g1", "g2", "g3"]},
         "f": {"a": [1, 2, 3], "b": [2.5, None, 1.0], "c": [True, False, True], "e": ["x", "y", "z"]}}


def _table_variants():
    good = {"v": 1, "kind": "metrics", "agent": "a1", "epoch": "e1", "seq": 3, "sent_ms": 1,
            "samples": [ROW, TABLE, ROW]}
    yield good
    bad_values = [None, 0, -1, 4097, 2, 1.5, "", "x", True, [], {}, [1], [1, 2, 3], [[1], 2, 3], ["a", "b", 3],
                  {"k": 1}, {"k": [1, 2, 3]}]
    paths = [("rows",), ("m",), ("d",), ("t",), ("tags",), ("f",), ("tags", "ifName"), ("f", "a"), ("f", "e")]
    for p in paths:
        for v in bad_values:
            b = orjson.loads(orjson.dumps(good))
            o = b["samples"][1]
            for k in p[:-1]:
                o = o[k]
            o[p[-1]] = v
            yield b
        b = orjson.loads(orjson.dumps(good))
        o = b["samples"][1]
        for k in p[:-1]:
            o = o[k]
        del o[p[-1]]
        yield b
    yield dict(good, samples=[dict(ROW, rows=1)])             # "rows" makes an item a table
    long = "x" * (wire.MAX_TAG_CHARS + 1)                     # hostile tags: too long, names or values
    yield dict(good, samples=[dict(ROW, tags={"ifName": long})])
    yield dict(good, samples=[dict(ROW, tags={long: "g1"})])
    yield dict(good, samples=[ROW, dict(TABLE, tags={"ifName": ["g1", long, "g3"]})])
    yield dict(good, samples=[ROW, dict(TABLE, tags={long: ["g1", "g2", "g3"]})])
    yield dict(good, samples=[dict(ROW, tags={"ifName": long}), TABLE])


def test_tables_same_outcome_as_strict():
    """Table items (wire.table): the lean check and the reference validator agree, and both give
    the samples one per row, with the message's sample count."""
    accepted = 0
    for body in _table_variants():
        payload = orjson.dumps(body)
        strict = None
        try:
            strict = wire.decode_strict(T, payload)
        except wire.WireError:
            pass
        if strict is None:
            with pytest.raises(wire.WireError):
                wire.decode(T, payload)
            continue
        lean = wire.decode(T, payload)
        assert (lean.items, lean.count()) == (strict.items, strict.count()), body
        accepted += 1
    assert accepted >= 10       # null/strings/bools in field columns are fine
    m = wire.decode(T, orjson.dumps(next(_table_variants())))
    assert m.count() == 5 and len(m.packed) == 3
    assert [(it["tags"]["ifName"], it["f"]["b"]) for it in m.items] == [
        ("g1", 2.5), ("g1", 2.5), ("g2", None), ("g3", 1.0), ("g1", 2.5)]
    with pytest.raises(wire.WireError, match=r"samples\[1\]: table: field 'a' must be a list of 3"):
        wire.decode(T, orjson.dumps(dict(next(_table_variants()), samples=[ROW, dict(TABLE, f={"a": [1, 2]})])))


def test_tabulate_and_expand_round_trip():
    rows = [wire.sample("interface", "sw1", T0, {"a": i, "b": i * 0.5}, {"ifIndex": str(i)}) for i in range(5)]
    rows.insert(2, wire.sample("interface", "sw1", T0, {"a": 9}, {"ifIndex": "9"}))        # other fields
    rows.append(wire.sample("interface", "sw2", T0, {"a": 1, "b": 1.0}, {"ifIndex": "1"}))  # other device
    rows += [wire.sample("cpu", "sw1", T0 + 1, {"load": 1}) for _ in range(3)]              # no tags
    got = wire.tabulate(rows, max_rows=2)
    assert [it.get("rows") for it in got] == [2, None, 2, None, None, 2, None]
    assert wire.expand(got) == rows
    assert wire.expand(wire.tabulate(rows)) == rows
