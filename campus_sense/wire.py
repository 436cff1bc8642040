"""The wire contract between edge agents and the collector.

This is the ONE module both sides import. It owns the MQTT topic layout, the
payload schema and its version, size bounds and batch splitting. Nothing else
is shared between agent and collector, so a change here is a protocol change:
bump ``SCHEMA_VERSION`` when an old peer could misread the new payload.

Topics::

    campus/v1/{site}/{building}/{agent}/{kind}

``kind`` is one of ``metrics``, ``events``, ``facts`` (durable: queued on the
agent, carry ``epoch`` + ``seq``, QoS 1) or ``birth``, ``death``, ``heartbeat``
(agent state: not queued; ``death`` is the MQTT Last Will).

Commit watermark (collector -> agent, optional and backwards compatible)::

    campus/v1/commit/{agent}          retained, QoS 1, written only by the collector

After each commit group the collector publishes, for every agent whose durable
messages it committed, ``{"v":1, "kind":"commit", "agent", "epoch", "seq", "hwm",
"gaps", "reads", "sent_ms"}`` (``reads``: what the collector reads beyond the first v1
contract, ``READS``; an agent sends metrics tables only when it lists "tables"): ``seq``
is the highest seq such that every seq <= it of that epoch is committed (stored, or
isolated as a dead letter); ``hwm`` the highest seq committed at all; ``gaps`` the (at most ``MAX_COMMIT_GAPS``) ranges ``[first, last]``
between ``seq`` and ``hwm`` not committed yet. An agent deletes a queued message only
when the watermark covers it (seq <= ``seq``, or <= ``hwm`` and outside every gap),
never on the broker's PUBACK alone; it re-sends what stays unconfirmed. A collector
that does not publish watermarks is served by agents with ``publish.delete_on: puback``.
The topic has four levels, so the collector's own subscription (six levels) never
sees it, and the shipped ACL lets an agent read only ``campus/v1/commit/<its user>``.

Every payload is a UTF-8 JSON object with ``v`` (schema version), ``kind`` and
``agent``. Durable messages add ``epoch`` (random id of the agent's queue
database, so a wiped queue that restarts at seq 1 is not mistaken for
duplicates) and ``seq`` (per agent+epoch, strictly increasing by 1, so the
collector can drop duplicates and record gaps).
"""
from __future__ import annotations

import re
import threading
from itertools import chain, repeat
from operator import itemgetter, methodcaller
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import orjson
import zstandard

SCHEMA_VERSION = 1
TOPIC_ROOT = "campus/v1"
SUBSCRIPTION = f"{TOPIC_ROOT}/+/+/+/+"
DURABLE_KINDS = ("metrics", "events", "facts")
STATE_KINDS = ("birth", "death", "heartbeat")
KINDS = DURABLE_KINDS + STATE_KINDS
#: Bound for one MQTT payload. Mosquitto's default limit is far higher; this keeps
#: one message cheap to parse and to retransmit on a flaky building uplink.
MAX_MESSAGE_BYTES = 256 * 1024
#: Durable messages travel as one zstd frame (``pack``): ~6x smaller on the uplink and in the
#: agent's queue, and the collector's head log keeps them as received. Plain JSON is accepted too.
ZSTD_FRAME = b"\x28\xb5\x2f\xfd"
PACK_LEVEL = 3
SEVERITIES = ("info", "warning", "critical")
COMMIT_ROOT = f"{TOPIC_ROOT}/commit"
#: what this collector reads beyond the first v1 contract, announced in every commit watermark:
#: an agent sends metrics tables (``table``) only to a collector that announced "tables"
READS = ("tables",)
#: at most this many gap ranges travel in one commit watermark
MAX_COMMIT_GAPS = 64
#: item times (epoch ms) outside [2000-01-01, 2200-01-01) are rejected: a wrong clock or garbage,
#: and beyond 64 bits the store could not even index them
MIN_TIME_MS = 946_684_800_000
MAX_TIME_MS = 7_258_118_400_000
#: seq and counters in the envelope stay exact in every JSON reader (2^53)
MAX_SEQ = 2**53 - 1
#: nesting of event ``data`` and ``facts`` values (JSON encoders stop at ~254 levels)
MAX_DEPTH = 16
#: tags per item and length of a tag key or value
MAX_TAGS = 64
MAX_TAG_CHARS = 1024
#: rows of one metrics table item (``table``)
MAX_TABLE_ROWS = 4096

