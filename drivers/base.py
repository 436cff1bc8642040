"""Typed records every driver yields, and the two driver shapes the agent runs.

A driver knows its protocol and nothing about MQTT, storage or alerts: it turns
device replies into ``Sample`` (time series), ``Event`` (door forced, tamper,
link down...) and ``Facts`` (model, serial, firmware, MAC, IP for inventory).
Failures are raised as ``DeviceError`` with a short human reason; the agent
reports them per device and carries on with the others.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Protocol, Union


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


async def aiter_records(records: list[Record]) -> AsyncIterator[Record]:
    for r in records:
        yield r
