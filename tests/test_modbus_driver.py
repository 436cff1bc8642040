"""Modbus driver against a real pymodbus TCP server on loopback."""
from __future__ import annotations

import asyncio
import socket
import struct

import pytest
from pydantic import ValidationError
from pymodbus.datastore import ModbusDeviceContext, ModbusServerContext, ModbusSparseDataBlock
from pymodbus.server import ModbusTcpServer

from drivers.base import DeviceError, Facts, Sample
from drivers.modbus import Options, create
from drivers.modbus.registers import Register, decode, plan
from edge_agent.scheduler import poll_once
from tests.peers import free_port


def i16(v: int) -> int:
    return v & 0xFFFF


def f32(v: float, order: str = "big") -> list[int]:
    hi, lo = struct.unpack(">HH", struct.pack(">f", v))
    return [hi, lo] if order == "big" else [lo, hi]


def block(regs: dict[int, int]) -> ModbusSparseDataBlock:
    # sparse: PDU address a lives at key a; a missing key answers "illegal data address"
    return ModbusSparseDataBlock(dict(regs))


def words(start: int, values: list[int]) -> dict[int, int]:
    return {start + i: v for i, v in enumerate(values)}


@pytest.fixture
async def server():
    fridge = ModbusDeviceContext(hr=block({0: i16(30)}),
                                 ir=block({0: i16(47), 1: i16(-120), 2: 0}))
    freezer = ModbusDeviceContext(hr=block({0: i16(-185), **words(10, f32(-18.25)), **words(12, f32(21.5, "little")),
                                            **words(20, [0xFFFF, 0xFFFE]),  # int32 -2
                                            **words(22, [0x0001, 0x0000]),  # uint32 65536
                                            30: 32767}),
                                  ir=block({0: i16(-211)}))
    gas = ModbusDeviceContext(hr=block({10: 100}), ir=block({0: 123, 1: 1}))
    ctx = ModbusServerContext(devices={1: fridge, 2: freezer, 3: gas}, single=False)
    port = free_port()
    srv = ModbusTcpServer(ctx, address=("127.0.0.1", port))
    task = asyncio.create_task(srv.serve_forever())
    for _ in range(100):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            break
        except OSError:
            await asyncio.sleep(0.05)
    yield port
    await srv.shutdown()
    task.cancel()


def by_m(records) -> dict[str, Sample]:
    return {r.measurement: r for r in records if isinstance(r, Sample)}


async def test_fridge_profile_decodes_in_two_requests(server):
    d = create("fridge-1", Options.model_validate({"host": "127.0.0.1", "port": server, "unit": 1,
                                                    "profile": "cold-controller", "serial": "SN1"}),
               {"type": "fridge", "room": "K-001"})
    try:
        recs = await d.poll()
    finally:
        await d.close()
    s = by_m(recs)
    assert s["temperature"].fields == {"value": 4.7, "evaporator": -12.0, "setpoint": 3.0}
    assert s["temperature"].tags == {"type": "fridge", "room": "K-001"}
    assert s["controller"].fields == {"alarm_bits": 0}
    assert s["modbus"].fields == {"registers_ok": 4, "registers_failed": 0, "requests": 2}
    facts = [r for r in recs if isinstance(r, Facts)][0].facts
    assert facts["vendor"] == "generic" and facts["model"] == "cold-controller" and facts["serial"] == "SN1"
    assert facts["units"]["temperature.value"] == "°C"
    assert d.errors == {}


