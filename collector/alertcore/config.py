"""Rule file schema (YAML) and loader.

``load_rules(path, ...)`` parses one or more rule files with
``campus_sense.yamlconf`` and returns a :class:`RuleSet`. Every error names
the file, the line, the rule (name and index) and the key, e.g.::

    rules.yaml:14: rule 'fridge-warm' (rules[2]): for: invalid duration '15 minutes' ...

The rule kinds' own keys live with each kind (``kinds/``); this module holds the file level:
calendars, staleness, defaults, inhibit, and the merge of several files.
See ``collector/alertcore/README.md`` for the syntax reference.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from campus_sense.yamlconf import ConfigError, _line_for, load_yaml

from .kinds import KINDS, AnyRule
from .kinds.base import Flap, _Strict
from .labels import Matcher, parse_matchers
from .timeinterval import Duration, OptDuration, TimeInterval, compile_intervals


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


class Maintenance(_Strict):
    """A recurring maintenance window: alerts matching ``matchers`` are muted (``maintenance:NAME``)
    while the calendar ``schedule`` contains the instant (daily / weekly / monthly / exam weeks /
    holidays: whatever the calendar grammar says). ``collect: false``: data collection pauses too, so
    data gaps inside the window are expected (absence / agent_offline alerts are not raised)."""
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")
    matchers: list[str] | dict[str, str]
    schedule: str
    comment: str = ""
    collect: bool = True

    @field_validator("matchers")
    @classmethod
    def _m(cls, v):
        if not parse_matchers(v):
            raise ValueError("a maintenance window needs at least one matcher")
        return v


class MaintenanceWindow:
    """A compiled maintenance window (from rules.yaml, ``source="rules"``, or made through the API,
    ``source="api"``, see ``maintenance.py``)."""
    __slots__ = ("name", "matchers", "calendar", "comment", "collect", "schedule", "source", "created_by",
                 "created_ms")

    def __init__(self, m: Maintenance, calendar, source: str = "rules", schedule: Any = None,
                 created_by: str | None = None, created_ms: int | None = None):
        self.name, self.matchers, self.calendar, self.comment = m.name, parse_matchers(m.matchers), calendar, m.comment
        self.collect = m.collect
        self.schedule = m.schedule if schedule is None else schedule
        self.source, self.created_by, self.created_ms = source, created_by, created_ms

    def matches(self, labels: dict) -> bool:
        return all(m.matches(labels) for m in self.matchers)

    def to_dict(self, now_ms: int | None = None) -> dict:
        d = {"name": self.name, "matchers": [str(m) for m in self.matchers], "schedule": self.schedule,
             "collect": self.collect, "comment": self.comment, "source": self.source,
             "created_by": self.created_by, "created_ms": self.created_ms}
        if now_ms is not None:
            d["open"] = self.calendar.contains(now_ms)
        return d


class RulesFile(_Strict):
    calendars: dict[str, TimeInterval] = Field(default_factory=dict)
    staleness: Staleness = Field(default_factory=Staleness)
    defaults: Defaults = Field(default_factory=Defaults)
    inhibit: list[Inhibit] = Field(default_factory=list)
    maintenance: list[Maintenance] = Field(default_factory=list)
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
        self.maintenance: list[MaintenanceWindow] = []

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
    maintenance: list[MaintenanceWindow] = []
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
            for key, msg in KINDS[r.kind].check(r):
                errors.append(f"{where(key)}: {msg}")
            if r.enabled:
                rules.append(r)
        for j, ih in enumerate(m.inhibit):
            inhibits.append(InhibitRule(ih, len(inhibits)))
        for j, mw in enumerate(m.maintenance):
            ln = _line_for(lines, ("maintenance", j, "schedule")) if lines else None
            if mw.schedule not in compiled_cals:
                errors.append(f"{path}:{ln or '?'}: maintenance {mw.name!r}: schedule: unknown calendar "
                              f"{mw.schedule!r} (defined: {', '.join(sorted(compiled_cals)) or 'none'})")
            elif mw.name in {w.name for w in maintenance}:
                errors.append(f"{path}:{ln or '?'}: maintenance {mw.name!r}: duplicate name")
            else:
                maintenance.append(MaintenanceWindow(mw, compiled_cals[mw.schedule]))
    if errors:
        raise ConfigError("\n".join(errors))
    rs = RuleSet(rules, compiled_cals, staleness, inhibits, defaults, sources)
    rs.maintenance = maintenance
    return rs


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

