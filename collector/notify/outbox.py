"""Durable SQLite outbox and per-channel dispatchers.

``enqueue`` is a single local INSERT (the caller never waits for a channel).
One asyncio task per channel takes due ``pending`` rows and sends them one by one;
a failure schedules a retry with exponential backoff and jitter; after
``max_attempts`` (or when the delivery is older than ``max_age``, or the peer
gave a permanent error) the row becomes ``failed``. Rows are only marked ``sent``
after the peer accepted them, so a restart resumes everything still pending
(at-least-once; webhooks get an ``X-Campus-Sense-Delivery`` id to de-duplicate).
"""
from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import orjson

log = logging.getLogger("campus_sense.notify")

SCHEMA = """
CREATE TABLE IF NOT EXISTS notify_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    route TEXT NOT NULL,
    group_key TEXT NOT NULL,
    status TEXT NOT NULL,            -- firing | resolved (of the notification)
    title TEXT NOT NULL,
    payload BLOB NOT NULL,           -- JSON notification
    state TEXT NOT NULL DEFAULT 'pending',   -- pending | sent | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    last_attempt_at REAL,
    sent_at REAL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS notify_outbox_due ON notify_outbox(channel, state, next_attempt_at);
CREATE INDEX IF NOT EXISTS notify_outbox_state ON notify_outbox(state, id);
"""

COLUMNS = ("id", "channel", "route", "group_key", "status", "title", "state", "attempts", "created_at",
           "next_attempt_at", "last_attempt_at", "sent_at", "last_error")


class DeliveryError(Exception):
    """A failed attempt. ``permanent`` errors are not retried (bad key, 4xx, sign mismatch)."""

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


