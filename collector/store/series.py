"""Time series of the embedded store: head, sealed column chunks, rollups, retention classes.

Write path (inside ``SQLiteStore.apply``'s transaction): every metrics message is appended as it
arrived to ``head_log`` (payload + the clock correction applied), and its samples to the in-memory
head (``stage`` during the transaction, ``commit``/``discard`` after it). Nothing else is serialised
per sample. The head keeps one ``Bucket`` per group and hour; once a bucket holds ``COMPACT_ROWS``
rows they are transposed into a column block right after their commit (while the decoded dicts are
still in the CPU cache): an hour of 20 switches' interface samples (18 fields) held ~410 bytes per
sample (tracemalloc; blocks ~160 bytes, the rest rows not transposed yet) instead of ~1,250.

Sealing (``seal``, from the ingest thread every ``seal_interval_s``): every group (one device and
measurement) gets, per closed hour, one compressed raw chunk (``codec``: ~2 bytes per value for SNMP
interface data) and one 5-minute rollup chunk; when a day closes, one 1-hour and one 1-day rollup
chunk per group are composed from that day's 5-minute rollups. Sealed samples leave the head and the
head log in the same transaction. A sample that arrives for an hour already sealed (a backlog, a
late agent) is merged into that hour's chunks at the next seal, and its day's rollups are recomputed.

Rollup statistics per field and bucket (columns ``<field>\\x1f<stat>``): ``n``, ``sum``, ``min``,
``max``, ``last`` for gauges; ``n``, ``last``, ``inc`` (increase) and ``dt`` (ms covered) for
counters (``campus_sense.wire.COUNTERS``), so rates compose exactly across rollups: the increase of
a 32-bit counter that wrapped is counted across the wrap, a counter that went down otherwise is a
device restart and counts from zero (as Prometheus' rate() does). Counts, integer statistics and
counter increases are exact; sum/min/max/last of float fields are kept as float32 (7 significant
digits: half the bytes of the XOR-compressed noise of measured rates), so a rollup equals the
aggregate of the raw samples it covers to float32 precision.

Queries (``SQLiteStore.series``) read, per group: the coarsest level whose resolution divides the
step and whose retention covers the range; chunks of that level below its watermark, finer rollups
above it, and the head; composed to the step.
"""
from __future__ import annotations

import gc
import logging
import sqlite3
from dataclasses import dataclass
from typing import Any, Iterable

from itertools import chain
from operator import itemgetter

import numpy as np
from campus_sense import wire

from . import codec

log = logging.getLogger("collector.store")

MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
RAW, R5M, R1H, R1D = 0, 300_000, HOUR, DAY
LEVEL_NAMES = {RAW: "raw", R5M: "5m", R1H: "1h", R1D: "1d"}
SEP = "\x1f"
GAUGE_STATS = ("n", "sum", "min", "max", "last")
COUNTER_STATS = ("n", "last", "inc", "dt")
AGGS = ("avg", "min", "max", "last", "sum", "count", "rate", "increase")

