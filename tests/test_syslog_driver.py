"""drivers/syslog with real senders on loopback: util-linux logger (UDP/TCP, RFC 3164/5424, octet
counting), rsyslogd relaying over TCP and TLS (GnuTLS, client certificates), real vendor lines
(tests/fixtures/syslog, NOTICE); event rules; the collector's archive table and /api/v1/syslog."""
import asyncio
import socket
import ssl
import time
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from pydantic import ValidationError

import drivers.syslog as S
from campus_sense import wire
from campus_sense.yamlconf import ConfigError
from collector.api import create_app
from collector.store import syslog as archive
from collector.store.sqlite import SQLiteStore
from drivers.base import Event, Sample
from drivers.syslog.parse import parse
from drivers.syslog.rules import load_rules
from edge_agent import config
from edge_agent.batcher import to_item
from tests.peers_syslog import Rsyslog, have_rsyslog, logger, make_certs

pytestmark = pytest.mark.timeout(60)
FIX = Path(__file__).parent / "fixtures" / "syslog"
VENDOR = yaml.safe_load((FIX / "vendor_lines.yaml").read_text())


class Running:
    def __init__(self, drv):
        self.drv, self.records, self.task = drv, [], None

    async def __aenter__(self):
        self.task = asyncio.create_task(self.drv.run(self.records.append))
        await asyncio.wait_for(self.drv.ready.wait(), 5)
        return self

    async def __aexit__(self, *exc):
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass

    def of(self, typ: str | None = None) -> list[Event]:
        return [r for r in self.records if isinstance(r, Event) and (typ is None or r.type == typ)]

    async def wait(self, n: int, typ: str = "syslog", timeout: float = 10) -> list[Event]:
        async with asyncio.timeout(timeout):
            while len(self.of(typ)) < n:
                await asyncio.sleep(0.02)
        return self.of(typ)


async def run_tool(fn, *a, **kw):
    await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*a, **kw))


def make(**kw) -> S.SyslogDriver:
    opts = {"listen_udp": "127.0.0.1:0", "listen_tcp": "127.0.0.1:0"}
    opts.update(kw)
    return S.create("syslog-rx", S.Options.model_validate(opts), {"site": "north"})


# ---------------------------------------------------------------------------------------- parsing

@pytest.mark.parametrize("case", VENDOR, ids=[f"{c['vendor']}-{i}" for i, c in enumerate(VENDOR)])
def test_real_vendor_lines(case):
    p = parse(case["line"])
    want = dict(case["expect"])
    ev_type = want.pop("event", None)
    extracted = {k: want.pop(k) for k in ("ifName", "user", "src_ip") if k in want}
    got = p.as_dict()
    for k, v in want.items():
        assert got[k] == v, f"{k}: {got[k]!r} != {v!r}"
    hit = load_rules(None).match(p)
    if ev_type is None:
        assert hit is None or hit[0].type not in ("link_down", "link_up", "login_failure")
    else:
        assert hit is not None and hit[0].type == ev_type
        for k, v in extracted.items():
            assert hit[1][k] == v


def test_parser_edge_cases():
    assert parse(b"<190>Sep 14 16:23:24 2026 SW2 %%10SHELL/5/SHELL_LOGIN: \xb9\xdc\xc0\xed\xd4\xb1\xb5\xc7\xc2\xbc\x00").msg \
        == "管理员登录"                                       # GBK from a Chinese-language device, NUL dropped
    p = parse("<13>1 2024-01-01T00:00:00.000Z host app 99 ID47 [ex@32473 iut=\"3\" x=\"a]b\"][y@1 z=\"\"] \ufeffhi")
    assert (p.sd, p.msg, p.msgid, p.pid) == ('[ex@32473 iut="3" x="a]b"][y@1 z=""]', "hi", "ID47", "99")
    assert parse("plain words without header").msg == "plain words without header"
    p = parse("<999>x")
    assert p.pri is None and p.msg == "<999>x"
    assert parse("<0>" + "A" * 100_000).msg == "A" * (65536 - 3)


