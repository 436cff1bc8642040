"""Inhibition: is this alert muted by another alert, and why.

- an offline agent (dead, or its ``agent_offline`` alert firing) inhibits its devices' alerts;
- ``inhibit:`` rules of rules.yaml: a firing alert matching ``source`` inhibits alerts matching
  ``target`` with the same ``equal`` labels; with ``topology: true`` only alerts of devices
  behind the source's device (``topology(device) -> upstream device``, walked up to 32 hops).
"""
from __future__ import annotations

import logging
from typing import Callable, Mapping

from .kinds import KINDS
from .labels import match_all
from .model import Alert

log = logging.getLogger("campus_sense.rules")


class Inhibition:
    """A snapshot of what inhibits at one instant: ``muted(alert) -> (reason, since)``."""

    def __init__(self, inhibits: list, firing: list[Alert], dead_agents: dict[str, int],
                 topology: Callable[[str], str | None] | Mapping[str, str] | None):
        self.topology = topology
        self.down_agents = dict(dead_agents)
        for a in firing:
            if KINDS[a.kind].subject == "agent":
                n = a.labels.get("agent")
                self.down_agents[n] = min(self.down_agents.get(n, a.fired_ms), a.fired_ms)
        self.sources = [(ih, [a for a in firing if match_all(ih.source, a.match_labels())]) for ih in inhibits]

    def muted(self, a: Alert) -> tuple[str | None, int]:
        ag = a.labels.get("agent")
        if ag and KINDS[a.kind].subject != "agent" and ag in self.down_agents:
            return f"inhibited:agent {ag} offline", self.down_agents[ag]
        labels = a.match_labels()
        for ih, srcs in self.sources:
            if not srcs or not match_all(ih.target, labels):
                continue
            for s in srcs:
                if s.id == a.id or s.fingerprint == a.fingerprint:
                    continue
                if any(s.labels.get(k) is None or s.labels.get(k) != a.labels.get(k) for k in ih.equal):
                    continue
                if ih.topology and s.labels.get("device") not in upstream(self.topology, a.labels.get("device")):
                    continue
                return (f"inhibited:{ih.name} by alert {s.id} ({s.rule} {s.labels.get('device') or ''}".rstrip()
                        + ")", s.fired_ms or s.started_ms)
        return None, 0


def upstream(topo, d: str | None) -> list[str]:
    """The devices above ``d`` (nearest first), from ``topo`` (callable or mapping device -> upstream)."""
    out: list[str] = []
    if d is None or topo is None:
        return out
    get = topo.get if isinstance(topo, Mapping) else topo
    cur = d
    for _ in range(32):
        try:
            up = get(cur)
        except Exception:  # noqa: BLE001 - a caller's lookup failing must not stop evaluation
            log.exception("topology lookup failed for %s", cur)
            break
        if not up or up in out or up == d:
            break
        out.append(up)
        cur = up
    return out
