"""`campus-sense discover CIDR [CIDR ...] [--community C ...] [--credentials FILE] [--snmp-port N]
[--output agent.yaml] [--json] [--dry-run]` (see edge_agent/discover/__init__.py)."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from campus_sense.yamlconf import ConfigError


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("cidrs", nargs="+", metavar="CIDR", help="subnets to sweep (nothing outside them is contacted)")
    p.add_argument("--community", action="append", default=[], metavar="C",
                   help="SNMP v2c community to try (repeatable; there is no default)")
    p.add_argument("--credentials", type=Path, metavar="FILE",
                   help="YAML: snmp v2c communities / v3 users, onvif users, pjlink passwords")
    p.add_argument("--snmp-port", type=int, default=161, metavar="N")
    p.add_argument("--output", "-o", type=Path, metavar="agent.yaml",
                   help="write the proposed agent.yaml here (its current content is the base; a copy goes "
                        "to .bak); without it the proposal goes to stdout")
    p.add_argument("--base", type=Path, help="agent.yaml whose agent/mqtt/queue/... sections and devices to keep "
                                             "(default: --output when it exists)")
    p.add_argument("--campus-output", type=Path,
                   help="campus-model fragment (default: campus.discovered.yaml beside --output)")
    p.add_argument("--site", help="site of the rooms found (default: from the base agent.yaml)")
    p.add_argument("--building", help="building of the rooms found (default: from the base agent.yaml)")
    p.add_argument("--json", action="store_true", help="print the findings as JSON on stdout")
    p.add_argument("--dry-run", action="store_true", help="show what would be probed, send nothing")
    p.add_argument("--rate", type=float, default=100.0, help="probe packets/connections per second (default 100)")
    p.add_argument("--concurrency", type=int, default=32, help="addresses probed at once (default 32)")
    p.add_argument("--timeout", type=float, default=1.0, help="seconds per probe (default 1)")
    p.add_argument("--interval", type=float, default=60.0, help="interval_s of proposed devices (default 60)")
    p.add_argument("--no-snmp", action="store_true")
    p.add_argument("--no-onvif", action="store_true")
    p.add_argument("--no-pjlink", action="store_true")
    p.add_argument("--no-lldp", action="store_true", help="do not follow LLDP neighbours")
    p.add_argument("--no-cdp", action="store_true", help="do not follow CDP neighbours (CISCO-CDP-MIB)")
    p.add_argument("--no-multicast", action="store_true", help="no multicast WS-Discovery probe (never sent for "
                                                               "loopback-only CIDRs)")
    p.add_argument("--modbus", action="store_true", help="also probe Modbus TCP (Read Device Identification)")
    p.add_argument("--onvif-port", type=int, default=3702, help=argparse.SUPPRESS)
    p.add_argument("--pjlink-port", type=int, default=4352, help=argparse.SUPPRESS)
    p.add_argument("--modbus-port", type=int, default=502, help=argparse.SUPPRESS)


class Progress:
    def __init__(self, quiet: bool = False):
        self.t0 = self.last = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.quiet = quiet

    def __call__(self, done: int, total: int, found: int) -> None:
        now = time.monotonic()
        if self.quiet or (now - self.last < (0.2 if self.tty else 2.0) and done < total):
            return
        self.last = now
        width = 30
        fill = int(width * done / max(1, total))
        line = (f"discover: [{'#' * fill}{'.' * (width - fill)}] {done}/{total} addresses, {found} devices, "
                f"{now - self.t0:.0f}s")
        sys.stderr.write(("\r" + line + ("\n" if done >= total else "")) if self.tty else line + "\n")
        sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    from campus_sense.yamlconf import load_yaml
    from edge_agent.discover import creds as credmod
    from edge_agent.discover import propose
    from edge_agent.discover.probes import Scope
    from edge_agent.discover.sweep import Settings
    from edge_agent.discover.sweep import run as sweep
    try:
        scope = Scope(args.cidrs)
    except ValueError as e:
        print(f"campus-sense discover: {e}", file=sys.stderr)
        return 2
    try:
        creds = credmod.load(args.credentials, args.community)
    except ConfigError as e:
        print(f"campus-sense discover: {e}", file=sys.stderr)
        return 2
    s = Settings(snmp_port=args.snmp_port, onvif_port=args.onvif_port, pjlink_port=args.pjlink_port,
                 modbus_port=args.modbus_port, modbus=args.modbus, snmp=not args.no_snmp, onvif=not args.no_onvif,
                 pjlink=not args.no_pjlink, multicast=not args.no_multicast, rate=args.rate,
                 concurrency=args.concurrency, timeout=args.timeout, lldp=not args.no_lldp, cdp=not args.no_cdp)
    if s.snmp and not (creds.snmp.v2c or creds.snmp.v3):
        print("campus-sense discover: no SNMP credentials (--community or --credentials): SNMP is skipped",
              file=sys.stderr)
        s.snmp = False
    protos = [p for p, on in (("snmp", s.snmp), ("onvif", s.onvif), ("pjlink", s.pjlink), ("modbus", s.modbus)) if on]
    if not protos:
        print("campus-sense discover: nothing to probe", file=sys.stderr)
        return 2
    n = scope.size()
    per_host = (len(creds.snmp.v2c) + len(creds.snmp.v3) if s.snmp else 0) + 2 * s.onvif + s.pjlink + s.modbus
    if args.dry_run:
        import json
        plan = {"scope": [str(x) for x in scope.nets], "addresses": n, "protocols": protos,
                "snmp_credentials": len(creds.snmp.v2c) + len(creds.snmp.v3), "rate_per_s": s.rate,
                "max_packets": n * per_host, "min_seconds": round(n * per_host / s.rate, 1),
                "multicast": s.onvif and s.multicast and not scope.loopback_only}
        if args.json:
            print(json.dumps(plan, indent=2))
        else:
            print(f"would probe {n} addresses in {', '.join(plan['scope'])} with {', '.join(protos)}: at most "
                  f"{plan['max_packets']} probes at {s.rate:g}/s (>= {plan['min_seconds']} s); "
                  f"multicast WS-Discovery: {'yes' if plan['multicast'] else 'no'}; nothing sent (--dry-run)")
        return 0
    base_path = args.base or (args.output if args.output and args.output.exists() else None)
    base_text = base_data = None
    if base_path is not None:
        try:
            base_text = base_path.read_text()
            base_data, _ = load_yaml(base_path)
        except (OSError, ConfigError) as e:
            print(f"campus-sense discover: base {base_path}: {e}", file=sys.stderr)
            return 2
    agent_sec = (base_data or {}).get("agent") or {}
    site, building = args.site or agent_sec.get("site"), args.building or agent_sec.get("building")

    print(f"discover: {n} addresses in {', '.join(str(x) for x in scope.nets)}: {', '.join(protos)} "
          f"(<= {s.rate:g} probes/s)", file=sys.stderr)
    res = sweep(scope, creds, s, Progress())
    out_dir = args.output.resolve().parent if args.output else None
    owner = None
    if out_dir is not None and os.geteuid() == 0 and (out_dir / "mqtt.pass").exists():
        st = (out_dir / "mqtt.pass").stat()
        owner = (st.st_uid, st.st_gid)
    secrets = propose.Secrets(out_dir, write=args.output is not None, owner=owner)
    header = (f"# --- devices proposed by campus-sense discover {time.strftime('%Y-%m-%d %H:%M')} "
              f"({', '.join(res.scope)}): review before starting the agent\n")
    text, new, notes = propose.agent_yaml(base_text, base_data, res.found, creds, secrets, args.interval, header)
    fragment = propose.campus_fragment(res.found, site, building, res.scope)
    files: dict[str, str] = {}
    status = 0
    if args.output:
        out = args.output
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.discover")
        tmp.write_text(text)
        from edge_agent import config as cfgmod
        try:
            cfgmod.load(tmp)
            valid = None
        except ConfigError as e:
            valid = str(e).replace(str(tmp), str(out))
        if valid is None:
            if out.exists():
                out.replace(out.with_name(out.name + ".bak"))
            os.replace(tmp, out)
            files["agent.yaml"] = str(out)
        else:
            prop = out.with_name(out.name + ".proposed")
            os.replace(tmp, prop)
            files["agent.yaml.proposed"] = str(prop)
            print(f"campus-sense discover: the proposal does not pass agent --check (written to {prop}):\n{valid}",
                  file=sys.stderr)
            status = 2
        camp = args.campus_output or out.with_name("campus.discovered.yaml")
        camp.write_text(fragment)
        files["campus"] = str(camp)
        files.update({f"secret:{p.name}": str(p) for p in secrets.written})
    if args.json:
        print(propose.result_json(res, new, notes, files))
    elif not args.output:
        sys.stdout.write(text + "\n# ---- campus-model fragment ----\n" + fragment)
    print(f"discover: {res.probed} addresses probed with {res.packets} probes in {res.seconds:.1f} s: "
          f"{len(res.found)} devices, {len(new)} proposed, {len(notes)} not configured"
          + (f"; written: {', '.join(files.values())}" if files else ""), file=sys.stderr)
    for o in res.outside:
        print(f"discover: not contacted: {o}", file=sys.stderr)
    return status