SCHEMA = """
-- sealed data: one row per group (device, measurement), level (0 raw, else rollup resolution ms)
-- and window (raw/5m: one hour; 1h/1d: one day); data = collector.store.codec blob
CREATE TABLE IF NOT EXISTS chunks(
  id INTEGER PRIMARY KEY, grp INTEGER NOT NULL, res INTEGER NOT NULL, start_ms INTEGER NOT NULL,
  end_ms INTEGER NOT NULL, rows INTEGER NOT NULL, data BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS chunks_key ON chunks(grp, res, start_ms);
CREATE INDEX IF NOT EXISTS chunks_expiry ON chunks(res, end_ms);
-- metrics messages not sealed yet, as received (the head is rebuilt from them after a restart);
-- items below sealed_below were sealed already
CREATE TABLE IF NOT EXISTS head_log(
  id INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL, shift_ms INTEGER NOT NULL,
  max_t INTEGER NOT NULL, sealed_below INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS seal_state(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(slots=True)
class Retention:
    """Days kept per class (None: forever)."""
    raw_days: float = 14
    rollup_5m_days: float = 400
    rollup_1h_days: float = 1825
    rollup_1d_days: float | None = None

    def keep_ms(self, res: int) -> int | None:
        d = {RAW: self.raw_days, R5M: self.rollup_5m_days, R1H: self.rollup_1h_days, R1D: self.rollup_1d_days}[res]
        return None if d is None else int(d * DAY)


# --------------------------------------------------------------------------- rows <-> columns
def _columns(fields: list[dict] | tuple[dict, ...]) -> dict[str, codec.Column]:
    """Row dicts -> columns. Rows of one driver share their keys almost always: then the values are
    picked and transposed in C (itemgetter, zip); otherwise field by field."""
    if not fields:
        return {}
    keys = tuple(fields[0])
    nk = len(keys)
    if nk > 1 and set(map(len, fields)) == {nk}:    # same size and every key present: same keys
        try:
            return {k: codec.column(v) for k, v in zip(keys, zip(*map(itemgetter(*keys), fields)))}
        except KeyError:
            pass
    names: dict[str, None] = {}
    for f in fields:
        names.update(dict.fromkeys(f))
    return {k: codec.column([f.get(k) for f in fields]) for k in names}


def transpose(rows: list[tuple[int, int, dict]] | tuple) -> tuple[np.ndarray, np.ndarray, dict[str, codec.Column]]:
    """Head rows (sid, t, fields) -> (sids, ts, columns) in the same (arrival) order."""
    s_, t_, fs = zip(*rows)
    return np.fromiter(s_, np.int64, len(s_)), np.fromiter(t_, np.int64, len(t_)), _columns(fs)


def transpose_tables(tabs: list[tuple[list, int, dict, int]] | tuple) -> tuple[np.ndarray, np.ndarray, dict]:
    """Head tables (sids, t, {field: values}, rows) -> (sids, ts, columns) in the same order: the
    columns arrived as lists, so each is one concatenation."""
    sids = np.fromiter(chain.from_iterable(x[0] for x in tabs), np.int64)
    ts = np.repeat(np.fromiter((x[1] for x in tabs), np.int64, len(tabs)), [x[3] for x in tabs])
    keys = tuple(tabs[0][2])
    if all(tuple(x[2]) == keys for x in tabs):
        return sids, ts, {k: codec.column(list(chain.from_iterable(x[2][k] for x in tabs))) for k in keys}
    names = dict.fromkeys(chain.from_iterable(x[2] for x in tabs))
    return sids, ts, {k: codec.column(list(chain.from_iterable(x[2].get(k) or [None] * x[3] for x in tabs)))
                      for k in names}


#: rows of a head bucket transposed into a column block at once (after the commit that filled it)
COMPACT_ROWS = 512


class Bucket:
    """One group's unsealed samples of one hour, in arrival order: column blocks (pending samples
    are transposed once ``COMPACT_ROWS`` have arrived, right after their commit) and the samples
    since: rows (sid, t, fields) and tables (sids, t, {field: values}, rows). A commit that brings
    one kind to a bucket holding the other transposes what it holds first (within one commit, the
    rows count as arrived before the tables)."""
    __slots__ = ("blocks", "rows", "tabs", "ntab")

    def __init__(self):
        self.blocks: list[tuple[np.ndarray, np.ndarray, dict]] = []
        self.rows: list[tuple[int, int, dict]] = []
        self.tabs: list[tuple[list, int, dict, int]] = []
        self.ntab = 0

    def __len__(self) -> int:
        return sum(len(b[1]) for b in self.blocks) + len(self.rows) + self.ntab

    def pending(self) -> int:
        return len(self.rows) + self.ntab

    def columns(self) -> list[tuple[np.ndarray, np.ndarray, dict]]:
        """The bucket as column blocks, arrival order (call with the head lock held or on a copy)."""
        return pending_blocks(list(self.blocks), self.rows, self.tabs)

    def compact(self, lock: Any) -> None:
        """Pending samples -> one column block (only the writer thread changes buckets: readers
        see the pending samples or the block)."""
        blks = pending_blocks([], self.rows, self.tabs)
        with lock:
            self.blocks.extend(blks)
            self.rows, self.tabs, self.ntab = [], [], 0


def pending_blocks(blocks: list, rows: list, tabs: list) -> list:
    if rows:
        blocks.append(transpose(rows))
    if tabs:
        blocks.append(transpose_tables(tabs))
    return blocks


def _counter_bits(measurement: str, field: str) -> Any:
    """None (not a counter), an int (fixed width) or the name of the field holding the width."""
    return wire.COUNTERS.get(measurement, {}).get(field)


# --------------------------------------------------------------------------- rollups
def _f32(a: np.ndarray) -> np.ndarray:
    """Rounded to float32 (kept as float64 in memory): what a ``g`` column stores."""
    return a.astype(np.float32).astype(np.float64)


def _segments(sids: np.ndarray, ts: np.ndarray, res: int) -> tuple[np.ndarray, np.ndarray]:
    b = ts - ts % res
    if not len(ts):
        return np.zeros(0, np.int64), b
    brk = np.empty(len(ts), bool)
    brk[0] = True
    brk[1:] = (sids[1:] != sids[:-1]) | (b[1:] != b[:-1])
    return np.flatnonzero(brk), b


def _last_index(valid: np.ndarray, starts: np.ndarray) -> np.ndarray:
    idx = np.where(valid, np.arange(len(valid)), -1)
    return np.maximum.reduceat(idx, starts) if len(starts) else idx[:0]


def rollup(measurement: str, sids: np.ndarray, ts: np.ndarray, cols: dict[str, codec.Column], res: int,
           prev: dict[int, dict[str, tuple[int, int]]] | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Statistics of raw rows (sorted by sid, t) per (sid, bucket of ``res``): (sids, bucket starts,
    {"<field>\\x1f<stat>": Column}). ``prev``: sid -> counter field -> (t, value) of the row before
    the first one here (for the first increase)."""
    starts, b = _segments(sids, ts, res)
    out: dict[str, codec.Column] = {}
    n_rows = len(ts)
    # arrays equal for many fields (rows per bucket, time covered) are shared: encoded once
    seg_n = np.diff(np.append(starts, n_rows)) if len(starts) else np.zeros(0, np.int64)
    dense = _dense_gauges(measurement, starts, seg_n, cols) if len(starts) else {}
    dts: list[np.ndarray] = []
    firsts: tuple[list, list] | None = None
    for name, c in cols.items():
        got = dense.get(name)
        if got is not None:
            out.update(got)
            continue
        valid = c.valid if c.valid is not None else np.ones(n_rows, bool)
        if c.valid is None:
            n = seg_n
        else:
            n = np.add.reduceat(valid.astype(np.int64), starts) if len(starts) else np.zeros(0, np.int64)
        has = n > 0
        li = _last_index(valid, starts)
        if c.kind == "j":
            vals = c.values
            out[name + SEP + "last"] = codec.column([vals[i] if i >= 0 else None for i in li.tolist()])
            continue
        v = c.values
        last = v[np.maximum(li, 0)]
        out[name + SEP + "n"] = codec.Column("i", n, None)
        out[name + SEP + "last"] = codec.Column("g" if c.kind == "f" else c.kind, _f32(last) if c.kind == "f" else last,
                                                None if has.all() else has)
        bits = _counter_bits(measurement, name) if c.kind == "i" else None
        if bits is None:
            vf = v.astype(np.float64)
            s = np.add.reduceat(np.where(valid, vf, 0.0), starts)
            mn = np.minimum.reduceat(np.where(valid, vf, np.inf), starts)
            mx = np.maximum.reduceat(np.where(valid, vf, -np.inf), starts)
            hm = None if has.all() else has
            if c.kind == "f":    # float statistics of float fields: float32
                out[name + SEP + "sum"] = codec.Column("g", _f32(np.where(has, s, 0.0)), hm)
                out[name + SEP + "min"] = codec.Column("g", _f32(np.where(has, mn, 0.0)), hm)
                out[name + SEP + "max"] = codec.Column("g", _f32(np.where(has, mx, 0.0)), hm)
            else:
                out[name + SEP + "sum"] = codec.Column("f", np.where(has, s, 0.0), hm)
                out[name + SEP + "min"] = codec.Column("i", np.where(has, mn, 0).astype(np.int64), hm)
                out[name + SEP + "max"] = codec.Column("i", np.where(has, mx, 0).astype(np.int64), hm)
            continue
        # counter: increase and time covered per row, from the previous valid row of the same series
        if isinstance(bits, str):
            bc = cols.get(bits)
            width = bc.values.astype(np.int64) if bc is not None and bc.kind == "i" else np.full(n_rows, 64)
        else:
            width = np.full(n_rows, int(bits))
        dense_c = c.valid is None        # every row has the value: no gathering by index
        vi = None if dense_c else np.flatnonzero(valid)
        if not dense_c:                  # rows without a value add nothing
            inc = np.zeros(n_rows, np.int64)
            dt = np.zeros(n_rows, np.int64)
        if dense_c or len(vi):
            vv = v.astype(np.int64, copy=False) if dense_c else v[vi].astype(np.int64)
            tv = ts if dense_c else ts[vi]
            if dense_c:                     # the same for every dense counter: found once
                firsts = firsts or _series_starts(sids)
                first_k, first_sid = firsts
            else:
                first_k, first_sid = _series_starts(sids[vi])
            pv = np.empty_like(vv)
            pt = np.empty_like(tv)
            have = np.ones(len(vv), bool)
            pv[1:], pt[1:] = vv[:-1], tv[:-1]
            pr = prev or {}
            for k, sid in zip(first_k, first_sid):
                p = pr.get(sid, {}).get(name)
                if p is None:
                    have[k] = False
                else:
                    pt[k], pv[k] = p
            d = vv - pv
            neg = have & (d < 0)
            if neg.any():
                w = (width if dense_c else width[vi])[neg]
                wrapped = vv[neg] + np.where(w <= 32, np.int64(1) << np.minimum(w, 62).astype(np.int64), 0) - pv[neg]
                d[neg] = np.where((w <= 32) & (wrapped >= 0) & (wrapped < (np.int64(1) << np.maximum(w - 1, 0))),
                                  wrapped, vv[neg])
            if dense_c:
                inc = np.where(have, d, 0)
                dt = np.where(have, tv - pt, 0)
            else:
                inc[vi] = np.where(have, d, 0)
                dt[vi] = np.where(have, tv - pt, 0)
        out[name + SEP + "inc"] = codec.Column("i", np.add.reduceat(inc, starts) if len(starts) else inc[:0], None)
        dt = np.add.reduceat(dt, starts) if len(starts) else dt[:0]
        same = next((d for d in dts if np.array_equal(d, dt)), None)
        if same is None:
            dts.append(dt)
        else:
            dt = same
        out[name + SEP + "dt"] = codec.Column("i", dt, None)
    return sids[starts], b[starts], out


