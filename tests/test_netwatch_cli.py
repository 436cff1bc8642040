"""`campus-sense pcap-analyze` on captures written by the tests (pcap and pcapng)."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from campus_sense.cli import main
from tests.netwatch_craft import arp, beacon, dhcp_discover, dhcp_reply, garp, router_advert, write_pcap

ROOT = Path(__file__).resolve().parents[1]
GW_MAC, ATK_MAC, VIC_MAC = "02:00:00:00:00:01", "02:00:00:00:00:66", "02:00:00:00:00:10"
CLIENT = "02:00:00:00:00:c1"
AP1, EVIL = "00:1a:2b:00:00:01", "66:66:66:00:00:01"


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["pcap-analyze", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def lan_packets():
    return [
        dhcp_discover(CLIENT),
        dhcp_reply(GW_MAC, "192.168.1.1", CLIENT, "192.168.1.50"),
        dhcp_reply(ATK_MAC, "192.168.1.66", CLIENT, "192.168.1.77"),
        dhcp_reply(GW_MAC, "192.168.1.1", CLIENT, "192.168.1.50"),
        arp("is-at", GW_MAC, "192.168.1.1", "192.168.1.10", VIC_MAC),
        garp(VIC_MAC, "192.168.1.10"),
        garp(ATK_MAC, "192.168.1.66"),
        arp("is-at", ATK_MAC, "192.168.1.1", "192.168.1.10", VIC_MAC),
        arp("is-at", ATK_MAC, "192.168.1.10", "192.168.1.1", GW_MAC),
        router_advert("02:00:00:00:0b:ad", "fe80::bad"),
    ]


@pytest.mark.parametrize("ng", [False, True], ids=["pcap", "pcapng"])
def test_json_contract_on_lan_capture(tmp_path, capsys, ng):
    cap = write_pcap(tmp_path / ("lan.pcapng" if ng else "lan.pcap"), lan_packets(), ng=ng)
    rc, out, err = run_cli(capsys, cap, "--dhcp-allow", "192.168.1.1", "--ra-allow", "fe80::1", "--json")
    assert rc == 0, err
    r = json.loads(out)
    assert set(r) >= {"dhcp_servers", "arp", "wifi", "findings"}
    assert r["dhcp_servers"] == [{"ip": "192.168.1.1", "mac": GW_MAC, "offers": 2, "acks": 0},
                                 {"ip": "192.168.1.66", "mac": ATK_MAC, "offers": 1, "acks": 0}]
    assert r["arp"]["stations"] == [{"ip": "192.168.1.1", "mac": GW_MAC}, {"ip": "192.168.1.1", "mac": ATK_MAC},
                                    {"ip": "192.168.1.10", "mac": VIC_MAC}, {"ip": "192.168.1.10", "mac": ATK_MAC},
                                    {"ip": "192.168.1.66", "mac": ATK_MAC}]
    assert r["arp"]["ip_conflicts"] == [{"ip": "192.168.1.1", "macs": [GW_MAC, ATK_MAC]},
                                        {"ip": "192.168.1.10", "macs": [VIC_MAC, ATK_MAC]}]
    assert r["wifi"] == []
    assert sorted(f["type"] for f in r["findings"]) == ["arp_spoof", "ip_conflict", "ip_conflict", "rogue_dhcp",
                                                        "rogue_ra"]
    for f in r["findings"]:
        assert set(f) == {"type", "severity", "detail"} and isinstance(f["detail"], dict)
        assert f["type"] in {"rogue_dhcp", "arp_spoof", "ip_conflict", "rogue_ap", "evil_twin", "rogue_ra"}
    assert r["capture"]["packets"] == 10


def test_json_contract_on_wifi_capture(tmp_path, capsys):
    gbk = "校园网".encode("gbk")
    cap = write_pcap(tmp_path / "wifi.pcap", [
        beacon(AP1, gbk, channel=6, signal=-61, security="WPA3"),
        beacon(EVIL, gbk, channel=6, signal=-35, security="open"),
        beacon("66:66:66:00:00:02", gbk, channel=1, signal=-50, security="WPA2"),
        beacon(AP1, gbk, channel=6, signal=-63, security="WPA3"),
    ])
    rc, out, err = run_cli(capsys, cap, "--ssid-allow", f"校园网={AP1}", "--json")
    assert rc == 0, err
    r = json.loads(out)
    assert r["wifi"] == [
        {"bssid": AP1, "ssid": "校园网", "channel": 6, "signal_dbm": -63, "security": "WPA3"},
        {"bssid": EVIL, "ssid": "校园网", "channel": 6, "signal_dbm": -35, "security": "open"},
        {"bssid": "66:66:66:00:00:02", "ssid": "校园网", "channel": 1, "signal_dbm": -50, "security": "WPA2"},
    ]
    got = {(f["type"], f["detail"]["bssid"], f["detail"]["reason"]) for f in r["findings"]}
    assert got == {("evil_twin", EVIL, "open_clone"), ("evil_twin", "66:66:66:00:00:02", "security_downgrade")}
    # text mode prints the decoded SSID too
    rc, out, _ = run_cli(capsys, cap, "--ssid-allow", f"校园网={AP1}")
    assert rc == 0 and "'校园网'" in out and "evil_twin" in out


def test_ip_plan_option_and_gzip_capture(tmp_path, capsys):
    raw = write_pcap(tmp_path / "a.pcap", [garp(VIC_MAC, "10.1.2.3"), garp(ATK_MAC, "172.31.0.9")])
    gz = tmp_path / "a.pcap.gz"
    gz.write_bytes(gzip.compress(Path(raw).read_bytes()))
    rc, out, err = run_cli(capsys, gz, "--ip-plan", "10.1.0.0/16", "192.168.0.0/24", "--json")
    assert rc == 0, err
    (f,) = json.loads(out)["findings"]
    assert (f["type"], f["detail"]["ip"], f["detail"]["ip_plan"]) == \
        ("outside_ip_plan", "172.31.0.9", ["10.1.0.0/16", "192.168.0.0/24"])


@pytest.mark.parametrize("content,expect", [
    (b"this is not a capture\n" * 3, "not a pcap/pcapng capture"),
    (b"", "not a pcap/pcapng capture"),
    (b"\xd4\xc3\xb2", "not a pcap/pcapng capture"),
])
def test_non_pcap_input_fails_with_one_line(tmp_path, capsys, content, expect):
    f = tmp_path / "bad.pcap"
    f.write_bytes(content)
    rc, out, err = run_cli(capsys, f, "--json")
    assert rc != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and expect in err and str(f) in err


def test_missing_file_directory_and_bad_options(tmp_path, capsys):
    rc, _, err = run_cli(capsys, tmp_path / "nope.pcap")
    assert rc == 2 and err.strip() == f"campus-sense pcap-analyze: {tmp_path / 'nope.pcap'}: no such file"
    rc, _, err = run_cli(capsys, tmp_path)
    assert rc == 2 and "is a directory" in err and len(err.strip().splitlines()) == 1
    cap = write_pcap(tmp_path / "ok.pcap", [garp(VIC_MAC, "10.1.2.3")])
    rc, _, err = run_cli(capsys, cap, "--dhcp-allow", "dhcp-server-1")
    assert rc == 2 and "'dhcp-server-1' is neither an IP address nor a MAC address" in err
    rc, _, err = run_cli(capsys, cap, "--ssid-allow", "eduroam")
    assert rc == 2 and "SSID=BSSID" in err
    rc, _, err = run_cli(capsys, cap, "--ip-plan", "10.0.0.0/33")
    assert rc == 2 and "'10.0.0.0/33'" in err


def test_truncated_capture_keeps_what_was_read(tmp_path, capsys):
    cap = Path(write_pcap(tmp_path / "t.pcap", [garp(VIC_MAC, "10.1.2.3"), garp(ATK_MAC, "10.1.2.4"),
                                                garp(GW_MAC, "10.1.2.1")]))
    data = cap.read_bytes()
    cap.write_bytes(data[:-20])  # cut inside the last record
    rc, out, err = run_cli(capsys, cap, "--json")
    assert rc == 0
    r = json.loads(out)
    assert [s["ip"] for s in r["arp"]["stations"]] == ["10.1.2.3", "10.1.2.4"]


def test_console_script_end_to_end(tmp_path):
    """The installed entry point, as an operator runs it."""
    cap = write_pcap(tmp_path / "lan.pcap", lan_packets())
    exe = Path(sys.executable).with_name("campus-sense")
    p = subprocess.run([str(exe), "pcap-analyze", cap, "--dhcp-allow", "192.168.1.1", "--json"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert [f["detail"]["server_ip"] for f in json.loads(p.stdout)["findings"] if f["type"] == "rogue_dhcp"] == \
        ["192.168.1.66"]
    bad = tmp_path / "notes.txt"
    bad.write_text("hello\n")
    p = subprocess.run([str(exe), "pcap-analyze", str(bad)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().splitlines() == [f"campus-sense pcap-analyze: {bad}: not a pcap/pcapng capture "
                                             "(Not a supported capture file)"]
