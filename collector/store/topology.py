"""Topology as state, not series: FDB, ARP, LLDP and interface-address entries kept as intervals.

The SNMP driver sends, every ``topology_interval_s``, one sample per table entry (measurements
``wire.TOPOLOGY_MEASUREMENTS``: ``fdb``, ``arp``, ``lldp``, ``ip_address``; field ``seen: 1``; the
entry in the tags). Stored as series, every MAC ever learned would be a series of its own. Here an
entry is one row per *interval* in ``topology_intervals``: (device, kind, entry key) with
``first_seen_ms``, ``last_seen_ms`` and the number of observations; that is also the history
("where was MAC X between t1 and t2", which ports it moved between, which MAC had an IP, which
neighbour was on a port), like netdisco's MAC/port history.

Entry key per kind (its identity; the other tags are attributes, the newest observation's win):

- ``fdb``: MAC, VLAN, port (ifIndex, else ifName): a MAC moving to another port is another entry;
- ``arp``: IP, MAC: an IP answered by another MAC is another entry;
- ``lldp``: local port (ifIndex, else local_port), remote chassis, remote port, remote name;
- ``ip_address``: IP, ifIndex.

MACs are stored normalised (``aa:bb:cc:dd:ee:ff``), IPs in ``ipaddress`` canonical form, so any
notation the devices use (``001a.2b3c.4d5e``, ``00-1A-..``) finds the same entry.

Gap rule (when a reappearing entry opens a new interval): each (device, kind) has an observation
period, the time between its successive topology collections, kept in ``topology_sources``
(samples less than ``OBS_WINDOW_MS`` apart are one collection; the estimate follows a shorter
period at once and a longer one at most 2x per collection, so one agent outage does not stretch
it). A sighting continues the entry's interval when it is at most ``GAP_FACTOR`` (3) x period
(at least ``MIN_GAP_MS``) after the interval's last sighting: one or two missed collections (a
walk that timed out) do not split it. Later, it opens a new interval and the history keeps the
time the entry was away. Before a period is known (first collection of a device) the gap is
``DEFAULT_GAP_MS`` (1 h). An agent outage longer than the gap splits intervals too: nothing was
observed meanwhile. Sightings that arrive late (older than what was stored) extend or open
intervals the same way.

Moves: a device holds a MAC once per VLAN (fdb) and an IP once (arp). When the same MAC/VLAN is
seen on another port (or the IP with another MAC) after the older interval's last sighting, the
older interval is *superseded* (``superseded_ms`` = that sighting): it is no longer current, and
if the entry comes back to the old port it opens a new interval, so "where was MAC X between t1
and t2" lists each stay on a port once, in order.

"Current" entries: intervals still open, i.e. not superseded and last seen within the gap of the
newest collection of their device and kind (so a switch whose agent went silent keeps its last
known table).

Retention: ``retention(conn, cutoff_ms)`` deletes intervals that ended before ``cutoff_ms``
(default horizon ``RETENTION_DAYS`` = 400 days).

Every statement here runs on the connection it is given: ``observe`` on the store's writer inside
its commit transaction (the intervals commit atomically with the rest of the group), the queries
on a reader. A database without the tables (older collector.db, read-only open) reads as empty.
"""
from __future__ import annotations

import ipaddress
import sqlite3
from typing import Any, Iterable

import orjson

from campus_sense.wire import TOPOLOGY_MEASUREMENTS

KINDS: tuple[str, ...] = tuple(TOPOLOGY_MEASUREMENTS)
#: a sighting continues an interval within GAP_FACTOR x the observation period of its device
GAP_FACTOR = 3
#: smallest gap, whatever the period
MIN_GAP_MS = 60_000
#: gap while the observation period of a device is not known yet (its first collection)
DEFAULT_GAP_MS = 3600_000
#: samples closer than this belong to the same collection (a driver stamps one table within ms)
OBS_WINDOW_MS = 10_000
#: default retention of intervals (store.retention.topology_days)
RETENTION_DAYS = 400
#: most rows a query answers
MAX_ROWS = 100_000

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS topology_intervals(
  id INTEGER PRIMARY KEY, device TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL,
  mac TEXT, ip TEXT, if_index TEXT, port TEXT, vlan TEXT, remote TEXT, tags TEXT NOT NULL,
  first_seen_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL, seen INTEGER NOT NULL,
  superseded_ms INTEGER)""",
    "CREATE INDEX IF NOT EXISTS topology_intervals_dev ON topology_intervals(device, kind, last_seen_ms)",
    "CREATE INDEX IF NOT EXISTS topology_intervals_kind ON topology_intervals(kind, last_seen_ms)",
    "CREATE INDEX IF NOT EXISTS topology_intervals_mac ON topology_intervals(mac, last_seen_ms) WHERE mac IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS topology_intervals_ip ON topology_intervals(ip, last_seen_ms) WHERE ip IS NOT NULL",
    # one row per (device, kind): newest collection and the estimated time between collections
    """CREATE TABLE IF NOT EXISTS topology_sources(
  device TEXT NOT NULL, kind TEXT NOT NULL, last_ms INTEGER NOT NULL, period_ms INTEGER,
  PRIMARY KEY(device, kind))""",
)

_COLS = ("id", "device", "kind", "mac", "ip", "if_index", "port", "vlan", "remote", "tags",
         "first_seen_ms", "last_seen_ms", "seen", "superseded_ms")
_SEL = ", ".join(_COLS)


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the tables (idempotent; plain statements, so it may run inside a transaction).
    A connection with ``managed_schema`` (PostgreSQL, store/postgres.py: ``?`` placeholders
    translated, tables from its migrations) has them already."""
    if getattr(conn, "managed_schema", False):
        return
    for stmt in SCHEMA:
        conn.execute(stmt)


