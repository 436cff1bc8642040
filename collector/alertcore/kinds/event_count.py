"""kind: event_count — an alert when at least ``count`` matching events arrive within ``within``
(port flapping, repeated login failures, STP topology-change storms): a sliding window per subject
(device plus the ``by`` tags). Fires at the event that completes the count; while firing, more
events keep it open and update ``value`` (the events in the window); it resolves ``clear_after``
(default ``within``) after the last matching event, or at a ``clear_event``.

```yaml
- name: port-flapping
  kind: event_count
  event: [link_down, link_up]   # SNMP traps and syslog give the same types
  count: 6
  within: 10m
  by: [ifName]
  data: {user: "~.+"}          # optional, as for kind event
```
"""
from __future__ import annotations

import bisect
from collections import deque
from typing import Any, Literal

from pydantic import Field

from ..timeinterval import Duration, OptDuration
from .base import Kind, OptStrList, RuleBase, StrList
from .event import _data_matcher


class Config(RuleBase):
    kind: Literal["event_count"]
    event: StrList
    count: int = Field(ge=2, description="events within `within` that fire the alert")
    within: Duration
    data: dict[str, Any] = Field(default_factory=dict)
    clear_event: OptStrList = None
    clear_after: OptDuration = None


#: per engine: subject key -> event times in the window (sorted)
_WINDOWS = "_event_count_windows"


class EventCount(Kind):
    name = "event_count"
    Config = Config
    input = "events"
    by_default: list[str] | None = []

    def compile(self, r, m) -> None:
        r.data = [(k, _data_matcher(v)) for k, v in m.data.items()]

    def check(self, m) -> list[tuple[str, str]]:
        from .event import KIND as EVENT
        return EVENT.check(m)

    @staticmethod
    def _windows(eng) -> dict[tuple, deque]:
        w = getattr(eng, _WINDOWS, None)
        if w is None:
            w = {}
            setattr(eng, _WINDOWS, w)
        return w

    def on_event(self, eng, r, role: str, it: dict, key: tuple, changes) -> None:
        typ, d, t = it["type"], it["d"], it["t"]
        st = eng._states.get(key)
        if role == "clear":
            if st is not None and st.state == "firing" and t >= (st.alert.fired_ms or 0):
                eng._resolve(st, t, changes, detail={"event": typ})
            self._windows(eng).pop(key, None)
            return
        data = it.get("data") or {}
        if r.data and not all(fn(data.get(k)) for k, fn in r.data):
            return
        if r.cal is not None and not r.cal.contains(t):
            return
        seen = eng.evaluated(r, key, t)
        if seen == "resolved":
            return          # replayed, older than the resolution: it must not count again
        m = r.m
        wins = self._windows(eng)
        win = wins.get(key)
        if win is None:
            win = wins[key] = deque()
        if not win or t >= win[-1]:
            win.append(t)
        else:                                   # a late event: keep the window sorted
            lst = list(win)
            bisect.insort(lst, t)
            win = wins[key] = deque(lst)
        while win and win[0] <= win[-1] - m.within:
            win.popleft()
        n = len(win)                   # events in the window that ends at the newest one
        t = win[-1] if win else t      # a late event completes the count as of the newest
        if st is not None and st.state == "firing":
            if st.last_t is None or t > st.last_t:
                st.last_t = t
            if seen:        # replayed, counted before the restart: it only rebuilds the window
                return
            a = st.alert
            a.count += 1
            a.value = len(win)
            a.updated_ms = max(a.updated_ms, t)     # the newest event counted (replay: engine.evaluated)
            eng.store.set_fields(a.id, count=a.count, value=len(win), updated_ms=a.updated_ms)
            return
        if n < m.count:
            return
        if st is None:
            st = eng._new_state(r, key, d)
        st.last_t = t
        st.last_v = n
        eng._open(st, "firing", t, n, m.severity, changes,
                  detail={"event": typ, "count": n, "within_ms": m.within, "data": data})
        st.flips.append(t)
        eng._deadlines.add(key)

    def on_deadline(self, eng, st, now, changes) -> bool:
        m = st.rule.m
        ca = m.clear_after if m.clear_after is not None else m.within
        if st.state == "firing" and st.last_t is not None and st.last_t + ca <= now:
            eng._resolve(st, st.last_t + ca, changes, detail={"quiet_ms": ca})
            self._windows(eng).pop(st.key, None)
        return st.state == "firing"

    def restore(self, eng, st, alert) -> bool:
        st.last_t = alert.updated_ms
        return True


KIND = EventCount()
