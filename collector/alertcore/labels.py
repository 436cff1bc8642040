"""THE label matcher grammar of alerting (rules, inhibition, silences, notify routes).

Alertmanager style: ``name=value``, ``name!=value``, ``name=~regex``, ``name!~regex``
(regexes are fully anchored; a missing label is the empty string; a value may be quoted).
A mapping ``{name: value}`` means equality for each pair; ``{name, value, op}`` or the
Alertmanager API's ``{name, value, isRegex, isEqual}`` is one matcher."""
from __future__ import annotations

import re
from typing import Any, Iterable

_MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$')


class Matcher:
    __slots__ = ("name", "op", "value", "_re")

    def __init__(self, name: str, op: str, value: str):
        if op not in ("=", "!=", "=~", "!~"):
            raise ValueError(f"matcher {name}: unknown operator {op!r} (use =, !=, =~, !~)")
        self.name, self.op, self.value = name, op, str(value)
        self._re = None
        if op in ("=~", "!~"):
            try:
                self._re = re.compile(f"(?:{self.value})\\Z")
            except re.error as e:
                raise ValueError(f"matcher {name}{op}{value!r}: invalid regex ({e})") from None

    def matches(self, labels: dict[str, Any]) -> bool:
        v = labels.get(self.name)
        v = "" if v is None else str(v)
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        hit = self._re.match(v) is not None  # type: ignore[union-attr]
        return hit if self.op == "=~" else not hit

    def to_dict(self) -> dict:
        return {"name": self.name, "op": self.op, "value": self.value}

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'

    def __repr__(self) -> str:
        return f"Matcher({self})"

    def __eq__(self, other):
        return isinstance(other, Matcher) and (self.name, self.op, self.value) == (other.name, other.op, other.value)


def parse_matcher(s: Any) -> Matcher:
    if isinstance(s, Matcher):
        return s
    if isinstance(s, dict):
        if set(s) - {"name", "op", "value", "isRegex", "isEqual"} or "name" not in s or "value" not in s:
            raise ValueError(f"matcher {s!r}: expected {{name, value, op}}")
        op = s.get("op")
        if op is None:
            regex, equal = bool(s.get("isRegex")), s.get("isEqual", True)
            op = ("=~" if equal else "!~") if regex else ("=" if equal else "!=")
        return Matcher(str(s["name"]), op, s["value"])
    if not isinstance(s, str):
        raise ValueError(f"matcher {s!r}: expected a string like building=A")
    m = _MATCHER.match(s)
    if not m:
        raise ValueError(f"matcher {s!r}: expected name=value, name!=value, name=~regex or name!~regex")
    name, op, value = m.groups()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return Matcher(name, op, value)


def parse_matchers(spec: Any) -> list[Matcher]:
    """A list of matcher strings/dicts, one matcher string, or a {name: value} mapping."""
    if spec is None:
        return []
    if isinstance(spec, str):
        return [parse_matcher(spec)]
    if isinstance(spec, dict):
        if "name" in spec and "value" in spec:
            return [parse_matcher(spec)]
        return [Matcher(str(k), "=", str(v)) for k, v in spec.items()]
    if isinstance(spec, Iterable):
        return [parse_matcher(x) for x in spec]
    raise ValueError(f"matchers {spec!r}: expected a list like ['building=A', 'rule=~fridge.*']")


def match_all(matchers: list[Matcher], labels: dict[str, Any]) -> bool:
    for m in matchers:
        if not m.matches(labels):
            return False
    return True