def _series_starts(sids: np.ndarray) -> tuple[list[int], list[int]]:
    """(positions, series ids) of the rows that start a series in rows sorted by series."""
    f = np.ones(len(sids), bool)
    f[1:] = sids[1:] != sids[:-1]
    k = np.flatnonzero(f)
    return k.tolist(), sids[k].tolist()


def _dense_gauges(measurement: str, starts: np.ndarray, n: np.ndarray, cols: dict[str, codec.Column]) -> dict:
    """``rollup``'s statistics of the gauge fields that no row lacks, computed for all fields of
    one kind at once (rows of a 2-D array: one numpy call per statistic, not per field):
    field -> {"<field>\x1f<stat>": Column}. Same values as the field-by-field path."""
    kinds: dict[str, list[str]] = {"f": [], "i": []}
    for name, c in cols.items():
        if c.valid is None and (c.kind == "f" or c.kind == "b" or (c.kind == "i" and _counter_bits(measurement, name) is None)):
            kinds["f" if c.kind == "f" else "i"].append(name)
    last = starts + n - 1
    nc = codec.Column("i", n, None)
    got: dict[str, dict] = {}
    for kind, names in kinds.items():
        if not names:
            continue
        v = np.stack([cols[k].values for k in names])
        vf = v.astype(np.float64, copy=False)
        s = np.add.reduceat(vf, starts, axis=1)
        mn = np.minimum.reduceat(vf, starts, axis=1)
        mx = np.maximum.reduceat(vf, starts, axis=1)
        if kind == "f":
            s, mn, mx, lv = _f32(s), _f32(mn), _f32(mx), _f32(v[:, last])
            for k, name in enumerate(names):
                got[name] = {name + SEP + "n": nc, name + SEP + "last": codec.Column("g", lv[k], None),
                             name + SEP + "sum": codec.Column("g", s[k], None),
                             name + SEP + "min": codec.Column("g", mn[k], None),
                             name + SEP + "max": codec.Column("g", mx[k], None)}
        else:
            lv, mn, mx = v[:, last], mn.astype(np.int64), mx.astype(np.int64)
            for k, name in enumerate(names):
                got[name] = {name + SEP + "n": nc, name + SEP + "last": codec.Column(cols[name].kind, lv[k], None),
                             name + SEP + "sum": codec.Column("f", s[k], None),
                             name + SEP + "min": codec.Column("i", mn[k], None),
                             name + SEP + "max": codec.Column("i", mx[k], None)}
    return got


