"""snmp_trap: an SNMP notification receiver (v1, v2c, v3 USM; traps and INFORMs) as campus events.

A ``StreamingDriver``: one UDP socket on ``listen``; every datagram is decoded with the project's
hand-written BER/USM code (``drivers.snmp.fastv2c`` / ``fastv3``, receiver side in ``usm.py``),
authenticated (community, or USM user + HMAC + timeliness + decryption), rate-limited per source
address (token bucket) and mapped through the trap definitions of ``firmware_configs/traps``
(``defs.py``) to one ``Event``:

- ``type`` = the definition's event type (``link_down``, ``fan_fault``, ``rogue_ap``...), or
  ``snmp_trap`` for a notification no definition knows (kept with its OID and all varbinds);
- ``data`` = ``trap`` (name, e.g. ``linkDown``), ``trap_oid``, ``mib``, ``version`` (1, 2c, 3),
  ``source`` (sender address), the kept varbinds by name (``ifIndex``, ``ifName``, ``cause``...),
  ``uptime_s``; v1: ``agent_addr``, ``enterprise``; v3: ``engine_id``, ``user``;
- ``device`` = resolved from ``options.devices`` by v3 engine ID (``engine:<hex>``), v1
  agent-address or source address, else the source address itself.

INFORMs are answered (v2c: Response PDU; v3: Response with the security level they came with,
after engine-ID discovery via a usmStatsUnknownEngineIDs Report). Every ``sample_interval_s`` a
``Sample("snmp_trap")`` carries the counters (received, events, dropped by the rate limit,
malformed, auth failures...).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import socket
import time
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from campus_sense.secret import Secret, SecretError, SecretFields
from drivers.base import DeviceError, Event, Record, Sample, WarnBudget, parse_listen
from drivers.snmp.fastv2c import (NOTIFICATION_PDUS, BERError, _enc_int, _tlv, decode_oid, decode_trap_v1,
                                  decode_varbinds, encode_oid, hdr)
from drivers.snmp_trap import usm
from drivers.snmp_trap.defs import GENERIC_TRAPS, Catalog, apply, convert, load_catalog

log = logging.getLogger(__name__)

Severity = Literal["info", "warning", "critical"]
SYS_UPTIME = encode_oid("1.3.6.1.2.1.1.3.0")
TRAP_OID = encode_oid("1.3.6.1.6.3.1.1.4.1.0")
TRAP_ENTERPRISE = encode_oid("1.3.6.1.6.3.1.1.4.3.0")
MAX_UNKNOWN_VARBINDS = 32
#: a secret read from a file or variable is re-read at most this often (a trap storm must not
#: become a file-read storm); a rotated key or community is in effect within this time
SECRET_TTL_S = 1.0


#: examples in the error for a bad listen address
LISTEN_EXAMPLES = "0.0.0.0:162, [::]:162"


def _hex(v: str, what: str, lo: int = 5, hi: int = 32) -> bytes:
    s = str(v).strip().lower()
    if s.startswith("0x"):
        s = s[2:]
    s = s.replace(":", "").replace(" ", "")
    try:
        b = bytes.fromhex(s)
    except ValueError:
        raise ValueError(f"{what} {v!r} is not hex") from None
    if not lo <= len(b) <= hi:
        raise ValueError(f"{what} {v!r}: {len(b)} octets, must be {lo}..{hi} (RFC 3411 SnmpEngineID)")
    return b


class Community(SecretFields):
    """One accepted community (v1/v2c). A plain string in the list is the inline form."""
    model_config = ConfigDict(extra="forbid")
    community: Secret
    versions: list[Literal["1", "2c"]] = Field(default_factory=lambda: ["1", "2c"])


class V3User(SecretFields):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(min_length=1, max_length=32)
    auth_protocol: str | None = None
    auth_key: Secret | None = None
    priv_protocol: str | None = None
    priv_key: Secret | None = None
    #: accept traps only from these sender engine IDs (hex); default any engine
    engine_ids: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self):
        self.auth_protocol = usm.canon_auth(self.auth_protocol)
        self.priv_protocol = usm.canon_priv(self.priv_protocol)
        if self.priv_protocol and not self.auth_protocol:
            raise ValueError("priv_protocol needs auth_protocol (authPriv)")
        if bool(self.auth_protocol) != (self.auth_key is not None):
            raise ValueError("auth_protocol and auth_key (or auth_key_file / auth_key_env) go together")
        if bool(self.priv_protocol) != (self.priv_key is not None):
            raise ValueError("priv_protocol and priv_key (or priv_key_file / priv_key_env) go together")
        for s, n in ((self.auth_key, "auth_key"), (self.priv_key, "priv_key")):
            if s is not None and s._value is not None and len(s._value) < 8:
                raise ValueError(f"{n}: at least 8 characters (RFC 3414 11.2)")
        for e in self.engine_ids:
            _hex(e, "engine_ids:")
        return self


class RateLimit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    per_source_per_s: float = Field(200.0, gt=0)
    burst: float = Field(1000.0, ge=1)
    max_sources: int = Field(10000, ge=1)


class Options(SecretFields):
    """The ``options:`` block of a ``driver: snmp_trap`` device in agent.yaml."""
    model_config = ConfigDict(extra="forbid")
    listen: str = "0.0.0.0:162"
    communities: list[Community] = Field(default_factory=list)
    v3_users: list[V3User] = Field(default_factory=list)
    #: our snmpEngineID (hex, the authoritative engine for INFORMs); default: derived from the device id
    engine_id: str | None = None
    #: our snmpEngineBoots; default: the start time in seconds since 1970 (grows with every restart
    #: without a state file, as RFC 3414 2.2.2 wants)
    engine_boots: int | None = Field(None, ge=1, le=usm.MAX_INT - 1)
    #: sender -> campus device id: "10.0.0.1" (source or v1 agent-address) or "engine:8000...";
    #: a sender that is not listed becomes a device named by its address
    devices: dict[str, str] = Field(default_factory=dict)
    #: definition files/directories; default the shipped firmware_configs/traps
    definitions: list[str] = Field(default_factory=list)
    #: severity override by trap name (``linkDown: critical``)
    severity: dict[str, Severity] = Field(default_factory=dict)
    unknown_traps: Literal["event", "drop"] = "event"
    unknown_severity: Severity = "info"
    keep_unlisted_varbinds: bool = False
    #: v3 traps: reject messages from an earlier boot or > 150 s behind the newest seen (replays)
    time_window: bool = True
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    sample_interval_s: float = Field(60.0, gt=0)

    _catalog: Catalog | None = PrivateAttr(None)
    _engine: bytes = PrivateAttr(b"")
    _devices: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("communities", mode="before")
    @classmethod
    def _plain(cls, v):
        if isinstance(v, list):
            return [{"community": x} if isinstance(x, str) else x for x in v]
        return v

    @model_validator(mode="after")
    def _check(self):
        parse_listen(self.listen, "listen", LISTEN_EXAMPLES)
        if not self.communities and not self.v3_users:
            raise ValueError("set communities (v1/v2c) and/or v3_users: nothing would be accepted")
        names = [u.user for u in self.v3_users]
        if len(set(names)) != len(names):
            raise ValueError("v3_users: a user name is listed twice")
        if self.engine_id is not None:
            self._engine = _hex(self.engine_id, "engine_id")
        self._catalog = load_catalog(self.definitions or None)
        if bad := [n for n in self.severity if n not in self._catalog.by_name]:
            raise ValueError(f"severity: unknown trap names {bad}")
        for k, d in self.devices.items():
            key = k.strip().lower()
            if key.startswith("engine:"):
                key = "engine:" + _hex(key[7:], f"devices {k!r}:").hex()
            else:
                try:
                    key = str(ipaddress.ip_address(key))
                except ValueError:
                    raise ValueError(f"devices: key {k!r} is neither an IP address nor engine:<hex>") from None
            if not d:
                raise ValueError(f"devices: {k!r} maps to an empty device id")
            self._devices[key] = d
        return self


def default_engine_id(device_id: str) -> bytes:
    """RFC 3411 format 5 (octets): enterprise 8072 (net-snmp) with the high bit, then a hash of the id."""
    return bytes.fromhex("80001f8805") + hashlib.sha256(("campus-sense:" + device_id).encode()).digest()[:12]


class _Cached:
    """A secret's value, re-read at most every SECRET_TTL_S."""
    __slots__ = ("secret", "value", "at")

    def __init__(self, secret: Secret):
        self.secret, self.value, self.at = secret, None, -1e9

    def get(self) -> bytes | None:
        now = time.monotonic()
        if now - self.at >= SECRET_TTL_S:
            self.at = now
            try:
                self.value = self.secret.reveal().encode()
            except SecretError as e:
                log.error("snmp_trap: cannot read %s (%s): %s", self.secret.key, self.secret, e)
                self.value = None
        return self.value


