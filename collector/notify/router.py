"""Routing tree, alert groups and notification timing (Alertmanager semantics).

* An alert is matched against the route tree depth first: a route matches when its
  matchers match; its children are tried in order and the first matching child wins
  unless that child has ``continue: true``. When no child matches, the route itself
  takes the alert. Every route that takes it yields one alert group.
* Group key = route id + values of the route's ``group_by`` labels (``...`` = per alert).
* Timing per group: first notification ``group_wait`` after the group appeared; later
  changes (new firing alert, resolved alert, severity change) at most every
  ``group_interval``; an unchanged group with firing, unacknowledged alerts is
  re-sent every ``repeat_interval``.
* ``active_time_windows`` / ``mute_time_windows``: outside the active window (or inside a
  mute window) nothing is sent; the group keeps its state and is sent once the window
  opens (alerts that fired and resolved entirely inside the quiet period are dropped).
* ``pending`` alerts are never notified; ``silenced`` alerts are left out of firing
  notifications; ``acked`` alerts do not cause repeats. A resolved notification is sent
  only for alerts whose firing notification went out, and only to channels with
  ``send_resolved``.
* Groups, alert states and last-sent times live in SQLite, so repeat timers survive a
  restart.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import orjson

from collector.alertcore.timeinterval import Interval

from .config import NotifyConfig, Route
from .model import SEVERITY_RANK, iso, match_labels
from collector.store.outbox import DB, GroupStore
from . import render

log = logging.getLogger("campus_sense.notify")

@dataclass
class Node:
    id: str
    route: Route
    channels: list[str]
    group_by: list[str]
    group_wait: float
    group_interval: float
    repeat_interval: float
    active: list[Interval]
    mute: list[Interval]
    children: list["Node"] = field(default_factory=list)

    def is_active(self, now: float) -> bool:
        t_ms = int(now * 1000)
        if self.active and not any(w.contains(t_ms) for w in self.active):
            return False
        return not any(w.contains(t_ms) for w in self.mute)


def build_tree(cfg: NotifyConfig) -> Node:
    def mk(r: Route, rid: str, parent: Node | None) -> Node:
        def inh(name, default):
            v = getattr(r, name)
            if v is not None:
                return v
            return getattr(parent, name) if parent else default
        aw = r.active_time_windows if r.active_time_windows is not None else None
        mw = r.mute_time_windows if r.mute_time_windows is not None else None
        n = Node(
            id=rid, route=r,
            channels=list(inh("channels", [])),
            group_by=list(inh("group_by", ["..."])),
            group_wait=inh("group_wait", 30.0),
            group_interval=inh("group_interval", 300.0),
            repeat_interval=inh("repeat_interval", 4 * 3600.0),
            active=[cfg.windows[w] for w in aw] if aw is not None else (parent.active if parent else []),
            mute=[cfg.windows[w] for w in mw] if mw is not None else (parent.mute if parent else []),
        )
        n.children = [mk(c, f"{rid}.{i}", n) for i, c in enumerate(r.routes)]
        return n
    return mk(cfg.route, "route", None)


def match_nodes(node: Node, labels: dict[str, str]) -> list[Node]:
    if not node.route.matches(labels):
        return []
    out: list[Node] = []
    for c in node.children:
        m = match_nodes(c, labels)
        if m:
            out.extend(m)
            if not c.route.continue_:
                break
    return out or [node]


def group_labels(node: Node, labels: dict[str, str]) -> dict[str, str]:
    if "..." in node.group_by:
        return {k: v for k, v in sorted(labels.items())}
    return {k: labels.get(k, "") for k in node.group_by}


def group_key(node: Node, gl: dict[str, str]) -> str:
    raw = orjson.dumps(gl, option=orjson.OPT_SORT_KEYS)
    return f"{node.id}:{hashlib.sha1(raw).hexdigest()[:16]}"


EnqueueFn = Callable[[str, str, str, dict], int]   # channel, route, group_key, notification


class Router:
    def __init__(self, cfg: NotifyConfig, db: DB, enqueue: EnqueueFn):
        self.cfg = cfg
        self.db = db
        self.enqueue = enqueue
        self.tree = build_tree(cfg)
        self.nodes: dict[str, Node] = {}

        def index(n: Node):
            self.nodes[n.id] = n
            for c in n.children:
                index(c)
        index(self.tree)
        self.groups = GroupStore(db)
        # timings may have changed with the config: re-evaluate every group once
        self.groups.reset_timers()

    def routes_for(self, alert: dict) -> list[Node]:
        return match_nodes(self.tree, match_labels(alert))

    # ------------------------------------------------------------------ state updates
    def process(self, alert: dict, now: float) -> list[str]:
        """Record a normalised alert change; returns the affected group keys."""
        if alert["state"] == "pending":
            # not (yet) notifiable; if it was firing before (flapping), keep groups as they are
            return []
        blob = orjson.dumps(alert)
        labels = match_labels(alert)
        affected: list[str] = []
        g = self.groups
        with g.transaction():
            existing = g.groups_of_alert(alert["id"])
            targets: dict[str, tuple[Node, dict]] = {}
            if alert["state"] == "firing":
                for node in self.routes_for(alert):
                    gl = group_labels(node, labels)
                    targets[group_key(node, gl)] = (node, gl)
            for key in existing | set(targets):
                if not g.exists(key):
                    if key not in targets:
                        continue
                    node, gl = targets[key]
                    g.create(key, node.id, gl, now)
                if alert["state"] == "resolved" and key not in existing:
                    continue
                g.upsert_alert(key, alert, blob, now)
                affected.append(key)
        return affected

    # ------------------------------------------------------------------ flushing
    def flush(self, now: float | None = None, only: list[str] | None = None) -> int:
        """Send every group that is due at ``now``; returns the number of notifications enqueued."""
        now = time.time() if now is None else now
        keys = self.groups.due_keys(now) if only is None else list(dict.fromkeys(only))
        sent = 0
        for key in keys:
            try:
                sent += self._flush_group(key, now)
            except Exception:  # one broken group must not stop the others
                log.exception("notify: flushing group %s failed", key)
        return sent

    def _flush_group(self, key: str, now: float) -> int:
        gs = self.groups
        # one transaction: with a shared database (PostgreSQL) the group row is locked, so two
        # collectors flushing the same group do not both enqueue its notification
        with gs.transaction():
            g = gs.get(key)
            if g is None:
                return 0
            route_id, gl, created_at, last_sent, sends = g
            node = self.nodes.get(route_id)
            if node is None:  # route removed by a config change
                log.info("notify: dropping group %s of removed route %s", key, route_id)
                gs.delete(key)
                return 0
            firing, resolved, stale = [], [], []
            any_firing = False
            for aid, state, sev, acked, silenced, a, nstate, nsev in gs.alerts(key):
                if state == "firing":
                    any_firing = True
                    if not silenced:
                        firing.append((a, nstate, nsev))
                elif nstate == "firing":
                    resolved.append(a)
                else:
                    stale.append(aid)
            if stale:
                gs.drop_alerts(key, stale)
            if not firing and not resolved:
                if not any_firing:
                    gs.delete(key)
                else:  # only silenced alerts: a change (unsilence, resolve) resets next_eval_at
                    gs.set_next_eval(key, now + node.repeat_interval)
                return 0
            changed = bool(resolved) or any(ns != "firing" or nsev != a["severity"] for a, ns, nsev in firing)
            if last_sent is None:
                due_at = created_at + node.group_wait
            elif changed:
                due_at = last_sent + node.group_interval
            else:
                # all acknowledged: nothing to repeat; look again after repeat_interval
                due_at = last_sent + node.repeat_interval
                if all(a["acked"] for a, _, _ in firing):
                    gs.set_next_eval(key, max(due_at, now + node.repeat_interval))
                    return 0
            if now < due_at:
                gs.set_next_eval(key, due_at)
                return 0
            if not node.is_active(now):
                # time windows have minute resolution: look again at the next minute
                gs.set_next_eval(key, now - now % 60 + 60)
                return 0
            notif = self._notification(key, node, gl, [a for a, _, _ in firing], resolved,
                                       repeat=not changed, now=now)
            # state first, then enqueue; both in one transaction
            with gs.transaction():
                n = 0
                for ch in node.channels:
                    chc = self.cfg.channels[ch]
                    alerts = notif["alerts"] if chc.send_resolved else \
                        [a for a in notif["alerts"] if a["status"] == "firing"]
                    if not alerts:
                        continue
                    per = dict(notif, channel=ch, alerts=alerts)
                    per["counts"] = {"firing": sum(a["status"] == "firing" for a in alerts),
                                     "resolved": sum(a["status"] == "resolved" for a in alerts)}
                    per["common_labels"] = _common([{**a["labels"], "rule": a["rule"], "severity": a["severity"]}
                                                    for a in alerts])
                    per["title"] = render.title(per)
                    self.enqueue(ch, node.id, key, per)   # outbox times are wall-clock
                    n += 1
                gs.mark_notified(key, [(a["id"], a["severity"]) for a, _, _ in firing])
                gs.drop_alerts(key, [a["id"] for a in resolved])
                gs.record_sent(key, now, now + min(node.group_interval, node.repeat_interval))
                if not gs.firing_count(key):
                    gs.delete(key)
            return n

    def _notification(self, key: str, node: Node, gl: dict, firing: list[dict], resolved: list[dict],
                      repeat: bool, now: float) -> dict:
        def out(a: dict, status: str) -> dict:
            return {"id": a["id"], "rule": a["rule"], "severity": a["severity"], "status": status,
                    "labels": a["labels"], "summary": a["summary"], "description": a["description"],
                    "started_at": iso(a["started_at"]), "ended_at": iso(a["ended_at"]) if status == "resolved" else None,
                    "value": a["value"], "acked": a["acked"]}
        firing = sorted(firing, key=lambda a: (-SEVERITY_RANK[a["severity"]], a["rule"], a["id"]))
        resolved = sorted(resolved, key=lambda a: (a["rule"], a["id"]))
        alerts = [out(a, "firing") for a in firing] + [out(a, "resolved") for a in resolved]
        top = max((a["severity"] for a in firing), key=SEVERITY_RANK.get, default=None)
        return {
            "version": "1",
            "status": "firing" if firing else "resolved",
            "severity": top or max((a["severity"] for a in resolved), key=SEVERITY_RANK.get),
            "route": node.id,
            "group_key": key,
            "group_labels": gl,
            "repeat": repeat,
            "created_at": iso(now),
            "display_timezone": self.cfg.display_timezone,
            "alerts": alerts,
        }

    def group_count(self) -> int:
        return self.groups.count()


def _common(label_sets: list[dict]) -> dict:
    if not label_sets:
        return {}
    common = dict(label_sets[0])
    for ls in label_sets[1:]:
        for k in list(common):
            if ls.get(k) != common[k]:
                del common[k]
    return common
