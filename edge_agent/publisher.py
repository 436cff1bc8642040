"""Deliver the durable queue to the collector, and announce the agent's state.

Why it is shaped like this:

* Rows are published oldest first with QoS 1 and deleted only when the
  collector has COMMITTED them: it publishes a retained commit watermark per
  agent (``wire.commit_topic``) that this publisher subscribes to. A PUBACK
  only means the broker has the message, and a broker can crash before saving
  it, refuse it (ACL) or lose a session: those cost a replay, never data.
  (``publish.delete_on: puback`` restores delete-on-PUBACK for a collector
  that publishes no watermark.)
* A PUBACK with a reason code >= 0x80 (MQTT 5, e.g. 0x87 not authorized: the
  ACL refused the topic) is a failure: counted in ``refused_total``, logged at
  most once a minute, and the row stays queued.
* What stays unconfirmed for ``confirm_timeout_s`` without the watermark
  moving is sent again from the oldest row (the collector drops duplicates).
* Up to ``inflight`` publishes are outstanding at once: waiting for each PUBACK
  in turn would cap a high-latency uplink at a few messages per round trip.
* On any disconnect the client is dropped and, after a backoff (1, 2, 4 ... max
  ``reconnect_max_s``), a new one replays from the oldest row still queued, in
  seq order. Messages that reached the broker but whose PUBACK was lost are
  sent again; the collector de-duplicates by (agent, epoch, seq).
* ``birth`` on every connect, ``heartbeat`` periodically and ``death`` as the
  Last Will (also sent explicitly on a clean shutdown) are not queued: they
  describe the present, a stale one is worthless.
"""
from __future__ import annotations

import asyncio
import logging
import sqlite3
import ssl
import time
from typing import Any, Callable

import aiomqtt
import paho.mqtt.client as paho

from campus_sense import wire
from edge_agent.queue import DurableQueue, Row

log = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


