"""netwatch detectors fed crafted frames (rogue DHCP, ARP poisoning, evil twin, GBK SSID, rogue RA)."""
from __future__ import annotations

import pytest

from drivers.netwatch.detectors import (NetWatch, decode_ssid, freq_to_channel, parse_allow,
                                        parse_ssid_allow)
from tests.netwatch_craft import arp, beacon, dhcp_discover, dhcp_reply, garp, router_advert

GW_MAC, GW = "02:00:00:00:00:01", "10.20.0.1"
VIC_MAC, VIC = "02:00:00:00:00:10", "10.20.0.10"
ATK_MAC, ATK = "02:00:00:00:00:66", "10.20.0.66"
CLIENT = "02:00:00:00:00:c1"


def types(w: NetWatch) -> list[str]:
    return [f["type"] for f in w.report()["findings"]]


def only(w: NetWatch, type_: str) -> list[dict]:
    return [f for f in w.report()["findings"] if f["type"] == type_]


def feed(w: NetWatch, *pkts) -> NetWatch:
    for i, p in enumerate(pkts):
        w.feed(p, ts=1000.0 + i)
    return w


# ----------------------------------------------------------------------------- DHCP

def test_rogue_dhcp_offer_against_allow_list():
    w = feed(NetWatch(dhcp_allow=["10.20.0.1"]),
             dhcp_discover(CLIENT),
             dhcp_reply(GW_MAC, GW, CLIENT, "10.20.0.100"),
             dhcp_reply(ATK_MAC, ATK, CLIENT, "192.168.99.5"),
             dhcp_reply(ATK_MAC, ATK, CLIENT, "192.168.99.5"),
             dhcp_reply(GW_MAC, GW, CLIENT, "10.20.0.100", msg="ack"))
    r = w.report()
    assert r["dhcp_servers"] == [
        {"ip": "10.20.0.1", "mac": GW_MAC, "offers": 1, "acks": 1},
        {"ip": "10.20.0.66", "mac": ATK_MAC, "offers": 2, "acks": 0},
    ]
    rogue = only(w, "rogue_dhcp")
    assert len(rogue) == 1  # deduplicated per server
    d = rogue[0]["detail"]
    assert rogue[0]["severity"] == "critical"
    assert (d["server_ip"], d["server_mac"], d["offered_ip"], d["client_mac"], d["reason"], d["count"]) == \
        (ATK, ATK_MAC, "192.168.99.5", CLIENT, "not_in_allow_list", 2)


def test_dhcp_allow_by_mac_and_relayed_offer_is_legit():
    w = feed(NetWatch(dhcp_allow=[GW_MAC]), dhcp_reply(GW_MAC, GW, CLIENT, "10.20.0.100"))
    assert types(w) == []
    # offer relayed by 10.20.5.1 for server 10.9.9.9: allowed by server identifier
    w = feed(NetWatch(dhcp_allow=["10.9.9.9"]),
             dhcp_reply("02:00:00:00:05:01", "10.9.9.9", CLIENT, "10.20.5.50", src_ip="10.20.5.1"))
    assert types(w) == []
    assert w.report()["dhcp_servers"][0]["relays"] == ["10.20.5.1"]


def test_two_dhcp_servers_without_allow_list_is_a_warning():
    w = feed(NetWatch(), dhcp_reply(GW_MAC, GW, CLIENT, "10.20.0.100"),
             dhcp_reply(ATK_MAC, ATK, CLIENT, "10.20.0.101"))
    (f,) = only(w, "rogue_dhcp")
    assert f["severity"] == "warning"
    assert f["detail"]["reason"] == "multiple_servers"
    assert f["detail"]["servers"] == [GW, ATK]


# ----------------------------------------------------------------------------- ARP

