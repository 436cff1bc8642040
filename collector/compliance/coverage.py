"""Coverage checks: wireless per room, wired speeds and uplink redundancy, IPv6 on
L3 devices, a monitoring agent online per building.

Pure functions over (CampusModel, Observations, Policy): no I/O, no clock
unless ``now`` is omitted (then ``obs.time``).
"""
from __future__ import annotations

import ipaddress
from typing import Any

from collector.campus.model import CampusModel, Device, Port, Room
from collector.compliance.observations import InterfaceObs, Observations, WifiReading, iso
from collector.compliance.policy import Policy
from collector.compliance.results import FAIL, NA, PASS, UNKNOWN, CheckResult


def evaluate_coverage(campus: CampusModel, obs: Observations, policy: Policy | None = None,
                      building: str | None = None, now: float | None = None) -> list[CheckResult]:
    """Every coverage check for one building (or all). Order: per building, wifi rooms,
    ports, redundancy, capacity, IPv6, agent."""
    policy = policy or Policy()
    now = obs.time if now is None else now
    out: list[CheckResult] = []
    buildings = [building] if building else sorted(campus.buildings)
    for b in buildings:
        out += wifi_coverage(campus, obs, policy, b, now)
        out += port_speeds(campus, obs, policy, b)
        out += uplink_redundancy(campus, obs, policy, b)
        out += capacity(campus, obs, policy, b)
        out += ipv6_presence(campus, obs, policy, b)
        out += agent_presence(campus, obs, policy, b, now)
    return out


# --------------------------------------------------------------------------- wireless

def _reading_ev(r: WifiReading, ap: str | None, note: str = "") -> dict[str, Any]:
    ev = {"what": "wifi reading", "source": r.source, "ssid": r.ssid, "bssid": r.bssid, "ap": ap,
          "signal_dbm": r.signal_dbm, "snr_db": r.snr, "agent": r.agent, "time": iso(r.time)}
    if note:
        ev["note"] = note
    return ev


def _reading_room(campus: CampusModel, r: WifiReading, ap: Device | None) -> str | None:
    if r.room:
        return r.room
    if r.source == "ap_client" and ap is not None:
        return ap.room
    return None


def wifi_coverage(campus: CampusModel, obs: Observations, policy: Policy, building: str,
                  now: float) -> list[CheckResult]:
    wp = policy.wireless
    max_age = wp.max_age_hours * 3600.0
    rooms = [r for r in campus.rooms_in(building) if r.type in wp.room_types]
    by_room: dict[str, list[tuple[WifiReading, Device | None]]] = {}
    for r in obs.wifi:
        if r.source == "ap_client" and not wp.use_ap_client_rssi:
            continue
        ap = campus.devices.get(r.ap) if r.ap else campus.ap_for_bssid(r.bssid)
        room = _reading_room(campus, r, ap)
        if room:
            by_room.setdefault(room, []).append((r, ap))
    aps_by_room: dict[str, list[Device]] = {}
    for d in campus.devices.values():
        if d.type == "ap" and d.room:
            aps_by_room.setdefault(d.room, []).append(d)
    out = []
    for room in sorted(rooms, key=lambda x: x.id):
        out.append(_wifi_room(campus, obs, policy, room, by_room.get(room.id, []), now, max_age,
                              aps_by_room.get(room.id, [])))
    return out


