"""Probes for one address (SNMP, WS-Discovery, PJLink, Modbus), the scope and the rate limiter.

Every function that sends anything takes the :class:`Scope` and refuses an address outside it,
so no code path (LLDP/CDP neighbours, XAddrs, multicast answers) can reach beyond the given CIDRs.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Iterator

log = logging.getLogger("campus_sense.discover")


class OutOfScope(ValueError):
    pass


class Scope:
    def __init__(self, cidrs: list[str]):
        self.nets = []
        for c in cidrs:
            try:
                self.nets.append(ipaddress.ip_network(c.strip(), strict=False))
            except ValueError as e:
                raise ValueError(f"{c!r}: not a CIDR ({e})") from None
        if not self.nets:
            raise ValueError("give at least one CIDR")

    def __contains__(self, ip: Any) -> bool:
        try:
            a = ipaddress.ip_address(str(ip))
        except ValueError:
            return False
        return any(a in n for n in self.nets)

    def check(self, ip: str) -> str:
        if ip not in self:
            raise OutOfScope(f"{ip} is outside {', '.join(map(str, self.nets))}")
        return ip

    @property
    def loopback_only(self) -> bool:
        return all(n.is_loopback for n in self.nets)

    def size(self) -> int:
        return sum(n.num_addresses - (2 if n.version == 4 and n.prefixlen < 31 else 0) for n in self.nets)

    def hosts(self) -> Iterator[str]:
        seen: set[str] = set()
        for n in self.nets:
            it = n.hosts() if n.num_addresses > 2 else iter(n)
            for a in it:
                s = str(a)
                if s not in seen:
                    seen.add(s)
                    yield s


class RateLimiter:
    """Token bucket: at most ``rate`` acquisitions per second, bursts of ``burst``."""

    def __init__(self, rate: float, burst: int = 5):
        self.rate, self.burst = float(rate), burst
        self.tokens = float(burst)
        self.t = time.monotonic()
        self._lock = asyncio.Lock()
        self.count = 0

    async def __call__(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
                self.t = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    self.count += 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)


# ----------------------------------------------------------------------------- SNMP

SYS = {"descr": "1.3.6.1.2.1.1.1.0", "object_id": "1.3.6.1.2.1.1.2.0", "name": "1.3.6.1.2.1.1.5.0",
       "location": "1.3.6.1.2.1.1.6.0", "services": "1.3.6.1.2.1.1.7.0",
       "ip_forwarding": "1.3.6.1.2.1.4.1.0", "bridge_ports": "1.3.6.1.2.1.17.1.2.0"}
LLDP_MAN_ADDR = "1.0.8802.1.1.2.1.4.2.1.3"   # lldpRemManAddrIfSubtype: index = tm.port.rem.subtype.len.addr


def _text(v: Any) -> str | None:
    if isinstance(v, (bytes, bytearray)):
        v = bytes(v).decode("utf-8", "replace")
    if v is None:
        return None
    s = str(v).replace("\x00", "").strip()
    return s or None


def snmp_options(ip: str, port: int, cred: Any, timeout: float, retries: int = 1):
    """drivers.snmp.Options for one credential (V2c or V3 of the credentials file)."""
    from drivers.snmp import Options
    d: dict[str, Any] = {"host": ip, "port": port, "timeout_s": timeout, "retries": retries}
    if hasattr(cred, "community"):
        d.update(version="2c", community=cred.community)
    else:
        d.update(version="3", user=cred.user, auth_protocol=cred.auth_protocol, auth_key=cred.auth_key,
                 priv_protocol=cred.priv_protocol, priv_key=cred.priv_key, context=cred.context)
    return Options.model_validate(d)


async def snmp_probe(scope: Scope, ip: str, port: int, creds: list, limiter: RateLimiter,
                     timeout: float) -> tuple[int, dict[str, Any]] | None:
    """First credential (index into ``creds``) that answers the system group, with the values."""
    from drivers.base import DeviceError
    from drivers.snmp import open_session
    scope.check(ip)
    for i, cred in enumerate(creds):
        await limiter()
        s = open_session(snmp_options(ip, port, cred, timeout, retries=1))
        try:
            v = await s.get(list(SYS.values()))
        except (DeviceError, asyncio.TimeoutError, OSError):
            continue
        finally:
            try:
                await s.close()
            except Exception:  # noqa: BLE001
                pass
        got = {k: v.get(o) for k, o in SYS.items()}
        if got["object_id"] is None and got["descr"] is None:
            continue
        out = {k: (_text(x) if k in ("descr", "name", "location") else x) for k, x in got.items()}
        for k in ("services", "ip_forwarding", "bridge_ports"):
            if not isinstance(out[k], int):
                out[k] = None
        if not isinstance(out["object_id"], str):
            out["object_id"] = None
        return i, out
    return None


async def snmp_neighbours(scope: Scope, ip: str, port: int, cred: Any, limiter: RateLimiter, timeout: float,
                          sys_object_id: str | None, sys_descr: str | None, lldp: bool = True,
                          cdp: bool = True) -> list[dict]:
    """LLDP and CDP neighbours of a switch, merged (:func:`merge_neighbours`).

    LLDP: drivers.snmp.tables rows + ``mgmt_ip`` (lldpRemManAddrTable). CDP: cdpCacheTable rows
    (drivers.snmp.tables.collect_cdp) in the same shape. A switch that answers only one of them
    (CDP is Cisco's, LLDP is off by default on Cisco IOS) still gives its neighbours."""
    from drivers.base import DeviceError
    from drivers.snmp import open_session
    from drivers.snmp.tables import collect_sections
    scope.check(ip)
    want = [n for n, on in (("lldp", lldp), ("cdp", cdp)) if on]
    if not want:
        return []
    await limiter()
    s = open_session(snmp_options(ip, port, cred, timeout, retries=1))
    man: dict = {}
    try:
        sec = await collect_sections(s, sys_object_id, want, sys_descr=sys_descr,
                                     deadline_s=max(10.0, 10 * timeout))
        rows = sec.get("lldp") or []
        cdp_rows = sec.get("cdp") or []
        if rows:
            await limiter()
            man = (await s.walk([LLDP_MAN_ADDR])).get(LLDP_MAN_ADDR, {})
    except (DeviceError, asyncio.TimeoutError, OSError) as e:
        log.info("%s: LLDP/CDP not readable (%s)", ip, e)
        return []
    finally:
        try:
            await s.close()
        except Exception:  # noqa: BLE001
            pass
    addrs: dict[tuple[int, int], str] = {}
    for idx in man:
        try:
            subs = [int(x) for x in idx.split(".")]
        except ValueError:
            continue
        if len(subs) >= 9 and subs[3] == 1 and subs[4] == 4:       # ipv4, 4 octets
            addrs.setdefault((subs[1], subs[2]), ".".join(map(str, subs[5:9])))
        elif len(subs) >= 21 and subs[3] == 2 and subs[4] == 16:   # ipv6
            addrs.setdefault((subs[1], subs[2]), str(ipaddress.ip_address(bytes(subs[5:21]))))
    for r in rows:
        ipx = addrs.get((r.get("local_port_num"), r.get("remote_index")))
        if ipx:
            r["mgmt_ip"] = ipx
    return merge_neighbours(rows, [cdp_neighbour(r) for r in cdp_rows])


def cdp_neighbour(r: dict) -> dict:
    """A cdpCacheTable row (drivers.snmp.tables.collect_cdp) in the LLDP neighbour shape."""
    n = {"local_port": r.get("local_port"), "ifIndex": r.get("ifIndex"), "sys_name": r.get("device_id"),
         "port_id": r.get("device_port"), "sys_descr": r.get("platform")}
    if r.get("address_type") in ("ip", "ipv6") and r.get("address"):
        n["mgmt_ip"] = r["address"]
    return {k: v for k, v in n.items() if v is not None}


def _host_label(name: Any) -> str:
    """``SW1.campus.local`` / ``N7K(JAF1234)`` -> ``sw1`` / ``n7k`` (CDP device ids carry domains, serials)."""
    t = re.sub(r"\(.*\)$", "", str(name or "")).strip().lower()
    return t.split(".")[0] if t and not re.fullmatch(r"[0-9.]+", t) else t


def merge_neighbours(lldp: list[dict], cdp: list[dict]) -> list[dict]:
    """LLDP rows + CDP rows, one entry per neighbour: a CDP row on the same local port as an LLDP
    row naming the same device (management address or host name) is that row (``protocols``
    [lldp, cdp]; a missing management address is taken from CDP), otherwise its own entry."""
    out = [{**n, "protocols": ["lldp"]} for n in lldp]
    for c in cdp:
        for n in out:
            if "cdp" in n["protocols"]:
                continue
            same_port = (n.get("ifIndex") == c.get("ifIndex") if n.get("ifIndex") is not None
                         and c.get("ifIndex") is not None else n.get("local_port") == c.get("local_port"))
            if not same_port:
                continue
            if (n.get("mgmt_ip") and n.get("mgmt_ip") == c.get("mgmt_ip")) or \
                    (_host_label(n.get("sys_name")) and _host_label(n.get("sys_name")) == _host_label(c.get("sys_name"))):
                n["protocols"].append("cdp")
                for k in ("mgmt_ip", "sys_name", "port_id"):
                    if not n.get(k) and c.get(k):
                        n[k] = c[k]
                break
        else:
            out.append({**c, "protocols": ["cdp"]})
    return out


# ----------------------------------------------------------------------------- WS-Discovery (ONVIF)

WSD_PORT = 3702
WSD_MCAST = "239.255.255.250"
NS = {"s": "http://www.w3.org/2003/05/soap-envelope",
      "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
      "d": "http://schemas.xmlsoap.org/ws/2005/04/discovery",
      "dn": "http://www.onvif.org/ver10/network/wsdl",
      "tds": "http://www.onvif.org/ver10/device/wsdl"}
PROBE_ACTION = "http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe"
MATCHES_ACTION = "http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches"


def probe_message(message_id: str) -> bytes:
    """WS-Discovery (2005/04) Probe for ONVIF NetworkVideoTransmitters (ONVIF Core, Discovery)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<s:Envelope xmlns:s="{NS["s"]}" xmlns:a="{NS["a"]}" xmlns:d="{NS["d"]}" xmlns:dn="{NS["dn"]}">'
        "<s:Header>"
        f'<a:Action s:mustUnderstand="1">{PROBE_ACTION}</a:Action>'
        f"<a:MessageID>{message_id}</a:MessageID>"
        "<a:ReplyTo><a:Address>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address>"
        "</a:ReplyTo>"
        '<a:To s:mustUnderstand="1">urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To>'
        "</s:Header>"
        "<s:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types></d:Probe></s:Body>"
        "</s:Envelope>").encode()


def parse_probe_matches(data: bytes) -> tuple[str | None, list[dict]]:
    """-> (RelatesTo, [{address, types, scopes, xaddrs}]); raises ValueError on anything else."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise ValueError(f"not XML: {e}") from None
    action = root.findtext("s:Header/a:Action", namespaces=NS)
    if action is None or action.strip() != MATCHES_ACTION:
        raise ValueError(f"not ProbeMatches: {action!r}")
    relates = root.findtext("s:Header/a:RelatesTo", namespaces=NS)
    out = []
    for m in root.findall("s:Body/d:ProbeMatches/d:ProbeMatch", NS):
        out.append({"address": (m.findtext("a:EndpointReference/a:Address", default="", namespaces=NS)).strip(),
                    "types": (m.findtext("d:Types", default="", namespaces=NS)).strip(),
                    "scopes": (m.findtext("d:Scopes", default="", namespaces=NS)).split(),
                    "xaddrs": (m.findtext("d:XAddrs", default="", namespaces=NS)).split()})
    return (relates.strip() if relates else None), out


class WsdClient(asyncio.DatagramProtocol):
    """One UDP socket for all probes; answers are matched by RelatesTo and source address."""

    def __init__(self, scope: Scope, port: int = WSD_PORT):
        self.scope, self.port = scope, port
        self.waiters: dict[str, tuple[str | None, asyncio.Future]] = {}
        self.multicast: list[tuple[str, dict]] = []
        self.mcast_id: str | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.dropped = 0

    async def open(self) -> "WsdClient":
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("0.0.0.0", 0))
        return self

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def datagram_received(self, data: bytes, addr) -> None:
        src = addr[0]
        if src not in self.scope:      # a multicast answer from beyond the CIDRs: ignored
            self.dropped += 1
            return
        try:
            relates, matches = parse_probe_matches(data)
        except ValueError:
            return
        if relates and relates == self.mcast_id:
            for m in matches:
                self.multicast.append((src, m))
            return
        w = self.waiters.get(relates or "")
        if w is not None and (w[0] is None or w[0] == src) and not w[1].done():
            w[1].set_result(matches)

    async def probe(self, ip: str, limiter: RateLimiter, timeout: float) -> list[dict]:
        """Directed (unicast) Probe to ip:3702; sent twice (SOAP-over-UDP UNICAST_UDP_REPEAT)."""
        self.scope.check(ip)
        mid = f"urn:uuid:{uuid.uuid4()}"
        fut = asyncio.get_running_loop().create_future()
        self.waiters[mid] = (ip, fut)
        msg = probe_message(mid)
        try:
            for attempt in range(2):
                await limiter()
                self.transport.sendto(msg, (ip, self.port))
                try:
                    return await asyncio.wait_for(asyncio.shield(fut), timeout / 2 if attempt == 0 else timeout / 2)
                except asyncio.TimeoutError:
                    continue
            return []
        finally:
            self.waiters.pop(mid, None)

    async def probe_multicast(self, limiter: RateLimiter) -> None:
        self.mcast_id = f"urn:uuid:{uuid.uuid4()}"
        await limiter()
        self.transport.sendto(probe_message(self.mcast_id), (WSD_MCAST, WSD_PORT))


