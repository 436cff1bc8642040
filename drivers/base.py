"""Typed records every driver yields, and the two driver shapes the agent runs.

A driver knows its protocol and nothing about MQTT, storage or alerts: it turns
device replies into ``Sample`` (time series), ``Event`` (door forced, tamper,
link down...) and ``Facts`` (model, serial, firmware, MAC, IP for inventory).
Failures are raised as ``DeviceError`` with a short human reason; the agent
reports them per device and carries on with the others.
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, AsyncContextManager, AsyncIterator, Callable, Protocol, Union

log = logging.getLogger("campus_sense.drivers")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class Sample:
    measurement: str
    device: str
    fields: dict[str, Any]
    tags: dict[str, str] = field(default_factory=dict)
    time_ms: int = field(default_factory=now_ms)


@dataclass(slots=True)
class Event:
    device: str
    type: str
    severity: str = "info"  # info | warning | critical
    data: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    time_ms: int = field(default_factory=now_ms)


@dataclass(slots=True)
class Facts:
    device: str
    facts: dict[str, Any]
    time_ms: int = field(default_factory=now_ms)


Record = Union[Sample, Event, Facts]


class DeviceError(Exception):
    """A device could not be polled. ``reason`` is a short machine-friendly tag
    (timeout, auth, unreachable, protocol, config), the message is for humans."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class PollingDriver(Protocol):
    """Polled once per interval by the scheduler, under a per-cycle deadline."""

    name: str

    async def poll(self) -> list[Record]: ...

    async def close(self) -> None: ...


class StreamingDriver(Protocol):
    """Runs for the agent's lifetime and pushes records as they happen (events, sniffers)."""

    name: str

    async def run(self, emit: Callable[[Record], None]) -> None: ...


class Slots:
    """The agent's bound on device conversations at once (``polling.max_concurrent``).

    The scheduler holds one per polling cycle; device work a driver runs outside poll() (SNMP
    topology walks) holds one through :func:`device_slot`, so 20 switches with
    ``max_concurrent: 4`` never have more than 4 cycles or walks in flight."""

    def __init__(self, size: int):
        self.size = size
        self._sem = asyncio.Semaphore(size)
        self.in_use = 0
        self.waits_total = 0       # acquisitions that found every slot busy
        self.wait_s_total = 0.0    # time spent waiting for a slot

    def free(self) -> bool:
        return not self._sem.locked()

    @contextlib.asynccontextmanager
    async def hold(self, who: str) -> AsyncIterator[None]:
        if self._sem.locked():
            self.waits_total += 1
            log.debug("%s: waiting for one of %d polling slots", who, self.size)
            t0 = time.monotonic()
            try:
                await self._sem.acquire()
            finally:
                self.wait_s_total += time.monotonic() - t0
        else:
            await self._sem.acquire()
        self.in_use += 1
        try:
            yield
        finally:
            self.in_use -= 1
            self._sem.release()


# A context variable, not a module global: asyncio tasks inherit it, so the agent's device tasks
# and every task a driver starts from them share the agent's slots, while code outside an agent
# (snmp-inventory, tests, a second agent in the same process) is not bound to them.
_slots: ContextVar[Slots | None] = ContextVar("campus_sense_slots", default=None)


def install_slots(slots: Slots | None) -> None:
    """Make ``slots`` the limit for device work in tasks created from now on in this context."""
    _slots.set(slots)


def device_slot(who: str) -> AsyncContextManager[Any]:
    """``async with device_slot(who):`` hold one of the agent's slots; unlimited without an agent."""
    s = _slots.get()
    return s.hold(who) if s is not None else contextlib.nullcontext()


def slot_free() -> bool:
    """Whether device_slot() would be granted without waiting."""
    s = _slots.get()
    return s is None or s.free()


async def aiter_records(records: list[Record]) -> AsyncIterator[Record]:
    for r in records:
        yield r


class WarnBudget:
    """Warnings about bad input from the network (receivers: traps, syslog, access panels): at most
    ``per_minute`` lines a minute, then one line saying how many more there were. A flood of
    malformed datagrams cannot fill the disk with logs."""

    def __init__(self, logger: logging.Logger, prefix: str, per_minute: int = 20):
        self.logger, self.prefix, self.per_minute = logger, prefix, per_minute
        self._start, self._n = 0.0, 0

    def __call__(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._start >= 60:
            if self._n > self.per_minute:
                self.logger.warning("%s: %d more problems in the last minute not logged", self.prefix,
                                    self._n - self.per_minute)
            self._start, self._n = now, 0
        self._n += 1
        if self._n <= self.per_minute:
            self.logger.warning(self.prefix + ": " + msg, *args)


def parse_listen(v: str | None, what: str = "listen", examples: str = "0.0.0.0:162, [::]:162"
                 ) -> tuple[str, int] | None:
    """A receiver's listen address ``host:port``, ``[v6]:port`` or ``:port`` -> (host, port); None
    stays None (not listening). ValueError naming ``what`` and the value otherwise."""
    if v is None:
        return None
    v = str(v).strip()
    if v.startswith("["):
        host, _, port = v[1:].partition("]:")
    else:
        host, _, port = v.rpartition(":")
    host = host or "0.0.0.0"
    try:
        p = int(port)
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{what} {v!r}: expected IP:PORT (e.g. {examples})") from None
    if not 0 <= p <= 65535:
        raise ValueError(f"{what} {v!r}: port out of range")
    return host, p

