"""Alert notifications: routes, channels, durable outbox.

Usage::

    from collector.notify import Notifier
    notifier = Notifier("notify.yaml", "/var/lib/campus-sense/collector.db")
    engine.listeners.append(notifier.on_alert_change)     # collector.alertcore.RuleEngine
    await notifier.start()
    ...
    notifier.status(); notifier.deliveries(limit=50, state="failed")
    await notifier.stop()

See README.md in this directory.
"""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, Callable

from . import config as _config
from .channels import make_sender
from .config import ConfigError, NotifyConfig
from .model import BadAlert, normalize
from .outbox import DB, DeliveryError, Outbox
from .router import Router

log = logging.getLogger("campus_sense.notify")

__all__ = ["Notifier", "NotifyConfig", "ConfigError", "DeliveryError", "load_config"]

load_config = _config.load


class Notifier:
    """Routes alert changes to channels through a durable outbox.

    ``config``: a path to notify.yaml or a loaded ``NotifyConfig``.
    ``db_path``: SQLite file for the outbox and group state (may be the collector DB), or
    ``collector.store.sqldb.Pg(dsn)``: the PostgreSQL database several collectors share.
    ``clock``: time source for routing decisions (group/repeat timers, time windows);
    deliveries and retries always use wall-clock time.
    ``singleton``: None (this process sends), or a callable telling whether this process holds the
    sending lease now (collector/partitions.py ``Leases.singleton("notify")``): only the holder
    delivers, evaluates group timers and prunes; every collector records alert changes and
    enqueues what they make due (the group row is locked while it is flushed).
    """

    def __init__(self, config: NotifyConfig | str | Path, db_path: "str | Path | Any",
                 clock: Callable[[], float] = time.time, singleton: Callable[[], bool] | None = None):
        self.config = config if isinstance(config, NotifyConfig) else _config.load(config)
        self.clock = clock
        self.singleton = singleton
        self.db = DB(db_path)
        self.outbox = Outbox(self.db)
        self.outbox.may_send = singleton
        self.router = Router(self.config, self.db, self.outbox.enqueue)
        self._tasks: list[asyncio.Task] = []
        self._senders: dict[str, Any] = {}
        self._stopping: asyncio.Event | None = None
        self._rejected = 0
        self._last_rejected: str | None = None

    # ------------------------------------------------------------------ input
    def on_alert_change(self, change: Any) -> None:
        """Engine listener for the alerting core's ``AlertChange``. Fast (local SQLite writes only);
        never raises (anything else is counted as rejected)."""
        try:
            now = self.clock()
            alert = normalize(change)
            keys = self.router.process(alert, now)
            if keys:
                self.router.flush(now, only=keys)
        except BadAlert as e:
            self._rejected += 1
            self._last_rejected = str(e)
            log.warning("notify: ignoring alert change: %s", e)
        except Exception as e:  # never break the rule engine
            self._rejected += 1
            self._last_rejected = f"{type(e).__name__}: {e}"
            log.exception("notify: alert change not processed")

    def tick(self, now: float | None = None) -> int:
        """Evaluate group timers (group_wait / group_interval / repeat_interval, time windows).
        Runs every ``outbox.evaluation_interval`` while started; tests may call it directly."""
        return self.router.flush(self.clock() if now is None else now)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._tasks:
            return
        self._stopping = asyncio.Event()
        n = self.outbox.fail_unknown_channels(set(self.config.channels), time.time())
        if n:
            log.warning("notify: %d pending deliveries for channels no longer configured marked failed", n)
        for name, ch in self.config.channels.items():
            sender = make_sender(name, ch)
            self._senders[name] = sender
            self._tasks.append(asyncio.create_task(
                self.outbox.run_channel(name, sender.send, self.config.retry_for(name),
                                        ch.timeout + 1.0, self._stopping),
                name=f"notify-{name}"))
        self._tasks.append(asyncio.create_task(self._timer(), name="notify-timer"))

    async def _timer(self) -> None:
        every = self.config.outbox.evaluation_interval
        last_prune = 0.0
        while not self._stopping.is_set():
            try:
                # with a sending lease only its holder evaluates group timers and prunes
                if self.singleton is None or self.singleton():
                    self.tick()
                    if time.time() - last_prune > 3600:
                        last_prune = time.time()
                        self.outbox.prune(self.config.outbox.keep)
            except Exception:
                log.exception("notify: timer")
            try:
                async with asyncio.timeout(every):
                    await self._stopping.wait()
            except asyncio.TimeoutError:
                pass

    async def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        tasks, self._tasks = self._tasks, []
        if tasks:
            # give in-flight attempts a moment to finish, then cancel (they stay pending in the outbox)
            done, pending = await asyncio.wait(tasks, timeout=2.0)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for s in self._senders.values():
            try:
                await s.close()
            except Exception:  # pragma: no cover
                pass
        self._senders.clear()

    def close(self) -> None:
        """Close the database (after stop)."""
        self.db.close()

    @property
    def running(self) -> bool:
        return any(not t.done() for t in self._tasks)

    # ------------------------------------------------------------------ visibility
    def status(self, recent_failures: int = 20) -> dict:
        counts = self.outbox.counts()
        channels = {}
        for name, ch in self.config.channels.items():
            c = counts.get(name, {"pending": 0, "sent": 0, "failed": 0})
            info = self.outbox.channel_info(name)
            # healthy: nothing failed since the last successful delivery, nothing overdue
            ok = info["last_error_at"] is None or (info["last_sent_at"] or 0) > info["last_error_at"]
            channels[name] = {"type": ch.type, "ok": ok, **c, **info}
        return {
            "running": self.running,
            "channels": channels,
            "groups": self.router.group_count(),
            "rejected_changes": self._rejected,
            "last_rejected": self._last_rejected,
            "recent_failures": self.outbox.deliveries(recent_failures, state="failed"),
        }

    def deliveries(self, limit: int = 100, state: str | None = None, channel: str | None = None,
                   payload: bool = False) -> list[dict]:
        """Newest first. ``state``: pending | sent | failed."""
        if state is not None and state not in ("pending", "sent", "failed"):
            raise ValueError(f"invalid state {state!r} (pending, sent, failed)")
        return self.outbox.deliveries(max(1, min(int(limit), 1000)), state, channel, payload)

    def retry(self, delivery_id: int) -> bool:
        """Re-queue a failed delivery."""
        return self.outbox.retry(delivery_id)
