"""drivers/access with real TCP and HTTP clients on loopback: mapping, pseudonyms, auth, bad input."""
import asyncio
import dataclasses
import json
import logging
import urllib.error
import urllib.request

import pytest
from pydantic import ValidationError

from drivers.access import Options, create, pseudonym
from drivers.base import Event, Sample
from edge_agent import config

pytestmark = pytest.mark.timeout(30)

TOKEN = "tok-0123456789abcdef"
CARD = "0004471234"        # raw identifiers that must never leave the driver
BADGE = "B-99812377"
NAME = "Erika Mustermann"


@pytest.fixture
def keyfile(tmp_path):
    p = tmp_path / "pseudo.key"
    p.write_text("site-north-key-0123456789abcdef\n")
    return p


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

    @property
    def events(self):
        return [r for r in self.records if isinstance(r, Event)]

    async def wait(self, pred, what="condition"):
        async with asyncio.timeout(5):
            while not pred():
                await asyncio.sleep(0.01)


def make(protocol="tcp", keyfile=None, **kw):
    opts = dict(listen_host="127.0.0.1", listen_port=0, protocol=protocol, token=TOKEN,
                codes={"DF": "door_forced", "DHO": "door_held_open", "DC": "door_closed", "120": "access_granted",
                       "121": "access_denied", "FA": "fire_alarm", "FR": "fire_alarm_reset", "TMP": "tamper"},
                doors={"D-1": "door-a101"}, sample_interval_s=30)
    if keyfile is not None:
        opts.update(identifier_fields=["card", "badge_id", "employee_id", "student_id"], pseudonym_key_file=str(keyfile))
    opts.update(kw)
    return create("panel-a", Options.model_validate(opts), {"building": "A"})


async def tcp_send(port, lines, token=TOKEN):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(json.dumps({"auth": token}).encode() + b"\n")
    await w.drain()
    answer = json.loads(await r.readline())
    for ln in lines:
        w.write(ln if isinstance(ln, bytes) else json.dumps(ln).encode() + b"\n")
    await w.drain()
    w.close()
    await w.wait_closed()
    return answer