def compose(sids: np.ndarray, ts: np.ndarray, cols: dict[str, codec.Column], res: int) -> tuple:
    """Statistics rows (any order) -> statistics per (sid, bucket of ``res``); stats compose exactly
    (n, sum, inc, dt add; min/max of min/max; last of the last bucket that had a value)."""
    order = np.lexsort((ts, sids))
    sids, ts = sids[order], ts[order]
    starts, b = _segments(sids, ts, res)
    out: dict[str, codec.Column] = {}
    dense = _dense_compose(cols, order, starts) if len(starts) else {}
    for name, c in cols.items():
        got = dense.get(name)
        if got is not None:
            out[name] = got
            continue
        field, _, stat = name.rpartition(SEP)
        ncol = cols.get(field + SEP + "n")
        if c.kind == "j":
            vals = [c.values[i] for i in order.tolist()]
            valid = np.array([x is not None for x in vals], bool)
            li = _last_index(valid, starts)
            out[name] = codec.column([vals[i] if i >= 0 else None for i in li.tolist()])
            continue
        v = c.values[order]
        valid = (c.valid[order] if c.valid is not None else np.ones(len(v), bool))
        if ncol is not None and stat != "n":
            valid = valid & (ncol.values[order] > 0)
        if not len(starts):
            out[name] = codec.Column(c.kind, v[:0], None)
            continue
        if stat in ("n", "sum", "inc", "dt"):
            r = np.add.reduceat(np.where(valid, v, 0), starts)
            has = None
        elif stat == "min":
            r = np.minimum.reduceat(np.where(valid, v.astype(np.float64), np.inf), starts)
            has = np.isfinite(r)
            r = np.where(has, r, 0).astype(v.dtype)
        elif stat == "max":
            r = np.maximum.reduceat(np.where(valid, v.astype(np.float64), -np.inf), starts)
            has = np.isfinite(r)
            r = np.where(has, r, 0).astype(v.dtype)
        else:   # last
            li = _last_index(valid, starts)
            has = li >= 0
            r = v[np.maximum(li, 0)]
        if c.kind == "g":
            r = _f32(r)
        out[name] = codec.Column(c.kind, r, None if has is None or has.all() else has)
    return sids[starts], b[starts], out


def _dense_compose(cols: dict[str, codec.Column], order: np.ndarray, starts: np.ndarray) -> dict[str, codec.Column]:
    """``compose`` of the statistics columns that have a value in every row (no validity mask, and
    a count > 0 in every row): all columns of one statistic and kind at once, as rows of a 2-D
    array. Same values as the column-by-column path."""
    groups: dict[tuple[str, str], list[str]] = {}
    positive: dict[str, bool] = {}
    for name, c in cols.items():
        if c.kind == "j" or c.valid is not None:
            continue
        field, _, stat = name.rpartition(SEP)
        if stat != "n":
            ncol = cols.get(field + SEP + "n")
            if ncol is not None:
                ok = positive.get(field)
                if ok is None:
                    ok = positive[field] = ncol.valid is None and bool((ncol.values > 0).all())
                if not ok:
                    continue
        op = "add" if stat in ("n", "sum", "inc", "dt") else stat if stat in ("min", "max") else "last"
        groups.setdefault((op, c.kind), []).append(name)
    last = np.append(starts[1:], len(order)) - 1
    out: dict[str, codec.Column] = {}
    for (op, kind), names in groups.items():
        v = np.stack([cols[k].values for k in names])[:, order]
        has = None
        if op == "add":
            r = np.add.reduceat(v, starts, axis=1)
        elif op == "last":
            r = v[:, last]
        else:
            f = np.minimum if op == "min" else np.maximum
            r = f.reduceat(v.astype(np.float64, copy=False), starts, axis=1)
            has = np.isfinite(r)
            r = np.where(has, r, 0).astype(v.dtype)
        if kind == "g":
            r = _f32(r)
        full = has.all(axis=1) if has is not None else None
        for k, name in enumerate(names):
            out[name] = codec.Column(kind, r[k], None if full is None or full[k] else has[k])
    return out