#: measurement names with a meaning for the collector (see HACKING.md "Samples the collector relies on"):
#: the agent's self-metrics (device = agent id) and the per-device poll status
AGENT_MEASUREMENT = "agent"
POLL_MEASUREMENT = "agent_poll"
#: SNMP topology tables, one sample per entry (field ``seen: 1``, the entry in the tags): the
#: collector keeps them as intervals (first/last seen per entry), not as time series
TOPOLOGY_MEASUREMENTS = ("fdb", "arp", "lldp", "ip_address")
#: monotonic counters per measurement: field -> its width in bits (an int) or the name of the field
#: of the same sample that holds it. The collector's rollups turn them into increases and rates
#: across 32-bit wraps and device restarts.
COUNTERS: dict[str, dict[str, int | str]] = {
    "interface": {"in_octets": "counter_bits", "out_octets": "counter_bits", "in_errors": 32,
                  "out_errors": 32, "in_discards": 32, "out_discards": 32},
}

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_ITEMS_KEY = {"metrics": "samples", "events": "events", "facts": "facts"}


class WireError(ValueError):
    """A payload or topic that breaks the contract; the message says what and where."""


@dataclass(frozen=True, slots=True)
class TopicParts:
    site: str
    building: str
    agent: str
    kind: str

    def __str__(self) -> str:
        """The topic (the parts were checked by ``parse_topic`` or ``topic``)."""
        return f"{TOPIC_ROOT}/{self.site}/{self.building}/{self.agent}/{self.kind}"