# ---------------------------------------------------------------- normalisation
def norm_mac(v: Any) -> str | None:
    """'00:1A:2b:..', '001a.2b..', '00-1a-..' -> '00:1a:2b:3c:4d:5e'; None if not a MAC."""
    if not isinstance(v, str):
        return None
    h = "".join(ch for ch in v.lower() if ch in "0123456789abcdef")
    if len(h) != 12:
        return None
    return ":".join(h[i:i + 2] for i in range(0, 12, 2))


def norm_ip(v: Any) -> str | None:
    if v is None or v == "":
        return None
    try:
        return ipaddress.ip_address(str(v).split("%")[0]).compressed
    except ValueError:
        return str(v)


def _s(v: Any) -> str | None:
    return None if v is None or v == "" else str(v)


def entry(kind: str, tags: dict) -> tuple[str, dict[str, str | None]]:
    """(entry key, attribute columns) of one sample's tags."""
    mac = norm_mac(tags.get("mac"))
    if mac is None and _s(tags.get("mac")):
        mac = str(tags["mac"]).lower()
    ip = norm_ip(tags.get("ip"))
    idx = _s(tags.get("ifIndex"))
    if kind == "fdb":
        port = _s(tags.get("ifName"))
        vlan = _s(tags.get("vlan"))
        key = (mac, vlan, idx or port)
        remote = None
    elif kind == "arp":
        port = vlan = remote = None
        key = (ip, mac)
    elif kind == "lldp":
        port = _s(tags.get("local_port"))
        vlan = None
        rc, rp, rn = _s(tags.get("remote_chassis")), _s(tags.get("remote_port")), _s(tags.get("remote_name"))
        remote = rn or rc
        key = (idx or port, rc, rp, rn)
    else:   # ip_address
        port = vlan = remote = None
        key = (ip, idx)
    return (orjson.dumps(key).decode(),
            {"mac": mac, "ip": ip, "if_index": idx, "port": port, "vlan": vlan, "remote": remote})


def _gap(period_ms: int | None) -> int:
    return DEFAULT_GAP_MS if period_ms is None else max(MIN_GAP_MS, GAP_FACTOR * period_ms)


# ---------------------------------------------------------------- write path
def observe(conn: sqlite3.Connection, items: Iterable[dict]) -> int:
    """Record wire samples (``m`` in KINDS, ``d``, ``t``, ``tags``) as sightings; returns the
    number of intervals opened. Runs on the caller's connection and transaction."""
    by_src: dict[tuple[str, str], list[dict]] = {}
    for it in items:
        by_src.setdefault((it["d"], it["m"]), []).append(it)
    if not by_src:
        return 0
    ensure_schema(conn)
    opened = 0
    for (device, kind), its in by_src.items():
        opened += _observe(conn, device, kind, its)
    return opened


class _Iv:
    """One interval while a group is applied."""
    __slots__ = ("id", "key", "first", "last", "seen", "sup", "tags", "attrs", "ident", "dirty")

    def __init__(self, rid, key, first, last, seen, sup, tags, attrs, ident):
        self.id, self.key, self.first, self.last, self.seen, self.sup = rid, key, first, last, seen, sup
        self.tags, self.attrs, self.ident, self.dirty = tags, attrs, ident, rid is None


def _ident(kind: str, mac: str | None, ip: str | None, vlan: str | None) -> tuple | None:
    """What one device holds once: a MAC per VLAN (fdb), an IP (arp). A sighting of the same
    identity under another key ends (supersedes) the older interval."""
    if kind == "fdb":
        return (mac, vlan) if mac else None
    if kind == "arp":
        return (ip,) if ip else None
    return None