class _User:
    __slots__ = ("name", "auth", "priv", "auth_pw", "priv_pw", "engines", "level", "keys")

    def __init__(self, u: V3User):
        self.name = u.user.encode()
        self.auth, self.priv = u.auth_protocol, u.priv_protocol
        self.auth_pw = _Cached(u.auth_key) if u.auth_key else None
        self.priv_pw = _Cached(u.priv_key) if u.priv_key else None
        self.engines = {_hex(e, "engine_ids") for e in u.engine_ids} or None
        self.level = (1 if self.auth else 0) | (2 if self.priv else 0)
        self.keys: dict[tuple, usm.UsmKeys] = {}

    def keys_for(self, engine: bytes) -> usm.UsmKeys | None:
        a = self.auth_pw.get() if self.auth_pw else b""
        p = self.priv_pw.get() if self.priv_pw else b""
        if a is None or p is None:
            return None
        k = (engine, a, p)
        ks = self.keys.get(k)
        if ks is None:
            if len(self.keys) > 1024:
                self.keys.clear()
            ks = self.keys[k] = usm.UsmKeys(self.auth, self.priv, a, p, engine)
        return ks


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, owner: "SnmpTrapDriver"):
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner.handle(data, addr)

    def error_received(self, exc: Exception) -> None:   # ICMP errors for our answers: nothing to do
        log.debug("snmp_trap: %s", exc)