def test_arp_poisoning_mitm_is_detected():
    w = feed(NetWatch(),
             arp("is-at", GW_MAC, GW, VIC, VIC_MAC, eth_dst=VIC_MAC),
             arp("who-has", VIC_MAC, VIC, GW),
             garp(ATK_MAC, ATK),
             # ettercap-style poisoning: tell the victim the gateway is us and vice versa
             arp("is-at", ATK_MAC, GW, VIC, VIC_MAC, eth_dst=VIC_MAC),
             arp("is-at", ATK_MAC, VIC, GW, GW_MAC, eth_dst=GW_MAC))
    r = w.report()
    assert {"ip": GW, "mac": ATK_MAC} in r["arp"]["stations"]
    assert r["arp"]["ip_conflicts"] == [{"ip": GW, "macs": [GW_MAC, ATK_MAC]},
                                        {"ip": VIC, "macs": [VIC_MAC, ATK_MAC]}]
    spoof = only(w, "arp_spoof")
    assert len(spoof) == 1
    d = spoof[0]["detail"]
    assert spoof[0]["severity"] == "critical"
    assert d["mac"] == ATK_MAC
    assert d["claimed_ips"] == {GW: GW_MAC, VIC: VIC_MAC}
    assert d["own_ips"] == [ATK]
    assert len(only(w, "ip_conflict")) == 2


def test_ip_conflict_and_flip_flop_without_spoof():
    other = "02:00:00:00:00:20"
    w = feed(NetWatch(), garp(VIC_MAC, "10.20.0.20"), garp(other, "10.20.0.20"))
    (c,) = only(w, "ip_conflict")
    assert c["severity"] == "warning"
    assert (c["detail"]["kind"], c["detail"]["old_mac"], c["detail"]["new_mac"]) == ("changed", VIC_MAC, other)
    assert types(w) == ["ip_conflict"]  # two hosts fighting over one IP is not a MITM
    feed(w, garp(VIC_MAC, "10.20.0.20"))
    (c,) = only(w, "ip_conflict")
    assert c["detail"]["kind"] == "flip_flop"
    assert c["detail"]["changes"] == 2
    assert w.report()["arp"]["ip_conflicts"] == [{"ip": "10.20.0.20", "macs": [VIC_MAC, other]}]


def test_dhcp_reassignment_is_a_conflict_not_a_spoof():
    old_owner, laptop = "02:00:00:00:00:61", "02:00:00:00:00:50"
    w = NetWatch()
    w.feed(garp(old_owner, "10.20.0.60"), ts=0.0)
    w.feed(garp(laptop, "10.20.0.50"), ts=3000.0)
    w.feed(garp(laptop, "10.20.0.60"), ts=3600.0)  # lease of the long-gone host handed to the laptop
    assert types(w) == ["ip_conflict"]
    # the same takeover while the owner is still talking is poisoning
    w.feed(garp(old_owner, "10.20.0.70"), ts=3601.0)
    w.feed(garp(laptop, "10.20.0.70"), ts=3602.0)
    (f,) = only(w, "arp_spoof")
    assert f["detail"]["claimed_ips"] == {"10.20.0.70": old_owner}


def test_arp_sender_differs_from_ethernet_source():
    w = feed(NetWatch(), arp("is-at", GW_MAC, GW, VIC, VIC_MAC, eth_src=ATK_MAC))
    (f,) = only(w, "arp_spoof")
    assert f["detail"]["reason"] == "ether_mismatch"
    assert (f["detail"]["arp_mac"], f["detail"]["ether_src"]) == (GW_MAC, ATK_MAC)


def test_arp_probe_is_not_a_station_and_ip_plan():
    w = feed(NetWatch(ip_plan=["10.20.0.0/24"]),
             arp("who-has", VIC_MAC, "0.0.0.0", "10.20.0.10"),  # RFC 5227 probe
             garp(VIC_MAC, VIC),
             garp("02:00:00:00:00:99", "172.16.9.9"))
    assert w.report()["arp"]["stations"] == [{"ip": VIC, "mac": VIC_MAC},
                                             {"ip": "172.16.9.9", "mac": "02:00:00:00:00:99"}]
    (f,) = only(w, "outside_ip_plan")
    assert (f["detail"]["ip"], f["detail"]["mac"], f["detail"]["ip_plan"]) == \
        ("172.16.9.9", "02:00:00:00:00:99", ["10.20.0.0/24"])


