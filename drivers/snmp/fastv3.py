"""A fast SNMPv3 (USM) GET/GETBULK client on the fastv2c BER codec (no pysnmp, no MIBs).

Why: v3 through pysnmp costs ~8.5x the CPU of the Go snmp_exporter per varbind; schools
increasingly mandate v3 authPriv, so v3 polling needs the same lean path as v2c
(bench/snmp_vs_exporter.py). Only the message/USM layer is here; the PDU codec is fastv2c's.

    s = FastV3Session(host, user="u", auth_protocol="SHA-256", auth_key="...",
                      priv_protocol="AES", priv_key="...", context=None, timeout=2.0, retries=1)
    await s.get([...]); await s.walk([...]); await s.close()      # as FastV2cSession

Protocol: RFC 3412 messages, RFC 3414 USM (engine discovery with an empty-user probe, time
window with one resync on usmStatsNotInTimeWindows, password-to-key + localisation cached per
(password, engineID, hash)), HMAC-MD5/SHA-96 and RFC 7860 HMAC-SHA-2; privacy DES-CBC
(RFC 3414 8.1), AES-CFB128 (RFC 3826), AES-192/256 with the Blumenthal key extension
(draft-blumenthal-aes-usm-04, net-snmp's "AES-192"/"AES-256") or the Reeder one ("-C",
Cisco). Incoming messages are authenticated before use; datagrams that do not parse, fail
authentication or decryption, or answer for another msgID/request-id, security level, engine,
user or context (RFC 3412 7.2.12b) are dropped and counted (``malformed``, ``auth_failures``,
``decrypt_failures``); so are responses replayed from an earlier boot or > 150 s old (``stale``,
RFC 3414 3.2.7b; when that is all the agent sends, the session starts over with a fresh
discovery). Requests stay within the agent's msgMaxSize (GETs and walks are split).
Error reasons and messages are those of drivers.snmp.client.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import random
import time
from functools import lru_cache
from typing import Any

from drivers.base import DeviceError
from drivers.snmp.fastv2c import (_ERROR_STATUS, BERError, FastV2cSession, _enc_int, _enc_len, _TooBig, _tlv,
                                  decode_oid, decode_pdu, encode_pdu, hdr)

__all__ = ["FastV3Session", "AUTH", "PRIV", "password_to_key", "localized_key", "priv_key"]

#: auth protocol -> (hashlib name, HMAC truncation in bytes; RFC 3414 / RFC 7860)
AUTH = {"MD5": ("md5", 12), "SHA": ("sha1", 12), "SHA-224": ("sha224", 16), "SHA-256": ("sha256", 24),
        "SHA-384": ("sha384", 32), "SHA-512": ("sha512", 48)}
#: priv protocol -> (cipher, key bytes, key extension when the localized key is too short)
PRIV = {"DES": ("des", 8, None), "AES-128": ("aes", 16, None),
        "AES-192": ("aes", 24, "blumenthal"), "AES-256": ("aes", 32, "blumenthal"),
        "AES-192-C": ("aes", 24, "reeder"), "AES-256-C": ("aes", 32, "reeder")}
_ALIASES = {"AES": "AES-128", "AES128": "AES-128", "AES192": "AES-192", "AES256": "AES-256",
            "SHA1": "SHA", "SHA-1": "SHA", "SHA224": "SHA-224", "SHA256": "SHA-256", "SHA384": "SHA-384",
            "SHA512": "SHA-512"}

_USM = "1.3.6.1.6.3.15.1.1."
#: report counter -> (reason, message); same texts as drivers.snmp.client (pysnmp path)
_REPORTS = {
    _USM + "1.0": ("auth", "security level not supported for this user (agent reported usmStatsUnsupportedSecLevels)"),
    _USM + "2.0": ("auth", "message not in time window (agent reported usmStatsNotInTimeWindows; "
                           "engine boots/time out of sync)"),
    _USM + "3.0": ("auth", "unknown user name {user!r} (agent reported usmStatsUnknownUserNames)"),
    _USM + "4.0": ("auth", "engine ID discovery failed (agent reported usmStatsUnknownEngineIDs)"),
    _USM + "5.0": ("auth", "wrong authentication key or protocol (agent reported usmStatsWrongDigests)"),
    _USM + "6.0": ("auth", "wrong privacy key or protocol (agent reported usmStatsDecryptionErrors)"),
    "1.3.6.1.6.3.11.2.1.1.0": ("protocol", "agent sent a report: snmpUnknownSecurityModels"),
    "1.3.6.1.6.3.11.2.1.2.0": ("protocol", "agent sent a report: snmpInvalidMsgs"),
    "1.3.6.1.6.3.11.2.1.3.0": ("protocol", "agent sent a report: snmpUnknownPDUHandlers"),
}
_NOT_IN_TIME = _USM + "2.0"
_UNKNOWN_ENGINE = _USM + "4.0"
_MAX_INT = 0x7FFFFFFF


# ------------------------------------------------------------------------------- keys (RFC 3414 A.2)

@lru_cache(maxsize=256)
def password_to_key(password: bytes, hash_name: str) -> bytes:
    """Ku: the hash of 1 MiB of the repeated pass phrase (the expensive step, hence cached)."""
    reps, rest = divmod(1048576, len(password))
    return hashlib.new(hash_name, password * reps + password[:rest]).digest()


def _localize(ku: bytes, engine_id: bytes, hash_name: str) -> bytes:
    return hashlib.new(hash_name, ku + engine_id + ku).digest()


@lru_cache(maxsize=1024)
def localized_key(password: bytes, engine_id: bytes, hash_name: str) -> bytes:
    """Kul = H(Ku || engineID || Ku)."""
    return _localize(password_to_key(password, hash_name), engine_id, hash_name)


@lru_cache(maxsize=1024)
def priv_key(password: bytes, engine_id: bytes, hash_name: str, priv: str) -> bytes:
    """Privacy key material: DES key + pre-IV (16 bytes), or the AES key (extended if needed)."""
    cipher, size, ext = PRIV[priv]
    need = 16 if cipher == "des" else size
    k = localized_key(password, engine_id, hash_name)
    while len(k) < need:
        if ext == "reeder":   # repeat password-to-key + localisation on the key so far
            k += _localize(password_to_key(k, hash_name), engine_id, hash_name)
        else:                 # Blumenthal: append H(key so far)
            k += hashlib.new(hash_name, k).digest()
    return k[:need]


def _cipher_modules():
    """(Cipher, AES, TripleDES, CBC, CFB) from cryptography; DES and CFB live in "decrepit" since 43/47."""
    try:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    except ImportError:  # pragma: no cover - cryptography is a dependency
        raise DeviceError("config", "SNMPv3 privacy needs the 'cryptography' package (is it installed?)") from None
    try:
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    except ImportError:  # pragma: no cover - older cryptography
        TripleDES = algorithms.TripleDES
    try:
        from cryptography.hazmat.decrepit.ciphers.modes import CFB
    except ImportError:  # pragma: no cover - older cryptography
        CFB = modes.CFB
    return Cipher, algorithms.AES, TripleDES, modes.CBC, CFB


# ------------------------------------------------------------------------------- session

class _RequestTooBig(Exception):
    """A GETBULK longer than the agent's msgMaxSize (RFC 3412: the largest message it accepts)."""


