"""Which syslog lines become campus events (everything is archived): rules as data.

Rules file (``firmware_configs/syslog/events.yaml``, or ``options.events`` inline)::

    rules:
      - name: cisco-link-down             # unique; data.rule of the event
        type: link_down                   # the event type
        severity: warning                 # info | warning | critical | from_syslog (default)
        mnemonic: ["%LINK-3-UPDOWN"]      # conditions, all optional, all must hold:
        program: sshd                     #   a value or a list; "~regex" = regular expression
        vendor: cisco                     #   (fullmatch) on the parsed field
        host: "~core-.*"
        max_severity: warning             #   syslog severity at most this (name or 0..7)
        regex: 'Interface (?P<ifName>.+?), changed state to down'   # re.search on the message;
        extract: {user: 'User=(\\w+)'}   #   named groups and extract fields become data fields
        tags: [ifName]                    #   and these also event tags

The first matching rule wins. Rules with an exact ``mnemonic`` or ``program`` are only tried for
lines with that mnemonic/program (a dict lookup), so many rules stay cheap at 20k lines/s.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from campus_sense.yamlconf import ConfigError, load_model
from drivers.syslog.parse import SEVERITY_CODES, Parsed

SHIPPED_RULES = Path(__file__).resolve().parents[2] / "firmware_configs" / "syslog" / "events.yaml"
_EVENT = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
Match = Union[str, list[str], None]


def _check_match(v: Any, what: str) -> Any:
    for x in ([v] if isinstance(v, str) else v or []):
        if isinstance(x, str) and x.startswith("~"):
            try:
                re.compile(x[1:])
            except re.error as e:
                raise ValueError(f"{what}: bad regular expression {x!r} ({e})") from None
    return v


class EventRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    type: str
    severity: Literal["info", "warning", "critical", "from_syslog"] = "from_syslog"
    mnemonic: Match = None
    program: Match = None
    vendor: Match = None
    host: Match = None
    max_severity: int | str | None = None
    regex: str | None = None
    #: more fields: name -> regex whose first group (searched in the message) is the value
    extract: dict[str, str] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)

    @field_validator("type")
    @classmethod
    def _type(cls, v):
        if not _EVENT.match(v):
            raise ValueError(f"event type {v!r} must be lower_snake_case")
        return v

    @field_validator("mnemonic", "program", "vendor", "host")
    @classmethod
    def _m(cls, v, info):
        return _check_match(v, info.field_name)

    @field_validator("max_severity")
    @classmethod
    def _sev(cls, v):
        if v is None:
            return v
        if isinstance(v, str):
            if v.lower() not in SEVERITY_CODES:
                raise ValueError(f"unknown syslog severity {v!r} (emerg alert crit err warning notice info debug)")
            return SEVERITY_CODES[v.lower()]
        if not 0 <= v <= 7:
            raise ValueError("max_severity: 0..7")
        return v

    @model_validator(mode="after")
    def _rx(self):
        names = set(self.extract)
        for k, x in self.extract.items():
            try:
                if re.compile(x).groups < 1:
                    raise ValueError(f"extract.{k}: the regex needs a group (the value)")
            except re.error as e:
                raise ValueError(f"extract.{k}: bad regular expression ({e})") from None
        if self.regex is not None:
            try:
                rx = re.compile(self.regex)
            except re.error as e:
                raise ValueError(f"regex: bad regular expression ({e})") from None
            names |= {k.rstrip("0123456789") for k in rx.groupindex}
        if bad := [t for t in self.tags if t not in names]:
            raise ValueError(f"tags {bad} are neither named groups of regex nor extract fields")
        if not any((self.mnemonic, self.program, self.vendor, self.host, self.regex, self.max_severity is not None)):
            raise ValueError("a rule needs at least one condition (mnemonic, program, vendor, host, max_severity, regex)")
        return self


class RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: list[EventRule]


def _matcher(v: Match):
    if v is None:
        return None
    vals = [v] if isinstance(v, str) else list(v)
    exact = {x for x in vals if not x.startswith("~")}
    rxs = [re.compile(x[1:]) for x in vals if x.startswith("~")]

    def m(x: str | None) -> bool:
        return x is not None and (x in exact or any(r.fullmatch(x) for r in rxs))
    m.exact = exact if not rxs else None       # type: ignore[attr-defined]
    return m


@dataclass(slots=True)
class _Rule:
    r: EventRule
    mnemonic: Any
    program: Any
    vendor: Any
    host: Any
    rx: re.Pattern | None
    folded: bool = False
    extract: tuple = ()


class RuleSet:
    def __init__(self, rules: list[EventRule]):
        names = [r.name for r in rules]
        if dup := sorted({n for n in names if names.count(n) > 1}):
            raise ConfigError(f"syslog event rules: duplicate names {dup}")
        self.rules = rules
        self._by_mnemonic: dict[str, list[tuple[int, _Rule]]] = {}
        self._by_program: dict[str, list[tuple[int, _Rule]]] = {}
        self._generic: list[tuple[int, _Rule]] = []
        self._cache: dict[tuple, list[_Rule]] = {}
        for i, r in enumerate(rules):
            c = _Rule(r, _matcher(r.mnemonic), _matcher(r.program), _matcher(r.vendor), _matcher(r.host),
                      re.compile(r.regex) if r.regex else None)
            c.folded = c.rx is not None and any(k[-1].isdigit() for k in c.rx.groupindex)
            c.extract = tuple((k, re.compile(x)) for k, x in r.extract.items())
            if c.mnemonic is not None and c.mnemonic.exact:
                for x in c.mnemonic.exact:
                    self._by_mnemonic.setdefault(x, []).append((i, c))
            elif c.program is not None and c.program.exact:
                for x in c.program.exact:
                    self._by_program.setdefault(x, []).append((i, c))
            else:
                self._generic.append((i, c))

    def __len__(self) -> int:
        return len(self.rules)

    def _candidates(self, mnemonic: str | None, program: str | None) -> list[_Rule]:
        """Rules whose mnemonic and program conditions hold for this (mnemonic, program), in file
        order; cached (campus gear repeats a few hundred mnemonics)."""
        key = (mnemonic, program)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        cands: list[tuple[int, _Rule]] = list(self._generic)
        if mnemonic is not None:
            cands += self._by_mnemonic.get(mnemonic, ())
        if program is not None:
            cands += self._by_program.get(program, ())
        out = [c for _, c in sorted(cands, key=lambda x: x[0])
               if (c.mnemonic is None or c.mnemonic(mnemonic)) and (c.program is None or c.program(program))]
        if len(self._cache) >= 8192:
            self._cache.clear()
        self._cache[key] = out
        return out

    def match(self, p: Parsed) -> tuple[EventRule, dict[str, Any]] | None:
        """The first rule (in file order) matching ``p``, with the regex's named groups."""
        for c in self._candidates(p.mnemonic, p.program):
            r = c.r
            if c.vendor is not None and not c.vendor(p.vendor):
                continue
            if c.host is not None and not c.host(p.host):
                continue
            if r.max_severity is not None and p.severity > r.max_severity:
                continue
            groups: dict[str, Any] = {}
            if c.rx is not None:
                m = c.rx.search(p.msg)
                if m is None:
                    continue
                groups = {k: v for k, v in m.groupdict().items() if v is not None}
                if c.folded:      # alternatives: (?P<user>..)|(?P<user2>..) -> user
                    for k in [k for k in groups if k[-1].isdigit()]:
                        groups.setdefault(k.rstrip("0123456789"), groups.pop(k))
            for k, x in c.extract:
                m = x.search(p.msg)
                if m is not None and m.group(1) is not None:
                    groups.setdefault(k, m.group(1))
            return r, groups
        return None


def load_rules(files: list[str | Path] | None, inline: list[EventRule] | None = None) -> RuleSet:
    """Inline rules first (they win), then the files (default: the shipped events.yaml)."""
    rules: list[EventRule] = list(inline or [])
    for f in (files if files is not None else [SHIPPED_RULES]):
        rules += load_model(f, RulesFile).rules
    return RuleSet(rules)
