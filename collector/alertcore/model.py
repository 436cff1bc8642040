"""The alert model: severities, ``Alert``, the ONE ``AlertChange`` every consumer reads
(notifications, the live hub, the API, ``rules test``), history entries and silences."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

from .labels import Matcher, match_all

#: the one list of severities, lowest first
SEVERITIES = ("info", "warning", "critical")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
Severity = Literal["info", "warning", "critical"]

#: alert states; pending and firing are "active"
STATES = ("pending", "firing", "resolved")
ACTIVE = ("pending", "firing")

ALERT_COLUMNS = ("id", "fingerprint", "rule", "kind", "subject", "state", "severity", "labels", "summary", "value",
                 "started_ms", "fired_ms", "resolved_ms", "updated_ms", "acked_by", "acked_ms", "ack_comment",
                 "ack_expires_ms", "assignee", "escalated_ms", "escalation_since_ms", "flapping", "suppressed",
                 "count")


class AlertError(ValueError):
    """A human action that cannot apply (unknown alert, already resolved, ...)."""


@dataclass(slots=True)
class Alert:
    id: int
    fingerprint: str
    rule: str
    kind: str
    subject: dict
    state: str
    severity: str
    labels: dict
    summary: str
    value: float | None
    started_ms: int
    fired_ms: int | None = None
    resolved_ms: int | None = None
    updated_ms: int = 0
    acked_by: str | None = None
    acked_ms: int | None = None
    ack_comment: str | None = None
    ack_expires_ms: int | None = None
    assignee: str | None = None
    escalated_ms: int | None = None
    escalation_since_ms: int | None = None
    flapping: bool = False
    suppressed: str | None = None
    count: int = 1

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def acked(self) -> bool:
        return self.acked_by is not None

    def match_labels(self) -> dict:
        """Labels that matchers (silences, inhibition, filters) see: labels + severity + state."""
        return {**self.labels, "severity": self.severity, "state": self.state}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_row(cls, row: tuple) -> "Alert":
        d = dict(zip(ALERT_COLUMNS, row))
        d["labels"] = json.loads(d["labels"])
        d["subject"] = json.loads(d["subject"])
        d["flapping"] = bool(d["flapping"])
        return cls(**d)


@dataclass(slots=True)
class AlertChange:
    """One change of one alert, handed to ``engine.listeners`` (notify, live hub, ...).

    kind: pending, firing, resolved, cancelled (pending that never fired), severity (raised by an
    exposure level), escalated, flapping, suppressed, unsuppressed, acked, unacked, ack_expired,
    assigned, commented, manually_resolved, rule_removed.
    ``alert`` is the alert after the change; ``actor`` the user of a human action.
    """

    kind: str
    alert: Alert
    t_ms: int
    actor: str | None = None
    detail: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "t_ms": self.t_ms, "actor": self.actor, "detail": self.detail,
                "alert": self.alert.to_dict()}


@dataclass(slots=True)
class HistoryEntry:
    id: int
    alert_id: int
    t_ms: int
    action: str
    actor: str | None
    detail: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(slots=True)
class Silence:
    id: int
    matchers: list[Matcher]
    starts_ms: int
    ends_ms: int
    created_by: str
    comment: str = ""
    created_ms: int = 0
    expired_ms: int | None = None
    expired_by: str | None = None

    def active_at(self, t_ms: int) -> bool:
        end = self.ends_ms if self.expired_ms is None else min(self.ends_ms, self.expired_ms)
        return self.starts_ms <= t_ms < end

    def matches(self, labels: dict) -> bool:
        return match_all(self.matchers, labels)

    def to_dict(self) -> dict:
        return {"id": self.id, "matchers": [str(m) for m in self.matchers], "starts_ms": self.starts_ms,
                "ends_ms": self.ends_ms, "created_by": self.created_by, "comment": self.comment,
                "created_ms": self.created_ms, "expired_ms": self.expired_ms, "expired_by": self.expired_by}
