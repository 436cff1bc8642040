import orjson
import pytest
import zstandard

from campus_sense import wire


T0 = 1_795_000_000_000


def _msg(kind="metrics", seq=1, items=None, agent="a1"):
    enc = [wire.encode_item(i) for i in (items or [wire.sample("if", "sw1", T0, {"x": 1.0}, {"ifName": "g1"})])]
    return wire.encode_durable(kind, agent, "ep1", seq, 1000, enc)


def test_roundtrip_metrics():
    t = wire.topic("north", "A", "a1", "metrics")
    m = wire.decode(t, _msg())
    assert (m.agent, m.epoch, m.seq) == ("a1", "ep1", 1)
    assert m.items[0]["f"] == {"x": 1.0}
    assert m.topic.building == "A"


@pytest.mark.parametrize("payload,needle", [
    (b"\xff\xfe garbage", "not UTF-8 JSON"),
    (b"[1,2]", "JSON object"),
    (orjson.dumps({"v": 99, "kind": "metrics", "agent": "a1"}), "unsupported schema version 99"),
    (orjson.dumps({"v": 1, "kind": "events", "agent": "a1"}), "does not match the topic kind"),
    (orjson.dumps({"v": 1, "kind": "metrics", "agent": "a1", "epoch": "e", "seq": 0, "samples": []}), "'seq'"),
    (orjson.dumps({"v": 1, "kind": "metrics", "agent": "a1", "epoch": "e", "seq": 3,
                   "samples": [{"m": "x", "d": "d", "t": "now", "f": {"a": 1}}]}), "samples[0]: 't'"),
])
def test_rejects_bad_payloads(payload, needle):
    with pytest.raises(wire.WireError) as e:
        wire.decode("campus/v1/north/A/a1/metrics", payload)
    assert needle in str(e.value)
    assert "campus/v1/north/A/a1/metrics" in str(e.value)


def test_oversize_rejected():
    big = _msg(items=[wire.sample("m", "d", T0, {"s": "x" * 1000})] * 300)
    with pytest.raises(wire.WireError, match="exceeds"):
        wire.decode("campus/v1/north/A/a1/metrics", big)


def test_packed_payload_decodes_like_plain_and_hostile_frames_are_refused():
    t = "campus/v1/north/A/a1/metrics"
    plain = _msg()
    packed = wire.pack(plain)
    assert packed[:4] == wire.ZSTD_FRAME and wire.unpack(packed) == plain and wire.unpack(plain) is plain
    a, b = wire.decode(t, packed), wire.decode(t, plain)
    assert (a.agent, a.epoch, a.seq, a.items) == (b.agent, b.epoch, b.seq, b.items)
    assert wire.decode_strict(t, packed).items == b.items
    assert wire.durable_id(t, packed)[1:] == ("ep1", 1)
    # a bomb: 64 MiB of zeros in ~2 KiB; refused from its header, before anything is allocated
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (64 << 20))
    assert len(bomb) < 8192
    with pytest.raises(wire.WireError, match="67108864 bytes decompressed exceeds the 262144-byte bound") as e:
        wire.decode(t, bomb)
    assert t in str(e.value)
    assert wire.durable_id(t, bomb) is None
    # a frame that does not declare its size; a corrupt one; a truncated one
    cobj = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    unsized = cobj.compress(plain) + cobj.flush()
    with pytest.raises(wire.WireError, match="does not declare its decompressed size"):
        wire.decode(t, unsized)
    for bad in (packed[:4] + b"\xff" * 20, packed[:-5]):
        with pytest.raises(wire.WireError, match="not a valid zstd frame"):
            wire.decode(t, bad)


def test_split_never_truncates():
    items = [wire.encode_item(wire.sample("m", "d", T0 + i, {"v": i, "pad": "p" * 100})) for i in range(1000)]
    over = wire.envelope_overhead("metrics", "a1", "ep1")
    chunks = list(wire.split(items, 4096, over))
    assert len(chunks) > 1
    assert [x for c in chunks for x in c] == items
    for n, c in enumerate(chunks, 1):
        payload = wire.encode_durable("metrics", "a1", "ep1", n, 0, c)
        assert len(payload) <= 4096
        assert len(wire.decode("campus/v1/s/b/a1/metrics", payload).items) == len(c)


def test_item_too_large_for_any_message():
    with pytest.raises(wire.WireError, match="above the"):
        list(wire.split([b"x" * 5000], 4096, 100))


def test_bad_topic_segments():
    with pytest.raises(wire.WireError):
        wire.topic("north", "A/B", "a1", "metrics")
    with pytest.raises(wire.WireError):
        wire.parse_topic("campus/v1/x/y/z")


def test_commit_watermark_announces_what_the_collector_reads():
    topic = wire.commit_topic("a1")
    w = wire.decode_commit(topic, wire.encode_commit(wire.Watermark("a1", "e1", 5, 9, ((7, 8),)), 1))
    assert (w.seq, w.hwm, w.gaps, w.reads) == (5, 9, ((7, 8),), wire.READS) and "tables" in w.reads
    old = orjson.dumps({"v": 1, "kind": "commit", "agent": "a1", "epoch": "e1", "seq": 5, "sent_ms": 1})
    assert wire.decode_commit(topic, old).reads == ()            # a collector of before: base v1 only
    for junk in ("tables", 5, {"tables": 1}, [1, None]):
        body = orjson.loads(old)
        body["reads"] = junk
        assert wire.decode_commit(topic, orjson.dumps(body)).reads == ()
