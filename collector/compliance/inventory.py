"""Inventory compliance: the registry (expected) joined with everything discovered
(device facts, FDB, ARP, passive watch / ONVIF / PJLink sightings).

Findings per asset: missing (registered, not seen for N days), moved (other
switch port or room than registered), wrong IP (not its assigned address, or
its assigned address used by another MAC), mismatch (serial/model differ);
per discovered MAC/device: unknown (seen, not registered). Also the admin
'where is this MAC / IP / serial?' lookup. Pure functions.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from collector.campus.model import Asset, CampusModel, Registry, normalize_mac
from collector.compliance.observations import Observations, iso
from collector.compliance.policy import Policy
from collector.compliance.results import FAIL, PASS, CheckResult

DAY = 86400.0


@dataclass
class Location:
    """A MAC learned on a switch port (FDB). ``edge`` = an access port, i.e. a real location."""
    switch: str
    port: str | None
    if_index: int | None
    vlan: int | None
    last_seen: float | None
    edge: bool
    room: str | None = None
    building: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"switch": self.switch, "port": self.port, "ifIndex": self.if_index, "vlan": self.vlan,
                "room": self.room, "building": self.building, "edge": self.edge, "last_seen": iso(self.last_seen)}


@dataclass
class Seen:
    """Everything discovered about one MAC (or one device without a known MAC)."""
    key: str
    mac: str | None = None
    device_id: str | None = None
    ips: dict[str, float | None] = field(default_factory=dict)
    serial: str | None = None
    model: str | None = None
    vendor: str | None = None
    locations: list[Location] = field(default_factory=list)
    sources: set[str] = field(default_factory=set)
    last_seen: float | None = None
    building: str | None = None

    def touch(self, t: float | None, source: str) -> None:
        self.sources.add(source)
        if t is not None and (self.last_seen is None or t > self.last_seen):
            self.last_seen = t

    def edge_location(self) -> Location | None:
        edges = [l for l in self.locations if l.edge]
        if not edges:
            return None
        return max(edges, key=lambda l: l.last_seen or 0)

    def where_building(self) -> str | None:
        loc = self.edge_location()
        return (loc.building if loc else None) or self.building

    def evidence(self) -> dict[str, Any]:
        loc = self.edge_location()
        return {"what": "discovered", "mac": self.mac, "device": self.device_id,
                "ips": ", ".join(sorted(self.ips)) or None, "serial": self.serial, "model": self.model,
                "switch": loc.switch if loc else None, "port": loc.port if loc else None,
                "room": loc.room if loc else None, "sources": ", ".join(sorted(self.sources)),
                "last_seen": iso(self.last_seen)}


def _ignored(mac: str | None, prefixes: tuple[str, ...]) -> bool:
    if not mac:
        return False
    if int(mac[:2], 16) & 1:          # multicast / broadcast
        return True
    return mac.startswith(prefixes)


def _norm_mac(v: Any) -> str | None:
    try:
        return normalize_mac(v)
    except ValueError:
        return None


def _lldp_index(obs: Observations) -> dict[tuple, Any]:
    idx: dict[tuple, Any] = {}
    for l in obs.lldp:
        if l.local_port:
            idx.setdefault((l.device, l.local_port.lower()), l)
        if l.local_if_index is not None:
            idx.setdefault((l.device, l.local_if_index), l)
    return idx


def _port_is_trunk(campus: CampusModel, lldp: dict[tuple, Any], switch: str, port: str | None,
                   if_index: int | None) -> bool:
    p = campus.port(switch, port, if_index)
    if p is not None:
        return p.role in ("uplink", "backbone", "interbuilding")
    l = (lldp.get((switch, port.lower())) if port else None) or \
        (lldp.get((switch, if_index)) if if_index is not None else None)
    if l is None:
        return False
    peer = campus.devices.get(l.remote_device or "")
    return peer is None or peer.type in ("switch", "router", "firewall")


def discover(campus: CampusModel, obs: Observations, policy: Policy | None = None) -> dict[str, Seen]:
    """Join device facts, FDB, ARP and sightings into one record per MAC."""
    policy = policy or Policy()
    seen: dict[str, Seen] = {}
    ign = tuple(p.lower() for p in policy.inventory.ignore_mac_prefixes)

    def get(mac: str | None, device_id: str | None = None) -> Seen | None:
        if mac is None and device_id is None:
            return None
        key = mac or f"device:{device_id}"
        s = seen.get(key)
        if s is None:
            s = seen[key] = Seen(key, mac=mac)
        return s

    for d in obs.devices.values():
        f = d.facts or {}
        mac = _norm_mac(f.get("mac"))
        s = get(mac, d.id)
        s.device_id = d.id
        s.serial = s.serial or (str(f["serial"]).strip() if f.get("serial") else None)
        s.model = s.model or f.get("model")
        s.vendor = s.vendor or f.get("vendor")
        s.building = s.building or d.building or campus.device_building(d.id)
        t = d.last_seen if d.last_seen is not None else d.facts_time
        ip = f.get("ip")
        if ip:
            s.ips[str(ip)] = t
        s.touch(t, "facts")

    lldp = _lldp_index(obs)
    macs_per_port: dict[tuple[str, str], set[str]] = {}
    for e in obs.fdb:
        k = (e.switch, e.port or f"#{e.if_index}")
        macs_per_port.setdefault(k, set()).add(e.mac)
    for e in obs.fdb:
        if _ignored(e.mac, ign):
            continue
        s = get(e.mac)
        p = campus.port(e.switch, e.port, e.if_index)
        trunk = _port_is_trunk(campus, lldp, e.switch, e.port, e.if_index)
        crowded = len(macs_per_port[(e.switch, e.port or f"#{e.if_index}")]) > policy.inventory.max_macs_per_edge_port
        edge = not trunk and (p is not None and p.role in ("desk", "device", "ap") or not crowded)
        room = p.room if p is not None else None
        bld = campus.room_building(room) or campus.device_building(e.switch)
        s.locations.append(Location(e.switch, e.port or (p.port if p else None), e.if_index, e.vlan, e.last_seen,
                                    edge, room, bld))
        s.touch(e.last_seen, "fdb")
    for a in obs.arp:
        if _ignored(a.mac, ign):
            continue
        s = get(a.mac)
        if a.ip not in s.ips or (a.last_seen or 0) > (s.ips[a.ip] or 0):
            s.ips[a.ip] = a.last_seen
        s.touch(a.last_seen, "arp")
    for g in obs.sightings:
        if _ignored(g.mac, ign) or (g.mac is None and g.ip is None):
            continue
        mac = g.mac
        if mac is None:   # IP-only sighting: attach to the MAC ARP knows for it
            mac = next((x.mac for x in seen.values() if g.ip in x.ips and x.mac), None)
            if mac is None:
                continue
        s = get(mac)
        if g.ip:
            s.ips[g.ip] = max(filter(None, [g.time, s.ips.get(g.ip)]), default=None)
        f = g.facts or {}
        s.serial = s.serial or (str(f["serial"]).strip() if f.get("serial") else None)
        s.model = s.model or f.get("model")
        s.vendor = s.vendor or f.get("vendor") or f.get("manufacturer")
        s.building = s.building or g.building
        s.touch(g.time, g.source)
    return seen


class _SeenIndex:
    def __init__(self, seen: dict[str, Seen]):
        self.seen = seen
        self.by_device: dict[str, Seen] = {}
        self.by_serial: dict[str, Seen] = {}
        for s in seen.values():
            if s.device_id:
                self.by_device.setdefault(s.device_id, s)
            if s.serial:
                self.by_serial.setdefault(s.serial.lower(), s)

    def match(self, asset: Asset) -> tuple[Seen | None, str]:
        """Registry asset -> discovered record: by device id, then serial, then MAC."""
        if asset.device_id and asset.device_id in self.by_device:
            return self.by_device[asset.device_id], "device id"
        if asset.serial and asset.serial.lower() in self.by_serial:
            return self.by_serial[asset.serial.lower()], "serial"
        if asset.mac and asset.mac in self.seen:
            return self.seen[asset.mac], "MAC"
        return None, ""


def _match(asset: Asset, seen: dict[str, Seen]) -> tuple[Seen | None, str]:
    return _SeenIndex(seen).match(asset)


def _same_model(a: str, b: str) -> bool:
    na, nb = re.sub(r"[^a-z0-9]", "", a.lower()), re.sub(r"[^a-z0-9]", "", b.lower())
    return na == nb or na.startswith(nb) or nb.startswith(na)


#: how an asset was matched (_SeenIndex.match) -> message key suffix
_HOW = {"device id": "device", "serial": "serial", "MAC": "mac"}


def evaluate_inventory(campus: CampusModel, registry: Registry, obs: Observations, policy: Policy | None = None,
                       building: str | None = None, now: float | None = None) -> list[CheckResult]:
    policy = policy or Policy()
    now = obs.time if now is None else now
    seen = discover(campus, obs, policy)
    ip_owner: dict[str, tuple[str, float | None]] = {}
    for s in seen.values():
        for ip, t in s.ips.items():
            if s.mac and (ip not in ip_owner or (t or 0) > (ip_owner[ip][1] or 0)):
                ip_owner[ip] = (s.mac, t)
    out: list[CheckResult] = []
    matched: set[str] = set()
    index = _SeenIndex(seen)
    missing_after = policy.inventory.missing_after_days * DAY
    for a in sorted(registry.assets.values(), key=lambda x: x.asset_tag):
        bld = campus.room_building(a.room)
        s, how = index.match(a)
        if s is not None:
            matched.add(s.key)
        if a.mac and a.mac in seen:          # the asset's own MAC is not 'unknown', whatever matched
            matched.add(a.mac)
        reg_ev = {"what": "registered", "asset_tag": a.asset_tag, "type": a.device_type, "model": a.model,
                  "serial": a.serial, "mac": a.mac, "assigned_ip": a.assigned_ip, "room": a.room, "owner": a.owner,
                  "switch": a.switch, "port": a.port}
        bld = bld or (s.where_building() if s else None)
        if building and bld != building:
            continue

        def res(check: str, status: str, msg: str | tuple, sev: str = "warning", extra: list | None = None
                ) -> CheckResult:
            """msg: English text, or (key, English template, {args}) that zh-CN readers get translated."""
            ev = [reg_ev] + ([s.evidence()] if s else []) + (extra or [])
            r = CheckResult(check, status, a.asset_tag, msg if isinstance(msg, str) else "", building=bld,
                            room=a.room, device=(s.device_id if s else None) or a.device_id, severity=sev, evidence=ev)
            if not isinstance(msg, str):
                r.say(msg[0], msg[1], parts=msg[3] if len(msg) > 3 else (), **msg[2])
            return r

        if s is None:
            out.append(res("inventory_missing", FAIL, ("inv_never_seen", "{tag} ({what}) never seen on the network",
                                                       {"tag": a.asset_tag,
                                                        "what": f"{a.device_type} {a.model or ''}".strip()})))
            continue
        if s.last_seen is not None and now - s.last_seen > missing_after:
            out.append(res("inventory_missing", FAIL, (
                "inv_not_seen", "{tag} not seen for {days:.0f} days (last {last}; policy: {max:g} days)",
                {"tag": a.asset_tag, "days": (now - s.last_seen) / DAY, "last": iso(s.last_seen),
                 "max": policy.inventory.missing_after_days})))
            continue
        problems = 0
        loc = s.edge_location()
        if loc is not None:
            room = bool(a.room and loc.room and loc.room != a.room)
            port = bool(a.switch and (loc.switch != a.switch or (a.port and loc.port and loc.port.lower() != a.port.lower())))
            texts = {"room": "room {room} instead of {reg_room}", "port": "port {port} instead of {reg_port}"}
            if room or port:
                problems += 1
                key = "inv_moved_" + ("room_port" if room and port else "room" if room else "port")
                text = "; ".join(texts[k] for k, on in (("room", room), ("port", port)) if on)
                out.append(res("inventory_moved", FAIL, (key, "{tag} seen at " + text, {
                    "tag": a.asset_tag, "room": loc.room, "reg_room": a.room, "port": f"{loc.switch} {loc.port}",
                    "reg_port": f"{a.switch} {a.port or ''}".rstrip()}), extra=[dict(loc.to_dict(), what="fdb location")]))
        if a.assigned_ip:
            recent = {ip: t for ip, t in s.ips.items()
                      if t is None or now - t <= policy.inventory.unknown_window_days * DAY}
            others = sorted(ip for ip in recent if ip != a.assigned_ip and ipaddress.ip_address(ip).version ==
                            ipaddress.ip_address(a.assigned_ip).version)
            if others:
                problems += 1
                out.append(res("inventory_wrong_ip", FAIL, (
                    "inv_wrong_ip", "{tag} uses {ips} instead of its assigned {ip}",
                    {"tag": a.asset_tag, "ips": ", ".join(others), "ip": a.assigned_ip}),
                               extra=[{"what": "ip seen", "ip": ip, "mac": s.mac, "last_seen": iso(recent[ip])}
                                      for ip in others]))
            owner = ip_owner.get(a.assigned_ip)
            if owner and s.mac and owner[0] != s.mac:
                problems += 1
                out.append(res("inventory_wrong_ip", FAIL, (
                    "inv_ip_conflict", "assigned IP {ip} of {tag} is used by {mac}",
                    {"ip": a.assigned_ip, "tag": a.asset_tag, "mac": owner[0]}), "critical",
                               extra=[{"what": "ip conflict", "ip": a.assigned_ip, "mac": owner[0],
                                       "last_seen": iso(owner[1])}]))
        mism = []
        if a.serial and s.serial and s.serial.lower() != a.serial.lower():
            mism.append(("inv_diff_serial", "serial {seen} (registered {reg})", {"seen": s.serial, "reg": a.serial}))
        if a.model and s.model and not _same_model(a.model, str(s.model)):
            mism.append(("inv_diff_model", "model {seen} (registered {reg})", {"seen": str(s.model), "reg": a.model}))
        if a.mac and s.mac and s.mac != a.mac:
            mism.append(("inv_diff_mac", "MAC {seen} (registered {reg})", {"seen": s.mac, "reg": a.mac}))
        if mism:
            problems += 1
            out.append(res("inventory_mismatch", FAIL, ("inv_mismatch_" + _HOW[how], "{tag} matched by " + how +
                                                        " but reports {parts}", {"tag": a.asset_tag}, mism)))
        if not problems:
            args = {"tag": a.asset_tag, "last": iso(s.last_seen) or "?"}
            out.append(res("inventory_ok", PASS, (
                "inv_ok_at", "{tag} seen at {port} ({room}), last {last}",
                dict(args, port=f"{loc.switch} {loc.port}", room=loc.room or "?")) if loc else (
                "inv_ok", "{tag} seen, last {last}", args), "info"))
    window = policy.inventory.unknown_window_days * DAY
    for s in sorted(seen.values(), key=lambda x: x.key):
        if s.key in matched:
            continue
        if s.last_seen is not None and now - s.last_seen > window:
            continue
        bld = s.where_building()
        if building and bld != building:
            continue
        loc = s.edge_location()
        args = {"what": s.device_id or s.mac, "port": f"{loc.switch} {loc.port}" if loc else None,
                "room": f" ({loc.room})" if loc and loc.room else "", "ips": ", ".join(sorted(s.ips))}
        r = CheckResult("inventory_unknown", FAIL, s.mac or s.device_id or s.key, "",
                        building=bld, room=loc.room if loc else None, device=s.device_id, evidence=[s.evidence()])
        r.say("inv_unknown" + ("_at" if loc else "") + ("_ip" if s.ips else ""),
              "unregistered device {what}" + (" on {port}{room}" if loc else "") + (" ip {ips}" if s.ips else ""), **args)
        out.append(r)
    return out


# --------------------------------------------------------------------------- where is

_MAC_RE = re.compile(r"^([0-9a-f]{2}[:-]){5}[0-9a-f]{2}$|^[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}$|^[0-9a-f]{12}$",
                     re.I)


def where_is(query: str, campus: CampusModel, registry: Registry, obs: Observations,
             policy: Policy | None = None) -> dict[str, Any]:
    """'Where is this MAC / IP / serial / asset tag / device id?' -> switch, port, room, last seen.

    Returns ``{"query", "kind": mac|ip|serial|asset|device|none, "matches": [...]}``; each match
    has mac, ips, device, asset_tag, serial, switch, port, room, building, last_seen, edge,
    locations (every FDB sighting, newest first)."""
    policy = policy or Policy()
    q = query.strip()
    seen = discover(campus, obs, policy)
    keys: list[str] = []
    kind = "none"
    asset: Asset | None = None
    if _MAC_RE.match(q):
        kind = "mac"
        mac = normalize_mac(q)
        keys = [mac] if mac in seen else []
        asset = registry.by_mac(mac)
    else:
        try:
            ip = str(ipaddress.ip_address(q))
            kind = "ip"
            keys = [s.key for s in sorted(seen.values(), key=lambda s: -(s.ips.get(ip) or 0)) if ip in s.ips]
            asset = next((a for a in registry.assets.values() if a.assigned_ip == ip), None)
        except ValueError:
            pass
    if kind == "none":
        ql = q.lower()
        if q in registry.assets:
            kind, asset = "asset", registry.assets[q]
        elif any(s.device_id == q for s in seen.values()) or q in campus.devices:
            kind = "device"
            keys = [s.key for s in seen.values() if s.device_id == q]
            asset = registry.by_device_id(q)
        else:
            hits = [s.key for s in seen.values() if s.serial and s.serial.lower() == ql]
            asset = registry.by_serial(q)
            if hits or asset:
                kind, keys = "serial", hits
    if asset is not None and not keys:
        s, _ = _match(asset, seen)
        keys = [s.key] if s else []
    matches = []
    for k in keys:
        s = seen[k]
        a = asset
        if a is None or (a.mac and s.mac and a.mac != s.mac and a.device_id != s.device_id):
            a = (registry.by_mac(s.mac) if s.mac else None) or (registry.by_device_id(s.device_id)
                                                               if s.device_id else None)
        loc = s.edge_location()
        cm = campus.devices.get(s.device_id or "")
        room = loc.room if loc else (cm.room if cm else None)
        matches.append({"mac": s.mac, "ips": sorted(s.ips), "device": s.device_id,
                        "asset_tag": a.asset_tag if a else None, "registered_room": a.room if a else None,
                        "serial": s.serial, "model": s.model, "switch": loc.switch if loc else None,
                        "port": loc.port if loc else None, "room": room,
                        "building": (loc.building if loc else None) or s.building or campus.room_building(room),
                        "edge": bool(loc), "last_seen": iso(s.last_seen), "sources": sorted(s.sources),
                        "locations": [l.to_dict() for l in sorted(s.locations, key=lambda l: -(l.last_seen or 0))]})
    if not matches and asset is not None:
        matches.append({"mac": asset.mac, "ips": [], "device": asset.device_id, "asset_tag": asset.asset_tag,
                        "registered_room": asset.room, "serial": asset.serial, "model": asset.model, "switch": None,
                        "port": None, "room": None, "building": campus.room_building(asset.room), "edge": False,
                        "last_seen": None, "sources": [], "locations": [],
                        "note": "registered but never seen on the network"})
    return {"query": q, "kind": kind, "matches": matches}
