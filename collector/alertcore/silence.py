"""Silences (and one-off maintenance windows): is this alert muted by a silence, and why."""
from __future__ import annotations

from .model import Alert, Silence


def silenced(a: Alert, active: list[Silence]) -> tuple[str | None, int]:
    """(reason ``silence:<id>``, since when) for the first active silence matching ``a``, else (None, 0)."""
    labels = a.match_labels()
    for s in active:
        if s.matches(labels):
            return f"silence:{s.id}", s.starts_ms
    return None, 0
