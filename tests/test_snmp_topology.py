"""Topology samples (fdb / arp / lldp / ip_address) from the SNMP driver.

Real peers only: snmpsim serving vendor recordings (tests/fixtures/snmprec_vendors) and net-snmp
snmpd on loopback; net-snmp's snmpbulkwalk is the oracle for what the tables hold.
"""
from __future__ import annotations

import asyncio
import shutil

import pytest

from drivers.base import Facts, Sample
from drivers.snmp import Options, create, topology_samples
from tests.peers_snmp import Snmpd, Snmpsim, bulkwalk
from tests.test_snmp_profiles import CISCO, FIX, HP, _combine

pytestmark = pytest.mark.skipif(not shutil.which("snmpsimd") or not shutil.which("snmpbulkwalk"),
                                reason="needs snmpsim and net-snmp tools")

TOPO = ("fdb", "arp", "lldp", "ip_address")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("topo")
    (d / "huawei.snmprec").write_text(_combine(FIX / "huawei_s5720_lldp.snmprec",
                                               FIX.parent / "snmprec" / "huawei_vrp_s5720.snmprec"))
    s = Snmpsim({"t-cisco": CISCO, "t-hp": HP, "t-huawei": d / "huawei.snmprec"}).start()
    yield s
    s.stop()


def oracle(port, community, oid):
    out = bulkwalk(port, community, oid, "-Ox")
    return {k[len(oid) + 1:]: v for k, v in out.items() if k.startswith(oid + ".")}


def _bytes(v) -> bytes:
    t, text = v
    if t == "STRING":
        return text.strip('"').encode()
    return bytes.fromhex(text.replace(" ", "").replace("\n", ""))


async def poll_with_topology(drv) -> list:
    """One poll; when the topology collection outlived poll()'s short wait, let it finish and
    take its samples from the next poll (that is how the agent gets them)."""
    recs = await drv.poll()
    if drv._topo_task is not None:
        await asyncio.wait({drv._topo_task})
        recs += await drv.poll()
    return recs


def by(recs, measurement):
    return [r for r in recs if isinstance(r, Sample) and r.measurement == measurement]


async def test_cisco_3750_fdb_arp_ip_address_samples_match_net_snmp(sim):
    drv = create("sw-c3750", Options(host="127.0.0.1", port=sim.port, community="t-cisco", timeout_s=1),
                 {"site": "north"})
    try:
        recs = await poll_with_topology(drv)
    finally:
        await drv.close()
    assert by(recs, "interface")                     # the normal poll is intact
    # ARP: one sample per ipNetToMediaPhysAddress row, same (ifIndex, ip) -> mac as net-snmp
    o = oracle(sim.port, "t-cisco", "1.3.6.1.2.1.4.22.1.2")
    want = {(k.split(".")[0], ".".join(k.split(".")[1:])): ":".join("%02x" % b for b in _bytes(v))
            for k, v in o.items()}
    arp = by(recs, "arp")
    assert len(arp) == len(want) == 85
    assert {(s.tags["ifIndex"], s.tags["ip"]): s.tags["mac"] for s in arp} == want
    assert all(s.fields == {"seen": 1} and s.tags["site"] == "north" for s in arp)
    assert set(arp[0].tags) == {"site", "ip", "mac", "ifIndex"}
    # FDB: dot1dTpFdbPort through dot1dBasePortIfIndex
    port = oracle(sim.port, "t-cisco", "1.3.6.1.2.1.17.4.3.1.2")
    base = {k: v[1] for k, v in oracle(sim.port, "t-cisco", "1.3.6.1.2.1.17.1.4.1.2").items()}
    want_fdb = {":".join("%02x" % int(x) for x in k.split(".")): base.get(v[1]) for k, v in port.items()}
    fdb = by(recs, "fdb")
    assert len(fdb) == len(want_fdb) and want_fdb
    assert {s.tags["mac"]: s.tags.get("ifIndex") for s in fdb} == want_fdb
    for s in fdb:
        assert set(s.tags) <= {"site", "mac", "ifIndex", "ifName", "vlan"}
        if "ifIndex" in s.tags:
            assert s.tags["ifName"]                   # resolved through ifName
    # own addresses: ipAddrTable
    o = oracle(sim.port, "t-cisco", "1.3.6.1.2.1.4.20.1.2")
    ips = by(recs, "ip_address")
    assert {s.tags["ip"]: s.tags["ifIndex"] for s in ips} == {k: v[1] for k, v in o.items()}
    assert all(s.tags["family"] == "ipv4" and s.tags["scope"] in ("host", "link", "global") for s in ips)
    masks = oracle(sim.port, "t-cisco", "1.3.6.1.2.1.4.20.1.3")
    import ipaddress
    for s in ips:
        m = masks.get(s.tags["ip"])
        if m is not None:
            mask = m[1] if m[0] == "IpAddress" else ".".join(str(b) for b in _bytes(m))
            assert s.tags["prefix"] == str(ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen)


