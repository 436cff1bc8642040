"""Helpers for collector tests: a wire-correct test publisher and config writer."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from campus_sense import wire


class Publisher:
    """Publishes well-formed wire messages with paho at QoS 1 (waits for PUBACK)."""

    def __init__(self, port: int, user: str, password: str, agent: str = "agent-a", site: str = "north",
                 building: str = "A", epoch: str = "ep1"):
        self.agent, self.site, self.building, self.epoch = agent, site, building, epoch
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{agent}-{id(self)}")
        self.c.username_pw_set(user, password)
        self.c.max_inflight_messages_set(50)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def topic(self, kind: str) -> str:
        return wire.topic(self.site, self.building, self.agent, kind)

    def raw(self, kind: str, payload: bytes, qos: int = 1, wait: bool = True):
        info = self.c.publish(self.topic(kind), payload, qos=qos)
        if wait:
            info.wait_for_publish(10)
        return info

    def durable(self, kind: str, seq: int, items: list[dict], epoch: str | None = None, wait: bool = True):
        payload = wire.encode_durable(kind, self.agent, epoch or self.epoch, seq, int(time.time() * 1000),
                                      [wire.encode_item(i) for i in items])
        return self.raw(kind, payload, wait=wait)

    def state(self, kind: str, **body):
        return self.raw(kind, wire.encode_state(kind, self.agent, int(time.time() * 1000), **body))

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def write_config(path: Path, port: int, user: str, password: str, db: Path, api_port: int = 0,
                 extra: str = "", client_id: str = "collector-test") -> Path:
    pw = path.parent / "collector.pass"
    pw.write_text(password + "\n")
    path.write_text(
        f"mqtt:\n  host: 127.0.0.1\n  port: {port}\n  username: {user}\n  password_file: {pw.name}\n"
        f"  client_id: {client_id}\n"
        f"store:\n  path: {db}\n"
        f"api:\n  host: 127.0.0.1\n  port: {api_port}\n" + extra)
    return path


def wait_until(pred, timeout: float = 30.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def iface(device: str, t: int, idx: int, **f) -> dict:
    fields = {"in_bps": 1000.0 * idx, "out_bps": 500.0 * idx, "speed_mbps": 1000, "admin_up": True,
              "oper_up": idx % 2 == 1, "in_errors": 0, "util_in_pct": 0.1 * idx}
    fields.update(f)
    return wire.sample("interface", device, t, fields, {"ifIndex": str(idx), "ifName": f"Gi0/{idx}"})


_ = threading
