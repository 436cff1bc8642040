"""Gateway protection and Wi-Fi deauth floods (issue 14 part 4): protected IP->MAC bindings from
the config, from the L3 switch's ARP table (snmpsim serving a real Catalyst 3750 recording) or the
first MAC heard; any other MAC claiming a protected IP is arp_spoof even when the owner was never
heard. 802.11 deauthentication/disassociation floods (Kismet's DEAUTHFLOOD) from crafted radiotap
captures (scapy), in the detectors, `campus-sense pcap-analyze` and the live driver on a veth pair."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from scapy.layers.dot11 import Dot11, Dot11Deauth, Dot11Disas, RadioTap

from drivers.base import Event
from drivers.netwatch import Options, create
from drivers.netwatch.detectors import NetWatch, parse_protected
from tests.netwatch_craft import arp, beacon, garp, write_pcap
from tests.peers_snmp import Snmpsim
from tests.test_netwatch_live import ns_send, veth_ns  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[1]
GW, GW_MAC = "10.20.0.1", "02:00:00:00:00:01"
DNS, DNS_MAC = "10.20.0.53", "02:00:00:00:00:35"
ATK_MAC = "02:00:00:00:00:66"
AP = "00:1a:2b:00:00:01"


def spoofs(w: NetWatch) -> list[dict]:
    return [f["detail"] for f in w.report()["findings"]
            if f["type"] == "arp_spoof" and f["detail"]["reason"] == "protected_ip"]


def feed(w: NetWatch, pkts, t0: float = 1000.0, step: float = 1.0) -> NetWatch:
    for i, p in enumerate(pkts):
        w.feed(p, ts=t0 + i * step)
    return w


# ----------------------------------------------------------------------------- protected bindings

def test_configured_gateway_mac_catches_the_first_forged_reply():
    # the attacker's very first packet: the real gateway has not said a word in this capture
    w = feed(NetWatch(protected=[f"{GW}={GW_MAC}", {"ip": DNS, "mac": DNS_MAC, "name": "dns-1"}]),
             [arp("is-at", ATK_MAC, GW, "10.20.0.10", hwdst="02:00:00:00:00:10"),
              arp("is-at", GW_MAC, GW, "10.20.0.10"), garp(DNS_MAC, DNS), garp(ATK_MAC, DNS)])
    s = spoofs(w)
    assert [(d["reason"], d["ip"], d["mac"], d["binding"]) for d in s] == [
        ("protected_ip", GW, ATK_MAC, "config"), ("protected_ip", DNS, ATK_MAC, "config")]
    assert s[0]["expected_macs"] == [GW_MAC] and s[1]["name"] == "dns-1"
    assert w.report()["arp"]["protected"][0] == {"ip": GW, "macs": [GW_MAC], "name": None, "source": "config"}


def test_ip_only_binding_is_the_first_mac_heard_and_never_times_out():
    w = NetWatch(protected=[GW])
    feed(w, [garp(GW_MAC, GW)], t0=0)
    feed(w, [garp(ATK_MAC, GW)], t0=86_400)            # a day later: no "owner heard recently" needed
    (d,) = spoofs(w)
    assert (d["reason"], d["binding"], d["expected_macs"]) == ("protected_ip", "first_seen", [GW_MAC])
    # without protection the same sequence is only an IP conflict (the owner was silent for a day)
    plain = feed(NetWatch(), [garp(GW_MAC, GW)], t0=0)
    feed(plain, [garp(ATK_MAC, GW)], t0=86_400)
    assert spoofs(plain) == [] and [f["type"] for f in plain.report()["findings"]] == ["ip_conflict"]


def test_learned_bindings_never_replace_configured_ones():
    w = NetWatch(protected=[f"{GW}={GW_MAC}", DNS])
    assert not w.arp.learn(GW, ATK_MAC, "snmp")
    assert w.arp.learn(DNS, DNS_MAC, "snmp") and not w.arp.learn(DNS, DNS_MAC, "snmp")
    feed(w, [garp(ATK_MAC, DNS)])
    assert [(d["ip"], d["binding"]) for d in spoofs(w)] == [(DNS, "snmp")]
    for bad in (["10.20.0.x"], ["10.20.0.1=not-a-mac"], [{"ip": GW, "mac": "ff:ff:ff:ff:ff:ff"}]):
        with pytest.raises(ValueError, match="protected"):
            parse_protected(bad)
    with pytest.raises(ValidationError, match="protected"):
        Options.model_validate({"interface": "lo", "protected": ["gateway"]})


async def test_bindings_learned_from_the_l3_switch_arp_table_over_snmp(tmp_path):
    """snmpsim serves a real Catalyst 3750 recording: its ipNetToMediaTable has 10.204.88.1."""
    rec = ROOT / "tests" / "fixtures" / "snmprec_vendors" / "cisco_c3750.snmprec"
    sim = Snmpsim({"core-arp-7f1c": rec}).start()
    try:
        (tmp_path / "community").write_text("core-arp-7f1c\n")
        opts = Options.model_validate({"interface": "lo", "protected": ["10.204.88.1", "10.204.88.10", "10.9.9.9"],
                                       "protected_arp_from": {"host": "127.0.0.1", "port": sim.port,
                                                              "community_file": str(tmp_path / "community")}})
        drv = create("nw", opts, {})
        assert await drv.learn_protected() == 2
        assert await drv.learn_protected() == 0                  # unchanged table: nothing new
    finally:
        sim.stop()
    prot = {p["ip"]: p for p in drv.watch.report()["arp"]["protected"]}
    assert prot["10.204.88.1"]["macs"] == ["00:1f:12:30:47:00"] and prot["10.204.88.1"]["source"] == "snmp"
    assert prot["10.204.88.10"]["macs"] == ["68:99:cd:a5:9f:c1"]
    assert prot["10.9.9.9"]["macs"] == [] and prot["10.9.9.9"]["source"] == "first_seen"
    drv.watch.feed(garp(ATK_MAC, "10.204.88.1"), ts=1.0)     # never heard the real one in this capture
    assert [(d["ip"], d["binding"]) for d in spoofs(drv.watch)] == [("10.204.88.1", "snmp")]


# ----------------------------------------------------------------------------- deauth floods

def deauth(src: str, dst: str, bssid: str, reason: int = 7, disassoc: bool = False, freq: int = 2437):
    body = Dot11Disas(reason=reason) if disassoc else Dot11Deauth(reason=reason)
    return RadioTap(present="Flags+Rate+Channel+dBm_AntSignal", Rate=2, ChannelFrequency=freq,
                    ChannelFlags="CCK+2GHz", dBm_AntSignal=-40) / Dot11(type=0, subtype=10 if disassoc else 12,
                                                                      addr1=dst, addr2=src, addr3=bssid) / body


def test_deauth_flood_like_aireplay_and_legitimate_disconnects():
    w = NetWatch()
    # an AP saying goodbye to three clients over a minute: normal
    feed(w, [deauth(AP, f"02:00:00:00:01:0{i}", AP, reason=3) for i in range(3)], step=20)
    assert [f["type"] for f in w.report()["findings"]] == []
    # aireplay-ng --deauth: 64 broadcast deauths spoofing the AP within half a second
    feed(w, [deauth(AP, "ff:ff:ff:ff:ff:ff", AP) for _ in range(64)], t0=2000, step=0.008)
    (f,) = [f for f in w.report()["findings"] if f["type"] == "deauth_flood"]
    d = f["detail"]
    assert f["severity"] == "critical" and d["bssid"] == AP and d["broadcast"] is True
    assert d["frames_in_window"] == 64 and d["threshold"] == 10 and d["channel"] == 6
    assert d["reason_codes"] == {3: 3, 7: 64} and d["sources"] == [AP] and d["deauth"] == 67
    assert f["detail"]["count"] == 54                         # every frame beyond the threshold counted
    # mdk4-style disassociation flood against one client of another BSS, counted separately
    other = "00:1a:2b:00:00:02"
    feed(w, [deauth(other, "02:00:00:00:02:01", other, disassoc=True) for _ in range(12)], t0=3000, step=0.05)
    floods = {x["detail"]["bssid"]: x["detail"] for x in w.report()["findings"] if x["type"] == "deauth_flood"}
    assert floods[other]["disassoc"] == 12 and floods[other]["broadcast"] is False
    assert NetWatch(deauth_threshold=100).deauth.threshold == 100


def test_pcap_analyze_protect_and_deauth(tmp_path):
    lan = write_pcap(tmp_path / "lan.pcap", [arp("is-at", ATK_MAC, GW, "10.20.0.10"), garp(GW_MAC, GW)])
    air = tmp_path / "air.pcap"
    pkts = [beacon(AP, "campus", channel=6)] + [deauth(AP, "ff:ff:ff:ff:ff:ff", AP) for _ in range(40)]
    for i, p in enumerate(pkts):
        p.time = 1_700_000_000.0 + i * 0.01
    write_pcap(air, pkts, linktype=127)

    def run(*args):
        return subprocess.run([sys.executable, "-m", "campus_sense.cli", "pcap-analyze", *args], capture_output=True,
                              text=True, timeout=120, cwd=ROOT)
    r = run(lan, "--protect", f"{GW}={GW_MAC}", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert sorted((f["type"], f["detail"].get("reason")) for f in rep["findings"]) == [
        ("arp_spoof", "protected_ip"), ("ip_conflict", None)]
    assert rep["arp"]["protected"] == [{"ip": GW, "macs": [GW_MAC], "name": None, "source": "config"}]
    r = run(str(air), "--json")
    rep = json.loads(r.stdout)
    (f,) = [f for f in rep["findings"] if f["type"] == "deauth_flood"]
    assert f["detail"]["bssid"] == AP and f["detail"]["broadcast"] is True
    assert run(str(air), "--deauth-threshold", "50", "--json").stdout.count("deauth_flood") == 0
    txt = run(lan, "--protect", GW).stdout
    assert f"protected {GW}: {ATK_MAC} (first_seen)" in txt
    bad = run(lan, "--protect", "gw")
    assert bad.returncode == 2 and "not an IP address" in bad.stderr


# ----------------------------------------------------------------------------- live driver

async def test_live_protected_gateway_spoof_becomes_an_event(veth_ns):  # noqa: F811
    net = veth_ns["net"]
    opts = Options.model_validate({"interface": veth_ns["host_if"], "protected": [f"{net}.1=02:00:00:00:00:01"],
                                   "sample_interval_s": 0.3, "learn_s": 0})
    drv = create("bldg-a-netwatch", opts, {"building": "A"})
    records: list = []
    task = asyncio.create_task(drv.run(records.append))
    try:
        await asyncio.wait_for(drv.ready.wait(), 10)
        ns_send(veth_ns, f"""
            sendp(Ether(src="{ATK_MAC}", dst="ff:ff:ff:ff:ff:ff") / ARP(op=2, hwsrc="{ATK_MAC}", psrc="{net}.1",
                  pdst="{net}.2", hwdst="ff:ff:ff:ff:ff:ff"), iface=IFACE)
        """)
        async with asyncio.timeout(10):
            while not [r for r in records if isinstance(r, Event) and r.type == "arp_spoof"]:
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    (ev,) = [r for r in records if isinstance(r, Event) and r.type == "arp_spoof"]
    assert ev.severity == "critical" and ev.data["reason"] == "protected_ip" and ev.data["mac"] == ATK_MAC
    assert ev.data["ip"] == f"{net}.1" and ev.tags["building"] == "A"
