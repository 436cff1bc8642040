"""Grafana dashboards (dashboards/json) run against a real victoria-metrics filled by the real collector.

Data: the real SNMP driver polls real-device recordings in snmpsim (Cisco 3750 switch with PoE, fans
and power supplies, Huawei S5720 with temperatures, a Cisco WLC with APs, radios and clients); the
real agent gives its self-metrics sample and agent_poll samples (a good and a failed poll). Those
records go through the agent's record -> wire item conversion and are replayed as two hours of
one-minute polls (counters advancing, a few faults injected) for several devices in three buildings
of two sites, as durable MQTT messages into the collector's SQLiteStore with the InfluxDB sink, which
writes them to victoria-metrics over the line protocol, exactly as in production.

Queries: every target of every panel, with the template variables resolved from victoria-metrics'
label values API the way Grafana does (all values, and the first value of each variable in turn) and
Grafana's $__interval, $__rate_interval and $__range replaced, must parse and return data on
/api/v1/query_range (and /api/v1/query for instant targets)."""
from __future__ import annotations

import asyncio
import copy
import importlib.util
import json
import math
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import orjson
import pytest
import yaml

from campus_sense import wire
from collector.store.influx import InfluxSink
from collector.store.sqlite import SQLiteStore
from drivers.base import Sample
from drivers.snmp import create
from edge_agent import config
from edge_agent.batcher import to_item
from edge_agent.main import Agent
from edge_agent.scheduler import poll_once
from tests.peers_snmp import Snmpsim
from tests.peers_vm import VM_BIN, VictoriaMetrics

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "dashboards" / "json").glob("*.json"))
FIX = ROOT / "tests" / "fixtures" / "snmprec_vendors"
CISCO = FIX / "cisco_c3750.snmprec"
HUAWEI = FIX / "huawei_s5720_health.snmprec"

pytestmark = pytest.mark.skipif(not shutil.which("snmpsimd") or not Path(VM_BIN).exists(),
                                reason="needs snmpsim and victoria-metrics")

MIN = 60_000
MINUTES = 120
#: Grafana's Prometheus data source with "Scrape interval" 60s (dashboards/README.md) over a 2 h range:
#: $__interval = the step, $__rate_interval = max($__interval + scrape, 4 * scrape)
STEP_S = 60
RATE_INTERVAL = "240s"

#: device -> (site, building, agent, template: recording community or "dead")
CAMPUS = {
    "a-core-sw": ("north", "A", "ag-a", "sw"),
    "a-dist-sw": ("north", "A", "ag-a", "hw"),
    "a-wlc": ("north", "A", "ag-a", "wlc"),
    "a-lab-sw": ("north", "A", "ag-a", "dead"),
    "b-access-sw": ("north", "B", "ag-b", "hw"),
    "c-access-sw": ("south", "C", "ag-c", "sw"),
    "c-wlc": ("south", "C", "ag-c", "wlc"),
}


# ---------------------------------------------------------------- static checks
def _docs() -> list[tuple[str, dict]]:
    return [(p.name, json.loads(p.read_text())) for p in DASHBOARDS]


def test_dashboards_are_well_formed():
    assert {n for n, _ in _docs()} >= {"overview.json", "network.json", "device.json", "devices.json", "agents.json"}
    assert not list((ROOT / "dashboards").rglob("*.flux")), "Flux queries cannot be tested: they go"
    uids = set()
    for name, doc in _docs():
        assert doc.get("title") and doc.get("uid") and len(doc["uid"]) <= 40, name
        assert doc["uid"] not in uids, name
        uids.add(doc["uid"])
        tvars = {v["name"]: v for v in doc["templating"]["list"]}
        assert tvars["datasource"]["type"] == "datasource" and tvars["datasource"]["query"] == "prometheus", name
        for v in tvars.values():
            if v["type"] == "query":
                assert v["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, (name, v["name"])
                assert re.fullmatch(r"label_values\(.+, \w+\)", v["query"]), (name, v["name"])
        ids = [p["id"] for p in doc["panels"]]
        assert ids and len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for p in doc["panels"]:
            where = f"{name}: {p['title']}"
            assert p["type"] in {"timeseries", "stat", "table"} and p["title"], where
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
            assert p["targets"], where
            assert {"x", "y", "w", "h"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, where
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)), where
            for t in p["targets"]:
                assert t["datasource"] == p["datasource"] and t["expr"].strip(), where
                assert "from(bucket" not in t["expr"] and "|>" not in t["expr"], f"{where}: Flux"
                used = set(re.findall(r"\$(?:\{)?(\w+)", t["expr"]))
                assert used <= set(tvars) | {"__rate_interval", "__interval", "__range"}, (where, used)


