"""`campus-sense pcap-analyze FILE`: run the network-watch detectors on a capture.

Reads pcap or pcapng (optionally gzip-compressed) with scapy's streaming
``PcapReader``, so captures larger than memory are fine. Same detectors as the
live driver (``drivers.netwatch.detectors``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from drivers.netwatch.detectors import NetWatch, parse_allow, parse_ip_plan, parse_protected, parse_ssid_allow

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="capture file (pcap or pcapng, may be .gz)")
    parser.add_argument("--dhcp-allow", nargs="+", action="extend", default=[], metavar="IP|MAC",
                        help="legitimate DHCP servers (server identifier / IP / MAC); others are rogue_dhcp")
    parser.add_argument("--ssid-allow", nargs="+", action="extend", default=[], metavar="SSID=BSSID,...",
                        help="campus SSIDs and their allowed BSSIDs, e.g. eduroam=aa:bb:cc:00:00:01,aa:bb:cc:00:00:02")
    parser.add_argument("--ip-plan", nargs="+", action="extend", default=[], metavar="CIDR",
                        help="assigned networks; ARP senders outside them are outside_ip_plan")
    parser.add_argument("--ra-allow", nargs="+", action="extend", default=[], metavar="MAC|IP",
                        help="legitimate IPv6 routers (link-local IP or MAC); other RAs are rogue_ra")
    parser.add_argument("--protect", nargs="+", action="extend", default=[], metavar="IP[=MAC,...]",
                        help="gateways/servers: any other MAC claiming IP is arp_spoof (IP alone: the first "
                             "MAC heard in the capture owns it)")
    parser.add_argument("--deauth-threshold", type=int, default=10, metavar="N",
                        help="802.11 deauth/disassoc frames per BSSID within --deauth-window that make a "
                             "deauth_flood (default 10, as Kismet)")
    parser.add_argument("--deauth-window", type=float, default=1.0, metavar="S", help="seconds (default 1)")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.add_argument("--limit", type=int, default=0, metavar="N", help="stop after N packets (0 = all)")


def _open(path: str):
    from scapy.error import Scapy_Exception
    from scapy.utils import PcapReader
    if not os.path.exists(path):
        raise ValueError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a directory")
    try:
        return PcapReader(path)
    except Scapy_Exception as e:
        raise ValueError(f"{path}: not a pcap/pcapng capture ({e})") from None
    except PermissionError:
        raise ValueError(f"{path}: permission denied") from None
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read capture ({e.__class__.__name__}: {e})") from None


def analyze(path: str, dhcp_allow=None, ssid_allow=None, ip_plan=None, ra_allow=None,
            limit: int = 0, protect=None, deauth_threshold: int = 10, deauth_window_s: float = 1.0) -> dict[str, Any]:
    """Run every detector on ``path``; return the report dict. ValueError on unreadable input."""
    watch = NetWatch(dhcp_allow=dhcp_allow, ssid_allow=parse_ssid_allow(ssid_allow),
                     ip_plan=ip_plan, ra_allow=ra_allow, protected=protect, deauth_threshold=deauth_threshold,
                     deauth_window_s=deauth_window_s)
    reader = _open(path)
    warnings: list[str] = []
    try:
        while True:
            try:
                pkt = reader.read_packet()
            except EOFError:
                break
            except Exception as e:  # noqa: BLE001 - truncated/corrupt record: keep what we have
                warnings.append(f"stopped at packet {watch.packets + 1}: {e.__class__.__name__}: {e}")
                break
            if pkt is None:
                break
            watch.feed(pkt)
            if limit and watch.packets >= limit:
                break
    finally:
        reader.close()
    report = watch.report()
    report["capture"] = {"file": path, "packets": watch.packets, "decode_errors": watch.errors,
                         "warnings": warnings}
    return report


def _text(report: dict[str, Any]) -> str:
    lines = [f"{report['capture']['file']}: {report['capture']['packets']} packets"]
    for w in report["capture"]["warnings"]:
        lines.append(f"warning: {w}")
    lines.append(f"DHCP servers: {len(report['dhcp_servers'])}")
    for s in report["dhcp_servers"]:
        lines.append(f"  {s['ip']:<16} {s['mac'] or '-':<18} offers={s['offers']} acks={s['acks']}")
    lines.append(f"ARP stations: {len(report['arp']['stations'])}, IP conflicts: {len(report['arp']['ip_conflicts'])}")
    for c in report["arp"]["ip_conflicts"]:
        lines.append(f"  {c['ip']}: {', '.join(c['macs'])}")
    lines.append(f"Wi-Fi BSS: {len(report['wifi'])}")
    for b in report["wifi"]:
        lines.append(f"  {b['bssid']} ch={b['channel']} {b['signal_dbm']} dBm {b['security']:<9} {b['ssid']!r}")
    for p in report["arp"].get("protected", []):
        lines.append(f"  protected {p['ip']}: {', '.join(p['macs']) or '-'} ({p['source']})")
    lines.append(f"IPv6 routers: {len(report['ipv6_routers'])}")
    lines.append(f"Findings: {len(report['findings'])}")
    for f in report["findings"]:
        d = {k: v for k, v in f["detail"].items() if k not in ("first_seen", "last_seen")}
        lines.append(f"  [{f['severity']}] {f['type']}: {json.dumps(d, ensure_ascii=False, default=str)}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        parse_allow(args.dhcp_allow, "--dhcp-allow")
        parse_allow(args.ra_allow, "--ra-allow")
        parse_ip_plan(args.ip_plan)
        parse_ssid_allow(args.ssid_allow)
        parse_protected(args.protect)
        if args.deauth_threshold < 1 or not args.deauth_window > 0:
            raise ValueError("--deauth-threshold must be >= 1 and --deauth-window > 0")
        report = analyze(args.file, args.dhcp_allow, args.ssid_allow, args.ip_plan, args.ra_allow, args.limit,
                         args.protect, args.deauth_threshold, args.deauth_window)
    except ValueError as e:
        print(f"campus-sense pcap-analyze: {e}", file=sys.stderr)
        return 2
    for w in report["capture"]["warnings"]:
        print(f"campus-sense pcap-analyze: warning: {args.file}: {w}", file=sys.stderr)
    try:
        if args.json:
            print(json.dumps(report, ensure_ascii=False, indent=2, default=str))
        else:
            print(_text(report))
        sys.stdout.flush()
    except BrokenPipeError:  # `... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
