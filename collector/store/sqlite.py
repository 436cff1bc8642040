"""Embedded SQLite store (WAL): metadata always, time series when ``store.kind: sqlite``.

One writer (the ingest thread) owns ``self._w``; API readers use their own
per-thread connections. ``apply`` commits one group of messages atomically:
samples, latest values, devices, agents, events, the dedup state (high-water
mark + gaps per agent/epoch) and counters. A killed collector therefore either
committed a message (and dedups its redelivery) or did not (and gets it again,
because it was not acknowledged).

Dedup model per (agent, epoch): ``hwm`` = highest seq seen; ``gaps`` = seq
ranges below ``hwm`` not received yet. A seq is a duplicate iff it is <= hwm
and not inside a gap. A late arrival inside a gap shrinks or splits the gap.
"""
from __future__ import annotations

import hashlib
import logging
import os
import secrets
import sqlite3
import threading
import time
from typing import Any, Iterable
from operator import itemgetter

import numpy as np
import orjson

from campus_sense.wire import (AGENT_MEASUREMENT, COUNTERS, MAX_COMMIT_GAPS, POLL_MEASUREMENT, TOPOLOGY_MEASUREMENTS,
                               Message, Watermark, expand)

from . import syslog as _syslog
from . import topology as _topology
from . import codec
from . import disk as _disk
from .disk import DiskBudget
from .series import (AGGS, DAY, HOUR, LEVEL_NAMES, R1D, R1H, R5M, RAW, SEP, Retention, SeriesEngine, compose,
                     head_log_messages, rollup, select, transpose, value_of)
from .series import concat_blocks as _concat, dedup as _dedup
from .base import ApplyResult, Reject, SeriesQueryUnsupported, StorageUnavailable, Store, TimeSeriesSink

log = logging.getLogger("collector.store")

ROLES = ("admin", "it", "security")

SCHEMA = """
CREATE TABLE IF NOT EXISTS series_groups(
  id INTEGER PRIMARY KEY, measurement TEXT NOT NULL, device TEXT NOT NULL, UNIQUE(measurement, device));
CREATE TABLE IF NOT EXISTS series(
  id INTEGER PRIMARY KEY, measurement TEXT NOT NULL, device TEXT NOT NULL, tags TEXT NOT NULL,
  grp INTEGER NOT NULL REFERENCES series_groups(id), UNIQUE(measurement, device, tags));
CREATE INDEX IF NOT EXISTS series_device ON series(device, measurement);
-- samples themselves (kind sqlite): head_log + chunks, see series.py
-- latest value per series when time series go to an external sink
CREATE TABLE IF NOT EXISTS latest(series_id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, fields TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS agents(
  id TEXT PRIMARY KEY, site TEXT, building TEXT, state TEXT, version TEXT, config_hash TEXT,
  drivers TEXT, queue_depth INTEGER, oldest_age_s REAL, dropped_total INTEGER, published_total INTEGER,
  first_seen_ms INTEGER, last_seen_ms INTEGER, birth_ms INTEGER, death_ms INTEGER, heartbeat_ms INTEGER,
  info TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS devices(
  id TEXT PRIMARY KEY, agent TEXT, site TEXT, building TEXT, facts TEXT NOT NULL DEFAULT '{}',
  facts_ms INTEGER, first_seen_ms INTEGER, last_seen_ms INTEGER, reachable INTEGER, last_poll_ms INTEGER,
  poll_duration_s REAL, driver TEXT, reason TEXT, error TEXT);
CREATE TABLE IF NOT EXISTS events(
  id INTEGER PRIMARY KEY, agent TEXT NOT NULL, device TEXT NOT NULL, ts_ms INTEGER NOT NULL, type TEXT NOT NULL,
  severity TEXT NOT NULL, tags TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts_ms);
CREATE TABLE IF NOT EXISTS seq_state(
  agent TEXT NOT NULL, epoch TEXT NOT NULL, hwm INTEGER NOT NULL, first_ms INTEGER, last_ms INTEGER,
  PRIMARY KEY(agent, epoch));
CREATE TABLE IF NOT EXISTS gaps(
  agent TEXT NOT NULL, epoch TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
  detected_ms INTEGER NOT NULL, PRIMARY KEY(agent, epoch, first_seq));
CREATE TABLE IF NOT EXISTS rejected(
  reason TEXT PRIMARY KEY, count INTEGER NOT NULL, last_topic TEXT, last_error TEXT, last_ms INTEGER);
-- messages refused for their own content: raw payload kept for inspection (newest dead_letter_keep)
CREATE TABLE IF NOT EXISTS dead_letters(
  id INTEGER PRIMARY KEY, received_ms INTEGER NOT NULL, topic TEXT NOT NULL, agent TEXT, epoch TEXT, seq INTEGER,
  reason TEXT NOT NULL, error TEXT NOT NULL, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tokens(
  id INTEGER PRIMARY KEY, name TEXT, role TEXT NOT NULL, hash TEXT NOT NULL UNIQUE,
  created_ms INTEGER NOT NULL, revoked_ms INTEGER, last_used_ms INTEGER);
"""

_dumps = orjson.dumps
_loads = orjson.loads
_SORT = orjson.OPT_SORT_KEYS
_SPECIAL = frozenset((POLL_MEASUREMENT, AGENT_MEASUREMENT))
#: kept as intervals by store/topology.py, never as series
_TOPOLOGY = frozenset(TOPOLOGY_MEASUREMENTS)
_MEASUREMENT = itemgetter("m")
_AGENT_FIELDS = ("queue_depth", "oldest_age_s", "dropped_total", "published_total")


def _now_ms() -> int:
    return int(time.time() * 1000)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class _SeqState:
    __slots__ = ("hwm", "gaps", "dirty", "gaps_dirty", "first_ms")

    def __init__(self, hwm: int, gaps: list[list[int]], first_ms: int | None):
        self.hwm = hwm
        self.gaps = gaps
        self.dirty = False
        self.gaps_dirty = False
        self.first_ms = first_ms

    def accept(self, seq: int) -> bool:
        """True if ``seq`` is new (and records it), False for a duplicate."""
        hwm = self.hwm
        if seq > hwm:
            if seq > hwm + 1 and hwm >= 0:
                self.gaps.append([hwm + 1, seq - 1])
                self.gaps_dirty = True
            self.hwm = seq
            self.dirty = True
            return True
        for i, g in enumerate(self.gaps):
            a, b = g
            if a <= seq <= b:
                if a == b:
                    del self.gaps[i]
                elif seq == a:
                    g[0] = a + 1
                elif seq == b:
                    g[1] = b - 1
                else:
                    g[1] = seq - 1
                    self.gaps.insert(i + 1, [seq + 1, b])
                self.gaps_dirty = self.dirty = True
                return True
        return False


def _event_row(agent: str, it: dict) -> tuple:
    """events table row (agent, device, ts_ms, type, severity, tags, data) of a wire event item."""
    return (agent, it["d"], it["t"], it["type"], it.get("severity", "info"),
            _dumps(it.get("tags") or {}).decode(), _dumps(it.get("data") or {}).decode())


#: the columns of ``Store.events`` rows
EVENT_COLS = ("id", "agent", "device", "ts_ms", "type", "severity", "tags", "data")


def events_sql(device: str | None, since_ms: int | None, until_ms: int | None, severity: str | None,
               type_: str | None, limit: int, ph: str = "?") -> tuple[str, list]:
    """``Store.events``: the statement (both stores; ``ph`` the placeholder) and its arguments."""
    q = f"SELECT {', '.join(EVENT_COLS)} FROM events WHERE ts_ms >= {ph} AND ts_ms < {ph}"
    args: list[Any] = [since_ms or 0, until_ms if until_ms is not None else 2**62]
    for col, v in (("device", device), ("severity", severity), ("type", type_)):
        if v:
            q += f" AND {col}={ph}"
            args.append(v)
    return q + f" ORDER BY ts_ms DESC, id DESC LIMIT {ph}", args + [limit]


def event_dicts(rows: Iterable[tuple], cols: tuple[str, ...] = EVENT_COLS) -> list[dict]:
    """Event rows as dicts, tags and data decoded (both stores)."""
    out = []
    for r in rows:
        e = dict(zip(cols, r))
        e["tags"] = _loads(e["tags"])
        e["data"] = _loads(e["data"])
        out.append(e)
    return out


def events_since_sql(since_ms: int, types: list[str] | None, limit: int, ph: str = "?") -> tuple[str, list]:
    """``Store.events_since``: the statement (both stores; ``ph`` the placeholder) and its arguments."""
    q = (f"SELECT e.id, e.agent, a.site, e.device, e.ts_ms, e.type, e.severity, e.tags, e.data FROM events e "
         f"LEFT JOIN agents a ON a.id = e.agent WHERE e.ts_ms >= {ph}")
    args: list[Any] = [since_ms]
    if types is not None:
        q += f" AND e.type IN ({','.join([ph] * len(types))})"
        args += types
    return q + f" ORDER BY e.ts_ms DESC, e.id DESC LIMIT {ph}", args + [limit]


def events_since_rows(rows: Iterable[tuple]) -> list[dict]:
    """Rows of ``events_since_sql`` (newest first: a limit keeps the newest) as dicts, oldest first."""
    return event_dicts(reversed(list(rows)), ("id", "agent", "site", "device", "ts_ms", "type", "severity",
                                              "tags", "data"))


def mark_seen(dev_seen: dict[str, list], d: str, agent: str, tp: Any, t: int) -> None:
    """A commit group's newest word of each device: ``{device: [agent, site, building, t]}`` (both stores)."""
    ds = dev_seen.get(d)
    if ds is None:
        dev_seen[d] = [agent, tp.site, tp.building, t]
    elif ds[3] < t:
        ds[3] = t


