"""What the network looked like: the input snapshot of every compliance check.

The collector builds an ``Observations`` from its store (device facts, latest
interface samples, LLDP/FDB/ARP tables, Wi-Fi survey readings, agent status);
tests and ``campus-sense report --observations FILE.json`` build it directly.
Times are UNIX epoch seconds (float). ``Observations.from_dict`` also accepts
ISO-8601 strings and epoch milliseconds for every ``*time``/``last_seen`` field.
"""
from __future__ import annotations

import json
import time as _time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from collector.campus.model import normalize_ip, normalize_mac


def to_epoch(v: Any) -> float | None:
    if v is None or v == "":
        return None
    if isinstance(v, (int, float)):
        return float(v) / 1000.0 if v > 1e11 else float(v)
    if isinstance(v, datetime):
        return (v if v.tzinfo else v.replace(tzinfo=timezone.utc)).timestamp()
    s = str(v).strip()
    try:
        return to_epoch(float(s))
    except ValueError:
        pass
    dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class DeviceObs:
    """A device the collector knows (polled by an agent or discovered).

    ``facts`` keys used by the checks: model, serial, firmware, mac, ip, sysObjectID,
    vendor, sysName, and the hardening facts (top level or under ``insecure``):
    snmp_communities (list of community strings the device answered, v1/v2c),
    snmp_versions (e.g. ["1", "2c", "3"]), telnet_open (bool), http_mgmt (bool,
    plain-HTTP management answers), https_mgmt (bool), http_redirects_to_https (bool),
    default_credentials (bool or list of accepted user names), clock_offset_s (float,
    device clock minus agent clock)."""
    id: str
    facts: dict[str, Any] = field(default_factory=dict)
    type: str | None = None
    building: str | None = None
    room: str | None = None
    online: bool | None = None
    last_seen: float | None = None
    facts_time: float | None = None


@dataclass
class InterfaceObs:
    device: str
    if_index: int | None
    name: str | None
    speed_mbps: float | None
    oper_up: bool | None
    admin_up: bool | None = None
    time: float | None = None
    # optional load/error figures (SNMP ``interface`` fields) for health summaries
    util_in_pct: float | None = None
    util_out_pct: float | None = None
    in_errors_ps: float | None = None
    out_errors_ps: float | None = None
    in_errors: float | None = None
    out_errors: float | None = None


@dataclass
class LldpLink:
    device: str                 # local device id
    local_port: str | None      # local ifName
    remote_device: str | None   # remote device id / sysName / chassis id
    remote_port: str | None = None
    local_if_index: int | None = None
    time: float | None = None


@dataclass
class FdbEntry:
    switch: str
    mac: str
    port: str | None = None     # ifName
    if_index: int | None = None
    vlan: int | None = None
    last_seen: float | None = None


@dataclass
class ArpEntry:
    ip: str
    mac: str
    device: str | None = None   # router/L3 switch the entry came from
    last_seen: float | None = None


@dataclass
class WifiReading:
    """One SSID/BSSID heard in a room: an agent survey (``source='survey'``) or a
    client RSSI reported by the AP (``source='ap_client'``, ``ap`` set)."""
    ssid: str | None
    bssid: str | None
    signal_dbm: float | None
    snr_db: float | None = None
    noise_dbm: float | None = None
    room: str | None = None     # survey location; for ap_client, defaults to the AP's room
    agent: str | None = None
    ap: str | None = None
    source: str = "survey"
    time: float | None = None
    channel: int | None = None

    @property
    def snr(self) -> float | None:
        if self.snr_db is not None:
            return self.snr_db
        if self.signal_dbm is not None and self.noise_dbm is not None:
            return self.signal_dbm - self.noise_dbm
        return None


@dataclass
class ApStatus:
    ap: str                     # device id (campus model)
    up: bool
    time: float | None = None
    clients: int | None = None


@dataclass
class AgentStatus:
    id: str
    building: str | None
    online: bool
    last_seen: float | None = None
    site: str | None = None


