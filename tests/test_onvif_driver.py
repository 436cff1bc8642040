"""ONVIF driver against tests/onvif_sim.py (spec-shaped SOAP device on 127.0.0.1).

The client side is the real onvif-zeep-async stack (zeep, bundled WSDLs, UsernameToken digest)."""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import socket

import pytest
from pydantic import ValidationError

from drivers.base import DeviceError, Event, Facts, Sample
from drivers.onvif import Options, create, parsers
from tests.onvif_sim import OnvifSim, password_digest

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def creds():
    return "ops-" + secrets.token_hex(3), secrets.token_urlsafe(12)


@pytest.fixture
def sim(creds):
    s = OnvifSim(*creds).start()
    yield s
    s.stop()


def _driver(sim, creds, **kw):
    user, pw = creds
    return create("cam-a1", Options(host="127.0.0.1", port=sim.port, username=user, password=pw, **kw),
                  {"type": "camera", "room": "A-101"})


def test_password_digest_matches_onvif_programmers_guide_vector():
    # ONVIF Application Programmer's Guide, WS-UsernameToken example.
    nonce = base64.b64decode("LKqI6G/AikKCQrN0zqZFlg==")
    assert password_digest(nonce, "2010-09-16T07:50:45Z", "userpassword") == "tuOSpGlFlIXsozq4HFNeeGeFLEI="


async def test_facts_clock_offset_and_sample(sim, creds):
    sim.clock_skew_s = 42.0
    d = _driver(sim, creds)
    try:
        recs = await d.poll()
        facts = [r for r in recs if isinstance(r, Facts)]
        assert len(facts) == 1
        f = facts[0].facts
        assert f["manufacturer"] == f["vendor"] == "SimCam"
        assert (f["model"], f["firmware"], f["serial"], f["hardware_id"]) == ("SC-200", "2.4.1", "SC200-0042", "HW-7")
        assert f["mac"] == "00:11:22:33:44:55"
        assert f["ip"] == "127.0.0.1" and f["device_ip"] == "127.0.0.1"
        assert 40.0 <= f["clock_offset_s"] <= 44.0  # camera answers in whole seconds
        assert f["time_source"] == "NTP"
        s = [r for r in recs if isinstance(r, Sample)]
        assert s[0].measurement == "onvif" and s[0].fields["subscribed"] is True
        assert s[0].tags == {"type": "camera", "room": "A-101"}
        # authenticated operations all passed the digest check
        assert sim.auth_failures == 0
        assert {"GetDeviceInformation", "GetNetworkInterfaces", "GetSystemDateAndTime",
                "CreatePullPointSubscription", "PullMessages"} <= set(sim.ops)
        # unchanged facts are not re-sent on the next poll
        recs2 = await d.poll()
        assert not [r for r in recs2 if isinstance(r, Facts)]
        # a clock that jumps is: compliance sees the new offset
        sim.clock_skew_s = 0.0
        recs3 = await d.poll()
        f3 = [r for r in recs3 if isinstance(r, Facts)]
        assert f3 and abs(f3[0].facts["clock_offset_s"]) <= 2.0
    finally:
        await d.close()
    assert "Unsubscribe" in sim.ops and sim.subscriptions == 0


async def test_events_are_mapped_by_topic(sim, creds):
    d = _driver(sim, creds)
    try:
        await d.poll()  # subscribes
        vs = {"VideoSourceToken": "VideoSource_1"}
        sim.push("tns1:VideoSource/SignalLoss", vs, {"State": "true"})
        sim.push("tns1:VideoSource/ImageTooDark/ImagingService", vs, {"State": "true"})
        sim.push("tns1:VideoSource/ImageTooBlurry/AnalyticsService", vs, {"State": "true"})
        sim.push("tns1:VideoSource/GlobalSceneChange/ImagingService", vs, {"State": "true"})
        sim.push("tns1:VideoSource/GlobalSceneChange/ImagingService", vs, {"State": "false"})
        sim.push("tns1:Device/Trigger/DigitalInput", {"InputToken": "DI_0"}, {"LogicalState": "true"})
        sim.push("tns1:RuleEngine/CellMotionDetector/Motion//.",
                 {"VideoSourceConfigurationToken": "VSC1", "VideoAnalyticsConfigurationToken": "VAC1",
                  "Rule": "MyMotionDetectorRule"}, {"IsMotion": "true"})
        sim.push("tns1:VideoSource/SignalLoss", vs, {"State": "false"}, operation="Initialized")  # not news
        sim.push("tns1:Monitoring/ProcessorUsage", {"Token": "cpu"}, {"Value": "12"})  # no parser
        recs = await d.poll()
    finally:
        await d.close()
    ev = [r for r in recs if isinstance(r, Event)]
    got = [(e.type, e.data.get("reason")) for e in ev]
    assert got == [("video_loss", "signal_loss"), ("camera_tamper", "too_dark"), ("camera_tamper", "too_blurry"),
                   ("camera_tamper", "scene_change"), ("camera_tamper_cleared", "scene_change"),
                   ("digital_input", None), ("motion", None)]
    assert all(e.device == "cam-a1" and e.tags["type"] == "camera" for e in ev)
    assert ev[0].severity == "warning" and ev[0].data["source"] == "VideoSource_1"
    assert ev[5].data == {"input": "DI_0", "state": True, "topic": "tns1:Device/Trigger/DigitalInput",
                          "origin": "onvif"}
    assert ev[6].data["rule"] == "MyMotionDetectorRule" and ev[6].data["active"] is True
    sample = [r for r in recs if isinstance(r, Sample)][0]
    assert sample.fields["events"] == 9
    assert d.diagnostics()["events"]["unhandled_topics"] == {"tns1:Monitoring/ProcessorUsage": 1}


