"""Store interfaces.

The collector keeps *metadata* (agents, devices, dedup state, gaps, events,
latest values, tokens) in SQLite always; *time series* go either to SQLite as
well (``store.kind: sqlite``) or to a ``TimeSeriesSink`` such as InfluxDB.

``Store.apply`` is the single write entry point used by ingest: it takes one
commit group of decoded messages and rejects and commits them atomically
(data + dedup + gaps + counters in one transaction). Only after it returns
does ingest acknowledge the MQTT messages.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Iterable

from campus_sense.wire import Message


class SeriesQueryUnsupported(RuntimeError):
    """The configured time-series backend cannot be queried through this API."""


class SeriesBackendError(RuntimeError):
    """The time-series server that answers queries failed or cannot be reached (HTTP 503)."""


class StorageUnavailable(RuntimeError):
    """The store (disk, database, time-series server) cannot commit right now, whatever the
    messages are: ingest holds the group, does not acknowledge it, and retries."""


@dataclass(slots=True)
class Reject:
    """A message that cannot be committed for a reason in its own content: a dead letter.

    It is stored with its raw payload (``dead_letters``), counted by ``reason`` and acknowledged.
    When its envelope is sound (``agent``, ``epoch``, ``seq`` known) its seq counts as dealt with,
    so the agent's commit watermark moves past it and the agent deletes it."""
    topic: str
    reason: str
    error: str
    payload: bytes = b""
    agent: str | None = None
    epoch: str | None = None
    seq: int | None = None


@dataclass(slots=True)
class ApplyResult:
    #: messages that were new (not duplicates), in arrival order, already committed
    accepted: list[Message] = field(default_factory=list)
    duplicates: int = 0
    points: int = 0
    #: commit watermarks of the (agent, epoch)s this group touched (wire.Watermark)
    marks: list = field(default_factory=list)
    #: dead letters stored by this group (not duplicates of earlier ones)
    dead: list = field(default_factory=list)


#: where a sample came from: (site, building, agent) of the topic it arrived on
Origin = tuple[str, str, str]


class TimeSeriesSink(abc.ABC):
    """Where samples go when they do not go to SQLite."""

    name = "sink"
    #: the query side of the same data (collector/store/promql.PromReader), or None: /series 501
    reader: Any = None

    @abc.abstractmethod
    def write(self, samples: list[dict[str, Any]]) -> None:
        """Write wire sample items (``m``, ``d``, ``t``, ``tags``, ``f``) synchronously.
        Raise on failure: the commit group is then rolled back and not acknowledged."""

    def write_begin(self, batches: list[tuple[Origin, list[dict[str, Any]]]]) -> Any:
        """Start writing one commit group: ``(origin, samples)`` per MQTT message, origin = the
        (site, building, agent) of its topic. The store does its SQLite work meanwhile and then
        calls ``write_end``. Default: ``write()`` the samples synchronously here."""
        self.write([it for _, items in batches for it in items])
        return None

    def write_end(self, handle: Any) -> None:
        """Wait for ``write_begin``'s write; raise if it failed."""

    def close(self) -> None:  # pragma: no cover - default
        pass


class Store(abc.ABC):
    @abc.abstractmethod
    def apply(self, messages: Iterable[Message], rejects: Iterable[Reject]) -> ApplyResult: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    # queries used by the API
    @abc.abstractmethod
    def agents(self, now_ms: int, offline_after_s: float) -> list[dict]: ...

    @abc.abstractmethod
    def devices(self) -> list[dict]: ...

    @abc.abstractmethod
    def device(self, device_id: str) -> dict | None: ...

    @abc.abstractmethod
    def interfaces(self, device_id: str) -> list[dict]: ...

    @abc.abstractmethod
    def series(self, measurement: str, device: str | None, field: str | None, start_ms: int | None,
               end_ms: int | None, step_ms: int | None, tags: dict[str, str] | None,
               limit: int) -> list[dict]: ...

    @abc.abstractmethod
    def events(self, device: str | None, since_ms: int | None, until_ms: int | None, severity: str | None,
               type_: str | None, limit: int) -> list[dict]: ...

    @abc.abstractmethod
    def events_since(self, since_ms: int, types: Iterable[str] | None = None,
                     limit: int = 100_000) -> list[dict]:
        """The newest ``limit`` stored events with ``ts_ms >= since_ms`` (of ``types``; None: all), oldest
        first (ts_ms, id):
        ``{id, agent, site, device, ts_ms, type, severity, tags, data}``, ``site`` the agent's. The rule
        engine replays them after a restart or a take-over (collector/alertcore/engine.py ``replay``)."""

    @abc.abstractmethod
    def ingest_stats(self) -> dict: ...

    # ---- typed reads for alerting, compliance and the API (no SQL outside collector/store/)
    @abc.abstractmethod
    def agent_info(self, agent_id: str) -> dict | None:
        """The agent's merged birth/heartbeat info (``devices`` [{id, room, type, tags}], ...)."""

    @abc.abstractmethod
    def token_name(self, token_id: int) -> str | None:
        """Name of an API token (None: unnamed or unknown)."""

    # ---- topology as intervals (store/topology.py); kind: one of wire.TOPOLOGY_MEASUREMENTS.
    # Rows: {device, kind, mac, ip, ifIndex, port, vlan, remote, tags, first_seen_ms, last_seen_ms,
    # observations, open}
    @abc.abstractmethod
    def topology_current(self, kind: str, device: str | None = None, since_ms: int | None = None,
                         limit: int = 100_000) -> list[dict]:
        """Entries still present (open intervals), optionally of one device / seen since ``since_ms``."""

    @abc.abstractmethod
    def topology_history(self, kind: str, device: str | None = None, start_ms: int | None = None,
                         end_ms: int | None = None, mac: str | None = None, ip: str | None = None,
                         limit: int = 100_000) -> list[dict]:
        """Intervals seen inside [start_ms, end_ms), oldest first."""

    @abc.abstractmethod
    def mac_history(self, mac: str, start_ms: int | None = None, end_ms: int | None = None,
                    limit: int = 100_000) -> dict:
        """Where was a MAC: {mac, fdb: [intervals], arp: [intervals]}."""

    @abc.abstractmethod
    def ip_history(self, ip: str, start_ms: int | None = None, end_ms: int | None = None,
                   limit: int = 100_000) -> dict:
        """IP <-> MAC history: {ip, arp: [intervals], ip_address: [intervals]}."""

    @abc.abstractmethod
    def neighbour_history(self, device: str | None = None, start_ms: int | None = None,
                          end_ms: int | None = None, limit: int = 100_000) -> list[dict]:
        """LLDP neighbour intervals."""

    @abc.abstractmethod
    def topology_retention(self, cutoff_ms: int) -> int:
        """Delete topology intervals last seen before ``cutoff_ms``; returns how many."""
