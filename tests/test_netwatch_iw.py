"""`iw dev X scan` parsing and the driver's iw survey path (fake iw printing recorded output)."""
from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from drivers.base import Event, Sample
from drivers.netwatch import Options, create
from drivers.netwatch.iwscan import iw_noise, iw_scan, parse_akms, parse_iw_scan, parse_iw_survey, unescape_iw

IW_TXT = Path(__file__).resolve().parent / "fixtures" / "netwatch" / "iw_scan.txt"
IW_SURVEY = Path(__file__).resolve().parent / "fixtures" / "netwatch" / "iw_survey_dump.txt"


def test_parse_recorded_iw_scan():
    got = {b["bssid"]: b for b in parse_iw_scan(IW_TXT.read_text())}
    short = {k: (b["ssid"], b["channel"], b["signal_dbm"], b["security"]) for k, b in got.items()}
    assert short == {
        "00:1a:2b:00:00:01": ("CampusNet", 6, -61, "WPA2"),
        "00:1a:2b:00:00:02": ("CampusNet", 36, -70, "WPA3"),
        "66:66:66:00:00:01": ("CampusNet", 1, -38, "open"),
        "00:1a:2b:00:00:03": ("校园网", 11, -77, "WPA2/WPA3"),
        "00:1a:2b:00:00:04": ("北大 Guest", 1, -80, "open"),
        "00:1a:2b:00:00:05": ("", 3, -85, "WEP"),
        "00:1a:2b:00:00:06": ("OldPrinter", 4, -83, "WPA"),
        "00:1a:2b:00:00:07": ("eduroam", 100, -66, "WPA2"),
        "00:1a:2b:00:00:08": ("Library ", 6, -72, "OWE"),
        "00:1a:2b:00:00:09": ("CampusNet-6E", 1, -58, "WPA3"),
    }
    assert got["00:1a:2b:00:00:03"]["ssid_encoding"] == "gbk"
    assert got["00:1a:2b:00:00:04"]["ssid_encoding"] == "utf-8"
    assert got["00:1a:2b:00:00:05"]["ssid_encoding"] == "hidden"
    assert got["00:1a:2b:00:00:02"]["freq"] == 5180.0
    assert got["00:1a:2b:00:00:07"]["akm"] == ["802.1X", "FT-802.1X"]


def test_iw_helpers():
    assert unescape_iw(r"\xd0\xa3\xd4\xb0\xcd\xf8") == "校园网".encode("gbk")
    assert unescape_iw(r"a\x20b\x5c") == b"a b\\"
    assert parse_akms("IEEE 802.1X/SHA-256 PSK/SHA-256 FT/SAE 00-0f-ac:20") == [
        "802.1X-SHA256", "PSK-SHA256", "FT-SAE", "00-0f-ac:20"]
    assert parse_iw_scan("") == []
    assert parse_iw_scan("command failed: Operation not supported (-95)\n") == []


def fake_iw(tmp_path: Path, body: str) -> str:
    p = tmp_path / "iw"
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return str(p)


async def test_iw_scan_runs_command_and_reports_failures(tmp_path):
    ok = fake_iw(tmp_path, f'[ "$1 $2 $3" = "dev wlan9 scan" ] || exit 3\ncat "{IW_TXT}"\n')
    assert len(await iw_scan("wlan9", ok)) == 10
    bad = fake_iw(tmp_path, 'echo "command failed: No such device (-19)" >&2; exit 237\n')
    with pytest.raises(RuntimeError, match=r"scan failed \(exit 237\): command failed: No such device"):
        await iw_scan("wlan9", bad)


async def test_driver_iw_survey_emits_evil_twin_events(tmp_path):
    iw = fake_iw(tmp_path, f'cat "{IW_TXT}"\n')
    opts = Options.model_validate({
        "wifi_scan": {"enabled": True, "interface": "lo", "via": "iw", "interval_s": 3600, "iw_path": iw},
        "ssid_allow": {"CampusNet": ["00:1a:2b:00:00:01", "00:1A:2B:00:00:02"], "校园网": ["00:1a:2b:00:00:03"]},
        "sample_interval_s": 0.2,
    })
    drv = create("bldg-a-netwatch", opts, {"building": "A"})
    assert drv.name == "netwatch"
    records: list = []
    task = asyncio.create_task(drv.run(records.append))
    try:
        for _ in range(200):
            if any(isinstance(r, Sample) and r.measurement == "netwatch" for r in records):
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    events = [r for r in records if isinstance(r, Event)]
    assert [(e.type, e.severity, e.data["bssid"], e.data["reason"]) for e in events] == [
        ("evil_twin", "critical", "66:66:66:00:00:01", "open_clone")]
    assert events[0].tags == {"building": "A"}
    sample = next(r for r in records if isinstance(r, Sample) and r.measurement == "netwatch")
    assert sample.fields["wifi_bss"] == 10
    # Every BSS heard becomes coverage evidence: a wifi_survey sample with SSID, BSSID, signal.
    survey = [r for r in records if isinstance(r, Sample) and r.measurement == "wifi_survey"]
    by_bssid = {r.tags["bssid"]: r for r in survey}
    assert len(by_bssid) == 10
    twin = by_bssid["66:66:66:00:00:01"]
    assert twin.tags["ssid"] == "CampusNet" and twin.tags["security"] == "open"
    assert twin.tags["building"] == "A" and isinstance(twin.fields["signal_dbm"], int)


