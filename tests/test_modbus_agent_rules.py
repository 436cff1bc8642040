"""agent.yaml with modbus + mqtt_sensors devices: `agent --check`, then real driver output
(pymodbus server, Mosquitto) replayed through `campus-sense rules test` with the
campus-default rules: the canteen alerts fire on what the drivers emit."""
from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

import aiomqtt
from pymodbus.datastore import ModbusDeviceContext, ModbusServerContext, ModbusSparseDataBlock
from pymodbus.server import ModbusTcpServer

from campus_sense.cli import main
from drivers.base import Sample
from edge_agent import config as cfgmod
from edge_agent.batcher import to_item
from tests.peers import free_port

REPO = Path(__file__).resolve().parent.parent
MIN = 60_000
T0 = 1_795_420_800_000  # 2026-11-23T08:00:00Z


async def test_agent_yaml_modbus_and_mqtt_sensors_fire_canteen_rules(tmp_path, mosquitto, mqtt_users, capsys):
    # fridge controller at 7.5 °C (unit 1), freezer at -12.0 °C (unit 2), gas detector at 12.3 % LEL (unit 3)
    ctx = ModbusServerContext(devices={
        1: ModbusDeviceContext(hr=ModbusSparseDataBlock({0: 30}), ir=ModbusSparseDataBlock({0: 75, 1: 0xFF88, 2: 0})),
        2: ModbusDeviceContext(hr=ModbusSparseDataBlock({0: 0xFF4C}),
                               ir=ModbusSparseDataBlock({0: 0xFF88, 1: 0xFF10, 2: 0})),
        3: ModbusDeviceContext(hr=ModbusSparseDataBlock({10: 100}), ir=ModbusSparseDataBlock({0: 123, 1: 1})),
    }, single=False)
    mport = free_port()
    srv = ModbusTcpServer(ctx, address=("127.0.0.1", mport))
    srv_task = asyncio.create_task(srv.serve_forever())

    pw = tmp_path / "mqtt.pass"
    pw.write_text(mqtt_users["agent-a"] + "\n")
    agent_yaml = tmp_path / "agent.yaml"
    agent_yaml.write_text(textwrap.dedent(f"""\
        agent: {{id: canteen-agent, site: north, building: C}}
        mqtt: {{host: 127.0.0.1, port: {mosquitto.port}, username: agent-a, password_file: {pw}, acl: custom}}
        queue: {{path: {tmp_path}/q.db}}
        devices:
          - id: canteen-fridge-1
            driver: modbus
            interval_s: 60
            room: C-010
            type: fridge
            options: {{host: 127.0.0.1, port: {mport}, unit: 1, profile: cold-controller, timeout_s: 2}}
          - id: canteen-freezer-1
            driver: modbus
            room: C-010
            type: freezer
            options:
              host: 127.0.0.1
              port: {mport}
              slave: 2
              profile: cold-controller
              vendor: Acme
              model: CF-200
          - id: canteen-gas-1
            driver: modbus
            room: C-011
            type: gas_sensor
            options: {{host: 127.0.0.1, port: {mport}, unit: 3, profile: gas-detector}}
          - id: kitchen-zigbee
            driver: mqtt_sensors
            type: gateway
            options:
              host: 127.0.0.1
              port: {mosquitto.port}
              username: agent-a
              password_file: {pw}
              topics:
                - {{topic: zigbee2mqtt/kitchen-fridge-2, device: kitchen-fridge-2, type: fridge, room: C-012}}
        """))
    assert main(["agent", "--config", str(agent_yaml), "--check"]) == 0
    assert "ok (agent canteen-agent, 4 devices" in capsys.readouterr().out

    loaded = cfgmod.load(agent_yaml)
    drivers = {d.id: cfgmod.driver_module(d.driver).create(d.id, o, d.driver_tags())
               for d, o in zip(loaded.model.devices, loaded.options)}
    records: list = []
    mq = drivers["kitchen-zigbee"]
    mq_task = asyncio.create_task(mq.run(records.append))
    async with asyncio.timeout(10):
        await mq.connected.wait()
    try:
        # 20 polling cycles of the real devices; the readings get the times of 20 one-minute cycles
        lines = []
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, username="collector",
                                  password=mqtt_users["collector"]) as pub:
            for i in range(20):
                t = T0 + i * MIN
                cycle = []
                for dev_id in ("canteen-fridge-1", "canteen-freezer-1", "canteen-gas-1"):
                    cycle += await drivers[dev_id].poll()
                n = len(records)
                await pub.publish("zigbee2mqtt/kitchen-fridge-2", json.dumps({"temperature": 6.1, "battery": 87}))
                async with asyncio.timeout(10):
                    while not any(isinstance(r, Sample) and r.device == "kitchen-fridge-2" for r in records[n:]):
                        await asyncio.sleep(0.01)
                cycle += records[n:]
                for rec in cycle:
                    rec.time_ms = t
                    kind, item = to_item(rec)
                    if kind == "metrics":
                        lines.append(json.dumps(item))
    finally:
        mq_task.cancel()
        for d in drivers.values():
            if hasattr(d, "close"):
                await d.close()
        await srv.shutdown()
        srv_task.cancel()

    items = [json.loads(x) for x in lines]
    fridge = [x for x in items if x["d"] == "canteen-fridge-1" and x["m"] == "temperature"]
    assert fridge[0]["f"] == {"value": 7.5, "evaporator": -12.0, "setpoint": 3.0}
    assert fridge[0]["tags"] == {"room": "C-010", "type": "fridge"}
    assert [x["f"] for x in items if x["d"] == "canteen-gas-1" and x["m"] == "gas"][0]["lel_pct"] == 12.3
    assert [x["f"] for x in items if x["d"] == "kitchen-fridge-2" and x["m"] == "temperature"][0] == {"value": 6.1}

    samples = tmp_path / "recorded.jsonl"
    samples.write_text("\n".join(lines) + "\n")
    rules = REPO / "firmware_configs" / "rules" / "campus-default.yaml"
    rc = main(["rules", "test", str(rules), "--samples", str(samples)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    firing = [ln for ln in out.splitlines() if "FIRING" in ln]
    by_rule = {(ln.split()[2], ln.split("device=")[1].split()[0]) for ln in firing}
    assert ("fridge-warm", "canteen-fridge-1") in by_rule        # 7.5 °C > 5 for 15 min
    assert ("fridge-warm", "kitchen-fridge-2") in by_rule        # 6.1 °C via Zigbee2MQTT
    assert ("freezer-warm", "canteen-freezer-1") in by_rule      # -12.0 °C > -15 for 10 min
    assert ("gas-level", "canteen-gas-1") in by_rule             # 12.3 % LEL >= 10
    assert "Fridge canteen-fridge-1 in C-010 at 7.5 °C (limit 5 °C)" in out
