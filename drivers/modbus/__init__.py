"""Modbus TCP driver: canteen sensors (fridge/freezer controllers, gas detectors) as samples.

Reads holding/input registers described by a ``registers`` list in agent.yaml and/or a
``profile`` (firmware_configs/modbus/<name>.yaml), in as few requests as possible
(contiguous registers share one read), decodes int16/uint16/int32/uint32/float32 with
scale/offset and emits ``Sample(measurement, fields)`` — e.g. ``temperature`` /
``value`` for the fridge-warm rule, ``gas`` / ``lel_pct`` for gas-level.

One failing block (a register the device does not have, a sensor fault) never loses
the others: per-register errors are kept in ``driver.errors`` and summarised in a
``modbus`` sample; only when nothing could be read does ``poll()`` raise
``DeviceError`` (timeout | unreachable | protocol) naming the registers and the
Modbus exception. See README.md.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from campus_sense.yamlconf import ConfigError
from drivers.base import DeviceError, Facts, Record, Sample, now_ms

from .registers import (MAX_READ, Block, DecodeError, Profile, Register, decode, exception_name, load_profile,
                        plan)

log = logging.getLogger(__name__)


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = Field(min_length=1)
    port: int = Field(502, ge=1, le=65535)
    unit: int = Field(1, ge=0, le=255, validation_alias=AliasChoices("unit", "unit_id", "slave", "device_id"))
    timeout_s: float = Field(2.0, gt=0, le=60)  # per request
    retries: int = Field(0, ge=0, le=5)
    profile: str | None = None  # firmware_configs/modbus/<profile>.yaml, or a path to a YAML file
    registers: list[Register] = Field(default_factory=list)  # in addition to the profile's
    max_registers_per_read: int = Field(MAX_READ, ge=1, le=MAX_READ)
    max_gap: int = Field(0, ge=0, le=64)  # read through this many unused registers to save a request
    vendor: str | None = None
    model: str | None = None
    serial: str | None = None
    facts_interval_s: float = Field(3600.0, gt=0)
    _profile: Profile | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _registers(self) -> "Options":
        if self.profile:
            from .registers import available_profiles, profile_path
            if not profile_path(self.profile).is_file():
                raise ValueError(f"unknown profile {self.profile!r}: {profile_path(self.profile)} does not exist "
                                 f"(available: {', '.join(available_profiles()) or 'none'})")
            try:
                self._profile = load_profile(self.profile)
            except ConfigError as e:
                raise ValueError(f"profile {self.profile!r}: {e}") from None
        regs = self.all_registers()
        if not regs:
            raise ValueError("no registers: set 'profile' and/or 'registers'")
        seen: dict[tuple[str, str], str] = {}
        for r in regs:
            key = (r.measurement, r.field)
            if key in seen:
                raise ValueError(f"{r.label} and {seen[key]} both map to {r.measurement}.{r.field}")
            seen[key] = r.label
        return self

    def all_registers(self) -> list[Register]:
        return (list(self._profile.registers) if self._profile else []) + list(self.registers)


class _ReadError(Exception):
    def __init__(self, reason: str, message: str, code: int | None = None):
        super().__init__(message)
        self.reason, self.code = reason, code


class ModbusDriver:
    name = "modbus"

    def __init__(self, device_id: str, options: Options, tags: dict[str, str]):
        self.device_id, self.opts, self.tags = device_id, options, tags
        self.registers = options.all_registers()
        self.blocks: list[Block] = plan(self.registers, options.max_registers_per_read, options.max_gap)
        self.errors: dict[str, str] = {}  # register label -> error of the last poll
        self.requests = 0  # read requests sent in the last poll
        self._client: Any = None
        self._facts_at: float | None = None
        prof = options._profile
        self.facts: dict[str, Any] = {k: v for k, v in {
            "vendor": options.vendor or (prof.vendor if prof else None),
            "model": options.model or (prof.model if prof else None),
            "serial": options.serial,
            "profile": options.profile,
            "ip": options.host,
            "modbus_unit": options.unit,
        }.items() if v is not None}
        units = {f"{r.measurement}.{r.field}": r.unit for r in self.registers if r.unit}
        if units:
            self.facts["units"] = units

    @property
    def _where(self) -> str:
        return f"{self.opts.host}:{self.opts.port} unit {self.opts.unit}"

    # ------------------------------------------------------------ connection
    async def _connect(self):
        if self._client is not None and self._client.connected:
            return self._client
        self._drop_client()
        from pymodbus.client import AsyncModbusTcpClient  # imported lazily: only agents using Modbus need it

        client = AsyncModbusTcpClient(self.opts.host, port=self.opts.port, timeout=self.opts.timeout_s,
                                      retries=self.opts.retries, reconnect_delay=0, name=self.device_id)
        try:
            ok = await client.connect()
        except BaseException:
            client.close()
            raise
        if not ok:
            client.close()
            raise await self._why_not()
        self._client = client
        return client

    async def _why_not(self) -> DeviceError:
        """pymodbus only says 'not connected': find out why with a plain TCP connect."""
        host, port = self.opts.host, self.opts.port
        try:
            async with asyncio.timeout(self.opts.timeout_s):
                _, w = await asyncio.open_connection(host, port)
            w.close()
            return DeviceError("unreachable", f"{self._where}: TCP connect works but the Modbus client could not "
                                              f"connect (try again)")
        except socket.gaierror as e:
            return DeviceError("unreachable", f"cannot resolve host {host!r}: {e.strerror or e}")
        except ConnectionRefusedError:
            return DeviceError("unreachable", f"{host}:{port}: connection refused (no Modbus TCP server listening)")
        except TimeoutError:
            return DeviceError("timeout", f"{host}:{port}: no answer to TCP connect within {self.opts.timeout_s:g} s")
        except OSError as e:
            return DeviceError("unreachable", f"{host}:{port}: {e.strerror or e}")

    def _drop_client(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001
                log.debug("%s: closing Modbus client failed", self.device_id, exc_info=True)
            self._client = None

    async def close(self) -> None:
        self._drop_client()

    # ------------------------------------------------------------ reading
    async def _read(self, client, kind: str, start: int, count: int, what: str) -> list[int]:
        from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

        fn = client.read_holding_registers if kind == "holding" else client.read_input_registers
        self.requests += 1
        try:
            rr = await fn(start, count=count, device_id=self.opts.unit)
        except ModbusIOException as e:
            if "no response" in str(e).lower():
                raise _ReadError("timeout", f"{what}: no response within {self.opts.timeout_s:g} s") from None
            raise _ReadError("protocol", f"{what}: {e}") from None
        except ConnectionException as e:
            raise _ReadError("unreachable", f"{what}: connection lost ({e})") from None
        except ModbusException as e:
            raise _ReadError("protocol", f"{what}: {e}") from None
        if rr.isError():
            code = getattr(rr, "exception_code", None)
            raise _ReadError("protocol", f"{what}: {exception_name(code)} (Modbus exception {code})", code)
        regs = list(getattr(rr, "registers", None) or [])
        if len(regs) < count:
            raise _ReadError("protocol", f"{what}: short answer ({len(regs)} of {count} registers)")
        return regs[:count]

    async def poll(self) -> list[Record]:
        self.requests = 0
        client = await self._connect()
        t = now_ms()
        values: list[tuple[Register, float | int]] = []
        errors: dict[str, tuple[str, str]] = {}  # register label -> (reason, message)
        timeouts = 0
        try:
            for block in self.blocks:
                if timeouts >= 2 or self._client is None:
                    for r in block.regs:
                        errors[r.label] = ("timeout" if timeouts else "unreachable",
                                           f"{r.label}: not read (device stopped answering)")
                    continue
                what = block.regs[0].label if len(block.regs) == 1 else \
                    f"{block.label} [{', '.join(r.name or str(r.address) for r in block.regs)}]"
                try:
                    words = await self._read(client, block.kind, block.start, block.count, what)
                except _ReadError as e:
                    if e.reason == "timeout":
                        timeouts += 1
                    elif e.reason == "unreachable":
                        self._drop_client()
                    if e.code in (2, 3) and len(block.regs) > 1:
                        # One missing register spoils a merged read: read each one alone.
                        for r in block.regs:
                            try:
                                w = await self._read(client, r.kind, r.address, r.words, r.label)
                                values.append((r, decode(r, w)))
                            except _ReadError as e2:
                                errors[r.label] = (e2.reason, str(e2))
                            except DecodeError as e2:
                                errors[r.label] = ("protocol", str(e2))
                    else:
                        for r in block.regs:
                            errors[r.label] = (e.reason, str(e) if len(block.regs) == 1 else f"{r.label}: {e}")
                    continue
                timeouts = 0
                for r in block.regs:
                    off = r.address - block.start
                    try:
                        values.append((r, decode(r, words[off:off + r.words])))
                    except DecodeError as e:
                        errors[r.label] = ("protocol", str(e))
        except BaseException:
            self._drop_client()  # cancelled by the deadline mid-request: start clean next time
            raise
        if timeouts:
            self._drop_client()  # a late answer must not be taken for the next request's
        self.errors = {k: m for k, (_, m) in errors.items()}
        if errors:
            log.warning("%s: %d of %d register(s) failed: %s", self.device_id, len(errors), len(self.registers),
                        "; ".join(self.errors.values()))
        if not values:
            reasons = [r for r, _ in errors.values()]
            reason = next((x for x in ("unreachable", "timeout", "protocol") if x in reasons), "protocol")
            msgs = list(dict.fromkeys(m for _, m in errors.values()))
            raise DeviceError(reason, f"{self._where}: nothing could be read: " + "; ".join(msgs[:5])
                              + (f" (+{len(msgs) - 5} more)" if len(msgs) > 5 else ""))
        return self._records(t, values, errors)

    def _records(self, t: int, values, errors) -> list[Record]:
        out: list[Record] = []
        mono = time.monotonic()
        if self._facts_at is None or mono - self._facts_at >= self.opts.facts_interval_s:
            self._facts_at = mono
            out.append(Facts(self.device_id, dict(self.facts), t))
        by_m: dict[str, dict[str, Any]] = {}
        for r, v in values:
            by_m.setdefault(r.measurement, {})[r.field] = v
        for m, fields in by_m.items():
            out.append(Sample(m, self.device_id, fields, dict(self.tags), t))
        status: dict[str, Any] = {"registers_ok": len(values), "registers_failed": len(errors),
                                  "requests": self.requests}
        if errors:
            status["error"] = "; ".join(list(dict.fromkeys(m for _, m in errors.values())))[:500]
        out.append(Sample("modbus", self.device_id, status, dict(self.tags), t))
        return out


def create(device_id: str, options: Options, tags: dict[str, str]) -> ModbusDriver:
    return ModbusDriver(device_id, options, tags)
