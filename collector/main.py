"""`campus-sense collector`: ingest + store + API in one process; `token` management."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time

from campus_sense.yamlconf import ConfigError

log = logging.getLogger("collector")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="collector.yaml")
    sub = parser.add_subparsers(dest="collector_cmd", metavar="{token}")
    tok = sub.add_parser("token", help="API tokens (stored hashed in the collector database)")
    tsub = tok.add_subparsers(dest="token_cmd", metavar="{create,list,revoke}", required=True)
    c = tsub.add_parser("create", help="create a token and print it once")
    c.add_argument("--role", required=True, choices=("admin", "it", "security"))
    c.add_argument("--name", help="label, e.g. who or what uses it")
    tsub.add_parser("list", help="list tokens (never shows the secret)")
    r = tsub.add_parser("revoke", help="revoke a token by id or name")
    r.add_argument("ident", help="token id or name")
    ag = sub.add_parser("agent", help="agents: re-bind one that really moved to another site/building")
    asub = ag.add_subparsers(dest="agent_cmd", metavar="{move}", required=True)
    mv = asub.add_parser("move", help="an agent is bound to the site/building it was first seen with; its "
                                      "messages under another one are dead letters until you move it")
    mv.add_argument("agent_id")
    mv.add_argument("--site", required=True)
    mv.add_argument("--building", required=True)
    for p in (tok, *tsub.choices.values(), ag, mv):
        p.add_argument("--config", "-c", default=argparse.SUPPRESS, help="collector.yaml")
    from .ui.cli import configure as configure_users   # `collector user add|list|passwd|disable`
    configure_users(sub)


def open_store(cfg):
    from .store.sqlite import SQLiteStore
    sink = None
    if cfg.store.kind == "postgres":   # state in PostgreSQL, time series in VictoriaMetrics (issue 15)
        from .store.influx import InfluxSink
        from .store.postgres import PostgresStore
        sink = InfluxSink(cfg.store.url, cfg.store.read_token(), cfg.store.org, cfg.store.bucket,
                          timeout_s=cfg.store.timeout_s, writers=cfg.store.writers)
        if cfg.store.query_url:
            from .store.promql import PromReader
            sink.reader = PromReader(cfg.store.query_url, timeout_s=cfg.store.timeout_s)
        r = cfg.store.retention
        return PostgresStore(cfg.store.dsn.reveal, sink=sink, node=cfg.store.node, events_days=r.events_days,
                             topology_days=r.topology_days, syslog_days=r.syslog_days,
                             retention_interval_s=cfg.store.retention_interval_s,
                             gap_days=r.raw_days, path=cfg.store.path)
    if cfg.store.kind == "influxdb":
        from .store.influx import InfluxSink
        sink = InfluxSink(cfg.store.url, cfg.store.read_token(), cfg.store.org, cfg.store.bucket,
                          timeout_s=cfg.store.timeout_s, writers=cfg.store.writers)
        if cfg.store.query_url:
            from .store.promql import PromReader
            sink.reader = PromReader(cfg.store.query_url, timeout_s=cfg.store.timeout_s)
    from .store.series import Retention
    r = cfg.store.retention
    return SQLiteStore(cfg.store.path, sink=sink, synchronous=cfg.store.synchronous,
                       retention=Retention(r.raw_days, r.rollup_5m_days, r.rollup_1h_days, r.rollup_1d_days),
                       events_days=r.events_days, topology_days=r.topology_days, syslog_days=r.syslog_days,
                       retention_interval_s=cfg.store.retention_interval_s, disk=cfg.store.disk)


def open_admin_store(cfg):
    """The store a CLI command (token, agent move, enrol) changes: the shared PostgreSQL with
    ``store.kind: postgres`` (every collector sees it at once), else the collector's SQLite file
    (agents, tokens and other metadata live there also with ``kind: influxdb``)."""
    from .store.sqlite import SQLiteStore
    return open_store(cfg) if cfg.store.kind == "postgres" else SQLiteStore(cfg.store.path)


def _token(args, cfg) -> int:
    from .store.audit import record_cli
    store = open_admin_store(cfg)
    try:
        if args.token_cmd == "create":
            tid, token = store.token_create(args.role, args.name)
            record_cli(cfg, "token.create", f"token:{tid}", None, {"id": tid, "role": args.role, "name": args.name})
            print(token)
            print(f"token id {tid}, role {args.role}: store it now, it is not shown again", file=sys.stderr)
        elif args.token_cmd == "list":
            for t in store.token_list():
                state = "revoked" if t["revoked_ms"] else "active"
                created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t["created_ms"] / 1000))
                print(f"{t['id']}\t{t['role']}\t{state}\t{created}\t{t['name'] or ''}")
        elif args.token_cmd == "revoke":
            n = store.token_revoke(args.ident)
            if not n:
                print(f"no active token with id or name {args.ident!r}", file=sys.stderr)
                return 1
            record_cli(cfg, "token.revoke", f"token:{args.ident}", None, {"revoked": n})
            print(f"revoked {n} token(s)", file=sys.stderr)
        return 0
    finally:
        store.close()


def _agent_move(args, cfg) -> int:
    from campus_sense import wire
    try:
        wire.check_segment(args.site, "site")
        wire.check_segment(args.building, "building")
    except wire.WireError as e:
        print(f"campus-sense collector agent move: {e}", file=sys.stderr)
        return 2
    store = open_admin_store(cfg)
    try:
        if not store.agent_move(args.agent_id, args.site, args.building):
            print(f"no agent {args.agent_id!r} in {cfg.store.path}", file=sys.stderr)
            return 1
        print(f"agent {args.agent_id} now belongs to site {args.site} building {args.building}", file=sys.stderr)
        return 0
    finally:
        store.close()


def run(args) -> int:
    from . import config as cfgmod
    if not getattr(args, "config", None):
        print("campus-sense collector: --config collector.yaml is required", file=sys.stderr)
        return 2
    try:
        cfg = cfgmod.load(args.config)
    except ConfigError as e:
        print(f"campus-sense collector: {e}", file=sys.stderr)
        return 2
    if getattr(args, "collector_cmd", None) == "token":
        return _token(args, cfg)
    if getattr(args, "collector_cmd", None) == "agent":
        return _agent_move(args, cfg)
    if getattr(args, "collector_cmd", None) == "user":
        from .ui.cli import run as run_users
        return run_users(args, cfg)
    try:
        cfg.mqtt.read_password()
    except ValueError as e:
        print(f"campus-sense collector: {args.config}: {e}", file=sys.stderr)
        return 2
    return serve(cfg)


def serve(cfg) -> int:
    import uvicorn

    from .api import create_app
    from .ingest import Ingest

    store = open_store(cfg)
    if getattr(cfg, "partitions", None) is not None:   # several collectors share the sites (issue 15)
        from .partitions import PartitionedIngest
        ingest = PartitionedIngest(cfg.mqtt, store, cfg.partitions, cfg.ingest, cfg.clock)
        store.singleton = ingest.leases.singleton
    else:
        ingest = Ingest(cfg.mqtt, store, cfg.ingest, cfg.clock)
    app = create_app(store, ingest, cfg.agents.offline_after_s)
    app.state.ui_settings = cfg.ui      # web UI: time zone, sessions, LDAP (collector/ui)
    alerting = None
    if getattr(cfg, "rules", None) is not None:  # rule engine, notifications, alert API, console
        from .alerting import Alerting
        try:
            alerting = Alerting(cfg, store, ingest)
        except (ConfigError, OSError) as e:
            print(f"campus-sense collector: rules: {e}", file=sys.stderr)
            store.close()
            return 2
        alerting.mount(app)
        alerting.start()
    from .compliance.service import attach as attach_compliance  # coverage/compliance API + history job
    compliance = attach_compliance(app, store, getattr(cfg, "campus", None), cfg.agents.offline_after_s)
    server = uvicorn.Server(uvicorn.Config(app, host=cfg.api.host, port=cfg.api.port, log_level="warning",
                                           access_log=False, lifespan="off"))
    stop = threading.Event()

    def _sig(signum, frame):
        log.info("signal %d: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _sig)
    signal.signal(signal.SIGINT, _sig)
    ingest.start()
    web = threading.Thread(target=server.run, name="api", daemon=True)
    web.start()
    log.info("collector running: MQTT %s:%d as %s, store %s (%s), API http://%s:%d/api/v1",
             cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.client_id, cfg.store.kind, cfg.store.path,
             cfg.api.host, cfg.api.port)
    from campus_sense.sdnotify import Notifier
    sd = Notifier.from_env()   # systemd Type=notify + WatchdogSec (packaging/systemd)
    sd.ready(f"collector: MQTT {cfg.mqtt.host}:{cfg.mqtt.port}, API {cfg.api.host}:{cfg.api.port}")
    next_ping = time.monotonic()
    try:
        while not stop.wait(0.5):
            if not web.is_alive():
                log.error("API server stopped (port %d in use?)", cfg.api.port)
                break
            if sd.watchdog_interval_s and time.monotonic() >= next_ping:
                sd.watchdog()
                next_ping = time.monotonic() + sd.watchdog_interval_s
    finally:
        sd.stopping()
        server.should_exit = True
        compliance.stop()
        ingest.stop()
        if alerting is not None:
            alerting.stop()
        web.join(5)
        store.close()
        log.info("collector stopped")
    return 0 if stop.is_set() else 1
