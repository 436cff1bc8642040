"""The audit log (等保 evidence): one append-only row per change made by a person or a signed
callback - alert actions (ack, unack, assign, comment, resolve, escalate), silences, maintenance
windows, rule file replacements, token changes - with who, when, what and before/after as JSON.

Rows are hash-chained (``hash = sha256(previous hash + the row's canonical JSON)``) so an edited or
deleted row shows in ``verify()``. Lives in any sqlite3 path (the alert store's file by default) or, given
``Pg(dsn)``, in the shared PostgreSQL database (one chain for all collectors: each append holds an
advisory transaction lock, store/sqldb.py).
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
from typing import Any, Iterator, TextIO

from .sqldb import Pg, SqlDB

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  t_ms INTEGER NOT NULL,
  actor TEXT NOT NULL,
  actor_token_id INTEGER,
  actor_role TEXT,
  via TEXT NOT NULL,
  action TEXT NOT NULL,
  target TEXT NOT NULL,
  before TEXT,
  after TEXT,
  detail TEXT,
  hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_t ON audit_log(t_ms, id);
"""

COLUMNS = ("id", "t_ms", "actor", "actor_token_id", "actor_role", "via", "action", "target", "before", "after",
           "detail", "hash")
CSV_COLUMNS = ("id", "time", "t_ms", "actor", "actor_token_id", "actor_role", "via", "action", "target", "before",
               "after", "detail", "hash")


def _j(v: Any) -> str | None:
    return None if v is None else json.dumps(v, sort_keys=True, default=str, ensure_ascii=False)


def _digest(prev: str, row: dict) -> str:
    body = json.dumps({k: row[k] for k in COLUMNS if k not in ("id", "hash")}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256((prev + body).encode()).hexdigest()


class AuditStore:
    """Thread-safe; every ``record`` is one transaction."""

    def __init__(self, path: "str | Pg" = ":memory:"):
        self._db = SqlDB(path)
        self.path = self._db.path
        self._lock = self._db.lock
        self._db.script(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record(self, t_ms: int, actor: str, action: str, target: str, before: Any = None, after: Any = None,
               via: str = "api", actor_token_id: int | None = None, actor_role: str | None = None,
               detail: Any = None) -> dict:
        row = {"t_ms": int(t_ms), "actor": actor, "actor_token_id": actor_token_id, "actor_role": actor_role,
               "via": via, "action": action, "target": target, "before": _j(before), "after": _j(after),
               "detail": _j(detail)}
        with self._db.tx() as db:
            db.serialize("audit_log")       # one chain: appends from several collectors take turns
            prev = db.execute("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
            row["hash"] = _digest(prev[0] if prev else "", row)
            row["id"] = db.insert(
                f"INSERT INTO audit_log({', '.join(COLUMNS[1:])}) VALUES ({','.join('?' * (len(COLUMNS) - 1))})",
                [row[k] for k in COLUMNS[1:]])
        return self._out(row)

    @staticmethod
    def _out(row: dict) -> dict:
        d = dict(row)
        for k in ("before", "after", "detail"):
            d[k] = json.loads(d[k]) if d[k] is not None else None
        return d

    def _rows(self, since_ms: int | None, until_ms: int | None, limit: int | None,
              action: str | None = None) -> Iterator[dict]:
        q = f"SELECT {', '.join(COLUMNS)} FROM audit_log WHERE t_ms >= ? AND t_ms < ?"
        args: list[Any] = [since_ms or 0, until_ms if until_ms is not None else 2**62]
        if action:
            q += " AND action = ?"
            args.append(action)
        q += " ORDER BY id"
        if limit:
            q += " LIMIT ?"
            args.append(int(limit))
        with self._lock:
            rows = self._db.execute(q, args).fetchall()
        for r in rows:
            yield dict(zip(COLUMNS, r))

    def entries(self, since_ms: int | None = None, until_ms: int | None = None, limit: int | None = 10_000,
                action: str | None = None) -> list[dict]:
        """Oldest first, ``since_ms`` inclusive, ``until_ms`` exclusive."""
        return [self._out(r) for r in self._rows(since_ms, until_ms, limit, action)]

    def export_csv(self, out: TextIO, since_ms: int | None = None, until_ms: int | None = None) -> int:
        """CSV (header ``CSV_COLUMNS``; before/after/detail as JSON text); returns the row count."""
        w = csv.writer(out)
        w.writerow(CSV_COLUMNS)
        n = 0
        for r in self._rows(since_ms, until_ms, None):
            t = dt.datetime.fromtimestamp(r["t_ms"] / 1000, dt.timezone.utc).isoformat(timespec="milliseconds")
            w.writerow([r["id"], t.replace("+00:00", "Z")] + [("" if r[k] is None else r[k]) for k in CSV_COLUMNS[2:]])
            n += 1
        return n

    def verify(self) -> list[int]:
        """Ids of rows whose hash does not match the chain (empty: intact)."""
        bad, prev = [], ""
        for r in self._rows(None, None, None):
            if _digest(prev, r) != r["hash"]:
                bad.append(r["id"])
            prev = r["hash"]
        return bad


def record_cli(cfg: Any, action: str, target: str, before: Any = None, after: Any = None) -> None:
    """An admin change made on the command line (``campus-sense collector user|token ...``) into the
    audit log the collector keeps (the alert store's file ``rules.db``, or PostgreSQL with
    ``store.kind: postgres``): actor = the operating-system user, via ``cli``. No audit log is
    configured (no ``rules:`` section, SQLite): nothing is recorded."""
    import getpass
    import time

    from .sqldb import Pg
    if cfg.store.kind == "postgres":
        target_db: Any = Pg(lambda: cfg.store.dsn.reveal())
    elif cfg.rules is not None:
        target_db = cfg.rules.db
    else:
        return
    try:
        actor = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in a container
        actor = "unknown"
    a = AuditStore(target_db)
    try:
        a.record(int(time.time() * 1000), actor, action, target, before, after, via="cli")
    finally:
        a.close()

