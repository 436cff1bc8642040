"""Durable outgoing queue: SQLite in WAL mode, one row per MQTT message.

Why: a building uplink or the broker can be down for hours; samples taken
meanwhile must survive that and an agent crash. A message is committed here,
with its final ``epoch``/``seq`` baked into the payload, BEFORE it is published,
and deleted only when the collector has committed it (``confirm``: its commit
watermark; ``ack`` on the broker's PUBACK with ``publish.delete_on: puback``), so
the worst case is a duplicate (the collector drops those by seq), never a silent
loss or a reused seq.

The epoch is a random id created with the database: if the file is wiped the
new queue restarts at seq 1 under a new epoch and the collector cannot confuse
it with the old one. ``next_seq`` and ``dropped_total`` live in the ``meta``
table and are updated in the same transaction as the rows they describe.

The queue is bounded (``max_messages``, optional ``max_bytes``); when full the
OLDEST rows are dropped (recent data is worth more after a long outage) and
counted. Calls are synchronous: each is one small transaction on a local file,
and a single asyncio thread owns the connection (``busy_timeout`` bounds any wait
for a lock held by an outside reader, so no call stalls the event loop for long).

A full disk (issue 9): the WAL is kept small (``journal_size_limit``, frequent
auto-checkpoints, a TRUNCATE checkpoint when it still grew), and when the
filesystem has less than ``min_free_bytes`` available the queue stops growing:
new rows only reuse pages inside the file, freed by dropping the oldest rows
(counted). If even that is impossible, or a write fails, ``append`` raises and
the caller keeps the items in memory (bounded, losses counted with
``count_drops``) and retries later; a failed transaction is always rolled back
so the queue works again as soon as space returns.

``dropped_total`` counts ITEMS (samples, events, facts; a table counts its rows), not messages: items of
dropped rows, oversized items, items lost in memory. ``produced_total`` counts the
items that entered the queue's accounting (committed in a row or counted as
dropped), so ``produced_total - dropped_total`` items are, or will be, delivered.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Iterable, NamedTuple

import orjson

from campus_sense import wire
from edge_agent.ratelog import RateLimitedLog

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


class QueueNoSpace(OSError):
    """Under the free-space reserve and no room inside the file: nothing was written."""

    def __init__(self, msg: str):
        super().__init__(errno.ENOSPC, msg)


#: default free-space reserve: this, or 5 % of a smaller filesystem
DEFAULT_MIN_FREE_BYTES = 8 * 1024 * 1024
#: the WAL is truncated to this after a checkpoint, and checkpointed with TRUNCATE if it grew beyond
WAL_LIMIT_BYTES = 1024 * 1024
WAL_AUTOCHECKPOINT_PAGES = 128
#: longest wait for a lock held by another connection (an operator's sqlite3 shell)
BUSY_TIMEOUT_S = 1.0


class DurableQueue:
    def __init__(self, path: str | Path, max_messages: int = 200_000, max_bytes: int | None = None,
                 min_free_bytes: int | None = None):
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
        self._unlogged_drops = [0, 0]  # messages, items
        self._warn = RateLimitedLog(log)
        self._wal = self.path.with_name(self.path.name + "-wal")
        self._next_checkpoint = 0.0
        #: False after a write failed, True again once one commits
        self.writable = True
        # explicit BEGIN/COMMIT; timeout = busy_timeout
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        self.db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed message survives power loss too, not only a process crash.
        self.db.execute("PRAGMA synchronous=FULL")
        self._pragmas()
        self.db.executescript(_SCHEMA)
        if "items" not in [r[1] for r in self.db.execute("PRAGMA table_info(messages)")]:
            self.db.execute("ALTER TABLE messages ADD COLUMN items INTEGER")  # NULL: count from the payload
        with self._tx():
            meta = dict(self.db.execute("SELECT key, value FROM meta"))
            if "epoch" not in meta:
                meta = {"epoch": secrets.token_hex(8), "next_seq": "1", "dropped_total": "0", "produced_total": "0"}
                self.db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        self.epoch: str = meta["epoch"]
        self.next_seq = int(meta["next_seq"])
        self.dropped_total = int(meta["dropped_total"])
        # a queue from before produced_total was kept: count from the drops (delivered items are unknown)
        self.produced_total = int(meta.get("produced_total", meta["dropped_total"]))
        if min_free_bytes is None:
            st = os.statvfs(self.path.parent)
            min_free_bytes = min(DEFAULT_MIN_FREE_BYTES, st.f_blocks * st.f_frsize // 20)
        self.min_free_bytes = min_free_bytes
        self.depth, self.bytes = self.db.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM messages").fetchone()

    def _tx(self):
        return _Tx(self.db)

    def _pragmas(self) -> None:
        # The WAL must not grow to the size of the disk: checkpoint often, truncate after a checkpoint.
        self.db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        self.db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        self.db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        self.page_size = self.db.execute("PRAGMA page_size").fetchone()[0]

    def free_bytes(self) -> int:
        """Bytes available to this process on the queue's filesystem."""
        st = os.statvfs(self.path.parent)
        return st.f_bavail * st.f_frsize

    def wal_bytes(self) -> int:
        try:
            return os.stat(self._wal).st_size
        except FileNotFoundError:
            return 0

    def _checkpoint_if_big(self) -> None:
        """Backstop for the auto-checkpoint: a WAL above the limit is checkpointed and truncated
        (at most every 5 s; a reader holding it up makes this wait at most busy_timeout)."""
        if time.monotonic() < self._next_checkpoint or self.wal_bytes() <= WAL_LIMIT_BYTES:
            return
        self._next_checkpoint = time.monotonic() + 5
        try:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as e:
            self._warn.log(logging.WARNING, f"checkpoint {e}", "queue %s: WAL checkpoint failed (%s), WAL is %d bytes",
                           self.path, e, self.wal_bytes())

    # ------------------------------------------------------------ writing
    def append(self, kind: str, agent: str, chunks: Iterable[list[bytes]], now_ms: int | None = None,
               items: list[int] | None = None) -> list[int]:
        """Wrap each chunk of encoded items into one durable message, assign the next
        seqs and commit them (and the new ``next_seq``) in one transaction. ``items``: the items
        each chunk holds (a table of samples counts its rows), default one per encoded item."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        seqs: list[int] = []
        saved = self.depth, self.bytes, self.dropped_total, self.produced_total
        drops = {"full": [0, 0], "reserve": [0, 0]}  # why -> [messages, items], logged once committed
        try:
            seq = self._append(kind, agent, chunks, now_ms, seqs, drops, items)
        except BaseException as e:
            # the transaction was rolled back: so are the counters (nothing was dropped or stored)
            self.depth, self.bytes, self.dropped_total, self.produced_total = saved
            if isinstance(e, (sqlite3.Error, OSError)):
                self.writable = False
            raise
        self.next_seq = seq
        self.writable = True
        for why, (msgs, items) in drops.items():
            if msgs:
                self._log_drops(why, msgs, items)
        self._checkpoint_if_big()
        return seqs

    def _append(self, kind, agent, chunks, now_ms, seqs, drops, items) -> int:
        free = self.free_bytes()
        with self._tx():
            seq = self.next_seq
            rows = []
            for k, chunk in enumerate(chunks):
                payload = wire.pack(wire.encode_durable(kind, agent, self.epoch, seq, now_ms, chunk))
                n = len(chunk) if items is None else items[k]
                self.produced_total += n
                if self.max_bytes is not None and len(payload) > self.max_bytes:
                    log.warning("dropping a %s message of %d bytes (%d items): larger than queue.max_bytes=%d",
                                kind, len(payload), n, self.max_bytes)
                    self._add_drops(n)
                    continue  # the seq is not consumed: no gap for the collector to report
                rows.append((seq, kind, now_ms, payload, n))
                seq += 1
            if rows and free < self.min_free_bytes:
                drops["reserve"] = self._make_room(sum(len(r[3]) for r in rows), free)
            for row in rows:
                self.db.execute("INSERT INTO messages(seq, kind, created_ms, payload, items) VALUES (?, ?, ?, ?, ?)",
                                row)
                self.depth += 1
                self.bytes += len(row[3])
                seqs.append(row[0])
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (str(seq),))
            drops["full"] = self._enforce_bound()
            self._save_counters()
        return seq

    def _make_room(self, need: int, free: int) -> list[int]:
        """Under the free-space reserve the file must not grow: the new rows may only use pages
        already free inside it, so drop the oldest rows until enough are; [messages, items] dropped.
        Raises QueueNoSpace if even an empty queue has no room (the caller keeps the items)."""
        self._warn.log(logging.WARNING, "reserve",
                       "queue %s: %d bytes free on its filesystem, under queue.min_free_bytes=%d: the queue "
                       "does not grow, the oldest messages make room for new ones", self.path, free,
                       self.min_free_bytes)
        room = self.db.execute("PRAGMA freelist_count").fetchone()[0] * self.page_size
        short = need + need // 8 + self.page_size - room  # page and b-tree overhead
        if short <= 0:
            return [0, 0]
        cut = None
        for seq, n in self.db.execute("SELECT seq, length(payload) FROM messages ORDER BY seq"):
            short -= n
            cut = seq
            if short <= 0:
                break
        if short > 0:
            raise QueueNoSpace(f"queue {self.path}: {free} bytes free, under queue.min_free_bytes="
                               f"{self.min_free_bytes}, and no room in the file for {need} bytes")
        return self._drop_where("seq <= ?", (cut,))

    def _enforce_bound(self) -> list[int]:
        """Drop the oldest rows until both bounds hold; return [messages, items] dropped."""
        over = self.depth - self.max_messages
        n = [0, 0]
        if over > 0:
            n = self._drop_oldest(over)
        while self.max_bytes is not None and self.bytes > self.max_bytes and self.depth:
            m, i = self._drop_oldest(max(1, self.depth // 100))
            n = [n[0] + m, n[1] + i]
        return n

    def _log_drops(self, why: str, msgs: int, items: int) -> None:
        # During a long outage this happens every batch; say it once a minute (only committed drops).
        u = self._unlogged_drops
        u[0] += msgs
        u[1] += items
        if time.monotonic() - self._last_drop_log >= 60:
            reason = (f"queue full (max_messages={self.max_messages}, max_bytes={self.max_bytes})" if why == "full"
                      else f"disk reserve (queue.min_free_bytes={self.min_free_bytes})")
            log.warning("%s: dropped the %d oldest messages (%d items; %d items dropped in total)",
                        reason, u[0], u[1], self.dropped_total)
            self._last_drop_log = time.monotonic()
            u[0] = u[1] = 0

    def _drop_oldest(self, count: int) -> list[int]:
        return self._drop_where("seq IN (SELECT seq FROM messages ORDER BY seq LIMIT ?)", (count,))

    def _drop_where(self, where: str, params: tuple) -> list[int]:
        """Delete rows as dropped (never delivered) and count their items; [messages, items]."""
        rows = self.db.execute(
            f"DELETE FROM messages WHERE {where} "
            "RETURNING length(payload), items, CASE WHEN items IS NULL THEN payload END", params).fetchall()
        self.depth -= len(rows)
        self.bytes -= sum(r[0] for r in rows)
        items = sum(r[1] if r[1] is not None else _count_items(r[2]) for r in rows)
        self._add_drops(items)
        return [len(rows), items]

    def _add_drops(self, n: int) -> None:
        """Count ``n`` dropped items in memory; ``_save_counters`` writes them in the same transaction."""
        self.dropped_total += n

    def _save_counters(self) -> None:
        self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                            (("dropped_total", str(self.dropped_total)),
                             ("produced_total", str(self.produced_total))))

    def count_drops(self, n: int) -> None:
        """Record items dropped before they reached the queue (too big for any message, lost from
        the in-memory overflow while the disk was full). Never raises: when the counters cannot be
        written now, they are kept in memory and saved by the next transaction that commits."""
        self.produced_total += n
        self._add_drops(n)
        if not self.writable:
            return
        try:
            with self._tx():
                self._save_counters()
        except (sqlite3.Error, OSError) as e:
            self.writable = False
            self._warn.log(logging.WARNING, f"counters {e}", "queue %s: cannot save the drop counters now (%s); "
                           "kept in memory until a write succeeds", self.path, e)

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

    def confirm(self, upto: int, hwm: int | None = None, gaps: Iterable[tuple[int, int]] = ()) -> int:
        """Delete rows the collector has committed (its commit watermark, campus_sense/wire.py):
        every seq <= ``upto``, and seqs <= ``hwm`` outside ``gaps``. Returns rows deleted."""
        hwm = upto if hwm is None else hwm
        if self.depth == 0:
            return 0
        where, args = "seq <= ?", [upto]
        if hwm > upto:
            cond = " AND ".join(["NOT (seq BETWEEN ? AND ?)"] * len(gaps))
            where += f" OR (seq > ? AND seq <= ?{' AND ' + cond if cond else ''})"
            args += [upto, hwm, *[x for g in gaps for x in g]]
        with self._tx():
            rows = self.db.execute(f"DELETE FROM messages WHERE {where} RETURNING length(payload)", args).fetchall()
        self.depth -= len(rows)
        self.bytes -= sum(r[0] for r in rows)
        return len(rows)

    def oldest_seq(self) -> int | None:
        r = self.db.execute("SELECT min(seq) FROM messages").fetchone()
        return r[0] if r else None

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
        if not self.writable:  # drops counted in memory while the disk was full: last chance to save them
            try:
                with self._tx():
                    self._save_counters()
            except (sqlite3.Error, OSError) as e:
                log.warning("queue %s: could not save dropped_total=%d on close: %s", self.path,
                            self.dropped_total, e)
        self.db.close()
        self._lock.close()


def _count_items(payload: bytes) -> int:
    """Items in a durable message (rows written before the ``items`` column existed)."""
    try:
        body = orjson.loads(wire.unpack(payload, 1 << 62))
        return next((len(v) for k, v in body.items() if k in ("samples", "events", "facts")), 1)
    except (orjson.JSONDecodeError, AttributeError, wire.WireError):
        return 1


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error (sqlite3's implicit transactions are off)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return
            except BaseException:
                self._rollback()  # a failed COMMIT (disk full) leaves the transaction open
                raise
        self._rollback()

    def _rollback(self) -> None:
        # SQLITE_FULL may already have rolled back; a left-open transaction would make every later
        # BEGIN fail, so the queue would never recover when space returns.
        if self.db.in_transaction:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error as e:
                log.warning("queue rollback failed: %s", e)
