"""Admin health queries: building health summary and device detail (with history).

Pure functions over the same inputs as the reports; ``store`` (a CampusStore) is
optional and only adds compliance history.
"""
from __future__ import annotations

from typing import Any

from collector.campus.model import CampusModel, Registry
from collector.compliance.coverage import evaluate_coverage
from collector.compliance.firmware import Catalog, evaluate_firmware, evaluate_hardening, firmware_status
from collector.compliance.inventory import evaluate_inventory, where_is
from collector.compliance.observations import Observations, iso
from collector.compliance.policy import Policy
from collector.compliance.report import category
from collector.compliance.results import summarize

_SEV = {"critical": 0, "warning": 1, "info": 2}


def building_health(building: str, campus: CampusModel, registry: Registry, obs: Observations, catalog: Catalog,
                    policy: Policy | None = None, store: Any = None, top: int = 20) -> dict[str, Any]:
    """One building at a glance: devices up/down, APs, agents, coverage and compliance
    scores, the worst findings, and score history when a store is given."""
    if building not in campus.buildings:
        raise KeyError(f"unknown building {building!r}")
    policy = policy or Policy()
    cov = evaluate_coverage(campus, obs, policy, building)
    comp = (evaluate_inventory(campus, registry, obs, policy, building)
            + evaluate_firmware(campus, obs, catalog, policy, building)
            + evaluate_hardening(campus, obs, policy, building))
    model_devs = campus.devices_in(building)
    seen_devs = [d for d in obs.devices.values()
                 if (d.building or campus.device_building(d.id)) == building]
    offline = sorted(d.id for d in seen_devs if d.online is False)
    not_polled = sorted(d.id for d in model_devs if d.id not in obs.devices)
    aps = [d for d in model_devs if d.type == "ap"]
    ap_down = sorted(a.id for a in aps if a.id in obs.aps and not obs.aps[a.id].up)
    ap_nodata = sorted(a.id for a in aps if a.id not in obs.aps)
    findings = sorted((r for r in cov + comp if r.status in ("fail", "unknown")),
                      key=lambda r: (r.status != "fail", _SEV.get(r.severity, 3), r.check, r.subject))
    b = campus.buildings[building]
    out = {
        "building": building, "name": b.name, "site": b.site, "observed_at": iso(obs.time),
        "rooms": len(campus.rooms_in(building)),
        "devices": {"in_model": len(model_devs), "observed": len(seen_devs),
                    "online": sum(1 for d in seen_devs if d.online), "offline": offline, "not_polled": not_polled},
        "aps": {"total": len(aps), "up": len(aps) - len(ap_down) - len(ap_nodata), "down": ap_down,
                "no_data": ap_nodata},
        "agents": [{"id": a.id, "online": a.online, "last_seen": iso(a.last_seen)}
                   for a in obs.agents if a.building == building],
        "coverage": summarize(cov), "compliance": summarize(comp),
        "by_category": {c: summarize([r for r in cov + comp if category(r.check) == c])
                        for c in sorted({category(r.check) for r in cov + comp})},
        "findings": [r.to_dict() for r in findings[:top]], "findings_total": len(findings),
    }
    out.update(_load_and_errors(building, campus, obs, seen_devs, aps, top))
    if store is not None:
        out["history"] = {"coverage": store.history("coverage", building=building),
                          "compliance": store.history("compliance", building=building)}
    return out


