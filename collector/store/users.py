"""People who log in to the web UI (``collector/ui``): users and their browser sessions.

Tables in the collector database (next to ``tokens``), opened with their own connection like
``CampusStore``: ``UserStore(path)`` a SQLite file, or ``UserStore(Pg(dsn))`` the shared PostgreSQL
database with ``store.kind: postgres`` (pg_migrations/0004_users.sql; ``collector/store/sqldb.py`` runs the
same SQL on both), so every collector knows the same users and sessions:

- ``ui_users``: name (unique), password hash (``collector.ui.passwords``; NULL for directory
  users), role (admin | it | security), scope (JSON list of site or building ids; [] = whole
  campus), source (local | ldap), display name, disabled, created/updated/last login.
- ``ui_sessions``: SHA-256 of the session cookie (the cookie itself is never stored), the user,
  the CSRF token of the session, created / last seen / expiry times.

Passwords and session secrets are hashed by the caller (``collector/ui/auth.py``); this module
is storage only.
"""
from __future__ import annotations

import json
import time
from typing import Any

from .sqldb import Pg, SqlDB

ROLES = ("admin", "it", "security")
SOURCES = ("local", "ldap")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ui_users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    password_hash TEXT,
    role TEXT NOT NULL,
    scope TEXT NOT NULL DEFAULT '[]',
    source TEXT NOT NULL DEFAULT 'local',
    display_name TEXT,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    last_login_ms INTEGER
);
CREATE TABLE IF NOT EXISTS ui_sessions (
    hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES ui_users(id) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ui_sessions_user ON ui_sessions(user_id);
"""

_USER_COLS = ("id", "name", "password_hash", "role", "scope", "source", "display_name", "disabled",
              "created_ms", "updated_ms", "last_login_ms")


def _now_ms() -> int:
    return int(time.time() * 1000)


class UserExists(ValueError):
    pass


class UserStore:
    def __init__(self, path: "str | Pg"):
        self._db = SqlDB(path)
        self.path = self._db.path
        self._lock = self._db.lock
        if not self._db.pg:
            self._db.execute("PRAGMA foreign_keys=ON")
        self._db.script(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------ users
    @staticmethod
    def _user(row) -> dict[str, Any]:
        u = dict(zip(_USER_COLS, row))
        u["scope"] = json.loads(u["scope"] or "[]")
        u["disabled"] = bool(u["disabled"])
        return u

    def user(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            r = self._db.execute(f"SELECT {', '.join(_USER_COLS)} FROM ui_users WHERE name=?", (name,)).fetchone()
        return self._user(r) if r else None

    def user_by_id(self, user_id: int) -> dict[str, Any] | None:
        with self._lock:
            r = self._db.execute(f"SELECT {', '.join(_USER_COLS)} FROM ui_users WHERE id=?", (user_id,)).fetchone()
        return self._user(r) if r else None

    def users(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(_USER_COLS)} FROM ui_users ORDER BY name").fetchall()
        return [self._user(r) for r in rows]

    def user_add(self, name: str, role: str, password_hash: str | None, scope: list[str] | None = None,
                 source: str = "local", display_name: str | None = None) -> int:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        if source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
        now = _now_ms()
        try:
            return self._db.insert(
                "INSERT INTO ui_users(name, password_hash, role, scope, source, display_name, created_ms, "
                "updated_ms) VALUES (?,?,?,?,?,?,?,?)",
                (name, password_hash, role, json.dumps(list(scope or [])), source, display_name, now, now))
        except self._db.IntegrityError:
            raise UserExists(f"user {name!r} already exists") from None

    def user_update(self, name: str, **changes: Any) -> bool:
        """Change password_hash, role, scope, disabled, display_name, source. A disabled user or a
        new password ends every session of that user."""
        allowed = {"password_hash", "role", "scope", "disabled", "display_name", "source"}
        bad = set(changes) - allowed
        if bad:
            raise ValueError(f"cannot change {', '.join(sorted(bad))}")
        if "role" in changes and changes["role"] not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {changes['role']!r}")
        if "scope" in changes:
            changes["scope"] = json.dumps(list(changes["scope"] or []))
        if "disabled" in changes:
            changes["disabled"] = 1 if changes["disabled"] else 0
        sets = ", ".join(f"{k}=?" for k in changes)
        with self._db.tx() as db:       # the change and the end of the sessions together
            n = db.execute(f"UPDATE ui_users SET {sets}, updated_ms=? WHERE name=?",
                           (*changes.values(), _now_ms(), name)).rowcount
            if n and ({"password_hash", "disabled", "role", "scope"} & set(changes)):
                db.execute("DELETE FROM ui_sessions WHERE user_id=(SELECT id FROM ui_users WHERE name=?)", (name,))
            return n > 0

    def touch_login(self, user_id: int) -> None:
        with self._lock:
            self._db.execute("UPDATE ui_users SET last_login_ms=? WHERE id=?", (_now_ms(), user_id))

    # ------------------------------------------------------------ sessions
    def session_create(self, token_hash: str, user_id: int, csrf: str, expires_ms: int) -> None:
        now = _now_ms()
        with self._db.tx() as db:
            db.execute("DELETE FROM ui_sessions WHERE expires_ms < ?", (now,))
            db.execute("INSERT INTO ui_sessions(hash, user_id, csrf, created_ms, last_seen_ms, expires_ms) "
                       "VALUES (?,?,?,?,?,?)", (token_hash, user_id, csrf, now, now, expires_ms))

    def session(self, token_hash: str) -> dict[str, Any] | None:
        """The session and its user (``user``), None when unknown; expiry is the caller's call."""
        with self._lock:
            r = self._db.execute("SELECT user_id, csrf, created_ms, last_seen_ms, expires_ms FROM ui_sessions "
                                 "WHERE hash=?", (token_hash,)).fetchone()
        if r is None:
            return None
        s = dict(zip(("user_id", "csrf", "created_ms", "last_seen_ms", "expires_ms"), r))
        s["user"] = self.user_by_id(s["user_id"])
        return s

    def session_seen(self, token_hash: str, now_ms: int) -> None:
        with self._lock:
            self._db.execute("UPDATE ui_sessions SET last_seen_ms=? WHERE hash=?", (now_ms, token_hash))

    def session_delete(self, token_hash: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM ui_sessions WHERE hash=?", (token_hash,))

    def sessions_of(self, user_id: int) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM ui_sessions WHERE user_id=?", (user_id,)).fetchone()[0]