def _wifi_room(campus: CampusModel, obs: Observations, policy: Policy, room: Room,
               readings: list[tuple[WifiReading, Device | None]], now: float, max_age: float,
               room_aps: list[Device]) -> CheckResult:
    wp = policy.wireless
    res = CheckResult("wifi_coverage", UNKNOWN, room.id, "", building=room.building, room=room.id)
    down_aps = {a.id for a in room_aps if a.id in obs.aps and not obs.aps[a.id].up}
    fresh = [(r, ap) for r, ap in readings if r.time is None or now - r.time <= max_age]
    stale = len(readings) - len(fresh)
    campus_r: list[tuple[WifiReading, Device | None]] = []
    for r, ap in fresh:
        if r.ssid not in wp.ssids and not (r.ssid is None and r.source == "ap_client" and ap is not None):
            continue   # AP client readings without an SSID tag: a campus AP serves the campus SSID
        if ap is not None and ap.id in obs.aps and not obs.aps[ap.id].up:
            down_aps.add(ap.id)
            res.evidence.append(_reading_ev(r, ap.id, "ignored: AP is down now"))
            continue
        campus_r.append((r, ap))
    for a in sorted(down_aps):
        st = obs.aps.get(a)
        res.evidence.append({"what": "ap status", "ap": a, "up": False, "time": iso(st.time if st else None)})
    th = "(policy: >= {min_dbm:g} dBm, SNR >= {min_snr:g} dB)"
    pol = {"min_dbm": wp.min_signal_dbm, "min_snr": wp.min_snr_db}
    good = [(r, ap) for r, ap in campus_r
            if r.signal_dbm is not None and r.signal_dbm >= wp.min_signal_dbm
            and r.snr is not None and r.snr >= wp.min_snr_db]
    if good:
        r, ap = max(good, key=lambda x: (x[0].signal_dbm, x[0].snr))
        res.status = PASS
        res.say("wifi_good", "{ssid} heard at {dbm:g} dBm, SNR {snr:g} dB ({via}) " + th, ssid=r.ssid or "Wi-Fi",
                dbm=r.signal_dbm, snr=r.snr, via="AP " + ap.id if ap else r.bssid or r.source, **pol)
        res.evidence.insert(0, _reading_ev(r, ap.id if ap else None))
        return res
    if campus_r:
        best = max(campus_r, key=lambda x: (x[0].signal_dbm if x[0].signal_dbm is not None else -999,
                                            x[0].snr if x[0].snr is not None else -999))
        r, ap = best
        for rr, aa in sorted(campus_r, key=lambda x: -(x[0].signal_dbm or -999))[:5]:
            res.evidence.append(_reading_ev(rr, aa.id if aa else None))
        sig_ok = r.signal_dbm is not None and r.signal_dbm >= wp.min_signal_dbm
        if down_aps:
            res.say("wifi_ap_down_weak", "AP {aps} down; remaining readings below threshold (best {dbm} dBm) " + th,
                    aps=", ".join(sorted(down_aps)), dbm=r.signal_dbm, **pol)
        elif sig_ok and r.snr is None:
            res.say("wifi_no_snr", "{ssid} heard at {dbm:g} dBm but no SNR/noise reported " + th,
                    ssid=r.ssid or "Wi-Fi", dbm=r.signal_dbm, **pol)
        else:
            res.status = FAIL
            res.severity = "critical" if (r.signal_dbm or -999) < wp.min_signal_dbm - 10 else "warning"
            res.say("wifi_weak", "weak coverage: best {ssid} reading {dbm} dBm, SNR {snr} " + th, ssid=r.ssid or "Wi-Fi",
                    dbm=r.signal_dbm, snr=f"{r.snr:g} dB" if r.snr is not None else "n/a", **pol)
        return res
    surveyed = [(r, ap) for r, ap in fresh if r.source == "survey"]
    if surveyed and not down_aps:
        res.status = FAIL
        res.severity = "critical"
        heard = sorted({r.ssid or "?" for r, _ in surveyed})
        res.say("wifi_not_heard", "campus SSID {ssids} not heard in survey (heard: {heard})",
                ssids="/".join(wp.ssids), heard=", ".join(heard))
        for r, ap in surveyed[:5]:
            res.evidence.append(_reading_ev(r, ap.id if ap else None))
        return res
    if down_aps:
        res.say("wifi_ap_down", "no current reading: AP {aps} down", aps=", ".join(sorted(down_aps)))
    elif stale:
        res.say("wifi_stale", "no survey data ({n} reading(s) older than {hours:g} h ignored)", n=stale,
                hours=wp.max_age_hours)
    else:
        res.say("wifi_no_data", "no survey data")
    return res


# --------------------------------------------------------------------------- wired

_ROLE_CHECK = {"desk": ("desk_port_speed", "desk_min_mbps"),
               "uplink": ("uplink_speed", "uplink_min_mbps"),
               "backbone": ("backbone_speed", "backbone_min_mbps"),
               "interbuilding": ("interbuilding_speed", "interbuilding_min_mbps")}


def _fmt_speed(mbps: float | None) -> str:
    if mbps is None:
        return "?"
    return f"{mbps / 1000:g} Gb/s" if mbps >= 1000 else f"{mbps:g} Mb/s"


def _iface_ev(p: Port, i: InterfaceObs | None) -> dict[str, Any]:
    ev = {"what": "interface", "device": p.device, "port": p.port, "role": p.role, "room": p.room, "peer": p.peer}
    if i is not None:
        ev.update({"ifIndex": i.if_index, "ifName": i.name, "speed_mbps": i.speed_mbps, "oper_up": i.oper_up,
                   "admin_up": i.admin_up, "time": iso(i.time)})
    return ev


def _port_building(campus: CampusModel, p: Port) -> str | None:
    return campus.room_building(p.room) or campus.device_building(p.device)


