"""drivers.snmp.fastv3 (own USM + BER codec) against real peers: net-snmp snmpd with a user for
every auth x priv combination it supports, snmpsimd (pysnmp's agent) serving a real Cisco recording
with v3 contexts; net-snmp's snmpbulkwalk/snmpget -v3 as the oracle and the pysnmp SnmpSession as
a second opinion. Error reasons, garbage from a fake UDP peer, engine reboot, per-VLAN contexts."""
from __future__ import annotations

import asyncio
import itertools
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from drivers.base import DeviceError
from drivers.snmp.client import SnmpSession, SnmpTarget, close_engines
from drivers.snmp.fastv2c import _enc_int, _tlv, encode_oid, encode_pdu, encode_request, hdr
from drivers.snmp.fastv3 import FastV3Session
from tests.peers_snmp import Snmpd, Snmpsim, _nosnmp_env

AUTHS = ["MD5", "SHA", "SHA-224", "SHA-256", "SHA-384", "SHA-512"]
PRIVS = [None, "DES", "AES", "AES-192", "AES-256", "AES-192-C", "AES-256-C"]
COLS = ["1.3.6.1.2.1.2.2.1.2", "1.3.6.1.2.1.2.2.1.3", "1.3.6.1.2.1.2.2.1.4", "1.3.6.1.2.1.2.2.1.6",
        "1.3.6.1.2.1.31.1.1.1.1"]          # ifDescr ifType ifMtu ifPhysAddress ifName (no moving counters)
SCALARS = ["1.3.6.1.2.1.1.2.0", "1.3.6.1.2.1.1.4.0", "1.3.6.1.2.1.1.5.0", "1.3.6.1.2.1.1.6.0"]
VENDORS = Path(__file__).parent / "fixtures" / "snmprec_vendors"


def _user(auth: str | None, priv: str | None) -> str:
    return f"u-{auth or 'none'}-{priv or 'none'}".lower()


def _combos():
    return [(a, p) for a in AUTHS for p in PRIVS]


def _snmpd_users(d: Snmpd) -> str:
    lines = [f"createUser {_user(None, None)}\nrouser {_user(None, None)} noauth\n"]
    for a, p in _combos():
        u = _user(a, p)
        lines.append(f"createUser {u} {a} {d.auth_key}" + (f" {p} {d.priv_key}" if p else "")
                     + f"\nrouser {u} {'priv' if p else 'auth'}\n")
    return "".join(lines)


@pytest.fixture(scope="module")
def snmpd(tmp_path_factory):
    d = Snmpd(tmp_path_factory.mktemp("snmpd-fastv3"))
    d.conf.write_text(d.conf.read_text() + _snmpd_users(d))
    d.start()
    yield d
    d.stop()


# ------------------------------------------------------------------------------- oracle

def _cli_args(user: str, auth: str | None, auth_key: str | None, priv: str | None, priv_key: str | None,
              context: str | None = None) -> list[str]:
    level = "authPriv" if priv else ("authNoPriv" if auth else "noAuthNoPriv")
    args = ["-v3", "-l", level, "-u", user]
    if auth:
        args += ["-a", auth, "-A", auth_key]
    if priv:
        args += ["-x", priv, "-X", priv_key]
    if context:
        args += ["-n", context]
    return args


_LINE = re.compile(r"^\.?([0-9.]+) = (?:([A-Za-z0-9-]+): ?)?(.*)$")


def _value(typ: str, text: str):
    if typ == "Hex-STRING":
        return bytes.fromhex(re.sub(r"\s+", "", text))
    if typ == "STRING" or text == '""':
        return text.strip('"').encode()
    if typ == "OID":
        return text.lstrip(".")
    if typ == "IpAddress":
        return text
    return int(text.split()[0])