# ---------------------------------------------------------------------------------------- real senders

async def test_logger_udp_tcp_rfc3164_rfc5424_octet_counting():
    async with Running(make()) as r:
        u, t = str(r.drv.ports["udp"]), str(r.drv.ports["tcp"])
        variants = [("-d", "--rfc3164", "-P", u), ("-d", "--rfc5424", "-P", u), ("-T", "--rfc3164", "-P", t),
                    ("-T", "--rfc5424", "-P", t), ("-T", "--rfc5424", "--octet-count", "-P", t)]
        for i, v in enumerate(variants):
            await run_tool(logger, int(v[-1]), f"Failed password for invalid user bob{i} from 10.9.9.{i} port 22 ssh2",
                           *v[:-2], tag="sshd", priority="auth.warning")
        await run_tool(logger, int(u), "hello from logger", "-d", tag="campus", priority="local7.info")
        arch = await r.wait(6)
        fails = await r.wait(5, "login_failure")
    assert sorted(e.data["user"] for e in fails) == [f"bob{i}" for i in range(5)]
    for e in arch[:5]:
        d = e.data
        assert d["archive"] is True and (d["facility"], d["severity"], d["program"]) == (4, 4, "sshd")
        assert d["host"] == socket.gethostname() and e.device == "127.0.0.1" and e.severity == "warning"
    assert [e.data.get("sd") is not None for e in arch[:5]] == [False, True, False, True, True]
    hello = arch[5]
    assert (hello.data["facility"], hello.data["severity"], hello.data["msg"]) == (23, 6, "hello from logger")
    assert fails[0].tags == {"site": "north"} and fails[0].data["rule"] == "sshd-login-failed"
    assert r.drv.counters["connections_total"] == 3 and r.drv.counters["malformed_total"] == 0


@pytest.mark.skipif(not have_rsyslog(), reason="rsyslog with GnuTLS missing")
async def test_rsyslog_relays_over_tls_with_client_certificates(tmp_path):
    certs = make_certs(tmp_path / "pki")
    drv = make(listen_udp=None, listen_tcp=None, listen_tls="127.0.0.1:0",
               tls={"cert_file": str(certs["server_cert"]), "key_file": str(certs["server_key"]),
                    "ca_file": str(certs["ca"]), "require_client_cert": True},
               devices={"relay-host-1": "core-sw1"})
    async with Running(drv) as r:
        # RSYSLOG_ForwardFormat keeps the whole tag; rsyslog's RFC 5424 templates cut APP-NAME at the
        # first "/" and lose Huawei/H3C mnemonics (drivers/syslog/README.md)
        relay = Rsyslog(r.drv.ports["tls"], "tls", certs, tmp_path / "rs", template="RSYSLOG_ForwardFormat").start()
        try:
            # (H3C "info-center timestamp loghost no-year-date": rsyslog would take a year for the host name)
            line = ("<187>Jan 16 15:35:33 relay-host-1 %%10IFNET/3/PHY_UPDOWN: Physical state on the interface "
                    "GigabitEthernet1/0/7 changed to down.")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(line.encode(), ("127.0.0.1", relay.in_port))
            await run_tool(logger, relay.in_port, "relayed through rsyslog over TLS", "-d", "--rfc3164",
                           tag="campus", priority="local3.err")
            arch = await r.wait(2, timeout=15)
            down = await r.wait(1, "link_down")
            # a client without a certificate never gets a line in
            ctx = ssl.create_default_context(cafile=str(certs["ca"]))

            def no_cert():
                with socket.create_connection(("127.0.0.1", r.drv.ports["tls"]), timeout=2) as raw:
                    try:
                        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                            tls.sendall(b"20 <13>1 - h a - - - x\n")
                            data = tls.recv(1)         # TLS 1.3: the server's verdict comes after the handshake
                    except TimeoutError:
                        return "accepted"              # still connected: the server took it
                    except (ssl.SSLError, ConnectionError, OSError):
                        return "refused"
                return "refused" if data == b"" else "accepted"
            assert await asyncio.get_running_loop().run_in_executor(None, no_cert) == "refused"
            await asyncio.sleep(0.3)
        finally:
            relay.stop()
    assert len(r.of("syslog")) == 2, relay.log()
    h3c = [e for e in arch if e.data.get("vendor") == "h3c"][0]
    assert (h3c.device, h3c.data["host"], h3c.data["mnemonic"], h3c.data["severity"]) == \
        ("core-sw1", "relay-host-1", "%%10IFNET/3/PHY_UPDOWN", 3)
    assert down[0].data["ifName"] == "GigabitEthernet1/0/7" and down[0].tags["ifName"] == "GigabitEthernet1/0/7"
    other = [e for e in arch if e.data.get("vendor") != "h3c"][0]
    assert (other.data["facility"], other.data["severity"], other.data["msg"]) == \
        (19, 3, "relayed through rsyslog over TLS")