def port_speeds(campus: CampusModel, obs: Observations, policy: Policy, building: str) -> list[CheckResult]:
    out = []
    for p in sorted(campus.ports.values(), key=lambda x: (x.device, x.port)):
        if p.role not in _ROLE_CHECK:
            continue
        if _port_building(campus, p) != building:
            continue
        check, attr = _ROLE_CHECK[p.role]
        need = getattr(policy.wired, attr)
        i = obs.interface(p.device, p.port, p.if_index)
        subj = f"{p.device} {p.port}"
        r = CheckResult(check, UNKNOWN, subj, "", building=building, room=p.room, device=p.device,
                        evidence=[_iface_ev(p, i)])
        if i is None:
            r.say("port_no_data", "no interface data for {port}", port=subj)
        elif i.oper_up is None:
            r.say("port_oper_unknown", "{port}: operational status unknown", port=subj)
        elif not i.oper_up:
            r.status = NA
            r.severity = "info"
            r.say("port_down_speed", "{port} is down (only ports operationally up count for speed)", port=subj)
        elif i.speed_mbps is None or i.speed_mbps <= 0:
            r.say("port_no_speed", "{port} is up but reports no speed", port=subj)
        else:
            r.status = PASS if i.speed_mbps >= need else FAIL
            r.say("port_speed", "{port} up at {speed} (policy: >= {need})", port=subj,
                  speed=_fmt_speed(i.speed_mbps), need=_fmt_speed(need))
        out.append(r)
    return out


def access_uplinks(campus: CampusModel, obs: Observations, policy: Policy,
                   device: Device) -> list[tuple[Port, InterfaceObs | None, str]]:
    """Uplink ports of an access switch: declared in the campus model (role uplink),
    plus LLDP neighbours of a distribution/core role on undeclared ports."""
    ups: list[tuple[Port, InterfaceObs | None, str]] = []
    declared = {p.port.lower(): p for p in campus.ports_of(device.id)}
    for p in campus.ports_of(device.id):
        if p.role == "uplink":
            ups.append((p, obs.interface(p.device, p.port, p.if_index), "campus model"))
    for l in obs.lldp:
        if l.device != device.id or not l.local_port:
            continue
        if l.local_port.lower() in declared:
            continue
        peer = campus.devices.get(l.remote_device or "")
        if peer is None or peer.role not in policy.wired.uplink_peer_roles:
            continue
        p = Port(device=device.id, port=l.local_port, role="uplink", peer=peer.id, peer_port=l.remote_port,
                 if_index=l.local_if_index)
        declared[l.local_port.lower()] = p
        ups.append((p, obs.interface(device.id, l.local_port, l.local_if_index), "lldp"))
    return ups


def uplink_redundancy(campus: CampusModel, obs: Observations, policy: Policy, building: str) -> list[CheckResult]:
    need = policy.wired.min_uplinks_per_access_switch
    out = []
    for d in sorted(campus.devices_in(building), key=lambda x: x.id):
        if d.type != "switch" or d.role != "access":
            continue
        ups = access_uplinks(campus, obs, policy, d)
        ev = []
        for p, i, src in ups:
            e = _iface_ev(p, i)
            e["source"] = src
            ev.append(e)
        r = CheckResult("uplink_redundancy", UNKNOWN, d.id, "", building=building, device=d.id,
                        evidence=ev)
        n_up = sum(1 for _, i, _ in ups if i is not None and i.oper_up)
        n_unknown = sum(1 for _, i, _ in ups if i is None or i.oper_up is None)
        if len(ups) < need:
            r.status = FAIL
            r.severity = "critical" if len(ups) <= 1 else "warning"
            r.say("uplinks_configured", "{device}: {n} uplink(s) configured (policy: >= {need})", device=d.id,
                  n=len(ups), need=need)
        elif n_up >= need:
            r.status = PASS
            r.say("uplinks_up", "{device}: {n} uplinks up (policy: >= {need})", device=d.id, n=n_up, need=need)
        elif n_up + n_unknown >= need:
            r.say("uplinks_unknown", "{device}: {n} uplink(s) up, {unknown} without interface data (policy: >= {need})",
                  device=d.id, n=n_up, unknown=n_unknown, need=need)
        else:
            r.status = FAIL
            r.severity = "critical"
            r.say("uplinks_down", "{device}: only {n} of {total} uplinks up (policy: >= {need} up)", device=d.id,
                  n=n_up, total=len(ups), need=need)
        out.append(r)
    return out


# --------------------------------------------------------------------------- capacity

