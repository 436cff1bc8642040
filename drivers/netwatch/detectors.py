"""Passive network-watch detectors: pure classes fed one packet at a time.

Nothing here opens a socket, reads a file or knows about the agent: the
``pcap-analyze`` command feeds packets from a capture, the streaming driver
feeds packets from a live sniffer and ``iw`` scan results; both read the same
tables and the same :class:`Findings`.

Detectors
---------
- :class:`DhcpWatch` - DHCP servers seen (OFFER/ACK/NAK), rogue DHCP vs an allow-list.
- :class:`ArpWatch`  - arpwatch-style: stations (ip, mac), IP claimed by another MAC
  (ip_conflict, flip-flop), ARP poisoning (arp_spoof), hosts outside the IP plan.
- :class:`WifiSurvey` - 802.11 beacons / probe responses (or ``iw`` scan results):
  BSSID, SSID (UTF-8, GBK fallback), channel, signal, security; rogue AP, evil twin,
  security downgrade.
- :class:`RaWatch`   - IPv6 router advertisements from unexpected routers.
- :class:`DeauthWatch` - 802.11 deauthentication/disassociation floods (Kismet's DEAUTHFLOOD).

Gateway protection (:class:`ArpWatch` ``protected``): gateways and servers bound to their MACs
(from the config, learned from the L3 switch's ARP table over SNMP, or the first MAC heard); any
other MAC claiming a protected IP is ``arp_spoof`` at once, even if the real owner was never heard.

:class:`NetWatch` bundles the four and renders the ``pcap-analyze --json`` report.
"""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable

log = logging.getLogger(__name__)


def load_layers() -> None:
    """Import the scapy layers the detectors need; this also registers the link types
    (Ethernet, Linux cooked, 802.11, radiotap, prism, PPI) with scapy's pcap readers."""
    import scapy.layers.dhcp  # noqa: F401
    import scapy.layers.dhcp6  # noqa: F401
    import scapy.layers.dot11  # noqa: F401
    import scapy.layers.inet  # noqa: F401
    import scapy.layers.inet6  # noqa: F401
    import scapy.layers.l2  # noqa: F401
    try:
        import scapy.layers.ppi  # noqa: F401
    except ImportError:  # older scapy
        pass


load_layers()

#: finding type -> default severity
SEVERITY: dict[str, str] = {
    "rogue_dhcp": "critical",
    "arp_spoof": "critical",
    "ip_conflict": "warning",
    "rogue_ap": "warning",
    "evil_twin": "critical",
    "rogue_ra": "critical",
    "outside_ip_plan": "warning",
    "deauth_flood": "critical",
}

ZERO_MAC = "00:00:00:00:00:00"
BCAST_MAC = "ff:ff:ff:ff:ff:ff"


# --------------------------------------------------------------------------- helpers

