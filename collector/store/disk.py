"""Disk budget of the embedded store: usage, projection, early deletion (issue 10, part 5).

Usage is the size of the database file plus its ``-wal``; free space is that of the folder
holding it. The budget is the nearer of two ceilings: ``max_bytes`` (if set) and the usage at
which the file system would drop below ``min_free_bytes``.

``DiskBudget.check`` runs from ``SQLiteStore._retention`` (writer lock held): it records one
(time, usage) sample (the projection: bytes/day growth over the samples of the last week and
days until the budget is reached) and, when usage exceeds ``warn_at`` x budget or free space is
below ``min_free_bytes``, deletes the oldest data early, step by step, each batch in its own
short transaction followed by ``PRAGMA incremental_vacuum``, until back under ``warn_at``:

1. raw chunks older than 2 days,
2. the oldest 5-minute chunks,
3. events older than 30 days,
4. the oldest 1-hour chunks;

never anything of the newest day (and never a chunk that a rollup still needs: raw only below
the sealed hour, 5-minute only below the sealed day). Every deletion is logged.
"""
from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import time
from collections import deque
from typing import Any

log = logging.getLogger(__name__)

DAY = 86_400_000
HOUR = 3_600_000
#: samples older than this do not count for the growth rate
GROWTH_WINDOW_MS = 7 * DAY


def vacuum(w: sqlite3.Connection) -> None:
    """Give free pages back to the file system. Not ``w.execute``: that steps the pragma once and
    frees a single page; ``executescript`` runs it to completion (no transaction may be open)."""
    w.executescript("PRAGMA incremental_vacuum")


