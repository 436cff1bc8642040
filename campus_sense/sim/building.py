"""The demo's simulated building beyond its switches: every kind of device the agent has a driver
for, each answering its real protocol on loopback, plus the campus model describing them.

* ONVIF camera ``cam-a105`` (``campus_sense.sim.onvif``: device info, clock, PullPoint events; a
  motion event every ~10 s) and its video stream ``cam-a105-video`` (``campus_sense.sim.camera``:
  MJPEG over HTTP with Basic auth, read by the camera_health driver with OpenCV).
* PJLink projector ``proj-a101`` (``campus_sense.sim.pjlink``, with a password, class 2, powered on).
* A Modbus TCP gateway (pymodbus server) with the canteen fridge (unit 1, profile cold-controller,
  temperature drifting around 3.5 °C) and the kitchen gas detector (unit 2, profile gas-detector).
* A door controller ``door-a101`` and a fire panel ``fire-a``: gateways pushing JSON lines to the
  agent's access listeners (driver ``access``): a card granted every ~20 s; scripted
  ``door_forced`` / ``door_closed`` and ``fire_alarm`` / ``fire_alarm_reset`` (a detector test).

    b = await SimulatedBuilding(site, building).start()
    agent_devices = b.agent_devices(interval_s=10)     # agent.yaml `devices:` entries (secrets inline)
    campus = b.campus_model(switch_ids)                 # campus.yaml (rooms, roles, port roles, uplinks)
    b.tick(elapsed_s, script_at_s)                      # once a second: moves values, sends events
    await b.close()

Every credential is random per run. Nothing here is imported by the agent or the collector.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import secrets
import socket
from typing import Any

log = logging.getLogger("campus_sense.sim.building")

__all__ = ["SimulatedBuilding"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _i16(v: float) -> int:
    return int(round(v)) & 0xFFFF


class _PanelGateway:
    """An access-control / fire panel gateway: JSON lines over TCP to the agent's access listener."""

    def __init__(self, port: int, token: str):
        self.port, self.token = port, token
        self.queue: asyncio.Queue[dict] = asyncio.Queue()
        self.sent = 0
        self.task = asyncio.create_task(self._run())

    def send(self, **event: Any) -> None:
        self.queue.put_nowait(event)

    async def _run(self) -> None:
        pending: dict | None = None
        while True:
            try:
                r, w = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:        # the agent (and its listener) is not up yet
                await asyncio.sleep(1.0)
                continue
            try:
                w.write(json.dumps({"auth": self.token}).encode() + b"\n")
                await w.drain()
                if b'"ok"' not in await asyncio.wait_for(r.readline(), 5):
                    raise ConnectionError("listener refused the token")
                while True:
                    if pending is None:
                        pending = await self.queue.get()
                    w.write(json.dumps(pending).encode() + b"\n")
                    await w.drain()
                    pending = None
                    self.sent += 1
            except (OSError, asyncio.TimeoutError, ConnectionError) as e:
                log.debug("panel gateway -> 127.0.0.1:%d: %s", self.port, e)
                await asyncio.sleep(1.0)
            finally:
                w.close()


