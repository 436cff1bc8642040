"""SNMP target and protocol names without pysnmp (the fast v2c/v3 clients and config validation
import only this; drivers.snmp.client, the pysnmp path, re-exports it). Keeping pysnmp (and the
cryptography it loads) out of a v2c-only agent saves ~10 MiB of its memory."""
from __future__ import annotations

from dataclasses import dataclass

from drivers.base import DeviceError

#: canonical auth / privacy protocol names (drivers.snmp.client maps them to pysnmp service ids)
AUTH_NAMES: tuple[str, ...] = ('MD5', 'SHA', 'SHA-224', 'SHA-256', 'SHA-384', 'SHA-512')
PRIV_NAMES: tuple[str, ...] = ('DES', '3DES', 'AES-128', 'AES-192', 'AES-256', 'AES-192-C', 'AES-256-C')
_AUTH_ALIASES = {"SHA1": "SHA", "SHA-1": "SHA", "SHA224": "SHA-224", "SHA256": "SHA-256",
                 "SHA384": "SHA-384", "SHA512": "SHA-512", "HMAC-MD5": "MD5"}
_PRIV_ALIASES = {"AES": "AES-128", "AES128": "AES-128", "AES192": "AES-192", "AES256": "AES-256",
                 "AES192C": "AES-192-C", "AES256C": "AES-256-C", "3DES-EDE": "3DES", "DES3": "3DES"}


def normalize_auth_protocol(name: str | None) -> str | None:
    """'sha256' / 'SHA-256' -> 'SHA-256'; raises ValueError for unknown names."""
    if name is None:
        return None
    n = str(name).strip().upper().replace("_", "-")
    n = _AUTH_ALIASES.get(n, _AUTH_ALIASES.get(n.replace("-", ""), n))
    if n not in AUTH_NAMES:
        raise ValueError(f"unknown auth protocol {name!r} (use one of {', '.join(AUTH_NAMES)})")
    return n


def normalize_priv_protocol(name: str | None) -> str | None:
    if name is None:
        return None
    n = str(name).strip().upper().replace("_", "-")
    n = _PRIV_ALIASES.get(n, _PRIV_ALIASES.get(n.replace("-", ""), n))
    if n not in PRIV_NAMES:
        raise ValueError(f"unknown privacy protocol {name!r} (use one of {', '.join(PRIV_NAMES)})")
    return n


# --------------------------------------------------------------------------- target


@dataclass(frozen=True)
class SnmpTarget:
    """Where and how to talk SNMP. ``version`` is "2c" or "3".

    v3: ``auth_protocol`` MD5|SHA|SHA-224|SHA-256|SHA-384|SHA-512 with ``auth_key``
    (authNoPriv), plus ``priv_protocol`` DES|AES(-128)|AES-192|AES-256 with ``priv_key``
    (authPriv). ``context`` is the v3 context name. ``timeout`` is per try, in seconds;
    ``retries`` is the number of extra tries.
    """

    host: str
    port: int = 161
    version: str = "2c"
    community: str | None = None
    user: str | None = None
    auth_protocol: str | None = None
    auth_key: str | None = None
    priv_protocol: str | None = None
    priv_key: str | None = None
    context: str | None = None
    timeout: float = 2.0
    retries: int = 1

    def __post_init__(self) -> None:
        v = str(self.version).lower().lstrip("v")
        if v not in ("2c", "3"):
            raise DeviceError("config", f"SNMP version must be '2c' or '3', got {self.version!r}")
        object.__setattr__(self, "version", v)
        if v == "2c" and not self.community:
            raise DeviceError("config", "SNMP v2c needs a community")
        if v == "3":
            if not self.user:
                raise DeviceError("config", "SNMP v3 needs a user")
            try:
                object.__setattr__(self, "auth_protocol", normalize_auth_protocol(self.auth_protocol))
                object.__setattr__(self, "priv_protocol", normalize_priv_protocol(self.priv_protocol))
            except ValueError as e:
                raise DeviceError("config", str(e)) from None
            if self.auth_key and not self.auth_protocol:
                object.__setattr__(self, "auth_protocol", "SHA")
            if self.auth_protocol and not self.auth_key:
                raise DeviceError("config", "auth_protocol given without auth_key")
            if self.priv_key and not self.priv_protocol:
                object.__setattr__(self, "priv_protocol", "AES-128")
            if self.priv_protocol and not self.priv_key:
                raise DeviceError("config", "priv_protocol given without priv_key")
            if self.priv_protocol and not self.auth_protocol:
                raise DeviceError("config", "privacy (authPriv) needs authentication too")
            for what, key in (("auth_key", self.auth_key), ("priv_key", self.priv_key)):
                if key is not None and len(key) < 8:
                    raise DeviceError("config", f"{what} must be at least 8 characters (RFC 3414)")

    @property
    def security_level(self) -> str:
        if self.version != "3":
            return "noAuthNoPriv"
        if self.priv_protocol:
            return "authPriv"
        if self.auth_protocol:
            return "authNoPriv"
        return "noAuthNoPriv"

    def describe(self) -> str:
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:  # never print secrets
        return (f"SnmpTarget({self.host}:{self.port}, v{self.version}, "
                f"{'user=' + repr(self.user) + ', ' + self.security_level if self.version == '3' else 'community=***'})")
