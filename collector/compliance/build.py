"""Build an ``Observations`` snapshot from collector-shaped data.

``observations_from_collector`` is pure: it takes what the collector store
returns (device rows with facts, agent rows, and a ``latest(device,
measurement)`` callable giving ``[(tags, ts_ms, fields)]``) and the campus model
(to turn LLDP system names / AP names into device ids). ``observations_from_store``
is the thin wrapper over a collector ``Store``.

What is read (SNMP driver + profiles, agent, watch, audit):

* device row: ``id, building, facts, facts_ms, last_seen_ms, reachable``
* facts: model, serial, firmware, mac, ip, vendor, sysName, ``ip_addresses`` (-> IPv6),
  ``ipv6`` (bool from the SNMP driver: False = addresses collected, no global IPv6),
  ``lldp`` rows (local_port, ifIndex, sys_name, chassis_id, port_id, port_descr),
  ``fdb`` rows (mac, vlan, ifIndex, ifName, status), ``arp`` rows (ip, mac),
  hardening facts (see ``DeviceObs``; the ``audit`` driver sends them under ``insecure``),
  ``sightings`` (watch/ONVIF/PJLink: mac, ip, source, time, facts),
  ``netwatch_stations`` (netwatch driver: mac, ip, first_seen, last_seen epoch s -> sightings)
* ``interface`` samples: tags ifIndex/ifName, fields speed_mbps, oper_up, admin_up,
  util_in_pct/util_out_pct, in_errors_ps/out_errors_ps, in_errors/out_errors
* topology entries of the SNMP driver (kept by the store as intervals, ``topology_current``; only
  those last seen after ``now - topology_fresh_s`` count, the last sighting gives their time):
  ``fdb`` (tags mac, ifIndex, ifName, vlan), ``arp`` (ip, mac, ifIndex), ``lldp`` (ifIndex,
  local_port, remote_chassis, remote_port, remote_name), ``ip_address`` (ip, family ipv4|ipv6)
* ``wifi_ap`` samples (controller/AP): tags ap, ap_mac; fields up, clients
* ``wifi_clients`` samples (clients per AP and band): tags ap, band; field clients (AP load)
* ``wifi_client`` samples (AP-reported client): tags mac, ap[, ssid]; fields rssi_dbm, snr_db
* ``wifi_survey`` samples (agent Wi-Fi survey, netwatch driver): tags ssid, bssid[, room,
  security, channel]; fields signal_dbm, snr_db | noise_dbm[, channel]; room: the ``room`` tag (the
  agent adds the device's configured room to its tags), else the surveying device's campus room
* agent rows: id, building, online, last_seen_ms
"""
from __future__ import annotations

import sqlite3
import time as _time
from typing import Any, Callable, Iterable

from campus_sense.wire import TOPOLOGY_MEASUREMENTS
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
        m = _mac(mac) or (_mac(name) if name else None)   # wifi_clients tags ap with the AP MAC when unnamed
        if m and m in self.by_mac:
            return self.by_mac[m]
        if m:   # an AP's radio MACs usually differ from its base MAC in the last bits: accept if unambiguous
            cands = {v for k, v in self.by_mac.items() if k[:15] == m[:15]}
            if len(cands) == 1:
                return cands.pop()
        return None


TOPOLOGY = TOPOLOGY_MEASUREMENTS
WIFI = ("wifi_ap", "wifi_clients", "wifi_client", "wifi_survey")
#: default freshness window of topology samples: three collections at the driver's 300 s interval
TOPOLOGY_FRESH_S = 900.0
_IF_EXTRA = ("util_in_pct", "util_out_pct", "in_errors_ps", "out_errors_ps", "in_errors", "out_errors")