async def test_renew_and_resubscribe_after_camera_forgets(sim, creds):
    d = _driver(sim, creds, subscription_s=6, pull_timeout_s=0.2)
    try:
        await d.poll()
        await asyncio.sleep(3.2)  # past half of the 6 s subscription -> Renew
        await d.poll()
        assert "Renew" in sim.ops and d.renewals == 1
        sim.expire_subscriptions()  # camera rebooted
        recs = await d.poll()  # PullMessages fault -> new subscription, poll still succeeds
        assert any(isinstance(r, Sample) for r in recs)
        assert sim.ops.count("CreatePullPointSubscription") == 2 and sim.subscriptions == 1
        sim.push("tns1:VideoSource/SignalLoss", {"VideoSourceToken": "VS"}, {"State": "true"})
        recs = await d.poll()
        assert [r.type for r in recs if isinstance(r, Event)] == ["video_loss"]
    finally:
        await d.close()


async def test_wrong_password_is_auth_and_never_leaks(sim, creds, caplog):
    caplog.set_level(logging.DEBUG)
    user, pw = creds
    wrong = "not-" + pw
    d = create("cam-a1", Options(host="127.0.0.1", port=sim.port, username=user, password=wrong), {})
    with pytest.raises(DeviceError) as ei:
        await d.poll()
    assert ei.value.reason == "auth"
    assert "NotAuthorized" in str(ei.value)
    assert sim.auth_failures >= 1
    diag = json.dumps(d.diagnostics())
    await d.close()
    for text in (str(ei.value), diag, caplog.text):
        assert wrong not in text and pw not in text
    assert '"password": "**REDACTED**"' in diag and d.diagnostics()["last_error"].startswith("auth")


async def test_password_file_and_options_validation(sim, creds, tmp_path):
    user, pw = creds
    pf = tmp_path / "cam.pass"
    pf.write_text(pw + "\n")
    d = create("cam-a1", Options(host="127.0.0.1", port=sim.port, username=user, password_file=pf,
                                 events=False), {})
    try:
        recs = await d.poll()
        assert any(isinstance(r, Facts) for r in recs)
        assert "CreatePullPointSubscription" not in sim.ops
    finally:
        await d.close()
    with pytest.raises(ValidationError):
        Options(host="cam", username="u")  # no password at all
    with pytest.raises(ValidationError):
        Options(host="cam", username="u", password="x", password_file=pf)
    with pytest.raises(ValidationError):
        Options(host="cam", password="x")  # no default user
    with pytest.raises(ValidationError, match="password_file"):  # checked when the config is loaded
        Options(host="127.0.0.1", port=sim.port, username=user, password_file=tmp_path / "nope")
    gone = tmp_path / "gone.pass"
    gone.write_text(pw + "\n")
    d = create("x", Options(host="127.0.0.1", port=sim.port, username=user, password_file=gone), {})
    gone.unlink()  # removed after loading: re-read per session -> config error
    with pytest.raises(DeviceError) as ei:
        await d.poll()
    assert ei.value.reason == "config"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_unreachable_timeout_protocol(sim, creds):
    user, pw = creds
    d = create("x", Options(host="127.0.0.1", port=_free_port(), username=user, password=pw, timeout_s=3), {})
    with pytest.raises(DeviceError) as ei:
        await d.poll()
    await d.close()
    assert ei.value.reason == "unreachable"

    sim.delay_s = 1.5
    d = _driver(sim, creds, timeout_s=0.5)
    with pytest.raises(DeviceError) as ei:
        await d.poll()
    await d.close()
    assert ei.value.reason == "timeout"

    sim.delay_s = 0
    sim.garbage = True
    d = _driver(sim, creds)
    with pytest.raises(DeviceError) as ei:
        await d.poll()
    await d.close()
    assert ei.value.reason == "protocol"


