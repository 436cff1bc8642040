"""Profile tables with ``section: custom`` + ``measurement``: a vendor's extra table becomes
samples by adding YAML only. Checked on the real Cisco 3750 recording (CISCO-ENVMON-MIB fan and
power-supply tables) with snmpbulkwalk as the oracle, plus validation of bad profiles."""
from __future__ import annotations

import asyncio
import shutil
import textwrap
from pathlib import Path

import pytest

from campus_sense.yamlconf import ConfigError
from drivers.base import Sample
from drivers.snmp.profiles import load_profiles
from drivers.snmp.tables import inventory_doc, to_records
from tests.peers_snmp import Snmpsim, collect_from_sim, column

FIX = Path(__file__).parent / "fixtures" / "snmprec_vendors"
CISCO = FIX / "cisco_c3750.snmprec"
STATES = {1: "normal", 2: "warning", 3: "critical", 4: "shutdown", 5: "not_present", 6: "not_functioning"}

pytestmark = pytest.mark.skipif(not shutil.which("snmpsimd") or not shutil.which("snmpbulkwalk"),
                                reason="needs snmpsim and net-snmp tools")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("recs")
    # the real recording with one fan state replaced by garbage octets (wrong SNMP type)
    bad = [l if not l.startswith("1.3.6.1.4.1.9.9.13.1.4.1.3.3004|") else "1.3.6.1.4.1.9.9.13.1.4.1.3.3004|4x|ff00"
           for l in CISCO.read_text().splitlines()]
    (d / "bad.snmprec").write_text("\n".join(bad) + "\n")
    s = Snmpsim({"cisco": CISCO, "bad": d / "bad.snmprec"}).start()
    yield s
    s.stop()


def test_cisco_fan_and_psu_rows_match_snmpbulkwalk(sim):
    sec = asyncio.run(collect_from_sim(sim.port, "cisco", ["health", "custom"]))
    rows = sec["custom"]
    by = {(r["measurement"], tuple(sorted(r["tags"].items()))): r for r in rows}
    for meas, table, key in (("fan", "1.3.6.1.4.1.9.9.13.1.4.1", "fan"),
                             ("power_supply", "1.3.6.1.4.1.9.9.13.1.5.1", "psu")):
        names = column(sim.port, "cisco", table + ".2")
        states = column(sim.port, "cisco", table + ".3", int)
        assert names and set(names) == set(states)
        got = [r for r in rows if r["measurement"] == meas]
        assert len(got) == len(names)
        for idx, text in names.items():
            code = states[idx]
            r = by[(meas, tuple(sorted({key: idx, "name": text.strip('"')}.items())))]
            assert r["fields"]["state_code"] == code and r["fields"]["state"] == STATES[code]
    # the values read off the recording: one fan, one PSU (AC, RPS not present), both normal
    fan = [r for r in rows if r["measurement"] == "fan"][0]
    assert fan["tags"] == {"fan": "3004", "name": "Switch#3, Fan#1"} and fan["fields"]["state"] == "normal"
    psu = [r for r in rows if r["measurement"] == "power_supply"][0]
    assert psu["tags"]["name"] == "Sw3, PS1 Normal, RPS NotExist" and psu["fields"]["source"] == "ac"
    # as samples, and in snmp-inventory --json
    samples = [r for r in to_records("sw", sec) if isinstance(r, Sample) and r.measurement in ("fan", "power_supply")]
    assert {(s.measurement, s.tags["name"], s.fields["state_code"]) for s in samples} == {
        ("fan", "Switch#3, Fan#1", 1), ("power_supply", "Sw3, PS1 Normal, RPS NotExist", 1)}
    assert inventory_doc(sec)["custom"] == rows
    # not asked for -> not collected
    assert "custom" not in asyncio.run(collect_from_sim(sim.port, "cisco", ["health"]))


