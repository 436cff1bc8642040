"""Audit probes against real local peers on 127.0.0.1 (net-snmp snmpd, asyncio/http.server/ssl
servers). Only loopback."""
from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from drivers.audit.probes import (HR_SYSTEM_DATE, SYS_DESCR, decode_date_and_time, encode_get, http_probe,
                                  snmp_get, telnet_probe, tls_probe)
from drivers.snmp.fastv2c import encode_oid
from tests.peers import free_port
from tests.peers_snmp import Snmpd

needs_snmpd = pytest.mark.skipif(not shutil.which("snmpd"), reason="needs net-snmp snmpd")

# a community for v2c only, through the VACM (com2sec/group/access), next to rocommunity public (v1+v2c)
V2C_ONLY_PRIVATE = (
    "rocommunity public 127.0.0.1\n"
    "com2sec privsec 127.0.0.1 private\n"
    "group privgrp v2c privsec\n"
    "view all included .1\n"
    "access privgrp \"\" v2c noauth exact all none none\n")


def start_snmpd(tmp_path, extra: str = "") -> Snmpd:
    tmp_path.mkdir(parents=True, exist_ok=True)
    d = Snmpd(tmp_path)
    if extra:
        with open(d.conf, "a") as f:
            f.write(extra)
    return d.start()


@pytest.fixture
def snmpd_weak(tmp_path):
    d = start_snmpd(tmp_path, V2C_ONLY_PRIVATE)
    yield d
    d.stop()


# ------------------------------------------------------------------------------ SNMP

def test_get_request_encoding_is_a_get_never_a_set():
    for v, ver_byte in (("1", 0), ("2c", 1)):
        m = encode_get(v, "public", 1234, SYS_DESCR)
        assert m[2:5] == bytes((0x02, 0x01, ver_byte))               # version
        assert m[5:13] == b"\x04\x06public"
        assert m[13] == 0xA0                                           # GetRequest PDU (SetRequest is 0xA3)
        assert m.endswith(b"\x06" + bytes((len(encode_oid(SYS_DESCR)),)) + encode_oid(SYS_DESCR) + b"\x05\x00")
    with pytest.raises(KeyError):
        encode_get("3", "public", 1, SYS_DESCR)


