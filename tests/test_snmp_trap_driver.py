"""drivers/snmp_trap with real net-snmp senders (snmptrap / snmpinform v1, v2c, v3 authPriv) on
loopback and snmptrapd as the decoding oracle: mapping through firmware_configs/traps, INFORM
answers, USM (every auth/priv protocol, discovery, wrong keys, replays), rate limit, device
resolution, secrets from files, definition errors."""
import asyncio
import socket
import time

import pytest
from pydantic import ValidationError

import drivers.snmp_trap as T
from campus_sense.yamlconf import ConfigError
from drivers.base import Event, Sample
from drivers.snmp.fastv2c import BERError, decode_pdu, decode_trap_v1, encode_oid, hdr
from drivers.snmp_trap.defs import load_catalog
from edge_agent import config
from tests.peers_traps import Snmptrapd, capture, have_net_snmp, parse_varbinds, run

pytestmark = [pytest.mark.timeout(60), pytest.mark.skipif(not have_net_snmp(), reason="net-snmp tools missing")]

COMMUNITY = "campus-trap-7f3a"
AUTH, PRIV = "auth-pass-0451", "priv-pass-8812"
SENDER_ENGINE = "0x8000000001020304"
NS_PRIV = {"AES-192": "AES192", "AES-256": "AES256", "AES-192-C": "AES192C", "AES-256-C": "AES256C"}
LINKDOWN = ["1.3.6.1.6.3.1.1.5.3", "1.3.6.1.2.1.2.2.1.1.5", "i", "5", "1.3.6.1.2.1.2.2.1.7.5", "i", "1",
            "1.3.6.1.2.1.2.2.1.8.5", "i", "2", "1.3.6.1.2.1.31.1.1.1.1.5", "s", "GigabitEthernet0/5"]


class Running:
    def __init__(self, drv):
        self.drv, self.records, self.task = drv, [], None

    async def __aenter__(self):
        self.task = asyncio.create_task(self.drv.run(self.records.append))
        await asyncio.wait_for(self.drv.ready.wait(), 5)
        self.target = f"127.0.0.1:{self.drv.port}"
        return self

    async def __aexit__(self, *exc):
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass

    @property
    def events(self) -> list[Event]:
        return [r for r in self.records if isinstance(r, Event)]

    async def wait_events(self, n: int) -> list[Event]:
        async with asyncio.timeout(5):
            while len(self.events) < n:
                await asyncio.sleep(0.01)
        return self.events

    async def tool(self, *args: str) -> "asyncio.subprocess.Process":
        """Run a net-snmp tool (without blocking the driver's loop); returns (rc, stderr)."""
        p = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                 stderr=asyncio.subprocess.PIPE,
                                                 env={"MIBS": "", "MIBDIRS": "/dev/null", "PATH": "/usr/bin:/bin"})
        _, err = await p.communicate()
        return p.returncode, err.decode()

    def send(self, datagram: bytes, src: str = "127.0.0.1") -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((src, 0))
            s.sendto(datagram, ("127.0.0.1", self.drv.port))


def user(name="trapuser", auth="SHA-256", priv="AES", **kw):
    u = {"user": name, "auth_protocol": auth, "auth_key": AUTH}
    if priv:
        u.update(priv_protocol=priv, priv_key=PRIV)
    u.update(kw)
    return u


def make(**kw) -> T.SnmpTrapDriver:
    opts = {"listen": "127.0.0.1:0", "communities": [COMMUNITY], "v3_users": [user()]}
    opts.update(kw)
    return T.create("traps", T.Options.model_validate(opts), {"site": "north"})


def v3args(u="trapuser", auth="SHA-256", priv="AES", auth_key=AUTH, priv_key=PRIV, level="authPriv"):
    a = ["-v3", "-u", u, "-l", level, "-a", auth, "-A", auth_key]
    if priv:
        a += ["-x", NS_PRIV.get(priv, priv), "-X", priv_key]
    return a


# ---------------------------------------------------------------------------------------- codec additions

