"""`campus-sense demo`: the whole system on one machine, with nothing installed beforehand.

Starts an embedded MQTT broker (amqtt, password auth), a simulated building whose
devices answer their real protocols on loopback (SNMP: core switch with 10G uplinks, 48-port
access switch, Wi-Fi controller; an ONVIF camera and its MJPEG video stream, a PJLink
projector, a canteen fridge and a gas detector behind a Modbus TCP gateway, a door
controller and a fire panel pushing to the agent's access listeners: campus_sense/sim/),
its campus model (campus.yaml: rooms, device and port roles, uplinks), the collector on its
embedded SQLite store and an edge agent, each as the same `campus-sense` processes IT staff
run in production.
Credentials are random per run and printed once; nothing has a default.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

SITE, BUILDING, AGENT = "demo-campus", "A", "bldg-a"
REPO = Path(__file__).resolve().parent.parent
#: a demo-only rule so the scripted link failure shows the alert lifecycle on the alerts page
DEMO_RULES = """\
rules:
  - name: demo-access-port-down
    kind: event
    event: link_down
    clear_event: link_up
    by: [ifName]
    scope: {type: switch}
    severity: critical
    summary: "Port {ifName} on {device} is down (scripted by the demo)"
"""
DEVICES = [  # (device id, simulator kind, room, type)
    ("core-sw1", "core", "A-000", "switch"),
    ("access-sw1", "access", "A-000", "switch"),
    ("wlc1", "wlc", "A-000", "wlan_controller"),
]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8080, help="API and web UI port (default 8080)")
    parser.add_argument("--duration", type=float, help="exit cleanly after this many seconds")
    parser.add_argument("--interval", type=float, default=10, help="SNMP polling interval in seconds (default 10)")
    parser.add_argument("--fail-at", type=float, default=30,
                        help="take one access port down this many seconds after start, for 60 s, to show "
                             "an alert firing and resolving (0: never; default 30)")
    parser.add_argument("--data-dir", help="keep configs, queue and database here (default: a temp dir)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write(path: Path, data: dict | str) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    os.chmod(path, 0o600)
    return path


def _wait_http(url: str, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return True
        except OSError:
            time.sleep(0.2)
    return False


async def _main(args) -> int:
    from campus_sense.broker import start_broker
    from campus_sense.sim.building import SimulatedBuilding
    from campus_sense.sim.snmp_agent import start_simulated_device

    for noisy in ("transitions", "amqtt"):  # the embedded broker logs every state change at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    work = Path(args.data_dir or tempfile.mkdtemp(prefix="campus-sense-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    users = {AGENT: secrets.token_urlsafe(16), "collector": secrets.token_urlsafe(16)}
    mqtt_port = _free_port()
    broker = await start_broker(mqtt_port, users)
    community = secrets.token_urlsafe(12)
    sims = [await start_simulated_device(kind, community, name=dev_id) for dev_id, kind, _, _ in DEVICES]
    building = await SimulatedBuilding(SITE, BUILDING).start()
    core, access, wlc = sims
    for if_index, mac, ip in building.hosts(wlc.system["aps"]):   # FDB on the access switch, ARP on the core
        access.learn_mac(if_index, mac)
        core.learn_ip(10, ip, mac)                                  # core Vlan1 (ifIndex 10) routes them
    _write(work / "campus.yaml", building.campus_model(*(d[0] for d in DEVICES), aps=wlc.system["aps"]))

    FAIL_AT, RESTORE_AT = args.fail_at or float("inf"), (args.fail_at or float("inf")) + 60
    rule_paths = [str(_write(work / "demo-rules.yaml", DEMO_RULES))]
    from campus_sense import configs_dir
    if (configs_dir() / "rules/campus-default.yaml").exists():
        rule_paths.insert(0, str(configs_dir() / "rules/campus-default.yaml"))
    _write(work / "collector.yaml", {
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "username": "collector",
                 "password": users["collector"], "client_id": "demo-collector",
                 "protocol": "3.1.1"},  # amqtt speaks MQTT 3.1.1
        "store": {"kind": "sqlite", "path": str(work / "collector.db"), "retention": {"raw_days": 7}},
        "api": {"host": "127.0.0.1", "port": args.port},
        "agents": {"offline_after_s": max(90, 4 * args.interval)},
        "rules": {"paths": rule_paths, "db": str(work / "alerts.db")},
        "campus": {"model": [str(work / "campus.yaml")], "declared_sync_s": 5, "cache_s": 5},
    })
    _write(work / "agent.yaml", {
        "agent": {"id": AGENT, "site": SITE, "building": BUILDING},
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "username": AGENT, "password": users[AGENT],
                 "protocol": "3.1.1"},  # amqtt speaks MQTT 3.1.1
        "queue": {"path": str(work / "agent-queue.db")},
        "publish": {"heartbeat_s": 15, "selfmetrics_s": 15},
        "devices": [
            {"id": dev_id, "driver": "snmp", "interval_s": args.interval, "room": room, "type": type_,
             "options": {"host": "127.0.0.1", "port": sim.port, "version": "2c", "community": community,
                         "timeout_s": 2}}
            for (dev_id, _, room, type_), sim in zip(DEVICES, sims)
        ] + building.agent_devices(args.interval),
    })
    cli = [sys.executable, "-m", "campus_sense"]
    token = subprocess.run(cli + ["collector", "token", "create", "--role", "admin", "--name", "demo",
                                  "--config", str(work / "collector.yaml")],
                           check=True, capture_output=True, text=True).stdout.strip()
    ui_password = secrets.token_urlsafe(12)   # the web UI's admin login: random per run, never a default
    subprocess.run(cli + ["collector", "user", "add", "admin", "--role", "admin", "--password-stdin",
                          "--config", str(work / "collector.yaml")],
                   input=ui_password + "\n", check=True, capture_output=True, text=True)
    logs = {name: open(work / f"{name}.log", "ab") for name in ("collector", "agent")}
    # Collector first: its persistent session must exist before the agent publishes.
    procs = {"collector": subprocess.Popen(cli + ["collector", "--config", str(work / "collector.yaml")],
                                           stdout=logs["collector"], stderr=subprocess.STDOUT)}
    base = f"http://127.0.0.1:{args.port}"
    ok = await asyncio.to_thread(_wait_http, f"{base}/api/v1/health", 30)
    procs["agent"] = subprocess.Popen(cli + ["agent", "--config", str(work / "agent.yaml")],
                                      stdout=logs["agent"], stderr=subprocess.STDOUT)
    print(f"""
