"""Human actions on alerts (ack, unack, assign, comment, resolve), silences and maintenance windows, as a part of
``RuleEngine``: each one is recorded in the alert's history with who and when, and goes out to
the listeners as an ``AlertChange`` with ``actor`` set."""
from __future__ import annotations

from typing import Any

from .labels import parse_matchers
from .model import Alert, AlertChange, AlertError, Silence


class HumanActions:
    """Mixed into ``RuleEngine`` (uses its lock, store, clock and state)."""

    def ack(self, alert_id: int, user: str, comment: str = "", expires_ms: int | None = None) -> Alert:
        """Acknowledge an active alert (stops escalation); ``expires_ms``: the ack lapses at that time."""
        _need_user(user)
        t = self.clock()
        if expires_ms is not None and expires_ms <= t:
            raise AlertError("ack expiry must be in the future")
        return self._human(alert_id, t, "acked", user, {"comment": comment, "expires_ms": expires_ms}, True,
                           acked_by=user, acked_ms=t, ack_comment=comment, ack_expires_ms=expires_ms)

    def unack(self, alert_id: int, user: str, comment: str = "") -> Alert:
        _need_user(user)
        t = self.clock()
        return self._human(alert_id, t, "unacked", user, {"comment": comment}, True, acked_by=None, acked_ms=None,
                           ack_comment=None, ack_expires_ms=None, escalation_since_ms=t)

    def assign(self, alert_id: int, user: str, assignee: str | None, comment: str = "") -> Alert:
        """Assign (or with assignee None, unassign) an alert; works on resolved alerts too."""
        _need_user(user)
        return self._human(alert_id, self.clock(), "assigned", user, {"assignee": assignee, "comment": comment},
                           False, assignee=assignee)

    def comment(self, alert_id: int, user: str, text: str) -> Alert:
        _need_user(user)
        if not text or not str(text).strip():
            raise AlertError("comment text is empty")
        return self._human(alert_id, self.clock(), "commented", user, {"comment": text}, False)

    def resolve(self, alert_id: int, user: str, comment: str = "") -> Alert:
        """Resolve an alert by hand (e.g. an event alert without clear_event/clear_after)."""
        _need_user(user)
        changes: list[AlertChange] = []
        with self._lock:
            t = self.clock()
            a = self.store.get(alert_id)
            if a is None or not a.active:
                raise AlertError(f"alert {alert_id} {'does not exist' if a is None else 'is ' + a.state}")
            key = self._by_alert.get(alert_id)
            st = self._states.get(key) if key else None
            a = self._close(a, st, t, "manually_resolved", changes, actor=user, detail={"comment": comment})
            self._post(changes)
        self._dispatch(changes)
        return a

    def escalate(self, alert_id: int, user: str, comment: str = "") -> Alert:
        """Raise an active alert to critical by hand (history ``escalated`` with the actor)."""
        _need_user(user)
        a = self.store.get(alert_id)
        if a is not None and a.active and a.severity == "critical":
            raise AlertError(f"alert {alert_id} is already critical")
        t = self.clock()
        return self._human(alert_id, t, "escalated", user,
                           {"from": a.severity if a else None, "to": "critical", "comment": comment}, True,
                           severity="critical", escalated_ms=t)

    def silence_create(self, matchers: Any, user: str, comment: str = "", starts_ms: int | None = None,
                       ends_ms: int | None = None, duration_ms: int | None = None) -> Silence:
        """Silence (or maintenance window) for alerts whose labels match all ``matchers``
        (e.g. ["building=A", "rule=~fridge.*"] or {"device": "sw1"}), from starts_ms (default now)
        until ends_ms (or starts + duration_ms)."""
        _need_user(user)
        ms = parse_matchers(matchers)
        if not ms:
            raise AlertError("a silence needs at least one matcher")
        changes: list[AlertChange] = []
        with self._lock:
            now = self.clock()
            start = now if starts_ms is None else int(starts_ms)
            end = ends_ms if ends_ms is not None else (start + duration_ms if duration_ms else None)
            if end is None or end <= start:
                raise AlertError("a silence needs an end after its start (ends_ms or duration_ms)")
            s = self.store.silence_create(ms, start, int(end), user, comment, now)
            self._silences = self.store.silences()
            self._now = max(self._now, now)
            self._dirty = True
            self._post(changes, actor=user)
        self._dispatch(changes)
        return s

    def silence_list(self, active_only: bool = False) -> list[Silence]:
        with self._lock:
            self._silences = self.store.silences()
            if active_only:
                now = max(self._now, self.clock())
                return [s for s in self._silences if s.active_at(now)]
            return list(self._silences)

    def silence_expire(self, silence_id: int, user: str) -> Silence:
        _need_user(user)
        changes: list[AlertChange] = []
        with self._lock:
            now = self.clock()
            s = self.store.silence_expire(silence_id, now, user)
            self._silences = self.store.silences()
            self._now = max(self._now, now)
            self._dirty = True
            self._post(changes, actor=user)
        self._dispatch(changes)
        return s

    # ------------------------------------------------------------ maintenance windows (API)
    def maintenance_create(self, name: str, matchers: Any, schedule: Any, user: str, collect: bool = True,
                           comment: str = "") -> dict:
        """A recurring maintenance window (same grammar as rules.yaml ``maintenance:``; ``schedule`` a
        calendar name or an inline calendar), persisted in the alert store. Returns its dict."""
        from .maintenance import check_matchers, compile_schedule, schedule_json
        _need_user(user)
        ms = check_matchers(name, matchers)
        sched = schedule_json(schedule)
        changes: list[AlertChange] = []
        with self._lock:
            if any(w.name == name for w in self.ruleset.maintenance):
                raise AlertError(f"maintenance window {name!r} is defined in rules.yaml")
            compile_schedule(name, sched, self.ruleset.calendars)   # raises AlertError when invalid
            now = self.clock()
            self.store.maintenance_create(name, ms, sched, collect, comment, user, now)
            self._api_maintenance = self._load_api_maintenance()
            self._now = max(self._now, now)
            self._dirty = True
            self._post(changes, actor=user)
            w = next(w for w in self._api_maintenance if w.name == name)
            out = w.to_dict(now)
        self._dispatch(changes)
        return out

    def maintenance_list(self) -> list[dict]:
        """Every window (rules.yaml ones with ``source: rules``, API ones ``source: api``), ``open`` now."""
        with self._lock:
            now = max(self._now, self.clock())
            return [w.to_dict(now) for w in self.maintenance_windows()]

    def maintenance_delete(self, name: str, user: str) -> dict:
        """Delete an API-made window; returns what it was."""
        _need_user(user)
        changes: list[AlertChange] = []
        with self._lock:
            if any(w.name == name for w in self.ruleset.maintenance):
                raise AlertError(f"maintenance window {name!r} is defined in rules.yaml (edit the rule file)")
            old = next((w for w in self._api_maintenance if w.name == name), None)
            before = old.to_dict() if old is not None else None
            row = self.store.maintenance_delete(name)
            self._api_maintenance = self._load_api_maintenance()
            now = self.clock()
            self._now = max(self._now, now)
            self._dirty = True
            self._post(changes, actor=user)
        self._dispatch(changes)
        return before or {**row, "source": "api"}

    def _human(self, alert_id: int, t: int, action: str, user: str, detail: dict, require_active: bool,
               **fields) -> Alert:
        changes: list[AlertChange] = []
        with self._lock:
            new = self.store.update(alert_id, t, action, user, detail, require_active=require_active, **fields)
            if new.active and new.id in self._active:
                self._active[new.id] = new
                key = self._by_alert.get(new.id)
                if key and key in self._states:
                    self._states[key].alert = new
            changes.append(AlertChange(action, new, t, user, detail))
        self._dispatch(changes)
        return new


def _need_user(user: str) -> None:
    if not user or not str(user).strip():
        raise AlertError("a user name is required for every human action")