def value_of(cols: dict[str, codec.Column], field: str, agg: str, counter: bool) -> tuple[np.ndarray, np.ndarray]:
    """(values float64, has value) of one field's statistics for an aggregation."""
    n = cols.get(field + SEP + "n")
    if n is None:
        return np.zeros(0), np.zeros(0, bool)
    cnt = n.values.astype(np.float64)
    has = cnt > 0

    def col(stat):
        c = cols.get(field + SEP + stat)
        if c is None or c.kind == "j":
            return None, np.zeros(len(cnt), bool)
        ok = has if c.valid is None else has & c.valid
        return c.values.astype(np.float64), ok

    if agg == "count":
        return cnt, has
    if counter:
        if agg in ("rate", "increase"):
            inc, _ = col("inc")
            dt, _ = col("dt")
            ok = dt > 0
            return (inc / np.where(ok, dt, 1) * 1000.0 if agg == "rate" else inc), ok
        stat = "last"
    else:
        if agg in ("rate", "increase"):
            raise ValueError(f"agg={agg} needs a counter field; {field!r} is not a counter")
        stat = "sum" if agg in ("avg", "sum") else agg
    v, ok = col(stat)
    if v is None:
        return np.zeros(len(cnt)), np.zeros(len(cnt), bool)
    if agg == "avg" and not counter:
        v = v / np.where(has, cnt, 1)
    return v, ok


