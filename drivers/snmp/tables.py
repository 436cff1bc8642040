"""Network-depth SNMP sections: entity, lldp, fdb, arp, ip_addresses, poe, health, wifi (+ cdp on request).

Entry point (used by ``snmp-inventory --json`` and by the SNMP driver):

    sections = await collect_sections(session, sys_object_id, sections=None,
                                      deadline_s=20, vlan_session=None, profiles=None)
    # -> {"entity": {...}, "lldp": [...], "fdb": [...], "arp": [...], "ip_addresses": [...],
    #     "poe": {...}, "health": {...}, "wifi": {...},           (present when the device has data)
    #     "_errors": {"fdb": "...", ...}, "_profile": "cisco"}
    records = to_records(device_id, sections)   # Samples + Facts for the agent

``session`` is anything with ``async get(oids)`` and ``async walk(columns, max_repetitions)``
(drivers.snmp.client.SnmpSession or drivers.snmp.fastv2c.FastV2cSession). Each table is
collected on its own: a timeout, a protocol error or garbage values in one table are recorded
under ``_errors`` and never lose the others. Only the columns a section needs are walked,
several columns per GETBULK. ``cdp`` (CISCO-CDP-MIB cdpCacheTable) is opt-in: collected only when
``sections`` names it (``campus-sense discover`` does), never by default.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from typing import Any, Awaitable, Callable

from drivers.base import DeviceError, Facts, Record, Sample
from drivers.snmp.profiles import (BadValue, Profile, ProfileSet, Table, convert, decode_index, fmt_mac,
                                   load_profiles)

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- OIDs
IF_NAME = "1.3.6.1.2.1.31.1.1.1.1"
IF_DESCR = "1.3.6.1.2.1.2.2.1.2"
ENT = "1.3.6.1.2.1.47.1.1.1.1"
ENT_COLS = {"descr": 2, "class": 5, "name": 7, "hardware_rev": 8, "firmware_rev": 9, "software_rev": 10,
            "serial": 11, "mfg": 12, "model": 13}
ENT_CLASS = {1: "other", 2: "unknown", 3: "chassis", 4: "backplane", 5: "container", 6: "powerSupply",
             7: "fan", 8: "sensor", 9: "module", 10: "port", 11: "stack", 12: "cpu"}
LLDP_REM = "1.0.8802.1.1.2.1.4.1.1"
LLDP_LOC_PORT = "1.0.8802.1.1.2.1.3.7.1"
LLDP_REM_MAN = "1.0.8802.1.1.2.1.4.2.1.3"   # lldpRemManAddrIfSubtype (index carries the address)
CDP_CACHE = "1.3.6.1.4.1.9.9.23.1.2.1.1"     # cdpCacheEntry, index = ifIndex.cdpCacheDeviceIndex
CDP_COLS = {"address_type": 3, "address": 4, "device_id": 6, "device_port": 7, "platform": 8}
BASE_PORT_IFINDEX = "1.3.6.1.2.1.17.1.4.1.2"
TP_FDB = "1.3.6.1.2.1.17.4.3.1"
Q_TP_FDB = "1.3.6.1.2.1.17.7.1.2.2.1"
Q_VLAN_FDB_ID = "1.3.6.1.2.1.17.7.1.4.2.1.3"
VTP_VLAN_STATE = "1.3.6.1.4.1.9.9.46.1.3.1.1.2"
NET_TO_MEDIA = "1.3.6.1.2.1.4.22.1"
NET_TO_PHYS = "1.3.6.1.2.1.4.35.1"
IP_ADDR = "1.3.6.1.2.1.4.20.1"
IP_ADDRESS = "1.3.6.1.2.1.4.34.1"
PETH_PORT = "1.3.6.1.2.1.105.1.1.1"
PETH_MAIN = "1.3.6.1.2.1.105.1.3.1"
HR_STORAGE = "1.3.6.1.2.1.25.2.3.1"
HR_STORAGE_RAM = "1.3.6.1.2.1.25.2.1.2"
ENT_SENSOR = "1.3.6.1.2.1.99.1.1.1"

FDB_STATUS = {1: "other", 2: "invalid", 3: "learned", 4: "self", 5: "mgmt"}
ARP_TYPE = {1: "other", 2: "invalid", 3: "dynamic", 4: "static", 5: "local"}
POE_DETECT = {1: "disabled", 2: "searching", 3: "deliveringPower", 4: "fault", 5: "test", 6: "otherFault"}
SENSOR_TYPE = {1: "other", 2: "unknown", 3: "voltsAC", 4: "voltsDC", 5: "amperes", 6: "watts", 7: "hertz",
               8: "celsius", 9: "percentRH", 10: "rpm", 11: "cmm", 12: "truthvalue"}
LLDP_CHASSIS_SUBTYPE = {1: "chassisComponent", 2: "interfaceAlias", 3: "portComponent", 4: "macAddress",
                        5: "networkAddress", 6: "interfaceName", 7: "local"}
LLDP_PORT_SUBTYPE = {1: "interfaceAlias", 2: "portComponent", 3: "macAddress", 4: "networkAddress",
                     5: "interfaceName", 6: "agentCircuitId", 7: "local"}
CDP_ADDRESS_TYPE = {1: "ip", 20: "ipv6"}   # CiscoNetworkProtocol (the ones with an address we can use)
#: sections collected only when asked for by name (not in a profile's default set)
OPT_IN_SECTIONS = ("cdp",)

DEFAULT_REPS = 25
_profiles_cache: ProfileSet | None = None


def default_profiles() -> ProfileSet:
    global _profiles_cache
    if _profiles_cache is None:
        _profiles_cache = load_profiles()
    return _profiles_cache


def _col(table: str, n: int) -> str:
    return f"{table}.{n}"


def _text(v: Any) -> str:
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", "replace").replace("\x00", "").strip()
    return "" if v is None else str(v)


def _int(v: Any) -> int | None:
    if isinstance(v, int):
        return v
    return None


def _subs(suffix: str) -> list[int]:
    return [int(x) for x in suffix.split(".")] if suffix else []


def _inet_from_index(subs: list[int], i: int) -> tuple[str | None, int]:
    """InetAddressType + length-prefixed InetAddress at ``subs[i:]`` -> (address, next i)."""
    atype = subs[i]
    n = subs[i + 1]
    raw = bytes(x & 0xFF for x in subs[i + 2:i + 2 + n])
    if len(raw) != n:
        raise BadValue("index too short for address")
    nxt = i + 2 + n
    if atype in (1, 3) and n in (4, 8):
        return str(ipaddress.IPv4Address(raw[:4])), nxt
    if atype in (2, 4) and n in (16, 20):
        return str(ipaddress.IPv6Address(raw[:16])), nxt
    return None, nxt


class _Ctx:
    """Per-collection state: the session, the deadline, errors and shared lookups."""

    def __init__(self, session: Any, deadline: float, reps: int):
        self.session = session
        self.deadline = deadline
        self.reps = reps
        self.errors: dict[str, str] = {}
        self.bad_values: dict[str, int] = {}
        self._ifnames: dict[int, str] | None = None
        self.varbinds = 0

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    async def walk(self, columns: list[str], session: Any = None) -> dict[str, dict[str, Any]]:
        rem = self.remaining()
        if rem <= 0:
            raise DeviceError("timeout", "per-device deadline reached")
        s = session or self.session
        async with asyncio.timeout(rem):   # not wait_for: 3.11 can swallow a cancel there
            res = await s.walk(columns, self.reps)
        self.varbinds += sum(len(v) for v in res.values())
        for col, msg in (getattr(s, "walk_errors", None) or {}).items():  # fast client: per-column stops
            self.errors.setdefault(f"walk {col}", msg)
        return res

    async def get(self, oids: list[str]) -> dict[str, Any]:
        rem = self.remaining()
        if rem <= 0:
            raise DeviceError("timeout", "per-device deadline reached")
        async with asyncio.timeout(rem):
            return await self.session.get(oids)

    def bad(self, table: str, n: int = 1) -> None:
        self.bad_values[table] = self.bad_values.get(table, 0) + n

    async def ifnames(self) -> dict[int, str]:
        if self._ifnames is None:
            self._ifnames = {}
            try:
                r = await self.walk([IF_NAME, IF_DESCR])
            except (DeviceError, asyncio.TimeoutError) as e:
                self.errors.setdefault("ifnames", _err(e))
                return self._ifnames
            for src in (r.get(IF_DESCR, {}), r.get(IF_NAME, {})):  # ifName wins
                for k, v in src.items():
                    if k.isdigit():
                        t = _text(v)
                        if t:
                            self._ifnames[int(k)] = t
        return self._ifnames


def _err(e: BaseException) -> str:
    if isinstance(e, asyncio.TimeoutError):
        return "timeout: per-device deadline reached"
    if isinstance(e, DeviceError):
        return f"{e.reason}: {e}"
    return f"error: {type(e).__name__}: {e}"


# ---------------------------------------------------------------------------- entity

async def collect_entity(ctx: _Ctx) -> dict | None:
    cols = {k: _col(ENT, n) for k, n in ENT_COLS.items()}
    r = await ctx.walk(list(cols.values()))
    idx: set[str] = set()
    for c in cols.values():
        idx.update(r.get(c, {}))
    rows = []
    for i in sorted(idx, key=lambda s: _subs(s)):
        if not i.isdigit():
            ctx.bad("entity")
            continue
        row: dict[str, Any] = {"index": int(i)}
        for k, c in cols.items():
            v = r.get(c, {}).get(i)
            if v is None:
                continue
            if k == "class":
                if isinstance(v, int):
                    row[k] = ENT_CLASS.get(v, str(v))
                else:
                    ctx.bad("entity")
            else:
                row[k] = _text(v)
        rows.append(row)
    if not rows:
        return None
    chassis = next((x for x in rows if x.get("class") == "chassis"), None)
    if chassis is None:  # no class column: first entity with a serial or model
        chassis = next((x for x in rows if x.get("serial") or x.get("model")), rows[0])
    summary = {k: chassis.get(src) for k, src in (("model", "model"), ("serial", "serial"),
                                                   ("software", "software_rev"), ("firmware", "firmware_rev"),
                                                   ("hardware", "hardware_rev"), ("description", "descr"),
                                                   ("name", "name"))}
    if not summary["model"]:
        summary["model"] = chassis.get("descr") or None
    summary = {k: v for k, v in summary.items() if v}
    return {"chassis": summary, "physical": rows}


# ---------------------------------------------------------------------------- lldp

def _lldp_id(subtype: int | None, v: Any, mac_sub: int, addr_sub: int) -> str:
    if isinstance(v, (bytes, bytearray)):
        b = bytes(v)
        if subtype == mac_sub and len(b) == 6:
            return fmt_mac(b)
        if subtype == addr_sub and len(b) in (5, 17):  # IANA family byte + address
            try:
                return str(ipaddress.ip_address(b[1:]))
            except ValueError:
                pass
        t = b.decode("utf-8", "replace").replace("\x00", "").strip()
        if t.isprintable() and t:
            return t
        return b.hex()
    return _text(v)


async def collect_lldp(ctx: _Ctx) -> list | None:
    rem_cols = {k: _col(LLDP_REM, n) for k, n in
                (("chassis_subtype", 4), ("chassis_id", 5), ("port_subtype", 6), ("port_id", 7),
                 ("port_descr", 8), ("sys_name", 9), ("sys_descr", 10))}
    r = await ctx.walk(list(rem_cols.values()) + [_col(LLDP_LOC_PORT, 3), _col(LLDP_LOC_PORT, 4)])
    loc_id = r.get(_col(LLDP_LOC_PORT, 3), {})
    loc_desc = r.get(_col(LLDP_LOC_PORT, 4), {})
    idx: set[str] = set()
    for c in rem_cols.values():
        idx.update(r.get(c, {}))
    if not idx:
        return None
    names = await ctx.ifnames()
    by_name = {v: k for k, v in names.items()}
    out = []
    for i in sorted(idx, key=_subs):
        s = _subs(i)
        if len(s) != 3:
            ctx.bad("lldp")
            continue
        _, lport, rindex = s
        g = {k: r.get(c, {}).get(i) for k, c in rem_cols.items()}
        local_name = _text(loc_desc.get(str(lport))) or _text(loc_id.get(str(lport)))
        if_index = None
        for cand in (_text(loc_id.get(str(lport))), _text(loc_desc.get(str(lport)))):
            if cand in by_name:
                if_index = by_name[cand]
                break
        if if_index is None and lport in names:
            if_index = lport  # most agents number LLDP local ports by ifIndex
        row = {
            "local_port_num": lport,
            "local_port": names.get(if_index, local_name) if if_index else local_name,
            "ifIndex": if_index,
            "remote_index": rindex,
            "chassis_id_subtype": LLDP_CHASSIS_SUBTYPE.get(_int(g["chassis_subtype"]) or 0),
            "chassis_id": _lldp_id(_int(g["chassis_subtype"]), g["chassis_id"], 4, 5),
            "port_id_subtype": LLDP_PORT_SUBTYPE.get(_int(g["port_subtype"]) or 0),
            "port_id": _lldp_id(_int(g["port_subtype"]), g["port_id"], 3, 4),
            "port_descr": _text(g["port_descr"]) or None,
            "sys_name": _text(g["sys_name"]) or None,
            "sys_descr": _text(g["sys_descr"]) or None,
        }
        out.append({k: v for k, v in row.items() if v is not None})
    return out


# ---------------------------------------------------------------------------- cdp

def _cdp_address(atype: int | None, v: Any) -> str | None:
    """cdpCacheAddress: 4 octets for ip(1), 16 for ipv6(20); anything else as hex."""
    if not isinstance(v, (bytes, bytearray)):
        return _text(v) or None
    b = bytes(v)
    if not b:
        return None
    if atype == 1 and len(b) == 4:
        return str(ipaddress.IPv4Address(b))
    if atype == 20 and len(b) == 16:
        return str(ipaddress.IPv6Address(b))
    return b.hex()


async def collect_cdp(ctx: _Ctx) -> list | None:
    """CISCO-CDP-MIB cdpCacheTable: one row per CDP neighbour (local ifIndex, device id, port,
    platform, address)."""
    cols = {k: _col(CDP_CACHE, n) for k, n in CDP_COLS.items()}
    r = await ctx.walk(list(cols.values()))
    idx: set[str] = set()
    for c in cols.values():
        idx.update(r.get(c, {}))
    if not idx:
        return None
    names = await ctx.ifnames()
    out = []
    for i in sorted(idx, key=_subs):
        s = _subs(i)
        if len(s) != 2:
            ctx.bad("cdp")
            continue
        if_index, dev_index = s
        g = {k: r.get(c, {}).get(i) for k, c in cols.items()}
        atype = _int(g["address_type"])
        row = {
            "ifIndex": if_index,
            "local_port": names.get(if_index) or str(if_index),
            "device_index": dev_index,
            "device_id": _text(g["device_id"]) or None,
            "device_port": _text(g["device_port"]) or None,
            "platform": _text(g["platform"]) or None,
            "address_type": CDP_ADDRESS_TYPE.get(atype, str(atype)) if atype is not None else None,
            "address": _cdp_address(atype, g["address"]),
        }
        out.append({k: v for k, v in row.items() if v is not None})
    return out


# ---------------------------------------------------------------------------- fdb

def _fdb_rows(ctx: _Ctx, port_col: dict, status_col: dict, base_map: dict[int, int], names: dict[int, str],
              vlan_of: Callable[[list[int]], int | None], mac_at: int) -> list[dict]:
    rows = []
    for i, port in port_col.items():
        s = _subs(i)
        mac_s = s[mac_at:]
        if len(mac_s) != 6 or any(x > 255 for x in mac_s) or not isinstance(port, int):
            ctx.bad("fdb")
            continue
        st = status_col.get(i)
        if_index = base_map.get(port)
        row = {"mac": fmt_mac(bytes(mac_s)), "vlan": vlan_of(s), "bridge_port": port, "ifIndex": if_index,
               "ifName": names.get(if_index) if if_index is not None else None,
               "status": FDB_STATUS.get(st, str(st)) if isinstance(st, int) else None}
        rows.append(row)
    return rows


async def _bridge_walk(ctx: _Ctx, session: Any = None) -> tuple[dict, dict, dict]:
    r = await ctx.walk([BASE_PORT_IFINDEX, _col(TP_FDB, 2), _col(TP_FDB, 3)], session)
    base = {int(k): v for k, v in r.get(BASE_PORT_IFINDEX, {}).items() if k.isdigit() and isinstance(v, int)}
    return base, r.get(_col(TP_FDB, 2), {}), r.get(_col(TP_FDB, 3), {})


async def collect_fdb(ctx: _Ctx, profile: Profile, vlan_session: Callable[[int], Any] | None) -> list | None:
    names = await ctx.ifnames()
    rows: list[dict] = []
    q = await ctx.walk([_col(Q_TP_FDB, 2), _col(Q_TP_FDB, 3), Q_VLAN_FDB_ID, BASE_PORT_IFINDEX])
    base = {int(k): v for k, v in q.get(BASE_PORT_IFINDEX, {}).items() if k.isdigit() and isinstance(v, int)}
    fdb_to_vlan: dict[int, int] = {}
    for k, v in q.get(Q_VLAN_FDB_ID, {}).items():
        s = _subs(k)
        if len(s) == 2 and isinstance(v, int):
            fdb_to_vlan.setdefault(v, s[1])
    qport = q.get(_col(Q_TP_FDB, 2), {})
    if qport:
        rows = _fdb_rows(ctx, qport, q.get(_col(Q_TP_FDB, 3), {}), base, names,
                         lambda s: fdb_to_vlan.get(s[0], s[0]), 1)
        return rows or None
    # plain BRIDGE-MIB (one bridge), or Cisco: one bridge per VLAN context
    if profile.fdb_per_vlan_context and vlan_session is not None:
        vt = await ctx.walk([VTP_VLAN_STATE])
        vlans = sorted({_subs(k)[-1] for k, v in vt.get(VTP_VLAN_STATE, {}).items() if v == 1}
                       - {1002, 1003, 1004, 1005})
        sem = asyncio.Semaphore(4)
        per_vlan_errors: dict[int, str] = {}

        async def one(vlan: int) -> list[dict]:
            async with sem:
                s = vlan_session(vlan)
                try:
                    b, port, status = await _bridge_walk(ctx, s)
                except (DeviceError, asyncio.TimeoutError) as e:
                    per_vlan_errors[vlan] = _err(e)
                    return []
                finally:
                    close = getattr(s, "close", None)
                    if close is not None and s is not ctx.session:
                        await close()
                return _fdb_rows(ctx, port, status, b, names, lambda _s, v=vlan: v, 0)

        for part in await asyncio.gather(*(one(v) for v in vlans)):
            rows.extend(part)
        if per_vlan_errors:
            ctx.errors["fdb_vlans"] = "; ".join(f"vlan {v}: {e}" for v, e in sorted(per_vlan_errors.items()))
        if vlans and len(per_vlan_errors) < len(vlans):
            return rows or None
        # no VLAN context answered: fall back to the default context below
    b, port, status = await _bridge_walk(ctx)
    rows = _fdb_rows(ctx, port, status, b or base, names, lambda s: None, 0)
    return rows or None


# ---------------------------------------------------------------------------- arp

async def collect_arp(ctx: _Ctx) -> list | None:
    names = await ctx.ifnames()
    r = await ctx.walk([_col(NET_TO_PHYS, 4), _col(NET_TO_PHYS, 6), _col(NET_TO_MEDIA, 2), _col(NET_TO_MEDIA, 4)])
    out: dict[tuple, dict] = {}
    phys, ptype = r.get(_col(NET_TO_PHYS, 4), {}), r.get(_col(NET_TO_PHYS, 6), {})
    for i, mac in phys.items():
        try:
            s = _subs(i)
            ip, _ = _inet_from_index(s, 1)
            if ip is None or not isinstance(mac, (bytes, bytearray)) or len(mac) not in (0, 6):
                raise BadValue(i)
            if not mac:  # incomplete entry
                continue
            m = fmt_mac(mac)
        except (BadValue, IndexError, ValueError):
            ctx.bad("arp")
            continue
        t = ptype.get(i)
        out[(s[0], ip)] = {"ip": ip, "mac": m, "ifIndex": s[0], "ifName": names.get(s[0]),
                           "family": 6 if ":" in ip else 4,
                           "type": ARP_TYPE.get(t, str(t)) if isinstance(t, int) else None}
    media, mtype = r.get(_col(NET_TO_MEDIA, 2), {}), r.get(_col(NET_TO_MEDIA, 4), {})
    for i, mac in media.items():
        s = _subs(i)
        if len(s) != 5 or any(x > 255 for x in s[1:]) or not isinstance(mac, (bytes, bytearray)) \
                or len(mac) not in (0, 6):
            ctx.bad("arp")
            continue
        if not mac:
            continue
        ip = ".".join(map(str, s[1:]))
        if (s[0], ip) in out:
            continue
        t = mtype.get(i)
        out[(s[0], ip)] = {"ip": ip, "mac": fmt_mac(mac),
                           "ifIndex": s[0], "ifName": names.get(s[0]), "family": 4,
                           "type": ARP_TYPE.get(t, str(t)) if isinstance(t, int) else None}
    return list(out.values()) or None


# ---------------------------------------------------------------------------- ip addresses

async def collect_ip_addresses(ctx: _Ctx) -> list | None:
    names = await ctx.ifnames()
    r = await ctx.walk([_col(IP_ADDRESS, 3), _col(IP_ADDRESS, 4), _col(IP_ADDRESS, 5),
                        _col(IP_ADDR, 2), _col(IP_ADDR, 3)])
    out: dict[str, dict] = {}
    ifi, atype, prefix = r.get(_col(IP_ADDRESS, 3), {}), r.get(_col(IP_ADDRESS, 4), {}), r.get(_col(IP_ADDRESS, 5), {})
    for i, ifindex in ifi.items():
        try:
            ip, _ = _inet_from_index(_subs(i), 0)
        except (BadValue, IndexError, ValueError):
            ctx.bad("ip_addresses")
            continue
        if ip is None or not isinstance(ifindex, int):
            ctx.bad("ip_addresses")
            continue
        p = prefix.get(i)
        plen = None
        if isinstance(p, str) and p and p != "0.0":
            try:
                plen = int(p.rsplit(".", 1)[1])
            except ValueError:
                plen = None
        t = atype.get(i)
        out[ip] = {"ip": ip, "family": 6 if ":" in ip else 4, "ifIndex": ifindex, "ifName": names.get(ifindex),
                   "prefix_len": plen, "type": {1: "unicast", 2: "anycast", 3: "broadcast"}.get(t)}
    for i, ifindex in r.get(_col(IP_ADDR, 2), {}).items():
        s = _subs(i)
        if len(s) != 4 or any(x > 255 for x in s) or not isinstance(ifindex, int):
            ctx.bad("ip_addresses")
            continue
        ip = ".".join(map(str, s))
        mask = r.get(_col(IP_ADDR, 3), {}).get(i)
        plen = None
        if isinstance(mask, str):
            try:
                plen = ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
            except ValueError:
                ctx.bad("ip_addresses")
        if ip in out:
            if out[ip]["prefix_len"] is None:
                out[ip]["prefix_len"] = plen
            continue
        out[ip] = {"ip": ip, "family": 4, "ifIndex": ifindex, "ifName": names.get(ifindex), "prefix_len": plen,
                   "type": "unicast"}
    return sorted(out.values(), key=lambda x: (x["family"], x["ip"])) or None


# ---------------------------------------------------------------------------- profile tables

async def collect_table(ctx: _Ctx, name: str, t: Table) -> list[dict]:
    """Walk (or GET, for scalar tables) a profile table -> rows with converted fields."""
    cols = {k: c.oid for k, c in t.columns.items()}
    rows: dict[str, dict] = {}
    if t.scalar:
        r = await ctx.get([o + ".0" for o in cols.values()])
        row: dict[str, Any] = {}
        for k, c in t.columns.items():
            v = r.get(c.oid + ".0")
            if v is None:
                continue
            try:
                row[k] = convert(v, c)
            except BadValue:
                ctx.bad(name)
        return [row] if row else []
    r = await ctx.walk(list(dict.fromkeys(cols.values())))
    for k, c in t.columns.items():
        for i, v in r.get(c.oid, {}).items():
            row = rows.get(i)
            if row is None:
                try:
                    row = rows[i] = decode_index(i, t.index) if t.index else {"index": i}
                except BadValue:
                    ctx.bad(name)
                    rows[i] = row = {"_bad": True}
            if row.get("_bad"):
                continue
            try:
                row[k] = convert(v, c)
            except BadValue:
                ctx.bad(name)
    # a row left with only its index (every value failed to decode) measures nothing
    return [v for _, v in sorted(rows.items(), key=lambda kv: _subs(kv[0]))
            if not v.get("_bad") and any(k in t.columns for k in v)]


async def profile_tables(ctx: _Ctx, profile: Profile, section: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for name, t in profile.tables.items():
        if t.section != section:
            continue
        try:
            out[name] = await collect_table(ctx, name, t)
        except (DeviceError, asyncio.TimeoutError) as e:
            ctx.errors[f"{section}.{name}"] = _err(e)
    return out


async def collect_custom(ctx: _Ctx, profile: Profile) -> list | None:
    """Rows of the profile's ``section: custom`` tables as ``{measurement, tags, fields}``:
    a vendor's extra tables (fan/PSU state, UPS battery, ...) become samples without code."""
    out: list[dict] = []
    tables = {n: t for n, t in profile.tables.items() if t is not None and t.section == "custom"}
    for name, rows in (await profile_tables(ctx, profile, "custom")).items():
        t = tables[name]
        idx = {p.name for p in t.index} or {"index"}
        tag_cols = {k for k, c in t.columns.items() if c.tag}
        for row in rows:
            tags = {k: str(v) for k, v in row.items() if (k in idx or k in tag_cols) and v is not None}
            fields = {k: v for k, v in row.items() if k not in idx and k not in tag_cols and v is not None}
            if fields:
                out.append({"measurement": t.measurement, "table": name, "tags": tags, "fields": fields})
    return out or None


