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
import secrets
import sqlite3
import threading
import time
from typing import Any, Iterable

import orjson

from campus_sense.wire import MAX_COMMIT_GAPS, Message, Watermark

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
-- one row per (measurement, device, timestamp) per commit group: {"<series id>": {fields}, ...}
CREATE TABLE IF NOT EXISTS sample_blocks(
  id INTEGER PRIMARY KEY, grp INTEGER NOT NULL, ts_ms INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS sample_blocks_grp_ts ON sample_blocks(grp, ts_ms);
-- the logical samples table (series_id, ts_ms, fields json) for ad-hoc SQL
CREATE VIEW IF NOT EXISTS samples(series_id, ts_ms, fields) AS
  SELECT CAST(j.key AS INTEGER), b.ts_ms, j.value FROM sample_blocks b, json_each(b.data) j;
-- latest value per series when time series go to an external sink (kind sqlite: newest blocks)
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
_SPECIAL = frozenset(("agent_poll", "agent"))
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


def _nonull(f: dict) -> dict:
    return {k: v for k, v in f.items() if v is not None} if None in f.values() else f


class SQLiteStore(Store):
    def __init__(self, path: str, sink: TimeSeriesSink | None = None, retention_days: float = 30,
                 retention_interval_s: float = 3600, synchronous: str = "FULL", dead_letter_keep: int = 10_000):
        # FULL: a commit (and so the PUBACK sent after it) survives power loss, not just a
        # process crash. NORMAL trades the last commits on power loss for fewer fsyncs.
        self.synchronous = synchronous
        self.path = path
        self.sink = sink
        self.retention_ms = int(retention_days * 86400_000)
        self.retention_interval_s = retention_interval_s
        self._next_retention = time.monotonic() + 5
        self._w = self._connect()
        self._w.executescript(SCHEMA)
        cols = {r[1] for r in self._w.execute("PRAGMA table_info(agents)")}
        for col, decl in (("clock_offset_ms", "INTEGER"), ("clock_ms", "INTEGER")):
            if col not in cols:
                self._w.execute(f"ALTER TABLE agents ADD COLUMN {col} {decl}")
        #: agent -> (site, building) it is bound to (first seen or enrolled with)
        self._bound: dict[str, tuple[str, str]] = {
            a: (si, b) for a, si, b in self._w.execute("SELECT id, site, building FROM agents")}
        self.dead_letter_keep = dead_letter_keep
        self._series: dict[tuple, int] = {}
        self._series_canon: dict[tuple, int] = {}
        self._seq: dict[tuple[str, str], _SeqState] = {}
        self._local = threading.local()
        self._lock = threading.Lock()  # guards writer connection
        self.stats_lock = threading.Lock()
        self.counters = dict(self._w.execute("SELECT name, value FROM counters").fetchall())
        self._next_block = self._max_block() + 1

    def _max_block(self) -> int:
        return self._w.execute("SELECT coalesce(max(id), 0) FROM sample_blocks").fetchone()[0]

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
        self._seq.clear()
        try:
            self._next_block = self._max_block() + 1
            self._bound = {a: (si, b) for a, si, b in self._w.execute("SELECT id, site, building FROM agents")}
        except sqlite3.Error:
            self._next_block = None    # re-read before the next write
    def _bind(self, messages: Iterable[Message], rejects: list[Reject]) -> list[Message]:
        """An agent stays in the site and building it was first seen (or enrolled) with: a message
        under another one is refused (dead letter ``agent_moved``) instead of moving its devices."""
        out = []
        bound = self._bound
        for m in messages:
            if m.seq is None and m.kind == "events":   # made by the collector
                out.append(m)
                continue
            tp = m.topic
            b = bound.get(m.agent)
            if b is not None and b != (tp.site, tp.building):   # moved by `collector agent move` meanwhile?
                row = self._w.execute("SELECT site, building FROM agents WHERE id=?", (m.agent,)).fetchone()
                if row:
                    b = bound[m.agent] = tuple(row)
            if b is None:
                bound[m.agent] = (tp.site, tp.building)
            elif b != (tp.site, tp.building):
                rejects.append(Reject(
                    f"campus/v1/{tp.site}/{tp.building}/{m.agent}/{m.kind}", "agent_moved",
                    f"agent {m.agent} is bound to site {b[0]} building {b[1]}, not {tp.site}/{tp.building}; "
                    f"if it really moved: campus-sense collector agent move {m.agent} --site {tp.site} "
                    f"--building {tp.building}", m.raw, m.agent, m.epoch, m.seq))
                continue
            out.append(m)
        return out

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
        blocks: dict[tuple[int, int], dict] = {}
        latest: dict[int, tuple] = {}
        sink_items: list[tuple[tuple[str, str, str], list[dict]]] = []   # (site, building, agent), samples
        dev_seen: dict[str, list] = {}       # device -> [agent, site, building, last_t]
        polls: list[tuple] = []
        agent_stats: dict[str, dict] = {}
        facts: list[tuple] = []
        events: list[tuple] = []
        agents_seen: dict[str, Any] = {}
        states: list[Message] = []
        touched: dict[tuple, _SeqState] = {}
        series_get = self._series.get
        series_id = self._series_id
        special_items: list[tuple[dict, dict]] = []
        to_sqlite = self.sink is None
        points = 0
        same_time = 0
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
                items = msg.items
                points += len(items)
                last_d = None
                if to_sqlite:
                    blk = None
                    last_gid = last_t = None
                    for it in items:
                        d = it["d"]
                        tags = it.get("tags")
                        key = (it["m"], d, *tags.items()) if tags else (it["m"], d)
                        s = series_get(key)
                        if s is None:
                            s = series_id(it["m"], d, tags or {}, key)
                        sid, gid, skey, special = s
                        t = it["t"]
                        if gid != last_gid or t != last_t:
                            last_gid, last_t = gid, t
                            bk = (gid, t)
                            blk = blocks.get(bk)
                            if blk is None:
                                blocks[bk] = blk = {}
                            ds = dev_seen.get(d)
                            if ds is None:
                                dev_seen[d] = [msg.agent, tp.site, tp.building, t]
                            elif ds[3] < t:
                                ds[3] = t
                        # null fields are stored as null and dropped when read
                        prev = blk.get(skey)
                        if prev is None:
                            blk[skey] = it["f"]
                        else:   # same series, same millisecond: merge the fields, count it
                            blk[skey] = {**prev, **it["f"]}
                            same_time += 1
                        if special:
                            special_items.append((it, it["f"]))
                else:
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
                            ds = dev_seen.get(d)
                            if ds is None:
                                dev_seen[d] = [msg.agent, tp.site, tp.building, t]
                            elif ds[3] < t:
                                ds[3] = t
                        if s[3]:
                            special_items.append((it, f))
                    sink_items.append(((tp.site, tp.building, msg.agent), items))
            elif kind == "events":
                for it in msg.items:
                    d = it["d"]
                    t = it["t"]
                    events.append(_event_row(msg.agent, it))
                    ds = dev_seen.get(d)
                    if ds is None:
                        dev_seen[d] = [msg.agent, tp.site, tp.building, t]
                    elif ds[3] < t:
                        ds[3] = t
            elif kind == "facts":
                for it in msg.items:
                    d = it["d"]
                    t = it["t"]
                    facts.append((_dumps(it["facts"]).decode(), t, d, t))
                    ds = dev_seen.get(d)
                    if ds is None:
                        dev_seen[d] = [msg.agent, tp.site, tp.building, t]
                    elif ds[3] < t:
                        ds[3] = t
        res.points = points
        for it, f in special_items:
            d, t = it["d"], it["t"]
            if it["m"] == "agent_poll":
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
        # ---- time series
        if blocks:
            if self._next_block is None:
                self._next_block = self._max_block() + 1
            bid = self._next_block
            rows = []
            for (gid, t), blk in blocks.items():
                rows.append((bid, gid, t, _dumps(blk).decode()))
                bid += 1
            w.executemany("INSERT INTO sample_blocks(id, grp, ts_ms, data) VALUES (?,?,?,?)", rows)
            self._next_block = bid
        elif latest:
            w.executemany("INSERT INTO latest(series_id, ts_ms, fields) VALUES (?,?,?) "
                          "ON CONFLICT(series_id) DO UPDATE SET ts_ms=excluded.ts_ms, fields=excluded.fields "
                          "WHERE excluded.ts_ms >= latest.ts_ms",
                          [(sid, t, _dumps(f).decode()) for sid, (t, f) in latest.items()])
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
        res.marks = [self._watermark(a, e, st) for (a, e), st in touched.items()]
        with self.stats_lock:
            c.update(newc)
        if time.monotonic() >= self._next_retention:
            self._next_retention = time.monotonic() + self.retention_interval_s
            try:
                self.retention(now)
            except sqlite3.Error as e:  # the group is committed; retention retries next interval
                log.error("retention failed: %s", e)
        return res

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
        b = msg.body
        sent = b.get("sent_ms") if type(b.get("sent_ms")) is int else now
        info = {k: v for k, v in b.items() if k not in ("v", "kind", "agent", "sent_ms")}
        vals: dict[str, Any] = {}
        if msg.kind == "death":
            vals.update(state="offline", death_ms=sent)
        else:
            vals["state"] = "online"
            vals["birth_ms" if msg.kind == "birth" else "heartbeat_ms"] = sent
        for col, keys in (("version", ("version",)), ("config_hash", ("config_hash", "config")),
                          ("queue_depth", ("queue_depth",)), ("oldest_age_s", ("oldest_age_s",)),
                          ("dropped_total", ("dropped_total", "dropped")),
                          ("published_total", ("published_total",))):
            for k in keys:
                if k in b and not isinstance(b[k], (dict, list)):
                    vals[col] = b[k]
                    break
        if "drivers" in b:
            vals["drivers"] = _dumps(b["drivers"]).decode()
        sets = ", ".join(f"{k}=?" for k in vals)
        self._w.execute(f"UPDATE agents SET {sets}, info=json_patch(info, ?) WHERE id=?",
                        (*vals.values(), _dumps(info).decode(), msg.agent))

    def retention(self, now_ms: int | None = None, chunk: int = 5000) -> int:
        """Delete sample blocks older than retention, oldest-inserted first, in small transactions.

        Scans by id (insertion order) and stops at the first chunk with nothing to delete:
        backfilled old samples inserted late are removed once what was inserted before them expired.
        A series whose blocks all expired shows no latest value.
        """
        cutoff = (now_ms or _now_ms()) - self.retention_ms
        w = self._w
        total = 0
        while True:
            w.execute("BEGIN IMMEDIATE")
            try:
                cur = w.execute(
                    "DELETE FROM sample_blocks WHERE id IN (SELECT id FROM sample_blocks WHERE id <= "
                    "(SELECT coalesce(min(id), 0) + ? FROM sample_blocks) AND ts_ms < ?)", (chunk, cutoff))
                n = cur.rowcount
                w.execute("COMMIT")
            except BaseException:
                w.execute("ROLLBACK")
                raise
            total += n
            if n == 0:
                break
        w.execute("DELETE FROM events WHERE ts_ms < ?", (cutoff,))
        w.execute("DELETE FROM dead_letters WHERE id <= (SELECT max(id) FROM dead_letters) - ?",
                  (self.dead_letter_keep,))
        # a gap older than the retention can no longer be filled usefully
        w.execute("DELETE FROM gaps WHERE detected_ms < ?", (cutoff,))
        self._seq.clear()
        if total:
            log.info("retention: deleted %d sample blocks older than %d ms", total, cutoff)
        return total

    # ------------------------------------------------------------ queries
    def agents(self, now_ms: int, offline_after_s: float) -> list[dict]:
        c = self.reader()
        gaps: dict[str, list] = {}
        for agent, epoch, a, b, det in c.execute(
                "SELECT agent, epoch, first_seq, last_seq, detected_ms FROM gaps ORDER BY agent, epoch, first_seq"):
            gaps.setdefault(agent, []).append({"epoch": epoch, "first_seq": a, "last_seq": b, "missing": b - a + 1,
                                               "detected_ms": det})
        hw: dict[str, list] = {}
        for agent, epoch, hwm, last in c.execute("SELECT agent, epoch, hwm, last_ms FROM seq_state ORDER BY last_ms"):
            hw.setdefault(agent, []).append({"epoch": epoch, "hwm": hwm, "last_ms": last})
        out = []
        cols = ("id", "site", "building", "state", "version", "config_hash", "drivers", "queue_depth",
                "oldest_age_s", "dropped_total", "published_total", "first_seen_ms", "last_seen_ms", "birth_ms",
                "death_ms", "heartbeat_ms", "info", "clock_offset_ms", "clock_ms")
        for row in c.execute(f"SELECT {', '.join(cols)} FROM agents ORDER BY id"):
            a = dict(zip(cols, row))
            off = a.pop("clock_offset_ms")
            # agent clock minus collector clock (estimated); item times beyond clock.correct_above_s are
            # stored corrected by it
            a["clock_offset_s"] = None if off is None else off / 1000
            a["clock_estimated_ms"] = a.pop("clock_ms")
            a["drivers"] = _loads(a["drivers"]) if a["drivers"] else None
            a["info"] = _loads(a["info"]) if a["info"] else {}
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

    def latest(self, device_id: str, measurement: str, max_blocks: int = 256) -> list[tuple[dict, int, dict]]:
        """[(tags, ts_ms, fields)] of the latest sample of each series of a device and measurement.

        Kind sqlite: read the group's newest blocks until every series was found (at most
        ``max_blocks``); with an external sink: the ``latest`` table kept by ingest."""
        c = self.reader()
        if self.sink is not None:
            return [(_loads(tags), ts, _loads(fields)) for tags, ts, fields in c.execute(
                "SELECT s.tags, l.ts_ms, l.fields FROM series s JOIN latest l ON l.series_id = s.id "
                "WHERE s.device=? AND s.measurement=?", (device_id, measurement))]
        want: dict[int, dict[str, dict]] = {}
        for sid, gid, tags in c.execute("SELECT id, grp, tags FROM series WHERE device=? AND measurement=?",
                                        (device_id, measurement)):
            want.setdefault(gid, {})[str(sid)] = _loads(tags)
        out = []
        for gid, todo in want.items():
            for ts, data in c.execute("SELECT ts_ms, data FROM sample_blocks WHERE grp=? "
                                      "ORDER BY ts_ms DESC, id DESC LIMIT ?", (gid, max_blocks)):
                blk = _loads(data)
                for k in [k for k in todo if k in blk]:
                    out.append((todo.pop(k), ts, _nonull(blk[k])))
                if not todo:
                    break
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
               end_ms: int | None, step_ms: int | None, tags: dict[str, str] | None, limit: int) -> list[dict]:
        if self.sink is not None:
            raise SeriesQueryUnsupported(
                f"time series are written to {self.sink.name}; query them there (e.g. Grafana), "
                "this API only serves series stored in SQLite")
        c = self.reader()
        q = "SELECT id, grp, device, tags FROM series WHERE measurement=?"
        args: list[Any] = [measurement]
        if device:
            q += " AND device=?"
            args.append(device)
        start = start_ms if start_ms is not None else 0
        end = end_ms if end_ms is not None else 2**62
        groups: dict[int, dict[str, dict]] = {}
        entries = []
        for sid, gid, dev, tj in c.execute(q + " ORDER BY id", args).fetchall():
            t = _loads(tj)
            if tags and any(t.get(k) != v for k, v in tags.items()):
                continue
            e = {"measurement": measurement, "device": dev, "tags": t, "points": []}
            if field:
                e["field"] = field
            if step_ms:
                e["acc"] = {}  # bucket start -> {field or None: [sum, n]}, averaged at the end
            groups.setdefault(gid, {})[str(sid)] = e
            entries.append(e)
        # budget (collector/README.md, API): memory grows with the answer (points, or buckets with a
        # step: raw points are averaged while scanning), never with the raw data in the range
        from .budget import SERIES_MAX_BLOCKS, SERIES_MAX_VALUES, SeriesBudgetExceeded
        narrow = ("narrow the query: a shorter start..end, device=, tags=, one field=, a coarser step= "
                  "or a smaller limit=")
        n = values = blocks = 0
        truncated = False
        for gid, want in groups.items():
            for ts, data in c.execute("SELECT ts_ms, data FROM sample_blocks WHERE grp=? AND ts_ms >= ? AND ts_ms < ? "
                                      "ORDER BY ts_ms, id", (gid, start, end)):
                blocks += 1
                if blocks > SERIES_MAX_BLOCKS:
                    raise SeriesBudgetExceeded(f"series: more than {SERIES_MAX_BLOCKS:,} sample blocks (timestamps "
                                               f"x devices) to scan; {narrow}")
                blk = _loads(data)
                for k, e in want.items():
                    f = blk.get(k)
                    if f is None:
                        continue
                    if field:
                        v = f.get(field)
                        if v is None:
                            continue
                    else:
                        v = _nonull(f)
                    if step_ms:
                        b = ts - ts % step_ms
                        acc = e["acc"].get(b)
                        if acc is None:
                            acc = e["acc"][b] = {}
                            n += 1
                        for fk, x in (((None, v),) if field else v.items()):
                            if isinstance(x, (int, float)):
                                a = acc.get(fk)
                                if a is None:
                                    acc[fk] = [float(x), 1]
                                    values += 1
                                else:
                                    a[0] += x
                                    a[1] += 1
                    else:
                        e["points"].append([ts, v])
                        n += 1
                        values += 1 if field else len(v)
                if values > SERIES_MAX_VALUES:
                    raise SeriesBudgetExceeded(f"series: more than {SERIES_MAX_VALUES:,} values in the answer (a "
                                               f"point without field= counts one per field); {narrow}")
                if n > limit if step_ms else n >= limit:
                    truncated = True
                    break
            if truncated:
                break
        out = []
        for e in entries:
            if step_ms:
                e["points"] = [[b, a[None][0] / a[None][1]] if field else [b, {k: s / m for k, (s, m) in a.items()}]
                               for b, a in sorted(e.pop("acc").items()) if (None in a if field else a)]
            if not e["points"]:
                continue
            out.append(e)
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

    def events(self, device: str | None, since_ms: int | None, until_ms: int | None, severity: str | None,
               type_: str | None, limit: int) -> list[dict]:
        q = "SELECT id, agent, device, ts_ms, type, severity, tags, data FROM events WHERE ts_ms >= ? AND ts_ms < ?"
        args: list[Any] = [since_ms or 0, until_ms if until_ms is not None else 2**62]
        for col, v in (("device", device), ("severity", severity), ("type", type_)):
            if v:
                q += f" AND {col}=?"
                args.append(v)
        q += " ORDER BY ts_ms DESC, id DESC LIMIT ?"
        args.append(limit)
        cols = ("id", "agent", "device", "ts_ms", "type", "severity", "tags", "data")
        out = []
        for r in self.reader().execute(q, args):
            e = dict(zip(cols, r))
            e["tags"] = _loads(e["tags"])
            e["data"] = _loads(e["data"])
            out.append(e)
        return out

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