class DiskBudget:
    def __init__(self, path: str, max_bytes: int | None = None, min_free_bytes: int = 1 << 30,
                 warn_at: float = 0.9, max_samples: int = 24 * 8):
        self.path = path
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self.warn_at = warn_at
        #: (time ms, usage bytes), oldest first
        self.samples: deque[tuple[int, int]] = deque(maxlen=max_samples)
        #: rows deleted early in total (chunks + events), and when last
        self.enforced_total = 0
        self.last_enforced_ms: int | None = None
        self.last_enforced: dict[str, int] = {}

    # ------------------------------------------------------------ measuring
    def usage(self) -> int:
        n = 0
        for p in (self.path, self.path + "-wal"):
            try:
                n += os.path.getsize(p)
            except OSError:
                pass
        return n

    def free(self) -> int:
        try:
            return shutil.disk_usage(os.path.dirname(os.path.abspath(self.path))).free
        except OSError:
            return 0

    def budget(self, usage: int, free: int) -> int:
        """The nearer ceiling: max_bytes, or the usage at which free space hits min_free_bytes."""
        floor = usage + free - self.min_free_bytes
        return max(0, floor if self.max_bytes is None else min(self.max_bytes, floor))

    def over(self, usage: int, free: int) -> bool:
        if free < self.min_free_bytes:
            return True
        return self.max_bytes is not None and usage > self.warn_at * self.max_bytes

    def sample(self, now_ms: int, usage: int | None = None) -> None:
        u = self.usage() if usage is None else usage
        if self.samples and self.samples[-1][0] >= now_ms:
            self.samples[-1] = (self.samples[-1][0], u)
            return
        self.samples.append((now_ms, u))

    def growth_per_day(self) -> float | None:
        """Bytes per day between the oldest sample of the last week and the newest (None: < 2)."""
        if len(self.samples) < 2:
            return None
        t1, u1 = self.samples[-1]
        old = [s for s in self.samples if s[0] >= t1 - GROWTH_WINDOW_MS]
        t0, u0 = old[0]
        if t1 <= t0:
            return None
        return (u1 - u0) * DAY / (t1 - t0)

    def status(self) -> dict[str, Any]:
        usage, free = self.usage(), self.free()
        budget = self.budget(usage, free)
        g = self.growth_per_day()
        if usage >= budget:
            days: float | None = 0.0
        elif g is None or g <= 0:
            days = None
        else:
            days = round((budget - usage) / g, 2)
        return {"usage_bytes": usage, "budget_bytes": budget, "max_bytes": self.max_bytes,
                "free_bytes": free, "min_free_bytes": self.min_free_bytes, "warn_at": self.warn_at,
                "growth_bytes_per_day": None if g is None else round(g), "days_to_full": days,
                "over_warn": self.over(usage, free), "enforced_total": self.enforced_total,
                "last_enforced_ms": self.last_enforced_ms, "last_enforced": dict(self.last_enforced)}

    # ------------------------------------------------------------ enforcing
    def _live(self, w: sqlite3.Connection) -> int:
        """Usage that counts after a deletion: the pages in use (the -wal shrinks at the checkpoint
        after the deletions; a file without auto_vacuum keeps its size but reuses free pages)."""
        ps = w.execute("PRAGMA page_size").fetchone()[0]
        pc = w.execute("PRAGMA page_count").fetchone()[0]
        fl = w.execute("PRAGMA freelist_count").fetchone()[0]
        return max(0, ps * (pc - fl))

    def _over_live(self, w: sqlite3.Connection) -> tuple[bool, int]:
        live = self._live(w)
        free = self.free() + (self.usage() - live)
        return self.over(live, free), live

    def _excess(self, live: int, free: int) -> int:
        ex = 1
        if self.max_bytes is not None:
            ex = max(ex, int(live - self.warn_at * self.max_bytes))
        if free < self.min_free_bytes:
            ex = max(ex, self.min_free_bytes - free)
        return ex

    def check(self, w: sqlite3.Connection, now_ms: int, sealed: tuple[int, int] | None = None) -> dict[str, int]:
        """Record a sample; delete the oldest data early while over ``warn_at`` (writer lock held,
        no open transaction). ``sealed``: (hour, day) watermarks of the series engine. Returns
        rows deleted per step."""
        out: dict[str, int] = {}
        usage, free = self.usage(), self.free()
        if self.over(usage, free):
            # free pages (e.g. of the sealed head log) and a -wal grown to wal_autocheckpoint pages
            # are not data: give them back first
            try:
                vacuum(w)
                w.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            usage, free = self.usage(), self.free()
        if self.over(usage, free):
            hour_wm, day_wm = sealed if sealed is not None else (now_ms, now_ms)
            newest_day = now_ms - DAY
            steps = [
                ("raw", "chunks", 0, min(now_ms - 2 * DAY, hour_wm)),
                ("5m", "chunks", 300_000, min(newest_day, day_wm)),
                ("events", "events", None, now_ms - 30 * DAY),
                ("1h", "chunks", HOUR, newest_day),
            ]
            t0 = time.monotonic()
            before = usage
            for name, table, res, cutoff in steps:
                n = self._step(w, table, res, cutoff)
                if n:
                    out[name] = n
                over, _ = self._over_live(w)
                if not over:
                    break
            try:
                w.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            usage = self.usage()
            if out:
                self.enforced_total += sum(out.values())
                self.last_enforced_ms = now_ms
                self.last_enforced = out
                # the drop is not growth: the projection starts again from here
                self.samples.clear()
                log.warning("disk budget: usage %d bytes (budget %d, free %d) over %.0f %%; deleted early %s; "
                            "now %d bytes (%.1f s)", before, self.budget(before, free), free, self.warn_at * 100,
                            ", ".join(f"{v} {k}" for k, v in out.items()), usage, time.monotonic() - t0)
            still, _ = self._over_live(w)
            if still:
                log.error("disk budget: still over %.0f %% of the budget (%d bytes used, %d free) after deleting "
                          "everything allowed early (the newest day is kept)", self.warn_at * 100, usage, self.free())
        self.sample(now_ms, usage)
        return out

    def _step(self, w: sqlite3.Connection, table: str, res: int | None, cutoff: int) -> int:
        """Delete the oldest rows of one step below ``cutoff``, batch by batch (each batch about the
        bytes still in excess), until under ``warn_at`` or nothing is left."""
        total = 0
        while True:
            over, live = self._over_live(w)
            if not over:
                return total
            free = self.free() + (self.usage() - live)
            want = self._excess(live, free)
            if table == "chunks":
                rows = w.execute("SELECT id, length(data) FROM chunks WHERE res=? AND end_ms <= ? "
                                 "ORDER BY start_ms, id LIMIT 2000", (res, cutoff)).fetchall()
            else:
                rows = w.execute("SELECT id, length(tags) + length(data) + 64 FROM events WHERE ts_ms < ? "
                                 "ORDER BY ts_ms, id LIMIT 2000", (cutoff,)).fetchall()
            if not rows:
                return total
            ids, acc = [], 0
            for i, n in rows:
                ids.append(i)
                acc += n or 0
                if acc >= want:
                    break
            w.execute("BEGIN IMMEDIATE")
            try:
                for k in range(0, len(ids), 500):
                    part = ids[k:k + 500]
                    w.execute(f"DELETE FROM {table} WHERE id IN ({','.join('?' * len(part))})", part)
                w.execute("COMMIT")
            except BaseException:
                w.execute("ROLLBACK")
                raise
            vacuum(w)
            total += len(ids)