class SimulatedBuilding:
    CAMERA, VIDEO, PROJECTOR = "cam-a105", "cam-a105-video", "proj-a101"
    FRIDGE, GAS, DOOR, FIRE = "canteen-fridge-1", "canteen-gas-1", "door-a101", "fire-a"

    def __init__(self, site: str, building: str):
        self.site, self.building = site, building
        self.cam_user, self.cam_password = "viewer", secrets.token_urlsafe(12)
        self.pj_password = secrets.token_hex(8)
        self.door_token, self.fire_token = secrets.token_hex(16), secrets.token_hex(16)
        self.door_port, self.fire_port = free_port(), free_port()
        self._scripted: set[str] = set()
        self._next_card, self._motion = 0.0, False

    async def start(self) -> "SimulatedBuilding":
        from pymodbus.datastore import ModbusDeviceContext, ModbusServerContext, ModbusSparseDataBlock
        from pymodbus.server import ModbusTcpServer

        from .camera import MjpegCamera
        from .onvif import OnvifSim
        from .pjlink import PJLinkSim, ProjectorState

        self.onvif = OnvifSim(self.cam_user, self.cam_password, manufacturer="SimCam", model="SC-200",
                              firmware="2.4.1", serial="SC200-A105", mac="02:ca:5e:00:01:05").start()
        self.camera = MjpegCamera(self.cam_user, self.cam_password).start()
        self.projector = await PJLinkSim(self.pj_password, ProjectorState(
            pj_class=2, power="1", name="A-101 projector", inf1="SimVision", inf2="PJ-4000",
            serial="PJ4K-A101", lamps=[(1873, 1)])).start()
        # one RS-485 -> Modbus TCP gateway: unit 1 the fridge controller, unit 2 the gas detector
        logging.getLogger("pymodbus").setLevel(logging.ERROR)   # its data-store API deprecation notice
        self._ir = {1: {0: _i16(35), 1: _i16(-80), 2: 0}, 2: {0: 4, 1: 0}}   # unit -> input registers
        ctx = ModbusServerContext(devices={
            1: ModbusDeviceContext(hr=ModbusSparseDataBlock({0: _i16(30)}), ir=ModbusSparseDataBlock(self._ir[1])),
            2: ModbusDeviceContext(hr=ModbusSparseDataBlock({10: 100}), ir=ModbusSparseDataBlock(self._ir[2]))},
            single=False)
        for dev in ctx.simdevices:   # serve the current values on every read
            dev.action = functools.partial(self._read, self._ir[dev.id])
        self.modbus_port = free_port()
        self._modbus = ModbusTcpServer(ctx, address=("127.0.0.1", self.modbus_port))
        self._modbus_task = asyncio.create_task(self._modbus.serve_forever())
        for _ in range(100):
            try:
                _, w = await asyncio.open_connection("127.0.0.1", self.modbus_port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        self.door = _PanelGateway(self.door_port, self.door_token)
        self.fire = _PanelGateway(self.fire_port, self.fire_token)
        return self

    @staticmethod
    async def _read(regs: dict[int, int], func_code: int, start: int, address: int, count: int,
                    current: list[int], values: Any) -> None:
        if func_code == 4:
            for a, v in regs.items():
                if 0 <= a - start < len(current):
                    current[a - start] = v
        return None

    # ------------------------------------------------------------------ configs
    def agent_devices(self, interval_s: float) -> list[dict]:
        """agent.yaml `devices:` entries for everything in the building but the switches."""
        listener = {"sample_interval_s": 15}
        return [
            # the first ONVIF poll (WSDLs, clock, facts, subscription) takes a few seconds
            {"id": self.CAMERA, "driver": "onvif", "interval_s": max(interval_s, 10), "deadline_s": 8,
             "room": "A-105", "type": "camera",
             "options": {"host": "127.0.0.1", "port": self.onvif.port, "username": self.cam_user,
                         "password": self.cam_password, "timeout_s": 3, "pull_timeout_s": 1}},
            # decoding costs CPU: the picture is checked once a minute
            {"id": self.VIDEO, "driver": "camera_health", "interval_s": 60, "room": "A-105", "type": "camera",
             "options": {"url": self.camera.url, "username": self.cam_user, "password": self.cam_password,
                         "frames": 4, "skip": 1, "open_timeout_s": 3, "read_timeout_s": 3}},
            {"id": self.PROJECTOR, "driver": "pjlink", "interval_s": interval_s, "room": "A-101",
             "type": "projector",
             "options": {"host": "127.0.0.1", "port": self.projector.port, "password": self.pj_password,
                         "timeout_s": 3}},
            {"id": self.FRIDGE, "driver": "modbus", "interval_s": interval_s, "room": "A-010", "type": "fridge",
             "options": {"host": "127.0.0.1", "port": self.modbus_port, "unit": 1, "profile": "cold-controller",
                         "vendor": "Dixell", "model": "XR60CX", "serial": "XR60-0815"}},
            {"id": self.GAS, "driver": "modbus", "interval_s": interval_s, "room": "A-010", "type": "gas_sensor",
             "options": {"host": "127.0.0.1", "port": self.modbus_port, "unit": 2, "profile": "gas-detector",
                         "vendor": "generic", "model": "GD-100", "serial": "GD100-0042"}},
            {"id": self.DOOR, "driver": "access", "room": "A-101", "type": "door_controller",
             "options": {"listen_port": self.door_port, "token": self.door_token, **listener,
                         "codes": {"120": "access_granted", "121": "access_denied",
                                   "DOOR_FORCED": "door_forced", "DOOR_CLOSED": "door_closed"}}},
            {"id": self.FIRE, "driver": "access", "room": "A-000", "type": "fire_panel",
             "options": {"listen_port": self.fire_port, "token": self.fire_token, **listener,
                         "codes": {"FIRE": "fire_alarm", "FIRE_RESET": "fire_alarm_reset"}}},
        ]

    def hosts(self, aps: list[dict]) -> list[tuple[int, bytes, str]]:
        """(access switch ifIndex, MAC, IPv4) of what is plugged into the access switch: desk PCs on the
        desk ports, the camera, the projector and the controller's APs (``aps``: the simulated WLC's
        ``system["aps"]``, AP n on Gi1/0/36+n; a down AP is not heard)."""
        out = [(n, bytes((0x00, 0x1b, 0x21, 0x0a, 0x00, n)), f"10.10.1.{100 + n}") for n in range(1, 25) if n % 6]
        out.append((25, bytes.fromhex(self.onvif.mac.replace(":", "")), "10.10.1.25"))
        out.append((26, bytes((0x00, 0x0f, 0x7c, 0x00, 0xa1, 0x01)), "10.10.1.26"))
        out += [(36 + n, ap["mac"], ap["ip"]) for n, ap in enumerate(aps, 1) if ap["up"] and (36 + n) % 6]
        return out

    def campus_model(self, core: str, access: str, wlc: str, aps: list[dict] = ()) -> dict:
        """campus.yaml: the building's floors and rooms, device roles, port roles, uplinks, and the
        controller's APs (``aps``: name, mac, room) so Wi-Fi coverage has a room for each client."""
        b = self.building
        rooms0 = [{"id": f"{b}-000", "name": "Wiring closet", "type": "server"},
                  {"id": f"{b}-010", "name": "Canteen", "type": "canteen"}]
        rooms1 = [{"id": f"{b}-{100 + n}", "name": f"Classroom {100 + n}", "type": "teaching"} for n in range(1, 5)]
        rooms1 += [{"id": f"{b}-105", "name": "Corridor 1F", "type": "corridor"},
                   {"id": f"{b}-106", "name": "Teachers office", "type": "office"}]
        ports = [{"device": access, "port": f"Gi1/0/{n}", "role": "desk", "room": f"{b}-{100 + (n - 1) % 4 + 1}"}
                 for n in range(1, 25) if n % 6]
        ports += [{"device": access, "port": f"Gi1/0/{n}", "role": "ap", "room": f"{b}-{100 + n - 36}"}
                  for n in range(37, 43) if n % 6]
        ports += [{"device": access, "port": "Gi1/0/25", "role": "device", "room": f"{b}-105"},   # the camera
                  {"device": access, "port": "Gi1/0/26", "role": "device", "room": f"{b}-101"}]   # the projector
        ports += [{"device": access, "port": f"Te1/1/{k}", "role": "uplink", "peer": core} for k in (1, 2)]
        ports += [{"device": wlc, "port": f"Te0/0/{k}", "role": "uplink", "peer": core} for k in (0, 1)]
        ports += [{"device": core, "port": f"Te1/0/{n}", "role": "interbuilding"} for n in range(2, 7)]
        return {
            "sites": [{"id": self.site, "name": "Demo campus", "buildings": [{
                "id": b, "name": f"Teaching building {b}", "floors": [
                    {"id": f"{b}-0", "level": 0, "rooms": rooms0},
                    {"id": f"{b}-1", "level": 1, "rooms": rooms1}]}]}],
            "devices": [{"id": core, "role": "core", "l3": True}, {"id": access, "role": "access"},
                        {"id": wlc, "role": "none"}]
            + [{"id": ap["name"], "type": "ap", "room": ap["room"], "mac": ap["mac"].hex(":")} for ap in aps],
            "ports": ports,
        }

    # ------------------------------------------------------------------ life
    def tick(self, elapsed: float, script_at: float | None = None) -> None:
        """Move the measured values and send events; ``script_at`` starts the scripted security events
        (door forced 5 s later, closed 60 s after that; a fire detector test 10 s later, reset 30 s after)."""
        self._ir[1].update({0: _i16(35 + 12 * math.sin(elapsed / 90)), 1: _i16(-80 + 15 * math.sin(elapsed / 40))})
        self._ir[2][0] = int(6 + 4 * math.sin(elapsed / 30))
        motion = elapsed % 10 < 5              # someone walks past the camera every 10 s
        if motion != self._motion:
            self._motion = motion
            vs = {"VideoSourceConfigurationToken": "VideoSourceConfig_1", "Rule": "MyMotionDetectorRule"}
            self.onvif.push("tns1:RuleEngine/CellMotionDetector/Motion", vs, {"IsMotion": str(motion).lower()})
        if elapsed >= self._next_card:
            self._next_card = elapsed + 20
            self.door.send(code="120", door="D-101", reader="R-101-in", direction="in")
        if script_at is None:
            return
        for key, at, gw, event in (
                ("forced", 5, self.door, {"code": "DOOR_FORCED", "door": "D-101"}),
                ("fire", 10, self.fire, {"code": "FIRE", "zone": "3", "detector": "A-105-SD2"}),
                ("fire_reset", 40, self.fire, {"code": "FIRE_RESET", "zone": "3"}),
                ("closed", 65, self.door, {"code": "DOOR_CLOSED", "door": "D-101"})):
            if elapsed >= script_at + at and key not in self._scripted:
                self._scripted.add(key)
                gw.send(**event)

    def describe(self) -> list[str]:
        return [f"{self.CAMERA} (ONVIF 127.0.0.1:{self.onvif.port}), {self.VIDEO} (MJPEG {self.camera.url})",
                f"{self.PROJECTOR} (PJLink 127.0.0.1:{self.projector.port})",
                f"{self.FRIDGE}, {self.GAS} (Modbus TCP 127.0.0.1:{self.modbus_port} units 1, 2)",
                f"{self.DOOR} (access listener 127.0.0.1:{self.door_port}), "
                f"{self.FIRE} (access listener 127.0.0.1:{self.fire_port})"]

    async def close(self) -> None:
        for gw in (self.door, self.fire):
            gw.task.cancel()
        await self._modbus.shutdown()
        self._modbus_task.cancel()
        await self.projector.stop()
        self.camera.stop()
        self.onvif.stop()
