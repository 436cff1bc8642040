"""Ruijie, H3C and Huawei profiles against excerpts of recordings of REAL devices.

snmpsim serves verbatim excerpts of LibreNMS recordings (tests/fixtures/snmprec_vendors/, see
NOTICE); the profile is selected by the recording's own sysObjectID; net-snmp's snmpbulkwalk on
the same snmpsim is the oracle for every parsed table, and spot values are read off the
recordings. What no real recording covers is listed in firmware_configs/snmp/README.md.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from drivers.base import Sample
from drivers.snmp.tables import to_records
from tests.peers_snmp import Snmpsim, bulkwalk, collect_from_sim, column

FIX = Path(__file__).parent / "fixtures" / "snmprec_vendors"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"

pytestmark = pytest.mark.skipif(not shutil.which("snmpsimd") or not shutil.which("snmpbulkwalk"),
                                reason="needs snmpsim and net-snmp tools")


@pytest.fixture(scope="module")
def sim():
    s = Snmpsim({"h3c": FIX / "h3c_comware_health.snmprec",
                 "hw": FIX / "huawei_s5720_health.snmprec",
                 "hwac": FIX / "huawei_ac6605_wlan.snmprec",
                 "rj": FIX / "ruijie_s6220_entity.snmprec"}).start()
    yield s
    s.stop()


def _agrees(sim, community, rows, index_key, columns: dict[str, str]):
    """Every parsed row/field equals what net-snmp reads, and no row is missing."""
    for field, oid in columns.items():
        want = column(sim.port, community, oid, int)
        assert want, f"oracle returned nothing for {oid}"
        got = {str(r[index_key]): r[field] for r in rows if field in r}
        assert got == {k: v for k, v in want.items()}, field


# --------------------------------------------------------------------------- H3C / HPE Comware

H3C_STATE = "1.3.6.1.4.1.25506.2.6.1.1.1.1"


async def test_h3c_comware_entity_ext_health(sim):
    r = await collect_from_sim(sim.port, "h3c")
    assert r["_profile"] == "h3c" and r["_vendor"] == "H3C" and "_errors" not in r
    h = r["health"]
    rows = h["tables"]["entity_state"]
    _agrees(sim, "h3c", rows, "entity", {"cpu_pct": f"{H3C_STATE}.6", "mem_pct": f"{H3C_STATE}.8",
                                          "temp_c": f"{H3C_STATE}.12"})
    # spot values read off the recording: busiest board (entity 46) 21 % CPU, 20 % memory;
    # boards without a sensor say 65535 (not a temperature); hottest sensor 538 at 58 C
    assert h["cpu_pct"] == 21 and h["mem_pct"] == 20 and h["temp_c_max"] == 58
    temps = {x["sensor"]: x["value"] for x in h["sensors"]}
    assert len(temps) == 11 and 65535 not in temps.values()
    assert temps["entity_state 436"] == 34 and temps["entity_state 538"] == 58
    recs = [x for x in to_records("sw", r) if isinstance(x, Sample) and x.measurement == "device_health"]
    assert recs[0].fields == {"cpu_pct": 21, "mem_pct": 20, "temp_c_max": 58}


# --------------------------------------------------------------------------- Huawei VRP

HW_STATE = "1.3.6.1.4.1.2011.5.25.31.1.1.1.1"


async def test_huawei_s5720_entity_state_health(sim):
    r = await collect_from_sim(sim.port, "hw")
    assert r["_profile"] == "huawei" and r["_vendor"] == "Huawei" and "_errors" not in r
    h = r["health"]
    rows = h["tables"]["entity_state"]
    _agrees(sim, "hw", rows, "entity", {"cpu_pct": f"{HW_STATE}.5", "mem_pct": f"{HW_STATE}.7",
                                         "temp_c": f"{HW_STATE}.11"})
    # the MPU (entity 67108873) of the real S5720-56C-PWR-EI: 44 % CPU, 9 % memory, 42 C;
    # power supply / fan entities report 0 for all three (no CPU, no sensor)
    assert h["cpu_pct"] == 44 and h["mem_pct"] == 9 and h["temp_c_max"] == 42
    assert [x["value"] for x in h["sensors"]] == [42]


HW_POE = "1.3.6.1.4.1.2011.5.25.195.3.1"


async def test_huawei_s5720_poe_by_ifindex(sim):
    """The real S5720-56C-PWR-EI has no POWER-ETHERNET-MIB rows: PoE comes only from
    HUAWEI-POE-MIB hwPoePortTable (index ifIndex, milliwatts)."""
    r = await collect_from_sim(sim.port, "hw")
    ports = r["poe"]["ports"]
    assert "_errors" not in r and r["poe"]["pse"] == []
    mw = {k: v / 1000 for k, v in column(sim.port, "hw", f"{HW_POE}.5", int).items()}
    assert {str(p["ifIndex"]): p["max_power_w"] for p in ports} == mw
    enabled = column(sim.port, "hw", f"{HW_POE}.3", int)
    assert {str(p["ifIndex"]): p["admin_enabled"] for p in ports} == {k: v == 1 for k, v in enabled.items()}
    used = column(sim.port, "hw", f"{HW_POE}.10", int)
    assert {str(p["ifIndex"]): p["power_w"] for p in ports} == {k: v / 1000 for k, v in used.items()}
    # read off the recording: ports 6.. (GigabitEthernet0/0/1..) enabled, 30 W budget, nothing drawing
    p6 = next(p for p in ports if p["ifIndex"] == 6)
    assert p6 == {"ifIndex": 6, "ifName": "GigabitEthernet0/0/1", "admin_enabled": True, "max_power_w": 30.0,
                  "reference_power_w": 0.0, "power_w": 0.0, "peak_power_w": 0.0}
    recs = [x for x in to_records("sw", r) if isinstance(x, Sample) and x.measurement == "poe_port"]
    assert len(recs) == 5 and recs[0].tags == {"ifIndex": "6", "ifName": "GigabitEthernet0/0/1"}
    assert recs[0].fields == {"admin_enabled": True, "power_w": 0.0, "max_power_w": 30.0}


# --------------------------------------------------------------------------- Ruijie

async def test_ruijie_s6220_recording_has_no_vendor_health_rows(sim):
    """The only public Ruijie recording (S6220) carries no enterprise-4881 rows: the Ruijie CPU /
    temperature tables come back empty without errors and the standard sections still work."""
    r = await collect_from_sim(sim.port, "rj", soid="1.3.6.1.4.1.4881.1.1.10.1.150")   # sysObjectID of ruijie.snmprec
    assert r["_profile"] == "ruijie" and "_errors" not in r
    assert bulkwalk(sim.port, "rj", "1.3.6.1.4.1.4881") == {}
    assert "health" not in r and r["entity"]["chassis"]["model"] == "RG-S6220-48XS4QXS"
