"""kind: rate — the per-``per`` rate of change of a series (counters: resets are not negative rates)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ..timeinterval import Duration
from .base import _Measured
from .threshold import Threshold


class Config(_Measured):
    kind: Literal["rate"]
    op: Literal[">", ">=", "<", "<="] = ">"
    value: float
    per: Duration = 1000
    counter: bool = False
    for_: Duration = Field(0, alias="for")
    clear_value: float | None = None
    clear_for: Duration = 0
    lookback: Duration = 300_000

    @field_validator("per")
    @classmethod
    def _per(cls, v):
        if v <= 0:
            raise ValueError("per must be a positive duration")
        return v


class Rate(Threshold):
    name = "rate"
    Config = Config

    def on_sample(self, eng, r, st, t, v, inwin, changes) -> None:
        if isinstance(v, str):
            return
        v = float(v)
        pt, pv = st.prev_t, st.prev_v
        if pt is not None and t <= pt:
            return
        st.prev_t, st.prev_v = t, v
        if pt is None:
            return
        delta = v - pv
        if r.m.counter and delta < 0:
            return  # counter reset
        rate = delta / ((t - pt) / r.m.per)
        if st.last_t is not None:
            eng._advance(st, t, changes)
            eng._gap(st, t, changes)
        st.last_t, st.last_v = t, rate
        cond = inwin and r.op(rate, r.value)
        clearing = not cond if r.clear_op_value is None else (not inwin or not r.op(rate, r.clear_op_value))
        eng._cond(r, st, t, rate, cond, clearing, changes)


KIND = Rate()
