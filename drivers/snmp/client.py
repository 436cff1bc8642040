"""Thin asyncio SNMP client over pysnmp 7 (v2c and v3), raw OIDs only.

    target = SnmpTarget("10.0.0.1", community="s3cret")
    session = SnmpSession(target)
    sysname = (await session.get(["1.3.6.1.2.1.1.5.0"]))["1.3.6.1.2.1.1.5.0"]      # bytes
    table = await session.walk(["1.3.6.1.2.1.2.2.1.2", "1.3.6.1.2.1.31.1.1.1.1"])
    table["1.3.6.1.2.1.2.2.1.2"]["1"]                                           # ifDescr.1

Design:

* One pysnmp ``SnmpEngine`` (one UDP socket, one dispatcher) per event loop, i.e. per process
  for the agent. Targets, communities and USM users are registered in that engine's local
  configuration by this module (not by hlapi's LCD helper, whose cache is keyed by user name
  only and would re-add users while other requests are in flight). pysnmp keys USM users by
  user name, so the only case where a second engine is created is the same v3 user name
  configured with *different* keys/protocols for different devices.
* No MIB lookups: requests and responses are raw ``(ObjectName, value)`` pairs, values are
  converted to plain Python (see :func:`convert_value`).
* Errors raise :class:`drivers.base.DeviceError` with ``reason`` one of ``timeout``, ``auth``,
  ``unreachable``, ``protocol``, ``config``.
"""
from __future__ import annotations

import asyncio
import errno
import hashlib
import itertools
import logging
import os
import socket
import time
import weakref
from dataclasses import dataclass
from typing import Any, Iterable

from pysnmp.carrier.asyncio.dgram import udp
from pysnmp.entity import config
from pysnmp.entity.engine import SnmpEngine
from pysnmp.entity.rfc3413 import cmdgen
from pysnmp.proto import errind, rfc1902, rfc1905
from pyasn1.type import univ

from drivers.base import DeviceError

log = logging.getLogger("campus_sense.snmp")


def _enable_pysnmp_debug() -> None:
    """CAMPUS_SENSE_SNMP_DEBUG=io,msgproc,secmod (or all) turns on pysnmp's own packet/USM tracing
    (goes to the log at DEBUG level, logger "pysnmp"). Secrets are not printed, packets are."""
    flags = [f.strip() for f in os.environ.get("CAMPUS_SENSE_SNMP_DEBUG", "").split(",") if f.strip()]
    if not flags:
        return
    from pysnmp import debug as pysnmp_debug

    try:
        pysnmp_debug.set_logger(pysnmp_debug.Debug(*flags))
    except Exception as e:  # unknown flag: say so, keep working
        log.warning("CAMPUS_SENSE_SNMP_DEBUG=%s ignored: %s", ",".join(flags), e)


_enable_pysnmp_debug()

__all__ = [
    "SnmpTarget", "SnmpSession", "DeviceError", "convert_value", "close_engines",
    "AUTH_PROTOCOLS", "PRIV_PROTOCOLS", "normalize_auth_protocol", "normalize_priv_protocol",
]

# --------------------------------------------------------------------------- protocols

#: canonical name -> pysnmp service id
AUTH_PROTOCOLS: dict[str, tuple] = {
    "MD5": config.USM_AUTH_HMAC96_MD5,
    "SHA": config.USM_AUTH_HMAC96_SHA,
    "SHA-224": config.USM_AUTH_HMAC128_SHA224,
    "SHA-256": config.USM_AUTH_HMAC192_SHA256,
    "SHA-384": config.USM_AUTH_HMAC256_SHA384,
    "SHA-512": config.USM_AUTH_HMAC384_SHA512,
}
#: canonical name -> pysnmp service id. AES-192/256 are the draft-blumenthal key extension
#: (net-snmp "AES-192"/"AES-256"); the "-C" variants are the Reeder/Cisco key extension
#: (net-snmp "AES-192-C"/"AES-256-C").
PRIV_PROTOCOLS: dict[str, tuple] = {
    "DES": config.USM_PRIV_CBC56_DES,
    "3DES": config.USM_PRIV_CBC168_3DES,
    "AES-128": config.USM_PRIV_CFB128_AES,
    "AES-192": config.USM_PRIV_CFB192_AES_BLUMENTHAL,
    "AES-256": config.USM_PRIV_CFB256_AES_BLUMENTHAL,
    "AES-192-C": config.USM_PRIV_CFB192_AES,
    "AES-256-C": config.USM_PRIV_CFB256_AES,
}
from drivers.snmp.target import (_AUTH_ALIASES, _PRIV_ALIASES, AUTH_NAMES, PRIV_NAMES,  # noqa: E402,F401
                                 SnmpTarget, normalize_auth_protocol, normalize_priv_protocol)