def test_fastv2c_decodes_v1_trap_and_notification_pdus():
    v1 = capture(["-v1", "-c", COMMUNITY, "{target}", "1.3.6.1.4.1.4881.1.1", "10.9.8.7", "6", "6", "4242",
                  "1.3.6.1.4.1.4881.1.1.10.2.1.1.10.0", "i", "2"])
    _, p, _ = hdr(v1, 0, 0x30)
    p += 3                                              # version INTEGER 0
    _, p, ln = hdr(v1, p, 0x04)
    ent, agent, generic, specific, stamp, vbs = decode_trap_v1(v1, p + ln)
    assert (ent, agent, generic, specific, stamp) == ("1.3.6.1.4.1.4881.1.1", "10.9.8.7", 6, 6, 4242)
    assert vbs == [(encode_oid("1.3.6.1.4.1.4881.1.1.10.2.1.1.10.0"), 2)]
    v2 = capture(["-v2c", "-c", COMMUNITY, "{target}", "77", "1.3.6.1.6.3.1.1.5.1"])
    _, p, _ = hdr(v2, 0, 0x30)
    p += 3
    _, p, ln = hdr(v2, p, 0x04)
    with pytest.raises(BERError, match="not a Response PDU"):      # the poller's default stays strict
        decode_pdu(v2, p + ln)
    tag, _, _, _, vbs = decode_pdu(v2, p + ln, accept=(0xA7,))
    assert tag == 0xA7 and vbs[0][1] == 77 and vbs[1][1] == "1.3.6.1.6.3.1.1.5.1"


# ---------------------------------------------------------------------------------------- real senders

async def test_v1_v2c_v3_traps_become_named_events():
    async with Running(make()) as r:
        t = r.target
        assert (await r.tool("snmptrap", "-v2c", "-c", COMMUNITY, t, "", *LINKDOWN))[0] == 0
        assert (await r.tool("snmptrap", "-v1", "-c", COMMUNITY, t, "1.3.6.1.4.1.9", "127.0.0.1", "2", "0", "",
                             "1.3.6.1.2.1.2.2.1.1.7", "i", "7"))[0] == 0           # generic linkDown
        assert (await r.tool("snmptrap", "-v1", "-c", COMMUNITY, t, "1.3.6.1.4.1.4881.1.1", "127.0.0.1", "6", "6",
                             "", "1.3.6.1.4.1.4881.1.1.10.2.1.1.10.0", "i", "2"))[0] == 0   # Ruijie fan stop
        assert (await r.tool("snmptrap", *v3args(), "-e", SENDER_ENGINE, t, "", *LINKDOWN))[0] == 0
        ev = await r.wait_events(4)
    down2c, down1, fan, down3 = ev
    assert (down2c.type, down2c.severity, down2c.device) == ("link_down", "warning", "127.0.0.1")
    assert down2c.data["trap"] == "linkDown" and down2c.data["version"] == "2c"
    assert {k: down2c.data[k] for k in ("ifIndex", "ifAdminStatus", "ifOperStatus", "ifName")} == \
        {"ifIndex": 5, "ifAdminStatus": "up", "ifOperStatus": "down", "ifName": "GigabitEthernet0/5"}
    assert down2c.tags == {"site": "north", "ifIndex": "5", "ifName": "GigabitEthernet0/5", "trap": "linkDown"}
    assert down1.type == "link_down" and down1.data["version"] == "1" and down1.data["ifIndex"] == 7
    assert down1.data["enterprise"] == "1.3.6.1.4.1.9" and down1.data["agent_addr"] == "127.0.0.1"
    assert (fan.type, fan.severity, fan.data["trap"], fan.data["fan"]) == ("fan_fault", "critical",
                                                                           "fanStateChange", "stop")
    assert down3.type == "link_down" and down3.data["version"] == "3" and down3.data["ifOperStatus"] == "down"
    assert down3.data["engine_id"] == SENDER_ENGINE[2:] and down3.data["user"] == "trapuser"


