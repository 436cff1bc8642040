"""MQTT ingest: persistent session, QoS 1, acknowledge only after commit.

One ingest thread drives paho (``loop()``) and the store, so no second Python
thread competes for the GIL on the hot path. It collects commit groups
(whatever arrived within ``batch_ms`` of the first message, up to
``batch_messages`` messages or ``batch_bytes`` of payload), decodes them with
``wire.decode``, commits them with
``Store.apply`` (one transaction: data, dedup, gaps, counters) and only then
sends the PUBACKs (``manual_ack``).

A crash before the commit loses nothing (not acked: the broker redelivers from
our persistent session); a crash between commit and ack gives a redelivery that
the (agent, epoch, seq) dedup drops. Messages that break the wire contract are
logged with their topic, counted by reason, and acked so they are not
redelivered forever.

``Ingest.subscribers``: callables ``f(message: wire.Message)`` run in the
ingest thread after each commit, for every committed new message (durable
messages that were not duplicates, and birth/death/heartbeat). The alert engine
plugs in here; keep them fast or hand off to your own queue.
"""
from __future__ import annotations

import gc
import logging
import ssl
import threading
import time
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from campus_sense import wire

from .config import MQTT, Ingest as IngestCfg
from .store.base import Reject, Store

log = logging.getLogger("collector.ingest")

_REASONS = (
    ("exceeds the", "oversized"),
    ("not UTF-8 JSON", "bad_json"),
    ("must be a JSON object", "not_object"),
    ("unsupported schema version", "schema_version"),
    ("does not match the topic", "topic_mismatch"),
    ("is not campus/v1", "bad_topic"),
    ("unknown kind", "bad_topic"),
    ("'epoch'", "bad_seq"),
    ("'seq'", "bad_seq"),
)


def reject_reason(err: str) -> str:
    for needle, reason in _REASONS:
        if needle in err:
            return reason
    return "bad_item"


