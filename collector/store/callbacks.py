"""Replay protection for signed chat callbacks (WeCom, DingTalk): a (source, key) pair - a nonce,
a message id, a timestamp+signature - is accepted once. Keys are kept for ``keep_ms`` (longer than
the accepted timestamp skew), in any sqlite3 path (the alert store's file by default) or the shared
PostgreSQL database (``Pg(dsn)``: a replay is refused by every collector), so a replay is refused
across a collector restart too."""
from __future__ import annotations

from .sqldb import Pg, SqlDB

SCHEMA = """
CREATE TABLE IF NOT EXISTS callback_replay(
  source TEXT NOT NULL,
  key TEXT NOT NULL,
  t_ms INTEGER NOT NULL,
  PRIMARY KEY (source, key)
);
CREATE INDEX IF NOT EXISTS callback_replay_t ON callback_replay(t_ms);
"""


class ReplayStore:
    def __init__(self, path: "str | Pg" = ":memory:", keep_ms: int = 15 * 60_000):
        self._db = SqlDB(path)
        self.path = self._db.path
        self.keep_ms = keep_ms
        self._lock = self._db.lock
        self._db.script(SCHEMA)

    def claim(self, source: str, keys: list[str], now_ms: int) -> bool:
        """True when none of ``keys`` was seen before for ``source`` (they are recorded); False = replay."""
        with self._db.tx():
            self._db.serialize("callback_replay")
            self._db.execute("DELETE FROM callback_replay WHERE t_ms < ?", (now_ms - self.keep_ms,))
            q = ",".join("?" * len(keys))
            seen = self._db.execute(f"SELECT 1 FROM callback_replay WHERE source=? AND key IN ({q}) LIMIT 1",
                                    (source, *keys)).fetchone()
            if seen is None:
                self._db.executemany("INSERT INTO callback_replay(source, key, t_ms) VALUES (?,?,?)",
                                     [(source, k, now_ms) for k in keys])
        return seen is None

    def close(self) -> None:
        with self._lock:
            self._db.close()
