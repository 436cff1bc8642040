"""SQLite persistence of the notification outbox and of the router's alert groups (all notify SQL lives
here; dispatch and routing logic stay in ``collector/notify/outbox.py`` and ``router.py``).

Tables ``notify_outbox`` (one row per delivery: pending | sent | failed), ``notify_groups`` and
``notify_group_alerts`` (group timers and what the channels were last told), in any sqlite3 path
(the collector's database, a separate file, or ``:memory:``), or in the shared PostgreSQL database
(``Pg(dsn)``, tables from pg_migrations/0002).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from .sqldb import Pg, SqlDB

OUTBOX_SCHEMA = """
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

GROUP_SCHEMA = """
CREATE TABLE IF NOT EXISTS notify_groups (
    group_key TEXT PRIMARY KEY,
    route TEXT NOT NULL,
    group_labels BLOB NOT NULL,
    created_at REAL NOT NULL,
    last_sent_at REAL,
    sends INTEGER NOT NULL DEFAULT 0,
    next_eval_at REAL                 -- earliest time the group can become due (NULL = now)
);
CREATE INDEX IF NOT EXISTS notify_groups_next ON notify_groups(next_eval_at);
CREATE TABLE IF NOT EXISTS notify_group_alerts (
    group_key TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    state TEXT NOT NULL,              -- firing | resolved
    severity TEXT NOT NULL,
    acked INTEGER NOT NULL DEFAULT 0,
    silenced INTEGER NOT NULL DEFAULT 0,
    data BLOB NOT NULL,               -- normalised alert
    notified_state TEXT,              -- NULL | firing: what the channels were last told
    notified_severity TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (group_key, alert_id)
);
CREATE INDEX IF NOT EXISTS notify_group_alerts_alert ON notify_group_alerts(alert_id);
"""

COLUMNS = ("id", "channel", "route", "group_key", "status", "title", "state", "attempts", "created_at",
           "next_attempt_at", "last_attempt_at", "sent_at", "last_error")


class DB(SqlDB):
    """One connection shared by router and outbox, guarded by a lock so the listener may be called
    from any thread: a SQLite file (WAL, ``synchronous=NORMAL``) or, given ``Pg(dsn)``, the shared
    PostgreSQL database (store/sqldb.py; several collectors share the groups and the outbox)."""

    def __init__(self, path: "str | Path | Pg"):
        if not isinstance(path, Pg) and str(path) != ":memory:":
            Path(str(path)).parent.mkdir(parents=True, exist_ok=True)
        super().__init__(path if isinstance(path, Pg) else str(path))
        if not self.pg:
            with self.lock:
                self.conn.execute("PRAGMA synchronous=NORMAL")

    def transaction(self):
        """``BEGIN IMMEDIATE`` .. ``COMMIT`` (``ROLLBACK`` on any exception) under the lock; nested
        ones join the outer transaction."""
        return self.tx()


class OutboxStore:
    """The ``notify_outbox`` table: one row per delivery of one notification to one channel."""

    def __init__(self, db: DB):
        self.db = db
        db.script(OUTBOX_SCHEMA)

    # ------------------------------------------------------------------ writes
    def insert(self, channel: str, route: str, group_key: str, notification: dict, now: float) -> int:
        return self.db.insert(
            "INSERT INTO notify_outbox(channel, route, group_key, status, title, payload, created_at,"
            " next_attempt_at) VALUES (?,?,?,?,?,?,?,?)",
            (channel, route, group_key, notification["status"], notification.get("title", ""),
             orjson.dumps(notification), now, now))

    def mark_sent(self, row_id: int, now: float) -> None:
        self.db.execute("UPDATE notify_outbox SET state='sent', attempts=attempts+1, last_attempt_at=?,"
                        " sent_at=?, last_error=NULL WHERE id=?", (now, now, row_id))

    def mark_failed(self, row_id: int, attempts: int, now: float, error: str) -> None:
        self.db.execute("UPDATE notify_outbox SET state='failed', attempts=?, last_attempt_at=?,"
                        " last_error=? WHERE id=?", (attempts, now, error, row_id))

    def mark_retry(self, row_id: int, attempts: int, now: float, next_at: float, error: str) -> None:
        self.db.execute("UPDATE notify_outbox SET attempts=?, last_attempt_at=?, next_attempt_at=?,"
                        " last_error=? WHERE id=?", (attempts, now, next_at, error, row_id))

    def fail_unknown_channels(self, known: set[str], now: float) -> int:
        if not known:
            return 0
        q = ",".join("?" * len(known))
        cur = self.db.execute(
            f"UPDATE notify_outbox SET state='failed', last_error='channel no longer configured',"
            f" last_attempt_at=? WHERE state='pending' AND channel NOT IN ({q})", (now, *known))
        return cur.rowcount

    def requeue_failed(self, row_id: int, now: float) -> bool:
        cur = self.db.execute("UPDATE notify_outbox SET state='pending', attempts=0, created_at=?,"
                              " next_attempt_at=? WHERE id=? AND state='failed'", (now, now, row_id))
        return bool(cur.rowcount)

    def prune(self, before: float) -> int:
        cur = self.db.execute("DELETE FROM notify_outbox WHERE state IN ('sent','failed') AND"
                              " COALESCE(sent_at, last_attempt_at, created_at) < ?", (before,))
        return cur.rowcount

    def postpone_channel(self, channel: str, row_id: int) -> None:
        """Move the channel's other pending rows due before ``row_id``'s retry to that time."""
        self.db.execute(
            "UPDATE notify_outbox SET next_attempt_at=(SELECT next_attempt_at FROM notify_outbox WHERE id=?)"
            " WHERE channel=? AND state='pending' AND id!=? AND"
            " next_attempt_at<(SELECT next_attempt_at FROM notify_outbox WHERE id=?)",
            (row_id, channel, row_id, row_id))

    # ------------------------------------------------------------------ reads
    def _rows(self, sql: str, args: tuple = (), payload: bool = False) -> list[dict]:
        cols = COLUMNS + (("payload",) if payload else ())
        with self.db.lock:
            rows = self.db.execute(sql.replace("*", ", ".join(cols), 1), args).fetchall()
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


