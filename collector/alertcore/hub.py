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
