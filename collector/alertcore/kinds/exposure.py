"""kind: exposure — time (or degree-minutes) a series spends inside/outside a range, with
escalating ``levels``; out of the zone for ``reset_after`` starts over."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import model_validator

from ..model import SEVERITIES, SEVERITY_RANK
from ..timeinterval import Duration, OptDuration, parse_duration
from .base import Kind, _Measured


class Config(_Measured):
    kind: Literal["exposure"]
    inside: tuple[float, float] | None = None
    outside: tuple[float, float] | None = None
    mode: Literal["time", "degree_minutes"] = "time"
    levels: list[dict[str, Any]]
    reset_after: OptDuration = 1_800_000
    max_gap: Duration = 600_000

    @model_validator(mode="after")
    def _check(self):
        if (self.inside is None) == (self.outside is None):
            raise ValueError("give exactly one of inside: [low, high] or outside: [low, high]")
        lo, hi = self.inside or self.outside  # type: ignore[misc]
        if lo > hi:
            raise ValueError(f"range [{lo}, {hi}]: low must be <= high")
        if self.mode == "degree_minutes" and self.outside is None:
            raise ValueError("mode degree_minutes needs outside: [low, high] (degrees beyond the range)")
        if not self.levels:
            raise ValueError("levels: give at least one {at: ..., severity: ...}")
        return self

    def compiled_levels(self) -> list[tuple[float, str]]:
        out = []
        for i, lv in enumerate(self.levels):
            if not isinstance(lv, dict) or set(lv) - {"at", "severity"} or "at" not in lv:
                raise ValueError(f"levels[{i}]: must be {{at: ..., severity: ...}}")
            sev = lv.get("severity", "warning")
            if sev not in SEVERITIES:
                raise ValueError(f"levels[{i}].severity: must be one of {SEVERITIES}")
            at = parse_duration(lv["at"]) if self.mode == "time" else lv["at"]
            if not isinstance(at, (int, float)) or isinstance(at, bool) or at <= 0:
                raise ValueError(f"levels[{i}].at: must be a positive "
                                 f"{'duration' if self.mode == 'time' else 'number of degree-minutes'}")
            out.append((float(at), sev))
        out.sort()
        return out



class Exposure(Kind):
    name = "exposure"
    Config = Config

    def compile(self, r, m) -> None:
        r.levels = m.compiled_levels()
        r.inside = m.inside is not None
        r.lo, r.hi = m.inside or m.outside

    def check(self, m) -> list[tuple[str, str]]:
        try:
            m.compiled_levels()
        except ValueError as e:
            return [("levels", str(e))]
        return []

    def on_sample(self, eng, r, st, t, v, inwin, changes) -> None:
        if isinstance(v, str):
            return
        v = float(v)
        if st.last_t is not None:
            if t < st.last_t:
                return
            dt = min(t - st.last_t, r.m.max_gap)
            if st.in_zone and dt > 0:
                rate = 1.0 if r.m.mode == "time" else st.excess / 60_000.0
                before = st.acc
                st.acc += rate * dt
                if rate > 0:
                    for at, sev in r.levels:
                        if before < at <= st.acc:
                            self._level(eng, st, int(st.last_t + (at - before) / rate), at, sev, changes)
            elif not st.in_zone and st.out_since is not None and r.m.reset_after is not None \
                    and t - st.out_since >= r.m.reset_after:
                if st.state == "firing":
                    eng._resolve(st, st.out_since + r.m.reset_after, changes, detail={"reason": "reset"})
                st.acc = 0.0
        if not inwin:
            zone = False
        elif r.inside:
            zone = r.lo <= v <= r.hi
        else:
            zone = v < r.lo or v > r.hi
        st.excess = (r.lo - v if v < r.lo else v - r.hi) if zone and not r.inside else 0.0
        if zone:
            st.out_since = None
        elif st.out_since is None or st.in_zone:
            st.out_since = t
        st.in_zone = zone
        st.last_t, st.last_v = t, v

    @staticmethod
    def value(r, acc: float) -> float:
        return round(acc / 60_000.0, 3) if r.m.mode == "time" else round(acc, 3)

    def _level(self, eng, st, t: int, at: float, sev: str, changes) -> None:
        val = self.value(st.rule, at)
        if st.state != "firing":
            eng._open(st, "firing", t, val, sev, changes)
            st.flips.append(t)
        elif SEVERITY_RANK[sev] > SEVERITY_RANK[st.alert.severity]:
            eng._update(st, t, "severity", None, {"from": st.alert.severity, "to": sev, "value": val}, changes,
                        severity=sev, value=val)

    def close_value(self, st, value):
        return self.value(st.rule, st.acc)

    def restore(self, eng, st, alert) -> bool:
        if alert.value is not None:
            st.acc = alert.value * 60_000.0 if st.rule.m.mode == "time" else alert.value
        return alert.state == "pending"


KIND = Exposure()