def test_provisioned_datasource_is_prometheus_on_victoriametrics():
    doc = yaml.safe_load((ROOT / "dashboards/provisioning/datasources/campus-sense.yaml").read_text())
    (ds,) = doc["datasources"]
    assert ds["type"] == "prometheus" and ds["isDefault"] and ds["jsonData"]["timeInterval"] == f"{STEP_S}s"
    prov = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards/campus-sense.yaml").read_text())
    assert prov["providers"][0]["type"] == "file"


# ---------------------------------------------------------------- data: real driver output
async def _driver_templates(port: int, tmp_path: Path) -> dict[str, list[dict]]:
    """template -> wire items of one poll (the second: rates need two), as the agent sends them."""
    out: dict[str, list[dict]] = {}
    for community in ("sw", "hw", "wlc"):
        d = create(community, {"host": "127.0.0.1", "port": port, "community": community}, {})
        try:
            await d.poll()
            recs = [r for r in await d.poll() if isinstance(r, Sample)]
        finally:
            await d.close()
        out[community] = [to_item(r)[1] for r in recs]
    # the agent's own samples, from a real Agent and the real scheduler (one failed, one good poll)
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"agent: {{id: a1, site: s, building: B}}\nmqtt: {{host: 127.0.0.1, port: 1, username: a1, "
                   f"password: x-{'y' * 8}}}\nqueue: {{path: {tmp_path / 'q.db'}}}\ndevices: []\n")
    agent = Agent(config.load(cfg))
    dead = create("dead", {"host": "127.0.0.1", "port": 9, "community": "c", "timeout_s": 0.2, "retries": 0}, {})
    sw = create("sw", {"host": "127.0.0.1", "port": port, "community": "sw"}, {})
    try:
        out["agent"] = [to_item(agent.self_metrics())[1]]
        out["poll_failed"] = [to_item(await poll_once("dead", "snmp", dead, 2.0, lambda r: None))[1]]
        out["poll_ok"] = [to_item(await poll_once("sw", "snmp", sw, 10.0, lambda r: None))[1]]
    finally:
        await dead.close()
        await sw.close()
        agent.queue.close()
    assert out["poll_failed"][0]["f"]["ok"] is False and out["poll_ok"][0]["f"]["ok"] is True
    return out