async def test_huawei_lldp_samples_match_net_snmp(sim):
    drv = create("sw-hw", Options(host="127.0.0.1", port=sim.port, community="t-huawei", timeout_s=3), {})
    try:
        recs = await poll_with_topology(drv)
    finally:
        await drv.close()
    lldp = by(recs, "lldp")
    names = {k: _bytes(v).decode() for k, v in oracle(sim.port, "t-huawei", "1.0.8802.1.1.2.1.4.1.1.9").items()}
    ports = {k: _bytes(v).decode() for k, v in oracle(sim.port, "t-huawei", "1.0.8802.1.1.2.1.4.1.1.7").items()}
    chassis = {k: ":".join("%02x" % b for b in _bytes(v))
               for k, v in oracle(sim.port, "t-huawei", "1.0.8802.1.1.2.1.4.1.1.5").items()}
    assert len(lldp) == len(names) == 5
    assert sorted((s.tags["remote_name"], s.tags["remote_port"], s.tags["remote_chassis"]) for s in lldp) == \
        sorted((names[k], ports[k], chassis[k]) for k in names)
    loc = {k: _bytes(v).decode() for k, v in oracle(sim.port, "t-huawei", "1.0.8802.1.1.2.1.3.7.1.3").items()}
    assert {s.tags["local_port"] for s in lldp} == {loc[k.split(".")[1]] for k in names}
    assert all(set(s.tags) == {"ifIndex", "local_port", "remote_chassis", "remote_port", "remote_name"}
               and s.fields == {"seen": 1} for s in lldp)
    by_port = {s.tags["local_port"]: s.tags["ifIndex"] for s in lldp}
    assert "19" in by_port.values() and "4" in by_port.values()


async def test_hp_procurve_fdb_count_matches_net_snmp(sim):
    drv = create("sw-hp", Options(host="127.0.0.1", port=sim.port, community="t-hp", timeout_s=3), {})
    try:
        recs = await poll_with_topology(drv)
    finally:
        await drv.close()
    port = oracle(sim.port, "t-hp", "1.3.6.1.2.1.17.4.3.1.2")
    arp = oracle(sim.port, "t-hp", "1.3.6.1.2.1.4.22.1.2")
    assert len(by(recs, "fdb")) == len(port) > 10
    assert {s.tags["mac"] for s in by(recs, "fdb")} == \
        {":".join("%02x" % int(x) for x in k.split(".")) for k in port}
    assert len(by(recs, "arp")) == len(arp)


async def test_snmpd_own_addresses_ipv4_and_ipv6(tmp_path):
    d = Snmpd(tmp_path).start()
    drv = create("host1", Options(host="127.0.0.1", port=d.port, community=d.community, timeout_s=3), {})
    try:
        recs = await poll_with_topology(drv)
    finally:
        await drv.close()
        d.stop()
    ips = {s.tags["ip"]: s.tags for s in by(recs, "ip_address")}
    assert ips["127.0.0.1"]["family"] == "ipv4" and ips["127.0.0.1"]["scope"] == "host"
    assert ips["127.0.0.1"]["ifIndex"] == "1"
    if "::1" in ips:   # ipAddressTable lists ::1 when the host has IPv6 on lo
        assert ips["::1"]["family"] == "ipv6" and ips["::1"]["scope"] == "host"


async def test_interval_zero_disables_and_interval_throttles(sim):
    drv = create("sw-off", Options(host="127.0.0.1", port=sim.port, community="t-cisco", timeout_s=1,
                                   topology_interval_s=0), {})
    try:
        recs = await drv.poll()
        assert drv._topo_task is None and not any(by(recs, m) for m in TOPO)
        assert by(recs, "interface")
    finally:
        await drv.close()
    drv = create("sw-on", Options(host="127.0.0.1", port=sim.port, community="t-cisco", timeout_s=1), {})
    try:
        first = await poll_with_topology(drv)
        assert by(first, "arp")
        again = await drv.poll()                      # within topology_interval_s (300 s): nothing
        assert drv._topo_task is None and not any(by(again, m) for m in TOPO)
        drv._topo_at -= 301                           # the interval has passed
        third = await poll_with_topology(drv)
        assert len(by(third, "arp")) == len(by(first, "arp"))
    finally:
        await drv.close()


