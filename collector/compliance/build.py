"""Build an ``Observations`` snapshot from collector-shaped data.

``observations_from_collector`` is pure: it takes what the collector store
returns (device rows with facts, agent rows, and a ``latest(device,
measurement)`` callable giving ``[(tags, ts_ms, fields)]``) and the campus model
(to turn LLDP system names / AP names into device ids). ``observations_from_store``
is the thin wrapper over a collector ``Store``.

What is read (SNMP driver + profiles, agent, watch):

* device row: ``id, building, facts, facts_ms, last_seen_ms, reachable``
* facts: model, serial, firmware, mac, ip, vendor, sysName, ``ip_addresses`` (-> IPv6),
  ``lldp`` rows (local_port, ifIndex, sys_name, chassis_id, port_id, port_descr),
  ``fdb`` rows (mac, vlan, ifIndex, ifName, status), ``arp`` rows (ip, mac),
  hardening facts (see ``DeviceObs``), ``sightings`` (watch/ONVIF/PJLink: mac, ip, source, time, facts)
* ``interface`` samples: tags ifIndex/ifName, fields speed_mbps, oper_up, admin_up
* ``wifi_ap`` samples (controller/AP): tags ap, ap_mac; field up
* ``wifi_client`` samples (AP-reported client): tags mac, ap[, ssid]; fields rssi_dbm, snr_db
* ``wifi_survey`` samples (agent Wi-Fi survey): tags ssid, bssid[, room]; fields signal_dbm,
  snr_db | noise_dbm; room defaults to the surveying device's campus room
* agent rows: id, building, online, last_seen_ms
"""
from __future__ import annotations

import time as _time
from typing import Any, Callable, Iterable

from collector.campus.model import CampusModel, normalize_mac
from collector.compliance.observations import (AgentStatus, ApStatus, ArpEntry, DeviceObs, FdbEntry, InterfaceObs,
                                               LldpLink, Observations, Sighting, WifiReading, to_epoch)

Latest = Callable[[str, str], list[tuple[dict, int, dict]]]


def _mac(v: Any) -> str | None:
    try:
        return normalize_mac(v)
    except (ValueError, TypeError):
        return None


def _ms(v: Any) -> float | None:
    if v is None:
        return None
    try:
        return float(v) / 1000.0
    except (TypeError, ValueError):
        return to_epoch(v)


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


class _Resolver:
    """LLDP remote names, chassis MACs and AP names/MACs -> campus device ids."""

    def __init__(self, campus: CampusModel, devices: list[dict]):
        self.ids = set(campus.devices) | {d["id"] for d in devices}
        self.by_name: dict[str, str] = {}
        self.by_mac: dict[str, str] = {}
        for d in campus.devices.values():
            if d.mac:
                self.by_mac[d.mac] = d.id
            for b in d.bssids:
                self.by_mac.setdefault(b, d.id)
        for d in devices:
            f = d.get("facts") or {}
            if f.get("sysName"):
                self.by_name[str(f["sysName"]).lower()] = d["id"]
                self.by_name.setdefault(str(f["sysName"]).split(".")[0].lower(), d["id"])
            m = _mac(f.get("mac"))
            if m:
                self.by_mac.setdefault(m, d["id"])

    def __call__(self, name: Any = None, mac: Any = None) -> str | None:
        if name:
            n = str(name)
            if n in self.ids:
                return n
            short = n.split(".")[0]
            if short in self.ids:
                return short
            hit = self.by_name.get(n.lower()) or self.by_name.get(short.lower())
            if hit:
                return hit
        m = _mac(mac)
        if m and m in self.by_mac:
            return self.by_mac[m]
        if m:   # an AP's radio MACs usually differ from its base MAC in the last bits: accept if unambiguous
            cands = {v for k, v in self.by_mac.items() if k[:15] == m[:15]}
            if len(cands) == 1:
                return cands.pop()
        return None


