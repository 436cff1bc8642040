"""Replay protection for signed chat callbacks (WeCom, DingTalk): a (source, key) pair - a nonce,
a message id, a timestamp+signature - is accepted once. Keys are kept for ``keep_ms`` (longer than
the accepted timestamp skew), in any sqlite3 path (the alert store's file by default), so a
replay is refused across a collector restart too."""
from __future__ import annotations

import sqlite3
import threading

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
    def __init__(self, path: str = ":memory:", keep_ms: int = 15 * 60_000):
        self.path = str(path)
        self.keep_ms = keep_ms
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA busy_timeout=30000")
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def claim(self, source: str, keys: list[str], now_ms: int) -> bool:
        """True when none of ``keys`` was seen before for ``source`` (they are recorded); False = replay."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM callback_replay WHERE t_ms < ?", (now_ms - self.keep_ms,))
                q = ",".join("?" * len(keys))
                seen = self._db.execute(f"SELECT 1 FROM callback_replay WHERE source=? AND key IN ({q}) LIMIT 1",
                                        (source, *keys)).fetchone()
                if seen is None:
                    self._db.executemany("INSERT INTO callback_replay(source, key, t_ms) VALUES (?,?,?)",
                                         [(source, k, now_ms) for k in keys])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return seen is None

    def close(self) -> None:
        with self._lock:
            self._db.close()