# ---------------------------------------------------------------------------- poe

async def collect_poe(ctx: _Ctx, profile: Profile) -> dict | None:
    r = await ctx.walk([_col(PETH_PORT, 3), _col(PETH_PORT, 6), _col(PETH_PORT, 10),
                        _col(PETH_MAIN, 2), _col(PETH_MAIN, 3), _col(PETH_MAIN, 4)])
    ports: dict[tuple[int, int], dict] = {}
    for i, v in r.get(_col(PETH_PORT, 3), {}).items():
        s = _subs(i)
        if len(s) != 2:
            ctx.bad("poe")
            continue
        det = r.get(_col(PETH_PORT, 6), {}).get(i)
        cls = r.get(_col(PETH_PORT, 10), {}).get(i)
        ports[(s[0], s[1])] = {"group": s[0], "port": s[1], "admin_enabled": v == 1,
                               "status": POE_DETECT.get(det, str(det)) if isinstance(det, int) else None,
                               "delivering": det == 3,
                               "class": cls - 1 if isinstance(cls, int) and 1 <= cls <= 5 else None}
    extra = await profile_tables(ctx, profile, "poe")
    by_if: dict[int, dict] = {}     # vendor tables indexed by ifIndex (HUAWEI-POE-MIB): own port rows
    for rows in extra.values():
        for row in rows:
            key = (row.get("group"), row.get("port"))
            if key in ports:
                ports[key].update({k: v for k, v in row.items() if k not in ("group", "port")})
            elif isinstance(row.get("ifIndex"), int):
                by_if.setdefault(row["ifIndex"], {}).update(row)
    if by_if:
        names = await ctx.ifnames()
        for i, row in by_if.items():
            if names.get(i):
                row["ifName"] = names[i]
    psu = []
    for i, v in r.get(_col(PETH_MAIN, 2), {}).items():
        st = r.get(_col(PETH_MAIN, 3), {}).get(i)
        psu.append({"group": int(i) if i.isdigit() else i, "power_w": v if isinstance(v, int) else None,
                    "status": {1: "on", 2: "off", 3: "faulty"}.get(st) if isinstance(st, int) else None,
                    "consumption_w": r.get(_col(PETH_MAIN, 4), {}).get(i)})
    if not ports and not psu and not by_if:
        return None
    return {"ports": [ports[k] for k in sorted(ports)] + [by_if[k] for k in sorted(by_if)], "pse": psu}