async def test_driver_iw_failure_keeps_running(tmp_path):
    iw = fake_iw(tmp_path, 'echo "command failed: Operation not permitted (-1)" >&2; exit 255\n')
    opts = Options.model_validate({"wifi_scan": {"enabled": True, "interface": "lo", "iw_path": iw},
                                   "sample_interval_s": 0.2})
    drv = create("x", opts, {})
    records: list = []
    task = asyncio.create_task(drv.run(records.append))
    try:
        for _ in range(200):
            if any(isinstance(r, Sample) and r.fields["scan_errors"] for r in records):
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert any(isinstance(r, Sample) and r.fields["scan_errors"] == 1 for r in records)
    assert not task.done() or task.cancelled()


def test_options_validation_messages():
    with pytest.raises(ValueError, match="set interface"):
        Options.model_validate({})
    with pytest.raises(ValueError, match="wifi_scan.enabled needs wifi_scan.interface"):
        Options.model_validate({"wifi_scan": {"enabled": True}})
    with pytest.raises(ValueError, match="not a BSSID"):
        Options.model_validate({"interface": "lo", "ssid_allow": {"eduroam": ["ap-1"]}})
    with pytest.raises(ValueError, match="Extra inputs"):
        Options.model_validate({"interface": "lo", "dhcp_alow": ["10.0.0.1"]})
    o = Options.model_validate({"interface": "lo", "ssid_allow": ["eduroam=AA-BB-CC-00-00-01"]})
    assert o.ssid_allow == {"eduroam": ["aa:bb:cc:00:00:01"]}
    assert o.arp_sweep.enabled is False and o.arp_sweep.rate_pps == 10


async def test_unknown_interface_is_a_config_error():
    from drivers.base import DeviceError
    drv = create("x", Options.model_validate({"interface": "nonexistent0"}), {})
    with pytest.raises(DeviceError) as ei:
        await drv.run(lambda r: None)
    assert ei.value.reason == "config" and "nonexistent0" in str(ei.value)



def test_parse_iw_survey_dump():
    assert parse_iw_survey(IW_SURVEY.read_text()) == {2412.0: -92, 2437.0: -95, 5180.0: -101}
    assert parse_iw_survey("") == {}
    assert parse_iw_survey(IW_TXT.read_text()) == {}     # scan output has no noise lines


async def test_driver_iw_survey_samples_carry_noise(tmp_path):
    # scan + survey dump (noise per frequency): wifi_survey samples get noise_dbm where known
    iw = fake_iw(tmp_path, f'if [ "$3" = "survey" ]; then cat "{IW_SURVEY}"; else cat "{IW_TXT}"; fi\n')
    assert await iw_noise("wlan9", iw) == {2412.0: -92, 2437.0: -95, 5180.0: -101}
    opts = Options.model_validate({
        "wifi_scan": {"enabled": True, "interface": "lo", "via": "iw", "interval_s": 3600, "iw_path": iw},
        "sample_interval_s": 0.2})
    drv = create("probe-a", opts, {"building": "A", "room": "A-101"})
    records: list = []
    task = asyncio.create_task(drv.run(records.append))
    try:
        for _ in range(200):
            if any(isinstance(r, Sample) and r.measurement == "wifi_survey" for r in records):
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    by = {r.tags["bssid"]: r for r in records if isinstance(r, Sample) and r.measurement == "wifi_survey"}
    assert by["00:1a:2b:00:00:01"].fields == {"signal_dbm": -61, "noise_dbm": -95}     # 2437 MHz
    assert by["00:1a:2b:00:00:02"].fields == {"signal_dbm": -70, "noise_dbm": -101}    # 5180 MHz
    assert by["00:1a:2b:00:00:07"].fields == {"signal_dbm": -66}                       # 5500 MHz: no noise
    assert by["00:1a:2b:00:00:01"].tags["room"] == "A-101" and by["00:1a:2b:00:00:01"].tags["channel"] == "6"


async def test_driver_iw_survey_dump_failure_is_not_a_scan_error(tmp_path):
    iw = fake_iw(tmp_path, f'if [ "$3" = "survey" ]; then echo "command failed: Operation not supported (-95)" >&2; '
                           f'exit 161; fi\ncat "{IW_TXT}"\n')
    opts = Options.model_validate({"wifi_scan": {"enabled": True, "interface": "lo", "iw_path": iw,
                                                 "interval_s": 3600}, "sample_interval_s": 0.2})
    drv = create("x", opts, {})
    records: list = []
    task = asyncio.create_task(drv.run(records.append))
    try:
        for _ in range(200):
            if any(isinstance(r, Sample) and r.measurement == "netwatch" for r in records):
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    survey = [r for r in records if isinstance(r, Sample) and r.measurement == "wifi_survey"]
    assert len(survey) == 10 and all("noise_dbm" not in r.fields for r in survey)
    assert all(r.fields["scan_errors"] == 0 for r in records if isinstance(r, Sample) and r.measurement == "netwatch")
