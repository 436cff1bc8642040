"""Password hashing for UI users: scrypt from the standard library (no new dependency).

Format: ``scrypt$N$r$p$<salt b64>$<hash b64>``; verification is constant time and reads the
parameters from the stored string, so they can be raised later without breaking old hashes.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

N, R, P = 2**14, 8, 1
MIN_LENGTH = 10


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    h = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=N, r=R, p=P, maxmem=64 * 2**20, dklen=32)
    return f"scrypt${N}${R}${P}${_b64(salt)}${_b64(h)}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        kind, n, r, p, salt, want = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r),
                             p=int(p), maxmem=64 * 2**20, dklen=len(base64.b64decode(want)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(want))


#: a hash to compare against when the user does not exist (same time as a real check)
DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def check_new_password(password: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_LENGTH:
        return f"password too short: at least {MIN_LENGTH} characters"
    if password.strip() != password:
        return "password must not start or end with white space"
    return None


def generate_password() -> str:
    return secrets.token_urlsafe(15)
