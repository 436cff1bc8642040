"""SNMP device profiles: data (YAML under firmware_configs/snmp/), not code.

A profile says which standard sections to collect and adds vendor tables (health, Wi-Fi
APs/radios/clients, PoE extras...) as *column OID -> field* maps with type conversions and
scaling. Profiles are selected by the longest matching ``match.sys_object_id`` prefix (a rule
that also names ``match.sys_descr`` regexes, matched against sysDescr, wins over one without);
``generic.yaml`` (MIB-II + standard MIBs) is the fallback. ``extends: <name>`` inherits
another profile's sections, tables and facts (child entries override by key; ``null``
removes an inherited table).

    profiles = load_profiles()                       # validates every file, errors name file:line: key
    prof = profiles.select("1.3.6.1.4.1.2011.2.23.96")   # -> huawei
    value = convert(raw, prof.tables["cpu"].columns["cpu_pct"])

Adding a vendor = adding a YAML file. See firmware_configs/snmp/README.md for the schema.
"""
from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from campus_sense import configs_dir
from campus_sense.yamlconf import ConfigError, load_model

PROFILE_DIR = configs_dir() / "snmp"

STANDARD_SECTIONS = ("entity", "lldp", "fdb", "arp", "ip_addresses", "poe", "health", "wifi")
TABLE_SECTIONS = ("health", "poe", "wifi_summary", "wifi_aps", "wifi_radios", "wifi_vaps", "wifi_clients", "custom")
_OID_RE = re.compile(r"^[0-2](\.[0-9]+)+$")

ValueType = Literal["auto", "int", "float", "str", "mac", "ip", "hex", "oid", "bool", "enum", "dbm_signed"]
IndexType = Literal["int", "mac", "ipv4", "string", "implied_string", "rest"]


def _check_oid(v: str) -> str:
    v = str(v).strip().lstrip(".")
    if not _OID_RE.match(v):
        raise ValueError(f"not a numeric OID: {v!r}")
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Column(_Strict):
    """One column (or scalar) -> one field."""
    oid: str
    type: ValueType = "auto"
    scale: float | None = None           # multiply numeric values (e.g. 0.1 for deci-degrees)
    offset: float | None = None          # then add (e.g. -95 for RSSI-as-SNR vendors)
    enum: dict[int, str] | None = None   # for type enum (unknown values -> the number as string)
    tag: bool = False                    # a tag (identifier) rather than a measured field

    _v_oid = field_validator("oid")(classmethod(lambda cls, v: _check_oid(v)))

    @model_validator(mode="after")
    def _enum_needs_map(self) -> "Column":
        if self.type == "enum" and not self.enum:
            raise ValueError("type enum needs an 'enum' map")
        return self


class IndexPart(_Strict):
    """How to decode one part of a row's index suffix."""
    name: str
    type: IndexType = "int"


