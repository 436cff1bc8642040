"""The alert change we consume (duck-typed) and its normalised form.

The rule engine emits its own AlertChange objects; we read them by attribute
(or key, for dicts) and never import the rules package. ``AlertChange`` below is
a local stand-in with the same fields, used by tests and tools.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

SEVERITIES = ("info", "warning", "critical")
STATES = ("pending", "firing", "resolved")
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


@dataclass
class AlertChange:
    alert_id: str
    rule_id: str
    severity: str                       # info | warning | critical
    state: str                          # pending | firing | resolved
    labels: dict[str, str] = field(default_factory=dict)   # site, building, room, device, type, ...
    summary: str = ""
    description: str = ""
    started_at: Any = None              # datetime | epoch seconds | ISO string
    value: float | None = None
    acked: bool = False
    silenced: bool = False
    ended_at: Any = None


class BadAlert(ValueError):
    pass


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        if isinstance(obj, Mapping):
            if n in obj:
                return obj[n]
        elif hasattr(obj, n):
            return getattr(obj, n)
    return default


def to_epoch(v: Any) -> float | None:
    if v is None or v == "":
        return None
    if isinstance(v, bool):
        raise BadAlert(f"bad timestamp {v!r}")
    if isinstance(v, (int, float)):
        return float(v / 1000 if v > 1e11 else v)  # accept epoch ms too
    if isinstance(v, datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=timezone.utc)
        return v.timestamp()
    if isinstance(v, str):
        try:
            d = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise BadAlert(f"bad timestamp {v!r}") from None
        return to_epoch(d)
    raise BadAlert(f"bad timestamp {v!r}")


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _ms(v: Any) -> float | None:
    return None if v is None else float(v) / 1000.0


def normalize(change: Any, now: float | None = None) -> dict:
    """Duck-typed alert change -> plain dict; raises BadAlert.

    Accepted shapes (objects or mappings):
    * flat: ``alert_id``/``id``, ``rule_id``/``rule``, ``severity``, ``state``, ``labels``,
      ``summary``, ``description``, ``started_at``, ``ended_at``, ``value``, ``acked``, ``silenced``
      (timestamps: datetime, epoch seconds or ISO 8601);
    * the rule engine's ``AlertChange(kind, alert, t_ms, actor, detail)`` whose ``alert`` has
      ``id``, ``rule``, ``severity``, ``state``, ``labels``, ``summary``, ``value``,
      ``started_ms``/``fired_ms``/``resolved_ms`` (epoch ms), ``acked_by``, ``suppressed``.
    """
    now = time.time() if now is None else now
    src = change
    inner = _get(change, "alert")
    if inner is not None and not isinstance(inner, (str, bytes, int, float)):
        src = inner
    aid = _get(src, "alert_id", "id")
    rule = _get(src, "rule_id", "rule")
    sev = _get(src, "severity")
    state = _get(src, "state")
    # enums from the rule engine: use their value/name
    sev = getattr(sev, "value", sev)
    state = getattr(state, "value", state)
    if aid is None or aid == "":
        raise BadAlert("alert change without alert_id")
    if not rule:
        raise BadAlert(f"alert {aid}: no rule_id")
    sev, state = str(sev).lower(), str(state).lower()
    if sev not in SEVERITIES:
        raise BadAlert(f"alert {aid}: unknown severity {sev!r} (expected {', '.join(SEVERITIES)})")
    if state not in STATES:
        raise BadAlert(f"alert {aid}: unknown state {state!r} (expected {', '.join(STATES)})")
    labels = _get(src, "labels", default={}) or {}
    if not isinstance(labels, Mapping):
        raise BadAlert(f"alert {aid}: labels must be a mapping")
    labels = {str(k): "" if v is None else str(v) for k, v in labels.items()}
    value = _get(src, "value")
    try:
        value = None if value is None else float(value)
    except (TypeError, ValueError):
        value = None
    started = to_epoch(_get(src, "started_at", "starts_at"))
    if started is None:
        started = _ms(_get(src, "fired_ms")) or _ms(_get(src, "started_ms"))
    ended = to_epoch(_get(src, "ended_at", "resolved_at", "ends_at"))
    if ended is None:
        ended = _ms(_get(src, "resolved_ms"))
    if state == "resolved" and ended is None:
        ended = _ms(_get(change, "t_ms")) or now
    acked = _get(src, "acked")
    if acked is None:
        acked = _get(src, "acked_by") is not None
    silenced = _get(src, "silenced")
    if silenced is None:
        silenced = bool(_get(src, "suppressed"))
    description = _get(src, "description", default="") or ""
    if not description:
        detail = _get(change, "detail")
        if isinstance(detail, Mapping) and isinstance(detail.get("description"), str):
            description = detail["description"]
    return {
        "id": str(aid),
        "rule": str(rule),
        "severity": sev,
        "state": state,
        "labels": labels,
        "summary": str(_get(src, "summary", default="") or ""),
        "description": str(description),
        "started_at": started,
        "ended_at": ended if state == "resolved" else None,
        "value": value,
        "acked": bool(acked),
        "silenced": bool(silenced),
    }


def match_labels(alert: dict) -> dict[str, str]:
    """Labels used for routing and grouping: alert labels plus rule, severity, alert_id."""
    lab = dict(alert["labels"])
    lab["rule"] = alert["rule"]
    lab["severity"] = alert["severity"]
    lab["alert_id"] = alert["id"]
    return lab
