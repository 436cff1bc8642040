"""PJLink driver output (against the spec simulator) replayed through `campus-sense rules test`
with the campus-default rules: a projector that goes silent while on is stale, one that went
silent in standby / eco standby is not (staleness.types.projector.standby on power_state)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from campus_sense.cli import main
from drivers.base import DeviceError, Sample
from drivers.pjlink import Options, create
from edge_agent.batcher import to_item
from tests.pjlink_sim import PJLinkSim, ProjectorState

pytestmark = pytest.mark.timeout(30)

REPO = Path(__file__).resolve().parent.parent
MIN = 60_000
T0 = 1_795_420_800_000  # 2026-11-23T08:00:00Z: Monday 09:00 in Europe/Berlin, school day


async def test_projector_staleness_respects_standby(tmp_path, capsys):
    sims = {"pj-on": await PJLinkSim(state=ProjectorState(power="1")).start(),
            "pj-standby": await PJLinkSim(state=ProjectorState(power="0")).start(),
            "pj-eco": await PJLinkSim(state=ProjectorState(power="0")).start()}
    drivers = {name: create(name, Options(host="127.0.0.1", port=sim.port, timeout_s=2,
                                          eco_standby=name == "pj-eco"),
                            {"room": "A-101", "type": "projector", "building": "A"})
               for name, sim in sims.items()}
    lines = []
    for i in range(3):  # three polls, then all three projectors drop off the network
        if i == 2:
            for sim in sims.values():
                await sim.stop()
        for name, d in drivers.items():
            try:
                recs = await d.poll()
            except DeviceError as e:
                assert e.reason == "unreachable"
                continue
            for rec in recs:
                if isinstance(rec, Sample):
                    rec.time_ms = T0 + i * MIN
                    kind, item = to_item(rec)
                    lines.append(json.dumps(item))
    items = [json.loads(x) for x in lines]
    assert [x["f"]["power_state"] for x in items if x["d"] == "pj-eco"] == ["standby", "standby", "eco_standby"]
    assert [x["f"]["power_state"] for x in items if x["d"] == "pj-on"] == ["on", "on"]
    samples = tmp_path / "recorded.jsonl"
    samples.write_text("\n".join(lines) + "\n")
    rc = main(["rules", "test", str(REPO / "firmware_configs" / "rules" / "campus-default.yaml"),
               "--samples", str(samples), "--until", "+2h", "--step", "1m"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    firing = {(ln.split()[2], ln.split("device=")[1].split()[0]) for ln in out.splitlines()
              if "device=" in ln and ln.split()[1] == "FIRING"}
    assert ("projector-stale", "pj-on") in firing
    assert ("projector-stale", "pj-standby") not in firing
    assert ("projector-stale", "pj-eco") not in firing