class Table(_Strict):
    section: Literal["health", "poe", "wifi_summary", "wifi_aps", "wifi_radios", "wifi_vaps", "wifi_clients",
                     "custom"]
    #: section custom only (and required there): one Sample per row under this name; index parts
    #: and `tag: true` columns become tags, the other columns fields
    measurement: str | None = Field(None, pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
    aggregate: Literal["max", "avg"] = "max"   # health: how rows of this table combine (CPU per core: avg)
    scalar: bool = False                 # columns are scalars: GET <oid>.0 instead of walking
    index: list[IndexPart] = Field(default_factory=list)
    columns: dict[str, Column]

    @field_validator("columns")
    @classmethod
    def _non_empty(cls, v: dict) -> dict:
        if not v:
            raise ValueError("a table needs at least one column")
        return v

    @model_validator(mode="after")
    def _measurement_for_custom(self) -> "Table":
        # standard sections have their own samples (device_health, poe_port, wifi_*); a second,
        # differently tagged copy under a profile-chosen name would only confuse dashboards
        if self.section == "custom" and not self.measurement:
            raise ValueError("section custom needs a 'measurement' name for its samples")
        if self.section != "custom" and self.measurement:
            raise ValueError(f"'measurement' only applies to section custom; section {self.section} "
                             "rows already become its standard samples")
        return self


class Match(_Strict):
    """One way to recognise a device: sysObjectID prefixes and/or sysDescr regular expressions
    (both given: both must match). ``match:`` may also be a list of these (any may match)."""

    sys_object_id: list[str] = Field(default_factory=list)
    #: regular expressions searched in sysDescr (re.search), e.g. '^UAP' for UniFi APs whose
    #: sysObjectID is net-snmp's 1.3.6.1.4.1.8072.3.2.10
    sys_descr: list[str] = Field(default_factory=list)

    @field_validator("sys_object_id")
    @classmethod
    def _oids(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("give at least one sysObjectID prefix (or leave the key out)")
        return [_check_oid(x) for x in v]

    @field_validator("sys_descr")
    @classmethod
    def _regexes(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("give at least one regular expression (or leave the key out)")
        for x in v:
            try:
                re.compile(x)
            except re.error as e:
                raise ValueError(f"bad regular expression {x!r}: {e}") from None
        return v

    @model_validator(mode="after")
    def _some(self) -> "Match":
        if not self.sys_object_id and not self.sys_descr:
            raise ValueError("match needs sys_object_id and/or sys_descr")
        return self


class Profile(_Strict):
    name: str
    vendor: str | None = None
    description: str | None = None
    extends: str | None = None
    #: one Match or a list of them (any may match); stored as a list
    match: list[Match] | None = None
    sections: list[Literal["entity", "lldp", "fdb", "arp", "ip_addresses", "poe", "health", "wifi"]] | None = None
    #: Cisco-style per-VLAN bridge tables: walk BRIDGE-MIB once per VLAN (vtpVlanState)
    #: with community@vlan (v2c) or context vlan-<id> (v3)
    fdb_per_vlan_context: bool | None = None
    facts: dict[str, Column] = Field(default_factory=dict)      # scalar facts (GET)
    tables: dict[str, Table | None] = Field(default_factory=dict)

    #: set by the loader
    source: str = ""

    @field_validator("match", mode="before")
    @classmethod
    def _one_or_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v

    @property
    def matches(self) -> list[Match]:
        return list(self.match or [])

    @property
    def enabled_sections(self) -> tuple[str, ...]:
        return tuple(self.sections) if self.sections is not None else STANDARD_SECTIONS


class ProfileSet:
    def __init__(self, profiles: dict[str, Profile]):
        self.profiles = profiles
        # (prefix, compiled sysDescr regexes or None, profile name); a rule with a sysDescr
        # condition is more specific than one without, then the longest prefix wins
        rules = []
        for name, prof in profiles.items():
            for m in prof.matches:
                regs = [re.compile(r) for r in m.sys_descr] or None
                for p in (m.sys_object_id or [""]):
                    rules.append((tuple(int(x) for x in p.split(".")) if p else (), regs, name))
        self._rules = sorted(rules, key=lambda t: (t[1] is None, -len(t[0])))

    def __getitem__(self, name: str) -> Profile:
        return self.profiles[name]

    def __contains__(self, name: str) -> bool:
        return name in self.profiles

    def select(self, sys_object_id: str | None, sys_descr: str | bytes | None = None) -> Profile:
        """Rules with a matching sysDescr regex first, then the longest sysObjectID prefix match
        (on sub-identifier boundaries); generic otherwise."""
        t: tuple[int, ...] = ()
        if sys_object_id:
            try:
                t = tuple(int(x) for x in str(sys_object_id).strip().lstrip(".").split("."))
            except ValueError:
                t = ()
        if isinstance(sys_descr, bytes):
            sys_descr = sys_descr.decode("utf-8", "replace")
        for prefix, regs, name in self._rules:
            if prefix and t[:len(prefix)] != prefix:
                continue
            if regs is not None and not (sys_descr and any(r.search(sys_descr) for r in regs)):
                continue
            if not prefix and regs is None:
                continue
            return self.profiles[name]
        return self.profiles["generic"]


def _merge(base: Profile, child: Profile) -> Profile:
    tables = {**base.tables, **child.tables}
    tables = {k: v for k, v in tables.items() if v is not None}
    data = base.model_dump(exclude={"source", "tables", "facts", "match", "name", "extends"})
    for k in ("vendor", "description", "sections", "fdb_per_vlan_context"):
        v = getattr(child, k)
        if v is not None:
            data[k] = v
    return Profile(name=child.name, extends=child.extends, match=child.match,
                   facts={**base.facts, **child.facts}, tables=tables, source=child.source,
                   **{k: data[k] for k in ("vendor", "description", "sections", "fdb_per_vlan_context")})


def load_profiles(directory: str | Path | None = None) -> ProfileSet:
    """Load and validate every ``*.yaml`` profile; resolve ``extends``. Raises ConfigError
    naming the file (and line/key) of the first bad file; all files are checked first and
    every error is reported together."""
    d = Path(directory) if directory else PROFILE_DIR
    raw: dict[str, Profile] = {}
    errors: list[str] = []
    for path in sorted(d.glob("*.yaml")):
        try:
            prof = load_model(path, Profile)
        except ConfigError as e:
            errors.append(str(e))
            continue
        prof.source = str(path)
        if prof.name in raw:
            errors.append(f"{path}: name: profile name {prof.name!r} already used by {raw[prof.name].source}")
            continue
        raw[prof.name] = prof
    if errors:
        raise ConfigError("\n".join(errors))
    if "generic" not in raw:
        raise ConfigError(f"{d}: no generic.yaml (profile 'generic' is the fallback for unknown devices)")
    resolved: dict[str, Profile] = {}

    def resolve(name: str, stack: tuple[str, ...]) -> Profile:
        if name in resolved:
            return resolved[name]
        p = raw[name]
        if p.extends is None:
            resolved[name] = p
            return p
        if p.extends not in raw:
            raise ConfigError(f"{p.source}: extends: unknown profile {p.extends!r}")
        if p.extends in stack:
            raise ConfigError(f"{p.source}: extends: cycle {' -> '.join(stack + (name, p.extends))}")
        resolved[name] = _merge(resolve(p.extends, stack + (name,)), p)
        return resolved[name]

    for n in raw:
        resolve(n, ())
    return ProfileSet(resolved)


# ------------------------------------------------------------------------------- conversions

class BadValue(ValueError):
    """A value could not be converted as the profile says (garbage octets, wrong type)."""


def fmt_mac(b: bytes) -> str:
    return ":".join("%02x" % x for x in b)


def _as_text(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace").replace("\x00", "").strip()
    return str(v)


def parse_mac(v: Any) -> str:
    if isinstance(v, (bytes, bytearray)):
        if len(v) == 6:
            return fmt_mac(v)
        s = v.decode("ascii", "replace").strip()
    else:
        s = str(v).strip()
    h = re.sub(r"[^0-9a-fA-F]", "", s)
    if len(h) == 12 and re.fullmatch(r"[0-9A-Fa-f]{1,2}([:.\- ]?[0-9A-Fa-f]{1,4})*", s):
        return ":".join(h[i:i + 2] for i in range(0, 12, 2)).lower()
    raise BadValue(f"not a MAC address: {v!r}")


def parse_ip(v: Any) -> str:
    if isinstance(v, (bytes, bytearray)):
        if len(v) in (4, 16):
            return str(ipaddress.ip_address(bytes(v)))
        if len(v) in (8, 20):  # with zone index (InetAddressIPv4z/IPv6z)
            return str(ipaddress.ip_address(bytes(v[:-4])))
        try:
            return str(ipaddress.ip_address(v.decode("ascii").strip()))
        except (UnicodeDecodeError, ValueError):
            raise BadValue(f"not an IP address: {v!r}") from None
    try:
        return str(ipaddress.ip_address(str(v).strip()))
    except ValueError:
        raise BadValue(f"not an IP address: {v!r}") from None


def _num(v: Any) -> float | int:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, (bytes, bytearray)):
        s = v.decode("ascii", "replace").strip().rstrip("%").strip()
    else:
        s = str(v).strip()
    try:
        return int(s)
    except ValueError:
        try:
            return float(s)
        except ValueError:
            raise BadValue(f"not a number: {v!r}") from None


def convert(v: Any, col: Column) -> Any:
    """Convert a raw client value (int/bytes/str/None) per the column spec; raise BadValue."""
    if v is None:
        raise BadValue("no value")
    t = col.type
    if t == "auto":
        if isinstance(v, (bytes, bytearray)):
            return _as_text(v)
        t = "int" if isinstance(v, int) else "str"
    if t in ("int", "float", "dbm_signed"):
        n = _num(v)
        if t == "dbm_signed" and n > 127:   # unsigned byte carrying a negative dBm
            n -= 256
        if col.scale is not None:
            n = n * col.scale
        if col.offset is not None:
            n = n + col.offset
        if t == "float" or isinstance(n, float):
            return round(float(n), 6)
        return int(n)
    if t == "str":
        return _as_text(v)
    if t == "mac":
        return parse_mac(v)
    if t == "ip":
        return parse_ip(v)
    if t == "hex":
        return bytes(v).hex() if isinstance(v, (bytes, bytearray)) else str(v)
    if t == "oid":
        if isinstance(v, str) and _OID_RE.match(v):
            return v
        raise BadValue(f"not an OID: {v!r}")
    if t == "bool":  # TruthValue: 1 true, 2 false
        n = _num(v)
        if n in (1, 2):
            return n == 1
        raise BadValue(f"not a TruthValue: {v!r}")
    if t == "enum":
        n = int(_num(v))
        return col.enum.get(n, str(n))  # type: ignore[union-attr]
    raise BadValue(f"unknown type {t}")


def decode_index(suffix: str, parts: list[IndexPart]) -> dict[str, Any]:
    """Decode a dotted index suffix into named parts; raise BadValue if it does not fit."""
    try:
        subs = [int(x) for x in suffix.split(".")] if suffix else []
    except ValueError:
        raise BadValue(f"bad index {suffix!r}") from None
    out: dict[str, Any] = {}
    i = 0
    for k, p in enumerate(parts):
        if p.type == "int":
            if i >= len(subs):
                raise BadValue(f"index {suffix!r} too short for {p.name}")
            out[p.name] = subs[i]
            i += 1
        elif p.type == "mac":
            if i + 6 > len(subs) or any(x > 255 for x in subs[i:i + 6]):
                raise BadValue(f"index {suffix!r}: no MAC for {p.name}")
            out[p.name] = fmt_mac(bytes(subs[i:i + 6]))
            i += 6
        elif p.type == "ipv4":
            if i + 4 > len(subs) or any(x > 255 for x in subs[i:i + 4]):
                raise BadValue(f"index {suffix!r}: no IPv4 for {p.name}")
            out[p.name] = ".".join(map(str, subs[i:i + 4]))
            i += 4
        elif p.type == "string":
            if i >= len(subs) or i + 1 + subs[i] > len(subs):
                raise BadValue(f"index {suffix!r}: bad string length for {p.name}")
            n = subs[i]
            out[p.name] = bytes(x & 0xFF for x in subs[i + 1:i + 1 + n]).decode("utf-8", "replace")
            i += 1 + n
        elif p.type in ("implied_string", "rest"):
            rest = subs[i:]
            out[p.name] = (bytes(x & 0xFF for x in rest).decode("utf-8", "replace")
                           if p.type == "implied_string" else ".".join(map(str, rest)))
            i = len(subs)
    return out
