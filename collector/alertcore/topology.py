"""Device metadata and topology inference for the rule engine, fed by Store methods only
(``store.device``, ``store.agent_info``, ``store.devices()``, ``store.agents(...)``,
``store.topology_current(kind)``; no SQL here).

- ``DeviceMeta(store)``: ``{site, building, room, type, tags, agent}`` of a device: agent, site,
  building and facts from ``store.device``, room/type/tags from the agent's birth message ``devices``
  list (``store.agent_info``). Devices not found (or found without room/type/building) are remembered
  in ``missing`` so the caller can invalidate the engine's cache when they show up.
- ``Topology(store)``: device -> upstream switch, rebuilt at most every ``refresh_s``:
  from the current LLDP entries (a neighbour of a higher-ranked type is upstream) and, for devices
  without an LLDP upstream, from the current ``fdb`` entries: the switch that learned the device's
  MAC (facts ``mac``, or facts ``ip`` via ``arp``) on an access port (no switch neighbour on it;
  fewest MACs wins).
"""
from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("collector.alerting")

#: higher = closer to the core; an LLDP neighbour of higher rank is upstream
TYPE_RANK = {"router": 5, "firewall": 5, "core": 4, "core-switch": 4, "distribution": 3,
             "distribution-switch": 3, "switch": 2, "access-switch": 2, "wlc": 2}


def norm_mac(v) -> str | None:
    """'00:1A:2b:..', '001a.2b..', '00-1a-..' -> '001a2b3c4d5e'; None if not a MAC."""
    if not isinstance(v, str):
        return None
    h = "".join(ch for ch in v.lower() if ch in "0123456789abcdef")
    return h if len(h) == 12 and h != "000000000000" else None


class DeviceMeta:
    """``device_meta`` for ``RuleEngine`` (the engine caches the answers)."""

    def __init__(self, store, ports=None):
        self.store = store
        #: devices without (enough) metadata yet: invalidate the engine's cache when they show up
        self.missing: set[str] = set()
        #: campus model port roles (collector.campus.roles.PortRoles): ``meta["ports"]`` for rules'
        #: ``item_tags: [role=uplink]``; default: the campus tables in the store's own file
        if ports is None:
            from collector.campus.roles import PortRoles
            ports = PortRoles.for_store(store)
        self.ports = ports

    def __call__(self, d: str) -> dict | None:
        """{site, building, room, type, tags, agent, facts} from the collector store (cached by the engine)."""
        try:
            dev = self.store.device(d)
        except Exception:  # noqa: BLE001
            log.exception("device lookup failed for %s", d)
            dev = None
        if dev is None:
            self.missing.add(d)
            return None
        meta = {"site": dev.get("site"), "building": dev.get("building"), "agent": dev.get("agent"),
                "tags": {}, "room": None, "type": None}
        if self.ports is not None:
            meta["ports"] = self.ports.view(d)   # live: a re-imported campus model applies without a restart
        facts = dev.get("facts") or {}
        for k in ("room", "type"):
            if isinstance(facts.get(k), str):
                meta[k] = facts[k]
        if dev.get("agent"):
            info = self.store.agent_info(dev["agent"])
            if info:
                for dd in info.get("devices") or []:
                    if isinstance(dd, dict) and dd.get("id") == d:
                        for k in ("room", "type"):
                            if dd.get(k):
                                meta[k] = dd[k]
                        if isinstance(dd.get("tags"), dict):
                            meta["tags"] = {str(k): str(v) for k, v in dd["tags"].items()}
                        break
        if meta["room"] is None and meta["type"] is None and not dev.get("building"):
            self.missing.add(d)  # look again when it shows up with more metadata
        return meta


class Topology:
    """``topology`` for ``RuleEngine``: device -> upstream switch, rebuilt at most every ``refresh_s``."""

    def __init__(self, store, refresh_s: float = 60.0, clock=time.monotonic):
        self.store = store
        self.refresh_s = refresh_s
        self.clock = clock
        self._map: dict[str, str] = {}
        self._at: float | None = None

    def invalidate(self) -> None:
        """Rebuild on the next lookup."""
        self._at = None

    def __call__(self, d: str) -> str | None:
        now = self.clock()
        if self._at is None or now - self._at > self.refresh_s:
            self._at = now
            try:
                self._map = build_topology(self.store)
            except Exception:  # noqa: BLE001
                log.exception("topology from LLDP/FDB failed")
        return self._map.get(d)

    def mapping(self) -> dict[str, str]:
        return dict(self._map)