@needs_snmpd
async def test_snmpd_default_communities_per_version(snmpd_weak):
    d = snmpd_weak
    got = {}
    for c in ("public", "private", "nope-" + d.community):
        for v in ("1", "2c"):
            got[(c, v)] = await snmp_get("127.0.0.1", d.port, v, c, timeout=0.5, retries=0)
    assert got[("public", "1")].accepted and got[("public", "2c")].accepted
    assert isinstance(got[("public", "2c")].value, bytes) and got[("public", "2c")].value   # sysDescr text
    assert got[("private", "2c")].accepted and not got[("private", "1")].answered
    assert not got[("nope-" + d.community, "1")].answered and not got[("nope-" + d.community, "2c")].answered
    assert got[("nope-" + d.community, "2c")].error.startswith("timeout")
    # the value is what net-snmp's snmpget reads
    r = subprocess.run(["snmpget", "-v1", "-c", "public", "-On", "-Ov", "-Oq", f"127.0.0.1:{d.port}", SYS_DESCR],
                       capture_output=True, text=True, env={"MIBS": "", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and got[("public", "1")].value.decode().strip() == r.stdout.strip().strip('"')


@needs_snmpd
async def test_snmpd_without_default_communities(tmp_path):
    d = start_snmpd(tmp_path)
    try:
        for c in ("public", "private"):
            for v in ("1", "2c"):
                a = await snmp_get("127.0.0.1", d.port, v, c, timeout=0.4, retries=0)
                assert not a.answered and not a.accepted
        assert (await snmp_get("127.0.0.1", d.port, "2c", d.community, timeout=2)).accepted
    finally:
        d.stop()


async def test_snmp_to_a_closed_port_is_not_an_answer():
    a = await snmp_get("127.0.0.1", free_port(2), "2c", "public", timeout=0.3, retries=0)   # SOCK_DGRAM
    assert not a.answered and a.error


@needs_snmpd
async def test_hr_system_date_is_close_to_our_clock(snmpd_weak):
    t0 = datetime.now(timezone.utc)
    a = await snmp_get("127.0.0.1", snmpd_weak.port, "2c", snmpd_weak.community, HR_SYSTEM_DATE, timeout=2)
    t1 = datetime.now(timezone.utc)
    dt = decode_date_and_time(a.value)
    assert dt.tzinfo is not None and len(a.value) == 11          # net-snmp sends the UTC offset
    assert t0 - timedelta(seconds=5) < dt < t1 + timedelta(seconds=5)


def test_decode_date_and_time():
    # 2026-11-23 13:40:05.3 +08:00 == 05:40:05.3 UTC
    v = bytes([0x07, 0xEA, 11, 23, 13, 40, 5, 3, ord("+"), 8, 0])
    assert decode_date_and_time(v) == datetime(2026, 11, 23, 5, 40, 5, 300000, tzinfo=timezone.utc)
    v = bytes([0x07, 0xEA, 11, 23, 1, 10, 0, 0, ord("-"), 5, 30])
    assert decode_date_and_time(v) == datetime(2026, 11, 23, 6, 40, 0, tzinfo=timezone.utc)
    v8 = bytes([0x07, 0xEA, 1, 2, 3, 4, 5, 0])                       # no zone: taken as UTC
    assert decode_date_and_time(v8) == datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    leap = bytes([0x07, 0xEA, 12, 31, 23, 59, 60, 0])
    assert decode_date_and_time(leap) == datetime(2027, 1, 1, tzinfo=timezone.utc)
    for bad in (b"", b"\x07\xea\x0d\x01\x00\x00\x00\x00", bytes([0x07, 0xEA, 1, 2, 3, 4, 5, 0, ord("x"), 0, 0]),
                "2026-01-01", 12345, bytes(9)):
        with pytest.raises(ValueError):
            decode_date_and_time(bad)


# ------------------------------------------------------------------------------ telnet

async def test_telnet_banner_and_nothing_sent():
    received = bytearray()

    async def handle(reader, writer):
        # IAC WILL ECHO, IAC WILL SGA, IAC DO TTYPE, then the banner (like a Cisco vty)
        writer.write(b"\xff\xfb\x01\xff\xfb\x03\xff\xfd\x18\r\n\r\nUser Access Verification\r\n\r\nUsername: ")
        await writer.drain()
        received.extend(await reader.read(100))       # until the client closes
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        r = await telnet_probe("127.0.0.1", port, timeout=2, banner_s=1.5)
        await asyncio.sleep(0.05)
    finally:
        srv.close()
        await srv.wait_closed()
    assert r.open and r.banner and r.banner.startswith("User Access Verification")
    assert r.info["negotiation"] is True
    assert bytes(received) == b""                    # no negotiation answers, no user name


async def test_telnet_silent_server_and_closed_port():
    async def handle(reader, writer):
        await reader.read(100)
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        r = await telnet_probe("127.0.0.1", port, timeout=1, banner_s=0.3)
    finally:
        srv.close()
        await srv.wait_closed()
    assert r.open and r.banner is None
    r = await telnet_probe("127.0.0.1", free_port(), timeout=1)
    assert not r.open and r.error == "refused"


# ------------------------------------------------------------------------------ HTTP / TLS

class _Handler(BaseHTTPRequestHandler):
    redirect: str | None = None
    requests: list = []

    def do_GET(self):  # noqa: N802
        type(self).requests.append((self.command, self.path, self.headers.get("Host")))
        if self.redirect:
            self.send_response(301)
            self.send_header("Location", self.redirect)
            self.end_headers()
        else:
            body = b"<html><title>Switch login</title></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *a):
        pass


class HttpPeer:
    def __init__(self, redirect: str | None = None):
        self.handler = type("H", (_Handler,), {"redirect": redirect, "requests": []})
        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), self.handler)
        self.port = self.srv.server_address[1]
        self.t = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.t.start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


async def test_http_200_is_plain_http_management():
    p = HttpPeer()
    try:
        r = await http_probe("127.0.0.1", p.port, timeout=2)
    finally:
        p.stop()
    assert r.open and r.info["http"] is True and r.info["status"] == 200
    assert r.info["redirects_to_https"] is False and r.info["location"] is None
    assert p.handler.requests == [("GET", "/", f"127.0.0.1:{p.port}")]


