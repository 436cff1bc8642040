"""mqtt_sensors against a real Mosquitto (password auth) on loopback."""
from __future__ import annotations

import asyncio
import json

import aiomqtt
import pytest
from pydantic import ValidationError

from drivers.base import DeviceError, Facts, Sample
from drivers.mqtt_sensors import Options, create
from tests.peers import free_port


def opts(port: int, user: str, password: str, **kw) -> Options:
    return Options.model_validate({
        "host": "127.0.0.1", "port": port, "username": user, "password": password, **kw,
        "topics": kw.pop("topics", None) or [
            {"topic": "zigbee2mqtt/kitchen-fridge-1", "device": "kitchen-fridge-1", "type": "fridge",
             "room": "K-001", "vendor": "Aqara", "model": "WSDCGQ11LM"},
            {"topic": "tele/+/SENSOR", "device": "hot-{1}", "type": "hot_holding", "room": "K-002",
             "fields": {"DS18B20.Temperature": "temperature", "ANALOG.A0": {"measurement": "gas", "field": "lel_pct",
                                                                           "scale": 0.1}}},
            {"topic": "zigbee2mqtt/+", "device": "{1}", "type": "freezer", "exclude": ["zigbee2mqtt/bridge"]},
        ]})


async def wait_for(cond, what: str, limit: float = 10.0):
    async with asyncio.timeout(limit):
        while not cond():
            await asyncio.sleep(0.02)


@pytest.fixture
async def running(mosquitto, mqtt_users):
    records: list = []
    drv = create("kitchen-gw", opts(mosquitto.port, "agent-a", mqtt_users["agent-a"]),
                 {"type": "gateway", "room": "K-000", "site": "north"})
    task = asyncio.create_task(drv.run(records.append))
    await wait_for(drv.connected.is_set, "subscribed")
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, username="collector",
                              password=mqtt_users["collector"]) as pub:
        yield drv, records, pub
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def samples(records, device=None, m=None):
    return [r for r in records if isinstance(r, Sample) and (device is None or r.device == device)
            and (m is None or r.measurement == m)]


async def test_sensor_json_to_samples_garbage_counted(running):
    drv, records, pub = running
    await pub.publish("zigbee2mqtt/kitchen-fridge-1",
                      json.dumps({"temperature": 7.4, "humidity": 61, "battery": 90, "linkquality": 120}))
    await wait_for(lambda: samples(records, "kitchen-fridge-1", "temperature"), "fridge sample")
    t = samples(records, "kitchen-fridge-1", "temperature")[0]
    assert t.fields == {"value": 7.4}
    assert t.tags == {"site": "north", "room": "K-001", "type": "fridge"}  # the gateway's type/room not inherited
    assert samples(records, "kitchen-fridge-1", "humidity")[0].fields == {"value": 61}
    assert samples(records, "kitchen-fridge-1", "battery")[0].fields == {"pct": 90}
    facts = [r for r in records if isinstance(r, Facts) and r.device == "kitchen-fridge-1"][0].facts
    assert facts["type"] == "fridge" and facts["room"] == "K-001" and facts["model"] == "WSDCGQ11LM"

    # garbage on several topics: counted, logged with the topic, the driver carries on
    await pub.publish("zigbee2mqtt/freezer-2", b"\x00\xffnot json")
    await pub.publish("zigbee2mqtt/freezer-2", json.dumps(["a", "list"]))
    await pub.publish("tele/bain-marie/SENSOR", json.dumps({"DS18B20": {"Temperature": "hot"}}))
    await pub.publish("zigbee2mqtt/bridge", b"online")  # excluded: not a sensor
    await wait_for(lambda: drv.stats["malformed"] >= 3 and drv.stats["unmatched"] >= 1, "malformed counted")
    assert drv.malformed_by_topic == {"zigbee2mqtt/freezer-2": 2, "tele/bain-marie/SENSOR": 1}

    await pub.publish("zigbee2mqtt/freezer-2", json.dumps({"temperature": -16.2, "battery": 80}))
    await pub.publish("tele/bain-marie/SENSOR", json.dumps({"Time": "2026-11-23T07:00:00",
                                                            "DS18B20": {"Temperature": 63.5}, "ANALOG": {"A0": 42}}))
    await wait_for(lambda: samples(records, "freezer-2") and samples(records, "hot-bain-marie"), "after garbage")
    fz = samples(records, "freezer-2", "temperature")[0]
    assert fz.fields == {"value": -16.2} and fz.tags["type"] == "freezer"
    hot = {s.measurement: s for s in samples(records, "hot-bain-marie")}
    assert hot["temperature"].fields == {"value": 63.5} and hot["temperature"].tags["type"] == "hot_holding"
    assert hot["gas"].fields == {"lel_pct": 4.2}
    assert drv.stats["malformed"] == 3


