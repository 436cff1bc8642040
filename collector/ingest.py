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
the (agent, epoch, seq) dedup drops. After each commit group the agents' commit
watermarks are published (retained, ``wire.commit_topic``): only then does an
agent delete what it sent, so a broker that loses its state costs a replay.

Nothing blocks: a message that breaks the wire contract, or that the store
refuses for its own content (the group is then retried one message per
transaction to find it), becomes a dead letter: stored raw with topic and error,
counted by reason, acknowledged, its seq counted as committed, and reported as an
``ingest_dead_letter`` event. Only ``StorageUnavailable`` (disk full, database or
time-series server down) holds the group and retries; ``health()`` then says so.

Clock: birth/heartbeat carry the agent's send time; ``ClockTracker`` estimates
each agent's offset (the minimum delay over a window). Item times of an agent off
by more than ``clock.correct_above_s`` are stored corrected (agent time - offset);
the offset is kept per agent (``/agents``) and beyond ``clock.skew_alert_s`` an
``agent_clock_skew`` event is raised (``agent_clock_skew_cleared`` below 80 %).

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
from collections import deque
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from campus_sense import wire

from .config import MQTT, Clock as ClockCfg, Ingest as IngestCfg
from .store.base import ApplyResult, Reject, StorageUnavailable, Store

log = logging.getLogger("collector.ingest")

