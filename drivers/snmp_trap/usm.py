"""SNMPv3 USM for a notification receiver (RFC 3412 / 3414 / 3826 / 7860), on the project's fast codec.

The poller's side lives in ``drivers.snmp.fastv3`` (a command generator: it discovers the agent's
engine). A trap receiver is the other way round:

* an SNMPv2-Trap is sent by an *authoritative* sender: the message carries the sender's engine ID,
  boots and time; keys are localised with that engine ID (``fastv3.localized_key``, cached);
  timeliness is checked against the newest authenticated boots/time seen from that engine
  (RFC 3414 3.2.7b: an earlier boot, or a time more than 150 s behind, is a replay);
* an InformRequest is sent to *us* as the authoritative engine: an unknown engine ID (the sender's
  discovery probe) is answered with a usmStatsUnknownEngineIDs Report carrying our engine ID,
  boots and time; a message outside our time window gets an authenticated usmStatsNotInTimeWindows
  Report; a good one gets the Response PDU (same request-id and varbinds), with the security level
  it came with.

Everything here is bytes in / bytes out; the driver owns sockets, users and counters. Key material
(password-to-key, localisation, AES key extension, ciphers) is fastv3's.
"""
from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from typing import Any

from drivers.snmp.fastv2c import BERError, _enc_int, _enc_len, _tlv, hdr
from drivers.snmp.fastv3 import AUTH, PRIV, _canon, _cipher_modules, localized_key, priv_key

__all__ = ["V3Header", "parse_header", "UsmKeys", "verify", "decrypt", "build_message", "USM_STATS",
           "canon_auth", "canon_priv", "MAX_INT"]

MAX_INT = 0x7FFFFFFF
_USM = "1.3.6.1.6.3.15.1.1."
#: report name -> OID of the usmStats counter (RFC 3414 5)
USM_STATS = {
    "unsupported_sec_level": _USM + "1.0",
    "not_in_time_window": _USM + "2.0",
    "unknown_user": _USM + "3.0",
    "unknown_engine_id": _USM + "4.0",
    "wrong_digest": _USM + "5.0",
    "decryption_error": _USM + "6.0",
}


def canon_auth(name: str | None) -> str | None:
    n = _canon(name)
    if n is not None and n not in AUTH:
        raise ValueError(f"unknown auth protocol {name!r} (use one of {', '.join(AUTH)})")
    return n


def canon_priv(name: str | None) -> str | None:
    n = _canon(name)
    if n is not None and n not in PRIV:
        raise ValueError(f"unknown privacy protocol {name!r} (use one of {', '.join(PRIV)})")
    return n


@dataclass(slots=True)
class V3Header:
    """The clear-text part of a received SNMPv3 message (RFC 3412 6, RFC 3414 2.4)."""
    msg_id: int
    max_size: int
    flags: int            # bit 0 auth, bit 1 priv, bit 2 reportable
    engine: bytes         # msgAuthoritativeEngineID
    boots: int
    time: int
    user: bytes
    auth_at: int          # offset of msgAuthenticationParameters in the message
    auth_len: int
    priv_params: bytes    # msgPrivacyParameters (the salt)
    data_tag: int         # 0x30 ScopedPDU, 0x04 encryptedPDU
    data_at: int          # content offset of msgData
    data_len: int


def parse_header(data: bytes) -> V3Header:
    """Parse the v3 header (no authentication, no decryption). Raises BERError/IndexError/ValueError."""
    _, p, _ = hdr(data, 0, 0x30)
    _, p, ln = hdr(data, p, 0x02)
    if data[p:p + ln] != b"\x03":
        raise BERError("not an SNMPv3 message")
    p += ln
    _, p, _ = hdr(data, p, 0x30)                      # msgGlobalData
    _, p, ln = hdr(data, p, 0x02)
    msg_id = int.from_bytes(data[p:p + ln], "big", signed=True)
    p += ln
    _, p, ln = hdr(data, p, 0x02)
    max_size = int.from_bytes(data[p:p + ln], "big", signed=True)
    p += ln
    _, p, ln = hdr(data, p, 0x04)
    if ln != 1:
        raise BERError("msgFlags is not one octet")
    flags = data[p]
    p += 1
    _, p, ln = hdr(data, p, 0x02)
    if data[p:p + ln] != b"\x03":
        raise BERError("not the USM security model")
    p += ln
    _, p, _ = hdr(data, p, 0x04)                      # msgSecurityParameters
    _, p, _ = hdr(data, p, 0x30)
    _, p, ln = hdr(data, p, 0x04)
    engine = data[p:p + ln]
    p += ln
    _, p, ln = hdr(data, p, 0x02)
    boots = int.from_bytes(data[p:p + ln], "big", signed=True)
    p += ln
    _, p, ln = hdr(data, p, 0x02)
    etime = int.from_bytes(data[p:p + ln], "big", signed=True)
    p += ln
    _, p, ln = hdr(data, p, 0x04)
    user = data[p:p + ln]
    p += ln
    _, auth_at, auth_len = hdr(data, p, 0x04)
    p = auth_at + auth_len
    _, p, ln = hdr(data, p, 0x04)
    priv_params = data[p:p + ln]
    p += ln
    tag, q, ln = hdr(data, p)
    if tag not in (0x30, 0x04):
        raise BERError(f"msgData is neither a ScopedPDU nor an encryptedPDU (tag 0x{tag:02x})")
    if msg_id < 0 or max_size < 484 or not 0 <= boots <= MAX_INT or not 0 <= etime <= MAX_INT:
        raise BERError("msgID, msgMaxSize, engine boots or time out of range")   # RFC 3412 6, RFC 3414 2.2
    if flags & 2 and not flags & 1:
        raise BERError("msgFlags: privacy without authentication")              # RFC 3412 7.2.5
    return V3Header(msg_id, max_size, flags, engine, boots, etime, user, auth_at, auth_len, priv_params,
                    tag, q, ln)


