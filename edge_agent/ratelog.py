"""Log a recurring error at most once per interval, with the number of repeats.

Why: an agent whose disk is full retries every few seconds for hours; one log
line per retry filled the same disk (2.8 MB/s observed). The first occurrence
is logged at once, repeats within ``interval_s`` are only counted, the next
line says how many were suppressed, and ``recovered()`` says when it stopped.
"""
from __future__ import annotations

import logging
import time


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, interval_s: float = 60.0):
        self.logger, self.interval_s = logger, interval_s
        self._seen: dict[str, list] = {}  # key -> [monotonic time of the last line, repeats since]

    def log(self, level: int, key: str, msg: str, *args) -> bool:
        """Log ``msg % args`` unless ``key`` was logged less than ``interval_s`` ago; True if logged."""
        now = time.monotonic()
        st = self._seen.get(key)
        if st is not None and now - st[0] < self.interval_s:
            st[1] += 1
            return False
        if st is not None and st[1]:
            msg += " (repeated %d times in the last %.0f s)"
            args = (*args, st[1], now - st[0])
        self.logger.log(level, msg, *args)
        self._seen[key] = [now, 0]
        return True

    @property
    def active(self) -> bool:
        return bool(self._seen)

    def recovered(self, msg: str, *args) -> None:
        """The condition is over: log ``msg`` once (if anything was logged) and forget the keys."""
        if self._seen:
            repeats = sum(st[1] for st in self._seen.values())
            self.logger.warning(msg + " (%d repeats were not logged)", *args, repeats)
            self._seen.clear()