@pytest.mark.skipif(not have_rsyslog(), reason="rsyslog missing")
async def test_rsyslog_tcp_newline_framing_and_udp(tmp_path):
    async with Running(make()) as r:
        relays = [Rsyslog(r.drv.ports["tcp"], "tcp", workdir=tmp_path / "tcp").start(),
                  Rsyslog(r.drv.ports["udp"], "udp", workdir=tmp_path / "udp").start()]
        try:
            for i, rs in enumerate(relays):
                for k in range(3):
                    await run_tool(logger, rs.in_port, f"line {k} via relay {i}", "-d", "--rfc3164", tag="app")
            arch = await r.wait(6, timeout=15)
        finally:
            for rs in relays:
                rs.stop()
    assert sorted(e.data["msg"] for e in arch) == sorted(f"line {k} via relay {i}" for i in range(2) for k in range(3))
    assert all(e.data["program"] == "app" for e in arch)


# ---------------------------------------------------------------------------------------- rules, limits

def test_inline_rules_win_and_archive_filter():
    drv = make(events=[{"name": "core-any-error", "host": "~core-.*", "max_severity": "err", "type": "core_error",
                        "severity": "critical"}],
               archive_max_severity="warning")
    a, e = drv.line("<187>Mar  1 00:00:01 core-1 %LINK-3-UPDOWN: Interface Gi0/1, changed state to down", "10.0.0.1")
    assert a is not None and e.type == "core_error" and e.severity == "critical" and e.data["rule"] == "core-any-error"
    a, e = drv.line("<187>Mar  1 00:00:01 acc-1 %LINK-3-UPDOWN: Interface Gi0/1, changed state to down", "10.0.0.2")
    assert e.type == "link_down" and e.data["ifName"] == "Gi0/1" and e.tags["mnemonic"] == "%LINK-3-UPDOWN"
    a, e = drv.line("<190>Mar  1 00:00:01 acc-1 app: just info", "10.0.0.2")
    assert a is None and e is None                     # info is above archive_max_severity: warning
    none = make(archive=False, event_rules=[])
    assert none.line("<187>Mar  1 00:00:01 core-1 %LINK-3-UPDOWN: x", "10.0.0.1") == (None, None)


