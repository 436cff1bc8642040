"""Active ARP sweep of configured subnets: off by default, rate-limited, size-capped.

Only the subnets listed in the driver options are swept, only on the driver's own
interface, at ``rate_pps`` requests per second at most. Subnets larger than /22
(1022 hosts) are refused unless ``allow_large`` is set. Replies are not read here:
the passive sniffer sees them and ``ArpWatch`` learns the stations like any other ARP.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import Awaitable, Callable, Iterable, Iterator

log = logging.getLogger(__name__)

MAX_PREFIX = 22
MAX_RATE_PPS = 1000.0


def validate_subnets(subnets: Iterable[str], allow_large: bool = False) -> list[ipaddress.IPv4Network]:
    """Parse and check sweep subnets; ValueError naming the offending entry."""
    nets = []
    for s in subnets:
        try:
            net = ipaddress.ip_network(str(s).strip(), strict=False)
        except ValueError:
            raise ValueError(f"arp_sweep.subnets: {s!r} is not a network (expected CIDR like 10.1.2.0/24)") from None
        if net.version != 4:
            raise ValueError(f"arp_sweep.subnets: {s!r}: ARP sweeps are IPv4 only")
        if net.prefixlen < MAX_PREFIX and not allow_large:
            raise ValueError(f"arp_sweep.subnets: {s!r} is larger than /{MAX_PREFIX} "
                             f"({net.num_addresses} addresses); set arp_sweep.allow_large: true to sweep it")
        if net.is_multicast or net.is_unspecified or net.is_loopback:
            raise ValueError(f"arp_sweep.subnets: {s!r} is not a unicast LAN subnet")
        nets.append(net)
    return nets


def targets(nets: Iterable[ipaddress.IPv4Network]) -> Iterator[str]:
    seen: set[str] = set()
    for net in nets:
        hosts = net.hosts() if net.prefixlen < 31 else iter(net)
        for h in hosts:
            s = str(h)
            if s not in seen:
                seen.add(s)
                yield s


class ArpSender:
    """Sends ARP who-has requests on one interface through a scapy L2 socket."""

    def __init__(self, interface: str, src_ip: str | None = None):
        from scapy.arch import get_if_hwaddr
        from scapy.config import conf
        self.interface = interface
        self.mac = get_if_hwaddr(interface)
        if src_ip is None:
            from scapy.arch import get_if_addr
            src_ip = get_if_addr(interface)
        self.src_ip = src_ip or "0.0.0.0"
        self.sock = conf.L2socket(iface=interface)

    def send(self, target: str) -> None:
        from scapy.layers.l2 import ARP, Ether
        self.sock.send(Ether(dst="ff:ff:ff:ff:ff:ff", src=self.mac)
                       / ARP(op=1, hwsrc=self.mac, psrc=self.src_ip, pdst=target))

    def close(self) -> None:
        self.sock.close()


async def arp_sweep(send: Callable[[str], None], subnets: Iterable[str], rate_pps: float = 10.0,
                    allow_large: bool = False,
                    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> int:
    """Send one who-has per host address of ``subnets``, at most ``rate_pps`` per second.

    Returns the number of requests sent. Validation happens before the first packet.
    """
    if not 0 < rate_pps <= MAX_RATE_PPS:
        raise ValueError(f"arp_sweep.rate_pps: {rate_pps} must be > 0 and <= {MAX_RATE_PPS:g}")
    nets = validate_subnets(subnets, allow_large)
    gap = 1.0 / rate_pps
    sent = 0
    for ip in targets(nets):
        if sent:
            await sleep(gap)
        send(ip)
        sent += 1
    log.info("netwatch: ARP sweep sent %d requests to %s", sent, ", ".join(map(str, nets)))
    return sent