assert set(AUTH_NAMES) == set(AUTH_PROTOCOLS) and set(PRIV_NAMES) == set(PRIV_PROTOCOLS)


# --------------------------------------------------------------------------- values


def convert_value(val: Any) -> Any:
    """pysnmp value -> int | bytes | str | None.

    Integer/Counter32/Counter64/Gauge32/TimeTicks/Unsigned32 -> int; OctetString/Opaque/Bits
    -> bytes; ObjectIdentifier -> dotted str; IpAddress -> dotted-quad str; Null -> None.
    """
    if isinstance(val, rfc1902.IpAddress):
        return socket.inet_ntoa(val.asOctets()) if len(val.asOctets()) == 4 else val.asOctets().hex()
    if isinstance(val, univ.Integer):
        return int(val)
    if isinstance(val, univ.OctetString):
        return bytes(val.asOctets())
    if isinstance(val, univ.ObjectIdentifier):
        return ".".join(str(x) for x in val)
    if isinstance(val, univ.Null):
        return None
    if isinstance(val, univ.Choice):  # unusual wrappers (ObjectSyntax)
        return convert_value(val.getComponent())
    return val


def _is_exception_value(val: Any) -> bool:
    return isinstance(val, (rfc1905.NoSuchObject, rfc1905.NoSuchInstance, rfc1905.EndOfMibView))


def _oid_tuple(oid: str | Iterable[int]) -> tuple[int, ...]:
    if isinstance(oid, str):
        s = oid.strip().lstrip(".")
        try:
            t = tuple(int(x) for x in s.split("."))
        except ValueError:
            raise DeviceError("config", f"not a numeric OID: {oid!r} (MIB names are not resolved)") from None
    else:
        t = tuple(int(x) for x in oid)
    if len(t) < 2:
        raise DeviceError("config", f"OID too short: {oid!r}")
    return t


def _oid_str(t: Iterable[int]) -> str:
    return ".".join(str(x) for x in t)


# --------------------------------------------------------------------------- engine


