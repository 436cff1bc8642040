"""`campus-sense notify` — operator tools for notify.yaml:

    campus-sense notify check notify.yaml
        validate the config (secrets readable, routes reference existing channels/windows)
    campus-sense notify test notify.yaml CHANNEL [--severity critical] [--resolved]
        send one sample notification directly to CHANNEL (no outbox) and print the result
    campus-sense notify route notify.yaml severity=critical building=A [rule=...] [label=value ...]
        show which routes and channels an alert with these labels would go to

(``python -m collector.notify ...`` is the same, kept as an alias.)
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time

from . import render
from .channels import make_sender
from .config import ConfigError, load
from .outbox import DeliveryError
from .router import build_tree, match_nodes


def _sample(severity: str, resolved: bool) -> dict:
    now = time.time()
    from .model import iso
    a = {"id": "test-1", "rule": "notify-test", "severity": severity,
         "status": "resolved" if resolved else "firing",
         "labels": {"site": "test", "building": "T", "room": "T-000", "device": "test-device", "type": "test"},
         "summary": "campus-sense test notification", "description": "sent by campus-sense notify test",
         "started_at": iso(now - 60), "ended_at": iso(now) if resolved else None, "value": 42.0, "acked": False}
    n = {"version": "1", "status": a["status"], "severity": severity, "route": "test", "group_key": "test",
         "group_labels": {"rule": "notify-test"}, "repeat": False, "created_at": iso(now), "alerts": [a],
         "counts": {"firing": 0 if resolved else 1, "resolved": 1 if resolved else 0},
         "common_labels": dict(a["labels"], rule="notify-test", severity=severity)}
    n["title"] = render.title(n)
    return n


async def _send(cfg, channel: str, n: dict) -> int:
    ch = cfg.channels[channel]
    sender = make_sender(channel, ch)
    try:
        n["channel"] = channel
        async with asyncio.timeout(ch.timeout + 1):
            await sender.send(n, 0)
        print(f"{channel}: sent ({n['title']})")
        return 0
    except DeliveryError as e:
        print(f"{channel}: FAILED: {e}{' (permanent)' if e.permanent else ''}", file=sys.stderr)
    except asyncio.TimeoutError:
        print(f"{channel}: FAILED: timeout after {ch.timeout:g}s", file=sys.stderr)
    finally:
        await sender.close()
    return 1


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="notify_action", required=True, metavar="ACTION")
    c = sub.add_parser("check", help="validate notify.yaml (secrets readable, references)")
    c.add_argument("config")
    t = sub.add_parser("test", help="send one sample notification straight to a channel")
    t.add_argument("config")
    t.add_argument("channel")
    t.add_argument("--severity", default="warning", choices=["info", "warning", "critical"])
    t.add_argument("--resolved", action="store_true")
    r = sub.add_parser("route", help="show the routes and channels an alert with these labels goes to")
    r.add_argument("config")
    r.add_argument("labels", nargs="*", help="label=value")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m collector.notify")
    configure(p)
    return run(p.parse_args(argv))


def run(a: argparse.Namespace) -> int:
    try:
        cfg = load(a.config)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    if a.notify_action == "check":
        print(f"{a.config}: ok ({len(cfg.channels)} channels)")
        return 0
    if a.notify_action == "test":
        if a.channel not in cfg.channels:
            print(f"unknown channel {a.channel!r} (defined: {', '.join(cfg.channels)})", file=sys.stderr)
            return 2
        return asyncio.run(_send(cfg, a.channel, _sample(a.severity, a.resolved)))
    labels = dict(x.split("=", 1) for x in a.labels if "=" in x)
    for node in match_nodes(build_tree(cfg), labels):
        print(f"{node.id}: channels={','.join(node.channels) or '-'} group_by={','.join(node.group_by)}"
              f" group_wait={node.group_wait:g}s group_interval={node.group_interval:g}s"
              f" repeat_interval={node.repeat_interval:g}s"
              f" active_now={'yes' if node.is_active(time.time()) else 'no'}")
    return 0