def split_topology(msg: Message, topo_items: list[dict], dev_seen: dict[str, list]) -> list[dict]:
    """A metrics message's items as received (samples and tables) without
    wire.TOPOLOGY_MEASUREMENTS: those go to ``topo_items``, one per entry (intervals,
    store/topology.py; never series nor sink points). Both stores; the usual message has none and
    comes back as it is."""
    items = msg.packed
    if _TOPOLOGY.isdisjoint(map(_MEASUREMENT, items)):
        return items
    rest = []
    for it in items:
        if it["m"] in _TOPOLOGY:
            topo_items.extend(expand([it]) if "rows" in it else (it,))
            mark_seen(dev_seen, it["d"], msg.agent, msg.topic, it["t"])
        else:
            rest.append(it)
    return rest


def sort_events(msg: Message, events: list[tuple], syslog_rows: list[tuple], dev_seen: dict[str, list]) -> None:
    """An events message's items: archive syslog lines to the syslog archive (store/syslog.py), the
    others to the events table (both stores)."""
    for it in msg.items:
        if it["type"] == "syslog" and _syslog.is_archive(it):
            syslog_rows.append(_syslog.row(msg.agent, it))
        else:
            events.append(_event_row(msg.agent, it))
        mark_seen(dev_seen, it["d"], msg.agent, msg.topic, it["t"])


def _nonull(f: dict) -> dict:
    return {k: v for k, v in f.items() if v is not None} if None in f.values() else f


def bind_agents(messages: Iterable[Message], rejects: list[Reject], bound: dict[str, tuple[str, str]],
                revoked: set[str], lookup) -> list[Message]:
    """An agent stays in the site and building it was first seen (or enrolled) with: a message under
    another one is refused (dead letter ``agent_moved``) instead of moving its devices; a revoked
    agent's messages are refused (``agent_revoked``). ``bound``: the cache, updated here;
    ``lookup(agent) -> (site, building) | None``: the stored binding (enrolled or moved by another
    process meanwhile). Every backend uses this."""
    out = []
    for m in messages:
        if m.seq is None and m.kind == "events":   # made by the collector
            out.append(m)
            continue
        tp = m.topic
        if m.agent in revoked:
            rejects.append(Reject(
                str(tp), "agent_revoked",
                f"agent {m.agent} was revoked (campus-sense enrol --revoke); enrol it again to accept its data",
                m.raw, m.agent, m.epoch, m.seq))
            continue
        b = bound.get(m.agent)
        if b is None or b != (tp.site, tp.building):
            row = lookup(m.agent)
            if row and row[0] is not None:
                b = bound[m.agent] = tuple(row)
        if b is None:
            bound[m.agent] = (tp.site, tp.building)
        elif b != (tp.site, tp.building):
            rejects.append(Reject(
                str(tp), "agent_moved",
                f"agent {m.agent} is bound to site {b[0]} building {b[1]}, not {tp.site}/{tp.building}; "
                f"if it really moved: campus-sense collector agent move {m.agent} --site {tp.site} "
                f"--building {tp.building}", m.raw, m.agent, m.epoch, m.seq))
            continue
        out.append(m)
    return out


#: agents columns a birth/heartbeat/death body may set, and the body keys that carry them
_STATE_COLS = (("version", ("version",)), ("config_hash", ("config_hash", "config")),
               ("queue_depth", ("queue_depth",)), ("oldest_age_s", ("oldest_age_s",)),
               ("dropped_total", ("dropped_total", "dropped")), ("published_total", ("published_total",)))


def agent_state(msg: Message, now: int) -> tuple[dict[str, Any], dict]:
    """A birth/heartbeat/death message -> (agents columns to set, the rest of its body for ``info``);
    the same for every backend."""
    b = msg.body
    sent = b.get("sent_ms") if type(b.get("sent_ms")) is int else now
    info = {k: v for k, v in b.items() if k not in ("v", "kind", "agent", "sent_ms")}
    vals: dict[str, Any] = {}
    if msg.kind == "death":
        vals.update(state="offline", death_ms=sent)
    else:
        vals["state"] = "online"
        vals["birth_ms" if msg.kind == "birth" else "heartbeat_ms"] = sent
    for col, keys in _STATE_COLS:
        for k in keys:
            if k in b and not isinstance(b[k], (dict, list)):
                vals[col] = b[k]
                break
    if "drivers" in b:
        vals["drivers"] = _dumps(b["drivers"]).decode()
    return vals, info


AGENT_COLS = ("id", "site", "building", "state", "version", "config_hash", "drivers", "queue_depth",
              "oldest_age_s", "dropped_total", "published_total", "first_seen_ms", "last_seen_ms", "birth_ms",
              "death_ms", "heartbeat_ms", "info", "clock_offset_ms", "clock_ms")


def agent_rows(query, now_ms: int, offline_after_s: float) -> list[dict]:
    """``GET /agents`` of any backend: ``query(sql) -> rows`` runs the three selects (the same SQL on
    SQLite and PostgreSQL); online/offline with its reason, gaps, epochs, seq lag, clock offset."""
    gaps: dict[str, list] = {}
    for agent, epoch, a, b, det in query(
            "SELECT agent, epoch, first_seq, last_seq, detected_ms FROM gaps ORDER BY agent, epoch, first_seq"):
        gaps.setdefault(agent, []).append({"epoch": epoch, "first_seq": a, "last_seq": b, "missing": b - a + 1,
                                           "detected_ms": det})
    hw: dict[str, list] = {}
    for agent, epoch, hwm, last in query("SELECT agent, epoch, hwm, last_ms FROM seq_state WHERE hwm > 0 "
                                         "ORDER BY last_ms"):
        hw.setdefault(agent, []).append({"epoch": epoch, "hwm": hwm, "last_ms": last})
    out = []
    for row in query(f"SELECT {', '.join(AGENT_COLS)} FROM agents ORDER BY id"):
        a = dict(zip(AGENT_COLS, row))
        off = a.pop("clock_offset_ms")
        # agent clock minus collector clock (estimated); item times beyond clock.correct_above_s are
        # stored corrected by it
        a["clock_offset_s"] = None if off is None else off / 1000
        a["clock_estimated_ms"] = a.pop("clock_ms")
        a["drivers"] = _loads(a["drivers"]) if a["drivers"] else None
        info = a["info"]
        a["info"] = info if isinstance(info, dict) else (_loads(info) if info else {})
        silent = a["last_seen_ms"] is None or now_ms - a["last_seen_ms"] > offline_after_s * 1000
        if a["state"] == "offline":
            a["online"], a["offline_reason"] = False, "death"
        elif silent:
            a["online"], a["offline_reason"] = False, f"silent for more than {offline_after_s:g}s"
        else:
            a["online"], a["offline_reason"] = True, None
        g = gaps.get(a["id"], [])
        a["gaps"] = g
        a["missing_total"] = sum(x["missing"] for x in g)
        a["epochs"] = hw.get(a["id"], [])
        # how far the collector is behind what the agent has queued (from birth/heartbeat last_seq)
        ep, last = a["info"].get("epoch"), a["info"].get("last_seq")
        hwm = next((e["hwm"] for e in a["epochs"] if e["epoch"] == ep), 0)
        a["seq_lag"] = max(0, last - hwm) if isinstance(last, int) and ep else None
        out.append(a)
    return out