# ----------------------------------------------------------------------------- Wi-Fi

CAMPUS_AP1, CAMPUS_AP2 = "00:1a:2b:00:00:01", "00:1a:2b:00:00:02"
EVIL = "66:66:66:00:00:01"


def test_beacon_fields_channel_signal_security():
    w = feed(NetWatch(), beacon(CAMPUS_AP1, "CampusNet", channel=6, signal=-61, security="WPA2"),
             beacon(CAMPUS_AP2, "CampusNet-6E", channel=11, signal=-70, security="WPA3"),
             beacon("00:1a:2b:00:00:03", "Lab", channel=1, signal=-80, security="WPA2/WPA3"),
             beacon("00:1a:2b:00:00:04", "Old", channel=3, security="WEP"),
             beacon("00:1a:2b:00:00:05", "Older", channel=4, security="WPA"),
             beacon("00:1a:2b:00:00:06", "Guest", channel=1, security="open"),
             beacon("00:1a:2b:00:00:07", "Enhanced", channel=1, security="OWE"),
             beacon("00:1a:2b:00:00:08", "eduroam", channel=1, security="ENTERPRISE", probe_resp=True))
    wifi = {b["ssid"]: b for b in w.report()["wifi"]}
    assert wifi["CampusNet"] == {"bssid": CAMPUS_AP1, "ssid": "CampusNet", "channel": 6, "signal_dbm": -61,
                                 "security": "WPA2"}
    assert {s: b["security"] for s, b in wifi.items()} == {
        "CampusNet": "WPA2", "CampusNet-6E": "WPA3", "Lab": "WPA2/WPA3", "Old": "WEP", "Older": "WPA",
        "Guest": "open", "Enhanced": "OWE", "eduroam": "WPA2"}
    assert types(w) == []


def test_gbk_and_utf8_ssids():
    gbk = "校园网-教学楼".encode("gbk")
    with pytest.raises(UnicodeDecodeError):
        gbk.decode("utf-8")
    assert decode_ssid(gbk) == ("校园网-教学楼", "gbk")
    assert decode_ssid("北大访客".encode("utf-8")) == ("北大访客", "utf-8")
    assert decode_ssid(b"\x00\x00\x00") == ("", "hidden")
    assert decode_ssid(b"\xff\xfe\xff") == ("\\xff\\xfe\\xff", "raw")
    w = feed(NetWatch(ssid_allow=parse_ssid_allow([f"校园网-教学楼={CAMPUS_AP1}"])),
             beacon(CAMPUS_AP1, gbk, security="WPA2"),
             beacon(EVIL, "校园网-教学楼".encode("utf-8"), security="open"))
    assert sorted(b["ssid"] for b in w.report()["wifi"]) == ["校园网-教学楼", "校园网-教学楼"]
    (f,) = only(w, "evil_twin")
    assert (f["detail"]["bssid"], f["detail"]["reason"]) == (EVIL, "open_clone")


def test_evil_twin_open_clone_of_campus_ssid():
    allow = parse_ssid_allow([f"CampusNet={CAMPUS_AP1},{CAMPUS_AP2}"])
    w = feed(NetWatch(ssid_allow=allow),
             beacon(CAMPUS_AP1, "CampusNet", security="WPA2"),
             beacon(CAMPUS_AP2, "CampusNet", channel=11, security="WPA2"),
             beacon(EVIL, "CampusNet", channel=6, signal=-40, security="open"),
             beacon("00:00:5e:00:00:01", "CoffeeShop", security="open"))  # not a campus SSID: ignored
    (f,) = w.report()["findings"]
    assert f["type"] == "evil_twin" and f["severity"] == "critical"
    d = f["detail"]
    assert (d["bssid"], d["ssid"], d["security"], d["campus_security"], d["reason"], d["signal_dbm"]) == \
        (EVIL, "CampusNet", "open", "WPA2", "open_clone", -40)


