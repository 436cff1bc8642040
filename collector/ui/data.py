"""What the pages show, read through the Store's typed methods, the alert engine and the
compliance service (no SQL here). Every function takes the user's ``scope`` (empty: campus)."""
from __future__ import annotations

import ipaddress
import logging
import time
from typing import Any

from ..store.topology import norm_mac

log = logging.getLogger("collector.ui")

#: device groups on the building page: by the type the agent reports, else by driver
GROUPS = ("network", "wifi", "camera", "sensor", "projector", "access", "other")
_TYPE_GROUP = {"switch": "network", "router": "network", "firewall": "network", "wlan_controller": "network",
               "core": "network", "ap": "wifi", "camera": "camera", "nvr": "camera", "sensor": "sensor",
               "fridge": "sensor", "freezer": "sensor", "gas": "sensor", "gas_detector": "sensor",
               "temperature": "sensor", "projector": "projector", "door": "access", "access": "access",
               "door_controller": "access", "fire": "access", "fire_panel": "access"}
_DRIVER_GROUP = {"snmp": "network", "onvif": "camera", "camera_health": "camera", "modbus": "sensor",
                 "mqtt_sensors": "sensor", "pjlink": "projector", "access": "access"}


def now_ms() -> int:
    return int(time.time() * 1000)


def group_of(dtype: str | None, driver: str | None) -> str:
    return _TYPE_GROUP.get((dtype or "").lower()) or _DRIVER_GROUP.get(driver or "") or "other"


def compliance(app):
    return getattr(app.state, "compliance", None)


def campus_model(app):
    svc = compliance(app)
    if svc is None:
        return None
    try:
        return svc.model()[0]
    except Exception as e:  # noqa: BLE001 - pages work without a campus model
        log.warning("campus model: %s", e)
        return None


def engine(app):
    al = getattr(app.state, "alerting", None)
    return getattr(al, "engine", None) if al is not None else None


def in_scope(scope, building: str | None, site: str | None = None) -> bool:
    return not scope or building in scope or (site is not None and site in scope)


def devices(app, scope=()) -> list[dict[str, Any]]:
    """Devices with room/type (agent's device list, else the campus model) and their group."""
    store = app.state.store
    cm = campus_model(app)
    info_cache: dict[str, dict] = {}
    out = []
    for d in store.devices():
        if not in_scope(scope, d.get("building"), d.get("site")):
            continue
        ag = d.get("agent")
        if ag and ag not in info_cache:
            info_cache[ag] = {x.get("id"): x for x in (store.agent_info(ag) or {}).get("devices") or []
                              if isinstance(x, dict)}
        meta = info_cache.get(ag, {}).get(d["id"], {})
        md = cm.devices.get(d["id"]) if cm is not None else None
        room = meta.get("room") or (md.room if md else None)
        dtype = meta.get("type") or (md.type if md else None) or d.get("facts", {}).get("type")
        floor = None
        if cm is not None and room in cm.rooms:
            fl = cm.rooms[room].floor
            floor = cm.floors[fl].name or fl if fl in cm.floors else fl
        out.append({**d, "room": room, "type": dtype, "floor": floor, "group": group_of(dtype, d.get("driver"))})
    return out


def alerts(app, principal, flt: dict) -> list:
    """Alerts the principal may see (it: network alerts only; scope: its buildings)."""
    eng = engine(app)
    if eng is None:
        return []
    al = app.state.alerting
    try:
        res = eng.alerts(dict(flt))
    except Exception as e:  # noqa: BLE001
        log.warning("alerts: %s", e)
        return []
    if principal.role == "it":
        res = [a for a in res if al.is_network(a)]
    if principal.scope:
        res = [a for a in res if in_scope(principal.scope, a.labels.get("building"), a.labels.get("site"))]
    return res


def alert_detail(app, principal, alert_id: int) -> dict[str, Any]:
    """What ``GET /api/v1/alerts/{id}`` answers (the alert, its history, the samples/events that fired it),
    from that endpoint itself; raises its HTTPException (404, 403 for it on a non-network alert)."""
    def walk(routes):
        for r in routes:
            sub = getattr(r, "original_router", None)     # FastAPI >= 0.16x keeps included routers nested
            yield from walk(sub.routes) if sub is not None else (r,)
    for r in walk(app.router.routes):
        if getattr(r, "path", "").endswith("/alerts/{alert_id}") and "GET" in (getattr(r, "methods", None) or ()):
            return r.endpoint(alert_id=alert_id, p=principal)
    raise LookupError("the alert API (GET /api/v1/alerts/{id}) is not mounted")