# ----------------------------------------------------------------------------- PJLink

async def pjlink_probe(scope: Scope, ip: str, port: int, limiter: RateLimiter, timeout: float,
                       passwords: list[Any]) -> dict | None:
    """PJLink greeting ('PJLINK 0' / 'PJLINK 1 <random>') + NAME/INF1/INF2/CLSS (class 1)."""
    import hashlib
    scope.check(ip)
    await limiter()
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return None
    out: dict[str, Any] = {"port": port}
    try:
        greet = (await asyncio.wait_for(r.readuntil(b"\r"), timeout)).decode("ascii", "replace").strip()
        m = re.fullmatch(r"PJLINK ([01])(?: ([0-9A-Fa-f]{8}))?", greet)
        if not m:
            return None
        prefix = ""
        out["auth"] = m.group(1) == "1"
        if out["auth"]:
            pw_i = None
            for i, p in enumerate(passwords):
                pw_i = i
                prefix = hashlib.md5((m.group(2) + p.reveal()).encode()).hexdigest()
                break
            if pw_i is None:
                return out          # a projector, but we have no password for it
            out["password_index"] = pw_i
        for cmd in ("NAME", "INF1", "INF2", "CLSS"):
            w.write(f"{prefix}%1{cmd} ?\r".encode())
            prefix = ""
            await w.drain()
            line = (await asyncio.wait_for(r.readuntil(b"\r"), timeout)).decode("utf-8", "replace").strip()
            if line.startswith("PJLINK ERRA"):
                out["auth_failed"] = True
                return out
            if line.startswith(f"%1{cmd}=") and not line[7:].startswith("ERR"):
                out[cmd.lower()] = line[7:].strip()
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass
    finally:
        w.close()
    return out


