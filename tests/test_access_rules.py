"""Access events sent by a real TCP client, converted to wire items by the agent's batcher and
replayed through `campus-sense rules test` with the campus-default rules: door-forced and
fire-alarm fire on what the driver emits and clear on door_closed / fire_alarm_reset."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from campus_sense.cli import main
from drivers.access import Options, create
from drivers.base import Event
from edge_agent.batcher import to_item

pytestmark = pytest.mark.timeout(30)

REPO = Path(__file__).resolve().parent.parent
MIN = 60_000
T0 = 1_795_420_800_000  # 2026-11-23T08:00:00Z (Monday, school day in Europe/Berlin)
TOKEN = "rules-test-token-0123"
CARD = "0004471234"


async def test_access_events_drive_campus_rules(tmp_path, capsys):
    key = tmp_path / "pseudo.key"
    key.write_text("rules-test-site-key-0123456789\n")
    drv = create("panel-a", Options(listen_port=0, token=TOKEN, pseudonym_key_file=key,
                                    identifier_fields=["card"],
                                    codes={"DF": "door_forced", "DC": "door_closed", "FA": "fire_alarm",
                                           "FR": "fire_alarm_reset"},
                                    doors={"D-101": "door-a101", "D-102": "door-a102"}),
                 {"building": "A", "site": "north"})
    records: list = []
    task = asyncio.create_task(drv.run(records.append))
    try:
        await asyncio.wait_for(drv.ready.wait(), 5)
        r, w = await asyncio.open_connection("127.0.0.1", drv.port)
        w.write(json.dumps({"auth": TOKEN}).encode() + b"\n")
        assert json.loads(await r.readline()) == {"ok": True}
        msgs = [
            {"code": "DF", "door": "D-101", "card": CARD, "time": T0},
            {"code": "DF", "door": "D-102", "time": T0 + 1 * MIN},
            {"code": "DC", "door": "D-101", "time": T0 + 5 * MIN},   # clears D-101 only
            {"code": "FA", "zone": "3", "time": T0 + 10 * MIN},
            {"code": "FR", "zone": "3", "time": T0 + 20 * MIN},
        ]
        for m in msgs:
            w.write(json.dumps(m).encode() + b"\n")
        await w.drain()
        w.close()
        async with asyncio.timeout(5):
            while drv.counters["events_total"] < len(msgs):
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    lines = []
    for rec in records:
        if isinstance(rec, Event):
            kind, item = to_item(rec)
            assert kind == "events"
            lines.append(json.dumps(item))
    assert CARD not in "".join(lines)
    samples = tmp_path / "recorded.jsonl"
    samples.write_text("\n".join(lines) + "\n")
    rc = main(["rules", "test", str(REPO / "firmware_configs" / "rules" / "campus-default.yaml"),
               "--samples", str(samples)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    changes = [(ln.split()[1], ln.split()[2], ln.split("device=")[1].split()[0])
               for ln in out.splitlines() if "device=" in ln and ln.split()[1] in ("FIRING", "RESOLVED")]
    assert ("FIRING", "door-forced", "door-a101") in changes
    assert ("FIRING", "door-forced", "door-a102") in changes
    assert ("RESOLVED", "door-forced", "door-a101") in changes
    assert ("RESOLVED", "door-forced", "door-a102") not in changes   # its door never closed
    # the campus rule "fire-over-doors" inhibits door-forced alerts in the same building during a fire alarm
    assert any("SUPPRESSED" in ln and "door-a102" in ln and "fire-over-doors" in ln for ln in out.splitlines())
    assert ("FIRING", "fire-alarm", "panel-a") in changes and ("RESOLVED", "fire-alarm", "panel-a") in changes
    assert "Door forced: door-a101" in out