async def test_freezer_negative_int16_float32_int32_word_order(server):
    regs = [
        {"name": "air", "address": 0, "type": "int16", "scale": 0.1, "measurement": "temperature"},
        {"name": "probe_f", "address": 10, "type": "float32", "measurement": "temperature", "field": "probe"},
        {"name": "ambient", "address": 12, "type": "float32", "word_order": "little", "measurement": "ambient"},
        {"address": 20, "type": "int32", "measurement": "raw", "field": "i32"},
        {"address": 22, "type": "uint32", "measurement": "raw", "field": "u32", "scale": 0.5, "offset": 1},
        {"name": "core", "kind": "input", "address": 0, "scale": 0.1, "measurement": "temperature", "field": "core"},
    ]
    d = create("freezer-1", Options.model_validate({"host": "127.0.0.1", "port": server, "slave": 2,
                                                     "registers": regs, "model": "XF-9", "vendor": "Acme"}), {})
    recs = await d.poll()
    await d.close()
    s = by_m(recs)
    assert s["temperature"].fields == {"value": -18.5, "probe": -18.25, "core": -21.1}
    assert s["ambient"].fields == {"value": 21.5}
    assert s["raw"].fields == {"i32": -2, "u32": 32769.0}
    # holding 0 and 10-13 and 20-23 are three blocks (gaps), input 0 one: 4 requests
    assert s["modbus"].fields["requests"] == 4
    facts = [r for r in recs if isinstance(r, Facts)][0].facts
    assert facts["vendor"] == "Acme" and facts["model"] == "XF-9"
    # facts only on the first poll (then hourly)
    recs2 = await d.poll()
    await d.close()
    assert not [r for r in recs2 if isinstance(r, Facts)]


async def test_missing_register_named_others_kept(server):
    regs = [
        {"name": "air", "address": 0, "scale": 0.1, "measurement": "temperature"},
        {"name": "door", "address": 1, "measurement": "door", "field": "open"},   # not in the device: hole
        {"name": "humidity", "address": 50, "measurement": "humidity"},           # not in the device
        {"name": "probe_f", "address": 10, "type": "float32", "measurement": "temperature", "field": "probe"},
        {"name": "broken", "address": 30, "measurement": "temperature", "field": "door_probe",
         "invalid": [32767]},                                                      # sensor fault
    ]
    d = create("freezer-1", Options.model_validate({"host": "127.0.0.1", "port": server, "unit": 2,
                                                     "registers": regs}), {})
    recs = await d.poll()
    await d.close()
    s = by_m(recs)
    assert s["temperature"].fields == {"value": -18.5, "probe": -18.25}
    assert "door" not in s and "humidity" not in s
    errs = d.errors
    assert set(errs) == {"door (holding register 1)", "humidity (holding register 50)",
                         "broken (holding register 30)"}
    assert "illegal data address (Modbus exception 2)" in errs["door (holding register 1)"]
    assert "illegal data address" in errs["humidity (holding register 50)"]
    assert "sensor fault" in errs["broken (holding register 30)"]
    m = s["modbus"].fields
    assert m["registers_ok"] == 2 and m["registers_failed"] == 3
    assert "humidity (holding register 50)" in m["error"]


async def test_nothing_readable_is_protocol_error_naming_register(server):
    d = create("gas-1", Options.model_validate({"host": "127.0.0.1", "port": server, "unit": 3, "registers": [
        {"name": "lel", "kind": "holding", "address": 200, "measurement": "gas", "field": "lel_pct"}]}), {})
    with pytest.raises(DeviceError) as ei:
        await d.poll()
    await d.close()
    assert ei.value.reason == "protocol"
    assert "lel (holding register 200)" in str(ei.value)
    assert "illegal data address (Modbus exception 2)" in str(ei.value)


async def test_gas_profile(server):
    d = create("gas-1", Options.model_validate({"host": "127.0.0.1", "port": server, "unit": 3,
                                                 "profile": "gas-detector"}), {"type": "gas_sensor"})
    s = by_m(await d.poll())
    await d.close()
    assert s["gas"].fields == {"lel_pct": 12.3, "status": 1, "alarm1_lel_pct": 10.0}


async def test_unknown_unit_is_protocol_error(server):
    d = create("x", Options.model_validate({"host": "127.0.0.1", "port": server, "unit": 9,
                                             "profile": "cold-controller"}), {})
    with pytest.raises(DeviceError) as ei:
        await d.poll()
    await d.close()
    assert ei.value.reason == "protocol" and "Modbus exception" in str(ei.value)


async def test_closed_port_is_unreachable():
    d = create("x", Options.model_validate({"host": "127.0.0.1", "port": free_port(), "timeout_s": 1,
                                             "profile": "cold-controller"}), {})
    with pytest.raises(DeviceError) as ei:
        await d.poll()
    assert ei.value.reason == "unreachable" and "connection refused" in str(ei.value)