class SQLiteStore(Store):
    def __init__(self, path: str, sink: TimeSeriesSink | None = None, retention: Retention | None = None,
                 retention_interval_s: float = 3600, synchronous: str = "FULL", dead_letter_keep: int = 10_000,
                 events_days: float = 180, topology_days: float = 400, seal_interval_s: float = 60,
                 disk: Any = None, syslog_days: float = 180):
        # FULL: a commit (and so the PUBACK sent after it) survives power loss, not just a
        # process crash. NORMAL trades the last commits on power loss for fewer fsyncs.
        self.synchronous = synchronous
        self.path = path
        self.sink = sink
        self.series_retention = retention or Retention()
        self.events_ms = int(events_days * DAY)
        self.topology_ms = int(topology_days * DAY)
        self.syslog_ms = int(syslog_days * DAY)
        self.retention_interval_s = retention_interval_s
        self._next_retention = time.monotonic() + 5
        self.seal_interval_s = seal_interval_s
        self._next_seal = time.monotonic() + seal_interval_s
        #: disk budget (store/disk.py); ``disk``: config.Disk (max_bytes, min_free_bytes, warn_at) or None
        self.disk = DiskBudget(path, **({} if disk is None else {
            "max_bytes": disk.max_bytes, "min_free_bytes": disk.min_free_bytes, "warn_at": disk.warn_at}))
        new_file = not os.path.exists(path) or os.path.getsize(path) == 0
        self._w = self._connect()
        if new_file:   # pages freed by retention go back to the file system (PRAGMA incremental_vacuum)
            self._w.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._w.execute("VACUUM")   # journal_mode=WAL (in _connect) already fixed the header: rewrite it
        self._w.executescript(SCHEMA)
        _syslog.ensure_schema(self._w)   # syslog archive (store/syslog.py)
        cols = {r[1] for r in self._w.execute("PRAGMA table_info(agents)")}
        for col, decl in (("clock_offset_ms", "INTEGER"), ("clock_ms", "INTEGER"), ("revoked_ms", "INTEGER")):
            if col not in cols:
                self._w.execute(f"ALTER TABLE agents ADD COLUMN {col} {decl}")
        #: agent -> (site, building) it is bound to (first seen or enrolled with)
        self._bound: dict[str, tuple[str, str]] = {
            a: (si, b) for a, si, b in self._w.execute("SELECT id, site, building FROM agents")}
        #: agents revoked by `campus-sense enrol --revoke` (another process): re-read every few seconds
        self._revoked: set[str] = set()
        self._revoked_at = float("-inf")
        self.dead_letter_keep = dead_letter_keep
        self._series: dict[tuple, int] = {}
        self._series_canon: dict[tuple, int] = {}
        #: (measurement, device) -> (tag columns, sids, series entry) of its last table: a device's
        #: next poll has the same rows, compared at C speed instead of looked up row by row
        self._table_rows: dict[tuple[str, str], tuple[dict, list[int], tuple]] = {}
        self._seq: dict[tuple[str, str], _SeqState] = {}
        self._local = threading.local()
        self._lock = threading.Lock()  # guards writer connection
        self.stats_lock = threading.Lock()
        self.counters = dict(self._w.execute("SELECT name, value FROM counters").fetchall())
        #: time series (kind sqlite): head + sealed chunks + rollups
        self.engine: SeriesEngine | None = None
        if sink is None:
            self._groups = {g: m for g, m in self._w.execute("SELECT id, measurement FROM series_groups")}
            self.engine = SeriesEngine(self._w, self.series_retention, self._groups)
            self._migrate_blocks()
            n = self.engine.recover(self._series_for)
            if n:
                log.info("%s: %d unsealed samples restored from the head log", path, n)

    # ------------------------------------------------------------ connections
    def _connect(self) -> sqlite3.Connection:
        c = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute(f"PRAGMA synchronous={self.synchronous}")
        c.execute("PRAGMA cache_size=-65536")
        c.execute("PRAGMA temp_store=MEMORY")
        c.execute("PRAGMA wal_autocheckpoint=10000")
        return c

    def reader(self) -> sqlite3.Connection:
        c = getattr(self._local, "c", None)
        if c is None:
            c = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            c.execute("PRAGMA query_only=ON")
            self._local.c = c
        return c

    def close(self) -> None:
        with self._lock:
            try:
                self._w.executescript("PRAGMA incremental_vacuum")   # pages the head log left free
                self._w.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._w.close()
        if self.sink:
            self.sink.close()

    # ------------------------------------------------------------ write path
    def _series_id(self, m: str, d: str, tags: dict, key: tuple) -> tuple[int, int, str, bool]:
        """(series id, group id, series id as block key, special measurement) for a sample;
        creates rows on first sight."""
        canon = (m, d, _dumps(tags, option=_SORT).decode())
        s = self._series_canon.get(canon)
        if s is None:
            w = self._w
            row = w.execute("SELECT id, grp FROM series WHERE measurement=? AND device=? AND tags=?", canon).fetchone()
            if row is None:
                g = w.execute("SELECT id FROM series_groups WHERE measurement=? AND device=?", (m, d)).fetchone()
                gid = g[0] if g else w.execute("INSERT INTO series_groups(measurement, device) VALUES (?,?)",
                                               (m, d)).lastrowid
                sid = w.execute("INSERT INTO series(measurement, device, tags, grp) VALUES (?,?,?,?)",
                                (*canon, gid)).lastrowid
            else:
                sid, gid = row
            s = self._series_canon[canon] = (sid, gid, str(sid), m in _SPECIAL)
            if self.engine is not None:
                self._groups[gid] = m
        self._series[key] = s
        return s

    def _seq_state(self, agent: str, epoch: str) -> _SeqState:
        k = (agent, epoch)
        st = self._seq.get(k)
        if st is None:
            w = self._w
            row = w.execute("SELECT hwm, first_ms FROM seq_state WHERE agent=? AND epoch=?", k).fetchone()
            gaps = [list(r) for r in w.execute(
                "SELECT first_seq, last_seq FROM gaps WHERE agent=? AND epoch=? ORDER BY first_seq", k)]
            if row is None:
                # first message of a new epoch: seq 1 expected; anything above is a gap
                st = _SeqState(0, gaps, None)
            else:
                st = _SeqState(row[0], gaps, row[1])
            self._seq[k] = st
        return st

    def apply(self, messages: Iterable[Message], rejects: Iterable[Reject],
              clock: dict[str, tuple[int, int]] | None = None) -> ApplyResult:
        """Commit one group. ``clock``: agent -> (estimated clock offset ms, at collector ms)."""
        with self._lock:
            try:
                return self._apply(messages, rejects, clock)
            except (sqlite3.OperationalError, OSError) as e:   # disk full, I/O error, locked: not the content
                self._rollback()
                raise StorageUnavailable(f"{self.path}: {e}") from e
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        try:
            self._w.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        # caches may reference rows of the rolled-back transaction
        self._series.clear()
        self._series_canon.clear()
        self._table_rows.clear()
        self._seq.clear()
        if self.engine is not None:
            self.engine.discard()
        try:
            self._bound = {a: (si, b) for a, si, b in self._w.execute("SELECT id, site, building FROM agents")}
        except sqlite3.Error:
            pass
    def _bind(self, messages: Iterable[Message], rejects: list[Reject]) -> list[Message]:
        """An agent stays in the site and building it was first seen (or enrolled) with (bind_agents)."""
        return bind_agents(messages, rejects, self._bound, self._revoked_agents(), lambda agent: self._w.execute(
            "SELECT site, building FROM agents WHERE id=?", (agent,)).fetchone())

    def _revoked_agents(self) -> set[str]:
        now = time.monotonic()
        if now - self._revoked_at > 2.0:
            self._revoked = {a for (a,) in self._w.execute("SELECT id FROM agents WHERE revoked_ms IS NOT NULL")}
            self._revoked_at = now
        return self._revoked

    def agent_enrol(self, agent: str, site: str, building: str) -> dict:
        """Bind an agent before it is first seen (`campus-sense enrol`); clears a revocation.
        -> the previous {site, building, revoked_ms} or {} for a new agent."""
        with self._lock:
            row = self._w.execute("SELECT site, building, revoked_ms FROM agents WHERE id=?", (agent,)).fetchone()
            self._w.execute(
                "INSERT INTO agents(id, site, building, state) VALUES (?,?,?,'enrolled') ON CONFLICT(id) DO UPDATE "
                "SET site=excluded.site, building=excluded.building, revoked_ms=NULL", (agent, site, building))
            if row and (row[0], row[1]) != (site, building):
                self._w.execute("UPDATE devices SET site=?, building=? WHERE agent=?", (site, building, agent))
            self._bound[agent] = (site, building)
            self._revoked.discard(agent)
            self._revoked_at = float("-inf")
            return dict(zip(("site", "building", "revoked_ms"), row)) if row else {}

    def agent_revoke(self, agent: str) -> bool:
        """Refuse everything from ``agent`` from now on (dead letter ``agent_revoked``); False if unknown."""
        with self._lock:
            cur = self._w.execute("UPDATE agents SET revoked_ms=?, state='revoked' WHERE id=?", (_now_ms(), agent))
            if cur.rowcount:
                self._revoked.add(agent)
            return bool(cur.rowcount)

    def agent_binding(self, agent: str) -> dict | None:
        """{site, building, state, revoked_ms, last_seen_ms} of an agent, None if unknown."""
        cols = ("site", "building", "state", "revoked_ms", "last_seen_ms")
        row = self.reader().execute(f"SELECT {', '.join(cols)} FROM agents WHERE id=?", (agent,)).fetchone()
        return dict(zip(cols, row)) if row else None

    def agent_move(self, agent: str, site: str, building: str) -> bool:
        """Re-bind an agent to another site/building (an admin's decision); False if unknown."""
        with self._lock:
            cur = self._w.execute("UPDATE agents SET site=?, building=? WHERE id=?", (site, building, agent))
            if cur.rowcount:
                self._w.execute("UPDATE devices SET site=?, building=? WHERE agent=?", (site, building, agent))
                self._bound[agent] = (site, building)
            return bool(cur.rowcount)

    @staticmethod
    def _watermark(agent: str, epoch: str, st: "_SeqState") -> Watermark:
        gaps = st.gaps
        if not gaps:
            return Watermark(agent, epoch, st.hwm, st.hwm)
        hwm = st.hwm
        if len(gaps) > MAX_COMMIT_GAPS:   # only the listed gaps travel: stop the covered range before the rest
            hwm = gaps[MAX_COMMIT_GAPS][0] - 1
        return Watermark(agent, epoch, gaps[0][0] - 1, hwm,
                         tuple((a, b) for a, b in gaps[:MAX_COMMIT_GAPS] if b <= hwm))

    def watermark(self, agent: str, epoch: str) -> Watermark:
        with self._lock:
            return self._watermark(agent, epoch, self._seq_state(agent, epoch))

    def _stage_table(self, it: dict, d: str, tags: dict | None, staged_tabs: dict, seen_st: dict,
                     dev_seen: dict, msg: Message) -> tuple[int, Iterable[dict]]:
        """A metrics table to the head (series ids per row, the columns as they arrived) -> (samples
        of a series and time already staged in this commit, special rows to handle)."""
        m, t, n = it["m"], it["t"], it["rows"]
        tags = tags or {}
        last = self._table_rows.get((m, d))
        if last is not None and last[0] == tags and len(last[1]) == n:
            sids, s = last[1], last[2]
        else:
            series_get, series_id = self._series.get, self._series_id
            keys = [(m, d, *zip(tags, v)) for v in zip(*tags.values())] if tags else [(m, d)] * n
            sids = []
            for key in keys:
                s = series_get(key)
                if s is None:
                    s = series_id(m, d, dict(key[2:]), key)
                sids.append(s[0])
            self._table_rows[(m, d)] = (tags, sids, s)
        gid = s[1]
        staged_tabs.setdefault(gid, {}).setdefault(t - t % HOUR, []).append((sids, t, it["f"], n))
        blk = seen_st.setdefault((gid, t), set())
        before = len(blk)
        blk.update(sids)
        mark_seen(dev_seen, d, msg.agent, msg.topic, t)
        return n - (len(blk) - before), (expand([it]) if s[3] else ())

    def _apply(self, messages: Iterable[Message], rejects: Iterable[Reject],
               clock: dict[str, tuple[int, int]] | None = None) -> ApplyResult:
        w = self._w
        now = _now_ms()
        res = ApplyResult()
        accepted = res.accepted
        rejects = list(rejects)
        messages = self._bind(messages, rejects)
        try:
            w.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise StorageUnavailable(f"{self.path}: {e}") from e
        engine = self.engine
        staged = engine.staged() if engine is not None else None
        staged_tabs = engine.staged_tables() if engine is not None else None
        head_log: list[tuple] = []
        seen_st: dict[tuple[int, int], set[int]] = {}   # (group, t) -> series ids seen in this commit
        same_time = 0
        latest: dict[int, tuple] = {}
        sink_items: list[tuple[tuple[str, str, str], list[dict]]] = []   # (site, building, agent), samples
        dev_seen: dict[str, list] = {}       # device -> [agent, site, building, last_t]
        polls: list[tuple] = []
        agent_stats: dict[str, dict] = {}
        facts: list[tuple] = []
        events: list[tuple] = []
        syslog_rows: list[tuple] = []   # syslog hook: archive lines go to store/syslog.py, not events
        agents_seen: dict[str, Any] = {}
        states: list[Message] = []
        touched: dict[tuple, _SeqState] = {}
        series_get = self._series.get
        series_id = self._series_id
        special_items: list[tuple[dict, dict]] = []
        topo_items: list[dict] = []    # topology hook: samples for store/topology.py
        to_sqlite = self.sink is None
        points = 0
        for msg in messages:
            if msg.seq is None and msg.kind == "events":
                # made by the collector itself (dead letters, clock skew): stored as events, no dedup
                accepted.append(msg)
                events.extend(_event_row(msg.agent, it) for it in msg.items)
                continue
            agents_seen[msg.agent] = msg.topic
            if msg.seq is None:
                states.append(msg)
                accepted.append(msg)
                continue
            st = self._seq_state(msg.agent, msg.epoch)
            touched[(msg.agent, msg.epoch)] = st
            if not st.accept(msg.seq):
                res.duplicates += 1
                continue
            accepted.append(msg)
            kind = msg.kind
            tp = msg.topic
            if kind == "metrics":
                points += msg.count()
                items = split_topology(msg, topo_items, dev_seen)     # written below in this transaction
                last_d = None
                if to_sqlite:
                    last_gid = last_t = buf = None
                    hour_lo = hour_hi = 0
                    max_t, min_t = 0, 1 << 62
                    for it in items:
                        d = it["d"]
                        tags = it.get("tags")
                        if "rows" in it:     # a table: its columns go to the head as they are
                            same, special_rows = self._stage_table(it, d, tags, staged_tabs, seen_st, dev_seen, msg)
                            same_time += same
                            special_items.extend((r, r["f"]) for r in special_rows)
                            t = it["t"]
                            if t > max_t:
                                max_t = t
                            if t < min_t:
                                min_t = t
                            continue
                        key = (it["m"], d, *tags.items()) if tags else (it["m"], d)
                        s = series_get(key)
                        if s is None:
                            s = series_id(it["m"], d, tags or {}, key)
                        sid, gid, skey, special = s
                        t = it["t"]
                        if gid != last_gid or t != last_t:
                            if gid != last_gid or not hour_lo <= t < hour_hi:   # the head: group -> hour -> rows
                                hour_lo = t - t % HOUR
                                hour_hi = hour_lo + HOUR
                                hg = staged.get(gid)
                                if hg is None:
                                    hg = staged[gid] = {}
                                buf = hg.get(hour_lo)
                                if buf is None:
                                    buf = hg[hour_lo] = []
                            last_gid, last_t = gid, t
                            bk = (gid, t)
                            blk_sids = seen_st.get(bk)
                            if blk_sids is None:
                                blk_sids = seen_st[bk] = set()
                            if t > max_t:
                                max_t = t
                            if t < min_t:
                                min_t = t
                            ds = dev_seen.get(d)        # mark_seen(), inline: once per device and time
                            if ds is None:
                                dev_seen[d] = [msg.agent, tp.site, tp.building, t]
                            elif ds[3] < t:
                                ds[3] = t
                        # the head (series.py) merges samples of one series and millisecond; count them here
                        if sid in blk_sids:
                            same_time += 1
                        else:
                            blk_sids.add(sid)
                        buf.append((sid, t, it["f"]))
                        if special:
                            special_items.append((it, it["f"]))
                    if items:
                        head_log.append(engine.log_message(msg, max_t))
                        engine.stage_times(min_t, max_t)
                else:
                    if msg.rows:
                        items = expand(items)
                    for it in items:
                        d = it["d"]
                        tags = it.get("tags")
                        key = (it["m"], d, *tags.items()) if tags else (it["m"], d)
                        s = series_get(key)
                        if s is None:
                            s = series_id(it["m"], d, tags or {}, key)
                        sid = s[0]
                        f = it["f"]
                        if None in f.values():
                            f = {k: v for k, v in f.items() if v is not None}
                            if not f:
                                continue
                        t = it["t"]
                        prev = latest.get(sid)
                        if prev is None or prev[0] <= t:
                            latest[sid] = (t, f)
                        if d != last_d:
                            last_d = d
                            mark_seen(dev_seen, d, msg.agent, tp, t)
                        if s[3]:
                            special_items.append((it, f))
                    sink_items.append(((tp.site, tp.building, msg.agent), items))
            elif kind == "events":
                sort_events(msg, events, syslog_rows, dev_seen)
            elif kind == "facts":
                for it in msg.items:
                    t = it["t"]
                    facts.append((_dumps(it["facts"]).decode(), t, it["d"], t))
                    mark_seen(dev_seen, it["d"], msg.agent, tp, t)
        res.points = points
        for it, f in special_items:
            d, t = it["d"], it["t"]
            if it["m"] == POLL_MEASUREMENT:
                ok = f.get("ok")
                polls.append((None if ok is None else (1 if ok else 0), t, f.get("duration_s"),
                              (it.get("tags") or {}).get("driver"), None if ok else f.get("reason"),
                              None if ok else f.get("error"), d, t))
            else:
                a = agent_stats.setdefault(d, {})
                for k in _AGENT_FIELDS:
                    if k in f:
                        a[k] = f[k]
        for d in agent_stats:
            if d in agents_seen:   # `agent` self-metrics: device id = agent id, not a monitored device
                dev_seen.pop(d, None)
        # ---- external sink first (its HTTP wait overlaps with the SQLite work below); if it
        # fails, the whole group rolls back and is redelivered
        try:
            pending_sink = self.sink.write_begin(sink_items) if sink_items else None
        except Exception as e:
            raise StorageUnavailable(f"{self.sink.name}: {e}") from e
        # ---- time series: the messages go to the head log, their samples to the head (series.py)
        if head_log:
            engine.write_log(head_log)
        elif latest:
            w.executemany("INSERT INTO latest(series_id, ts_ms, fields) VALUES (?,?,?) "
                          "ON CONFLICT(series_id) DO UPDATE SET ts_ms=excluded.ts_ms, fields=excluded.fields "
                          "WHERE excluded.ts_ms >= latest.ts_ms",
                          [(sid, t, _dumps(f).decode()) for sid, (t, f) in latest.items()])
        # ---- topology hook: intervals (store/topology.py), same transaction
        if topo_items:
            _topology.observe(w, topo_items)
        # ---- devices
        if dev_seen:
            w.executemany(
                "INSERT INTO devices(id, agent, site, building, first_seen_ms, last_seen_ms) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET agent=excluded.agent, site=excluded.site, building=excluded.building,"
                " last_seen_ms=max(coalesce(devices.last_seen_ms, 0), excluded.last_seen_ms)",
                [(d, a, s, b, t, t) for d, (a, s, b, t) in dev_seen.items()])
        if polls:
            w.executemany("UPDATE devices SET reachable=?, last_poll_ms=?, poll_duration_s=?, driver=coalesce(?, driver),"
                          " reason=?, error=? WHERE id=? AND coalesce(last_poll_ms, 0) <= ?", polls)
        if facts:
            w.executemany("UPDATE devices SET facts=json_patch(facts, ?), facts_ms=? WHERE id=? "
                          "AND coalesce(facts_ms, 0) <= ?", facts)
        if events:
            w.executemany("INSERT INTO events(agent, device, ts_ms, type, severity, tags, data) VALUES (?,?,?,?,?,?,?)",
                          events)
        if syslog_rows:
            _syslog.insert(w, syslog_rows)
        # ---- agents
        for agent, tp in agents_seen.items():
            w.execute("INSERT INTO agents(id, site, building, state, first_seen_ms, last_seen_ms) VALUES (?,?,?,?,?,?) "
                      "ON CONFLICT(id) DO UPDATE SET site=excluded.site, building=excluded.building, "
                      "last_seen_ms=excluded.last_seen_ms", (agent, tp.site, tp.building, "online", now, now))
        for msg in states:
            self._apply_state(msg, now)
        for agent, a in agent_stats.items():
            sets = ", ".join(f"{k}=?" for k in a)
            w.execute(f"UPDATE agents SET {sets} WHERE id=?", (*a.values(), agent))
        # ---- dedup state + gaps
        for (agent, epoch), st in touched.items():
            self._save_seq(agent, epoch, st, now)
        # ---- rejects + counters
        nrej = 0
        dead = []
        for r in rejects:
            if r.seq is not None:
                st = self._seq_state(r.agent, r.epoch)
                touched[(r.agent, r.epoch)] = st
                if not st.accept(r.seq):
                    res.duplicates += 1    # a redelivered dead letter: stored and counted once
                    continue
                self._save_seq(r.agent, r.epoch, st, now)
            dead.append((now, r.topic, r.agent, r.epoch, r.seq, r.reason, r.error, r.payload or b""))
            res.dead.append(r)
            nrej += 1
            w.execute("INSERT INTO rejected(reason, count, last_topic, last_error, last_ms) VALUES (?,1,?,?,?) "
                      "ON CONFLICT(reason) DO UPDATE SET count=count+1, last_topic=excluded.last_topic, "
                      "last_error=excluded.last_error, last_ms=excluded.last_ms", (r.reason, r.topic, r.error, now))
        if dead:
            w.executemany("INSERT INTO dead_letters(received_ms, topic, agent, epoch, seq, reason, error, payload) "
                          "VALUES (?,?,?,?,?,?,?,?)", dead)
        if clock:
            w.executemany("UPDATE agents SET clock_offset_ms=?, clock_ms=? WHERE id=?",
                          [(off, at, a) for a, (off, at) in clock.items()])
        c = self.counters
        delta = {"messages_stored": len(accepted), "points_stored": points, "duplicates": res.duplicates,
                 "rejected": nrej, "same_time_merged": same_time}
        newc = {k: c.get(k, 0) + v for k, v in delta.items() if v}
        if newc:
            w.executemany("INSERT INTO counters(name, value) VALUES (?,?) "
                          "ON CONFLICT(name) DO UPDATE SET value=excluded.value", newc.items())
        if pending_sink is not None:
            try:
                self.sink.write_end(pending_sink)
            except Exception as e:
                raise StorageUnavailable(f"{self.sink.name}: {e}") from e
        w.execute("COMMIT")
        if engine is not None:
            engine.commit()
        res.marks = [self._watermark(a, e, st) for (a, e), st in touched.items()]
        with self.stats_lock:
            c.update(newc)
        mono = time.monotonic()
        if engine is not None and mono >= self._next_seal:
            self._next_seal = mono + self.seal_interval_s
            try:
                self._seal(now)
            except (sqlite3.Error, OSError) as e:  # the group is committed; sealing retries next interval
                log.error("sealing the head failed: %s", e)
        if mono >= self._next_retention:
            self._next_retention = mono + self.retention_interval_s
            try:
                self._retention(now)
            except (sqlite3.Error, OSError) as e:  # the group is committed; retention retries next interval
                log.error("retention failed: %s", e)
        return res

    # ------------------------------------------------------------ head, chunks, rollups (series.py)
    def _series_for(self, m: str, d: str, tags: dict) -> tuple[int, int]:
        key = (m, d, *tags.items()) if tags else (m, d)
        s = self._series.get(key) or self._series_id(m, d, tags, key)
        return s[0], s[1]

    def _seal(self, now_ms: int, cutoff: int | None = None) -> int:
        """Seal the head below the cutoff in one transaction (writer lock held)."""
        eng = self.engine
        if eng is None or (cutoff is None and not eng.due(now_ms)):
            return 0
        w = self._w
        w.execute("BEGIN IMMEDIATE")
        try:
            n = eng.seal(now_ms, cutoff=cutoff)
            merged, eng.merged = eng.merged, 0
            if merged:
                self._count(w, {"same_time_merged": merged})
            w.execute("COMMIT")
        except BaseException:
            try:
                w.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            eng.unsealed()
            eng.merged = 0
            raise
        eng.sealed()
        return n

    def seal(self, now_ms: int | None = None, cutoff: int | None = None) -> int:
        """Seal what is due now (or everything below ``cutoff``, an hour boundary). Returns rows sealed."""
        with self._lock:
            return self._seal(now_ms or _now_ms(), cutoff)

    def _count(self, w: sqlite3.Connection, delta: dict[str, int]) -> None:
        c = self.counters
        with self.stats_lock:
            for k, v in delta.items():
                c[k] = c.get(k, 0) + v
            w.executemany("INSERT INTO counters(name, value) VALUES (?,?) ON CONFLICT(name) DO UPDATE "
                          "SET value=excluded.value", [(k, c[k]) for k in delta])

    def _migrate_blocks(self) -> None:
        """A database of the JSON-block format (sample_blocks): move it into chunks + rollups, one day
        per transaction (a killed migration resumes), then drop the old table."""
        w = self._w
        if not w.execute("SELECT 1 FROM sqlite_master WHERE name='sample_blocks'").fetchone():
            return
        eng = self.engine
        first = w.execute("SELECT min(ts_ms), max(ts_ms), count(*) FROM sample_blocks").fetchone()
        if first[2]:
            log.warning("%s: moving %d sample blocks (%s .. %s) to compressed chunks; this runs once",
                        self.path, first[2], first[0], first[1])
            w.execute("CREATE INDEX IF NOT EXISTS sample_blocks_ts ON sample_blocks(ts_ms)")
        # per-entry topology series of that format become intervals (store/topology.py)
        topo_groups = {g for g, m in self._groups.items() if m in _TOPOLOGY}
        topo_series = {sid: (m, d, _loads(tj)) for sid, m, d, tj in w.execute(
            f"SELECT id, measurement, device, tags FROM series WHERE measurement IN "
            f"({','.join('?' * len(_TOPOLOGY))})", tuple(_TOPOLOGY))}
        while True:
            r = w.execute("SELECT min(ts_ms) FROM sample_blocks").fetchone()
            if r[0] is None:
                break
            day = r[0] - r[0] % DAY
            w.execute("BEGIN IMMEDIATE")
            try:
                rows: dict[int, list] = {}
                topo: list[dict] = []
                for gid, ts, data in w.execute("SELECT grp, ts_ms, data FROM sample_blocks WHERE ts_ms < ? "
                                               "ORDER BY id", (day + DAY,)):
                    if gid in topo_groups:
                        for k in _loads(data):
                            m, d, tags = topo_series[int(k)]
                            topo.append({"m": m, "d": d, "t": ts, "tags": tags, "f": {"seen": 1}})
                        continue
                    for k, f in _loads(data).items():
                        rows.setdefault(gid, []).append((int(k), ts, _nonull(f)))
                eng.seal(_now_ms(), rows_by_gid=rows)
                if topo:
                    topo.sort(key=lambda it: it["t"])
                    _topology.observe(w, topo)
                w.execute("DELETE FROM sample_blocks WHERE ts_ms < ?", (day + DAY,))
                w.execute("COMMIT")
            except BaseException:
                w.execute("ROLLBACK")
                eng.unsealed()
                raise
        # day rollups of the migrated days (the head's watermarks start after them)
        w.execute("BEGIN IMMEDIATE")
        mx = w.execute("SELECT max(start_ms) FROM chunks WHERE res=0").fetchone()[0]
        if mx is not None:
            cut = mx - mx % DAY
            for gid, day in w.execute("SELECT DISTINCT grp, start_ms - start_ms % ? FROM chunks WHERE res=? AND "
                                      "start_ms < ?", (DAY, R5M, cut)).fetchall():
                eng._seal_day(gid, day)
            w.executemany("INSERT INTO seal_state(name, value) VALUES (?,?) ON CONFLICT(name) DO UPDATE "
                          "SET value=max(value, excluded.value)", (("day", cut), ("hour", mx - mx % HOUR)))
            eng.day_wm, eng.hour_wm = max(eng.day_wm, cut), max(eng.hour_wm, mx - mx % HOUR)
        w.execute("DROP VIEW IF EXISTS samples")
        w.execute("DROP TABLE sample_blocks")
        if topo_groups:
            w.execute(f"DELETE FROM series WHERE grp IN ({','.join('?' * len(topo_groups))})", tuple(topo_groups))
            w.execute(f"DELETE FROM series_groups WHERE id IN ({','.join('?' * len(topo_groups))})",
                      tuple(topo_groups))
            for g in topo_groups:
                self._groups.pop(g, None)
        w.execute("COMMIT")
        if w.execute("PRAGMA auto_vacuum").fetchone()[0] == 0:
            log.warning("%s: compacting the file after the migration (VACUUM, needs free space as large as "
                        "the database)", self.path)
            try:
                w.execute("PRAGMA auto_vacuum=INCREMENTAL")
                w.execute("VACUUM")
            except sqlite3.Error as e:   # e.g. not enough disk: the data is migrated, the file stays large
                log.error("%s: VACUUM failed (%s); the file keeps its size until it succeeds", self.path, e)

    def _save_seq(self, agent: str, epoch: str, st: "_SeqState", now: int) -> None:
        w = self._w
        if st.dirty:
            w.execute("INSERT INTO seq_state(agent, epoch, hwm, first_ms, last_ms) VALUES (?,?,?,?,?) "
                      "ON CONFLICT(agent, epoch) DO UPDATE SET hwm=excluded.hwm, last_ms=excluded.last_ms",
                      (agent, epoch, st.hwm, now, now))
            st.dirty = False
        if st.gaps_dirty:
            w.execute("DELETE FROM gaps WHERE agent=? AND epoch=?", (agent, epoch))
            w.executemany("INSERT INTO gaps(agent, epoch, first_seq, last_seq, detected_ms) VALUES (?,?,?,?,?)",
                          [(agent, epoch, a, b, now) for a, b in st.gaps])
            st.gaps_dirty = False

    def _apply_state(self, msg: Message, now: int) -> None:
        vals, info = agent_state(msg, now)
        sets = ", ".join(f"{k}=?" for k in vals)
        self._w.execute(f"UPDATE agents SET {sets}, info=json_patch(info, ?) WHERE id=?",
                        (*vals.values(), _dumps(info).decode(), msg.agent))

    def retention(self, now_ms: int | None = None) -> dict[str, int]:
        """Apply every retention class now; returns what was deleted per class."""
        with self._lock:
            return self._retention(now_ms or _now_ms())

    def _retention(self, now_ms: int) -> dict[str, int]:
        """Retention per class (writer lock held), each in its own short transaction: chunks of each
        level whose window ended more than that level's days ago, events, topology intervals, dead
        letters beyond the newest ``dead_letter_keep``, gaps older than the raw retention. Freed
        pages go back to the file system."""
        w = self._w
        out: dict[str, int] = {}

        def tx(name: str, fn) -> None:
            w.execute("BEGIN IMMEDIATE")
            try:
                n = fn()
                w.execute("COMMIT")
            except BaseException:
                w.execute("ROLLBACK")
                raise
            if n:
                out[name] = n

        if self.engine is not None:
            w.execute("BEGIN IMMEDIATE")
            try:
                out.update({f"chunks_{k}": v for k, v in self.engine.expire(now_ms).items()})
                w.execute("COMMIT")
            except BaseException:
                w.execute("ROLLBACK")
                raise
        tx("events", lambda: w.execute("DELETE FROM events WHERE ts_ms < ?", (now_ms - self.events_ms,)).rowcount)
        tx("topology", lambda: _topology.retention(w, now_ms - self.topology_ms))
        tx("syslog", lambda: _syslog.retention(w, now_ms - self.syslog_ms))
        tx("dead_letters", lambda: w.execute("DELETE FROM dead_letters WHERE id <= (SELECT max(id) FROM dead_letters) - ?",
                                             (self.dead_letter_keep,)).rowcount)
        # a gap older than the raw retention can no longer be filled usefully
        raw = self.series_retention.keep_ms(0) or 30 * DAY
        tx("gaps", lambda: w.execute("DELETE FROM gaps WHERE detected_ms < ?", (now_ms - raw,)).rowcount)
        self._seq.clear()
        if out:
            _disk.vacuum(w)   # w.execute() would free a single page
            log.info("retention: deleted %s", ", ".join(f"{v} {k}" for k, v in out.items()))
        eng = self.engine
        early = self.disk.check(w, now_ms, (eng.hour_wm, eng.day_wm) if eng is not None else None)
        out.update({f"early_{k}": v for k, v in early.items()})
        return out

    def disk_status(self) -> dict:
        """Disk budget: usage_bytes, budget_bytes, free_bytes, growth_bytes_per_day, days_to_full,
        enforced_total, ... (store/disk.py)."""
        disk = getattr(self, "disk", None)   # open_readonly: no budget of its own
        return (disk or DiskBudget(self.path)).status()

    # ------------------------------------------------------------ queries
    def agents(self, now_ms: int, offline_after_s: float) -> list[dict]:
        c = self.reader()
        return agent_rows(lambda q: c.execute(q).fetchall(), now_ms, offline_after_s)

    _DEV_COLS = ("id", "agent", "site", "building", "facts", "facts_ms", "first_seen_ms", "last_seen_ms",
                 "reachable", "last_poll_ms", "poll_duration_s", "driver", "reason", "error")

    def _dev(self, row) -> dict:
        d = dict(zip(self._DEV_COLS, row))
        d["facts"] = _loads(d["facts"]) if d["facts"] else {}
        d["reachable"] = None if d["reachable"] is None else bool(d["reachable"])
        return d

    def devices(self) -> list[dict]:
        return [self._dev(r) for r in self.reader().execute(
            f"SELECT {', '.join(self._DEV_COLS)} FROM devices ORDER BY id")]

    def device(self, device_id: str) -> dict | None:
        r = self.reader().execute(f"SELECT {', '.join(self._DEV_COLS)} FROM devices WHERE id=?",
                                  (device_id,)).fetchone()
        return self._dev(r) if r else None

    def _head(self, gid: int, sids: set[int] | None, start: int, end: int,
              fields: set[str] | None = None) -> list[tuple]:
        """Unsealed samples of a group as column blocks (series.SeriesEngine.head_blocks): the
        in-memory head, or (read-only view) the head log."""
        if self.engine is not None:
            return self.engine.head_blocks(gid, sids, start, end, fields)
        head = getattr(self._local, "head", None)
        if head is None:
            ids = {key: (sid, g) for sid, g, key in (
                (sid, g, (m, d, tj)) for sid, g, m, d, tj in self.reader().execute(
                    "SELECT id, grp, measurement, device, tags FROM series"))}
            head = {}
            for msg, shift, below in head_log_messages(self.reader()):
                for it in msg.items:
                    t = it["t"] - shift
                    k = ids.get((it["m"], it["d"], _dumps(it.get("tags") or {}, option=_SORT).decode()))
                    if t >= below and k is not None:
                        head.setdefault(k[1], []).append((k[0], t, it["f"]))
            self._local.head = head
        rows = head.get(gid)
        return select([transpose(rows)], sids, start, end, fields) if rows else []

    def latest(self, device_id: str, measurement: str, max_chunks: int = 48) -> list[tuple[dict, int, dict]]:
        """[(tags, ts_ms, fields)] of the latest sample of each series of a device and measurement.

        Kind sqlite: the head, then the group's newest raw chunks (at most ``max_chunks`` hours back);
        with an external sink: the ``latest`` table kept by ingest."""
        c = self.reader()
        if self.sink is not None:
            return [(_loads(tags), ts, _loads(fields)) for tags, ts, fields in c.execute(
                "SELECT s.tags, l.ts_ms, l.fields FROM series s JOIN latest l ON l.series_id = s.id "
                "WHERE s.device=? AND s.measurement=?", (device_id, measurement))]
        want: dict[int, dict[int, dict]] = {}
        for sid, gid, tags in c.execute("SELECT id, grp, tags FROM series WHERE device=? AND measurement=?",
                                        (device_id, measurement)):
            want.setdefault(gid, {})[sid] = _loads(tags)
        out = []
        for gid, todo in want.items():
            found: dict[int, tuple[int, dict]] = {}
            head = self._head(gid, None, 0, 2**62)
            if head:   # the newest row of each series (same millisecond merged)
                hs, ht, hc = _dedup(*_concat(head))
                last = np.flatnonzero(np.r_[hs[1:] != hs[:-1], True])
                lists = {k: codec.values(codec.take(v, last)) for k, v in hc.items()}
                for j, i in enumerate(last.tolist()):
                    found[int(hs[i])] = (int(ht[i]), {k: lst[j] for k, lst in lists.items() if lst[j] is not None})
            missing = set(todo) - set(found)
            if missing:
                for (blob,) in c.execute("SELECT data FROM chunks WHERE grp=? AND res=0 ORDER BY start_ms DESC "
                                         "LIMIT ?", (gid, max_chunks)):
                    sids, ts, cols = codec.decode(blob)
                    names = list(cols)
                    for i in range(len(ts) - 1, -1, -1):
                        sid = int(sids[i])
                        if sid in missing:
                            missing.discard(sid)
                            found[sid] = (int(ts[i]), {k: cols[k][i] for k in names if cols[k][i] is not None})
                    if not missing:
                        break
            for sid, (t, f) in found.items():
                if sid in todo:
                    out.append((todo[sid], t, _nonull(f)))
        return out

    def interfaces(self, device_id: str) -> list[dict]:
        out = []
        for t, ts, f in self.latest(device_id, "interface"):
            idx = t.get("ifIndex")
            out.append({
                "ifIndex": int(idx) if isinstance(idx, str) and idx.isdigit() else idx,
                "name": t.get("ifName") or t.get("ifDescr") or idx,
                "speed_mbps": f.get("speed_mbps"),
                "admin_up": f.get("admin_up"), "oper_up": f.get("oper_up"),
                "in_bps": f.get("in_bps"), "out_bps": f.get("out_bps"),
                "util_in_pct": f.get("util_in_pct"), "util_out_pct": f.get("util_out_pct"),
                "ts_ms": ts, "tags": t, "fields": f})
        out.sort(key=lambda x: (isinstance(x["ifIndex"], str), x["ifIndex"] if x["ifIndex"] is not None else 0))
        return out

    def series(self, measurement: str, device: str | None, field: str | None, start_ms: int | None,
               end_ms: int | None, step_ms: int | None, tags: dict[str, str] | None, limit: int,
               agg: str = "avg") -> list[dict]:
        """Points of matching series in [start, end): raw samples without ``step_ms``; with it, one
        point per bucket of ``agg`` (avg, min, max, last, sum, count; rate and increase for counters),
        read from the coarsest rollup level whose resolution divides the step and whose retention
        covers ``start`` (``resolution`` in each answer; when no level covers it, the answer's
        ``step_ms`` is the level's own resolution)."""
        from .budget import SERIES_MAX_ROWS, SERIES_MAX_VALUES, SeriesBudgetExceeded
        if agg not in AGGS:
            raise ValueError(f"agg must be one of {', '.join(AGGS)}, not {agg!r}")
        if self.sink is not None:
            reader = getattr(self.sink, "reader", None)
            if reader is None:
                raise SeriesQueryUnsupported(
                    f"time series are written to {self.sink.name} and no store.query_url is set; query them "
                    "there (e.g. Grafana), or set store.query_url to its Prometheus query API (VictoriaMetrics)")
            return reader.series(measurement, device, field, start_ms, end_ms, step_ms, tags, limit, agg,
                                 now_ms=_now_ms())
        if agg not in AGGS:
            raise ValueError(f"agg must be one of {', '.join(AGGS)}, not {agg!r}")
        c = self.reader()
        q = "SELECT id, grp, device, tags FROM series WHERE measurement=?"
        args: list[Any] = [measurement]
        if device:
            q += " AND device=?"
            args.append(device)
        now = _now_ms()
        start = start_ms if start_ms is not None else 0
        end = end_ms if end_ms is not None else 2**62
        groups: dict[int, dict[int, dict]] = {}
        for sid, gid, dev, tj in c.execute(q + " ORDER BY id", args).fetchall():
            t = _loads(tj)
            if tags and any(t.get(k) != v for k, v in tags.items()):
                continue
            e = {"measurement": measurement, "device": dev, "tags": t, "points": []}
            if field:
                e["field"] = field
            groups.setdefault(gid, {})[sid] = e
        counters = COUNTERS.get(measurement, {})
        if field and counters.get(field) is None and agg in ("rate", "increase"):
            raise ValueError(f"agg={agg} needs a counter field; {measurement}.{field} is not a counter "
                             f"(counters: {', '.join(counters) or 'none'})")
        level, step = RAW, step_ms
        if step_ms:
            ret = self.series_retention
            fits = [r for r in (R1D, R1H, R5M) if step_ms >= r and step_ms % r == 0]
            covering = [r for r in (R1D, R1H, R5M) if ret.keep_ms(r) is None or start >= now - ret.keep_ms(r)]
            raw_ok = start_ms is None or ret.keep_ms(RAW) is None or start >= now - ret.keep_ms(RAW)
            ok = [r for r in fits if r in covering]
            if ok:
                level = ok[0]
            elif not raw_ok and covering:    # only a coarser level still has this range
                level = covering[-1]
                step = max(step_ms, level)
        narrow = ("narrow the query: a shorter start..end, device=, tags=, one field=, a coarser step= "
                  "or a smaller limit=")
        budget = {"rows": 0}

        def scan(rows: int) -> None:
            budget["rows"] += rows
            if budget["rows"] > SERIES_MAX_ROWS:
                raise SeriesBudgetExceeded(f"series: more than {SERIES_MAX_ROWS:,} stored rows (samples or "
                                           f"rollup buckets x series) to read; {narrow}")

        def read(gid: int, res: int, lo: int, hi: int, want: set[int], dec: set[str] | None):
            for rows, blob in self._chunk_blobs(c, gid, res, lo, hi):
                scan(rows)
                sids, ts, cols = codec.decode(blob, arrays=True, fields=dec)
                keep = np.isin(sids, list(want)) & (ts >= lo) & (ts < hi)
                if keep.all():
                    yield sids, ts, cols
                elif keep.any():
                    yield sids[keep], ts[keep], {k: codec.take(v, keep) for k, v in cols.items()}

        n = values = 0
        truncated = False
        entries: list[dict] = []
        for gid, want in groups.items():
            sidset = set(want)
            dec = None
            if field:
                dec = {field}
                bits = counters.get(field)
                if isinstance(bits, str):
                    dec.add(bits)
            if level == RAW:
                blocks = list(read(gid, RAW, start, end, sidset, dec))
                head = self._head(gid, sidset, start, end, dec)
                scan(sum(len(b[1]) for b in head))
                blocks += head
                if not blocks:
                    continue
                sids, ts, cols = _concat(blocks)
                sids, ts, cols = _dedup(sids, ts, cols)
                if step:
                    sids, ts, cols = rollup(measurement, sids, ts, cols, step)
                    level_used = RAW
                else:
                    level_used = None
            else:
                eng_wm = self._watermarks()
                blocks = []
                lo = start - start % level
                if level in (R1H, R1D):
                    blocks += list(read(gid, level, lo, min(end, eng_wm[1]), sidset, dec))
                    lo5 = max(lo, eng_wm[1])
                else:
                    lo5 = lo
                blocks += list(read(gid, R5M, lo5, end, sidset, dec))
                head = self._head(gid, sidset, lo5, end, dec)
                scan(sum(len(b[1]) for b in head))
                if head:
                    blocks.append(rollup(measurement, *_dedup(*_concat(head)), R5M))
                if not blocks:
                    continue
                sids, ts, cols = compose(*_concat(blocks), step)
                level_used = level
            # ---- answer
            ssl, tsl = sids.tolist(), ts.tolist()
            pos: dict[int, list[int]] = {}
            for i, sid in enumerate(ssl):
                pos.setdefault(sid, []).append(i)
            if level_used is None:   # raw points
                lists = {k: codec.values(v) for k, v in cols.items()}
                for sid, idx in pos.items():
                    e = want[sid]
                    pts = e["points"]
                    for i in idx:
                        if field:
                            v = lists.get(field, [None] * len(tsl))[i]
                            if v is None:
                                continue
                            pts.append([tsl[i], v])
                            values += 1
                        else:
                            f = {k: lst[i] for k, lst in lists.items() if lst[i] is not None}
                            if not f:
                                continue
                            pts.append([tsl[i], f])
                            values += len(f)
                        n += 1
            else:
                names = [field] if field else sorted({k.rpartition(SEP)[0] for k in cols})
                vals = {}
                for fn in names:
                    cnt = fn in counters and cols.get(fn + SEP + "inc") is not None
                    if not field and agg in ("rate", "increase") and not cnt:
                        continue
                    if cols.get(fn + SEP + "n") is None:
                        if agg == "last" and fn + SEP + "last" in cols:   # non-numeric: only its last value
                            vals[fn] = (codec.values(cols[fn + SEP + "last"]), None)
                        continue
                    v, ok = value_of(cols, fn, agg, cnt)
                    vals[fn] = (v.tolist(), ok.tolist())
                for sid, idx in pos.items():
                    e = want[sid]
                    e["resolution"] = LEVEL_NAMES[level_used] if level_used else "raw"
                    if step != step_ms:
                        e["step_ms"] = step
                    pts = e["points"]
                    for i in idx:
                        if field:
                            if field not in vals:
                                continue
                            v, ok = vals[field]
                            if (ok is not None and not ok[i]) or v[i] is None:
                                continue
                            pts.append([tsl[i], v[i]])
                            values += 1
                        else:
                            f = {k: v[i] for k, (v, ok) in vals.items() if (ok is None or ok[i]) and v[i] is not None}
                            if not f:
                                continue
                            pts.append([tsl[i], f])
                            values += len(f)
                        n += 1
            if values > SERIES_MAX_VALUES:
                raise SeriesBudgetExceeded(f"series: more than {SERIES_MAX_VALUES:,} values in the answer (a "
                                           f"point without field= counts one per field); {narrow}")
            entries.extend(want.values())
            if n >= limit:
                truncated = n > limit
                break
        out = [e for e in entries if e["points"]]
        total = 0
        for e in out:
            if total + len(e["points"]) > limit:
                e["points"] = e["points"][:max(0, limit - total)]
                truncated = True
            total += len(e["points"])
        out = [e for e in out if e["points"]]
        if truncated and out:
            out[-1]["truncated"] = True
        return out

    def _chunk_blobs(self, c: sqlite3.Connection, gid: int, res: int, lo: int, hi: int) -> Iterable[tuple[int, bytes]]:
        return c.execute("SELECT rows, data FROM chunks WHERE grp=? AND res=? AND start_ms < ? AND end_ms > ? "
                         "ORDER BY start_ms", (gid, res, hi, lo))

    def _watermarks(self) -> tuple[int, int]:
        """(hour, day): hours below the first and days below the second are sealed."""
        if self.engine is not None:
            return self.engine.hour_wm, self.engine.day_wm
        st = dict(self.reader().execute("SELECT name, value FROM seal_state"))
        return st.get("hour", 0), st.get("day", 0)

    def events(self, device: str | None, since_ms: int | None, until_ms: int | None, severity: str | None,
               type_: str | None, limit: int) -> list[dict]:
        return event_dicts(self.reader().execute(*events_sql(device, since_ms, until_ms, severity, type_, limit)))

    def events_since(self, since_ms: int, types: Iterable[str] | None = None,
                     limit: int = 100_000) -> list[dict]:
        types = None if types is None else sorted(types)
        if types == []:
            return []
        return events_since_rows(self.reader().execute(*events_since_sql(since_ms, types, limit)))

    def syslog(self, host: str | None = None, q: str | None = None, since_ms: int | None = None,
               until_ms: int | None = None, limit: int = 100, **kw: Any) -> list[dict]:
        """The syslog archive, newest first (store/syslog.py ``search``)."""
        return _syslog.search(self.reader(), host, q, since_ms, until_ms, limit, **kw)

    def ingest_stats(self) -> dict:
        c = self.reader()
        rej = {r: {"count": n, "last_topic": t, "last_error": e, "last_ms": ms} for r, n, t, e, ms in
               c.execute("SELECT reason, count, last_topic, last_error, last_ms FROM rejected ORDER BY reason")}
        gaps = [{"agent": a, "epoch": e, "first_seq": f, "last_seq": l, "missing": l - f + 1, "detected_ms": d}
                for a, e, f, l, d in c.execute(
                    "SELECT agent, epoch, first_seq, last_seq, detected_ms FROM gaps ORDER BY agent, epoch, first_seq")]
        counters = dict(c.execute("SELECT name, value FROM counters").fetchall())
        dl_cols = ("id", "received_ms", "topic", "agent", "epoch", "seq", "reason", "error", "bytes")
        dead = [dict(zip(dl_cols, r)) for r in c.execute(
            "SELECT id, received_ms, topic, agent, epoch, seq, reason, error, length(payload) FROM dead_letters "
            "ORDER BY id DESC LIMIT 20")]
        return {"counters": counters, "rejected": rej, "dead_letters": dead,
                "rejected_total": sum(x["count"] for x in rej.values()),
                "gaps": gaps, "missing_total": sum(g["missing"] for g in gaps)}

    # ------------------------------------------------------------ tokens
    def dead_letter(self, dl_id: int) -> dict | None:
        """One dead letter with its raw payload (bytes)."""
        cols = ("id", "received_ms", "topic", "agent", "epoch", "seq", "reason", "error", "payload")
        r = self.reader().execute(f"SELECT {', '.join(cols)} FROM dead_letters WHERE id=?", (dl_id,)).fetchone()
        return dict(zip(cols, r)) if r else None

    def token_create(self, role: str, name: str | None = None) -> tuple[int, str]:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        token = "cs_" + secrets.token_urlsafe(32)
        with self._lock:
            tid = self._w.execute("INSERT INTO tokens(name, role, hash, created_ms) VALUES (?,?,?,?)",
                                  (name, role, hash_token(token), _now_ms())).lastrowid
        return tid, token

    def token_list(self) -> list[dict]:
        cols = ("id", "name", "role", "created_ms", "revoked_ms")
        return [dict(zip(cols, r)) for r in self.reader().execute(f"SELECT {', '.join(cols)} FROM tokens ORDER BY id")]

    def token_revoke(self, ident: str) -> int:
        with self._lock:
            if ident.isdigit():
                cur = self._w.execute("UPDATE tokens SET revoked_ms=? WHERE id=? AND revoked_ms IS NULL",
                                      (_now_ms(), int(ident)))
            else:
                cur = self._w.execute("UPDATE tokens SET revoked_ms=? WHERE name=? AND revoked_ms IS NULL",
                                      (_now_ms(), ident))
            return cur.rowcount

    def token_role(self, token: str) -> tuple[int, str] | None:
        """(id, role) of a valid, unrevoked token, else None."""
        r = self.reader().execute("SELECT id, role FROM tokens WHERE hash=? AND revoked_ms IS NULL",
                                  (hash_token(token),)).fetchone()
        return (r[0], r[1]) if r else None

    # ---- typed reads (alerting, compliance, api) + topology intervals (issue 10) ------------------
    # The only way other modules read this store: no SQL outside collector/store/. Topology lives
    # in store/topology.py (tables topology_intervals / topology_sources); latest values and series
    # come from latest() / series() above, never from their tables here.
    def agent_info(self, agent_id: str) -> dict | None:
        """The agent's state info (merged birth/heartbeat bodies: ``devices`` [{id, room, type,
        tags}], ``epoch``, ...); None for an unknown agent."""
        r = self.reader().execute("SELECT info FROM agents WHERE id=?", (agent_id,)).fetchone()
        if r is None:
            return None
        try:
            info = _loads(r[0]) if r[0] else {}
        except orjson.JSONDecodeError:
            info = {}
        return info if isinstance(info, dict) else {}

    def token_name(self, token_id: int) -> str | None:
        """The name given to a token at creation (None: unnamed or unknown)."""
        r = self.reader().execute("SELECT name FROM tokens WHERE id=?", (token_id,)).fetchone()
        return r[0] if r else None

    def topology_current(self, kind: str, device: str | None = None, since_ms: int | None = None,
                         limit: int = _topology.MAX_ROWS) -> list[dict]:
        """Open topology intervals of ``kind`` (fdb|arp|lldp|ip_address), optionally of one device
        and last seen at or after ``since_ms``: [{device, kind, mac, ip, ifIndex, port, vlan, remote,
        tags, first_seen_ms, last_seen_ms, observations, open}]."""
        return _topology.current(self.reader(), kind, device, since_ms, limit)

    def topology_history(self, kind: str, device: str | None = None, start_ms: int | None = None,
                         end_ms: int | None = None, mac: str | None = None, ip: str | None = None,
                         limit: int = _topology.MAX_ROWS) -> list[dict]:
        """Intervals of ``kind`` seen inside [start_ms, end_ms), oldest first (same rows as
        topology_current; ``open``: still current)."""
        return _topology.history(self.reader(), kind, device, start_ms, end_ms, mac, ip, limit)

    def mac_history(self, mac: str, start_ms: int | None = None, end_ms: int | None = None,
                    limit: int = _topology.MAX_ROWS) -> dict:
        """Where was MAC X between start and end: ``fdb`` intervals (device, port, ifIndex, vlan,
        first/last seen) and ``arp`` intervals (the IPs it had, on which router)."""
        c = self.reader()
        return {"mac": _topology.norm_mac(mac) or mac.lower(),
                "fdb": _topology.history(c, "fdb", None, start_ms, end_ms, mac=mac, limit=limit),
                "arp": _topology.history(c, "arp", None, start_ms, end_ms, mac=mac, limit=limit)}

    def ip_history(self, ip: str, start_ms: int | None = None, end_ms: int | None = None,
                   limit: int = _topology.MAX_ROWS) -> dict:
        """IP -> MAC history (``arp`` intervals) and the devices that had the IP on an interface
        (``ip_address`` intervals)."""
        c = self.reader()
        return {"ip": _topology.norm_ip(ip),
                "arp": _topology.history(c, "arp", None, start_ms, end_ms, ip=ip, limit=limit),
                "ip_address": _topology.history(c, "ip_address", None, start_ms, end_ms, ip=ip, limit=limit)}

    def neighbour_history(self, device: str | None = None, start_ms: int | None = None, end_ms: int | None = None,
                          limit: int = _topology.MAX_ROWS) -> list[dict]:
        """LLDP neighbour intervals (of one device's ports, or all)."""
        return _topology.history(self.reader(), "lldp", device, start_ms, end_ms, limit=limit)

    def topology_retention(self, cutoff_ms: int) -> int:
        """Delete topology intervals last seen before ``cutoff_ms`` (default horizon
        topology.RETENTION_DAYS). Uses the writer connection without taking the writer lock: call
        it where retention() runs (from _apply, lock held) or before any other thread writes."""
        return _topology.retention(self._w, cutoff_ms)

    @classmethod
    def open_readonly(cls, path: str) -> "SQLiteStore":
        """A read-only view of a collector database (``campus-sense report ... --db``): the query
        methods, no writer connection, no schema changes, no checkpoint on close. ValueError when
        ``path`` is not a collector database."""
        from pathlib import Path

        if not Path(path).is_file():
            raise ValueError(f"{path}: no such database")

        class _ReadOnly(cls):   # type: ignore[misc, valid-type]
            def __init__(self, p: str):     # deliberately no super().__init__ (no writer)
                self.path = p
                self.sink = None
                self.engine = None          # the head is read from head_log (_head)
                self.series_retention = Retention()
                self._local = threading.local()

            def reader(self) -> sqlite3.Connection:
                c = getattr(self._local, "c", None)
                if c is None:
                    c = sqlite3.connect(f"file:{Path(self.path).resolve()}?mode=ro", uri=True, timeout=30,
                                        check_same_thread=False)
                    self._local.c = c
                return c

            def close(self) -> None:
                c = getattr(self._local, "c", None)
                if c is not None:
                    c.close()
                    self._local.c = None

        db = _ReadOnly(path)
        c = db.reader()
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "devices" not in tables or "agents" not in tables:
            db.close()
            raise ValueError(f"{path}: not a collector database (no devices/agents tables); "
                             "give --observations FILE.json")
        # latest() reads the `latest` table when time series went to an external sink.
        # NOTE for the series-storage rewrite: keep this test in step with how latest() decides.
        if "latest" in tables and c.execute("SELECT 1 FROM latest LIMIT 1").fetchone():
            db.sink = True
        return db