async def test_rate_limit_oversize_and_garbage():
    drv = make(rate_limit={"per_source_per_s": 0.001, "burst": 3}, max_message_bytes=512, sample_interval_s=0.2)
    async with Running(drv) as r:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(10):
                s.sendto(f"<13>Mar  1 00:00:0{i} h app: n{i}".encode(), ("127.0.0.1", r.drv.ports["udp"]))
        with socket.create_connection(("127.0.0.1", r.drv.ports["tcp"])) as c:
            c.sendall(b"999999999 " + b"x" * 10)        # an absurd octet count: connection closed
        await r.wait(3)
        async with asyncio.timeout(5):
            while not [x for x in r.records if isinstance(x, Sample) and x.fields["received_total"] >= 10]:
                await asyncio.sleep(0.02)
    smp = [x for x in r.records if isinstance(x, Sample)][-1]
    assert smp.measurement == "syslog" and smp.fields["dropped_rate_total"] == 7 and smp.fields["archived_total"] == 3
    d2 = make(max_message_bytes=512)
    a, _ = d2.line(b"<13>Mar  1 00:00:00 h app: " + b"y" * 5000, "10.0.0.3")   # lines are never lost whole
    assert a.data["program"] == "app" and len(a.data["msg"]) >= 500
    d2.datagram(b"<13>Mar  1 00:00:00 h app: " + b"z" * 5000, "10.0.0.3")
    assert d2.counters["oversize_total"] == 1


def test_options_and_rule_errors(tmp_path):
    for bad, msg in (({"listen_udp": None, "listen_tcp": None}, "set listen_udp"),
                     ({"listen_tls": "127.0.0.1:0"}, "listen_tls needs tls"),
                     ({"listen_udp": "localhost:514"}, "expected IP:PORT"),
                     ({"archive_max_severity": "loud"}, "unknown syslog severity"),
                     ({"events": [{"name": "x", "type": "Bad-Type", "program": "a"}]}, "lower_snake_case"),
                     ({"events": [{"name": "x", "type": "t"}]}, "at least one condition"),
                     ({"events": [{"name": "x", "type": "t", "regex": "(?P<a>x)", "tags": ["b"]}]}, "neither named"),
                     ({"tls": {"cert_file": str(tmp_path / "nope.pem"), "key_file": str(tmp_path / "k")},
                       "listen_tls": "127.0.0.1:0"}, "does not exist")):
        with pytest.raises(ValidationError, match=msg):
            S.Options.model_validate({"listen_udp": "127.0.0.1:0", **bad})
    f = tmp_path / "rules.yaml"
    f.write_text("rules:\n  - name: a\n    type: t\n    regex: '('\n")
    with pytest.raises(ConfigError, match=r"rules.yaml:2: rules.0"):
        load_rules([f])
    f.write_text("rules:\n  - {name: a, type: t, program: x}\n  - {name: a, type: u, program: y}\n")
    with pytest.raises(ConfigError, match="duplicate names"):
        load_rules([f])


def test_agent_yaml(tmp_path):
    p = tmp_path / "agent.yaml"
    p.write_text(f"""
agent: {{id: bldg-a, site: north, building: A}}
mqtt: {{host: 127.0.0.1, port: 1883, username: bldg-a, password: x}}
queue: {{path: {tmp_path / 'q.db'}}}
devices:
  - id: syslog
    driver: syslog
    options: {{listen_udp: "0.0.0.0:514", listen_tcp: "0.0.0.0:514", devices: {{"10.0.0.1": core-sw1}}}}
""")
    c = config.load(p)
    drv = config.driver_module("syslog").create("syslog", c.options[0], {})
    assert not hasattr(drv, "poll") and len(drv.rules) >= 20
    p.write_text(p.read_text().replace("listen_tcp", "listen_tpc"))
    with pytest.raises(config.ConfigError, match=r"agent.yaml:\d+: devices.0.options.listen_tpc"):
        config.load(p)


# ---------------------------------------------------------------------------------------- collector archive

def _apply(store: SQLiteStore, records: list, seq: int) -> None:
    items = [to_item(r)[1] for r in records]
    payload = wire.encode_durable("events", "agent-a", "ep1", seq, int(time.time() * 1000),
                                  [wire.encode_item(i) for i in items])
    res = store.apply([wire.decode(wire.topic("north", "A", "agent-a", "events"), payload)], [])
    assert len(res.accepted) == 1