# ---------------------------------------------------------------------------- health

async def collect_health(ctx: _Ctx, profile: Profile, entity: dict | None) -> dict | None:
    out: dict[str, Any] = {}
    cpus: list[float] = []
    mems: list[float] = []
    temps: list[dict] = []
    try:
        r = await ctx.walk([_col(HR_STORAGE, 2), _col(HR_STORAGE, 3), _col(HR_STORAGE, 4), _col(HR_STORAGE, 5),
                            _col(HR_STORAGE, 6)])
        for i, typ in r.get(_col(HR_STORAGE, 2), {}).items():
            if typ != HR_STORAGE_RAM:
                continue
            size, used = r.get(_col(HR_STORAGE, 5), {}).get(i), r.get(_col(HR_STORAGE, 6), {}).get(i)
            if isinstance(size, int) and isinstance(used, int) and size > 0:
                mems.append(round(100.0 * used / size, 2))
    except (DeviceError, asyncio.TimeoutError) as e:
        ctx.errors["health.hr_storage"] = _err(e)
    ent_names = {x["index"]: x.get("name") or x.get("descr") for x in (entity or {}).get("physical", [])}
    try:
        r = await ctx.walk([_col(ENT_SENSOR, n) for n in (1, 2, 3, 4, 5)])
        for i, typ in r.get(_col(ENT_SENSOR, 1), {}).items():
            val = r.get(_col(ENT_SENSOR, 4), {}).get(i)
            scale = r.get(_col(ENT_SENSOR, 2), {}).get(i, 9)
            prec = r.get(_col(ENT_SENSOR, 3), {}).get(i, 0)
            oper = r.get(_col(ENT_SENSOR, 5), {}).get(i, 1)
            # +-1e9 are the ends of EntitySensorValue's range: Arista reports -1000000000 (status ok)
            # for an optic that reads nothing; not a measurement
            if not all(isinstance(x, int) for x in (typ, val, scale, prec)) or oper != 1 or abs(val) >= 10 ** 9:
                continue
            value = val * (10 ** (3 * (scale - 9))) / (10 ** prec)
            idx = int(i) if i.isdigit() else i
            # 6 significant digits: milli-scaled optics (0.0006322 W) must not round to 0.001
            temps.append({"sensor": ent_names.get(idx) or f"sensor {i}", "index": idx,
                          "type": SENSOR_TYPE.get(typ, str(typ)), "value": float(f"{value:.6g}")})
    except (DeviceError, asyncio.TimeoutError) as e:
        ctx.errors["health.entity_sensor"] = _err(e)
    tables = await profile_tables(ctx, profile, "health")
    for name, rows in tables.items():
        t_cpus = [r["cpu_pct"] for r in rows if isinstance(r.get("cpu_pct"), (int, float)) and 0 <= r["cpu_pct"] <= 100]
        if name == "entity_state":
            t_cpus = [c for c in t_cpus if c > 0]     # 0 = this entity has no CPU
        if t_cpus:
            cpus.append(round(sum(t_cpus) / len(t_cpus), 2) if profile.tables[name].aggregate == "avg"
                        else max(t_cpus))
        pooled_used = pooled_total = 0
        for row in rows:
            if isinstance(row.get("mem_pct"), (int, float)) and 0 < row["mem_pct"] <= 100:
                mems.append(row["mem_pct"])
            used, free = row.get("mem_used_bytes", row.get("mem_used_kb")), row.get("mem_free_bytes", row.get("mem_free_kb"))
            if isinstance(used, int) and isinstance(free, int) and used + free > 0:
                if profile.tables[name].aggregate == "avg":   # pools: used / total over all rows
                    pooled_used += used
                    pooled_total += used + free
                else:
                    mems.append(round(100.0 * used / (used + free), 2))
            t = row.get("temp_c")
            if isinstance(t, (int, float)) and 0 < t < 200:
                temps.append({"sensor": row.get("sensor_name") or f"{name} {row.get('entity', row.get('sensor', ''))}".strip(),
                              "type": "celsius", "value": t})
        if pooled_total:
            mems.append(round(100.0 * pooled_used / pooled_total, 2))
    if cpus:
        out["cpu_pct"] = max(cpus)
    if mems:
        out["mem_pct"] = max(mems)
    celsius = [x["value"] for x in temps if x["type"] == "celsius"]
    if celsius:
        out["temp_c_max"] = max(celsius)
    if temps:
        out["sensors"] = temps
    if any(tables.values()):
        out["tables"] = {k: v for k, v in tables.items() if v}
    return out or None