@pytest.fixture
def silent_port():
    """Accepts TCP connections (kernel backlog) and never answers a Modbus request."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield s.getsockname()[1]
    s.close()


async def test_silent_device_times_out(silent_port):
    d = create("x", Options.model_validate({"host": "127.0.0.1", "port": silent_port, "timeout_s": 0.3,
                                             "profile": "cold-controller"}), {})
    with pytest.raises(DeviceError) as ei:
        await d.poll()
    await d.close()
    assert ei.value.reason == "timeout" and "no response" in str(ei.value)


async def test_deadline_respected(silent_port):
    d = create("x", Options.model_validate({"host": "127.0.0.1", "port": silent_port, "timeout_s": 30,
                                             "profile": "cold-controller"}), {})
    got = []
    # the scheduler's 0.5 s deadline wins over the 30 s request timeout; the guard only catches a hang
    s = await asyncio.wait_for(poll_once("x", "modbus", d, 0.5, got.extend), 10)
    assert s.fields["ok"] is False and s.fields["reason"] == "timeout" and got == []
    assert d._client is None  # the cancelled connection was dropped
    await d.close()


def test_options_errors():
    with pytest.raises(ValidationError, match="unknown profile 'nope'.*available: .*cold-controller"):
        Options.model_validate({"host": "h", "profile": "nope"})
    with pytest.raises(ValidationError, match="no registers"):
        Options.model_validate({"host": "h"})
    with pytest.raises(ValidationError, match="both map to temperature.value"):
        Options.model_validate({"host": "h", "profile": "cold-controller",
                                "registers": [{"address": 9, "measurement": "temperature"}]})
    with pytest.raises(ValidationError, match="extra"):
        Options.model_validate({"host": "h", "profile": "cold-controller", "colour": 1})


def test_plan_and_decode():
    R = lambda **k: Register(measurement="m", field=f"f{k['address']}{k.get('kind', '')}", **k)  # noqa: E731
    regs = [R(address=0), R(address=1, type="float32"), R(address=3), R(address=5), R(address=0, kind="input")]
    b = plan(regs)
    assert [(x.kind, x.start, x.count) for x in b] == [("holding", 0, 4), ("holding", 5, 1), ("input", 0, 1)]
    assert [(x.start, x.count) for x in plan(regs, max_gap=1) if x.kind == "holding"] == [(0, 6)]
    assert [(x.start, x.count) for x in plan(regs, max_count=2) if x.kind == "holding"] == [(0, 1), (1, 2), (3, 1), (5, 1)]
    assert decode(Register(address=0, measurement="m", type="int16", scale=0.1), [0xFF4B]) == -18.1
    assert decode(Register(address=0, measurement="m", type="float32", word_order="little"), f32(4.5, "little")) == 4.5


async def test_server_restart_reconnects():
    port = free_port()
    ctx = ModbusServerContext(devices={1: ModbusDeviceContext(hr=block({0: 30}), ir=block({0: 47, 1: 0, 2: 0}))},
                              single=False)

    async def start():
        srv = ModbusTcpServer(ctx, address=("127.0.0.1", port))
        task = asyncio.create_task(srv.serve_forever())
        for _ in range(100):
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                return srv, task
            except OSError:
                await asyncio.sleep(0.05)
        raise TimeoutError("modbus server did not start")

    srv, task = await start()
    d = create("f", Options.model_validate({"host": "127.0.0.1", "port": port, "timeout_s": 1,
                                             "profile": "cold-controller"}), {})
    assert by_m(await d.poll())["temperature"].fields["value"] == 4.7
    await srv.shutdown()
    task.cancel()
    with pytest.raises(DeviceError) as ei:
        await d.poll()
    assert ei.value.reason in ("unreachable", "timeout")
    srv, task = await start()
    assert by_m(await d.poll())["temperature"].fields["value"] == 4.7
    await d.close()
    await srv.shutdown()
    task.cancel()