async def test_informs_are_answered_v2c_and_v3():
    async with Running(make()) as r:
        rc, err = await r.tool("snmpinform", "-v2c", "-c", COMMUNITY, "-r", "0", "-t", "2", r.target, "",
                               "1.3.6.1.2.1.17.0.2")
        assert rc == 0, err                           # snmpinform exits 0 only after our Response
        rc, err = await r.tool("snmpinform", *v3args(), "-r", "0", "-t", "2", r.target, "",
                               "1.3.6.1.2.1.105.0.2", "1.3.6.1.2.1.105.1.3.1.4.1", "u", "370")
        assert rc == 0, err                           # discovery (Report with our engine ID), then Response
        ev = await r.wait_events(2)
        c = r.drv.counters
        assert c["informs_total"] == 2 and c["responses_total"] == 2 and c["reports_total"] >= 1
        assert ev[0].type == "stp_topology_change" and ev[0].data["trap"] == "topologyChange"
        assert (ev[1].type, ev[1].data["consumption_w"], ev[1].data["pethMainPseGroupIndex"]) == ("poe_overload", 370, 1)
        # a wrong key: no Response (the sender times out), no event, counted
        rc, err = await r.tool("snmpinform", *v3args(auth_key="wrong-auth-key"), "-r", "0", "-t", "1", r.target, "",
                               "1.3.6.1.6.3.1.1.5.1")
        assert rc != 0
        assert len(r.events) == 2 and r.drv.counters["v3_auth_failures_total"] >= 1


async def test_every_v3_auth_and_priv_protocol():
    auths = ["MD5", "SHA", "SHA-224", "SHA-256", "SHA-384", "SHA-512"]
    privs = ["DES", "AES", "AES-192", "AES-256", "AES-192-C", "AES-256-C"]
    combos = [(a, p) for a in auths for p in privs]
    users = [user(f"u{i}", a, p) for i, (a, p) in enumerate(combos)] + [user("authonly", "SHA-512", None)]
    async with Running(make(v3_users=users)) as r:
        for i, (a, p) in enumerate(combos):
            rc, err = await r.tool("snmptrap", *v3args(f"u{i}", a, p), "-e", "0x80000000010203%02x" % i, r.target, "",
                                   "1.3.6.1.6.3.1.1.5.1")
            assert rc == 0, err
        for i, (a, p) in enumerate(combos[::5]):             # INFORMs: a spread of the combinations
            rc, err = await r.tool("snmpinform", *v3args(f"u{i * 5}", a, p), "-r", "0", "-t", "2", r.target, "",
                                   "1.3.6.1.6.3.1.1.5.2")
            assert rc == 0, f"{a}/{p}: {err}"
        rc, err = await r.tool("snmptrap", *v3args("authonly", "SHA-512", None, level="authNoPriv"), "-e",
                               SENDER_ENGINE, r.target, "", "1.3.6.1.6.3.1.1.5.1")
        assert rc == 0
        ev = await r.wait_events(len(combos) + len(combos[::5]) + 1)
    assert {e.data["user"] for e in ev} == {u["user"] for u in users}
    assert [e.type for e in ev].count("cold_start") == len(combos) + 1
    c = r.drv.counters
    assert c["v3_auth_failures_total"] == c["v3_decrypt_failures_total"] == c["malformed_total"] == 0


async def test_rejections_are_counted_and_never_become_events():
    async with Running(make(v3_users=[user(), user("pinned", engine_ids=["0x800000000a0b0c0d"])])) as r:
        t = r.target
        await r.tool("snmptrap", "-v2c", "-c", "public", t, "", *LINKDOWN)                 # wrong community
        await r.tool("snmptrap", *v3args(u="nobody"), "-e", SENDER_ENGINE, t, "", *LINKDOWN)
        await r.tool("snmptrap", *v3args(auth_key="wrong-auth-key"), "-e", SENDER_ENGINE, t, "", *LINKDOWN)
        await r.tool("snmptrap", *v3args(priv_key="wrong-priv-key"), "-e", SENDER_ENGINE, t, "", *LINKDOWN)
        await r.tool("snmptrap", *v3args(priv=None, level="authNoPriv"), "-e", SENDER_ENGINE, t, "", *LINKDOWN)
        await r.tool("snmptrap", *v3args(u="pinned"), "-e", SENDER_ENGINE, t, "", *LINKDOWN)  # engine not allowed
        r.send(b"\x30\x03\x02\x01")                                                        # garbage
        await r.tool("snmptrap", *v3args(u="pinned"), "-e", "0x800000000a0b0c0d", t, "", *LINKDOWN)  # allowed
        await r.wait_events(1)
        await asyncio.sleep(0.2)
        c = dict(r.drv.counters)
    assert len(r.events) == 1 and r.events[0].data["user"] == "pinned"
    assert c["bad_community_total"] == 1 and c["v3_unknown_user_total"] == 1 and c["v3_sec_level_total"] == 1
    assert c["v3_unknown_engine_total"] == 1 and c["malformed_total"] == 1
    # a wrong privacy key decrypts to garbage: counted as a decryption failure, not as an event
    assert c["v3_auth_failures_total"] == 1 and c["v3_decrypt_failures_total"] == 1


