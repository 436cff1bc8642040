"""A small, fast SNMPv2c GET/GETBULK client with its own BER codec (no pysnmp, no MIBs).

Why: decoding GETBULK responses through pysnmp/pyasn1 costs ~20x the CPU of the Go
snmp_exporter per varbind (see bench/snmp_vs_exporter.py). For v2c table walks -- the
bulk of a campus agent's work -- this module encodes requests and decodes responses
directly from bytes. SNMPv3 (USM) reuses the PDU codec in drivers/snmp/fastv3.py.

Same API and value conventions as ``drivers.snmp.client.SnmpSession``:

    s = FastV2cSession(host, port=161, community="...", timeout=2.0, retries=1)
    await s.get(["1.3.6.1.2.1.1.5.0"])          -> {oid: value}   (missing objects left out)
    await s.walk([col1, col2], max_repetitions=25)  -> {col: {index_suffix: value}}

Values: INTEGER/Counter32/Gauge32/TimeTicks/Counter64/Unsigned32 -> int; OCTET STRING /
Opaque -> bytes; OBJECT IDENTIFIER -> dotted str; IpAddress -> dotted-quad str; NULL -> None.
Errors raise ``drivers.base.DeviceError(reason, message)`` (timeout, protocol, config).

Robustness: tooBig halves max-repetitions (adaptive), a column stops at endOfMibView, when
it leaves its subtree or when the agent returns a non-increasing OID (recorded in
``walk_errors``); malformed packets are dropped (counted) and the request retried.
"""
from __future__ import annotations

import asyncio
import itertools
import random
import socket
from typing import Any

from drivers.base import DeviceError

__all__ = ["FastV2cSession", "encode_oid", "decode_oid", "encode_request", "decode_response", "BERError",
           "encode_pdu", "decode_pdu", "hdr", "decode_varbinds", "decode_trap_v1", "NOTIFICATION_PDUS"]


class BERError(ValueError):
    """Malformed BER data."""


# ------------------------------------------------------------------------------- encoding

def _enc_len(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(b),)) + b


