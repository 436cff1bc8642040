"""drivers/pjlink against the PJLink spec simulator (tests/pjlink_sim.py) on loopback."""
import asyncio
import socket

import pytest

from drivers.base import DeviceError, Event, Facts, Sample
from drivers.pjlink import Options, create, parse_reply
from tests.pjlink_sim import PJLinkSim, ProjectorState

pytestmark = pytest.mark.timeout(30)


def drv(sim, **opts):
    return create("pj1", Options(host="127.0.0.1", port=sim.port, timeout_s=2.0, **opts), {"room": "A-101"})


def split(records):
    return ([r for r in records if isinstance(r, Sample)], [r for r in records if isinstance(r, Event)],
            [r for r in records if isinstance(r, Facts)])


async def test_class1_no_auth():
    st = ProjectorState(pj_class=1, power="1", lamps=[(1500, 1), (20, 0)], erst="000000", avmt="11")
    async with PJLinkSim(state=st) as sim:
        samples, events, facts = split(await drv(sim).poll())
    (s,) = samples
    assert s.measurement == "projector" and s.device == "pj1" and s.tags == {"room": "A-101"}
    f = s.fields
    assert f["power_state"] == "on" and f["power_code"] == 1 and f["reachable"] is True
    assert f["lamp_hours"] == 1500 and f["lamp1_hours"] == 1500 and f["lamp2_hours"] == 20
    assert f["lamp1_on"] is True and f["lamp2_on"] is False and f["lamps_on"] == 1
    assert f["errors"] == "" and f["err_lamp"] == 0 and f["failure"] is False
    assert f["input"] == "31" and f["input_type"] == "digital"
    assert f["video_mute"] is True and f["audio_mute"] is False
    assert "filter_hours" not in f and "query_errors" not in f
    assert events == []
    (fa,) = facts
    assert fa.facts == {"pjlink_class": "1", "manufacturer": "ACME", "vendor": "ACME", "model": "PJ-4000",
                        "info": "fw-base", "name": "Room A-101"}


async def test_class2_with_auth():
    pw = "s3cret-pj"
    async with PJLinkSim(password=pw, state=ProjectorState(pj_class=2, power="0")) as sim:
        d = drv(sim, password=pw)
        samples, _, facts = split(await d.poll())
        assert sim.stats["auth_failures"] == 0
        (s,) = samples
        assert s.fields["power_state"] == "standby" and s.fields["filter_hours"] == 321
        assert s.fields["query_errors"] == "INPT=ERR3"  # no input while in standby
        (fa,) = facts
        assert fa.facts["pjlink_class"] == "2" and fa.facts["serial"] == "SN0123456"
        assert fa.facts["firmware"] == "2.3.1" and fa.facts["lamp_model"] == "LMP-99"
        # second poll: facts unchanged and not due -> none; a fresh digest per connection
        samples, _, facts = split(await d.poll())
        assert len(samples) == 1 and facts == [] and sim.stats["connections"] == 2


async def test_password_file(tmp_path):
    f = tmp_path / "pj.pass"
    f.write_text("filepass\n")
    assert Options(host="x", password_file=str(f)).password.get_secret_value() == "filepass"
    with pytest.raises(ValueError, match="32 bytes"):
        Options(host="x", password="x" * 33)


async def test_wrong_password_is_auth():
    async with PJLinkSim(password="right") as sim:
        with pytest.raises(DeviceError) as e:
            await drv(sim, password="wrong").poll()
        assert e.value.reason == "auth" and "ERRA" in str(e.value)
        assert sim.stats["auth_failures"] == 1


async def test_auth_needed_but_no_password():
    async with PJLinkSim(password="right") as sim:
        with pytest.raises(DeviceError) as e:
            await drv(sim).poll()
    assert e.value.reason == "auth" and "no password" in str(e.value)


async def test_password_configured_projector_without_security():
    async with PJLinkSim() as sim:
        samples, _, _ = split(await drv(sim, password="unused").poll())
    assert samples[0].fields["power_state"] == "standby"


async def test_err3_unavailable_and_err1_missing_lamp():
    st = ProjectorState(pj_class=1, power="3", lamps=None)
    async with PJLinkSim(state=st) as sim:
        sim.force["ERST"] = "ERR3"
        samples, events, _ = split(await drv(sim).poll())
    f = samples[0].fields
    assert f["power_state"] == "warming"
    assert "lamp_hours" not in f and "err_lamp" not in f
    assert f["query_errors"] == "ERST=ERR3,INPT=ERR3"  # LAMP=ERR1 (no lamp) is not an error
    assert events == []


