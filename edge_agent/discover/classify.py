"""What kind of device is it? From sysObjectID (the vendor profile it selects), sysDescr, sysServices,
BRIDGE-MIB / ipForwarding hints, ONVIF scopes/types, PJLink, Modbus.

Kinds are the campus model's device types: switch, router, firewall, controller (Wi-Fi controller),
ap, camera, projector, sensor, server, other.
"""
from __future__ import annotations

import re
import urllib.parse

#: vendor profiles (firmware_configs/snmp) that are Wi-Fi controllers by themselves
CONTROLLER_PROFILES = {"cisco_wlc", "ruckus_zonedirector", "ruckus_unleashed"}
AP_PROFILES = {"ubiquiti"}

_CONTROLLER = re.compile(r"wireless lan controller|\bWLC\b|ZoneDirector|SmartZone|\bZD\d{3,4}\b|\bAC\d{4}\b|"
                         r"AirEngine\s*\d+\S*-?AC\b|Mobility (Master|Controller)|Virtual Controller|Unleashed|"
                         r"\bvSZ\b", re.I)
_AP = re.compile(r"\bUAP\b|U6-|access point|\bAP-?\d{3}|Aironet|\bWAP\d*\b|\bAirEngine\s*\d{4}\b|"
                 r"Ruckus Wireless [RT]\d{3}", re.I)
_CAMERA = re.compile(r"camera|\bIPC\b|\bDS-2CD|Hikvision|Dahua|\bAXIS\b|\bNVR\b", re.I)
_FIREWALL = re.compile(r"firewall|FortiGate|Palo Alto|\bPA-\d|Sangfor|\bASA\s?\d|\bUSG\d|\bSRX\d", re.I)
_ROUTER = re.compile(r"\brouter\b|\bISR\s?\d|\bASR\s?\d|\bAR\d{3,4}\b|\bMSR\s?\d|\bNE\d{2}[A-Z]?\b|RouterOS|"
                     r"MikroTik|EdgeRouter|\bCR\d{2}", re.I)
_SWITCH = re.compile(r"switch|catalyst|\bC29\d\d|\bC3[5-8]\d\d|\bC9[2-5]00|\bS\d{4}\b|S\d{4}-|ProCurve|Comware|"
                     r"\bDES-\d|\bDGS-\d|ZXR10|\bEOS\b|Nexus|\bRG-S|\bCE\d{4}|Aruba\s?\d{4}|\bEX\d{4}|"
                     r"\bS\d{4}[A-Z]*-\d", re.I)
_SERVER = re.compile(r"^(Linux|Windows|FreeBSD|SunOS|Darwin)\b|net-snmp|Hardware: .*Windows", re.I)


def classify_snmp(sys_object_id: str | None, sys_descr: str | None, profile: str | None = None,
                  services: int | None = None, bridge_ports: int | None = None,
                  ip_forwarding: int | None = None) -> tuple[str, bool]:
    """-> (kind, routes): ``routes`` for L3 switches (ipForwarding 1)."""
    d = sys_descr or ""
    oid = (sys_object_id or "").lstrip(".")
    routes = ip_forwarding == 1
    if profile in CONTROLLER_PROFILES or _CONTROLLER.search(d):
        return "controller", routes
    if profile in AP_PROFILES or _AP.search(d):
        return "ap", False
    if _CAMERA.search(d):
        return "camera", False
    if _FIREWALL.search(d) or oid.startswith("1.3.6.1.4.1.25461"):
        return "firewall", True
    if _SWITCH.search(d):
        return "switch", routes
    if _ROUTER.search(d):
        return "router", True
    if bridge_ports:
        return "switch", routes
    if services is not None:
        if services & 2 and not services & 64:    # datalink/subnetwork (bridge), not an end host
            return "switch", routes
        if services & 4 and not services & 64:    # internet: routes IP
            return "router", True
    if oid.startswith("1.3.6.1.4.1.8072") or oid.startswith("1.3.6.1.4.1.311.") or _SERVER.search(d):
        return "server", False
    return "other", routes


def onvif_scopes(scopes: str | list[str]) -> dict[str, list[str]]:
    """``onvif://www.onvif.org/<category>/<value...>`` scopes -> {category: [value, ...]} (decoded)."""
    items = scopes.split() if isinstance(scopes, str) else list(scopes)
    out: dict[str, list[str]] = {}
    for s in items:
        u = urllib.parse.urlsplit(s)
        if u.scheme != "onvif" or u.netloc.lower() != "www.onvif.org":
            continue
        parts = [urllib.parse.unquote(p) for p in u.path.split("/") if p]
        if parts:
            out.setdefault(parts[0].lower(), []).append("/".join(parts[1:]))
    return out


def classify_onvif(types: str, scopes: dict[str, list[str]]) -> str:
    t = types.lower()
    kinds = " ".join(scopes.get("type", [])).lower()
    if "networkvideotransmitter" in t or "video_encoder" in kinds or "ptz" in kinds or "camera" in kinds:
        return "camera"
    if "networkvideorecorder" in t or "recorder" in kinds:
        return "server"
    return "camera" if "device" in t else "other"


_ROOM = re.compile(r"(?:\broom|\brm\.?|房间|教室|室)\s*[:#]?\s*([A-Za-z0-9][A-Za-z0-9_.-]*)", re.I)
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")


def room_from_location(loc: str | None) -> str | None:
    """A room id from sysLocation / an ONVIF location scope: 'Bldg A, Room A-101' -> A-101,
    'A-101' -> A-101, 'room/A-101' -> A-101; free text without a room -> None."""
    if not loc:
        return None
    t = loc.strip()
    if not t or t.startswith("<") or t.lower() in ("unknown", "none", "n/a", "sitting on the dock of the bay"):
        return None
    parts = [p for p in t.split("/") if p]
    if len(parts) >= 2 and parts[-2].lower() == "room":
        return parts[-1] if _TOKEN.fullmatch(parts[-1]) else None
    m = _ROOM.search(t)
    if m:
        return m.group(1).rstrip(".")
    last = parts[-1] if parts else t
    return last if _TOKEN.fullmatch(last) else None


#: higher = closer to the core (uplink direction for LLDP links)
def tier(kind: str, name: str = "", neighbours: int = 0) -> int:
    if kind in ("router", "firewall"):
        return 3
    if kind == "switch":
        n = name.lower()
        if re.search(r"core|dist|agg|spine|核心|汇聚", n) or neighbours >= 3:
            return 2
        return 1
    if kind == "controller":
        return 2
    return 0


def safe_id(text: str | None) -> str | None:
    """A device id from a name (sysName, ONVIF name): [A-Za-z0-9_.-], no leading punctuation."""
    if not text:
        return None
    t = re.sub(r"[^A-Za-z0-9_.-]+", "-", text.strip()).strip("-._")
    if not t or t.startswith("<") or t.lower() in ("private", "localhost", "unknown"):
        return None
    return t[:64]
