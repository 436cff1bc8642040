"""SQLite or PostgreSQL persistence for alerts, their history, liveness and silences (the alerting core's store;
all alert SQL lives here, see collector/alertcore/README.md).

Own tables (``alerts``, ``alert_history``, ``alert_silences``) in any sqlite3
database path (the collector's database, a separate file, or ``:memory:``) or, given ``Pg(dsn)``, in the
shared PostgreSQL database (store/sqldb.py; tables from pg_migrations/0002), where several collectors
read and write the same alerts.
At most one active (pending or firing) alert per fingerprint is guaranteed by
a partial UNIQUE index, so neither concurrent writers nor a restarted
collector can duplicate an alert. Every change goes through one transaction
that updates the alert and appends its ``alert_history`` row.
"""
from __future__ import annotations

import csv
import json
from typing import Any, Callable, TextIO

from collector.alertcore.labels import Matcher, match_all, parse_matchers
from collector.alertcore.model import ACTIVE, ALERT_COLUMNS, Alert, AlertError, HistoryEntry, Silence

from .sqldb import Pg, SqlDB

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  fingerprint TEXT NOT NULL,
  rule TEXT NOT NULL,
  kind TEXT NOT NULL,
  subject TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
  severity TEXT NOT NULL,
  labels TEXT NOT NULL,
  summary TEXT NOT NULL DEFAULT '',
  value REAL,
  started_ms INTEGER NOT NULL,
  fired_ms INTEGER,
  resolved_ms INTEGER,
  updated_ms INTEGER NOT NULL,
  acked_by TEXT, acked_ms INTEGER, ack_comment TEXT, ack_expires_ms INTEGER,
  assignee TEXT,
  escalated_ms INTEGER,
  escalation_since_ms INTEGER,
  flapping INTEGER NOT NULL DEFAULT 0,
  suppressed TEXT,
  count INTEGER NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_active_fingerprint ON alerts(fingerprint) WHERE state != 'resolved';
