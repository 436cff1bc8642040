"""Wiring of the rule engine and notifications into the running collector.

``Alerting(cfg, store)`` builds
- a ``RuleEngine`` over ``load_rules(*cfg.rules.paths)`` with its own ``AlertStore``
  (``rules.db``, a separate SQLite file so alert writes never wait on sample commits);
- ``device_meta`` from the collector store (``store.device``: agent, site, building, facts;
  room/type from the agent's birth message ``devices`` list, ``store.agent_info``), cached,
  invalidated on birth/facts messages and when a device first appears;
- ``topology`` (device -> upstream switch) from the current LLDP entries
  (``store.topology_current``; neighbour of a higher-ranked type is upstream) and, for devices
  without an LLDP upstream, from the current ``fdb`` entries: the switch that
  learned the device's MAC (facts ``mac``, or facts ``ip`` via ``arp``) on an access port (no
  switch neighbour on it; fewest MACs wins); rebuilt at most once a minute;
- optionally a ``Notifier`` (``notify.config``) running on its own asyncio loop thread;
- a ``ChangeHub`` fanning ``AlertChange``s out to SSE clients (asyncio queues on the API loop).

``on_message`` is the ingest subscriber: it only appends the message to a bounded queue (never
blocks; a full queue drops the message, counted in ``stats['dropped']`` and logged at most once
a minute). Events and agent state messages have their own queue that the engine serves first. One engine thread takes messages from the queue, feeds ``on_samples`` /
``on_events`` / ``on_agent_state`` and calls ``tick`` every ``rules.tick_s``. ``stop()`` drains
the queue, flushes last-seen times and stops the notifier.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from campus_sense import wire
from campus_sense.yamlconf import ConfigError

log = logging.getLogger("collector.alerting")

#: higher = closer to the core; an LLDP neighbour of higher rank is upstream
_TYPE_RANK = {"router": 5, "firewall": 5, "core": 4, "core-switch": 4, "distribution": 3,
              "distribution-switch": 3, "switch": 2, "access-switch": 2, "wlc": 2}

#: measurements / event types that make an alert a "network" alert (visible to the it role)
NETWORK_MEASUREMENTS = frozenset({"interface", "agent_poll", "system", "agent", "lldp"})
NETWORK_EVENTS = frozenset({"link_down", "link_up", "port_down", "port_up", "link_flap", "uplink_down",
                            "stp_change", "poe_fault"})


class ChangeHub:
    """Thread-safe fan-out of alert changes to asyncio subscribers (SSE streams)."""

    def __init__(self, max_queue: int = 1000):
        self._subs: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Queue, Any]] = {}
        self._lock = threading.Lock()
        self._next = 0
        self.max_queue = max_queue
        self.seq = 0

    def subscribe(self, loop: asyncio.AbstractEventLoop, accept=None) -> tuple[int, asyncio.Queue]:
        q: asyncio.Queue = asyncio.Queue(self.max_queue)
        with self._lock:
            self._next += 1
            self._subs[self._next] = (loop, q, accept)
            return self._next, q

    def unsubscribe(self, sid: int) -> None:
        with self._lock:
            self._subs.pop(sid, None)

    @property
    def clients(self) -> int:
        return len(self._subs)

    def publish(self, change) -> None:
        """Engine listener (any thread)."""
        with self._lock:
            if not self._subs:
                return
            self.seq += 1
            subs = list(self._subs.values())
            seq = self.seq
        d = change.to_dict() if hasattr(change, "to_dict") else dict(change)
        d["seq"] = seq
        d["emitted_ms"] = time.time() * 1000
        data = json.dumps(d, default=str, separators=(",", ":"))
        alert = change.alert if hasattr(change, "alert") else None
        for loop, q, accept in subs:
            if accept is not None and alert is not None and not accept(alert):
                continue
            try:
                loop.call_soon_threadsafe(_put, q, data)
            except RuntimeError:  # loop closed
                pass


def _norm_mac(v) -> str | None:
    """'00:1A:2b:..', '001a.2b..', '00-1a-..' -> '001a2b3c4d5e'; None if not a MAC."""
    if not isinstance(v, str):
        return None
    h = "".join(ch for ch in v.lower() if ch in "0123456789abcdef")
    return h if len(h) == 12 and h != "000000000000" else None


def _put(q: asyncio.Queue, data: str) -> None:
    try:
        q.put_nowait(data)
    except asyncio.QueueFull:
        # slow client: tell it to reload instead of silently losing changes
        while not q.empty():
            q.get_nowait()
        q.put_nowait('{"kind":"resync"}')


class Alerting:
    def __init__(self, cfg, store, ingest=None):
        from .rules import AlertStore, RuleEngine, load_rules

        self.cfg = cfg
        self.rules_cfg = cfg.rules
        self.store = store
        self.ingest = ingest
        self.rule_paths = list(cfg.rules.paths)
        ruleset = load_rules(*self.rule_paths)  # ConfigError names file:line
        self.alert_store = AlertStore(cfg.rules.db)
        # WAL + synchronous=NORMAL: a commit no longer waits for fsync (an OS crash may lose the last
        # alert transitions; the data that caused them is in the collector DB). Cuts alert latency
        # spikes when the disk is busy with sample commits.
        try:
            self.alert_store.relax_durability()
        except Exception:  # noqa: BLE001
            log.warning("could not set synchronous=NORMAL on %s", cfg.rules.db)
        self._meta_lock = threading.Lock()
        self._missing: set[str] = set()
        self._topo: dict[str, str] = {}
        self._topo_at = 0.0
        self.engine = RuleEngine(ruleset, self.alert_store, device_meta=self.device_meta, topology=self.topology)
        self.hub = ChangeHub()
        self.engine.listeners.append(self.hub.publish)
        self.notifier = None
        if cfg.notify is not None:
            from .notify import Notifier
            db = Path(cfg.rules.db)
            ndb = db.with_name(db.stem + "-notify" + (db.suffix or ".db")) if cfg.rules.db != ":memory:" else ":memory:"
            self.notifier = Notifier(cfg.notify.config, ndb)
            self.engine.listeners.append(self.notifier.on_alert_change)
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

    # ------------------------------------------------------------ lifecycle
    def mount(self, app) -> None:
        """Add the alert API (/api/v1/alerts, /silences, /rules, /notifications) and the console."""
        from .api.alerts import router as alerts_router
        from .api.console import router as console_router
        app.state.alerting = self
        app.include_router(alerts_router(self), prefix="/api/v1")
        app.include_router(console_router())

    def start(self) -> "Alerting":
        if self.notifier is not None:
            self._loop = asyncio.new_event_loop()
            self._loop_thread = threading.Thread(target=self._loop.run_forever, name="notify", daemon=True)
            self._loop_thread.start()
            asyncio.run_coroutine_threadsafe(self.notifier.start(), self._loop).result(10)
        self._thread = threading.Thread(target=self._run, name="alert-engine", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
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
                if self._missing:
                    self._check_missing(msg.items)
                e.on_samples(msg.items, agent=msg.agent)
            elif k == "events":
                if self._missing:
                    self._check_missing(msg.items)
                e.on_events(msg.items, agent=msg.agent)
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
                            e.track_device(d["id"], t, agent=msg.agent)
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

    # ------------------------------------------------------------ device metadata / topology
    def device_meta(self, d: str) -> dict | None:
        """{site, building, room, type, tags, agent, facts} from the collector store (cached by the engine)."""
        try:
            dev = self.store.device(d)
        except Exception:  # noqa: BLE001
            log.exception("device lookup failed for %s", d)
            dev = None
        if dev is None:
            self._missing.add(d)
            return None
        meta = {"site": dev.get("site"), "building": dev.get("building"), "agent": dev.get("agent"),
                "tags": {}, "room": None, "type": None}
        facts = dev.get("facts") or {}
        for k in ("room", "type"):
            if isinstance(facts.get(k), str):
                meta[k] = facts[k]
        if dev.get("agent"):
            info = self.store.agent_info(dev["agent"])
            if info:
                for dd in info.get("devices") or []:
                    if isinstance(dd, dict) and dd.get("id") == d:
                        for k in ("room", "type"):
                            if dd.get(k):
                                meta[k] = dd[k]
                        if isinstance(dd.get("tags"), dict):
                            meta["tags"] = {str(k): str(v) for k, v in dd["tags"].items()}
                        break
        if meta["room"] is None and meta["type"] is None and not dev.get("building"):
            self._missing.add(d)  # look again when it shows up with more metadata
        return meta

    def topology(self, d: str) -> str | None:
        now = time.monotonic()
        if now - self._topo_at > 60:
            self._topo_at = now
            try:
                self._topo = self._build_topology()
            except Exception:  # noqa: BLE001
                log.exception("topology from LLDP failed")
        return self._topo.get(d)

    def _build_topology(self) -> dict[str, str]:
        st = self.store
        # current entries (open topology intervals, store/topology.py): [{device, tags, ...}]
        rows = st.topology_current("lldp")
        fdb_rows = st.topology_current("fdb")
        if not rows and not fdb_rows:
            return {}
        types: dict[str, str] = {}
        for a in st.agents(int(time.time() * 1000), 0):
            info = a.get("info")
            for dd in (info.get("devices") if isinstance(info, dict) else None) or []:
                if isinstance(dd, dict) and dd.get("id") and dd.get("type"):
                    types[dd["id"]] = dd["type"]
        names: dict[str, str] = {d.lower(): d for d in types}
        macs: dict[str, str] = {}   # device -> normalised MAC (facts mac, else facts ip via ARP)
        ips: dict[str, str] = {}
        for dv in st.devices():
            did = dv["id"]
            names[did.lower()] = did
            f = dv.get("facts")
            f = f if isinstance(f, dict) else {}
            sn = f.get("sysName")
            if isinstance(sn, str):
                names[sn.lower()] = did
            if _norm_mac(f.get("mac")):
                macs[did] = _norm_mac(f.get("mac"))
            elif isinstance(f.get("ip"), str):
                ips[did] = f["ip"]
        rank = lambda x: _TYPE_RANK.get((types.get(x) or "").lower(), 0)  # noqa: E731
        up: dict[str, str] = {}
        uplinks: set[tuple[str, Any]] = set()   # (switch, port) facing another switch: not an access port
        for r in rows:
            dev, tags = r["device"], r["tags"]
            rn = tags.get("remote_name") or tags.get("remote_chassis")
            peer = names.get(str(rn).lower()) if rn else None
            if not peer or peer == dev:
                continue
            if rank(dev) > rank(peer):
                up.setdefault(peer, dev)
            elif rank(peer) > rank(dev):
                up.setdefault(dev, peer)
            if rank(peer) > 0:  # a port facing another switch/router is a trunk, not an access port
                uplinks.add((dev, tags.get("ifIndex") or tags.get("local_port")))
        if fdb_rows:
            self._topology_from_fdb(st, fdb_rows, up, macs, ips, uplinks, rank)
        return up

    @staticmethod
    def _topology_from_fdb(store, fdb_rows: list[dict], up: dict, macs: dict, ips: dict, uplinks: set, rank) -> None:
        """Devices without an LLDP upstream: the switch whose FDB learned the device's MAC on an
        access port (no LLDP neighbour on it), the port with the fewest MACs when several switches
        learned it (switches further up learn it on their uplinks, which carry many MACs)."""
        if ips:
            for r in store.topology_current("arp"):
                t = r["tags"]
                for d, ip in list(ips.items()):
                    if t.get("ip") == ip and _norm_mac(t.get("mac")):
                        macs.setdefault(d, _norm_mac(t.get("mac")))
        port_macs: dict[tuple[str, str], set[str]] = {}
        for r in fdb_rows:
            sw, t = r["device"], r["tags"]
            mac = _norm_mac(t.get("mac"))
            port = t.get("ifIndex") or t.get("ifName")
            if mac and port is not None and (sw, port) not in uplinks:
                port_macs.setdefault((sw, str(port)), set()).add(mac)
        by_mac: dict[str, list[tuple[int, str]]] = {}
        for (sw, _port), ms in port_macs.items():
            for m in ms:
                by_mac.setdefault(m, []).append((len(ms), sw))
        for d, m in macs.items():
            if d in up or m not in by_mac:
                continue
            cands = sorted((n, sw) for n, sw in by_mac[m]
                           if sw != d and (rank(d) == 0 or rank(sw) > rank(d)))
            if cands:
                up[d] = cands[0][1]

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
        from .rules import load_rules
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