def _num(v: Any) -> float | None:
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def observations_from_collector(devices: Iterable[dict], agents: Iterable[dict], latest: Latest,
                                campus: CampusModel, now: float | None = None) -> Observations:
    """``latest(device, measurement)`` -> ``[(tags, ts_ms, fields)]``; for the topology
    measurements (``fdb``/``arp``/``lldp``/``ip_address``) it should return only fresh entries."""
    devices = list(devices)
    now = _time.time() if now is None else now
    obs = Observations(time=now)
    resolve = _Resolver(campus, devices)
    fdb: dict[tuple, FdbEntry] = {}
    arp: dict[tuple, ArpEntry] = {}
    lldp: dict[tuple, LldpLink] = {}

    def keep(table: dict, key: tuple, item: Any, t: float | None, attr: str) -> None:
        prev = table.get(key)
        if prev is None or (getattr(prev, attr) or 0) <= (t or 0):
            table[key] = item

    ap_clients: dict[str, int] = {}
    for d in devices:
        dev = d["id"]
        f = dict(d.get("facts") or {})
        ft = _ms(d.get("facts_ms"))
        cm = campus.devices.get(dev)
        slim = {k: v for k, v in f.items() if k not in ("lldp", "fdb", "arp", "sightings", "netwatch_stations")}
        obs.devices[dev] = DeviceObs(id=dev, facts=slim, type=cm.type if cm else None,
                                     building=d.get("building") or campus.device_building(dev),
                                     room=cm.room if cm else None, online=d.get("reachable"),
                                     last_seen=_ms(d.get("last_seen_ms")), facts_time=ft)
        ips = f.get("ip_addresses")
        if isinstance(ips, list):
            obs.ipv6[dev] = [str(x.get("ip") if isinstance(x, dict) else x) for x in ips
                             if ":" in str(x.get("ip") if isinstance(x, dict) else x)]
        elif f.get("ipv6") is False:        # SNMP driver: addresses were read, no global IPv6 among them
            obs.ipv6[dev] = []
        # ---- tables sent as facts (snmp-inventory style documents)
        for row in f.get("lldp") or []:
            if not isinstance(row, dict):
                continue
            l = LldpLink(device=dev, local_port=row.get("local_port"), local_if_index=_int(row.get("ifIndex")),
                         remote_device=resolve(row.get("sys_name"), row.get("chassis_id"))
                         or row.get("sys_name") or row.get("chassis_id"),
                         remote_port=row.get("port_id") or row.get("port_descr"), time=ft)
            keep(lldp, (dev, l.local_port or l.local_if_index, l.remote_device), l, ft, "time")
        for row in f.get("fdb") or []:
            if not isinstance(row, dict):
                continue
            m = _mac(row.get("mac"))
            if m is None or row.get("status") in ("self", "mgmt"):
                continue
            e = FdbEntry(switch=dev, mac=m, port=row.get("ifName"), if_index=_int(row.get("ifIndex")),
                         vlan=_int(row.get("vlan")), last_seen=ft)
            keep(fdb, (dev, m, e.vlan), e, ft, "last_seen")
        for row in f.get("arp") or []:
            if not isinstance(row, dict):
                continue
            m = _mac(row.get("mac"))
            if m is None or not row.get("ip"):
                continue
            keep(arp, (dev, str(row["ip"])), ArpEntry(ip=str(row["ip"]), mac=m, device=dev, last_seen=ft), ft,
                 "last_seen")
        for row in f.get("sightings") or []:
            if not isinstance(row, dict):
                continue
            obs.sightings.append(Sighting(mac=_mac(row.get("mac")), ip=row.get("ip"), source=row.get("source", "watch"),
                                          time=to_epoch(row.get("time")) or ft, building=d.get("building"),
                                          facts=row.get("facts") or {}))
        for row in f.get("netwatch_stations") or []:    # netwatch driver: passive ARP watch
            if not isinstance(row, dict) or not (row.get("mac") or row.get("ip")):
                continue
            obs.sightings.append(Sighting(mac=_mac(row.get("mac")), ip=row.get("ip"), source="netwatch",
                                          time=_epoch(row.get("last_seen")) or ft, building=d.get("building")))
        # ---- topology samples (SNMP driver, every topology_interval_s)
        for tags, ts, _fl in latest(dev, "fdb"):
            m = _mac(tags.get("mac"))
            if m is None:
                continue
            t = _ms(ts)
            e = FdbEntry(switch=dev, mac=m, port=tags.get("ifName"), if_index=_int(tags.get("ifIndex")),
                         vlan=_int(tags.get("vlan")), last_seen=t)
            keep(fdb, (dev, m, e.vlan), e, t, "last_seen")
        for tags, ts, _fl in latest(dev, "arp"):
            m = _mac(tags.get("mac"))
            if m is None or not tags.get("ip"):
                continue
            t = _ms(ts)
            keep(arp, (dev, str(tags["ip"])), ArpEntry(ip=str(tags["ip"]), mac=m, device=dev, last_seen=t), t,
                 "last_seen")
        for tags, ts, _fl in latest(dev, "lldp"):
            t = _ms(ts)
            name, chassis = tags.get("remote_name"), tags.get("remote_chassis")
            l = LldpLink(device=dev, local_port=tags.get("local_port"), local_if_index=_int(tags.get("ifIndex")),
                         remote_device=resolve(name, chassis) or name or chassis,
                         remote_port=tags.get("remote_port"), time=t)
            keep(lldp, (dev, l.local_port or l.local_if_index, l.remote_device), l, t, "time")
        addrs = latest(dev, "ip_address")
        if addrs:
            v6 = sorted({str(tags["ip"]) for tags, _ts, _fl in addrs
                         if tags.get("ip") and (tags.get("family") == "ipv6" or ":" in str(tags["ip"]))})
            obs.ipv6[dev] = v6
        # ---- interfaces
        for tags, ts, fl in latest(dev, "interface"):
            obs.interfaces.append(InterfaceObs(device=dev, if_index=_int(tags.get("ifIndex")),
                                               name=tags.get("ifName"), speed_mbps=fl.get("speed_mbps"),
                                               oper_up=fl.get("oper_up"), admin_up=fl.get("admin_up"),
                                               time=_ms(ts), **{k: _num(fl.get(k)) for k in _IF_EXTRA}))
        # ---- Wi-Fi (SNMP Wi-Fi profiles of controllers/APs; agent surveys)
        ap_names: dict[str, str] = {}     # the controller's AP names -> campus ids (wifi_ap has the MAC)
        for tags, ts, fl in latest(dev, "wifi_ap"):
            ap = resolve(tags.get("ap"), tags.get("ap_mac"))
            if ap is not None and tags.get("ap"):
                ap_names[str(tags["ap"])] = ap
            if ap is not None and fl.get("up") is not None:
                obs.aps[ap] = ApStatus(ap=ap, up=bool(fl["up"]), time=_ms(ts), clients=_int(fl.get("clients")))
        for tags, ts, fl in latest(dev, "wifi_clients"):
            ap = ap_names.get(str(tags.get("ap"))) or resolve(tags.get("ap")) or (dev if cm is not None and cm.type == "ap" else None)
            n = _int(fl.get("clients"))
            if ap is not None and n is not None:
                ap_clients[ap] = ap_clients.get(ap, 0) + n
        for tags, ts, fl in latest(dev, "wifi_client"):
            ap = ap_names.get(str(tags.get("ap"))) or resolve(tags.get("ap")) or (dev if cm is not None and cm.type == "ap" else None)
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
                                        channel=_int(fl.get("channel", tags.get("channel")))))
    for ap, n in ap_clients.items():       # per-band counts: the AP's load when wifi_ap has no count
        st = obs.aps.get(ap)
        if st is not None and st.clients is None:
            st.clients = n
    obs.fdb = sorted(fdb.values(), key=lambda e: (e.switch, e.if_index or 0, e.mac))
    obs.arp = sorted(arp.values(), key=lambda e: (e.device or "", e.ip))
    obs.lldp = sorted(lldp.values(), key=lambda e: (e.device, e.local_if_index or 0, str(e.local_port)))
    for a in agents:
        obs.agents.append(AgentStatus(id=a["id"], building=a.get("building"), online=bool(a.get("online")),
                                      last_seen=_ms(a.get("last_seen_ms")), site=a.get("site")))
    return obs


