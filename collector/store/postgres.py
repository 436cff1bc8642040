"""Collector state in PostgreSQL (``store.kind: postgres``), time series in a sink (VictoriaMetrics).

The district-scale store (issue 15): several collector processes share one PostgreSQL database.
It implements the same ``Store`` interface as the embedded ``SQLiteStore`` with the same
semantics, reusing its pure logic (``_SeqState`` dedup model, ``SQLiteStore._watermark`` commit
watermarks, event rows, token hashing) and ``store/topology.py`` (which runs on both: ``?``
placeholders are translated here, the tables come from the migrations). What differs, and why:

- **No state cached across transactions.** Every ``apply`` locks the dedup rows of the
  (agent, epoch)s it touches (``SELECT ... FOR UPDATE``, inserted first when new, in key order so
  two collectors never deadlock) and reads their gaps inside its own transaction. Whichever
  collector commits a seq first wins; the other sees it as a duplicate. Correct even when two
  collectors receive the same agent (a partition moving, a misconfiguration).
- **Fencing.** ``apply(..., fence=(name, holder, epoch))`` first checks, in the same
  transaction, that the lease ``name`` is still held by ``holder`` with that epoch (``FOR SHARE``:
  a takeover waits for the commit, and a commit after a takeover fails). It raises ``LeaseLost``
  (a ``StorageUnavailable``: ingest holds the group, does not acknowledge it; the broker
  redelivers it to the new holder). collector/partitions.py passes it.
- **Counters per node** (``counters(name, node, value)``): increments, summed on read, so the
  collectors' commits do not queue for one row.
- **Time series** go to the sink (write started before the database work, waited for before
  COMMIT, as in SQLiteStore); redelivery writes them again, VictoriaMetrics with
  ``-dedup.minScrapeInterval=1ms`` keeps one. ``latest`` keeps the newest value per series
  (measurement, device, tags) for interfaces; non-numeric fields live there too.
- Each thread has its own writer connection (partitions commit in parallel); readers come from a
  small pool of autocommit connections.
- ``StorageUnavailable`` for what is not the messages' fault: connection lost, server shutting
  down, deadlock/serialization failure, disk full; anything else (e.g. a NUL byte in a text) is
  the content's, and ingest isolates it into a dead letter.

Schema: ``pg_migrations/NNNN_name.sql`` applied in order, each in its own transaction under an
advisory lock (collectors starting together migrate once), recorded in ``schema_version``.
"""
from __future__ import annotations

import logging
import os
import queue
import re
import secrets
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import orjson
import psycopg

from campus_sense.wire import AGENT_MEASUREMENT, POLL_MEASUREMENT, TOPOLOGY_MEASUREMENTS, Message, Watermark, expand

from . import syslog as _syslog
from . import topology as _topology
from .base import ApplyResult, Reject, SeriesQueryUnsupported, StorageUnavailable, Store, TimeSeriesSink
from .series import AGGS, DAY
from .sqlite import (_STATE_COLS, ROLES, SQLiteStore, _SeqState, _event_row, agent_rows, agent_state, bind_agents,
                     event_dicts, events_since_rows, events_since_sql, events_sql, hash_token, mark_seen, sort_events,
                     split_topology)

log = logging.getLogger("collector.store.postgres")

MIGRATIONS = Path(__file__).resolve().parent / "pg_migrations"
#: pg_advisory_xact_lock key of the migrations ("campus-sense schema")
_MIGRATE_LOCK = 0x63735F736368
_dumps = orjson.dumps
_loads = orjson.loads
_SORT = orjson.OPT_SORT_KEYS
_SPECIAL = frozenset((POLL_MEASUREMENT, AGENT_MEASUREMENT))
_TOPOLOGY = frozenset(TOPOLOGY_MEASUREMENTS)
_AGENT_FIELDS = ("queue_depth", "oldest_age_s", "dropped_total", "published_total")
_INT_COLS = frozenset(("queue_depth", "dropped_total", "published_total"))

#: SQLSTATE classes that are the server's state, not the messages': connection (08), resources
#: (53: disk full, out of memory, too many connections), operator intervention (57: shutdown,
#: cancel), system (58), transaction rollback (40: serialization failure, deadlock)
_UNAVAILABLE = ("08", "53", "57", "58", "40")


