"""The real agent process with a pjlink device (spec simulator) and an access listener, publishing to a
real Mosquitto: events and projector samples arrive on the wire, and the raw card number and the
name sent to the listener appear nowhere outside the agent (MQTT payloads, queue database, log)."""
from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from contextlib import closing

import pytest

from campus_sense import wire
from tests.pjlink_sim import PJLinkSim, ProjectorState
from tests.peers import free_port
from tests.test_agent_e2e import AgentProc, Receiver, write_config

pytestmark = pytest.mark.timeout(60)

TOKEN = "agent-test-token-0123456789"
CARD = "0004471234"
NAME = "Erika Mustermann"


async def wait_for(pred, what, agent, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n--- agent log ---\n{agent.tail()}")


async def test_agent_runs_pjlink_and_access(tmp_path, mosquitto, mqtt_users):
    rx = Receiver(mosquitto.port, "collector", mqtt_users["collector"])
    sim = await PJLinkSim(password="pj-pass", state=ProjectorState(pj_class=2, power="1", erst="000000")).start()
    (tmp_path / "pj.pass").write_text("pj-pass\n")
    (tmp_path / "access.token").write_text(TOKEN + "\n")
    (tmp_path / "pseudo.key").write_text("agent-test-site-key-0123456789\n")
    port = free_port()
    devices = f"""\
  - id: pj1
    driver: pjlink
    interval_s: 0.5
    type: projector
    room: A-101
    options: {{host: 127.0.0.1, port: {sim.port}, password_file: {tmp_path / 'pj.pass'}}}
  - id: panel-a
    driver: access
    options:
      listen_port: {port}
      token_file: {tmp_path / 'access.token'}
      codes: {{"DF": door_forced, "120": access_granted}}
      doors: {{"D-101": door-a101}}
      identifier_fields: [card]
      pseudonym_key_file: {tmp_path / 'pseudo.key'}
"""
    cfg = write_config(tmp_path, mosquitto, mqtt_users, devices)
    agent = AgentProc(cfg)
    try:
        def samples(m):
            return [i for msg in rx.of_kind("metrics") for i in msg.items if i["m"] == m]

        def events():
            return [i for msg in rx.of_kind("events") for i in msg.items]

        await wait_for(lambda: samples("projector"), "a projector sample", agent)
        p = samples("projector")[0]
        assert p["d"] == "pj1" and p["f"]["power_state"] == "on" and p["f"]["lamp_hours"] == 1234
        assert p["tags"] == {"room": "A-101", "type": "projector"}

        sim.state.erst = "002000"  # temperature error -> projector_fault critical

        async def send():
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(json.dumps({"auth": TOKEN}).encode() + b"\n")
            assert json.loads(await r.readline()) == {"ok": True}
            for m in ({"code": "DF", "door": "D-101", "card": CARD, "name": NAME},
                      {"code": "120", "door": "D-101", "card": CARD, "holder_name": NAME},
                      {"garbage": True}):
                w.write(json.dumps(m).encode() + b"\n")
            w.write(b"not json " + CARD.encode() + b"\n")
            await w.drain()
            w.close()

        async def listening():
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return False
            w.close()
            return True

        end = time.monotonic() + 20
        while not await listening():
            assert time.monotonic() < end, agent.tail()
            await asyncio.sleep(0.1)
        await send()
        await wait_for(lambda: {e["type"] for e in events()} >= {"door_forced", "access_granted", "projector_fault"},
                       "door, access and projector fault events", agent)
        by_type = {e["type"]: e for e in events()}
        df = by_type["door_forced"]
        assert df["d"] == "door-a101" and df["severity"] == "critical" and len(df["data"]["card_pseudonym"]) == 16
        assert by_type["access_granted"]["data"]["card_pseudonym"] == df["data"]["card_pseudonym"]
        pf = by_type["projector_fault"]
        assert pf["d"] == "pj1" and pf["severity"] == "critical" and pf["data"]["component"] == "temp"
        facts = [i for msg in rx.of_kind("facts") for i in msg.items if i["d"] == "pj1"]
        assert facts and facts[0]["facts"]["serial"] == "SN0123456"
        assert agent.stop() == 0
    finally:
        if agent.p.poll() is None:
            agent.p.kill()
            agent.p.wait()
        rx.stop()
        await sim.stop()
    # the raw identifiers never left the agent: not on the wire, not in the durable queue, not in the log
    wire_bytes = b"".join(wire.unpack(p, 1 << 62) for p in rx.raw)     # durable messages are zstd frames
    assert b"card_pseudonym" in wire_bytes
    with closing(sqlite3.connect(tmp_path / "queue.db")) as q:
        queued = b"".join(wire.unpack(p, 1 << 62) for (p,) in q.execute("SELECT payload FROM messages"))
    queue_bytes = b"".join(f.read_bytes() for f in tmp_path.glob("queue.db*")) + queued
    log_text = agent.log.read_text(errors="replace")
    assert "malformed input from 127.0.0.1:" in log_text
    for raw in (CARD, NAME, "Erika"):
        assert raw.encode() not in wire_bytes and raw.encode() not in queue_bytes and raw not in log_text, raw
