"""Leases in PostgreSQL (table ``leases``: ``name, holder, epoch, expires_at``, the database
server's clock): partitions of the ingest and singleton jobs (collector/partitions.py explains the
protocol). Only the SQL lives here."""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import psycopg

from .postgres import LeaseLost

log = logging.getLogger("collector.partitions")


class Leases:
    """Leases in PostgreSQL (table ``leases``), times from the database server's clock."""

    def __init__(self, dsn: str | Callable[[], str], holder: str, ttl_s: float):
        self._dsn = dsn
        self.holder = holder
        self.ttl_s = ttl_s
        self._c: psycopg.Connection | None = None
        self._lock = threading.RLock()
        #: name -> [epoch, local deadline (monotonic)]
        self.held: dict[str, list] = {}

    def _conn(self) -> psycopg.Connection:
        if self._c is None or self._c.closed or self._c.broken:
            dsn = self._dsn() if callable(self._dsn) else self._dsn
            self._c = psycopg.connect(dsn, autocommit=True, connect_timeout=max(2, int(self.ttl_s / 3)))
            # A commit holds its partition's lease row FOR SHARE (the fencing check). If its process is
            # paused mid-commit (SIGSTOP, VM freeze) a takeover would wait for that lock for as long as
            # the pause lasts, and this connection is also the one that renews our own leases: wait at
            # most a quarter of the lease, then end that commit (_end_stalled_commit) and try again
            # next round (bench/district.py found this).
            self._c.execute("SELECT set_config('lock_timeout', %s, false)", (f"{max(100, int(self.ttl_s * 250))}ms",))
        return self._c

    def close(self) -> None:
        with self._lock:
            if self._c is not None:
                self._c.close()

    def acquire(self, name: str) -> int | None:
        """Take ``name`` if free or expired: its new epoch, else None."""
        with self._lock:
            t0 = time.monotonic()
            # expired for a while, but a commit of its holder may still hold the row FOR SHARE: the
            # holder was paused (or hung) in the middle of a commit for longer than the lease
            self._end_stalled_commit(name)
            try:
                r = self._conn().execute(
                    "INSERT INTO leases(name, holder, epoch, expires_at, acquired_at) "
                    "VALUES (%s, %s, 1, now() + %s * interval '1 second', now()) "
                    "ON CONFLICT (name) DO UPDATE SET holder=excluded.holder, epoch=leases.epoch + 1, "
                    "expires_at=excluded.expires_at, acquired_at=now() WHERE leases.expires_at < now() "
                    "RETURNING epoch", (name, self.holder, self.ttl_s)).fetchone()
            except psycopg.errors.LockNotAvailable:
                log.info("lease %s: its holder is committing; not taken this round", name)
                return None
            if r is None:
                return None
            self.held[name] = [r[0], t0 + self.ttl_s]
            return r[0]

    def _end_stalled_commit(self, name: str) -> bool:
        """End the session of a commit that holds the expired lease ``name`` FOR SHARE (the row's
        ``xmax`` is its transaction id) once the lease has been expired for a third of ``ttl_s``.
        Its transaction is rolled back: nothing of it is acknowledged, the broker hands its
        messages to the next holder, and the old holder's retry is refused by the fencing check.
        A paused process cannot end the transaction itself (in bench/district.py PostgreSQL's
        ``idle_in_transaction_session_timeout`` did not end it either: the server may be waiting in
        the middle of a pipelined ``executemany``, which is not "idle"). Needs the same database role
        as the other collectors, no superuser. A row locked by several transactions (a multixact)
        is not matched: the takeover then waits for the commit as before."""
        try:
            rows = self._conn().execute(
                "SELECT a.pid, pg_terminate_backend(a.pid) FROM leases l JOIN pg_stat_activity a "
                "ON a.backend_xid = l.xmax WHERE l.name = %s AND l.expires_at < now() - %s * interval '1 second' "
                "AND a.pid <> pg_backend_pid()", (name, self.ttl_s / 3)).fetchall()
        except psycopg.Error as e:
            log.warning("lease %s: cannot end the stalled commit holding it: %s", name, e)
            return False
        if rows:
            log.warning("lease %s: expired, but its holder's commit still held it; ended that session (pid %s)",
                        name, ", ".join(str(r[0]) for r in rows))
            return True
        return False

    def renew(self, names: list[str]) -> list[str]:
        """Renew held leases; returns the ones lost (taken over). Raises psycopg.Error when the
        database cannot be reached (nothing known: local deadlines apply)."""
        with self._lock:
            names = [n for n in names if n in self.held]
            if not names:
                return []
            t0 = time.monotonic()
            ok = {n for (n,) in self._conn().execute(
                "UPDATE leases SET expires_at = now() + %s * interval '1 second' FROM unnest(%s::text[], "
                "%s::bigint[]) AS h(n, e) WHERE leases.name = h.n AND leases.epoch = h.e AND leases.holder = %s "
                "RETURNING leases.name",
                (self.ttl_s, names, [self.held[n][0] for n in names], self.holder))}
            lost = [n for n in names if n not in ok]
            for n in ok:
                self.held[n][1] = t0 + self.ttl_s
            for n in lost:
                self.held.pop(n, None)
            return lost

    def release(self, name: str) -> None:
        """Give a lease up now (expired: the next taker gets epoch + 1)."""
        with self._lock:
            h = self.held.pop(name, None)
            if h is None:
                return
            try:
                self._conn().execute("UPDATE leases SET expires_at = now() - interval '1 millisecond' "
                                     "WHERE name=%s AND holder=%s AND epoch=%s", (name, self.holder, h[0]))
            except psycopg.Error as e:
                log.warning("could not release lease %s (it expires by itself): %s", name, e)

    def valid(self, name: str, margin_s: float = 0.0) -> bool:
        h = self.held.get(name)
        return h is not None and time.monotonic() < h[1] - margin_s

    def fence(self, name: str) -> tuple[str, str, int]:
        h = self.held.get(name)
        if h is None:
            raise LeaseLost(f"lease {name} is not held by {self.holder}")
        return (name, self.holder, h[0])

    def live(self, prefix: str) -> list[tuple[str, str, int]]:
        """(name, holder, epoch) of unexpired leases whose name starts with ``prefix``."""
        with self._lock:
            return [tuple(r) for r in self._conn().execute(
                "SELECT name, holder, epoch FROM leases WHERE name LIKE %s AND expires_at > now() ORDER BY name",
                (prefix.replace("%", r"\%").replace("_", r"\_") + "%",))]

    def singleton(self, name: str) -> bool:
        """True while this process holds the singleton lease ``name`` (taken here when free;
        renewed with the others)."""
        key = f"singleton/{name}"
        if self.valid(key, margin_s=self.ttl_s / 3):
            return True
        try:
            if key in self.held:
                if not self.renew([key]):
                    return self.valid(key)
                return False
            return self.acquire(key) is not None
        except psycopg.Error as e:
            log.warning("singleton lease %s: %s", name, e)
            return False
