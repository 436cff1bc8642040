"""SNMPv2-MIB system group and IF-MIB interfaces (ifTable + ifXTable), plus counter rates.

Reading is two requests per poll on a healthy agent: one GET for the system scalars and one
multi-column GETBULK walk (repeated while the agent truncates) for the interface columns.

Rates (:class:`RateTracker`) are computed from the previous poll of the same device:

* elapsed time = sysUpTime delta when it is sane (within 50%..150% of the wall-clock delta),
  otherwise the wall-clock delta;
* 64-bit counters (ifHC*) never wrap in practice: a decrease means the counter was reset;
* 32-bit counters wrap at 2**32: a decrease is taken as a wrap only if the implied delta is
  plausible (<= line rate x elapsed x 1.1 when the speed is known, else < 2**31);
  otherwise it is a reset;
* sysUpTime going backwards (not a 497-day TimeTicks wrap) = reboot: no rates this cycle,
  all baselines reset. A reset counter of one interface drops only that interface's rates.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:   # pysnmp is imported only where the pysnmp path is used
    from drivers.snmp.client import SnmpSession

# SNMPv2-MIB::system scalars
SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
SYS_CONTACT = "1.3.6.1.2.1.1.4.0"
SYS_NAME = "1.3.6.1.2.1.1.5.0"
SYS_LOCATION = "1.3.6.1.2.1.1.6.0"
SYSTEM_OIDS = [SYS_DESCR, SYS_OBJECT_ID, SYS_UPTIME, SYS_CONTACT, SYS_NAME, SYS_LOCATION]

_IF = "1.3.6.1.2.1.2.2.1."
_IFX = "1.3.6.1.2.1.31.1.1.1."
#: column name -> OID (walked together)
IF_COLUMNS: dict[str, str] = {
    "ifDescr": _IF + "2",
    "ifType": _IF + "3",
    "ifSpeed": _IF + "5",
    "ifPhysAddress": _IF + "6",
    "ifAdminStatus": _IF + "7",
    "ifOperStatus": _IF + "8",
    "ifInOctets": _IF + "10",
    "ifInDiscards": _IF + "13",
    "ifInErrors": _IF + "14",
    "ifOutOctets": _IF + "16",
    "ifOutDiscards": _IF + "19",
    "ifOutErrors": _IF + "20",
    "ifName": _IFX + "1",
    "ifHCInOctets": _IFX + "6",
    "ifHCOutOctets": _IFX + "10",
    "ifHighSpeed": _IFX + "15",
    "ifAlias": _IFX + "18",
}
#: columns needed for an inventory (no counters)
INVENTORY_COLUMNS = ["ifDescr", "ifType", "ifSpeed", "ifPhysAddress", "ifAdminStatus", "ifOperStatus",
                     "ifName", "ifHighSpeed", "ifAlias"]

#: a few IANA enterprise numbers -> vendor (vendor profiles refine this)
ENTERPRISES = {
    9: "Cisco", 11: "HPE", 43: "3Com", 171: "D-Link", 674: "Dell", 1916: "Extreme", 1991: "Brocade",
    2011: "Huawei", 2272: "Nortel", 2636: "Juniper", 3375: "F5", 4526: "Netgear", 6486: "Alcatel-Lucent",
    6527: "Nokia", 8072: "Net-SNMP", 11863: "TP-Link", 12356: "Fortinet", 14179: "Cisco",
    14823: "Aruba", 14988: "MikroTik", 25053: "Ruckus", 25506: "H3C", 25461: "Palo Alto Networks",
    30065: "Arista", 41112: "Ubiquiti", 47196: "Huawei",
}


# --------------------------------------------------------------------------- decoding


def decode_text(raw: Any) -> str | None:
    """DisplayString bytes -> str: UTF-8, else latin-1 when printable, else hex (aa:bb:...)."""
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw
    if isinstance(raw, int):
        return str(raw)
    b = bytes(raw)
    b = b.rstrip(b"\x00")
    try:
        s = b.decode("utf-8")
        if all(c.isprintable() or c in "\t\r\n" for c in s):
            return s
    except UnicodeDecodeError:
        pass
    if all(0x20 <= x < 0x7F or x >= 0xA0 or x in (9, 10, 13) for x in b):
        return b.decode("latin-1")
    return ":".join(f"{x:02x}" for x in b)


def format_mac(raw: Any) -> str | None:
    """6-byte ifPhysAddress -> 'aa:bb:cc:dd:ee:ff' (lower case); anything else -> None."""
    if not isinstance(raw, (bytes, bytearray)) or len(raw) != 6 or not any(raw):
        return None
    return ":".join(f"{x:02x}" for x in raw)


def speed_mbps(if_speed: int | None, if_high_speed: int | None) -> int | float | None:
    """ifHighSpeed (Mb/s) when present and non-zero, else ifSpeed (b/s) / 1e6."""
    if if_high_speed:
        return int(if_high_speed)
    if if_speed is None:
        return None if if_high_speed is None else 0
    v = int(if_speed) / 1_000_000
    return int(v) if v.is_integer() else round(v, 6)


def vendor_from_oid(sys_object_id: str | None) -> str | None:
    if not sys_object_id or not sys_object_id.startswith("1.3.6.1.4.1."):
        return None
    try:
        return ENTERPRISES.get(int(sys_object_id.split(".")[6]))
    except (IndexError, ValueError):
        return None


# --------------------------------------------------------------------------- model


@dataclass
class SystemInfo:
    descr: str | None
    object_id: str | None
    name: str | None
    uptime_ticks: int | None
    contact: str | None = None
    location: str | None = None

    @property
    def uptime_s(self) -> float | None:
        return None if self.uptime_ticks is None else self.uptime_ticks / 100.0


@dataclass
class Interface:
    index: int
    name: str | None
    descr: str | None
    alias: str | None
    type: int | None
    if_speed: int | None
    if_high_speed: int | None
    speed_mbps: int | float | None
    admin_status: int | None
    oper_status: int | None
    mac: str | None
    in_octets: int | None = None
    out_octets: int | None = None
    in_bits: int = 64               # 64 when ifHCInOctets is used, 32 when falling back to ifInOctets
    out_bits: int = 64
    in_errors: int | None = None
    out_errors: int | None = None
    in_discards: int | None = None
    out_discards: int | None = None

    @property
    def counter_bits(self) -> int:
        """64 when both octet counters are ifHC*, else 32."""
        return min(self.in_bits, self.out_bits)

    def bits_of(self, counter: str) -> int:
        if counter == "in_octets":
            return self.in_bits
        if counter == "out_octets":
            return self.out_bits
        return 32   # errors/discards are Counter32

    @property
    def admin_up(self) -> bool | None:
        return None if self.admin_status is None else self.admin_status == 1

    @property
    def oper_up(self) -> bool | None:
        return None if self.oper_status is None else self.oper_status == 1

    def inventory(self) -> dict[str, Any]:
        return {"ifIndex": self.index, "name": self.name, "descr": self.descr, "alias": self.alias,
                "type": self.type, "speed_mbps": self.speed_mbps, "admin_up": self.admin_up,
                "oper_up": self.oper_up, "mac": self.mac}


async def read_system(session: SnmpSession) -> SystemInfo:
    v = await session.get(SYSTEM_OIDS)
    up = v.get(SYS_UPTIME)
    oid = v.get(SYS_OBJECT_ID)
    return SystemInfo(descr=decode_text(v.get(SYS_DESCR)), object_id=oid if isinstance(oid, str) else None,
                      name=decode_text(v.get(SYS_NAME)), uptime_ticks=up if isinstance(up, int) else None,
                      contact=decode_text(v.get(SYS_CONTACT)), location=decode_text(v.get(SYS_LOCATION)))


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) else None


def build_interfaces(cols: dict[str, dict[str, Any]]) -> list[Interface]:
    """``{column name: {index: value}}`` -> interfaces sorted by ifIndex."""
    indexes: set[int] = set()
    for name in ("ifDescr", "ifType", "ifOperStatus", "ifName", "ifAdminStatus"):
        for k in cols.get(name, {}):
            if k.isdigit():
                indexes.add(int(k))
    out = []
    for i in sorted(indexes):
        k = str(i)

        def c(name: str) -> Any:
            return cols.get(name, {}).get(k)

        descr = decode_text(c("ifDescr"))
        name = decode_text(c("ifName")) or descr
        hc_in, hc_out = _int(c("ifHCInOctets")), _int(c("ifHCOutOctets"))
        in_oct, in_bits = (hc_in, 64) if hc_in is not None else (_int(c("ifInOctets")), 32)
        out_oct, out_bits = (hc_out, 64) if hc_out is not None else (_int(c("ifOutOctets")), 32)
        sp, hs = _int(c("ifSpeed")), _int(c("ifHighSpeed"))
        out.append(Interface(
            index=i, name=name, descr=descr, alias=decode_text(c("ifAlias")), type=_int(c("ifType")),
            if_speed=sp, if_high_speed=hs, speed_mbps=speed_mbps(sp, hs),
            admin_status=_int(c("ifAdminStatus")), oper_status=_int(c("ifOperStatus")),
            mac=format_mac(c("ifPhysAddress")), in_octets=in_oct, out_octets=out_oct,
            in_bits=in_bits, out_bits=out_bits,
            in_errors=_int(c("ifInErrors")), out_errors=_int(c("ifOutErrors")),
            in_discards=_int(c("ifInDiscards")), out_discards=_int(c("ifOutDiscards")),
        ))
    return out


async def read_interfaces(session: SnmpSession, max_repetitions: int = 25,
                          columns: list[str] | None = None) -> list[Interface]:
    names = columns or list(IF_COLUMNS)
    raw = await session.walk([IF_COLUMNS[n] for n in names], max_repetitions=max_repetitions)
    return build_interfaces({n: raw.get(IF_COLUMNS[n], {}) for n in names})


# --------------------------------------------------------------------------- rates

TICKS_MOD = 2 ** 32


def counter_delta(prev: int, cur: int, bits: int, max_delta: float | None = None) -> int | None:
    """Increase of a counter between two reads, or None when it was reset.

    64-bit: any decrease is a reset. 32-bit: a decrease is a wrap when the implied delta is
    plausible (``<= max_delta`` when given, else below half the modulus), otherwise a reset."""
    if cur >= prev:
        return cur - prev
    if bits >= 64:
        return None
    d = cur + (1 << bits) - prev
    limit = max_delta if max_delta is not None else float(1 << (bits - 1))
    return d if d <= limit else None


@dataclass
class _Baseline:
    wall: float
    ticks: int | None
    values: dict[str, tuple[int, int]] = field(default_factory=dict)   # counter -> (value, bits)


class RateTracker:
    """Per-device memory of the previous poll, turning counters into per-second rates."""

    COUNTERS = ("in_octets", "out_octets", "in_errors", "out_errors", "in_discards", "out_discards")

    def __init__(self) -> None:
        self._prev: dict[int, _Baseline] = {}
        self._prev_ticks: int | None = None
        self._prev_wall: float | None = None
        self.last_reboot = False

    def elapsed(self, ticks: int | None, wall: float) -> tuple[float | None, bool]:
        """(elapsed seconds or None, rebooted?) since the previous poll."""
        if self._prev_wall is None:
            return None, False
        wall_dt = wall - self._prev_wall
        if ticks is not None and self._prev_ticks is not None:
            dticks = ticks - self._prev_ticks
            if dticks < 0:
                wrapped = ticks + TICKS_MOD - self._prev_ticks
                # a genuine 497-day TimeTicks wrap only if it matches the wall clock
                if wall_dt > 0 and 0.5 * wall_dt <= wrapped / 100.0 <= 1.5 * wall_dt + 5:
                    dticks = wrapped
                else:
                    return None, True
            dev_dt = dticks / 100.0
            if wall_dt > 0 and dev_dt > 0 and 0.5 * wall_dt <= dev_dt <= 1.5 * wall_dt:
                return dev_dt, False
        return (wall_dt if wall_dt > 0 else None), False

    def update(self, ticks: int | None, interfaces: list[Interface], wall: float | None = None) -> dict[int, dict[str, float]]:
        """Record this poll; return ``{ifIndex: {in_bps, out_bps, in_errors_ps, ..., util_in_pct}}``
        for interfaces with a valid baseline (empty on the first poll and after a reboot)."""
        wall = time.monotonic() if wall is None else wall
        dt, rebooted = self.elapsed(ticks, wall)
        self.last_reboot = rebooted
        rates: dict[int, dict[str, float]] = {}
        new: dict[int, _Baseline] = {}
        for itf in interfaces:
            values = {k: (getattr(itf, k), itf.bits_of(k)) for k in self.COUNTERS if getattr(itf, k) is not None}
            new[itf.index] = _Baseline(wall, ticks, values)
            prev = self._prev.get(itf.index)
            if dt is None or dt <= 0 or rebooted or prev is None:
                continue
            speed_bps = (itf.speed_mbps or 0) * 1_000_000
            r: dict[str, float] = {}
            reset = False
            for k, (cur, bits) in values.items():
                if k not in prev.values:
                    continue
                before, before_bits = prev.values[k]
                if before_bits != bits:        # switched between ifHC* and 32-bit: new baseline
                    reset = True
                    break
                max_delta = speed_bps / 8 * dt * 1.1 + 1500 if (k.endswith("octets") and speed_bps) else None
                d = counter_delta(before, cur, bits, max_delta)
                if d is None:
                    reset = True
                    break
                r[k] = d / dt
            if reset:
                continue  # baseline already replaced by this poll's values
            out: dict[str, float] = {}
            if "in_octets" in r:
                out["in_bps"] = r["in_octets"] * 8
            if "out_octets" in r:
                out["out_bps"] = r["out_octets"] * 8
            for k in ("in_errors", "out_errors", "in_discards", "out_discards"):
                if k in r:
                    out[k + "_ps"] = r[k]
            if speed_bps:
                if "in_bps" in out:
                    out["util_in_pct"] = out["in_bps"] / speed_bps * 100.0
                if "out_bps" in out:
                    out["util_out_pct"] = out["out_bps"] / speed_bps * 100.0
            rates[itf.index] = out
        self._prev = new
        self._prev_ticks = ticks
        self._prev_wall = wall
        return rates