class _Msg:
    """What the session needs of a received v3 message."""
    __slots__ = ("report", "req_id", "status", "index", "vbs", "engine", "boots", "time", "flags")


class FastV3Session(FastV2cSession):
    """SNMPv3 USM session over one connected UDP socket (one request in flight at a time)."""

    #: our msgMaxSize: the largest response we accept (the UDP maximum, as net-snmp sends)
    MSG_MAX_SIZE = 65507

    def __init__(self, host: str, port: int = 161, user: str | None = None, auth_protocol: str | None = None,
                 auth_key: str | None = None, priv_protocol: str | None = None, priv_key: str | None = None,
                 context: str | None = None, timeout: float = 2.0, retries: int = 1, **_ignored: Any):
        super().__init__(host, port, community="-", timeout=timeout, retries=retries)
        self.community = b""  # v3 has none; the placeholder only satisfies the v2c constructor
        if not user:
            raise DeviceError("config", "SNMPv3 needs a user")
        auth = _canon(auth_protocol)
        priv = _canon(priv_protocol)
        if auth is not None and auth not in AUTH:
            raise DeviceError("config", f"unknown auth protocol {auth_protocol!r} (use one of {', '.join(AUTH)})")
        if priv is not None and priv not in PRIV:
            raise DeviceError("config", f"privacy protocol {priv_protocol!r} is not supported by the fast v3 "
                                        f"path (use one of {', '.join(PRIV)}, or engine: pysnmp)")
        if priv and not auth:
            raise DeviceError("config", "privacy (authPriv) needs authentication too")
        if (auth and not auth_key) or (priv and not priv_key):
            raise DeviceError("config", "auth_protocol/priv_protocol given without its key")
        self.user = user
        self._user = user.encode()
        self.auth_protocol, self.priv_protocol = auth, priv
        self._auth_pw = auth_key.encode() if auth else b""
        self._priv_pw = priv_key.encode() if priv else b""
        self._hash, self._auth_len = AUTH[auth] if auth else ("", 0)
        self._flags = (1 if auth else 0) | (2 if priv else 0)
        self.context = (context or "").encode()
        if priv:
            self._Cipher, self._AES, self._DES, self._CBC, self._CFB = _cipher_modules()
        self.engine_id: bytes | None = None
        self.boots = 0
        self._time_base = 0          # agent's engineTime when _time_at (monotonic) was taken
        self._time_at = 0.0
        self._latest_time = 0        # latestReceivedEngineTime (RFC 3414 2.3)
        self._kul = b""
        self._kpriv = b""
        self._salt = itertools.count(random.getrandbits(63))
        self._want: tuple[int, int, bool] = (-1, -1, False)
        self.peer_max_size: int | None = None
        self.auth_failures = 0
        self.decrypt_failures = 0
        self.discoveries = 0
        self.resyncs = 0
        self.stale = 0

    @classmethod
    def from_target(cls, target: Any) -> "FastV3Session":
        """Build from a ``drivers.snmp.client.SnmpTarget`` (v3 only)."""
        if str(getattr(target, "version", "3")) != "3":
            raise DeviceError("config", "FastV3Session is SNMPv3 only; use FastV2cSession for v2c")
        return cls(target.host, target.port, target.user, target.auth_protocol, target.auth_key,
                   target.priv_protocol, target.priv_key, target.context, target.timeout, target.retries)

    async def walk(self, columns: list[str], max_repetitions: int = 25) -> dict[str, dict[str, Any]]:
        """FastV2cSession.walk, with the columns split in halves while one GETBULK would be longer
        than the agent's msgMaxSize (fewer repetitions, the tooBig remedy, do not shorten a request)."""
        try:
            return await super().walk(columns, max_repetitions)
        except _RequestTooBig:
            if len(columns) < 2:
                raise DeviceError("protocol", f"a GETBULK for {columns[0]} is longer than the agent's msgMaxSize "
                                              f"({self.peer_max_size})") from None
        h = len(columns) // 2
        out = await self.walk(columns[:h], max_repetitions)
        errors = self.walk_errors
        out.update(await self.walk(columns[h:], max_repetitions))
        self.walk_errors = {**errors, **self.walk_errors}
        return out

    # -------------------------------------------------------------- USM state

    def _set_engine(self, engine_id: bytes, boots: int, etime: int) -> None:
        if engine_id != self.engine_id:
            self.engine_id = engine_id
            if self._flags & 1:
                self._kul = localized_key(self._auth_pw, engine_id, self._hash)
            if self._flags & 2:
                self._kpriv = priv_key(self._priv_pw, engine_id, self._hash, self.priv_protocol)
        self.boots, self._time_base, self._latest_time = boots, etime, etime
        self._time_at = time.monotonic()

    def _engine_time(self) -> int:
        return min(_MAX_INT, self._time_base + int(time.monotonic() - self._time_at))

    # -------------------------------------------------------------- encoding

    def _build(self, pdu: bytes, msg_id: int, discovery: bool) -> bytes:
        if discovery:
            engine, boots, etime, user, flags, alen = b"", 0, 0, b"", 0x04, 0
            msg_data = _tlv(0x30, b"\x04\x00\x04\x00" + pdu)
            pparams = b""
        else:
            engine, boots, etime = self.engine_id, self.boots, self._engine_time()
            user, flags, alen = self._user, 0x04 | self._flags, self._auth_len
            scoped = _tlv(0x30, _tlv(0x04, engine) + _tlv(0x04, self.context) + pdu)
            if self._flags & 2:
                enc, pparams = self._encrypt(scoped, boots, etime)
                msg_data = _tlv(0x04, enc)
            else:
                msg_data, pparams = scoped, b""
        glob = _tlv(0x30, _enc_int(msg_id) + _enc_int(self.MSG_MAX_SIZE) + b"\x04\x01" + bytes((flags,))
                    + b"\x02\x01\x03")                      # msgFlags, msgSecurityModel USM
        head = _tlv(0x04, engine) + _enc_int(boots) + _enc_int(etime) + _tlv(0x04, user) + b"\x04" + _enc_len(alen)
        usm_content = head + bytes(alen) + _tlv(0x04, pparams)
        usm = _tlv(0x30, usm_content)
        sec = _tlv(0x04, usm)
        body = b"\x02\x01\x03" + glob + sec + msg_data
        msg = _tlv(0x30, body)
        if alen:  # offset of the zeroed msgAuthenticationParameters: sum of what precedes them
            off = (len(msg) - len(body) + 3 + len(glob) + len(sec) - len(usm) + len(usm) - len(usm_content)
                   + len(head))
            digest = hmac.digest(self._kul, msg, self._hash)[:alen]
            msg = msg[:off] + digest + msg[off + alen:]
        return msg

    def _encrypt(self, scoped: bytes, boots: int, etime: int) -> tuple[bytes, bytes]:
        if PRIV[self.priv_protocol][0] == "des":
            salt = boots.to_bytes(4, "big") + (next(self._salt) & 0xFFFFFFFF).to_bytes(4, "big")
            iv = bytes(a ^ b for a, b in zip(self._kpriv[8:16], salt))
            scoped += bytes(-len(scoped) % 8)
            c = self._Cipher(self._DES(self._kpriv[:8] * 3), self._CBC(iv)).encryptor()
        else:
            salt = (next(self._salt) & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")
            iv = boots.to_bytes(4, "big") + etime.to_bytes(4, "big") + salt
            c = self._Cipher(self._AES(self._kpriv), self._CFB(iv)).encryptor()
        return c.update(scoped) + c.finalize(), salt

    def _decrypt(self, data: bytes, boots: int, etime: int, salt: bytes) -> bytes | None:
        if len(salt) != 8:
            return None
        if PRIV[self.priv_protocol][0] == "des":
            if len(data) % 8:
                return None
            iv = bytes(a ^ b for a, b in zip(self._kpriv[8:16], salt))
            c = self._Cipher(self._DES(self._kpriv[:8] * 3), self._CBC(iv)).decryptor()
        else:
            iv = boots.to_bytes(4, "big") + etime.to_bytes(4, "big") + salt
            c = self._Cipher(self._AES(self._kpriv), self._CFB(iv)).decryptor()
        return c.update(data) + c.finalize()

    # -------------------------------------------------------------- decoding

    def _on_datagram(self, data: bytes) -> None:
        w = self._waiter
        if w is None or w.done():
            return
        try:
            m = self._parse(data)
        except (BERError, IndexError, ValueError, TypeError):
            self.malformed += 1
            return
        if m is not None:
            w.set_result(m)

    def _parse(self, data: bytes) -> _Msg | None:
        """A received message -> _Msg, or None when it is not ours / fails auth (counted)."""
        p = 0

        def take(tag: int) -> bytes:
            """Content octets of the next TLV (which must have ``tag``); moves past it."""
            nonlocal p
            _, p, ln = hdr(data, p, tag)
            p += ln
            return data[p - ln:p]

        def uint(tag: int = 0x02) -> int:
            return int.from_bytes(take(tag), "big")

        _, p, _ = hdr(data, 0, 0x30)
        if take(0x02) != b"\x03":
            raise BERError("not an SNMPv3 message")
        _, p, _ = hdr(data, p, 0x30)                      # msgGlobalData
        msg_id, max_size = uint(), uint()
        flags = take(0x04)
        if len(flags) != 1:
            raise BERError("msgFlags is not one octet")
        flags = flags[0]
        if take(0x02) != b"\x03":
            raise BERError("not the USM security model")
        _, p, _ = hdr(data, p, 0x04)                      # msgSecurityParameters
        _, p, _ = hdr(data, p, 0x30)
        engine = take(0x04)
        boots, etime = uint(), uint()
        user = take(0x04)
        _, auth_at, auth_len = hdr(data, p, 0x04)
        p = auth_at + auth_len
        pparams = take(0x04)
        tag, q, ln = hdr(data, p)
        if max_size < 484 or max(max_size, boots, etime) > _MAX_INT:
            raise BERError("msgMaxSize, engine boots or time out of range")   # RFC 3412 6, RFC 3414 2.2
        want_msg, want_rid, discovery = self._want
        if msg_id != want_msg:
            return None                                   # late answer to an earlier try
        if flags & 1:
            if not self._flags & 1 or engine != self.engine_id or auth_len != self._auth_len:
                self.auth_failures += 1
                return None
            whole = data[:auth_at] + bytes(auth_len) + data[auth_at + auth_len:]
            if not hmac.compare_digest(hmac.digest(self._kul, whole, self._hash)[:auth_len],
                                       data[auth_at:auth_at + auth_len]):
                self.auth_failures += 1
                return None
            # RFC 3414 3.2.7b: keep the newest authenticated boots/time; an earlier boot, a time more
            # than 150 s behind ours or a latched engine (boots 2^31-1) is a replay
            if boots > self.boots or (boots == self.boots and etime > self._latest_time):
                self.boots, self._time_base, self._latest_time = boots, etime, etime
                self._time_at = time.monotonic()
            stale = self.boots == _MAX_INT or boots < self.boots or etime < self._engine_time() - 150
        else:
            stale = False
        if flags & 2:
            if tag != 0x04 or not flags & 1 or not self._flags & 2:
                raise BERError("encrypted message without authentication or privacy keys")
            scoped = self._decrypt(data[q:q + ln], boots, etime, pparams)
            if scoped is None:
                self.decrypt_failures += 1
                return None
            q = 0
        else:
            scoped = data
            q = p
        try:
            _, q, _ = hdr(scoped, q, 0x30)
            _, q, ln = hdr(scoped, q, 0x04)
            ctx_engine = scoped[q:q + ln]
            _, q, ln = hdr(scoped, q + ln, 0x04)
            ctx_name = scoped[q:q + ln]
            pdu_tag, rid, st, idx, vbs = decode_pdu(scoped, q + ln)
        except (BERError, IndexError, ValueError):
            if flags & 2:                                 # decrypted to garbage
                self.decrypt_failures += 1
                return None
            raise
        m = _Msg()
        m.report = pdu_tag == 0xA8
        if stale and not m.report:   # reports are not: a notInTimeWindow one is how the agent
            self.stale += 1          # tells us its clock went back (or ours ran ahead)
            return None
        if not m.report:   # RFC 3412 7.2.12b: the request-id, level, engine, user and context we asked with
            sent = (want_rid, 0) if discovery else (want_rid, self._flags, self.engine_id, self._user,
                                                     self.engine_id, self.context)
            if (rid, flags & 3, engine, user, ctx_engine, ctx_name)[:len(sent)] != sent:
                self.auth_failures += 1
                return None
        self.peer_max_size = max_size
        m.req_id, m.status, m.index, m.vbs = rid, st, idx, vbs
        m.engine, m.boots, m.time, m.flags = bytes(engine), boots, etime, flags
        return m

    # -------------------------------------------------------------- requests

    def _bad(self) -> int:
        return self.malformed + self.auth_failures + self.decrypt_failures + self.stale

    async def _exchange(self, kind: str, oids: list[bytes], reps: int, discovery: bool = False,
                        tries: int | None = None) -> _Msg | None:
        """Send (with retries) until a message of ours arrives; None on timeout."""
        loop = asyncio.get_running_loop()
        for _ in range(self.retries + 1 if tries is None else tries):
            msg_id = next(self._ids) & _MAX_INT
            msg = self._build(encode_pdu(kind, msg_id, oids, 0, reps), msg_id, discovery)
            if not discovery and self.peer_max_size and len(msg) > self.peer_max_size:
                raise _TooBig() if kind == "get" else _RequestTooBig()   # over the agent's msgMaxSize
            self._want = (msg_id, msg_id, discovery)
            self._waiter = loop.create_future()
            self.requests += 1
            self._transport.sendto(msg)
            try:
                async with asyncio.timeout(self.timeout):   # not wait_for: 3.11 can swallow a cancel
                    return await self._waiter
            except asyncio.TimeoutError:
                continue
            finally:
                self._waiter = None
        return None

    def _no_answer(self, bad_before: int, what: str) -> DeviceError:
        bad = self._bad() - bad_before
        if bad:
            return DeviceError("protocol", f"{bad} datagram(s) came back but none was a valid SNMP v3 response "
                                           f"(garbage, other SNMP version, failed authentication or a mangling "
                                           f"middlebox?)")
        return DeviceError("timeout", f"no response (timeout) after {self.retries + 1} x {self.timeout:g}s{what}")

    async def _discover(self) -> None:
        bad_before = self._bad()
        m = await self._exchange("get", [], 0, discovery=True)
        if m is None:
            raise self._no_answer(bad_before, " (no answer to SNMPv3 engine discovery)")
        if not m.engine:
            raise DeviceError("protocol", "agent answered SNMPv3 engine discovery without an engine ID")
        self.discoveries += 1
        self._set_engine(m.engine, m.boots, m.time)

    async def _request_locked(self, kind: str, oids: list[bytes], max_repetitions: int) -> list[tuple[bytes, Any]]:
        await self._ensure()
        if self.engine_id is None:
            await self._discover()
        resynced = rediscovered = restarted = False
        while True:
            bad_before, stale_before = self._bad(), self.stale
            m = await self._exchange(kind, oids, max_repetitions)
            if m is None:
                if self.stale > stale_before and not restarted:
                    restarted = True                      # agent back at fewer boots (reset, same engine
                    self.resyncs += 1                     # ID): start over as a new session would
                    await self._discover()
                    continue
                raise await self._timeout_error(kind, bad_before)
            if m.report:
                oid = decode_oid(m.vbs[0][0]) if m.vbs else ""
                if oid == _NOT_IN_TIME and not resynced:
                    resynced = True
                    self.resyncs += 1
                    if m.flags & 1 and m.engine == self.engine_id:
                        self._set_engine(m.engine, m.boots, m.time)   # authenticated: adopt the agent's clock
                    else:
                        await self._discover()            # unauthenticated report: ask again
                    continue
                if oid == _UNKNOWN_ENGINE and not rediscovered and m.engine:
                    rediscovered = True                   # agent replaced or engine ID changed
                    self.discoveries += 1
                    self._set_engine(m.engine, m.boots, m.time)
                    continue
                if oid == _NOT_IN_TIME and m.boots == _MAX_INT:
                    raise DeviceError("auth", "agent's snmpEngineBoots is latched at 2147483647 (RFC 3414 2.2.2): "
                                              "it accepts no authenticated request until it gets a new engine ID "
                                              "or new keys")
                reason, text = _REPORTS.get(oid, ("protocol", f"agent sent a report: {oid or 'empty'}"))
                raise DeviceError(reason, text.format(user=self.user))
            st, idx = m.status, m.index
            if st == 1:
                raise _TooBig()
            if st:
                where = f" at {decode_oid(oids[idx - 1])}" if 0 < idx <= len(oids) else ""
                if st == 16:
                    raise DeviceError("auth", f"access denied (authorizationError{where}): the view of this user "
                                              "excludes it or it needs a higher security level")
                raise DeviceError("protocol", f"{self.host}: agent returned {_ERROR_STATUS.get(st, str(st))}{where}")
            self.varbinds += len(m.vbs)
            return m.vbs

    async def _timeout_error(self, kind: str, bad_before: int) -> DeviceError:
        """Dead device, garbage, or an agent that drops what it cannot decrypt: ask discovery again."""
        err = self._no_answer(bad_before, "")
        if err.reason == "timeout" and self._flags & 2:
            if await self._exchange("get", [], 0, discovery=True, tries=1) is not None:
                return DeviceError("auth", f"agent answered SNMPv3 engine discovery but dropped the {kind} request: "
                                           f"wrong privacy key, or privacy protocol {self.priv_protocol} not the "
                                           f"one configured for user {self.user!r} on the agent")
        return err


async def discovery_answered(host: str, port: int, timeout: float) -> bool:
    """Does anything answer an SNMPv3 engine-discovery probe at host:port? (one try; used by the
    pysnmp path to tell "alive but dropping what it cannot decrypt" from a dead device)."""
    s = FastV3Session(host, port, user="discovery-probe", timeout=timeout, retries=0)
    try:
        await s._ensure()
        return await s._exchange("get", [], 0, discovery=True, tries=1) is not None
    except DeviceError:
        return False
    finally:
        await s.close()


def _canon(name: str | None) -> str | None:
    if name is None:
        return None
    n = str(name).strip().upper().replace("_", "-")
    return _ALIASES.get(n, _ALIASES.get(n.replace("-", ""), n))
