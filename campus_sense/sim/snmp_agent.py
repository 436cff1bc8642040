"""A small simulated SNMP v2c agent (UDP, loopback) for the demo and tests.

Built on pysnmp's low-level protocol API (pyasn1 BER codec + ``pysnmp.proto.api.v2c``) over a
plain asyncio datagram endpoint: GET, GETNEXT and GETBULK over a sorted OID table holding the
SNMPv2-MIB system group and IF-MIB ifTable/ifXTable. Interface counters grow with time
following a per-port traffic profile (base rate + slow sine), so pollers see moving rates.

    dev = await start_simulated_device("access", community="s3cret", port=0)
    ... poll 127.0.0.1:dev.port ...
    dev.set_oper(5, False)     # link down on ifIndex 5
    dev.reboot()               # sysUpTime and counters restart
    dev.close()

Kinds: ``core`` (core switch, 10G ports, ifHighSpeed 10000), ``access`` (48 x 1G + 2 x 10G
uplinks), ``wlc`` (Wi-Fi controller, a few interfaces; its VLAN interfaces only have 32-bit
counters, like some real controllers; 6 APs with two radios each in the AIRESPACE-WIRELESS-MIB
AP, radio and radio-load tables, channel utilisation moving with time, one AP
down; associated clients with RSSI/SNR in the mobile-station tables). ``learn_mac`` / ``learn_ip``
add BRIDGE-MIB forwarding and ipNetToMedia (ARP) entries for the hosts behind a port. Wrong
community: no answer (like real agents).
"""
from __future__ import annotations

import asyncio
import bisect
import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from pyasn1.codec.ber import decoder, encoder
from pyasn1.error import PyAsn1Error
from pysnmp.proto import api
from pysnmp.proto.api import v2c

log = logging.getLogger("campus_sense.sim.snmp")

__all__ = ["start_simulated_device", "SimulatedDevice", "Port", "KINDS"]

OID = tuple[int, ...]
_SYS = (1, 3, 6, 1, 2, 1, 1)
_IF = (1, 3, 6, 1, 2, 1, 2, 2, 1)
_IFX = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1)
_BSN_AP = (1, 3, 6, 1, 4, 1, 14179, 2, 2, 1, 1)       # bsnAPEntry, index AP base MAC
_BSN_IF = (1, 3, 6, 1, 4, 1, 14179, 2, 2, 2, 1)       # bsnAPIfEntry, index MAC + slot
_BSN_LOAD = (1, 3, 6, 1, 4, 1, 14179, 2, 2, 13, 1)    # bsnAPIfLoadParametersEntry, index MAC + slot
_BSN_STA = (1, 3, 6, 1, 4, 1, 14179, 2, 1, 4, 1)      # bsnMobileStationEntry, index client MAC
_BSN_STA_STATS = (1, 3, 6, 1, 4, 1, 14179, 2, 1, 6, 1)  # bsnMobileStationStatsEntry, index client MAC
_BASE_PORT_IFINDEX = (1, 3, 6, 1, 2, 1, 17, 1, 4, 1, 2)  # BRIDGE-MIB dot1dBasePortIfIndex.<port>
_TP_FDB = (1, 3, 6, 1, 2, 1, 17, 4, 3, 1)               # dot1dTpFdbEntry, index MAC
_NET_TO_MEDIA = (1, 3, 6, 1, 2, 1, 4, 22, 1)            # ipNetToMediaEntry, index ifIndex + IPv4
MAX_RESPONSE_VARBINDS = 120   # truncates big GETBULK answers, like agents bounded by message size