def norm_mac(value: Any) -> str | None:
    """``AA-BB-CC-DD-EE-FF`` / ``aabb.ccdd.eeff`` / bytes -> ``aa:bb:cc:dd:ee:ff``; None if not a MAC."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        if len(value) < 6:
            return None
        return ":".join(f"{b:02x}" for b in bytes(value[:6]))
    s = str(value).strip().lower()
    hexdigits = "".join(c for c in s if c in "0123456789abcdef")
    if len(hexdigits) != 12 or any(c not in "0123456789abcdef:-." for c in s):
        return None
    return ":".join(hexdigits[i:i + 2] for i in range(0, 12, 2))


def norm_ip(value: Any) -> str | None:
    try:
        return str(ipaddress.ip_address(str(value).strip()))
    except ValueError:
        return None


def parse_allow(values: Iterable[str] | None, what: str = "allow-list") -> tuple[set[str], set[str]]:
    """Split an allow-list of IPs and MACs into (ips, macs). Raises ValueError naming a bad entry."""
    ips: set[str] = set()
    macs: set[str] = set()
    for raw in values or ():
        for item in str(raw).replace(";", ",").split(","):
            item = item.strip()
            if not item:
                continue
            ip = norm_ip(item)
            mac = None if ip else norm_mac(item)
            if ip:
                ips.add(ip)
            elif mac:
                macs.add(mac)
            else:
                raise ValueError(f"{what}: {item!r} is neither an IP address nor a MAC address")
    return ips, macs


def parse_ip_plan(values: Iterable[str] | None) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    nets = []
    for raw in values or ():
        for item in str(raw).split(","):
            item = item.strip()
            if not item:
                continue
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"ip-plan: {item!r} is not a network (expected CIDR like 10.1.0.0/16)") from None
    return nets


@dataclass
class Protected:
    """A gateway/server binding: its IP, the MACs allowed to claim it, where they came from
    (``config``, ``snmp`` = the L3 switch's ARP table, ``first_seen`` = trust on first use)."""
    ip: str
    macs: set[str] = field(default_factory=set)
    name: str | None = None
    source: str = "config"

    def to_json(self) -> dict[str, Any]:
        return {"ip": self.ip, "macs": sorted(self.macs), "name": self.name, "source": self.source}


def parse_protected(values: Iterable[Any] | None) -> dict[str, Protected]:
    """``["10.20.0.1", "10.20.0.2=00:11:22:33:44:55", "10.20.0.3=aa..,bb..", {ip:, mac:|macs:, name:}]``
    -> {ip: Protected}; ValueError naming the bad entry."""
    out: dict[str, Protected] = {}
    for v in values or []:
        if isinstance(v, dict):
            ip_s, macs, name = v.get("ip"), v.get("macs") or ([v["mac"]] if v.get("mac") else []), v.get("name")
            if isinstance(macs, str):
                macs = [macs]
        else:
            ip_s, _, mac_s = str(v).partition("=")
            macs, name = [m for m in mac_s.split(",") if m.strip()], None
        ip = norm_ip(ip_s)
        if ip is None:
            raise ValueError(f"protected: {v!r}: not an IP address")
        nm = set()
        for m in macs:
            n = norm_mac(m)
            if n is None or n in (ZERO_MAC, BCAST_MAC):
                raise ValueError(f"protected: {v!r}: {m!r} is not a MAC address")
            nm.add(n)
        p = out.get(ip)
        if p is None:
            out[ip] = Protected(ip, nm, str(name) if name else None, "config" if nm else "first_seen")
        else:
            p.macs |= nm
            if nm:
                p.source = "config"
    return out


def parse_ssid_allow(values: Iterable[str] | None) -> dict[str, set[str]]:
    """``["eduroam=aa:..:01,aa:..:02", "Campus=bb:.."]`` -> {ssid: {bssid, ...}}.

    Within one argument a comma-separated token containing ``=`` starts a new SSID, so
    ``eduroam=AA,BB,Campus=CC`` also works. The SSID is split at the last ``=``.
    """
    out: dict[str, set[str]] = {}
    for raw in values or ():
        current: str | None = None
        for tok in str(raw).split(","):
            tok = tok.strip()
            if not tok:
                continue
            if "=" in tok:
                current, _, tok = tok.rpartition("=")
                if not current:
                    raise ValueError(f"ssid-allow: {raw!r}: empty SSID before '='")
                out.setdefault(current, set())
                if not tok:
                    continue
            if current is None:
                raise ValueError(f"ssid-allow: {raw!r}: expected SSID=BSSID[,BSSID...]")
            mac = norm_mac(tok)
            if not mac:
                raise ValueError(f"ssid-allow: {tok!r} (SSID {current!r}) is not a BSSID")
            out[current].add(mac)
    return out


def decode_ssid(raw: bytes | str | None) -> tuple[str, str]:
    """Decode an SSID: UTF-8, else GBK (common on Chinese campuses), else escaped bytes.

    Returns (ssid, encoding) with encoding ``utf-8`` | ``gbk`` | ``hidden`` | ``raw``.
    """
    if raw is None:
        return "", "hidden"
    if isinstance(raw, str):
        return raw, "utf-8"
    raw = bytes(raw)
    if not raw or not raw.strip(b"\x00"):
        return "", "hidden"
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("gbk"), "gbk"
    except UnicodeDecodeError:
        pass
    return raw.decode("utf-8", "backslashreplace"), "raw"


def freq_to_channel(freq: float | int | None) -> int | None:
    if not freq:
        return None
    f = int(round(float(freq)))
    if f == 2484:
        return 14
    if 2412 <= f <= 2472:
        return (f - 2407) // 5
    if f == 5935:
        return 2
    if 5955 <= f <= 7115:
        return (f - 5950) // 5
    if 4910 <= f <= 5895:
        return (f - 5000) // 5
    return None


# Security labels, weakest first. Transition mode (PSK + SAE) ranks below WPA3-only.
SECURITY_RANK = {"open": 0, "OWE": 1, "WEP": 1, "WPA": 2, "WPA2": 3, "WPA2/WPA3": 4, "WPA3": 5}

_AKM_NAMES = {1: "802.1X", 2: "PSK", 3: "FT-802.1X", 4: "FT-PSK", 5: "802.1X-SHA256", 6: "PSK-SHA256",
              8: "SAE", 9: "FT-SAE", 11: "802.1X-SUITE-B", 12: "802.1X-SUITE-B-192",
              13: "FT-802.1X-SHA384", 18: "OWE", 24: "SAE-EXT-KEY", 25: "FT-SAE-EXT-KEY"}
_SAE = {"SAE", "FT-SAE", "SAE-EXT-KEY", "FT-SAE-EXT-KEY", "802.1X-SUITE-B", "802.1X-SUITE-B-192",
        "FT-802.1X-SHA384"}
_WPA2 = {"PSK", "FT-PSK", "PSK-SHA256", "802.1X", "FT-802.1X", "802.1X-SHA256"}


def security_from_akms(akms: Iterable[str], rsn: bool, wpa1: bool, privacy: bool) -> str:
    akm = set(akms)
    if rsn:
        if akm & _SAE and akm & _WPA2:
            return "WPA2/WPA3"
        if akm & _SAE:
            return "WPA3"
        if "OWE" in akm and not akm & _WPA2:
            return "OWE"
        return "WPA2"
    if wpa1:
        return "WPA"
    if privacy:
        return "WEP"
    return "open"


def parse_rsn_akms(info: bytes) -> list[str]:
    """AKM suite names from an RSN element body (ID 48). Tolerates truncation."""
    try:
        i = 2 + 4  # version, group cipher
        n = int.from_bytes(info[i:i + 2], "little")
        i += 2 + 4 * n
        m = int.from_bytes(info[i:i + 2], "little")
        i += 2
        out = []
        for k in range(m):
            suite = info[i + 4 * k:i + 4 * k + 4]
            if len(suite) < 4:
                break
            if suite[:3] == b"\x00\x0f\xac":
                out.append(_AKM_NAMES.get(suite[3], f"00-0f-ac:{suite[3]}"))
            else:
                out.append(f"{suite[:3].hex('-')}:{suite[3]}")
        return out
    except (IndexError, ValueError):
        return []


def iter_ies(data: bytes) -> Iterable[tuple[int, bytes]]:
    i = 0
    while i + 2 <= len(data):
        eid, ln = data[i], data[i + 1]
        body = data[i + 2:i + 2 + ln]
        if len(body) < ln:
            return
        yield eid, body
        i += 2 + ln


# --------------------------------------------------------------------------- findings

@dataclass
class Finding:
    type: str
    key: str
    severity: str
    detail: dict[str, Any]
    first_seen: float | None = None
    last_seen: float | None = None
    count: int = 1

    def to_json(self) -> dict[str, Any]:
        d = dict(self.detail)
        d.setdefault("first_seen", self.first_seen)
        d.setdefault("last_seen", self.last_seen)
        d["count"] = self.count
        return {"type": self.type, "severity": self.severity, "detail": d}


class Findings:
    """Deduplicated findings, keyed by (type, key); repeated occurrences update the detail."""

    def __init__(self, max_items: int = 10000) -> None:
        self._items: dict[tuple[str, str], Finding] = {}
        self.new: list[Finding] = []  # drained by the streaming driver
        self.max_items = max_items
        self.suppressed = 0  # findings not kept because the table was full (floods)

    def add(self, type_: str, key: str, detail: dict[str, Any], ts: float | None = None,
            severity: str | None = None) -> tuple[Finding, bool]:
        k = (type_, key)
        f = self._items.get(k)
        if f is None:
            f = Finding(type_, key, severity or SEVERITY.get(type_, "warning"), dict(detail), ts, ts)
            if len(self._items) >= self.max_items:
                self.suppressed += 1
                return f, False
            self._items[k] = f
            self.new.append(f)
            return f, True
        f.detail.update(detail)
        f.count += 1
        if ts is not None:
            f.last_seen = ts
        if severity and SEVERITY_ORDER.get(severity, 0) > SEVERITY_ORDER.get(f.severity, 0):
            f.severity = severity
        return f, False

    def drain(self) -> list[Finding]:
        out, self.new = self.new, []
        return out

    def get(self, type_: str, key: str) -> Finding | None:
        return self._items.get((type_, key))

    def __iter__(self):
        return iter(self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def of_type(self, type_: str) -> list[Finding]:
        return [f for f in self._items.values() if f.type == type_]

    def to_json(self) -> list[dict[str, Any]]:
        return [f.to_json() for f in self._items.values()]


SEVERITY_ORDER = {"info": 0, "warning": 1, "critical": 2}


def _ether_src(pkt) -> str | None:
    """Link-layer source: Ethernet, or Linux cooked capture v1/v2 (``tcpdump -i any``)."""
    from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Ether
    if Ether in pkt:
        return norm_mac(pkt[Ether].src)
    for cls in (CookedLinux, CookedLinuxV2):
        if cls in pkt:
            sll = pkt[cls]
            if sll.lladdrlen == 6:
                return norm_mac(bytes(sll.src)[:6] if isinstance(sll.src, bytes) else sll.src)
    return None


def _ip_sort_key(ip: str):
    try:
        a = ipaddress.ip_address(ip)
        return (a.version, int(a))
    except ValueError:
        return (9, 0)


# --------------------------------------------------------------------------- DHCP

DHCP_TYPES = {"discover": 1, "offer": 2, "request": 3, "decline": 4, "ack": 5, "nak": 6, "release": 7,
              "inform": 8}


class DhcpWatch:
    """DHCP servers answering on the segment; rogue DHCP vs an allow-list of server IPs/MACs.

    With an allow-list, every server whose server identifier (option 54), IP source and
    MAC are all outside it is a ``rogue_dhcp`` finding (critical). Without one, a second
    distinct server is reported once as ``rogue_dhcp`` with reason ``multiple_servers``
    (warning): a segment should have one DHCP service.
    """

    def __init__(self, findings: Findings, allow: Iterable[str] | None = None):
        self.findings = findings
        self.allow_ips, self.allow_macs = parse_allow(allow, "dhcp-allow")
        self.servers: dict[tuple[str, str | None], dict[str, Any]] = {}

    @property
    def has_allow(self) -> bool:
        return bool(self.allow_ips or self.allow_macs)

    def feed(self, pkt, ts: float | None = None) -> None:
        from scapy.layers.dhcp import BOOTP, DHCP
        from scapy.layers.inet import IP
        if DHCP not in pkt or BOOTP not in pkt:
            self._feed6(pkt, ts)
            return
        bootp = pkt[BOOTP]
        if bootp.op != 2:  # BOOTREPLY only
            return
        opts: dict[str, Any] = {}
        for o in pkt[DHCP].options:
            if isinstance(o, tuple) and len(o) >= 2 and o[0] not in opts:
                opts[o[0]] = o[1]
        mt = opts.get("message-type")
        if isinstance(mt, str):
            mt = DHCP_TYPES.get(mt.lower())
        if mt not in (2, 5, 6):
            return
        src_ip = norm_ip(pkt[IP].src) if IP in pkt else None
        server_ip = norm_ip(opts.get("server_id")) or src_ip or "0.0.0.0"
        mac = _ether_src(pkt)
        client = norm_mac(bytes(bootp.chaddr)[:6]) if bootp.chaddr else None
        detail = {"server_ip": server_ip, "server_mac": mac, "offered_ip": norm_ip(bootp.yiaddr),
                  "client_mac": client, "message": {2: "offer", 5: "ack", 6: "nak"}[mt]}
        if src_ip and src_ip != server_ip:
            detail["relay_ip"] = src_ip
        self._record(server_ip, mac, src_ip, "offers" if mt == 2 else "acks" if mt == 5 else "naks", detail, ts)

    def _feed6(self, pkt, ts: float | None) -> None:
        from scapy.layers.dhcp6 import (DHCP6_Advertise, DHCP6_Reply, DHCP6OptIAAddress, DHCP6OptIAPrefix,
                                        DHCP6OptServerId)
        from scapy.layers.inet6 import IPv6
        if IPv6 not in pkt:
            return
        if DHCP6_Advertise in pkt:
            kind, msg = "offers", "advertise"
        elif DHCP6_Reply in pkt:
            kind, msg = "acks", "reply"
        else:
            return
        server_ip = norm_ip(pkt[IPv6].src) or "::"
        mac = _ether_src(pkt)
        offered = None
        if DHCP6OptIAAddress in pkt:
            offered = norm_ip(pkt[DHCP6OptIAAddress].addr)
        elif DHCP6OptIAPrefix in pkt:
            offered = f"{pkt[DHCP6OptIAPrefix].prefix}/{pkt[DHCP6OptIAPrefix].plen}"
        from scapy.layers.l2 import Ether
        detail = {"server_ip": server_ip, "server_mac": mac, "offered_ip": offered,
                  "client_mac": norm_mac(pkt[Ether].dst) if Ether in pkt else None, "message": msg,
                  "dhcp_version": 6}
        if DHCP6OptServerId in pkt:
            detail["server_duid"] = bytes(pkt[DHCP6OptServerId].duid).hex()
        self._record(server_ip, mac, server_ip, kind, detail, ts)

    def _record(self, server_ip: str, mac: str | None, src_ip: str | None, kind: str, detail: dict[str, Any],
                ts: float | None) -> None:
        entry = self.servers.get((server_ip, mac))
        if entry is None:
            entry = {"ip": server_ip, "mac": mac, "offers": 0, "acks": 0, "naks": 0,
                     "first_seen": ts, "relays": set()}
            self.servers[(server_ip, mac)] = entry
        entry[kind] += 1
        if src_ip and src_ip != server_ip:
            entry["relays"].add(src_ip)
        if self.has_allow:
            allowed = (server_ip in self.allow_ips or (src_ip in self.allow_ips if src_ip else False)
                       or (mac in self.allow_macs if mac else False))
            if not allowed:
                self.findings.add("rogue_dhcp", f"{server_ip}|{mac}",
                                  dict(detail, reason="not_in_allow_list"), ts)
        else:
            version = 6 if ":" in server_ip else 4
            ips = sorted({s["ip"] for s in self.servers.values() if (":" in s["ip"]) == (version == 6)},
                         key=_ip_sort_key)
            if len(ips) > 1:
                self.findings.add("rogue_dhcp", f"multiple_servers_v{version}",
                                  {"reason": "multiple_servers", "servers": ips, "dhcp_version": version,
                                   "note": "no DHCP allow-list configured"}, ts, severity="warning")

    def report(self) -> list[dict[str, Any]]:
        out = []
        for s in sorted(self.servers.values(), key=lambda s: (_ip_sort_key(s["ip"]), s["mac"] or "")):
            d = {"ip": s["ip"], "mac": s["mac"], "offers": s["offers"], "acks": s["acks"]}
            if s["relays"]:
                d["relays"] = sorted(s["relays"], key=_ip_sort_key)
            out.append(d)
        return out


# --------------------------------------------------------------------------- ARP

class ArpWatch:
    """arpwatch-style station table from ARP traffic.

    - every (ip, mac) claim from an ARP request/reply sender (probes with sender
      0.0.0.0 are ignored) is a station; new ones are queued in ``new_stations``;
    - an IP claimed by a second MAC -> ``ip_conflict`` (kind ``changed``; ``flip_flop``
      once it goes back to a MAC it had before);
    - a MAC that takes over an IP bound to another MAC while also claiming other IPs
      (the man-in-the-middle pattern of ARP poisoning) -> ``arp_spoof``; an ARP sender
      hardware address different from the Ethernet source -> ``arp_spoof``
      (reason ``ether_mismatch``);
    - with an IP plan, a sender IP outside every planned network -> ``outside_ip_plan``.
    """

    #: a previous owner counts as impersonated only if it was heard this recently (seconds);
    #: older bindings are taken to be DHCP reassignments, not poisoning
    spoof_window_s = 600.0

    def __init__(self, findings: Findings, ip_plan: Iterable[str] | None = None, max_stations: int = 65536,
                 protected: Iterable[Any] | None = None):
        self.findings = findings
        self.protected = parse_protected(protected)
        self.ip_plan = parse_ip_plan(ip_plan)
        self.max_stations = max_stations
        self.current: dict[str, str] = {}          # ip -> current mac
        self.history: dict[str, list[str]] = {}    # ip -> distinct macs, in order of appearance
        self.changes: dict[str, int] = {}          # ip -> number of mac changes
        self.pairs: dict[tuple[str, str], dict[str, Any]] = {}
        self.mac_ips: dict[str, set[str]] = {}
        self.new_stations: list[dict[str, Any]] = []
        self.overflow = 0

    def feed(self, pkt, ts: float | None = None) -> None:
        from scapy.layers.l2 import ARP
        if ARP not in pkt:
            return
        arp = pkt[ARP]
        if arp.hwtype != 1 or arp.ptype != 0x0800 or arp.op not in (1, 2):
            return
        ip = norm_ip(arp.psrc)
        mac = norm_mac(arp.hwsrc)
        if not ip or not mac or ip == "0.0.0.0" or mac in (ZERO_MAC, BCAST_MAC):
            return
        eth = _ether_src(pkt)
        if eth and eth != mac:
            self.findings.add("arp_spoof", f"ether_mismatch|{eth}|{mac}",
                              {"reason": "ether_mismatch", "ip": ip, "arp_mac": mac, "ether_src": eth}, ts)
        self.observe(ip, mac, ts, op=int(arp.op))

    def learn(self, ip: str, mac: str, source: str = "snmp") -> bool:
        """Bind a protected IP to the MAC the L3 switch has for it (``source``); a binding from the
        config is never replaced. Returns True when the binding changed."""
        p = self.protected.get(ip)
        mac = norm_mac(mac)
        if p is None or mac is None or mac in (ZERO_MAC, BCAST_MAC) or p.source == "config" or p.macs == {mac}:
            return False
        p.macs, p.source = {mac}, source
        return True

    def _check_protected(self, p: Protected, ip: str, mac: str, ts: float | None) -> None:
        if not p.macs:                      # IP only and no ARP table: the first MAC heard owns it
            p.macs.add(mac)
            p.source = "first_seen"
            return
        if mac in p.macs:
            return
        self.findings.add("arp_spoof", f"protected|{ip}|{mac}",
                          {"reason": "protected_ip", "ip": ip, "mac": mac, "expected_macs": sorted(p.macs),
                           "binding": p.source, "name": p.name}, ts)

    def observe(self, ip: str, mac: str, ts: float | None = None, op: int | None = None) -> None:
        p = self.protected.get(ip)
        if p is not None:
            self._check_protected(p, ip, mac, ts)
        pair = self.pairs.get((ip, mac))
        if pair is not None:
            pair["last_seen"] = ts
            pair["count"] += 1
        else:
            if len(self.pairs) >= self.max_stations:
                self.overflow += 1
                return
            pair = {"ip": ip, "mac": mac, "first_seen": ts, "last_seen": ts, "count": 1}
            self.pairs[(ip, mac)] = pair
            self.new_stations.append(pair)
            self._check_plan(ip, mac, ts)
        prev = self.current.get(ip)
        hist = self.history.setdefault(ip, [])
        self.mac_ips.setdefault(mac, set()).add(ip)
        if prev is not None and prev != mac:
            kind = "flip_flop" if mac in hist else "changed"
            self.changes[ip] = self.changes.get(ip, 0) + 1
            if mac not in hist:
                hist.append(mac)
            f, _ = self.findings.add("ip_conflict", ip, {"ip": ip, "macs": list(hist), "old_mac": prev,
                                                         "new_mac": mac, "changes": self.changes[ip]}, ts)
            if kind == "flip_flop" or f.detail.get("kind") == "flip_flop":
                f.detail["kind"] = "flip_flop"
            else:
                f.detail["kind"] = "changed"
            self._check_spoof(ip, mac, prev, ts)
        elif mac not in hist:
            hist.append(mac)
        self.current[ip] = mac

    def _check_spoof(self, ip: str, mac: str, prev: str, ts: float | None) -> None:
        ips = self.mac_ips.get(mac, set())
        if len(ips) < 2:
            return
        # IPs this MAC claims that were (first) bound to another MAC: the impersonated hosts
        victims = {}
        for other in sorted(ips, key=_ip_sort_key):
            hist = self.history.get(other, [])
            if hist and hist[0] != mac:
                owner = self.pairs.get((other, hist[0]), {})
                seen = owner.get("last_seen")
                if ts is None or seen is None or ts - seen <= self.spoof_window_s:
                    victims[other] = hist[0]
        if not victims:
            return
        own = sorted((i for i in ips if i not in victims), key=_ip_sort_key)
        self.findings.add("arp_spoof", f"mitm|{mac}",
                          {"reason": "mac_claims_other_hosts_ips", "mac": mac, "claimed_ips": victims,
                           "own_ips": own}, ts)

    def _check_plan(self, ip: str, mac: str, ts: float | None) -> None:
        if not self.ip_plan:
            return
        a = ipaddress.ip_address(ip)
        if any(a.version == n.version and a in n for n in self.ip_plan):
            return
        self.findings.add("outside_ip_plan", ip, {"ip": ip, "mac": mac, "source": "arp",
                                                  "ip_plan": [str(n) for n in self.ip_plan]}, ts)

    def stations(self) -> list[dict[str, Any]]:
        return [{"ip": p["ip"], "mac": p["mac"]}
                for p in sorted(self.pairs.values(), key=lambda p: (_ip_sort_key(p["ip"]), p["mac"]))]

    def conflicts(self) -> list[dict[str, Any]]:
        return [{"ip": ip, "macs": list(h)} for ip, h in sorted(self.history.items(), key=lambda kv: _ip_sort_key(kv[0]))
                if len(h) > 1]

    def report(self) -> dict[str, Any]:
        out = {"stations": self.stations(), "ip_conflicts": self.conflicts()}
        if self.protected:
            out["protected"] = [p.to_json() for p in sorted(self.protected.values(), key=lambda p: _ip_sort_key(p.ip))]
        return out


# --------------------------------------------------------------------------- Wi-Fi disconnect floods

class DeauthWatch:
    """802.11 deauthentication (subtype 12) and disassociation (subtype 10) floods, as Kismet's
    DEAUTHFLOOD: more than ``threshold`` such frames for one BSSID within ``window_s`` seconds
    (Kismet: more than 10 per second) -> ``deauth_flood`` (critical), keyed by BSSID, with the
    transmitters, targets (``broadcast`` when sent to ff:ff:ff:ff:ff:ff), reason codes and the
    frame count. Legitimate APs send a few when clients leave; aireplay-ng/mdk4 send hundreds."""

    def __init__(self, findings: Findings, threshold: int = 10, window_s: float = 1.0, max_bss: int = 5000):
        self.findings = findings
        self.threshold, self.window_s, self.max_bss = threshold, window_s, max_bss
        self.frames: dict[str, Any] = {}      # bssid -> deque of timestamps in the window
        self.totals: dict[str, dict[str, Any]] = {}
        self.seen = 0

    def feed(self, pkt, ts: float | None = None) -> None:
        from collections import deque

        from scapy.layers.dot11 import Dot11, RadioTap
        if Dot11 not in pkt:
            return
        d = pkt[Dot11]
        if d.type != 0 or d.subtype not in (10, 12):
            return
        self.seen += 1
        bssid = norm_mac(d.addr3) or norm_mac(d.addr2)
        if not bssid:
            return
        src, dst = norm_mac(d.addr2), norm_mac(d.addr1)
        t = ts if ts is not None else 0.0
        win = self.frames.get(bssid)
        if win is None:
            if len(self.frames) >= self.max_bss:
                return
            win = self.frames[bssid] = deque()
            self.totals[bssid] = {"frames": 0, "sources": set(), "targets": set(), "reasons": {}, "channel": None,
                                  "deauth": 0, "disassoc": 0}
        tot = self.totals[bssid]
        tot["frames"] += 1
        tot["deauth" if d.subtype == 12 else "disassoc"] += 1
        if src and len(tot["sources"]) < 32:
            tot["sources"].add(src)
        if dst and len(tot["targets"]) < 32:
            tot["targets"].add(dst)
        try:
            reason = int(d.payload.reason)
            tot["reasons"][reason] = tot["reasons"].get(reason, 0) + 1
        except (AttributeError, TypeError, ValueError):
            pass
        if RadioTap in pkt and tot["channel"] is None:
            tot["channel"] = freq_to_channel(getattr(pkt[RadioTap], "ChannelFrequency", None))
        win.append(t)
        while win and win[0] <= t - self.window_s:
            win.popleft()
        if len(win) > self.threshold:
            self.findings.add("deauth_flood", bssid, {
                "bssid": bssid, "frames_in_window": len(win), "window_s": self.window_s, "threshold": self.threshold,
                "frames_total": tot["frames"], "deauth": tot["deauth"], "disassoc": tot["disassoc"],
                "sources": sorted(tot["sources"]), "targets": sorted(tot["targets"])[:16],
                "broadcast": BCAST_MAC in tot["targets"], "reason_codes": dict(sorted(tot["reasons"].items())),
                "channel": tot["channel"]}, ts)


# --------------------------------------------------------------------------- Wi-Fi

@dataclass
class Bss:
    bssid: str
    ssid: str
    ssid_encoding: str
    channel: int | None
    signal_dbm: int | None
    security: str
    akm: list[str] = field(default_factory=list)
    best_security: str = "open"
    frames: int = 1
    first_seen: float | None = None
    last_seen: float | None = None
    noise_dbm: int | None = None   # radiotap antenna noise / iw survey dump of the channel (None: not known)

    def to_json(self) -> dict[str, Any]:
        return {"bssid": self.bssid, "ssid": self.ssid, "channel": self.channel,
                "signal_dbm": self.signal_dbm, "security": self.security}


class WifiSurvey:
    """802.11 survey from beacons / probe responses (monitor mode) or ``iw`` scan results.

    ``ssid_allow`` maps each campus SSID to its allowed BSSIDs. For a campus SSID:
    - a BSSID outside the list -> ``rogue_ap`` (warning), or ``evil_twin`` (critical) when
      it is open (reason ``open_clone``) or weaker than the campus baseline (the strongest
      security seen from the allowed BSSIDs; reason ``security_downgrade``);
    - an allowed BSSID that advertises weaker security than it did before ->
      ``evil_twin`` reason ``security_downgrade`` (a spoofed BSSID, or a reconfigured AP).
    Without an allow-list an SSID announced both open and protected by different BSSIDs is
    an ``evil_twin`` (reason ``open_clone``, warning): same name, different network.
    """

    def __init__(self, findings: Findings, ssid_allow: dict[str, Iterable[str]] | None = None,
                 max_bss: int = 20000):
        self.findings = findings
        self.max_bss = max_bss
        self.overflow = 0  # BSSIDs not tracked because the table was full (beacon floods)
        self.ssid_allow = {s: {norm_mac(b) for b in bs} for s, bs in (ssid_allow or {}).items()}
        self.bss: dict[str, Bss] = {}
        self.baseline: dict[str, int] = {}  # campus ssid -> strongest rank seen from allowed bssids

    def feed(self, pkt, ts: float | None = None) -> None:
        from scapy.layers.dot11 import Dot11, Dot11Beacon, Dot11ProbeResp, RadioTap
        if Dot11 not in pkt:
            return
        if Dot11Beacon in pkt:
            body = pkt[Dot11Beacon]
        elif Dot11ProbeResp in pkt:
            body = pkt[Dot11ProbeResp]
        else:
            return
        bssid = norm_mac(pkt[Dot11].addr3)
        if not bssid:
            return
        ies = bytes(body.payload)
        ssid_raw: bytes | None = None
        channel = None
        rsn = wpa1 = False
        akms: list[str] = []
        for eid, info in iter_ies(ies):
            if eid == 0 and ssid_raw is None:
                ssid_raw = info
            elif eid == 3 and info and channel is None:
                channel = info[0]
            elif eid == 61 and info and channel is None:
                channel = info[0]
            elif eid == 48:
                rsn = True
                akms = parse_rsn_akms(info)
            elif eid == 221 and info[:4] == b"\x00\x50\xf2\x01":
                wpa1 = True
        try:
            privacy = bool(body.cap.privacy)
        except AttributeError:
            privacy = False
        signal = noise = None
        if RadioTap in pkt:
            rt = pkt[RadioTap]
            sig = getattr(rt, "dBm_AntSignal", None)
            if sig is not None:
                signal = int(sig)
            nz = getattr(rt, "dBm_AntNoise", None)
            if nz is not None:
                noise = int(nz)
            if channel is None:
                channel = freq_to_channel(getattr(rt, "ChannelFrequency", None))
        else:
            try:
                from scapy.layers.dot11 import PrismHeader
                if PrismHeader in pkt:
                    signal = int(pkt[PrismHeader].signal)
            except Exception:  # noqa: BLE001 - optional header
                pass
        ssid, enc = decode_ssid(ssid_raw)
        self.observe(bssid, ssid, channel, signal, security_from_akms(akms, rsn, wpa1, privacy), ts,
                     akm=akms, ssid_encoding=enc, noise_dbm=noise)

    def observe(self, bssid: str, ssid: str, channel: int | None, signal_dbm: int | None, security: str,
                ts: float | None = None, akm: list[str] | None = None, ssid_encoding: str = "utf-8",
                noise_dbm: int | None = None) -> Bss:
        bssid = norm_mac(bssid) or bssid
        b = self.bss.get(bssid)
        if b is None:
            if len(self.bss) >= self.max_bss:
                self.overflow += 1
                if ssid not in self.ssid_allow:
                    return Bss(bssid, ssid, ssid_encoding, channel, signal_dbm, security, list(akm or []),
                               noise_dbm=noise_dbm)
            b = Bss(bssid, ssid, ssid_encoding, channel, signal_dbm, security, list(akm or []), security,
                    1, ts, ts, noise_dbm)
            self.bss[bssid] = b
        else:
            prev_best = b.best_security
            b.frames += 1
            b.last_seen = ts
            if channel is not None:
                b.channel = channel
            if signal_dbm is not None:
                b.signal_dbm = signal_dbm
                b.noise_dbm = noise_dbm   # a noise figure belongs to the reading it came with
            if ssid or not b.ssid:
                b.ssid, b.ssid_encoding = ssid, ssid_encoding
            b.security, b.akm = security, list(akm or [])
            if SECURITY_RANK[security] > SECURITY_RANK[prev_best]:
                b.best_security = security
            elif SECURITY_RANK[security] < SECURITY_RANK[prev_best] and ssid:
                self.findings.add("evil_twin", f"downgrade|{bssid}|{ssid}",
                                  {"reason": "security_downgrade", "bssid": bssid, "ssid": ssid,
                                   "security": security, "previous_security": prev_best,
                                   "allowed_bssid": bssid in self.ssid_allow.get(ssid, ())}, ts)
        self._evaluate(b, ts)
        return b

    def _evaluate(self, b: Bss, ts: float | None) -> None:
        if not b.ssid:
            return
        allowed = self.ssid_allow.get(b.ssid)
        if allowed is None:
            if not self.ssid_allow:
                self._heuristic(b.ssid, ts)
            return
        if b.bssid in allowed:
            rank = SECURITY_RANK[b.best_security]
            if rank > self.baseline.get(b.ssid, -1):
                self.baseline[b.ssid] = rank
                for other in self.bss.values():  # re-judge unknown BSSIDs against the new baseline
                    if other.ssid == b.ssid and other.bssid not in allowed:
                        self._judge_unknown(other, allowed, ts)
            return
        self._judge_unknown(b, allowed, ts)

    def _judge_unknown(self, b: Bss, allowed: set[str], ts: float | None) -> None:
        base = self.baseline.get(b.ssid)
        rank = SECURITY_RANK[b.security]
        detail = {"bssid": b.bssid, "ssid": b.ssid, "security": b.security, "channel": b.channel,
                  "signal_dbm": b.signal_dbm, "allowed_bssids": sorted(allowed)}
        if base is not None:
            detail["campus_security"] = _rank_name(base)
        if b.security == "open" and base != 0:
            self.findings.add("evil_twin", f"{b.bssid}|{b.ssid}", dict(detail, reason="open_clone"), ts)
        elif base is not None and rank < base:
            self.findings.add("evil_twin", f"{b.bssid}|{b.ssid}", dict(detail, reason="security_downgrade"), ts)
        else:
            self.findings.add("rogue_ap", f"{b.bssid}|{b.ssid}", dict(detail, reason="bssid_not_in_allow_list"),
                              ts)

    def _heuristic(self, ssid: str, ts: float | None) -> None:
        same = [x for x in self.bss.values() if x.ssid == ssid]
        opened = [x.bssid for x in same if x.security == "open"]
        protected = [x.bssid for x in same if x.security != "open"]
        if opened and protected:
            self.findings.add("evil_twin", f"mixed|{ssid}",
                              {"reason": "open_clone", "ssid": ssid, "open_bssids": sorted(opened),
                               "protected_bssids": sorted(protected), "note": "no SSID allow-list configured"},
                              ts, severity="warning")

    def report(self) -> list[dict[str, Any]]:
        return [b.to_json() for b in sorted(self.bss.values(), key=lambda b: (b.ssid, b.bssid))]


def _rank_name(rank: int) -> str:
    for name, r in SECURITY_RANK.items():
        if r == rank and name != "WEP":
            return name
    return str(rank)


# --------------------------------------------------------------------------- IPv6 RA

class RaWatch:
    """IPv6 router advertisements; ``rogue_ra`` for routers outside ``ra_allow`` (IPs or MACs).

    Without an allow-list a second distinct router is reported once (reason
    ``multiple_routers``, warning).
    """

    def __init__(self, findings: Findings, allow: Iterable[str] | None = None):
        self.findings = findings
        self.allow_ips, self.allow_macs = parse_allow(allow, "ra-allow")
        self.routers: dict[tuple[str, str | None], dict[str, Any]] = {}

    def feed(self, pkt, ts: float | None = None) -> None:
        from scapy.layers.inet6 import ICMPv6ND_RA, ICMPv6NDOptPrefixInfo, ICMPv6NDOptSrcLLAddr, IPv6
        if ICMPv6ND_RA not in pkt or IPv6 not in pkt:
            return
        ip = norm_ip(pkt[IPv6].src)
        mac = _ether_src(pkt)
        lladdr = norm_mac(pkt[ICMPv6NDOptSrcLLAddr].lladdr) if ICMPv6NDOptSrcLLAddr in pkt else None
        mac = mac or lladdr
        prefixes = []
        opt = pkt[ICMPv6ND_RA].payload
        while opt is not None and opt.__class__.__name__ != "NoPayload":
            if isinstance(opt, ICMPv6NDOptPrefixInfo):
                prefixes.append(f"{opt.prefix}/{opt.prefixlen}")
            opt = opt.payload
        r = self.routers.get((ip, mac))
        if r is None:
            r = {"ip": ip, "mac": mac, "prefixes": [], "count": 0}
            self.routers[(ip, mac)] = r
        r["count"] += 1
        r["router_lifetime"] = int(pkt[ICMPv6ND_RA].routerlifetime)
        for p in prefixes:
            if p not in r["prefixes"]:
                r["prefixes"].append(p)
        detail = {"router_ip": ip, "router_mac": mac, "prefixes": prefixes,
                  "router_lifetime": r["router_lifetime"]}
        if lladdr and lladdr != mac:
            detail["source_lladdr"] = lladdr
        if self.allow_ips or self.allow_macs:
            allowed = ip in self.allow_ips or (mac in self.allow_macs if mac else False) or (
                lladdr in self.allow_macs if lladdr else False)
            if not allowed:
                self.findings.add("rogue_ra", f"{ip}|{mac}", dict(detail, reason="not_in_allow_list"), ts)
        else:
            macs = sorted({str(x["mac"]) for x in self.routers.values()})
            if len(macs) > 1:
                self.findings.add("rogue_ra", "multiple_routers",
                                  {"reason": "multiple_routers",
                                   "routers": [{"ip": x["ip"], "mac": x["mac"]} for x in self.routers.values()],
                                   "note": "no RA allow-list configured"}, ts, severity="warning")

    def report(self) -> list[dict[str, Any]]:
        return [dict(r) for r in sorted(self.routers.values(), key=lambda r: (r["ip"] or "", r["mac"] or ""))]


# --------------------------------------------------------------------------- bundle

class NetWatch:
    """All detectors over one packet stream, sharing one :class:`Findings`."""

    def __init__(self, dhcp_allow=None, ssid_allow=None, ip_plan=None, ra_allow=None, max_stations: int = 65536,
                 protected=None, deauth_threshold: int = 10, deauth_window_s: float = 1.0):
        self.findings = Findings()
        self.dhcp = DhcpWatch(self.findings, dhcp_allow)
        self.arp = ArpWatch(self.findings, ip_plan, max_stations=max_stations, protected=protected)
        self.wifi = WifiSurvey(self.findings, ssid_allow)
        self.ra = RaWatch(self.findings, ra_allow)
        self.deauth = DeauthWatch(self.findings, deauth_threshold, deauth_window_s)
        self.packets = 0
        self.errors = 0

    def feed(self, pkt, ts: float | None = None) -> None:
        self.packets += 1
        if ts is None:
            t = getattr(pkt, "time", None)
            ts = float(t) if t is not None else None
        for det in (self.dhcp, self.arp, self.wifi, self.ra, self.deauth):
            try:
                det.feed(pkt, ts)
            except Exception as e:  # noqa: BLE001 - one malformed frame must not stop the watch
                self.errors += 1
                log.debug("netwatch: %s failed on packet %d: %s", type(det).__name__, self.packets, e)

    def report(self) -> dict[str, Any]:
        return {
            "dhcp_servers": self.dhcp.report(),
            "arp": self.arp.report(),
            "wifi": self.wifi.report(),
            "ipv6_routers": self.ra.report(),
            "findings": self.findings.to_json(),
        }
