"""Turn a discovery result into a proposed agent.yaml and a campus-model fragment."""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import yaml

from edge_agent.discover import classify as cl
from edge_agent.discover.probes import Found

DRIVER_OF = {"camera": "onvif", "projector": "pjlink", "sensor": "modbus"}
ROLE_OF = {"router": "gateway", "firewall": "border"}


def _flow(d: dict) -> str:
    return yaml.safe_dump(d, default_flow_style=True, sort_keys=False, width=10_000, allow_unicode=True).strip()


class Secrets:
    """References to credentials in the proposal: the same file/variable the credentials came from;
    an inline value (``--community`` on the command line) goes to a 0600 file beside agent.yaml."""

    def __init__(self, out_dir: Path | None, write: bool, owner: tuple[int, int] | None = None):
        self.out_dir, self.write, self.owner = out_dir, write, owner
        self.files: dict[str, str] = {}     # value -> file written
        self.written: list[Path] = []

    def ref(self, secret, key: str, label: str) -> dict[str, str]:
        if secret.file is not None:
            p = Path(secret.file)
            if self.out_dir is not None:
                try:
                    p = p.resolve().relative_to(self.out_dir.resolve())
                except ValueError:
                    p = p.resolve()
            return {f"{key}_file": str(p)}
        if secret.env is not None:
            return {f"{key}_env": secret.env}
        value = secret.reveal()
        if self.out_dir is None:
            return {key: value}           # printed to stdout: the caller chose that
        name = self.files.get(value)
        if name is None:
            name = self.files[value] = f"{label}-{len(self.files) + 1}"
            if self.write:
                f = self.out_dir / name
                fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(value + "\n")
                os.chmod(f, 0o600)
                if self.owner is not None:   # the agent's service user must read it (as it reads mqtt.pass)
                    os.chown(f, *self.owner)
                self.written.append(f)
        return {f"{key}_file": name}


def assign_ids(found: dict[str, Found], taken: set[str]) -> None:
    used = set(taken)
    for ip in sorted(found, key=_ipkey):
        f = found[ip]
        base = cl.safe_id(f.name) or f"{f.kind}-{ip.replace('.', '-').replace(':', '-')}"
        i, cand = 2, base
        while cand in used:
            cand, i = f"{base}-{i}", i + 1
        f.id = cand
        used.add(cand)


def _ipkey(ip: str):
    import ipaddress
    try:
        a = ipaddress.ip_address(ip)
        return (a.version, int(a))
    except ValueError:
        return (9, 0)


def device_entry(f: Found, creds, secrets: Secrets, interval_s: float) -> tuple[dict | None, str]:
    """One agent.yaml device for a find (None: cannot be monitored yet, with the reason)."""
    what = [f.kind]
    if f.vendor:
        what.append(f.vendor)
    if f.snmp and f.snmp.get("descr"):
        what.append(repr(f.snmp["descr"].splitlines()[0][:60]))
    if f.location:
        what.append(f"location {f.location!r}")
    comment = f"{f.ip}: {', '.join(what)}; found by {f.via}"
    dev: dict[str, Any] = {"id": f.id}
    if f.snmp:
        c = (list(creds.snmp.v2c) + list(creds.snmp.v3))[f.snmp["cred"]]
        opts: dict[str, Any] = {"host": f.ip}
        if f.snmp["port"] != 161:
            opts["port"] = f.snmp["port"]
        if hasattr(c, "community"):
            opts["version"] = "2c"
            opts.update(secrets.ref(c.community, "community", "snmp-community"))
        else:
            opts.update(version="3", user=c.user)
            for k in ("auth_protocol", "priv_protocol", "context"):
                if getattr(c, k):
                    opts[k] = getattr(c, k)
            for k in ("auth_key", "priv_key"):
                if getattr(c, k) is not None:
                    opts.update(secrets.ref(getattr(c, k), k, f"snmp-{k.replace('_', '-')}"))
        dev.update(driver="snmp", interval_s=interval_s)
    elif f.onvif:
        if not f.onvif.get("xaddr"):
            return None, comment + "; no device service address inside the CIDRs"
        if not creds.onvif:
            return None, comment + "; add an onvif user to --credentials to monitor it"
        import urllib.parse
        u = urllib.parse.urlsplit(f.onvif["xaddr"])
        c = creds.onvif[0]
        opts = {"host": u.hostname, "port": u.port or 80, "username": c.username,
                **secrets.ref(c.password, "password", "onvif-password")}
        dev.update(driver="onvif", interval_s=interval_s)
    elif f.pjlink:
        opts = {"host": f.ip}
        if f.pjlink["port"] != 4352:
            opts["port"] = f.pjlink["port"]
        if f.pjlink.get("auth"):
            i = f.pjlink.get("password_index")
            if i is None or f.pjlink.get("auth_failed"):
                return None, comment + "; projector asks for a PJLink password: add one to --credentials"
            opts.update(secrets.ref(creds.pjlink[i].password, "password", "pjlink-password"))
        dev.update(driver="pjlink", interval_s=interval_s)
    elif f.modbus:
        opts = {"host": f.ip, "unit": f.modbus.get("unit", 1)}
        if f.modbus["port"] != 502:
            opts["port"] = f.modbus["port"]
        dev.update(driver="modbus", interval_s=interval_s)
    else:
        return None, comment
    if f.room:
        dev["room"] = f.room
    dev["type"] = f.kind
    dev["options"] = opts
    return dev, comment