def test_rogue_ap_same_security_unknown_bssid():
    w = feed(NetWatch(ssid_allow={"CampusNet": [CAMPUS_AP1]}),
             beacon(CAMPUS_AP1, "CampusNet", security="WPA2"),
             beacon(EVIL, "CampusNet", security="WPA2"))
    (f,) = w.report()["findings"]
    assert (f["type"], f["severity"], f["detail"]["reason"]) == ("rogue_ap", "warning", "bssid_not_in_allow_list")


def test_wpa3_to_wpa2_downgrade():
    allow = {"Campus-Secure": [CAMPUS_AP1]}
    # the allowed BSSID itself suddenly advertises WPA2 only (spoofed BSSID / downgrade attack)
    w = feed(NetWatch(ssid_allow=allow),
             beacon(CAMPUS_AP1, "Campus-Secure", security="WPA3"),
             beacon(CAMPUS_AP1, "Campus-Secure", security="WPA3"),
             beacon(CAMPUS_AP1, "Campus-Secure", security="WPA2"))
    (f,) = w.report()["findings"]
    assert f["type"] == "evil_twin"
    assert (f["detail"]["reason"], f["detail"]["security"], f["detail"]["previous_security"],
            f["detail"]["allowed_bssid"]) == ("security_downgrade", "WPA2", "WPA3", True)
    # an unknown BSSID offering the campus SSID with transition mode while the campus is WPA3-only
    w = feed(NetWatch(ssid_allow=allow),
             beacon(CAMPUS_AP1, "Campus-Secure", security="WPA3"),
             beacon(EVIL, "Campus-Secure", security="WPA2/WPA3"),
             beacon("66:66:66:00:00:02", "Campus-Secure", security="WPA3"))
    by_bssid = {f["detail"]["bssid"]: f for f in w.report()["findings"]}
    assert by_bssid[EVIL]["type"] == "evil_twin"
    assert by_bssid[EVIL]["detail"]["reason"] == "security_downgrade"
    assert by_bssid[EVIL]["detail"]["campus_security"] == "WPA3"
    assert by_bssid["66:66:66:00:00:02"]["type"] == "rogue_ap"


def test_evil_twin_seen_before_the_legit_ap_is_rejudged():
    w = feed(NetWatch(ssid_allow={"CampusNet": [CAMPUS_AP1]}),
             beacon(EVIL, "CampusNet", security="WPA2"),
             beacon(CAMPUS_AP1, "CampusNet", security="WPA3"))
    assert {(f["type"], f["detail"].get("reason")) for f in w.report()["findings"]} == {
        ("rogue_ap", "bssid_not_in_allow_list"), ("evil_twin", "security_downgrade")}


def test_same_ssid_open_and_protected_without_allow_list():
    w = feed(NetWatch(), beacon(CAMPUS_AP1, "Library", security="WPA2"),
             beacon(EVIL, "Library", security="open"), beacon("00:1a:2b:00:00:09", "", security="open"))
    (f,) = w.report()["findings"]
    assert (f["type"], f["severity"], f["detail"]["open_bssids"], f["detail"]["protected_bssids"]) == \
        ("evil_twin", "warning", [EVIL], [CAMPUS_AP1])


def test_freq_to_channel():
    assert [freq_to_channel(f) for f in (2412, 2437, 2484, 5180, 5825, 5955, 6115, None)] == \
        [1, 6, 14, 36, 165, 1, 33, None]


# ----------------------------------------------------------------------------- RA