@dataclass(slots=True)
class Message:
    """A decoded, validated message."""

    topic: TopicParts
    kind: str
    agent: str
    body: dict[str, Any]
    epoch: str | None = None
    seq: int | None = None
    #: the items as received: for metrics, samples and tables (``table``) mixed
    packed: list[dict[str, Any]] = field(default_factory=list)
    #: the payload as received (set by the collector's ingest; kept for dead letters)
    raw: bytes = b""
    #: collector time when it arrived (epoch ms; set by ingest)
    recv_ms: int = 0
    #: ms the collector subtracted from every item time (clock correction of a skewed agent)
    shift_ms: int = 0
    #: rows in ``packed``: samples + the rows of its tables (None: one per item)
    rows: int | None = None
    _expanded: list[dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def items(self) -> list[dict[str, Any]]:
        """The items one per sample (tables expanded on first use: the embedded store reads
        ``packed`` and never needs this)."""
        if self.rows is None:
            return self.packed
        e = self._expanded
        if e is None:
            e = self._expanded = expand(self.packed)
        return e

    def count(self) -> int:
        """Samples (or events, facts) in the message."""
        return len(self.packed) if self.rows is None else self.rows

    def shift(self, ms: int) -> None:
        """Subtract ``ms`` from every item time (clock correction)."""
        for it in self.packed:
            it["t"] -= ms
        self._expanded = None
        self.shift_ms = ms


def check_segment(value: str, what: str) -> str:
    """Site, building, agent ids become topic levels: no '/', '+', '#', spaces."""
    if not isinstance(value, str) or not _SEGMENT.match(value):
        raise WireError(f"{what} {value!r} must match {_SEGMENT.pattern} (it is used as an MQTT topic level)")
    return value


def topic(site: str, building: str, agent: str, kind: str) -> str:
    if kind not in KINDS:
        raise WireError(f"unknown message kind {kind!r}")
    for v, w in ((site, "site"), (building, "building"), (agent, "agent id")):
        check_segment(v, w)
    return str(TopicParts(site, building, agent, kind))


def parse_topic(t: str) -> TopicParts:
    parts = t.split("/")
    if len(parts) != 6 or "/".join(parts[:2]) != TOPIC_ROOT:
        raise WireError(f"topic {t!r} is not {TOPIC_ROOT}/<site>/<building>/<agent>/<kind>")
    site, building, agent, kind = parts[2:]
    if kind not in KINDS:
        raise WireError(f"topic {t!r}: unknown kind {kind!r}")
    return TopicParts(site, building, agent, kind)


def commit_topic(agent: str) -> str:
    """Where the collector publishes ``agent``'s commit watermark (retained)."""
    return f"{COMMIT_ROOT}/{check_segment(agent, 'agent id')}"


@dataclass(frozen=True, slots=True)
class Watermark:
    agent: str
    epoch: str
    seq: int
    hwm: int
    gaps: tuple[tuple[int, int], ...] = ()
    #: what the collector reads beyond the base of this schema version (``READS``)
    reads: tuple[str, ...] = ()

    def covers(self, seq: int) -> bool:
        if seq <= self.seq:
            return True
        if seq > self.hwm:
            return False
        return not any(a <= seq <= b for a, b in self.gaps)


def encode_commit(w: Watermark, time_ms: int) -> bytes:
    """The collector's watermark; it also tells the agent what this collector reads (``READS``)."""
    return orjson.dumps({"v": SCHEMA_VERSION, "kind": "commit", "agent": w.agent, "epoch": w.epoch,
                         "seq": w.seq, "hwm": w.hwm, "gaps": [list(g) for g in w.gaps[:MAX_COMMIT_GAPS]],
                         "reads": list(READS), "sent_ms": int(time_ms)})


def decode_commit(topic_str: str, payload: bytes) -> Watermark:
    """Validate a commit watermark; raise WireError naming what is wrong."""
    where = f"topic {topic_str}"
    parts = topic_str.split("/")
    if len(parts) != 4 or "/".join(parts[:3]) != COMMIT_ROOT:
        raise _fail(where, f"not {COMMIT_ROOT}/<agent>")
    try:
        b = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        raise _fail(where, f"payload is not UTF-8 JSON ({e})") from None
    if not isinstance(b, dict) or b.get("v") != SCHEMA_VERSION or b.get("kind") != "commit":
        raise _fail(where, "not a v1 commit watermark")
    if b.get("agent") != parts[3]:
        raise _fail(where, f"payload agent {b.get('agent')!r} does not match the topic")
    epoch, seq, hwm, gaps = b.get("epoch"), b.get("seq"), b.get("hwm", b.get("seq")), b.get("gaps", [])
    if not isinstance(epoch, str) or not epoch:
        raise _fail(where, "missing 'epoch'")
    for name, v in (("seq", seq), ("hwm", hwm)):
        if type(v) is not int or not 0 <= v <= MAX_SEQ:
            raise _fail(where, f"'{name}' must be an integer in 0..{MAX_SEQ}, got {v!r}")
    if hwm < seq:
        raise _fail(where, f"'hwm' {hwm} is below 'seq' {seq}")
    if not isinstance(gaps, list) or len(gaps) > MAX_COMMIT_GAPS:
        raise _fail(where, f"'gaps' must be a list of at most {MAX_COMMIT_GAPS} [first, last] ranges")
    out = []
    for g in gaps:
        if (not isinstance(g, list) or len(g) != 2 or any(type(x) is not int for x in g)
                or not seq < g[0] <= g[1] <= hwm):
            raise _fail(where, f"gap {g!r} is not [first, last] within ({seq}, {hwm}]")
        out.append((g[0], g[1]))
    reads = b.get("reads", [])
    reads = tuple(x for x in reads[:16] if isinstance(x, str)) if isinstance(reads, list) else ()
    return Watermark(parts[3], epoch, seq, hwm, tuple(out), reads)


# ---------------------------------------------------------------- items
def sample(measurement: str, device: str, time_ms: int, fields: dict, tags: dict | None = None) -> dict:
    """One time-series point: measurement, device, time (epoch ms), tags, fields."""
    return {"m": measurement, "d": device, "t": int(time_ms), "tags": tags or {}, "f": fields}


def event(device: str, type_: str, time_ms: int, severity: str = "info", tags: dict | None = None,
          data: dict | None = None) -> dict:
    return {"d": device, "type": type_, "t": int(time_ms), "severity": severity, "tags": tags or {},
            "data": data or {}}


def facts(device: str, time_ms: int, values: dict) -> dict:
    """Device facts for inventory (model, serial, firmware, mac, ip, ...)."""
    return {"d": device, "t": int(time_ms), "facts": values}


def table(measurement: str, device: str, time_ms: int, fields: dict[str, list], tags: dict[str, list] | None,
          rows: int) -> dict:
    """Samples of one measurement, device and time, as columns: ``fields`` and ``tags`` map a name to
    one value per row (a field's null: no value in that row). One poll of a switch's 48 ports is
    one table: a third of the JSON of 48 samples, and the collector's store takes the columns as
    they are instead of transposing rows."""
    return {"m": measurement, "d": device, "t": int(time_ms), "rows": rows, "tags": tags or {}, "f": fields}


def _run_key(it: dict) -> tuple:
    return it["m"], it["d"], it["t"], tuple(it["f"]), tuple(it["tags"])


def tabulate(items: list[dict], max_rows: int = MAX_TABLE_ROWS) -> list[dict]:
    """Samples (as ``sample`` makes them) -> the same samples, each run of at least two
    consecutive ones with the same measurement, device, time, field names and tag names (a
    poll's interfaces) as one ``table`` of at most ``max_rows`` rows."""
    out: list[dict] = []
    i, n = 0, len(items)
    while i < n:
        k = _run_key(items[i])
        j = i + 1
        while j < n and j - i < max_rows and _run_key(items[j]) == k:
            j += 1
        if j - i < 2:
            out.append(items[i])
        else:
            run = items[i:j]
            fs, tg = [it["f"] for it in run], [it["tags"] for it in run]
            out.append(table(k[0], k[1], k[2], {f: [x[f] for x in fs] for f in k[3]},
                             {g: [x[g] for x in tg] for g in k[4]}, j - i))
        i = j
    return out


def expand(items: list[dict]) -> list[dict]:
    """Metrics items -> one sample per row (tables expanded; samples as they are)."""
    out: list[dict] = []
    for it in items:
        n = it.get("rows")
        if n is None:
            out.append(it)
            continue
        m, d, t, f, tg = it["m"], it["d"], it["t"], it["f"], it.get("tags") or {}
        fk, tk = tuple(f), tuple(tg)
        trows = zip(*tg.values()) if tg else repeat((), n)
        out.extend({"m": m, "d": d, "t": t, "tags": dict(zip(tk, tv)), "f": dict(zip(fk, fv))}
                   for fv, tv in zip(zip(*f.values()), trows))
    return out


# ---------------------------------------------------------------- encoding
def encode_state(kind: str, agent: str, time_ms: int, **body: Any) -> bytes:
    if kind not in STATE_KINDS:
        raise WireError(f"{kind!r} is not a state kind")
    return orjson.dumps({"v": SCHEMA_VERSION, "kind": kind, "agent": agent, "sent_ms": int(time_ms), **body})


def encode_durable(kind: str, agent: str, epoch: str, seq: int, time_ms: int,
                   encoded_items: Iterable[bytes]) -> bytes:
    """Assemble a durable message from items already encoded with ``encode_item``."""
    head = orjson.dumps({"v": SCHEMA_VERSION, "kind": kind, "agent": agent, "epoch": epoch, "seq": seq,
                         "sent_ms": int(time_ms)})
    key = _ITEMS_KEY[kind].encode()
    return head[:-1] + b',"' + key + b'":[' + b",".join(encoded_items) + b"]}"


_tls = threading.local()   # zstd contexts are not thread-safe (the C code runs without the GIL)


def zstd(level: int) -> zstandard.ZstdCompressor:
    """This thread's zstd compressor of ``level``."""
    c = getattr(_tls, "c", None)
    if c is None:
        c = _tls.c = {}
    z = c.get(level)
    if z is None:
        z = c[level] = zstandard.ZstdCompressor(level=level)
    return z


def unzstd(data: bytes, max_output_size: int = 0) -> bytes:
    """One zstd frame decompressed with this thread's decompressor (raises zstandard.ZstdError)."""
    d = getattr(_tls, "d", None)
    if d is None:
        d = _tls.d = zstandard.ZstdDecompressor()
    return d.decompress(data, max_output_size=max_output_size)


def pack(payload: bytes) -> bytes:
    """A durable message as agents send it: one zstd frame that declares its size."""
    return zstd(PACK_LEVEL).compress(payload)


def unpack(payload: bytes, max_bytes: int = MAX_MESSAGE_BYTES, where: str = "payload") -> bytes:
    """A payload as received -> its JSON: a zstd frame is decompressed (at most ``max_bytes``,
    checked before decompressing), anything else is returned as it is. Raises WireError."""
    if payload[:4] != ZSTD_FRAME:
        return payload
    try:
        size = zstandard.frame_content_size(payload)
        if size < 0:
            raise _fail(where, "zstd payload does not declare its decompressed size (the frame header must)")
        if size > max_bytes:
            raise _fail(where, f"zstd payload of {size} bytes decompressed exceeds the {max_bytes}-byte bound")
        return unzstd(payload, size)
    except zstandard.ZstdError as e:
        raise _fail(where, f"payload is not a valid zstd frame ({e})") from None


def encode_item(item: dict) -> bytes:
    # NaN/inf become null; the collector drops null fields.
    return orjson.dumps(item)


def envelope_overhead(kind: str, agent: str, epoch: str) -> int:
    return len(encode_durable(kind, agent, epoch, 2**53, 2**45, [])) + 2


def split(encoded_items: list[bytes], max_bytes: int, overhead: int) -> Iterator[list[bytes]]:
    """Group encoded items into chunks whose message stays within ``max_bytes``.

    Items are never truncated; a single item that cannot fit raises WireError
    (the caller counts it as a drop).
    """
    chunk: list[bytes] = []
    size = overhead
    for it in encoded_items:
        n = len(it) + 1
        if overhead + n > max_bytes:
            raise WireError(f"one item is {len(it)} bytes, above the {max_bytes}-byte message bound")
        if chunk and size + n > max_bytes:
            yield chunk
            chunk, size = [], overhead
        chunk.append(it)
        size += n
    if chunk:
        yield chunk


# ---------------------------------------------------------------- decoding
def _fail(where: str, why: str) -> WireError:
    return WireError(f"{where}: {why}")


def decode_strict(topic_str: str, payload: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    """The reference validator: check everything, raise WireError naming what is wrong."""
    tp = parse_topic(topic_str)
    where = f"topic {topic_str}"
    payload = unpack(payload, max_bytes, where)
    if len(payload) > max_bytes:
        raise _fail(where, f"payload of {len(payload)} bytes exceeds the {max_bytes}-byte bound")
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        raise _fail(where, f"payload is not UTF-8 JSON ({e})") from None
    if not isinstance(body, dict):
        raise _fail(where, f"payload must be a JSON object, got {type(body).__name__}")
    v = body.get("v")
    if v != SCHEMA_VERSION:
        raise _fail(where, f"unsupported schema version {v!r} (this collector speaks v{SCHEMA_VERSION})")
    kind = body.get("kind")
    if kind != tp.kind:
        raise _fail(where, f"payload kind {kind!r} does not match the topic kind {tp.kind!r}")
    if body.get("agent") != tp.agent:
        raise _fail(where, f"payload agent {body.get('agent')!r} does not match the topic agent {tp.agent!r}")
    msg = Message(tp, kind, tp.agent, body)
    if kind in STATE_KINDS and not _depth_ok(body, MAX_DEPTH):
        raise _fail(where, f"payload is nested deeper than {MAX_DEPTH} levels")
    if kind in DURABLE_KINDS:
        epoch, seq = body.get("epoch"), body.get("seq")
        if not isinstance(epoch, str) or not epoch or len(epoch) > 64:
            raise _fail(where, "missing 'epoch' (a string of 1..64 characters)")
        if type(seq) is not int or not 0 < seq <= MAX_SEQ:
            raise _fail(where, f"'seq' must be an integer in 1..{MAX_SEQ}, got {seq!r}")
        key = _ITEMS_KEY[kind]
        items = body.get(key)
        if not isinstance(items, list):
            raise _fail(where, f"'{key}' must be a list")
        check = _CHECKS[kind]
        for i, it in enumerate(items):
            err = check(it)
            if err:
                raise _fail(where, f"{key}[{i}]: {err}")
        msg.epoch, msg.seq, msg.packed = epoch, seq, items
        if kind == "metrics" and any("rows" in it for it in items):
            msg.rows = sum(it.get("rows", 1) for it in items)
    return msg


def durable_id(topic_str: str, payload: bytes) -> tuple[TopicParts, str, int] | None:
    """(topic, epoch, seq) of a durable message whose envelope is sound even though its content
    was refused, so the collector can mark that seq as dealt with (dead letter) and let the agent
    delete it; None when the envelope itself is broken (nothing to confirm)."""
    try:
        tp = parse_topic(topic_str)
        if tp.kind not in DURABLE_KINDS or len(payload) > 4 * MAX_MESSAGE_BYTES:
            return None
        b = orjson.loads(unpack(payload, 4 * MAX_MESSAGE_BYTES))
    except (WireError, orjson.JSONDecodeError):
        return None
    if not isinstance(b, dict) or b.get("agent") != tp.agent or b.get("kind") != tp.kind:
        return None
    epoch, seq = b.get("epoch"), b.get("seq")
    if not isinstance(epoch, str) or not 0 < len(epoch) <= 64 or type(seq) is not int or not 0 < seq <= MAX_SEQ:
        return None
    return tp, epoch, seq


_SCALARS = (int, float, str, bool, type(None))
_SCALAR_TYPES = frozenset(_SCALARS)
_STR = frozenset((str,))
_EMPTY: dict = {}
_topics: dict[str, TopicParts] = {}


_DICT = frozenset((dict,))
_LIST = frozenset((list,))
_INT = frozenset((int,))
_DMTF = itemgetter("d", "m", "t", "f")
_TAGS = methodcaller("get", "tags", _EMPTY)


def _samples_ok(items: list) -> int:
    """Lean version of _check_sample for the ingest hot path (exact JSON types, no messages):
    -1 if it does not accept ``items``, else the rows of the tables among them (0: none).
    Checked a column at a time, in C where it can be."""
    if not items:
        return 0
    if not _DICT.issuperset(map(type, items)):
        return -1
    try:
        ds, ms, ts, fs = zip(*map(_DMTF, items))
    except KeyError:
        return -1
    if not (_STR.issuperset(map(type, ds)) and _STR.issuperset(map(type, ms)) and "" not in ds and "" not in ms
            and _INT.issuperset(map(type, ts)) and MIN_TIME_MS <= min(ts) and max(ts) < MAX_TIME_MS
            and _DICT.issuperset(map(type, fs)) and all(fs)):
        return -1
    tg = tuple(map(_TAGS, items))
    if not _DICT.issuperset(map(type, tg)) or max(map(len, tg)) > MAX_TAGS:
        return -1
    if max(map(len, chain.from_iterable(tg)), default=0) > MAX_TAG_CHARS:      # tag names
        return -1
    tv = tuple(chain.from_iterable(map(dict.values, tg)))
    if _SCALAR_TYPES.issuperset(map(type, chain.from_iterable(map(dict.values, fs)))) and _STR.issuperset(map(type, tv)):
        if max(map(len, tv), default=0) > MAX_TAG_CHARS or any("rows" in it for it in items):
            return -1
        return 0
    return _tables_ok(items, fs, tg)


def _tables_ok(items: list, fs: tuple, tg: tuple) -> int:
    """_samples_ok for a list with tables in it."""
    scal, strs, lists = _SCALAR_TYPES, _STR, _LIST
    rows = 0
    for it, f, tags in zip(items, fs, tg):
        n = it.get("rows")
        if n is None:
            if not (scal.issuperset(map(type, f.values())) and strs.issuperset(map(type, tags.values()))
                    and max(map(len, tags.values()), default=0) <= MAX_TAG_CHARS):
                return -1
            continue
        if not (type(n) is int and 0 < n <= MAX_TABLE_ROWS and lists.issuperset(map(type, f.values()))
                and set(map(len, f.values())) == {n} and scal.issuperset(map(type, chain.from_iterable(f.values())))):
            return -1
        if tags and not (lists.issuperset(map(type, tags.values())) and set(map(len, tags.values())) == {n}
                         and strs.issuperset(map(type, chain.from_iterable(tags.values())))
                         and max(map(len, chain.from_iterable(tags.values()))) <= MAX_TAG_CHARS):
            return -1
        rows += n - 1
    return rows + len(items)


_SEVERITY_SET = frozenset(SEVERITIES)


def _events_ok(items: list) -> bool:
    """Lean version of _check_event for the ingest hot path (trap and syslog storms): exact JSON
    types, data of scalars only (anything nested goes the strict way), no messages."""
    scal, strs, sevs = _SCALAR_TYPES, _STR, _SEVERITY_SET
    lo, hi, ntags, nchars = MIN_TIME_MS, MAX_TIME_MS, MAX_TAGS, MAX_TAG_CHARS
    for it in items:
        if type(it) is not dict:
            return False
        g = it.get
        d, typ, t, tags, data = g("d"), g("type"), g("t"), g("tags", _EMPTY), g("data", _EMPTY)
        sev = g("severity", "info")
        if not (type(d) is str and d and type(typ) is str and typ and type(t) is int and lo <= t < hi
                and type(tags) is dict and len(tags) <= ntags and type(data) is dict
                and type(sev) is str and sev in sevs):
            return False
        if tags:
            if not strs.issuperset(map(type, tags.values())):
                return False
            for k, v in tags.items():
                if len(k) > nchars or len(v) > nchars:
                    return False
        if data and not scal.issuperset(map(type, data.values())):
            return False
    return True


def decode(topic_str: str, payload: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    """Validate and decode one MQTT message; raise WireError naming what is wrong.

    Well-formed metrics batches (the 150k points/s path) and event batches of scalar data (trap
    and syslog storms) take a lean check; anything
    it does not accept goes through ``decode_strict``, which accepts it or explains why
    not. Both give the same outcome (tests/test_collector_fastwire.py checks it).
    """
    if payload[:4] == ZSTD_FRAME:
        payload = unpack(payload, max_bytes, f"topic {topic_str}")
    tp = _topics.get(topic_str)
    if tp is None or (tp.kind != "metrics" and tp.kind != "events") or len(payload) > max_bytes:
        if tp is None and len(_topics) < 100_000:
            try:
                _topics[topic_str] = parse_topic(topic_str)
            except WireError:
                pass
        return decode_strict(topic_str, payload, max_bytes)
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return decode_strict(topic_str, payload, max_bytes)
    if type(body) is not dict:
        return decode_strict(topic_str, payload, max_bytes)
    g = body.get
    kind = tp.kind
    epoch, seq, items = g("epoch"), g("seq"), g("samples" if kind == "metrics" else "events")
    if (g("v") != SCHEMA_VERSION or g("kind") != kind or g("agent") != tp.agent
            or type(epoch) is not str or not epoch or type(seq) is not int or not 0 < seq <= MAX_SEQ
            or len(epoch) > 64 or type(items) is not list):
        return decode_strict(topic_str, payload, max_bytes)
    if kind == "metrics":
        rows = _samples_ok(items)
        if rows < 0:
            return decode_strict(topic_str, payload, max_bytes)
        return Message(tp, kind, tp.agent, body, epoch, seq, items, rows=rows or None)
    if not _events_ok(items):
        return decode_strict(topic_str, payload, max_bytes)
    return Message(tp, kind, tp.agent, body, epoch, seq, items)



def _check_dt(it: Any) -> str | None:
    if not isinstance(it, dict):
        return "must be an object"
    if not isinstance(it.get("d"), str) or not it["d"]:
        return "'d' (device id) must be a non-empty string"
    t = it.get("t")
    if type(t) is not int:
        return "'t' (epoch ms) must be an integer"
    if not MIN_TIME_MS <= t < MAX_TIME_MS:
        return f"'t' {t} is outside {MIN_TIME_MS}..{MAX_TIME_MS} (years 2000..2200 in epoch ms)"
    return None


def _check_common(it: Any) -> str | None:
    err = _check_dt(it)
    if err:
        return err
    tags = it.get("tags", {})
    if not isinstance(tags, dict) or not all(isinstance(x, str) for x in tags.values()):
        return "'tags' must be an object of strings"
    if len(tags) > MAX_TAGS or any(len(k) > MAX_TAG_CHARS or len(v) > MAX_TAG_CHARS for k, v in tags.items()):
        return f"'tags': at most {MAX_TAGS} tags of at most {MAX_TAG_CHARS} characters each"
    return None


def _depth_ok(v: Any, left: int) -> bool:
    if isinstance(v, dict):
        return left > 0 and all(_depth_ok(x, left - 1) for x in v.values())
    if isinstance(v, list):
        return left > 0 and all(_depth_ok(x, left - 1) for x in v)
    return True


def _check_sample(it: Any) -> str | None:
    if isinstance(it, dict) and "rows" in it:
        return _check_table(it)
    err = _check_common(it)
    if err:
        return err
    if not isinstance(it.get("m"), str) or not it["m"]:
        return "'m' (measurement) must be a non-empty string"
    f = it.get("f")
    if not isinstance(f, dict) or not f:
        return "'f' (fields) must be a non-empty object"
    for k, x in f.items():
        if not isinstance(x, _SCALARS):
            return f"field {k!r} must be a number, string or boolean"
    return None


def _check_table(it: dict) -> str | None:
    err = _check_dt(it)
    if err:
        return "table: " + err
    n = it["rows"]
    if type(n) is not int or not 0 < n <= MAX_TABLE_ROWS:
        return f"table: 'rows' must be an integer in 1..{MAX_TABLE_ROWS}, got {n!r}"
    if not isinstance(it.get("m"), str) or not it["m"]:
        return "table: 'm' (measurement) must be a non-empty string"
    tags = it.get("tags", {})
    if not isinstance(tags, dict) or len(tags) > MAX_TAGS:
        return f"table: 'tags' must be an object of at most {MAX_TAGS} tags"
    for k, col in tags.items():
        if (len(k) > MAX_TAG_CHARS or not isinstance(col, list) or len(col) != n
                or not all(isinstance(x, str) and len(x) <= MAX_TAG_CHARS for x in col)):
            return (f"table: tag {k[:64]!r} must be a list of {n} strings (one per row) of at most "
                    f"{MAX_TAG_CHARS} characters")
    f = it.get("f")
    if not isinstance(f, dict) or not f:
        return "table: 'f' (fields) must be a non-empty object"
    for k, col in f.items():
        if not isinstance(col, list) or len(col) != n or not all(isinstance(x, _SCALARS) for x in col):
            return f"table: field {k!r} must be a list of {n} numbers, strings, booleans or nulls (one per row)"
    return None


def _check_event(it: Any) -> str | None:
    err = _check_common(it)
    if err:
        return err
    if not isinstance(it.get("type"), str) or not it["type"]:
        return "'type' must be a non-empty string"
    if it.get("severity", "info") not in SEVERITIES:
        return f"'severity' must be one of {SEVERITIES}"
    if not isinstance(it.get("data", {}), dict):
        return "'data' must be an object"
    if not _depth_ok(it.get("data", {}), MAX_DEPTH):
        return f"'data' is nested deeper than {MAX_DEPTH} levels"
    return None


def _check_facts(it: Any) -> str | None:
    err = _check_common(it)
    if err:
        return err
    if not isinstance(it.get("facts"), dict):
        return "'facts' must be an object"
    if not _depth_ok(it["facts"], MAX_DEPTH):
        return f"'facts' is nested deeper than {MAX_DEPTH} levels"
    return None


_CHECKS = {"metrics": _check_sample, "events": _check_event, "facts": _check_facts}


def check_item(kind: str, item: Any) -> str | None:
    """Validate one item of a durable ``kind``; return what is wrong, or None."""
    return _CHECKS[kind](item)