async def test_topology_failure_never_fails_the_poll(sim, monkeypatch):
    import drivers.snmp.tables as tables

    real = tables.collect_sections

    async def broken(session, soid, sections=None, **kw):
        if "lldp" not in (sections or []):            # the health/entity part of the poll
            return await real(session, soid, sections, **kw)
        raise RuntimeError("parser bug")

    monkeypatch.setattr(tables, "collect_sections", broken)
    drv = create("sw-bad", Options(host="127.0.0.1", port=sim.port, community="t-cisco", timeout_s=1), {})
    try:
        recs = await poll_with_topology(drv)
        assert by(recs, "interface") and any(isinstance(r, Facts) for r in recs)
        assert not any(by(recs, m) for m in TOPO)
        assert "parser bug" in drv.topology_errors["topology"]
    finally:
        await drv.close()


async def test_slow_topology_comes_with_a_later_poll(sim, monkeypatch):
    import drivers.snmp.tables as tables
    real = tables.collect_sections
    gate = asyncio.Event()

    async def slow(session, soid, sections=None, **kw):
        if "lldp" in (sections or []):
            await gate.wait()
        return await real(session, soid, sections, **kw)

    monkeypatch.setattr(tables, "collect_sections", slow)
    drv = create("sw-slow", Options(host="127.0.0.1", port=sim.port, community="t-cisco", timeout_s=0.2,
                                    retries=3), {})
    try:
        recs = await drv.poll()                       # does not wait for the topology walk
        assert by(recs, "interface") and not by(recs, "arp")
        assert drv._topo_task is not None and not drv._topo_task.done()
        gate.set()
        await asyncio.wait({drv._topo_task})
        recs = await drv.poll()
        assert len(by(recs, "arp")) == 85
    finally:
        await drv.close()


async def test_close_cancels_a_running_collection(sim, monkeypatch):
    import drivers.snmp.tables as tables

    real = tables.collect_sections

    async def forever(session, soid, sections=None, **kw):
        if "lldp" in (sections or []):
            await asyncio.Event().wait()
        return await real(session, soid, sections, **kw)

    monkeypatch.setattr(tables, "collect_sections", forever)
    drv = create("sw-x", Options(host="127.0.0.1", port=sim.port, community="t-cisco", timeout_s=0.2), {})
    await drv.poll()
    task = drv._topo_task
    assert task is not None
    await drv.close()
    assert task.done()


def test_topology_samples_shapes_and_missing_values():
    sec = {"fdb": [{"mac": "00:11:22:33:44:55", "vlan": None, "bridge_port": 7, "ifIndex": None, "ifName": None}],
           "arp": [{"ip": "10.0.0.9", "mac": "00:11:22:33:44:56", "ifIndex": 3, "family": 4}],
           "lldp": [{"local_port_num": 5, "local_port": "Gi0/5", "ifIndex": 5, "chassis_id": "aa:bb:cc:dd:ee:ff",
                     "port_id": "Te1/0/1", "sys_name": "core"}],
           "ip_addresses": [{"ip": "fe80::1", "family": 6, "ifIndex": 2, "prefix_len": 64},
                            {"ip": "2001:db8::1", "family": 6, "ifIndex": 2, "prefix_len": None}]}
    s = topology_samples("d", sec, {"site": "n", "mac": "device-tag-loses"}, time_ms=1234)
    assert [(x.measurement, x.tags, x.fields, x.time_ms) for x in s] == [
        ("fdb", {"site": "n", "mac": "00:11:22:33:44:55"}, {"seen": 1}, 1234),
        ("arp", {"site": "n", "mac": "00:11:22:33:44:56", "ip": "10.0.0.9", "ifIndex": "3"}, {"seen": 1}, 1234),
        ("lldp", {"site": "n", "mac": "device-tag-loses", "ifIndex": "5", "local_port": "Gi0/5",
                  "remote_chassis": "aa:bb:cc:dd:ee:ff", "remote_port": "Te1/0/1", "remote_name": "core"},
         {"seen": 1}, 1234),
        ("ip_address", {"site": "n", "mac": "device-tag-loses", "ip": "fe80::1", "family": "ipv6", "ifIndex": "2",
                        "prefix": "64", "scope": "link"}, {"seen": 1}, 1234),
        ("ip_address", {"site": "n", "mac": "device-tag-loses", "ip": "2001:db8::1", "family": "ipv6",
                        "ifIndex": "2", "scope": "global"}, {"seen": 1}, 1234),
    ]
    assert topology_samples("d", {}) == []


def test_options_topology_interval():
    assert Options(host="h", community="c").topology_interval_s == 300
    assert Options(host="h", community="c", topology_interval_s=0).topology_interval_s == 0
    with pytest.raises(ValueError):
        Options(host="h", community="c", topology_interval_s=-1)