def _tlv(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + _enc_len(len(payload)) + payload


def _enc_int(v: int) -> bytes:
    return _tlv(0x02, v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big", signed=True))


def encode_oid(oid: str | tuple[int, ...]) -> bytes:
    """Dotted OID -> BER content octets (without tag/length)."""
    if isinstance(oid, str):
        try:
            t = [int(x) for x in oid.strip().lstrip(".").split(".")]
        except ValueError:
            raise DeviceError("config", f"not a numeric OID: {oid!r} (MIB names are not resolved)") from None
    else:
        t = list(oid)
    if len(t) < 2 or t[0] > 2 or any(x < 0 for x in t):
        raise DeviceError("config", f"invalid OID: {oid!r}")
    out = bytearray()
    for i, x in enumerate([t[0] * 40 + t[1]] + t[2:]):
        if x < 0x80:
            out.append(x)
            continue
        chunk = []
        while x:
            chunk.append((x & 0x7F) | 0x80)
            x >>= 7
        chunk[0] &= 0x7F
        out.extend(reversed(chunk))
    return bytes(out)


def decode_oid(b: bytes) -> str:
    """BER content octets of an OID -> dotted string."""
    if not b:
        raise BERError("empty OID")
    if b.isascii():  # every sub-identifier < 128: the common case
        first = b[0]
        head = "0.%d" % first if first < 40 else ("1.%d" % (first - 40) if first < 80 else "2.%d" % (first - 80))
        if len(b) == 1:
            return head
        return head + "." + ".".join(map(str, b[1:]))
    return ".".join(map(str, _oid_ints(b)))


def _oid_ints(b: bytes) -> list[int]:
    """BER OID content -> sub-identifiers, with the first two folded back out of byte one."""
    first, *rest = _suffix_tuple(b)
    if first < 40:
        return [0, first, *rest]
    if first < 80:
        return [1, first - 40, *rest]
    return [2, first - 80, *rest]


def _suffix_tuple(b: bytes) -> tuple[int, ...]:
    """BER sub-identifier bytes (no first-byte folding) -> tuple of ints."""
    if b.isascii():
        return tuple(b)
    out = []
    x = 0
    for c in b:
        x = (x << 7) | (c & 0x7F)
        if not c & 0x80:
            out.append(x)
            x = 0
    if b[-1] & 0x80:
        raise BERError("truncated OID sub-identifier")
    return tuple(out)


_PDU_TAGS = {"get": 0xA0, "next": 0xA1, "bulk": 0xA5}
_NULL_VB_TAIL = b"\x05\x00"


def encode_pdu(kind: str, request_id: int, oids: list[bytes], non_repeaters: int = 0,
               max_repetitions: int = 0) -> bytes:
    """GET/GETNEXT/GETBULK PDU (shared by the v2c message and the v3 ScopedPDU)."""
    vbs = b"".join(_tlv(0x30, _tlv(0x06, o) + _NULL_VB_TAIL) for o in oids)
    if kind == "bulk":
        a, b = non_repeaters, max_repetitions
    else:
        a = b = 0
    return _tlv(_PDU_TAGS[kind], _enc_int(request_id) + _enc_int(a) + _enc_int(b) + _tlv(0x30, vbs))


def encode_request(kind: str, community: bytes, request_id: int, oids: list[bytes],
                   non_repeaters: int = 0, max_repetitions: int = 0) -> bytes:
    """Build a v2c GET/GETNEXT/GETBULK message; ``oids`` are BER content octets."""
    pdu = encode_pdu(kind, request_id, oids, non_repeaters, max_repetitions)
    return _tlv(0x30, _enc_int(1) + _tlv(0x04, community) + pdu)


# ------------------------------------------------------------------------------- decoding

NO_SUCH_OBJECT = 0x80
NO_SUCH_INSTANCE = 0x81
END_OF_MIB_VIEW = 0x82


class _Exc:
    __slots__ = ("tag",)

    def __init__(self, tag: int):
        self.tag = tag

    def __repr__(self) -> str:
        return {0x80: "noSuchObject", 0x81: "noSuchInstance", 0x82: "endOfMibView"}.get(self.tag, "?")


EXC = {t: _Exc(t) for t in (NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW)}


def decode_response(data: bytes) -> tuple[int, int, int, list[tuple[bytes, Any]]]:
    """Parse a v2c Response message.

    Returns (request_id, error_status, error_index, [(oid_content_bytes, value)]).
    Exception values (noSuchObject...) are ``EXC[tag]`` singletons. Raises BERError.
    """
    try:
        return _decode_response(data)
    except (IndexError, ValueError) as e:
        if isinstance(e, BERError):
            raise
        raise BERError(f"truncated or malformed message ({e})") from None


def hdr(mv: bytes, pos: int, want: int | None = None) -> tuple[int, int, int]:
    """(tag, content start, content length) of the TLV at ``pos``; checks ``want`` and bounds."""
    tag = mv[pos]
    if want is not None and tag != want:
        raise BERError(f"expected tag 0x{want:02x} at {pos}, got 0x{tag:02x}")
    ln = mv[pos + 1]
    pos += 2
    if ln & 0x80:
        k = ln & 0x7F
        if k == 0 or k > 4:
            raise BERError("unsupported length encoding")
        ln = int.from_bytes(mv[pos:pos + k], "big")
        pos += k
    if pos + ln > len(mv):
        raise BERError("length beyond end of message")
    return tag, pos, ln


def _decode_response(data: bytes) -> tuple[int, int, int, list[tuple[bytes, Any]]]:
    _, p, _ = hdr(data, 0, 0x30)
    _, p, ln = hdr(data, p, 0x02)  # version
    p += ln
    _, p, ln = hdr(data, p, 0x04)  # community
    p += ln
    tag, req_id, err_status, err_index, out = decode_pdu(data, p)
    if tag != 0xA2:
        raise BERError(f"not a Response PDU (tag 0x{tag:02x})")
    return req_id, err_status, err_index, out


#: PDUs a notification receiver decodes: InformRequest, SNMPv2-Trap (and Response/Report)
NOTIFICATION_PDUS = (0xA6, 0xA7)
_RESPONSE_PDUS = (0xA2, 0xA8)


def decode_pdu(mv: bytes, p: int, accept: tuple[int, ...] = _RESPONSE_PDUS
               ) -> tuple[int, int, int, int, list[tuple[bytes, Any]]]:
    """PDU at ``mv[p:]`` -> (pdu tag, request_id, error_status, error_index, varbinds).
    Shared by v2c messages and v3 ScopedPDUs; ``accept``: the PDU tags wanted (default Response
    and Report; a trap receiver passes NOTIFICATION_PDUS). Raises BERError/IndexError/ValueError."""
    pdu_tag, p, _ = hdr(mv, p)
    if pdu_tag not in accept:
        raise BERError(f"not a Response PDU (tag 0x{pdu_tag:02x})" if accept is _RESPONSE_PDUS
                       else f"unexpected PDU (tag 0x{pdu_tag:02x})")
    _, p, ln = hdr(mv, p, 0x02)
    req_id = int.from_bytes(mv[p:p + ln], "big", signed=True)
    p += ln
    _, p, ln = hdr(mv, p, 0x02)
    err_status = int.from_bytes(mv[p:p + ln], "big", signed=True)
    p += ln
    _, p, ln = hdr(mv, p, 0x02)
    err_index = int.from_bytes(mv[p:p + ln], "big", signed=True)
    p += ln
    _, p, ln = hdr(mv, p, 0x30)
    return pdu_tag, req_id, err_status, err_index, decode_varbinds(mv, p, p + ln)


def decode_varbinds(mv: bytes, p: int, end: int) -> list[tuple[bytes, Any]]:
    """The VarBindList content ``mv[p:end]`` -> [(oid content bytes, value)] (values as in
    decode_pdu). Raises BERError/IndexError/ValueError."""
    out: list[tuple[bytes, Any]] = []
    append = out.append
    from_bytes = int.from_bytes
    while p < end:
        # varbind SEQUENCE header (inline, short/long form)
        if mv[p] != 0x30:
            raise BERError(f"expected varbind SEQUENCE at {p}")
        ln = mv[p + 1]
        p += 2
        if ln & 0x80:
            k = ln & 0x7F
            ln = from_bytes(mv[p:p + k], "big")
            p += k
        vb_end = p + ln
        if vb_end > end:
            raise BERError("varbind beyond end of list")
        # OID
        if mv[p] != 0x06:
            raise BERError(f"expected OID at {p}")
        ln = mv[p + 1]
        p += 2
        if ln & 0x80:
            k = ln & 0x7F
            ln = from_bytes(mv[p:p + k], "big")
            p += k
        oid = mv[p:p + ln]
        p += ln
        # value
        tag = mv[p]
        ln = mv[p + 1]
        p += 2
        if ln & 0x80:
            k = ln & 0x7F
            ln = from_bytes(mv[p:p + k], "big")
            p += k
        if p + ln != vb_end:
            raise BERError(f"varbind length mismatch at {p}")
        if tag == 0x04:
            val: Any = mv[p:vb_end]
        elif tag == 0x02:
            val = from_bytes(mv[p:vb_end], "big", signed=True)
        elif 0x41 <= tag <= 0x47 and tag != 0x44:  # Counter32 Gauge32 TimeTicks Counter64 UInteger32
            val = from_bytes(mv[p:vb_end], "big")
        elif tag == 0x06:
            val = decode_oid(mv[p:vb_end]) if ln else ""
        elif tag == 0x40:
            v = mv[p:vb_end]
            val = "%d.%d.%d.%d" % tuple(v) if ln == 4 else v.hex()
        elif tag == 0x05:
            val = None
        elif tag in EXC:
            val = EXC[tag]
        else:  # Opaque, BIT STRING, unknown application types: raw bytes
            val = mv[p:vb_end]
        p = vb_end
        append((oid, val))
    return out


def decode_trap_v1(mv: bytes, p: int) -> tuple[str, str, int, int, int, list[tuple[bytes, Any]]]:
    """SNMPv1 Trap-PDU (tag 0xA4, RFC 1157) at ``mv[p:]`` -> (enterprise, agent_addr, generic_trap,
    specific_trap, time_stamp, varbinds). Raises BERError/IndexError/ValueError."""
    _, p, _ = hdr(mv, p, 0xA4)
    _, p, ln = hdr(mv, p, 0x06)
    enterprise = decode_oid(mv[p:p + ln])
    p += ln
    _, p, ln = hdr(mv, p, 0x40)
    a = mv[p:p + ln]
    agent = "%d.%d.%d.%d" % tuple(a) if ln == 4 else bytes(a).hex()
    p += ln
    _, p, ln = hdr(mv, p, 0x02)
    generic = int.from_bytes(mv[p:p + ln], "big", signed=True)
    p += ln
    _, p, ln = hdr(mv, p, 0x02)
    specific = int.from_bytes(mv[p:p + ln], "big", signed=True)
    p += ln
    _, p, ln = hdr(mv, p, 0x43)
    stamp = int.from_bytes(mv[p:p + ln], "big")
    p += ln
    _, p, ln = hdr(mv, p, 0x30)
    return enterprise, agent, generic, specific, stamp, decode_varbinds(mv, p, p + ln)


# ------------------------------------------------------------------------------- transport

class _Proto(asyncio.DatagramProtocol):
    def __init__(self, owner: "FastV2cSession"):
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner._on_datagram(data)

    def error_received(self, exc: Exception) -> None:
        self.owner._on_error(exc)


_ERROR_STATUS = {1: "tooBig", 2: "noSuchName", 3: "badValue", 4: "readOnly", 5: "genErr",
                 6: "noAccess", 16: "authorizationError"}


class _TooBig(Exception):
    pass


class FastV2cSession:
    """SNMPv2c session over one connected UDP socket. Requests from several tasks on the
    same session are serialised (one in flight at a time); use one session per device."""

    GET_CHUNK = 32
    #: cap on varbinds asked per GETBULK (columns x repetitions). Keeps responses near one
    #: Ethernet-MTU-ish size on real devices and avoids a Debian snmpsim 0.4.5 bug (a float
    #: repetition count loops forever when 64 is not a multiple of the column count).
    MAX_VARBINDS = 64

    def __init__(self, host: str, port: int = 161, community: str | bytes | None = None,
                 timeout: float = 2.0, retries: int = 1, **_ignored: Any):
        if community is None or community == "":
            raise DeviceError("config", "SNMPv2c needs a community")
        self.host = host
        self.port = int(port)
        self.community = community.encode() if isinstance(community, str) else bytes(community)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self._transport: asyncio.DatagramTransport | None = None
        self._waiter: asyncio.Future | None = None
        self._want_id: int | None = None
        self._ids = itertools.count(random.randint(1, 1 << 30))
        self.malformed = 0
        self.requests = 0
        self.varbinds = 0
        self.walk_errors: dict[str, str] = {}
        self._lock: asyncio.Lock | None = None
        #: varbinds per GETBULK that last fitted after a tooBig; later walks start from it
        self.max_varbinds_learned: int | None = None

    @classmethod
    def from_target(cls, target: Any) -> "FastV2cSession":
        """Build from a ``drivers.snmp.client.SnmpTarget`` (v2c only)."""
        if str(getattr(target, "version", "2c")) not in ("2c", "2", "v2c"):
            raise DeviceError("config", "FastV2cSession is SNMPv2c only; use SnmpSession for v3")
        return cls(target.host, target.port, target.community, target.timeout, target.retries)

    async def _ensure(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            return
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
        except socket.gaierror as e:
            raise DeviceError("unreachable", f"cannot resolve {self.host}: {e.strerror}") from None
        family, _, _, _, addr = infos[0]
        self._transport, _ = await loop.create_datagram_endpoint(lambda: _Proto(self), remote_addr=addr[:2],
                                                                 family=family)

    def _on_datagram(self, data: bytes) -> None:
        w = self._waiter
        if w is None or w.done():
            return
        try:
            rid, st, idx, vbs = decode_response(data)
        except BERError:
            self.malformed += 1
            return
        if rid != self._want_id:
            return  # late answer to an earlier (retried) request
        w.set_result((st, idx, vbs))

    def _on_error(self, exc: Exception) -> None:
        w = self._waiter
        if w is not None and not w.done():
            if isinstance(exc, ConnectionRefusedError):
                msg = f"{self.host}:{self.port}: port closed (ICMP port unreachable: no SNMP agent listening)"
            else:
                msg = f"{self.host}:{self.port}: {exc}"
            w.set_exception(DeviceError("unreachable", msg))

    async def _request(self, kind: str, oids: list[bytes], max_repetitions: int = 0) -> list[tuple[bytes, Any]]:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            return await self._request_locked(kind, oids, max_repetitions)

    async def _request_locked(self, kind: str, oids: list[bytes], max_repetitions: int) -> list[tuple[bytes, Any]]:
        await self._ensure()
        loop = asyncio.get_running_loop()
        for attempt in range(self.retries + 1):
            rid = next(self._ids) & 0x7FFFFFFF
            msg = encode_request(kind, self.community, rid, oids, 0, max_repetitions)
            self._want_id = rid
            self._waiter = loop.create_future()
            self.requests += 1
            self._transport.sendto(msg)
            try:
                async with asyncio.timeout(self.timeout):   # not wait_for: 3.11 can swallow a cancel
                    st, idx, vbs = await self._waiter
            except asyncio.TimeoutError:
                continue
            finally:
                self._waiter = None
            if st == 1:
                raise _TooBig()
            if st:
                name = _ERROR_STATUS.get(st, str(st))
                where = ""
                if 0 < idx <= len(oids):
                    where = f" at {decode_oid(oids[idx - 1])}"
                raise DeviceError("protocol", f"{self.host}: agent returned {name}{where}")
            self.varbinds += len(vbs)
            return vbs
        raise DeviceError("timeout", f"no response (timeout or wrong community) after "
                                     f"{self.retries + 1} x {self.timeout:g}s")  # same text as client.py

    async def get(self, oids: list[str]) -> dict[str, Any]:
        """GET; noSuchObject/noSuchInstance are left out of the result."""
        out: dict[str, Any] = {}
        enc = [encode_oid(o) for o in oids]
        for i in range(0, len(enc), self.GET_CHUNK):
            await self._get_chunk(enc[i:i + self.GET_CHUNK], out)
        return out

    async def _get_chunk(self, chunk: list[bytes], out: dict[str, Any]) -> None:
        try:
            vbs = await self._request("get", chunk)
        except _TooBig:
            if len(chunk) == 1:
                raise DeviceError("protocol", f"{decode_oid(chunk[0])} alone is too big: the response (tooBig), "
                                              "or for v3 the request, exceeds the agent's message size") from None
            h = len(chunk) // 2
            await self._get_chunk(chunk[:h], out)
            await self._get_chunk(chunk[h:], out)
            return
        for oid, val in vbs:
            if val.__class__ is _Exc:
                continue
            out[decode_oid(oid)] = val

    async def walk(self, columns: list[str], max_repetitions: int = 25) -> dict[str, dict[str, Any]]:
        """Walk several columns at once with GETBULK; see module doc for stop rules."""
        cols: list[str] = []
        for c in columns:
            c = c.strip().lstrip(".")
            if c not in cols:
                cols.append(c)
        enc = {c: encode_oid(c) for c in cols}
        result: dict[str, dict[str, Any]] = {c: {} for c in cols}
        current: dict[str, bytes] = dict(enc)           # last OID (content bytes) per column
        last_t: dict[str, tuple[int, ...]] = {c: () for c in cols}
        active = list(cols)
        reps = max(1, int(max_repetitions))
        self.walk_errors = {}
        while active:
            cap = self.MAX_VARBINDS if self.max_varbinds_learned is None else self.max_varbinds_learned
            r = max(1, min(reps, cap // len(active)))
            try:
                vbs = await self._request("bulk", [current[c] for c in active], r)
            except _TooBig:
                if r == 1:
                    raise DeviceError("protocol", "tooBig even with max-repetitions 1") from None
                reps = max(1, r // 2)
                self.max_varbinds_learned = max(1, reps * len(active))
                continue
            if not vbs:
                raise DeviceError("protocol", "empty GETBULK response")
            n = len(active)
            done: set[str] = set()
            progressed = False
            for i, (oid, val) in enumerate(vbs):
                col = active[i % n]
                if col in done:
                    continue
                prefix = enc[col]
                lp = len(prefix)
                if val.__class__ is _Exc or len(oid) <= lp or oid[:lp] != prefix:
                    done.add(col)
                    continue
                try:
                    t = _suffix_tuple(oid[lp:])
                except BERError:
                    done.add(col)
                    self.walk_errors[col] = "malformed OID in response"
                    continue
                if t <= last_t[col]:
                    done.add(col)
                    self.walk_errors[col] = (f"agent returned non-increasing OID {decode_oid(oid)}; "
                                             f"column stopped after {len(result[col])} rows")
                    continue
                last_t[col] = t
                current[col] = oid
                result[col][".".join(map(str, t))] = val
                progressed = True
            active = [c for c in active if c not in done]
            if active and not progressed and not done:
                raise DeviceError("protocol", "GETBULK response made no progress")
        return result

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