class UsmKeys:
    """One user's keys localised to one engine ID (hash name, digest length, Kul, Kpriv)."""

    __slots__ = ("auth", "priv", "hash", "alen", "kul", "kpriv")

    def __init__(self, auth: str | None, priv: str | None, auth_pw: bytes, priv_pw: bytes, engine: bytes):
        self.auth, self.priv = auth, priv
        self.hash, self.alen = AUTH[auth] if auth else ("", 0)
        self.kul = localized_key(auth_pw, engine, self.hash) if auth else b""
        self.kpriv = priv_key(priv_pw, engine, self.hash, priv) if priv else b""


def verify(data: bytes, h: V3Header, keys: UsmKeys) -> bool:
    """HMAC check of an authenticated message (RFC 3414 6.3.2 / 7.3.2, RFC 7860 4.2.2)."""
    if h.auth_len != keys.alen:
        return False
    whole = data[:h.auth_at] + bytes(h.auth_len) + data[h.auth_at + h.auth_len:]
    return hmac.compare_digest(hmac.digest(keys.kul, whole, keys.hash)[:keys.alen],
                               data[h.auth_at:h.auth_at + h.auth_len])


_CIPHERS: Any = None


def _ciphers():
    global _CIPHERS
    if _CIPHERS is None:
        _CIPHERS = _cipher_modules()
    return _CIPHERS


def decrypt(data: bytes, h: V3Header, keys: UsmKeys) -> bytes | None:
    """The ScopedPDU of an encrypted message, or None (bad salt length / padding). DES-CBC (RFC 3414
    8.1.1.3), AES-CFB128 with boots/time/salt IV (RFC 3826 3.1.2.1)."""
    salt, ct = h.priv_params, data[h.data_at:h.data_at + h.data_len]
    if len(salt) != 8 or h.data_tag != 0x04:
        return None
    Cipher, AES, DES, CBC, CFB = _ciphers()
    if PRIV[keys.priv][0] == "des":
        if len(ct) % 8:
            return None
        iv = bytes(a ^ b for a, b in zip(keys.kpriv[8:16], salt))
        c = Cipher(DES(keys.kpriv[:8] * 3), CBC(iv)).decryptor()
    else:
        iv = h.boots.to_bytes(4, "big") + h.time.to_bytes(4, "big") + salt
        c = Cipher(AES(keys.kpriv), CFB(iv)).decryptor()
    return c.update(ct) + c.finalize()


def _encrypt(scoped: bytes, keys: UsmKeys, boots: int, etime: int) -> tuple[bytes, bytes]:
    Cipher, AES, DES, CBC, CFB = _ciphers()
    if PRIV[keys.priv][0] == "des":
        salt = boots.to_bytes(4, "big") + os.urandom(4)
        iv = bytes(a ^ b for a, b in zip(keys.kpriv[8:16], salt))
        scoped += bytes(-len(scoped) % 8)
        c = Cipher(DES(keys.kpriv[:8] * 3), CBC(iv)).encryptor()
    else:
        salt = os.urandom(8)
        iv = boots.to_bytes(4, "big") + etime.to_bytes(4, "big") + salt
        c = Cipher(AES(keys.kpriv), CFB(iv)).encryptor()
    return c.update(scoped) + c.finalize(), salt


def build_message(msg_id: int, level: int, engine: bytes, boots: int, etime: int, user: bytes,
                  context_engine: bytes, context_name: bytes, pdu: bytes, keys: UsmKeys | None,
                  max_size: int = 65507) -> bytes:
    """An SNMPv3 message (not reportable) carrying ``pdu``; ``level``: 0 noAuthNoPriv, 1 authNoPriv,
    3 authPriv (``keys`` needed for 1 and 3)."""
    scoped = _tlv(0x30, _tlv(0x04, context_engine) + _tlv(0x04, context_name) + pdu)
    alen = keys.alen if level & 1 else 0
    if level & 2:
        enc, pparams = _encrypt(scoped, keys, boots, etime)
        msg_data = _tlv(0x04, enc)
    else:
        msg_data, pparams = scoped, b""
    glob = _tlv(0x30, _enc_int(msg_id) + _enc_int(max_size) + b"\x04\x01" + bytes((level & 3,)) + b"\x02\x01\x03")
    head = _tlv(0x04, engine) + _enc_int(boots) + _enc_int(etime) + _tlv(0x04, user) + b"\x04" + _enc_len(alen)
    usm_content = head + bytes(alen) + _tlv(0x04, pparams)
    usm = _tlv(0x30, usm_content)
    sec = _tlv(0x04, usm)
    body = b"\x02\x01\x03" + glob + sec + msg_data
    msg = _tlv(0x30, body)
    if alen:
        off = (len(msg) - len(body)) + 3 + len(glob) + (len(sec) - len(usm)) + (len(usm) - len(usm_content)) + len(head)
        digest = hmac.digest(keys.kul, msg, keys.hash)[:alen]
        msg = msg[:off] + digest + msg[off + alen:]
    return msg