def test_parser_registry():
    assert parsers.lookup("tns1:VideoSource/ImageTooDark/RecordingService") is parsers.PARSERS[
        "tns1:VideoSource/ImageTooDark"]
    assert parsers.lookup("tns:VideoSource/SignalLoss/") is parsers.PARSERS["tns1:VideoSource/SignalLoss"]
    assert parsers.lookup("tns1:VideoSource") is None
    with pytest.raises(ValueError):
        parsers.parser("tns1:VideoSource/SignalLoss")(lambda m: None)

    @parsers.parser("tns1:Test/OnlyHere")
    def _p(msg):
        return parsers.Parsed("test_event", "info", {"v": msg.data.get("V")})

    try:
        msg = parsers.OnvifMessage("tns1:Test/OnlyHere/Sub", "Changed", None, {}, {"V": "1"})
        assert parsers.lookup(msg.topic)(msg).data == {"v": "1"}
    finally:
        del parsers.PARSERS["tns1:Test/OnlyHere"]


async def test_agent_config_and_scheduler_cycle(sim, creds, tmp_path):
    """agent.yaml validation of the onvif block, and one scheduler cycle (agent_poll sample)."""
    from edge_agent.config import load
    from edge_agent.scheduler import poll_once

    user, pw = creds
    (tmp_path / "mqtt.pass").write_text("x\n")
    (tmp_path / "cam.pass").write_text(pw + "\n")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""
agent: {{id: bldg-a, site: north, building: A}}
mqtt: {{host: 127.0.0.1, username: bldg-a, password_file: {tmp_path / 'mqtt.pass'}}}
queue: {{path: {tmp_path / 'q.db'}}}
devices:
  - id: cam-a101
    driver: onvif
    interval_s: 60
    type: camera
    room: A-101
    options: {{host: 127.0.0.1, port: {sim.port}, username: {user}, password_file: {tmp_path / 'cam.pass'}}}
""")
    loaded = load(cfg)
    dev, opts = loaded.model.devices[0], loaded.options[0]
    d = create(dev.id, opts, dev.driver_tags())
    got = []
    try:
        s = await poll_once(dev.id, dev.driver, d, dev.deadline, got.extend)
    finally:
        await d.close()
    assert s.fields["ok"] is True
    assert any(isinstance(r, Facts) for r in got)
    assert [r for r in got if isinstance(r, Sample)][0].tags == {"room": "A-101", "type": "camera"}
    cfg.write_text(cfg.read_text().replace(f"port: {sim.port}", f"port: {sim.port}, pasword: x"))
    with pytest.raises(Exception) as ei:
        load(cfg)
    assert "devices.0.options.pasword" in str(ei.value)


async def test_camera_with_wrong_clock_needs_adjust_time(sim, creds):
    """Cameras reject UsernameTokens whose Created is far from their clock: auth error, and the
    clock offset is still measured (pre-auth); adjust_time signs with the camera's time."""
    sim.clock_skew_s, sim.max_created_skew_s = 3600.0, 60.0
    d = _driver(sim, creds, events=False)
    with pytest.raises(DeviceError) as ei:
        await d.poll()
    await d.close()
    assert ei.value.reason == "auth"
    assert "camera clock is +3600 s off" in str(ei.value) and "adjust_time" in str(ei.value)
    assert d.clock_offset_s is not None and abs(d.clock_offset_s - 3600) <= 2
    d = _driver(sim, creds, events=False, adjust_time=True)
    try:
        recs = await d.poll()
    finally:
        await d.close()
    (f,) = [r for r in recs if isinstance(r, Facts)]
    assert 3598 <= f.facts["clock_offset_s"] <= 3602


def test_normalize_lxml_message_and_bad_times():
    """Vendor messages zeep cannot bind arrive as lxml elements; Hikvision-style zero times are dropped."""
    from types import SimpleNamespace

    from lxml import etree

    el = etree.fromstring(
        '<tt:Message xmlns:tt="http://www.onvif.org/ver10/schema" UtcTime="0000-00-00T00:00:00Z"'
        ' PropertyOperation="Changed"><tt:Source><tt:SimpleItem Name="InputToken" Value="DI_1"/></tt:Source>'
        '<tt:Data><tt:SimpleItem Name="LogicalState" Value="true"/></tt:Data></tt:Message>')
    nm = SimpleNamespace(Topic=SimpleNamespace(_value_1="ns2:Device/Trigger/DigitalInput/"),
                         Message=SimpleNamespace(_value_1=el))
    msg = parsers.normalize(nm)
    assert msg.topic == "tns1:Device/Trigger/DigitalInput" and msg.utc_ms is None
    assert msg.source == {"InputToken": "DI_1"} and msg.data == {"LogicalState": "true"}
    p = parsers.lookup(msg.topic)(msg)
    assert (p.type, p.data["input"], p.data["state"]) == ("digital_input", "DI_1", True)
    assert parsers.normalize(SimpleNamespace(Topic=None, Message=None)) is None