def capacity(campus: CampusModel, obs: Observations, policy: Policy, building: str) -> list[CheckResult]:
    """"Supports peak concurrent use", judged on the load seen at this snapshot: clients per
    AP (``ap_client_load``) and max(in, out) utilisation of uplink/backbone/inter-building
    ports (``link_utilisation``). Recorded with every snapshot, so the history holds the
    busy hours; no data is unknown, a down AP / port is unknown / n/a."""
    cp = policy.capacity
    if not cp.enabled:
        return []
    out = []
    for d in sorted(campus.devices_in(building), key=lambda x: x.id):
        if d.type != "ap":
            continue
        st = obs.aps.get(d.id)
        r = CheckResult("ap_client_load", UNKNOWN, d.id, "", building=building, room=d.room, device=d.id)
        if st is not None:
            r.evidence.append({"what": "ap load", "ap": d.id, "room": d.room, "up": st.up, "clients": st.clients,
                               "time": iso(st.time)})
        if st is None or (st.up and st.clients is None):
            r.say("ap_no_count", "{device}: no client count collected", device=d.id)
        elif not st.up:
            r.say("ap_down_load", "{device} is down: load unknown", device=d.id)
        else:
            r.status = FAIL if st.clients > cp.max_clients_per_ap else PASS
            r.say("ap_clients", "{device}: {n} clients (policy: <= {max} clients)", device=d.id, n=st.clients,
                  max=cp.max_clients_per_ap)
        out.append(r)
    for p in sorted(campus.ports.values(), key=lambda x: (x.device, x.port)):
        if p.role not in cp.link_roles or _port_building(campus, p) != building:
            continue
        i = obs.interface(p.device, p.port, p.if_index)
        subj = f"{p.device} {p.port}"
        ev = _iface_ev(p, i)
        r = CheckResult("link_utilisation", UNKNOWN, subj, "", building=building, room=p.room, device=p.device,
                        evidence=[ev])
        utils = [u for u in ((i.util_in_pct, i.util_out_pct) if i is not None else ()) if u is not None]
        if i is not None:
            ev.update({"util_in_pct": i.util_in_pct, "util_out_pct": i.util_out_pct})
        if i is None:
            r.say("port_no_data", "no interface data for {port}", port=subj)
        elif i.oper_up is False:
            r.status = NA
            r.severity = "info"
            r.say("port_down", "{port} is down", port=subj)
        elif not utils:
            r.say("link_no_util", "{port}: no utilisation collected", port=subj)
        else:
            u = max(utils)
            r.status = FAIL if u > cp.max_link_util_pct else PASS
            r.say("link_util", "{port} ({role}) at {pct:g} % (policy: <= {max:g} %)", port=subj, role=p.role, pct=u,
                  max=cp.max_link_util_pct)
        out.append(r)
    return out


# --------------------------------------------------------------------------- IPv6 / agents

def _global_v6(addrs: list[str]) -> list[str]:
    good = []
    for a in addrs:
        try:
            ip = ipaddress.ip_address(str(a).split("/")[0].split("%")[0])
        except ValueError:
            continue
        if ip.version == 6 and not (ip.is_link_local or ip.is_loopback or ip.is_unspecified or ip.is_multicast):
            good.append(str(a))
    return good


def ipv6_presence(campus: CampusModel, obs: Observations, policy: Policy, building: str) -> list[CheckResult]:
    if not policy.ipv6.required:
        return []
    out = []
    for d in sorted(campus.devices_in(building), key=lambda x: x.id):
        if not d.routes:
            continue
        r = CheckResult("ipv6", UNKNOWN, d.id, "", building=building, device=d.id)
        addrs = obs.ipv6.get(d.id)
        if addrs is None:
            r.say("ipv6_no_data", "{device}: no IPv6 address data collected", device=d.id)
        else:
            g = _global_v6(addrs)
            r.evidence.append({"what": "ipv6 addresses", "device": d.id, "addresses": ", ".join(addrs) or "(none)",
                               "global": ", ".join(g) or "(none)"})
            if g:
                r.status = PASS
                r.say("ipv6_ok", "{device}: global IPv6 {addresses}", device=d.id, addresses=", ".join(g[:3]))
            else:
                r.status = FAIL
                if addrs:
                    r.say("ipv6_link_local", "{device}: no global IPv6 address (link-local only)", device=d.id)
                else:
                    r.say("ipv6_none", "{device}: no global IPv6 address", device=d.id)
        out.append(r)
    return out


def agent_presence(campus: CampusModel, obs: Observations, policy: Policy, building: str,
                   now: float) -> list[CheckResult]:
    if not policy.agents.required_per_building:
        return []
    silence = policy.agents.max_silence_minutes * 60
    agents = [a for a in obs.agents if a.building == building]
    ev = [{"what": "agent", "agent": a.id, "online": a.online, "last_seen": iso(a.last_seen)} for a in agents]
    live = [a for a in agents if a.online and (a.last_seen is None or now - a.last_seen <= silence)]
    r = CheckResult("agent_online", PASS if live else FAIL, building, "", building=building, evidence=ev)
    if live:
        r.say("agent_online", "agent {agents} online", agents=", ".join(a.id for a in live))
    elif agents:
        r.severity = "critical"
        r.say("agent_offline", "no agent online (known: {agents})", agents=", ".join(a.id for a in agents))
    else:
        r.severity = "critical"
        r.say("agent_none", "no monitoring agent in this building")
    return [r]