campus-sense demo is running (data in {work})
  web UI        {base}/   (login: user admin, password {ui_password})
  API           {base}/api/v1   (OpenAPI docs: {base}/docs)
  alerts        {base}/ui/alerts   (live)
  API token     {token}   (role admin; send as "Authorization: Bearer <token>")
  MQTT broker   127.0.0.1:{mqtt_port} (users {', '.join(users)}; passwords in {work}/*.yaml)
  simulated     {', '.join(f'{d} (SNMP 127.0.0.1:{s.port})' for (d, *_), s in zip(DEVICES, sims))}
{''.join(f"                {line}{chr(10)}" for line in building.describe())}  try:          curl -H "Authorization: Bearer {token}" {base}/api/v1/devices
  logs          {work}/collector.log, {work}/agent.log
{f"  scripted      one access-sw1 port goes down {FAIL_AT:.0f} s after start and back up 60 s later:" + chr(10) +
 "                watch the alert fire and resolve on the alerts page;" + chr(10) +
 "                door-a101 is forced open 5 s later (closed after 60 s), fire-a tests a detector" + chr(10) +
 "                10 s later (reset after 30 s)" + chr(10) if args.fail_at else ""}Ctrl-C stops everything.{'' if ok else '  (WARNING: the API did not answer within 30 s; see collector.log)'}
""", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    status = 0
    t0 = time.monotonic()
    deadline = t0 + args.duration if args.duration else None
    access = sims[[d[0] for d in DEVICES].index("access-sw1")]
    victim = next(p for p in access.ports if p.oper_up and p.speed_mbps == 1000)
    while not stop.is_set():
        elapsed = time.monotonic() - t0
        if FAIL_AT <= elapsed < RESTORE_AT and victim.oper_up:
            access.set_oper(victim.index, False)
        elif elapsed >= RESTORE_AT and not victim.oper_up:
            access.set_oper(victim.index, True)
        building.tick(elapsed, args.fail_at or None)
        try:
            async with asyncio.timeout(1.0):
                await stop.wait()
        except asyncio.TimeoutError:
            pass
        dead = [n for n, p in procs.items() if p.poll() is not None]
        if dead:
            print(f"demo: {', '.join(dead)} exited unexpectedly; see its log in {work}", file=sys.stderr)
            status = 1
            break
        if deadline and time.monotonic() >= deadline:
            break
    for name in ("agent", "collector"):
        p = procs[name]
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(p.wait, 20)
            except subprocess.TimeoutExpired:
                p.kill()
    for s in sims:
        s.close()
    await building.close()
    await broker.shutdown()
    print("demo: stopped", flush=True)
    return status


def run(args) -> int:
    return asyncio.run(_main(args))