class _CountingUdpTransport(udp.UdpAsyncioTransport):
    """pysnmp's UDP transport, counting datagrams per peer so that "no valid answer" can be told
    apart from "no answer at all" (garbage, wrong SNMP version, mangled by a middlebox)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.received: dict[tuple[str, int], int] = {}
        #: datagrams per peer that are well-formed SNMP messages, by message version (0 v1, 1 v2c,
        #: 3 v3): a v3 engine-discovery report is a valid datagram even when the request that
        #: follows is dropped by the agent (wrong privacy key / protocol)
        self.valid: dict[tuple[str, int, int], int] = {}

    def datagram_received(self, datagram, transportAddress):  # noqa: N803 - pysnmp's name
        try:
            key = (str(transportAddress[0]), int(transportAddress[1]))
            self.received[key] = self.received.get(key, 0) + 1
            v = snmp_message_version(bytes(datagram))
            if v is not None:
                self.valid[key + (v,)] = self.valid.get(key + (v,), 0) + 1
        except (TypeError, ValueError, IndexError):
            pass
        super().datagram_received(datagram, transportAddress)


def snmp_message_version(data: bytes) -> int | None:
    """msgVersion of a well-formed SNMP message (outer SEQUENCE spanning the whole datagram,
    then INTEGER version), else None."""
    if len(data) < 5 or data[0] != 0x30:
        return None
    n = data[1]
    pos = 2
    if n & 0x80:
        k = n & 0x7F
        if not 0 < k <= 4 or len(data) < 2 + k:
            return None
        n = int.from_bytes(data[2:2 + k], "big")
        pos = 2 + k
    if pos + n != len(data) or len(data) < pos + 3 or data[pos] != 0x02 or data[pos + 1] != 1:
        return None
    return data[pos + 2]


class _Engine:
    """One pysnmp engine plus what this module registered in its configuration."""

    def __init__(self) -> None:
        self.engine = SnmpEngine()
        self.transport = _CountingUdpTransport().open_client_mode()
        self.in_flight: dict[tuple[str, int], int] = {}
        config.add_transport(self.engine, udp.DOMAIN_NAME, self.transport)
        self.ids = itertools.count(1)
        self.communities: dict[str, str] = {}                 # community -> securityName
        self.users: dict[str, tuple] = {}                      # userName -> credentials key
        self.params: dict[tuple, str] = {}                     # (secName, level, mp) -> params name
        self.addrs: dict[tuple, str] = {}                      # (params, addr, timeout, retries) -> addr name

    def can_host_user(self, target: SnmpTarget) -> bool:
        key = _cred_key(target)
        return self.users.get(target.user, key) == key

    def params_for(self, target: SnmpTarget) -> str:
        e = self.engine
        if target.version == "2c":
            sec = self.communities.get(target.community)
            if sec is None:
                sec = f"c{next(self.ids)}"
                config.add_v1_system(e, sec, target.community, securityName=sec)
                self.communities[target.community] = sec
            pkey = (sec, "noAuthNoPriv", 1)
        else:
            sec = target.user
            if target.user not in self.users:
                config.add_v3_user(
                    e, target.user,
                    AUTH_PROTOCOLS[target.auth_protocol] if target.auth_protocol else config.USM_AUTH_NONE,
                    target.auth_key,
                    PRIV_PROTOCOLS[target.priv_protocol] if target.priv_protocol else config.USM_PRIV_NONE,
                    target.priv_key,
                )
                self.users[target.user] = _cred_key(target)
            pkey = (sec, target.security_level, 3)
        name = self.params.get(pkey)
        if name is None:
            name = f"p{next(self.ids)}"
            config.add_target_parameters(e, name, pkey[0], pkey[1], pkey[2])
            self.params[pkey] = name
        return name

    def addr_for(self, target: SnmpTarget, address: tuple[str, int]) -> str:
        params = self.params_for(target)
        akey = (params, address, float(target.timeout), int(target.retries))
        name = self.addrs.get(akey)
        if name is None:
            name = f"a{next(self.ids)}"
            config.add_target_address(self.engine, name, udp.DOMAIN_NAME, address, params,
                                      timeout=max(1, int(round(target.timeout * 100))),
                                      retryCount=int(target.retries))
            self.addrs[akey] = name
        return name

    def close(self) -> None:
        try:
            self.engine.close_dispatcher()
        except Exception:  # pragma: no cover - best effort at shutdown
            log.debug("closing SNMP engine", exc_info=True)


def _cred_key(t: SnmpTarget) -> tuple:
    h = hashlib.sha256(f"{t.auth_protocol}\0{t.auth_key}\0{t.priv_protocol}\0{t.priv_key}".encode()).hexdigest()
    return (t.auth_protocol, t.priv_protocol, h)


_ENGINES: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[_Engine]]" = weakref.WeakKeyDictionary()


def _engine_for(target: SnmpTarget) -> _Engine:
    loop = asyncio.get_running_loop()
    for old in [lp for lp in list(_ENGINES) if lp.is_closed()]:   # engines keep their loop alive
        for eng in _ENGINES.pop(old, []):
            eng.close()
    engines = _ENGINES.setdefault(loop, [])
    for eng in engines:
        if target.version != "3" or eng.can_host_user(target):
            return eng
    if engines:
        log.info("SNMP v3 user %r is configured with different keys for several devices; "
                 "using an extra SNMP engine for %s", target.user, target.describe())
    eng = _Engine()
    engines.append(eng)
    return eng


async def close_engines() -> None:
    """Close the SNMP engine(s) of the running loop (call once at shutdown; optional)."""
    loop = asyncio.get_running_loop()
    for eng in _ENGINES.pop(loop, []):
        eng.close()
    await asyncio.sleep(0)


# --------------------------------------------------------------------------- errors

_USM_MESSAGES = {
    errind.UnknownUserName: "unknown user name (agent reported usmStatsUnknownUserNames)",
    errind.WrongDigest: "wrong authentication key or protocol (agent reported usmStatsWrongDigests)",
    errind.DecryptionError: "wrong privacy key or protocol (agent reported usmStatsDecryptionErrors)",
    errind.UnsupportedSecurityLevel: "security level not supported for this user "
                                     "(agent reported usmStatsUnsupportedSecLevels)",
    errind.NotInTimeWindow: "message not in time window (agent reported usmStatsNotInTimeWindows; "
                            "engine boots/time out of sync)",
    errind.UnknownEngineID: "engine ID discovery failed (agent reported usmStatsUnknownEngineIDs)",
    errind.AuthenticationFailure: "response failed authentication (wrong authentication key?)",
    errind.AuthenticationError: "response authentication error (wrong authentication key?)",
    errind.UnknownSecurityName: "unknown security name",
}
#: pysnmp's own report OIDs (usmStats*) for messages when a generic ReportPduReceived arrives
_REPORT_OIDS = {
    "1.3.6.1.6.3.15.1.1.1.0": "usmStatsUnsupportedSecLevels",
    "1.3.6.1.6.3.15.1.1.2.0": "usmStatsNotInTimeWindows",
    "1.3.6.1.6.3.15.1.1.3.0": "usmStatsUnknownUserNames",
    "1.3.6.1.6.3.15.1.1.4.0": "usmStatsUnknownEngineIDs",
    "1.3.6.1.6.3.15.1.1.5.0": "usmStatsWrongDigests",
    "1.3.6.1.6.3.15.1.1.6.0": "usmStatsDecryptionErrors",
    "1.3.6.1.6.3.11.2.1.1.0": "snmpUnknownSecurityModels",
    "1.3.6.1.6.3.11.2.1.2.0": "snmpInvalidMsgs",
    "1.3.6.1.6.3.11.2.1.3.0": "snmpUnknownPDUHandlers",
}
_ERROR_STATUS = {
    1: "tooBig", 2: "noSuchName", 3: "badValue", 4: "readOnly", 5: "genErr", 6: "noAccess",
    7: "wrongType", 8: "wrongLength", 9: "wrongEncoding", 10: "wrongValue", 11: "noCreation",
    12: "inconsistentValue", 13: "resourceUnavailable", 14: "commitFailed", 15: "undoFailed",
    16: "authorizationError", 17: "notWritable", 18: "inconsistentName",
}


class _TooBig(Exception):
    pass


async def _discovery_answered(address: tuple[str, int], timeout: float) -> bool:
    """After earlier successful polls pysnmp sends no new discovery: probe it ourselves, so a
    privacy key changed on the device reads as auth, not as a dead device."""
    from drivers.snmp.fastv3 import discovery_answered
    return await discovery_answered(address[0], address[1], timeout)


def _map_error_indication(ei: Any, target: SnmpTarget) -> DeviceError:
    where = target.describe()
    if isinstance(ei, errind.RequestTimedOut):
        tries = int(target.retries) + 1
        if target.version == "2c":
            msg = f"no response (timeout or wrong community) after {tries} x {target.timeout:g}s"
        else:
            msg = f"no response (timeout) after {tries} x {target.timeout:g}s"
            if target.priv_protocol:
                msg += " (a wrong privacy key or protocol also looks like this: agents drop what they cannot decrypt)"
        return DeviceError("timeout", msg)
    for cls, text in _USM_MESSAGES.items():
        if isinstance(ei, cls):
            if cls is errind.UnknownUserName:
                text = f"unknown user name {target.user!r} (agent reported usmStatsUnknownUserNames)"
            return DeviceError("auth", text)
    if isinstance(ei, errind.ReportPduReceived):
        oid = str(ei).split()[-1] if str(ei) else ""
        name = next((n for o, n in _REPORT_OIDS.items() if o in str(ei)), None)
        return DeviceError("auth" if name and name.startswith("usm") else "protocol",
                           f"agent sent a report: {name or oid or ei}")
    if isinstance(ei, (errind.NoEncryption, errind.EncryptionError)):
        return DeviceError("config", f"{ei} (is the 'cryptography' package installed?)")
    if isinstance(ei, (errind.UnsupportedAuthProtocol, errind.UnsupportedPrivProtocol)):
        return DeviceError("config", f"{ei}")
    if isinstance(ei, errind.TooBig):
        return DeviceError("protocol", "request too big")
    if isinstance(ei, (errind.DeserializationError, errind.ParseError, errind.EmptyResponse,
                       errind.DataMismatch, errind.EngineIDMismatch, errind.InvalidMsg)):
        return DeviceError("protocol", f"bad response from {where}: {ei}")
    return DeviceError("protocol", f"{type(ei).__name__}: {ei}")


# --------------------------------------------------------------------------- session


class SnmpSession:
    """Requests against one target. Cheap to create; shares the loop's SNMP engine.

    ``get(oids)`` -> ``{oid: value}`` (OIDs the agent does not have are omitted);
    ``walk(columns)`` -> ``{column_oid: {index_suffix: value}}`` (multi-column GETBULK).
    """

    #: at most this many varbinds per GET request (split further on tooBig)
    GET_CHUNK = 40
    #: GETBULK asks for at most this many varbinds (columns x max-repetitions) per request;
    #: many agents (snmpsim: 64) refuse or silently drop bigger requests
    MAX_VARBINDS = 60
    #: a timeout right after a successful answer is treated as "too big" first (see walk)
    ALIVE_WINDOW_S = 30.0
    RESOLVE_TTL_S = 300.0

    def __init__(self, target: SnmpTarget):
        self.target = target
        self._address: tuple[str, int] | None = None
        self._resolved_at = 0.0
        self._answered_at = -1e9
        self._closed = False

    # ------------------------------------------------------------------ plumbing

    async def _resolve(self) -> tuple[str, int]:
        now = time.monotonic()
        if self._address and now - self._resolved_at < self.RESOLVE_TTL_S:
            return self._address
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(self.target.host, self.target.port, family=socket.AF_INET,
                                           type=socket.SOCK_DGRAM, proto=socket.IPPROTO_UDP)
        except socket.gaierror as e:
            raise DeviceError("unreachable", f"cannot resolve host {self.target.host!r}: {e.strerror or e}") from None
        address = infos[0][4][:2]
        # A connected UDP socket fails at once when there is no route (ENETUNREACH/EHOSTUNREACH).
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.connect(address)
        except OSError as e:
            if e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL):
                raise DeviceError("unreachable", f"{address[0]}: {e.strerror}") from None
            raise DeviceError("unreachable", f"{address[0]}: {e}") from None
        finally:
            probe.close()
        self._address, self._resolved_at = address, now
        return address

    async def _send(self, kind: str, varbinds: list, max_repetitions: int = 0):
        """One request; returns the response varbinds or raises DeviceError/_TooBig."""
        if self._closed:
            raise DeviceError("config", "session is closed")
        address = await self._resolve()
        eng = _engine_for(self.target)
        try:
            addr_name = eng.addr_for(self.target, address)
        except Exception as e:  # bad keys etc. rejected by pysnmp
            raise DeviceError("config", f"cannot configure SNMP target: {e}") from None
        ctx_name = (self.target.context or "").encode() if self.target.version == "3" else b""
        key = (address[0], int(address[1]))
        rx_before = (eng.transport.received.get(key, 0),
                     eng.transport.valid.get(key + (3 if self.target.version == "3" else 1,), 0))
        eng.in_flight[key] = eng.in_flight.get(key, 0) + 1
        try:
            return await self._exchange(eng, addr_name, ctx_name, kind, varbinds, max_repetitions, key, rx_before)
        finally:
            eng.in_flight[key] -= 1
            if not eng.in_flight[key]:
                del eng.in_flight[key]

    async def _exchange(self, eng: "_Engine", addr_name: str, ctx_name: bytes, kind: str, varbinds: list,
                        max_repetitions: int, key: tuple[str, int], rx_before: tuple[int, int]):
        fut: asyncio.Future = asyncio.get_running_loop().create_future()

        def cb(snmpEngine, sendRequestHandle, errorIndication, errorStatus, errorIndex, varBinds, cbCtx):
            if not fut.done():
                fut.set_result((errorIndication, errorStatus, errorIndex, varBinds))

        try:
            if kind == "get":
                cmdgen.GetCommandGenerator().send_varbinds(eng.engine, addr_name, None, ctx_name, varbinds, cb)
            else:
                cmdgen.BulkCommandGenerator().send_varbinds(eng.engine, addr_name, None, ctx_name, 0,
                                                            max_repetitions, varbinds, cb)
        except Exception as e:
            raise _map_error_indication(getattr(e, "errorIndication", e), self.target) from None
        # pysnmp enforces timeout x retries itself; this is only a safety net.
        budget = float(self.target.timeout) * (int(self.target.retries) + 1) + 5.0
        try:
            async with asyncio.timeout(budget):   # not wait_for: 3.11 can swallow a cancel
                ei, es, eidx, vbs = await fut
        except asyncio.TimeoutError:
            ei, es, eidx, vbs = errind.requestTimedOut, 0, 0, ()
        if ei:
            if isinstance(ei, errind.TooBig):
                raise _TooBig()
            if isinstance(ei, errind.RequestTimedOut):
                got = eng.transport.received.get(key, 0) - rx_before[0]
                valid = eng.transport.valid.get(key + (3 if self.target.version == "3" else 1,), 0) - rx_before[1]
                if got > valid and eng.in_flight.get(key, 0) == 1:
                    raise DeviceError("protocol", f"{got - valid} datagram(s) came back but none was a valid SNMP "
                                                  f"v{self.target.version} response (garbage, other SNMP version "
                                                  "or a mangling middlebox?)")
                if (self.target.version == "3" and self.target.priv_protocol and eng.in_flight.get(key, 0) == 1
                        and (valid > 0 or (self._answered_at < 0 and eng.transport.valid.get(key + (3,), 0) > 0)
                             or (self._answered_at >= 0 and await _discovery_answered(key, self.target.timeout)))):
                    # engine discovery was answered, the encrypted request was not: the agent could
                    # not decrypt it (net-snmp drops AES garbage silently, no usmStatsDecryptionErrors)
                    raise DeviceError("auth", f"agent answered SNMPv3 engine discovery but dropped the {kind} request: "
                                              f"wrong privacy key, or privacy protocol {self.target.priv_protocol} "
                                              f"not the one configured for user {self.target.user!r} on the agent")
            raise _map_error_indication(ei, self.target)
        self._answered_at = time.monotonic()
        es = int(es or 0)
        if es:
            if es == 1:
                raise _TooBig()
            name = _ERROR_STATUS.get(es, str(es))
            culprit = ""
            try:
                if eidx and int(eidx) > 0:
                    culprit = f" at {_oid_str(varbinds[int(eidx) - 1][0])}"
            except (IndexError, ValueError, TypeError):
                pass
            if es == 16:
                raise DeviceError("auth", f"access denied (authorizationError{culprit}): the view of this "
                                          f"{'user' if self.target.version == '3' else 'community'} excludes it"
                                          f"{' or it needs a higher security level' if self.target.version == '3' else ''}")
            raise DeviceError("protocol", f"agent returned error-status {name}{culprit}")
        return list(vbs)

    # ------------------------------------------------------------------ API

    async def get(self, oids: list[str]) -> dict[str, Any]:
        """GET the given OIDs. Missing objects (noSuchObject/noSuchInstance) are left out."""
        tuples = [_oid_tuple(o) for o in oids]
        out: dict[str, Any] = {}
        for i in range(0, len(tuples), self.GET_CHUNK):
            await self._get_chunk(tuples[i:i + self.GET_CHUNK], out)
        return out

    async def _get_chunk(self, chunk: list[tuple[int, ...]], out: dict[str, Any]) -> None:
        try:
            vbs = await self._send("get", [(rfc1902.ObjectName(t), rfc1902.Null("")) for t in chunk])
        except _TooBig:
            if len(chunk) == 1:
                raise DeviceError("protocol", f"response for {_oid_str(chunk[0])} is too big") from None
            half = len(chunk) // 2
            await self._get_chunk(chunk[:half], out)
            await self._get_chunk(chunk[half:], out)
            return
        for oid, val in vbs:
            if _is_exception_value(val):
                continue
            out[_oid_str(oid)] = convert_value(val)

    async def walk(self, columns: list[str], max_repetitions: int = 25) -> dict[str, dict[str, Any]]:
        """Walk several table columns (or any subtrees) at once with GETBULK.

        Returns ``{column: {index_suffix: value}}`` keyed by the column OIDs as given
        (normalised, without a leading dot). Each column stops when it leaves its subtree,
        at endOfMibView, or when the agent returns a non-increasing OID (logged). tooBig halves
        max-repetitions and retries.
        """
        cols = []
        for c in columns:
            t = _oid_tuple(c)
            if t not in cols:
                cols.append(t)
        result: dict[str, dict[str, Any]] = {_oid_str(c): {} for c in cols}
        current = {c: c for c in cols}
        active = list(cols)
        reps = max(1, int(max_repetitions))
        while active:
            # keep responses to a size agents answer (columns x repetitions <= MAX_VARBINDS)
            use = max(1, min(reps, self.MAX_VARBINDS // len(active)))
            try:
                vbs = await self._send("bulk", [(rfc1902.ObjectName(current[c]), rfc1902.Null("")) for c in active], use)
            except _TooBig:
                if use == 1:
                    raise DeviceError("protocol", "tooBig even with max-repetitions 1") from None
                reps = max(1, use // 2)
                log.debug("%s: tooBig, max-repetitions now %d", self.target.describe(), reps)
                continue
            except DeviceError as e:
                # Some agents silently drop requests whose answer would be too big. If the agent
                # answered moments ago, retry smaller before calling it a timeout.
                if (e.reason == "timeout" and use > 1
                        and time.monotonic() - self._answered_at < self.ALIVE_WINDOW_S):
                    reps = max(1, use // 2)
                    log.warning("%s: no answer to GETBULK of %d x %d varbinds; retrying with max-repetitions %d",
                                self.target.describe(), len(active), use, reps)
                    continue
                raise
            if not vbs:
                raise DeviceError("protocol", "empty GETBULK response")
            n = len(active)
            done: set = set()
            progressed = False
            for i, (oid, val) in enumerate(vbs):
                col = active[i % n]
                if col in done:
                    continue
                oid_t = tuple(oid)
                if isinstance(val, rfc1905.EndOfMibView) or _is_exception_value(val):
                    done.add(col)
                    continue
                if oid_t[:len(col)] != col or len(oid_t) == len(col):
                    done.add(col)  # left the column's subtree
                    continue
                if oid_t <= current[col]:
                    log.warning("%s: agent returned non-increasing OID %s after %s; stopping column %s",
                                self.target.describe(), _oid_str(oid_t), _oid_str(current[col]), _oid_str(col))
                    done.add(col)
                    continue
                result[_oid_str(col)][_oid_str(oid_t[len(col):])] = convert_value(val)
                current[col] = oid_t
                progressed = True
            active = [c for c in active if c not in done]
            if active and not progressed and not done:
                raise DeviceError("protocol", "GETBULK response made no progress")
        return result

    async def close(self) -> None:
        """Forget this session (the shared engine stays up for other sessions)."""
        self._closed = True
