"""kind: event — an alert per event (``event``), cleared by ``clear_event`` or ``clear_after``;
repeats while firing count up; ``severity: from_event`` takes the event's severity."""
from __future__ import annotations

import re
from typing import Any, Callable, Literal

from pydantic import Field

from ..model import SEVERITY_RANK
from ..timeinterval import OptDuration
from .base import Kind, OptStrList, RuleBase, StrList


class Config(RuleBase):
    kind: Literal["event"]
    severity: Literal["info", "warning", "critical", "from_event"] = "warning"  # type: ignore[assignment]
    event: StrList
    data: dict[str, Any] = Field(default_factory=dict)
    clear_event: OptStrList = None
    clear_after: OptDuration = None


def _data_matcher(v: Any) -> Callable[[Any], bool]:
    if isinstance(v, str) and v.startswith("~"):
        rx = re.compile(v[1:])
        return lambda x: x is not None and rx.fullmatch(str(x)) is not None
    if isinstance(v, list):
        return lambda x: x in v
    return lambda x: x == v


class Event(Kind):
    name = "event"
    Config = Config
    input = "events"
    by_default: list[str] | None = []

    def compile(self, r, m) -> None:
        r.data = [(k, _data_matcher(v)) for k, v in m.data.items()]

    def check(self, m) -> list[tuple[str, str]]:
        try:
            for v in m.data.values():
                if isinstance(v, str) and v.startswith("~"):
                    re.compile(v[1:])
        except re.error as e:
            return [("data", f"bad regular expression ({e})")]
        return []

    def on_event(self, eng, r, role: str, it: dict, key: tuple, changes) -> None:
        typ, d, t = it["type"], it["d"], it["t"]
        st = eng._states.get(key)
        if role == "clear":
            if st is not None and st.state == "firing" and t >= (st.alert.fired_ms or 0):
                eng._resolve(st, t, changes, detail={"event": typ})
            return
        data = it.get("data") or {}
        if r.data and not all(fn(data.get(k)) for k, fn in r.data):
            return
        if r.cal is not None and not r.cal.contains(t):
            return
        if eng.evaluated(r, key, t):
            return                  # a replayed event that was evaluated before the restart / take-over
        if st is None:
            st = eng._new_state(r, key, d)
        if st.state == "firing":
            if st.last_t is None or t > st.last_t:
                st.last_t = t
            a = st.alert
            a.count += 1
            a.updated_ms = max(a.updated_ms, t)     # the newest event counted (replay: engine.evaluated)
            eng.store.set_fields(a.id, count=a.count, updated_ms=a.updated_ms)
        else:
            sev = r.m.severity
            if sev == "from_event":
                sev = it.get("severity", "warning")
                if sev not in SEVERITY_RANK:
                    sev = "warning"
            st.last_t = t
            eng._open(st, "firing", t, None, sev, changes, detail={"event": typ, "data": data})
            st.flips.append(t)
        if r.m.clear_after is not None:
            eng._deadlines.add(key)

    def on_deadline(self, eng, st, now, changes) -> bool:
        ca = st.rule.m.clear_after
        if st.state == "firing" and ca is not None and st.last_t + ca <= now:
            eng._resolve(st, st.last_t + ca, changes)
        return st.state == "firing"

    def restore(self, eng, st, alert) -> bool:
        st.last_t = alert.updated_ms
        return alert.state == "pending" or st.rule.m.clear_after is not None


KIND = Event()