def oracle(tool: str, port: int, args: list[str], *oids: str) -> dict[str, object]:
    """net-snmp ``snmpbulkwalk``/``snmpget`` -v3 -On -Ox -Oe -Ot -> {numeric oid: python value}."""
    r = subprocess.run([tool, *args, "-On", "-Ox", "-Oe", "-Ot", "-t", "2", "-r", "1", f"127.0.0.1:{port}", *oids],
                       capture_output=True, text=True, env=_nosnmp_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    out: dict[str, list] = {}
    last = None
    for line in r.stdout.splitlines():
        m = _LINE.match(line)
        if m and not m.group(3).startswith(("No more variables", "No Such")):
            last = m.group(1)
            out[last] = [m.group(2) or "", m.group(3)]
        elif last is not None and not m:
            out[last][1] += " " + line
    return {k: _value(t, v) for k, (t, v) in out.items()}


def oracle_walk(port: int, args: list[str], cols: list[str]) -> dict[str, dict[str, object]]:
    res = {}
    for c in cols:
        res[c] = {k[len(c) + 1:]: v for k, v in oracle("snmpbulkwalk", port, args, c).items()
                  if k.startswith(c + ".")}
    return res


# ------------------------------------------------------------------------------- every combination

async def _fast_and_pysnmp(port: int, user: str, auth, auth_key, priv, priv_key, context=None, cols=COLS):
    kw = dict(user=user, auth_protocol=auth, auth_key=auth_key, priv_protocol=priv, priv_key=priv_key,
              context=context, timeout=2.0, retries=1)
    fast = FastV3Session("127.0.0.1", port, **kw)
    slow = SnmpSession(SnmpTarget("127.0.0.1", port, version="3", **kw))
    try:
        got = [(await s.get(SCALARS), await s.walk(cols, max_repetitions=10)) for s in (fast, slow)]
    finally:
        await fast.close()
        await slow.close()
        await close_engines()
    return fast, got[0], got[1]


@pytest.mark.parametrize("auth,priv", [(None, None)] + _combos(),
                         ids=lambda v: v or "none")
async def test_every_auth_priv_combination_matches_net_snmp_and_pysnmp(snmpd, auth, priv):
    d = snmpd
    user = _user(auth, priv)
    fast, (g, w), (pg, pw) = await _fast_and_pysnmp(d.port, user, auth, d.auth_key if auth else None, priv,
                                                     d.priv_key if priv else None)
    args = _cli_args(user, auth, d.auth_key, priv, d.priv_key)
    assert g == oracle("snmpget", d.port, args, *SCALARS)
    assert g["1.3.6.1.2.1.1.5.0"] == f"snmpd-test-{d.port}".encode()
    assert w == oracle_walk(d.port, args, COLS)
    assert len(w[COLS[0]]) >= 1 and w[COLS[0]].keys() == w[COLS[1]].keys()
    assert (g, w) == (pg, pw)                       # same values and types as the pysnmp path
    assert fast.discoveries == 1 and fast.malformed == fast.auth_failures == fast.decrypt_failures == 0


async def test_blumenthal_and_reeder_key_extensions_are_not_interchangeable(snmpd):
    """MD5 keys (16 bytes) must be extended for AES-256: net-snmp's AES-256 (Blumenthal) and
    AES-256-C (Reeder/Cisco) give different keys, so the wrong one is dropped by the agent."""
    d = snmpd
    for user_priv, sent in (("AES-256", "AES-256-C"), ("AES-256-C", "AES-256"), ("AES-192", "AES-192-C")):
        s = FastV3Session("127.0.0.1", d.port, _user("MD5", user_priv), "MD5", d.auth_key, sent, d.priv_key,
                          timeout=0.5, retries=0)
        with pytest.raises(DeviceError) as ei:
            await s.get(["1.3.6.1.2.1.1.5.0"])
        await s.close()
        assert ei.value.reason == "auth" and f"privacy protocol {sent} not the one" in str(ei.value)


# ------------------------------------------------------------------------------- errors

async def _fast_get(port: int, **kw):
    s = FastV3Session("127.0.0.1", port, timeout=0.5, retries=0, **kw)
    try:
        return await s.get(["1.3.6.1.2.1.1.5.0"])
    except DeviceError as e:
        return e
    finally:
        await s.close()


async def test_usm_reports_give_auth_reason_and_pysnmp_message(snmpd):
    d = snmpd
    e = await _fast_get(d.port, user="nobody-here", auth_protocol="SHA-256", auth_key=d.auth_key)
    assert e.reason == "auth" and str(e) == "unknown user name 'nobody-here' (agent reported usmStatsUnknownUserNames)"
    e = await _fast_get(d.port, user=_user("SHA-256", None), auth_protocol="SHA-256", auth_key="wrong-auth-key")
    assert e.reason == "auth" and "wrong authentication key or protocol" in str(e) and "usmStatsWrongDigests" in str(e)
    e = await _fast_get(d.port, user=_user("SHA-256", None), auth_protocol="SHA-512", auth_key=d.auth_key)
    assert e.reason == "auth" and "usmStatsWrongDigests" in str(e)
    e = await _fast_get(d.port, user=_user("SHA-256", None), auth_protocol="SHA-256", auth_key=d.auth_key,
                        priv_protocol="AES", priv_key=d.priv_key)
    assert e.reason == "auth" and "security level not supported" in str(e) and "usmStatsUnsupportedSecLevels" in str(e)
    e = await _fast_get(d.port, user=_user("SHA", "DES"), auth_protocol="SHA", auth_key=d.auth_key,
                        priv_protocol="AES", priv_key=d.priv_key)
    assert e.reason == "auth" and "usmStatsDecryptionErrors" in str(e)
    for proto, key in (("AES-256", d.priv_key), ("DES", d.priv_key), ("AES", "wrong-priv-key-1")):
        e = await _fast_get(d.port, user=_user("SHA-256", "AES"), auth_protocol="SHA-256", auth_key=d.auth_key,
                            priv_protocol=proto, priv_key=key)
        assert e.reason == "auth" and "engine discovery" in str(e) and "wrong privacy key" in str(e), (proto, e)
        assert f"privacy protocol {'AES-128' if proto == 'AES' else proto} " in str(e)


def _silent_udp(port: int) -> socket.socket:
    """Something bound on the port that never answers (no ICMP port unreachable either)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    return s


@pytest.mark.parametrize("engine", ["fast", "pysnmp"])
@pytest.mark.parametrize("same_engine_id", [True, False], ids=["reboot", "new-engine-id"])
async def test_wrong_privacy_key_after_successful_polls_vs_dead_device(tmp_path, engine, same_engine_id):
    """The agent's privacy key changes under a running session (device reconfigured and rebooted,
    with or without keeping its engine ID): it still answers discovery but drops the encrypted
    requests -> auth with the precise message, on both engines. A dead device -> timeout."""
    d = Snmpd(tmp_path)
    d.start()
    t = SnmpTarget("127.0.0.1", d.port, version="3", user=d.user, auth_protocol="SHA-256", auth_key=d.auth_key,
                   priv_protocol="AES", priv_key=d.priv_key, timeout=0.5, retries=0)
    s = FastV3Session.from_target(t) if engine == "fast" else SnmpSession(t)
    try:
        assert (await s.get(["1.3.6.1.2.1.1.5.0"]))["1.3.6.1.2.1.1.5.0"] == f"snmpd-test-{d.port}".encode()
        d.stop()
        if same_engine_id:
            _keep_engine_state(d)
        d.conf.write_text(d.conf.read_text().replace(d.priv_key, "p-changed-on-the-device"))
        d.start()
        with pytest.raises(DeviceError) as ei:
            await s.get(["1.3.6.1.2.1.1.5.0"])
        assert ei.value.reason == "auth"
        assert str(ei.value) == (f"agent answered SNMPv3 engine discovery but dropped the get request: wrong privacy "
                                 f"key, or privacy protocol AES-128 not the one configured for user {d.user!r} on "
                                 "the agent")
        d.stop()
        silent = _silent_udp(d.port)
        try:
            with pytest.raises(DeviceError) as ei:
                await s.get(["1.3.6.1.2.1.1.5.0"])
            assert ei.value.reason == "timeout" and str(ei.value).startswith("no response (timeout) after 1 x 0.5s")
            if engine == "fast":
                assert str(ei.value) == "no response (timeout) after 1 x 0.5s"
                fresh = FastV3Session.from_target(t)
                with pytest.raises(DeviceError) as ei:
                    await fresh.get(["1.3.6.1.2.1.1.5.0"])
                await fresh.close()
                assert ei.value.reason == "timeout" and "no answer to SNMPv3 engine discovery" in str(ei.value)
        finally:
            silent.close()
    finally:
        await s.close()
        await close_engines()
        d.stop()


@pytest.mark.parametrize("engine", ["fast", "pysnmp"])
async def test_privacy_key_changed_on_a_running_device_is_auth_not_timeout(tmp_path, engine):
    """No reboot, no report at all: the device's privacy key changes while it keeps its engine ID,
    boots and clock (two snmpd with the same engineID behind a relay that switches from the old
    configuration to the new one). The agent silently drops what it cannot decrypt but still
    answers discovery -> auth, on both engines (pysnmp alone would only see a timeout)."""
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    a, b = Snmpd(tmp_path / "old"), Snmpd(tmp_path / "new")
    a.conf.write_text(a.conf.read_text() + "engineID campus-sense-test-engine\n")
    b.community = a.community
    b.conf.write_text(a.conf.read_text().replace(f"udp:127.0.0.1:{a.port}", f"udp:127.0.0.1:{b.port}")
                      .replace(a.priv_key, "p-changed-on-the-device"))
    a.start()
    b.start()
    tr, relay, port = await _relay(a.port, lambda m: [])
    t = SnmpTarget("127.0.0.1", port, version="3", user=a.user, auth_protocol="SHA-256", auth_key=a.auth_key,
                   priv_protocol="AES", priv_key=a.priv_key, timeout=0.5, retries=0)
    s = FastV3Session.from_target(t) if engine == "fast" else SnmpSession(t)
    try:
        assert (await s.get(["1.3.6.1.2.1.1.5.0"]))["1.3.6.1.2.1.1.5.0"] == f"snmpd-test-{a.port}".encode()
        relay.upstream, relay.back = b.port, None        # the device now has the new privacy key
        with pytest.raises(DeviceError) as ei:
            await s.get(["1.3.6.1.2.1.1.5.0"])
        assert ei.value.reason == "auth", ei.value
        assert "engine discovery" in str(ei.value) and "wrong privacy key" in str(ei.value)
        if engine == "fast":
            assert s.resyncs == s.auth_failures == s.malformed == 0 and s.discoveries == 1
    finally:
        await s.close()
        await close_engines()
        tr.close()
        a.stop()
        b.stop()


def _keep_engine_state(d: Snmpd) -> None:
    """Tests/peers_snmp runs snmpd with -C (its persistent store is written, not read back): carry
    engineBoots/oldEngineID into the config so a restart behaves like a real agent's reboot."""
    state = [ln for ln in (d.dir / "persist" / "snmpd.conf").read_text().splitlines()
             if ln.startswith(("engineBoots ", "oldEngineID "))]
    base = re.sub(r"(?m)^(engineBoots|oldEngineID) .*\n", "", d.conf.read_text())
    d.conf.write_text(base + "\n".join(state) + "\n")