class Ingest:
    def __init__(self, mqtt_cfg: MQTT, store: Store, ingest_cfg: IngestCfg | None = None):
        self.cfg = mqtt_cfg
        self.store = store
        ic = ingest_cfg or IngestCfg()
        self.batch_messages = ic.batch_messages
        self.batch_s = ic.batch_ms / 1000.0
        self.batch_bytes = ic.batch_bytes
        self.max_bytes = mqtt_cfg.max_message_bytes
        self.subscribers: list[Callable[[wire.Message], None]] = []
        self._pending: list[tuple] = []
        self._pending_bytes = 0
        self._ok_since_attempt = False
        self._gen = 0
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        self.connected = threading.Event()
        self.started_ms = int(time.time() * 1000)
        self.stats = {"received": 0, "committed_groups": 0, "committed_messages": 0, "duplicates": 0,
                      "rejected": 0, "points": 0, "acked": 0, "last_commit_ms": None, "last_group_messages": 0,
                      "commit_errors": 0, "connects": 0, "writer_cpu_s": 0.0}
        self._log_budget = {}
        self.client = self._make_client()

    # ------------------------------------------------------------ mqtt
    def _make_client(self) -> mqtt.Client:
        if self.cfg.protocol == "5":
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.cfg.client_id,
                            protocol=mqtt.MQTTv5, manual_ack=True)
        else:
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.cfg.client_id,
                            protocol=mqtt.MQTTv311, clean_session=False, manual_ack=True)
        c.username_pw_set(self.cfg.username, self.cfg.read_password())
        tls = self.cfg.tls
        if tls:
            c.tls_set(ca_certs=tls.ca_file, certfile=tls.cert_file, keyfile=tls.key_file,
                      cert_reqs=ssl.CERT_REQUIRED)
            if tls.insecure:
                c.tls_insecure_set(True)
        c.reconnect_delay_set(1, 30)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        return c

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("MQTT broker %s:%d refused the connection: %s", self.cfg.host, self.cfg.port, reason_code)
            return
        self._gen += 1
        self._ok_since_attempt = True
        self.stats["connects"] += 1
        log.info("connected to MQTT %s:%d as %s (session present: %s)", self.cfg.host, self.cfg.port,
                 self.cfg.client_id, flags.session_present)
        client.subscribe(wire.SUBSCRIPTION, qos=1)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        if any(rc.is_failure for rc in reason_codes):
            log.error("MQTT broker refused the subscription to %s: %s (check the broker ACL for user %s)",
                      wire.SUBSCRIPTION, reason_codes, self.cfg.username)
            return
        self.connected.set()  # connected and subscribed: ready to receive

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._gen += 1  # acks of messages from the old connection must not be sent on the new one
        was = self.connected.is_set()
        self.connected.clear()
        if was and not self._stop.is_set():
            log.warning("disconnected from MQTT (%s); reconnecting", reason_code)

    def _on_message(self, client, userdata, m):
        p = m.payload
        self._pending.append((self._gen, m.mid, m.qos, m._topic, p))
        self._pending_bytes += len(p)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "Ingest":
        # Each commit group allocates ~1M short-lived objects (decoded JSON); with the default
        # thresholds the cyclic GC rescans them many times (~25% of ingest CPU). Raise gen0.
        gc.freeze()
        if gc.get_threshold()[0] < 50_000:
            gc.set_threshold(50_000, 20, 100)
        if self.cfg.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.cfg.session_expiry_s
            props.ReceiveMaximum = self.cfg.receive_maximum
            self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s,
                                      clean_start=False, properties=props)
        else:
            self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self._writer = threading.Thread(target=self._run, name="ingest", daemon=True)
        self._writer.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Commit and ack what was received, then disconnect (the session stays on the broker)."""
        self._stop.set()
        if self._writer:
            self._writer.join(timeout)

    def _run(self) -> None:
        """One thread does network I/O and commits: no GIL ping-pong with a network thread.

        paho is driven with ``loop()``; messages accumulate in ``_pending`` (via on_message) until
        the group is full (``batch_messages`` / ``batch_bytes``) or ``batch_ms`` passed since its
        first message; then the group is committed and acked. While a group is being committed the
        broker keeps up to ``receive_maximum`` messages in flight, TCP buffers the rest."""
        c = self.client
        backoff = 1.0
        attempts = 0
        first = 0.0
        n, cap, linger = self.batch_messages, self.batch_bytes, self.batch_s
        try:
            while not self._stop.is_set():
                if not c.is_connected() and c._sock is None:
                    if self._pending:
                        self._commit()  # from the lost connection: stored, not acked (redelivered, deduped)
                    if attempts and not self._ok_since_attempt:
                        # refused or dropped before CONNACK: back off
                        self._stop.wait(backoff)
                        backoff = min(backoff * 2, 30.0)
                        if self._stop.is_set():
                            break
                    attempts += 1
                    self._ok_since_attempt = False
                    try:
                        c.username_pw_set(self.cfg.username, self.cfg.read_password())  # re-read per connect
                        c.reconnect()
                    except (OSError, ValueError) as e:  # ValueError: password file unreadable (SecretError)
                        log.error("cannot connect to MQTT %s:%d: %s; retrying in %.0fs", self.cfg.host,
                                  self.cfg.port, e, backoff)
                        continue
                pending = self._pending
                if pending:
                    wait = max(0.0, first + linger - time.monotonic())
                else:
                    wait = 0.2
                before = len(pending)
                c.loop(timeout=min(wait, 0.2))
                if self._ok_since_attempt:
                    backoff = 1.0
                if not pending or pending is not self._pending:
                    continue
                if before == 0:
                    first = time.monotonic()
                if len(pending) >= n or self._pending_bytes >= cap or time.monotonic() >= first + linger:
                    self._commit()
            if self._pending:
                self._commit()
        finally:
            try:
                c.disconnect()
                c.loop(timeout=0.1)
            except Exception:  # noqa: BLE001
                pass

    def _pump(self, seconds: float) -> bool:
        """Wait, keeping the MQTT connection alive (pings); new messages queue up in ``_pending``.
        True if stopping."""
        end = time.monotonic() + seconds
        while not self._stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return False
            if self.client._sock is not None:
                self.client.loop(timeout=min(left, 0.2))
            else:
                self._stop.wait(min(left, 0.2))
        return True

    def _commit(self) -> None:
        group = self._pending
        self._pending = []
        self._pending_bytes = 0
        try:
            self.process(group)
        except Exception:  # noqa: BLE001 - never let the ingest thread die
            log.exception("ingest writer failed")

    def _log_reject(self, reason: str, err: str) -> None:
        now = time.monotonic()
        win, n = self._log_budget.get(reason, (now, 0))
        if now - win > 60:
            if n > 20:
                log.warning("rejected %d more messages (%s) in the last minute", n - 20, reason)
            win, n = now, 0
        n += 1
        self._log_budget[reason] = (win, n)
        if n <= 20:
            log.warning("rejected message (%s): %s", reason, err)

    def process(self, group: list) -> None:
        """Decode, commit and ack one group of raw ``(gen, mid, qos, topic_bytes, payload)``."""
        cpu0 = time.thread_time()
        decode = wire.decode
        max_bytes = self.max_bytes
        msgs: list[wire.Message] = []
        rejects: list[Reject] = []
        for _gen, _mid, _qos, tb, payload in group:
            try:
                topic = tb.decode("utf-8")
            except UnicodeDecodeError:
                topic = repr(tb)
                err = f"topic {topic}: not valid UTF-8"
                rejects.append(Reject(topic, "bad_topic", err))
                self._log_reject("bad_topic", err)
                continue
            try:
                msgs.append(decode(topic, payload, max_bytes))
            except wire.WireError as e:
                err = str(e)
                reason = reject_reason(err)
                rejects.append(Reject(topic, reason, err))
                self._log_reject(reason, err)
        delay = 0.5
        while True:
            try:
                res = self.store.apply(msgs, rejects)
                break
            except Exception as e:  # noqa: BLE001
                self.stats["commit_errors"] += 1
                log.error("commit of %d messages failed (%s); not acknowledged, retrying in %.1fs",
                          len(group), e, delay)
                if self._pump(delay):
                    return  # not acked: the broker redelivers them to our session later
                delay = min(delay * 2, 30)
        gen = self._gen
        ack = self.client.ack
        acked = 0
        for g, mid, qos, _t, _p in group:
            if qos and g == gen:
                ack(mid, qos)
                acked += 1
        st = self.stats
        st["received"] += len(group)
        st["committed_groups"] += 1
        st["committed_messages"] += len(res.accepted)
        st["duplicates"] += res.duplicates
        st["rejected"] += len(rejects)
        st["points"] += res.points
        st["acked"] += acked
        st["last_commit_ms"] = int(time.time() * 1000)
        st["last_group_messages"] = len(group)
        st["writer_cpu_s"] += time.thread_time() - cpu0
        if self.subscribers:
            for m in res.accepted:
                for sub in self.subscribers:
                    try:
                        sub(m)
                    except Exception:  # noqa: BLE001
                        log.exception("ingest subscriber %r failed", sub)

    def snapshot(self) -> dict:
        return {**self.stats, "connected": self.connected.is_set(), "queued": len(self._pending),
                "client_id": self.cfg.client_id}