class LeaseLost(StorageUnavailable):
    """The fencing token of the commit is no longer the lease's: another collector holds it."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _json(v: Any) -> str:
    """JSON text for a jsonb parameter (jsonb refuses \\u0000)."""
    s = _dumps(v).decode()
    return s.replace("\\u0000", "") if "\\u0000" in s else s


def _num(v: Any, integer: bool) -> Any:
    if type(v) is bool:
        return int(v)
    if isinstance(v, (int, float)):
        if integer:
            return int(v) if v == v and abs(v) < 2**63 else None
        return float(v)
    return None


_QCACHE: dict[str, str] = {}


def _qmark(sql: str) -> str:
    q = _QCACHE.get(sql)
    if q is None:
        q = _QCACHE[sql] = sql.replace("%", "%%").replace("?", "%s")
    return q


class _QConn:
    """sqlite3-style ``execute``/``executemany`` (``?`` placeholders) on a psycopg connection, for
    store/topology.py, which runs on both stores. Tables come from the migrations."""
    managed_schema = True

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn

    def execute(self, sql: str, args: Iterable[Any] = ()) -> psycopg.Cursor:
        cur = self.conn.cursor()
        cur.execute(_qmark(sql), tuple(args))
        return cur

    def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> psycopg.Cursor:
        cur = self.conn.cursor()
        cur.executemany(_qmark(sql), [tuple(r) for r in rows])
        return cur


def migrate(conn: psycopg.Connection, directory: Path = MIGRATIONS) -> list[int]:
    """Apply the numbered ``NNNN_name.sql`` files not applied yet, in order, one transaction each
    (under an advisory lock: collectors starting at once migrate once); returns the versions applied."""
    files = []
    for p in sorted(directory.glob("*.sql")):
        m = re.match(r"(\d+)_", p.name)
        if m:
            files.append((int(m.group(1)), p))
    done = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version(version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                     "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
    for version, p in files:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
            if conn.execute("SELECT 1 FROM schema_version WHERE version=%s", (version,)).fetchone():
                continue
            log.info("PostgreSQL schema: applying migration %s", p.name)
            conn.execute(p.read_text())
            conn.execute("INSERT INTO schema_version(version, name) VALUES (%s, %s)", (version, p.stem))
            done.append(version)
    return done


def schema_version(conn: psycopg.Connection) -> int:
    r = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return r[0] or 0


class PostgresStore(Store):
    def __init__(self, dsn: str | Callable[[], str], sink: TimeSeriesSink | None = None, *,
                 node: str | None = None, events_days: float = 180, topology_days: float = 400,
                 syslog_days: float = 180,
                 retention_interval_s: float = 3600, dead_letter_keep: int = 10_000, gap_days: float = 30,
                 connect_timeout_s: float = 10, path: str | None = None,
                 singleton: Callable[[str], bool] | None = None):
        """``dsn``: libpq connection string or URL, or a callable returning it (a ``Secret``'s
        ``reveal``: re-read on every new connection). ``node``: this collector's name (counters).
        ``singleton(name) -> bool``: whether this process may run the job ``name`` now (a singleton
        lease, collector/partitions.py); None: always (one collector). ``path``: a local SQLite
        file for what is not in PostgreSQL yet (campus model, compliance history)."""
        self._dsn = dsn
        self.sink = sink
        self.node = node or socket.gethostname()
        self.path = path or "collector.db"
        self.kind = "postgres"
        self.connect_timeout_s = connect_timeout_s
        self.events_ms = int(events_days * DAY)
        self.syslog_ms = int(syslog_days * DAY)
        self.topology_ms = int(topology_days * DAY)
        self.gap_ms = int(gap_days * DAY)
        self.dead_letter_keep = dead_letter_keep
        self.retention_interval_s = retention_interval_s
        self._next_retention = time.monotonic() + 5
        self.singleton = singleton
        self._local = threading.local()
        self._writers: list[psycopg.Connection] = []
        self._writers_lock = threading.Lock()
        self._pool: queue.LifoQueue = queue.LifoQueue()
        self._closed = False
        #: agent -> (site, building) it is bound to; re-checked against the table on a mismatch
        self._bound: dict[str, tuple[str, str]] = {}
        self._revoked: set[str] = set()
        self._revoked_at = float("-inf")
        self.stats_lock = threading.Lock()
        try:
            with psycopg.connect(self._conninfo(), autocommit=True, connect_timeout=int(connect_timeout_s)) as c:
                migrate(c)
                self._bound = {a: (si, b) for a, si, b in c.execute("SELECT id, site, building FROM agents")
                               if si is not None}
        except psycopg.OperationalError as e:
            raise StorageUnavailable(f"PostgreSQL: {e}") from e

    # ------------------------------------------------------------ connections
    def _conninfo(self) -> str:
        return self._dsn() if callable(self._dsn) else self._dsn

    def _connect(self, autocommit: bool) -> psycopg.Connection:
        return psycopg.connect(self._conninfo(), autocommit=autocommit, connect_timeout=int(self.connect_timeout_s),
                               application_name=f"campus-sense {self.node}")

    def _writer(self) -> psycopg.Connection:
        c = getattr(self._local, "w", None)
        if c is None or c.closed or c.broken:
            if c is not None:
                with self._writers_lock:
                    if c in self._writers:
                        self._writers.remove(c)
            c = self._local.w = self._connect(autocommit=True)
            with self._writers_lock:
                self._writers.append(c)
        return c

    @contextmanager
    def _read(self) -> Iterator[psycopg.Connection]:
        try:
            c = self._pool.get_nowait()
        except queue.Empty:
            c = None
        if c is None or c.closed or c.broken:
            c = self._connect(autocommit=True)
        ok = False
        try:
            yield c
            ok = True
        finally:
            if ok and not c.broken and not self._closed and self._pool.qsize() < 16:
                self._pool.put(c)
            else:
                c.close()

    def _q(self, sql: str, args: Iterable[Any] = ()) -> list[tuple]:
        with self._read() as c:
            return c.execute(sql, tuple(args)).fetchall()

    def close(self) -> None:
        self._closed = True
        with self._writers_lock:
            for c in self._writers:
                try:
                    c.close()
                except Exception:  # noqa: BLE001
                    pass
            self._writers.clear()
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                break
        if self.sink:
            self.sink.close()

    @staticmethod
    def _unavailable(e: Exception) -> bool:
        if isinstance(e, (psycopg.OperationalError, psycopg.InterfaceError)):
            return True
        code = getattr(e, "sqlstate", None) or ""
        return code[:2] in _UNAVAILABLE

    def _tx(self, fn: Callable[[psycopg.Connection], Any]) -> Any:
        """Run ``fn(conn)`` in one transaction on this thread's writer; server trouble ->
        StorageUnavailable (rolled back)."""
        try:
            w = self._writer()
            with w.transaction():
                return fn(w)
        except psycopg.Error as e:
            if self._unavailable(e):
                raise StorageUnavailable(f"PostgreSQL: {e}") from e
            raise

    @property
    def counters(self) -> dict[str, int]:
        """Ingest counters of all collector nodes (summed)."""
        try:
            return {n: int(v) for n, v in self._q("SELECT name, sum(value) FROM counters GROUP BY name")}
        except psycopg.Error:
            return {}

    # ------------------------------------------------------------ write path
    def apply(self, messages: Iterable[Message], rejects: Iterable[Reject],
              clock: dict[str, tuple[int, int]] | None = None,
              fence: tuple[str, str, int] | None = None) -> ApplyResult:
        """Commit one group atomically. ``clock``: agent -> (clock offset ms, at ms); ``fence``:
        (lease name, holder, epoch) that must still hold the lease in this transaction."""
        messages = list(messages)
        rejects = list(rejects)
        try:
            res, touched = self._tx(lambda w: self._apply(w, messages, rejects, clock, fence))
        except BaseException:
            self._bound.clear()     # may hold bindings of the rolled-back transaction
            raise
        res.marks = [SQLiteStore._watermark(a, e, st) for (a, e), st in touched.items()]
        mono = time.monotonic()
        if mono >= self._next_retention:
            self._next_retention = mono + self.retention_interval_s
            try:
                self.retention()
            except Exception as e:  # noqa: BLE001 - the group is committed; retention retries later
                log.error("retention failed: %s", e)
        return res

    def clock_offsets(self) -> dict[str, tuple[int, int]]:
        """agent -> (clock offset ms, measured at ms) as last stored by any collector: where a
        partition's new holder starts its estimates (collector/ingest.py)."""
        return {a: (int(o), int(t)) for a, o, t in self._q(
            "SELECT id, clock_offset_ms, clock_ms FROM agents WHERE clock_offset_ms IS NOT NULL AND clock_ms IS NOT NULL")}

    def _check_fence(self, w: psycopg.Connection, fence: tuple[str, str, int]) -> None:
        name, holder, epoch = fence
        if w.execute("SELECT 1 FROM leases WHERE name=%s AND holder=%s AND epoch=%s FOR SHARE",
                     (name, holder, epoch)).fetchone() is None:
            raise LeaseLost(f"lease {name}: epoch {epoch} of {holder} is no longer current (taken over)")

    def _bind(self, w: psycopg.Connection, messages: list[Message], rejects: list[Reject]) -> list[Message]:
        """sqlite.bind_agents: an agent stays in the site/building it was first seen or enrolled with."""
        return bind_agents(messages, rejects, self._bound, self._revoked_agents(w), lambda agent: w.execute(
            "SELECT site, building FROM agents WHERE id=%s", (agent,)).fetchone())

    def _revoked_agents(self, w: psycopg.Connection) -> set[str]:
        now = time.monotonic()
        if now - self._revoked_at > 2.0:
            self._revoked = {a for (a,) in w.execute("SELECT id FROM agents WHERE revoked_ms IS NOT NULL")}
            self._revoked_at = now
        return self._revoked

    def _lock_seq(self, w: psycopg.Connection, keys: set[tuple[str, str]], now: int) -> dict[tuple, _SeqState]:
        """Dedup state of ``keys``, row-locked for this transaction (new ones inserted first)."""
        if not keys:
            return {}
        ks = sorted(keys)
        agents = [k[0] for k in ks]
        epochs = [k[1] for k in ks]
        w.execute("INSERT INTO seq_state(agent, epoch, hwm, first_ms, last_ms) "
                  "SELECT a, e, 0, %s, %s FROM unnest(%s::text[], %s::text[]) AS k(a, e) ORDER BY a, e "
                  "ON CONFLICT (agent, epoch) DO NOTHING", (now, now, agents, epochs))
        out: dict[tuple, _SeqState] = {}
        for a, e, hwm, first in w.execute(
                "SELECT agent, epoch, hwm, first_ms FROM seq_state WHERE (agent, epoch) IN "
                "(SELECT * FROM unnest(%s::text[], %s::text[])) ORDER BY agent, epoch FOR UPDATE",
                (agents, epochs)):
            out[(a, e)] = _SeqState(hwm, [], first)
        for a, e, f, l in w.execute(
                "SELECT agent, epoch, first_seq, last_seq FROM gaps WHERE (agent, epoch) IN "
                "(SELECT * FROM unnest(%s::text[], %s::text[])) ORDER BY agent, epoch, first_seq", (agents, epochs)):
            out[(a, e)].gaps.append([f, l])
        return out

    def _apply(self, w: psycopg.Connection, messages: list[Message], rejects: list[Reject],
               clock: dict | None, fence: tuple | None) -> tuple[ApplyResult, dict]:
        now = _now_ms()
        res = ApplyResult()
        accepted = res.accepted
        if fence is not None:
            self._check_fence(w, fence)
        messages = self._bind(w, messages, rejects)
        keys = {(m.agent, m.epoch) for m in messages if m.seq is not None}
        keys.update((r.agent, r.epoch) for r in rejects if r.seq is not None)
        seq = self._lock_seq(w, keys, now)
        latest: dict[tuple, tuple] = {}
        sink_items: list[tuple[tuple[str, str, str], list[dict]]] = []
        dev_seen: dict[str, list] = {}
        facts: list[tuple] = []
        events: list[tuple] = []
        syslog_rows: list[tuple] = []   # syslog archive lines (store/syslog.py), not events
        agents_seen: dict[str, Any] = {}
        states: list[Message] = []
        touched: dict[tuple, _SeqState] = {}
        special_items: list[tuple[dict, dict]] = []
        topo_items: list[dict] = []
        canon_cache: dict[tuple, str] = {}
        points = 0

        for msg in messages:
            if msg.seq is None and msg.kind == "events":      # made by the collector itself
                accepted.append(msg)
                events.extend(_event_row(msg.agent, it) for it in msg.items)
                continue
            agents_seen[msg.agent] = msg.topic
            if msg.seq is None:
                states.append(msg)
                accepted.append(msg)
                continue
            st = seq[(msg.agent, msg.epoch)]
            touched[(msg.agent, msg.epoch)] = st
            if not st.accept(msg.seq):
                res.duplicates += 1
                continue
            accepted.append(msg)
            kind = msg.kind
            tp = msg.topic
            if kind == "metrics":
                points += msg.count()
                items = split_topology(msg, topo_items, dev_seen)
                if msg.rows:
                    items = expand(items)
                last_d = None
                for it in items:
                    d = it["d"]
                    tags = it.get("tags")
                    key = (it["m"], d, *tags.items()) if tags else (it["m"], d)
                    tj = canon_cache.get(key)
                    if tj is None:
                        tj = canon_cache[key] = _dumps(tags or {}, option=_SORT).decode()
                    f = it["f"]
                    if None in f.values():
                        f = {k: v for k, v in f.items() if v is not None}
                        if not f:
                            continue
                    t = it["t"]
                    lk = (d, it["m"], tj)
                    prev = latest.get(lk)
                    if prev is None or prev[0] <= t:
                        latest[lk] = (t, f)
                    if d != last_d:
                        last_d = d
                        mark_seen(dev_seen, d, msg.agent, tp, t)
                    if it["m"] in _SPECIAL:
                        special_items.append((it, f))
                sink_items.append(((tp.site, tp.building, msg.agent), items))
            elif kind == "events":
                sort_events(msg, events, syslog_rows, dev_seen)
            elif kind == "facts":
                for it in msg.items:
                    t = it["t"]
                    facts.append((_json(it["facts"]), t, it["d"], t))
                    mark_seen(dev_seen, it["d"], msg.agent, tp, t)
        res.points = points
        polls: list[tuple] = []
        agent_stats: dict[str, dict] = {}
        for it, f in special_items:
            d, t = it["d"], it["t"]
            if it["m"] == POLL_MEASUREMENT:
                ok = f.get("ok")
                reason, err = (None, None) if ok else (f.get("reason"), f.get("error"))
                polls.append((None if ok is None else bool(ok), t, _num(f.get("duration_s"), False),
                              (it.get("tags") or {}).get("driver"), None if reason is None else str(reason),
                              None if err is None else str(err), d, t))
            else:
                a = agent_stats.setdefault(d, {})
                for k in _AGENT_FIELDS:
                    if k in f:
                        a[k] = _num(f[k], k in _INT_COLS)
        for d in agent_stats:
            if d in agents_seen:
                dev_seen.pop(d, None)
        # ---- the sink's HTTP write overlaps with the database work; waited for before COMMIT
        pending_sink = None
        if sink_items and self.sink is not None:
            try:
                pending_sink = self.sink.write_begin(sink_items)
            except Exception as e:
                raise StorageUnavailable(f"{self.sink.name}: {e}") from e
        cur = w.cursor()
        if latest:
            cur.executemany(
                "INSERT INTO latest(device, measurement, tags, ts_ms, fields) VALUES (%s,%s,%s,%s,%s) "
                "ON CONFLICT (device, measurement, tags) DO UPDATE SET ts_ms=excluded.ts_ms, fields=excluded.fields "
                "WHERE excluded.ts_ms >= latest.ts_ms",
                [(*k, t, _dumps(f).decode()) for k, (t, f) in sorted(latest.items())])
        if topo_items:
            _topology.observe(_QConn(w), topo_items)
        if dev_seen:
            cur.executemany(
                "INSERT INTO devices(id, agent, site, building, first_seen_ms, last_seen_ms) VALUES (%s,%s,%s,%s,%s,%s) "
                "ON CONFLICT (id) DO UPDATE SET agent=excluded.agent, site=excluded.site, building=excluded.building,"
                " last_seen_ms=greatest(coalesce(devices.last_seen_ms, 0), excluded.last_seen_ms)",
                [(d, a, s, b, t, t) for d, (a, s, b, t) in sorted(dev_seen.items())])
        if polls:
            cur.executemany("UPDATE devices SET reachable=%s, last_poll_ms=%s, poll_duration_s=%s, "
                            "driver=coalesce(%s, driver), reason=%s, error=%s WHERE id=%s "
                            "AND coalesce(last_poll_ms, 0) <= %s", polls)
        if facts:
            cur.executemany("UPDATE devices SET facts=cs_merge_patch(facts, %s::jsonb), facts_ms=%s WHERE id=%s "
                            "AND coalesce(facts_ms, 0) <= %s", facts)
        if events:
            cur.executemany("INSERT INTO events(agent, device, ts_ms, type, severity, tags, data) "
                            "VALUES (%s,%s,%s,%s,%s,%s,%s)", events)
        if syslog_rows:
            cur.executemany("INSERT INTO syslog(ts_ms, agent, device, host, facility, severity, program, mnemonic, "
                            "msg, data) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", syslog_rows)
        if agents_seen:
            cur.executemany(
                "INSERT INTO agents(id, site, building, state, first_seen_ms, last_seen_ms) VALUES (%s,%s,%s,%s,%s,%s) "
                "ON CONFLICT (id) DO UPDATE SET site=excluded.site, building=excluded.building, "
                "last_seen_ms=excluded.last_seen_ms",
                [(a, tp.site, tp.building, "online", now, now) for a, tp in sorted(agents_seen.items())])
        for msg in states:
            self._apply_state(w, msg, now)
        for agent, a in agent_stats.items():
            sets = ", ".join(f"{k}=%s" for k in a)
            w.execute(f"UPDATE agents SET {sets} WHERE id=%s", (*a.values(), agent))
        # ---- rejects (their seq counts as dealt with)
        nrej = 0
        dead = []
        rej_rows = []
        for r in rejects:
            if r.seq is not None:
                st = seq[(r.agent, r.epoch)]
                touched[(r.agent, r.epoch)] = st
                if not st.accept(r.seq):
                    res.duplicates += 1
                    continue
            dead.append((now, r.topic, r.agent, r.epoch, r.seq, r.reason, r.error, r.payload or b""))
            res.dead.append(r)
            nrej += 1
            rej_rows.append((r.reason, r.topic, r.error, now))
        if rej_rows:
            cur.executemany("INSERT INTO rejected(reason, count, last_topic, last_error, last_ms) VALUES (%s,1,%s,%s,%s) "
                            "ON CONFLICT (reason) DO UPDATE SET count=rejected.count+1, last_topic=excluded.last_topic, "
                            "last_error=excluded.last_error, last_ms=excluded.last_ms", rej_rows)
        if dead:
            cur.executemany("INSERT INTO dead_letters(received_ms, topic, agent, epoch, seq, reason, error, payload) "
                            "VALUES (%s,%s,%s,%s,%s,%s,%s,%s)", dead)
        # ---- dedup state + gaps
        upd, gap_keys, gap_rows = [], [], []
        for (agent, epoch), st in touched.items():
            if st.dirty:
                upd.append((st.hwm, now, agent, epoch))
                st.dirty = False
            if st.gaps_dirty:
                gap_keys.append((agent, epoch))
                gap_rows.extend((agent, epoch, a, b, now) for a, b in st.gaps)
                st.gaps_dirty = False
        if upd:
            cur.executemany("UPDATE seq_state SET hwm=%s, last_ms=%s WHERE agent=%s AND epoch=%s", upd)
        if gap_keys:
            cur.executemany("DELETE FROM gaps WHERE agent=%s AND epoch=%s", gap_keys)
        if gap_rows:
            cur.executemany("INSERT INTO gaps(agent, epoch, first_seq, last_seq, detected_ms) "
                            "VALUES (%s,%s,%s,%s,%s)", gap_rows)
        if clock:
            cur.executemany("UPDATE agents SET clock_offset_ms=%s, clock_ms=%s WHERE id=%s",
                            [(off, at, a) for a, (off, at) in clock.items()])
        if pending_sink is not None:
            try:
                self.sink.write_end(pending_sink)
            except Exception as e:
                raise StorageUnavailable(f"{self.sink.name}: {e}") from e
        delta = {"messages_stored": len(accepted), "points_stored": points, "duplicates": res.duplicates,
                 "rejected": nrej}
        rows = [(k, self.node, v) for k, v in sorted(delta.items()) if v]
        if rows:
            cur.executemany("INSERT INTO counters(name, node, value) VALUES (%s,%s,%s) ON CONFLICT (name, node) "
                            "DO UPDATE SET value=counters.value+excluded.value", rows)
        return res, touched

    def _apply_state(self, w: psycopg.Connection, msg: Message, now: int) -> None:
        vals, info = agent_state(msg, now)
        for col, _ in _STATE_COLS:     # typed columns here (SQLite keeps what was sent)
            if col in vals:
                v = vals[col]
                vals[col] = (None if v is None else str(v)) if col in ("version", "config_hash") \
                    else _num(v, col in _INT_COLS)
        sets = ", ".join(f"{k}=%s" for k in vals)
        w.execute(f"UPDATE agents SET {sets}, info=cs_merge_patch(info, %s::jsonb) WHERE id=%s",
                  (*vals.values(), _json(info), msg.agent))

    def watermark(self, agent: str, epoch: str) -> Watermark:
        rows = self._q("SELECT hwm FROM seq_state WHERE agent=%s AND epoch=%s", (agent, epoch))
        gaps = [[a, b] for a, b in self._q("SELECT first_seq, last_seq FROM gaps WHERE agent=%s AND epoch=%s "
                                           "ORDER BY first_seq", (agent, epoch))]
        return SQLiteStore._watermark(agent, epoch, _SeqState(rows[0][0] if rows else 0, gaps, None))

    # ------------------------------------------------------------ retention
    def retention(self, now_ms: int | None = None) -> dict[str, int]:
        """Events, topology intervals, dead letters beyond the newest ``dead_letter_keep`` and gaps
        older than ``gap_days``; each in its own transaction. With ``singleton`` set only the
        collector holding the ``retention`` lease runs it ({} otherwise)."""
        if self.singleton is not None and not self.singleton("retention"):
            return {}
        now = now_ms or _now_ms()
        out: dict[str, int] = {}
        jobs = (
            ("events", lambda w: w.execute("DELETE FROM events WHERE ts_ms < %s", (now - self.events_ms,)).rowcount),
            ("syslog", lambda w: w.execute("DELETE FROM syslog WHERE ts_ms < %s", (now - self.syslog_ms,)).rowcount),
            ("topology", lambda w: _topology.retention(_QConn(w), now - self.topology_ms)),
            ("dead_letters", lambda w: w.execute(
                "DELETE FROM dead_letters WHERE id <= (SELECT max(id) FROM dead_letters) - %s",
                (self.dead_letter_keep,)).rowcount),
            ("gaps", lambda w: w.execute("DELETE FROM gaps WHERE detected_ms < %s", (now - self.gap_ms,)).rowcount),
        )
        for name, fn in jobs:
            n = self._tx(fn)
            if n:
                out[name] = n
        if out:
            log.info("retention: deleted %s", ", ".join(f"{v} {k}" for k, v in out.items()))
        return out

    def topology_retention(self, cutoff_ms: int) -> int:
        return self._tx(lambda w: _topology.retention(_QConn(w), cutoff_ms))

    # ------------------------------------------------------------ agents (enrolment, binding)
    def agent_enrol(self, agent: str, site: str, building: str) -> dict:
        def fn(w):
            row = w.execute("SELECT site, building, revoked_ms FROM agents WHERE id=%s FOR UPDATE", (agent,)).fetchone()
            w.execute("INSERT INTO agents(id, site, building, state) VALUES (%s,%s,%s,'enrolled') ON CONFLICT (id) "
                      "DO UPDATE SET site=excluded.site, building=excluded.building, revoked_ms=NULL",
                      (agent, site, building))
            if row and (row[0], row[1]) != (site, building):
                w.execute("UPDATE devices SET site=%s, building=%s WHERE agent=%s", (site, building, agent))
            return row
        row = self._tx(fn)
        self._bound[agent] = (site, building)
        self._revoked.discard(agent)
        self._revoked_at = float("-inf")
        return dict(zip(("site", "building", "revoked_ms"), row)) if row else {}

    def agent_revoke(self, agent: str) -> bool:
        n = self._tx(lambda w: w.execute("UPDATE agents SET revoked_ms=%s, state='revoked' WHERE id=%s",
                                         (_now_ms(), agent)).rowcount)
        if n:
            self._revoked.add(agent)
        return bool(n)

    def agent_binding(self, agent: str) -> dict | None:
        cols = ("site", "building", "state", "revoked_ms", "last_seen_ms")
        rows = self._q(f"SELECT {', '.join(cols)} FROM agents WHERE id=%s", (agent,))
        return dict(zip(cols, rows[0])) if rows else None

    def agent_move(self, agent: str, site: str, building: str) -> bool:
        def fn(w):
            n = w.execute("UPDATE agents SET site=%s, building=%s WHERE id=%s", (site, building, agent)).rowcount
            if n:
                w.execute("UPDATE devices SET site=%s, building=%s WHERE agent=%s", (site, building, agent))
            return n
        n = self._tx(fn)
        if n:
            self._bound[agent] = (site, building)
        return bool(n)

    def sites(self) -> list[str]:
        """Sites of the agents known (enrolled or seen)."""
        return [s for (s,) in self._q("SELECT DISTINCT site FROM agents WHERE site IS NOT NULL ORDER BY site")]

    # ------------------------------------------------------------ queries
    def agents(self, now_ms: int, offline_after_s: float) -> list[dict]:
        return agent_rows(self._q, now_ms, offline_after_s)

    _DEV_COLS = ("id", "agent", "site", "building", "facts", "facts_ms", "first_seen_ms", "last_seen_ms",
                 "reachable", "last_poll_ms", "poll_duration_s", "driver", "reason", "error")

    def _dev(self, row) -> dict:
        d = dict(zip(self._DEV_COLS, row))
        d["facts"] = d["facts"] if isinstance(d["facts"], dict) else {}
        return d

    def devices(self) -> list[dict]:
        return [self._dev(r) for r in self._q(f"SELECT {', '.join(self._DEV_COLS)} FROM devices ORDER BY id")]

    def device(self, device_id: str) -> dict | None:
        rows = self._q(f"SELECT {', '.join(self._DEV_COLS)} FROM devices WHERE id=%s", (device_id,))
        return self._dev(rows[0]) if rows else None

    def latest(self, device_id: str, measurement: str, max_chunks: int = 48) -> list[tuple[dict, int, dict]]:
        """[(tags, ts_ms, fields)] of the newest sample of each series of a device and measurement."""
        return [(_loads(tags), ts, _loads(fields)) for tags, ts, fields in self._q(
            "SELECT tags, ts_ms, fields FROM latest WHERE device=%s AND measurement=%s ORDER BY tags",
            (device_id, measurement))]

    def interfaces(self, device_id: str) -> list[dict]:
        return SQLiteStore.interfaces(self, device_id)   # built from latest() only

    def series(self, measurement: str, device: str | None, field: str | None, start_ms: int | None,
               end_ms: int | None, step_ms: int | None, tags: dict[str, str] | None, limit: int,
               agg: str = "avg") -> list[dict]:
        if agg not in AGGS:
            raise ValueError(f"agg must be one of {', '.join(AGGS)}, not {agg!r}")
        reader = getattr(self.sink, "reader", None)
        if reader is None:
            raise SeriesQueryUnsupported(
                "time series are written to the time-series sink and no store.query_url is set; set it to "
                "VictoriaMetrics' Prometheus query API")
        return reader.series(measurement, device, field, start_ms, end_ms, step_ms, tags, limit, agg,
                             now_ms=_now_ms())

    def syslog(self, host: str | None = None, q: str | None = None, since_ms: int | None = None,
               until_ms: int | None = None, limit: int = 100, **kw: Any) -> list[dict]:
        """The syslog archive, newest first (store/syslog.py ``search_pg``)."""
        return _syslog.search_pg(self._q, host, q, since_ms, until_ms, limit, **kw)

    def events(self, device: str | None, since_ms: int | None, until_ms: int | None, severity: str | None,
               type_: str | None, limit: int) -> list[dict]:
        return event_dicts(self._q(*events_sql(device, since_ms, until_ms, severity, type_, limit, ph="%s")))

    def events_since(self, since_ms: int, types: Iterable[str] | None = None,
                     limit: int = 100_000) -> list[dict]:
        types = None if types is None else sorted(types)
        if types == []:
            return []
        return events_since_rows(self._q(*events_since_sql(since_ms, types, limit, ph="%s")))

    def ingest_stats(self) -> dict:
        rej = {r: {"count": n, "last_topic": t, "last_error": e, "last_ms": ms} for r, n, t, e, ms in self._q(
            "SELECT reason, count, last_topic, last_error, last_ms FROM rejected ORDER BY reason")}
        gaps = [{"agent": a, "epoch": e, "first_seq": f, "last_seq": l, "missing": l - f + 1, "detected_ms": d}
                for a, e, f, l, d in self._q(
                    "SELECT agent, epoch, first_seq, last_seq, detected_ms FROM gaps ORDER BY agent, epoch, first_seq")]
        dl_cols = ("id", "received_ms", "topic", "agent", "epoch", "seq", "reason", "error", "bytes")
        dead = [dict(zip(dl_cols, r)) for r in self._q(
            "SELECT id, received_ms, topic, agent, epoch, seq, reason, error, length(payload) FROM dead_letters "
            "ORDER BY id DESC LIMIT 20")]
        return {"counters": self.counters, "rejected": rej, "dead_letters": dead,
                "rejected_total": sum(x["count"] for x in rej.values()),
                "gaps": gaps, "missing_total": sum(g["missing"] for g in gaps)}

    def dead_letter(self, dl_id: int) -> dict | None:
        cols = ("id", "received_ms", "topic", "agent", "epoch", "seq", "reason", "error", "payload")
        rows = self._q(f"SELECT {', '.join(cols)} FROM dead_letters WHERE id=%s", (dl_id,))
        if not rows:
            return None
        d = dict(zip(cols, rows[0]))
        d["payload"] = bytes(d["payload"])
        return d

    # ------------------------------------------------------------ tokens
    def token_create(self, role: str, name: str | None = None) -> tuple[int, str]:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        token = "cs_" + secrets.token_urlsafe(32)
        tid = self._tx(lambda w: w.execute(
            "INSERT INTO tokens(name, role, hash, created_ms) VALUES (%s,%s,%s,%s) RETURNING id",
            (name, role, hash_token(token), _now_ms())).fetchone()[0])
        return tid, token

    def token_list(self) -> list[dict]:
        cols = ("id", "name", "role", "created_ms", "revoked_ms")
        return [dict(zip(cols, r)) for r in self._q(f"SELECT {', '.join(cols)} FROM tokens ORDER BY id")]

    def token_revoke(self, ident: str) -> int:
        col, v = ("id", int(ident)) if ident.isdigit() else ("name", ident)
        return self._tx(lambda w: w.execute(f"UPDATE tokens SET revoked_ms=%s WHERE {col}=%s AND revoked_ms IS NULL",
                                            (_now_ms(), v)).rowcount)

    def token_role(self, token: str) -> tuple[int, str] | None:
        rows = self._q("SELECT id, role FROM tokens WHERE hash=%s AND revoked_ms IS NULL", (hash_token(token),))
        return (rows[0][0], rows[0][1]) if rows else None

    def token_name(self, token_id: int) -> str | None:
        rows = self._q("SELECT name FROM tokens WHERE id=%s", (token_id,))
        return rows[0][0] if rows else None

    def agent_info(self, agent_id: str) -> dict | None:
        rows = self._q("SELECT info FROM agents WHERE id=%s", (agent_id,))
        if not rows:
            return None
        return rows[0][0] if isinstance(rows[0][0], dict) else {}

    # ------------------------------------------------------------ topology (store/topology.py)
    def topology_current(self, kind: str, device: str | None = None, since_ms: int | None = None,
                         limit: int = _topology.MAX_ROWS) -> list[dict]:
        with self._read() as c:
            return _topology.current(_QConn(c), kind, device, since_ms, limit)

    def topology_history(self, kind: str, device: str | None = None, start_ms: int | None = None,
                         end_ms: int | None = None, mac: str | None = None, ip: str | None = None,
                         limit: int = _topology.MAX_ROWS) -> list[dict]:
        with self._read() as c:
            return _topology.history(_QConn(c), kind, device, start_ms, end_ms, mac, ip, limit)

    def mac_history(self, mac: str, start_ms: int | None = None, end_ms: int | None = None,
                    limit: int = _topology.MAX_ROWS) -> dict:
        with self._read() as c:
            q = _QConn(c)
            return {"mac": _topology.norm_mac(mac) or mac.lower(),
                    "fdb": _topology.history(q, "fdb", None, start_ms, end_ms, mac=mac, limit=limit),
                    "arp": _topology.history(q, "arp", None, start_ms, end_ms, mac=mac, limit=limit)}

    def ip_history(self, ip: str, start_ms: int | None = None, end_ms: int | None = None,
                   limit: int = _topology.MAX_ROWS) -> dict:
        with self._read() as c:
            q = _QConn(c)
            return {"ip": _topology.norm_ip(ip),
                    "arp": _topology.history(q, "arp", None, start_ms, end_ms, ip=ip, limit=limit),
                    "ip_address": _topology.history(q, "ip_address", None, start_ms, end_ms, ip=ip, limit=limit)}

    def neighbour_history(self, device: str | None = None, start_ms: int | None = None, end_ms: int | None = None,
                          limit: int = _topology.MAX_ROWS) -> list[dict]:
        with self._read() as c:
            return _topology.history(_QConn(c), "lldp", device, start_ms, end_ms, limit=limit)


_ = os