def buildings(app, principal) -> list[dict[str, Any]]:
    scope = principal.scope
    cm = campus_model(app)
    devs = devices(app, scope)
    agents = agents_list(app, scope)
    out: dict[str, dict[str, Any]] = {}

    def row(bid: str, site: str | None) -> dict[str, Any]:
        if bid not in out:
            b = cm.buildings.get(bid) if cm is not None else None
            out[bid] = {"id": bid, "name": (b.name if b else "") or bid, "site": site or (b.site if b else None),
                        "devices": 0, "unreachable": 0, "agents": 0, "agents_online": 0,
                        "alerts": 0, "critical": 0}
        return out[bid]

    if cm is not None:
        for bid, b in cm.buildings.items():
            if in_scope(scope, bid, b.site):
                row(bid, b.site)
    for d in devs:
        if d.get("building"):
            r = row(d["building"], d.get("site"))
            r["devices"] += 1
            r["unreachable"] += d.get("reachable") is False
    for a in agents:
        if a.get("building"):
            r = row(a["building"], a.get("site"))
            r["agents"] += 1
            r["agents_online"] += bool(a.get("online"))
    for a in alerts(app, principal, {"state": "active"}):
        b = a.labels.get("building")
        if b in out:
            out[b]["alerts"] += 1
            out[b]["critical"] += a.severity == "critical"
    for r in out.values():
        if r["critical"] or (r["agents"] and not r["agents_online"]):
            r["status"] = "critical"
        elif r["alerts"] or r["unreachable"] or r["agents_online"] < r["agents"]:
            r["status"] = "warning"
        elif not r["devices"] and not r["agents"]:
            r["status"] = "unknown"
        else:
            r["status"] = "ok"
    return sorted(out.values(), key=lambda r: r["id"])


def agents_list(app, scope=()) -> list[dict[str, Any]]:
    store = app.state.store
    return [a for a in store.agents(now_ms(), getattr(app.state, "offline_after_s", 180.0))
            if in_scope(scope, a.get("building"), a.get("site"))]


def latest(app, device: str, measurement: str) -> list[tuple[dict, int, dict]]:
    f = getattr(app.state.store, "latest", None)
    if f is None:
        return []
    try:
        return f(device, measurement)
    except Exception as e:  # noqa: BLE001
        log.warning("latest %s %s: %s", device, measurement, e)
        return []


def port_problem(i: dict) -> str | None:
    f = i.get("fields") or {}
    if i.get("admin_up") and i.get("oper_up") is False:
        return "down"
    if any((f.get(k) or 0) > 0 for k in ("in_errors_ps", "out_errors_ps")):
        return "errors"
    return None


def building(app, principal, bid: str) -> dict[str, Any]:
    devs = [d for d in devices(app, principal.scope) if d.get("building") == bid]
    ports, aps, clients, values = [], [], {}, {}
    for d in devs:
        if d["group"] in ("network", "other"):     # switches, routers, and devices of no known type
            for i in app.state.store.interfaces(d["id"]):
                why = port_problem(i)
                if why:
                    ports.append({"device": d["id"], **i, "problem": why})
        for tags, ts, f in latest(app, d["id"], "wifi_ap"):
            aps.append({"controller": d["id"], "ap": tags.get("ap") or tags.get("ap_mac"), "mac": tags.get("ap_mac"),
                        "up": f.get("up"), "ts_ms": ts})
        for tags, ts, f in latest(app, d["id"], "wifi_clients"):
            k = tags.get("ap") or "?"
            clients[k] = clients.get(k, 0) + (f.get("clients") or 0)
        if d["group"] in ("sensor", "projector", "camera", "access"):
            vals = {}
            for m in ("temperature", "gas", "projector", "camera_health", "onvif", "humidity"):
                for tags, ts, f in latest(app, d["id"], m):
                    for k, v in f.items():
                        if isinstance(v, (int, float, str)) and not isinstance(v, bool) and len(vals) < 6:
                            vals[f"{m}.{k}"] = v
            values[d["id"]] = vals
    for a in aps:
        a["clients"] = clients.get(a["ap"])
    floors: dict[str, dict[str, list]] = {}
    for d in devs:
        floors.setdefault(d.get("floor") or "", {}).setdefault(d.get("room") or "", []).append(d)
    b = next((x for x in buildings(app, principal) if x["id"] == bid), None)
    return {"building": b, "devices": devs, "floors": floors, "ports": ports, "aps": aps, "values": values,
            "alerts": alerts(app, principal, {"state": "active", "building": bid})}


