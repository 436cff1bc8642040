"""`campus-sense report ...`: coverage / compliance reports, where-is, health, import.

    campus-sense report coverage   --building A --format html --lang zh-CN --campus campus.yaml --observations obs.json
    campus-sense report compliance --format csv --campus campus.yaml --registry assets.csv --observations obs.json
    campus-sense report where 00:1a:2b:3c:4d:5e --campus campus.yaml --registry assets.csv --observations obs.json
    campus-sense report health --building A ...          (JSON)
    campus-sense report device a-acc1 ...                (JSON)
    campus-sense report import --campus rooms.csv ports.csv --registry assets.csv --db collector.db
    campus-sense report history --db collector.db --kind coverage --building A
    campus-sense report coverage --building A --format html --db collector.db   (live collector data)

Campus model and registry come from files (--campus / --registry, YAML or CSV, several
allowed) and/or the SQLite DB (--db): files given with --db are upserted into it first and the
DB content is used, so re-imports update in place. With --db the results are appended to the
history table and the report shows the score history. ``--config collector.yaml`` instead of
--db uses the collector's own store: its SQLite file, or with ``store.kind: postgres`` the
PostgreSQL database a district's collectors share (campus model, registry, history and live data;
the running collectors notice an import within ``campus.model_check_s``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from campus_sense.yamlconf import ConfigError

FORMATS = ("json", "csv", "html")


def _common(p: argparse.ArgumentParser, observations: bool = True) -> None:
    p.add_argument("--campus", nargs="+", action="extend", default=[], metavar="FILE",
                   help="campus model file(s): YAML, or rooms/devices/ports CSV")
    p.add_argument("--registry", nargs="+", action="extend", default=[], metavar="FILE",
                   help="asset registry file(s): CSV or YAML")
    _target(p)
    p.add_argument("--strict", action="store_true", help="any bad row in an import file is fatal")
    p.add_argument("--policy", metavar="FILE", help="policy YAML (default firmware_configs/policy/campus-policy.yaml)")
    if observations:
        p.add_argument("--observations", metavar="FILE.json", help="observation snapshot (JSON, offline use); "
                                                                   "without it, --db reads the collector's live data")
        p.add_argument("--offline-after-s", type=float, default=180.0, metavar="S",
                       help="with --db: an agent silent this long counts as offline (collector agents.offline_after_s)")
        p.add_argument("--topology-fresh-s", type=float, default=900.0, metavar="S",
                       help="with --db: FDB/ARP/LLDP/IP samples older than this are ignored")
        p.add_argument("--firmware-dir", metavar="DIR", help="approved-firmware records (default "
                                                             "firmware_configs/firmware)")


def _target(p: argparse.ArgumentParser, required: bool = False) -> None:
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--db", metavar="PATH", help="SQLite DB holding campus model, registry and result history "
                                                "(the collector's DB)")
    g.add_argument("--config", metavar="collector.yaml", help="the collector's store from its configuration: "
                                                              "its SQLite file or the shared PostgreSQL database")


class _Target:
    """Where campus model, registry, history and live data are: ``--db`` (a collector's SQLite file,
    live data read-only) or ``--config`` (the store a collector configuration names)."""

    def __init__(self, args: argparse.Namespace):
        self.path: str | None = getattr(args, "db", None)
        self.live: Any = None           # a PostgresStore (--config with store.kind postgres)
        cfg_path = getattr(args, "config", None)
        if cfg_path:
            from collector.config import load
            cfg = load(cfg_path)
            if cfg.store.kind == "postgres":
                from collector.main import open_store
                self.live = open_store(cfg)
            else:   # never a second writer on a running collector's SQLite file
                self.path = cfg.store.path
        self.given = bool(self.path or self.live is not None)

    def campus(self) -> Any:
        from collector.store.campus import CampusStore
        from collector.store.sqldb import shared_target
        if self.live is not None:
            return CampusStore(shared_target(self.live))
        return CampusStore(self.path) if self.path else None

    def observations(self, campus, args: argparse.Namespace) -> Any:
        from collector.compliance.build import observations_from_store, open_collector_db, with_remembered
        db = self.live if self.live is not None else open_collector_db(self.path)
        try:
            obs = observations_from_store(db, campus, offline_after_s=args.offline_after_s,
                                          topology_fresh_s=args.topology_fresh_s)
            # read-only: what the collector remembered (last seen per MAC), nothing written here
            return with_remembered(obs, campus, self.campus() if self.live is not None else _ReadOnlyCampus(self.path),
                                   remember=False)
        finally:
            if self.live is None:
                db.close()

    def close(self) -> None:
        if self.live is not None:
            self.live.close()


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="report_cmd", metavar="WHAT", required=True)
    for name, help_ in (("coverage", "wireless/wired/IPv6/agent coverage per building and room"),
                        ("compliance", "inventory, firmware and insecure-settings compliance")):
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--building", "-b", metavar="B", help="only this building")
        p.add_argument("--format", "-f", choices=FORMATS, default="json")
        p.add_argument("--lang", choices=("zh-CN", "en"), default="en",
                       help="language of the csv and html reports (check titles, findings, labels)")
        p.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")
        p.add_argument("--no-record", action="store_true", help="with --db: do not append to the history")
        _common(p)
    p = sub.add_parser("where", help="where is this MAC / IP / serial / asset tag / device id?")
    p.add_argument("query")
    _common(p)
    p = sub.add_parser("health", help="building health summary (JSON)")
    p.add_argument("--building", "-b", required=True, metavar="B")
    _common(p)
    p = sub.add_parser("device", help="device detail with checks and history (JSON)")
    p.add_argument("device_id")
    _common(p)
    p = sub.add_parser("history", help="score/status history from the DB (JSON)")
    _target(p, required=True)
    p.add_argument("--kind", choices=("coverage", "compliance"))
    p.add_argument("--building", "-b", metavar="B")
    p.add_argument("--room", metavar="ROOM")
    p.add_argument("--device", metavar="ID")
    p.add_argument("--limit", type=int, default=500)
    p = sub.add_parser("import", help="import campus model / registry files into the DB (upsert)")
    p.add_argument("--prune", action="store_true", help="delete DB rows the files no longer contain")
    _common(p, observations=False)


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def _load_inputs(args: argparse.Namespace, target: _Target, need_obs: bool = True) -> dict[str, Any]:
    from collector.campus.model import CampusModel, Registry, load_campus, load_registry
    from collector.compliance.policy import DEFAULT_FIRMWARE_DIR, load_policy

    notes: list[str] = []
    store = target.campus()
    campus = CampusModel()
    if args.campus:
        prune = getattr(args, "prune", False)
        res = load_campus(args.campus, strict=args.strict,
                          base=store.load_campus() if store is not None and not prune else None)
        for i in res.issues:
            _err(f"{i.severity}: {i}")
            notes.append(f"{i.severity}: {i}")
        campus = res.value
        if store is not None:
            store.save_campus(campus, prune=getattr(args, "prune", False))
    if store is not None:
        campus = store.load_campus()
    registry = Registry()
    if args.registry:
        res = load_registry(args.registry, strict=args.strict, campus=campus)
        for i in res.issues:
            _err(f"{i.severity}: {i}")
            notes.append(f"{i.severity}: {i}")
        registry = res.value
        if store is not None:
            store.save_registry(registry, prune=getattr(args, "prune", False))
    if store is not None:
        registry = store.load_registry()
    out: dict[str, Any] = {"campus": campus, "registry": registry, "store": store, "notes": notes,
                           "policy": load_policy(args.policy)}
    if not need_obs:
        return out
    from collector.compliance.firmware import load_catalog
    from collector.compliance.observations import Observations

    if not campus.buildings:
        raise ConfigError("no campus model: give --campus FILE (or --db / --config with an imported model)")
    if args.observations:
        out["obs"] = Observations.load(args.observations)
    elif target.given:
        out["obs"] = target.observations(campus, args)
    else:
        raise ConfigError("no observations: give --observations FILE.json (or --db / --config)")
    out["catalog"] = load_catalog(args.firmware_dir or DEFAULT_FIRMWARE_DIR, strict=args.strict)
    for e in out["catalog"].errors:
        _err(f"error: {e}")
    return out


def _write(args: argparse.Namespace, text: str) -> None:
    out = getattr(args, "output", None)
    if out:
        Path(out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def run(args: argparse.Namespace) -> int:
    from collector.campus.model import CampusImportError

    try:
        return _run(args)
    except CampusImportError as e:
        _err(f"import failed (strict mode), {len(e.issues)} error(s):\n{e}")
        return 2
    except (ConfigError, ValueError, KeyError) as e:
        _err(f"campus-sense report: {e.args[0] if isinstance(e, KeyError) else e}")
        return 2


def _run(args: argparse.Namespace) -> int:
    target = _Target(args)
    try:
        return _run_on(args, target)
    finally:
        target.close()


def _run_on(args: argparse.Namespace, target: _Target) -> int:
    from collector.compliance import health, report
    from collector.compliance.inventory import where_is

    cmd = args.report_cmd
    if cmd == "history":
        rows = target.campus().history(args.kind, building=args.building, room=args.room, device=args.device,
                                       limit=args.limit)
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    if cmd == "import":
        if not target.given:
            raise ConfigError("import needs --db PATH or --config collector.yaml")
        inp = _load_inputs(args, target, need_obs=False)
        c, r = inp["campus"], inp["registry"]
        print(json.dumps({"db": target.path or "postgres", "sites": len(c.sites), "buildings": len(c.buildings),
                          "rooms": len(c.rooms), "devices": len(c.devices), "ports": len(c.ports),
                          "assets": len(r.assets), "issues": inp["notes"]}, indent=2, ensure_ascii=False))
        return 0
    inp = _load_inputs(args, target)
    campus, registry, obs, policy, catalog, store = (inp["campus"], inp["registry"], inp["obs"], inp["policy"],
                                                     inp["catalog"], inp["store"])
    if cmd in ("coverage", "compliance"):
        if args.building and args.building not in campus.buildings:
            raise ConfigError(f"unknown building {args.building!r} (known: {', '.join(sorted(campus.buildings))})")
        if cmd == "coverage":
            rep = report.build_coverage_report(campus, obs, policy, args.building, notes=inp["notes"])
        else:
            rep = report.build_compliance_report(campus, registry, obs, catalog, policy, args.building,
                                                 notes=inp["notes"])
        if store is not None:
            if not args.no_record:
                store.record_report(rep)
            report.attach_history(rep, store)
        _write(args, report.render(rep, args.format, args.lang))
        return 0
    if cmd == "where":
        res = where_is(args.query, campus, registry, obs, policy)
        print(json.dumps(res, indent=2, ensure_ascii=False))
        return 0 if res["matches"] else 1
    if cmd == "health":
        print(json.dumps(health.building_health(args.building, campus, registry, obs, catalog, policy, store),
                         indent=2, ensure_ascii=False, default=str))
        return 0
    if cmd == "device":
        print(json.dumps(health.device_detail(args.device_id, campus, registry, obs, catalog, policy, store),
                         indent=2, ensure_ascii=False, default=str))
        return 0
    raise ConfigError(f"unknown report command {cmd!r}")


class _ReadOnlyCampus:
    """``seen()`` of a CampusStore without creating tables in someone else's database."""

    def __init__(self, path: str):
        self.path = path

    def seen(self, since: float | None = None) -> list:
        from collector.store.campus import CampusStore
        return CampusStore.seen(self, since)   # type: ignore[arg-type] - only .path is used