def observations_from_collector(devices: Iterable[dict], agents: Iterable[dict], latest: Latest,
                                campus: CampusModel, now: float | None = None) -> Observations:
    devices = list(devices)
    now = _time.time() if now is None else now
    obs = Observations(time=now)
    resolve = _Resolver(campus, devices)
    for d in devices:
        dev = d["id"]
        f = dict(d.get("facts") or {})
        ft = _ms(d.get("facts_ms"))
        cm = campus.devices.get(dev)
        slim = {k: v for k, v in f.items() if k not in ("lldp", "fdb", "arp", "sightings")}
        obs.devices[dev] = DeviceObs(id=dev, facts=slim, type=cm.type if cm else None,
                                     building=d.get("building") or campus.device_building(dev),
                                     room=cm.room if cm else None, online=d.get("reachable"),
                                     last_seen=_ms(d.get("last_seen_ms")), facts_time=ft)
        ips = f.get("ip_addresses")
        if isinstance(ips, list):
            obs.ipv6[dev] = [str(x.get("ip") if isinstance(x, dict) else x) for x in ips
                             if ":" in str(x.get("ip") if isinstance(x, dict) else x)]
        for row in f.get("lldp") or []:
            obs.lldp.append(LldpLink(device=dev, local_port=row.get("local_port"), local_if_index=_int(row.get("ifIndex")),
                                     remote_device=resolve(row.get("sys_name"), row.get("chassis_id"))
                                     or row.get("sys_name") or row.get("chassis_id"),
                                     remote_port=row.get("port_id") or row.get("port_descr"), time=ft))
        for row in f.get("fdb") or []:
            m = _mac(row.get("mac"))
            if m is None or row.get("status") in ("self", "mgmt"):
                continue
            obs.fdb.append(FdbEntry(switch=dev, mac=m, port=row.get("ifName"), if_index=_int(row.get("ifIndex")),
                                    vlan=_int(row.get("vlan")), last_seen=ft))
        for row in f.get("arp") or []:
            m = _mac(row.get("mac"))
            if m is None or not row.get("ip"):
                continue
            obs.arp.append(ArpEntry(ip=str(row["ip"]), mac=m, device=dev, last_seen=ft))
        for row in f.get("sightings") or []:
            obs.sightings.append(Sighting(mac=_mac(row.get("mac")), ip=row.get("ip"), source=row.get("source", "watch"),
                                          time=to_epoch(row.get("time")) or ft, building=d.get("building"),
                                          facts=row.get("facts") or {}))
        for tags, ts, fl in latest(dev, "interface"):
            obs.interfaces.append(InterfaceObs(device=dev, if_index=_int(tags.get("ifIndex")),
                                               name=tags.get("ifName"), speed_mbps=fl.get("speed_mbps"),
                                               oper_up=fl.get("oper_up"), admin_up=fl.get("admin_up"),
                                               time=_ms(ts)))
        for tags, ts, fl in latest(dev, "wifi_ap"):
            ap = resolve(tags.get("ap"), tags.get("ap_mac"))
            if ap is not None and fl.get("up") is not None:
                obs.aps[ap] = ApStatus(ap=ap, up=bool(fl["up"]), time=_ms(ts), clients=_int(fl.get("clients")))
        for tags, ts, fl in latest(dev, "wifi_client"):
            ap = resolve(tags.get("ap")) or (dev if cm is not None and cm.type == "ap" else None)
            if fl.get("rssi_dbm") is None:
                continue
            obs.wifi.append(WifiReading(ssid=tags.get("ssid"), bssid=_mac(tags.get("bssid")),
                                        signal_dbm=fl.get("rssi_dbm"), snr_db=fl.get("snr_db"), ap=ap,
                                        source="ap_client", time=_ms(ts)))
        for tags, ts, fl in latest(dev, "wifi_survey"):
            if fl.get("signal_dbm") is None:
                continue
            obs.wifi.append(WifiReading(ssid=tags.get("ssid"), bssid=_mac(tags.get("bssid")),
                                        signal_dbm=fl.get("signal_dbm"), snr_db=fl.get("snr_db"),
                                        noise_dbm=fl.get("noise_dbm"), room=tags.get("room") or (cm.room if cm else None),
                                        agent=d.get("agent") or dev, source="survey", time=_ms(ts),
                                        channel=_int(fl.get("channel"))))
    for a in agents:
        obs.agents.append(AgentStatus(id=a["id"], building=a.get("building"), online=bool(a.get("online")),
                                      last_seen=_ms(a.get("last_seen_ms")), site=a.get("site")))
    return obs


def observations_from_store(store: Any, campus: CampusModel, now: float | None = None,
                            offline_after_s: float = 180) -> Observations:
    """Snapshot from a collector Store (``devices()``, ``agents(now_ms, offline_after_s)``,
    ``latest(device, measurement)``)."""
    now = _time.time() if now is None else now
    latest = getattr(store, "latest", None)
    if latest is None:
        def latest(_d: str, _m: str) -> list:   # noqa: E306 - store without latest values
            return []
    return observations_from_collector(store.devices(), store.agents(int(now * 1000), offline_after_s), latest,
                                       campus, now)