async def test_v3_replay_from_an_earlier_boot_is_dropped():
    drv = make()
    later = capture([*v3args(), "-e", SENDER_ENGINE, "-Z", "9,500", "{target}", "", *LINKDOWN])
    earlier_boot = capture([*v3args(), "-e", SENDER_ENGINE, "-Z", "8,100000", "{target}", "", *LINKDOWN])
    too_old = capture([*v3args(), "-e", SENDER_ENGINE, "-Z", "9,100", "{target}", "", *LINKDOWN])
    assert drv.handle(later, ("127.0.0.1", 1)) is not None
    assert drv.handle(earlier_boot, ("127.0.0.1", 1)) is None
    assert drv.handle(too_old, ("127.0.0.1", 1)) is None            # 400 s behind the newest seen
    assert drv.handle(later, ("127.0.0.1", 1)) is not None          # within the window: accepted again
    assert drv.counters["v3_not_in_time_total"] == 2
    relaxed = make(time_window=False)
    assert relaxed.handle(later, ("127.0.0.1", 1)) and relaxed.handle(earlier_boot, ("127.0.0.1", 1))


async def test_rate_limit_per_source_counts_drops_in_the_sample():
    trap = capture(["-v2c", "-c", COMMUNITY, "{target}", "", *LINKDOWN])
    drv = make(rate_limit={"per_source_per_s": 0.001, "burst": 5}, sample_interval_s=0.2)
    async with Running(drv) as r:
        for _ in range(20):
            r.send(trap, "127.0.0.1")
        for _ in range(3):
            r.send(trap, "127.0.0.2")                 # another source has its own bucket
        await r.wait_events(8)
        async with asyncio.timeout(5):
            while not [s for s in r.records if isinstance(s, Sample) and s.fields["received_total"] == 23]:
                await asyncio.sleep(0.02)
    s = [s for s in r.records if isinstance(s, Sample)][-1]
    assert s.measurement == "snmp_trap" and s.device == "traps" and s.tags == {"site": "north"}
    assert s.fields["dropped_rate_total"] == 15 and s.fields["events_total"] == 8 and s.fields["sources"] == 2
    assert sorted(e.device for e in r.events) == ["127.0.0.1"] * 5 + ["127.0.0.2"] * 3


async def test_device_resolution_by_engine_agent_address_and_source():
    drv = make(devices={"127.0.0.1": "access-sw-3", "engine:8000000001020304": "wlc-1", "10.20.0.9": "core-sw1"})
    v3 = capture([*v3args(), "-e", SENDER_ENGINE, "{target}", "", "1.3.6.1.4.1.14179.2.6.3.8",
                  "1.3.6.1.4.1.14179.2.6.2.20.0", "x", "00113344aabb", "1.3.6.1.4.1.14179.2.2.1.1.3.0", "s", "AP-Lib-2F"])
    v1 = capture(["-v1", "-c", COMMUNITY, "{target}", "1.3.6.1.2.1.17", "10.20.0.9", "6", "2", ""])
    v2 = capture(["-v2c", "-c", COMMUNITY, "{target}", "", *LINKDOWN])
    ap = drv.handle(v3, ("127.0.0.1", 1))
    assert (ap.device, ap.type, ap.data["ap_mac"], ap.data["ap_name"]) == ("wlc-1", "ap_down", "00:11:33:44:aa:bb",
                                                                         "AP-Lib-2F")
    tc = drv.handle(v1, ("127.0.0.1", 1))
    assert (tc.device, tc.type, tc.data["trap"]) == ("core-sw1", "stp_topology_change", "topologyChange")
    assert drv.handle(v2, ("127.0.0.1", 1)).device == "access-sw-3"
    assert drv.handle(v2, ("127.0.0.5", 1)).device == "127.0.0.5"     # not configured: its address