@dataclass
class Port:
    """One simulated interface and its traffic profile (bits per second)."""

    index: int
    name: str
    descr: str
    type: int = 6                  # ethernetCsmacd
    speed_mbps: int = 1000
    alias: str = ""
    admin_up: bool = True
    oper_up: bool = True
    in_bps: float = 0.0            # mean rate
    out_bps: float = 0.0
    swing: float = 0.3             # sine amplitude as a fraction of the mean
    period_s: float = 300.0
    phase: float = 0.0
    errors_ps: float = 0.0
    discards_ps: float = 0.0
    hc: bool = True                # has ifHCIn/OutOctets
    offset_octets: int = 0         # counter value at boot (e.g. close to a 32-bit wrap)
    mac: bytes = b""
    _frozen: dict[str, float] = field(default_factory=dict)
    _adjust: dict[str, float] = field(default_factory=lambda: {"in": 0.0, "out": 0.0})

    def octets(self, direction: str, t: float) -> int:
        """Closed-form integral of the rate profile: monotonic, deterministic; frozen while down."""
        if self._frozen:
            return int(self._frozen[direction])
        return int(self._integral(direction, t) + self._adjust[direction])

    def _integral(self, direction: str, t: float) -> float:
        base = self.in_bps if direction == "in" else self.out_bps
        w = 2 * math.pi / self.period_s
        amp = base * self.swing
        bits = base * t + amp / w * (math.cos(self.phase) - math.cos(w * t + self.phase))
        return self.offset_octets + bits / 8.0

    def freeze(self, t: float) -> None:
        self._frozen = {d: self._integral(d, t) + self._adjust[d] for d in ("in", "out")}

    def thaw(self, t: float) -> None:
        if self._frozen:
            self._adjust = {d: self._frozen[d] - self._integral(d, t) for d in ("in", "out")}
            self._frozen = {}


def _mac(seed: int, idx: int) -> bytes:
    return bytes([0x02, 0xCA, 0x5E, seed & 0xFF, (idx >> 8) & 0xFF, idx & 0xFF])


def _core(rng: random.Random, seed: int) -> tuple[dict[str, Any], list[Port]]:
    ports = []
    for n in range(1, 9):
        up = n <= 6
        ports.append(Port(n, f"Te1/0/{n}", f"TenGigabitEthernet1/0/{n}", speed_mbps=10000,
                          alias=f"uplink bldg-{chr(64 + n)}" if up else "", oper_up=up,
                          in_bps=rng.uniform(0.8e9, 3.5e9) if up else 0, out_bps=rng.uniform(0.8e9, 3.5e9) if up else 0,
                          phase=rng.uniform(0, 6.28), errors_ps=0.5 if n == 3 else 0.0, mac=_mac(seed, n),
                          offset_octets=(2 ** 32 - 500_000_000) if n == 1 else rng.randrange(10 ** 12)))
    ports.append(Port(9, "Gi0/0", "GigabitEthernet0/0", speed_mbps=1000, alias="oob-mgmt",
                      in_bps=2e5, out_bps=4e5, mac=_mac(seed, 9)))
    ports.append(Port(10, "Vl1", "Vlan1", type=53, speed_mbps=1000, in_bps=1e4, out_bps=1e4, mac=_mac(seed, 10)))
    ports.append(Port(11, "Lo0", "Loopback0", type=24, speed_mbps=8000, in_bps=0, out_bps=0))
    system = {"descr": "Cisco IOS Software [Cupertino], Catalyst L3 Switch Software (CAT9K_IOSXE), "
                       "Version 17.9.4a (campus-sense simulator)",
              "object_id": (1, 3, 6, 1, 4, 1, 9, 1, 2494), "name": "core-sw-sim"}
    return system, ports


