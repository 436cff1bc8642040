"""SNMP driver against the simulated agent (campus_sense.sim.snmp_agent): moving rates, link
events, reboots, agent quirks (truncated/tooBig/non-increasing GETBULK answers), options."""
from __future__ import annotations

import asyncio
import logging
import secrets
import subprocess

import pytest
from pydantic import ValidationError

from campus_sense.sim.snmp_agent import start_simulated_device
from drivers.base import DeviceError, Event, Facts, Sample
from drivers.snmp import Options, create
from drivers.snmp.client import SnmpSession, SnmpTarget, close_engines
from drivers.snmp.ifmib import IF_COLUMNS
from tests.peers_snmp import _nosnmp_env, oracle_interfaces


@pytest.fixture
def community():
    return "sim-" + secrets.token_hex(5)


@pytest.fixture
async def engine_cleanup():
    yield
    await close_engines()


def by_type(recs, cls, name=None):
    return [r for r in recs if isinstance(r, cls) and (name is None or getattr(r, "measurement", getattr(r, "type", None)) == name)]


def iface(recs, if_index: int) -> Sample:
    return next(r for r in by_type(recs, Sample, "interface") if r.tags["ifIndex"] == str(if_index))


async def test_poll_gives_moving_rates_and_link_events(community, engine_cleanup):
    dev = await start_simulated_device("access", community=community, port=0)
    drv = create("acc-1", Options(host="127.0.0.1", port=dev.port, community=community), {"room": "A-001"})
    try:
        first = await drv.poll()
        assert len(by_type(first, Sample, "interface")) == 51          # 48 x 1G + 2 x 10G + Vlan1
        assert "in_bps" not in iface(first, 1).fields
        facts = by_type(first, Facts)[0].facts
        assert facts["vendor"] == "Cisco" and facts["sysName"] == "access-sw-sim"
        assert facts["mac"].startswith("02:ca:5e:")

        await asyncio.sleep(1.2)
        dev.set_oper(3, False)
        second = await drv.poll()
        up1 = iface(second, 1).fields
        assert up1["in_bps"] > 0 and up1["out_bps"] > 0
        assert 0 < up1["util_in_pct"] < 100 and up1["speed_mbps"] == 1000
        uplink = iface(second, 49)
        assert uplink.tags["ifName"] == "Te1/1/1" and uplink.fields["speed_mbps"] == 10000
        assert uplink.fields["in_bps"] > 1e8                             # 300..900 Mb/s profile
        assert iface(second, 13).fields["in_errors_ps"] > 0              # port 13 has errors
        assert iface(second, 6).fields["oper_up"] is False               # nothing plugged in
        assert iface(second, 6).fields["in_bps"] == 0
        assert not by_type(second, Facts)                                # unchanged facts not resent
        events = by_type(second, Event)
        assert [(e.type, e.severity, e.data["ifIndex"]) for e in events] == [("link_down", "warning", 3)]
        assert events[0].tags["ifName"] == "Gi1/0/3" and events[0].tags["room"] == "A-001"

        dev.set_oper(3, True)
        await asyncio.sleep(0.3)
        third = await drv.poll()
        assert [(e.type, e.severity) for e in by_type(third, Event)] == [("link_up", "info")]
        assert iface(third, 3).fields["oper_up"] is True
    finally:
        await drv.close()
        dev.close()


async def test_reboot_resets_baseline(community, engine_cleanup):
    dev = await start_simulated_device("core", community=community, port=0)
    drv = create("core-1", Options(host="127.0.0.1", port=dev.port, community=community), {})
    try:
        await asyncio.sleep(0.3)  # let sysUpTime grow so the reboot visibly sends it backwards
        await drv.poll()
        await asyncio.sleep(0.3)
        dev.reboot()
        recs = await drv.poll()
        assert [e.type for e in by_type(recs, Event)] == ["device_restart"]
        assert all("in_bps" not in s.fields for s in by_type(recs, Sample, "interface"))
        await asyncio.sleep(0.5)
        recs = await drv.poll()
        assert not by_type(recs, Event)
        te1 = iface(recs, 1)
        assert te1.tags["ifName"] == "Te1/0/1" and te1.fields["in_bps"] > 1e8
    finally:
        await drv.close()
        dev.close()