async def test_unknown_trap_kept_with_oids_and_values_as_snmptrapd_decodes_them(tmp_path):
    """snmptrapd is the oracle: the same datagrams (captured from snmptrap) go to both."""
    oracle = Snmptrapd([f"authCommunity log {COMMUNITY}",
                        f"createUser -e {SENDER_ENGINE} trapuser SHA-256 {AUTH} AES {PRIV}",
                        "authUser log trapuser"], tmp_path).start()
    try:
        unknown = capture(["-v2c", "-c", COMMUNITY, "{target}", "", "1.3.6.1.4.1.99999.0.1",
                           "1.3.6.1.4.1.99999.1.1", "c", "4294967295", "1.3.6.1.4.1.99999.1.2", "a", "10.1.2.3",
                           "1.3.6.1.4.1.99999.1.3", "o", "1.3.6.1.2.1.1", "1.3.6.1.4.1.99999.1.4", "s", "héllo wörld",
                           "1.3.6.1.4.1.99999.1.5", "x", "00ff10", "1.3.6.1.4.1.99999.1.6", "u", "42",
                           "1.3.6.1.4.1.99999.1.7", "i", "-7", "1.3.6.1.4.1.99999.1.8", "t", "12345",
                           "1.3.6.1.4.1.99999.1.9", "s", "plain text"])
        v1 = capture(["-v1", "-c", COMMUNITY, "{target}", "1.3.6.1.4.1.25506.2.26.1.3", "10.9.8.7", "6", "2", "",
                      "1.3.6.1.2.1.2.2.1.1.12", "i", "12", "1.3.6.1.4.1.25506.2.26.1.2.2.1.1.12", "x", "0a1b2c3d4e5f"])
        v3 = capture([*v3args(), "-e", SENDER_ENGINE, "{target}", "", "1.3.6.1.4.1.2011.5.25.195.40.6",
                      "1.3.6.1.4.1.2011.5.25.195.3.1.2.9", "s", "GigabitEthernet0/0/9",
                      "1.3.6.1.4.1.2011.5.25.195.3.1.10.9", "i", "31000", "1.3.6.1.4.1.2011.5.25.195.3.1.5.9", "i",
                      "30000"])
        for d in (unknown, v1, v3):
            oracle.send(d)
        lines = oracle.lines(3)
    finally:
        oracle.stop()
    drv = make()
    ev = [drv.handle(d, ("127.0.0.1", 1)) for d in (unknown, v1, v3)]
    # unknown: every varbind kept by OID, values equal to snmptrapd's decoding
    want = parse_varbinds(lines[0].split("|", 2)[2])
    assert want[1][2] == ".1.3.6.1.4.1.99999.0.1" and ev[0].type == "snmp_trap"
    assert ev[0].data["trap"] == ev[0].data["trap_oid"] == "1.3.6.1.4.1.99999.0.1"
    got = ev[0].data["varbinds"]
    assert list(got) == [o for o, _, _ in want[2:]]
    for oid, typ, text in want[2:]:
        mine = got[oid]
        if typ == "Hex-STRING":
            raw = bytes.fromhex(text.replace(" ", ""))
            assert mine in (raw.decode("utf-8", "replace"), raw.hex()), oid
        elif typ == "STRING":
            assert f'"{mine}"' == text
        elif typ == "OID":
            assert "." + mine == text
        elif typ == "Timeticks":
            assert text.startswith(f"({mine})")
        else:
            assert str(mine) == text, oid
    # v1 enterprise-specific -> RFC 3584 trap OID, the H3C port-security definition
    _, _, ent, agent, generic, specific, vbt = lines[1].split("|")
    assert (ev[1].data["enterprise"], ev[1].data["agent_addr"]) == (ent.lstrip("."), agent)
    # (hh3cSecureViolation is defined right under its enterprise: RFC 3584 enterprise.specific, no .0)
    assert ev[1].data["trap_oid"] == f"{ent.lstrip('.')}.{specific.lstrip('.')}" and generic == "6"
    assert (ev[1].type, ev[1].data["ifIndex"], ev[1].data["mac"]) == ("port_security_violation", 12, "0a:1b:2c:3d:4e:5f")
    assert [o for o, _, _ in parse_varbinds(vbt)] == ["1.3.6.1.2.1.2.2.1.1.12", "1.3.6.1.4.1.25506.2.26.1.2.2.1.1.12"]
    # v3 authPriv: both decrypt the same objects
    want3 = parse_varbinds(lines[2].split("|", 2)[2])
    assert want3[1][2] == ".1.3.6.1.4.1.2011.5.25.195.40.6"
    assert (ev[2].type, ev[2].data["trap"]) == ("poe_overload", "hwPoePdPowerOverload")
    assert f'"{ev[2].data["ifName"]}"' == want3[2][2] and str(ev[2].data["consumption_mw"]) == want3[3][2]
    assert str(ev[2].data["max_mw"]) == want3[4][2]


