"""The syslog archive: every line agents' ``syslog`` drivers receive, kept ``retention.syslog_days``
(180 by default; China's Cybersecurity Law art. 21 asks for six months of network logs) in its own
table, searchable by host/device, time and words (SQLite FTS5).

Wire form (no new item kind): an event item of type ``syslog`` whose ``data.archive`` is true. The
store's event path hands those to :func:`rows`/:func:`insert` instead of the ``events`` table, in
the same commit transaction, so ``/api/v1/events`` stays free of them and the dedup/ack contract is
unchanged. Everything here runs on the connection it is given (writer inside the store's
transaction, readers for queries); a database without the table reads as empty.

Search (``search``): newest first; ``host`` matches the sender's hostname or the resolved device
id; ``q`` is full-text: every whitespace-separated term must occur as a phrase of the message's
words (``"GigabitEthernet0/1" down`` -> lines with both), case-insensitive.
"""
from __future__ import annotations

import sqlite3
from typing import Any, Iterable

import orjson

SCHEMA = """
CREATE TABLE IF NOT EXISTS syslog(
  id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, agent TEXT NOT NULL, device TEXT NOT NULL, host TEXT,
  facility INTEGER, severity INTEGER, program TEXT, mnemonic TEXT, msg TEXT NOT NULL, data TEXT);
CREATE INDEX IF NOT EXISTS syslog_ts ON syslog(ts_ms);
CREATE INDEX IF NOT EXISTS syslog_device_ts ON syslog(device, ts_ms);
CREATE INDEX IF NOT EXISTS syslog_host_ts ON syslog(host, ts_ms);
CREATE VIRTUAL TABLE IF NOT EXISTS syslog_fts USING fts5(msg, content='syslog', content_rowid='id');
DROP TRIGGER IF EXISTS syslog_ai;
CREATE TRIGGER IF NOT EXISTS syslog_ad AFTER DELETE ON syslog BEGIN
  INSERT INTO syslog_fts(syslog_fts, rowid, msg) VALUES ('delete', old.id, old.msg); END;
"""
#: data keys with their own column (the rest stays in ``data``)
_COLUMNS = frozenset(("facility", "severity", "host", "program", "mnemonic", "msg", "archive"))
MAX_MSG = 8192
_dumps = orjson.dumps
_loads = orjson.loads


def ensure_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)


def is_archive(it: dict) -> bool:
    """Is this wire event item a syslog archive record?"""
    if it["type"] != "syslog":
        return False
    d = it.get("data")
    return bool(d) and d.get("archive") is True


def row(agent: str, it: dict) -> tuple:
    rest = dict(it.get("data") or ())
    pop = rest.pop
    msg, host, fac, sev, prog, mn = (pop("msg", None), pop("host", None), pop("facility", None),
                                     pop("severity", None), pop("program", None), pop("mnemonic", None))
    pop("archive", None)
    if type(msg) is not str:
        msg = "" if msg is None else str(msg)
    return (it["t"], agent, it["d"], host[:256] if type(host) is str else None,
            fac if type(fac) is int else None, sev if type(sev) is int else None,
            prog[:256] if type(prog) is str else None, mn[:256] if type(mn) is str else None,
            msg[:MAX_MSG], _dumps(rest).decode() if rest else None)


def insert(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    """Insert a commit group's lines, then index them in one statement (3x faster than a per-row
    trigger); runs inside the caller's transaction."""
    first = conn.execute("SELECT coalesce(max(id), 0) FROM syslog").fetchone()[0]
    conn.executemany("INSERT INTO syslog(ts_ms, agent, device, host, facility, severity, program, mnemonic, msg, "
                     "data) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    conn.execute("INSERT INTO syslog_fts(rowid, msg) SELECT id, msg FROM syslog WHERE id > ?", (first,))


def retention(conn: sqlite3.Connection, cutoff_ms: int, chunk: int = 20000) -> int:
    """Delete lines older than ``cutoff_ms`` in chunks (the FTS index follows by trigger)."""
    total = 0
    try:
        while True:
            n = conn.execute("DELETE FROM syslog WHERE id IN (SELECT id FROM syslog WHERE ts_ms < ? ORDER BY ts_ms "
                             "LIMIT ?)", (cutoff_ms, chunk)).rowcount
            total += n
            if n < chunk:
                return total
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return total
        raise


def fts_query(q: str) -> str:
    """User text -> FTS5 query: each term a quoted phrase (so ``/``, ``-``, ``%`` are literal), ANDed."""
    terms = [t for t in q.split() if t.strip('"')]
    return " AND ".join('"' + t.replace('"', '""') + '"' for t in terms)


COLS = ("id", "ts_ms", "agent", "device", "host", "facility", "severity", "program", "mnemonic", "msg", "data")


def _filters(ph: str, host: str | None, since_ms: int | None, until_ms: int | None, severity: int | None,
             program: str | None, mnemonic: str | None) -> tuple[str, list[Any]]:
    """The WHERE clause shared by both databases (``ph``: the driver's placeholder)."""
    sql = f"ts_ms >= {ph} AND ts_ms < {ph}"
    args: list[Any] = [since_ms or 0, until_ms if until_ms is not None else 2 ** 62]
    if host:
        sql += f" AND (host = {ph} OR device = {ph})"
        args += [host, host]
    for col, op, v in (("severity", "<=", severity), ("program", "=", program), ("mnemonic", "=", mnemonic)):
        if v is not None and v != "":
            sql += f" AND {col} {op} {ph}"
            args.append(v)
    return sql, args


def _rows(rows: Iterable) -> list[dict]:
    out = []
    for r in rows:
        e = dict(zip(COLS, r))
        e["data"] = _loads(e["data"]) if e["data"] else {}
        out.append(e)
    return out


_SELECT = "SELECT " + ", ".join(COLS) + " FROM syslog WHERE "


def search(conn: sqlite3.Connection, host: str | None = None, q: str | None = None, since_ms: int | None = None,
           until_ms: int | None = None, limit: int = 100, severity: int | None = None, program: str | None = None,
           mnemonic: str | None = None) -> list[dict]:
    """Archived lines, newest first (see the module docstring)."""
    where, args = _filters("?", host, since_ms, until_ms, severity, program, mnemonic)
    if q and fts_query(q):
        where += " AND id IN (SELECT rowid FROM syslog_fts WHERE syslog_fts MATCH ?)"
        args.append(fts_query(q))
    try:
        return _rows(conn.execute(_SELECT + where + " ORDER BY ts_ms DESC, id DESC LIMIT ?", [*args, limit]))
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return []
        raise


def search_pg(query, host: str | None = None, q: str | None = None, since_ms: int | None = None,
              until_ms: int | None = None, limit: int = 100, severity: int | None = None,
              program: str | None = None, mnemonic: str | None = None) -> list[dict]:
    """``search`` on PostgreSQL (pg_migrations/0003_syslog.sql): ``query(sql, args)`` runs a
    statement; words match with ``to_tsvector('simple', msg) @@ phraseto_tsquery('simple', term)``,
    every term ANDed, like the FTS5 phrases."""
    where, args = _filters("%s", host, since_ms, until_ms, severity, program, mnemonic)
    for t in (q or "").split():
        t = t.strip('"')
        if t:
            where += " AND to_tsvector('simple', msg) @@ phraseto_tsquery('simple', %s)"
            args.append(t)
    return _rows(query(_SELECT + where + " ORDER BY ts_ms DESC, id DESC LIMIT %s", [*args, limit]))


def count(conn: sqlite3.Connection) -> int:
    try:
        return conn.execute("SELECT count(*) FROM syslog").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
