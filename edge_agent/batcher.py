"""Collect driver records in memory and move them to the durable queue in batches.

Why batch: one MQTT message (and one SQLite transaction) per second per kind
instead of one per sample keeps the agent cheap on small edge boxes and the
collector's ingest efficient. Records are converted to wire items here, items
that could never be delivered are dropped (and counted) here, and the rest are
split under ``max_message_bytes`` so the queue only ever holds valid messages.
"""
from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from campus_sense import wire
from drivers.base import Event, Facts, Record, Sample
from edge_agent.queue import DurableQueue

log = logging.getLogger(__name__)

_SCALARS = (bool, int, float, str)


def to_item(rec: Record) -> tuple[str, dict[str, Any]] | None:
    """(kind, wire item) for a driver record, or None if nothing valid is left.

    The collector rejects a whole message if one item breaks the contract, so
    a driver bug (a list as a field value, a number as a tag) is fixed or
    dropped here rather than poisoning the batch.
    """
    if isinstance(rec, Sample):
        fields = {k: v for k, v in rec.fields.items()
                  if isinstance(v, _SCALARS) and not (isinstance(v, float) and not math.isfinite(v))}
        if len(fields) != len(rec.fields):
            log.debug("%s %s: dropped non-scalar/non-finite fields %s", rec.device, rec.measurement,
                      sorted(set(rec.fields) - set(fields)))
        if not fields:
            return None
        return "metrics", wire.sample(rec.measurement, rec.device, rec.time_ms, fields, _tags(rec.tags))
    if isinstance(rec, Event):
        sev = rec.severity if rec.severity in wire.SEVERITIES else "warning"
        return "events", wire.event(rec.device, rec.type, rec.time_ms, sev, _tags(rec.tags), rec.data)
    if isinstance(rec, Facts):
        return "facts", wire.facts(rec.device, rec.time_ms, rec.facts)
    raise TypeError(f"not a driver record: {type(rec).__name__}")


def _tags(tags: dict) -> dict[str, str]:
    return {str(k): str(v) for k, v in tags.items()}


class Batcher:
    def __init__(self, queue: DurableQueue, agent_id: str, max_message_bytes: int, max_items: int,
                 on_flushed=None):
        self.queue, self.agent = queue, agent_id
        self.max_bytes, self.max_items = max_message_bytes, max_items
        self.pending: dict[str, list[bytes]] = {k: [] for k in wire.DURABLE_KINDS}
        self.count = 0
        self.full = asyncio.Event()  # set when a flush should not wait for the timer
        self.on_flushed = on_flushed  # called after rows were committed (wakes the publisher)

    def add(self, records: list[Record]) -> None:
        for rec in records:
            try:
                conv = to_item(rec)
                if conv is None:
                    continue
                kind, item = conv
                enc = wire.encode_item(item)
            except Exception as e:  # a broken record must not take the others with it
                log.warning("dropping an unencodable record %r: %s", rec, e)
                continue
            if wire.envelope_overhead(kind, self.agent, self.queue.epoch) + len(enc) + 1 > self.max_bytes:
                log.warning("dropping one %s item of %d bytes from device %s: above the %d-byte message bound",
                            kind, len(enc), item.get("d"), self.max_bytes)
                self.queue.count_drops(1)
                continue
            self.pending[kind].append(enc)
            self.count += 1
        if self.count >= self.max_items:
            self.full.set()

    def flush(self) -> int:
        """Commit everything pending to the durable queue; return the number of messages."""
        n = 0
        for kind, items in self.pending.items():
            if not items:
                continue
            overhead = wire.envelope_overhead(kind, self.agent, self.queue.epoch)
            n += len(self.queue.append(kind, self.agent, wire.split(items, self.max_bytes, overhead)))
            self.pending[kind] = []
        self.count = 0
        self.full.clear()
        if n and self.on_flushed:
            self.on_flushed()
        return n

    async def run(self, interval_s: float) -> None:
        """Flush every ``interval_s``, or sooner when ``max_items`` are waiting."""
        while True:
            try:
                async with asyncio.timeout(interval_s):
                    await self.full.wait()
            except TimeoutError:
                pass
            try:
                self.flush()
            except Exception:
                # The disk may be full; keep the items and retry next tick, within a memory bound.
                log.exception("could not write to the queue %s (%d items waiting)", self.queue.path, self.count)
                if self.count > 20 * self.max_items:
                    log.error("discarding %d unqueued items", self.count)
                    self.pending = {k: [] for k in wire.DURABLE_KINDS}
                    self.count = 0
                    self.full.clear()
