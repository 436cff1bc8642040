"""Crafted frames for the netwatch tests (scapy). Addresses are documentation / private ranges."""
from __future__ import annotations

from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dot11 import Dot11, Dot11Beacon, Dot11Elt, Dot11ProbeResp, RadioTap
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import ICMPv6ND_RA, ICMPv6NDOptPrefixInfo, ICMPv6NDOptSrcLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.utils import PcapNgWriter, PcapWriter

BCAST = "ff:ff:ff:ff:ff:ff"


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def dhcp_reply(server_mac: str, server_ip: str, client_mac: str, yiaddr: str, msg: str = "offer",
               server_id: str | None = None, src_ip: str | None = None, t: float | None = None):
    p = (Ether(src=server_mac, dst=client_mac)
         / IP(src=src_ip or server_ip, dst="255.255.255.255")
         / UDP(sport=67, dport=68)
         / BOOTP(op=2, yiaddr=yiaddr, siaddr=server_ip, chaddr=mac_bytes(client_mac) + b"\x00" * 10,
                 xid=0x1234)
         / DHCP(options=[("message-type", msg), ("server_id", server_id or server_ip),
                         ("lease_time", 3600), ("subnet_mask", "255.255.255.0"), ("router", server_ip), "end"]))
    p = Ether(bytes(p))
    if t is not None:
        p.time = t
    return p


def dhcp_discover(client_mac: str):
    return Ether(bytes(Ether(src=client_mac, dst=BCAST) / IP(src="0.0.0.0", dst="255.255.255.255")
                       / UDP(sport=68, dport=67)
                       / BOOTP(op=1, chaddr=mac_bytes(client_mac) + b"\x00" * 10, xid=0x1234)
                       / DHCP(options=[("message-type", "discover"), "end"])))


def arp(op: str, hwsrc: str, psrc: str, pdst: str, hwdst: str = "00:00:00:00:00:00", eth_src: str | None = None,
        eth_dst: str = BCAST, t: float | None = None):
    p = Ether(bytes(Ether(src=eth_src or hwsrc, dst=eth_dst)
                    / ARP(op=op, hwsrc=hwsrc, psrc=psrc, pdst=pdst, hwdst=hwdst)))
    if t is not None:
        p.time = t
    return p


def garp(mac: str, ip: str, t: float | None = None):
    """Gratuitous ARP (request with sender == target)."""
    return arp("who-has", mac, ip, ip, t=t)


def rsn(akms: list[int], mfp_required: bool = False) -> bytes:
    body = b"\x01\x00" + b"\x00\x0f\xac\x04" + b"\x01\x00" + b"\x00\x0f\xac\x04"
    body += len(akms).to_bytes(2, "little") + b"".join(b"\x00\x0f\xac" + bytes([a]) for a in akms)
    body += (b"\xc0\x00" if mfp_required else b"\x00\x00")
    return body


WPA1_IE = b"\x00\x50\xf2\x01" + b"\x01\x00" + b"\x00\x50\xf2\x02" + b"\x01\x00" + b"\x00\x50\xf2\x02" \
          + b"\x01\x00" + b"\x00\x50\xf2\x02"


def beacon(bssid: str, ssid: bytes | str, channel: int = 6, signal: int = -61, security: str = "WPA2",
           probe_resp: bool = False, t: float | None = None):
    """802.11 beacon in radiotap. security: open | WEP | WPA | WPA2 | WPA3 | WPA2/WPA3 | OWE."""
    if isinstance(ssid, str):
        ssid = ssid.encode("utf-8")
    privacy = security != "open" and security != "OWE"
    body_cls = Dot11ProbeResp if probe_resp else Dot11Beacon
    frame = (RadioTap(present="Flags+Channel+dBm_AntSignal", ChannelFrequency=2407 + 5 * channel,
                      ChannelFlags="2GHz+CCK", dBm_AntSignal=signal)
             / Dot11(type=0, subtype=5 if probe_resp else 8, addr1=BCAST, addr2=bssid, addr3=bssid)
             / body_cls(cap="ESS+privacy" if privacy else "ESS")
             / Dot11Elt(ID=0, info=ssid)
             / Dot11Elt(ID=1, info=b"\x82\x84\x8b\x96\x0c\x12\x18\x24")
             / Dot11Elt(ID=3, info=bytes([channel])))
    if security == "WPA2":
        frame = frame / Dot11Elt(ID=48, info=rsn([2]))
    elif security == "WPA3":
        frame = frame / Dot11Elt(ID=48, info=rsn([8], mfp_required=True))
    elif security == "WPA2/WPA3":
        frame = frame / Dot11Elt(ID=48, info=rsn([2, 8]))
    elif security == "OWE":
        frame = frame / Dot11Elt(ID=48, info=rsn([18]))
    elif security == "WPA":
        frame = frame / Dot11Elt(ID=221, info=WPA1_IE)
    elif security == "ENTERPRISE":
        frame = frame / Dot11Elt(ID=48, info=rsn([1]))
    p = RadioTap(bytes(frame))
    if t is not None:
        p.time = t
    return p


def router_advert(mac: str, ll_ip: str, prefix: str = "2001:db8:1::", lifetime: int = 1800,
                  t: float | None = None):
    p = Ether(bytes(Ether(src=mac, dst="33:33:00:00:00:01")
                    / IPv6(src=ll_ip, dst="ff02::1", hlim=255)
                    / ICMPv6ND_RA(routerlifetime=lifetime)
                    / ICMPv6NDOptSrcLLAddr(lladdr=mac)
                    / ICMPv6NDOptPrefixInfo(prefix=prefix, prefixlen=64)))
    if t is not None:
        p.time = t
    return p


def write_pcap(path, packets, linktype: int | None = None, ng: bool = False) -> str:
    """Write packets; sets increasing timestamps when missing. Returns str(path)."""
    t0 = 1_700_000_000.0
    for i, p in enumerate(packets):
        if not getattr(p, "time", None) or p.time < 1_000_000:
            p.time = t0 + i
    if ng:
        w = PcapNgWriter(str(path))
        for p in packets:
            w.write(p)
        w.close()
    else:
        w = PcapWriter(str(path), linktype=linktype, sync=True)
        for p in packets:
            w.write(p)
        w.close()
    return str(path)