@pytest.mark.parametrize("answer,name", [("ERR1", "undefined command"), ("ERR2", "out of parameter")])
async def test_powr_errors_are_named_protocol_errors(answer, name):
    async with PJLinkSim() as sim:
        sim.force["POWR"] = answer
        with pytest.raises(DeviceError) as e:
            await drv(sim).poll()
    assert e.value.reason == "protocol" and answer in str(e.value) and name in str(e.value)


async def test_powr_err4_is_a_critical_fault_event():
    async with PJLinkSim() as sim:
        sim.force["POWR"] = "ERR4"
        samples, events, _ = split(await drv(sim).poll())
    assert samples[0].fields["failure"] is True and "power_state" not in samples[0].fields
    assert [(e.type, e.severity, e.data["component"]) for e in events] == [("projector_fault", "critical", "projector")]


async def test_garbage_is_protocol():
    async with PJLinkSim() as sim:
        sim.garbage = b"\x00\xffHELLO\r"
        with pytest.raises(DeviceError) as e:
            await drv(sim).poll()
    assert e.value.reason == "protocol"


async def test_bad_greeting_is_protocol():
    async with PJLinkSim() as sim:
        sim.greeting = b"SSH-2.0-OpenSSH\r"
        with pytest.raises(DeviceError) as e:
            await drv(sim).poll()
    assert e.value.reason == "protocol"


async def test_silent_peer_is_timeout():
    async def silent(r, w):
        await asyncio.sleep(10)
        w.close()

    srv = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        d = create("pj1", Options(host="127.0.0.1", port=port, timeout_s=0.3), {})
        with pytest.raises(DeviceError) as e:
            await d.poll()
        assert e.value.reason == "timeout"
    finally:
        srv.close()


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def test_refused_is_unreachable():
    d = create("pj1", Options(host="127.0.0.1", port=free_port(), timeout_s=1), {})
    with pytest.raises(DeviceError) as e:
        await d.poll()
    assert e.value.reason == "unreachable"


async def test_error_status_changes_emit_events():
    st = ProjectorState(pj_class=2, power="1", erst="000000")
    async with PJLinkSim(state=st) as sim:
        d = drv(sim)
        _, events, _ = split(await d.poll())
        assert events == []
        st.erst = "010000"  # lamp warning
        samples, events, _ = split(await d.poll())
        assert samples[0].fields["err_lamp"] == 1 and samples[0].fields["errors"] == "lamp:warning"
        assert [(e.type, e.severity, e.data) for e in events] == [
            ("projector_fault", "warning", {"component": "lamp", "status": "warning", "previous": "ok"})]
        st.erst = "022000"  # lamp error, temperature error
        samples, events, _ = split(await d.poll())
        assert samples[0].fields["errors"] == "lamp:error,temp:error"
        assert sorted((e.data["component"], e.severity) for e in events) == [("lamp", "critical"), ("temp", "critical")]
        _, events, _ = split(await d.poll())
        assert events == []  # no change, no event
        st.erst = "000000"
        _, events, _ = split(await d.poll())
        assert sorted((e.type, e.data["component"]) for e in events) == [
            ("projector_fault_cleared", "lamp"), ("projector_fault_cleared", "temp")]


async def test_eco_standby_when_standby_projector_goes_dark():
    sim = await PJLinkSim(state=ProjectorState(power="0")).start()
    d = drv(sim, eco_standby=True)
    samples, _, _ = split(await d.poll())
    assert samples[0].fields["power_state"] == "standby"
    await sim.stop()  # the projector switched its network off
    records = await d.poll()
    assert [(r.measurement, r.fields) for r in records] == [
        ("projector", {"power_state": "eco_standby", "reachable": False})]
    # without eco_standby the same situation is a failure
    d2 = drv(sim)
    d2._last_power = "standby"
    with pytest.raises(DeviceError) as e:
        await d2.poll()
    assert e.value.reason == "unreachable"


async def test_eco_standby_does_not_hide_a_projector_that_was_on():
    sim = await PJLinkSim(state=ProjectorState(power="1")).start()
    d = drv(sim, eco_standby=True)
    await d.poll()
    await sim.stop()
    with pytest.raises(DeviceError) as e:
        await d.poll()
    assert e.value.reason == "unreachable"


def test_parse_reply_rejects_reply_for_other_command():
    with pytest.raises(DeviceError) as e:
        parse_reply(b"%1LAMP=1 0", "1", "POWR")
    assert e.value.reason == "protocol"
    assert parse_reply(b"%2SNUM=ABC", "2", "SNUM").param == "ABC"