class DB:
    """One SQLite connection shared by router and outbox, guarded by a lock so the
    listener may be called from any thread."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self.lock = threading.RLock()
        with self.lock:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA busy_timeout=30000")

    def execute(self, sql: str, args: tuple | list = ()) -> sqlite3.Cursor:
        with self.lock:
            return self.conn.execute(sql, args)

    def script(self, sql: str) -> None:
        with self.lock:
            self.conn.executescript(sql)

    def close(self) -> None:
        with self.lock:
            self.conn.close()


def backoff(attempts: int, initial: float, maximum: float, rnd: Callable[[], float] = random.random) -> float:
    """Delay before retry number ``attempts`` (1 = first retry): exponential with "equal jitter",
    i.e. uniformly in [d/2, d] where d = min(maximum, initial * 2**(attempts-1))."""
    d = min(maximum, initial * (2 ** max(0, attempts - 1)))
    return d / 2 + rnd() * d / 2


class Outbox:
    def __init__(self, db: DB):
        self.db = db
        db.script(SCHEMA)
        self._wake: dict[str, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ writes
    def enqueue(self, channel: str, route: str, group_key: str, notification: dict,
                now: float | None = None) -> int:
        now = time.time() if now is None else now
        cur = self.db.execute(
            "INSERT INTO notify_outbox(channel, route, group_key, status, title, payload, created_at,"
            " next_attempt_at) VALUES (?,?,?,?,?,?,?,?)",
            (channel, route, group_key, notification["status"], notification.get("title", ""),
             orjson.dumps(notification), now, now))
        self.wake(channel)
        return int(cur.lastrowid)

    def wake(self, channel: str) -> None:
        ev, loop = self._wake.get(channel), self._loop
        if ev is None or loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            ev.set()
        else:
            loop.call_soon_threadsafe(ev.set)

    def mark_sent(self, row_id: int, now: float) -> None:
        self.db.execute("UPDATE notify_outbox SET state='sent', attempts=attempts+1, last_attempt_at=?,"
                        " sent_at=?, last_error=NULL WHERE id=?", (now, now, row_id))

    def mark_failed_attempt(self, row: dict, error: str, now: float, retry: Any, permanent: bool) -> str:
        attempts = row["attempts"] + 1
        too_old = now - row["created_at"] > retry.max_age
        if permanent or attempts >= retry.max_attempts or too_old:
            why = ("permanent error" if permanent else
                   f"gave up after {attempts} attempts" if attempts >= retry.max_attempts else
                   f"gave up: older than {retry.max_age:g}s")
            self.db.execute("UPDATE notify_outbox SET state='failed', attempts=?, last_attempt_at=?,"
                            " last_error=? WHERE id=?", (attempts, now, f"{error} ({why})", row["id"]))
            return "failed"
        nxt = now + backoff(attempts, retry.initial_backoff, retry.max_backoff)
        self.db.execute("UPDATE notify_outbox SET attempts=?, last_attempt_at=?, next_attempt_at=?,"
                        " last_error=? WHERE id=?", (attempts, now, nxt, error, row["id"]))
        return "pending"

    def fail_unknown_channels(self, known: set[str], now: float) -> int:
        if not known:
            return 0
        q = ",".join("?" * len(known))
        cur = self.db.execute(
            f"UPDATE notify_outbox SET state='failed', last_error='channel no longer configured',"
            f" last_attempt_at=? WHERE state='pending' AND channel NOT IN ({q})", (now, *known))
        return cur.rowcount

    def retry(self, row_id: int, now: float | None = None) -> bool:
        """Put a failed delivery back to pending (operator action)."""
        now = time.time() if now is None else now
        cur = self.db.execute("UPDATE notify_outbox SET state='pending', attempts=0, created_at=?,"
                              " next_attempt_at=? WHERE id=? AND state='failed'", (now, now, row_id))
        if cur.rowcount:
            row = self.get(row_id)
            if row:
                self.wake(row["channel"])
        return bool(cur.rowcount)

    def prune(self, keep_s: float, now: float | None = None) -> int:
        now = time.time() if now is None else now
        cur = self.db.execute("DELETE FROM notify_outbox WHERE state IN ('sent','failed') AND"
                              " COALESCE(sent_at, last_attempt_at, created_at) < ?", (now - keep_s,))
        return cur.rowcount

    # ------------------------------------------------------------------ reads
    def _rows(self, sql: str, args: tuple = (), payload: bool = False) -> list[dict]:
        cols = COLUMNS + (("payload",) if payload else ())
        with self.db.lock:
            rows = self.db.conn.execute(sql.replace("*", ", ".join(cols), 1), args).fetchall()
        out = []
        for r in rows:
            d = dict(zip(cols, r))
            if payload:
                d["payload"] = orjson.loads(d["payload"])
            out.append(d)
        return out

    def get(self, row_id: int, payload: bool = False) -> dict | None:
        r = self._rows("SELECT * FROM notify_outbox WHERE id=?", (row_id,), payload)
        return r[0] if r else None

    def due(self, channel: str, now: float, limit: int = 20) -> list[dict]:
        return self._rows("SELECT * FROM notify_outbox WHERE channel=? AND state='pending' AND"
                          " next_attempt_at<=? ORDER BY next_attempt_at, id LIMIT ?",
                          (channel, now, limit), payload=True)

    def next_due(self, channel: str) -> float | None:
        r = self.db.execute("SELECT MIN(next_attempt_at) FROM notify_outbox WHERE channel=? AND"
                            " state='pending'", (channel,)).fetchone()
        return r[0] if r else None

    def deliveries(self, limit: int = 100, state: str | None = None, channel: str | None = None,
                   payload: bool = False) -> list[dict]:
        where, args = [], []
        if state:
            where.append("state=?")
            args.append(state)
        if channel:
            where.append("channel=?")
            args.append(channel)
        sql = "SELECT * FROM notify_outbox" + (" WHERE " + " AND ".join(where) if where else "") + \
            " ORDER BY id DESC LIMIT ?"
        return self._rows(sql, (*args, int(limit)), payload)

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for ch, st, n in self.db.execute("SELECT channel, state, COUNT(*) FROM notify_outbox"
                                         " GROUP BY channel, state").fetchall():
            out.setdefault(ch, {"pending": 0, "sent": 0, "failed": 0})[st] = n
        return out

    def channel_info(self, channel: str) -> dict:
        q = self.db.execute
        oldest = q("SELECT MIN(created_at) FROM notify_outbox WHERE channel=? AND state='pending'",
                   (channel,)).fetchone()[0]
        last_sent = q("SELECT MAX(sent_at) FROM notify_outbox WHERE channel=? AND state='sent'",
                      (channel,)).fetchone()[0]
        err = q("SELECT last_attempt_at, last_error FROM notify_outbox WHERE channel=? AND"
                " last_error IS NOT NULL ORDER BY last_attempt_at DESC LIMIT 1", (channel,)).fetchone()
        return {"oldest_pending_at": oldest, "last_sent_at": last_sent,
                "last_error_at": err[0] if err else None, "last_error": err[1] if err else None}

    # ------------------------------------------------------------------ dispatch
    async def run_channel(self, channel: str, send: Callable[[dict, int], Awaitable[None]],
                          retry: Any, timeout: float, stopping: asyncio.Event,
                          on_result: Callable[[str, dict, str | None], None] | None = None) -> None:
        """Deliver ``channel``'s pending rows until ``stopping`` is set. Never raises."""
        self._loop = asyncio.get_running_loop()
        ev = self._wake.setdefault(channel, asyncio.Event())
        while not stopping.is_set():
            try:
                wait = await self._cycle(channel, ev, send, retry, timeout, stopping, on_result)
            except asyncio.CancelledError:
                raise
            except Exception:  # database trouble or a bug: keep the dispatcher alive
                log.exception("notify %s dispatcher", channel)
                wait = 1.0
            if wait <= 0 or stopping.is_set():
                continue
            waiter = asyncio.ensure_future(ev.wait())
            stopper = asyncio.ensure_future(stopping.wait())
            try:
                await asyncio.wait({waiter, stopper}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                stopper.cancel()

    async def _cycle(self, channel, ev, send, retry, timeout, stopping, on_result) -> float:
        """Send what is due; return how long to sleep (woken early by enqueue/stop)."""
        ev.clear()
        rows = self.due(channel, time.time())
        for row in rows:
            if stopping.is_set():
                return 0.0
            if await self._attempt(channel, row, send, retry, timeout, on_result) == "pending":
                # transient failure (peer down, rate limited): the whole channel backs off
                # instead of hammering the peer with every other due row
                self.postpone_channel(channel, row["id"])
                break
        if rows:
            return 0.0
        nxt = self.next_due(channel)
        return 30.0 if nxt is None else max(0.0, min(30.0, nxt - time.time()))

    def postpone_channel(self, channel: str, row_id: int) -> None:
        """Move the channel's other pending rows due before ``row_id``'s retry to that time."""
        self.db.execute(
            "UPDATE notify_outbox SET next_attempt_at=(SELECT next_attempt_at FROM notify_outbox WHERE id=?)"
            " WHERE channel=? AND state='pending' AND id!=? AND"
            " next_attempt_at<(SELECT next_attempt_at FROM notify_outbox WHERE id=?)",
            (row_id, channel, row_id, row_id))

    async def _attempt(self, channel, row, send, retry, timeout, on_result) -> str | None:
        err: str | None = None
        permanent = False
        try:
            async with asyncio.timeout(timeout):
                await send(row["payload"], row["id"])
        except asyncio.TimeoutError:
            err = f"timeout after {timeout:g}s"
        except DeliveryError as e:
            err, permanent = str(e), e.permanent
        except asyncio.CancelledError:
            raise
        except Exception as e:  # any bug or library error is a failed attempt, never a dead task
            err = f"{type(e).__name__}: {e}"
        now = time.time()
        try:
            if err is None:
                self.mark_sent(row["id"], now)
                result = "sent"
            else:
                result = self.mark_failed_attempt(row, err, now, retry, permanent)
                lvl = logging.ERROR if result == "failed" else logging.WARNING
                log.log(lvl, "notify %s delivery %s attempt %d: %s%s", channel, row["id"],
                        row["attempts"] + 1, err, " -> failed" if result == "failed" else "")
        except sqlite3.Error as e:  # pragma: no cover
            log.error("notify outbox update failed: %s", e)
            return None
        if on_result:
            try:
                on_result(channel, row, err)
            except Exception:  # pragma: no cover
                log.exception("notify on_result hook")
        return result