# ---------------------------------------------------------------------------- wifi

def _band_from_channel(ch: Any) -> str | None:
    if not isinstance(ch, int) or ch <= 0:
        return None
    return "2.4GHz" if ch <= 14 else "5GHz"


_BAND_NAMES = {"ng": "2.4GHz", "na": "5GHz", "6e": "6GHz"}   # UniFi unifiRadioRadio / unifiVapRadio


def _merge_rows(tables: dict[str, list[dict]], keys: tuple[str, ...]) -> list[dict]:
    merged: dict[tuple, dict] = {}
    for rows in tables.values():
        for row in rows:
            k = tuple(row.get(x) for x in keys)
            if all(x is None for x in k):
                k = (id(row),)
            merged.setdefault(k, {}).update(row)
    return list(merged.values())


async def collect_wifi(ctx: _Ctx, profile: Profile) -> dict | None:
    aps = _merge_rows(await profile_tables(ctx, profile, "wifi_aps"), ("ap_mac",))
    radios = _merge_rows(await profile_tables(ctx, profile, "wifi_radios"), ("ap_mac", "radio"))
    vaps = _merge_rows(await profile_tables(ctx, profile, "wifi_vaps"), ("ap_mac", "radio", "wlan", "vap"))
    clients = _merge_rows(await profile_tables(ctx, profile, "wifi_clients"), ("mac",))
    summary: dict[str, Any] = {}
    for rows in (await profile_tables(ctx, profile, "wifi_summary")).values():
        for row in rows:
            summary.update({k: v for k, v in row.items() if k != "index"})
    if not (aps or radios or vaps or clients or summary):
        return None
    for r in radios + vaps:
        if r.get("band") in _BAND_NAMES:
            r["band"] = _BAND_NAMES[r["band"]]
    # clients per radio from the VAP (SSID) table when the radio table has no count. A VAP that
    # names no radio, only its band (UniFi), belongs to the AP's radio of that band and also
    # gives that radio its channel and transmit power (the same on every VAP of a radio).
    radio_of: dict[tuple, Any] = {}
    for r in radios:
        radio_of.setdefault((r.get("ap_mac"), r.get("band")), r.get("radio"))
    from_vaps: dict[tuple, dict] = {}
    for v in vaps:
        radio = v.get("radio")
        if radio is None and v.get("band"):
            radio = radio_of.get((v.get("ap_mac"), v["band"]))
        agg = from_vaps.setdefault((v.get("ap_mac"), radio), {})
        if isinstance(v.get("clients"), int):
            agg["clients"] = agg.get("clients", 0) + v["clients"]
        if v.get("radio") is None:
            for f in ("channel", "tx_power_dbm"):
                if isinstance(v.get(f), (int, float)):
                    agg.setdefault(f, v[f])
    for r in radios:
        for f, val in from_vaps.get((r.get("ap_mac"), r.get("radio")), {}).items():
            r.setdefault(f, val)
    ap_name = {a.get("ap_mac"): a.get("name") for a in aps}
    for a in aps:
        st = a.get("status")
        if st is not None:
            a["up"] = st == "up"
    for r in radios:
        if r.get("ap_mac") in ap_name:
            r["ap_name"] = ap_name[r["ap_mac"]]
        if not r.get("band"):
            b = _band_from_channel(r.get("channel"))
            if b:
                r["band"] = b
    radio_band = {(r.get("ap_mac"), r.get("radio")): r.get("band") for r in radios}
    counts: dict[tuple, int] = {}
    # count stations per AP and band only from a station table that names the AP (Cisco
    # recordings may carry only SSID/status columns); otherwise the radio counts
    by_station = any(c.get("ap_mac") for c in clients)
    for c in clients:
        band = c.get("band") or radio_band.get((c.get("ap_mac"), c.get("radio")))
        c.setdefault("band", band)
        c["ap_name"] = ap_name.get(c.get("ap_mac"))
        if by_station:
            key = (c.get("ap_mac"), band)
            counts[key] = counts.get(key, 0) + 1
    if not by_station:
        for r in radios:
            if isinstance(r.get("clients"), int):
                key = (r.get("ap_mac"), r.get("band"))
                counts[key] = counts.get(key, 0) + r["clients"]
    per_ap = [{"ap_mac": k[0], "ap_name": ap_name.get(k[0]), "band": k[1], "clients": n}
              for k, n in sorted(counts.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1])))]
    out: dict[str, Any] = {}
    if summary:
        out["summary"] = summary
    if aps:
        out["aps"] = aps
    if radios:
        out["radios"] = radios
    if vaps:
        for v in vaps:
            if v.get("ap_mac") in ap_name:
                v["ap_name"] = ap_name[v["ap_mac"]]
        out["vaps"] = vaps
    if clients:
        out["clients"] = clients
    if per_ap:
        out["clients_per_ap"] = per_ap
    return out


