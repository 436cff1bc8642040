"""Read-only probes for the audit driver. None of them changes anything on the device.

* :func:`snmp_get` — one SNMP v1 or v2c GET (never SET) over UDP, own tiny BER encoder,
  responses parsed by :func:`drivers.snmp.fastv2c.decode_response`.
* :func:`snmpv3_noauth_get` — one SNMPv3 GET at noAuthNoPriv as a given user (pysnmp), no key.
* :func:`decode_date_and_time` — SNMPv2-TC DateAndTime (8 or 11 octets) -> aware datetime.
* :func:`telnet_probe` — TCP connect, read the banner briefly, close (sends nothing).
* :func:`http_probe` — ``GET / HTTP/1.1`` (no body, ``Connection: close``), status + Location.
* :func:`tls_probe` — TLS handshake (no verification: devices use self-signed certificates),
  negotiated version, certificate subject / notAfter when readable. Sends no HTTP request.

Every probe returns a small result object; "closed / no answer" is a result, not an exception.
"""
from __future__ import annotations

import asyncio
import random
import socket
import ssl
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from drivers.snmp.fastv2c import BERError, decode_response, encode_oid

SYS_DESCR = "1.3.6.1.2.1.1.1.0"
HR_SYSTEM_DATE = "1.3.6.1.2.1.25.1.2.0"

# ------------------------------------------------------------------------------ SNMP


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(b),)) + b


