"""Device health from ENTITY-SENSOR-MIB and from a vendor profile's temperature column, served
by snmpsim, snmpbulkwalk as the oracle. The recording is hand-made (edge cases: an unavailable
sensor, voltsDC milli); ENTITY-SENSOR against a real Arista recording is in
tests/test_snmp_entity_sensor_real.py."""
from __future__ import annotations

import shutil
import textwrap

import pytest

from drivers.base import Sample
from drivers.snmp.fastv2c import FastV2cSession
from drivers.snmp.tables import collect_sections, to_records
from tests.peers_snmp import Snmpsim, bulkwalk

pytestmark = pytest.mark.skipif(not shutil.which("snmpsimd") or not shutil.which("snmpbulkwalk"),
                                reason="needs snmpsim and net-snmp tools")

# Huawei S5720 sysObjectID; ENTITY-MIB names; ENTITY-SENSOR: celsius units/precision 1,
# voltsDC milli, an unavailable sensor (operStatus 2); hwEntityStateTable cpu/mem/temp rows
# (entity 9: MPU, entity 10: a board without CPU: 0)
REC = textwrap.dedent("""\
    1.3.6.1.2.1.1.2.0|6|1.3.6.1.4.1.2011.2.23.97
    1.3.6.1.2.1.47.1.1.1.1.5.1|2|3
    1.3.6.1.2.1.47.1.1.1.1.7.1|4|S5720-28X-SI-AC
    1.3.6.1.2.1.47.1.1.1.1.7.21|4|Inlet temperature
    1.3.6.1.2.1.47.1.1.1.1.7.22|4|3.3V rail
    1.3.6.1.2.1.99.1.1.1.1.21|2|8
    1.3.6.1.2.1.99.1.1.1.1.22|2|4
    1.3.6.1.2.1.99.1.1.1.1.23|2|8
    1.3.6.1.2.1.99.1.1.1.2.21|2|9
    1.3.6.1.2.1.99.1.1.1.2.22|2|8
    1.3.6.1.2.1.99.1.1.1.2.23|2|9
    1.3.6.1.2.1.99.1.1.1.3.21|2|1
    1.3.6.1.2.1.99.1.1.1.3.22|2|0
    1.3.6.1.2.1.99.1.1.1.3.23|2|0
    1.3.6.1.2.1.99.1.1.1.4.21|2|375
    1.3.6.1.2.1.99.1.1.1.4.22|2|3310
    1.3.6.1.2.1.99.1.1.1.4.23|2|99
    1.3.6.1.2.1.99.1.1.1.5.21|2|1
    1.3.6.1.2.1.99.1.1.1.5.22|2|1
    1.3.6.1.2.1.99.1.1.1.5.23|2|2
    1.3.6.1.4.1.2011.5.25.31.1.1.1.1.5.9|2|23
    1.3.6.1.4.1.2011.5.25.31.1.1.1.1.5.10|2|0
    1.3.6.1.4.1.2011.5.25.31.1.1.1.1.7.9|2|61
    1.3.6.1.4.1.2011.5.25.31.1.1.1.1.7.10|2|0
    1.3.6.1.4.1.2011.5.25.31.1.1.1.1.11.9|2|44
    1.3.6.1.4.1.2011.5.25.31.1.1.1.1.11.10|2|41
    """)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("health")
    (d / "hw.snmprec").write_text(REC)
    s = Snmpsim({"hw": d / "hw.snmprec"}).start()
    yield s
    s.stop()


async def test_entity_sensor_and_vendor_temperatures(sim):
    s = FastV2cSession("127.0.0.1", sim.port, "hw", timeout=3)
    try:
        r = await collect_sections(s, "1.3.6.1.4.1.2011.2.23.97", ["health"])
    finally:
        await s.close()
    assert r["_profile"] == "huawei" and "_errors" not in r
    h = r["health"]
    # oracle: the rows snmpsim serves are the rows we parsed
    vals = {k.rsplit(".", 1)[1]: int(v[1]) for k, v in bulkwalk(sim.port, "hw", "1.3.6.1.2.1.99.1.1.1.4").items()}
    assert vals == {"21": 375, "22": 3310, "23": 99}
    by_name = {x["sensor"]: x for x in h["sensors"]}
    assert by_name["Inlet temperature"] == {"sensor": "Inlet temperature", "index": 21, "type": "celsius", "value": 37.5}
    assert by_name["3.3V rail"]["type"] == "voltsDC" and by_name["3.3V rail"]["value"] == pytest.approx(3.31)
    assert not any(x.get("index") == 23 for x in h["sensors"])          # operStatus unavailable
    # vendor profile temperatures (hwEntityTemperature) reach the health section too
    temps = sorted(x["value"] for x in h["sensors"] if x["type"] == "celsius")
    assert temps == [37.5, 41, 44]
    assert h["temp_c_max"] == 44
    assert h["cpu_pct"] == 23 and h["mem_pct"] == 61
    recs = [x for x in to_records("sw1", r) if isinstance(x, Sample)]
    assert sorted(x.fields["value"] for x in recs if x.measurement == "sensor" and x.tags["type"] == "celsius") == temps