def _observe(conn: sqlite3.Connection, device: str, kind: str, its: list[dict]) -> int:
    its.sort(key=lambda it: it["t"])
    row = conn.execute("SELECT last_ms, period_ms FROM topology_sources WHERE device=? AND kind=?",
                       (device, kind)).fetchone()
    last, period = row if row else (None, None)
    # pass 1: the observation period as each sighting arrives, and so its gap
    gaps = []
    for it in its:
        t = it["t"]
        if last is None:
            last = t
        elif t - last >= OBS_WINDOW_MS:          # a new collection
            diff = t - last
            period = diff if period is None else min(diff, 2 * period)
            last = t
        elif t > last:                            # the same collection, a later sample
            last = t
        gaps.append(_gap(period))
    conn.execute("INSERT INTO topology_sources(device, kind, last_ms, period_ms) VALUES (?,?,?,?) "
                 "ON CONFLICT(device, kind) DO UPDATE SET last_ms=excluded.last_ms, period_ms=excluded.period_ms",
                 (device, kind, last, period))
    # pass 2: continue an interval of the same entry within the gap, else open one
    by_key: dict[str, list[_Iv]] = {}
    by_ident: dict[tuple, list[_Iv]] = {}
    for rid, key, first, lst, seen, sup, mac, ip, vlan in conn.execute(
            "SELECT id, key, first_seen_ms, last_seen_ms, seen, superseded_ms, mac, ip, vlan FROM topology_intervals "
            "WHERE device=? AND kind=? AND last_seen_ms >= ?", (device, kind, its[0]["t"] - max(gaps))):
        iv = _Iv(rid, key, first, lst, seen, sup, None, None, _ident(kind, mac, ip, vlan))
        by_key.setdefault(key, []).append(iv)
        if iv.ident is not None:
            by_ident.setdefault(iv.ident, []).append(iv)
    opened = 0
    for it, gap in zip(its, gaps):
        t = it["t"]
        tags = it.get("tags") or {}
        key, attrs = entry(kind, tags)
        hit = None
        for iv in by_key.get(key, ()):
            # a superseded interval is not continued by a later sighting (the entry came back: new interval)
            if iv.first - gap <= t <= iv.last + gap and (iv.sup is None or t < iv.sup) \
                    and (hit is None or iv.last > hit.last):
                hit = iv
        if hit is None:
            hit = _Iv(None, key, t, t, 1, None, orjson.dumps(tags, option=orjson.OPT_SORT_KEYS).decode(), attrs,
                      _ident(kind, attrs["mac"], attrs["ip"], attrs["vlan"]))
            by_key.setdefault(key, []).append(hit)
            if hit.ident is not None:
                by_ident.setdefault(hit.ident, []).append(hit)
            opened += 1
        elif t > hit.last:
            if t - hit.last >= OBS_WINDOW_MS:
                hit.seen += 1
            hit.last = t
            hit.tags = orjson.dumps(tags, option=orjson.OPT_SORT_KEYS).decode()   # newest attributes win
            hit.attrs = attrs
            hit.dirty = True
        elif t < hit.first:
            if hit.first - t >= OBS_WINDOW_MS:
                hit.seen += 1
            hit.first = t
            hit.dirty = True
        if hit.ident is not None:
            # the same MAC/VLAN (fdb) or IP (arp) seen elsewhere since its last collection: that one ended
            for iv in by_ident[hit.ident]:
                if iv is not hit and iv.sup is None and iv.last < t - OBS_WINDOW_MS and iv.last < hit.first:
                    iv.sup = t
                    iv.dirty = True
    upd, new = [], []
    for ivs in by_key.values():
        for iv in ivs:
            if iv.id is None:
                a = iv.attrs
                new.append((device, kind, iv.key, a["mac"], a["ip"], a["if_index"], a["port"], a["vlan"], a["remote"],
                            iv.tags, iv.first, iv.last, iv.seen, iv.sup))
            elif iv.dirty:
                a = iv.attrs or {}
                upd.append((iv.first, iv.last, iv.seen, iv.sup, iv.tags, a.get("mac"), a.get("ip"), a.get("if_index"),
                            a.get("port"), a.get("vlan"), a.get("remote"), iv.id))
    if upd:
        conn.executemany(
            "UPDATE topology_intervals SET first_seen_ms=?, last_seen_ms=?, seen=?, superseded_ms=?, "
            "tags=coalesce(?, tags), mac=coalesce(?, mac), ip=coalesce(?, ip), if_index=coalesce(?, if_index), "
            "port=coalesce(?, port), vlan=coalesce(?, vlan), remote=coalesce(?, remote) WHERE id=?", upd)
    if new:
        conn.executemany(
            "INSERT INTO topology_intervals(device, kind, key, mac, ip, if_index, port, vlan, remote, tags, "
            "first_seen_ms, last_seen_ms, seen, superseded_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", new)
    return opened