def _access(rng: random.Random, seed: int) -> tuple[dict[str, Any], list[Port]]:
    ports = []
    for n in range(1, 49):
        used = n % 6 != 0           # every 6th port has nothing plugged in
        ports.append(Port(n, f"Gi1/0/{n}", f"GigabitEthernet1/0/{n}", speed_mbps=1000,
                          alias=f"room {100 + n}" if used else "", oper_up=used,
                          in_bps=rng.uniform(2e5, 4e7) if used else 0, out_bps=rng.uniform(2e5, 8e7) if used else 0,
                          phase=rng.uniform(0, 6.28), discards_ps=0.5 if n == 7 else 0.0,
                          errors_ps=3.0 if n == 13 else 0.0, mac=_mac(seed, n),
                          offset_octets=rng.randrange(2 ** 31)))
    for k in (1, 2):
        n = 48 + k
        ports.append(Port(n, f"Te1/1/{k}", f"TenGigabitEthernet1/1/{k}", speed_mbps=10000,
                          alias=f"uplink core-{k}", in_bps=rng.uniform(3e8, 9e8), out_bps=rng.uniform(1e8, 4e8),
                          phase=rng.uniform(0, 6.28), mac=_mac(seed, n),
                          offset_octets=(2 ** 32 - 200_000_000) if k == 1 else rng.randrange(10 ** 11)))
    ports.append(Port(51, "Vl1", "Vlan1", type=53, speed_mbps=1000, in_bps=5e3, out_bps=5e3, mac=_mac(seed, 51)))
    system = {"descr": "Cisco IOS Software, C2960X Software (C2960X-UNIVERSALK9-M), Version 15.2(7)E8 "
                       "(campus-sense simulator)",
              "object_id": (1, 3, 6, 1, 4, 1, 9, 1, 1208), "name": "access-sw-sim"}
    return system, ports


def _wlc(rng: random.Random, seed: int) -> tuple[dict[str, Any], list[Port]]:
    ports = [
        Port(1, "Te0/0/0", "TenGigabitEthernet0/0/0", speed_mbps=10000, alias="po1 member",
             in_bps=rng.uniform(3e8, 6e8), out_bps=rng.uniform(5e8, 9e8), phase=rng.uniform(0, 6.28), mac=_mac(seed, 1)),
        Port(2, "Te0/0/1", "TenGigabitEthernet0/0/1", speed_mbps=10000, alias="po1 member",
             in_bps=rng.uniform(3e8, 6e8), out_bps=rng.uniform(5e8, 9e8), phase=rng.uniform(0, 6.28), mac=_mac(seed, 2)),
        Port(3, "Po1", "Port-channel1", type=161, speed_mbps=20000, alias="to core",
             in_bps=9e8, out_bps=1.4e9, mac=_mac(seed, 3)),
        Port(4, "Vl10", "Vlan10", type=53, speed_mbps=1000, alias="wifi-staff", in_bps=2e8, out_bps=3e8,
             hc=False, offset_octets=2 ** 32 - 100_000_000, mac=_mac(seed, 4)),
        Port(5, "Vl20", "Vlan20", type=53, speed_mbps=1000, alias="wifi-guest", in_bps=5e7, out_bps=9e7,
             hc=False, mac=_mac(seed, 5)),
        Port(6, "Gi0", "GigabitEthernet0", speed_mbps=1000, alias="service port", in_bps=1e4, out_bps=2e4,
             mac=_mac(seed, 6)),
    ]
    system = {"descr": "Cisco IOS Software [Dublin], C9800 Software (C9800_IOSXE-K9), Version 17.12.3 "
                       "(campus-sense simulator)",
              "object_id": (1, 3, 6, 1, 4, 1, 9, 1, 2391), "name": "wlc-sim"}
    system["aps"] = [{"mac": bytes((0x70, 0x1f, 0x53, 0x10, seed % 256, n)), "name": f"AP-A-{100 + n}",
                      "room": f"A-{100 + n}", "ip": f"10.20.0.{10 + n}", "up": n != 6,
                      "clients": rng.randint(8, 30), "phase": rng.uniform(0, 6.28)} for n in range(1, 7)]
    # the associated clients (as many as the radios report), with the RSSI/SNR the controller sees
    # (Wi-Fi coverage per room): strong in most rooms, weak in the one AP-A-104 serves
    system["stations"] = [{"mac": bytes((0x3c, 0x22, 0xfb, seed % 256, ap["mac"][-1], k)), "ap": ap["mac"],
                           "slot": 0 if k % 10 < 3 else 1, "ip": f"10.30.{ap['mac'][-1]}.{10 + k}",
                           "ssid": "Guest" if k % 4 == 3 else "Campus",
                           "rssi": (-74 if ap["name"].endswith("104") else -52) - 2 * (k % 6) + rng.randint(-2, 2),
                           "snr": (18 if ap["name"].endswith("104") else 38) - k % 6}
                          for ap in system["aps"] if ap["up"] for k in range(ap["clients"])]
    return system, ports