# ---------------------------------------------------------------------------- entry points

async def collect_sections(session: Any, sys_object_id: str | None, sections: list[str] | None = None, *,
                           deadline_s: float | None = 30.0, vlan_session: Callable[[int], Any] | None = None,
                           profiles: ProfileSet | None = None, max_repetitions: int = DEFAULT_REPS,
                           entity: dict | None = None, sys_descr: str | bytes | None = None) -> dict:
    """Collect the network-depth sections for one device; see module doc.

    ``vlan_session(vlan) -> session`` gives a session for a VLAN context (Cisco
    community@vlan / v3 context ``vlan-<id>``); without it, per-VLAN FDB is skipped.
    Sections with no data are absent; per-table failures are listed under ``_errors``.
    ``entity``: a previous result's ``entity`` section, reused (not re-walked) for sensor names
    when only health/poe/wifi are asked for on every poll. ``sys_descr`` lets profiles that
    match on sysDescr (``match.sys_descr``) be selected.
    """
    ps = profiles or default_profiles()
    prof = ps.select(sys_object_id, sys_descr)
    wanted = [s for s in prof.enabled_sections if sections is None or s in sections]
    wanted += [s for s in OPT_IN_SECTIONS if sections is not None and s in sections]
    ctx = _Ctx(session, time.monotonic() + (deadline_s if deadline_s else 1e9), max_repetitions)
    out: dict[str, Any] = {}

    async def run(name: str, coro: Awaitable) -> None:
        try:
            v = await coro
        except (DeviceError, asyncio.TimeoutError) as e:
            ctx.errors[name] = _err(e)
            return
        except Exception as e:  # a bug in one parser must not lose the other sections
            log.exception("section %s failed", name)
            ctx.errors[name] = _err(e)
            return
        if v:
            out[name] = v

    if entity is not None and "entity" not in wanted:
        out["entity"] = entity
    elif "entity" in wanted or "health" in wanted:
        await run("entity", collect_entity(ctx))
    entity = out.get("entity")
    if "entity" not in wanted:
        out.pop("entity", None)
    if prof.facts and ("entity" in wanted or entity is None):
        facts: dict[str, Any] = {}
        try:
            r = await ctx.get([c.oid for c in prof.facts.values()])
            for k, c in prof.facts.items():
                if c.oid in r:
                    try:
                        facts[k] = convert(r[c.oid], c)
                    except BadValue:
                        ctx.bad("facts")
        except (DeviceError, asyncio.TimeoutError) as e:
            ctx.errors["facts"] = _err(e)
        if facts:
            out.setdefault("entity", {}).setdefault("chassis", {}).update(facts)
    steps = {"lldp": lambda: collect_lldp(ctx), "cdp": lambda: collect_cdp(ctx), "fdb": lambda: collect_fdb(ctx, prof, vlan_session),
             "arp": lambda: collect_arp(ctx), "ip_addresses": lambda: collect_ip_addresses(ctx),
             "poe": lambda: collect_poe(ctx, prof), "health": lambda: collect_health(ctx, prof, entity),
             "wifi": lambda: collect_wifi(ctx, prof)}
    for name in wanted:
        if name in steps:
            await run(name, steps[name]())
    if sections is None or "custom" in sections:
        await run("custom", collect_custom(ctx, prof))   # no custom tables: no requests, no section
    if ctx.bad_values:
        for t, n in ctx.bad_values.items():
            ctx.errors.setdefault(f"{t}.values", f"{n} value(s) could not be decoded and were skipped")
    out["_profile"] = prof.name
    if prof.vendor:
        out["_vendor"] = prof.vendor
    if ctx.errors:
        out["_errors"] = ctx.errors
    out["_varbinds"] = ctx.varbinds
    return out