def with_remembered(obs: Observations, campus: CampusModel, campus_store: Any, policy: Any = None,
                    remember: bool = True) -> Observations:
    """Give the inventory a memory longer than the live topology window (``topology_fresh_s``):
    ``remember``: store every MAC discovered in ``obs`` with its last-seen time
    (``CampusStore.remember_seen``); then add, for each remembered MAC *not* discovered now, a
    ``Sighting(source="remembered", time=<last seen>)`` (no location, so it counts for
    presence only). A registered PC switched off overnight is therefore not "never seen";
    one not seen for ``inventory.missing_after_days`` is "missing, not seen for N days".
    Rows older than 4 x the missing window (at least a year) are forgotten. Returns ``obs``."""
    from collector.compliance.inventory import discover
    from collector.compliance.policy import Policy

    policy = policy or Policy()
    now = obs.time
    seen = discover(campus, obs, policy)
    if remember:
        rows = []
        for sn in seen.values():
            if sn.mac and sn.last_seen is not None:
                ip = max(sn.ips, key=lambda k: sn.ips[k] or 0) if sn.ips else None
                rows.append((sn.mac, ip, sn.building, ",".join(sorted(sn.sources)) or None, sn.last_seen))
        keep_s = max(4 * policy.inventory.missing_after_days, 365) * 86400.0
        try:
            campus_store.remember_seen(rows, forget_before=now - keep_s)
        except sqlite3.Error as e:     # a read-only or busy DB: the report still works without memory
            import logging
            logging.getLogger("campus_sense.compliance").warning("inventory last-seen memory not saved: %s", e)
    current = {sn.mac for sn in seen.values() if sn.mac}
    for row in campus_store.seen():
        if row["mac"] in current:
            continue
        obs.sightings.append(Sighting(mac=row["mac"], ip=row["ip"], source="remembered", time=row["last_seen"],
                                      building=row["building"]))
    return obs