def _wifi_table(t: dict, aps: list[dict], stations: list[dict]) -> None:
    """AIRESPACE-WIRELESS-MIB rows for the simulated controller (what cisco_wlc.yaml reads)."""
    def wave(ap: dict, mean: float, now: float) -> int:
        return max(0, round(mean * (1 + 0.4 * math.sin(now / 300 + ap["phase"]))))

    for ap in aps:
        i = tuple(ap["mac"])
        t[_BSN_AP + (3,) + i] = lambda now, ap=ap: v2c.OctetString(ap["name"])
        t[_BSN_AP + (4,) + i] = lambda now, ap=ap: v2c.OctetString(ap["room"])
        t[_BSN_AP + (6,) + i] = lambda now, ap=ap: v2c.Integer(1 if ap["up"] else 2)
        t[_BSN_AP + (8,) + i] = lambda now: v2c.OctetString("17.12.3.0")
        t[_BSN_AP + (16,) + i] = lambda now: v2c.OctetString("C9120AXI-E")
        t[_BSN_AP + (17,) + i] = lambda now, ap=ap: v2c.OctetString("FGL23%06d" % ap["mac"][-1])
        t[_BSN_AP + (19,) + i] = lambda now, ap=ap: v2c.IpAddress(ap["ip"])
        for slot, band, channel, share in ((0, 1, (1, 6, 11)[ap["mac"][-1] % 3], 0.3), (1, 2, 36 + 4 * ap["mac"][-1], 0.7)):
            j = i + (slot,)
            t[_BSN_IF + (2,) + j] = lambda now, b=band: v2c.Integer(b)
            t[_BSN_IF + (4,) + j] = lambda now, c=channel: v2c.Integer(c)
            t[_BSN_IF + (6,) + j] = lambda now: v2c.Integer(2)
            t[_BSN_IF + (12,) + j] = lambda now, ap=ap: v2c.Integer(2 if ap["up"] else 1)
            t[_BSN_LOAD + (3,) + j] = lambda now, ap=ap, sh=share: v2c.Integer(
                min(100, wave(ap, 60 * sh, now)) if ap["up"] else 0)
            # clients on this radio: the station table's rows (a controller counts what it lists)
            t[_BSN_LOAD + (4,) + j] = lambda now, n=sum(1 for st in stations if st["ap"] == ap["mac"]
                                                       and st["slot"] == slot): v2c.Integer(n)


def _stations_table(t: dict, stations: list[dict]) -> None:
    """bsnMobileStationTable and its stats table: the clients' AP, SSID and signal."""
    for st in stations:
        i = tuple(st["mac"])
        t[_BSN_STA + (2,) + i] = lambda now, st=st: v2c.IpAddress(st["ip"])
        t[_BSN_STA + (4,) + i] = lambda now, st=st: v2c.OctetString(st["ap"])
        t[_BSN_STA + (5,) + i] = lambda now, st=st: v2c.Integer(st["slot"])
        t[_BSN_STA + (7,) + i] = lambda now, st=st: v2c.OctetString(st["ssid"])
        t[_BSN_STA + (9,) + i] = lambda now: v2c.Integer(3)          # associated
        t[_BSN_STA_STATS + (1,) + i] = lambda now, st=st: v2c.Integer(st["rssi"] + round(2 * math.sin(now / 60)))
        t[_BSN_STA_STATS + (26,) + i] = lambda now, st=st: v2c.Integer(st["snr"])


KINDS: dict[str, Callable[[random.Random, int], tuple[dict[str, Any], list[Port]]]] = {
    "core": _core, "core_switch": _core,
    "access": _access, "access_switch": _access,
    "wlc": _wlc, "wifi_controller": _wlc,
}