@dataclass
class Sighting:
    """A MAC/IP seen by passive watch, ONVIF/PJLink discovery, DHCP..., with optional facts."""
    mac: str | None
    ip: str | None = None
    source: str = "watch"       # watch | onvif | pjlink | dhcp | ...
    time: float | None = None
    building: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class Observations:
    time: float = field(default_factory=_time.time)
    devices: dict[str, DeviceObs] = field(default_factory=dict)
    interfaces: list[InterfaceObs] = field(default_factory=list)
    lldp: list[LldpLink] = field(default_factory=list)
    fdb: list[FdbEntry] = field(default_factory=list)
    arp: list[ArpEntry] = field(default_factory=list)
    wifi: list[WifiReading] = field(default_factory=list)
    aps: dict[str, ApStatus] = field(default_factory=dict)
    ipv6: dict[str, list[str]] = field(default_factory=dict)   # device id -> addresses (absent = not known)
    agents: list[AgentStatus] = field(default_factory=list)
    sightings: list[Sighting] = field(default_factory=list)

    # ---- lookups
    def interface(self, device: str, name: str | None = None, if_index: int | None = None) -> InterfaceObs | None:
        """Interface by ifName (case-insensitive) or ifIndex. Indexed on first use; call
        ``reindex()`` after changing ``interfaces`` in place."""
        sig = (id(self.interfaces), len(self.interfaces))
        idx = self.__dict__.get("_if_idx")
        if idx is None or idx[0] != sig:
            by_name: dict[tuple[str, str], InterfaceObs] = {}
            by_if: dict[tuple[str, int], InterfaceObs] = {}
            for i in self.interfaces:
                if i.name:
                    by_name.setdefault((i.device, i.name.lower()), i)
                if i.if_index is not None:
                    by_if.setdefault((i.device, i.if_index), i)
            idx = (sig, by_name, by_if)
            self.__dict__["_if_idx"] = idx
        if name is not None:
            hit = idx[1].get((device, name.lower()))
            if hit is not None:
                return hit
        if if_index is not None:
            return idx[2].get((device, if_index))
        return None

    def reindex(self) -> None:
        self.__dict__.pop("_if_idx", None)

    # ---- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("_if_idx", None)
        d["devices"] = list(d["devices"].values())
        d["aps"] = list(d["aps"].values())
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Observations":
        """Build from plain JSON-able data. Raises ValueError naming the bad item (``fdb[3].mac: ...``)."""
        if not isinstance(data, dict):
            raise ValueError("observations: expected a JSON object")

        def build(kind: str, klass: type, raw: Any, i: Any) -> Any:
            where = f"{kind}[{i}]"
            if not isinstance(raw, dict):
                raise ValueError(f"{where}: expected an object")
            names = {f.name for f in fields(klass)}
            unknown = sorted(set(raw) - names)
            if unknown:
                raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}")
            kw = dict(raw)
            try:
                for k in ("time", "last_seen", "facts_time"):
                    if k in kw:
                        kw[k] = to_epoch(kw[k])
                for k in ("mac", "bssid"):
                    if k in kw and kw[k] is not None:
                        kw[k] = normalize_mac(kw[k])
                if "ip" in kw and kw["ip"] is not None and klass is not DeviceObs:
                    kw["ip"] = normalize_ip(kw["ip"])
                return klass(**kw)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{where}: {e}") from None

        obs = cls(time=to_epoch(data.get("time")) or _time.time())
        devs = data.get("devices") or []
        if isinstance(devs, dict):
            devs = [dict(v, id=k) for k, v in devs.items()]
        for i, raw in enumerate(devs):
            d = build("devices", DeviceObs, raw, i)
            obs.devices[d.id] = d
        aps = data.get("aps") or []
        if isinstance(aps, dict):
            aps = [dict(v, ap=k) if isinstance(v, dict) else {"ap": k, "up": bool(v)} for k, v in aps.items()]
        for i, raw in enumerate(aps):
            a = build("aps", ApStatus, raw, i)
            obs.aps[a.ap] = a
        for key, klass in (("interfaces", InterfaceObs), ("lldp", LldpLink), ("fdb", FdbEntry), ("arp", ArpEntry),
                           ("wifi", WifiReading), ("agents", AgentStatus), ("sightings", Sighting)):
            getattr(obs, key).extend(build(key, klass, raw, i) for i, raw in enumerate(data.get(key) or []))
        ipv6 = data.get("ipv6") or {}
        if not isinstance(ipv6, dict):
            raise ValueError("ipv6: expected an object {device: [addresses]}")
        obs.ipv6 = {k: list(v or []) for k, v in ipv6.items()}
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"observations: unknown key(s) {', '.join(unknown)}")
        return obs

    @classmethod
    def load(cls, path: str | Path) -> "Observations":
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except OSError as e:
            raise ValueError(f"{p}: cannot read ({e.strerror})") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}:{e.lineno}: invalid JSON: {e.msg}") from None
        try:
            return cls.from_dict(data)
        except ValueError as e:
            raise ValueError(f"{p}: {e}") from None