def _load_and_errors(building: str, campus: CampusModel, obs: Observations, seen_devs: list, aps: list,
                     top: int) -> dict[str, Any]:
    """Interfaces with errors, the busiest interfaces and AP client load of a building."""
    devs = {d.id for d in seen_devs}
    rows = []
    for i in obs.interfaces:
        if i.device not in devs:
            continue
        p = campus.port(i.device, i.name, i.if_index)
        rows.append((i, p))

    def ifrow(i, p) -> dict[str, Any]:
        return {"device": i.device, "ifIndex": i.if_index, "name": i.name, "speed_mbps": i.speed_mbps,
                "oper_up": i.oper_up, "role": p.role if p else None, "room": p.room if p else None,
                "util_in_pct": i.util_in_pct, "util_out_pct": i.util_out_pct,
                "in_errors_ps": i.in_errors_ps, "out_errors_ps": i.out_errors_ps, "time": iso(i.time)}

    errs = [(i, p) for i, p in rows if (i.in_errors_ps or 0) > 0 or (i.out_errors_ps or 0) > 0]
    errs.sort(key=lambda x: -((x[0].in_errors_ps or 0) + (x[0].out_errors_ps or 0)))
    util = [(i, p) for i, p in rows if i.util_in_pct is not None or i.util_out_pct is not None]
    util.sort(key=lambda x: -max(x[0].util_in_pct or 0, x[0].util_out_pct or 0))
    ap_ids = {a.id for a in aps} | {a for a in obs.aps if (campus.device_building(a) or None) == building}
    load = [{"ap": a, "room": (campus.devices[a].room if a in campus.devices else None),
             "up": obs.aps[a].up, "clients": obs.aps[a].clients, "time": iso(obs.aps[a].time)}
            for a in sorted(ap_ids) if a in obs.aps]
    load.sort(key=lambda x: -(x["clients"] or 0))
    up_ifs = [i for i, _p in rows if i.oper_up]
    return {
        "interfaces": {"total": len(rows), "up": len(up_ifs),
                       "with_errors": [ifrow(i, p) for i, p in errs[:top]], "with_errors_total": len(errs),
                       "top_utilisation": [ifrow(i, p) for i, p in util[:top] if max(i.util_in_pct or 0,
                                                                                   i.util_out_pct or 0) > 0]},
        "ap_load": {"clients_total": sum(x["clients"] or 0 for x in load), "aps": load},
    }


def device_detail(device_id: str, campus: CampusModel, registry: Registry, obs: Observations, catalog: Catalog,
                  policy: Policy | None = None, store: Any = None) -> dict[str, Any]:
    """Everything about one device: campus placement, registry record, facts, interfaces,
    LLDP neighbours, location, firmware status, every check about it, history."""
    policy = policy or Policy()
    cm = campus.devices.get(device_id)
    d = obs.devices.get(device_id)
    if cm is None and d is None:
        raise KeyError(f"unknown device {device_id!r}")
    building = (d.building if d else None) or campus.device_building(device_id)
    facts = dict(d.facts) if d else {}
    checks = [r for r in evaluate_coverage(campus, obs, policy, building) if r.device == device_id] if building \
        else []
    checks += [r for r in evaluate_firmware(campus, obs, catalog, policy) + evaluate_hardening(campus, obs, policy)
               if r.device == device_id]
    checks += [r for r in evaluate_inventory(campus, registry, obs, policy) if r.device == device_id]
    asset = registry.by_device_id(device_id)
    if asset is None and facts.get("serial"):
        asset = registry.by_serial(str(facts["serial"]))
    loc = where_is(device_id, campus, registry, obs, policy)
    out = {
        "id": device_id, "building": building,
        "campus": cm.model_dump() if cm else None,
        "asset": asset.model_dump() if asset else None,
        "online": d.online if d else None, "last_seen": iso(d.last_seen) if d else None,
        "facts": facts, "facts_time": iso(d.facts_time) if d else None,
        "firmware": firmware_status(facts.get("model") or (cm.model if cm else None), facts.get("firmware"),
                                    catalog, obs.time, policy),
        "interfaces": [{"ifIndex": i.if_index, "name": i.name, "speed_mbps": i.speed_mbps, "oper_up": i.oper_up,
                        "admin_up": i.admin_up, "time": iso(i.time),
                        "role": (p.role if (p := campus.port(device_id, i.name, i.if_index)) else None),
                        "room": p.room if p else None}
                       for i in obs.interfaces if i.device == device_id],
        "lldp": [{"local_port": l.local_port, "remote_device": l.remote_device, "remote_port": l.remote_port,
                  "time": iso(l.time)} for l in obs.lldp if l.device == device_id],
        "ipv6": obs.ipv6.get(device_id),
        "location": loc["matches"][0] if loc["matches"] else None,
        "checks": [r.to_dict() for r in checks], "summary": summarize(checks),
    }
    if store is not None:
        out["history"] = store.history(None, device=device_id)
    return out