async def test_wlc_vlan_interfaces_fall_back_to_32bit_counters(community, engine_cleanup):
    dev = await start_simulated_device("wlc", community=community, port=0)
    drv = create("wlc-1", Options(host="127.0.0.1", port=dev.port, community=community), {})
    try:
        await drv.poll()
        await asyncio.sleep(1.0)
        recs = await drv.poll()
        vl10, po1 = iface(recs, 4), iface(recs, 3)
        assert vl10.fields["counter_bits"] == 32 and po1.fields["counter_bits"] == 64
        assert vl10.fields["in_octets"] < 2 ** 32
        assert vl10.fields["in_bps"] > 1e7                               # 200 Mb/s +- 30 %
    finally:
        await drv.close()
        dev.close()


async def test_wlc_wifi_tables_reach_the_driver_and_agree_with_net_snmp(community, engine_cleanup, tmp_path, capsys):
    """The demo's controller answers AIRESPACE AP/radio/load tables: the cisco_wlc profile turns
    them into wifi_ap / wifi_radio / wifi_clients, matching what snmpbulkwalk reads."""
    from tests.peers_snmp import bulkwalk
    dev = await start_simulated_device("wlc", community=community, port=0, seed=7)
    drv = create("wlc-1", Options(host="127.0.0.1", port=dev.port, community=community), {"room": "A-000"})
    try:
        recs = await drv.poll()
        names = await asyncio.to_thread(bulkwalk, dev.port, community, "1.3.6.1.4.1.14179.2.2.1.1.3")
        status = await asyncio.to_thread(bulkwalk, dev.port, community, "1.3.6.1.4.1.14179.2.2.1.1.6")
        clients = await asyncio.to_thread(bulkwalk, dev.port, community, "1.3.6.1.4.1.14179.2.2.13.1.4")
    finally:
        await drv.close()
        dev.close()
    aps = {r.tags["ap"]: r for r in by_type(recs, Sample, "wifi_ap")}
    col = "1.3.6.1.4.1.14179.2.2.1.1."
    want_up = {names[col + "3." + o[len(col) + 2:]][1].strip('"'): v[1] == "1" for o, v in status.items()}
    assert {a: r.fields["up"] for a, r in aps.items()} == want_up and len(aps) == 6
    assert sum(not up for up in want_up.values()) == 1                    # one AP down
    assert all(r.tags["room"] == "A-000" for r in aps.values())           # device tags carried
    radios = by_type(recs, Sample, "wifi_radio")
    assert {r.tags["band"] for r in radios} == {"2.4GHz", "5GHz"} and len(radios) == 12
    per_ap = by_type(recs, Sample, "wifi_clients")
    # clients per AP and band (from the radio load table) sum to what net-snmp reads; the sim's
    # counts move with time, so compare within the second the walk and the poll both took
    assert abs(sum(r.fields["clients"] for r in per_ap) - sum(int(v[1]) for v in clients.values())) <= 12
    # the shipped rules raise wifi-ap-down for the AP that is down, after 10 minutes, and only for it
    import json
    from pathlib import Path

    from campus_sense.cli import main
    t0, lines = 1_795_392_000_000, []
    for minute in range(12):
        lines += [json.dumps({"m": r.measurement, "d": "wlc-1", "t": t0 + minute * 60_000, "f": r.fields,
                              "tags": r.tags}) for r in aps.values()]
    samples = Path(tmp_path) / "s.jsonl"
    samples.write_text("\n".join(lines) + "\n")
    rules = Path(__file__).resolve().parent.parent / "firmware_configs" / "rules" / "campus-default.yaml"
    assert await asyncio.to_thread(main, ["rules", "test", str(rules), "--samples", str(samples), "--json"]) == 0
    changes = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    fired = [(c["rule"], c["labels"].get("ap"), (c["t_ms"] - t0) // 60_000) for c in changes if c.get("change") == "firing"]
    down = next(a for a, up in want_up.items() if not up)
    assert fired == [("wifi-ap-down", down, 10)]


async def test_simulator_agrees_with_net_snmp(community):
    dev = await start_simulated_device("core", community=community, port=0)
    try:
        oracle = await asyncio.to_thread(oracle_interfaces, dev.port, community)
        assert oracle[1]["name"] == b"Te1/0/1" and oracle[1]["speed_mbps"] == 10000
        assert oracle[1]["ifSpeed"] == 4294967295
        r = await asyncio.to_thread(subprocess.run, ["snmpget", "-v2c", "-c", "wrong", "-t", "0.2", "-r", "0",
                                                     f"127.0.0.1:{dev.port}", "1.3.6.1.2.1.1.5.0"],
                                    capture_output=True, text=True, env=_nosnmp_env())
        assert r.returncode != 0 and "Timeout" in r.stderr                # wrong community: silence
    finally:
        dev.close()


async def test_walk_survives_truncated_rows_and_toobig(community, engine_cleanup):
    dev = await start_simulated_device("access", community=community, port=0)
    session = SnmpSession(SnmpTarget("127.0.0.1", dev.port, community=community, timeout=1, retries=0))
    cols = [IF_COLUMNS[c] for c in ("ifDescr", "ifType", "ifOperStatus", "ifName", "ifHighSpeed")]
    try:
        reference = await session.walk(cols)
        assert all(len(v) == 51 for v in reference.values())
        dev.max_response_varbinds = 7          # cuts rows of 5 columns in the middle
        assert await session.walk(cols, max_repetitions=10) == reference
        dev.max_response_varbinds = 1000
        dev.too_big_above = 12                 # tooBig until 5 columns x reps <= 12: reps 12 -> 6 -> 3 -> 1
        assert await session.walk(cols, max_repetitions=25) == reference
    finally:
        await session.close()
        dev.close()


async def test_walk_stops_column_on_non_increasing_oid(community, engine_cleanup, caplog):
    dev = await start_simulated_device("access", community=community, port=0)
    session = SnmpSession(SnmpTarget("127.0.0.1", dev.port, community=community, timeout=1, retries=0))
    try:
        dev.non_increasing_at = (1, 3, 6, 1, 2, 1, 2, 2, 1, 2, 10)       # ifDescr.10 -> ifDescr.10 again
        with caplog.at_level(logging.WARNING, logger="campus_sense.snmp"):
            res = await session.walk([IF_COLUMNS["ifDescr"], IF_COLUMNS["ifType"]], max_repetitions=4)
        assert sorted(int(k) for k in res[IF_COLUMNS["ifDescr"]]) == list(range(1, 11))
        assert len(res[IF_COLUMNS["ifType"]]) == 51                        # other column unaffected
        assert "non-increasing OID" in caplog.text
    finally:
        await session.close()
        dev.close()


async def test_poll_of_dead_device_raises_timeout(engine_cleanup):
    dev = await start_simulated_device("wlc", community="right-community", port=0)
    port = dev.port
    dev.close()
    # pysnmp's unconnected socket never sees the ICMP error: a silent timeout.
    drv = create("gone", Options(host="127.0.0.1", port=port, community="right-community",
                                 timeout_s=0.2, retries=0, engine="pysnmp"), {})
    with pytest.raises(DeviceError) as ei:
        await drv.poll()
    assert ei.value.reason == "timeout"
    assert "timeout or wrong community" in str(ei.value)
    await drv.close()
    # The fast v2c path uses a connected socket, so the ICMP port-unreachable is reported.
    drv = create("gone", Options(host="127.0.0.1", port=port, community="right-community",
                                 timeout_s=0.2, retries=0), {})
    with pytest.raises(DeviceError) as ei:
        await drv.poll()
    assert ei.value.reason == "unreachable", str(ei.value)
    await drv.close()


async def test_simulator_requires_community():
    with pytest.raises(ValueError):
        await start_simulated_device("core", community="", port=0)
    with pytest.raises(ValueError):
        await start_simulated_device("toaster", community="c", port=0)


# ------------------------------------------------------------------ options

@pytest.mark.parametrize("data, message", [
    ({"host": "h"}, "version 2c requires 'community'"),
    ({"host": "h", "community": "c", "user": "u"}, "only apply to version 3"),
    ({"host": "h", "version": "3"}, "version 3 requires 'user'"),
    ({"host": "h", "version": 3, "user": "u", "auth_key": "12345678"}, "go together"),
    ({"host": "h", "version": "3", "user": "u", "auth_protocol": "sha256", "auth_key": "short"}, "at least 8"),
    ({"host": "h", "version": "3", "user": "u", "priv_protocol": "AES", "priv_key": "12345678"}, "requires authentication"),
    ({"host": "h", "version": "3", "user": "u", "auth_protocol": "SHA-1024", "auth_key": "12345678"}, "unknown auth protocol"),
    ({"host": "h", "community": "c", "comunity": "typo"}, "Extra inputs are not permitted"),
    ({"host": "h", "version": "1", "community": "c"}, "Input should be '2c' or '3'"),
])
def test_options_validation(data, message):
    with pytest.raises(ValidationError) as ei:
        Options.model_validate(data)
    assert message in str(ei.value)


def test_options_normalisation_and_repr():
    o = Options.model_validate({"host": "10.0.0.1", "version": 3, "user": "mon", "auth_protocol": "sha256",
                                "auth_key": "secret-auth", "priv_protocol": "aes", "priv_key": "secret-priv"})
    assert (o.version, o.auth_protocol, o.priv_protocol) == ("3", "SHA-256", "AES-128")
    assert "secret" not in repr(o) and "secret" not in repr(o.target())
    assert Options.model_validate({"host": "h", "version": "v2c", "community": "c"}).version == "2c"


async def test_concurrent_polls_share_one_engine(engine_cleanup):
    kinds = ["core", "access", "wlc", "access"]
    comms = ["c-" + secrets.token_hex(4) for _ in kinds]
    devs = [await start_simulated_device(k, community=c, port=0, name=f"dev{i}")
            for i, (k, c) in enumerate(zip(kinds, comms))]
    drivers = [create(f"d{i}", Options(host="127.0.0.1", port=d.port, community=c, engine="pysnmp"), {})
               for i, (d, c) in enumerate(zip(devs, comms))]
    try:
        for _ in range(2):
            results = await asyncio.gather(*(drv.poll() for drv in drivers))
        for i, (kind, recs) in enumerate(zip(kinds, results)):
            assert drivers[i].system.name == f"dev{i}"
            n = len(by_type(recs, Sample, "interface"))
            assert n == {"core": 11, "access": 51, "wlc": 6}[kind]
            assert any("in_bps" in s.fields for s in by_type(recs, Sample, "interface"))
        from drivers.snmp import client
        assert len(client._ENGINES[asyncio.get_running_loop()]) == 1
    finally:
        for drv, d in zip(drivers, devs):
            await drv.close()
            d.close()


def test_options_secret_files(tmp_path):
    (tmp_path / "c").write_text("s3cret-community\n")
    (tmp_path / "a").write_text("auth-pass-phrase\n")  # campus_sense.secret: one trailing newline stripped
    (tmp_path / "p").write_text("priv-pass-phrase")
    assert Options.model_validate({"host": "h", "community_file": str(tmp_path / "c")}).community.reveal() \
        == "s3cret-community"
    o = Options.model_validate({"host": "h", "version": "3", "user": "u", "auth_protocol": "SHA",
                                "auth_key_file": str(tmp_path / "a"), "priv_protocol": "AES",
                                "priv_key_file": str(tmp_path / "p")})
    assert (o.auth_key.reveal(), o.priv_key.reveal()) == ("auth-pass-phrase", "priv-pass-phrase")
    assert (o.target().auth_key, o.target().priv_key) == ("auth-pass-phrase", "priv-pass-phrase")
    with pytest.raises(ValidationError, match="cannot read"):
        Options.model_validate({"host": "h", "community_file": str(tmp_path / "missing")})
    with pytest.raises(ValidationError, match="not both"):
        Options.model_validate({"host": "h", "community": "x", "community_file": str(tmp_path / "c")})