class SimulatedDevice(asyncio.DatagramProtocol):
    """The running agent; returned by :func:`start_simulated_device`."""

    def __init__(self, kind: str, community: str, seed: int | None = None, name: str | None = None):
        if kind not in KINDS:
            raise ValueError(f"unknown simulated device kind {kind!r} (use one of {', '.join(sorted(KINDS))})")
        if not community:
            raise ValueError("a community is required (there is no default)")
        self.kind = kind
        self.community = community.encode()
        self.seed = random.randrange(256) if seed is None else seed
        self.system, self.ports = KINDS[kind](random.Random(self.seed), self.seed)
        if name:
            self.system["name"] = name
        self.started = time.monotonic()
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.requests = 0
        # Agent quirks seen in the field, for tests of the poller's defences:
        #: GETBULK answers carry at most this many varbinds (truncated, like a size-bounded agent)
        self.max_response_varbinds = MAX_RESPONSE_VARBINDS
        #: answer tooBig to a GETBULK asking for more than this many varbinds (None: never)
        self.too_big_above: int | None = None
        #: the successor of this OID is reported as the OID itself (a non-increasing OID bug)
        self.non_increasing_at: OID | None = None
        self._build_table()

    # ------------------------------------------------------------------ control

    def uptime_s(self) -> float:
        return time.monotonic() - self.started

    def set_oper(self, if_index: int, up: bool) -> None:
        p = self._port(if_index)
        if p.oper_up and not up:
            p.freeze(self.uptime_s())
        elif up and not p.oper_up:
            p.thaw(self.uptime_s())   # counting resumes from the frozen value
        p.oper_up = up

    def set_admin(self, if_index: int, up: bool) -> None:
        self._port(if_index).admin_up = up
        if not up:
            self.set_oper(if_index, False)

    def reboot(self) -> None:
        """sysUpTime restarts from 0 and all counters restart from 0."""
        self.started = time.monotonic()
        for p in self.ports:
            p.offset_octets = 0
            p._adjust = {"in": 0.0, "out": 0.0}
            if p._frozen:
                p._frozen = {"in": 0.0, "out": 0.0}

    def learn_mac(self, if_index: int, mac: bytes) -> None:
        """A host ``mac`` behind ``if_index``: a BRIDGE-MIB forwarding entry (bridge port = ifIndex)."""
        self._values[_BASE_PORT_IFINDEX + (if_index,)] = lambda now: v2c.Integer(if_index)
        self._values[_TP_FDB + (1,) + tuple(mac)] = lambda now: v2c.OctetString(mac)
        self._values[_TP_FDB + (2,) + tuple(mac)] = lambda now: v2c.Integer(if_index)
        self._values[_TP_FDB + (3,) + tuple(mac)] = lambda now: v2c.Integer(3)   # learned
        self._oids = sorted(self._values)

    def learn_ip(self, if_index: int, ip: str, mac: bytes) -> None:
        """An ARP entry (ipNetToMediaTable, dynamic) on a routed interface: ``ip`` is at ``mac``."""
        i = (if_index, *map(int, ip.split(".")))
        self._values[_NET_TO_MEDIA + (1,) + i] = lambda now: v2c.Integer(if_index)
        self._values[_NET_TO_MEDIA + (2,) + i] = lambda now: v2c.OctetString(mac)
        self._values[_NET_TO_MEDIA + (3,) + i] = lambda now: v2c.IpAddress(ip)
        self._values[_NET_TO_MEDIA + (4,) + i] = lambda now: v2c.Integer(3)      # dynamic
        self._oids = sorted(self._values)

    def _port(self, if_index: int) -> Port:
        for p in self.ports:
            if p.index == if_index:
                return p
        raise KeyError(f"no ifIndex {if_index}")

    def close(self) -> "asyncio.Future[None] | None":
        """Stop answering (immediately). Returns a finished future, so ``await dev.close()``
        works too; awaiting it is optional."""
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        try:
            fut = asyncio.get_running_loop().create_future()
        except RuntimeError:
            return None
        fut.set_result(None)
        return fut

    # ------------------------------------------------------------------ MIB

    def _build_table(self) -> None:
        t: dict[OID, Callable[[float], Any]] = {}
        s = self.system
        t[_SYS + (1, 0)] = lambda now: v2c.OctetString(s["descr"])
        t[_SYS + (2, 0)] = lambda now: v2c.ObjectIdentifier(s["object_id"])
        t[_SYS + (3, 0)] = lambda now: v2c.TimeTicks(int(now * 100) % 2 ** 32)
        t[_SYS + (4, 0)] = lambda now: v2c.OctetString("noc@campus.example")
        t[_SYS + (5, 0)] = lambda now: v2c.OctetString(s["name"])
        t[_SYS + (6, 0)] = lambda now: v2c.OctetString("simulated rack")
        t[_SYS + (7, 0)] = lambda now: v2c.Integer(6)
        t[(1, 3, 6, 1, 2, 1, 2, 1, 0)] = lambda now: v2c.Integer(len(self.ports))
        m32 = 2 ** 32
        for p in self.ports:
            i = (p.index,)

            def err(rate: float) -> Callable[[float], Any]:
                return lambda now: v2c.Counter32(int(rate * now) % m32)

            t[_IF + (1,) + i] = lambda now, p=p: v2c.Integer(p.index)
            t[_IF + (2,) + i] = lambda now, p=p: v2c.OctetString(p.descr)
            t[_IF + (3,) + i] = lambda now, p=p: v2c.Integer(p.type)
            t[_IF + (4,) + i] = lambda now, p=p: v2c.Integer(1500)
            t[_IF + (5,) + i] = lambda now, p=p: v2c.Gauge32(min(p.speed_mbps * 1_000_000, m32 - 1))
            t[_IF + (6,) + i] = lambda now, p=p: v2c.OctetString(p.mac)
            t[_IF + (7,) + i] = lambda now, p=p: v2c.Integer(1 if p.admin_up else 2)
            t[_IF + (8,) + i] = lambda now, p=p: v2c.Integer(1 if p.oper_up else 2)
            t[_IF + (9,) + i] = lambda now, p=p: v2c.TimeTicks(0)
            t[_IF + (10,) + i] = lambda now, p=p: v2c.Counter32(p.octets("in", now) % m32)
            t[_IF + (11,) + i] = lambda now, p=p: v2c.Counter32(p.octets("in", now) // 800 % m32)
            t[_IF + (13,) + i] = err(p.discards_ps)
            t[_IF + (14,) + i] = err(p.errors_ps)
            t[_IF + (16,) + i] = lambda now, p=p: v2c.Counter32(p.octets("out", now) % m32)
            t[_IF + (17,) + i] = lambda now, p=p: v2c.Counter32(p.octets("out", now) // 800 % m32)
            t[_IF + (19,) + i] = err(p.discards_ps / 2)
            t[_IF + (20,) + i] = err(0.0)
            t[_IFX + (1,) + i] = lambda now, p=p: v2c.OctetString(p.name)
            if p.hc:
                t[_IFX + (6,) + i] = lambda now, p=p: v2c.Counter64(p.octets("in", now) % 2 ** 64)
                t[_IFX + (10,) + i] = lambda now, p=p: v2c.Counter64(p.octets("out", now) % 2 ** 64)
            t[_IFX + (15,) + i] = lambda now, p=p: v2c.Gauge32(p.speed_mbps)
            t[_IFX + (18,) + i] = lambda now, p=p: v2c.OctetString(p.alias)
        if self.system.get("aps"):
            _wifi_table(t, self.system["aps"], self.system.get("stations") or [])
            _stations_table(t, self.system.get("stations") or [])
        self._values = t
        self._oids = sorted(t)

    def _get(self, oid: OID, now: float) -> Any:
        f = self._values.get(oid)
        if f is not None:
            return f(now)
        # noSuchInstance when the object type exists (a column/scalar prefix), else noSuchObject
        j = bisect.bisect_left(self._oids, oid)
        if j < len(self._oids) and self._oids[j][:len(oid) - 1] == oid[:-1]:
            return v2c.NoSuchInstance("")
        return v2c.NoSuchObject("")

    def _next(self, oid: OID) -> OID | None:
        if self.non_increasing_at is not None and oid == self.non_increasing_at:
            return oid
        j = bisect.bisect_right(self._oids, oid)
        return self._oids[j] if j < len(self._oids) else None

    # ------------------------------------------------------------------ protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.requests += 1
        try:
            rsp = self._handle(data)
        except (PyAsn1Error, ValueError, KeyError, TypeError) as e:
            log.debug("simulated agent: dropping bad datagram from %s: %s", addr, e)
            return
        if rsp is not None and self.transport is not None:
            self.transport.sendto(rsp, addr)

    def _handle(self, data: bytes) -> bytes | None:
        version = int(api.decodeMessageVersion(data))
        if version != api.SNMP_VERSION_2C:
            return None
        pmod = api.PROTOCOL_MODULES[version]
        req, _ = decoder.decode(data, asn1Spec=pmod.Message())
        if bytes(pmod.apiMessage.get_community(req)) != self.community:
            return None
        rsp = pmod.apiMessage.get_response(req)
        req_pdu = pmod.apiMessage.get_pdu(req)
        rsp_pdu = pmod.apiMessage.get_pdu(rsp)
        now = self.uptime_s()
        asked = [tuple(o) for o, _ in pmod.apiPDU.get_varbinds(req_pdu)]
        out: list[tuple[OID, Any]] = []
        if req_pdu.isSameTypeWith(pmod.GetRequestPDU()):
            out = [(o, self._get(o, now)) for o in asked]
        elif req_pdu.isSameTypeWith(pmod.GetNextRequestPDU()):
            for o in asked:
                n = self._next(o)
                out.append((o, v2c.EndOfMibView("")) if n is None else (n, self._values[n](now)))
        elif req_pdu.isSameTypeWith(pmod.GetBulkRequestPDU()):
            nr = max(0, int(v2c.apiBulkPDU.get_non_repeaters(req_pdu)))
            mr = max(0, int(v2c.apiBulkPDU.get_max_repetitions(req_pdu)))
            for o in asked[:nr]:
                n = self._next(o)
                out.append((o, v2c.EndOfMibView("")) if n is None else (n, self._values[n](now)))
            cur = list(asked[nr:])
            if self.too_big_above is not None and nr + mr * len(cur) > self.too_big_above:
                pmod.apiPDU.set_error_status(rsp_pdu, 1)   # tooBig
                pmod.apiPDU.set_error_index(rsp_pdu, 0)
                pmod.apiPDU.set_varbinds(rsp_pdu, [(v2c.ObjectIdentifier(o), v2c.Null("")) for o in asked])
                return encoder.encode(rsp)
            full = False
            for _ in range(mr):
                if not cur:
                    break
                all_end = True
                for k, o in enumerate(cur):
                    if len(out) >= max(1, self.max_response_varbinds):
                        full = True      # truncated, possibly in the middle of a row (RFC 3416 4.2.3)
                        break
                    n = self._next(o)
                    if n is None:
                        out.append((o, v2c.EndOfMibView("")))
                    else:
                        all_end = False
                        out.append((n, self._values[n](now)))
                        cur[k] = n
                if all_end or full:
                    break
        else:
            pmod.apiPDU.set_error_status(rsp_pdu, 5)  # genErr (SET and others are not supported)
            pmod.apiPDU.set_error_index(rsp_pdu, 1)
            out = [(o, v2c.Null("")) for o in asked]
        pmod.apiPDU.set_varbinds(rsp_pdu, [(v2c.ObjectIdentifier(o), v) for o, v in out])
        return encoder.encode(rsp)


async def start_simulated_device(kind: str, community: str, port: int = 0, host: str = "127.0.0.1",
                                 seed: int | None = None, name: str | None = None) -> SimulatedDevice:
    """Start a simulated ``kind`` device answering SNMP v2c ``community`` on ``host:port``
    (port 0 = pick a free one; read it back from ``.port``)."""
    dev = SimulatedDevice(kind, community, seed=seed, name=name)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: dev, local_addr=(host, port))
    dev.transport = transport  # type: ignore[assignment]
    dev.port = transport.get_extra_info("sockname")[1]
    return dev
