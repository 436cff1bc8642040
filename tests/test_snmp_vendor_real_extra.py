"""D-Link vendor tables against recordings of REAL devices (more than the system group).

snmpsim serves verbatim excerpts of LibreNMS recordings (tests/fixtures/snmprec_vendors/, see
NOTICE): a DGS-3120-24TC (AGENT-GENERAL-MIB CPU 5 s and DRAM, EQUIPMENT-MIB temperature and unit
serial) and a DES-3200-18 (CPU 5 s only). The profile is chosen by the recording's own
sysObjectID; net-snmp's snmpbulkwalk / snmpget on the same snmpsim is the oracle for every parsed
value, and spot values are read off the recordings. Where the search for ZTE, Sangfor, Ruijie,
H3C Wi-Fi and Aruba WLAN rows ended empty is in firmware_configs/snmp/README.md.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from drivers.base import Facts, Sample
from drivers.snmp.tables import to_records
from tests.peers_snmp import Snmpsim, _nosnmp_env, collect_from_sim, column

FIX = Path(__file__).parent / "fixtures" / "snmprec_vendors"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"
CPU_5S = "1.3.6.1.4.1.171.12.1.1.6.1"          # agentCPUutilizationIn5sec
CPU_5MIN = "1.3.6.1.4.1.171.12.1.1.6.3"        # agentCPUutilizationIn5min
DRAM = "1.3.6.1.4.1.171.12.1.1.9.1.4"          # agentDRAMutilization
TEMP = "1.3.6.1.4.1.171.12.11.1.8.1.2"         # swTemperatureCurrent
SERIAL = "1.3.6.1.4.1.171.12.11.1.9.4.1.17.1"  # EQUIPMENT-MIB unit 1 serial

pytestmark = pytest.mark.skipif(not shutil.which("snmpsimd") or not shutil.which("snmpbulkwalk"),
                                reason="needs snmpsim and net-snmp tools")


@pytest.fixture(scope="module")
def sim():
    s = Snmpsim({"dgs3120": FIX / "dlink_dgs3120_24tc_health.snmprec",
                 "des3200": FIX / "dlink_des3200_18_cpu.snmprec",
                 "zxr5950": FIX / "zte_zxr10_5950_system.snmprec"}).start()
    yield s
    s.stop()


def _snmpget(sim, community, oid) -> str | None:
    r = subprocess.run(["snmpget", "-v2c", "-c", community, "-On", "-Oqv", "-t", "2", f"127.0.0.1:{sim.port}", oid],
                       capture_output=True, text=True, env=_nosnmp_env(), timeout=30)
    v = r.stdout.strip()
    return v.strip('"') if r.returncode == 0 and v and not v.startswith("No Such") else None


async def test_dgs3120_health_tables_match_the_oracle(sim):
    r = await collect_from_sim(sim.port, "dgs3120")
    assert (r["_profile"], r["_vendor"]) == ("dlink", "D-Link") and "_errors" not in r
    t = r["health"]["tables"]
    # every parsed row equals net-snmp's walk of the same column, nothing missing
    assert {str(x["unit"]): x["mem_pct"] for x in t["agent_dram"]} == column(sim.port, "dgs3120", DRAM, int) == {"1": 96}
    assert {str(x["sensor"]): x["temp_c"] for x in t["sw_temperature"]} == column(sim.port, "dgs3120", TEMP, int) == {"1": 26}
    assert t["agent_cpu"] == [{"cpu_5s_pct": int(_snmpget(sim, "dgs3120", CPU_5S + ".0"))}] == [{"cpu_5s_pct": 15}]
    assert _snmpget(sim, "dgs3120", CPU_5MIN + ".0") is None        # not in the recording ...
    assert "cpu_pct" not in r["health"]                              # ... so no CPU in health (5 s is not used)
    assert (r["health"]["mem_pct"], r["health"]["temp_c_max"]) == (96, 26)
    assert r["health"]["sensors"] == [{"sensor": "sw_temperature 1", "type": "celsius", "value": 26}]
    # the DLINKSW-ENTITY-EXT tables are absent on this model: no rows, no error
    assert not {"ext_cpu", "ext_temperature"} & set(t)


async def test_dgs3120_unit_serial_and_records(sim):
    r = await collect_from_sim(sim.port, "dgs3120")
    assert r["entity"]["chassis"] == {"serial": _snmpget(sim, "dgs3120", SERIAL)} == {"serial": "R34O1B9000496"}
    recs = to_records("sw", r)
    facts = [x for x in recs if isinstance(x, Facts)]
    assert facts and facts[0].facts["serial"] == "R34O1B9000496" and facts[0].facts["vendor"] == "D-Link"
    health = [x for x in recs if isinstance(x, Sample) and x.measurement == "device_health"]
    assert [h.fields for h in health] == [{"mem_pct": 96, "temp_c_max": 26}]
    sensors = [x for x in recs if isinstance(x, Sample) and x.measurement == "sensor"]
    assert [(s.tags, s.fields) for s in sensors] == [({"sensor": "sw_temperature 1", "type": "celsius"}, {"value": 26})]


async def test_des3200_cpu_5s_only(sim):
    r = await collect_from_sim(sim.port, "des3200", ["health"])
    assert r["_profile"] == "dlink" and "_errors" not in r
    assert r["health"]["tables"] == {"agent_cpu": [{"cpu_5s_pct": int(_snmpget(sim, "des3200", CPU_5S + ".0"))}]}
    assert r["health"]["tables"]["agent_cpu"] == [{"cpu_5s_pct": 42}]
    assert not {"cpu_pct", "mem_pct", "temp_c_max"} & set(r["health"])
    assert not [x for x in to_records("sw", r) if isinstance(x, Sample)]   # nothing invented


async def test_zte_zxr10_5950_selects_zte_without_inventing_health(sim):
    """Real ZXR10 5950 sysObjectID (3902.3.600...; its sysDescr does not say ZXR10). LibreNMS's
    recording of it has no ZXR10-MIB rows, so the zxr10_cpu table stays unverified."""
    r = await collect_from_sim(sim.port, "zxr5950")
    assert _snmpget(sim, "zxr5950", SYS_OBJECT_ID) == ".1.3.6.1.4.1.3902.3.600.3.1.801"
    assert (r["_profile"], r["_vendor"]) == ("zte", "ZTE") and "_errors" not in r
    assert "health" not in r and not [x for x in to_records("sw", r) if isinstance(x, Sample)]
