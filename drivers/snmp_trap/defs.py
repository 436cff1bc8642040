"""Trap definitions as data (``firmware_configs/traps/*.yaml``): which notification OID is which
campus event, its severity and which varbinds to keep under which names.

File format (one MIB or vendor family per file)::

    mib: IF-MIB                     # for humans and the event's data.mib
    vendor: standard                # optional
    source: RFC 2863                # where the OIDs come from
    traps:
      linkDown:                     # the trap's name, unique across all files (event data.trap)
        oid: 1.3.6.1.6.3.1.1.5.3    # snmpTrapOID (v1 traps are converted per RFC 3584 3.1)
        event: link_down            # campus event type
        severity: warning           # info | warning | critical
        index: [ifIndex]            # instance sub-identifiers of the first indexed varbind, by name
        tags: [ifIndex, ifName]     # kept fields also copied into the event's tags
        keep_unlisted: false        # also keep varbinds not listed below (data.varbinds, by OID)
        varbinds:                   # name -> column/scalar OID (a prefix of the varbind's OID)
          ifIndex: 1.3.6.1.2.1.2.2.1.1
          ifOperStatus: {oid: 1.3.6.1.2.1.2.2.1.8, enum: {1: up, 2: down}}
          mac: {oid: 1.3.6.1.4.1.9.9.315.1.2.1.1.10, as: mac}   # as: text | hex | mac | int
        cases:                      # optional, first match wins: another event type / severity
          - {match: {ifOperStatus: up}, event: link_up, severity: info}

Loading checks everything (names, OIDs, duplicates across files) and fails with ``file:line``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from campus_sense.yamlconf import ConfigError, load_model
from drivers.snmp.fastv2c import _suffix_tuple, decode_oid, encode_oid

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "firmware_configs" / "traps"
Severity = Literal["info", "warning", "critical"]
_OID = re.compile(r"^\.?[0-2](\.\d+)+$")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_EVENT = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

#: RFC 3584 3.1: generic-trap 0..5 -> snmpTraps.(generic+1)
GENERIC_TRAPS = ("1.3.6.1.6.3.1.1.5.1", "1.3.6.1.6.3.1.1.5.2", "1.3.6.1.6.3.1.1.5.3", "1.3.6.1.6.3.1.1.5.4",
                 "1.3.6.1.6.3.1.1.5.5", "1.3.6.1.6.3.1.1.5.6")


def _oid(v: Any) -> str:
    if not isinstance(v, str) or not _OID.match(v.strip()):
        raise ValueError(f"{v!r} is not a numeric OID (MIB names are not resolved)")
    return v.strip().lstrip(".")


class VarbindDef(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    oid: str
    as_: Literal["auto", "text", "hex", "mac", "int"] = Field("auto", alias="as")
    enum: dict[int, str] = Field(default_factory=dict)

    @field_validator("oid", mode="before")
    @classmethod
    def _v(cls, v):
        return _oid(v)


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid")
    match: dict[str, Any]
    event: str | None = None
    severity: Severity | None = None

    @field_validator("event")
    @classmethod
    def _ev(cls, v):
        if v is not None and not _EVENT.match(v):
            raise ValueError(f"event type {v!r} must be lower_snake_case")
        return v


class TrapDef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    oid: str
    event: str
    severity: Severity = "info"
    varbinds: dict[str, VarbindDef] = Field(default_factory=dict)
    index: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    keep_unlisted: bool = False
    cases: list[Case] = Field(default_factory=list)
    description: str | None = None

    @field_validator("oid", mode="before")
    @classmethod
    def _v(cls, v):
        return _oid(v)

    @field_validator("varbinds", mode="before")
    @classmethod
    def _short(cls, v):
        if isinstance(v, dict):
            return {k: ({"oid": x} if isinstance(x, str) else x) for k, x in v.items()}
        return v

    @field_validator("event")
    @classmethod
    def _ev(cls, v):
        if not _EVENT.match(v):
            raise ValueError(f"event type {v!r} must be lower_snake_case")
        return v

    @model_validator(mode="after")
    def _names(self):
        for n in list(self.varbinds) + self.index:
            if not _NAME.match(n):
                raise ValueError(f"field name {n!r}: letters, digits and _ (starting with a letter)")
        known = set(self.varbinds) | set(self.index)
        if bad := [t for t in self.tags if t not in known]:
            raise ValueError(f"tags {bad} are neither varbinds nor index names")
        for c in self.cases:
            if bad := [k for k in c.match if k not in known]:
                raise ValueError(f"cases: match on {bad}, which are neither varbinds nor index names")
        return self


class TrapFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mib: str
    vendor: str | None = None
    source: str | None = None
    traps: dict[str, TrapDef]

    @field_validator("traps")
    @classmethod
    def _names(cls, v):
        for n in v:
            if not _NAME.match(n):
                raise ValueError(f"trap name {n!r}: letters, digits and _ (starting with a letter)")
        return v


@dataclass(slots=True)
class Compiled:
    name: str
    mib: str
    oid: str
    event: str
    severity: str
    #: (OID prefix content bytes, field name, VarbindDef); longest prefixes first
    varbinds: list[tuple[bytes, str, VarbindDef]]
    index: list[str]
    tags: list[str]
    keep_unlisted: bool
    cases: list[tuple[list[tuple[str, Any]], str | None, str | None]] = field(default_factory=list)
    where: str = ""


class Catalog:
    """All trap definitions, by snmpTrapOID."""

    def __init__(self, compiled: list[Compiled]):
        self.by_oid: dict[str, Compiled] = {c.oid: c for c in compiled}
        self.by_name: dict[str, Compiled] = {c.name: c for c in compiled}

    def __len__(self) -> int:
        return len(self.by_oid)


def _files(paths: list[str | Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(x for x in p.iterdir() if x.suffix in (".yaml", ".yml") and x.is_file()))
        elif p.is_file():
            out.append(p)
        else:
            raise ConfigError(f"{p}: trap definitions: no such file or directory")
    return out


def load_catalog(paths: list[str | Path] | None = None) -> Catalog:
    """Load and check definition files/directories (default: the shipped ``firmware_configs/traps``)."""
    files = _files(list(paths) if paths else [SHIPPED_DIR])
    compiled: list[Compiled] = []
    by_oid: dict[str, str] = {}
    by_name: dict[str, str] = {}
    for f in files:
        tf = load_model(f, TrapFile)
        for name, d in tf.traps.items():
            where = f"{f}: traps.{name}"
            if name in by_name:
                raise ConfigError(f"{where}: trap name {name!r} already defined in {by_name[name]}")
            if d.oid in by_oid:
                raise ConfigError(f"{where}: OID {d.oid} already defined as {by_oid[d.oid]}")
            by_name[name] = where
            by_oid[d.oid] = f"{f}: traps.{name}"
            vbs = sorted(((encode_oid(v.oid), k, v) for k, v in d.varbinds.items()), key=lambda x: -len(x[0]))
            cases = [([(k, v) for k, v in c.match.items()], c.event, c.severity) for c in d.cases]
            compiled.append(Compiled(name, tf.mib, d.oid, d.event, d.severity, vbs, d.index, d.tags,
                                     d.keep_unlisted, cases, where))
    return Catalog(compiled)


# ------------------------------------------------------------------------------- values

def _printable(b: bytes) -> str | None:
    b = b.rstrip(b"\x00")
    try:
        s = b.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if s.isprintable() or all(c.isprintable() or c in "\r\n\t" for c in s):
        return s
    return None


def mac_text(b: bytes) -> str:
    return ":".join("%02x" % x for x in b)


MAX_STR = 256


def convert(val: Any, vd: VarbindDef | None = None) -> Any:
    """A decoded varbind value as JSON-friendly data (per the definition's ``as``/``enum``)."""
    if val is None:
        return None
    if isinstance(val, (bytes, bytearray, memoryview)):
        b = bytes(val)
        how = vd.as_ if vd is not None else "auto"
        if how == "mac" and len(b) == 6:
            return mac_text(b)
        if how == "hex":
            return b.hex()[:MAX_STR]
        if how == "int":
            return int.from_bytes(b, "big") if b else 0
        s = _printable(b)
        if s is not None:
            return s[:MAX_STR]
        if how == "auto" and len(b) == 6:
            return mac_text(b)
        return b.hex()[:MAX_STR]
    if isinstance(val, int):
        if vd is not None and vd.enum:
            return vd.enum.get(val, val)
        return val
    if isinstance(val, str):
        return val[:MAX_STR]
    return repr(val)[:MAX_STR]   # noSuchObject & co. (not sent in traps, but never crash)


def apply(c: Compiled, vbs: list[tuple[bytes, Any]], keep_unlisted: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(fields, unlisted) of one trap's varbinds (sysUpTime/snmpTrapOID already removed)."""
    fields: dict[str, Any] = {}
    unlisted: dict[str, Any] = {}
    suffix: tuple[int, ...] | None = None
    for oid, val in vbs:
        for prefix, name, vd in c.varbinds:
            if oid[:len(prefix)] == prefix:
                if name not in fields:
                    fields[name] = convert(val, vd)
                if suffix is None and c.index and len(oid) > len(prefix):
                    try:
                        sx = _suffix_tuple(oid[len(prefix):])
                    except ValueError:
                        sx = ()
                    if sx and sx != (0,):
                        suffix = sx
                break
        else:
            if keep_unlisted or c.keep_unlisted:
                if len(unlisted) < 32:
                    unlisted[decode_oid(oid)] = convert(val)
    if suffix is not None:
        for name, x in zip(c.index, suffix):
            fields.setdefault(name, x)
    return fields, unlisted
