"""SQLite persistence of the campus model, the asset registry and compliance history
(moved from collector/campus/store.py, which re-exports it).

Tables are prefixed ``campus_``, ``registry_`` and ``compliance_`` so they can
live in the collector's own SQLite file (``--db collector.db``) or, with ``store.kind: postgres``, in the
shared PostgreSQL database (``CampusStore(Pg(dsn))``). Every save is an
upsert keyed by id / asset tag: re-importing a file updates rows in place;
``prune=True`` also deletes rows the new import no longer contains.
"""
from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from collector.campus.model import (Asset, Building, CampusModel, Device, Floor, Port, Registry, Room, Site,
                                    UpsertStats)

from .sqldb import Pg, SqlDB

SCHEMA = """
CREATE TABLE IF NOT EXISTS campus_sites (id TEXT PRIMARY KEY, data TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS campus_buildings (id TEXT PRIMARY KEY, site TEXT, data TEXT NOT NULL,
    updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS campus_floors (id TEXT PRIMARY KEY, building TEXT, data TEXT NOT NULL,
    updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS campus_rooms (id TEXT PRIMARY KEY, building TEXT, type TEXT, data TEXT NOT NULL,
    updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS campus_devices (id TEXT PRIMARY KEY, data TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS campus_ports (device TEXT NOT NULL, port TEXT NOT NULL, data TEXT NOT NULL,
    updated_at REAL NOT NULL, PRIMARY KEY (device, port));
CREATE TABLE IF NOT EXISTS registry_assets (asset_tag TEXT PRIMARY KEY, mac TEXT, serial TEXT, assigned_ip TEXT,
    device_id TEXT, data TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS registry_assets_mac ON registry_assets(mac);
CREATE TABLE IF NOT EXISTS compliance_history (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL,
    kind TEXT NOT NULL, building TEXT, room TEXT, device TEXT, status TEXT NOT NULL, score REAL,
    passed INTEGER, failed INTEGER, unknown INTEGER, data TEXT);
CREATE INDEX IF NOT EXISTS compliance_history_q ON compliance_history(kind, building, room, time);
CREATE INDEX IF NOT EXISTS compliance_history_dev ON compliance_history(device, time);
-- when each MAC was last discovered (FDB/ARP/facts/watch): live topology is only kept for minutes,
-- the inventory's "missing for N days" needs days
CREATE TABLE IF NOT EXISTS inventory_seen (mac TEXT PRIMARY KEY, ip TEXT, building TEXT, source TEXT,
    last_seen REAL NOT NULL);
"""

_TABLES = {
    "sites": ("campus_sites", ("id",), Site),
    "buildings": ("campus_buildings", ("id",), Building),
    "floors": ("campus_floors", ("id",), Floor),
    "rooms": ("campus_rooms", ("id",), Room),
    "devices": ("campus_devices", ("id",), Device),
    "ports": ("campus_ports", ("device", "port"), Port),
}


def _extra_columns(name: str, obj: Any) -> dict[str, Any]:
    if name == "buildings":
        return {"site": obj.site}
    if name == "floors":
        return {"building": obj.building}
    if name == "rooms":
        return {"building": obj.building, "type": obj.type}
    return {}


