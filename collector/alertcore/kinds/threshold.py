"""kind: threshold — the held value of a series compared with a limit (``for``, hysteresis)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..timeinterval import Duration
from .base import OPS, Kind, Op, _Measured


class Config(_Measured):
    kind: Literal["threshold"]
    op: Op = ">"
    value: float | bool | str
    for_: Duration = Field(0, alias="for")
    clear_value: float | None = None
    clear_for: Duration = 0
    lookback: Duration = 300_000

    @model_validator(mode="after")
    def _check(self):
        if isinstance(self.value, str) and self.op not in ("==", "!="):
            raise ValueError(f"op {self.op!r} needs a numeric value; strings only compare with == or !=")
        if self.clear_value is not None and self.op not in (">", ">=", "<", "<="):
            raise ValueError("clear_value needs op >, >=, < or <=")
        if self.clear_value is not None and isinstance(self.value, (int, float)):
            if self.op in (">", ">=") and self.clear_value > self.value:
                raise ValueError(f"clear_value {self.clear_value} must be <= value {self.value} for op {self.op}")
            if self.op in ("<", "<=") and self.clear_value < self.value:
                raise ValueError(f"clear_value {self.clear_value} must be >= value {self.value} for op {self.op}")
        return self


class Threshold(Kind):
    name = "threshold"
    Config = Config

    def compile(self, r, m) -> None:
        r.op = OPS[m.op]
        r.value = m.value
        r.value_is_str = isinstance(m.value, str)
        r.clear_op_value = m.clear_value
        r.for_ms, r.clear_for, r.lookback = m.for_, m.clear_for, m.lookback

    def on_sample(self, eng, r, st, t, v, inwin, changes) -> None:
        if r.value_is_str:
            if not isinstance(v, str):
                return
        elif isinstance(v, str):
            return
        if st.last_t is not None:
            if t < st.last_t:
                return
            eng._advance(st, t, changes)
            eng._gap(st, t, changes)
        st.last_t, st.last_v = t, v
        cond = inwin and r.op(v, r.value)
        if r.clear_op_value is None:
            clearing = not cond
        else:
            clearing = not inwin or not r.op(v, r.clear_op_value)
        eng._cond(r, st, t, v, cond, clearing, changes)

    def close_value(self, st, value):
        return st.last_v if isinstance(st.last_v, (int, float)) else value


KIND = Threshold()
