"""SNMP client and `snmp-inventory` against a real net-snmp snmpd (v2c and v3 authPriv),
with net-snmp's snmpbulkwalk as the oracle."""
from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from campus_sense import cli
from drivers.base import DeviceError
from drivers.snmp.client import SnmpSession, SnmpTarget, close_engines
from tests.peers import free_port
from tests.peers_snmp import Snmpd, oracle_interfaces


@pytest.fixture(scope="module")
def snmpd(tmp_path_factory):
    d = Snmpd(tmp_path_factory.mktemp("snmpd")).start()
    yield d
    d.stop()


def inventory(*args: str) -> tuple[int, str, str]:
    """Run `campus-sense snmp-inventory` in a subprocess (real exit status and stderr)."""
    r = subprocess.run([sys.executable, "-m", "campus_sense", "snmp-inventory", *args],
                       capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


def v3_args(d: Snmpd, **over: str) -> list[str]:
    a = {"--v3-user": d.user, "--auth-protocol": "SHA-256", "--auth-key": d.auth_key,
         "--priv-protocol": "AES", "--priv-key": d.priv_key}
    a.update(over)
    return [x for kv in a.items() for x in kv]


def assert_matches_oracle(doc: dict, oracle: dict[int, dict]) -> None:
    got = {i["ifIndex"]: i for i in doc["interfaces"]}
    assert [i["ifIndex"] for i in doc["interfaces"]] == sorted(got)          # sorted by ifIndex
    assert set(got) == set(oracle)
    for idx, o in oracle.items():
        g = got[idx]
        assert g["descr"] == o["descr"].decode(), idx
        assert g["name"] == (o["name"] if o["name"] is not None else o["descr"]).decode(), idx
        assert g["alias"] == (o["alias"].decode() if o["alias"] is not None else None), idx
        assert g["type"] == o["type"], idx
        assert g["speed_mbps"] == pytest.approx(o["speed_mbps"]), idx
        assert g["admin_up"] == o["admin_up"], idx
        assert g["oper_up"] == o["oper_up"], idx
        assert g["mac"] == o["mac"], idx


def test_inventory_json_v2c_matches_net_snmp(snmpd, capsys):
    assert cli.main(["snmp-inventory", "--target", f"127.0.0.1:{snmpd.port}",
                     "--community", snmpd.community, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) >= {"device", "interfaces"}
    dev = doc["device"]
    assert dev["sysObjectID"] == "1.3.6.1.4.1.8072.3.2.10"          # net-snmp on Linux
    assert dev["sysName"] == f"snmpd-test-{snmpd.port}"
    assert isinstance(dev["uptime_s"], int) and dev["uptime_s"] >= 0
    assert dev["sysDescr"]
    assert list(doc["interfaces"][0]) == ["ifIndex", "name", "descr", "alias", "type", "speed_mbps",
                                          "admin_up", "oper_up", "mac"]
    assert_matches_oracle(doc, oracle_interfaces(snmpd.port, snmpd.community))
    lo = next(i for i in doc["interfaces"] if i["descr"] == "lo")
    assert lo["type"] == 24 and lo["mac"] is None


def test_inventory_table_output(snmpd, capsys):
    assert cli.main(["snmp-inventory", "--target", f"127.0.0.1:{snmpd.port}",
                     "--community", snmpd.community]) == 0
    out = capsys.readouterr().out
    assert f"snmpd-test-{snmpd.port}" in out
    assert "ifIndex" in out and "lo" in out


def test_v3_authpriv_sha256_aes(snmpd):
    rc, out, err = inventory("--target", f"127.0.0.1:{snmpd.port}", *v3_args(snmpd), "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["device"]["sysName"] == f"snmpd-test-{snmpd.port}"
    assert_matches_oracle(doc, oracle_interfaces(snmpd.port, snmpd.community))


def test_v3_wrong_auth_key_is_auth_error_one_line(snmpd):
    rc, out, err = inventory("--target", f"127.0.0.1:{snmpd.port}",
                             *v3_args(snmpd, **{"--auth-key": "not-the-key-123"}), "--timeout", "1")
    assert rc != 0
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"snmp-inventory: 127.0.0.1:{snmpd.port}: auth: ")
    assert "usmStatsWrongDigests" in lines[0]


def test_v3_unknown_user_is_auth_error(snmpd, capsys):
    rc = cli.main(["snmp-inventory", "--target", f"127.0.0.1:{snmpd.port}",
                   *v3_args(snmpd, **{"--v3-user": "nosuchuser"}), "--timeout", "1"])
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert ": auth: " in err and "usmStatsUnknownUserNames" in err and "nosuchuser" in err


def test_wrong_community_times_out_with_hint(snmpd):
    rc, out, err = inventory("--target", f"127.0.0.1:{snmpd.port}", "--community", "wrong-community",
                             "--timeout", "0.3", "--retries", "0")
    assert rc != 0
    assert err.strip() == (f"snmp-inventory: 127.0.0.1:{snmpd.port}: timeout: "
                           "no response (timeout or wrong community) after 1 x 0.3s")


def test_closed_and_silent_ports_time_out(capsys):
    closed = free_port(socket.SOCK_DGRAM)
    # fast v2c path (default): connected UDP socket, the ICMP port-unreachable is reported
    assert cli.main(["snmp-inventory", "--target", f"127.0.0.1:{closed}", "--community", "x-community",
                     "--timeout", "0.2", "--retries", "0"]) == 1
    assert capsys.readouterr().err.strip() == (f"snmp-inventory: 127.0.0.1:{closed}: unreachable: 127.0.0.1:{closed}: "
                                               "port closed (ICMP port unreachable: no SNMP agent listening)")
    assert cli.main(["snmp-inventory", "--target", f"127.0.0.1:{closed}", "--community", "x-community",
                     "--timeout", "0.2", "--retries", "0", "--engine", "pysnmp"]) == 1
    assert ": timeout: " in capsys.readouterr().err
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:        # bound, never answers
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        assert cli.main(["snmp-inventory", "--target", f"127.0.0.1:{port}", "--community", "x-community",
                         "--timeout", "0.2", "--retries", "1"]) == 1
    assert "after 2 x 0.2s" in capsys.readouterr().err


def test_unresolvable_host_is_unreachable(capsys):
    assert cli.main(["snmp-inventory", "--target", "no-such-host.invalid", "--community", "c",
                     "--timeout", "0.2", "--retries", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("snmp-inventory: no-such-host.invalid:161: unreachable: ")


def test_bad_arguments_are_config_errors(capsys):
    assert cli.main(["snmp-inventory", "--target", "127.0.0.1"]) == 2           # no community
    assert "config" in capsys.readouterr().err
    assert cli.main(["snmp-inventory", "--target", "127.0.0.1", "--v3-user", "u",
                     "--auth-protocol", "SHA-256", "--auth-key", "short"]) == 2
    assert "at least 8 characters" in capsys.readouterr().err
    assert cli.main(["snmp-inventory", "--target", "127.0.0.1", "--v3-user", "u",
                     "--auth-protocol", "SHA-999", "--auth-key", "longenough"]) == 2
    assert "unknown auth protocol" in capsys.readouterr().err
    assert cli.main(["snmp-inventory", "--target", "127.0.0.1", "--community", "c", "--v3-user", "u"]) == 2
    assert "not both" in capsys.readouterr().err
    assert cli.main(["snmp-inventory", "--target", "127.0.0.1", "--community", "c", "--auth-key", "12345678"]) == 2
    assert "need(s) --v3-user" in capsys.readouterr().err
    assert cli.main(["snmp-inventory", "--target", "127.0.0.1:99999", "--community", "c"]) == 2
    assert "bad port" in capsys.readouterr().err


async def test_session_api_get_walk_and_shared_engine(snmpd):
    good = SnmpSession(SnmpTarget("127.0.0.1", snmpd.port, version="3", user=snmpd.user,
                                  auth_protocol="SHA-256", auth_key=snmpd.auth_key,
                                  priv_protocol="AES", priv_key=snmpd.priv_key, timeout=1, retries=0))
    v2 = SnmpSession(SnmpTarget("127.0.0.1", snmpd.port, community=snmpd.community, timeout=1, retries=0))
    # same user name, different key: must not disturb the good session (pysnmp keys users by name)
    bad = SnmpSession(SnmpTarget("127.0.0.1", snmpd.port, version="3", user=snmpd.user,
                                 auth_protocol="SHA-256", auth_key="wrong-key-456",
                                 priv_protocol="AES", priv_key=snmpd.priv_key, timeout=1, retries=0))
    try:
        r = await good.get(["1.3.6.1.2.1.1.5.0", "1.3.6.1.2.1.1.3.0", ".1.3.6.1.2.1.1.2.0", "1.3.6.1.2.1.1.77.0"])
        assert r["1.3.6.1.2.1.1.5.0"] == f"snmpd-test-{snmpd.port}".encode()
        assert isinstance(r["1.3.6.1.2.1.1.3.0"], int)
        assert r["1.3.6.1.2.1.1.2.0"] == "1.3.6.1.4.1.8072.3.2.10"
        assert "1.3.6.1.2.1.1.77.0" not in r                                # noSuchObject is left out
        with pytest.raises(DeviceError) as ei:
            await bad.get(["1.3.6.1.2.1.1.5.0"])
        assert ei.value.reason == "auth"
        assert (await good.get(["1.3.6.1.2.1.1.5.0"]))["1.3.6.1.2.1.1.5.0"]
        # multi-column walk, same data via v2c and v3; IpAddress values come back dotted
        cols = ["1.3.6.1.2.1.2.2.1.2", "1.3.6.1.2.1.2.2.1.3", "1.3.6.1.2.1.4.20.1.1"]
        w3 = await good.walk(cols, max_repetitions=2)
        w2 = await v2.walk(cols)
        assert w3.keys() == w2.keys() == set(cols)
        assert w3["1.3.6.1.2.1.2.2.1.2"] == w2["1.3.6.1.2.1.2.2.1.2"]
        assert w2["1.3.6.1.2.1.4.20.1.1"]["127.0.0.1"] == "127.0.0.1"
        assert all(isinstance(v, int) for v in w2["1.3.6.1.2.1.2.2.1.3"].values())
    finally:
        for s in (good, bad, v2):
            await s.close()
        await close_engines()


async def test_driver_poll_v3(snmpd):
    from drivers.base import Facts, Sample
    from drivers.snmp import Options, create

    opts = Options.model_validate({"host": "127.0.0.1", "port": snmpd.port, "version": 3, "user": snmpd.user,
                                   "auth_protocol": "sha256", "auth_key": snmpd.auth_key,
                                   "priv_protocol": "aes", "priv_key": snmpd.priv_key, "timeout_s": 1})
    drv = create("linux-host", opts, {"role": "server"})
    try:
        recs = await drv.poll()
    finally:
        await drv.close()
        await close_engines()
    facts = next(r for r in recs if isinstance(r, Facts)).facts
    assert facts["sysName"] == f"snmpd-test-{snmpd.port}" and facts["vendor"] == "Net-SNMP"
    lo = next(r for r in recs if isinstance(r, Sample) and r.measurement == "interface" and r.tags["ifName"] == "lo")
    assert lo.tags["role"] == "server" and lo.fields["counter_bits"] == 64 and lo.fields["oper_up"] is True


async def test_v3_too_low_security_level_is_auth_error(snmpd):
    # the user exists for authPriv ("rouser ... priv"); authNoPriv is refused by the agent's VACM
    s = SnmpSession(SnmpTarget("127.0.0.1", snmpd.port, version="3", user=snmpd.user, auth_protocol="SHA-256",
                               auth_key=snmpd.auth_key, timeout=1, retries=0))
    try:
        with pytest.raises(DeviceError) as ei:
            await s.get(["1.3.6.1.2.1.1.5.0"])
        assert ei.value.reason == "auth"
        assert "authorizationError" in str(ei.value) and "security level" in str(ei.value)
        s_md5 = SnmpSession(SnmpTarget("127.0.0.1", snmpd.port, version="3", user=snmpd.user, auth_protocol="MD5",
                                       auth_key=snmpd.auth_key, priv_protocol="AES", priv_key=snmpd.priv_key,
                                       timeout=1, retries=0))
        with pytest.raises(DeviceError) as ei:                         # right key, wrong digest algorithm
            await s_md5.get(["1.3.6.1.2.1.1.5.0"])
        assert ei.value.reason == "auth" and "usmStatsWrongDigests" in str(ei.value)
    finally:
        await s.close()
        await close_engines()


async def test_garbage_answers_are_protocol_errors():
    import asyncio

    class Garbage(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.t = transport

        def datagram_received(self, data, addr):
            self.t.sendto(b"\x30\x03\x02\x01" + bytes(reversed(data[:20])), addr)   # not SNMP

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Garbage, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    s = SnmpSession(SnmpTarget("127.0.0.1", port, community="some-community", timeout=0.3, retries=0))
    try:
        with pytest.raises(DeviceError) as ei:
            await s.get(["1.3.6.1.2.1.1.5.0"])
        assert ei.value.reason == "protocol"
        assert "none was a valid SNMP v2c response" in str(ei.value)
    finally:
        transport.close()
        await s.close()
        await close_engines()