async def test_unknown_traps_can_be_dropped_and_severity_overridden():
    drv = make(unknown_traps="drop", severity={"linkDown": "critical"})
    assert drv.handle(capture(["-v2c", "-c", COMMUNITY, "{target}", "", "1.3.6.1.4.1.99999.0.7"]), ("127.0.0.1", 1)) is None
    assert drv.counters["unknown_total"] == 1
    ev = drv.handle(capture(["-v2c", "-c", COMMUNITY, "{target}", "", *LINKDOWN]), ("127.0.0.1", 1))
    assert ev.severity == "critical"


async def test_secrets_from_files_are_reread(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "SECRET_TTL_S", 0.0)
    cf, af, pf = tmp_path / "community", tmp_path / "auth", tmp_path / "priv"
    cf.write_text(COMMUNITY + "\n")
    af.write_text(AUTH + "\n")
    pf.write_text(PRIV + "\n")
    monkeypatch.setenv("TRAP_TEST_PRIV", PRIV)
    drv = T.create("traps", T.Options.model_validate({
        "listen": "127.0.0.1:0", "communities": [{"community_file": str(cf)}],
        "v3_users": [{"user": "trapuser", "auth_protocol": "SHA", "auth_key_file": str(af), "priv_protocol": "AES",
                      "priv_key_env": "TRAP_TEST_PRIV"}]}), {})
    old = capture(["-v2c", "-c", COMMUNITY, "{target}", "", *LINKDOWN])
    new = capture(["-v2c", "-c", "rotated-community-2", "{target}", "", *LINKDOWN])
    assert drv.handle(old, ("127.0.0.1", 1)) and not drv.handle(new, ("127.0.0.1", 1))
    cf.write_text("rotated-community-2\n")
    assert not drv.handle(old, ("127.0.0.1", 1)) and drv.handle(new, ("127.0.0.1", 1))
    v3 = capture([*v3args(auth="SHA"), "-e", SENDER_ENGINE, "{target}", "", *LINKDOWN])
    assert drv.handle(v3, ("127.0.0.1", 1)).data["user"] == "trapuser"
    af.unlink()                                          # unreadable now: rejected, logged, not crashing
    assert drv.handle(v3, ("127.0.0.1", 1)) is None


AGENT_YAML = """
agent: {id: bldg-a, site: north, building: A}
mqtt: {host: 127.0.0.1, port: 1883, username: bldg-a, password: x}
queue: {path: QUEUE}
devices:
  - id: traps
    driver: snmp_trap
    options:
      listen: "127.0.0.1:10162"
      communities: [campus-trap-7f3a]
      v3_users:
        - {user: campus, auth_protocol: SHA-256, auth_key_file: AUTHFILE, priv_protocol: AES, priv_key_file: PRIVFILE}
      devices: {"10.0.0.1": core-sw1}
"""