# ----------------------------------------------------------------------------- Modbus

async def modbus_probe(scope: Scope, ip: str, port: int, limiter: RateLimiter, timeout: float,
                       unit: int = 1) -> dict | None:
    """Modbus TCP: Read Device Identification (function 0x2B / MEI 0x0E, basic objects)."""
    scope.check(ip)
    await limiter()
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return None
    out: dict[str, Any] = {"port": port, "unit": unit}
    try:
        pdu = bytes([0x2B, 0x0E, 0x01, 0x00])
        w.write(b"\x00\x01\x00\x00" + (len(pdu) + 1).to_bytes(2, "big") + bytes([unit]) + pdu)
        await w.drain()
        hdr = await asyncio.wait_for(r.readexactly(7), timeout)
        body = await asyncio.wait_for(r.readexactly(int.from_bytes(hdr[4:6], "big") - 1), timeout)
        if body and body[0] == 0x2B and len(body) >= 7:
            n, p = body[6], 7
            names = {0: "vendor", 1: "product_code", 2: "revision"}
            for _ in range(n):
                if p + 2 > len(body):
                    break
                oid, ln = body[p], body[p + 1]
                out[names.get(oid, f"object_{oid}")] = body[p + 2:p + 2 + ln].decode("latin-1")
                p += 2 + ln
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
        pass
    finally:
        w.close()
    return out


@dataclass
class Found:
    """One address that answered."""
    ip: str
    via: str = "sweep"                              # sweep | lldp | cdp | multicast
    snmp: dict | None = None                        # system group + cred index + port
    neighbours: list[dict] = field(default_factory=list)   # LLDP + CDP, merged (probes.merge_neighbours)
    onvif: dict | None = None                       # {types, scopes, xaddrs, address}
    pjlink: dict | None = None
    modbus: dict | None = None
    kind: str = "other"
    routes: bool = False
    profile: str | None = None
    vendor: str | None = None
    name: str | None = None
    location: str | None = None
    room: str | None = None
    id: str = ""
