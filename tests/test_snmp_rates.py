"""Counter/rate arithmetic and value decoding (pure functions, no peers)."""
from __future__ import annotations

import pytest

from drivers.snmp.ifmib import (Interface, RateTracker, build_interfaces, counter_delta, decode_text,
                                format_mac, speed_mbps, vendor_from_oid)

M32 = 2 ** 32
M64 = 2 ** 64


def itf(index=1, in_oct=0, out_oct=0, bits=64, speed=1000, in_err=0, **kw) -> Interface:
    return Interface(index=index, name=f"p{index}", descr=f"port {index}", alias="", type=6, if_speed=None,
                     if_high_speed=speed, speed_mbps=speed, admin_status=1, oper_status=1, mac=None,
                     in_octets=in_oct, out_octets=out_oct, in_bits=bits, out_bits=bits, in_errors=in_err, out_errors=0,
                     in_discards=0, out_discards=0, **kw)


# ------------------------------------------------------------------ counter_delta

def test_counter_delta_plain_increase():
    assert counter_delta(100, 350, 32) == 250
    assert counter_delta(100, 350, 64) == 250


def test_counter_delta_32bit_wrap():
    assert counter_delta(M32 - 1000, 500, 32) == 1500


def test_counter_delta_32bit_wrap_implausible_for_line_rate_is_reset():
    # dropping from 3e9 to 1e9 implies 2.29e9 octets; a 100 Mb/s port moves 1.25e7/s
    assert counter_delta(3_000_000_000, 1_000_000_000, 32, max_delta=12_500_000 * 10) is None
    # without a speed, a wrap must be below half the modulus
    assert counter_delta(3_000_000_000, 1_000_000_000, 32) is None
    assert counter_delta(M32 - 10, 10, 32) == 20


def test_counter_delta_64bit_decrease_is_reset():
    assert counter_delta(M64 - 10, 5, 64) is None
    assert counter_delta(10_000, 9_999, 64) is None


# ------------------------------------------------------------------ RateTracker

def test_first_poll_has_no_rates_second_has():
    rt = RateTracker()
    assert rt.update(100_000, [itf(in_oct=0, out_oct=0)], wall=1000.0) == {}
    rates = rt.update(100_000 + 1000, [itf(in_oct=1_250_000, out_oct=2_500_000, in_err=20)], wall=1010.0)
    r = rates[1]
    assert r["in_bps"] == pytest.approx(1_000_000)       # 1.25 MB in 10 s
    assert r["out_bps"] == pytest.approx(2_000_000)
    assert r["in_errors_ps"] == pytest.approx(2.0)
    assert r["util_in_pct"] == pytest.approx(0.1)         # 1 Mb/s of 1 Gb/s
    assert r["util_out_pct"] == pytest.approx(0.2)


def test_32bit_counter_wrap_gives_correct_rate():
    rt = RateTracker()
    start = M32 - 5_000_000
    rt.update(0, [itf(in_oct=start, out_oct=0, bits=32, speed=100)], wall=0.0)
    rates = rt.update(1000, [itf(in_oct=7_500_000, out_oct=1000, bits=32, speed=100)], wall=10.0)
    assert rates[1]["in_bps"] == pytest.approx((5_000_000 + 7_500_000) * 8 / 10)


def test_64bit_counters_large_values():
    rt = RateTracker()
    base = 2 ** 62
    rt.update(0, [itf(in_oct=base, out_oct=base, speed=100_000)], wall=0.0)
    rates = rt.update(6000, [itf(in_oct=base + 75 * 10 ** 10, out_oct=base, speed=100_000)], wall=60.0)
    assert rates[1]["in_bps"] == pytest.approx(75 * 10 ** 10 * 8 / 60)   # 100 Gb/s
    assert rates[1]["util_in_pct"] == pytest.approx(100.0)
    assert rates[1]["out_bps"] == 0


def test_reboot_uptime_backwards_gives_no_rates_then_resumes():
    rt = RateTracker()
    rt.update(500_000, [itf(in_oct=10 ** 9)], wall=0.0)
    rates = rt.update(300, [itf(in_oct=1000)], wall=60.0)        # rebooted 3 s ago
    assert rates == {}
    assert rt.last_reboot
    rates = rt.update(300 + 6000, [itf(in_oct=1000 + 7_500_000)], wall=120.0)
    assert not rt.last_reboot
    assert rates[1]["in_bps"] == pytest.approx(1_000_000)


