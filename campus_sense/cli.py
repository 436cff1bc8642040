"""`campus-sense` console script.

Each subcommand lives next to the code it drives and exposes
``configure(parser)`` and ``run(args) -> int``; this module only dispatches,
importing a subcommand's module when it is used so ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from campus_sense import __version__

#: name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "agent": ("edge_agent.main", "run the edge agent of one building"),
    "collector": ("collector.main", "run the central collector (ingest, store, API); also token management"),
    "demo": ("campus_sense.demo", "run the whole system with a simulated building, no services needed"),
    "enrol": ("collector.enrol", "on the collector host: create/renew/revoke an agent's broker identity, write its bundle"),
    "discover": ("edge_agent.discover.cli", "on the agent: find devices in given subnets, propose agent.yaml + campus.yaml"),
    "snmp-inventory": ("drivers.snmp.inventory", "one-shot SNMP inventory of a device (system, interfaces, ...)"),
    "rules": ("collector.alertcore.cli", "test alert rules against recorded samples"),
    "notify": ("collector.notify.cli", "check notify.yaml, send a test notification, show routes"),
    "report": ("collector.compliance.cli", "coverage and compliance reports (json/csv/html)"),
    "pcap-analyze": ("drivers.netwatch.cli", "run the network-watch detectors on a pcap/pcapng capture"),
}


#: command -> the package extra it needs (pyproject.toml optional-dependencies); agent and discover
#: need only the core (+ the extras of the drivers a building uses, edge_agent.config.DRIVER_EXTRAS)
EXTRAS: dict[str, str] = {"collector": "collector", "enrol": "collector", "rules": "collector",
                          "notify": "collector", "report": "collector", "demo": "all", "snmp-inventory": "agent",
                          "pcap-analyze": "netwatch", "discover": "agent"}
OURS = ("campus_sense", "edge_agent", "collector", "drivers")
#: command -> message, for commands whose extra is not installed (filled by build_parser)
MISSING: dict[str, str] = {}


def _missing_extra(command: str, e: ModuleNotFoundError) -> str:
    extra = EXTRAS.get(command, "all")
    return (f"campus-sense {command}: needs the [{extra}] extra (Python module {e.name!r} is not installed): "
            f"pip install 'campus-sense[{extra}]'")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="campus-sense", description="Campus infrastructure monitoring.")
    parser.add_argument("--version", action="version", version=f"campus-sense {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR (default INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if only is None or only == name:
            try:
                mod = importlib.import_module(module)
                mod.configure(p)
            except ModuleNotFoundError as e:
                if e.name and module.startswith(e.name):
                    p.set_defaults(_missing=module)
                    continue
                if e.name and e.name.split(".")[0] not in OURS:   # a dependency of a missing extra
                    MISSING[name] = _missing_extra(name, e)
                    continue
                raise
            p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    only = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(only)
    if only in MISSING:
        print(MISSING[only], file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not args.command:
        parser.print_help()
        return 2
    if getattr(args, "_missing", None):
        print(f"campus-sense {args.command}: not available in this build ({args._missing} missing)",
              file=sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as e:   # imported lazily by the command (uvicorn, pysnmp, ...)
        if not e.name or e.name.split(".")[0] in OURS:
            raise
        print(_missing_extra(args.command, e), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