_REASONS = (
    ("exceeds the", "oversized"),
    ("zstd", "bad_zstd"),
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


def tune_gc() -> None:
    """The collector process's GC settings (set when ingest starts). Each commit group allocates
    ~1M short-lived objects (decoded JSON, head rows); with the default thresholds the cyclic GC
    rescans them many times (~25% of ingest CPU). Objects alive now are frozen, gen0 raised."""
    gc.freeze()
    if gc.get_threshold()[0] < 50_000:
        gc.set_threshold(50_000, 20, 100)


class ClockTracker:
    """One agent's clock offset (agent - collector, ms) as the minimum-delay estimate over a window.

    Each observation gives ``recv - sent = delay - offset``; the smallest value in the window has
    the least delay, so ``offset ~= -(min(recv - sent))``. A monotonic deque keeps the minimum."""

    __slots__ = ("window_ms", "obs")

    def __init__(self, window_ms: int):
        self.window_ms = window_ms
        self.obs: deque[tuple[int, int]] = deque()

    def observe(self, recv_ms: int, sent_ms: int) -> int:
        d = recv_ms - sent_ms
        obs = self.obs
        while obs and obs[-1][1] >= d:
            obs.pop()
        obs.append((recv_ms, d))
        while obs[0][0] < recv_ms - self.window_ms:
            obs.popleft()
        return -obs[0][1]


def _merge(total: ApplyResult, r: ApplyResult) -> None:
    total.accepted.extend(r.accepted)
    total.duplicates += r.duplicates
    total.points += r.points
    total.dead.extend(r.dead)
    marks = {(m.agent, m.epoch): m for m in total.marks}
    marks.update({(m.agent, m.epoch): m for m in r.marks})
    total.marks = list(marks.values())


class Ingest:
    def __init__(self, mqtt_cfg: MQTT, store: Store, ingest_cfg: IngestCfg | None = None,
                 clock_cfg: ClockCfg | None = None):
        self.cfg = mqtt_cfg
        self.store = store
        ic = ingest_cfg or IngestCfg()
        cc = clock_cfg or ClockCfg()
        self.clock_window_ms = int(cc.window_s * 1000)
        self.correct_above_ms = int(cc.correct_above_s * 1000)
        self.skew_alert_ms = int(cc.skew_alert_s * 1000)
        self.commit_watermarks = ic.commit_watermarks
        self.dead_letter_event_ms = int(ic.dead_letter_event_s * 1000)
        self._clocks: dict[str, ClockTracker] = {}
        #: agent -> (offset ms, measured at ms) as last stored; loaded at the first clock reading
        self._stored_clocks: dict[str, tuple[int, int]] | None = None
        #: agent -> estimated clock offset in ms (agent - collector)
        self.offsets: dict[str, int] = {}
        self._skewed: set[str] = set()
        self._where: dict[str, tuple[str, str]] = {}     # agent -> (site, building) of its last message
        self._epoch: dict[str, str] = {}                 # agent -> epoch it currently speaks
        self._marks: dict[str, wire.Watermark] = {}      # agent -> last watermark published
        self._mark_sent: dict[str, float] = {}
        self._marks_unsent: set[str] = set()
        self._dl_events: dict[tuple[str, str], list] = {}   # (agent, reason) -> [last event ms, count since]
        #: store_disk_budget: checked every disk_check_s; raised at most once per disk_event_ms while true
        self.disk_check_s = 60.0
        self.disk_event_ms = 3_600_000
        self._disk_next = 0.0
        self._disk_alert_ms: int | None = None     # last store_disk_budget event (None: not raised)
        self._disk_enforced_seen = 0
        #: why ingest cannot commit right now (None: it can), and since when (monotonic)
        self.stalled: str | None = None
        self.stalled_since: float | None = None
        self._disconnected_since: float | None = time.monotonic()
        self.batch_messages = ic.batch_messages
        self.batch_s = ic.batch_ms / 1000.0
        self.batch_bytes = ic.batch_bytes
        self.max_bytes = mqtt_cfg.max_message_bytes
        self.subscribers: list[Callable[[wire.Message], None]] = []
        #: topic filters of this session (collector/partitions.py: one partition's sites)
        self.topics: list[str] = [wire.SUBSCRIPTION]
        #: checked before every (re)connect: False keeps the session's client id off the broker
        #: (collector/partitions.py: a partition whose lease may have moved must not take it back)
        self.may_connect: Callable[[], bool] | None = None
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
                      "commit_errors": 0, "connects": 0, "writer_cpu_s": 0.0, "dead_letters": 0,
                      "isolations": 0, "watermarks_published": 0, "clock_corrected_items": 0}
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
        self._disconnected_since = None
        client.subscribe([(t, 1) for t in self.topics])
        # watermarks that could not be sent, and the retained ones a broker that lost its state forgot
        self._marks_unsent.update(self._marks)
        self._flush_marks()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        if any(rc.is_failure for rc in reason_codes):
            log.error("MQTT broker refused the subscription to %s: %s (check the broker ACL for user %s)",
                      ", ".join(self.topics), reason_codes, self.cfg.username)
            return
        self.connected.set()  # connected and subscribed: ready to receive

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._gen += 1  # acks of messages from the old connection must not be sent on the new one
        if self._disconnected_since is None:
            self._disconnected_since = time.monotonic()
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
        tune_gc()
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
                    if self.may_connect is not None and not self.may_connect():
                        self._stop.wait(0.2)
                        continue
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
        now = int(time.time() * 1000)
        msgs: list[wire.Message] = []
        rejects: list[Reject] = []
        for _gen, _mid, _qos, tb, payload in group:
            try:
                topic = tb.decode("utf-8")
            except UnicodeDecodeError:
                topic = repr(tb)
                err = f"topic {topic}: not valid UTF-8"
                rejects.append(Reject(topic, "bad_topic", err, bytes(payload)))
                self._log_reject("bad_topic", err)
                continue
            try:
                m = decode(topic, payload, max_bytes)
            except wire.WireError as e:
                err = str(e)
                reason = reject_reason(err)
                ident = wire.durable_id(topic, payload)
                rejects.append(Reject(topic, reason, err, bytes(payload), *(
                    (ident[0].agent, ident[1], ident[2]) if ident else ())))
                self._log_reject(reason, err)
                continue
            m.raw, m.recv_ms = payload, now
            msgs.append(m)
        clock = self._clock(msgs, now)
        delay = 0.5
        while True:
            try:
                res = self._apply(msgs, rejects, clock)
                break
            except StorageUnavailable as e:
                self.stats["commit_errors"] += 1
                if self.stalled is None:
                    self.stalled_since = time.monotonic()
                self.stalled = f"store unavailable: {e}"
                log.error("commit of %d messages failed (%s); not acknowledged, retrying in %.1fs",
                          len(group), e, delay)
                if self._pump(delay):
                    return  # not acked: the broker redelivers them to our session later
                delay = min(delay * 2, 30)
        self.stalled = self.stalled_since = None
        self._remember(res.accepted)
        extra = self._collector_events(res, now)
        if extra:
            try:
                _merge(res, self.store.apply(extra, []))
            except Exception as e:  # noqa: BLE001 - the group itself is committed
                log.error("could not store %d collector events: %s", len(extra), e)
        gen = self._gen
        ack = self.client.ack
        acked = 0
        for g, mid, qos, _t, _p in group:
            if qos and g == gen:
                ack(mid, qos)
                acked += 1
        if self.commit_watermarks and res.marks:
            self._queue_marks(res.marks)
        st = self.stats
        st["received"] += len(group)
        st["committed_groups"] += 1
        st["committed_messages"] += len(res.accepted)
        st["duplicates"] += res.duplicates
        st["rejected"] += len(rejects)
        st["dead_letters"] += len(res.dead)
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

    # ------------------------------------------------------------ commit, isolating poison
    def _apply(self, msgs: list[wire.Message], rejects: list[Reject], clock: dict) -> ApplyResult:
        """Commit the group; if the store refuses it for its content, commit one message per
        transaction and turn the ones it refuses into dead letters. ``StorageUnavailable``
        (from any of these) propagates: the caller holds and retries the whole group."""
        try:
            return self.store.apply(msgs, rejects, clock)
        except StorageUnavailable:
            raise
        except Exception as e:  # noqa: BLE001 - something in the content: find it
            log.warning("commit of a group of %d messages failed (%s: %s); committing them one by one",
                        len(msgs), type(e).__name__, e)
        self.stats["isolations"] += 1
        total = ApplyResult()
        for m in msgs:
            try:
                _merge(total, self.store.apply([m], []))
            except StorageUnavailable:
                raise
            except Exception as e:  # noqa: BLE001
                topic = str(m.topic)
                err = f"topic {topic}: the store refused it: {type(e).__name__}: {e}"
                self._log_reject("store_refused", err)
                rejects.append(Reject(topic, "store_refused", err, bytes(m.raw), m.agent, m.epoch, m.seq))
        _merge(total, self.store.apply([], rejects, clock))
        return total

    # ------------------------------------------------------------ clocks
    def _clock(self, msgs: list[wire.Message], now: int) -> dict[str, tuple[int, int]]:
        """Update offsets from birth/heartbeat, correct item times of skewed agents in place."""
        changed: dict[str, tuple[int, int]] = {}
        for m in msgs:
            if m.kind in ("birth", "heartbeat"):
                sent = m.body.get("sent_ms")
                if type(sent) is not int:
                    continue
                tr = self._clocks.get(m.agent)
                if tr is None or m.kind == "birth":   # a restarted agent may have a new clock
                    fresh = tr is None and m.kind != "birth"
                    tr = self._clocks[m.agent] = ClockTracker(self.clock_window_ms)
                    if fresh:
                        self._seed_clock(m.agent, tr)
                off = tr.observe(now, sent)
                if self.offsets.get(m.agent) != off:
                    self.offsets[m.agent] = off
                    changed[m.agent] = (off, now)
        if not self.offsets:
            return changed
        lim = self.correct_above_ms
        for m in msgs:
            off = self.offsets.get(m.agent)
            if off is None or abs(off) <= lim:
                continue
            if m.packed:
                m.shift(off)
                self.stats["clock_corrected_items"] += m.count()
            elif m.kind in ("birth", "heartbeat", "death") and type(m.body.get("sent_ms")) is int:
                m.body["sent_ms"] -= off
        return changed

    def _seed_clock(self, agent: str, tr: ClockTracker) -> None:
        """A heartbeat is this process's first look at an agent's clock (a partition taken over, a
        restart): it may have waited in the broker while the partition had no holder, and alone it
        would read as the agent's clock being that much behind (its items stored shifted). Start
        from the offset last stored for the agent (any collector), as one observation at the time it
        was measured: it leaves the window like any other (bench/district.py found this)."""
        if self._stored_clocks is None:
            load = getattr(self.store, "clock_offsets", None)
            try:
                self._stored_clocks = load() if load is not None else {}
            except Exception as e:  # noqa: BLE001 - no seed: the estimate starts from the data
                log.warning("cannot read the stored agent clock offsets: %s", e)
                self._stored_clocks = {}
        seed = self._stored_clocks.get(agent)
        if seed is not None:
            off, at = seed
            tr.observe(at, at + off)

    def _remember(self, accepted: list[wire.Message]) -> None:
        """Where each agent is and which epoch it speaks now (birth/heartbeat carry it)."""
        for m in accepted:
            if m.seq is None and m.kind not in wire.STATE_KINDS:
                continue   # made by the collector
            self._where[m.agent] = (m.topic.site, m.topic.building)
            ep = m.body.get("epoch") if m.kind in ("birth", "heartbeat") else None
            if isinstance(ep, str):
                self._epoch[m.agent] = ep

    # ------------------------------------------------------------ events made by the collector
    def _event(self, agent: str, where: tuple[str, str], type_: str, now: int, severity: str,
               data: dict) -> wire.Message:
        it = wire.event(agent, type_, now, severity, {"source": "collector"}, data)
        return wire.Message(wire.TopicParts(where[0], where[1], agent, "events"), "events", agent, {},
                            packed=[it], recv_ms=now)

    def _collector_events(self, res: ApplyResult, now: int) -> list[wire.Message]:
        out = []
        for r in res.dead:
            agent = r.agent or "collector"
            k = (agent, r.reason)
            last = self._dl_events.get(k)
            if last is None:
                last = self._dl_events[k] = [0, 0]
            last[1] += 1
            if now - last[0] >= self.dead_letter_event_ms:
                where = self._where.get(agent) or _where(r.topic)
                out.append(self._event(agent, where, "ingest_dead_letter", now, "warning", {
                    "reason": r.reason, "topic": r.topic[:300], "error": r.error[:500], "seq": r.seq,
                    "count": last[1]}))
                last[0], last[1] = now, 0
        lim = self.skew_alert_ms
        for agent, off in self.offsets.items():
            where = self._where.get(agent)
            if where is None:
                continue
            if abs(off) > lim and agent not in self._skewed:
                self._skewed.add(agent)
                out.append(self._event(agent, where, "agent_clock_skew", now, "warning", {
                    "offset_s": off / 1000, "threshold_s": lim / 1000}))
            elif agent in self._skewed and abs(off) < 0.8 * lim:
                self._skewed.discard(agent)
                out.append(self._event(agent, where, "agent_clock_skew_cleared", now, "info", {
                    "offset_s": off / 1000, "threshold_s": lim / 1000}))
        out.extend(self._disk_events(now))
        return out

    def _disk_events(self, now: int) -> list[wire.Message]:
        """``store_disk_budget`` while the store projects full within 14 days or deleted data early
        (within the last hour), at most once per ``disk_event_ms``; ``store_disk_budget_cleared``
        once it no longer does."""
        status = getattr(self.store, "disk_status", None)
        mono = time.monotonic()
        if status is None or mono < self._disk_next:
            return []
        self._disk_next = mono + self.disk_check_s
        try:
            d = status()
        except Exception as e:  # noqa: BLE001
            log.warning("disk budget status unavailable: %s", e)
            return []
        days = d.get("days_to_full")
        enforced = d.get("enforced_total") or 0
        early = enforced > self._disk_enforced_seen
        self._disk_enforced_seen = enforced
        last_early = d.get("last_enforced_ms")
        recent = early or (last_early is not None and 0 <= now - last_early < self.disk_event_ms)
        bad = (days is not None and days < 14) or recent
        data = {k: d.get(k) for k in ("usage_bytes", "budget_bytes", "free_bytes", "growth_bytes_per_day",
                                      "days_to_full", "enforced_total", "last_enforced")}
        where = ("collector", "collector")
        if bad and (self._disk_alert_ms is None or now - self._disk_alert_ms >= self.disk_event_ms):
            self._disk_alert_ms = now
            why = "deleted data early" if early else f"full in {days} days"
            return [self._event("collector", where, "store_disk_budget", now, "warning", {**data, "why": why})]
        if not bad and self._disk_alert_ms is not None:
            self._disk_alert_ms = None
            return [self._event("collector", where, "store_disk_budget_cleared", now, "info", data)]
        return []

    # ------------------------------------------------------------ watermarks
    def _queue_marks(self, marks: list) -> None:
        now = time.monotonic()
        for w in marks:
            cur = self._epoch.get(w.agent)
            if cur is not None and cur != w.epoch:
                continue   # a late message of an earlier epoch: the agent only listens for its current one
            if self._marks.get(w.agent) == w and now - self._mark_sent.get(w.agent, 0.0) < 1.0:
                continue   # unchanged and just sent (a re-sent duplicate): at most once a second
            self._marks[w.agent] = w
            self._marks_unsent.add(w.agent)
        self._flush_marks()

    def _flush_marks(self) -> None:
        if not self._marks_unsent or not self.client.is_connected():
            return
        now_ms = int(time.time() * 1000)
        for agent in list(self._marks_unsent):
            w = self._marks[agent]
            info = self.client.publish(wire.commit_topic(agent), wire.encode_commit(w, now_ms), qos=1, retain=True)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return   # sent again on the next connect
            self._marks_unsent.discard(agent)
            self._mark_sent[agent] = time.monotonic()
            self.stats["watermarks_published"] += 1

    def health(self) -> tuple[bool, str | None]:
        """(ok, why not): not ok while commits fail or the broker has been away for 30 s."""
        if self.stalled is not None:
            return False, f"ingest stalled for {time.monotonic() - (self.stalled_since or 0):.0f} s: {self.stalled}"
        ds = self._disconnected_since
        if ds is not None and time.monotonic() - ds > 30:
            return False, f"not connected to the MQTT broker for {time.monotonic() - ds:.0f} s"
        return True, None

    def snapshot(self, detail: bool = True) -> dict:
        """Counters; ``detail`` adds what only an authenticated operator may see (client id)."""
        ok, why = self.health()
        out = {**self.stats, "connected": self.connected.is_set(), "queued": len(self._pending), "ok": ok,
               "stalled": why}
        if detail:
            out["client_id"] = self.cfg.client_id
        return out


def _where(topic: str) -> tuple[str, str]:
    """(site, building) of a refused message's topic, for the event about it."""
    try:
        tp = wire.parse_topic(topic)
        return wire.check_segment(tp.site, "site"), wire.check_segment(tp.building, "building")
    except wire.WireError:
        return "unknown", "unknown"
