"""What every rule kind shares: the common rule keys (``RuleBase``) and the ``Kind`` interface
the engine calls. One module per kind in this package holds its config model, its evaluator and
its state handling; ``collector.alertcore.kinds.KINDS`` registers them."""
from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from ..labels import parse_matchers
from ..model import Severity
from ..timeinterval import Duration, OptDuration

if TYPE_CHECKING:
    from ..engine import RuleEngine, _Rule, _St

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$"
OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq,
       "!=": operator.ne}


def _str_list(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, (str, int, float)) and not isinstance(v, bool):
        return [str(v)]
    return v


StrList = Annotated[list[str], BeforeValidator(_str_list)]
OptStrList = Annotated[Union[list[str], None], BeforeValidator(_str_list)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Scope(_Strict):
    """Which devices a rule applies to. Values are glob patterns (fnmatch); a list means any of."""

    site: OptStrList = None
    building: OptStrList = None
    room: OptStrList = None
    type: OptStrList = None
    device: OptStrList = None
    agent: OptStrList = None
    tags: dict[str, StrList] = Field(default_factory=dict)


class Flap(_Strict):
    max_flips: int = Field(4, ge=1, description="more flips than this within `window` = flapping")
    window: Duration = 3_600_000


Op = Literal[">", ">=", "<", "<=", "==", "!="]


class RuleBase(_Strict):
    name: str = Field(pattern=_NAME)
    severity: Severity = "warning"
    scope: Scope = Field(default_factory=Scope)
    schedule: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    summary: str | None = None
    escalate_after: OptDuration = None
    flap: Flap | None = None
    by: OptStrList = None
    item_tags: list[str] | dict[str, str] | None = None
    enabled: bool = True

    @field_validator("item_tags")
    @classmethod
    def _check_matchers(cls, v):
        if v is not None:
            parse_matchers(v)
        return v


class _Measured(RuleBase):
    measurement: str
    field: str = "value"




class Kind:
    """A rule kind. ``input`` says what drives it: ``samples`` (of ``Config.measurement``),
    ``events`` (``Config.event`` / ``clear_event``), ``devices`` or ``agents`` (checked on every
    tick). ``by_default``: the item tags that split a rule into one alert each (None: all tags)."""

    name: str
    Config: type[RuleBase]
    input: str = "samples"
    subject: str = "device"        # the alert's subject id is a device (or an agent)
    by_default: list[str] | None = None

    def compile(self, r: "_Rule", m: Any) -> None:
        """Precompute what evaluation needs on the compiled rule ``r``."""

    def check(self, m: Any) -> list[tuple[str, str]]:
        """Cross-checks after validation: [(key, message)]."""
        return []

    def on_sample(self, eng: "RuleEngine", r: "_Rule", st: "_St", t: int, v: Any, inwin: bool, changes) -> None:
        raise NotImplementedError

    def on_deadline(self, eng: "RuleEngine", st: "_St", now: int, changes) -> bool:
        """A timer of ``st`` may be due at ``now``; return True while it still needs ticks."""
        return eng.advance_held(st, now, changes)

    def on_tick(self, eng: "RuleEngine", r: "_Rule", now: int, changes) -> None:
        """Kinds with input devices/agents: open alerts whose deadline passed."""

    def close_value(self, st: "_St", value: Any) -> Any:
        """The alert's value when it closes."""
        return value

    def restore(self, eng: "RuleEngine", st: "_St", alert: Any) -> bool:
        """Rebuild evaluation state of an active alert after a restart; True: it needs ticks."""
        return alert.state == "pending"