async def test_retained_values_ignored(mosquitto, mqtt_users):
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, username="collector",
                              password=mqtt_users["collector"]) as pub:
        await pub.publish("zigbee2mqtt/old-fridge", json.dumps({"temperature": 9.9}), qos=1, retain=True)
    records: list = []
    drv = create("gw", opts(mosquitto.port, "agent-a", mqtt_users["agent-a"]), {})
    task = asyncio.create_task(drv.run(records.append))
    await wait_for(lambda: drv.stats["retained_ignored"] == 1, "retained seen")
    task.cancel()
    assert not samples(records, "old-fridge")


async def test_wrong_password_is_auth(mosquitto, mqtt_users):
    drv = create("gw", opts(mosquitto.port, "agent-a", "wrong-password"), {})
    with pytest.raises(DeviceError) as ei:
        await asyncio.wait_for(drv.run(lambda r: None), 15)
    assert ei.value.reason == "auth" and "agent-a" in str(ei.value)


async def test_no_broker_is_unreachable():
    drv = create("gw", opts(free_port(), "agent-a", "x"), {})
    with pytest.raises(DeviceError) as ei:
        await asyncio.wait_for(drv.run(lambda r: None), 15)
    assert ei.value.reason == "unreachable"


def test_options_validation(tmp_path):
    base = {"host": "h", "username": "u", "topics": [{"topic": "a/+", "device": "{1}"}]}
    with pytest.raises(ValidationError, match="anonymous access is not allowed"):
        Options.model_validate(base)
    with pytest.raises(ValidationError, match="username"):
        Options.model_validate({**base, "username": "", "password": "p"})
    with pytest.raises(ValidationError, match="does not exist"):
        Options.model_validate({**base, "password_file": str(tmp_path / "nope")})
    with pytest.raises(ValidationError, match=r"uses \{2\} but topic 'a/\+' has 1"):
        Options.model_validate({**base, "password": "p", "topics": [{"topic": "a/+", "device": "{2}"}]})
    with pytest.raises(ValidationError, match="'#' must be"):
        Options.model_validate({**base, "password": "p", "topics": [{"topic": "a/#/b", "device": "x"}]})
    pf = tmp_path / "pw"
    pf.write_text("s3cret\n")
    o = Options.model_validate({**base, "password_file": str(pf)})
    assert o.secret() == "s3cret"


def test_handle_paths_and_values():
    o = Options.model_validate({"host": "h", "username": "u", "password": "p", "topics": [
        {"topic": "shellies/+/sensor/temperature", "device": "{1}", "fields": {"$": "temperature"}},
        {"topic": "site/#", "device": "x-{#}", "fields": {
            "sensors.1.t": {"measurement": "temperature", "scale": 0.1},
            "POWER": {"measurement": "relay", "field": "on", "values": {"ON": True, "OFF": False}}}}]})
    d = create("gw", o, {})
    r = d.handle("shellies/fr3/sensor/temperature", b"3.5")
    assert [s.fields for s in r if isinstance(s, Sample)] == [{"value": 3.5}] and r[-1].device == "fr3"
    r = d.handle("site/a/b", json.dumps({"sensors": [{"t": 1}, {"t": 45}], "POWER": "ON"}).encode())
    got = {s.measurement: s.fields for s in r if isinstance(s, Sample)}
    assert got == {"temperature": {"value": 4.5}, "relay": {"on": True}} and r[-1].device == "x-a/b"
    assert d.handle("site/a", b'{"temperature": NaN}') == [] and d.stats["malformed"] == 1
    assert d.handle("other", b"{}") == [] and d.stats["unmatched"] == 1


async def test_broker_lost_is_unreachable_and_restart_works(mosquitto, mqtt_users):
    records: list = []
    drv = create("gw", opts(mosquitto.port, "agent-a", mqtt_users["agent-a"]), {})
    task = asyncio.create_task(drv.run(records.append))
    await wait_for(drv.connected.is_set, "subscribed")
    mosquitto.stop()
    with pytest.raises(DeviceError) as ei:
        await asyncio.wait_for(task, 60)
    assert ei.value.reason == "unreachable" and "lost" in str(ei.value)
    mosquitto.start()  # same port: the agent's restart of the driver picks up again
    task = asyncio.create_task(drv.run(records.append))
    await wait_for(drv.connected.is_set, "subscribed again")
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, username="collector",
                              password=mqtt_users["collector"]) as pub:
        await pub.publish("zigbee2mqtt/kitchen-fridge-1", json.dumps({"temperature": 3.0}))
        await wait_for(lambda: samples(records, "kitchen-fridge-1"), "sample after restart")
    task.cancel()