async def test_engine_reboot_is_followed(tmp_path):
    """snmpd restarted with its persistent store: engineBoots goes up, engineTime restarts; the
    session resynchronises once (usmStatsNotInTimeWindows report) and the poll succeeds."""
    d = Snmpd(tmp_path)
    d.start()
    s = FastV3Session("127.0.0.1", d.port, d.user, "SHA-256", d.auth_key, "AES", d.priv_key, timeout=1, retries=0)
    try:
        await s.get(["1.3.6.1.2.1.1.5.0"])
        engine, boots = s.engine_id, s.boots
        d.stop()
        _keep_engine_state(d)
        d.start()
        got = await s.get(["1.3.6.1.2.1.1.5.0"])
        assert got == {"1.3.6.1.2.1.1.5.0": f"snmpd-test-{d.port}".encode()}
        assert s.engine_id == engine and s.boots == boots + 1 and s.resyncs == 1
        # engine ID changes too (store lost): unknownEngineID report -> rediscovered
        d.stop()
        d.conf.write_text(re.sub(r"(?m)^(engineBoots|oldEngineID) .*\n", "", d.conf.read_text()))
        d.start()
        assert await s.get(["1.3.6.1.2.1.1.5.0"]) == got
        assert s.engine_id != engine and s.discoveries == 2
    finally:
        await s.close()
        d.stop()


# ------------------------------------------------------------------------------- garbage