# --------------------------------------------------------------------------- the engine
class SeriesEngine:
    """Owned by SQLiteStore; every method runs with the store's writer lock held except the
    read methods, which use a reader connection and the head lock."""

    def __init__(self, w: sqlite3.Connection, retention: Retention, measurement_of: dict[int, str],
                 grace_ms: int = 5 * MIN, stale_ms: int = 2 * HOUR):
        import threading
        self.w = w
        self.retention = retention
        self.grace_ms = grace_ms
        self.stale_ms = stale_ms
        #: group id -> measurement (for counter definitions); filled by the store
        self.measurement_of = measurement_of
        w.executescript(SCHEMA)
        st = dict(w.execute("SELECT name, value FROM seal_state"))
        self.hour_wm = st.get("hour", 0)
        self.day_wm = st.get("day", 0)
        #: group id -> hour -> Bucket of samples not sealed yet (sealing takes whole hours)
        self.head: dict[int, dict[int, Bucket]] = {}
        self.head_lock = threading.Lock()
        self._staged: dict[int, dict[int, list[tuple[int, int, dict]]]] = {}
        self._staged_tabs: dict[int, dict[int, list[tuple[list, int, dict, int]]]] = {}
        self._staged_lo, self._staged_hi = 1 << 62, 0
        self._log_rows: list[tuple] = []
        self.max_t = 0
        self.late = False
        self.merged = 0
        #: group -> (hour, {sid: {counter field: (t, value)}}) at the end of the newest sealed hour
        self._prev: dict[int, tuple[int, dict]] = {}
        #: group -> hour -> that hour's 1-hour statistics (sids, ts, columns), until its day is sealed
        self._hours: dict[int, dict[int, tuple]] = {}

    # ---------------------------------------------------------------- write path
    def staged(self) -> dict[int, dict[int, list[tuple[int, int, dict]]]]:
        """Group id -> hour -> [(sid, t, fields)] of the transaction in progress (the caller appends)."""
        return self._staged

    def staged_tables(self) -> dict[int, dict[int, list[tuple[list, int, dict, int]]]]:
        """Group id -> hour -> [(sids, t, {field: values}, rows)] of the transaction in progress."""
        return self._staged_tabs

    def stage_times(self, lo: int, hi: int) -> None:
        """Oldest and newest item time staged by a message."""
        if hi > self._staged_hi:
            self._staged_hi = hi
        if lo < self._staged_lo:
            self._staged_lo = lo

    def log_message(self, msg: wire.Message, max_t: int) -> tuple:
        """A head_log row: the payload as received, zstd-compressed (as agents send it, or here at
        level 1: ~6x smaller, which writes, checkpoints and deletes of the log pay for many times over)."""
        raw = bytes(msg.raw)
        shift = msg.shift_ms
        if not raw:   # made in-process (tests, tools): the items as they are, already corrected
            raw = wire.encode_durable(msg.kind, msg.agent, msg.epoch or "-", msg.seq or 0, 0,
                                      [wire.encode_item(it) for it in msg.items])
            shift = 0
        if raw[:4] != wire.ZSTD_FRAME:
            raw = wire.zstd(1).compress(raw)
        return (str(msg.topic), raw, shift, max_t)

    def write_log(self, rows: list[tuple]) -> None:
        if rows:
            self.w.executemany("INSERT INTO head_log(topic, payload, shift_ms, max_t) VALUES (?,?,?,?)", rows)

    def commit(self) -> None:
        """The transaction that staged rows committed: they join the head; buckets holding
        ``COMPACT_ROWS`` rows are transposed into column blocks while the rows are still warm."""
        if not self._staged and not self._staged_tabs:
            return
        lock, head = self.head_lock, self.head
        for staged, other in ((self._staged, "tabs"), (self._staged_tabs, "rows")):
            for gid, hours in staged.items():    # a bucket holding the other kind transposes it first
                hg = head.get(gid)
                for hour in hours if hg else ():
                    b = hg.get(hour)
                    if b is not None and getattr(b, other):
                        b.compact(lock)
        full: dict[int, Bucket] = {}
        with lock:
            for staged, tables in ((self._staged, False), (self._staged_tabs, True)):
                for gid, hours in staged.items():
                    hg = head.get(gid)
                    if hg is None:
                        hg = head[gid] = {}
                    for hour, got in hours.items():
                        b = hg.get(hour)
                        if b is None:
                            b = hg[hour] = Bucket()
                        if tables:
                            b.tabs += got
                            b.ntab += sum(x[3] for x in got)
                        else:
                            b.rows += got
                        if b.pending() >= COMPACT_ROWS:
                            full[id(b)] = b
            if self._staged_hi > self.max_t:
                self.max_t = self._staged_hi
            if self._staged_lo < self.hour_wm:
                self.late = True
        self.discard()
        for b in full.values():      # transposed while the samples are still in the CPU cache
            b.compact(lock)

    def discard(self) -> None:
        self._staged = {}
        self._staged_tabs = {}
        self._staged_lo, self._staged_hi = 1 << 62, 0

    def recover(self, series_of: Any) -> int:
        """Rebuild the head from head_log after a restart. ``series_of(measurement, device, tags)``
        -> (sid, gid). Returns the number of samples restored."""
        n = 0
        for msg, shift, sealed_below in head_log_messages(self.w):
            for it in msg.items:
                t = it["t"] - shift
                if t < sealed_below:
                    continue
                f = it["f"]
                if it["m"] in wire.TOPOLOGY_MEASUREMENTS:
                    continue
                sid, gid = series_of(it["m"], it["d"], it.get("tags") or {})
                self._staged.setdefault(gid, {}).setdefault(t - t % HOUR, []).append((sid, t, f))
                self.stage_times(t, t)
                n += 1
        self.commit()
        return n

    # ---------------------------------------------------------------- sealing
    def cutoff(self, now_ms: int) -> int:
        """Hours below this are sealed: the data (newest item time, at most now) has moved on by
        ``grace_ms``, or the hour is ``stale_ms`` old."""
        data = min(self.max_t, now_ms) - self.grace_ms
        c = max(data, now_ms - self.stale_ms)
        return min(c, now_ms - self.grace_ms) // HOUR * HOUR

    def due(self, now_ms: int) -> bool:
        return self.cutoff(now_ms) > self.hour_wm or self.late

    def _chunk(self, gid: int, res: int, start: int) -> tuple | None:
        r = self.w.execute("SELECT data FROM chunks WHERE grp=? AND res=? AND start_ms=?", (gid, res, start)).fetchone()
        return codec.decode(r[0], arrays=True) if r else None

    def _put(self, gid: int, res: int, start: int, end: int, sids, ts, cols) -> None:
        if not len(ts):
            self.w.execute("DELETE FROM chunks WHERE grp=? AND res=? AND start_ms=?", (gid, res, start))
            return
        blob = codec.encode(sids, ts, cols)
        self.w.execute("INSERT INTO chunks(grp, res, start_ms, end_ms, rows, data) VALUES (?,?,?,?,?,?) "
                       "ON CONFLICT(grp, res, start_ms) DO UPDATE SET end_ms=excluded.end_ms, rows=excluded.rows, "
                       "data=excluded.data", (gid, res, start, end, len(ts), blob))

    def _prev_for(self, gid: int, hour: int) -> dict:
        """sid -> counter field -> (t, value) of the newest raw row before ``hour``."""
        r = self.w.execute("SELECT start_ms, data FROM chunks WHERE grp=? AND res=0 AND start_ms < ? "
                           "ORDER BY start_ms DESC LIMIT 1", (gid, hour)).fetchone()
        if r is None:
            return {}
        cached = self._prev.get(gid)
        if cached and cached[0] == r[0]:
            return cached[1]
        sids, ts, cols = codec.decode(r[1], arrays=True)
        return self._ends(gid, sids, ts, cols)

    def _ends(self, gid: int, sids, ts, cols) -> dict:
        m = self.measurement_of.get(gid, "")
        out: dict[int, dict] = {}
        for name, c in cols.items():
            if c.kind != "i" or _counter_bits(m, name) is None:
                continue
            valid = c.valid if c.valid is not None else np.ones(len(ts), bool)
            vi = np.flatnonzero(valid)
            if not len(vi):
                continue
            sv = sids[vi]
            i = vi[np.flatnonzero(np.r_[sv[1:] != sv[:-1], True])]
            for sid, t, v in zip(sids[i].tolist(), ts[i].tolist(), c.values[i].tolist()):
                out.setdefault(sid, {})[name] = (t, v)
        return out

    def _seal_hour(self, gid: int, hour: int, bucket: Bucket) -> None:
        """Merge ``bucket`` into the group's raw chunk of ``hour`` and rebuild its 5-minute rollup
        chunk. Samples of one series and millisecond become one (later fields win); the merges
        with an already sealed chunk (late data) are counted here, those within one commit group by
        ``SQLiteStore.apply``."""
        sids, ts, cols = dedup(*concat_blocks(bucket.columns()))
        old = self._chunk(gid, RAW, hour)
        if old is not None:    # a backlog or a late agent: that hour was sealed before
            n = len(old[1]) + len(ts)
            sids, ts, cols = dedup(*concat_blocks([old, (sids, ts, cols)]))
            self.merged += n - len(ts)
        self._put(gid, RAW, hour, hour + HOUR, sids, ts, cols)
        prev = self._prev_for(gid, hour)
        m = self.measurement_of.get(gid, "")
        rs, rt, rc = rollup(m, sids, ts, cols, R5M, prev)
        self._put(gid, R5M, hour, hour + HOUR, rs, rt, rc)
        # the hour's 1-hour statistics, for its day's seal (composing them again at 1 h changes nothing)
        self._hours.setdefault(gid, {})[hour] = compose(rs, rt, rc, R1H)
        newest = self._prev.get(gid)
        if newest is None or newest[0] <= hour:
            ends = self._ends(gid, sids, ts, cols)
            self._prev[gid] = (hour, {**prev, **ends})

    def _seal_day(self, gid: int, day: int) -> None:
        """The day's 1-hour and 1-day rollup chunks of a group, from its 1-hour statistics per hour:
        kept from the hour seals when every 5-minute chunk of the day was sealed since the start,
        else composed from the 5-minute chunks."""
        hours = [h for (h,) in self.w.execute("SELECT start_ms FROM chunks WHERE grp=? AND res=? AND start_ms >= ? "
                                              "AND start_ms < ? ORDER BY start_ms", (gid, R5M, day, day + DAY))]
        kept = self._hours.get(gid, {})
        if all(h in kept for h in hours):
            parts = [kept[h] for h in hours]
        else:
            parts = [c for c in (self._chunk(gid, R5M, h) for h in hours) if c is not None]
        for h in range(day, day + DAY, HOUR):
            kept.pop(h, None)
        if not kept:
            self._hours.pop(gid, None)
        if not parts:
            return
        hs, ht, hc = compose(*concat_blocks(parts), R1H)
        self._put(gid, R1H, day, day + DAY, hs, ht, hc)
        ds, dts, dc = compose(hs, ht, hc, R1D)
        self._put(gid, R1D, day, day + DAY, ds, dts, dc)

    def seal(self, now_ms: int, rows_by_gid: dict[int, list] | None = None, cutoff: int | None = None) -> int:
        """Seal every head row below the cutoff (all of ``rows_by_gid`` when given: migration).
        Runs inside the caller's transaction. Returns the number of rows sealed."""
        cut = self.cutoff(now_ms) if cutoff is None else cutoff
        cut -= cut % HOUR
        take: dict[int, dict[int, Bucket]] = {}
        if rows_by_gid is None:
            with self.head_lock:
                for gid, hours in self.head.items():
                    hs = {h: rows for h, rows in hours.items() if h < cut}
                    if hs:
                        take[gid] = hs
            from_head = True
        else:
            for gid, rows in rows_by_gid.items():
                hs = take[gid] = {}
                for r in rows:
                    hour = r[1] - r[1] % HOUR
                    b = hs.get(hour)
                    if b is None:
                        b = hs[hour] = Bucket()
                    b.rows.append(r)
            from_head = False
        n = 0
        late_days: set[int] = set()
        gc_was = gc.isenabled()
        gc.disable()        # sealing allocates millions of short-lived objects and makes no cycles
        try:
            for gid, hours in take.items():
                for hour in sorted(hours):
                    self._seal_hour(gid, hour, hours[hour])
                    n += len(hours[hour])
                    if hour < self.day_wm:
                        late_days.add((gid, hour - hour % DAY))
        finally:
            if gc_was:
                gc.enable()
        new_day_wm = max(self.day_wm, cut - cut % DAY) if from_head else self.day_wm
        if new_day_wm > self.day_wm:
            for (gid,) in self.w.execute("SELECT DISTINCT grp FROM chunks WHERE res=? AND start_ms >= ? AND start_ms < ?",
                                         (R5M, self.day_wm - self.day_wm % DAY if self.day_wm else 0, new_day_wm)).fetchall():
                for (day,) in self.w.execute(
                        "SELECT DISTINCT start_ms - start_ms % ? FROM chunks WHERE grp=? AND res=? AND start_ms >= ? "
                        "AND start_ms < ?", (DAY, gid, R5M, self.day_wm, new_day_wm)).fetchall():
                    late_days.add((gid, day))
        for gid, day in sorted(late_days):
            if day < new_day_wm:
                self._seal_day(gid, day)
        if from_head:
            self.w.execute("DELETE FROM head_log WHERE max_t < ?", (cut,))
            self.w.execute("UPDATE head_log SET sealed_below=? WHERE sealed_below < ?", (cut, cut))
            self.w.executemany("INSERT INTO seal_state(name, value) VALUES (?,?) ON CONFLICT(name) DO UPDATE "
                               "SET value=excluded.value", (("hour", max(cut, self.hour_wm)), ("day", new_day_wm)))
            self._sealed = (cut, new_day_wm, take)
        return n

    def sealed(self) -> None:
        """The seal transaction committed: drop the sealed rows from the head."""
        cut, day_wm, take = self._sealed
        with self.head_lock:
            head = self.head
            for gid, hours in take.items():
                hg = head.get(gid)
                if hg is None:
                    continue
                for hour in hours:          # whole hours below the cut (rows of one hour share it)
                    hg.pop(hour, None)
                if not hg:
                    del head[gid]
            wm = max(cut, self.hour_wm)
            self.late = any(h < wm for hg in head.values() for h in hg)
        self.hour_wm = max(cut, self.hour_wm)
        self.day_wm = day_wm
        self._sealed = None

    def unsealed(self) -> None:
        """The seal transaction rolled back: caches may name chunks that do not exist."""
        self._prev.clear()
        self._hours.clear()
        self._sealed = None

    # ---------------------------------------------------------------- retention
    def expire(self, now_ms: int, batch: int = 500) -> dict[str, int]:
        """Delete chunks whose window ended before their level's retention. Returns counts per level."""
        out = {}
        for res in (RAW, R5M, R1H, R1D):
            keep = self.retention.keep_ms(res)
            if keep is None:
                continue
            total = 0
            while True:
                cur = self.w.execute("DELETE FROM chunks WHERE id IN (SELECT id FROM chunks WHERE res=? AND end_ms <= ? "
                                     "LIMIT ?)", (res, now_ms - keep, batch))
                total += cur.rowcount
                if cur.rowcount < batch:
                    break
            if total:
                out[LEVEL_NAMES[res]] = total
        return out

    # ---------------------------------------------------------------- reads
    def head_blocks(self, gid: int, sids: set[int] | None, start: int, end: int,
                    fields: set[str] | None = None) -> list[tuple]:
        """Unsealed samples of a group as column blocks (``select``), arrival order; same (sid, t)
        not merged yet."""
        with self.head_lock:
            hg = self.head.get(gid)
            if not hg:
                return []
            parts = [(list(b.blocks), list(b.rows), list(b.tabs)) for h, b in hg.items()
                     if h < end and h + HOUR > start]
        blocks = []
        for blks, rows, tabs in parts:
            blocks += pending_blocks(blks, rows, tabs)
        return select(blocks, sids, start, end, fields)

    def chunks(self, c: sqlite3.Connection, gid: int, res: int, start: int, end: int,
               fields: set[str] | None) -> Iterable[tuple]:
        """Decoded chunks of a group and level overlapping [start, end), oldest first."""
        for (blob,) in c.execute("SELECT data FROM chunks WHERE grp=? AND res=? AND start_ms < ? AND end_ms > ? "
                                 "ORDER BY start_ms", (gid, res, end, start)):
            yield codec.decode(blob, arrays=True, fields=fields)