class GroupStore:
    """The router's ``notify_groups`` / ``notify_group_alerts`` tables. Methods taking ``c`` run on the
    connection of an open ``transaction()`` (or under ``db.lock``)."""

    def __init__(self, db: DB):
        self.db = db
        db.script(GROUP_SCHEMA)

    def transaction(self):
        return self.db.transaction()

    def reset_timers(self) -> None:
        """Re-evaluate every group once (timings may have changed with the config)."""
        self.db.execute("UPDATE notify_groups SET next_eval_at=NULL")

    def groups_of_alert(self, alert_id: str) -> set[str]:
        with self.db.lock:
            return {k for (k,) in self.db.execute(
                "SELECT group_key FROM notify_group_alerts WHERE alert_id=?", (alert_id,))}

    def exists(self, key: str) -> bool:
        with self.db.lock:
            return self.db.execute("SELECT 1 FROM notify_groups WHERE group_key=?", (key,)).fetchone() is not None

    def create(self, key: str, route: str, labels: dict, now: float) -> None:
        with self.db.lock:
            # another collector may have made the same group in the meantime: keep its row
            self.db.execute("INSERT INTO notify_groups(group_key, route, group_labels, created_at)"
                            " VALUES (?,?,?,?) ON CONFLICT (group_key) DO NOTHING",
                            (key, route, orjson.dumps(labels), now))

    def upsert_alert(self, key: str, alert: dict, blob: bytes, now: float) -> None:
        """Record the alert's current state in group ``key`` and make the group due now."""
        with self.db.lock:
            c = self.db
            c.execute(
                "INSERT INTO notify_group_alerts(group_key, alert_id, state, severity, acked, silenced,"
                " data, updated_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(group_key, alert_id) DO UPDATE"
                " SET state=excluded.state, severity=excluded.severity, acked=excluded.acked,"
                " silenced=excluded.silenced, data=excluded.data, updated_at=excluded.updated_at",
                (key, alert["id"], alert["state"], alert["severity"], int(alert["acked"]),
                 int(alert["silenced"]), blob, now))
            c.execute("UPDATE notify_groups SET next_eval_at=NULL WHERE group_key=?", (key,))

    def due_keys(self, now: float) -> list[str]:
        with self.db.lock:
            return [k for (k,) in self.db.execute(
                "SELECT group_key FROM notify_groups WHERE next_eval_at IS NULL OR next_eval_at<=?", (now,))]

    def get(self, key: str) -> tuple[str, dict, float, float | None, int] | None:
        """(route, group labels, created_at, last_sent_at, sends) or None."""
        with self.db.lock:
            g = self.db.execute("SELECT route, group_labels, created_at, last_sent_at, sends FROM"
                                " notify_groups WHERE group_key=?" + self.db.lock_for_update, (key,)).fetchone()
        if g is None:
            return None
        return g[0], orjson.loads(g[1]), g[2], g[3], g[4]

    def alerts(self, key: str) -> list[tuple[str, str, str, int, int, dict, Any, Any]]:
        """(alert_id, state, severity, acked, silenced, alert, notified_state, notified_severity)."""
        with self.db.lock:
            rows = self.db.execute(
                "SELECT alert_id, state, severity, acked, silenced, data, notified_state, notified_severity"
                " FROM notify_group_alerts WHERE group_key=?", (key,)).fetchall()
        return [(r[0], r[1], r[2], r[3], r[4], orjson.loads(r[5]), r[6], r[7]) for r in rows]

    def drop_alerts(self, key: str, alert_ids: list[str]) -> None:
        with self.db.lock:
            self.db.executemany("DELETE FROM notify_group_alerts WHERE group_key=? AND alert_id=?",
                                     [(key, aid) for aid in alert_ids])

    def set_next_eval(self, key: str, at: float) -> None:
        with self.db.lock:
            self.db.execute("UPDATE notify_groups SET next_eval_at=? WHERE group_key=?", (at, key))

    def mark_notified(self, key: str, firing: list[tuple[str, str]]) -> None:
        """``firing``: (alert_id, severity) the channels were just told about."""
        with self.db.lock:
            self.db.executemany("UPDATE notify_group_alerts SET notified_state='firing', notified_severity=?"
                                     " WHERE group_key=? AND alert_id=?",
                                     [(sev, key, aid) for aid, sev in firing])

    def record_sent(self, key: str, now: float, next_eval_at: float) -> None:
        with self.db.lock:
            self.db.execute("UPDATE notify_groups SET last_sent_at=?, sends=sends+1, next_eval_at=?"
                                 " WHERE group_key=?", (now, next_eval_at, key))

    def firing_count(self, key: str) -> int:
        with self.db.lock:
            return self.db.execute("SELECT COUNT(*) FROM notify_group_alerts WHERE group_key=? AND"
                                        " state='firing'", (key,)).fetchone()[0]

    def delete(self, key: str) -> None:
        with self.db.lock:
            self.db.execute("DELETE FROM notify_group_alerts WHERE group_key=?", (key,))
            self.db.execute("DELETE FROM notify_groups WHERE group_key=?", (key,))

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM notify_groups").fetchone()[0]
