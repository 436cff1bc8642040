"""syslog: a syslog receiver (UDP, TCP, TLS per RFC 5425) turning lines into archive records and events.

A ``StreamingDriver``. Listeners (any of them): ``listen_udp`` (one message per datagram, or one per
line), ``listen_tcp`` (RFC 6587: octet counting ``LEN SP MSG`` or newline framing, detected per
frame) and ``listen_tls`` (RFC 5425 over TLS, ``ssl`` module, certificate and key files, optional
client certificates). Every line is parsed (``parse.py``: RFC 5424, RFC 3164, Cisco IOS/NX-OS,
Ruijie, Huawei VRP, H3C Comware, Aruba, Linux) and

- archived: an ``Event(type="syslog", data={"archive": true, facility, severity, host, program,
  pid, mnemonic, vendor, msg, ...})`` that the collector stores in its own syslog table (not in
  ``/events``), searchable through ``GET /api/v1/syslog`` and kept ``retention.syslog_days``;
- if an event rule matches (``rules.py``; shipped ``firmware_configs/syslog/events.yaml`` plus
  ``options.events``), also a campus event (``link_down``, ``login_failure``, ``loop_detected``...)
  with the parsed fields and the rule's extracted fields (``ifName``, ``user``, ``src_ip``...).

Per-source token bucket (drops counted); ``Sample("syslog")`` counters every ``sample_interval_s``.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from drivers.base import DeviceError, Event, Record, Sample, WarnBudget, parse_listen
from drivers.syslog.parse import EVENT_SEVERITY, FACILITIES, SEVERITIES, SEVERITY_CODES, Parsed, decode, parse
from drivers.syslog.rules import EventRule, RuleSet, load_rules

log = logging.getLogger(__name__)


#: examples in the error for a bad listen address
LISTEN_EXAMPLES = "0.0.0.0:514, [::]:6514"


class TLSOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cert_file: Path
    key_file: Path
    #: CA bundle for client certificates; with ``require_client_cert`` only senders holding a
    #: certificate signed by it can connect (RFC 5425 5.2 mutual authentication)
    ca_file: Path | None = None
    require_client_cert: bool = False
    min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"

    @model_validator(mode="after")
    def _check(self):
        if self.require_client_cert and self.ca_file is None:
            raise ValueError("require_client_cert needs ca_file")
        self.context()           # unreadable or mismatched files fail at load, naming the file
        return self

    def context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if self.min_version == "TLSv1.3" else ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        except FileNotFoundError as e:
            raise ValueError(f"cannot read {e.filename or self.cert_file}: file does not exist") from None
        except (ssl.SSLError, OSError) as e:
            raise ValueError(f"cert_file/key_file {self.cert_file} / {self.key_file}: {e}") from None
        if self.ca_file is not None:
            try:
                ctx.load_verify_locations(str(self.ca_file))
            except (ssl.SSLError, OSError) as e:
                raise ValueError(f"ca_file {self.ca_file}: {e}") from None
            ctx.verify_mode = ssl.CERT_REQUIRED if self.require_client_cert else ssl.CERT_OPTIONAL
        return ctx


class RateLimit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    per_source_per_s: float = Field(2000.0, gt=0)
    burst: float = Field(10000.0, ge=1)
    max_sources: int = Field(10000, ge=1)


class Options(BaseModel):
    """The ``options:`` block of a ``driver: syslog`` device in agent.yaml."""
    model_config = ConfigDict(extra="forbid")
    listen_udp: str | None = None
    listen_tcp: str | None = None
    listen_tls: str | None = None
    tls: TLSOptions | None = None
    #: sender -> campus device id: source address or syslog hostname; else the source address
    devices: dict[str, str] = Field(default_factory=dict)
    #: event rules tried before the rule files'
    events: list[EventRule] = Field(default_factory=list)
    #: rule files; default the shipped firmware_configs/syslog/events.yaml ([] = inline rules only)
    event_rules: list[str] | None = None
    #: archive every line (the law's six months); false: only events
    archive: bool = True
    #: archive only lines with a syslog severity at most this (debug = everything)
    archive_max_severity: int | str = "debug"
    max_message_bytes: int = Field(8192, ge=480, le=1 << 20)
    max_connections: int = Field(256, ge=1)
    idle_timeout_s: float = Field(600.0, gt=0)
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    sample_interval_s: float = Field(60.0, gt=0)

    _rules: RuleSet | None = PrivateAttr(None)
    _archive_max: int = PrivateAttr(7)

    @model_validator(mode="after")
    def _check(self):
        if not (self.listen_udp or self.listen_tcp or self.listen_tls):
            raise ValueError("set listen_udp, listen_tcp and/or listen_tls")
        for k in ("listen_udp", "listen_tcp", "listen_tls"):
            parse_listen(getattr(self, k), k, LISTEN_EXAMPLES)
        if self.listen_tls and self.tls is None:
            raise ValueError("listen_tls needs tls: {cert_file, key_file}")
        v = self.archive_max_severity
        if isinstance(v, str):
            if v.lower() not in SEVERITY_CODES:
                raise ValueError(f"archive_max_severity: unknown syslog severity {v!r}")
            v = SEVERITY_CODES[v.lower()]
        if not 0 <= v <= 7:
            raise ValueError("archive_max_severity: 0..7")
        self._archive_max = v
        self._rules = load_rules(self.event_rules, self.events)
        return self


COUNTERS = ("received_total", "archived_total", "events_total", "dropped_rate_total", "malformed_total",
            "oversize_total", "connections_total", "rejected_connections_total",
            "emit_errors_total")


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: "SyslogDriver"):
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner.datagram(data, addr[0])


class _Stream(asyncio.Protocol):
    """One TCP/TLS connection: RFC 6587 framing decided per frame (a leading digit = octet
    counting ``LEN SP MSG``, else a line up to LF), parsed from whole buffers (no await per line)."""

    __slots__ = ("owner", "kind", "buf", "src", "transport", "last")

    def __init__(self, owner: "SyslogDriver", kind: str):
        self.owner, self.kind = owner, kind
        self.buf = b""
        self.src = "?"
        self.transport: asyncio.Transport | None = None
        self.last = time.monotonic()

    def connection_made(self, transport) -> None:
        o = self.owner
        peer = transport.get_extra_info("peername")
        self.src = peer[0] if isinstance(peer, tuple) else str(peer)
        if len(o._open) >= o.opts.max_connections:
            o.counters["rejected_connections_total"] += 1
            o._warn("too many connections (%d): refused %s", o.opts.max_connections, self.src)
            transport.close()
            return
        self.transport = transport
        o._open.add(self)
        o.counters["connections_total"] += 1

    def connection_lost(self, exc) -> None:
        if self.buf.strip() and self.transport is not None:
            self.owner.line(self.buf, self.src)          # a last line without its LF
        self.buf = b""
        self.owner._open.discard(self)

    def _abort(self, why: str) -> None:
        self.owner._warn("%s from %s (%s); connection closed", why, self.src, self.kind)
        self.buf = b""
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        self.last = time.monotonic()
        o = self.owner
        limit = o.opts.max_message_bytes
        buf = self.buf + data if self.buf else data
        n = len(buf)
        p = 0
        line = o.line
        src = self.src
        while p < n:
            c = buf[p]
            if 48 <= c <= 57:                                   # octet counting
                sp = buf.find(b" ", p, p + 12)
                if sp < 0:
                    if n - p >= 12:
                        o.counters["malformed_total"] += 1
                        return self._abort("bad octet count")
                    break
                try:
                    ln = int(buf[p:sp])
                except ValueError:
                    o.counters["malformed_total"] += 1
                    return self._abort("bad octet count")
                if ln > 1 << 20:
                    o.counters["oversize_total"] += 1
                    return self._abort(f"frame of {ln} bytes")
                if sp + 1 + ln > n:
                    break
                body = buf[sp + 1:sp + 1 + ln]
                p = sp + 1 + ln
                if ln > limit:
                    o.counters["oversize_total"] += 1
                    body = body[:limit]
            else:                                               # non-transparent framing (LF)
                lf = buf.find(b"\n", p)
                if lf < 0:
                    if n - p > limit:
                        o.counters["oversize_total"] += 1
                        return self._abort(f"line longer than {limit} bytes")
                    break
                body = buf[p:lf]
                p = lf + 1
            if body.strip():
                line(body, src)
        self.buf = buf[p:] if p < n else b""


class SyslogDriver:
    name = "syslog"

    def __init__(self, device_id: str, options: Options, tags: dict[str, str]):
        self.device_id, self.opts, self.tags = device_id, options, dict(tags or {})
        self.rules: RuleSet = options._rules or load_rules(options.event_rules, options.events)
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._archive, self._archive_max = options.archive, options._archive_max
        self._devices = {k.strip(): v for k, v in options.devices.items()}
        self._buckets: dict[str, list[float]] = {}
        self._emit: Callable[[Record], None] | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._servers: list[asyncio.base_events.Server] = []
        self._open: set[_Stream] = set()
        self._warn = WarnBudget(log, f"syslog {device_id}")  # bounded log volume
        self.ready = asyncio.Event()
        self.ports: dict[str, int] = {}

    # ------------------------------------------------------------------ lifecycle
    async def run(self, emit: Callable[[Record], None]) -> None:
        self._emit = emit
        self.ready.clear()
        o = self.opts
        loop = asyncio.get_running_loop()
        try:
            if o.listen_udp:
                host, port = parse_listen(o.listen_udp, "listen_udp", LISTEN_EXAMPLES)
                self._udp, _ = await loop.create_datagram_endpoint(
                    lambda: _Udp(self), local_addr=(host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
                sock = self._udp.get_extra_info("socket")
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
                except OSError:
                    pass
                self.ports["udp"] = sock.getsockname()[1]
            for kind, spec, ctx in (("tcp", o.listen_tcp, None),
                                    ("tls", o.listen_tls, o.tls.context() if o.listen_tls and o.tls else None)):
                if not spec:
                    continue
                host, port = parse_listen(spec, f"listen_{kind}", LISTEN_EXAMPLES)
                srv = await loop.create_server(lambda k=kind: _Stream(self, k), host, port, ssl=ctx,
                                               reuse_address=True, ssl_handshake_timeout=10 if ctx else None)
                self._servers.append(srv)
                self.ports[kind] = srv.sockets[0].getsockname()[1]
        except OSError as e:
            await self.close()
            raise DeviceError("config", f"syslog {self.device_id}: cannot listen ({e.strerror or e})") from None
        except ValueError as e:
            await self.close()
            raise DeviceError("config", f"syslog {self.device_id}: {e}") from None
        log.info("syslog %s: listening %s (%d event rules)", self.device_id,
                 ", ".join(f"{k}:{v}" for k, v in self.ports.items()), len(self.rules))
        self.ready.set()
        try:
            next_sample = time.monotonic() + o.sample_interval_s
            while True:
                await asyncio.sleep(min(o.sample_interval_s, 5.0))
                now = time.monotonic()
                for st in list(self._open):                     # idle connections
                    if now - st.last > o.idle_timeout_s and st.transport is not None:
                        st._abort("idle")
                if now >= next_sample:
                    next_sample = now + o.sample_interval_s
                    self.emit_sample()
        finally:
            await self.close()

    def emit_sample(self) -> None:
        if self._emit is not None:
            self._emit(Sample("syslog", self.device_id, {**self.counters, "connections": len(self._open),
                                                         "sources": len(self._buckets)}, dict(self.tags)))

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        srvs, self._servers = self._servers, []
        for s in srvs:
            s.close()
        for st in list(self._open):
            if st.transport is not None:
                st.transport.close()
        for s in srvs:
            try:
                async with asyncio.timeout(2):
                    await s.wait_closed()
            except (TimeoutError, OSError):
                pass

    # ------------------------------------------------------------------ helpers
    def _allow(self, src: str) -> bool:
        rl = self.opts.rate_limit
        now = time.monotonic()
        b = self._buckets.get(src)
        if b is None:
            if len(self._buckets) >= rl.max_sources:
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

    # ------------------------------------------------------------------ input
    def datagram(self, data: bytes, src: str) -> None:
        """One UDP datagram: one message, or several when a relay packed them one per line."""
        if len(data) > self.opts.max_message_bytes:
            self.counters["oversize_total"] += 1
            data = data[:self.opts.max_message_bytes]
        if b"\n<" in data:
            for part in data.split(b"\n"):
                if part.strip():
                    self.line(part, src)
        else:
            self.line(data, src)

    # ------------------------------------------------------------------ lines -> records
    def _device(self, src: str, host: str | None) -> str:
        d = self._devices
        if d:
            hit = d.get(src) or (d.get(host) if host else None)
            if hit:
                return hit
        return src

    def line(self, raw: bytes | str, src: str, now_ms: int | None = None) -> tuple[Event | None, Event | None]:
        """One syslog message from ``src``: (archive record, event), each None when not made."""
        c = self.counters
        c["received_total"] += 1
        if not self._allow(src):
            c["dropped_rate_total"] += 1
            return None, None
        p: Parsed = parse(decode(raw) if isinstance(raw, (bytes, bytearray)) else raw)
        if not p.msg and p.mnemonic is None and p.program is None:
            c["malformed_total"] += 1
            return None, None
        t = now_ms if now_ms is not None else int(time.time() * 1000)
        host = p.host
        device = self._device(src, host)
        data: dict[str, Any] = {"facility": p.facility, "severity": p.severity, "source": src, "msg": p.msg}
        if host is not None:
            data["host"] = host
        if p.program is not None:
            data["program"] = p.program
            if p.pid is not None:
                data["pid"] = p.pid
        if p.mnemonic is not None:
            data["mnemonic"] = p.mnemonic
            data["vendor"] = p.vendor
        if p.version is not None:
            if p.msgid is not None:
                data["msgid"] = p.msgid
            if p.sd is not None:
                data["sd"] = p.sd
        if p.timestamp is not None:
            data["device_time"] = p.timestamp
        arch = ev = None
        emit = self._emit
        tags = self.tags
        if self._archive and p.severity <= self._archive_max:
            arch = Event(device, "syslog", EVENT_SEVERITY[p.severity], {"archive": True, **data}, tags, t)
            c["archived_total"] += 1
            if emit is not None:
                self._send(arch)
        hit = self.rules.match(p)
        if hit is not None:
            rule, fields = hit
            edata = {"rule": rule.name, "facility_name": FACILITIES[p.facility] if p.facility < 24 else p.facility,
                     "severity_name": SEVERITIES[p.severity], **data}
            for k, v in fields.items():
                edata.setdefault(k, v)
            etags = dict(tags)
            if p.mnemonic:
                etags["mnemonic"] = p.mnemonic[:128]
            for k in rule.tags:
                if k in fields:
                    etags[k] = str(fields[k])[:128]
            sev = EVENT_SEVERITY[p.severity] if rule.severity == "from_syslog" else rule.severity
            ev = Event(device, rule.type, sev, edata, etags, t)
            c["events_total"] += 1
            if emit is not None:
                self._send(ev)
        return arch, ev

    def _send(self, rec: Event) -> None:
        try:
            self._emit(rec)                    # type: ignore[misc]
        except Exception:
            self.counters["emit_errors_total"] += 1
            log.exception("syslog %s: emit failed", self.device_id)


def create(device_id: str, options: Options, tags: dict[str, str] | None = None) -> SyslogDriver:
    if isinstance(options, dict):
        options = Options.model_validate(options)
    return SyslogDriver(device_id, options, tags or {})