def device_findings(app, device_id: str) -> list[dict[str, Any]]:
    """Compliance/coverage check results about a device (fail and unknown first)."""
    svc = compliance(app)
    if svc is None:
        return []
    try:
        from ..compliance import report
        inp = svc.inputs()
        out = []
        for rep in (report.build_compliance_report(inp.campus, inp.registry, inp.obs, inp.catalog, inp.policy),
                    report.build_coverage_report(inp.campus, inp.obs, inp.policy)):
            for c in report.all_checks(rep):
                if c.get("device") == device_id or (c.get("subject") or "").split(" ")[0] == device_id:
                    out.append(c)
        order = {"fail": 0, "unknown": 1, "pass": 2}
        return sorted(out, key=lambda c: (order.get(c.get("status"), 3), c.get("check", "")))
    except Exception as e:  # noqa: BLE001
        log.warning("findings of %s: %s", device_id, e)
        return []


def port_macs(app, device_id: str, if_index: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
    rows = app.state.store.topology_history("fdb", device_id, start_ms, end_ms, limit=5000)
    return [r for r in rows if str(r.get("ifIndex")) == str(if_index)]


def search(app, principal, q: str) -> dict[str, Any]:
    """Where-is: a MAC (FDB ports, ARP IPs), an IP (ARP, interface addresses), a serial, asset tag,
    device id or name (device facts, the compliance registry)."""
    q = q.strip()
    store = app.state.store
    out: dict[str, Any] = {"q": q, "kind": "text", "devices": [], "fdb": [], "arp": [], "ip_address": [],
                           "where": []}
    if not q:
        return out
    scope = principal.scope
    mac = norm_mac(q) if len(q) <= 64 else None
    ip = None
    try:
        ip = str(ipaddress.ip_address(q))
    except ValueError:
        pass
    ok = (lambda r: not scope or in_scope(scope, *_dev_loc(app, r.get("device"))))
    if mac:
        out["kind"] = "mac"
        h = store.mac_history(mac, None, None, 500)
        out["fdb"] = [r for r in h["fdb"] if ok(r)]
        out["arp"] = [r for r in h["arp"] if ok(r)]
    elif ip:
        out["kind"] = "ip"
        h = store.ip_history(ip, None, None, 500)
        out["arp"] = [r for r in h["arp"] if ok(r)]
        out["ip_address"] = [r for r in h.get("ip_address", []) if ok(r)]
    ql = q.lower()
    for d in devices(app, scope):
        f = d.get("facts") or {}
        hay = [d["id"], f.get("sysName"), f.get("serial"), f.get("mac"), f.get("ip"), f.get("model")]
        if any(isinstance(v, str) and (ql == v.lower() or (len(ql) >= 3 and ql in v.lower())) for v in hay):
            out["devices"].append(d)
    svc = compliance(app)
    if svc is not None and principal.role in ("admin", "it"):
        try:
            from ..compliance.inventory import where_is
            inp = svc.inputs()
            w = where_is(q, inp.campus, inp.registry, inp.obs, inp.policy)
            out["where"] = [m for m in w.get("matches", []) if in_scope(scope, m.get("building"))]
        except Exception as e:  # noqa: BLE001
            log.warning("where-is %r: %s", q, e)
    return out


_loc_cache: dict[str, tuple[str | None, str | None]] = {}


def _dev_loc(app, device_id: str | None) -> tuple[str | None, str | None]:
    if not device_id:
        return None, None
    d = app.state.store.device(device_id)
    return (d.get("building"), d.get("site")) if d else (None, None)