async def test_http_301_to_https_and_to_http():
    p = HttpPeer("https://127.0.0.1/login")
    q = HttpPeer("http://127.0.0.1/login.html")
    try:
        r = await http_probe("127.0.0.1", p.port, timeout=2)
        s = await http_probe("127.0.0.1", q.port, timeout=2)
    finally:
        p.stop()
        q.stop()
    assert r.info == {"http": True, "status": 301, "location": "https://127.0.0.1/login",
                      "server": r.info["server"], "redirects_to_https": True}
    assert s.info["status"] == 301 and s.info["redirects_to_https"] is False


async def test_http_closed_port_and_non_http_service():
    r = await http_probe("127.0.0.1", free_port(), timeout=1)
    assert not r.open and r.error == "refused"

    async def handle(reader, writer):
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        r = await http_probe("127.0.0.1", srv.sockets[0].getsockname()[1], timeout=1)
    finally:
        srv.close()
        await srv.wait_closed()
    assert r.open and r.info["http"] is False and r.error == "not an HTTP response"


def make_cert(tmp_path, cn="test-device"):
    key, crt = tmp_path / "key.pem", tmp_path / "crt.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "2", "-subj", f"/CN={cn}"],
                   check=True, capture_output=True)
    return crt, key


async def start_tls_server(tmp_path):
    crt, key = make_cert(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    got = bytearray()

    async def handle(reader, writer):
        try:
            got.extend(await reader.read(100))
        except (ConnectionError, ssl.SSLError):
            pass
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    return srv, srv.sockets[0].getsockname()[1], got


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl")
async def test_tls_handshake_self_signed(tmp_path):
    srv, port, got = await start_tls_server(tmp_path)
    try:
        r = await tls_probe("127.0.0.1", port, timeout=2)
        await asyncio.sleep(0.05)
    finally:
        srv.close()
        await srv.wait_closed()
    assert r.open and r.info["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert r.info["cert_subject"] == "CN=test-device" and r.info["cert_self_signed"] is True
    assert r.info["cert_not_after"] > datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert bytes(got) == b""                          # handshake only, no request


async def test_tls_probe_on_plain_tcp_and_closed_port():
    async def handle(reader, writer):
        await reader.read(100)
        writer.write(b"HTTP/1.0 400 Bad Request\r\n\r\n")
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        r = await tls_probe("127.0.0.1", srv.sockets[0].getsockname()[1], timeout=1)
    finally:
        srv.close()
        await srv.wait_closed()
    assert not r.open and r.error and r.error.startswith(("tls:", "unreachable", "timeout", "ConnectionResetError",
                                                           "IncompleteReadError"))
    r = await tls_probe("127.0.0.1", free_port(), timeout=1)
    assert not r.open and r.error == "refused"


@needs_snmpd
async def test_snmpv3_noauth_default_user(tmp_path):
    """SNMPv3 GET at noAuthNoPriv, no key: only a user configured without authentication answers."""
    from drivers.audit.probes import snmpv3_noauth_get
    d = start_snmpd(tmp_path, "createUser initial\nrouser -s usm initial noauth\ncreateUser noview\n")
    try:
        a = await snmpv3_noauth_get("127.0.0.1", d.port, "initial", timeout=2, retries=0)
        assert a.accepted and a.error_status == 0 and "Linux" in str(a.value)
        a = await snmpv3_noauth_get("127.0.0.1", d.port, "nosuchuser", timeout=2, retries=0)
        assert not a.accepted and a.error.startswith("agent report")          # usmStatsUnknownUserNames
        a = await snmpv3_noauth_get("127.0.0.1", d.port, d.user, timeout=2, retries=0)  # authPriv user
        assert not a.accepted
        a = await snmpv3_noauth_get("127.0.0.1", d.port, "noview", timeout=2, retries=0)  # no VACM access
        assert not a.accepted
    finally:
        d.stop()
    a = await snmpv3_noauth_get("127.0.0.1", free_port(2), "initial", timeout=0.3, retries=0)
    assert not a.answered and not a.error.startswith("agent report")          # silence: not a verdict
