"""`campus-sense snmp-inventory`: one-shot inventory of a device (system group + interfaces).

    campus-sense snmp-inventory --target 10.0.0.1 --community "$C" --json
    campus-sense snmp-inventory --target 10.0.0.1:1161 --v3-user mon \\
        --auth-protocol SHA-256 --auth-key "$A" --priv-protocol AES --priv-key "$P"

``--json`` prints ``{"device": {...}, "interfaces": [...]}`` (interfaces sorted by ifIndex) plus the
network-depth sections of drivers.snmp.tables (entity, lldp, fdb, arp, ip_addresses, poe, health,
wifi -- each present when the device has data; ``profile``; ``section_errors`` per failed table).
Exit 0 on success; on failure exit 1 (2 for bad arguments) with one line on stderr:
``snmp-inventory: HOST:PORT: REASON: message``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from pydantic import ValidationError

from drivers.base import DeviceError

PROG = "snmp-inventory"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", required=True, metavar="HOST[:PORT]", help="device address (default port 161)")
    parser.add_argument("--community", help="SNMP v2c community (or env CAMPUS_SENSE_SNMP_COMMUNITY)")
    parser.add_argument("--v3-user", help="SNMP v3 user name (selects v3)")
    parser.add_argument("--auth-protocol", help="v3: MD5, SHA, SHA-224, SHA-256, SHA-384, SHA-512")
    parser.add_argument("--auth-key", help="v3 authentication pass phrase (or env CAMPUS_SENSE_SNMP_AUTH_KEY)")
    parser.add_argument("--priv-protocol", help="v3: DES, AES (=AES-128), AES-192, AES-256")
    parser.add_argument("--priv-key", help="v3 privacy pass phrase (or env CAMPUS_SENSE_SNMP_PRIV_KEY)")
    parser.add_argument("--context", help="v3 context name")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per try (default 2)")
    parser.add_argument("--retries", type=int, default=1, help="extra tries (default 1)")
    parser.add_argument("--max-repetitions", type=int, default=25, help="GETBULK max-repetitions (default 25)")
    parser.add_argument("--engine", choices=["auto", "pysnmp"], default="auto",
                        help="auto: built-in fast v2c / v3 (USM) client (3DES: pysnmp); pysnmp: force pysnmp")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _split_target(target: str) -> tuple[str, int]:
    t = target.strip()
    if t.startswith("["):  # [v6]:port - not supported by the client, but parse cleanly
        host, _, rest = t[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else "161"
    elif t.count(":") == 1:
        host, port = t.split(":")
    else:
        host, port = t, "161"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port {port!r} in --target {target!r}")
    return host, int(port)


def _options(args: argparse.Namespace):
    from drivers.snmp import Options

    host, port = _split_target(args.target)
    community = args.community or os.environ.get("CAMPUS_SENSE_SNMP_COMMUNITY")
    auth_key = args.auth_key or os.environ.get("CAMPUS_SENSE_SNMP_AUTH_KEY")
    priv_key = args.priv_key or os.environ.get("CAMPUS_SENSE_SNMP_PRIV_KEY")
    data: dict[str, Any] = {"host": host, "port": port, "timeout_s": args.timeout, "retries": args.retries,
                            "max_repetitions": args.max_repetitions, "engine": getattr(args, "engine", "auto")}
    v3_flags = [f for f, v in (("--auth-protocol", args.auth_protocol), ("--auth-key", args.auth_key),
                               ("--priv-protocol", args.priv_protocol), ("--priv-key", args.priv_key),
                               ("--context", args.context)) if v]
    if args.v3_user and args.community:
        raise ValueError("use either --community (v2c) or --v3-user (v3), not both")
    if v3_flags and not args.v3_user:
        raise ValueError(f"{', '.join(v3_flags)} need(s) --v3-user")
    if args.v3_user:
        data.update(version="3", user=args.v3_user, auth_protocol=args.auth_protocol, auth_key=auth_key,
                    priv_protocol=args.priv_protocol, priv_key=priv_key, context=args.context)
        if auth_key and not args.auth_protocol:
            data["auth_protocol"] = "SHA"
        if priv_key and not args.priv_protocol:
            data["priv_protocol"] = "AES"
    else:
        data.update(version="2c", community=community)
    return Options.model_validate(data)


async def collect(options, columns: list[str] | None = None) -> dict[str, Any]:
    """Read the inventory document (also usable from other code)."""
    from drivers.snmp import open_session, open_vlan_session_factory
    from drivers.snmp.client import close_engines
    from drivers.snmp.ifmib import INVENTORY_COLUMNS, read_interfaces, read_system

    session = open_session(options)  # same engine choice as the driver (fast v2c/v3 path by default)
    try:
        system = await read_system(session)
        if system.object_id is None and system.descr is None:
            raise DeviceError("protocol", "agent returned no SNMPv2-MIB system group")
        interfaces = await read_interfaces(session, options.max_repetitions, columns or INVENTORY_COLUMNS)
        from drivers.snmp.tables import collect_sections, inventory_doc
        sections = await collect_sections(session, system.object_id, sys_descr=system.descr,
                                          deadline_s=max(10.0, 15 * options.timeout_s),
                                          vlan_session=open_vlan_session_factory(options),
                                          max_repetitions=options.max_repetitions)
    finally:
        await session.close()
        await close_engines()
    uptime = system.uptime_ticks // 100 if system.uptime_ticks is not None else None
    return {
        "device": {"sysObjectID": system.object_id, "sysDescr": system.descr, "sysName": system.name,
                   "uptime_s": uptime},
        "interfaces": [i.inventory() for i in interfaces],
        "profile": sections.get("_profile"),
        **inventory_doc(sections),  # entity, lldp, fdb, arp, ip_addresses, poe, health, wifi (when present)
    }


def _fmt_uptime(s: int | None) -> str:
    if s is None:
        return "?"
    d, r = divmod(int(s), 86400)
    h, r = divmod(r, 3600)
    m, sec = divmod(r, 60)
    return f"{d}d {h:02d}:{m:02d}:{sec:02d}"


def _table(doc: dict[str, Any]) -> str:
    d = doc["device"]
    lines = [f"sysName:     {d['sysName'] or ''}",
             f"sysObjectID: {d['sysObjectID'] or ''}",
             f"sysDescr:    {(d['sysDescr'] or '').splitlines()[0] if d['sysDescr'] else ''}",
             f"uptime:      {_fmt_uptime(d['uptime_s'])}", ""]
    head = ["ifIndex", "name", "type", "speed", "admin", "oper", "mac", "alias"]
    rows = []
    for i in doc["interfaces"]:
        sp = i["speed_mbps"]
        speed = "" if sp is None else (f"{sp / 1000:g}G" if sp >= 1000 else f"{sp:g}M")
        rows.append([str(i["ifIndex"]), i["name"] or "", "" if i["type"] is None else str(i["type"]), speed,
                     {True: "up", False: "down", None: ""}[i["admin_up"]],
                     {True: "up", False: "down", None: ""}[i["oper_up"]], i["mac"] or "", i["alias"] or ""])
    widths = [max(len(h), *(len(r[n]) for r in rows)) if rows else len(h) for n, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines.append(fmt.format(*head).rstrip())
    lines.extend(fmt.format(*r).rstrip() for r in rows)
    lines.append(f"\n{len(rows)} interfaces")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    where = args.target
    try:
        options = _options(args)
    except ValidationError as e:
        msg = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or 'options'}: {err['msg']}" for err in e.errors())
        print(f"{PROG}: {where}: config: {msg}", file=sys.stderr)
        return 2
    except ValueError as e:  # bad port in --target, conflicting flags
        print(f"{PROG}: {where}: config: {e}", file=sys.stderr)
        return 2
    where = f"{options.host}:{options.port}"
    try:
        doc = asyncio.run(collect(options))
    except DeviceError as e:
        print(f"{PROG}: {where}: {e.reason}: {e}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(_table(doc) + "\n")
    return 0