def retention(conn: sqlite3.Connection, cutoff_ms: int, chunk: int = 5000) -> int:
    """Delete intervals whose last sighting is older than ``cutoff_ms`` (and collection state of
    devices silent since then), in chunks; returns the number of intervals deleted."""
    total = 0
    try:
        for kind in KINDS:
            while True:
                n = conn.execute("DELETE FROM topology_intervals WHERE id IN (SELECT id FROM topology_intervals "
                                 "WHERE kind=? AND last_seen_ms < ? LIMIT ?)", (kind, cutoff_ms, chunk)).rowcount
                total += n
                if n < chunk:
                    break
        conn.execute("DELETE FROM topology_sources WHERE last_ms < ?", (cutoff_ms,))
    except sqlite3.OperationalError as e:
        if "no such table" not in str(e):
            raise
    return total


# ---------------------------------------------------------------- queries (reader connection)
def _rows(conn: sqlite3.Connection, sql: str, args: Iterable[Any]) -> list[tuple]:
    try:
        return conn.execute(sql, tuple(args)).fetchall()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):     # no topology recorded in this database yet
            return []
        raise


def _sources(conn: sqlite3.Connection, kind: str, device: str | None = None) -> dict[str, int]:
    """device -> oldest last_seen_ms of a still open interval (newest collection minus the gap)."""
    q = "SELECT device, last_ms, period_ms FROM topology_sources WHERE kind=?"
    args: list[Any] = [kind]
    if device is not None:
        q += " AND device=?"
        args.append(device)
    return {d: last - _gap(p) for d, last, p in _rows(conn, q, args)}


def _dict(row: tuple, open_from: dict[str, int]) -> dict:
    d = dict(zip(_COLS, row))
    d.pop("id")
    d["tags"] = orjson.loads(d["tags"])
    d["ifIndex"] = d.pop("if_index")
    d["observations"] = d.pop("seen")
    since = open_from.get(d["device"])
    d["open"] = since is not None and d["last_seen_ms"] >= since and d["superseded_ms"] is None
    return d


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"topology kind must be one of {', '.join(KINDS)}, not {kind!r}")


def current(conn: sqlite3.Connection, kind: str, device: str | None = None, since_ms: int | None = None,
            limit: int = MAX_ROWS) -> list[dict]:
    """Open intervals of ``kind`` (last seen within the gap of their device's newest collection
    and not superseded; optionally of one device, optionally last seen at or after ``since_ms``),
    ordered by device and first sighting."""
    _check_kind(kind)
    out: list[dict] = []
    srcs = _sources(conn, kind, device)
    for dev in sorted(srcs):
        lo = srcs[dev] if since_ms is None else max(srcs[dev], since_ms)
        for row in _rows(conn, f"SELECT {_SEL} FROM topology_intervals WHERE device=? AND kind=? "
                               "AND last_seen_ms >= ? AND superseded_ms IS NULL ORDER BY first_seen_ms, id LIMIT ?",
                         (dev, kind, lo, limit - len(out))):
            out.append(_dict(row, srcs))
        if len(out) >= limit:
            break
    return out


def history(conn: sqlite3.Connection, kind: str, device: str | None = None, start_ms: int | None = None,
            end_ms: int | None = None, mac: str | None = None, ip: str | None = None,
            limit: int = MAX_ROWS) -> list[dict]:
    """Intervals of ``kind`` overlapping [start_ms, end_ms) (seen at some time inside it),
    optionally of one device / MAC / IP, oldest first."""
    _check_kind(kind)
    q = f"SELECT {_SEL} FROM topology_intervals WHERE kind=? AND first_seen_ms < ? AND last_seen_ms >= ?"
    args: list[Any] = [kind, end_ms if end_ms is not None else 2**62, start_ms or 0]
    if device is not None:
        q += " AND device=?"
        args.append(device)
    if mac is not None:
        q += " AND mac=?"
        args.append(norm_mac(mac) or mac.lower())
    if ip is not None:
        q += " AND ip=?"
        args.append(norm_ip(ip))
    q += " ORDER BY first_seen_ms, id LIMIT ?"
    args.append(limit)
    rows = _rows(conn, q, args)
    srcs = _sources(conn, kind, device) if rows else {}
    return [_dict(r, srcs) for r in rows]
