"""SNMPv3 errors with a precise reason per device, and snmp-inventory's engine selection,
against a real net-snmp snmpd (users: AES authPriv, DES authPriv, SHA-256 authNoPriv). Both v3
engines (pysnmp SnmpSession and the fast USM path, drivers.snmp.fastv3) must agree."""
from __future__ import annotations

import json

import pytest

from campus_sense import cli
from drivers.base import DeviceError
from drivers.snmp.client import SnmpSession, SnmpTarget, close_engines
from drivers.snmp.fastv3 import FastV3Session
from tests.peers_snmp import Snmpd, oracle_interfaces


@pytest.fixture(scope="module")
def snmpd(tmp_path_factory):
    d = Snmpd(tmp_path_factory.mktemp("snmpd-v3"))
    d.conf.write_text(d.conf.read_text()
                      + f"createUser nopriv SHA-256 {d.auth_key}\nrouser nopriv auth\n"
                      + f"createUser desuser SHA {d.auth_key} DES {d.priv_key}\nrouser desuser priv\n")
    d.start()
    yield d
    d.stop()


ENGINES = {"pysnmp": SnmpSession, "fast": FastV3Session.from_target}


async def _get(d: Snmpd, engine: str = "pysnmp", **kw) -> DeviceError | dict:
    s = ENGINES[engine](SnmpTarget("127.0.0.1", d.port, version="3", timeout=0.5, retries=0, **kw))
    try:
        return await s.get(["1.3.6.1.2.1.1.5.0"])
    except DeviceError as e:
        return e
    finally:
        await s.close()


@pytest.mark.parametrize("engine", list(ENGINES))
async def test_v3_privacy_errors_have_precise_reasons(snmpd, engine):
    d = snmpd
    try:
        ok = await _get(d, engine, user="desuser", auth_protocol="SHA", auth_key=d.auth_key,
                        priv_protocol="DES", priv_key=d.priv_key)
        assert ok == {"1.3.6.1.2.1.1.5.0": f"snmpd-test-{d.port}".encode()}
        # privacy asked of a user that has none on the agent
        e = await _get(d, engine, user="nopriv", auth_protocol="SHA-256", auth_key=d.auth_key,
                       priv_protocol="AES", priv_key=d.priv_key)
        assert isinstance(e, DeviceError) and e.reason == "auth"
        assert "usmStatsUnsupportedSecLevels" in str(e) and "security level not supported" in str(e)
        # AES user, other privacy protocol / wrong privacy key: net-snmp drops the packet silently
        for proto, key in (("AES-256", d.priv_key), ("DES", d.priv_key), ("AES", "wrong-priv-key-1")):
            e = await _get(d, engine, user=d.user, auth_protocol="SHA-256", auth_key=d.auth_key,
                           priv_protocol=proto, priv_key=key)
            assert isinstance(e, DeviceError) and e.reason == "auth", (proto, e)
            assert "engine discovery" in str(e) and "wrong privacy key" in str(e), (proto, e)
            assert f"privacy protocol {'AES-128' if proto == 'AES' else proto} " in str(e)
            assert d.user in str(e)
        # DES user asked AES: the agent reports usmStatsDecryptionErrors
        e = await _get(d, engine, user="desuser", auth_protocol="SHA", auth_key=d.auth_key,
                       priv_protocol="AES", priv_key=d.priv_key)
        assert isinstance(e, DeviceError) and e.reason == "auth" and "usmStatsDecryptionErrors" in str(e)
    finally:
        await close_engines()


def test_inventory_v3_unsupported_privacy_one_line(snmpd, capsys):
    rc = cli.main(["snmp-inventory", "--target", f"127.0.0.1:{snmpd.port}", "--v3-user", "nopriv",
                   "--auth-protocol", "SHA-256", "--auth-key", snmpd.auth_key, "--priv-protocol", "AES",
                   "--priv-key", snmpd.priv_key, "--timeout", "0.5", "--retries", "0"])
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"snmp-inventory: 127.0.0.1:{snmpd.port}: auth: security level not supported")


@pytest.mark.parametrize("engine", ["auto", "pysnmp"])
async def test_driver_reports_wrong_privacy_per_device(snmpd, engine):
    """Through the agent's scheduler: agent_poll says reason auth with the precise message; the
    healthy device polled alongside is unaffected."""
    from drivers.snmp import Options, create
    from edge_agent.scheduler import poll_once

    good = create("good", Options.model_validate({
        "host": "127.0.0.1", "port": snmpd.port, "version": 3, "user": snmpd.user, "auth_protocol": "SHA-256",
        "auth_key": snmpd.auth_key, "priv_protocol": "AES", "priv_key": snmpd.priv_key, "timeout_s": 1,
        "topology_interval_s": 0, "engine": engine}), {})
    bad = create("bad", Options.model_validate({
        "host": "127.0.0.1", "port": snmpd.port, "version": 3, "user": snmpd.user, "auth_protocol": "SHA-256",
        "auth_key": snmpd.auth_key, "priv_protocol": "AES-256", "priv_key": snmpd.priv_key, "timeout_s": 0.5,
        "retries": 0, "topology_interval_s": 0, "engine": engine}), {})
    assert isinstance(good.session, FastV3Session) == (engine == "auto")
    got: list = []
    try:
        import asyncio
        s_bad, s_good = await asyncio.gather(poll_once("bad", "snmp", bad, 10, got.extend),
                                             poll_once("good", "snmp", good, 10, got.extend))
    finally:
        await bad.close()
        await good.close()
        await close_engines()
    assert s_good.fields["ok"] is True
    assert s_bad.fields["ok"] is False and s_bad.fields["reason"] == "auth"
    assert "AES-256" in s_bad.fields["error"] and "wrong privacy key" in s_bad.fields["error"]


def test_inventory_uses_fast_v2c_path_and_agrees_with_pysnmp(snmpd, capsys, monkeypatch):
    """snmp-inventory picks the engine like the driver (fast v2c path by default); both engines
    produce the same document and the interfaces agree with snmpbulkwalk."""
    from drivers.snmp.fastv2c import FastV2cSession

    calls = {"n": 0}
    orig = FastV2cSession.walk

    async def counting_walk(self, *a, **kw):
        calls["n"] += 1
        return await orig(self, *a, **kw)

    monkeypatch.setattr(FastV2cSession, "walk", counting_walk)
    base = ["snmp-inventory", "--target", f"127.0.0.1:{snmpd.port}", "--community", snmpd.community, "--json"]
    assert cli.main(base) == 0
    fast = json.loads(capsys.readouterr().out)
    assert calls["n"] > 0
    n = calls["n"]
    assert cli.main(base + ["--engine", "pysnmp"]) == 0
    slow = json.loads(capsys.readouterr().out)
    assert calls["n"] == n            # pysnmp run did not touch the fast path
    oracle = oracle_interfaces(snmpd.port, snmpd.community)
    assert {i["ifIndex"] for i in fast["interfaces"]} == set(oracle)
    for doc in (fast, slow):
        doc["device"].pop("uptime_s")
        doc.pop("health", None)       # CPU load, hrProcessorLoad moves between the two runs
        for r in doc.get("ip_addresses") or []:
            r.pop("created", None)
    assert fast["interfaces"] == slow["interfaces"] and fast["device"] == slow["device"]
    assert {k for k in fast if k != "health"} == {k for k in slow if k != "health"}
    for k in ("entity", "ip_addresses", "arp", "fdb", "lldp"):
        assert fast.get(k) == slow.get(k), k