def _epoch(v: Any) -> float | None:
    try:
        return to_epoch(v)
    except (TypeError, ValueError):
        return None


def observations_from_store(store: Any, campus: CampusModel, now: float | None = None,
                            offline_after_s: float = 180, topology_fresh_s: float = TOPOLOGY_FRESH_S) -> Observations:
    """Snapshot from a collector Store through its typed methods only: ``devices()``,
    ``agents(now_ms, offline_after_s)``, ``latest(device, measurement)`` (interfaces, Wi-Fi) and
    ``topology_current(kind, since_ms=...)`` (the fdb/arp/lldp/ip_address entries seen in the last
    ``topology_fresh_s``; their time is the last sighting). Works the same for the embedded store
    and the InfluxDB-sink configuration (topology intervals always stay in the collector store).
    A store without ``topology_current`` is asked ``latest`` for the topology kinds too."""
    now = _time.time() if now is None else now
    latest = getattr(store, "latest", None)
    if latest is None:
        def latest(_d: str, _m: str) -> list:   # noqa: E306 - store without latest values
            return []
    current = getattr(store, "topology_current", None)
    if current is not None:
        since = int((now - topology_fresh_s) * 1000)
        topo: dict[tuple[str, str], list] = {}
        for kind in TOPOLOGY:
            for e in current(kind, since_ms=since):
                topo.setdefault((e["device"], kind), []).append((e["tags"], e["last_seen_ms"], {"seen": 1}))
        store_latest = latest

        def latest(d: str, m: str) -> list:   # noqa: E306
            if m in TOPOLOGY:
                return topo.get((d, m), [])
            return store_latest(d, m)
    return observations_from_collector(store.devices(), store.agents(int(now * 1000), offline_after_s), latest,
                                       campus, now)


def open_collector_db(path: str) -> Any:
    """A read-only view of a collector database (``campus-sense report ... --db``):
    ``SQLiteStore.open_readonly`` (ValueError when ``path`` is not one)."""
    from collector.store.sqlite import SQLiteStore

    return SQLiteStore.open_readonly(path)