CREATE INDEX IF NOT EXISTS alerts_state ON alerts(state, id);
CREATE INDEX IF NOT EXISTS alerts_started ON alerts(started_ms);
CREATE INDEX IF NOT EXISTS alerts_fingerprint ON alerts(fingerprint, id);   -- replay: newest alert per fingerprint
CREATE TABLE IF NOT EXISTS alert_history(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  alert_id INTEGER NOT NULL REFERENCES alerts(id),
  t_ms INTEGER NOT NULL,
  action TEXT NOT NULL,
  actor TEXT,
  detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS alert_history_alert ON alert_history(alert_id, id);
CREATE TABLE IF NOT EXISTS alert_liveness(
  kind TEXT NOT NULL,
  key TEXT NOT NULL,
  t_ms INTEGER NOT NULL,
  extra TEXT,
  site TEXT,
  PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS alert_silences(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  matchers TEXT NOT NULL,
  starts_ms INTEGER NOT NULL,
  ends_ms INTEGER NOT NULL,
  created_by TEXT NOT NULL,
  comment TEXT NOT NULL DEFAULT '',
  created_ms INTEGER NOT NULL,
  expired_ms INTEGER,
  expired_by TEXT
);
CREATE TABLE IF NOT EXISTS alert_maintenance(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL UNIQUE,
  matchers TEXT NOT NULL,
  schedule TEXT NOT NULL,
  collect INTEGER NOT NULL DEFAULT 1,
  comment TEXT NOT NULL DEFAULT '',
  created_by TEXT NOT NULL,
  created_ms INTEGER NOT NULL
);
"""

_UPDATABLE = frozenset(ALERT_COLUMNS) - {"id", "fingerprint", "rule", "kind", "subject", "started_ms"}


class AlertStore:
    """Thread-safe (one connection, one lock); safe across processes through SQLite locking or
    PostgreSQL transactions (rows changed in a transaction are read ``FOR UPDATE`` there)."""

    #: True when other collectors write the same alerts (PostgreSQL): the engine re-reads them
    shared = False

    def __init__(self, path: "str | Pg" = ":memory:"):
        self._db = SqlDB(path)
        self.path = self._db.path
        self.shared = self._db.pg
        self._lock = self._db.lock
        self._db.script(SCHEMA)
        if not self._db.pg and "site" not in {r[1] for r in self._db.execute("PRAGMA table_info(alert_liveness)")}:
            self._db.execute("ALTER TABLE alert_liveness ADD COLUMN site TEXT")   # pg_migrations/0005 on PostgreSQL

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def relax_durability(self) -> None:
        """WAL + ``synchronous=NORMAL``: a commit no longer waits for fsync (an OS crash may lose the
        last alert transitions)."""
        if not self._db.pg:
            self._db.execute("PRAGMA synchronous=NORMAL")

    def _tx(self):
        return self._db.tx()

    # ------------------------------------------------------------ alerts
    def _get(self, cur, alert_id: int, lock: bool = False) -> Alert | None:
        row = cur.execute(f"SELECT {','.join(ALERT_COLUMNS)} FROM alerts WHERE id=?"
                          + (self._db.lock_for_update if lock else ""), (alert_id,)).fetchone()
        return Alert.from_row(row) if row else None

    def get(self, alert_id: int) -> Alert | None:
        with self._lock:
            return self._get(self._db, alert_id)

    def active_by_fingerprint(self, fingerprint: str) -> Alert | None:
        with self._lock:
            row = self._db.execute(f"SELECT {','.join(ALERT_COLUMNS)} FROM alerts WHERE fingerprint=? "
                                   "AND state != 'resolved'", (fingerprint,)).fetchone()
        return Alert.from_row(row) if row else None

    def open_alert(self, *, fingerprint: str, rule: str, kind: str, subject: dict, state: str, severity: str,
                   labels: dict, summary: str, value: float | None, t_ms: int,
                   detail: dict | None = None) -> tuple[Alert, bool]:
        """Return the active alert for ``fingerprint``, creating it if there is none: (alert, created)."""
        fired = t_ms if state == "firing" else None
        for _attempt in range(3):
            try:
                with self._tx() as cur:
                    row = cur.execute(f"SELECT {','.join(ALERT_COLUMNS)} FROM alerts WHERE fingerprint=? "
                                      "AND state != 'resolved'", (fingerprint,)).fetchone()
                    if row:
                        return Alert.from_row(row), False
                    aid = cur.insert(
                        "INSERT INTO alerts(fingerprint, rule, kind, subject, state, severity, labels, summary, value,"
                        " started_ms, fired_ms, updated_ms, escalation_since_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (fingerprint, rule, kind, json.dumps(subject, sort_keys=True), state, severity,
                         json.dumps(labels, sort_keys=True), summary, _num(value), t_ms, fired, t_ms, fired))
                    cur.execute("INSERT INTO alert_history(alert_id, t_ms, action, actor, detail) VALUES (?,?,?,?,?)",
                                (aid, t_ms, state, None, json.dumps({"severity": severity, "value": _num(value),
                                                                     **(detail or {})})))
                    return self._get(cur, aid), True  # type: ignore[return-value]
            except self._db.IntegrityError:
                continue  # another writer inserted the same fingerprint between our SELECT and INSERT
        raise RuntimeError(f"could not open alert for fingerprint {fingerprint}")

    def update(self, alert_id: int, t_ms: int, action: str, actor: str | None = None,
               detail: dict | None = None, *, require_active: bool = False, expect: dict | None = None,
               **fields: Any) -> Alert:
        """Apply ``fields`` to the alert and append one history row, in one transaction. ``expect``:
        column -> value the alert must still have (else AlertError, nothing changed): a conditional
        change when several collectors share the store."""
        bad = set(fields) - _UPDATABLE
        if bad:
            raise ValueError(f"cannot update {sorted(bad)}")
        with self._tx() as cur:
            a = self._get(cur, alert_id, lock=True)
            if a is None:
                raise AlertError(f"alert {alert_id} does not exist")
            if require_active and not a.active:
                raise AlertError(f"alert {alert_id} is {a.state}")
            if expect and any(getattr(a, k) != v for k, v in expect.items()):
                raise AlertError(f"alert {alert_id} changed meanwhile")
            fields["updated_ms"] = max(t_ms, a.updated_ms)
            if "labels" in fields:
                fields["labels"] = json.dumps(fields["labels"], sort_keys=True)
            if "value" in fields:
                fields["value"] = _num(fields["value"])
            if "flapping" in fields:
                fields["flapping"] = int(bool(fields["flapping"]))
            cols = ", ".join(f"{k}=?" for k in fields)
            cur.execute(f"UPDATE alerts SET {cols} WHERE id=?", (*fields.values(), alert_id))
            cur.execute("INSERT INTO alert_history(alert_id, t_ms, action, actor, detail) VALUES (?,?,?,?,?)",
                        (alert_id, t_ms, action, actor, json.dumps(detail or {}, sort_keys=True, default=str)))
            return self._get(cur, alert_id)  # type: ignore[return-value]

    def set_fields(self, alert_id: int, **fields: Any) -> None:
        """Update bookkeeping fields (count, value) without a history row."""
        if set(fields) - _UPDATABLE:
            raise ValueError(f"cannot update {sorted(set(fields) - _UPDATABLE)}")
        with self._tx() as cur:
            cols = ", ".join(f"{k}=?" for k in fields)
            cur.execute(f"UPDATE alerts SET {cols} WHERE id=?", (*fields.values(), alert_id))

    def active(self) -> list[Alert]:
        return self.query({"state": list(ACTIVE)})

    def query(self, flt: dict | None = None) -> list[Alert]:
        """Filter keys: state ('active' default, 'all', a state or list), severity, rule, kind, fingerprint,
        device/site/building/room/type/agent (labels), acked (bool), assignee, suppressed (bool),
        flapping (bool), since_ms/until_ms (started), limit, matchers (label matcher list)."""
        flt = dict(flt or {})
        where, args = [], []
        state = flt.pop("state", "active")
        if state == "active":
            state = list(ACTIVE)
        if state not in (None, "all"):
            states = [state] if isinstance(state, str) else list(state)
            where.append(f"state IN ({','.join('?' * len(states))})")
            args += states
        for col in ("severity", "rule", "kind", "fingerprint", "assignee"):
            v = flt.pop(col, None)
            if v is not None:
                vs = [v] if isinstance(v, str) else list(v)
                where.append(f"{col} IN ({','.join('?' * len(vs))})")
                args += vs
        for lab in ("device", "site", "building", "room", "type", "agent"):
            v = flt.pop(lab, None)
            if v is not None:
                where.append(f"json_extract(labels, '$.{lab}') = ?")
                args.append(v)
        for col, key in (("acked_by", "acked"), ("suppressed", "suppressed")):
            v = flt.pop(key, None)
            if v is not None:
                where.append(f"{col} IS {'NOT ' if v else ''}NULL")
        v = flt.pop("flapping", None)
        if v is not None:
            where.append("flapping = ?")
            args.append(int(bool(v)))
        if (v := flt.pop("since_ms", None)) is not None:
            where.append("started_ms >= ?")
            args.append(v)
        if (v := flt.pop("until_ms", None)) is not None:
            where.append("started_ms < ?")
            args.append(v)
        limit = flt.pop("limit", None)
        matchers = parse_matchers(flt.pop("matchers", None))
        if flt:
            raise ValueError(f"unknown alert filter keys: {sorted(flt)}")
        sql = f"SELECT {','.join(ALERT_COLUMNS)} FROM alerts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit and not matchers:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        out = [Alert.from_row(r) for r in rows]
        if matchers:
            out = [a for a in out if match_all(matchers, a.match_labels())]
            if limit:
                out = out[:int(limit)]
        return out

    def history(self, alert_id: int | None = None, since_ms: int | None = None) -> list[HistoryEntry]:
        sql, args = "SELECT id, alert_id, t_ms, action, actor, detail FROM alert_history", []
        where = []
        if alert_id is not None:
            where.append("alert_id = ?")
            args.append(alert_id)
        if since_ms is not None:
            where.append("t_ms >= ?")
            args.append(since_ms)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id"
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [HistoryEntry(r[0], r[1], r[2], r[3], r[4], json.loads(r[5] or "{}")) for r in rows]

    def history_after(self, after_id: int, limit: int = 1000) -> list[HistoryEntry]:
        """History rows with an id above ``after_id``, oldest first: every collector's live stream
        follows the shared table with it (collector/alertcore/hub.py ``SharedFeed``)."""
        with self._lock:
            rows = self._db.execute("SELECT id, alert_id, t_ms, action, actor, detail FROM alert_history "
                                    "WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)).fetchall()
        return [HistoryEntry(r[0], r[1], r[2], r[3], r[4], json.loads(r[5] or "{}")) for r in rows]

    def last_history_id(self) -> int:
        with self._lock:
            return self._db.execute("SELECT max(id) FROM alert_history").fetchone()[0] or 0

    # ------------------------------------------------------------ liveness (last seen), for restarts
    def save_liveness(self, rows: list[tuple[str, str, int, str | None, str | None]]) -> None:
        """Upsert (kind, key, t_ms, extra, site) rows: kind device / device_m / agent / standby; site: the
        device's or agent's site (a collector taking a partition over loads its sites' rows). A last-seen
        time only moves forward (several collectors share the table: one that did not see a device
        lately must not put its time back); ``standby`` (a flag, not a time) is overwritten."""
        if not rows:
            return
        with self._tx() as cur:
            cur.executemany("INSERT INTO alert_liveness(kind, key, t_ms, extra, site) VALUES (?,?,?,?,?) "
                            "ON CONFLICT(kind, key) DO UPDATE SET t_ms=excluded.t_ms, extra=excluded.extra, "
                            "site=COALESCE(excluded.site, alert_liveness.site) "
                            "WHERE excluded.kind = 'standby' OR excluded.t_ms >= alert_liveness.t_ms", rows)

    def load_liveness(self) -> list[tuple[str, str, int, str | None, str | None]]:
        """Every (kind, key, t_ms, extra, site) row."""
        with self._lock:
            return self._db.execute("SELECT kind, key, t_ms, extra, site FROM alert_liveness").fetchall()

    # ------------------------------------------------------------ silences
    def silence_create(self, matchers: list[Matcher], starts_ms: int, ends_ms: int, created_by: str,
                       comment: str, created_ms: int) -> Silence:
        with self._tx() as cur:
            sid = cur.insert("INSERT INTO alert_silences(matchers, starts_ms, ends_ms, created_by, comment, created_ms)"
                             " VALUES (?,?,?,?,?,?)", (json.dumps([m.to_dict() for m in matchers]), starts_ms, ends_ms,
                                                       created_by, comment, created_ms))
        return Silence(sid, list(matchers), starts_ms, ends_ms, created_by, comment, created_ms)  # type: ignore

    def silence_expire(self, silence_id: int, t_ms: int, user: str) -> Silence:
        with self._tx() as cur:
            n = cur.execute("UPDATE alert_silences SET expired_ms=?, expired_by=? WHERE id=? AND expired_ms IS NULL",
                            (t_ms, user, silence_id)).rowcount
            if not n:
                exists = cur.execute("SELECT 1 FROM alert_silences WHERE id=?", (silence_id,)).fetchone()
                raise AlertError(f"silence {silence_id} {'is already expired' if exists else 'does not exist'}")
        return next(s for s in self.silences() if s.id == silence_id)

    def silences(self, active_at: int | None = None) -> list[Silence]:
        with self._lock:
            rows = self._db.execute("SELECT id, matchers, starts_ms, ends_ms, created_by, comment, created_ms, "
                                    "expired_ms, expired_by FROM alert_silences ORDER BY id").fetchall()
        out = [Silence(r[0], parse_matchers(json.loads(r[1])), *r[2:]) for r in rows]
        if active_at is not None:
            out = [s for s in out if s.active_at(active_at)]
        return out


    # ------------------------------------------------------------ maintenance windows (API-made)
    _MW_COLS = ("id", "name", "matchers", "schedule", "collect", "comment", "created_by", "created_ms")

    def _mw(self, r: tuple) -> dict:
        d = dict(zip(self._MW_COLS, r))
        d["matchers"] = json.loads(d["matchers"])
        d["schedule"] = json.loads(d["schedule"])
        d["collect"] = bool(d["collect"])
        return d

    def maintenance_create(self, name: str, matchers: list[str], schedule: Any, collect: bool, comment: str,
                           created_by: str, created_ms: int) -> dict:
        """Persist a recurring maintenance window (``schedule``: a calendar name or an inline calendar);
        raises AlertError when the name is taken."""
        with self._tx() as cur:
            if cur.execute("SELECT 1 FROM alert_maintenance WHERE name=?", (name,)).fetchone():
                raise AlertError(f"maintenance window {name!r} already exists")
            cur.execute("INSERT INTO alert_maintenance(name, matchers, schedule, collect, comment, created_by,"
                        " created_ms) VALUES (?,?,?,?,?,?,?)",
                        (name, json.dumps(list(matchers)), json.dumps(schedule, sort_keys=True, default=str),
                         int(bool(collect)), comment, created_by, created_ms))
        return self.maintenance(name)  # type: ignore[return-value]

    def maintenance(self, name: str) -> dict | None:
        with self._lock:
            r = self._db.execute(f"SELECT {', '.join(self._MW_COLS)} FROM alert_maintenance WHERE name=?",
                                 (name,)).fetchone()
        return self._mw(r) if r else None

    def maintenance_list(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(self._MW_COLS)} FROM alert_maintenance ORDER BY id").fetchall()
        return [self._mw(r) for r in rows]

    def maintenance_delete(self, name: str) -> dict:
        """Delete a window; returns what it was. Raises AlertError when there is none."""
        with self._tx() as cur:
            r = cur.execute(f"SELECT {', '.join(self._MW_COLS)} FROM alert_maintenance WHERE name=?",
                            (name,)).fetchone()
            if r is None:
                raise AlertError(f"maintenance window {name!r} does not exist")
            cur.execute("DELETE FROM alert_maintenance WHERE name=?", (name,))
        return self._mw(r)


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, str):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


EXPORT_COLUMNS = ("id", "rule", "kind", "state", "severity", "started", "fired", "resolved", "device", "site",
                  "building", "room", "type", "agent", "value", "summary", "acked_by", "acked", "ack_comment",
                  "assignee", "escalated", "flapping", "suppressed", "count", "fingerprint", "labels")
HISTORY_COLUMNS = ("time", "alert_id", "rule", "fingerprint", "action", "actor", "detail")


def _iso(ms: int | None) -> str:
    if ms is None:
        return ""
    import datetime as dt
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def export_alerts_csv(store: AlertStore, out: TextIO, flt: dict | None = None,
                      keep: Callable[[Alert], bool] | None = None) -> int:
    """Write alerts matching ``flt`` (default: all states) and ``keep`` (e.g. a login's scope) as CSV;
    returns the row count."""
    flt = {"state": "all", **(flt or {})}
    w = csv.writer(out)
    w.writerow(EXPORT_COLUMNS)
    n = 0
    for a in reversed(store.query(flt)):
        if keep is not None and not keep(a):
            continue
        L = a.labels
        w.writerow([a.id, a.rule, a.kind, a.state, a.severity, _iso(a.started_ms), _iso(a.fired_ms),
                    _iso(a.resolved_ms), L.get("device", ""), L.get("site", ""), L.get("building", ""),
                    L.get("room", ""), L.get("type", ""), L.get("agent", ""), "" if a.value is None else a.value,
                    a.summary, a.acked_by or "", _iso(a.acked_ms), a.ack_comment or "", a.assignee or "",
                    _iso(a.escalated_ms), int(a.flapping), a.suppressed or "", a.count, a.fingerprint,
                    json.dumps(L, sort_keys=True)])
        n += 1
    return n


def export_history_csv(store: AlertStore, out: TextIO, alert_id: int | None = None,
                       since_ms: int | None = None) -> int:
    """Write the audit history (alert transitions and every human action) as CSV; returns the row count."""
    with store._lock:
        meta = {r[0]: (r[1], r[2]) for r in store._db.execute("SELECT id, rule, fingerprint FROM alerts")}
    w = csv.writer(out)
    w.writerow(HISTORY_COLUMNS)
    n = 0
    for h in store.history(alert_id, since_ms):
        rule, fp = meta.get(h.alert_id, ("", ""))
        w.writerow([_iso(h.t_ms), h.alert_id, rule, fp, h.action, h.actor or "", json.dumps(h.detail, sort_keys=True)])
        n += 1
    return n
