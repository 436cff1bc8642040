"""Durable outgoing queue: SQLite in WAL mode, one row per MQTT message.

Why: a building uplink or the broker can be down for hours; samples taken
meanwhile must survive that and an agent crash. A message is committed here,
with its final ``epoch``/``seq`` baked into the payload, BEFORE it is published,
and deleted only after the broker's PUBACK, so the worst case is a duplicate
(the collector drops those by seq), never a silent loss or a reused seq.

The epoch is a random id created with the database: if the file is wiped the
new queue restarts at seq 1 under a new epoch and the collector cannot confuse
it with the old one. ``next_seq`` and ``dropped_total`` live in the ``meta``
table and are updated in the same transaction as the rows they describe.

The queue is bounded (``max_messages``, optional ``max_bytes``); when full the
OLDEST rows are dropped (recent data is worth more after a long outage) and
counted. Calls are synchronous: each is one small transaction on a local file,
and a single asyncio thread owns the connection.
"""
from __future__ import annotations

import fcntl
import logging
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Iterable, NamedTuple

from campus_sense import wire

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    payload BLOB NOT NULL
);
"""


class Row(NamedTuple):
    seq: int
    kind: str
    created_ms: int
    payload: bytes


class QueueBusy(RuntimeError):
    """Another process owns this queue file."""


class DurableQueue:
    def __init__(self, path: str | Path, max_messages: int = 200_000, max_bytes: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_messages, self.max_bytes = max_messages, max_bytes
        # seqs are handed out from memory: two agents on one file would reuse them.
        self._lock = open(self.path.with_name(self.path.name + ".lock"), "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise QueueBusy(f"queue {self.path} is in use by another agent process") from None
        self._last_drop_log = 0.0
        self._unlogged_drops = 0
        self.db = sqlite3.connect(self.path, isolation_level=None)  # explicit BEGIN/COMMIT
        self.db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed message survives power loss too, not only a process crash.
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        with self._tx():
            meta = dict(self.db.execute("SELECT key, value FROM meta"))
            if "epoch" not in meta:
                meta = {"epoch": secrets.token_hex(8), "next_seq": "1", "dropped_total": "0"}
                self.db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        self.epoch: str = meta["epoch"]
        self.next_seq = int(meta["next_seq"])
        self.dropped_total = int(meta["dropped_total"])
        self.depth, self.bytes = self.db.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM messages").fetchone()

    def _tx(self):
        return _Tx(self.db)

    # ------------------------------------------------------------ writing
    def append(self, kind: str, agent: str, chunks: Iterable[list[bytes]], now_ms: int | None = None) -> list[int]:
        """Wrap each chunk of encoded items into one durable message, assign the next
        seqs and commit them (and the new ``next_seq``) in one transaction."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        seqs: list[int] = []
        saved = self.depth, self.bytes, self.dropped_total
        try:
            seq = self._append(kind, agent, chunks, now_ms, seqs)
        except BaseException:
            self.depth, self.bytes, self.dropped_total = saved  # the transaction was rolled back
            raise
        self.next_seq = seq
        return seqs

    def _append(self, kind, agent, chunks, now_ms, seqs) -> int:
        dropped = 0
        with self._tx():
            seq = self.next_seq
            for chunk in chunks:
                payload = wire.encode_durable(kind, agent, self.epoch, seq, now_ms, chunk)
                if self.max_bytes is not None and len(payload) > self.max_bytes:
                    log.warning("dropping a %s message of %d bytes: larger than queue.max_bytes=%d",
                                kind, len(payload), self.max_bytes)
                    dropped += 1
                    continue  # the seq is not consumed: no gap for the collector to report
                self.db.execute("INSERT INTO messages VALUES (?, ?, ?, ?)", (seq, kind, now_ms, payload))
                self.depth += 1
                self.bytes += len(payload)
                seqs.append(seq)
                seq += 1
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (str(seq),))
            dropped += self._enforce_bound()
            if dropped:
                self._add_drops(dropped)
        return seq

    def _enforce_bound(self) -> int:
        """Drop the oldest rows until both bounds hold; return how many were dropped."""
        over = self.depth - self.max_messages
        n = 0
        if over > 0:
            n += self._drop_oldest(over)
        while self.max_bytes is not None and self.bytes > self.max_bytes and self.depth:
            n += self._drop_oldest(max(1, self.depth // 100))
        if n:
            # During a long outage this happens every batch; say it once a minute.
            self._unlogged_drops += n
            if time.monotonic() - self._last_drop_log >= 60:
                log.warning("queue full (max_messages=%d, max_bytes=%s): dropped the %d oldest messages "
                            "(%d in total)", self.max_messages, self.max_bytes, self._unlogged_drops,
                            self.dropped_total + n)
                self._last_drop_log, self._unlogged_drops = time.monotonic(), 0
        return n

    def _drop_oldest(self, count: int) -> int:
        rows = self.db.execute(
            "DELETE FROM messages WHERE seq IN (SELECT seq FROM messages ORDER BY seq LIMIT ?) "
            "RETURNING length(payload)", (count,)).fetchall()
        self.depth -= len(rows)
        self.bytes -= sum(r[0] for r in rows)
        return len(rows)

    def _add_drops(self, n: int) -> None:
        self.dropped_total += n
        self.db.execute("UPDATE meta SET value = ? WHERE key = 'dropped_total'", (str(self.dropped_total),))

    def count_drops(self, n: int) -> None:
        """Record items dropped before they reached the queue (e.g. too big for any message)."""
        with self._tx():
            self._add_drops(n)

    # ------------------------------------------------------------ reading
    def peek(self, after_seq: int = 0, limit: int = 32) -> list[Row]:
        """The oldest rows with seq > after_seq, in seq order (replay order)."""
        return [Row(*r) for r in self.db.execute(
            "SELECT seq, kind, created_ms, payload FROM messages WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit))]

    def ack(self, seqs: Iterable[int]) -> int:
        """Delete rows the broker acknowledged; rows already dropped are ignored."""
        seqs = list(seqs)
        if not seqs:
            return 0
        with self._tx():
            rows = self.db.execute(
                f"DELETE FROM messages WHERE seq IN ({','.join('?' * len(seqs))}) RETURNING length(payload)",
                seqs).fetchall()
        self.depth -= len(rows)
        self.bytes -= sum(r[0] for r in rows)
        return len(rows)

    @property
    def last_seq(self) -> int:
        return self.next_seq - 1

    def oldest_age_s(self, now_ms: int | None = None) -> float:
        r = self.db.execute("SELECT created_ms FROM messages ORDER BY seq LIMIT 1").fetchone()
        if r is None:
            return 0.0
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        return max(0.0, (now_ms - r[0]) / 1000)

    def close(self) -> None:
        self.db.close()
        self._lock.close()


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error (sqlite3's implicit transactions are off)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
