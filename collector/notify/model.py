"""What notifications read from the one ``AlertChange`` of the alerting core, as a plain dict
(stored with the alert groups and rendered into notifications)."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone

from collector.alertcore.model import SEVERITIES, SEVERITY_RANK, STATES, AlertChange

__all__ = ["AlertChange", "BadAlert", "SEVERITY_RANK", "iso", "match_labels", "normalize"]


class BadAlert(ValueError):
    pass


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def normalize(change: AlertChange) -> dict:
    """``AlertChange`` -> the dict notifications store and render; raises BadAlert.

    started_at: when the alert fired (else started), ended_at: when it resolved (epoch seconds);
    description: ``change.detail['description']``; acked: ``alert.acked_by`` set; silenced:
    ``alert.suppressed`` set (silence, inhibition, maintenance).
    """
    if not isinstance(change, AlertChange):
        raise BadAlert(f"expected an alertcore AlertChange, got {type(change).__name__}")
    a = change.alert
    if a.severity not in SEVERITIES:
        raise BadAlert(f"alert {a.id}: unknown severity {a.severity!r} (expected {', '.join(SEVERITIES)})")
    if a.state not in STATES:
        raise BadAlert(f"alert {a.id}: unknown state {a.state!r} (expected {', '.join(STATES)})")
    if not isinstance(a.labels, Mapping):
        raise BadAlert(f"alert {a.id}: labels must be a mapping")
    try:
        value = None if a.value is None else float(a.value)
    except (TypeError, ValueError):
        value = None
    started = a.fired_ms or a.started_ms
    ended = (a.resolved_ms or change.t_ms) if a.state == "resolved" else None
    desc = change.detail.get("description") if isinstance(change.detail, Mapping) else None
    return {
        "id": str(a.id),
        "rule": a.rule,
        "severity": a.severity,
        "state": a.state,
        "labels": {str(k): "" if v is None else str(v) for k, v in a.labels.items()},
        "summary": a.summary or "",
        "description": desc if isinstance(desc, str) else "",
        "started_at": None if started is None else started / 1000.0,
        "ended_at": None if ended is None else ended / 1000.0,
        "value": value,
        "acked": a.acked_by is not None,
        "silenced": bool(a.suppressed),
    }


def match_labels(alert: dict) -> dict[str, str]:
    """Labels used for routing and grouping: alert labels plus rule, severity, alert_id."""
    lab = dict(alert["labels"])
    lab["rule"] = alert["rule"]
    lab["severity"] = alert["severity"]
    lab["alert_id"] = alert["id"]
    return lab
