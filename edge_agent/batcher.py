"""Collect driver records in memory and move them to the durable queue in batches.

Why batch: one MQTT message (and one SQLite transaction) per second per kind
instead of one per sample keeps the agent cheap on small edge boxes and the
collector's ingest efficient. Records are converted to wire items here, items
that could never be delivered are dropped (and counted) here, and the rest are
split under ``max_message_bytes`` so the queue only ever holds valid messages.

When the queue cannot be written (full disk), items stay here: a bounded
in-memory overflow (``overflow_max_items``; beyond it the oldest items are
dropped and counted in the queue's ``dropped_total``), and the flush is retried
with a backoff (1, 2, 4 ... 30 s) during which the event loop keeps polling and
talking MQTT. The failure is logged once a minute, with the number of repeats.
"""
from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from campus_sense import wire
from drivers.base import Event, Facts, Record, Sample
from edge_agent.queue import DurableQueue
from edge_agent.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

#: longest pause between two attempts to write to a failing queue
MAX_BACKOFF_S = 30.0

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
                 on_flushed=None, overflow_max_items: int | None = None, tables: bool = False):
        self.queue, self.agent = queue, agent_id
        #: send a poll's samples as tables (once the collector announced it reads them)
        self.tables = tables
        self.max_bytes, self.max_items = max_message_bytes, max_items
        #: bytes of a message's envelope per kind (the queue's epoch is fixed for its file)
        self._overhead = {k: wire.envelope_overhead(k, agent_id, queue.epoch) for k in wire.DURABLE_KINDS}
        self.pending: dict[str, list[bytes]] = {k: [] for k in wire.DURABLE_KINDS}
        #: samples in each pending item (a table holds several), as the queue counts items
        self.pending_rows: dict[str, list[int]] = {k: [] for k in wire.DURABLE_KINDS}
        self.count = 0  # samples, events and facts pending
        self.full = asyncio.Event()  # set when a flush should not wait for the timer
        self.on_flushed = on_flushed  # called after rows were committed (wakes the publisher)
        #: items kept in memory at most while the queue cannot be written
        self.overflow_max_items = 20 * max_items if overflow_max_items is None else overflow_max_items
        self.shed_total = 0  # items dropped from memory (also counted in queue.dropped_total)
        self._warn = RateLimitedLog(log)

    def add(self, records: list[Record]) -> None:
        """A driver's records -> pending wire items; with ``tables``, a poll's samples of one
        device, measurement and time (a switch's interfaces) become one table item
        (``wire.tabulate``)."""
        samples = []
        for rec in records:
            try:
                conv = to_item(rec)
                if conv is None:
                    continue
                kind, item = conv
                if kind == "metrics":
                    samples.append(item)
                    continue
                enc = wire.encode_item(item)
            except Exception as e:  # a broken record must not take the others with it
                log.warning("dropping an unencodable record %r: %s", rec, e)
                continue
            self._put(kind, item, enc)
        for item in wire.tabulate(samples) if self.tables and samples else samples:
            self._put_sample(item)
        self._bound()

    def collector_reads(self, reads: tuple[str, ...]) -> None:
        """What the collector announced it reads (its commit watermarks): tables or not."""
        if self.tables != ("tables" in reads):
            self.tables = not self.tables
            log.info("the collector %s metrics tables: sending %s", "reads" if self.tables else "does not read",
                     "a poll's samples of one device as one table" if self.tables else "one item per sample")

    def _put_sample(self, item: dict) -> None:
        try:
            enc = wire.encode_item(item)
        except Exception as e:  # noqa: BLE001 - a broken record must not take the others with it
            if "rows" not in item:
                log.warning("dropping an unencodable sample %r: %s", item, e)
                return
            enc = b""
        rows = item.get("rows", 1)
        if rows > 1 and (not enc or self._too_big("metrics", enc)):   # halves, down to single samples
            for part in wire.tabulate(wire.expand([item]), max_rows=(rows + 1) // 2):
                self._put_sample(part)
            return
        self._put("metrics", item, enc, rows)

    def _too_big(self, kind: str, enc: bytes) -> bool:
        return self._overhead[kind] + len(enc) + 1 > self.max_bytes

    def _put(self, kind: str, item: dict, enc: bytes, rows: int = 1) -> None:
        if self._too_big(kind, enc):
            log.warning("dropping one %s item of %d bytes from device %s: above the %d-byte message bound",
                        kind, len(enc), item.get("d"), self.max_bytes)
            self.queue.count_drops(rows)
            return
        self.pending[kind].append(enc)
        self.pending_rows[kind].append(rows)
        self.count += rows

    def _bound(self) -> None:
        if self.count > max(self.overflow_max_items, self.max_items):
            self._shed(self.count - max(self.overflow_max_items, self.max_items))
        if self.count >= self.max_items:
            self.full.set()

    def _shed(self, n: int) -> None:
        """The queue has not been writable for a while and memory is bounded: drop the ``n`` oldest
        items (from the longest kind) and count them as dropped."""
        left = n
        while left > 0:
            kind = max(self.pending, key=lambda k: len(self.pending[k]))
            rows = self.pending_rows[kind]
            take = got = 0
            while take < len(rows) and got < left:
                got += rows[take]
                take += 1
            if not take:
                break
            del self.pending[kind][:take], rows[:take]
            left -= got
        n -= left
        self.count -= n
        self.shed_total += n
        self.queue.count_drops(n)
        self._warn.log(logging.WARNING, "shed", "in-memory overflow full (%d items): dropped the oldest items "
                       "(%d in total since start) while the queue %s cannot be written",
                       self.overflow_max_items, self.shed_total, self.queue.path)

    def flush(self) -> int:
        """Commit everything pending to the durable queue; return the number of messages."""
        n = 0
        try:
            for kind, items in self.pending.items():
                overhead = self._overhead[kind]
                rows = self.pending_rows[kind]
                # oldest first, at most max_items per transaction: short transactions, and after a full disk
                # a backlog in memory larger than the room the queue can make still goes in, slice by slice
                while items:
                    part = items[:self.max_items]
                    chunks = list(wire.split(part, self.max_bytes, overhead))
                    counts, i = [], 0
                    for c in chunks:
                        counts.append(sum(rows[i:i + len(c)]))
                        i += len(c)
                    n += len(self.queue.append(kind, self.agent, chunks, items=counts))
                    del items[:len(part)], rows[:len(part)]
        finally:  # a kind that failed keeps its items; the ones committed before it are gone from memory
            self.count = sum(map(sum, self.pending_rows.values()))
            if n and self.on_flushed:
                self.on_flushed()
        self.full.clear()
        return n

    async def run(self, interval_s: float) -> None:
        """Flush every ``interval_s``, or sooner when ``max_items`` are waiting; after a failed
        flush wait 1, 2, 4 ... 30 s (a set ``full`` must not turn a failing flush into a busy loop
        that starves polling, the MQTT keepalive and the signal handlers)."""
        delay = 0.0
        while True:
            if delay:
                await asyncio.sleep(delay)
            else:
                try:
                    async with asyncio.timeout(interval_s):
                        await self.full.wait()
                except TimeoutError:
                    pass
            try:
                self.flush()
            except Exception as e:
                delay = min(max(1.0, 2 * delay), MAX_BACKOFF_S)
                # The disk may be full: the items stay in memory (bounded by add()), retried after the delay.
                key = type(e).__name__ + ("" if isinstance(e, OSError) else str(e))
                self._warn.log(logging.ERROR, key, "could not write to the queue %s: %s: %s; %d items kept in "
                               "memory (at most %d), retrying in %g s", self.queue.path, type(e).__name__, e,
                               self.count, self.overflow_max_items, delay)
            else:
                if delay:
                    self._warn.recovered("queue %s writable again", self.queue.path)
                delay = 0.0
