"""kind: absence — a device (or one measurement of it) silent for longer than its staleness
(``after``, else the ``staleness`` section by device type, standby-aware)."""
from __future__ import annotations

from typing import Literal

from ..timeinterval import OptDuration
from .base import Kind, RuleBase


class Config(RuleBase):
    kind: Literal["absence"]
    measurement: str | None = None
    after: OptDuration = None


class Absence(Kind):
    name = "absence"
    Config = Config
    input = "devices"
    by_default: list[str] | None = []

    def on_tick(self, eng, r, now, changes) -> None:
        src = eng._alive if r.m.measurement is None else eng._alive_by_m[r.m.measurement]
        for d, last in list(src.items()):
            key = (r.idx, d, ())
            st = eng._states.get(key)
            if st is not None and st.state == "firing":
                continue
            if not r.scope_all and not eng._in_scope(r, d):
                continue
            if not eng.may_judge(d, now):
                continue
            after = eng._stale_after(r, d)
            if after is None:
                continue
            # a collect: false maintenance window: the gap is expected, staleness counts from its end
            dl = max(last, eng.expected_gap(r, key, d, now)) + after
            if dl > now or (r.cal is not None and not r.cal.contains(now)):
                continue
            if st is None:
                st = eng._new_state(r, key, d)
            eng._open(st, "firing", dl, after / 1000.0, r.m.severity, changes,
                      detail={"last_seen_ms": last, "after_ms": after})
            eng._absence_firing.setdefault(d, set()).add(key)

    def restore(self, eng, st, alert) -> bool:
        eng._absence_firing.setdefault(st.subject["id"], set()).add(st.key)
        return alert.state == "pending"


KIND = Absence()