def _tlv(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + _len(len(payload)) + payload


def _int(v: int) -> bytes:
    return _tlv(0x02, v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big", signed=True))


def encode_get(version: str, community: str, request_id: int, oid: str) -> bytes:
    """SNMP GetRequest; ``version`` "1" (msg version 0) or "2c" (1). Read-only by construction:
    the PDU tag is always GetRequest (0xA0)."""
    ver = {"1": 0, "2c": 1}[version]
    vb = _tlv(0x30, _tlv(0x06, encode_oid(oid)) + b"\x05\x00")
    pdu = _tlv(0xA0, _int(request_id) + _int(0) + _int(0) + _tlv(0x30, vb))
    return _tlv(0x30, _int(ver) + _tlv(0x04, community.encode()) + pdu)


@dataclass
class SnmpAnswer:
    answered: bool                  # a Response with our request id came back
    error_status: int = 0           # 0 noError, 2 noSuchName (v1), 16 authorizationError ...
    value: Any = None               # bytes / int / str, None when absent
    error: str | None = None        # why there is no answer (timeout, refused, malformed)

    @property
    def accepted(self) -> bool:
        """The agent processed the request with this community (authorizationError = refused)."""
        return self.answered and self.error_status not in (16,)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        self.queue.put_nowait(exc)


async def snmp_get(host: str, port: int, version: str, community: str, oid: str = SYS_DESCR, *,
                   timeout: float = 2.0, retries: int = 1) -> SnmpAnswer:
    loop = asyncio.get_running_loop()
    try:
        transport, proto = await loop.create_datagram_endpoint(_Udp, remote_addr=(host, port))
    except OSError as e:
        return SnmpAnswer(False, error=f"unreachable: {e.strerror or e}")
    try:
        for _attempt in range(retries + 1):
            rid = random.randint(1, 2**31 - 1)
            transport.sendto(encode_get(version, community, rid, oid))
            end = loop.time() + timeout
            while True:
                rem = end - loop.time()
                if rem <= 0:
                    break
                try:
                    async with asyncio.timeout(rem):
                        item = await proto.queue.get()
                except asyncio.TimeoutError:
                    break
                if isinstance(item, Exception):   # ICMP port unreachable on a connected socket
                    return SnmpAnswer(False, error=f"unreachable: {item}")
                try:
                    got_id, status, _idx, vbs = decode_response(item)
                except BERError:
                    continue
                if got_id != rid:
                    continue
                value = None
                for _oid, v in vbs:
                    if isinstance(v, (bytes, int, str)):
                        value = v
                return SnmpAnswer(True, status, value)
        return SnmpAnswer(False, error=f"timeout: no answer after {retries + 1} x {timeout:g}s")
    finally:
        transport.close()


_V3_REPORTS = {"UnknownUserName", "UnsupportedSecurityLevel", "NotInTimeWindow", "UnknownEngineID", "WrongDigest",
               "DecryptionError", "ReportPduReceived", "UnknownSecurityName"}


async def snmpv3_noauth_get(host: str, port: int, user: str, oid: str = SYS_DESCR, *,
                            timeout: float = 2.0, retries: int = 1) -> SnmpAnswer:
    """One SNMPv3 GET at security level noAuthNoPriv as USM user ``user`` (no key, no
    password: nothing is guessed, the user name is the whole "credential"). ``accepted``:
    the agent answered with data for a user that needs no authentication — a default /
    template user left enabled (e.g. net-snmp ``initial``). An unknown user, a user that needs
    auth (usmStatsUnsupportedSecLevels) or a VACM refusal is not accepted. Read-only: a GET."""
    from pysnmp.hlapi.v3arch.asyncio import (ContextData, ObjectIdentity, ObjectType, SnmpEngine,
                                             UdpTransportTarget, UsmUserData, get_cmd)
    engine = SnmpEngine()
    try:
        try:
            target = await UdpTransportTarget.create((host, port), timeout=timeout, retries=retries)
        except Exception as e:  # noqa: BLE001 - DNS / address errors
            return SnmpAnswer(False, error=f"unreachable: {e}")
        err_ind, err_status, _idx, vbs = await get_cmd(engine, UsmUserData(user), target, ContextData(),
                                                       ObjectType(ObjectIdentity(oid)))
        if err_ind:     # the agent's own USM report (user unknown, needs auth) vs. no answer at all
            rep = type(err_ind).__name__ in _V3_REPORTS
            return SnmpAnswer(False, error=("agent report: " if rep else "") + str(err_ind))
        value = None
        for _oid, v in vbs:
            cls = type(v).__name__
            if cls in ("NoSuchObject", "NoSuchInstance", "EndOfMibView"):
                continue
            value = bytes(v) if cls == "OctetString" else str(v)
        status = int(err_status)
        if status == 0 and value is None:   # VACM: no view for this user -> noSuchObject
            status = 16
        return SnmpAnswer(True, status, value)
    finally:
        engine.close_dispatcher()


def decode_date_and_time(v: Any) -> datetime:
    """SNMPv2-TC DateAndTime -> timezone-aware datetime. 11 octets carry the UTC offset
    ('+'/'-', hours, minutes); 8 octets do not and are taken as UTC. Raises ValueError."""
    if not isinstance(v, (bytes, bytearray)) or len(v) not in (8, 11):
        raise ValueError(f"DateAndTime must be 8 or 11 octets, got {v!r}")
    b = bytes(v)
    year = b[0] << 8 | b[1]
    month, day, hour, minute, sec, deci = b[2], b[3], b[4], b[5], b[6], b[7]
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59 and sec <= 60 and deci <= 9):
        raise ValueError(f"DateAndTime out of range: {b.hex()}")
    tz = timezone.utc
    if len(b) == 11:
        sign = chr(b[8])
        if sign not in "+-" or b[9] > 14 or b[10] > 59:
            raise ValueError(f"DateAndTime bad UTC offset: {b.hex()}")
        off = timedelta(hours=b[9], minutes=b[10])
        tz = timezone(off if sign == "+" else -off)
    leap = sec == 60
    dt = datetime(year, month, day, hour, minute, 59 if leap else sec, deci * 100_000, tzinfo=tz)
    return dt + timedelta(seconds=1) if leap else dt


# ------------------------------------------------------------------------------ TCP


@dataclass
class TcpResult:
    open: bool
    error: str | None = None
    banner: str | None = None        # telnet: printable banner text (IAC negotiation removed)
    info: dict[str, Any] = field(default_factory=dict)


def _strip_telnet(data: bytes) -> str:
    """Drop telnet IAC commands/negotiation, keep printable text."""
    out = bytearray()
    i = 0
    while i < len(data):
        c = data[i]
        if c == 0xFF and i + 1 < len(data):
            cmd = data[i + 1]
            if cmd == 0xFF:
                out.append(0xFF)
                i += 2
            elif cmd in (0xFB, 0xFC, 0xFD, 0xFE):   # WILL WONT DO DONT <option>
                i += 3
            elif cmd == 0xFA:                          # SB ... IAC SE
                j = data.find(b"\xff\xf0", i + 2)
                i = len(data) if j < 0 else j + 2
            else:
                i += 2
            continue
        out.append(c)
        i += 1
    text = out.decode("utf-8", "replace")
    text = "".join(ch for ch in text if ch.isprintable() or ch in "\r\n\t")
    return text.strip()


async def _connect(host: str, port: int, timeout: float, ssl_ctx: ssl.SSLContext | None = None,
                   server_hostname: str | None = None):
    async with asyncio.timeout(timeout):
        return await asyncio.open_connection(host, port, ssl=ssl_ctx,
                                             server_hostname=server_hostname if ssl_ctx else None)


def _conn_error(e: BaseException) -> str:
    if isinstance(e, asyncio.TimeoutError):
        return "timeout"
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, socket.gaierror):
        return f"unreachable: cannot resolve ({e})"
    if isinstance(e, ssl.SSLError):
        return f"tls: {e.reason or e}"
    if isinstance(e, OSError):
        return f"unreachable: {e.strerror or e}"
    return f"{type(e).__name__}: {e}"


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
    except (OSError, asyncio.TimeoutError, ssl.SSLError):
        pass


