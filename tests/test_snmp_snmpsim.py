"""`snmp-inventory` against real-device recordings served by snmpsim (Debian's snmpsimd),
with net-snmp's snmpbulkwalk reading the same agent as the oracle."""
from __future__ import annotations

import json
import secrets

import pytest

from campus_sense import cli
from drivers.snmp import Options, create
from drivers.base import Facts, Sample
from tests.peers_snmp import FIXTURES, Snmpsim, oracle_interfaces
from tests.test_snmp_snmpd import assert_matches_oracle

CISCO = "cisco-" + secrets.token_hex(4)
HUAWEI = "huawei-" + secrets.token_hex(4)


@pytest.fixture(scope="module")
def snmpsim():
    s = Snmpsim({CISCO: FIXTURES / "cisco_ios_c2960x.snmprec",
                 HUAWEI: FIXTURES / "huawei_vrp_s5720.snmprec"}).start()
    yield s
    s.stop()


def run_inventory(port: int, community: str, capsys) -> dict:
    assert cli.main(["snmp-inventory", "--target", f"127.0.0.1:{port}", "--community", community,
                     "--json", "--timeout", "2"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cisco_2960x_recording_matches_net_snmp(snmpsim, capsys):
    doc = run_inventory(snmpsim.port, CISCO, capsys)
    assert doc["device"] == {
        "sysObjectID": "1.3.6.1.4.1.9.1.1208",
        "sysDescr": doc["device"]["sysDescr"],
        "sysName": "<private>",
        "uptime_s": 7184757,
    }
    assert doc["device"]["sysDescr"].startswith("Cisco IOS Software, C2960X Software")
    assert_matches_oracle(doc, oracle_interfaces(snmpsim.port, CISCO))
    by_idx = {i["ifIndex"]: i for i in doc["interfaces"]}
    assert len(by_idx) == 146
    gi = by_idx[10152]
    assert gi == {"ifIndex": 10152, "name": "Gi1/0/52", "descr": "GigabitEthernet1/0/52",
                  "alias": "*** Link to acme-fr-s-001 int Gi1/0/3 ***", "type": 6, "speed_mbps": 1000,
                  "admin_up": True, "oper_up": True, "mac": "ac:7e:8a:19:bf:34"}
    assert by_idx[11101]["alias"] == " *** DECT ***"          # leading blank kept as recorded
    assert by_idx[5180]["mac"] is None                         # empty ifPhysAddress
    assert by_idx[1]["admin_up"] is False                      # Vlan1 shut down
    assert by_idx[5001]["speed_mbps"] == 2000                  # Port-channel of 2 x 1G


def test_huawei_s5720_recording_matches_net_snmp(snmpsim, capsys):
    doc = run_inventory(snmpsim.port, HUAWEI, capsys)
    assert doc["device"]["sysObjectID"] == "1.3.6.1.4.1.2011.2.23.291"
    assert doc["device"]["sysDescr"].startswith("S5720-56C-PWR-EI-AC\nHuawei Versatile Routing Platform")
    assert_matches_oracle(doc, oracle_interfaces(snmpsim.port, HUAWEI))
    by_idx = {i["ifIndex"]: i for i in doc["interfaces"]}
    assert by_idx[54]["name"] == "XGigabitEthernet0/0/1" and by_idx[54]["speed_mbps"] == 10000
    assert by_idx[1]["mac"] is None                            # all-zero MAC on InLoopBack0
    assert by_idx[61]["type"] == 135 and by_idx[61]["alias"] == "do not modify"


async def test_driver_poll_on_recording(snmpsim):
    drv = create("acc-hw-1", Options(host="127.0.0.1", port=snmpsim.port, community=HUAWEI), {"site": "north"})
    try:
        recs = await drv.poll()
    finally:
        await drv.close()
    facts = [r for r in recs if isinstance(r, Facts)]
    assert len(facts) == 1
    f = facts[0].facts
    assert f["vendor"] == "Huawei" and f["sysObjectID"] == "1.3.6.1.4.1.2011.2.23.291"
    assert f["mac"] == "48:8e:ef:71:66:e0"
    samples = [r for r in recs if isinstance(r, Sample) and r.measurement == "interface"]
    assert len(samples) == 65
    s54 = next(s for s in samples if s.tags["ifIndex"] == "54")
    assert s54.tags == {"site": "north", "ifIndex": "54", "ifName": "XGigabitEthernet0/0/1"}
    assert s54.fields["in_octets"] == 34313072 and "out_octets" not in s54.fields   # not in recording
    assert "in_bps" not in s54.fields                          # first poll: no rate yet
    system = next(r for r in recs if isinstance(r, Sample) and r.measurement == "system")
    assert system.fields["uptime_s"] == pytest.approx(281568.05)
