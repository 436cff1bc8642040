"""Durable queue and batcher: what is committed, when it is deleted, what is dropped."""
import random
import sqlite3
import string
from contextlib import closing

import orjson

from campus_sense import wire
from drivers.base import Event, Facts, Sample
from edge_agent.batcher import Batcher
from edge_agent.queue import DurableQueue


def items(n, size=10):
    """n samples of a ``size``-character field that does not compress (payloads are zstd frames)."""
    rnd = random.Random(size)
    return [wire.encode_item(wire.sample("m", "d1", 1_700_000_000_000 + i,
                                         {"x": "".join(rnd.choices(string.ascii_letters, k=size))}))
            for i in range(n)]


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
            for i in range(100)]    # a collector that did not announce tables: one item per sample
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
    assert orjson.loads(wire.unpack(q.peek(0, 1)[0].payload))["agent"] == "a1"


def test_batcher_sends_a_poll_as_tables_split_under_the_bound(tmp_path):
    """A poll's samples of one device and time travel as table items; a table above the message
    bound is halved until the parts fit; every sample arrives, in order, as it was produced."""
    q = DurableQueue(tmp_path / "q.db")
    b = Batcher(q, "a1", max_message_bytes=4096, max_items=10_000)
    b.collector_reads(wire.decode_commit(wire.commit_topic("a1"), wire.encode_commit(
        wire.Watermark("a1", q.epoch, 0, 0), 0)).reads)      # this collector's watermark: it reads tables
    assert b.tables
    t = 1_765_000_000_000
    recs = [Sample("interface", "sw1", {"in_octets": i, "descr": f"port {i:04d} " + "x" * 40, "up": i % 3 == 0},
                   {"ifIndex": i}, time_ms=t) for i in range(300)]
    recs.insert(150, Sample("interface", "sw1", {"other": 1}, {"ifIndex": 999}, time_ms=t))   # breaks the run
    b.add(recs)
    assert q.dropped_total == 0 and b.flush() > 3
    got, tables = [], 0
    for r in q.peek(0, 100):
        assert len(r.payload) <= 4096
        m = wire.decode(wire.topic("s", "b", "a1", r.kind), r.payload)
        tables += sum("rows" in it for it in m.packed)
        got += m.items
    assert tables >= 4
    assert [(it["tags"]["ifIndex"], it["f"]) for it in got] == [(str(r.tags["ifIndex"]), r.fields) for r in recs]
    assert {it["t"] for it in got} == {t}
    assert q.produced_total - q.dropped_total == len(got) == 301     # the queue counts samples, not items


def test_batcher_sends_tables_only_to_a_collector_that_reads_them(tmp_path):
    q = DurableQueue(tmp_path / "q.db")
    b = Batcher(q, "a1", max_message_bytes=65536, max_items=10_000)
    poll = [Sample("interface", "sw1", {"in_octets": i}, {"ifIndex": i}, time_ms=1_765_000_000_000) for i in range(8)]
    for reads in ((), wire.READS, ()):       # an old collector, this one, an old one again (a downgrade)
        b.collector_reads(reads)
        b.add(poll)
        b.flush()
    got = [wire.decode(wire.topic("s", "b", "a1", r.kind), r.payload) for r in q.peek(0, 10)]
    assert [[it.get("rows") for it in m.packed] for m in got] == [[None] * 8, [8], [None] * 8]
    assert all(m.items == got[0].items for m in got)


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


# ------------------------------------------------------------------ full disk (issue 9)
# dropped_total and produced_total count ITEMS; produced - dropped items are (or will be) delivered.

def big(n_items=1, size=6000):
    """A message whose payload spans overflow pages, so deleting it frees whole pages."""
    return [items(n_items, size)]