def select(blocks: list[tuple], sids: set[int] | None, start: int, end: int, fields: set[str] | None) -> list[tuple]:
    """The rows of column blocks (sids, ts, columns) in [start, end), of ``sids`` only (None: all),
    with only the columns named in ``fields`` (None: all)."""
    out = []
    want = None if sids is None else np.fromiter(sids, np.int64, len(sids))
    for s_, t_, c_ in blocks:
        if fields is not None:
            c_ = {k: v for k, v in c_.items() if k in fields}
        keep = (t_ >= start) & (t_ < end)
        if want is not None:
            keep &= np.isin(s_, want)
        if keep.all():
            out.append((s_, t_, c_))
        elif keep.any():
            out.append((s_[keep], t_[keep], {k: codec.take(v, keep) for k, v in c_.items()}))
    return out


def head_log_messages(c: sqlite3.Connection) -> Iterable[tuple[wire.Message, int, int]]:
    """(message, shift_ms, sealed_below) of every head_log row, oldest first. Payloads are zstd
    frames (plain JSON in databases of before 2026-12-07: both read, as wire.decode does)."""
    for topic, payload, shift, below in c.execute("SELECT topic, payload, shift_ms, sealed_below FROM head_log "
                                                  "ORDER BY id"):
        try:
            msg = wire.decode(topic, payload, max_bytes=1 << 62)
        except wire.WireError as e:   # it was accepted once: keep going
            log.error("head_log: cannot decode a stored message of %s: %s", topic, e)
            continue
        yield msg, shift, below


