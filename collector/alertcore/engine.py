"""The alert rule engine.

Pure evaluation (rules x samples/events -> alert state machine) plus a
storage-backed alert lifecycle (``AlertStore``). Times are always item
timestamps (epoch ms) for what the data says, and ``clock()`` for human
actions; ``tick(now_ms)`` advances durations (``for``, staleness, escalation,
ack and silence expiry).

Signal semantics: a series' last value holds until the next sample, for at
most ``lookback``; a pending alert fires at exactly ``pending since + for``
if the held value still satisfied the condition then (so results do not
depend on how often ``tick`` runs). Out-of-order samples (older than the
last one of the same series) are ignored by the rules.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import deque
from fnmatch import fnmatchcase
from itertools import groupby
from typing import Callable, Iterable, Mapping

from campus_sense import wire
from collector.store.alerts import AlertStore

from .config import RuleSet
from .actions import HumanActions
from .inhibit import Inhibition
from .kinds import KINDS
from .labels import match_all, parse_matchers
from .model import Alert, AlertChange, AlertError, HistoryEntry, Silence
from .silence import in_maintenance, silenced

log = logging.getLogger("campus_sense.rules")

_META_KEYS = ("site", "building", "room", "type", "agent")
_SEP = "\x1f"      # measurement / device in a device_m liveness key (PostgreSQL text cannot hold NUL)


def _wall_ms() -> int:
    return int(time.time() * 1000)


class _Rule:
    """A rule compiled for fast evaluation."""

    __slots__ = ("idx", "m", "name", "kind", "k", "cal", "scope_all", "scope", "scope_tags", "scope_cache",
                 "item_matchers", "by", "field", "op", "value", "clear_op_value", "for_ms", "clear_for",
                 "lookback", "value_is_str", "flap", "escalate_after", "levels", "lo", "hi", "inside", "data")

    def __init__(self, idx: int, m, rs: RuleSet):
        self.idx, self.m, self.name, self.kind = idx, m, m.name, m.kind
        self.k = KINDS[m.kind]
        self.cal = rs.calendars[m.schedule] if m.schedule else None
        sc = m.scope
        self.scope = [(k, getattr(sc, k)) for k in ("site", "building", "room", "type", "device", "agent")
                      if getattr(sc, k) is not None]
        self.scope_tags = list(sc.tags.items())
        self.scope_all = not self.scope and not self.scope_tags
        self.scope_cache: dict[str, bool] = {}
        self.item_matchers = parse_matchers(m.item_tags) if m.item_tags else None
        self.by = m.by if m.by is not None else self.k.by_default
        self.field = getattr(m, "field", None)
        self.flap = m.flap or rs.defaults.flap
        self.escalate_after = m.escalate_after if m.escalate_after is not None else rs.defaults.escalate_after
        self.op = self.value = self.clear_op_value = None
        self.for_ms = self.clear_for = self.lookback = 0
        self.value_is_str = False
        self.levels: list[tuple[float, str]] = []
        self.data = None
        self.k.compile(self, m)

    def tagkey(self, tags: Mapping[str, str] | None) -> tuple:
        if not tags:
            return ()
        if self.by is None:
            return tuple(sorted(tags.items()))
        return tuple((k, tags[k]) for k in self.by if k in tags)


class _St:
    """Evaluation state of one rule x subject."""

    __slots__ = ("key", "rule", "subject", "state", "alert", "cond_since", "clear_since", "last_t", "last_v",
                 "prev_t", "prev_v", "acc", "in_zone", "excess", "out_since", "flips", "flapping")

    def __init__(self, key: tuple, rule: _Rule, subject: dict):
        self.key, self.rule, self.subject = key, rule, subject
        self.state = "inactive"
        self.alert: Alert | None = None
        self.cond_since = self.clear_since = self.last_t = self.prev_t = self.out_since = None
        self.last_v = self.prev_v = None
        self.acc = 0.0
        self.in_zone = False
        self.excess = 0.0
        self.flips: deque = deque()
        self.flapping = False

    def reset(self) -> None:
        self.state = "inactive"
        self.alert = None
        self.cond_since = self.clear_since = None
        self.flapping = False


class _Agent:
    __slots__ = ("last_seen", "dead_since", "site", "building")

    def __init__(self, t: int):
        self.last_seen, self.dead_since, self.site, self.building = t, None, None, None


class RuleEngine(HumanActions):
    """Evaluate rules on samples/events and maintain persistent alerts.

    rules: a ``RuleSet`` (``load_rules``); store: an ``AlertStore``;
    device_meta: ``device_id -> {site, building, room, type, tags, agent}`` (or None if unknown);
    clock: ``() -> epoch ms`` for human actions and for ``tick()`` without argument;
    topology: ``device_id -> upstream switch id`` (callable or mapping), for topology inhibition;
    owns: ``site -> bool``, the sites whose rules this engine runs (partitions: collector/partitions.py),
    None = every site. Data of other sites is ignored, ticks judge only owned subjects, and
    ``take_over`` / ``hand_over`` move a partition's state through the store.
    events_since: ``(since_ms, types) -> stored events`` (``Store.events_since``), with replay_ms > 0:
    ``replay`` (after the listeners are attached; ``take_over`` calls it) re-evaluates the stored events
    of the last ``replay_ms`` that a killed or paused collector committed but did not evaluate.
    All public methods are thread-safe. Listeners are called after the engine lock is released.
    """

    #: after ``take_over`` absence / agent_offline wait this long before judging the new sites: their
    #: last-seen times in the store may be up to one persist interval old, and the partition's queued
    #: messages (the broker redelivers what the old holder did not acknowledge) are still coming
    takeover_grace_ms = 30_000

    def __init__(self, rules: RuleSet, store: AlertStore,
                 device_meta: Callable[[str], Mapping | None] | None = None,
                 clock: Callable[[], int] | None = None,
                 topology: Callable[[str], str | None] | Mapping[str, str] | None = None,
                 persist_every_ms: int = 60_000,
                 owns: Callable[[str | None], bool] | None = None,
                 events_since: Callable[[int, Iterable[str]], Iterable[dict]] | None = None,
                 replay_ms: int = 0):
        self.ruleset = rules
        self.owns = owns
        self._events_since = events_since
        self.replay_ms = replay_ms
        self._replaying = False     # only inside the engine lock, while ``replay`` evaluates stored events
        self.store = store
        self._device_meta = device_meta or (lambda d: None)
        self.clock = clock or _wall_ms
        self.topology = topology
        self.listeners: list[Callable[[AlertChange], None]] = []
        self._lock = threading.RLock()
        self._persist_every = persist_every_ms
        #: None, or ``singleton(name) -> bool`` (collector/partitions.py ``Leases.singleton``): with a
        #: shared store only the holder of ``escalation`` runs escalation and ack expiry
        self.singleton: Callable[[str], bool] | None = None
        self._synced_at = float("-inf")
        self._mw_rows: list | None = None
        #: (sites, until): absence / agent_offline do not judge sites just taken over before ``until``
        self._holds: list[tuple[Callable[[str | None], bool], int]] = []
        self._owns_memo: dict = {}
        with self._lock:
            self._setup(rules)

    def reload(self, rules: RuleSet) -> None:
        """Switch to new rules (a changed rule file) without a restart: state is rebuilt from the store
        like after a restart; alerts of rules that no longer exist are resolved (``rule_removed``)."""
        with self._lock:
            self._persist()
            changes = self._setup(rules)
        self._dispatch(changes)

    def _setup(self, rules: RuleSet) -> list[AlertChange]:
        self.ruleset = rules
        self._rules = [_Rule(i, m, rules) for i, m in enumerate(rules.rules)]
        self._rule_by_name = {r.name: r for r in self._rules}
        self._by_m: dict[str, list[_Rule]] = {}
        self._by_event: dict[str, list[tuple[_Rule, str]]] = {}
        self._inputs: dict[str, list[_Rule]] = {"samples": [], "events": [], "devices": [], "agents": []}
        for r in self._rules:
            self._inputs[r.k.input].append(r)
            if r.k.input == "samples":
                self._by_m.setdefault(r.m.measurement, []).append(r)
            elif r.k.input == "events":
                for e in r.m.event:
                    self._by_event.setdefault(e, []).append((r, "fire"))
                for e in r.m.clear_event or []:
                    self._by_event.setdefault(e, []).append((r, "clear"))
        self._absence = self._inputs["devices"]
        self._standby_m: dict[str, list] = {}
        for typ, ts in rules.staleness.types.items():
            if ts.standby:
                self._standby_m.setdefault(ts.standby.measurement, []).append((typ, ts.standby))
        self._track = bool(self._absence)
        self._alive_by_m: dict[str, dict[str, int]] = {r.m.measurement: {} for r in self._absence
                                                        if r.m.measurement}
        self._alive: dict[str, int] = {}
        self._absence_firing: dict[str, set] = {}
        self._standby: dict[str, bool] = {}
        self._agents: dict[str, _Agent] = {}
        self._meta: dict[str, dict] = {}
        self._device_agent: dict[str, str] = {}
        self._states: dict[tuple, _St] = {}
        self._active: dict[int, Alert] = {}
        self._by_alert: dict[int, tuple] = {}
        self._deadlines: set[tuple] = set()
        self._silences: list[Silence] = self.store.silences()
        self._active_silences: frozenset = frozenset()
        self._api_maintenance = self._load_api_maintenance()
        self._gap_end: dict[tuple, int] = {}   # rule x subject -> last time a collect: false window covered it
        self._dirty = False
        self._mark_t: int | None = None
        self._now = 0
        self.bad_items = 0
        self._persisted_at: int | None = None
        self._saved: dict[tuple, tuple] = {}    # (kind, key) -> (t, extra, site) last written
        return self._restore()

    # ================================================================ public: data in
    def samples_of(self, packed: list[dict]) -> list[dict]:
        """A metrics message's items as received (``wire.Message.packed``) -> the samples this engine
        needs: every row of a table whose measurement a rule or a standby check reads, the first
        row of any other table (the device's sign of life: same measurement, device and time)."""
        out: list[dict] = []
        for it in packed:
            if "rows" not in it:
                out.append(it)
            elif it["m"] in self._by_m or it["m"] in self._standby_m:
                out += wire.expand([it])
            else:
                out += wire.expand([dict(it, rows=1, tags={k: v[:1] for k, v in (it.get("tags") or {}).items()},
                                         f={k: v[:1] for k, v in it["f"].items()})])
        return out

    def on_samples(self, items: Iterable[dict], agent: str | None = None,
                   site: str | None = None) -> list[AlertChange]:
        """Evaluate wire samples ({"m","d","t","tags","f"}) of ``agent`` at ``site``; returns the alert
        changes (also sent to listeners)."""
        changes: list[AlertChange] = []
        with self._lock:
            if self.owns is not None and not self.owns(site):
                return changes
            tmax = self._samples(items, agent, changes)
            if agent is not None and tmax is not None:
                self._agent_seen(agent, tmax, changes, site)
            self._post(changes)
        self._dispatch(changes)
        return changes

    def on_events(self, items: Iterable[dict], agent: str | None = None,
                  site: str | None = None, replay: bool = False) -> list[AlertChange]:
        """Evaluate wire events ({"d","type","t","severity","tags","data"}). ``replay``: stored events
        evaluated again (``replay``): those the alert store shows as evaluated change nothing."""
        changes: list[AlertChange] = []
        with self._lock:
            if self.owns is not None and not self.owns(site):
                return changes
            self._replaying = replay
            try:
                tmax = self._events(items, agent, changes)
            finally:
                self._replaying = False
            if agent is not None and tmax is not None:
                self._agent_seen(agent, tmax, changes, site)
            self._post(changes)
        self._dispatch(changes)
        return changes

    def on_agent_state(self, agent: str, online: bool, t_ms: int, site: str | None = None,
                       building: str | None = None) -> list[AlertChange]:
        """Birth/heartbeat (online=True) or death/Last Will (online=False) of an agent."""
        changes: list[AlertChange] = []
        with self._lock:
            if self.owns is not None and not self.owns(site):
                return changes
            ag = self._agents.get(agent)
            if ag is None:
                ag = self._agents[agent] = _Agent(t_ms)
            if site:
                ag.site = site
            if building:
                ag.building = building
            if online:
                if ag.dead_since is not None and t_ms >= ag.dead_since:
                    ag.dead_since = None
                    self._dirty = True
                self._agent_seen(agent, t_ms, changes)
            elif ag.dead_since is None:
                ag.dead_since = t_ms
                self._dirty = True
            self._now = max(self._now, t_ms)
            self._post(changes)
        self._dispatch(changes)
        return changes

    def track_device(self, device_id: str, t_ms: int, agent: str | None = None, site: str | None = None) -> None:
        """Declare a device as expected (e.g. from the agent's config) so staleness applies before its first sample."""
        with self._lock:
            if self.owns is not None and not self.owns(site):
                return
            if device_id not in self._alive:
                self._alive[device_id] = t_ms
                for am in self._alive_by_m.values():
                    am.setdefault(device_id, t_ms)
            if agent:
                self._device_agent.setdefault(device_id, agent)

    def tick(self, now_ms: int | None = None) -> list[AlertChange]:
        """Advance time: for-durations, clear-durations, staleness, agent offline, escalation, ack/silence expiry."""
        changes: list[AlertChange] = []
        with self._lock:
            now = self.clock() if now_ms is None else int(now_ms)
            self._now = max(self._now, now)
            self._owns_memo = {}
            for key in list(self._deadlines):
                st = self._states.get(key)
                if st is None:
                    self._deadlines.discard(key)
                    continue
                if self.owns is not None and not self._mine(self._site_of(st)):
                    continue
                if not st.rule.k.on_deadline(self, st, now, changes):
                    self._deadlines.discard(key)
            self._nocollect_open = [w for w in self.maintenance_windows()
                                    if not w.collect and w.calendar.contains(now)]
            for r in self._inputs["devices"] + self._inputs["agents"]:
                r.k.on_tick(self, r, now, changes)
            if getattr(self.store, "shared", False):
                self._sync_shared()
                self._tick_shared(now, changes)
            else:
                self._tick_alerts(now, changes)
            ids = self._muting_now(self._now)
            if ids != self._active_silences:
                self._dirty = True
            self._post(changes)
            if self._persisted_at is None:
                self._persisted_at = now
            elif now - self._persisted_at >= self._persist_every:
                self._persist()
                self._persisted_at = now
        self._dispatch(changes)
        return changes

    def flush(self) -> None:
        """Persist last-seen times (devices, agents) now; ``tick`` does it every ``persist_every_ms``.
        A restarted engine reloads them, so a device that died while the collector was down still
        goes stale."""
        with self._lock:
            self._persist()

    def _persist(self) -> None:
        """Write the last-seen rows that changed since the last write (with their site when the store is
        shared: a collector taking a partition over loads its sites' rows)."""
        da = self._device_agent
        site = self._site_of_device if getattr(self.store, "shared", False) else (lambda d: None)
        rows = [("device", d, t, da.get(d), site(d)) for d, t in self._alive.items()]
        for m, am in self._alive_by_m.items():
            rows += [("device_m", f"{m}{_SEP}{d}", t, None, site(d)) for d, t in am.items()]
        rows += [("agent", n, ag.last_seen, json.dumps([ag.dead_since, ag.site, ag.building]), ag.site)
                 for n, ag in self._agents.items()]
        rows += [("standby", d, int(v), None, site(d)) for d, v in self._standby.items()]
        saved = self._saved
        rows = [r for r in rows if saved.get(r[:2]) != r[2:]]
        try:
            self.store.save_liveness(rows)
        except Exception:  # noqa: BLE001 - persistence trouble must not stop evaluation
            log.exception("could not persist last-seen times")
            return
        for r in rows:
            saved[r[:2]] = r[2:]

    # ================================================================ partitions: whose rules run here
    def take_over(self, sites: Callable[[str | None], bool]) -> list[AlertChange]:
        """This engine now runs the rules of ``sites`` (a partition taken over): load their active and
        pending alerts (``for:`` continues from the original start) and last-seen times from the store.
        Absence and agent_offline do not judge them for ``takeover_grace_ms`` (the partition's queued
        messages arrive first)."""
        with self._lock:
            now = self.clock()
            self._holds = [h for h in self._holds if h[1] > now] + [(sites, now + self.takeover_grace_ms)]
            changes = self._restore(sites)
        self._dispatch(changes)
        self.replay(sites)
        return changes

    def replay(self, sites: Callable[[str | None], bool] | None = None) -> int:
        """Evaluate the stored events of the last ``replay_ms`` of ``sites`` (default: the owned ones)
        again, oldest first, through ``on_events``: a collector killed (or paused past its lease) after
        a commit but before its engine saw the messages left them stored, acknowledged and never
        evaluated. Idempotent (``evaluated``): an event the alert store shows as evaluated raises no
        alert, count or notification. Call it before the sites' ingest starts. Returns the events read."""
        if not self.replay_ms or self._events_since is None:
            return 0
        want = sites or self.owns
        try:
            rows = self._events_since(self.clock() - self.replay_ms, set(self._by_event))
        except Exception:  # noqa: BLE001 - a store error must not stop a start or a take-over
            log.exception("could not read the stored events to replay")
            return 0
        n = 0
        for (agent, site), grp in groupby(rows, key=lambda e: (e["agent"], e["site"])):
            if want is not None and not want(site):
                continue
            items = [{"d": e["device"], "type": e["type"], "t": e["ts_ms"], "severity": e["severity"],
                      "tags": e["tags"], "data": e["data"]} for e in grp]
            n += len(items)
            try:
                self.on_events(items, agent=agent, site=site, replay=True)
            except Exception:  # noqa: BLE001 - bad stored data must not stop the engine
                log.exception("replaying %d stored event(s) of %s failed", len(items), agent)
        if n:
            log.info("replayed %d stored event(s) of the last %d s", n, self.replay_ms // 1000)
        return n

    def evaluated(self, r: _Rule, key: tuple, t: int) -> str | None:
        """While replaying: whether the alert store shows the event of rule ``r`` x subject ``key`` at ``t``
        as evaluated already: ``"active"`` (not after the active alert's last update: the event that
        fired it or a repeat it counted), ``"resolved"`` (not after the newest resolved alert's
        resolution), else None (also outside a replay)."""
        if not self._replaying:
            return None
        st = self._states.get(key)
        if st is not None and st.alert is not None:
            return "active" if t <= st.alert.updated_ms else None
        last = self.store.query({"fingerprint": self._fingerprint(r, self._subject(key)), "state": "all",
                                 "limit": 1})
        if not last:
            return None
        a = last[0]
        if a.active:
            return "active" if t <= a.updated_ms else None
        return "resolved" if t <= (a.resolved_ms or a.updated_ms) else None

    def hand_over(self, sites: Callable[[str | None], bool]) -> None:
        """Forget the evaluation state of ``sites`` (their partition moved to another collector):
        last-seen times are written first; alerts stay as they are, the new holder continues them."""
        with self._lock:
            self._persist()
            states = [(k, st) for k, st in self._states.items() if sites(self._site_of(st))]
            devs = {d for src in (self._alive, self._device_agent, self._standby, self._absence_firing,
                                  *self._alive_by_m.values()) for d in src}
            devs = [d for d in devs if sites(self._site_of_device(d))]
            agents = [n for n in self._agents if sites(self._site_of_agent(n))]
            for key, st in states:
                del self._states[key]
                self._deadlines.discard(key)
                self._gap_end.pop(key, None)
                if st.alert is not None:
                    self._active.pop(st.alert.id, None)
                    self._by_alert.pop(st.alert.id, None)
            for d in devs:
                for src in (self._alive, self._device_agent, self._standby, self._absence_firing,
                            *self._alive_by_m.values()):
                    src.pop(d, None)
            for n in agents:
                del self._agents[n]

    def may_judge(self, subject_id: str, now: int, agent: bool = False) -> bool:
        """Whether a tick may open an absence / agent_offline alert for this device (or agent): its site
        is owned here and was not just taken over."""
        if self.owns is None:
            return True
        site = self._site_of_agent(subject_id) if agent else self._site_of_device(subject_id)
        return self._mine(site) and not any(until > now and sites(site) for sites, until in self._holds)

    def _mine(self, site: str | None) -> bool:
        v = self._owns_memo.get(site)
        if v is None:
            v = self._owns_memo[site] = bool(self.owns(site))
        return v

    def _site_of_agent(self, agent: str | None) -> str | None:
        ag = self._agents.get(agent) if agent else None
        return ag.site if ag is not None else None

    def _site_of_device(self, d: str) -> str | None:
        return self._meta_of(d).get("site") or self._site_of_agent(self._device_agent.get(d))

    def _site_of(self, st: _St) -> str | None:
        if st.alert is not None and st.alert.labels.get("site"):
            return st.alert.labels["site"]
        sid = st.subject["id"]
        return self._site_of_agent(sid) if st.rule.k.subject == "agent" else self._site_of_device(sid)

    # ================================================================ public: queries
    def alerts(self, filter: dict | None = None) -> list[Alert]:
        """Alerts from the store; filter keys see ``AlertStore.query`` (default: active ones)."""
        return self.store.query(filter)

    def alert(self, alert_id: int) -> Alert | None:
        return self.store.get(alert_id)

    def history(self, alert_id: int) -> list[HistoryEntry]:
        return self.store.history(alert_id)

    def invalidate_device(self, device_id: str | None = None) -> None:
        """Forget cached device metadata (one device, or all) after the campus model changed."""
        with self._lock:
            if device_id is None:
                self._meta.clear()
                for r in self._rules:
                    r.scope_cache.clear()
            else:
                self._meta.pop(device_id, None)
                for r in self._rules:
                    r.scope_cache.pop(device_id, None)

    # ================================================================ samples
    def _samples(self, items, agent, changes) -> int | None:
        by_m = self._by_m
        track = self._track or bool(self._standby_m)
        standby_m = self._standby_m
        alive = self._alive
        alive_by_m = self._alive_by_m
        absence_firing = self._absence_firing
        device_agent = self._device_agent
        tmax = None
        for it in items:
            try:
                m, d, t = it["m"], it["d"], it["t"]
            except (KeyError, TypeError):
                self.bad_items += 1
                continue
            if type(t) is not int:
                self.bad_items += 1
                continue
            if tmax is None or t > tmax:
                tmax = t
            if agent is not None and d not in device_agent:
                device_agent[d] = agent
            f = it.get("f")
            if track and (m != "agent_poll" or not f or f.get("ok") is not False):
                # a sign of life (a failed poll is not: the agent tried, the device did not answer)
                if m in standby_m:
                    self._standby_update(m, d, f or {})
                old = alive.get(d)
                if old is None or t > old:
                    alive[d] = t
                if alive_by_m:
                    am = alive_by_m.get(m)
                    if am is not None and (d not in am or t > am[d]):
                        am[d] = t
                if absence_firing and d in absence_firing:
                    self._alive_mark(d, t, m, changes)
            rules = by_m.get(m)
            if rules is None:
                continue
            if not f:
                continue
            tags = it.get("tags")
            for r in rules:
                v = f.get(r.field)
                if v is None:
                    continue
                if not r.scope_all and not self._in_scope(r, d):
                    continue
                if r.item_matchers is not None and not match_all(r.item_matchers, self._item_labels(d, tags)):
                    continue
                key = (r.idx, d, r.tagkey(tags))
                st = self._states.get(key)
                if st is None:
                    st = self._new_state(r, key, d)
                r.k.on_sample(self, r, st, t, v, r.cal is None or r.cal.contains(t), changes)
        if tmax is not None and tmax > self._now:
            self._now = tmax
        return tmax

    def _standby_update(self, m: str, d: str, f: dict) -> None:
        typ = self._meta_of(d).get("type")
        for styp, s in self._standby_m[m]:
            if styp == typ and s.field in f:
                self._standby[d] = f[s.field] in s.values

    def _alive_mark(self, d, t, m, changes) -> None:
        old = self._alive.get(d)
        if old is None or t > old:
            self._alive[d] = t
        am = self._alive_by_m.get(m) if m is not None else None
        if am is not None and (d not in am or t > am[d]):
            am[d] = t
        keys = self._absence_firing.get(d)
        if keys:
            for key in list(keys):
                st = self._states.get(key)
                if st is None or st.state != "firing":
                    keys.discard(key)
                    continue
                if st.rule.m.measurement is None or st.rule.m.measurement == m:
                    if st.alert is not None and t >= (st.alert.fired_ms or 0):
                        self._resolve(st, t, changes, detail={"seen_ms": t})
                        keys.discard(key)

    def _cond(self, r: _Rule, st: _St, t: int, v, cond: bool, clearing: bool, changes) -> None:
        if st.state != "firing":
            if cond:
                if st.cond_since is None:
                    st.cond_since = t
                    if r.for_ms > 0:
                        self._open(st, "pending", t, v, r.m.severity, changes)
                        self._deadlines.add(st.key)
                if t - st.cond_since >= r.for_ms:
                    self._fire(st, t, changes)
            else:
                if st.state == "pending":
                    self._cancel(st, t, changes)
                st.cond_since = None
        else:
            if clearing:
                if st.clear_since is None:
                    st.clear_since = t
                    self._deadlines.add(st.key)
                if t - st.clear_since >= self._clear_for(st):
                    self._try_resolve(st, t, changes)
            else:
                st.clear_since = None

    def _gap(self, st: _St, t: int, changes) -> None:
        """No data for longer than lookback: the condition is unknown, a pending alert starts over."""
        if st.state == "pending" and t - st.last_t > st.rule.lookback:
            self._cancel(st, st.last_t + st.rule.lookback, changes, reason="no data")

    def _clear_for(self, st: _St) -> int:
        r = st.rule
        if st.flapping and r.flap:
            return max(r.clear_for, r.flap.window)
        return r.clear_for

    def advance_held(self, st: _St, now: int, changes) -> bool:
        """Timers of a held-value state (pending ``for``, ``clear_for``, no data for ``lookback``);
        True while one is still running."""
        r = st.rule
        self._advance(st, now, changes)
        if st.state == "pending" and st.last_t is not None and now > st.last_t + r.lookback:
            self._cancel(st, st.last_t + r.lookback, changes, reason="no data")
        return st.state == "pending" or (st.state == "firing" and st.clear_since is not None)

    def _advance(self, st: _St, now: int, changes) -> None:
        """Fire/resolve at deadlines that passed while the last value held (up to lookback)."""
        r = st.rule
        horizon = now if st.last_t is None else min(now, st.last_t + r.lookback)
        if st.state == "pending" and st.cond_since is not None:
            dl = st.cond_since + r.for_ms
            if dl <= horizon:
                self._fire(st, dl, changes)
        if st.state == "firing" and st.clear_since is not None:
            dl = st.clear_since + self._clear_for(st)
            if dl <= horizon:
                self._try_resolve(st, dl, changes)

    # ================================================================ events
    def _events(self, items, agent, changes) -> int | None:
        tmax = None
        for it in items:
            try:
                typ, d, t = it["type"], it["d"], it["t"]
            except (KeyError, TypeError):
                self.bad_items += 1
                continue
            if type(t) is not int:
                self.bad_items += 1
                continue
            if tmax is None or t > tmax:
                tmax = t
            if agent is not None and d not in self._device_agent:
                self._device_agent[d] = agent
            if self._track:
                self._alive_mark(d, t, None, changes)
            lst = self._by_event.get(typ)
            if not lst:
                continue
            tags = it.get("tags") or {}
            for r, role in lst:
                if not r.scope_all and not self._in_scope(r, d):
                    continue
                if r.item_matchers is not None and not match_all(r.item_matchers, self._item_labels(d, tags)):
                    continue
                r.k.on_event(self, r, role, it, (r.idx, d, r.tagkey(tags)), changes)
        if tmax is not None and tmax > self._now:
            self._now = tmax
        return tmax

    # ================================================================ staleness / agents / alerts
    def _stale_after(self, r: _Rule, d: str) -> int | None:
        st = self.ruleset.staleness
        ts = st.types.get(self._meta_of(d).get("type") or "")
        if ts is not None and ts.standby is not None and self._standby.get(d):
            return ts.standby.after
        if r.m.after is not None:
            return r.m.after
        if ts is not None and ts.after is not None:
            return ts.after
        return st.default

    def _agent_seen(self, agent: str, t: int, changes, site: str | None = None) -> None:
        ag = self._agents.get(agent)
        if ag is None:
            ag = self._agents[agent] = _Agent(t)
            ag.site = site
            return
        if site and not ag.site:
            ag.site = site
        if t > ag.last_seen:
            ag.last_seen = t
        if ag.dead_since is not None and t > ag.dead_since:
            ag.dead_since = None
            self._dirty = True
        if ag.dead_since is None:
            for r in self._inputs["agents"]:
                r.k.seen(self, r, agent, t, changes)

    def _tick_alerts(self, now: int, changes) -> None:
        for a in list(self._active.values()):
            key = self._by_alert.get(a.id)
            st = self._states.get(key) if key else None
            if st is None:
                continue
            if a.acked_by is not None and a.ack_expires_ms is not None and a.ack_expires_ms <= now:
                a = self._update(st, a.ack_expires_ms, "ack_expired", None, {"acked_by": a.acked_by}, changes,
                                 acked_by=None, acked_ms=None, ack_comment=None, ack_expires_ms=None,
                                 escalation_since_ms=a.ack_expires_ms)
            esc = st.rule.escalate_after
            if esc and a.state == "firing" and a.severity == "warning" and a.acked_by is None \
                    and a.suppressed is None:
                since = a.escalation_since_ms if a.escalation_since_ms is not None else a.fired_ms
                if since is not None and since + esc <= now:
                    self._update(st, since + esc, "escalated", None, {"from": "warning", "to": "critical",
                                                                      "after_ms": esc}, changes,
                                 severity="critical", escalated_ms=since + esc)

    # ================================================================ shared store (PostgreSQL, several collectors)
    def _sync_shared(self) -> None:
        """Other collectors change the same alerts, silences and maintenance windows: re-read them (at
        most every second) so acks, escalations and resolutions made through another collector's API
        are what this engine acts on."""
        mono = time.monotonic()
        if mono - self._synced_at < 1.0:
            return
        self._synced_at = mono
        fresh = {a.id: a for a in self.store.active()}
        for aid, a in list(self._active.items()):
            new = fresh.get(aid)
            key = self._by_alert.get(aid)
            st = self._states.get(key) if key else None
            if new is None:         # resolved elsewhere (by hand through another collector)
                self._active.pop(aid, None)
                self._by_alert.pop(aid, None)
                if st is not None:
                    st.reset()
                    self._deadlines.discard(st.key)
                self._dirty = True
            elif new != a:
                self._active[aid] = new
                if st is not None and st.alert is not None and st.alert.id == aid:
                    st.alert = new
                    st.state = new.state
        sil = self.store.silences()
        if sil != self._silences:
            self._silences = sil
            self._dirty = True
        rows = self.store.maintenance_list()
        if rows != self._mw_rows:
            self._api_maintenance = self._load_api_maintenance(rows)
            self._dirty = True

    def _tick_shared(self, now: int, changes) -> None:
        """Ack expiry and escalation of every collector's alerts, where the ``escalation`` singleton is
        held; each change is conditional (``expect``), so two engines never escalate one alert twice."""
        if self.singleton is not None and not self.singleton("escalation"):
            return
        for a in sorted(self.store.active(), key=lambda x: x.id):
            r = self._rule_by_name.get(a.rule)
            if r is None:
                continue
            if a.acked_by is not None and a.ack_expires_ms is not None and a.ack_expires_ms <= now:
                a = self._shared_update(a, a.ack_expires_ms, "ack_expired", {"acked_by": a.acked_by}, changes,
                                        {"acked_by": a.acked_by, "ack_expires_ms": a.ack_expires_ms},
                                        acked_by=None, acked_ms=None, ack_comment=None, ack_expires_ms=None,
                                        escalation_since_ms=a.ack_expires_ms)
            esc = r.escalate_after
            if esc and a.state == "firing" and a.severity == "warning" and a.acked_by is None \
                    and a.suppressed is None:
                since = a.escalation_since_ms if a.escalation_since_ms is not None else a.fired_ms
                if since is not None and since + esc <= now:
                    self._shared_update(a, since + esc, "escalated", {"from": "warning", "to": "critical",
                                                                      "after_ms": esc}, changes,
                                        {"severity": "warning", "acked_by": None, "suppressed": None},
                                        severity="critical", escalated_ms=since + esc)

    def _shared_update(self, a: Alert, t: int, action: str, detail: dict, changes, expect: dict,
                       **fields) -> Alert:
        try:
            new = self.store.update(a.id, t, action, None, detail, require_active=True, expect=expect, **fields)
        except AlertError:
            return a            # changed meanwhile by another collector: the next tick sees it
        if new.id in self._active:
            self._active[new.id] = new
            key = self._by_alert.get(new.id)
            st = self._states.get(key) if key else None
            if st is not None:
                st.alert = new
                st.state = new.state
        changes.append(AlertChange(action, new, t, None, dict(detail)))
        return new

    # ================================================================ lifecycle
    def _new_state(self, r: _Rule, key: tuple, subject_id: str) -> _St:
        st = _St(key, r, self._subject(key))
        self._states[key] = st
        return st

    @staticmethod
    def _subject(key: tuple) -> dict:
        subj = {"id": key[1]}
        if key[2]:
            subj["tags"] = dict(key[2])
        return subj

    @staticmethod
    def _fingerprint(r: _Rule, subject: dict) -> str:
        return hashlib.sha1(json.dumps([r.name, subject], sort_keys=True).encode()).hexdigest()[:16]

    def _labels(self, st: _St) -> dict:
        r = st.rule
        sid = st.subject["id"]
        if r.k.subject == "agent":
            labels = {"agent": sid}
            ag = self._agents.get(sid)
            meta = self._meta_of(sid)
            for k in ("site", "building"):
                v = (getattr(ag, k, None) if ag else None) or meta.get(k)
                if v:
                    labels[k] = v
        else:
            labels = {"device": sid}
            meta = self._meta_of(sid)
            for k in _META_KEYS:
                v = meta.get(k)
                if v:
                    labels[k] = str(v)
        for k, v in (st.subject.get("tags") or {}).items():
            labels.setdefault(k, v)
        labels.update(r.m.labels)
        labels["rule"] = labels["alertname"] = r.name
        labels["kind"] = r.kind
        return labels

    def _summary(self, st: _St, labels: dict, value) -> str:
        tmpl = st.rule.m.summary
        if not tmpl:
            return ""
        ctx = _Fmt(labels)
        ctx["value"] = value
        try:
            return tmpl.format_map(ctx)
        except (ValueError, TypeError, IndexError, AttributeError):
            return tmpl

    def _open(self, st: _St, state: str, t: int, value, severity: str, changes, detail: dict | None = None):
        r = st.rule
        labels = self._labels(st)
        fp = self._fingerprint(r, st.subject)
        a, created = self.store.open_alert(fingerprint=fp, rule=r.name, kind=r.kind, subject=st.subject,
                                           state=state, severity=severity, labels=labels,
                                           summary=self._summary(st, labels, value), value=value, t_ms=t,
                                           detail=detail)
        self._track_alert(st, a)
        if created:
            changes.append(AlertChange(state, a, t, None, dict(detail or {})))
            self._dirty = True
            self._mark(t)
        elif a.state == "pending" and state == "firing":
            self._fire(st, t, changes)
        return st.alert

    def _track_alert(self, st: _St, a: Alert) -> None:
        st.alert = a
        st.state = a.state
        self._active[a.id] = a
        self._by_alert[a.id] = st.key

    def _update(self, st: _St | None, t: int, action: str, actor, detail, changes, **fields) -> Alert:
        a = st.alert if st is not None else None
        assert a is not None
        new = self.store.update(a.id, t, action, actor, detail, **fields)
        if new.active:
            self._active[new.id] = new
            st.alert = new
            st.state = new.state
        changes.append(AlertChange(action, new, t, actor, dict(detail or {})))
        return new

    def _fire(self, st: _St, t: int, changes) -> None:
        if st.alert is None or st.state != "pending":
            self._open(st, "firing", t, st.last_v, st.rule.m.severity, changes)
        else:
            self._update(st, t, "firing", None, {"value": _jsonable(st.last_v)}, changes, state="firing",
                         fired_ms=t, escalation_since_ms=t, value=st.last_v,
                         summary=self._summary(st, st.alert.labels, st.last_v))
            self._dirty = True
            self._mark(t)
        st.clear_since = None
        st.flips.append(t)

    def _cancel(self, st: _St, t: int, changes, reason: str | None = None) -> None:
        if st.alert is not None:
            d = {"value": _jsonable(st.last_v)}
            if reason:
                d["reason"] = reason
            self._close(st.alert, st, t, "cancelled", changes, detail=d)
        st.reset()

    def _try_resolve(self, st: _St, t: int, changes) -> None:
        fl = st.rule.flap
        if fl is not None:
            while st.flips and st.flips[0] < t - fl.window:
                st.flips.popleft()
            if not st.flapping and len(st.flips) + 1 > fl.max_flips:
                st.flapping = True
                self._update(st, t, "flapping", None, {"flips": len(st.flips), "window_ms": fl.window}, changes,
                             flapping=True)
                self._deadlines.add(st.key)
                return
            if st.flapping and st.clear_since is not None and t - st.clear_since < self._clear_for(st):
                return
        self._resolve(st, t, changes)

    def _resolve(self, st: _St, t: int, changes, detail: dict | None = None) -> None:
        if st.alert is None:
            st.reset()
            return
        d = {"value": _jsonable(st.last_v)}
        if detail:
            d.update(detail)
        self._close(st.alert, st, t, "resolved", changes, detail=d)
        st.flips.append(t)

    def _close(self, a: Alert, st: _St | None, t: int, action: str, changes, actor=None, detail=None) -> Alert:
        value = a.value if st is None else st.rule.k.close_value(st, a.value)
        new = self.store.update(a.id, t, action, actor, detail, state="resolved", resolved_ms=t, value=value)
        self._active.pop(a.id, None)
        self._by_alert.pop(a.id, None)
        if st is not None:
            st.reset()
            if action == "manually_resolved":
                st.acc = 0.0  # an exposure a human resolved starts over
            self._deadlines.discard(st.key)
        changes.append(AlertChange(action, new, t, actor, dict(detail or {})))
        self._dirty = True
        self._mark(t)
        return new

    def _mark(self, t: int) -> None:
        if self._mark_t is None or t > self._mark_t:
            self._mark_t = t

    # ================================================================ suppression
    def _post(self, changes, actor: str | None = None) -> None:
        if not self._dirty:
            return
        self._dirty = False
        now = self._now
        active_sil = [s for s in self._silences if s.active_at(now)]
        self._active_silences = self._muting_now(now)
        firing = [a for a in self._active.values() if a.state == "firing"]
        inhibition = Inhibition(self.ruleset.inhibits, firing,
                                {n: ag.dead_since for n, ag in self._agents.items() if ag.dead_since is not None},
                                self.topology)
        for a in list(self._active.values()):
            if a.state != "firing":
                continue  # only firing alerts notify, so only they are silenced/inhibited
            reason, since = silenced(a, active_sil)
            if reason is None:
                reason, since = in_maintenance(a, self.maintenance_windows(), now)
            if reason is None:
                reason, since = inhibition.muted(a)
            if reason == a.suppressed:
                continue
            key = self._by_alert.get(a.id)
            st = self._states.get(key) if key else None
            if st is None or (self.owns is not None and not self.owns(self._site_of(st))):
                continue        # (a partition lost but not yet handed over: its new holder decides)
            # when it happened: when the reason began (or ended), not when we noticed
            t = max(a.updated_ms, since if reason else (self._mark_t or now))
            if reason and a.suppressed:  # still suppressed, for another reason: no new event
                self.store.set_fields(a.id, suppressed=reason)
                a.suppressed = reason
                continue
            t = min(t, max(now, a.updated_ms))
            extra = {}
            if not reason and a.state == "firing":
                extra["escalation_since_ms"] = max(t, a.escalation_since_ms or 0)  # humans see it from now
            self._update(st, t, "suppressed" if reason else "unsuppressed", actor,
                         {"reason": reason or a.suppressed}, changes, suppressed=reason, **extra)
        self._mark_t = None

    def _muting_now(self, now: int) -> frozenset:
        """Ids of active silences and names of open maintenance windows (a change re-evaluates muting)."""
        return frozenset([s.id for s in self._silences if s.active_at(now)]
                         + [w.name for w in self.maintenance_windows() if w.calendar.contains(now)])

    # ================================================================ maintenance windows
    def maintenance_windows(self) -> list:
        """rules.yaml windows, then the ones made through the API."""
        return self.ruleset.maintenance + self._api_maintenance

    def _load_api_maintenance(self, rows: list | None = None) -> list:
        from .maintenance import window
        out = []
        self._mw_rows = rows = self.store.maintenance_list() if rows is None else rows
        for row in rows:
            try:
                out.append(window(row, self.ruleset.calendars))
            except AlertError as e:  # e.g. a rules.yaml calendar it referred to was removed
                log.warning("maintenance window %r not applied: %s", row.get("name"), e)
        return out

    def expected_gap(self, r, key: tuple, subject_id: str, now: int) -> int:
        """For absence / agent_offline: the last time (<= now) a ``collect: false`` maintenance window
        matching this rule x subject was open (data gaps then are expected), 0 if never."""
        wins = getattr(self, "_nocollect_open", None)
        if wins:
            st = self._states.get(key) or _St(key, r, {"id": subject_id})
            labels = {**self._labels(st), "severity": r.m.severity, "state": "firing"}
            if any(w.matches(labels) for w in wins):
                self._gap_end[key] = now
                return now
        return self._gap_end.get(key, 0) if self._gap_end else 0

    # ================================================================ helpers
    def _meta_of(self, d: str) -> dict:
        m = self._meta.get(d)
        if m is None:
            try:
                raw = self._device_meta(d) or {}
            except Exception:  # noqa: BLE001
                log.exception("device_meta(%r) failed", d)
                raw = {}
            m = dict(raw)
            if not m.get("agent") and d in self._device_agent:
                m["agent"] = self._device_agent[d]
            m["tags"] = dict(m.get("tags") or {})
            self._meta[d] = m
        return m

    def _item_labels(self, d: str, tags: Mapping[str, str] | None) -> Mapping[str, str]:
        """Item tags, with the port role from device_meta's ``ports: {ifName: role}`` (or ``{"#<ifIndex>":
        role}``) when the item names an interface (so rules can say ``item_tags: {role: uplink}``).
        A known port role replaces a ``role`` tag the item carries: drivers copy the device's own tags
        (``tags: {role: access}`` in agent.yaml) into every item, and that device role must not hide
        the role of the port."""
        if not tags:
            return {}
        if "ifName" in tags or "ifIndex" in tags:
            ports = self._meta_of(d).get("ports")
            if ports:
                p = ports.get(tags["ifName"]) if "ifName" in tags else None
                if p is None and "ifIndex" in tags:
                    p = ports.get(f"#{tags['ifIndex']}")
                role = p if isinstance(p, str) else (p.get("role") if isinstance(p, Mapping) else None)
                if role and tags.get("role") != role:
                    return {**tags, "role": role}
        return tags

    def _in_scope(self, r: _Rule, d: str) -> bool:
        ok = r.scope_cache.get(d)
        if ok is None:
            meta = self._meta_of(d)
            ok = True
            for k, pats in r.scope:
                v = d if k == "device" else meta.get(k)
                if v is None or not any(fnmatchcase(str(v), p) for p in pats):
                    ok = False
                    break
            if ok:
                tags = meta["tags"]
                for k, pats in r.scope_tags:
                    v = tags.get(k)
                    if v is None or not any(fnmatchcase(str(v), p) for p in pats):
                        ok = False
                        break
            r.scope_cache[d] = ok
        return ok

    def _dispatch(self, changes: list[AlertChange]) -> None:
        if not changes or not self.listeners:
            return
        for c in changes:
            for fn in list(self.listeners):
                try:
                    fn(c)
                except Exception:  # noqa: BLE001 - a broken listener must not stop the engine
                    log.exception("alert listener %r failed", fn)

    def _restore(self, sites: Callable[[str | None], bool] | None = None) -> list[AlertChange]:
        """Rebuild evaluation state from the store: last-seen times, active (pending, firing) alerts; at
        a (re)start those of the owned sites (``owns``), on a take-over those of ``sites``, merged into
        what is there (a time only moves forward)."""
        changes: list[AlertChange] = []
        now = self.clock()
        self._now = max(self._now, now)
        want = sites or self.owns
        for kind, key, t, extra, site in self.store.load_liveness():
            if want is not None and not want(site):
                continue
            if kind == "device":
                if t > self._alive.get(key, t - 1):
                    self._alive[key] = t
                if extra:
                    self._device_agent.setdefault(key, extra)
            elif kind == "device_m":
                m, _, d = key.partition(_SEP if _SEP in key else "\x00")
                am = self._alive_by_m.get(m)
                if am is not None and t > am.get(d, t - 1):
                    am[d] = t
            elif kind == "standby":
                self._standby[key] = bool(t)
            elif kind == "agent":
                ag = self._agents.get(key)
                if ag is not None:
                    ag.last_seen = max(ag.last_seen, t)
                    continue
                ag = self._agents[key] = _Agent(t)
                try:
                    ag.dead_since, ag.site, ag.building = json.loads(extra or "[null, null, null]")
                except (ValueError, TypeError):
                    pass
                ag.site = ag.site or site
        for a in self.store.active():
            if want is not None and not want(a.labels.get("site")):
                continue
            r = self._rule_by_name.get(a.rule)
            if r is None or r.kind != a.kind:
                gone = self.store.update(a.id, now, "rule_removed", None, {"rule": a.rule}, state="resolved",
                                         resolved_ms=now)
                changes.append(AlertChange("rule_removed", gone, now, None, {"rule": a.rule}))
                continue
            sid = a.subject.get("id")
            tags = a.subject.get("tags") or {}
            key = (r.idx, sid, tuple(sorted(tags.items())) if r.by is None else
                   tuple((k, tags[k]) for k in r.by if k in tags))
            st = self._states.get(key) or self._new_state(r, key, sid)
            self._track_alert(st, a)
            st.cond_since = a.started_ms
            st.last_t = a.started_ms if a.state == "pending" else None
            if st.last_v is None:
                st.last_v = a.value
            st.flapping = a.flapping
            if a.fired_ms is not None:
                st.flips.append(a.fired_ms)
            if r.k.restore(self, st, a):
                self._deadlines.add(key)
        self._dirty = self._dirty or bool(self._active)
        self._post(changes)
        return changes


class _Fmt(dict):
    def __missing__(self, key):
        return "?"


def _jsonable(v):
    return v if v is None or isinstance(v, (int, float, str, bool)) else str(v)