def stored_samples(path: str, measurement: str | None = None, device: str | None = None) -> list[dict]:
    """Every stored raw sample of a collector database (read-only; another process may be writing):
    ``{"m", "d", "tags", "t", "f"}`` sorted by series and time, sealed chunks and the head log
    together, one per series and millisecond. For tests, audits and exports."""
    from pathlib import Path
    c = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True, timeout=30)
    try:
        meta = {sid: (m, d, tj) for sid, m, d, tj in c.execute("SELECT id, measurement, device, tags FROM series")
                if (measurement is None or m == measurement) and (device is None or d == device)}
        by_key = {(m, d, tj): sid for sid, (m, d, tj) in meta.items()}
        rows: dict[tuple[int, int], dict] = {}
        for (blob,) in c.execute("SELECT data FROM chunks WHERE res=0"):
            sids, ts, cols = codec.decode(blob)
            names = list(cols)
            for i, (sid, t) in enumerate(zip(sids.tolist(), ts.tolist())):
                if sid in meta:
                    rows[(sid, t)] = {k: cols[k][i] for k in names if cols[k][i] is not None}
        for msg, shift, below in head_log_messages(c):
            for it in msg.items:
                t = it["t"] - shift
                sid = by_key.get((it["m"], it["d"], _dumps(it.get("tags") or {}, option=_SORT).decode()))
                if sid is None or t < below:
                    continue
                f = {k: v for k, v in it["f"].items() if v is not None}
                rows[(sid, t)] = {**rows[(sid, t)], **f} if (sid, t) in rows else f
    finally:
        c.close()
    out = []
    for (sid, t) in sorted(rows):
        m, d, tj = meta[sid]
        out.append({"m": m, "d": d, "tags": _loads(tj), "t": t, "f": rows[(sid, t)]})
    return out

