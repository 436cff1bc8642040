"""Rule file schema (YAML) and loader.

``load_rules(path, ...)`` parses one or more rule files with
``campus_sense.yamlconf`` and returns a :class:`RuleSet`. Every error names
the file, the line, the rule (name and index) and the key, e.g.::

    rules.yaml:14: rule 'fridge-warm' (rules[2]): for: invalid duration '15 minutes' ...

See ``collector/rules/README.md`` for the syntax reference.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from campus_sense.yamlconf import ConfigError, _line_for, load_yaml

from .labels import Matcher, parse_matchers
from .model import SEVERITIES, Severity
from .timeinterval import Duration, OptDuration, TimeInterval, compile_intervals, parse_duration

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$"
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


class ThresholdRule(_Measured):
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


class RateRule(_Measured):
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


class AbsenceRule(RuleBase):
    kind: Literal["absence"]
    measurement: str | None = None
    after: OptDuration = None


class AgentOfflineRule(RuleBase):
    kind: Literal["agent_offline"]
    after: Duration = 300_000
    agents: OptStrList = None


class EventRule(RuleBase):
    kind: Literal["event"]
    severity: Literal["info", "warning", "critical", "from_event"] = "warning"  # type: ignore[assignment]
    event: StrList
    data: dict[str, Any] = Field(default_factory=dict)
    clear_event: OptStrList = None
    clear_after: OptDuration = None


class ExposureRule(_Measured):
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


AnyRule = Annotated[Union[ThresholdRule, RateRule, AbsenceRule, AgentOfflineRule, EventRule, ExposureRule],
                    Field(discriminator="kind")]
KINDS = ("threshold", "rate", "absence", "agent_offline", "event", "exposure")


class Standby(_Strict):
    measurement: str
    field: str = "value"
    values: list[Any]
    after: OptDuration = None  # None: never stale while in standby


class TypeStaleness(_Strict):
    after: OptDuration = None
    standby: Standby | None = None


class Staleness(_Strict):
    default: Duration = 600_000
    types: dict[str, TypeStaleness] = Field(default_factory=dict)


class Inhibit(_Strict):
    name: str | None = None
    source: list[str] | dict[str, str]
    target: list[str] | dict[str, str] = Field(default_factory=dict)
    equal: list[str] = Field(default_factory=list)
    topology: bool = False

    @field_validator("source", "target")
    @classmethod
    def _m(cls, v):
        parse_matchers(v)
        return v


class Defaults(_Strict):
    escalate_after: OptDuration = None
    flap: Flap | None = None


class RulesFile(_Strict):
    calendars: dict[str, TimeInterval] = Field(default_factory=dict)
    staleness: Staleness = Field(default_factory=Staleness)
    defaults: Defaults = Field(default_factory=Defaults)
    inhibit: list[Inhibit] = Field(default_factory=list)
    rules: list[AnyRule] = Field(default_factory=list)


class InhibitRule:
    __slots__ = ("name", "source", "target", "equal", "topology")

    def __init__(self, m: Inhibit, index: int):
        self.name = m.name or f"inhibit[{index}]"
        self.source: list[Matcher] = parse_matchers(m.source)
        self.target: list[Matcher] = parse_matchers(m.target)
        self.equal = list(m.equal)
        self.topology = m.topology


class RuleSet:
    """Validated, merged rule files: rules (in order), calendars, staleness, inhibitions."""

    def __init__(self, rules: list, calendars: dict, staleness: Staleness, inhibits: list[InhibitRule],
                 defaults: Defaults, sources: dict[str, str] | None = None):
        self.rules = rules
        self.calendars = calendars
        self.staleness = staleness
        self.inhibits = inhibits
        self.defaults = defaults
        self.sources = sources or {}  # rule name -> "file:line"

    def __len__(self) -> int:
        return len(self.rules)

    @classmethod
    def from_dict(cls, data: dict, path: str = "<dict>") -> "RuleSet":
        return _build([(path, data, {})])


def _rule_label(data: Any, i: int) -> str:
    name = None
    try:
        name = data["rules"][i].get("name")
    except (KeyError, IndexError, TypeError, AttributeError):
        pass
    return f"rule {name!r} (rules[{i}])" if name else f"rules[{i}]"


def _format(path: str, err: ValidationError, data: Any, lines: dict) -> str:
    msgs = []
    for e in err.errors():
        loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        if len(loc) >= 3 and loc[0] == "rules" and isinstance(loc[1], int) and loc[2] in KINDS:
            loc = loc[:2] + loc[3:]  # drop the discriminator tag pydantic puts in the path
        if e.get("type") in ("union_tag_invalid", "union_tag_not_found"):
            loc = loc + ("kind",)
        line = _line_for(lines, loc) if lines else None
        prefix = ""
        rest = loc
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            prefix = _rule_label(data, loc[1]) + ": "
            rest = loc[2:]
        elif len(loc) >= 2 and loc[0] == "calendars":
            prefix = f"calendar {loc[1]!r}: "
            rest = loc[2:]
        key = ".".join(str(x) for x in rest) or ("(rule)" if prefix else "(top level)")
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        msgs.append(f"{path}:{line if line else '?'}: {prefix}{key}: {msg}")
    return "\n".join(msgs)


def _build(parsed: list[tuple[str, Any, dict]]) -> RuleSet:
    rules: list = []
    calendars: dict[str, TimeInterval] = {}
    inhibits: list[InhibitRule] = []
    staleness = Staleness()
    defaults = Defaults()
    sources: dict[str, str] = {}
    errors: list[str] = []
    models = []
    for path, data, lines in parsed:
        if data is None:
            errors.append(f"{path}: file is empty")
            continue
        try:
            models.append((path, RulesFile.model_validate(data), data, lines))
        except ValidationError as e:
            errors.append(_format(path, e, data, lines))
    if errors:
        raise ConfigError("\n".join(errors))
    cal_src: dict[str, str] = {}
    for path, m, data, lines in models:
        for cname, cal in m.calendars.items():
            if cname in calendars:
                errors.append(f"{path}:{_line_for(lines, ('calendars', cname)) or '?'}: calendar {cname!r}: "
                              f"already defined in {cal_src[cname]}")
            calendars[cname] = cal
            cal_src[cname] = path
        if "staleness" in (data or {}):
            staleness = m.staleness
        if "defaults" in (data or {}):
            defaults = m.defaults
    try:
        compiled_cals = compile_intervals(calendars)
    except ValueError as e:
        raise ConfigError(f"{'/'.join(sorted(set(cal_src.values()))) or '<rules>'}: {e}") from None
    for path, m, data, lines in models:
        for i, r in enumerate(m.rules):
            def where(*key, _i=i):
                ln = _line_for(lines, ("rules", _i) + key) if lines else None
                return f"{path}:{ln or '?'}: {_rule_label(data, _i)}: {'.'.join(key) or '(rule)'}"
            if r.name in sources:
                errors.append(f"{where('name')}: duplicate rule name (first defined at {sources[r.name]})")
                continue
            sources[r.name] = f"{path}:{_line_for(lines, ('rules', i)) if lines else '?'}"
            if r.schedule is not None and r.schedule not in compiled_cals:
                errors.append(f"{where('schedule')}: unknown calendar {r.schedule!r} "
                              f"(defined: {', '.join(sorted(compiled_cals)) or 'none'})")
            if isinstance(r, ExposureRule):
                try:
                    r.compiled_levels()
                except ValueError as e:
                    errors.append(f"{where('levels')}: {e}")
            if isinstance(r, EventRule):
                try:
                    for k, v in r.data.items():
                        if isinstance(v, str) and v.startswith("~"):
                            re.compile(v[1:])
                except re.error as e:
                    errors.append(f"{where('data')}: bad regular expression ({e})")
            if r.enabled:
                rules.append(r)
        for j, ih in enumerate(m.inhibit):
            inhibits.append(InhibitRule(ih, len(inhibits)))
    if errors:
        raise ConfigError("\n".join(errors))
    return RuleSet(rules, compiled_cals, staleness, inhibits, defaults, sources)


def load_rules(*paths: str | Path) -> RuleSet:
    """Load and validate rule files (a directory loads its *.yaml / *.yml). Raises ConfigError."""
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files += sorted(x for x in p.iterdir() if x.suffix in (".yaml", ".yml"))
        else:
            files.append(p)
    if not files:
        raise ConfigError(f"{', '.join(map(str, paths)) or '(none)'}: no rule files")
    parsed = []
    for f in files:
        data, lines = load_yaml(f)
        parsed.append((str(f), data, lines))
    return _build(parsed)