async def telnet_probe(host: str, port: int = 23, *, timeout: float = 2.0, banner_s: float = 1.5) -> TcpResult:
    """Connect, read what the server volunteers for up to ``banner_s`` (at most 1 KiB), close.
    Sends nothing: no negotiation answers, no user name."""
    try:
        reader, writer = await _connect(host, port, timeout)
    except Exception as e:  # noqa: BLE001 - every failure is a "closed" result
        return TcpResult(False, _conn_error(e))
    data = b""
    try:
        end = asyncio.get_running_loop().time() + banner_s
        while len(data) < 1024:
            rem = end - asyncio.get_running_loop().time()
            if rem <= 0:
                break
            try:
                async with asyncio.timeout(rem):
                    chunk = await reader.read(1024 - len(data))
            except asyncio.TimeoutError:
                break
            if not chunk:
                break
            data += chunk
            if b"\n" in chunk and _strip_telnet(data):
                break       # a line of banner text is enough
    except OSError:
        pass
    finally:
        await _close(writer)
    return TcpResult(True, banner=_strip_telnet(data)[:200] or None,
                     info={"negotiation": b"\xff" in data})


async def http_probe(host: str, port: int = 80, *, timeout: float = 2.0) -> TcpResult:
    """``GET /`` over plain HTTP; info: status, location, server, redirects_to_https."""
    try:
        reader, writer = await _connect(host, port, timeout)
    except Exception as e:  # noqa: BLE001
        return TcpResult(False, _conn_error(e))
    hosthdr = f"[{host}]" if ":" in host else host
    if port != 80:
        hosthdr += f":{port}"
    try:
        writer.write(f"GET / HTTP/1.1\r\nHost: {hosthdr}\r\nUser-Agent: campus-sense-audit\r\n"
                     "Accept: */*\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        head = b""
        end = asyncio.get_running_loop().time() + timeout
        while b"\r\n\r\n" not in head and b"\n\n" not in head and len(head) < 16384:
            rem = end - asyncio.get_running_loop().time()
            if rem <= 0:
                break
            try:
                async with asyncio.timeout(rem):
                    chunk = await reader.read(4096)
            except ConnectionResetError:
                if head:     # it answered, then reset (closed with our request unread): judge the answer
                    break
                raise
            if not chunk:
                break
            head += chunk
    except Exception as e:  # noqa: BLE001 - port open, but no HTTP answer
        return TcpResult(True, _conn_error(e), info={"http": False})
    finally:
        await _close(writer)
    lines = head.split(b"\n")
    first = lines[0].decode("latin-1").strip() if lines else ""
    parts = first.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return TcpResult(True, "not an HTTP response" if head else "no answer",
                         info={"http": False, "first_line": first[:100] or None})
    headers: dict[str, str] = {}
    for raw in lines[1:]:
        line = raw.decode("latin-1").strip()
        if not line:
            break
        if ":" in line:
            k, v = line.split(":", 1)
            headers.setdefault(k.strip().lower(), v.strip())
    status = int(parts[1])
    location = headers.get("location")
    to_https = status in (301, 302, 303, 307, 308) and bool(location) and \
        location.lower().startswith("https://")
    return TcpResult(True, info={"http": True, "status": status, "location": location,
                                 "server": headers.get("server"), "redirects_to_https": to_https})


def _tls_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE          # we only ask "is TLS offered", not "is it trusted"
    try:                                      # old switches speak TLS 1.0 only: still HTTPS
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pass
    return ctx


def _cert_info(der: bytes | None) -> dict[str, Any]:
    if not der:
        return {}
    try:
        from cryptography import x509
        c = x509.load_der_x509_certificate(der)
        na = getattr(c, "not_valid_after_utc", None) or c.not_valid_after.replace(tzinfo=timezone.utc)
        return {"cert_subject": c.subject.rfc4514_string(),
                "cert_not_after": na.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "cert_self_signed": c.issuer == c.subject}
    except Exception:  # noqa: BLE001 - certificate details are a nice-to-have
        return {}


async def tls_probe(host: str, port: int = 443, *, timeout: float = 2.0) -> TcpResult:
    """TLS handshake only; info: tls_version, cipher, cert_subject, cert_not_after, cert_self_signed."""
    try:
        reader, writer = await _connect(host, port, timeout, _tls_context(), server_hostname=host)
    except Exception as e:  # noqa: BLE001
        return TcpResult(False, _conn_error(e))
    try:
        obj = writer.get_extra_info("ssl_object")
        info: dict[str, Any] = {}
        if obj is not None:
            info["tls_version"] = obj.version()
            c = obj.cipher()
            info["cipher"] = c[0] if c else None
            info.update(_cert_info(obj.getpeercert(binary_form=True)))
    finally:
        await _close(writer)
    return TcpResult(True, info=info)
