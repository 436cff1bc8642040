"""Silences and maintenance windows: is this alert muted by one, and why.

A silence is one-off (API/web UI, ``starts_ms``..``ends_ms``); a maintenance window recurs
(rules.yaml ``maintenance:``, a calendar)."""
from __future__ import annotations

from .model import Alert, Silence


def silenced(a: Alert, active: list[Silence]) -> tuple[str | None, int]:
    """(reason ``silence:<id>``, since when) for the first active silence matching ``a``, else (None, 0)."""
    labels = a.match_labels()
    for s in active:
        if s.matches(labels):
            return f"silence:{s.id}", s.starts_ms
    return None, 0


def in_maintenance(a: Alert, windows: list, t_ms: int) -> tuple[str | None, int]:
    """(reason ``maintenance:<name>``, t_ms) for the first window open at ``t_ms`` matching ``a``."""
    labels = a.match_labels()
    for w in windows:
        if w.calendar.contains(t_ms) and all(m.matches(labels) for m in w.matchers):
            return f"maintenance:{w.name}", t_ms
    return None, 0
