"""Wiring of the rule engine and notifications into the running collector.

``Alerting(cfg, store)`` builds
- a ``RuleEngine`` over ``load_rules(*cfg.rules.paths)`` with its own ``AlertStore``
  (``rules.db``, a separate SQLite file so alert writes never wait on sample commits);
- ``device_meta`` (``alertcore.topology.DeviceMeta`` over the collector store), cached by the
  engine, invalidated on birth/facts messages and when a device first appears;
- ``topology`` (``alertcore.topology.Topology``: device -> upstream switch from the store's LLDP,
  FDB and ARP entries), rebuilt at most once a minute;
- optionally a ``Notifier`` (``notify.config``) running on its own asyncio loop thread;
- a ``ChangeHub`` (``alertcore.hub``) fanning ``AlertChange``s out to SSE clients.

``on_message`` is the ingest subscriber: it only appends the message to a bounded queue (never
blocks; a full queue drops the message, counted in ``stats['dropped']`` and logged at most once
a minute). Events and agent state messages have their own queue that the engine serves first. One engine thread takes messages from the queue, feeds ``on_samples`` /
``on_events`` / ``on_agent_state`` and calls ``tick`` every ``rules.tick_s``. ``stop()`` drains
the queue, flushes last-seen times and stops the notifier. ``start()`` first replays the stored
events of the last ``rules.replay_s`` (``RuleEngine.replay``; with partitions each take-over does).
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from campus_sense import wire
from campus_sense.yamlconf import ConfigError
from collector.alertcore.hub import ChangeHub, SharedFeed  # noqa: F401  (ChangeHub re-exported)
from collector.alertcore.topology import DeviceMeta, Topology
from collector.store.audit import AuditStore
from collector.store.callbacks import ReplayStore
from collector.store.sqldb import is_pg, shared_target

log = logging.getLogger("collector.alerting")

#: measurements / event types that make an alert a "network" alert (visible to the it role)
NETWORK_MEASUREMENTS = frozenset({"interface", "agent_poll", "system", "agent", "lldp"})
#: how often a collector with partitions writes last-seen times to the shared store (hand-over bound)
PERSIST_SHARED_MS = 5_000
NETWORK_EVENTS = frozenset({"link_down", "link_up", "port_down", "port_up", "link_flap", "uplink_down",
                            "stp_change", "poe_fault"})


class Alerting:
    def __init__(self, cfg, store, ingest=None):
        from .alertcore import AlertStore, RuleEngine, load_rules

        self.cfg = cfg
        self.rules_cfg = cfg.rules
        self.store = store
        self.ingest = ingest
        self.rule_paths = list(cfg.rules.paths)
        ruleset = load_rules(*self.rule_paths)  # ConfigError names file:line
        # rules.db (a local SQLite file), or with ``store.kind: postgres`` the PostgreSQL database every
        # collector shares: alerts, history, silences, maintenance, audit log, outbox, replay keys
        target = shared_target(store, cfg.rules.db)
        self.alert_store = AlertStore(target)
        # WAL + synchronous=NORMAL: a commit no longer waits for fsync (an OS crash may lose the last
        # alert transitions; the data that caused them is in the collector DB). Cuts alert latency
        # spikes when the disk is busy with sample commits.
        try:
            self.alert_store.relax_durability()
        except Exception:  # noqa: BLE001
            log.warning("could not set synchronous=NORMAL on %s", cfg.rules.db)
        # the audit log (who changed what, before/after) lives in the alert store's file
        self.audit = AuditStore(target)
        self.device_meta = DeviceMeta(store)
        self._missing = self.device_meta.missing
        self.topology = Topology(store)
        # partitions (district): the engine runs the rules of the sites whose partition this collector
        # holds; PartitionedIngest hands their state over (take_over / drain / hand_over below), and
        # last-seen times are written every 5 s so a killed collector loses at most that much of them
        owns = getattr(ingest, "owns", None)
        # events committed but not evaluated before a kill (or a pause past the lease) are replayed from
        # the store at start() and at each take-over (RuleEngine.replay, idempotent)
        self.engine = RuleEngine(ruleset, self.alert_store, device_meta=self.device_meta, topology=self.topology,
                                 owns=owns, persist_every_ms=PERSIST_SHARED_MS if owns else 60_000,
                                 events_since=getattr(store, "events_since", None),
                                 replay_ms=int(cfg.rules.replay_s * 1000))
        if owns is not None:
            ingest.handover = self
            # a partition just taken: its agents' queued messages arrive within about a lease
            self.engine.takeover_grace_ms = int(2000 * ingest.lease_s)
        self.engine.singleton = self.singleton     # escalation / ack expiry: one collector (shared store)
        self.hub = ChangeHub()
        # SSE streams: the local engine's changes; on a shared PostgreSQL every collector's, from the
        # shared history (the same stream through every API node)
        self.feed = SharedFeed(self.alert_store, self.hub) if is_pg(target) else None
        if self.feed is None:
            self.engine.listeners.append(self.hub.publish)
        self.notifier = None
        self.callbacks = self.replay = None
        if cfg.notify is not None:
            from .notify import Notifier
            db = Path(cfg.rules.db)
            ndb = db.with_name(db.stem + "-notify" + (db.suffix or ".db")) if cfg.rules.db != ":memory:" else ":memory:"
            # shared outbox: only the holder of the "notify" singleton lease sends (partitions)
            self.notifier = Notifier(cfg.notify.config, target if is_pg(target) else ndb,
                                     singleton=(lambda: self.singleton("notify")) if is_pg(target) else None)
            self.engine.listeners.append(self.notifier.on_alert_change)
            # two-way acknowledgement: signed WeCom/DingTalk callbacks (api/callbacks.py)
            from .notify.callbacks import Callbacks
            self.replay = ReplayStore(target)
            self.callbacks = Callbacks(self.notifier.config, self.replay)
        self._max = cfg.rules.queue_max
        self._prio: deque = deque()
        self._bulk: deque = deque()
        self._wake = threading.Event()
        self.stats = {"queued": 0, "processed": 0, "dropped": 0, "engine_errors": 0, "ticks": 0,
                      "engine_cpu_s": 0.0, "event_lag_n": 0, "event_lag_ms_sum": 0.0, "event_lag_ms_max": 0.0}
        self._drop_logged = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self.network_rules: frozenset[str] = frozenset()
        self._update_network_rules()
        if ingest is not None:
            ingest.subscribers.append(self.on_message)

    def singleton(self, name: str) -> bool:
        """Whether this collector runs the singleton job ``name`` now: always, unless partitions gave
        the store a ``singleton`` (a lease in PostgreSQL, collector/partitions.py)."""
        f = getattr(self.store, "singleton", None)
        return True if f is None else bool(f(name))

    # ------------------------------------------------------------ lifecycle
    def mount(self, app) -> None:
        """Add the alert API (/api/v1/alerts, /silences, /maintenance, /rules, /notifications), the admin API
        (/tokens, /audit) and /console (now a redirect to the web UI's alerts page)."""
        from .api.admin import router as admin_router
        from .api.alerts import router as alerts_router
        from .api.callbacks import router as callbacks_router
        from .api.console import router as console_router
        app.state.alerting = self
        app.include_router(alerts_router(self), prefix="/api/v1")
        app.include_router(admin_router(self), prefix="/api/v1")
        app.include_router(callbacks_router(self), prefix="/api/v1")
        app.include_router(console_router())

    def start(self) -> "Alerting":
        if self.feed is not None:
            self.feed.start()
        if self.notifier is not None:
            self._loop = asyncio.new_event_loop()
            self._loop_thread = threading.Thread(target=self._loop.run_forever, name="notify", daemon=True)
            self._loop_thread.start()
            asyncio.run_coroutine_threadsafe(self.notifier.start(), self._loop).result(10)
        if getattr(self.ingest, "owns", None) is None:   # partitions: every take_over replays its sites
            self.engine.replay()        # listeners attached, ingest not started yet: nothing evaluated twice
        self._thread = threading.Thread(target=self._run, name="alert-engine", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self.feed is not None:
            self.feed.stop()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            self.engine.flush()
        except Exception:  # noqa: BLE001
            log.exception("alert engine flush failed")
        if self.notifier is not None and self._loop is not None:
            try:
                asyncio.run_coroutine_threadsafe(self.notifier.stop(), self._loop).result(10)
            except Exception:  # noqa: BLE001
                log.exception("notifier stop failed")
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(5)
            self.notifier.close()
        self.alert_store.close()
        self.audit.close()
        if self.replay is not None:
            self.replay.close()

    # ------------------------------------------------------------ ingest side (ingest thread: must be fast)
    def on_message(self, msg: wire.Message) -> None:
        # events, birth/death/heartbeat and facts go ahead of bulk metrics: an alarm must not wait
        # behind seconds of interface samples (the engine orders by item time, not arrival)
        q = self._bulk if msg.kind == "metrics" else self._prio
        if len(q) >= self._max:
            self.stats["dropped"] += 1
            now = time.monotonic()
            if now - self._drop_logged > 60:
                self._drop_logged = now
                log.warning("alert engine queue full (%d %s messages): dropping committed messages for the rule "
                            "engine (%d dropped so far); data is stored, only alert evaluation misses them",
                            self._max, "metrics" if q is self._bulk else "event/state", self.stats["dropped"])
            return
        q.append((time.monotonic(), msg))
        self.stats["queued"] += 1
        self._wake.set()

    # ------------------------------------------------------------ partitions (collector/partitions.py)
    def take_over(self, sites) -> None:
        """A partition was taken: load its sites' rule state (before its ingest starts)."""
        self.engine.take_over(sites)

    def drain(self, timeout_s: float) -> None:
        """A partition is given up gracefully, its ingest stopped: evaluate what it committed first."""
        target = self.stats["queued"]
        end = time.monotonic() + timeout_s
        while (self.stats["processed"] < target and time.monotonic() < end
               and self._thread is not None and self._thread.is_alive()):
            time.sleep(0.01)

    def hand_over(self, sites) -> None:
        """A partition was given up or lost: forget its sites' rule state (alerts stay as they are)."""
        self.engine.hand_over(sites)

    # ------------------------------------------------------------ engine thread
    def _run(self) -> None:
        tick_s = self.rules_cfg.tick_s
        next_tick = time.monotonic()
        prio, bulk, wake = self._prio, self._bulk, self._wake
        while True:
            wake.clear()
            if prio:
                t0, msg = prio.popleft()
                self._handle(msg)
                self._lag(t0)
            elif bulk:
                self._handle(bulk.popleft()[1])
            else:
                if self._stop.is_set():
                    break
                wake.wait(max(0.0, min(next_tick - time.monotonic(), 0.5)))
            if time.monotonic() >= next_tick:
                cpu0 = time.thread_time()
                try:
                    self.engine.tick()
                    self.stats["ticks"] += 1
                except Exception:  # noqa: BLE001
                    self.stats["engine_errors"] += 1
                    log.exception("alert engine tick failed")
                self.stats["engine_cpu_s"] += time.thread_time() - cpu0
                next_tick = time.monotonic() + tick_s

    def _lag(self, t0: float) -> None:
        """Queue wait + evaluation (incl. alert store writes and listeners) of event/state messages."""
        ms = (time.monotonic() - t0) * 1000
        st = self.stats
        st["event_lag_n"] += 1
        st["event_lag_ms_sum"] += ms
        if ms > st["event_lag_ms_max"]:
            st["event_lag_ms_max"] = ms

    def _handle(self, msg: wire.Message) -> None:
        cpu0 = time.thread_time()
        e = self.engine
        try:
            k = msg.kind
            if k == "metrics":
                items = msg.items if msg.rows is None else e.samples_of(msg.packed)
                if self._missing:
                    self._check_missing(items)
                e.on_samples(items, agent=msg.agent, site=msg.topic.site)
            elif k == "events":
                if self._missing:
                    self._check_missing(msg.items)
                e.on_events(msg.items, agent=msg.agent, site=msg.topic.site)
            elif k == "facts":
                for it in msg.items:
                    self._invalidate(it.get("d"))
            else:
                b = msg.body
                t = b.get("sent_ms") if type(b.get("sent_ms")) is int else int(time.time() * 1000)
                if k == "birth":
                    for d in b.get("devices") or []:
                        if isinstance(d, dict) and isinstance(d.get("id"), str):
                            self._invalidate(d["id"])
                            e.track_device(d["id"], t, agent=msg.agent, site=msg.topic.site)
                e.on_agent_state(msg.agent, k != "death", t, site=msg.topic.site, building=msg.topic.building)
        except Exception:  # noqa: BLE001 - bad data must not stop the engine thread
            self.stats["engine_errors"] += 1
            log.exception("alert engine failed on a %s message from %s", msg.kind, msg.agent)
        self.stats["processed"] += 1
        self.stats["engine_cpu_s"] += time.thread_time() - cpu0

    def _check_missing(self, items) -> None:
        miss = self._missing
        for it in items:
            d = it.get("d")
            if d in miss:
                self._invalidate(d)

    def _invalidate(self, d: str | None) -> None:
        if d is None:
            return
        self._missing.discard(d)
        self.engine.invalidate_device(d)

    # ------------------------------------------------------------ rules (API)
    def _update_network_rules(self) -> None:
        names = set()
        for m in self.engine.ruleset.rules:
            labels = getattr(m, "labels", None) or {}
            meas = getattr(m, "measurement", None)
            events = set(getattr(m, "event", None) or []) | set(getattr(m, "clear_event", None) or [])
            if (labels.get("category") == "network" or labels.get("kind") == "network"
                    or m.kind == "agent_offline" or meas in NETWORK_MEASUREMENTS
                    or (events & NETWORK_EVENTS)):
                names.add(m.name)
        self.network_rules = frozenset(names)

    def is_network(self, alert) -> bool:
        labels = alert.labels or {}
        return (alert.rule in self.network_rules or labels.get("category") == "network"
                or alert.kind == "agent_offline")

    def rule_files(self) -> list[Path]:
        out: list[Path] = []
        for p in self.rule_paths:
            pp = Path(p)
            if pp.is_dir():
                out += sorted(x for x in pp.iterdir() if x.suffix in (".yaml", ".yml") and x.is_file())
            else:
                out.append(pp)
        return out

    def replace_rules(self, text: str, file: str | None = None) -> Any:
        """Validate ``text`` as the new content of one rule file (together with the other files),
        write it atomically and reload the engine. Raises ConfigError (file:line) on invalid YAML."""
        from .alertcore import load_rules
        files = self.rule_files()
        if file is None:
            if not files:
                target = Path(self.rule_paths[0])
                if target.is_dir():
                    target = target / "rules.yaml"
            else:
                target = files[0]
        else:
            target = next((f for f in files if str(f) == file or f.name == file), None)
            if target is None:
                raise FileNotFoundError(f"{file} is not one of the configured rule files "
                                        f"({', '.join(str(f) for f in files)})")
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        try:
            others = [str(f) for f in files if f != target]
            try:
                rs = load_rules(*others, str(tmp))
            except ConfigError as e:
                # name the real file, not the temporary one
                raise ConfigError(str(e).replace(str(tmp), str(target))) from None
            tmp.replace(target)
        finally:
            if tmp.exists():
                tmp.unlink()
        self.engine.reload(rs)
        self._update_network_rules()
        return rs

    def snapshot(self) -> dict:
        return {**self.stats, "queue": len(self._bulk) + len(self._prio), "queue_max": self._max,
                "sse_clients": self.hub.clients, "rules": len(self.engine.ruleset.rules),
                "bad_items": self.engine.bad_items}