def test_garbage_value_is_counted_and_other_rows_survive(sim):
    sec = asyncio.run(collect_from_sim(sim.port, "bad", ["custom"]))
    # the fan's only values were garbage: no sample without fields (a name alone measures nothing)
    assert [r for r in sec["custom"] if r["measurement"] == "fan"] == []
    assert [r for r in sec["custom"] if r["measurement"] == "power_supply"][0]["fields"]["state"] == "normal"
    assert "env_fan.values" in sec["_errors"]


def _write(d: Path, text: str) -> Path:
    (d / "x.yaml").write_text(textwrap.dedent(text))
    return d


@pytest.mark.parametrize("table,needle", [
    ("""\
      t: {section: custom, index: [{name: i}], columns: {v: {oid: 1.3.6.1.4.1.9.1}}}
     """, "section custom needs a 'measurement'"),
    ("""\
      t: {section: health, measurement: cpu, columns: {cpu_pct: {oid: 1.3.6.1.4.1.9.1}}}
     """, "'measurement' only applies to section custom"),
    ("""\
      t: {section: custom, measurement: "bad name", columns: {v: {oid: 1.3.6.1.4.1.9.1}}}
     """, "measurement"),
])
def test_bad_custom_tables_are_rejected_naming_file_and_key(tmp_path, table, needle):
    gen = (Path(load_profiles()["generic"].source)).read_text()
    (tmp_path / "generic.yaml").write_text(gen)
    body = "name: x\nextends: generic\nmatch: {sys_object_id: [1.3.6.1.4.1.99999]}\ntables:\n" + \
        textwrap.indent(textwrap.dedent(table), "  ")
    (tmp_path / "x.yaml").write_text(body)
    with pytest.raises(ConfigError) as e:
        load_profiles(tmp_path)
    msg = str(e.value)
    assert "x.yaml" in msg and "tables" in msg and needle in msg


def test_driver_poll_emits_custom_samples_with_device_tags(sim):
    from drivers.snmp import create

    async def run():
        d = create("sw1", {"host": "127.0.0.1", "port": sim.port, "community": "cisco"}, {"site": "n"})
        try:
            return await d.poll(), await d.poll()
        finally:
            await d.close()
    for recs in asyncio.run(run()):
        fans = [r for r in recs if isinstance(r, Sample) and r.measurement == "fan"]
        assert len(fans) == 1 and fans[0].tags["site"] == "n" and fans[0].fields["state_code"] == 1


def test_shipped_rules_fire_on_failed_fan_from_recording(sim, tmp_path, capsys):
    """Real recording with the fan state set to critical (3) -> driver samples -> the shipped
    campus-default rules: switch-fan-fault fires after 5 min, the normal PSU stays quiet."""
    import json

    from campus_sense.cli import main
    rows = [l if not l.startswith("1.3.6.1.4.1.9.9.13.1.4.1.3.3004|") else "1.3.6.1.4.1.9.9.13.1.4.1.3.3004|2|3"
            for l in CISCO.read_text().splitlines()]
    (tmp_path / "hot.snmprec").write_text("\n".join(rows) + "\n")
    s2 = Snmpsim({"hot": tmp_path / "hot.snmprec"}).start()
    try:
        sec = asyncio.run(collect_from_sim(s2.port, "hot", ["custom"]))
    finally:
        s2.stop()
    t0 = 1_795_392_000_000
    lines = []
    for minute in range(8):
        for r in to_records("sw-3", sec):
            if isinstance(r, Sample):
                lines.append(json.dumps({"m": r.measurement, "d": "sw-3", "t": t0 + minute * 60_000,
                                         "f": r.fields, "tags": {**r.tags, "type": "switch"}}))
    (tmp_path / "s.jsonl").write_text("\n".join(lines) + "\n")
    rules = Path(__file__).resolve().parent.parent / "firmware_configs" / "rules" / "campus-default.yaml"
    assert main(["rules", "test", str(rules), "--samples", str(tmp_path / "s.jsonl"), "--json"]) == 0
    recs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    fired = [(r["rule"], (r["t_ms"] - t0) // 60_000) for r in recs if r.get("change") == "firing"]
    assert ("switch-fan-fault", 5) in fired
    assert not any(rule == "switch-psu-fault" for rule, _ in fired)
