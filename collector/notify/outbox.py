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
import time
from typing import Any, Awaitable, Callable

from collector.store.outbox import DB, OutboxStore

from .channels.base import DeliveryError  # noqa: F401  (re-exported)

log = logging.getLogger("campus_sense.notify")

def backoff(attempts: int, initial: float, maximum: float, rnd: Callable[[], float] = random.random) -> float:
    """Delay before retry number ``attempts`` (1 = first retry): exponential with "equal jitter",
    i.e. uniformly in [d/2, d] where d = min(maximum, initial * 2**(attempts-1))."""
    d = min(maximum, initial * (2 ** max(0, attempts - 1)))
    return d / 2 + rnd() * d / 2


class Outbox:
    """Enqueue and dispatch; the rows live in ``collector.store.outbox.OutboxStore``."""

    def __init__(self, db: DB):
        self.db = db
        self.store = OutboxStore(db)
        #: None, or whether this process may send now (a singleton lease when several collectors
        #: share the outbox in PostgreSQL: only its holder delivers)
        self.may_send: Callable[[], bool] | None = None
        #: longest sleep of an idle dispatcher; short when other processes enqueue (they cannot wake us)
        self.idle_s = 1.0 if db.pg else 30.0
        self._wake: dict[str, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ writes
    def enqueue(self, channel: str, route: str, group_key: str, notification: dict,
                now: float | None = None) -> int:
        now = time.time() if now is None else now
        row_id = self.store.insert(channel, route, group_key, notification, now)
        self.wake(channel)
        return row_id

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
        self.store.mark_sent(row_id, now)

    def mark_failed_attempt(self, row: dict, error: str, now: float, retry: Any, permanent: bool) -> str:
        attempts = row["attempts"] + 1
        too_old = now - row["created_at"] > retry.max_age
        if permanent or attempts >= retry.max_attempts or too_old:
            why = ("permanent error" if permanent else
                   f"gave up after {attempts} attempts" if attempts >= retry.max_attempts else
                   f"gave up: older than {retry.max_age:g}s")
            self.store.mark_failed(row["id"], attempts, now, f"{error} ({why})")
            return "failed"
        nxt = now + backoff(attempts, retry.initial_backoff, retry.max_backoff)
        self.store.mark_retry(row["id"], attempts, now, nxt, error)
        return "pending"

    def fail_unknown_channels(self, known: set[str], now: float) -> int:
        return self.store.fail_unknown_channels(known, now)

    def retry(self, row_id: int, now: float | None = None) -> bool:
        """Put a failed delivery back to pending (operator action)."""
        now = time.time() if now is None else now
        if not self.store.requeue_failed(row_id, now):
            return False
        row = self.get(row_id)
        if row:
            self.wake(row["channel"])
        return True

    def prune(self, keep_s: float, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return self.store.prune(now - keep_s)

    # ------------------------------------------------------------------ reads
    def get(self, row_id: int, payload: bool = False) -> dict | None:
        return self.store.get(row_id, payload)

    def due(self, channel: str, now: float, limit: int = 20) -> list[dict]:
        return self.store.due(channel, now, limit)

    def next_due(self, channel: str) -> float | None:
        return self.store.next_due(channel)

    def deliveries(self, limit: int = 100, state: str | None = None, channel: str | None = None,
                   payload: bool = False) -> list[dict]:
        return self.store.deliveries(limit, state, channel, payload)

    def counts(self) -> dict[str, dict[str, int]]:
        return self.store.counts()

    def channel_info(self, channel: str) -> dict:
        return self.store.channel_info(channel)

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
        if self.may_send is not None and not self.may_send():
            return min(self.idle_s, 1.0)     # another collector holds the sending lease
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
        return self.idle_s if nxt is None else max(0.0, min(self.idle_s, nxt - time.time()))

    def postpone_channel(self, channel: str, row_id: int) -> None:
        """Move the channel's other pending rows due before ``row_id``'s retry to that time."""
        self.store.postpone_channel(channel, row_id)

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
        except self.db.Error as e:  # pragma: no cover
            log.error("notify outbox update failed: %s", e)
            return None
        if on_result:
            try:
                on_result(channel, row, err)
            except Exception:  # pragma: no cover
                log.exception("notify on_result hook")
        return result