class _Relay(asyncio.DatagramProtocol):
    """UDP relay on 127.0.0.1 in front of a real agent (or of nothing: junk only). Before each
    real answer it sends ``junk(answer)``."""

    def __init__(self, upstream: int | None, junk):
        self.upstream, self.junk = upstream, junk
        self.front = None
        self.client = None
        self.back = None
        self.rewrite = None          # answer -> answer to send instead (None: drop it)
        self.sizes: list[int] = []   # sizes of the client's datagrams
        self.sent: list[bytes] = []  # the client's datagrams

    def connection_made(self, transport):
        self.front = transport

    def datagram_received(self, data, addr):
        self.client = addr
        self.sizes.append(len(data))
        self.sent.append(data)
        if self.upstream is None:
            for j in self.junk(data):
                self.front.sendto(j, addr)
            return
        asyncio.get_running_loop().create_task(self._forward(data))

    async def _forward(self, data):
        loop = asyncio.get_running_loop()
        if self.back is None:
            relay = self

            class Back(asyncio.DatagramProtocol):
                def datagram_received(self, answer, _addr):
                    for j in relay.junk(answer):
                        relay.front.sendto(j, relay.client)
                    if relay.rewrite:
                        answer = relay.rewrite(answer)
                    if answer is not None:
                        relay.front.sendto(answer, relay.client)

            self.back, _ = await loop.create_datagram_endpoint(Back, remote_addr=("127.0.0.1", self.upstream))
        self.back.sendto(data)


