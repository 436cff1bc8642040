"""ZTE, D-Link and Sangfor profiles.

What real recordings exist (tests/fixtures/snmprec_vendors/, see NOTICE): LibreNMS keeps only the
system group of its D-Link DGS-1210-52, ZTE ZXA10 C320 and ZTE ZXR10 5250 recordings; there is no
public recording of a Sangfor device. So profile *selection* is checked against those real
sysObjectID/sysDescr values served by snmpsim (snmpget is the oracle), and the vendor health
tables, which are "MIB only" in the YAML, are checked for what they can be checked for: that the
profile reads the MIB's columns as the MIB lays them out, against a MIB-shaped recording written
here (clearly not a device), with snmpbulkwalk on the same snmpsim as the oracle.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from drivers.base import Facts, Sample
from drivers.snmp.fastv2c import FastV2cSession
from drivers.snmp.profiles import load_profiles
from drivers.snmp.tables import collect_sections, to_records
from tests.peers_snmp import Snmpsim, _nosnmp_env, bulkwalk

FIX = Path(__file__).parent / "fixtures" / "snmprec_vendors"
DLINK = FIX / "dlink_dgs1210_system.snmprec"         # LibreNMS dlink.snmprec
ZXA10 = FIX / "zte_zxa10_c320_system.snmprec"        # LibreNMS zxa10.snmprec
ZXR10 = FIX / "zte_zxr10_5250_system.snmprec"        # LibreNMS zxr10.snmprec (no sysObjectID)

pytestmark = pytest.mark.skipif(not shutil.which("snmpsimd") or not shutil.which("snmpbulkwalk"),
                                reason="needs snmpsim and net-snmp tools")

# MIB-shaped rows, NOT a recording of a device: one row per column the D-Link and ZTE profiles
# read, laid out as AGENT-GENERAL-MIB, EQUIPMENT-MIB, DLINKSW-ENTITY-EXT-MIB and ZXR10-MIB define
# them, plus one value of the wrong type (swTemperatureCurrent.2 as a string).
DLINK_MIB = textwrap.dedent("""\
    1.3.6.1.2.1.1.2.0|6|1.3.6.1.4.1.171.10.153.7.1
    1.3.6.1.4.1.171.12.1.1.6.3.0|2|17
    1.3.6.1.4.1.171.12.1.1.9.1.4.1|2|58
    1.3.6.1.4.1.171.12.1.1.9.1.4.2|2|61
    1.3.6.1.4.1.171.12.11.1.8.1.2.1|2|41
    1.3.6.1.4.1.171.12.11.1.8.1.2.2|4|n/a
    1.3.6.1.4.1.171.14.5.1.1.1.1.4.1.1|2|38
    1.3.6.1.4.1.171.14.5.1.7.1.4.1.1|2|9
    """)
ZTE_MIB = textwrap.dedent("""\
    1.3.6.1.2.1.1.2.0|6|1.3.6.1.4.1.3902.3.100.1
    1.3.6.1.4.1.3902.3.3.1.1.12.1|2|12
    1.3.6.1.4.1.3902.3.3.1.1.12.2|2|30
    """)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("zdl")
    (d / "dm.snmprec").write_text(DLINK_MIB)
    (d / "zm.snmprec").write_text(ZTE_MIB)
    s = Snmpsim({"dlink": DLINK, "zxa10": ZXA10, "zxr10": ZXR10,
                 "dlinkmib": d / "dm.snmprec", "ztemib": d / "zm.snmprec"}).start()
    yield s
    s.stop()


def _snmpget(sim, community: str, *oids: str) -> dict[str, str]:
    """Oracle: net-snmp's snmpget -On -Oqv per OID (missing -> absent)."""
    out = {}
    for oid in oids:
        r = subprocess.run(["snmpget", "-v2c", "-c", community, "-On", "-Oqv", "-t", "2", f"127.0.0.1:{sim.port}", oid],
                           capture_output=True, text=True, env=_nosnmp_env(), timeout=30)
        v = r.stdout.strip()
        if r.returncode == 0 and v and not v.startswith("No Such"):
            out[oid] = v.strip('"')
    return out


async def _collect(sim, community: str, sections=("entity", "poe", "health")) -> tuple[dict, dict]:
    s = FastV2cSession("127.0.0.1", sim.port, community, timeout=3)
    try:
        sysg = await s.get(["1.3.6.1.2.1.1.2.0", "1.3.6.1.2.1.1.1.0"])
        r = await collect_sections(s, sysg.get("1.3.6.1.2.1.1.2.0"), list(sections),
                                   sys_descr=sysg.get("1.3.6.1.2.1.1.1.0"))
        return sysg, r
    finally:
        await s.close()