def test_counter_reset_without_uptime_change_drops_only_that_interface():
    rt = RateTracker()
    rt.update(0, [itf(1, in_oct=5 * 10 ** 9), itf(2, in_oct=1000)], wall=0.0)
    rates = rt.update(1000, [itf(1, in_oct=100), itf(2, in_oct=1000 + 1250)], wall=10.0)
    assert 1 not in rates                          # 64-bit counter went down: reset, no rate
    assert rates[2]["in_bps"] == pytest.approx(1000)
    rates = rt.update(2000, [itf(1, in_oct=100 + 12_500), itf(2, in_oct=2250)], wall=20.0)
    assert rates[1]["in_bps"] == pytest.approx(10_000)   # new baseline works


def test_sysuptime_delta_preferred_when_sane_else_wall_clock():
    rt = RateTracker()
    rt.update(0, [itf(in_oct=0)], wall=0.0)
    # device says 9 s elapsed, wall clock 10 s (scheduler jitter): use the device's 9 s
    rates = rt.update(900, [itf(in_oct=9000)], wall=10.0)
    assert rates[1]["in_bps"] == pytest.approx(8000)
    # device uptime frozen (broken agent): fall back to wall clock
    rates = rt.update(900, [itf(in_oct=9000 + 10_000)], wall=20.0)
    assert rates[1]["in_bps"] == pytest.approx(8000)


def test_timeticks_wrap_after_497_days_is_not_a_reboot():
    rt = RateTracker()
    rt.update(M32 - 500, [itf(in_oct=0)], wall=0.0)
    rates = rt.update(500, [itf(in_oct=10_000)], wall=10.0)
    assert not rt.last_reboot
    assert rates[1]["in_bps"] == pytest.approx(8000)


def test_switch_from_hc_to_32bit_resets_baseline():
    rt = RateTracker()
    rt.update(0, [itf(in_oct=10, bits=64)], wall=0.0)
    assert rt.update(1000, [itf(in_oct=20, bits=32)], wall=10.0) == {}


def test_new_interface_has_no_rate_until_second_poll():
    rt = RateTracker()
    rt.update(0, [itf(1)], wall=0.0)
    rates = rt.update(1000, [itf(1), itf(7, in_oct=55)], wall=10.0)
    assert 1 in rates and 7 not in rates


# ------------------------------------------------------------------ decoding

def test_speed_rules():
    assert speed_mbps(4294967295, 10000) == 10000
    assert speed_mbps(100_000_000, 0) == 100
    assert speed_mbps(100_000_000, None) == 100
    assert speed_mbps(1_544_000, None) == pytest.approx(1.544)
    assert speed_mbps(None, 0) == 0
    assert speed_mbps(None, None) is None


def test_mac_format():
    assert format_mac(bytes.fromhex("AC7E8A19BF40")) == "ac:7e:8a:19:bf:40"
    assert format_mac(b"") is None
    assert format_mac(bytes(6)) is None
    assert format_mac(bytes.fromhex("0011223344556677")) is None


def test_text_decoding():
    assert decode_text(b"Gi1/0/1") == "Gi1/0/1"
    assert decode_text("Büro 1.OG".encode()) == "Büro 1.OG"
    assert decode_text("Büro".encode("latin-1")) == "Büro"           # not UTF-8: latin-1
    assert decode_text(b"\x00\x01\xfe\x02") == "00:01:fe:02"          # binary: hex
    assert decode_text(b"name\x00\x00") == "name"                     # C-style padding
    assert decode_text(None) is None


def test_build_interfaces_falls_back_to_32bit_and_descr():
    cols = {
        "ifDescr": {"1": b"eth0", "2": b"eth1"},
        "ifType": {"1": 6, "2": 6},
        "ifInOctets": {"1": 10, "2": 20}, "ifOutOctets": {"1": 11, "2": 21},
        "ifHCInOctets": {"1": 1000}, "ifHCOutOctets": {"1": 1001},
        "ifName": {"1": b"e0"},
        "ifSpeed": {"1": 10_000_000, "2": 100_000_000},
        "ifHighSpeed": {"1": 0},
    }
    a, b = build_interfaces(cols)
    assert (a.name, a.in_octets, a.counter_bits, a.speed_mbps) == ("e0", 1000, 64, 10)
    assert (b.name, b.in_octets, b.counter_bits, b.speed_mbps) == ("eth1", 20, 32, 100)
    # per direction: HC in present, HC out absent -> 64-bit in, 32-bit out
    (c,) = build_interfaces({"ifDescr": {"3": b"x"}, "ifHCInOctets": {"3": 5}, "ifOutOctets": {"3": 6}})
    assert (c.in_octets, c.in_bits, c.out_octets, c.out_bits, c.counter_bits) == (5, 64, 6, 32, 32)


def test_vendor_from_sysobjectid():
    assert vendor_from_oid("1.3.6.1.4.1.9.1.1208") == "Cisco"
    assert vendor_from_oid("1.3.6.1.4.1.2011.2.23.291") == "Huawei"
    assert vendor_from_oid("1.3.6.1.4.1.999999.1") is None
    assert vendor_from_oid(None) is None
