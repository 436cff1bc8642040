"""Live netwatch driver on a veth pair whose far end sits in a network namespace we create.

The driver sniffs the host-side veth; scapy inside the namespace sends a rogue DHCP
offer, gratuitous ARPs (an IP conflict) and a router advertisement. IPv6 is disabled
on the host-side veth so the crafted RA cannot configure the host. Traffic never
leaves the veth pair. Skipped (with the reason) when not root or without netns support.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from drivers.base import Event, Facts, Sample
from drivers.netwatch import Options, create

ROOT = Path(__file__).resolve().parents[1]


def _sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=check)


@pytest.fixture
def veth_ns():
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces and sniff (CAP_NET_ADMIN/CAP_NET_RAW)")
    if not shutil.which("ip"):
        pytest.skip("iproute2 'ip' not installed")
    tag = secrets.token_hex(3)
    ns, host_if, ns_if = f"cs-nw-{tag}", f"nwh{tag}", f"nwn{tag}"
    octet = 100 + secrets.randbelow(100)
    p = _sh("ip", "netns", "add", ns, check=False)
    if p.returncode != 0:
        pytest.skip(f"no network namespace support here: {p.stderr.strip()}")
    try:
        p = _sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", ns, check=False)
        if p.returncode != 0:
            pytest.skip(f"cannot create veth pair: {p.stderr.strip()}")
        # the host side must not act on what the namespace sends (RA, DHCP): no IPv6 on it
        for key, val in (("disable_ipv6", "1"), ("accept_ra", "0")):
            Path(f"/proc/sys/net/ipv6/conf/{host_if}/{key}").write_text(val)
        _sh("ip", "addr", "add", f"10.251.{octet}.1/30", "dev", host_if)
        _sh("ip", "link", "set", host_if, "up")
        _sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        _sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"10.251.{octet}.2/30", "dev", ns_if)
        _sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        ns_mac = _sh("ip", "netns", "exec", ns, "cat", f"/sys/class/net/{ns_if}/address").stdout.strip()
        yield {"ns": ns, "host_if": host_if, "ns_if": ns_if, "net": f"10.251.{octet}", "ns_mac": ns_mac}
    finally:
        _sh("ip", "netns", "del", ns, check=False)
        _sh("ip", "link", "del", host_if, check=False)


def ns_send(env: dict, script: str) -> None:
    """Run scapy code inside the namespace (``IFACE`` is the namespace end of the veth)."""
    code = "from scapy.all import *\nconf.verb = 0\nIFACE = %r\n" % env["ns_if"] + textwrap.dedent(script)
    p = subprocess.run(["ip", "netns", "exec", env["ns"], sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr


async def test_live_rogue_dhcp_arp_conflict_and_rogue_ra(veth_ns):
    net = veth_ns["net"]
    opts = Options.model_validate({
        "interface": veth_ns["host_if"], "dhcp_allow": [f"{net}.1"], "ra_allow": ["fe80::1"],
        "sample_interval_s": 0.3, "learn_s": 0,
    })
    drv = create("bldg-a-netwatch", opts, {"building": "A"})
    records: list = []
    task = asyncio.create_task(drv.run(records.append))
    try:
        await asyncio.wait_for(drv.ready.wait(), 30)
        ns_send(veth_ns, f"""
            mac = get_if_hwaddr(IFACE)
            offer = (Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / IP(src="{net}.2", dst="255.255.255.255")
                     / UDP(sport=67, dport=68)
                     / BOOTP(op=2, yiaddr="{net}.3", chaddr=bytes.fromhex("0200000000c1") + bytes(10), xid=7)
                     / DHCP(options=[("message-type", "offer"), ("server_id", "{net}.2"), "end"]))
            sendp(offer, iface=IFACE)
            sendp(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=mac, psrc="{net}.2", pdst="{net}.2"), iface=IFACE)
            other = "02:00:00:00:00:42"
            sendp(Ether(src=other, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=other, psrc="{net}.2", pdst="{net}.2"), iface=IFACE)
            sendp(Ether(src=mac, dst="33:33:00:00:00:01") / IPv6(src="fe80::bad", dst="ff02::1", hlim=255)
                  / ICMPv6ND_RA(routerlifetime=1800) / ICMPv6NDOptSrcLLAddr(lladdr=mac)
                  / ICMPv6NDOptPrefixInfo(prefix="2001:db8:bad::", prefixlen=64), iface=IFACE)
        """)

        def done():
            ev = {r.type for r in records if isinstance(r, Event)}
            facts = [r for r in records if isinstance(r, Facts)]
            return {"rogue_dhcp", "ip_conflict", "rogue_ra"} <= ev and facts and any(
                isinstance(r, Sample) for r in records[records.index(facts[-1]):])
        for _ in range(1200):
            if done() or task.done():
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert not (task.done() and not task.cancelled() and task.exception()), task.exception()
    events = {r.type: r for r in records if isinstance(r, Event)}
    assert {"rogue_dhcp", "ip_conflict", "rogue_ra", "new_station"} <= set(events), sorted(events)
    d = events["rogue_dhcp"]
    assert d.severity == "critical" and d.device == "bldg-a-netwatch"
    assert (d.data["server_ip"], d.data["server_mac"], d.data["offered_ip"]) == \
        (f"{net}.2", veth_ns["ns_mac"], f"{net}.3")
    assert d.tags == {"building": "A", "interface": veth_ns["host_if"]}
    c = events["ip_conflict"]
    assert c.severity == "warning" and c.data["macs"] == [veth_ns["ns_mac"], "02:00:00:00:00:42"]
    ra = events["rogue_ra"]
    assert (ra.data["router_ip"], ra.data["prefixes"]) == ("fe80::bad", ["2001:db8:bad::/64"])
    for r in records:  # everything must fit the wire contract (JSON objects, string tags)
        orjson.dumps(r.data if isinstance(r, Event) else r.facts if isinstance(r, Facts) else r.fields)
        assert all(isinstance(v, str) for v in getattr(r, "tags", {}).values())
    facts = [r for r in records if isinstance(r, Facts)][-1].facts
    assert {(s["ip"], s["mac"]) for s in facts["netwatch_stations"]} == {
        (f"{net}.2", veth_ns["ns_mac"]), (f"{net}.2", "02:00:00:00:00:42")}
    sample = [r for r in records if isinstance(r, Sample)][-1]
    assert sample.measurement == "netwatch"
    assert sample.fields["stations"] == 2 and sample.fields["dhcp_servers"] == 1
    assert sample.fields["ipv6_routers"] == 1 and sample.fields["ip_conflicts"] == 1
    # the host did not take the rogue router: IPv6 is off on the host-side veth
    routes = _sh("ip", "-6", "route", "show", "dev", veth_ns["host_if"], check=False).stdout
    assert "2001:db8:bad" not in routes


async def test_live_arp_sweep_of_configured_subnet_learns_the_peer(veth_ns):
    net = veth_ns["net"]
    opts = Options.model_validate({
        "interface": veth_ns["host_if"], "sample_interval_s": 0.3, "learn_s": 0,
        "arp_sweep": {"enabled": True, "subnets": [f"{net}.0/30"], "rate_pps": 20, "interval_s": 3600},
    })
    drv = create("bldg-a-netwatch", opts, {})
    records: list = []
    task = asyncio.create_task(drv.run(records.append))
    try:
        for _ in range(1200):
            facts = [r for r in records if isinstance(r, Facts)]
            if task.done() or any((f"{net}.2", veth_ns["ns_mac"]) in {(s["ip"], s["mac"])
                                                                      for s in f.facts["netwatch_stations"]}
                                  for f in facts):
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert not (task.done() and not task.cancelled() and task.exception()), task.exception()
    stations = {(s["ip"], s["mac"]) for r in records if isinstance(r, Facts) for s in r.facts["netwatch_stations"]}
    assert (f"{net}.2", veth_ns["ns_mac"]) in stations  # the namespace kernel answered our who-has
    assert drv.sweeps == 1
    new = [r for r in records if isinstance(r, Event) and r.type == "new_station"]
    own_mac = Path(f"/sys/class/net/{veth_ns['host_if']}/address").read_text().strip()
    # the peer, and our own interface (the sniffer sees the who-has we send)
    assert {(e.data["ip"], e.data["mac"]) for e in new} == {(f"{net}.2", veth_ns["ns_mac"]), (f"{net}.1", own_mac)}


async def test_loopback_realert_and_learning_period():
    """On loopback (NOARP, so the kernel ignores these frames): a repeating conflict is re-alerted
    after realert_s; new stations inside the learning period are facts, not events."""
    if os.geteuid() != 0:
        pytest.skip("needs root to sniff and inject on loopback (CAP_NET_RAW)")
    from scapy.layers.l2 import ARP, Ether
    from scapy.sendrecv import sendp

    def garp(mac: str, ip: str):
        sendp(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=mac, psrc=ip, pdst=ip), iface="lo",
              verbose=False)

    tag = secrets.randbelow(200) + 20
    ip = f"10.252.{tag}.7"
    a, b = f"02:00:00:00:{tag:02x}:0a", f"02:00:00:00:{tag:02x}:0b"
    opts = Options.model_validate({"interface": "lo", "sample_interval_s": 0.2, "learn_s": 3600,
                                   "realert_s": 0.3, "bpf": f"arp and (ether src {a} or ether src {b})"})
    drv = create("x", opts, {})
    records: list = []
    task = asyncio.create_task(drv.run(records.append))

    def conflicts():
        return [r for r in records if isinstance(r, Event) and r.type == "ip_conflict"]

    async def wait_for(pred):
        for _ in range(1200):
            if pred() or task.done():
                return
            await asyncio.sleep(0.05)
    try:
        await asyncio.wait_for(drv.ready.wait(), 30)
        garp(a, ip)
        garp(b, ip)
        await wait_for(lambda: conflicts())
        await asyncio.sleep(0.4)  # past realert_s
        garp(a, ip)
        garp(b, ip)
        await wait_for(lambda: len(conflicts()) >= 2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    first, second = conflicts()[:2]
    assert first.data["macs"] == [a, b] and "repeated" not in first.data
    assert second.data["repeated"] is True and second.data["count"] > first.data["count"]
    assert second.data["kind"] == "flip_flop"
    assert not [r for r in records if isinstance(r, Event) and r.type == "new_station"]