def _junk(msg: bytes) -> list[bytes]:
    tampered = msg[:-1] + bytes((msg[-1] ^ 0x55,))
    return [b"", b"\x30", b"\xff" * 40, msg[: len(msg) // 2], msg + b"\x00",
            encode_request("get", b"public", 1, [encode_oid("1.3.6.1.2.1.1.5.0")]),   # a v2c message
            tampered]


async def _relay(upstream: int | None, junk=_junk):
    loop = asyncio.get_running_loop()
    tr, proto = await loop.create_datagram_endpoint(lambda: _Relay(upstream, junk), local_addr=("127.0.0.1", 0))
    return tr, proto, tr.get_extra_info("sockname")[1]


async def test_garbage_and_forged_datagrams_are_dropped_and_counted(snmpd):
    d = snmpd
    tr, proto, port = await _relay(d.port)
    kw = dict(user=_user("SHA", "AES"), auth_protocol="SHA", auth_key=d.auth_key, priv_protocol="AES",
              priv_key=d.priv_key, timeout=2.0, retries=0)
    s = FastV3Session("127.0.0.1", port, **kw)
    try:
        w = await s.walk(COLS, max_repetitions=3)
        assert w == oracle_walk(d.port, _cli_args(kw["user"], "SHA", d.auth_key, "AES", d.priv_key), COLS)
        assert s.malformed >= 2 * s.requests and s.auth_failures >= s.requests - 1   # discovery is unauthenticated
    finally:
        await s.close()
        tr.close()
        if proto.back:
            proto.back.close()


async def test_only_garbage_comes_back_is_a_protocol_error():
    tr, proto, port = await _relay(None, lambda m: _junk(m)[:-1])
    s = FastV3Session("127.0.0.1", port, "u", "SHA", "auth-key-1", "AES", "priv-key-1", timeout=0.3, retries=0)
    try:
        with pytest.raises(DeviceError) as ei:
            await s.get(["1.3.6.1.2.1.1.5.0"])
        assert ei.value.reason == "protocol" and "datagram(s) came back but none was a valid SNMP v3" in str(ei.value)
        assert s.malformed >= 5
    finally:
        await s.close()
        tr.close()


# ------------------------------------------------------------------------------- snmpsim + driver wiring

VTP_STATE = "1.3.6.1.4.1.9.9.46.1.3.1.1.2"
BRIDGE = ("1.3.6.1.2.1.17.1.4.1.", "1.3.6.1.2.1.17.4.3.1.")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """Cisco 3750 recording (verbatim rows): default context 'main' and, for every active VLAN of
    vtpVlanState, a context 'vlan-<id>' holding the recording's BRIDGE-MIB rows (as Cisco does)."""
    rows = (VENDORS / "cisco_c3750.snmprec").read_text().splitlines()
    keep = ("1.3.6.1.2.1.1.", "1.3.6.1.2.1.2.2.1.", "1.3.6.1.2.1.31.1.1.1.", VTP_STATE + ".") + BRIDGE
    d = tmp_path_factory.mktemp("sim-v3")
    (d / "main.snmprec").write_text("\n".join(r for r in rows if r.startswith(keep)) + "\n")
    vlans = sorted({int(r.split("|")[0].rsplit(".", 1)[1]) for r in rows
                    if r.startswith(VTP_STATE + ".") and r.endswith("|2|1")} - {1002, 1003, 1004, 1005})
    per_vlan = "\n".join(r for r in rows if r.startswith(("1.3.6.1.2.1.1.",) + BRIDGE)) + "\n"
    recs = {"main": d / "main.snmprec"}
    for v in vlans:
        (d / f"vlan-{v}.snmprec").write_text(per_vlan)
        recs[f"vlan-{v}"] = d / f"vlan-{v}.snmprec"
    user = {"user": "campus-ro", "auth_proto": "SHA", "auth_key": "auth-" + os.urandom(4).hex(),
            "priv_proto": "AES", "priv_key": "priv-" + os.urandom(4).hex()}
    s = Snmpsim(recs, v3=user).start()
    s.user, s.auth_key, s.priv_key, s.vlans = user["user"], user["auth_key"], user["priv_key"], vlans
    yield s
    s.stop()


async def test_snmpsim_recording_over_v3_matches_net_snmp_and_pysnmp(sim):
    cols = COLS + ["1.3.6.1.2.1.31.1.1.1.15", "1.3.6.1.2.1.2.2.1.7"]
    fast, (g, w), (pg, pw) = await _fast_and_pysnmp(sim.port, sim.user, "SHA", sim.auth_key, "AES", sim.priv_key,
                                                     context="main", cols=cols)
    args = _cli_args(sim.user, "SHA", sim.auth_key, "AES", sim.priv_key, "main")
    assert w == oracle_walk(sim.port, args, cols) and len(w[COLS[0]]) > 40
    assert g == oracle("snmpget", sim.port, args, *SCALARS) and g["1.3.6.1.2.1.1.2.0"] == "1.3.6.1.4.1.9.1.516"
    assert (g, w) == (pg, pw)


async def test_cisco_per_vlan_fdb_uses_v3_context_on_the_fast_session(sim):
    from drivers.snmp import Options, open_session, open_vlan_session_factory
    from drivers.snmp.tables import collect_sections

    results = {}
    for engine in ("auto", "pysnmp"):
        o = Options.model_validate({"host": "127.0.0.1", "port": sim.port, "version": 3, "user": sim.user,
                                    "auth_protocol": "SHA", "auth_key": sim.auth_key, "priv_protocol": "AES",
                                    "priv_key": sim.priv_key, "context": "main", "engine": engine})
        session = open_session(o)
        vlan_factory = open_vlan_session_factory(o)
        assert isinstance(session, FastV3Session) == (engine == "auto")
        assert isinstance(vlan_factory(10), FastV3Session) == (engine == "auto")
        try:
            sec = await collect_sections(session, "1.3.6.1.4.1.9.1.516", ["fdb"], vlan_session=vlan_factory,
                                         deadline_s=60)
        finally:
            await session.close()
            await close_engines()
        assert not sec.get("_errors"), sec.get("_errors")
        results[engine] = sorted((r["mac"], r["vlan"], r.get("ifIndex") or 0) for r in sec["fdb"])
    fdb = results["auto"]
    assert fdb == results["pysnmp"]
    assert {v for _, v, _ in fdb} == set(sim.vlans) and len(sim.vlans) > 3
    args = _cli_args(sim.user, "SHA", sim.auth_key, "AES", sim.priv_key, f"vlan-{sim.vlans[0]}")
    macs = {":".join(f"{int(x):02x}" for x in k.split(".")[-6:])
            for k in oracle("snmpbulkwalk", sim.port, args, "1.3.6.1.2.1.17.4.3.1.2")}
    assert {m for m, v, _ in fdb if v == sim.vlans[0]} == macs


def test_auto_engine_choice_for_v3():
    from drivers.snmp import Options, open_session

    base = {"host": "127.0.0.1", "version": 3, "user": "u", "auth_protocol": "SHA-256", "auth_key": "a" * 8}
    assert isinstance(open_session(Options.model_validate(base)), FastV3Session)
    assert isinstance(open_session(Options.model_validate({**base, "priv_protocol": "AES-256-C",
                                                           "priv_key": "p" * 8})), FastV3Session)
    assert type(open_session(Options.model_validate({**base, "engine": "pysnmp"}))) is SnmpSession
    des3 = Options.model_validate({**base, "priv_protocol": "3DES", "priv_key": "p" * 8})
    assert type(open_session(des3)) is SnmpSession


# ------------------------------------------------------------------------------- RFC 3412 / 3414 corners

def _usm_fields(msg: bytes) -> dict | None:
    """A v3 message -> its header and USM fields, and for a plaintext one (discovery answer,
    report, noAuthNoPriv response) its scoped PDU too."""
    f, p = {}, hdr(msg, 0, 0x30)[1]
    p = sum(hdr(msg, p, 0x02)[1:])                      # msgVersion
    _, p, _ = hdr(msg, p, 0x30)
    for name, tag in (("msg_id", 2), ("max_size", 2), ("flags", 4), ("model", 2), ("", 4), ("", 0x30),
                      ("engine", 4), ("boots", 2), ("time", 2), ("user", 4), ("auth", 4), ("priv", 4)):
        _, q, ln = hdr(msg, p, tag)
        if name:
            f[name] = int.from_bytes(msg[q:q + ln], "big") if tag == 2 else msg[q:q + ln]
        p = q if not name else q + ln                   # step into the two wrappers
    f["flags"] = f["flags"][0]
    if f["flags"] & 2:
        return f
    _, q, ln = hdr(msg, p, 0x30)                       # plaintext ScopedPDU
    _, q, ln = hdr(msg, q, 0x04)
    f["ctx_engine"] = msg[q:q + ln]
    _, q, ln = hdr(msg, q + ln, 0x04)
    f["ctx_name"], f["pdu"] = msg[q:q + ln], msg[q + ln:]
    return f


def _usm_build(f: dict) -> bytes:
    glob = _tlv(0x30, _enc_int(f["msg_id"]) + _enc_int(f["max_size"]) + _tlv(0x04, bytes((f["flags"],)))
                + _enc_int(f["model"]))
    usm = _tlv(0x30, _tlv(0x04, f["engine"]) + _enc_int(f["boots"]) + _enc_int(f["time"]) + _tlv(0x04, f["user"])
               + _tlv(0x04, f["auth"]) + _tlv(0x04, f["priv"]))
    scoped = _tlv(0x30, _tlv(0x04, f["ctx_engine"]) + _tlv(0x04, f["ctx_name"]) + f["pdu"])
    return _tlv(0x30, _enc_int(3) + glob + _tlv(0x04, usm) + scoped)


def _rewrite_unauth(only_responses: bool = False, **changes):
    """Relay rewrite: change fields of the agent's unauthenticated answers (discovery, reports,
    noAuthNoPriv responses; only Response PDUs with ``only_responses``)."""
    def rw(answer: bytes) -> bytes:
        f = _usm_fields(answer)
        if f["flags"] & 1 or (only_responses and f["pdu"][0] != 0xA2):   # signed: cannot be changed
            return answer
        return _usm_build({**f, **changes})
    return rw


def _discovery_answer(port: int) -> bytes:
    probe = FastV3Session("127.0.0.1", port, "probe")._build(encode_pdu("get", 7, [], 0, 0), 7, True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(5)
        u.sendto(probe, ("127.0.0.1", port))
        return u.recv(65535)


def test_usm_rewrite_helper_is_faithful(snmpd):
    answer = _discovery_answer(snmpd.port)
    f = _usm_fields(answer)
    assert f["msg_id"] == 7 and f["engine"] and f["max_size"] == 65507 and _usm_build(f) == answer


@pytest.mark.parametrize("auth,priv", [("SHA", "DES"), ("SHA-256", "AES"), ("MD5", "AES-256-C")])
async def test_discovery_answered_with_zero_boots_and_time_is_resynchronised(snmpd, auth, priv):
    """net-snmp and some Cisco agents answer discovery with boots/time 0/0: only the
    authenticated notInTimeWindow report of the first real request carries the real values
    (RFC 3414 4). A relay zeroes them in the discovery answer; the get must still succeed after
    exactly one resync, adopting the agent's authenticated boots/time."""
    d = snmpd
    tr, relay, port = await _relay(d.port, lambda m: [])
    relay.rewrite = _rewrite_unauth(boots=0, time=0)
    s = FastV3Session("127.0.0.1", port, _user(auth, priv), auth, d.auth_key, priv, d.priv_key, timeout=2, retries=0)
    try:
        await s._ensure()
        await s._discover()
        assert (s.boots, s._engine_time()) == (0, 0)
        got = await s.get(SCALARS)
        assert got == oracle("snmpget", d.port, _cli_args(_user(auth, priv), auth, d.auth_key, priv, d.priv_key),
                             *SCALARS)
        assert s.resyncs == 1 and s.discoveries == 1 and s.boots >= 1
        assert s.auth_failures == s.malformed == s.decrypt_failures == 0
        await s.get(SCALARS)                              # in sync now: no further resync
        assert s.resyncs == 1
    finally:
        await s.close()
        tr.close()
        relay.back and relay.back.close()


async def test_requests_fit_the_agents_msg_max_size(tmp_path):
    """RFC 3412: msgMaxSize is the largest message its sender can receive. snmpd advertising 484
    (the minimum; ``sendMessageMaxSize``): a GET of 40 objects is split so that no request the
    relay sees exceeds 484 bytes, and the values are net-snmp's."""
    d = Snmpd(tmp_path, auth_protocol="SHA-512", priv_protocol="AES")
    d.conf.write_text(d.conf.read_text() + "[snmp] sendMessageMaxSize 484\n")
    d.start()
    tr, relay, port = await _relay(d.port, lambda m: [])
    oids = [f"1.3.6.1.2.1.2.2.1.{c}.{i}" for c in (1, 3, 4, 7) for i in range(1, 11)]
    s = FastV3Session("127.0.0.1", port, d.user, "SHA-512", d.auth_key, "AES", d.priv_key, timeout=2, retries=0)
    try:
        got = await s.get(oids)
        assert s.peer_max_size == 484
        assert max(relay.sizes) <= 484 and len(relay.sizes) > 3     # discovery + at least 3 GETs
        args = _cli_args(d.user, "SHA-512", d.auth_key, "AES", d.priv_key)
        want = {}
        for i in range(0, len(oids), 8):
            want.update(oracle("snmpget", d.port, args, *oids[i:i + 8]))
        assert got == want and got["1.3.6.1.2.1.2.2.1.1.1"] == 1
    finally:
        await s.close()
        tr.close()
        relay.back and relay.back.close()
        d.stop()


@pytest.mark.parametrize("field,value", [("boots", 1 << 32), ("time", 1 << 31), ("max_size", 100)])
async def test_discovery_answer_with_out_of_range_usm_values_is_dropped_as_malformed(snmpd, field, value):
    """RFC 3412/3414 ranges: msgAuthoritativeEngineBoots/Time 0..2^31-1, msgMaxSize 484..2^31-1.
    An (unauthenticated, so forgeable) discovery answer outside them is invalid: dropped and
    counted, the error says what came back -- not an OverflowError out of the IV construction."""
    d = snmpd
    tr, relay, port = await _relay(d.port, lambda m: [])
    relay.rewrite = _rewrite_unauth(**{field: value})
    s = FastV3Session("127.0.0.1", port, _user("SHA", "AES"), "SHA", d.auth_key, "AES", d.priv_key,
                      timeout=0.5, retries=0)
    try:
        with pytest.raises(DeviceError) as ei:
            await s.get(SCALARS)
        assert ei.value.reason == "protocol" and "1 datagram(s) came back but none was a valid SNMP v3" in str(ei.value)
        assert s.malformed == 1 and s.engine_id is None
    finally:
        await s.close()
        tr.close()
        relay.back and relay.back.close()


@pytest.mark.parametrize("field,value", [("engine", b"\x80\x00\x1f\x88\x04other-engine"), ("user", b"someone-else"),
                                         ("ctx_engine", b"\x80\x00\x1f\x88\x04other-engine"),
                                         ("ctx_name", b"vlan-20")])
async def test_response_for_another_engine_user_or_context_is_not_the_answer(snmpd, field, value):
    """RFC 3412 7.2.12b: a Response must match the request's security engine, user, level,
    contextEngineID and contextName. noAuthNoPriv (nothing signed) through a relay that rewrites
    one of them in the agent's responses: every response is dropped and counted."""
    d = snmpd
    tr, relay, port = await _relay(d.port, lambda m: [])
    relay.rewrite = _rewrite_unauth(only_responses=True, **{field: value})
    s = FastV3Session("127.0.0.1", port, _user(None, None), timeout=0.5, retries=1)
    try:
        with pytest.raises(DeviceError) as ei:
            await s.get(SCALARS)
        assert ei.value.reason == "protocol" and "2 datagram(s) came back but none was a valid SNMP v3" in str(ei.value)
        relay.rewrite = _rewrite_unauth(only_responses=True)      # same fields: accepted again
        assert (await s.get(SCALARS))["1.3.6.1.2.1.1.5.0"] == f"snmpd-test-{d.port}".encode()
    finally:
        await s.close()
        tr.close()
        relay.back and relay.back.close()


async def test_replayed_response_from_an_earlier_boot_is_refused(tmp_path):
    """RFC 3414 3.2.7b: an authenticated message from an earlier engine boot (or > 150 s behind
    our notion of the agent's clock) is a replay. The agent answers msgID X (sysName 'before'),
    reboots with a new sysName; when the session's msgID comes round to X again, a relay first
    replays the recorded old answer: the session must take the agent's real, current one."""
    d = Snmpd(tmp_path)
    d.start()
    tr, relay, port = await _relay(d.port, lambda m: [])
    recorded: list[bytes] = []
    s = FastV3Session("127.0.0.1", port, d.user, "SHA-256", d.auth_key, "AES", d.priv_key, timeout=1, retries=0)
    try:
        await s._ensure()
        await s._discover()
        x = next(s._ids)
        s._ids = itertools.count(x)
        relay.rewrite = lambda a: recorded.append(a) or a
        before = await s.get(["1.3.6.1.2.1.1.5.0"])
        relay.rewrite = None
        d.stop()
        _keep_engine_state(d)
        d.conf.write_text(d.conf.read_text().replace(f"sysName snmpd-test-{d.port}", "sysName after-reboot"))
        d.start()
        assert await s.get(["1.3.6.1.2.1.1.5.0"]) == {"1.3.6.1.2.1.1.5.0": b"after-reboot"}
        assert s.resyncs == 1 and before == {"1.3.6.1.2.1.1.5.0": f"snmpd-test-{d.port}".encode()}
        s._ids = itertools.count(x)                      # msgID X again
        relay.junk = lambda answer: recorded[-1:]        # the old answer to X arrives first
        assert await s.get(["1.3.6.1.2.1.1.5.0"]) == {"1.3.6.1.2.1.1.5.0": b"after-reboot"}
        assert s.stale == 1
        # the replay is all that comes back (the real answer is lost): the session starts over with
        # a fresh discovery and asks again, rather than reporting garbage
        s._ids = itertools.count(x)
        dropped: list[bytes] = []
        relay.rewrite = lambda a: a if dropped else dropped.append(a)
        resyncs, discoveries = s.resyncs, s.discoveries
        assert await s.get(["1.3.6.1.2.1.1.5.0"]) == {"1.3.6.1.2.1.1.5.0": b"after-reboot"}
        assert s.stale == 2 and len(dropped) == 1
        assert (s.resyncs, s.discoveries) == (resyncs + 1, discoveries + 1)
    finally:
        await s.close()
        tr.close()
        relay.back and relay.back.close()
        d.stop()


async def test_agent_whose_boots_went_back_is_rediscovered(tmp_path):
    """The other side of 3.2.7b: an agent reset to fewer boots with the same engine ID (factory
    reset, engine ID from the MAC) answers with an authenticated notInTimeWindow report from an
    'earlier' boot. Reports are not refused as replays: the long-lived session adopts the agent's
    clock instead of failing forever."""
    d = Snmpd(tmp_path)
    d.start()
    for _ in range(2):
        d.stop()
        _keep_engine_state(d)
        d.start()
    s = FastV3Session("127.0.0.1", d.port, d.user, "SHA-256", d.auth_key, "AES", d.priv_key, timeout=1, retries=0)
    try:
        await s.get(["1.3.6.1.2.1.1.5.0"])
        assert s.boots == 3
        d.stop()
        _keep_engine_state(d)
        d.conf.write_text(re.sub(r"(?m)^engineBoots .*$", "engineBoots 0", d.conf.read_text()))
        d.start()
        assert await s.get(["1.3.6.1.2.1.1.5.0"]) == {"1.3.6.1.2.1.1.5.0": f"snmpd-test-{d.port}".encode()}
        assert s.boots == 1
        assert await s.get(["1.3.6.1.2.1.1.5.0"])
    finally:
        await s.close()
        d.stop()


WIDE = ([f"1.3.6.1.2.1.2.2.1.{c}" for c in (1, 2, 3, 4, 5, 6, 7, 8, 9, 21, 22)]
        + [f"1.3.6.1.2.1.31.1.1.1.{c}" for c in (1, 14, 15, 16, 17, 18, 19)]
        + [f"1.3.6.1.2.1.4.20.1.{c}" for c in (1, 2, 3, 4, 5)] + [f"1.3.6.1.2.1.25.2.3.1.{c}" for c in (1, 2, 3, 4)]
        + [f"1.3.6.1.2.1.1.9.1.{c}" for c in (2, 3, 4)])   # 30 columns without moving counters


async def test_walk_wider_than_the_agents_msg_max_size_is_split_by_columns(snmpd):
    """A GETBULK of 30 columns does not fit in 484 bytes, whatever max-repetitions is: the walk
    must split the columns (halving repetitions, the tooBig remedy, cannot help). noAuthNoPriv
    so that a relay can make every answer advertise msgMaxSize 484; it also drops any request
    above 484 bytes, as such an agent would."""
    d = snmpd
    tr, relay, port = await _relay(d.port, lambda m: [])
    relay.rewrite = _rewrite_unauth(max_size=484)
    forward = relay._forward
    relay._forward = lambda data: forward(data) if len(data) <= 484 else asyncio.sleep(0)
    s = FastV3Session("127.0.0.1", port, _user(None, None), timeout=2, retries=0)
    try:
        w = await s.walk(WIDE, max_repetitions=5)
        assert s.peer_max_size == 484 and max(relay.sizes) <= 484
        assert w == oracle_walk(d.port, _cli_args(_user(None, None), None, None, None, None), WIDE)
        assert all(w[c] for c in WIDE[:4]) and len(w) == 30
    finally:
        await s.close()
        tr.close()
        relay.back and relay.back.close()


async def test_late_answer_to_the_previous_request_is_not_the_current_answer(snmpd):
    """RFC 3412 7.2.10: a Response is matched by msgID. A relay delivers, before every answer,
    the agent's answer to the previous request (late datagram, or a retry's duplicate): each get
    still returns its own object."""
    d = snmpd
    previous: list[bytes] = []

    def late(answer):
        out = previous[-1:]
        previous.append(answer)
        return out
    tr, relay, port = await _relay(d.port, late)
    s = FastV3Session("127.0.0.1", port, _user("SHA-256", "AES"), "SHA-256", d.auth_key, "AES", d.priv_key,
                      timeout=2, retries=0)
    try:
        for oid in SCALARS + SCALARS[::-1]:
            assert list(await s.get([oid])) == [oid]
        assert s.auth_failures == s.malformed == s.stale == 0 and s.resyncs == 0
    finally:
        await s.close()
        tr.close()
        relay.back and relay.back.close()


async def test_local_engine_time_follows_the_agent_and_resyncs_after_drift(snmpd):
    """Between polls our notion of the agent's engine time advances with the monotonic clock
    (RFC 3414 2.3) and authenticated answers keep it in step; pretend 400 s went by on our side
    only (suspend, clock trouble): one authenticated notInTimeWindow report, one resync, answer."""
    d = snmpd
    oid = "1.3.6.1.6.3.10.2.1.3.0"                       # snmpEngineTime, as the agent counts it
    s = FastV3Session("127.0.0.1", d.port, _user("SHA", "AES"), "SHA", d.auth_key, "AES", d.priv_key,
                      timeout=2, retries=0)
    try:
        agent = (await s.get([oid]))[oid]
        assert abs(s._engine_time() - agent) <= 1 and s.resyncs == 0
        s._time_at -= 400
        assert s._engine_time() >= agent + 399
        agent = (await s.get([oid]))[oid]
        assert s.resyncs == 1 and abs(s._engine_time() - agent) <= 1
        assert s.stale == s.auth_failures == 0
    finally:
        await s.close()


async def test_latched_engine_boots_is_named_in_the_error(tmp_path):
    """RFC 3414 2.2.2: an engine whose snmpEngineBoots reached 2^31-1 stays latched and refuses
    every authenticated message as not in time window. snmpd started one boot short of it: the
    error says so instead of a generic time-window one."""
    d = Snmpd(tmp_path)
    d.conf.write_text(d.conf.read_text() + "engineBoots 2147483646\noldEngineID 0x80001f8880aabbccdd\n")
    d.start()
    s = FastV3Session("127.0.0.1", d.port, d.user, "SHA-256", d.auth_key, "AES", d.priv_key, timeout=1, retries=0)
    try:
        with pytest.raises(DeviceError) as ei:
            await s.get(["1.3.6.1.2.1.1.5.0"])
        assert ei.value.reason == "auth" and "latched at 2147483647" in str(ei.value)
        assert s.boots == 2147483647 and s.resyncs == 1
    finally:
        await s.close()
        d.stop()


async def test_privacy_salts_never_repeat_within_or_across_sessions(snmpd):
    """RFC 3414 8.1.1.1 / RFC 3826 3.1.2.1: the salt (msgPrivacyParameters) must not repeat under
    one key -- it is what makes the IV unique. Two sessions of the same user, 40 requests each,
    as seen on the wire; DES salts start with the engine boots."""
    d = snmpd
    for priv in ("DES", "AES"):
        tr, relay, port = await _relay(d.port, lambda m: [])
        try:
            for _ in range(2):
                s = FastV3Session("127.0.0.1", port, _user("SHA", priv), "SHA", d.auth_key, priv, d.priv_key,
                                  timeout=2, retries=0)
                for _ in range(40):
                    await s.get(["1.3.6.1.2.1.1.3.0"])
                await s.close()
            fields = [_usm_fields(m) for m in relay.sent]
            salts = [f["priv"] for f in fields if f["flags"] & 2]
            assert len(salts) == 80 and len(set(salts)) == 80 and {len(x) for x in salts} == {8}
            if priv == "DES":
                assert {int.from_bytes(x[:4], "big") for x in salts} == {f["boots"] for f in fields if f["flags"] & 2}
        finally:
            tr.close()
            relay.back and relay.back.close()