@pytest.mark.parametrize("community, profile, vendor", [
    ("dlink", "dlink", "D-Link"),          # sysObjectID .1.3.6.1.4.1.171.10.153.7.1 (DGS-1210-52)
    ("zxa10", "zte", "ZTE"),               # sysObjectID 1.3.6.1.4.1.3902.1082.1001.320.2.1 (C320)
    ("zxr10", "zte", "ZTE"),               # no sysObjectID; sysDescr "... ZXR10 5250-52TM-H ..."
])
async def test_real_system_groups_select_the_vendor_profile(sim, community, profile, vendor):
    sysg, r = await _collect(sim, community)
    want = _snmpget(sim, community, "1.3.6.1.2.1.1.2.0", "1.3.6.1.2.1.1.1.0")
    assert {k: (v if isinstance(v, str) else v.decode()) for k, v in sysg.items()} == \
        {k: v.lstrip(".") if k.endswith("2.0") else v for k, v in want.items()}
    assert (r["_profile"], r["_vendor"]) == (profile, vendor)
    # the device has none of the health/PoE/ENTITY tables: nothing invented, nothing failed
    assert "_errors" not in r and not {"health", "poe", "entity"} & set(r)
    facts = [x for x in to_records("sw", r) if isinstance(x, Facts)]
    assert facts and facts[0].facts == {"vendor": vendor}
    assert not [x for x in to_records("sw", r) if isinstance(x, Sample)]


def test_snmp_inventory_names_the_profile(sim, capsys):
    from campus_sense import cli
    assert cli.main(["snmp-inventory", "--target", f"127.0.0.1:{sim.port}", "--community", "dlink", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["profile"] == "dlink"
    assert doc["device"]["sysObjectID"] == "1.3.6.1.4.1.171.10.153.7.1"
    assert doc["device"]["sysDescr"] == "WS6-DGS-1210-52/F1 6.10.007"


async def test_dlink_mib_only_tables_read_the_mib_columns(sim):
    _, r = await _collect(sim, "dlinkmib", ["health"])
    assert r["_profile"] == "dlink"
    t = r["health"]["tables"]
    # each table agrees with net-snmp's walk of its column
    def col(oid):
        return {k[len(oid) + 1:]: v[1] for k, v in bulkwalk(sim.port, "dlinkmib", oid).items() if k.startswith(oid + ".")}
    assert t["agent_cpu"] == [{"cpu_pct": int(_snmpget(sim, "dlinkmib", "1.3.6.1.4.1.171.12.1.1.6.3.0")
                                              ["1.3.6.1.4.1.171.12.1.1.6.3.0"])}]
    assert {x["unit"]: x["mem_pct"] for x in t["agent_dram"]} == \
        {int(k): int(v) for k, v in col("1.3.6.1.4.1.171.12.1.1.9.1.4").items()}
    temps = col("1.3.6.1.4.1.171.12.11.1.8.1.2")
    assert temps == {"1": "41", "2": '"n/a"'}
    assert t["sw_temperature"] == [{"sensor": 1, "temp_c": 41}]   # the string is skipped, its row dropped ...
    assert r["_errors"] == {"sw_temperature.values": "1 value(s) could not be decoded and were skipped"}
    assert t["ext_cpu"] == [{"cpu": "1.1", "cpu_pct": 9}]
    assert t["ext_temperature"] == [{"sensor": "1.1", "temp_c": 38}]
    # ... and the rest of the device's health is still there
    h = r["health"]
    assert (h["cpu_pct"], h["mem_pct"], h["temp_c_max"]) == (17, 61, 41)
    assert sorted(x["sensor"] for x in h["sensors"]) == ["ext_temperature 1.1", "sw_temperature 1"]


async def test_zte_mib_only_cpu_table(sim):
    _, r = await _collect(sim, "ztemib", ["health"])
    assert r["_profile"] == "zte" and "_errors" not in r
    oid = "1.3.6.1.4.1.3902.3.3.1.1.12"
    o = {int(k[len(oid) + 1:]): int(v[1]) for k, v in bulkwalk(sim.port, "ztemib", oid).items()}
    assert {x["unit"]: x["cpu_pct"] for x in r["health"]["tables"]["zxr10_cpu"]} == o == {1: 12, 2: 30}
    assert r["health"]["cpu_pct"] == 30                                   # busiest unit
    assert "mem_pct" not in r["health"]                                   # left out on purpose (see zte.yaml)


def test_sangfor_has_no_vendor_tables_without_a_recording():
    ps = load_profiles()
    sf = ps["sangfor"]
    assert ps.select("1.3.6.1.4.1.35047.1.1").name == "sangfor" and sf.vendor == "Sangfor"
    assert set(sf.tables) == set(ps["generic"].tables)                   # standard MIBs only
    assert ps.select("1.3.6.1.4.1.350470").name == "generic"              # sub-identifier boundary
