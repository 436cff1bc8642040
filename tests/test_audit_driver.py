"""The audit driver end to end against real local peers: facts shape, events on new findings,
interval, config. Only 127.0.0.1."""
from __future__ import annotations

import asyncio
import shutil

import pytest

from drivers.audit import Options, create
from drivers.base import Event, Facts
from edge_agent import config as agent_config
from tests.peers import free_port
from tests.test_audit_probes import V2C_ONLY_PRIVATE, HttpPeer, start_snmpd, start_tls_server

pytestmark = pytest.mark.skipif(not shutil.which("snmpd") or not shutil.which("openssl"),
                                reason="needs net-snmp snmpd and openssl")


async def start_telnet():
    async def handle(reader, writer):
        writer.write(b"\xff\xfb\x01\xff\xfb\x03\r\nUser Access Verification\r\n\r\nUsername: ")
        await writer.drain()
        await reader.read(100)
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    return srv, srv.sockets[0].getsockname()[1]


def facts_of(recs):
    f = [r for r in recs if isinstance(r, Facts)]
    assert len(f) == 1
    return f[0]


def events_of(recs, type_="insecure_setting"):
    return [r for r in recs if isinstance(r, Event) and r.type == type_]


async def test_insecure_device_all_findings(tmp_path):
    # + a net-snmp template user "initial" left enabled without authentication (SNMPv3 noAuthNoPriv)
    d = start_snmpd(tmp_path / "snmpd", V2C_ONLY_PRIVATE + "createUser initial\nrouser -s usm initial noauth\n")
    tel, tel_port = await start_telnet()
    http = HttpPeer()
    tls, tls_port, _ = await start_tls_server(tmp_path)
    try:
        drv = create("sw1-audit", Options(host="127.0.0.1", snmp_port=d.port, telnet_port=tel_port,
                                          http_port=http.port, https_port=tls_port, community=d.community,
                                          timeout_s=1.0, retries=0), {"room": "A-001"})
        recs = await drv.poll()
        f = facts_of(recs)
        assert f.device == "sw1-audit"
        ins = f.facts["insecure"]
        offset = ins.pop("clock_offset_s")
        assert ins == {"snmp_communities": ["public", "private"], "snmp_versions": ["1", "2c"],
                       "snmpv3_noauth_users": ["initial"], "default_credentials": ["initial"],
                       "telnet_open": True, "http_mgmt": True, "https_mgmt": True,
                       "http_redirects_to_https": False}
        assert isinstance(offset, float) and abs(offset) < 5       # snmpd runs on this host's clock
        a = f.facts["audit"]
        assert a["snmp"] == {"public": ["1", "2c"], "private": ["2c"]}
        assert a["snmpv3"]["initial"] == "accepted" and a["snmpv3"]["public"].startswith("agent report")
        assert a["telnet"]["banner"].startswith("User Access Verification")
        assert a["http"]["status"] == 200 and a["https"]["tls_version"] in ("TLSv1.2", "TLSv1.3")
        assert a["clock"]["timezone_known"] is True and "errors" not in a
        assert f.facts["audit_time"].endswith("Z") and f.facts["audit_time"][:2] == "20"
        ev = events_of(recs)
        assert sorted(e.data["setting"] for e in ev) == ["default_credentials", "http_mgmt", "snmp_community",
                                                         "snmp_community", "telnet_open"]
        cred = next(e for e in ev if e.data["setting"] == "default_credentials")
        assert cred.data == {"host": "127.0.0.1", "setting": "default_credentials", "protocol": "snmpv3",
                             "user": "initial", "security_level": "noAuthNoPriv", "port": d.port}
        assert all(e.severity == "warning" and e.tags == {"room": "A-001"} and e.device == "sw1-audit" for e in ev)
        pub = next(e for e in ev if e.data.get("community") == "public")
        assert pub.data == {"host": "127.0.0.1", "setting": "snmp_community", "community": "public",
                            "versions": ["1", "2c"], "port": d.port}
        # within the interval: nothing; next audit with the same findings: facts, no events
        assert await drv.poll() == []
        drv._last_at -= 3601
        recs = await drv.poll()
        assert facts_of(recs).facts["insecure"]["telnet_open"] is True and events_of(recs) == []
        # telnet closed since: a cleared event, no new warnings
        tel.close()
        await tel.wait_closed()
        drv._last_at -= 3601
        recs = await drv.poll()
        assert facts_of(recs).facts["insecure"]["telnet_open"] is False and events_of(recs) == []
        cleared = events_of(recs, "insecure_setting_cleared")
        assert [(e.data["setting"], e.severity) for e in cleared] == [("telnet_open", "info")]
        await drv.close()
    finally:
        d.stop()
        http.stop()
        tel.close()
        tls.close()
        await tls.wait_closed()


async def test_hardened_device_no_findings(tmp_path):
    d = start_snmpd(tmp_path / "snmpd")                        # random community only
    http = HttpPeer("https://127.0.0.1/")
    tls, tls_port, _ = await start_tls_server(tmp_path)
    try:
        drv = create("sw2-audit", {"host": "127.0.0.1", "snmp_port": d.port, "telnet_port": free_port(),
                                   "http_port": http.port, "https_port": tls_port, "timeout_s": 0.5,
                                   "retries": 0, "report_as": "sw2"}, {})
        recs = await drv.poll()
        f = facts_of(recs)
        assert f.device == "sw2"                                # merged into the switch's facts
        assert f.facts["insecure"] == {"snmp_communities": [], "snmp_versions": [], "snmpv3_noauth_users": [],
                                       "default_credentials": [], "telnet_open": False,
                                       "http_mgmt": True, "https_mgmt": True, "http_redirects_to_https": True,
                                       "clock_offset_s": None}
        assert f.facts["audit"]["clock"] == {"skipped": "no 'community' configured"}
        assert [r for r in recs if isinstance(r, Event)] == []
    finally:
        d.stop()
        http.stop()
        tls.close()
        await tls.wait_closed()