def test_reserve_reuses_free_pages_then_drops_oldest_items_counted(tmp_path, caplog):
    q = DurableQueue(tmp_path / "q.db", min_free_bytes=0)
    for _ in range(10):
        q.append("metrics", "a1", [items(3, 2000)])   # 10 messages of 3 items
    q.ack(range(1, 6))                                 # 5 delivered: their pages are free inside the file
    assert q.produced_total == 30 and q.dropped_total == 0
    pages = q.db.execute("PRAGMA page_count").fetchone()[0]
    q.min_free_bytes = 1 << 62                         # the filesystem is now under the reserve
    q.append("metrics", "a1", [items(3, 2000)])        # fits into the free pages: nothing dropped
    assert q.dropped_total == 0 and q.depth == 6
    for _ in range(10):
        q.append("metrics", "a1", [items(3, 2000)])
    # the file did not grow; room was made by dropping the oldest messages, counted in items
    assert q.db.execute("PRAGMA page_count").fetchone()[0] <= pages
    kept = [r.seq for r in q.peek(0, 100)]
    assert kept == list(range(kept[0], 22)) and kept[0] > 6
    assert q.dropped_total == 3 * (kept[0] - 6) and q.produced_total == 63
    assert q.produced_total - q.dropped_total == 3 * (5 + len(kept))  # delivered + queued
    assert "disk reserve" in caplog.text and "under queue.min_free_bytes" in caplog.text
    q.close()
    q = DurableQueue(tmp_path / "q.db", min_free_bytes=0)  # both counters are persistent
    assert (q.dropped_total, q.produced_total) == (3 * (kept[0] - 6), 63)


def test_reserve_with_no_room_writes_nothing(tmp_path):
    from edge_agent.queue import QueueNoSpace
    q = DurableQueue(tmp_path / "q.db", min_free_bytes=1 << 62)
    try:
        q.append("metrics", "a1", big())
    except QueueNoSpace as e:
        assert "min_free_bytes" in str(e)
    else:
        raise AssertionError("an empty queue under the reserve grew its file")
    assert (q.depth, q.next_seq, q.dropped_total, q.produced_total) == (0, 1, 0, 0) and not q.writable
    q.min_free_bytes = 0  # space is back
    assert q.append("metrics", "a1", big()) == [1] and q.writable and q.produced_total == 1


def test_sqlite_full_rolls_back_and_recovers(tmp_path):
    """SQLITE_FULL (max_page_count stands in for the disk): counters unchanged, no transaction left
    open, the queue works again once there is room -- without reopening it."""
    q = DurableQueue(tmp_path / "q.db", min_free_bytes=0, max_messages=1000)
    put(q, 3)
    q.db.execute(f"PRAGMA max_page_count={q.db.execute('PRAGMA page_count').fetchone()[0]}")
    before = (q.depth, q.bytes, q.next_seq, q.dropped_total, q.produced_total)
    failures = 0
    for _ in range(5):
        try:
            q.append("metrics", "a1", big(1, 20000))
        except sqlite3.OperationalError as e:
            assert "full" in str(e)
            failures += 1
    assert failures == 5 and not q.db.in_transaction
    assert (q.depth, q.bytes, q.next_seq, q.dropped_total, q.produced_total) == before
    q.count_drops(4)  # e.g. items lost from memory meanwhile: counted, saved once a write succeeds
    assert q.dropped_total == 4
    q.db.execute("PRAGMA max_page_count=1000000")
    assert q.append("metrics", "a1", big()) == [4]
    assert rows_on_disk(tmp_path / "q.db") == [1, 2, 3, 4]
    with closing(sqlite3.connect(tmp_path / "q.db")) as db:
        meta = dict(db.execute("SELECT key, value FROM meta"))
    assert (meta["dropped_total"], meta["produced_total"], meta["next_seq"]) == ("4", "8", "5")


def test_bound_counts_items_of_dropped_messages(tmp_path):
    q = DurableQueue(tmp_path / "q.db", max_messages=2, min_free_bytes=0)
    for n in (5, 1, 7, 2):
        q.append("metrics", "a1", [items(n)])
    assert [r.seq for r in q.peek(0, 10)] == [3, 4]
    assert q.dropped_total == 6 and q.produced_total == 15


def test_wal_stays_small(tmp_path):
    from edge_agent.queue import WAL_LIMIT_BYTES
    q = DurableQueue(tmp_path / "q.db", min_free_bytes=0)
    reader = sqlite3.connect(tmp_path / "q.db")  # an operator's shell looking at the queue
    biggest = 0
    for i in range(300):
        q.append("metrics", "a1", [items(4, 4000)])
        if i % 3 == 0:
            reader.execute("SELECT count(*) FROM messages").fetchone()
        q.ack([r.seq for r in q.peek(0, 100)][:-2])
        biggest = max(biggest, q.wal_bytes())
    reader.close()
    assert 0 < biggest <= WAL_LIMIT_BYTES + 256 * 1024, biggest