class Publisher:
    def __init__(self, *, queue: DurableQueue, site: str, building: str, agent_id: str, host: str, port: int,
                 username: str, password: "str | Callable[[], str]", tls: Any = None, protocol: str = "5",
                 client_id: str | None = None, keepalive_s: int = 30, inflight: int = 32,
                 heartbeat_s: float = 30.0, reconnect_max_s: float = 30.0, publish_timeout_s: float = 30.0,
                 birth_body: Callable[[], dict] = dict, delete_on: str = "commit",
                 confirm_timeout_s: float = 60.0):
        self.queue = queue
        self.agent = agent_id
        self.topics = {k: wire.topic(site, building, agent_id, k) for k in wire.KINDS}
        self.host, self.port, self.username, self.password = host, port, username, password
        self.tls, self.protocol = tls, protocol
        self.client_id = client_id or f"campus-sense-agent-{agent_id}"
        self.keepalive_s, self.inflight, self.heartbeat_s = keepalive_s, inflight, heartbeat_s
        self.reconnect_max_s, self.publish_timeout_s = reconnect_max_s, publish_timeout_s
        self.birth_body = birth_body
        self.delete_on, self.confirm_timeout_s = delete_on, confirm_timeout_s
        self.commit_topic = wire.commit_topic(agent_id)
        self.published_total = 0
        self.refused_total = 0
        self.resent_total = 0
        self.confirmed_seq = 0        # the collector's last watermark (this epoch)
        #: called with what the collector reads (wire.READS) on every watermark
        self.on_reads: Callable[[tuple[str, ...]], None] | None = None
        self.connected = False
        self.client: aiomqtt.Client | None = None
        self._wake = asyncio.Event()
        self._replay = False
        self._progress = time.monotonic()   # since when the oldest queued row is the same one
        self._oldest: int | None = None
        self._acks: dict[int, asyncio.Future] = {}
        self._last_refusal_log = 0.0
        self._refusals_unlogged = 0

    def wake(self) -> None:
        """New rows were committed: let the pump look again without polling the DB."""
        self._wake.set()

    def state_body(self) -> dict:
        q = self.queue
        return {"epoch": q.epoch, "queue_depth": q.depth, "oldest_age_s": round(q.oldest_age_s(), 3),
                "dropped_total": q.dropped_total, "last_seq": q.last_seq, "published_total": self.published_total,
                "refused_total": self.refused_total, "resent_total": self.resent_total,
                "confirmed_seq": self.confirmed_seq}

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        ctx = ssl.create_default_context(cafile=str(self.tls.ca_file) if self.tls.ca_file else None)
        if self.tls.cert_file:
            ctx.load_cert_chain(str(self.tls.cert_file), str(self.tls.key_file))
        return ctx

    def _client(self) -> aiomqtt.Client:
        will = aiomqtt.Will(self.topics["death"], wire.encode_state("death", self.agent, _now_ms(),
                                                                     epoch=self.queue.epoch, reason="lost"), qos=1)
        proto = aiomqtt.ProtocolVersion.V5 if self.protocol == "5" else aiomqtt.ProtocolVersion.V311
        # a callable password is read on every (re)connect: a rotated password file takes effect
        # without restarting the agent (the one rotation rule, campus_sense/secret.py)
        password = self.password() if callable(self.password) else self.password
        client = aiomqtt.Client(self.host, self.port, username=self.username, password=password,
                                identifier=self.client_id, protocol=proto, will=will,
                                clean_session=True if proto == aiomqtt.ProtocolVersion.V311 else None,
                                keepalive=self.keepalive_s, tls_context=self._tls_context(),
                                max_inflight_messages=self.inflight, timeout=self.publish_timeout_s)
        # A full in-flight window is the design, not a problem worth a warning per publish.
        client.pending_calls_threshold = self.inflight + 4
        # PUBACK reason codes: aiomqtt's publish() ignores them, so queued rows go out through paho
        # directly and this hook hands each PUBACK's reason code to the row waiting for it.
        orig = client._client.on_publish

        def on_publish(c, userdata, mid, reason_code, properties):
            fut = self._acks.pop(mid, None)
            if fut is not None and not fut.done():
                fut.set_result(reason_code)
            orig(c, userdata, mid, reason_code, properties)

        client._client.on_publish = on_publish
        return client

    async def run(self) -> None:
        """Connect, pump, and reconnect with backoff forever (until cancelled)."""
        backoff, failures = 1.0, 0
        while True:
            try:
                async with self._client() as client:
                    self.client, self.connected = client, True
                    backoff, failures = 1.0, 0
                    log.info("connected to mqtt %s:%d as %s", self.host, self.port, self.username)
                    if self.delete_on == "commit":
                        await client.subscribe(self.commit_topic, qos=1)
                    await client.publish(self.topics["birth"], wire.encode_state(
                        "birth", self.agent, _now_ms(), **self.birth_body(), **self.state_body()), qos=1)
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._watch(client))
                        tg.create_task(self._pump(client))
                        tg.create_task(self._heartbeat(client))
            except* aiomqtt.MqttError as eg:
                failures += 1
                # Warn when the link goes away and now and then during a long outage, not every retry.
                log.log(logging.WARNING if failures == 1 or failures % 20 == 0 else logging.INFO,
                        "mqtt %s:%d: %s; retrying in %.0f s (attempt %d, %d messages queued)", self.host,
                        self.port, "; ".join(str(e) for e in eg.exceptions), backoff, failures, self.queue.depth)
            except* Exception:
                log.exception("publisher failed; retrying in %.0f s", backoff)
            finally:
                self.client, self.connected = None, False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.reconnect_max_s)

    async def _watch(self, client: aiomqtt.Client) -> None:
        # The message iterator is aiomqtt's public signal for "connection lost":
        # it raises MqttError, which tears down the TaskGroup and cancels the
        # publishes still waiting for a PUBACK that will never come.
        async for m in client.messages:
            if self.delete_on == "commit" and m.topic.matches(self.commit_topic):
                self._on_watermark(str(m.topic), m.payload)
        raise aiomqtt.MqttError("message stream ended")

    def _on_watermark(self, topic: str, payload: Any) -> None:
        try:
            w = wire.decode_commit(topic, bytes(payload))
        except wire.WireError as e:
            log.warning("ignoring a commit watermark: %s", e)
            return
        if self.on_reads is not None:
            self.on_reads(w.reads)
        if w.epoch != self.queue.epoch:
            return   # of an earlier queue file (before it was wiped): nothing of ours
        self.confirmed_seq = w.seq
        try:
            n = self.queue.confirm(w.seq, w.hwm, w.gaps)
        except (sqlite3.Error, OSError) as e:   # e.g. a full disk: the next watermark covers these too
            log.warning("could not delete confirmed rows up to seq %d: %s", w.seq, e)
            return
        if n:
            self._wake.set()

    async def _publish(self, client: aiomqtt.Client, row: Row) -> tuple[int, Any]:
        """Publish one row at QoS 1; (seq, PUBACK reason code)."""
        info = client._client.publish(self.topics[row.kind], row.payload, 1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        fut = asyncio.get_running_loop().create_future()
        self._acks[info.mid] = fut
        try:
            async with asyncio.timeout(self.publish_timeout_s):
                return row.seq, await fut
        except TimeoutError:
            raise aiomqtt.MqttError(f"no PUBACK within {self.publish_timeout_s:g} s") from None
        finally:
            self._acks.pop(info.mid, None)

    def _refused(self, seq: int, rc: Any) -> None:
        self.refused_total += 1
        self._refusals_unlogged += 1
        now = time.monotonic()
        if now - self._last_refusal_log >= 60:
            log.error("the broker refused %d publish(es) (last: seq %d, %s): they stay queued. Is the broker ACL "
                      "right for user %r on %s? (the shipped ACL wants user name = agent id)",
                      self._refusals_unlogged, seq, rc, self.username, self.topics["metrics"].rsplit("/", 1)[0])
            self._last_refusal_log, self._refusals_unlogged = now, 0

    def _due_for_replay(self, cursor: int) -> bool:
        """The oldest row we sent stays unconfirmed for confirm_timeout_s. Progress means the OLDEST
        row changing: newer rows being confirmed around a gap (messages the broker lost) is not."""
        now = time.monotonic()
        oldest = self.queue.oldest_seq() if self.queue.depth else None
        if oldest is None or oldest > cursor or oldest != self._oldest:
            self._oldest, self._progress = oldest, now
            return False
        return now - self._progress >= self.confirm_timeout_s

    async def _pump(self, client: aiomqtt.Client) -> None:
        cursor = 0  # highest seq handed to the client on THIS connection; replay starts at the oldest row
        pending: set[asyncio.Task] = set()
        waker: asyncio.Task | None = None
        self._progress, self._oldest = time.monotonic(), None
        try:
            while True:
                self._wake.clear()
                if not pending and self._due_for_replay(cursor):
                    self.resent_total += 1
                    log.info("rows up to seq %d unconfirmed for %g s: sending them again from seq %s",
                             cursor, self.confirm_timeout_s, self.queue.oldest_seq())
                    cursor, self._progress = 0, time.monotonic()
                room = self.inflight - len(pending)
                if room > 0:
                    for row in self.queue.peek(cursor, room):
                        pending.add(asyncio.create_task(self._publish(client, row)))
                        cursor = row.seq
                waker = asyncio.create_task(self._wake.wait())
                done, _ = await asyncio.wait(pending | {waker}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                waker.cancel()
                acked, failed = [], None
                for t in done - {waker}:
                    pending.discard(t)
                    if t.exception() is not None:
                        failed = failed or t.exception()
                        continue
                    seq, rc = t.result()
                    if rc is not None and getattr(rc, "is_failure", False):
                        self._refused(seq, rc)
                    else:
                        acked.append(seq)
                if acked:
                    self.published_total += len(acked)
                    if self.delete_on == "puback":
                        self.queue.ack(acked)
                        self._progress = time.monotonic()
                if failed:
                    raise failed  # reconnect, then replay from the oldest row still queued
        finally:
            for t in pending:
                t.cancel()
            if waker is not None:
                waker.cancel()

    async def _heartbeat(self, client: aiomqtt.Client) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            await client.publish(self.topics["heartbeat"],
                                 wire.encode_state("heartbeat", self.agent, _now_ms(), **self.state_body()), qos=1)

    async def drain(self, timeout_s: float) -> bool:
        """Wait (bounded) until the queue is empty; used on shutdown to send the last batch."""
        end = time.monotonic() + timeout_s
        while self.queue.depth and time.monotonic() < end:
            await asyncio.sleep(0.05)
        return self.queue.depth == 0

    async def say_goodbye(self) -> None:
        """On a clean shutdown the Last Will is not sent, so publish death ourselves."""
        if self.client is not None and self.connected:
            try:
                await self.client.publish(self.topics["death"], wire.encode_state(
                    "death", self.agent, _now_ms(), reason="shutdown", **self.state_body()), qos=1, timeout=2)
            except aiomqtt.MqttError as e:
                log.info("could not publish death on shutdown: %s", e)