def http_post(port, body: bytes, token=TOKEN, path="/events", header="Authorization"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    if token is not None:
        req.add_header(header, f"Bearer {token}" if header == "Authorization" else token)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def dump(records) -> str:
    return json.dumps([dataclasses.asdict(r) for r in records])


async def test_tcp_codes_mapped_with_severity_device_and_time():
    async with Running(make()) as run:
        ans = await tcp_send(run.drv.port, [
            {"code": "DF", "door": "D-1", "time": 1795416000},
            {"code": "DHO", "door": "D-2", "reader": "R-7", "time": "2026-11-23T06:40:00Z"},
            {"code": "DC", "door": "D-1"},
            {"code": "FA", "zone": "3", "loop": 2},
            {"code": "fire_alarm_reset", "zone": "3"},   # campus type names map to themselves
            {"code": "TMP", "panel": "P1"},
            {"code": "121", "door": "D-1"},
            {"code": "999"},                             # unmapped: counted, dropped
        ])
        assert ans == {"ok": True}
        await run.wait(lambda: run.drv.counters["received_total"] == 8)
    ev = run.events
    assert [(e.type, e.severity) for e in ev] == [
        ("door_forced", "critical"), ("door_held_open", "warning"), ("door_closed", "info"),
        ("fire_alarm", "critical"), ("fire_alarm_reset", "info"), ("tamper", "critical"), ("access_denied", "info")]
    assert ev[0].device == "door-a101" and ev[0].tags == {"building": "A", "door": "D-1", "panel": "panel-a"}
    assert ev[0].time_ms == 1795416000000 and ev[0].data == {"code": "DF", "door": "D-1"}
    assert ev[1].device == "panel-a" and ev[1].tags == {"building": "A", "door": "D-2"}
    assert ev[1].time_ms == 1795416000000 and ev[1].data["reader"] == "R-7"
    assert ev[3].data == {"code": "FA", "zone": "3", "loop": 2}
    assert run.drv.counters["unmapped_total"] == 1 and run.drv.counters["events_total"] == 7


async def test_severity_override():
    async with Running(make(severity={"access_denied": "warning"})) as run:
        await tcp_send(run.drv.port, [{"code": "121", "door": "D-9"}])
        await run.wait(lambda: run.events)
    assert run.events[0].severity == "warning"


async def test_identifiers_pseudonymised_names_dropped(keyfile, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    async with Running(make(keyfile=keyfile)) as run:
        await tcp_send(run.drv.port, [
            {"code": "120", "door": "D-1", "card": CARD, "name": NAME, "first_name": "Erika", "badge_id": BADGE,
             "employee_id": 4711, "note": f"card {CARD} used"},
            {"code": "120", "door": "D-1", "card": CARD},
            {"code": "121", "door": "D-1", "card": "0004470000"},
            b'{"code": "120", "card": "' + CARD.encode() + b'", broken\n',   # malformed, contains the id
        ])
        await run.wait(lambda: run.drv.counters["received_total"] == 4)
    e1, e2, e3 = run.events
    p = e1.data["card_pseudonym"]
    assert len(p) == 16 and int(p, 16) >= 0
    assert e2.data["card_pseudonym"] == p                       # same card -> same pseudonym
    assert e3.data["card_pseudonym"] != p                       # other card -> other pseudonym
    assert e1.data["badge_id_pseudonym"] and e1.data["employee_id_pseudonym"]
    assert set(e1.data) == {"code", "door", "card_pseudonym", "badge_id_pseudonym", "employee_id_pseudonym"}
    assert p == pseudonym(keyfile.read_bytes().strip(), CARD)
    text = dump(run.records) + caplog.text
    for raw in (CARD, BADGE, "4711", NAME, "Erika"):
        assert raw not in text, raw
    assert run.drv.counters["malformed_total"] == 1
    # another site key -> another pseudonym for the same card
    other = tmp_path / "other.key"
    other.write_text("site-south-key-fedcba9876543210\n")
    async with Running(make(keyfile=other)) as run2:
        await tcp_send(run2.drv.port, [{"code": "120", "card": CARD}])
        await run2.wait(lambda: run2.events)
    assert run2.events[0].data["card_pseudonym"] != p
    assert CARD not in dump(run2.records)


async def test_tcp_bad_token_rejected(caplog):
    async with Running(make()) as run:
        ans = await tcp_send(run.drv.port, [{"code": "DF", "door": "D-1"}], token="wrong-token-0123456")
        assert ans == {"error": "unauthorized"}
        r, w = await asyncio.open_connection("127.0.0.1", run.drv.port)   # no auth line at all
        w.write(json.dumps({"code": "FA"}).encode() + b"\n")
        await w.drain()
        assert json.loads(await r.readline()) == {"error": "unauthorized"}
        w.close()
        await run.wait(lambda: run.drv.counters["rejected_total"] == 2)
        # a good client still works
        await tcp_send(run.drv.port, [{"code": "DC", "door": "D-1"}])
        await run.wait(lambda: run.events)
    assert [e.type for e in run.events] == ["door_closed"]
    assert "rejected input from 127.0.0.1:" in caplog.text


async def test_garbage_is_counted_and_listener_keeps_running(caplog):
    async with Running(make(max_line_bytes=1024)) as run:
        await tcp_send(run.drv.port, [b"\x00\xff garbage\n", b"[1, 2]\n", b'{"door": "D-1"}\n', b'{"code": []}\n',
                                      {"code": "DF", "door": "D-1"}])
        await run.wait(lambda: run.drv.counters["received_total"] == 5)
        assert run.drv.counters["malformed_total"] == 4 and len(run.events) == 1
        await tcp_send(run.drv.port, [b"x" * 5000 + b"\n"])        # over-long line: that connection is dropped
        await run.wait(lambda: run.drv.counters["malformed_total"] == 5)
        await tcp_send(run.drv.port, [{"code": "DC", "door": "D-1"}])
        await run.wait(lambda: len(run.events) == 2)
    assert "malformed input from 127.0.0.1:" in caplog.text and "not JSON" in caplog.text
    assert [e.type for e in run.events] == ["door_forced", "door_closed"]


async def test_listener_sample():
    async with Running(make(sample_interval_s=0.05)) as run:
        await tcp_send(run.drv.port, [{"code": "DF"}, b"junk\n"])
        await run.wait(lambda: any(isinstance(r, Sample) and r.fields["malformed_total"] == 1 for r in run.records))
    s = [r for r in run.records if isinstance(r, Sample)][-1]
    assert s.measurement == "access_listener" and s.device == "panel-a"
    assert s.fields["events_total"] == 1 and s.fields["received_total"] == 2 and s.fields["connections_total"] == 1


async def test_http_webhook(keyfile):
    async with Running(make("http", keyfile=keyfile)) as run:
        port = run.drv.port
        st, body = await asyncio.to_thread(http_post, port, json.dumps(
            {"code": "DF", "door": "D-1", "card": CARD, "holder_name": NAME}).encode())
        assert (st, body) == (202, {"events": 1, "malformed": 0, "unmapped": 0})
        batch = json.dumps([{"code": "FA", "zone": "1"}, {"code": "nope"}, "junk"]).encode()
        st, body = await asyncio.to_thread(http_post, port, batch, TOKEN, "/events", "X-Campus-Token")
        assert (st, body) == (202, {"events": 1, "malformed": 1, "unmapped": 1})
        lines = b'{"code": "FR", "zone": "1"}\n{"code": "DC", "door": "D-1"}\n'
        assert (await asyncio.to_thread(http_post, port, lines))[0] == 202
        # rejected / bad requests: nothing emitted, listener keeps going
        assert (await asyncio.to_thread(http_post, port, b'{"code": "DF"}', "wrong-token-00000000"))[0] == 401
        assert (await asyncio.to_thread(http_post, port, b'{"code": "DF"}', None))[0] == 401
        assert (await asyncio.to_thread(http_post, port, b"\x00garbage{", TOKEN))[0] == 400
        assert (await asyncio.to_thread(http_post, port, b"{}", TOKEN, "/other"))[0] == 404
        st, _ = await asyncio.to_thread(http_post, port, json.dumps({"code": "TMP"}).encode())
        assert st == 202
    assert [e.type for e in run.events] == ["door_forced", "fire_alarm", "fire_alarm_reset", "door_closed", "tamper"]
    assert run.events[0].device == "door-a101" and "card_pseudonym" in run.events[0].data
    assert CARD not in dump(run.records) and NAME not in dump(run.records)
    c = run.drv.counters
    assert c["rejected_total"] == 2 and c["malformed_total"] == 2 and c["events_total"] == 5


@pytest.mark.parametrize("opts,msg", [
    ({}, "token"),
    ({"token": "short"}, "at least 16"),
    ({"token": TOKEN, "identifier_fields": ["card"]}, "pseudonym_key_file"),
    ({"token": TOKEN, "pass_fields": ["door", "name"]}, "names are always dropped"),
    ({"token": TOKEN, "pass_fields": ["door", "card"], "identifier_fields": ["card"],
      "pseudonym_key": "k" * 32}, "never passed raw"),
    ({"token": TOKEN, "identifier_fields": ["card"], "pseudonym_key_file": "/nonexistent/key"}, "cannot read"),
    ({"token": TOKEN, "codes": {"7": "door_exploded"}}, "door_forced"),
])
def test_options_validation(opts, msg):
    with pytest.raises(ValidationError) as e:
        Options.model_validate({"listen_port": 9000, **opts})
    assert msg in str(e.value)


def test_numeric_yaml_keys_are_codes():
    o = Options.model_validate({"listen_port": 9000, "token": TOKEN, "codes": {120: "access_granted"},
                                "doors": {101: "door-a101"}})
    d = create("panel-a", o, {})
    ev = d.handle_message({"code": 120, "door": 101}, "test")
    assert ev.type == "access_granted" and ev.device == "door-a101" and ev.data == {"code": "120", "door": 101}


def test_short_key_rejected(tmp_path):
    k = tmp_path / "k"
    k.write_text("short\n")
    with pytest.raises(ValidationError, match="shorter than 16 bytes"):
        Options(listen_port=9000, token=TOKEN, identifier_fields=["card"], pseudonym_key_file=k)


async def test_port_in_use_is_config_error():
    srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        from drivers.base import DeviceError
        with pytest.raises(DeviceError) as e:
            await make(listen_port=port).run(lambda r: None)
        assert e.value.reason == "config" and str(port) in str(e.value)
    finally:
        srv.close()


AGENT_YAML = """\
agent: {id: bldg-a, site: north, building: A}
mqtt: {host: 127.0.0.1, port: 1883, username: bldg-a, password: s3cret}
queue: {path: QUEUE}
devices:
  - id: a101-projector
    driver: pjlink
    interval_s: 60
    room: A-101
    type: projector
    options: {host: 127.0.0.1, port: 4352, password_file: PJPASS, eco_standby: true}
  - id: panel-a
    driver: access
    type: access_panel
    options:
      listen_host: 127.0.0.1
      listen_port: 9741
      protocol: http
      token_file: TOKENFILE
      codes: {"DF": door_forced, "FA": fire_alarm, "FR": fire_alarm_reset}
      identifier_fields: [card, badge_id]
      pseudonym_key_file: KEYFILE
"""


def test_agent_yaml_with_pjlink_and_access(tmp_path, keyfile):
    (tmp_path / "pj.pass").write_text("pjpass\n")
    (tmp_path / "token").write_text(TOKEN + "\n")
    text = (AGENT_YAML.replace("QUEUE", str(tmp_path / "q.db")).replace("PJPASS", str(tmp_path / "pj.pass"))
            .replace("TOKENFILE", str(tmp_path / "token")).replace("KEYFILE", str(keyfile)))
    p = tmp_path / "agent.yaml"
    p.write_text(text)
    c = config.load(p)
    pj, acc = c.options
    assert pj.password.get_secret_value() == "pjpass" and pj.eco_standby is True
    assert acc.token.get_secret_value() == TOKEN and acc.codes["DF"] == "door_forced"
    drivers = [config.driver_module(d.driver).create(d.id, o, d.driver_tags()) for d, o in zip(c.model.devices, c.options)]
    assert hasattr(drivers[0], "poll") and not hasattr(drivers[1], "poll")  # polling vs streaming
    # a bad access option is reported with file, line and field
    p.write_text(text.replace("      pseudonym_key_file: " + str(keyfile) + "\n", ""))
    with pytest.raises(config.ConfigError) as e:
        config.load(p)
    assert "agent.yaml:" in str(e.value) and "devices.1.options" in str(e.value) and "pseudonym_key_file" in str(e.value)