def test_rogue_router_advertisement():
    good_mac, good_ip = "02:00:00:00:01:01", "fe80::1"
    bad_mac, bad_ip = "02:00:00:00:0b:ad", "fe80::bad"
    w = feed(NetWatch(ra_allow=[good_ip]), router_advert(good_mac, good_ip),
             router_advert(bad_mac, bad_ip, prefix="2001:db8:bad::"))
    r = w.report()
    assert [(x["ip"], x["mac"], x["prefixes"]) for x in r["ipv6_routers"]] == [
        (good_ip, good_mac, ["2001:db8:1::/64"]), (bad_ip, bad_mac, ["2001:db8:bad::/64"])]
    (f,) = r["findings"]
    assert (f["type"], f["severity"], f["detail"]["router_ip"], f["detail"]["router_mac"],
            f["detail"]["prefixes"]) == ("rogue_ra", "critical", bad_ip, bad_mac, ["2001:db8:bad::/64"])
    w = feed(NetWatch(ra_allow=[good_mac]), router_advert(good_mac, good_ip))
    assert w.report()["findings"] == []


def test_allow_list_parsing_errors_name_the_entry():
    assert parse_allow(["10.0.0.1, AA-BB-CC-DD-EE-FF", "fe80::1"]) == (
        {"10.0.0.1", "fe80::1"}, {"aa:bb:cc:dd:ee:ff"})
    with pytest.raises(ValueError, match="'server1'"):
        parse_allow(["server1"], "dhcp-allow")
    assert parse_ssid_allow(["eduroam=AA:BB:CC:00:00:01,aa:bb:cc:00:00:02,Guest=aa:bb:cc:00:00:03"]) == {
        "eduroam": {"aa:bb:cc:00:00:01", "aa:bb:cc:00:00:02"}, "Guest": {"aa:bb:cc:00:00:03"}}
    with pytest.raises(ValueError, match="not a BSSID"):
        parse_ssid_allow(["eduroam=nope"])


def test_garbage_frames_do_not_stop_the_watch():
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw
    w = NetWatch()
    w.feed(Ether(b"\x00" * 14))
    w.feed(Raw(b"\xff" * 40))
    w.feed(Ether(bytes(garp(VIC_MAC, VIC))[:30]))  # truncated ARP
    feed(w, garp(VIC_MAC, VIC))
    assert w.report()["arp"]["stations"] == [{"ip": VIC, "mac": VIC_MAC}]


def test_linux_cooked_captures_and_vlan_tags():
    from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Dot1Q, Ether
    sll = CookedLinux(bytes(CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=bytes.fromhex("020000000010") + b"\0\0",
                                        proto=0x0806) / ARP(op=1, hwsrc=VIC_MAC, psrc=VIC, pdst=GW)))
    sll2 = CookedLinuxV2(bytes(CookedLinuxV2(proto=0x0806, lladdrtype=1, lladdrlen=6,
                                             src=bytes.fromhex("020000000066") + b"\0\0")
                               / ARP(op=1, hwsrc=GW_MAC, psrc="10.20.0.5", pdst=GW)))
    vlan = Ether(bytes(Ether(src=ATK_MAC, dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=120)
                       / ARP(op=2, hwsrc=ATK_MAC, psrc=ATK, pdst=GW)))
    w = feed(NetWatch(), sll, sll2, vlan)
    assert w.report()["arp"]["stations"] == [{"ip": GW.replace(".1", ".5"), "mac": GW_MAC},
                                             {"ip": VIC, "mac": VIC_MAC}, {"ip": ATK, "mac": ATK_MAC}]
    # SLL2 source 02:..:66 differs from the ARP sender 02:..:01: forged sender hardware address
    (f,) = only(w, "arp_spoof")
    assert (f["detail"]["reason"], f["detail"]["ether_src"], f["detail"]["arp_mac"]) == \
        ("ether_mismatch", ATK_MAC, GW_MAC)