class CampusStore:
    def __init__(self, path: "str | Path | Pg"):
        """``path``: a SQLite file, or ``Pg(dsn)``: the PostgreSQL database several collectors share
        (one connection, tables from pg_migrations/0002; store/sqldb.py translates the SQL)."""
        self._pg = SqlDB(path) if isinstance(path, Pg) else None
        self.path = str(path)
        if self._pg is None:
            with self._conn() as c:
                c.executescript(SCHEMA)

    @contextmanager
    def _conn(self) -> Iterator[Any]:
        if self._pg is not None:
            with self._pg.tx() as db:
                yield db
            return
        c = sqlite3.connect(self.path, timeout=30)
        try:
            c.execute("PRAGMA journal_mode=WAL")
            with c:
                yield c
        finally:
            c.close()

    # ------------------------------------------------------------------ campus model
    def save_campus(self, model: CampusModel, prune: bool = False) -> dict[str, UpsertStats]:
        """Upsert every object. ``prune``: also delete stored sites/buildings/floors/rooms/devices/
        ports missing from ``model`` -- per kind, and only for kinds ``model`` has at least one of."""
        now = time.time()
        stats: dict[str, UpsertStats] = {}
        with self._conn() as c:
            for name, (table, keys, _cls) in _TABLES.items():
                st = UpsertStats()
                objs = getattr(model, name)
                existing = {tuple(r[:-1]): r[-1] for r in
                            c.execute(f"SELECT {', '.join(keys)}, data FROM {table}")}
                for obj in objs.values():
                    data = obj.model_dump_json()
                    k = tuple(getattr(obj, kk) for kk in keys)
                    if k not in existing:
                        st.added.append("/".join(k))
                    elif existing[k] != data:
                        st.updated.append("/".join(k))
                    else:
                        st.unchanged.append("/".join(k))
                        continue
                    extra_cols = _extra_columns(name, obj)
                    cols = list(keys) + list(extra_cols) + ["data", "updated_at"]
                    vals = list(k) + list(extra_cols.values()) + [data, now]
                    upd = ", ".join(f"{col}=excluded.{col}" for col in cols if col not in keys)
                    c.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                              f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {upd}", vals)
                if prune and objs:      # a model without e.g. ports does not wipe the stored ports
                    current = {tuple(getattr(o, kk) for kk in keys) for o in objs.values()}
                    for k in existing:
                        if k not in current:
                            where = " AND ".join(f"{kk}=?" for kk in keys)
                            c.execute(f"DELETE FROM {table} WHERE {where}", k)
                            st.removed.append("/".join(k))
                stats[name] = st
        return stats

    def load_campus(self) -> CampusModel:
        m = CampusModel()
        with self._conn() as c:
            for name, (table, keys, cls) in _TABLES.items():
                store = getattr(m, name)
                for (data,) in c.execute(f"SELECT data FROM {table} ORDER BY {', '.join(keys)}"):
                    obj = cls.model_validate_json(data)
                    store[obj.key if name == "ports" else obj.id] = obj
        return m

    def fingerprint(self) -> tuple:
        """Changes whenever a save (by any process sharing the database) added, updated or removed a
        campus or registry row: (rows, newest update) per table. Cheap enough to ask every few seconds."""
        tables = [t for t, _k, _c in _TABLES.values()] + ["registry_assets"]
        sql = " UNION ALL ".join(f"SELECT '{t}', count(*), max(updated_at) FROM {t}" for t in tables)
        with self._conn() as c:
            return tuple(tuple(r) for r in c.execute(sql))

    # ------------------------------------------------------------------ registry
    def save_registry(self, registry: Registry | list[Asset], prune: bool = False) -> UpsertStats:
        assets = list(registry.assets.values()) if isinstance(registry, Registry) else list(registry)
        now = time.time()
        st = UpsertStats()
        with self._conn() as c:
            existing = dict(c.execute("SELECT asset_tag, data FROM registry_assets"))
            for a in assets:
                data = a.model_dump_json()
                if a.asset_tag not in existing:
                    st.added.append(a.asset_tag)
                elif existing[a.asset_tag] != data:
                    st.updated.append(a.asset_tag)
                else:
                    st.unchanged.append(a.asset_tag)
                    continue
                c.execute("INSERT INTO registry_assets (asset_tag, mac, serial, assigned_ip, device_id, data, "
                          "created_at, updated_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (asset_tag) DO UPDATE SET "
                          "mac=excluded.mac, serial=excluded.serial, assigned_ip=excluded.assigned_ip, "
                          "device_id=excluded.device_id, data=excluded.data, updated_at=excluded.updated_at",
                          (a.asset_tag, a.mac, a.serial, a.assigned_ip, a.device_id, data, now, now))
            if prune:
                tags = {a.asset_tag for a in assets}
                for t in existing:
                    if t not in tags:
                        c.execute("DELETE FROM registry_assets WHERE asset_tag=?", (t,))
                        st.removed.append(t)
        return st

    def load_registry(self) -> Registry:
        reg = Registry()
        with self._conn() as c:
            for (data,) in c.execute("SELECT data FROM registry_assets ORDER BY asset_tag"):
                a = Asset.model_validate_json(data)
                reg.assets[a.asset_tag] = a
        return reg

    # ------------------------------------------------------------------ history
    def remember_seen(self, rows: list[tuple[str, str | None, str | None, str | None, float]],
                      forget_before: float | None = None) -> int:
        """Upsert (mac, ip, building, source, last_seen); a row only moves forward in time.
        ``forget_before``: delete rows last seen before this (keeps the table bounded)."""
        with self._conn() as c:
            c.executemany(
                "INSERT INTO inventory_seen(mac, ip, building, source, last_seen) VALUES (?,?,?,?,?) "
                "ON CONFLICT(mac) DO UPDATE SET ip=COALESCE(excluded.ip, inventory_seen.ip), "
                "building=COALESCE(excluded.building, inventory_seen.building), source=excluded.source, "
                "last_seen=excluded.last_seen "
                "WHERE excluded.last_seen > inventory_seen.last_seen", rows)
            if forget_before is not None:
                c.execute("DELETE FROM inventory_seen WHERE last_seen < ?", (forget_before,))
        return len(rows)

    def seen(self, since: float | None = None) -> list[dict[str, Any]]:
        """Remembered MACs (last seen at or after ``since``); [] on a read-only DB without the table."""
        if getattr(self, "_pg", None) is not None:     # (compliance/cli.py calls this on a path-only object)
            rows = self._pg.execute("SELECT mac, ip, building, source, last_seen FROM inventory_seen WHERE "
                                    "last_seen >= ?", (since if since is not None else float("-inf"),)).fetchall()
            return [{"mac": m, "ip": ip, "building": b, "source": src, "last_seen": t} for m, ip, b, src, t in rows]
        try:
            c = sqlite3.connect(f"file:{Path(self.path).resolve()}?mode=ro", uri=True, timeout=30)
        except sqlite3.Error:
            return []
        try:
            rows = c.execute("SELECT mac, ip, building, source, last_seen FROM inventory_seen WHERE last_seen >= ?",
                             (since if since is not None else float("-inf"),)).fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            c.close()
        return [{"mac": m, "ip": ip, "building": b, "source": src, "last_seen": t} for m, ip, b, src, t in rows]

    def record_report(self, report: dict[str, Any]) -> int:
        """Append the campus, per-building, per-room and per-device status/score of a
        coverage/compliance report (collector.compliance.report.build_*_report). Returns rows written."""
        from collector.compliance.results import summarize

        t = report.get("generated_at_epoch") or time.time()
        kind = report["kind"]
        rows = []

        def row(b, r, d, s, failed=None):
            rows.append((t, kind, b, r, d, s.get("status", "unknown"), s.get("score"), s.get("pass"),
                         s.get("fail"), s.get("unknown"), json.dumps(failed) if failed else None))

        if not report.get("building"):     # a building-filtered report says nothing campus-wide
            row(None, None, None, report.get("summary", {}))
        per_device: dict[str, list[dict]] = {}
        for b in report.get("buildings", []):
            row(b["id"], None, None, b.get("summary", {}))
            checks = list(b.get("checks", []))
            for r in b.get("rooms", []):
                checks += r.get("checks", [])
                row(b["id"], r["id"], None, r,
                    [c["check"] for c in r.get("checks", []) if c.get("status") == "fail"])
            for c in checks:
                if c.get("device"):
                    per_device.setdefault(c["device"], []).append(c)
        for dev, checks in sorted(per_device.items()):
            row(checks[0].get("building"), None, dev, summarize(checks),
                [c["check"] for c in checks if c.get("status") == "fail"])
        with self._conn() as c:
            c.executemany("INSERT INTO compliance_history (time, kind, building, room, device, status, score, "
                          "passed, failed, unknown, data) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
        return len(rows)

    def history(self, kind: str | None, building: str | None = None, room: str | None = None,
                device: str | None = None, since: float | None = None, limit: int = 500) -> list[dict[str, Any]]:
        """Status/score over time, oldest first. With ``device``: that device's rows (any
        building). Otherwise ``building=None`` -> campus-wide rows, ``room=None`` -> building rows.
        ``kind=None``: coverage and compliance rows together (each row has its kind)."""
        q = "SELECT time, kind, status, score, passed, failed, unknown, data FROM compliance_history WHERE 1=1"
        args: list[Any] = []
        if kind is not None:
            q += " AND kind=?"
            args.append(kind)
        if device is not None:
            q += " AND device=?"
            args.append(device)
        else:
            q += " AND device IS NULL"
            q += " AND building IS ?" if building is None else " AND building=?"
            args.append(building)
            q += " AND room IS ?" if room is None else " AND room=?"
            args.append(room)
        if since is not None:
            q += " AND time>=?"
            args.append(since)
        q += " ORDER BY time DESC, id DESC LIMIT ?"
        args.append(limit)
        with self._conn() as c:
            rows = list(c.execute(q, args))
        return [{"time": r[0], "kind": r[1], "status": r[2], "score": r[3], "pass": r[4], "fail": r[5],
                 "unknown": r[6], "failed_checks": json.loads(r[7]) if r[7] else []} for r in reversed(rows)]