COUNTERS = ("received_total", "events_total", "unknown_total", "dropped_rate_total", "malformed_total",
            "bad_community_total", "unsupported_total", "informs_total", "responses_total", "reports_total",
            "v3_unknown_user_total", "v3_unknown_engine_total", "v3_auth_failures_total",
            "v3_decrypt_failures_total", "v3_not_in_time_total", "v3_sec_level_total", "emit_errors_total")


class SnmpTrapDriver:
    name = "snmp_trap"

    def __init__(self, device_id: str, options: Options, tags: dict[str, str]):
        self.device_id, self.opts, self.tags = device_id, options, dict(tags or {})
        self.catalog: Catalog = options._catalog or load_catalog(options.definitions or None)
        self.engine_id = options._engine or default_engine_id(device_id)
        self.boots = options.engine_boots or min(int(time.time()), usm.MAX_INT - 1)
        self._t0 = time.monotonic()
        self._communities = [(_Cached(c.community), set(c.versions)) for c in options.communities]
        self._users = {u.user.encode(): _User(u) for u in options.v3_users}
        self._sev = dict(options.severity)
        self._devices = dict(options._devices)
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._buckets: dict[str, list[float]] = {}
        self._engines: dict[bytes, tuple[int, int, float]] = {}   # sender engine -> boots, time, at
        self._transport: asyncio.DatagramTransport | None = None
        self._emit: Callable[[Record], None] | None = None
        self._warn = WarnBudget(log, f"snmp_trap {device_id}")  # bounded log volume
        self.ready = asyncio.Event()
        self.port: int | None = None

    # ------------------------------------------------------------------ lifecycle
    async def run(self, emit: Callable[[Record], None]) -> None:
        self._emit = emit
        self.ready.clear()
        host, port = parse_listen(self.opts.listen, "listen", LISTEN_EXAMPLES)
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._transport, _ = await loop.create_datagram_endpoint(lambda: _Proto(self), local_addr=(host, port),
                                                                     family=family)
        except OSError as e:
            raise DeviceError("config", f"snmp_trap {self.device_id}: cannot listen on {self.opts.listen} "
                                        f"({e.strerror or e})") from None
        sock = self._transport.get_extra_info("socket")
        try:   # a trap storm should queue in the kernel, not be dropped there
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        except OSError:
            pass
        self.port = sock.getsockname()[1]
        log.info("snmp_trap %s: listening on %s:%d (%d definitions, engine %s)", self.device_id, host, self.port,
                 len(self.catalog), self.engine_id.hex())
        self.ready.set()
        try:
            while True:
                await asyncio.sleep(self.opts.sample_interval_s)
                self.emit_sample()
        finally:
            await self.close()

    def emit_sample(self) -> None:
        if self._emit is not None:
            self._emit(Sample("snmp_trap", self.device_id, {**self.counters, "sources": len(self._buckets)},
                              dict(self.tags)))

    async def close(self) -> None:
        tr, self._transport = self._transport, None
        if tr is not None:
            tr.close()

    def engine_time(self) -> int:
        return min(usm.MAX_INT, int(time.monotonic() - self._t0))

    # ------------------------------------------------------------------ helpers
    def _allow(self, src: str) -> bool:
        """Token bucket per source address."""
        rl = self.opts.rate_limit
        now = time.monotonic()
        b = self._buckets.get(src)
        if b is None:
            if len(self._buckets) >= rl.max_sources:   # forget the idlest half (spoofed-source floods)
                for k, _ in sorted(self._buckets.items(), key=lambda kv: kv[1][1])[:len(self._buckets) // 2]:
                    del self._buckets[k]
            b = self._buckets[src] = [rl.burst, now]
        else:
            b[0] = min(rl.burst, b[0] + (now - b[1]) * rl.per_source_per_s)
            b[1] = now
        if b[0] >= 1.0:
            b[0] -= 1.0
            return True
        return False

    def _send(self, data: bytes, addr: Any) -> None:
        if self._transport is not None:
            self._transport.sendto(data, addr)

    # ------------------------------------------------------------------ datagrams
    def handle(self, data: bytes, addr: Any, now_ms: int | None = None) -> Event | None:
        """One datagram from ``addr``: decode, authenticate, answer INFORMs, emit the event."""
        c = self.counters
        c["received_total"] += 1
        src = addr[0]
        if not self._allow(src):
            c["dropped_rate_total"] += 1
            return None
        try:
            _, p, _ = hdr(data, 0, 0x30)
            _, p, ln = hdr(data, p, 0x02)
            version = int.from_bytes(data[p:p + ln], "big", signed=True)
            if version == 3:
                return self._v3(data, addr, now_ms)
            if version not in (0, 1):
                c["unsupported_total"] += 1
                return None
            p += ln
            _, p, ln = hdr(data, p, 0x04)
            community = data[p:p + ln]
            p += ln
            if not self._community_ok(community, "1" if version == 0 else "2c"):
                c["bad_community_total"] += 1
                self._warn("wrong community from %s (v%s)", src, "1" if version == 0 else "2c")
                return None
            if version == 0:
                if data[p] != 0xA4:
                    c["unsupported_total"] += 1
                    return None
                ent, agent, generic, specific, stamp, vbs = decode_trap_v1(data, p)
                if 0 <= generic < 6:
                    trap_oid = GENERIC_TRAPS[generic]
                else:   # RFC 3584 3.1: enterprise.0.specific; a v2 notification defined right under
                    trap_oid = f"{ent}.0.{specific}"    # the enterprise (no .0) comes back as enterprise.specific
                    if trap_oid not in self.catalog.by_oid and f"{ent}.{specific}" in self.catalog.by_oid:
                        trap_oid = f"{ent}.{specific}"
                extra = {"enterprise": ent, "agent_addr": agent}
                return self._event(trap_oid, vbs, stamp, "1", src, agent, None, extra, now_ms)
            tag, rid, vbl, vbs = self._pdu(data, p)
            if tag == 0xA6:
                c["informs_total"] += 1
                pdu = _tlv(0xA2, _enc_int(rid) + b"\x02\x01\x00\x02\x01\x00" + vbl)
                self._send(_tlv(0x30, b"\x02\x01\x01" + _tlv(0x04, community) + pdu), addr)
                c["responses_total"] += 1
            return self._v2(vbs, "2c", src, None, {}, now_ms)
        except (BERError, IndexError, ValueError, TypeError) as e:
            c["malformed_total"] += 1
            self._warn("malformed datagram from %s (%d bytes): %s", src, len(data), e)
            return None

    def _community_ok(self, community: bytes, version: str) -> bool:
        ok = False
        for cached, versions in self._communities:
            v = cached.get()
            if v is not None and version in versions and hmac.compare_digest(v, community):
                ok = True
        return ok

    @staticmethod
    def _pdu(mv: bytes, p: int) -> tuple[int, int, bytes, list]:
        """(tag, request-id, raw VarBindList TLV, varbinds) of a notification PDU at ``p``."""
        tag, p, _ = hdr(mv, p)
        if tag not in NOTIFICATION_PDUS:
            raise BERError(f"not a notification PDU (tag 0x{tag:02x})")
        _, p, ln = hdr(mv, p, 0x02)
        rid = int.from_bytes(mv[p:p + ln], "big", signed=True)
        p += ln
        for _ in range(2):                               # error-status, error-index (unused)
            _, p, ln = hdr(mv, p, 0x02)
            p += ln
        start = p
        _, p, ln = hdr(mv, p, 0x30)
        return tag, rid, bytes(mv[start:p + ln]), decode_varbinds(mv, p, p + ln)

    def _v2(self, vbs: list, version: str, src: str, engine: bytes | None, extra: dict,
            now_ms: int | None) -> Event | None:
        """SNMPv2 notification varbinds: sysUpTime.0, snmpTrapOID.0, then the objects."""
        if len(vbs) < 2 or vbs[0][0] != SYS_UPTIME or vbs[1][0] != TRAP_OID or not isinstance(vbs[1][1], str):
            raise BERError("notification without sysUpTime.0 and snmpTrapOID.0 first (RFC 3416 4.2.6)")
        return self._event(vbs[1][1], vbs[2:], vbs[0][1], version, src, None, engine, extra, now_ms)

    def _device(self, src: str, agent: str | None, engine: bytes | None) -> str:
        d = self._devices
        if d:
            if engine is not None:
                hit = d.get("engine:" + engine.hex())
                if hit:
                    return hit
            if agent and agent != "0.0.0.0":
                hit = d.get(agent)
                if hit:
                    return hit
            hit = d.get(src)
            if hit:
                return hit
        return src

    def _event(self, trap_oid: str, vbs: list, uptime: Any, version: str, src: str, agent: str | None,
               engine: bytes | None, extra: dict, now_ms: int | None) -> Event | None:
        c = self.counters
        d = self.catalog.by_oid.get(trap_oid)
        data: dict[str, Any] = {"trap_oid": trap_oid, "version": version, "source": src}
        if isinstance(uptime, int):
            data["uptime_s"] = uptime / 100
        data.update(extra)
        tags = dict(self.tags)
        if d is None:
            c["unknown_total"] += 1
            if self.opts.unknown_traps == "drop":
                return None
            typ, sev = "snmp_trap", self.opts.unknown_severity
            if vbs and vbs[-1][0] == TRAP_ENTERPRISE:
                vbs = vbs[:-1]
            data["trap"] = trap_oid
            data["varbinds"] = {decode_oid(o): convert(v) for o, v in vbs[:MAX_UNKNOWN_VARBINDS]}
        else:
            fields, unlisted = apply(d, vbs, self.opts.keep_unlisted_varbinds)
            typ, sev = d.event, self._sev.get(d.name, d.severity)
            for conds, ev, sv in d.cases:
                if all((fields.get(k) in v) if isinstance(v, list) else fields.get(k) == v for k, v in conds):
                    typ = ev or typ
                    if sv and d.name not in self._sev:
                        sev = sv
                    break
            data["trap"] = d.name
            data["mib"] = d.mib
            for k, v in fields.items():
                data.setdefault(k, v)
            if unlisted:
                data["varbinds"] = unlisted
            for k in d.tags:
                v = fields.get(k)
                if v is not None:
                    tags[k] = str(v)[:128]
        tags["trap"] = data["trap"][:128]
        ev = Event(self._device(src, agent, engine), typ, sev, data, tags,
                   now_ms if now_ms is not None else int(time.time() * 1000))
        c["events_total"] += 1
        if self._emit is not None:
            try:
                self._emit(ev)
            except Exception:
                c["emit_errors_total"] += 1
                log.exception("snmp_trap %s: emit failed", self.device_id)
        return ev

    # ------------------------------------------------------------------ SNMPv3
    def _report(self, addr: Any, h: usm.V3Header, stat: str, rid: int = 0, level: int = 0,
                keys: usm.UsmKeys | None = None, user: bytes = b"", ctx_name: bytes = b"") -> None:
        """A Report PDU (RFC 3412 7.1.3.c) with our engine, if the message asked for one."""
        if not h.flags & 4:
            return
        self.counters["reports_total"] += 1
        vb = _tlv(0x30, _tlv(0x06, encode_oid(usm.USM_STATS[stat])) + _tlv(0x41, (self.counters[
            _STAT_COUNTER[stat]] & 0xFFFFFFFF).to_bytes(4, "big")))
        pdu = _tlv(0xA8, _enc_int(rid) + b"\x02\x01\x00\x02\x01\x00" + _tlv(0x30, vb))
        self._send(usm.build_message(h.msg_id, level, self.engine_id, self.boots, self.engine_time(), user,
                                     self.engine_id, ctx_name, pdu, keys), addr)

    def _v3(self, data: bytes, addr: Any, now_ms: int | None) -> Event | None:
        c = self.counters
        src = addr[0]
        h = usm.parse_header(data)
        ours = h.engine == self.engine_id
        if not ours and (h.flags & 4 or not h.engine):
            # a confirmed-class PDU (INFORM, or a discovery probe) must use our engine ID: tell the
            # sender which it is (RFC 3414 3.2.3 / 4); unconfirmed traps come with the sender's own
            c["v3_unknown_engine_total"] += 1
            rid = 0
            if h.data_tag == 0x30 and not h.flags & 2:
                try:
                    rid = _scoped_rid(data, h.data_at)
                except (BERError, IndexError, ValueError):
                    rid = 0
            self._report(addr, h, "unknown_engine_id", rid)
            return None
        u = self._users.get(h.user)
        if u is None:
            c["v3_unknown_user_total"] += 1
            self._warn("SNMPv3 message from %s for unknown user %r", src, h.user[:32])
            self._report(addr, h, "unknown_user")
            return None
        level = h.flags & 3
        if level != u.level:
            c["v3_sec_level_total"] += 1
            self._warn("SNMPv3 message from %s user %r: security level %s, configured %s", src, u.name.decode(),
                       _LEVELS.get(level, level), _LEVELS.get(u.level, u.level))
            self._report(addr, h, "unsupported_sec_level")
            return None
        if not ours and u.engines is not None and h.engine not in u.engines:
            c["v3_unknown_engine_total"] += 1
            self._warn("SNMPv3 trap from %s: engine %s not in engine_ids of user %r", src, h.engine.hex(),
                       u.name.decode())
            return None
        engine = self.engine_id if ours else h.engine
        keys = u.keys_for(engine)
        if keys is None:
            c["v3_auth_failures_total"] += 1
            return None
        if level & 1:
            if not usm.verify(data, h, keys):
                c["v3_auth_failures_total"] += 1
                self._warn("SNMPv3 message from %s user %r: wrong digest (auth key or protocol)", src,
                           u.name.decode())
                self._report(addr, h, "wrong_digest")
                return None
            if not self._timely(h, ours):
                c["v3_not_in_time_total"] += 1
                self._warn("SNMPv3 message from %s user %r outside the time window (boots %d time %d)", src,
                           u.name.decode(), h.boots, h.time)
                if ours:
                    self._report(addr, h, "not_in_time_window", 0, 1, keys, h.user)
                return None
        if level & 2:
            scoped = usm.decrypt(data, h, keys)
            try:
                _, q, _ = hdr(scoped, 0, 0x30) if scoped is not None else (0, 0, 0)
            except (BERError, IndexError):
                scoped = None
            if scoped is None:
                c["v3_decrypt_failures_total"] += 1
                self._report(addr, h, "decryption_error")
                return None
        else:
            if h.data_tag != 0x30:
                raise BERError("plaintext message with an encryptedPDU")
            scoped, q = data, h.data_at
        _, q, ln = hdr(scoped, q, 0x04)
        ctx_engine = scoped[q:q + ln]
        _, q, ln2 = hdr(scoped, q + ln, 0x04)
        ctx_name = scoped[q:q + ln2]
        tag, rid, vbl, vbs = self._pdu(scoped, q + ln2)
        extra = {"engine_id": h.engine.hex() if not ours else bytes(ctx_engine).hex(), "user": u.name.decode()}
        if tag == 0xA6:
            c["informs_total"] += 1
            pdu = _tlv(0xA2, _enc_int(rid) + b"\x02\x01\x00\x02\x01\x00" + vbl)
            self._send(usm.build_message(h.msg_id, level, self.engine_id, self.boots, self.engine_time(), h.user,
                                         bytes(ctx_engine), bytes(ctx_name), pdu, keys), addr)
            c["responses_total"] += 1
        # the notification originator: the message's engine for traps, the context engine for INFORMs
        return self._v2(vbs, "3", src, bytes(ctx_engine) if ours else bytes(h.engine), extra, now_ms)

    def _timely(self, h: usm.V3Header, ours: bool) -> bool:
        """RFC 3414 3.2.7: our engine (INFORMs): same boots, time within 150 s; a sender's engine
        (traps): not an earlier boot nor more than 150 s behind its newest authenticated time."""
        if ours:
            return h.boots == self.boots and abs(h.time - self.engine_time()) <= 150
        if not self.opts.time_window:
            return True
        now = time.monotonic()
        known = self._engines.get(h.engine)
        if h.boots == usm.MAX_INT:
            return False
        if known is not None:
            kb, kt, at = known
            expected = kt + int(now - at)
            if h.boots < kb or (h.boots == kb and h.time < expected - 150):
                return False
            if h.boots == kb and h.time <= expected:
                return True
        if len(self._engines) >= 10000:
            self._engines.clear()
        self._engines[bytes(h.engine)] = (h.boots, h.time, now)
        return True


def _scoped_rid(data: bytes, q: int) -> int:
    """request-id of the PDU in a plaintext ScopedPDU whose content starts at ``q``."""
    _, q, ln = hdr(data, q, 0x04)
    _, q, ln2 = hdr(data, q + ln, 0x04)
    _, q, _ = hdr(data, q + ln2)
    _, q, ln = hdr(data, q, 0x02)
    return int.from_bytes(data[q:q + ln], "big", signed=True)


_LEVELS = {0: "noAuthNoPriv", 1: "authNoPriv", 3: "authPriv"}
_STAT_COUNTER = {"unsupported_sec_level": "v3_sec_level_total", "not_in_time_window": "v3_not_in_time_total",
                 "unknown_user": "v3_unknown_user_total", "unknown_engine_id": "v3_unknown_engine_total",
                 "wrong_digest": "v3_auth_failures_total", "decryption_error": "v3_decrypt_failures_total"}


def create(device_id: str, options: Options, tags: dict[str, str] | None = None) -> SnmpTrapDriver:
    if isinstance(options, dict):
        options = Options.model_validate(options)
    return SnmpTrapDriver(device_id, options, tags or {})
