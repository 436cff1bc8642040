"""netwatch on real sample captures (origin and license: tests/fixtures/pcap/NOTICE)."""
from __future__ import annotations

from pathlib import Path

import pytest
from scapy.utils import PcapReader

from drivers.netwatch.cli import analyze
from drivers.netwatch.detectors import NetWatch

PCAP = Path(__file__).resolve().parent / "fixtures" / "pcap"


def cap(name: str) -> str:
    p = PCAP / name
    assert p.exists(), f"missing fixture {p}"
    return str(p)


@pytest.mark.parametrize("name", ["wireshark-dhcp.pcap", "wireshark-dhcp.pcapng"])
def test_wireshark_dhcp_exchange(name):
    r = analyze(cap(name))
    assert r["capture"]["packets"] == 4
    assert r["dhcp_servers"] == [{"ip": "192.168.0.1", "mac": "00:08:74:ad:f1:9b", "offers": 1, "acks": 1}]
    assert r["findings"] == []
    assert analyze(cap(name), dhcp_allow=["192.168.0.1"])["findings"] == []
    assert analyze(cap(name), dhcp_allow=["00:08:74:ad:f1:9b"])["findings"] == []
    (f,) = analyze(cap(name), dhcp_allow=["192.168.0.254"])["findings"]
    assert f["type"] == "rogue_dhcp"
    d = f["detail"]
    assert (d["server_ip"], d["server_mac"], d["offered_ip"], d["client_mac"], d["count"]) == \
        ("192.168.0.1", "00:08:74:ad:f1:9b", "192.168.0.10", "00:0b:82:01:fc:42", 2)


def test_tcpdump_dhcp_rfc3004():
    r = analyze(cap("tcpdump-dhcp-rfc3004.pcap"))
    assert [(s["ip"], s["offers"], s["acks"]) for s in r["dhcp_servers"]] == [("192.168.1.1", 1, 1)]


def test_tcpdump_dhcpv6_server():
    r = analyze(cap("tcpdump-dhcpv6-ia-na.pcap"))
    assert r["dhcp_servers"] == [{"ip": "fe80::211:22ff:fe33:4455", "mac": "00:11:22:33:44:55", "offers": 1,
                                  "acks": 1}]
    assert analyze(cap("tcpdump-dhcpv6-ia-na.pcap"), dhcp_allow=["00:11:22:33:44:55"])["findings"] == []
    (f,) = analyze(cap("tcpdump-dhcpv6-ia-na.pcap"), dhcp_allow=["192.168.0.1"])["findings"]
    d = f["detail"]
    assert (f["type"], d["dhcp_version"], d["server_ip"], d["offered_ip"], d["client_mac"], d["server_duid"]) == (
        "rogue_dhcp", 6, "fe80::211:22ff:fe33:4455", "2a00:1:1:200:38e6:b22e:c440:acdf", "00:01:02:03:04:05",
        "000100011846488c001122334455")


def test_tcpdump_real_lan_arp_stations_and_ip_plan():
    r = analyze(cap("tcpdump-eapon1.pcap"))
    assert r["arp"] == {
        "stations": [{"ip": "169.254.67.194", "mac": "00:04:23:57:a5:7a"},
                     {"ip": "192.168.1.1", "mac": "00:0d:88:4f:25:91"},
                     {"ip": "192.168.1.249", "mac": "00:04:23:57:a5:7a"}],
        "ip_conflicts": []}
    # one host moving from link-local to DHCP is not spoofing
    assert r["findings"] == []
    (f,) = analyze(cap("tcpdump-eapon1.pcap"), ip_plan=["192.168.1.0/24"])["findings"]
    assert (f["type"], f["detail"]["ip"]) == ("outside_ip_plan", "169.254.67.194")


def test_tcpdump_router_advertisement():
    r = analyze(cap("tcpdump-icmpv6.pcap"))
    assert [(x["ip"], x["mac"], x["prefixes"]) for x in r["ipv6_routers"]] == [
        ("fe80::b299:28ff:fec8:d66c", "b0:99:28:c8:d6:6c", ["2222:3333:4444:5555:6600::/72"])]
    assert analyze(cap("tcpdump-icmpv6.pcap"), ra_allow=["b0:99:28:c8:d6:6c"])["findings"] == []
    (f,) = analyze(cap("tcpdump-icmpv6.pcap"), ra_allow=["fe80::1"])["findings"]
    assert (f["type"], f["detail"]["router_ip"]) == ("rogue_ra", "fe80::b299:28ff:fec8:d66c")


@pytest.mark.parametrize("name,security", [("cowpatty-wpa2psk-linksys.pcap", "WPA2"),
                                           ("cowpatty-wpapsk-linksys.pcap", "WPA")])
def test_cowpatty_beacons(name, security):
    r = analyze(cap(name))
    assert r["wifi"] == [{"bssid": "00:0b:86:c2:a4:85", "ssid": "linksys", "channel": 1, "signal_dbm": None,
                          "security": security}]
    assert r["findings"] == []
    assert analyze(cap(name), ssid_allow=["linksys=00:0b:86:c2:a4:85"])["findings"] == []
    (f,) = analyze(cap(name), ssid_allow=["linksys=00:0b:86:c2:a4:01"])["findings"]
    assert (f["type"], f["detail"]["bssid"]) == ("rogue_ap", "00:0b:86:c2:a4:85")


def test_real_ap_reconfigured_from_wpa2_to_wpa_is_a_downgrade():
    """Both cowpatty captures show the same AP; replayed in sequence the WPA2 -> WPA change is flagged."""
    w = NetWatch(ssid_allow={"linksys": ["00:0b:86:c2:a4:85"]})
    for name in ("cowpatty-wpa2psk-linksys.pcap", "cowpatty-wpapsk-linksys.pcap"):
        with PcapReader(cap(name)) as rd:
            for p in rd:
                w.feed(p)
    (f,) = w.report()["findings"]
    assert f["type"] == "evil_twin"
    assert (f["detail"]["reason"], f["detail"]["previous_security"], f["detail"]["security"]) == \
        ("security_downgrade", "WPA2", "WPA")


def test_tcpdump_radiotap_extended_bitmaps_probe_response():
    r = analyze(cap("tcpdump-ieee802.11_exthdr.pcap"))
    assert r["wifi"] == [{"bssid": "90:a4:de:c0:46:0a", "ssid": "omus", "channel": 1, "signal_dbm": None,
                          "security": "open"}]
    assert r["capture"]["decode_errors"] == 0
