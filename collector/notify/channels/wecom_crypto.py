"""WeCom (企业微信) callback crypto, to the published "接收消息与事件 / 加解密方案" spec:

* ``msg_signature = sha1(''.join(sorted([token, timestamp, nonce, encrypt])))`` (hex);
* ``EncodingAESKey`` is 43 characters: ``aes_key = base64decode(EncodingAESKey + "=")`` (32 bytes);
* ``encrypt`` is base64 of AES-256-CBC(key=aes_key, iv=aes_key[:16]) over
  ``random(16) + len(msg) (4 bytes, network order) + msg + receive_id`` padded with PKCS#7 to a
  multiple of 32 bytes; the receive id is the CorpID;
* URL verification: ``GET ?msg_signature&timestamp&nonce&echostr``: answer the decrypted echostr;
  messages and events: ``POST`` of ``<xml><ToUserName/><AgentID/><Encrypt/></xml>``.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 32


class WeComCryptoError(ValueError):
    pass


def signature(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    return hashlib.sha1("".join(sorted([token, timestamp, nonce, encrypt])).encode()).hexdigest()


def check_signature(token: str, timestamp: str, nonce: str, encrypt: str, msg_signature: str) -> bool:
    return hmac.compare_digest(signature(token, timestamp, nonce, encrypt), (msg_signature or "").lower())


def aes_key(encoding_aes_key: str) -> bytes:
    if len(encoding_aes_key) != 43:
        raise WeComCryptoError("EncodingAESKey must be 43 characters")
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except ValueError:
        raise WeComCryptoError("EncodingAESKey is not base64") from None
    if len(key) != 32:
        raise WeComCryptoError("EncodingAESKey does not decode to 32 bytes")
    return key


def decrypt(encoding_aes_key: str, encrypt: str) -> tuple[bytes, str]:
    """(message, receive_id) of an ``Encrypt`` value; WeComCryptoError when it is not well formed."""
    key = aes_key(encoding_aes_key)
    try:
        raw = base64.b64decode(encrypt, validate=True)
    except ValueError:
        raise WeComCryptoError("Encrypt is not base64") from None
    if not raw or len(raw) % 16:
        raise WeComCryptoError("Encrypt has a bad length")
    d = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    plain = d.update(raw) + d.finalize()
    pad = plain[-1]
    if not 1 <= pad <= BLOCK or plain[-pad:] != bytes([pad]) * pad:
        raise WeComCryptoError("bad padding")
    plain = plain[:-pad]
    if len(plain) < 20:
        raise WeComCryptoError("message too short")
    (n,) = struct.unpack("!I", plain[16:20])
    if 20 + n > len(plain):
        raise WeComCryptoError("bad message length")
    return plain[20:20 + n], plain[20 + n:].decode("utf-8", "replace")


def encrypt(encoding_aes_key: str, msg: bytes, receive_id: str, random16: bytes | None = None) -> str:
    """The inverse of ``decrypt`` (replies, tests)."""
    key = aes_key(encoding_aes_key)
    body = (random16 or os.urandom(16)) + struct.pack("!I", len(msg)) + msg + receive_id.encode()
    pad = BLOCK - len(body) % BLOCK
    body += bytes([pad]) * pad
    e = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(e.update(body) + e.finalize()).decode()
