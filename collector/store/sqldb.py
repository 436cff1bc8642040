"""One connection, two dialects: the small stores (alerts, audit log, callback replay keys, notification
outbox and groups, campus model / registry / compliance history) run on a local SQLite file by default
and on the shared PostgreSQL database with ``store.kind: postgres`` (issue 15), with the same SQL.

``SqlDB(target)``: ``target`` is a SQLite path (``":memory:"`` too) or ``Pg(dsn)`` (a libpq string or a
callable returning it, e.g. a ``Secret``'s ``reveal``). The stores write SQLite SQL; on PostgreSQL it is
translated once per statement text (``translate``):

- placeholders ``?`` -> ``%s`` (a literal ``%`` -> ``%%``); ``BEGIN IMMEDIATE`` -> ``BEGIN``;
- ``json_extract(col, '$.key')`` -> ``(col::jsonb ->> 'key')`` (JSON kept as TEXT on both);
- ``x IS ?`` / ``x IS NOT ?`` (null-safe equality) -> ``IS [NOT] DISTINCT FROM``.

``insert()`` returns the new row's id (``lastrowid`` / ``RETURNING id``); ``tx()`` is one transaction
(re-entrant; ``BEGIN IMMEDIATE`` on SQLite), ``lock_for_update`` is `` FOR UPDATE`` on PostgreSQL (rows
read in a transaction that several collectors may run at once) and empty on SQLite (``BEGIN
IMMEDIATE`` already serialises writers); ``serialize(name)`` takes a transaction-scoped advisory lock on
PostgreSQL (e.g. the audit hash chain). Upserts use ``INSERT .. ON CONFLICT .. DO UPDATE/NOTHING``,
which both accept. Tables: the SQLite ``schema`` text given to ``script()``; on PostgreSQL the numbered
migrations (store/pg_migrations, applied when the connection is first made).

Thread-safe: one connection, one re-entrant lock (``db.lock``). A PostgreSQL connection that broke
is re-made on the next statement outside a transaction.
"""
from __future__ import annotations

import re
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator


class Pg:
    """A PostgreSQL target: ``dsn`` a libpq string/URL or a callable returning it (read per connection)."""

    def __init__(self, dsn: str | Callable[[], str]):
        self.dsn = dsn

    def conninfo(self) -> str:
        return self.dsn() if callable(self.dsn) else self.dsn

    def __repr__(self) -> str:      # never the DSN (it may hold a password)
        return "Pg(...)"

    def __str__(self) -> str:
        return "postgresql"


def shared_target(store: Any, local_path: str | None = None) -> "str | Pg":
    """Where the small stores go for a collector ``store``: its PostgreSQL database for a
    ``PostgresStore`` (``store.kind == "postgres"``), else ``local_path`` (default the store's path)."""
    if getattr(store, "kind", None) == "postgres":
        return Pg(store._dsn)
    return local_path if local_path is not None else store.path


def is_pg(target: Any) -> bool:
    return isinstance(target, Pg) or getattr(target, "dialect", None) == "postgres"


_CACHE: dict[str, str] = {}
_JSON = re.compile(r"json_extract\((\w+),\s*'\$\.(\w+)'\)")
_IS = re.compile(r"\bIS (NOT )?\?")


def translate(sql: str) -> str:
    """SQLite statement text -> PostgreSQL (see the module docstring)."""
    q = _CACHE.get(sql)
    if q is None:
        q = sql.replace("%", "%%")
        q = _JSON.sub(r"(\1::jsonb ->> '\2')", q)
        q = _IS.sub(lambda m: "IS NOT DISTINCT FROM ?" if not m.group(1) else "IS DISTINCT FROM ?", q)
        q = q.replace("BEGIN IMMEDIATE", "BEGIN").replace("?", "%s")
        _CACHE[sql] = q
    return q


class SqlDB:
    def __init__(self, target: "str | Path | Pg", *, wal: bool = True, timeout_s: float = 30):
        self.lock = threading.RLock()
        self._depth = 0
        self.timeout_s = timeout_s
        if isinstance(target, Pg):
            import psycopg
            self.dialect = "postgres"
            self.path = str(target)
            self._pg = target
            self.IntegrityError: type[Exception] | tuple = psycopg.IntegrityError
            self.Error: type[Exception] | tuple = psycopg.Error
            self.lock_for_update = " FOR UPDATE"
            self.conn: Any = None
            self._connect()
        else:
            self.dialect = "sqlite"
            self.path = str(target)
            self._pg = None
            self.IntegrityError = sqlite3.IntegrityError
            self.Error = sqlite3.Error
            self.lock_for_update = ""
            self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=timeout_s)
            self.conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
            if wal and self.path != ":memory:":
                self.conn.execute("PRAGMA journal_mode=WAL")

    @property
    def pg(self) -> bool:
        return self._pg is not None

    def _connect(self) -> None:
        import psycopg

        from .postgres import migrate
        self.conn = psycopg.connect(self._pg.conninfo(), autocommit=True, connect_timeout=int(self.timeout_s))
        migrate(self.conn)

    def _ready(self) -> None:
        c = self.conn
        if self._pg is not None and (c is None or c.closed or c.broken) and not self._depth:
            if c is not None:
                c.close()
            self._connect()

    # ------------------------------------------------------------------ statements
    def execute(self, sql: str, args: Iterable[Any] = ()) -> Any:
        """A cursor (``fetchone``, ``fetchall``, iteration, ``rowcount``)."""
        with self.lock:
            if self._pg is None:
                return self.conn.execute(sql, tuple(args))
            self._ready()
            return self.conn.execute(translate(sql), tuple(args))

    def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> Any:
        with self.lock:
            if self._pg is None:
                return self.conn.executemany(sql, rows)
            self._ready()
            cur = self.conn.cursor()
            rows = [tuple(r) for r in rows]
            if rows:
                cur.executemany(translate(sql), rows)
            return cur

    def insert(self, sql: str, args: Iterable[Any] = ()) -> int:
        """An ``INSERT`` into a table with an ``id`` key: the new id."""
        with self.lock:
            if self._pg is None:
                return int(self.conn.execute(sql, tuple(args)).lastrowid)
            return int(self.execute(sql + " RETURNING id", args).fetchone()[0])

    def script(self, schema: str) -> None:
        """The SQLite schema (``CREATE .. IF NOT EXISTS``); on PostgreSQL the migrations made the tables."""
        if self._pg is None:
            with self.lock:
                self.conn.executescript(schema)

    def serialize(self, name: str) -> None:
        """Inside ``tx()``: one writer at a time for ``name`` across processes (PostgreSQL advisory
        transaction lock; SQLite's ``BEGIN IMMEDIATE`` already is)."""
        if self._pg is not None:
            self.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (name,))

    @contextmanager
    def tx(self) -> Iterator["SqlDB"]:
        """One transaction; nested ``tx()`` blocks join the outer one."""
        with self.lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self
                finally:
                    self._depth -= 1
                return
            self.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self
            except BaseException:
                self._depth = 0
                try:
                    self.conn.execute("ROLLBACK")
                except Exception:  # noqa: BLE001 - a broken connection rolled back already
                    pass
                raise
            self._depth = 0
            self.conn.execute("COMMIT")

    def close(self) -> None:
        with self.lock:
            if self.conn is not None:
                self.conn.close()