def _wlc_recording(path: Path) -> None:
    spec = importlib.util.spec_from_file_location("building_cpu", ROOT / "bench" / "building_cpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.wlc_recording(path, 4, 3)


def port_bps(device: str, if_index: str, minute: int) -> float:
    """The traffic a port carries (bit/s): steady per port, a slow swing over the two hours; small
    enough that a 32-bit octet counter does not wrap within the test."""
    base = (sum(map(ord, device + if_index)) % 17 + 1) * 60_000
    return base * (1.5 + math.sin(minute / 20))


class Replay:
    """Two hours of one-minute polls for CAMPUS, shaped like the templates."""

    def __init__(self, templates: dict[str, list[dict]], t0: int):
        self.tpl, self.t0 = templates, t0
        self.counters: dict[tuple, float] = {}

    def minute(self, k: int) -> dict[str, list[dict]]:
        """agent -> items polled in minute k."""
        t = self.t0 + k * MIN
        by_agent: dict[str, list[dict]] = {}
        for dev, (_, _, agent, tpl) in CAMPUS.items():
            items = by_agent.setdefault(agent, [])
            if tpl == "dead":
                p = copy.deepcopy(self.tpl["poll_failed"][0])
                p["f"]["duration_s"] = 2.0
            else:
                for it in self.tpl[tpl]:
                    items.append(self._shape(dev, it, k, t))
                p = copy.deepcopy(self.tpl["poll_ok"][0])
                p["f"]["duration_s"] = round(0.2 + (k % 7) / 10, 3)
            p["d"], p["t"] = dev, t + 1500
            items.append(p)
        for agent in sorted(by_agent):
            a = copy.deepcopy(self.tpl["agent"][0])
            f = a["f"]
            f.update(queue_depth=(k * 37) % 50 if agent != "ag-c" else 400 + k * 10, oldest_age_s=float(k % 5),
                     produced_total=k * 9, published_total=k * 9 - (k * 37) % 50 // 10,
                     dropped_total=max(0, k - 100) * 3 if agent == "ag-c" else 0,
                     resent_total=k // 30, refused_total=0, confirmed_seq=k * 9,
                     slot_waits_total=k // 2, slot_wait_s_total=round(k * 0.05, 3))
            a["d"], a["t"] = agent, t + 2000
            by_agent[agent].append(a)
        return by_agent

    def _shape(self, dev: str, it: dict, k: int, t: int) -> dict:
        out = self._vary(dev, it, k, t)
        assert set(out["f"]) == set(it["f"]), "the replay keeps the driver's fields"
        return out

    def _vary(self, dev: str, it: dict, k: int, t: int) -> dict:
        it = copy.deepcopy(it)
        it["d"], it["t"] = dev, t + 200
        m, f, tags = it["m"], it["f"], it["tags"]
        if m == "interface" and "in_octets" in f:
            idx = tags["ifIndex"]
            for d in ("in", "out"):
                bps = port_bps(dev, idx + d, k)
                key = (dev, idx, d)
                prev = self.counters.get(key, f[f"{d}_octets"] % 2**31)
                cur = int(prev + bps * 60 / 8)
                self.counters[key] = cur
                f[f"{d}_octets"] = cur
                f[f"{d}_bps"] = bps
                if f"util_{d}_pct" in f:                  # only ports with a known speed have it
                    f[f"util_{d}_pct"] = bps / (f["speed_mbps"] * 1e6) * 100
            if idx in ("1", "11001", "11007"):           # a few ports with errors and discards
                for c in ("in_errors", "out_errors", "in_discards", "out_discards"):
                    f[c] = f[c] + k * 2
                    f[c + "_ps"] = 2 / 60
            if idx == "11003" and k >= MINUTES - 15:      # a port goes down, still admin up
                f["oper_up"], f["admin_up"] = False, True
        elif m == "system":
            f["uptime_s"] = f["uptime_s"] + k * 60
        elif m == "device_health":
            for c in ("cpu_pct", "mem_pct", "temp_c_max"):
                if c in f:
                    f[c] = f[c] + (k % 10)
        elif m == "poe_port" and k > 5:
            n = tags.get("port") or tags.get("ifIndex") or "0"
            if int(n) % 3 == 0:
                f["power_w"] = 4.5 + int(n) % 7
                if "delivering" in f:
                    f["delivering"] = True
        elif m == "fan" and dev == "a-core-sw" and k >= MINUTES - 20:      # a fan fails
            f.update(state="critical", state_code=3, status="fault")
        elif m == "wifi_clients":
            f["clients"] = f["clients"] + (k // 10) % 4
        elif m == "wifi_radio":
            f["util_pct"] = (f["util_pct"] + k) % 90
        elif m == "wifi_ap" and tags.get("ap") == "AP-003" and k >= MINUTES - 15:
            f["up"] = False
        elif m == "wifi_client":
            f["rssi_dbm"] = f["rssi_dbm"] - k % 5
        return it


def _message(agent: str, seq: int, items: list[dict]) -> list[wire.Message]:
    site, building, _, _ = next(v for v in CAMPUS.values() if v[2] == agent)
    enc = [wire.encode_item(i) for i in items]
    out = []
    for chunk in wire.split(enc, wire.MAX_MESSAGE_BYTES, wire.envelope_overhead("metrics", agent, "e1")):
        payload = wire.encode_durable("metrics", agent, "e1", seq + len(out), 0, chunk)
        out.append(wire.decode(wire.topic(site, building, agent, "metrics"), payload))
    return out


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dash")
    _wlc_recording(tmp / "wlc.snmprec")
    sim = Snmpsim({"sw": CISCO, "hw": HUAWEI, "wlc": tmp / "wlc.snmprec"}).start()
    try:
        templates = asyncio.run(_driver_templates(sim.port, tmp))
    finally:
        sim.stop()
    vm = VictoriaMetrics(tmp / "vm").start()
    sink = InfluxSink(vm.url, "", "campus", "campus")
    store = SQLiteStore(str(tmp / "c.db"), sink=sink, synchronous="NORMAL")
    now = int(__import__("time").time() * 1000)
    # ends two minutes ago at least: victoria-metrics hides the last 30 s (-search.latencyOffset)
    t0 = now - now % MIN - (MINUTES + 2) * MIN
    replay, seqs, written = Replay(templates, t0), {}, 0
    try:
        for k in range(MINUTES + 1):
            msgs = []
            for agent, items in replay.minute(k).items():
                got = _message(agent, seqs.get(agent, 0) + 1, items)
                seqs[agent] = seqs.get(agent, 0) + len(got)
                msgs += got
                written += len(items)
            res = store.apply(msgs, [])
            assert not getattr(res, "rejected", None), res
        vm.flush()
        yield vm, t0, t0 + MINUTES * MIN + 2000, replay, written
    finally:
        store.close()
        vm.stop()


# ---------------------------------------------------------------- queries
def _get(vm, path: str, **params) -> dict:
    q = urllib.parse.urlencode(params, doseq=True)
    try:
        with urllib.request.urlopen(f"{vm.url}{path}?{q}", timeout=30) as r:
            return orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return {"status": "error", "error": f"HTTP {e.code}: {e.read().decode()[:500]}"}


def _regex_escape(v: str) -> str:
    """Grafana's Prometheus escaping of one value inside =~ (prometheusSpecialRegexEscape)."""
    return re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\\\1", v)


def _render(expr: str, values: dict[str, str], start_s: int, end_s: int) -> str:
    out = expr.replace("$__rate_interval", RATE_INTERVAL).replace("$__interval", f"{STEP_S}s")
    out = out.replace("$__range", f"{end_s - start_s}s")
    for name in sorted(values, key=len, reverse=True):
        out = out.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
    assert "$" not in out, out
    return out


def _resolve(vm, doc: dict, start_s: int, end_s: int, pick_first: bool) -> dict[str, str]:
    """Template variables in order, as Grafana resolves them: each label_values() query (with the
    variables before it substituted) against the label values API; All -> allValue (.*), or the
    first value (sorted)."""
    values: dict[str, str] = {}
    for v in doc["templating"]["list"]:
        if v["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", _render(v["query"], values, start_s, end_s))
        res = _get(vm, f"/api/v1/label/{m[2]}/values", **{"match[]": m[1], "start": start_s, "end": end_s})
        assert res["status"] == "success" and res["data"], (doc["uid"], v["name"], m[1], res)
        multi_or_all = v.get("multi") or v.get("includeAll")
        if pick_first or not v.get("includeAll"):
            first = sorted(res["data"])[0]
            values[v["name"]] = _regex_escape(first) if multi_or_all else first
        else:
            values[v["name"]] = v["allValue"]
    return values


def _targets():
    for name, doc in _docs():
        for p in doc["panels"]:
            for t in p["targets"]:
                yield pytest.param(doc, p, t, id=f"{doc['uid']}:{p['id']}{t['refId']}")


def _run(vm, doc, p, t, values, start_s, end_s):
    expr = _render(t["expr"], values, start_s, end_s)
    where = f"{doc['uid']} / {p['title']} / {t['refId']}: {expr}"
    res = _get(vm, "/api/v1/query_range", query=expr, start=start_s, end=end_s, step=STEP_S, nocache=1)
    assert res["status"] == "success", f"{where}: {res.get('error')}"
    series = res["data"]["result"]
    assert series, f"{where}: no data"
    assert any(not math.isnan(float(v)) for s in series for _, v in s["values"]), f"{where}: only NaN"
    if t.get("instant"):
        inst = _get(vm, "/api/v1/query", query=expr, time=end_s, nocache=1)
        assert inst["status"] == "success" and inst["data"]["result"], f"{where}: instant query returned {inst}"
    # {{label}} in the legend names a label the series have
    # every series has a legend: a {{label}} of the legend format is one of its labels (formats such
    # as "{{ifName}}{{group}}/{{port}}" cover vendors that tag differently)
    labels = re.findall(r"\{\{\s*(\w+)\s*\}\}", t.get("legendFormat") or "")
    for s in series if labels else []:
        assert any(lb in s["metric"] for lb in labels), f"{where}: legend {labels} names no label of {s['metric']}"
    return series


@pytest.mark.parametrize("doc,panel,target", list(_targets()))
def test_every_panel_query_returns_data(filled, doc, panel, target):
    vm, t0, end, _, _ = filled
    start_s, end_s = t0 // 1000, end // 1000
    for pick_first in (False, True):            # All selected, then the first value of every variable
        _run(vm, doc, panel, target, _resolve(vm, doc, start_s, end_s, pick_first), start_s, end_s)


def test_traffic_panel_is_the_ports_bit_rate(filled):
    """rate(interface_in_octets[$__rate_interval]) * 8 on the device dashboard is the traffic the
    port carried (what the driver itself computed as in_bps), within the rate window's smoothing."""
    vm, t0, end, _, _ = filled
    doc = dict(_docs())["device.json"]
    p = next(p for p in doc["panels"] if p["title"] == "Traffic in per port (bit/s)")
    values = {"site": ".*", "building": ".*", "device": "a-core-sw", "port": ".*"}
    series = _run(vm, doc, p, p["targets"][0], values, t0 // 1000, end // 1000)
    by_port = {s["metric"]["ifIndex"]: s for s in series}
    s = by_port["11007"]
    checked = 0
    for ts, v in s["values"][10:]:
        k = (int(ts) * 1000 - t0) // MIN
        want = sum(port_bps("a-core-sw", "11007in", j) for j in range(k - 3, k + 1)) / 4
        assert float(v) == pytest.approx(want, rel=0.1), (ts, k)
        checked += 1
    assert checked > 60
    bps = _get(vm, "/api/v1/query", query='interface_in_bps{device="a-core-sw", ifIndex="11007"}', time=end // 1000)
    assert float(bps["data"]["result"][0]["value"][1]) == pytest.approx(port_bps("a-core-sw", "11007in", MINUTES))


def test_fault_tables_show_the_injected_faults(filled):
    """The tables that list faults name exactly what went wrong, at the end of the range."""
    vm, _, end, replay, _ = filled
    docs = dict(_docs())
    values = {"site": ".*", "building": ".*", "device": ".*", "datasource": ""}

    def rows(dname, title, keys=("device", "ap", "ifIndex")):
        p = next(p for p in docs[dname]["panels"] if p["title"] == title)
        expr = _render(p["targets"][0]["expr"], values, end // 1000 - 7200, end // 1000)
        res = _get(vm, "/api/v1/query", query=expr, time=end // 1000, nocache=1)
        return {tuple(sorted((k, v) for k, v in r["metric"].items() if k in keys))
                for r in res["data"]["result"]}

    # the recording has APs down of its own; AP-003 went down in the last 15 minutes
    down_aps = {it["tags"]["ap"] for it in replay.tpl["wlc"] if it["m"] == "wifi_ap" and not it["f"]["up"]}
    assert rows("devices.json", "Access points down") == \
        {(("ap", ap), ("device", wlc)) for ap in down_aps | {"AP-003"} for wlc in ("a-wlc", "c-wlc")}
    assert rows("devices.json", "Fans and power supplies that failed", ("__name__", "device")) == \
        {(("__name__", "fan_state_code"), ("device", "a-core-sw"))}
    assert rows("agents.json", "Devices whose last poll failed") == {(("device", "a-lab-sw"),)}
    down = rows("network.json", "Ports down that are administratively up")
    assert (("device", "a-core-sw"), ("ifIndex", "11003")) in down