def render_device(dev: dict, comment: str) -> str:
    lines = [f"  # {comment}", f"  - id: {_flow({'x': dev['id']})[4:-1]}"]
    for k in ("driver", "interval_s", "room", "type"):
        if k in dev:
            lines.append(f"    {k}: {_flow({'x': dev[k]})[4:-1]}")
    lines.append(f"    options: {_flow(dev['options'])}")
    return "\n".join(lines) + "\n"


def split_devices(base_text: str, base_data: dict | None = None) -> tuple[str, str]:
    """base agent.yaml text -> (everything but the top-level devices: block, that block's item lines)."""
    lines = base_text.splitlines(keepends=True)
    out, block, inside = [], [], False
    for ln in lines:
        if re.match(r"^devices\s*:", ln):
            inside = True
            rest = ln.split(":", 1)[1].strip()
            if rest and not rest.startswith("#") and rest != "[]":
                block.append(("flow", rest))
            continue
        if inside and ln.strip() and not ln[0].isspace() and not ln.startswith("#"):
            inside = False
        (block.append(("line", ln)) if inside else out.append(ln))
    items = ""
    if block and block[0][0] == "flow":
        items = "".join(f"  - {_flow(d)}\n" for d in (base_data or {}).get("devices") or [])
    else:
        items = "".join(t for _, t in block)
    text = "".join(out)
    return (text if text.endswith("\n") or not text else text + "\n"), items


def existing_devices(base_data: dict | None) -> tuple[set[str], set[tuple[str, str]]]:
    ids, hosts = set(), set()
    for d in (base_data or {}).get("devices") or []:
        if isinstance(d, dict):
            ids.add(str(d.get("id")))
            o = d.get("options") or {}
            if isinstance(o, dict) and o.get("host"):
                hosts.add((str(d.get("driver")), str(o["host"])))
    return ids, hosts


def agent_yaml(base_text: str | None, base_data: dict | None, found: dict[str, Found], creds, secrets: Secrets,
               interval_s: float, header: str) -> tuple[str, list[dict], list[str]]:
    """-> (agent.yaml text, new devices, notes). Devices of the base stay; a find whose (driver, host)
    is already configured is not added again."""
    ids, hosts = existing_devices(base_data)
    assign_ids({ip: f for ip, f in found.items()}, ids)
    new, notes, blocks = [], [], []
    for ip in sorted(found, key=_ipkey):
        f = found[ip]
        dev, comment = device_entry(f, creds, secrets, interval_s)
        if dev is None:
            notes.append(comment)
            continue
        if (dev["driver"], str(dev["options"].get("host"))) in hosts:
            notes.append(f"{comment}; already in agent.yaml")
            continue
        new.append(dev)
        blocks.append(render_device(dev, comment))
    if base_text is None:
        head = ("# Devices proposed by campus-sense discover. No base agent.yaml was given: merge this\n"
                "# devices: list into your agent.yaml (or run again with --base / --output agent.yaml).\n")
        kept = ""
    else:
        head, kept = split_devices(base_text, base_data)
    text = head + header + "devices:" + ("\n" if kept or blocks else " []\n") + kept + "".join(blocks)
    if notes:
        text += "# Not configured (see why):\n" + "".join(f"#   {n}\n" for n in notes)
    return text, new, notes


def _protos(n: dict) -> str:
    return "/".join(p.upper() for p in n.get("protocols") or ["lldp"])


