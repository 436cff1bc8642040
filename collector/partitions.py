"""Partitioned ingest with leases: several collectors share the sites (issue 15).

Sites are hashed to a fixed number of partitions (``partitions.count``, default 64):
``partition_of(site) = crc32(site) % count``. Each partition is one persistent MQTT session with a
fixed client id ``<mqtt.client_id>-pNN`` subscribed (QoS 1) to ``campus/v1/<site>/+/+/+`` for each
of its sites. Topic scheme: the wire topics stay as they are and the partition's sessions list
their sites; MQTT wildcards cannot select "sites whose hash is k" without listing them. Sites
come from ``partitions.sites`` (config) and from the agents PostgreSQL knows (enrolled or seen),
re-read every ``refresh_s``; a site gains its subscription then (the partition's session is
restarted with the longer list: the broker keeps its queue meanwhile). Until a site is known its
messages have no subscriber and the broker drops them; its agents keep them queued (they delete
only what a commit watermark confirms) and send them again.

Leases (table ``leases`` in PostgreSQL: ``name, holder, epoch, expires_at``, server time):

- a collector takes a partition whose lease is free or expired (``epoch`` + 1: the fencing
  token), renews its leases every ``lease_s / 3``, and runs that partition's ``Ingest`` only while
  it holds the lease;
- every commit of a partition passes ``fence=(lease, holder, epoch)`` to ``PostgresStore.apply``,
  which checks it in the same transaction (``FOR SHARE``: a takeover waits for a running commit; a
  commit after a takeover fails with ``LeaseLost`` and is not acknowledged). A paused or cut-off
  collector therefore cannot commit once another one took its partition over, whatever it
  believes;
- a renewal that fails (taken over) or a lease that passed its local deadline (renewal start +
  ``lease_s``: never later than the server's ``expires_at``) stops the partition's ingest, and
  ``Ingest.may_connect`` keeps its client id off the broker: the two holders do not kick each
  other's session;
- a collector that dies stops renewing; after ``lease_s`` its partitions are free, another
  collector takes them and connects with the same client id: the broker hands it the session with
  every message not acknowledged (persistent session, ``clean_start = false``). Dedup state is in
  PostgreSQL: what the dead one committed but did not acknowledge is dropped as a duplicate;
- balance: each collector also holds a ``node/<holder>`` lease (membership). With ``n`` live nodes
  a collector holds at most ``ceil(count / n)`` partitions: a newcomer gets its share because the
  others release extras gracefully (the partition's ingest commits and acknowledges what it has,
  disconnects, then the lease is expired).

Singletons (``Leases.singleton(name)``): a lease ``singleton/<name>`` taken and renewed like a
partition; the store's retention runs only where ``singleton("retention")`` holds.

Rule state follows the partitions: ``owns(site)`` is true while this collector holds the site's
partition (lease locally valid), and ``handover`` (the alerting, collector/alerting.py) is told
``take_over(sites)`` when a partition is taken, before its ingest starts, and ``hand_over(sites)`` when it
is given up or lost, after its ingest stopped; a graceful release first lets it ``drain(timeout_s)`` the
partition's committed messages, and the lease is released only after that.
"""
from __future__ import annotations

import logging
import math
import os
import secrets
import threading
import time
import zlib
from typing import Any, Callable

import psycopg

from campus_sense import wire

from .ingest import Ingest
from .store.base import StorageUnavailable
from .store.leases import Leases

log = logging.getLogger("collector.partitions")

DEFAULT_COUNT = 64


def partition_of(site: str, count: int) -> int:
    """Stable: crc32 of the site name (UTF-8) modulo the partition count."""
    return zlib.crc32(site.encode()) % count


def partition_name(p: int, count: int) -> str:
    return f"p{p:0{max(2, len(str(count - 1)))}d}"


def client_id(prefix: str, p: int, count: int) -> str:
    return f"{prefix}-{partition_name(p, count)}"


def site_topic(site: str) -> str:
    return f"{wire.TOPIC_ROOT}/{wire.check_segment(site, 'site')}/+/+/+"


class FencedStore:
    """The store as one partition's ingest sees it: every ``apply`` carries the partition's
    fencing token; everything else goes to the store."""

    def __init__(self, store: Any, leases: Leases, name: str):
        self._store, self._leases, self._name = store, leases, name

    def apply(self, messages, rejects, clock=None):
        return self._store.apply(messages, rejects, clock, fence=self._leases.fence(self._name))

    def __getattr__(self, item):
        return getattr(self._store, item)


