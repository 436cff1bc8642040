"""Grafana dashboards: valid JSON, and every measurement/field a Flux query names is one the agent
really emits (SNMP driver on real-device recordings in snmpsim, the agent's own samples). No
Grafana or Flux engine runs here, so this is what keeps dashboards from drifting from the data."""
from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

from drivers.base import Sample
from drivers.snmp import create
from edge_agent import config
from edge_agent.main import Agent
from edge_agent.scheduler import poll_once
from tests.peers_snmp import Snmpsim

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "dashboards" / "json").glob("*.json"))
FIX = ROOT / "tests" / "fixtures" / "snmprec_vendors"
CISCO = FIX / "cisco_c3750.snmprec"
HUAWEI = FIX / "huawei_s5720_health.snmprec"      # temperatures (the 3750 recording has none)

pytestmark = pytest.mark.skipif(not shutil.which("snmpsimd"), reason="needs snmpsim")


def _queries(doc: dict) -> list[str]:
    return [t["query"] for p in doc["panels"] for t in p.get("targets", [])] + \
        [v["query"] for v in doc.get("templating", {}).get("list", []) if "query" in v]


def referenced(query: str) -> set[tuple[str, str | None]]:
    """(measurement, field) pairs a Flux query filters on; field None = any field."""
    out = set()
    for line in query.splitlines():
        ms = re.findall(r'_measurement == "([^"]+)"', line)
        fs = re.findall(r'_field == "([^"]+)"', line) or [None]
        out |= {(m, f) for m in ms for f in fs}
    return out


def test_referenced_parses_flux_filters():
    q = ('  |> filter(fn: (r) => (r._measurement == "fan" or r._measurement == "power_supply") '
         'and r._field == "status")\n  |> filter(fn: (r) => r._measurement == "interface")')
    assert referenced(q) == {("fan", "status"), ("power_supply", "status"), ("interface", None)}


def test_dashboards_are_well_formed():
    assert len(DASHBOARDS) >= 3
    uids = set()
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        assert doc["uid"] not in uids, path
        uids.add(doc["uid"])
        ids = [p["id"] for p in doc["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for p in doc["panels"]:
            assert p["datasource"]["uid"] == "campus-influx", f"{path.name}: {p['title']}"
            for t in p["targets"]:
                assert t["query"].startswith("from(bucket: v.defaultBucket)"), f"{path.name}: {p['title']}"
                assert t["query"].count("(") == t["query"].count(")"), f"{path.name}: {p['title']}"


def _wlc_recording(path: Path) -> None:
    spec = importlib.util.spec_from_file_location("building_cpu", ROOT / "bench" / "building_cpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.wlc_recording(path, 4, 3)


#: tags every stored point carries besides its own: the device id and, from the MQTT topic, these
#: (collector/store/influx.py)
STORED_TAGS = {"device", "site", "building", "agent"}


async def _emitted(port: int, tmp_path: Path) -> tuple[set[tuple[str, str]], set[str]]:
    seen: set[tuple[str, str]] = set()
    tags: set[str] = set(STORED_TAGS)

    def add(recs):
        for r in recs:
            if isinstance(r, Sample):
                seen.update((r.measurement, f) for f in r.fields)
                tags.update(r.tags)
    for community in ("sw", "hw", "wlc"):
        d = create(community, {"host": "127.0.0.1", "port": port, "community": community}, {})
        try:
            for _ in range(2):   # rates need two polls
                add(await d.poll())
        finally:
            await d.close()
    # the agent's own samples, from a real Agent and the real scheduler (one failed, one good poll)
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"agent: {{id: a1, site: s, building: B}}\nmqtt: {{host: 127.0.0.1, port: 1, username: a1, "
                   f"password: x-{'y' * 8}}}\nqueue: {{path: {tmp_path / 'q.db'}}}\ndevices: []\n")
    agent = Agent(config.load(cfg))
    add([agent.self_metrics()])
    dead = create("dead", {"host": "127.0.0.1", "port": 9, "community": "c", "timeout_s": 0.2, "retries": 0}, {})
    sw = create("sw", {"host": "127.0.0.1", "port": port, "community": "sw"}, {})
    try:
        add([await poll_once("dead", "snmp", dead, 2.0, add), await poll_once("sw", "snmp", sw, 10.0, add)])
    finally:
        await dead.close()
        await sw.close()
        agent.queue.close()
    return seen, tags


def test_every_dashboard_query_names_data_the_agent_emits(tmp_path):
    _wlc_recording(tmp_path / "wlc.snmprec")
    sim = Snmpsim({"sw": CISCO, "hw": HUAWEI, "wlc": tmp_path / "wlc.snmprec"}).start()
    try:
        emitted, tags = asyncio.run(_emitted(sim.port, tmp_path))
    finally:
        sim.stop()
    measurements = {m for m, _ in emitted}
    missing = []
    for path in DASHBOARDS:
        for q in _queries(json.loads(path.read_text())):
            for m, f in referenced(q):
                if (f is None and m not in measurements) or (f is not None and (m, f) not in emitted):
                    missing.append(f"{path.name}: {m}.{f}")
            # tags the query filters on or keeps as columns
            used = set(re.findall(r"\br\.([A-Za-z][A-Za-z0-9_]*)", q))
            for cols in re.findall(r"columns: \[([^\]]*)\]", q):
                used |= {c for c in re.findall(r'"([^"]+)"', cols) if not c.startswith("_")}
            missing += [f"{path.name}: tag {t}" for t in used - tags]
    assert not missing, f"dashboards query data nothing emits: {missing}"