def vlan_session_factory(target: Any, session_cls: Callable[[Any], Any] | None = None) -> Callable[[int], Any]:
    """``vlan -> session`` for Cisco per-VLAN bridge tables: v2c ``community@vlan``, v3 context
    ``vlan-<id>``. ``target`` is a drivers.snmp.client.SnmpTarget (a dataclass)."""
    import dataclasses

    def make(vlan: int) -> Any:
        if str(getattr(target, "version", "2c")) == "3":
            t = dataclasses.replace(target, context=f"vlan-{vlan}")
        else:
            t = dataclasses.replace(target, community=f"{target.community}@{vlan}")
        if session_cls is None:
            from drivers.snmp.client import SnmpSession
            return SnmpSession(t)
        return session_cls(t)

    return make


def stable_facts(sections: dict) -> dict:
    """Facts that rarely change (model, serial, firmware, hardware, IPv6 presence) for merging
    into a driver's per-device facts; tables (lldp/fdb/arp) stay in the inventory document."""
    out: dict[str, Any] = {}
    for r in to_records("", {k: v for k, v in sections.items() if k in ("entity", "ip_addresses", "_vendor")}):
        if isinstance(r, Facts):
            out.update({k: v for k, v in r.facts.items() if k != "ip_addresses"})
    return out