def test_floods_are_bounded():
    w = NetWatch(ssid_allow={"CampusNet": [CAMPUS_AP1]})
    w.wifi.max_bss = 50
    w.findings.max_items = 20
    for i in range(100):  # mdk-style beacon flood of random BSSIDs
        w.feed(beacon(f"76:66:66:00:{i // 256:02x}:{i % 256:02x}", f"fake{i}", security="open"))
    w.feed(beacon(EVIL, "CampusNet", security="open"))  # a campus SSID is still tracked when full
    assert len(w.wifi.bss) == 51 and w.wifi.overflow == 51
    (f,) = only(w, "evil_twin")
    assert f["detail"]["bssid"] == EVIL
    for i in range(40):  # conflicts flood: findings table capped
        feed(w, garp(f"02:00:00:01:00:{i:02x}", f"10.9.{i}.1"), garp(f"02:00:00:02:00:{i:02x}", f"10.9.{i}.1"))
    assert len(w.findings) == 20 and w.findings.suppressed > 0


def test_radiotap_with_fcs_and_prism_headers():
    from scapy.layers.dot11 import Dot11, Dot11Beacon, Dot11Elt, Dot11FCS, PrismHeader, RadioTap
    from tests.netwatch_craft import rsn
    fcs = RadioTap(bytes(RadioTap(present="Flags+Channel+dBm_AntSignal", Flags="FCS", ChannelFrequency=2437,
                                  dBm_AntSignal=-50)
                         / Dot11FCS(type=0, subtype=8, addr1="ff:ff:ff:ff:ff:ff", addr2=CAMPUS_AP1, addr3=CAMPUS_AP1)
                         / Dot11Beacon(cap="ESS+privacy") / Dot11Elt(ID=0, info=b"FCSNet")
                         / Dot11Elt(ID=3, info=b"\x06") / Dot11Elt(ID=48, info=rsn([2]))))
    prism = PrismHeader(bytes(PrismHeader(signal=-72)
                              / Dot11(type=0, subtype=8, addr1="ff:ff:ff:ff:ff:ff", addr2=CAMPUS_AP2,
                                      addr3=CAMPUS_AP2)
                              / Dot11Beacon(cap="ESS") / Dot11Elt(ID=0, info=b"PrismNet")
                              / Dot11Elt(ID=3, info=b"\x0b")))
    w = feed(NetWatch(), fcs, prism)
    assert w.report()["wifi"] == [
        {"bssid": CAMPUS_AP1, "ssid": "FCSNet", "channel": 6, "signal_dbm": -50, "security": "WPA2"},
        {"bssid": CAMPUS_AP2, "ssid": "PrismNet", "channel": 11, "signal_dbm": -72, "security": "open"}]


def test_radiotap_noise_is_kept_with_the_signal():
    # monitor mode: radiotap dBm_AntNoise next to dBm_AntSignal -> SNR evidence for coverage
    from scapy.layers.dot11 import Dot11, Dot11Beacon, Dot11Elt, RadioTap
    frame = (RadioTap(present="Flags+Channel+dBm_AntSignal+dBm_AntNoise", ChannelFrequency=2437,
                      ChannelFlags="2GHz+CCK", dBm_AntSignal=-58, dBm_AntNoise=-93)
             / Dot11(type=0, subtype=8, addr1="ff:ff:ff:ff:ff:ff", addr2=CAMPUS_AP1, addr3=CAMPUS_AP1)
             / Dot11Beacon(cap="ESS+privacy") / Dot11Elt(ID=0, info=b"CampusNet")
             / Dot11Elt(ID=3, info=bytes([6])))
    w = feed(NetWatch(), RadioTap(bytes(frame)), beacon(CAMPUS_AP2, "CampusNet", signal=-70))
    assert w.wifi.bss[CAMPUS_AP1].signal_dbm == -58 and w.wifi.bss[CAMPUS_AP1].noise_dbm == -93
    assert w.wifi.bss[CAMPUS_AP2].noise_dbm is None          # no noise field in that radiotap header
    # a later reading without noise does not keep the old noise figure
    w.feed(beacon(CAMPUS_AP1, "CampusNet", signal=-60), ts=2000.0)
    assert w.wifi.bss[CAMPUS_AP1].signal_dbm == -60 and w.wifi.bss[CAMPUS_AP1].noise_dbm is None