class _BrokenQueue:
    """A queue whose disk is full: every write fails."""
    path, epoch = "/full/q.db", "e1"

    def __init__(self):
        self.dropped_total = self.produced_total = 0
        self.appends = 0

    def append(self, *a, **k):
        self.appends += 1
        raise sqlite3.OperationalError("database or disk is full")

    def count_drops(self, n):
        self.dropped_total += n
        self.produced_total += n


def test_batcher_overflow_is_bounded_and_counted(tmp_path):
    q = DurableQueue(tmp_path / "q.db", min_free_bytes=1 << 62)   # cannot write at all
    b = Batcher(q, "a1", max_message_bytes=4096, max_items=5, overflow_max_items=20)
    for i in range(50):
        b.add([Sample("m", "d1", {"n": i})])
    assert b.count == 20 and q.dropped_total == 30 == b.shed_total
    try:
        b.flush()
    except OSError:
        pass
    else:
        raise AssertionError("flush should fail under the reserve with an empty queue")
    assert b.count == 20
    q.min_free_bytes = 0  # space is back
    assert b.flush() >= 1 and b.count == 0
    kept = [i["f"]["n"] for r in q.peek(0, 10) for i in orjson.loads(wire.unpack(r.payload))["samples"]]
    assert kept == list(range(30, 50))  # the oldest were the ones dropped
    assert q.produced_total == 50 and q.produced_total - q.dropped_total == len(kept)


def test_batcher_overflow_counts_the_samples_of_tables(tmp_path):
    q = DurableQueue(tmp_path / "q.db", min_free_bytes=1 << 62)   # cannot write at all
    b = Batcher(q, "a1", max_message_bytes=4096, max_items=5, overflow_max_items=20, tables=True)
    for i in range(50):        # 50 polls of 4 ports: 50 tables of 4 samples
        b.add([Sample("m", "d1", {"n": i}, {"port": p}, time_ms=1_765_000_000_000 + i) for p in range(4)])
    assert b.count == 20 and q.dropped_total == 180 == b.shed_total
    q.min_free_bytes = 0
    assert b.flush() >= 1 and b.count == 0
    kept = [wire.decode(wire.topic("s", "b", "a1", r.kind), r.payload).items for r in q.peek(0, 10)]
    assert [it["f"]["n"] for m in kept for it in m] == [i for i in range(45, 50) for _ in range(4)]
    assert q.produced_total == 200 and q.produced_total - q.dropped_total == 20


def test_failing_flush_backs_off_and_logs_once(caplog):
    import asyncio
    import logging

    async def scenario():
        q = _BrokenQueue()
        b = Batcher(q, "a1", max_message_bytes=4096, max_items=1)
        b.add([Sample("m", "d1", {"n": 1})])   # full is set and stays set while flushes fail
        ticks = 0

        async def other_work():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1
        tasks = [asyncio.create_task(b.run(0.1)), asyncio.create_task(other_work())]
        await asyncio.sleep(3.5)
        for t in tasks:
            t.cancel()
        return q.appends, ticks

    with caplog.at_level(logging.INFO):
        appends, ticks = asyncio.run(scenario())
    # attempts at 0, 1, 3 s (backoff 1, 2, 4 ...), not thousands; the loop kept serving other tasks
    assert 2 <= appends <= 4, appends
    assert ticks > 20
    assert caplog.text.count("could not write to the queue") == 1


def test_rate_limited_log_counts_repeats(caplog):
    import logging
    from edge_agent.ratelog import RateLimitedLog
    r = RateLimitedLog(logging.getLogger("t"), interval_s=0.2)
    with caplog.at_level(logging.INFO):
        assert r.log(logging.ERROR, "k", "disk %s", "full")
        assert not any(r.log(logging.ERROR, "k", "disk %s", "full") for _ in range(99))
        import time
        time.sleep(0.25)
        assert r.log(logging.ERROR, "k", "disk %s", "full")
        r.recovered("ok again")
    lines = [x.getMessage() for x in caplog.records]
    assert lines == ["disk full", "disk full (repeated 99 times in the last 0 s)",
                     "ok again (0 repeats were not logged)"]