class PartitionedIngest:
    """Several ``Ingest`` sessions (one per partition this collector holds) behind the interface
    of one (``subscribers``, ``start``, ``stop``, ``health``, ``snapshot``)."""

    def __init__(self, mqtt_cfg, store, parts_cfg, ingest_cfg=None, clock_cfg=None,
                 dsn: str | Callable[[], str] | None = None, node: str | None = None):
        self.mqtt_cfg = mqtt_cfg
        self.store = store
        self.count = parts_cfg.count
        self.lease_s = parts_cfg.lease_s
        self.refresh_s = parts_cfg.refresh_s
        self.cfg_sites = list(parts_cfg.sites)
        self.ingest_cfg, self.clock_cfg = ingest_cfg, clock_cfg
        node = node or getattr(store, "node", None) or "collector"
        self.holder = f"{node}:{os.getpid()}:{secrets.token_hex(3)}"
        self.leases = Leases(dsn if dsn is not None else store._dsn, self.holder, self.lease_s)
        self.subscribers: list = []
        self.node_lease = f"node/{self.holder}"
        #: partition -> running Ingest (None: held, no sites yet)
        self.running: dict[int, Ingest | None] = {}
        self._topics: dict[int, list[str]] = {}
        self._sites: set[str] = set()
        self._sites_at = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()
        self.started_ms = int(time.time() * 1000)
        self.takeovers = 0
        self.lost = 0
        self._last_error: str | None = None
        self._lock = threading.Lock()
        self.retired: dict[str, int | float] = {}    # stats of stopped partition ingests
        #: partitions whose rules run here (taken, not yet given up); see ``owns``
        self.owned: set[int] = set()
        #: the rule engine's side of a hand-over: ``take_over(sites)``, ``drain(timeout_s)``, ``hand_over(sites)``
        self.handover: Any = None

    # ------------------------------------------------------------ rule state (collector/alerting.py)
    def owns(self, site: str | None) -> bool:
        """Whether this collector runs ``site``'s rules now: it holds the site's partition."""
        if site is None:
            return False
        p = partition_of(site, self.count)
        return p in self.owned and self.leases.valid(self._lease(p))

    def _sites_in(self, ps: set[int]) -> Callable[[str | None], bool]:
        return lambda site: site is not None and partition_of(site, self.count) in ps

    def _handover(self, what: str, *args) -> None:
        if self.handover is not None:
            try:
                getattr(self.handover, what)(*args)
            except Exception:  # noqa: BLE001 - the ingest goes on; the rule state of these sites is rebuilt from data
                log.exception("rule state %s failed", what)

    def _take(self, ps: set[int]) -> None:
        """Partitions just taken (all of one round at once: one load from the store)."""
        if ps:
            self.owned |= ps
            self._handover("take_over", self._sites_in(set(ps)))

    def _drop(self, p: int, graceful: bool) -> None:
        if p not in self.owned:
            return
        if graceful:       # bounded: the leases are renewed by this thread
            self._handover("drain", self.lease_s / 4)
        self.owned.discard(p)
        self._handover("hand_over", self._sites_in({p}))

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "PartitionedIngest":
        self._thread = threading.Thread(target=self._run, name="partitions", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout + 5)
        for p in list(self.running):
            self._stop_partition(p, release=True)
        self.leases.release(self.node_lease)
        for k in [k for k in self.leases.held if k.startswith("singleton/")]:
            self.leases.release(k)
        self.leases.close()

    def _run(self) -> None:
        tick = max(0.2, self.lease_s / 3)
        while not self._stop.is_set():
            try:
                self._tick()
                self._last_error = None
            except psycopg.Error as e:
                self._last_error = f"PostgreSQL (leases): {e}"
                log.error("partition leases: %s", e)
                self._expire_local()
            except Exception:  # noqa: BLE001 - never let the manager die
                log.exception("partition manager failed")
            self._stop.wait(tick)

    def _expire_local(self) -> None:
        """Renewals failing: stop partitions whose local deadline passed (someone may take them)."""
        for p in list(self.running):
            name = self._lease(p)
            if not self.leases.valid(name):
                log.warning("partition %s: lease not renewed in time; stopping its ingest", name)
                self._stop_partition(p, release=False)
                self.leases.held.pop(name, None)
                self.lost += 1

    # ------------------------------------------------------------ one round
    def _lease(self, p: int) -> str:
        return f"partition/{partition_name(p, self.count)}"

    def _tick(self) -> None:
        L = self.leases
        if self.node_lease not in L.held:
            L.acquire(self.node_lease)
        lost = L.renew(list(L.held))
        for name in lost:
            if name.startswith("partition/"):
                p = int(name.rsplit("p", 1)[1])
                log.warning("partition %s was taken over by another collector; stopping its ingest", name)
                self._stop_partition(p, release=False)
                self.lost += 1
            elif name == self.node_lease:
                L.acquire(self.node_lease)
        self._expire_local()
        mono = time.monotonic()
        if mono - self._sites_at >= self.refresh_s:
            self._sites_at = mono
            try:
                known = set(self.store.sites())
            except (StorageUnavailable, psycopg.Error) as e:
                log.warning("cannot read the sites of known agents: %s", e)
                known = set()
            self._sites = known | set(self.cfg_sites)
        topics: dict[int, list[str]] = {}
        for s in sorted(self._sites):
            try:
                topics.setdefault(partition_of(s, self.count), []).append(site_topic(s))
            except wire.WireError as e:
                log.warning("site %r cannot be subscribed: %s", s, e)
        self._topics = topics
        live = {r[1] for r in L.live("node/")} | {self.holder}
        fair = math.ceil(self.count / len(live))
        held = sorted(self.running)
        # too many (a collector joined): release the extras gracefully, highest first
        for p in held[fair:][::-1]:
            log.info("partition %s: releasing it for balance (%d collectors)", self._lease(p), len(live))
            self._stop_partition(p, release=True)
        # too few: take free or expired partitions, starting after our own position (spreads the race)
        taken: set[int] = set()
        if len(self.running) < fair:
            owned = {r[0] for r in L.live("partition/")}
            start = zlib.crc32(self.holder.encode()) % self.count
            for i in range(self.count):
                if len(self.running) >= fair or self._stop.is_set():
                    break
                p = (start + i) % self.count
                name = self._lease(p)
                if p in self.running or name in owned:
                    continue
                epoch = L.acquire(name)
                if epoch is not None:
                    log.info("partition %s: taken (epoch %d)", name, epoch)
                    self.takeovers += 1
                    self.running[p] = None
                    taken.add(p)
        self._take(taken)       # rule state loaded before the partitions' ingest starts
        # (re)start ingest of held partitions whose sites changed
        for p in list(self.running):
            want = topics.get(p, [])
            ing = self.running[p]
            if ing is None and want:
                self._start_partition(p, want)
            elif ing is not None and sorted(ing.topics) != sorted(want):
                self._stop_partition(p, release=False, keep=True)
                if want:
                    self._start_partition(p, want)
        if self.running and all(i is None or i.connected.is_set() for i in self.running.values()):
            self.connected.set()
        else:
            self.connected.clear()

    def _start_partition(self, p: int, topics: list[str]) -> None:
        name = self._lease(p)
        cid = client_id(self.mqtt_cfg.client_id, p, self.count)
        ing = Ingest(self.mqtt_cfg.model_copy(update={"client_id": cid}), FencedStore(self.store, self.leases, name),
                     self.ingest_cfg, self.clock_cfg)
        ing.topics = list(topics)
        ing.subscribers = self.subscribers
        ing.may_connect = lambda n=name: self.leases.valid(n, margin_s=min(1.0, self.lease_s / 10))
        self.running[p] = ing.start()
        log.info("partition %s: ingest started as %s for %d site(s)", name, cid, len(topics))

    def _stop_partition(self, p: int, release: bool, keep: bool = False) -> None:
        ing = self.running.get(p)
        if ing is not None:
            ing.stop()
            with self._lock:
                for k, v in ing.stats.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "last_commit_ms":
                        self.retired[k] = self.retired.get(k, 0) + v
        if keep:
            self.running[p] = None
            return
        self.running.pop(p, None)
        self._drop(p, graceful=release)
        if release:
            self.leases.release(self._lease(p))

    # ------------------------------------------------------------ the Ingest interface
    def health(self) -> tuple[bool, str | None]:
        if self._last_error:
            return False, self._last_error
        for p, ing in list(self.running.items()):
            if ing is None:
                continue
            ok, why = ing.health()
            if not ok:
                return False, f"partition {partition_name(p, self.count)}: {why}"
        return True, None

    def snapshot(self, detail: bool = True) -> dict:
        ok, why = self.health()
        with self._lock:
            out: dict[str, Any] = dict(self.retired)
        for ing in list(self.running.values()):
            if ing is None:
                continue
            for k, v in ing.stats.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "last_commit_ms":
                    out[k] = out.get(k, 0) + v
        out.update(connected=self.connected.is_set(), ok=ok, stalled=why,
                   queued=sum(len(i._pending) for i in self.running.values() if i is not None),
                   partitions={"count": self.count, "held": [partition_name(p, self.count) for p in sorted(self.running)],
                               "takeovers": self.takeovers, "lost": self.lost})
        if detail:
            out["holder"] = self.holder
            out["client_id"] = self.mqtt_cfg.client_id + "-pNN"
        return out
