"""The live hub: thread-safe fan-out of ``AlertChange``s to asyncio subscribers (the API's SSE streams,
``GET /api/v1/alerts/stream``). An engine listener; a slow client gets ``{"kind":"resync"}`` instead
of silently losing changes."""
from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any


class ChangeHub:
    """Thread-safe fan-out of alert changes to asyncio subscribers (SSE streams)."""

    def __init__(self, max_queue: int = 1000):
        self._subs: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Queue, Any]] = {}
        self._lock = threading.Lock()
        self._next = 0
        self.max_queue = max_queue
        self.seq = 0

    def subscribe(self, loop: asyncio.AbstractEventLoop, accept=None) -> tuple[int, asyncio.Queue]:
        q: asyncio.Queue = asyncio.Queue(self.max_queue)
        with self._lock:
            self._next += 1
            self._subs[self._next] = (loop, q, accept)
            return self._next, q

    def unsubscribe(self, sid: int) -> None:
        with self._lock:
            self._subs.pop(sid, None)

    @property
    def clients(self) -> int:
        return len(self._subs)

    def publish(self, change) -> None:
        """Engine listener (any thread)."""
        with self._lock:
            if not self._subs:
                return
            self.seq += 1
            subs = list(self._subs.values())
            seq = self.seq
        d = change.to_dict() if hasattr(change, "to_dict") else dict(change)
        d["seq"] = seq
        d["emitted_ms"] = time.time() * 1000
        data = json.dumps(d, default=str, separators=(",", ":"))
        alert = change.alert if hasattr(change, "alert") else None
        for loop, q, accept in subs:
            if accept is not None and alert is not None and not accept(alert):
                continue
            try:
                loop.call_soon_threadsafe(_put, q, data)
            except RuntimeError:  # loop closed
                pass


def _put(q: asyncio.Queue, data: str) -> None:
    try:
        q.put_nowait(data)
    except asyncio.QueueFull:
        # slow client: tell it to reload instead of silently losing changes
        while not q.empty():
            q.get_nowait()
        q.put_nowait('{"kind":"resync"}')


class SharedFeed:
    """Several collectors on one PostgreSQL: each API node's live stream carries EVERY collector's alert
    changes (a site's rules run where its partition runs; an ack may come through any node). The hub
    is then fed from the shared ``alert_history`` table, polled every ``interval_s``, in id order,
    instead of from the local engine, so every node streams the same changes.

    History ids come from a sequence: a transaction may commit a lower id after a higher one was
    read. Ids above the newest contiguous one are remembered; a missing id is waited for
    ``gap_s`` (then it was rolled back) so nothing committed late is skipped or sent twice."""

    BATCH = 1000

    def __init__(self, store: Any, hub: ChangeHub, interval_s: float = 1.0, gap_s: float = 30.0):
        self.store, self.hub = store, hub
        self.interval_s, self.gap_s = interval_s, gap_s
        self.low = 0                        # every id <= low was published (or given up)
        self.done: set[int] = set()         # published ids above low
        self.missing: dict[int, float] = {}  # id below the newest seen -> monotonic time first missed
        self.published = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "SharedFeed":
        self.low = self.store.last_history_id()     # live from now on: no replay of old history
        self._thread = threading.Thread(target=self._run, name="alert-feed", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        import logging
        log = logging.getLogger("collector.alerts")
        failing_since = None
        while not self._stop.wait(self.interval_s):
            try:
                self.poll()
                if failing_since is not None:
                    log.info("live alert feed: reading the shared alert history again")
                    failing_since = None
            except Exception as e:  # noqa: BLE001 - a database outage: the next poll catches up
                now = time.monotonic()
                if failing_since is None or now - failing_since >= 60:   # once a minute, not every poll
                    log.warning("live alert feed: cannot read the shared alert history: %s", e)
                    failing_since = now

    def poll(self, now: float | None = None) -> int:
        """Publish history rows not published yet; returns how many."""
        from .model import AlertChange
        now = time.monotonic() if now is None else now
        n = 0
        alerts: dict[int, Any] = {}
        after = self.low
        while True:
            batch = self.store.history_after(after, self.BATCH)
            for h in batch:
                if h.id in self.done:
                    continue
                a = alerts.get(h.alert_id) or self.store.get(h.alert_id)
                if a is not None:
                    alerts[h.alert_id] = a
                    self.hub.publish(AlertChange(h.action, a, h.t_ms, h.actor, h.detail))
                    n += 1
                self.done.add(h.id)
                self.missing.pop(h.id, None)
            if len(batch) < self.BATCH:
                break
            after = batch[-1].id
        top = max(self.done, default=self.low)
        for i in range(self.low + 1, top):
            if i not in self.done:
                self.missing.setdefault(i, now)
        while self.low < top:
            nxt = self.low + 1
            if nxt in self.done:
                self.done.discard(nxt)
            elif now - self.missing.get(nxt, now) >= self.gap_s:
                self.missing.pop(nxt, None)           # rolled back (or lost): stop waiting for it
            else:
                break
            self.low = nxt
        self.published += n
        return n
