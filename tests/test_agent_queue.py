"""Durable queue and batcher: what is committed, when it is deleted, what is dropped."""
import sqlite3
from contextlib import closing

import orjson

from campus_sense import wire
from drivers.base import Event, Facts, Sample
from edge_agent.batcher import Batcher
from edge_agent.queue import DurableQueue


def items(n, size=10):
    return [wire.encode_item(wire.sample("m", "d1", 1000 + i, {"x": "y" * size})) for i in range(n)]


def put(q, n=1, kind="metrics"):
    return q.append(kind, "a1", [items(1) for _ in range(n)])


def rows_on_disk(path):
    # A separate connection sees only committed data.
    with closing(sqlite3.connect(path)) as db:
        return [r[0] for r in db.execute("SELECT seq FROM messages ORDER BY seq")]


def test_committed_before_publish(tmp_path):
    q = DurableQueue(tmp_path / "q.db")
    assert put(q, 3) == [1, 2, 3]
    assert rows_on_disk(tmp_path / "q.db") == [1, 2, 3]
    m = wire.decode(wire.topic("s", "b", "a1", "metrics"), q.peek(0, 1)[0].payload)
    assert (m.epoch, m.seq) == (q.epoch, 1)


def test_deleted_only_on_ack(tmp_path):
    q = DurableQueue(tmp_path / "q.db")
    put(q, 4)
    assert [r.seq for r in q.peek(0, 10)] == [1, 2, 3, 4]
    assert rows_on_disk(tmp_path / "q.db") == [1, 2, 3, 4]  # reading is not acking
    assert q.ack([2, 1]) == 2
    assert q.ack([1, 99]) == 0  # already gone / never existed
    assert rows_on_disk(tmp_path / "q.db") == [3, 4]
    assert q.depth == 2


def test_bound_drops_oldest_and_counts_persistently(tmp_path, caplog):
    q = DurableQueue(tmp_path / "q.db", max_messages=5)
    put(q, 8)
    assert [r.seq for r in q.peek(0, 10)] == [4, 5, 6, 7, 8]
    assert q.dropped_total == 3 and "queue full" in caplog.text
    q.close()
    q = DurableQueue(tmp_path / "q.db", max_messages=5)
    assert q.dropped_total == 3 and q.depth == 5
    put(q, 1)
    assert q.dropped_total == 4 and [r.seq for r in q.peek(0, 10)] == [5, 6, 7, 8, 9]


def test_max_bytes_bound(tmp_path, caplog):
    q = DurableQueue(tmp_path / "q.db", max_messages=1000, max_bytes=2048)
    for _ in range(20):
        q.append("metrics", "a1", [items(1, 200)])
    assert q.bytes <= 2048 and q.dropped_total == 20 - q.depth
    assert [r.seq for r in q.peek(0, 100)] == list(range(21 - q.depth, 21))  # newest kept
    # One message larger than the whole bound is dropped, counted, and consumes no seq.
    before = q.dropped_total
    assert q.append("metrics", "a1", [items(1, 5000)]) == []
    assert q.dropped_total == before + 1 and q.next_seq == 21
    assert "larger than queue.max_bytes" in caplog.text


def test_epoch_and_seq_survive_reopen(tmp_path):
    q = DurableQueue(tmp_path / "q.db")
    epoch = q.epoch
    put(q, 3)
    q.ack([1, 2, 3])  # even an empty queue must not restart at 1
    q.close()
    q = DurableQueue(tmp_path / "q.db")
    assert q.epoch == epoch and put(q, 1) == [4]
    assert DurableQueue(tmp_path / "other.db").epoch != epoch  # a new database is a new epoch


def test_replay_in_seq_order(tmp_path):
    q = DurableQueue(tmp_path / "q.db")
    for kind in ("metrics", "events", "metrics", "facts", "metrics"):
        put(q, 1, kind)
    # First connection: 1..3 handed out, only 1 and 3 acked before the link dropped.
    assert [r.seq for r in q.peek(0, 3)] == [1, 2, 3]
    q.ack([1, 3])
    # Reconnect: replay starts at the oldest unacked row, in order, resuming with a cursor.
    replay = q.peek(0, 2)
    assert [(r.seq, r.kind) for r in replay] == [(2, "events"), (4, "facts")]
    assert [r.seq for r in q.peek(replay[-1].seq, 10)] == [5]


def test_batcher_converts_splits_and_drops_oversized(tmp_path, caplog):
    q = DurableQueue(tmp_path / "q.db")
    b = Batcher(q, "a1", max_message_bytes=4096, max_items=10_000)
    recs = [Sample("interface", "sw1", {"in_octets": i, "bad": [1, 2], "nan": float("nan")}, {"ifIndex": i})
            for i in range(100)]
    recs += [Event("door1", "forced", "critical"), Facts("sw1", {"model": "x"}),
             Sample("big", "sw1", {"blob": "z" * 10_000})]
    b.add(recs)
    assert q.dropped_total == 1 and "above the 4096-byte message bound" in caplog.text
    assert b.flush() > 3  # 100 samples need several 4 KiB messages
    kinds, samples = [], 0
    for r in q.peek(0, 100):
        assert len(r.payload) <= 4096
        m = wire.decode(wire.topic("s", "b", "a1", r.kind), r.payload)
        kinds.append(r.kind)
        samples += len(m.items) if r.kind == "metrics" else 0
        if r.kind == "metrics":
            assert m.items[0]["f"].keys() == {"in_octets"} and isinstance(m.items[0]["tags"]["ifIndex"], str)
    assert samples == 100 and kinds.count("events") == 1 and kinds.count("facts") == 1
    assert [r.seq for r in q.peek(0, 100)] == list(range(1, len(kinds) + 1))
    assert orjson.loads(q.peek(0, 1)[0].payload)["agent"] == "a1"


def test_one_process_per_queue_file(tmp_path):
    from edge_agent.queue import QueueBusy
    q = DurableQueue(tmp_path / "q.db")
    try:
        DurableQueue(tmp_path / "q.db")
    except QueueBusy as e:
        assert "in use by another agent" in str(e)
    else:
        raise AssertionError("a second queue on the same file was allowed")
    q.close()
    DurableQueue(tmp_path / "q.db").close()