def campus_fragment(found: dict[str, Found], site: str | None, building: str | None, cidrs: list[str]) -> str:
    """Rooms (type to be set), switch roles and LLDP/CDP uplinks: what the agents cannot declare."""
    by_ip = {f.ip: f for f in found.values()}
    by_name = {f.name.lower(): f for f in found.values() if f.name}
    by_name.update({f.id.lower(): f for f in found.values()})
    links: list[tuple[Found, dict, Found | None]] = []
    degree: dict[str, set[str]] = {}
    infra = ("switch", "router", "firewall", "controller")
    for f in found.values():
        for n in f.neighbours:
            nb = by_ip.get(n.get("mgmt_ip") or "") or by_name.get(str(n.get("sys_name") or "").lower())
            links.append((f, n, nb))
            if nb is not None and nb is not f and nb.kind in infra and f.kind in infra:
                degree.setdefault(f.id, set()).add(nb.id)
                degree.setdefault(nb.id, set()).add(f.id)
    tiers = {f.id: cl.tier(f.kind, f.name or f.id, len(degree.get(f.id, ()))) for f in found.values()}
    ports, notes = [], []
    for f, n, nb in links:
        port = n.get("local_port")
        if not port:
            continue
        if nb is None:
            name = n.get("sys_name") or n.get("chassis_id") or "?"
            hint = cl.tier("router" if re.search(r"router|routing platform", str(n.get("sys_descr")), re.I)
                           else "switch", str(name))
            if hint > tiers[f.id]:
                ports.append((f"  - {_flow({'device': f.id, 'port': port, 'role': 'uplink'})}",
                              f"{_protos(n)} neighbour {name!r} ({n.get('port_id', '?')}) is not in the discovered set"))
            continue
        if nb is f:
            continue
        t_f, t_n = tiers[f.id], tiers[nb.id]
        entry = {"device": f.id, "port": port}
        if t_n > t_f:
            entry.update(role="uplink", peer=nb.id)
        elif nb.kind == "ap" and f.kind == "switch":
            entry.update(role="ap")
            if nb.room:
                entry["room"] = nb.room
        elif t_n == t_f and t_f >= 2:
            entry.update(role="backbone", peer=nb.id)
        else:
            continue
        if n.get("port_id"):
            entry["peer_port"] = n["port_id"]
        ports.append((f"  - {_flow(entry)}", _protos(n)))
    rooms: dict[str, list[str]] = {}
    for f in found.values():
        if f.room:
            rooms.setdefault(f.room, []).append(f"{f.id}: {f.location!r}")
    out = [f"# Campus-model fragment proposed by campus-sense discover {time.strftime('%Y-%m-%d %H:%M')} "
           f"({', '.join(cidrs)}).",
           "# Review it: set each room's type, check roles and uplinks; then list it in collector.yaml",
           "# campus: model: [...]. Device types and rooms come from the agents (agent.yaml); this file only",
           "# adds what an agent cannot know (room types, switch roles, port roles, uplinks)."]
    if rooms and site and building:
        out += ["sites:", f"  - id: {site}", "    buildings:", f"      - id: {building}", "        rooms:"]
        for r, src in sorted(rooms.items()):
            out.append(f"          - {_flow({'id': r, 'type': 'other'})}   # TODO room type; from {'; '.join(src)}")
    elif rooms:
        out.append(f"# rooms seen (no --site/--building or base agent.yaml to place them): {', '.join(sorted(rooms))}")
    roles = []
    for f in sorted(found.values(), key=lambda x: x.id):
        if f.kind == "switch":
            t = tiers[f.id]
            higher = any(tiers.get(o, 0) > t for o in degree.get(f.id, ()))
            roles.append({"id": f.id, "role": "access" if t <= 1 else ("distribution" if higher else "core")})
        elif f.kind in ROLE_OF:
            roles.append({"id": f.id, "role": ROLE_OF[f.kind]})
    if roles:
        out.append("devices:")
        out += [f"  - {_flow(r)}" for r in roles]
    if ports:
        out.append("ports:")
        out += [f"{p}   # {why}" for p, why in ports]
    out += [f"# {n}" for n in notes]
    return "\n".join(out) + "\n"


def result_json(res, new: list[dict], notes: list[str], files: dict[str, str]) -> str:
    devs = []
    for ip in sorted(res.found, key=_ipkey):
        f = res.found[ip]
        devs.append({"ip": f.ip, "id": f.id, "kind": f.kind, "via": f.via, "name": f.name, "vendor": f.vendor,
                     "profile": f.profile, "location": f.location, "room": f.room,
                     "protocols": [p for p in ("snmp", "onvif", "pjlink", "modbus") if getattr(f, p)],
                     "sysObjectID": (f.snmp or {}).get("object_id"), "sysDescr": (f.snmp or {}).get("descr"),
                     "neighbours": [{k: n.get(k) for k in ("local_port", "sys_name", "port_id", "mgmt_ip", "protocols")}
                                    for n in f.neighbours],
                     "lldp": [{k: n.get(k) for k in ("local_port", "sys_name", "port_id", "mgmt_ip")}
                              for n in f.neighbours if "lldp" in n["protocols"]],
                     "onvif": {k: (f.onvif or {}).get(k) for k in ("types", "scopes", "xaddr")} if f.onvif else None,
                     "pjlink": f.pjlink, "modbus": f.modbus})
    return json.dumps({"scope": res.scope, "probed": res.probed, "packets": res.packets,
                       "seconds": round(res.seconds, 2), "devices": devs, "outside": res.outside,
                       "proposed": [d["id"] for d in new], "not_configured": notes, "files": files},
                      ensure_ascii=False, indent=2)