def rows_to_columns(rows: list[tuple[int, int, dict]]) -> tuple[np.ndarray, np.ndarray, dict[str, codec.Column]]:
    """Head rows -> sorted (sids, ts, columns), later rows of the same (sid, t) merged in."""
    merged: dict[tuple[int, int], dict] = {}
    for sid, t, f in rows:
        k = (sid, t)
        p = merged.get(k)
        merged[k] = f if p is None else {**p, **{a: b for a, b in f.items() if b is not None}}
    keys = sorted(merged)
    return (np.array([k[0] for k in keys], np.int64), np.array([k[1] for k in keys], np.int64),
            _columns([merged[k] for k in keys]))


def concat_blocks(blocks: list[tuple]) -> tuple[np.ndarray, np.ndarray, dict[str, codec.Column]]:
    """[(sids, ts, columns)] -> one (sids, ts, columns); a block lacking a column has it missing."""
    if len(blocks) == 1:
        return blocks[0]
    kinds: dict[str, str] = {}
    for _, _, cols in blocks:
        for k, c in cols.items():
            kinds.setdefault(k, c.kind)
    lengths = [len(b[1]) for b in blocks]
    return (np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks]),
            {k: codec.concat([b[2].get(k) for b in blocks], lengths, kind) for k, kind in kinds.items()})


def dedup(sids: np.ndarray, ts: np.ndarray, cols: dict[str, codec.Column]) -> tuple:
    """Sort raw rows by (sid, t); rows of the same (sid, t) become one (later blocks win per field)."""
    order = np.lexsort((np.arange(len(ts)), ts, sids))
    sids, ts = sids[order], ts[order]
    cols = {k: codec.take(c, order) for k, c in cols.items()}
    if len(ts) < 2:
        return sids, ts, cols
    dup = (sids[1:] == sids[:-1]) & (ts[1:] == ts[:-1])
    if not dup.any():
        return sids, ts, cols
    rows = [(int(a), int(b), {}) for a, b in zip(sids.tolist(), ts.tolist())]
    for k, c in cols.items():
        for i, v in enumerate(codec.values(c)):
            if v is not None:
                rows[i][2][k] = v
    return rows_to_columns(rows)