def build_topology(store) -> dict[str, str]:
    """device -> upstream switch from the store's current LLDP entries, then FDB/ARP (module doc)."""
    st = store
    # current entries (open topology intervals, store/topology.py): [{device, tags, ...}]
    rows = st.topology_current("lldp")
    fdb_rows = st.topology_current("fdb")
    if not rows and not fdb_rows:
        return {}
    types: dict[str, str] = {}
    for a in st.agents(int(time.time() * 1000), 0):
        info = a.get("info")
        for dd in (info.get("devices") if isinstance(info, dict) else None) or []:
            if isinstance(dd, dict) and dd.get("id") and dd.get("type"):
                types[dd["id"]] = dd["type"]
    names: dict[str, str] = {d.lower(): d for d in types}
    macs: dict[str, str] = {}   # device -> normalised MAC (facts mac, else facts ip via ARP)
    ips: dict[str, str] = {}
    for dv in st.devices():
        did = dv["id"]
        names[did.lower()] = did
        f = dv.get("facts")
        f = f if isinstance(f, dict) else {}
        sn = f.get("sysName")
        if isinstance(sn, str):
            names[sn.lower()] = did
        if norm_mac(f.get("mac")):
            macs[did] = norm_mac(f.get("mac"))
        elif isinstance(f.get("ip"), str):
            ips[did] = f["ip"]
    rank = lambda x: TYPE_RANK.get((types.get(x) or "").lower(), 0)  # noqa: E731
    up: dict[str, str] = {}
    uplinks: set[tuple[str, Any]] = set()   # (switch, port) facing another switch: not an access port
    for r in rows:
        dev, tags = r["device"], r["tags"]
        rn = tags.get("remote_name") or tags.get("remote_chassis")
        peer = names.get(str(rn).lower()) if rn else None
        if not peer or peer == dev:
            continue
        if rank(dev) > rank(peer):
            up.setdefault(peer, dev)
        elif rank(peer) > rank(dev):
            up.setdefault(dev, peer)
        if rank(peer) > 0:  # a port facing another switch/router is a trunk, not an access port
            uplinks.add((dev, tags.get("ifIndex") or tags.get("local_port")))
    if fdb_rows:
        topology_from_fdb(st, fdb_rows, up, macs, ips, uplinks, rank)
    return up


def topology_from_fdb(store, fdb_rows: list[dict], up: dict, macs: dict, ips: dict, uplinks: set, rank) -> None:
    """Devices without an LLDP upstream: the switch whose FDB learned the device's MAC on an
    access port (no LLDP neighbour on it), the port with the fewest MACs when several switches
    learned it (switches further up learn it on their uplinks, which carry many MACs)."""
    if ips:
        for r in store.topology_current("arp"):
            t = r["tags"]
            for d, ip in list(ips.items()):
                if t.get("ip") == ip and norm_mac(t.get("mac")):
                    macs.setdefault(d, norm_mac(t.get("mac")))
    port_macs: dict[tuple[str, str], set[str]] = {}
    for r in fdb_rows:
        sw, t = r["device"], r["tags"]
        mac = norm_mac(t.get("mac"))
        port = t.get("ifIndex") or t.get("ifName")
        if mac and port is not None and (sw, port) not in uplinks:
            port_macs.setdefault((sw, str(port)), set()).add(mac)
    by_mac: dict[str, list[tuple[int, str]]] = {}
    for (sw, _port), ms in port_macs.items():
        for m in ms:
            by_mac.setdefault(m, []).append((len(ms), sw))
    for d, m in macs.items():
        if d in up or m not in by_mac:
            continue
        cands = sorted((n, sw) for n, sw in by_mac[m]
                       if sw != d and (rank(d) == 0 or rank(sw) > rank(d)))
        if cands:
            up[d] = cands[0][1]