def test_agent_yaml_options_and_errors(tmp_path):
    (tmp_path / "a").write_text(AUTH + "\n")
    (tmp_path / "p").write_text(PRIV + "\n")
    text = (AGENT_YAML.replace("QUEUE", str(tmp_path / "q.db")).replace("AUTHFILE", str(tmp_path / "a"))
            .replace("PRIVFILE", str(tmp_path / "p")))
    p = tmp_path / "agent.yaml"
    p.write_text(text)
    c = config.load(p)
    (o,) = c.options
    assert o.v3_users[0].priv_key.reveal() == PRIV and "campus" in repr(o) and PRIV not in repr(o)
    drv = config.driver_module("snmp_trap").create("traps", o, {})
    assert not hasattr(drv, "poll") and len(drv.catalog) >= 60
    p.write_text(text.replace(str(tmp_path / "p"), str(tmp_path / "missing")))
    with pytest.raises(config.ConfigError) as e:
        config.load(p)
    assert "agent.yaml:" in str(e.value) and "priv_key_file" in str(e.value) and "does not exist" in str(e.value)
    for bad, msg in (({"communities": [], "v3_users": []}, "nothing would be accepted"),
                     ({"listen": "nowhere"}, "expected IP:PORT"),
                     ({"severity": {"noSuchTrap": "info"}}, "unknown trap names"),
                     ({"devices": {"not-an-ip": "x"}}, "neither an IP address"),
                     ({"v3_users": [user(priv="ROT13")]}, "unknown privacy protocol"),
                     ({"v3_users": [{"user": "u", "auth_protocol": "SHA"}]}, "go together")):
        with pytest.raises(ValidationError, match=msg):
            T.Options.model_validate({"listen": "127.0.0.1:0", "communities": [COMMUNITY], **bad})


def test_definition_errors_name_file_and_line(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("mib: A\ntraps:\n  fooTrap:\n    oid: 1.3.6.1.4.1.1.0.1\n    event: foo_happened\n")
    b = tmp_path / "b.yaml"
    b.write_text("mib: B\ntraps:\n  barTrap:\n    oid: 1.3.6.1.4.1.1.0.1\n    event: bar\n")
    with pytest.raises(ConfigError, match=r"b.yaml: traps.barTrap: OID 1.3.6.1.4.1.1.0.1 already defined as .*a.yaml"):
        load_catalog([tmp_path])
    b.write_text("mib: B\ntraps:\n  barTrap:\n    oid: 1.3.6.1.4.1.1.0.2\n    event: Bar-Event\n")
    with pytest.raises(ConfigError, match=r"b.yaml:5: traps.barTrap.event"):
        load_catalog([tmp_path])
    b.write_text("mib: B\ntraps:\n  barTrap:\n    oid: 1.3.6.1.4.1.1.0.2\n    event: bar\n    tags: [nope]\n")
    with pytest.raises(ConfigError, match="neither varbinds nor index"):
        load_catalog([tmp_path])
    b.unlink()
    assert set(load_catalog([a]).by_name) == {"fooTrap"}


def test_shipped_definitions_cover_the_issue():
    cat = load_catalog()
    events = {c.event for c in cat.by_oid.values()} | {e for c in cat.by_oid.values() for _, e, _ in c.cases if e}
    for want in ("link_down", "link_up", "cold_start", "warm_start", "snmp_auth_failure", "entity_change",
                 "poe_overload", "poe_fault", "stp_new_root", "stp_topology_change", "ap_down", "rogue_ap",
                 "fan_fault", "psu_fault", "port_security_violation", "loop_detected"):
        assert want in events, want
    mibs = {c.mib for c in cat.by_oid.values()}
    for want in ("IF-MIB", "SNMPv2-MIB", "ENTITY-MIB", "POWER-ETHERNET-MIB", "BRIDGE-MIB", "CISCO", "HUAWEI", "H3C",
                 "RUIJIE-V1-TRAP", "WLSX-TRAP-MIB", "RUCKUS-ZD-EVENT-MIB", "AIRESPACE-WIRELESS-MIB"):
        assert want in mibs, want