async def test_nothing_listening_and_checks_switched_off():
    drv = create("x", {"host": "127.0.0.1", "snmp_port": free_port(2), "telnet_port": free_port(),
                       "http_port": free_port(), "https_port": free_port(), "timeout_s": 0.3, "retries": 0,
                       "community": "whatever", "checks": {"snmp_default_communities": False}}, {})
    recs = await drv.poll()
    f = facts_of(recs)
    # no SNMP engine answered the v3 probes either: default_credentials is not reported (not "rejected")
    assert f.facts["insecure"] == {"telnet_open": False, "http_mgmt": False, "https_mgmt": False,
                                   "http_redirects_to_https": False, "clock_offset_s": None}
    assert f.facts["audit"]["clock"]["error"]
    assert [r for r in recs if isinstance(r, Event)] == []
    drv = create("y", {"host": "127.0.0.1", "checks": {"snmp_default_communities": False, "telnet": False,
                                                       "http": False, "clock": False,
                                                       "snmpv3_default_users": False}}, {})
    f = facts_of(await drv.poll())
    assert f.facts["insecure"] == {}


async def test_clock_offset_beyond_policy_is_a_finding(tmp_path, monkeypatch):
    """The device clock 120 s ahead (hrSystemDate from a real snmpd, our clock moved back)."""
    import drivers.audit as audit
    import time as _time
    d = start_snmpd(tmp_path)
    real = _time.time
    try:
        drv = create("c", {"host": "127.0.0.1", "snmp_port": d.port, "community": d.community, "timeout_s": 2,
                           "checks": {"snmp_default_communities": False, "telnet": False, "http": False}}, {})
        monkeypatch.setattr(audit.time, "time", lambda: real() - 120)
        recs = await drv.poll()
    finally:
        d.stop()
    off = facts_of(recs).facts["insecure"]["clock_offset_s"]
    assert 115 < off < 125
    ev = events_of(recs)
    assert [e.data["setting"] for e in ev] == ["clock_offset"] and ev[0].data["max_offset_s"] == 5.0


def test_options_validation(tmp_path):
    o = Options(host="h")
    assert o.interval_s == 3600 and o.communities == ["public", "private"] and o.checks.clock
    assert (o.snmp_port, o.telnet_port, o.http_port, o.https_port) == (161, 23, 80, 443)
    (tmp_path / "c").write_text("s3cret\n")
    assert Options(host="h", community_file=str(tmp_path / "c")).community.reveal() == "s3cret"
    assert "s3cret" not in repr(Options(host="h", community="s3cret"))
    for bad, msg in (({"host": "h", "checks": {"telnett": True}}, "Extra inputs"),
                     ({"host": "h", "community": "a", "community_file": str(tmp_path / "c")}, "not both"),
                     ({"host": "h", "community_file": str(tmp_path / "nope")}, "cannot read"),
                     ({"host": "h", "communities": []}, "at least 1"),
                     ({"host": "h", "timeout_s": 0}, "greater than 0")):
        with pytest.raises(ValueError, match=msg):
            Options.model_validate(bad)


def test_registered_in_agent_config(tmp_path):
    assert agent_config.DRIVERS["audit"] == "drivers.audit"
    p = tmp_path / "agent.yaml"
    p.write_text(f"""\
agent: {{id: bldg-a, site: north, building: A}}
mqtt: {{host: 127.0.0.1, port: 1883, username: bldg-a, password: s3cret}}
queue: {{path: {tmp_path / 'q.db'}, max_messages: 1000}}
devices:
  - id: sw1-audit
    driver: audit
    interval_s: 300
    options: {{host: 127.0.0.1, report_as: sw1, checks: {{telnet: false}}}}
""")
    c = agent_config.load(p)
    assert c.options[0].checks.telnet is False and c.options[0].report_as == "sw1"
    p.write_text(p.read_text().replace("telnet: false", "telnet: nope"))
    with pytest.raises(Exception, match="telnet"):
        agent_config.load(p)


async def test_facts_feed_the_compliance_hardening_checks(tmp_path):
    """The facts shape is what collector.compliance reads (read-only use of the collector code)."""
    from collector.campus.model import CampusModel
    from collector.compliance.firmware import evaluate_hardening
    from collector.compliance.observations import Observations
    d = start_snmpd(tmp_path / "snmpd", V2C_ONLY_PRIVATE + "createUser initial\nrouser -s usm initial noauth\n")
    tel, tel_port = await start_telnet()
    http = HttpPeer()
    try:
        drv = create("a", {"host": "127.0.0.1", "snmp_port": d.port, "telnet_port": tel_port,
                           "http_port": http.port, "https_port": free_port(), "community": d.community,
                           "timeout_s": 1, "retries": 0, "report_as": "a-acc1"}, {})
        f = facts_of(await drv.poll())
    finally:
        d.stop()
        http.stop()
        tel.close()
    obs = Observations.from_dict({"devices": [{"id": f.device, "facts": f.facts, "facts_time": f.time_ms}]})
    res = {r.check: r for r in evaluate_hardening(CampusModel(), obs)}
    assert res["snmp_community"].status == "fail" and "public" in res["snmp_community"].message
    assert res["telnet"].status == "fail"
    assert res["http_mgmt"].status == "fail" and "no HTTPS either" in res["http_mgmt"].message
    assert res["clock_drift"].status == "pass"
    assert res["default_credentials"].status == "fail" and "user initial" in res["default_credentials"].message
