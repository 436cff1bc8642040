"""Register map model, profile loading, request planning and value decoding.

Pure code (no I/O) so it is testable without a device: ``plan()`` turns a register
list into as few read requests as possible, ``decode()`` turns raw 16-bit words
into numbers.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from campus_sense import configs_dir
from campus_sense.yamlconf import load_model

PROFILE_DIR = configs_dir() / "modbus"

WORDS = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2}
MAX_READ = 125  # registers per read request (Modbus spec limit for FC 3/4)

#: Modbus exception codes (Modbus Application Protocol V1.1b3, section 7).
EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


def exception_name(code: int | None) -> str:
    return EXCEPTION_NAMES.get(code or 0, f"exception code {code}")


class Register(BaseModel):
    """One value in the device's register map (agent.yaml ``registers:`` or a profile)."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = None  # for error messages; default "<kind> <address>"
    kind: Literal["holding", "input"] = Field("holding", validation_alias=AliasChoices("kind", "table"))
    address: int = Field(ge=0, le=65535)  # 0-based PDU address (40001 in "4x" notation is address 0)
    type: Literal["int16", "uint16", "int32", "uint32", "float32"] = "int16"
    word_order: Literal["big", "little"] = "big"  # big: high word at the lower address
    scale: float = 1.0
    offset: float = 0.0
    measurement: str = Field(min_length=1)
    field: str = Field("value", min_length=1)
    unit: str | None = None
    invalid: list[float] = Field(default_factory=list)  # raw values meaning "sensor fault" (e.g. 32767)

    @model_validator(mode="after")
    def _fits(self) -> "Register":
        if self.address + WORDS[self.type] - 1 > 65535:
            raise ValueError(f"{self.type} at address {self.address} runs past register 65535")
        return self

    @property
    def words(self) -> int:
        return WORDS[self.type]

    @property
    def label(self) -> str:
        where = f"{self.kind} register {self.address}"
        if self.words > 1:
            where += f"-{self.address + self.words - 1}"
        return f"{self.name} ({where})" if self.name else where


class Profile(BaseModel):
    """firmware_configs/modbus/<name>.yaml."""

    model_config = ConfigDict(extra="forbid")
    description: str | None = None
    vendor: str | None = None
    model: str | None = None
    registers: list[Register] = Field(min_length=1)


def profile_path(name: str) -> Path:
    if "/" in name or name.endswith((".yaml", ".yml")):
        return Path(name)
    return PROFILE_DIR / f"{name}.yaml"


def load_profile(name: str) -> Profile:
    """Load a profile by name (firmware_configs/modbus/<name>.yaml) or path; ConfigError names file:line."""
    return load_model(profile_path(name), Profile)


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


@dataclass
class Block:
    """One read request: ``count`` registers of ``kind`` from ``start``, serving ``regs``."""

    kind: str
    start: int
    count: int
    regs: list[Register] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.kind} registers {self.start}-{self.start + self.count - 1}"


def plan(registers: list[Register], max_count: int = MAX_READ, max_gap: int = 0) -> list[Block]:
    """Group registers into read requests: same table, overlapping/adjacent (or within
    ``max_gap`` unused registers), at most ``max_count`` registers per request."""
    out: list[Block] = []
    for kind in ("holding", "input"):
        regs = sorted((r for r in registers if r.kind == kind), key=lambda r: (r.address, r.words))
        cur: Block | None = None
        for r in regs:
            end = r.address + r.words
            if cur is not None and r.address <= cur.start + cur.count + max_gap \
                    and max(end, cur.start + cur.count) - cur.start <= max_count:
                cur.count = max(cur.count, end - cur.start)
                cur.regs.append(r)
            else:
                cur = Block(kind, r.address, r.words, [r])
                out.append(cur)
    return out


class DecodeError(ValueError):
    pass


def decode(reg: Register, words: list[int]) -> float | int:
    """Raw 16-bit words (as read, lowest address first) -> scaled value."""
    if len(words) != reg.words:
        raise DecodeError(f"{reg.label}: expected {reg.words} register(s), got {len(words)}")
    if reg.words == 2 and reg.word_order == "little":
        words = [words[1], words[0]]
    raw_bytes = b"".join(struct.pack(">H", w & 0xFFFF) for w in words)
    fmt = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f"}[reg.type]
    raw = struct.unpack(fmt, raw_bytes)[0]
    if reg.type == "float32" and not math.isfinite(raw):
        raise DecodeError(f"{reg.label}: not a finite float ({raw}); wrong word_order or type?")
    if raw in reg.invalid:
        raise DecodeError(f"{reg.label}: device reports sensor fault (raw value {raw})")
    if reg.scale == 1.0 and reg.offset == 0.0:
        return round(raw, 6) if isinstance(raw, float) else raw
    return round(raw * reg.scale + reg.offset, 6)