def test_archive_table_search_api_and_retention(tmp_path):
    store = SQLiteStore(str(tmp_path / "c.db"), syslog_days=180)
    try:
        drv = make(devices={"10.0.0.1": "core-sw1"})
        t0 = int(time.time() * 1000) - 3600_000
        recs = []
        for i, case in enumerate(VENDOR):
            a, e = drv.line(case["line"], "10.0.0.1" if i % 2 == 0 else f"10.0.1.{i}", now_ms=t0 + i * 1000)
            recs += [x for x in (a, e) if x is not None]
        _apply(store, recs, 1)
        n_events = len([r for r in recs if r.type != "syslog"])
        assert archive.count(store.reader()) == len(VENDOR)
        _, tok = store.token_create("security", "guard")
        c = TestClient(create_app(store))
        h = {"Authorization": f"Bearer {tok}"}
        assert c.get("/api/v1/syslog").status_code == 401
        ev = c.get("/api/v1/events", params={"limit": 1000}, headers=h).json()
        assert len(ev) == n_events and all(e["type"] != "syslog" for e in ev)      # archive is not in /events
        got = c.get("/api/v1/syslog", params={"limit": 1000}, headers=h).json()
        assert len(got["lines"]) == len(VENDOR) and got["truncated"] is False
        assert [x["ts_ms"] for x in got["lines"]] == sorted((x["ts_ms"] for x in got["lines"]), reverse=True)
        r = c.get("/api/v1/syslog", params={"host": "core-sw1"}, headers=h).json()["lines"]
        assert len(r) == (len(VENDOR) + 1) // 2 and {x["device"] for x in r} == {"core-sw1"}
        r = c.get("/api/v1/syslog", params={"host": "R1"}, headers=h).json()["lines"]      # sender's hostname
        assert [x["mnemonic"] for x in r] == ["%%01IFNET/4/LINK_STATE"]
        r = c.get("/api/v1/syslog", params={"q": "GigabitEthernet0/0/3 down"}, headers=h).json()["lines"]
        assert [x["host"] for x in r] == ["SWITCH-NOME"]
        r = c.get("/api/v1/syslog", params={"q": "sessão"}, headers=h).json()["lines"]
        assert r == []
        r = c.get("/api/v1/syslog", params={"severity": "err", "limit": 1000}, headers=h).json()["lines"]
        assert r and all(x["severity"] <= 3 for x in r)
        r = c.get("/api/v1/syslog", params={"since": t0 + 3000, "until": t0 + 5000}, headers=h).json()["lines"]
        assert [x["ts_ms"] - t0 for x in r] == [4000, 3000]
        r = c.get("/api/v1/syslog", params={"limit": 2}, headers=h).json()
        assert len(r["lines"]) == 2 and r["truncated"] is True
        line = c.get("/api/v1/syslog", params={"q": "sanjay"}, headers=h).json()["lines"][0]
        assert line["data"]["vendor"] == "cisco" and line["data"]["source"] == "10.0.0.1" and line["program"] is None
        for params, code in (({"severity": "loud"}, 422), ({"limit": 0}, 422), ({"since": 5, "until": 5}, 400),
                             ({"q": 'a"b OR NOT "'}, 200), ({"since": -1}, 422)):
            assert c.get("/api/v1/syslog", params=params, headers=h).status_code == code, params
        # retention: lines older than syslog_days go, their FTS entries with them
        old = drv.line("<13>Jan  1 00:00:00 h app: ancient line", "10.0.0.9", now_ms=t0 - 181 * 86_400_000)[0]
        _apply(store, [old], 2)
        assert c.get("/api/v1/syslog", params={"q": "ancient"}, headers=h).json()["lines"]
        out = store.retention(now_ms=int(time.time() * 1000))
        assert out.get("syslog") == 1
        assert c.get("/api/v1/syslog", params={"q": "ancient"}, headers=h).json()["lines"] == []
        assert archive.count(store.reader()) == len(VENDOR)
    finally:
        store.close()
