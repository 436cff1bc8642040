"""ENTITY-SENSOR-MIB and HOST-RESOURCES-MIB health against recordings of real devices.

snmpsim serves verbatim excerpts (tests/fixtures/snmprec_vendors/, see NOTICE): an Arista
DCS-7050TX-128 (LibreNMS arista_eos.snmprec) for entPhySensorTable, a Linux net-snmp agent
(snmpsim's recorded/linux-full-walk) and a Palo Alto PA-VM (LibreNMS panos.snmprec) for
hrStorage/hrProcessorLoad. net-snmp's snmpbulkwalk
on the same snmpsim is the oracle; spot values are worked out by hand from the recording.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from drivers.base import Sample
from drivers.snmp.tables import SENSOR_TYPE, to_records
from tests.peers_snmp import Snmpsim, collect_from_sim, column

FIX = Path(__file__).parent / "fixtures" / "snmprec_vendors"
ARISTA = FIX / "arista_7050_entity_sensor.snmprec"
LINUX = FIX / "linux_netsnmp_hostres.snmprec"
PANOS = FIX / "paloalto_pavm_hostres.snmprec"
SENSOR = "1.3.6.1.2.1.99.1.1.1"

pytestmark = pytest.mark.skipif(not shutil.which("snmpsimd") or not shutil.which("snmpbulkwalk"),
                                reason="needs snmpsim and net-snmp tools")


@pytest.fixture(scope="module")
def sim():
    s = Snmpsim({"arista": ARISTA, "linux": LINUX, "panos": PANOS}).start()
    yield s
    s.stop()


async def test_arista_entity_sensors_agree_with_net_snmp(sim):
    r = await collect_from_sim(sim.port, "arista", ["health"])
    assert r["_profile"] == "generic" and "_errors" not in r
    sensors = {x["index"]: x for x in r["health"]["sensors"]}
    # oracle: recompute every sensor from net-snmp's view of the five columns (ENTITY-SENSOR-MIB:
    # value x 10^(3 x (scale - units(9))) / 10^precision; only operStatus ok(1))
    cols = {n: column(sim.port, "arista", f"{SENSOR}.{n}") for n in (1, 2, 3, 4, 5)}
    names = column(sim.port, "arista", "1.3.6.1.2.1.47.1.1.1.1.2")
    want = {}
    for i, val in cols[4].items():
        v, scale, prec = int(val), int(cols[2][i]), int(cols[3][i])
        if cols[5][i] != "1" or abs(v) >= 10 ** 9:
            continue
        want[int(i)] = (names[i].strip('"'), SENSOR_TYPE[int(cols[1][i])], v * 10.0 ** (3 * (scale - 9)) / 10 ** prec)
    assert set(sensors) == set(want) and len(want) == 7
    for i, (name, typ, value) in want.items():
        assert (sensors[i]["sensor"], sensors[i]["type"]) == (name, typ)
        assert sensors[i]["value"] == pytest.approx(value, rel=1e-6)
    # spot values from the recording (533 deci-degrees, 1198 centi-volts, 6322 x 10^-4 mW)
    assert sensors[100006001] == {"sensor": "Cpu temp sensor", "index": 100006001, "type": "celsius", "value": 53.3}
    assert sensors[100006002]["type"] == "voltsAC" and sensors[100006002]["value"] == 11.98
    assert sensors[100301211]["type"] == "amperes" and sensors[100301211]["value"] == pytest.approx(0.03345)
    assert sensors[100301212]["type"] == "watts" and sensors[100301212]["value"] == pytest.approx(0.0006322)
    # Ethernet2 RX power reads -1000000000 with status ok: no optical reading, not -100 W
    assert cols[4]["100302213"] == "-1000000000" and 100302213 not in sensors
    # hottest celsius sensor: Jericho0 on-die 64.8 C (DOM 25.8 C, CPU board 42.0 C)
    assert r["health"]["temp_c_max"] == 64.8
    recs = [x for x in to_records("ar1", r) if isinstance(x, Sample)]
    health = [x for x in recs if x.measurement == "device_health"]
    assert health and health[0].fields == {"temp_c_max": 64.8}
    assert sorted(x.fields["value"] for x in recs if x.measurement == "sensor" and x.tags["type"] == "celsius") \
        == [25.8, 42.0, 53.3, 64.8]


@pytest.mark.parametrize("community, loads, devices, ram, mem_pct", [
    ("linux", [13, 9], [768, 769], "1", 93.76),        # 958176 / 1021976 kB "Physical memory"
    ("panos", [2, 0], [1, 2], "1020", 47.73),          # 2920240 / 6118176 kB "Slot-1 Management Memory"
])
async def test_host_resources_agree_with_net_snmp(sim, community, loads, devices, ram, mem_pct):
    r = await collect_from_sim(sim.port, community, ["health"])
    assert r["_profile"] == "generic" and "_errors" not in r
    h = r["health"]
    got = {int(k): int(v) for k, v in column(sim.port, community, "1.3.6.1.2.1.25.3.3.1.2").items()}
    assert got == dict(zip(devices, loads))
    assert h["tables"]["hr_cpu"] == [{"hr_device": d, "cpu_pct": c} for d, c in got.items()]
    assert h["cpu_pct"] == round(sum(loads) / len(loads), 2)     # hrProcessorLoad per CPU: average
    # memory: the hrStorageRam row only, not virtual memory, swap, buffers or file systems
    types = column(sim.port, community, "1.3.6.1.2.1.25.2.3.1.2")
    size = column(sim.port, community, "1.3.6.1.2.1.25.2.3.1.5")
    used = column(sim.port, community, "1.3.6.1.2.1.25.2.3.1.6")
    assert [i for i, t in types.items() if t.endswith("1.3.6.1.2.1.25.2.1.2")] == [ram]
    assert h["mem_pct"] == round(100.0 * int(used[ram]) / int(size[ram]), 2) == mem_pct
    assert "sensors" not in h and "temp_c_max" not in h
    health = [x for x in to_records("h1", r) if isinstance(x, Sample) and x.measurement == "device_health"]
    assert health[0].fields == {"cpu_pct": h["cpu_pct"], "mem_pct": mem_pct}