def inventory_doc(sections: dict) -> dict:
    """The part of ``snmp-inventory --json`` that comes from collect_sections()."""
    doc = {k: v for k, v in sections.items() if not k.startswith("_")}
    if sections.get("_errors"):
        doc["section_errors"] = sections["_errors"]
    return doc


def to_records(device: str, sections: dict) -> list[Record]:
    """Samples (health, sensors, PoE, Wi-Fi) and one Facts record from collect_sections()."""
    recs: list[Record] = []
    h = sections.get("health") or {}
    f = {k: h[k] for k in ("cpu_pct", "mem_pct", "temp_c_max") if k in h}
    if f:
        recs.append(Sample("device_health", device, f))
    for s in h.get("sensors", []):
        recs.append(Sample("sensor", device, {"value": s["value"]}, {"sensor": str(s["sensor"]), "type": s["type"]}))
    for p in (sections.get("poe") or {}).get("ports", []):
        fields = {k: p[k] for k in ("delivering", "admin_enabled", "power_w", "max_power_w", "class") if p.get(k) is not None}
        tags = ({"group": str(p["group"]), "port": str(p["port"])} if "group" in p
                else {"ifIndex": str(p["ifIndex"]), "ifName": str(p.get("ifName") or p["ifIndex"])})
        recs.append(Sample("poe_port", device, fields, tags))
    w = sections.get("wifi") or {}
    summ = {k: v for k, v in (w.get("summary") or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if summ:
        recs.append(Sample("wifi_controller", device, summ))
    for a in w.get("aps", []):
        fields = {k: a[k] for k in ("up", "clients") if a.get(k) is not None}
        if fields:
            recs.append(Sample("wifi_ap", device, fields, {"ap": str(a.get("name") or a.get("ap_mac")),
                                                           "ap_mac": str(a.get("ap_mac"))}))
    for r in w.get("radios", []):
        fields = {k: r[k] for k in ("channel", "util_pct", "interference_pct", "noise_dbm", "tx_power_dbm",
                                    "tx_power_level", "clients")
                  if isinstance(r.get(k), (int, float))}
        if fields:
            tags = {"ap": str(r.get("ap_name") or r.get("ap_mac") or ""), "radio": str(r.get("radio", r.get("radio_name", r.get("vap", "")))),
                    "band": str(r.get("band") or "")}
            recs.append(Sample("wifi_radio", device, fields, tags))
    for c in w.get("clients_per_ap", []):
        recs.append(Sample("wifi_clients", device, {"clients": c["clients"]},
                           {"ap": str(c.get("ap_name") or c.get("ap_mac") or ""), "band": str(c.get("band") or "")}))
    for c in w.get("clients", []):
        fields = {k: c[k] for k in ("rssi_dbm", "snr_db") if isinstance(c.get(k), (int, float))}
        if fields:
            tags = {"mac": str(c.get("mac")), "ap": str(c.get("ap_name") or "")}
            if c.get("ssid"):
                tags["ssid"] = str(c["ssid"])          # coverage counts the campus SSID(s) only
            recs.append(Sample("wifi_client", device, fields, tags))
    for c in sections.get("custom") or []:
        recs.append(Sample(c["measurement"], device, dict(c["fields"]), dict(c["tags"])))
    facts: dict[str, Any] = {}
    ch = (sections.get("entity") or {}).get("chassis", {})
    for k in ("model", "serial", "software", "firmware", "hardware"):
        if ch.get(k):
            facts[k if k != "software" else "software_version"] = ch[k]
    if "firmware" not in facts and ch.get("software"):
        facts["firmware"] = ch["software"]
    ips = sections.get("ip_addresses") or []
    if ips:
        facts["ipv6"] = any(x["family"] == 6 and not x["ip"].startswith("fe80") for x in ips)
        facts["ip_addresses"] = [x["ip"] for x in ips]
    for k in ("lldp", "fdb", "arp"):
        if sections.get(k):
            facts[k] = sections[k]
    if sections.get("_vendor"):
        facts["vendor"] = sections["_vendor"]
    if facts:
        recs.append(Facts(device, facts))
    return recs
