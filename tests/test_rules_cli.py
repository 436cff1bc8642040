"""`campus-sense rules test` on jsonl and csv recordings, and `rules check`."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from campus_sense.cli import main

MIN = 60_000
T0 = 1_795_392_000_000  # 2026-11-23T00:00:00Z (a Monday)
REPO = Path(__file__).resolve().parent.parent

RULES = """
inhibit:
  - {source: ["rule=fire-alarm"], target: ["rule=door-forced"], equal: [building]}
rules:
  - name: fridge-warm
    kind: threshold
    scope: {type: fridge}
    measurement: temperature
    value: 5
    for: 15m
    clear_value: 4.5
    clear_for: 5m
    summary: "{device} at {value:.1f} °C"
  - {name: door-forced, kind: event, event: door_forced, clear_event: door_closed, severity: critical}
  - {name: fire-alarm, kind: event, event: fire_alarm, severity: critical}
  - {name: agent-offline, kind: agent_offline, after: 5m, severity: critical}
"""


def _iso(minute):
    import datetime as dt
    return dt.datetime.fromtimestamp((T0 + minute * MIN) / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def _files(tmp_path):
    r = tmp_path / "rules.yaml"
    r.write_text(textwrap.dedent(RULES))
    return r


def _jsonl(tmp_path, lines):
    p = tmp_path / "samples.jsonl"
    p.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return p


def _fridge(minute, v):
    return {"m": "temperature", "d": "fridge-1", "t": T0 + minute * MIN, "f": {"value": v},
            "tags": {"type": "fridge", "building": "A", "agent": "ag-a"}}


def test_rules_test_jsonl(tmp_path, capsys):
    rules = _files(tmp_path)
    lines = [_fridge(m, 7.0 if 5 <= m < 30 else 3.0) for m in range(0, 40)]
    lines[12:12] = [{"d": "fire-A", "type": "fire_alarm", "t": T0 + 10 * MIN, "severity": "critical",
                     "tags": {"building": "A"}, "data": {}},
                    {"d": "door-A1", "type": "door_forced", "t": T0 + 11 * MIN, "tags": {"building": "A"}},
                    {"d": "door-B1", "type": "door_forced", "t": T0 + 11 * MIN, "tags": {"building": "B"}},
                    {"kind": "death", "agent": "ag-x", "t": T0 + 11 * MIN}]
    samples = _jsonl(tmp_path, lines)
    rc = main(["rules", "test", str(rules), "--samples", str(samples)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    got = [ln.split()[:3] for ln in out.splitlines() if not ln.startswith("#")]
    assert got == [
        [_iso(5) + ".000Z", "PENDING", "fridge-warm"],
        [_iso(10) + ".000Z", "FIRING", "fire-alarm"],
        [_iso(11) + ".000Z", "FIRING", "door-forced"],
        [_iso(11) + ".000Z", "SUPPRESSED", "door-forced"],
        [_iso(11) + ".000Z", "FIRING", "door-forced"],
        [_iso(16) + ".000Z", "FIRING", "agent-offline"],
        [_iso(20) + ".000Z", "FIRING", "fridge-warm"],
        [_iso(35) + ".000Z", "RESOLVED", "fridge-warm"],
    ]
    assert '"fridge-1 at 7.0 °C"' in out
    assert "device=door-A1" in out.splitlines()[3] and "inhibited:" in out.splitlines()[3]
    assert out.splitlines()[-1].startswith("# 40 samples, 3 events, 1 agent states, 0 bad lines; 5 fired, "
                                           "1 resolved; still firing: 4")
    # deterministic: the same input prints the same output
    assert main(["rules", "test", str(rules), "--samples", str(samples)]) == 0
    assert capsys.readouterr().out == out


def test_rules_test_until_and_json(tmp_path, capsys):
    rules = _files(tmp_path)
    samples = _jsonl(tmp_path, [_fridge(0, 7.0), _fridge(1, 7.0)])
    rc = main(["rules", "test", str(rules), "--samples", str(samples), "--until", "+30m", "--json"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    recs = [json.loads(x) for x in out]
    assert [(r["change"], r["rule"], (r["t_ms"] - T0) // MIN) for r in recs[:-1]] == [
        ("pending", "fridge-warm", 0), ("firing", "agent-offline", 6), ("cancelled", "fridge-warm", 6)]
    assert recs[-1]["summary"]["samples"] == 2 and recs[-1]["summary"]["still_firing"] == 1


def test_rules_test_bad_lines_name_file_and_line(tmp_path, capsys):
    rules = _files(tmp_path)
    lines = [_fridge(m, 7.0) for m in range(0, 20)]
    lines[3] = "{not json"
    lines[6] = {"m": "temperature", "d": "fridge-1", "t": "noon", "f": {"value": 1}}
    lines[8] = {"hello": 1}
    samples = _jsonl(tmp_path, lines)
    rc = main(["rules", "test", str(rules), "--samples", str(samples)])
    out, err = capsys.readouterr()
    assert rc == 1
    assert f"{samples}:4: not JSON" in err
    assert f"{samples}:7: 't' (epoch ms) must be an integer" in err
    assert f"{samples}:9: not a sample" in err
    assert "FIRING" in out  # the rest was evaluated
    rc = main(["rules", "test", str(rules), "--samples", str(samples), "--strict"])
    out, err = capsys.readouterr()
    assert rc == 1 and f"{samples}:4: stopping (--strict)" in err and f"{samples}:7:" not in err
    assert "FIRING" not in out and "# 3 samples" in out


def test_rules_test_csv_with_tag_columns_and_devices_file(tmp_path, capsys):
    rules = tmp_path / "r.yaml"
    rules.write_text(textwrap.dedent("""
        rules:
          - {name: uplink-errors, kind: rate, measurement: interface, field: in_errors, counter: true, per: 1m,
             value: 100, item_tags: [ifName=~Te.*], scope: {building: A}}
          - {name: hot, kind: threshold, measurement: temperature, value: 30, scope: {type: server_room}}
        """))
    devices = tmp_path / "devices.yaml"
    devices.write_text("sw1: {building: A, type: switch}\nsr: {building: A, type: server_room}\n")
    csvf = tmp_path / "s.csv"
    rows = ["time,device,measurement,field,value,ifName"]
    for m, v in enumerate([0, 10, 500, 600, 610]):
        rows.append(f"{_iso(m)}Z,sw1,interface,in_errors,{v},Te1/0/1")
        rows.append(f"{(T0 + m * MIN) // 1000},sw1,interface,in_errors,{v * 10},Gi1/0/2")
    rows.append(f"{T0 + 2 * MIN},sr,temperature,value,31.5,")
    rows.append(f"{_iso(3)}+00:00,sr,temperature,value,abc,")   # a string: not compared with 30
    rows.append("yesterday,sr,temperature,value,20,")
    rows.append(f"{_iso(4)},sr,temperature,value,25")
    rows.append(f"{_iso(4)},sr,temperature,value,25,")
    csvf.write_text("\n".join(rows) + "\n")
    rc = main(["rules", "test", str(rules), "--samples", str(csvf), "--devices", str(devices)])
    out, err = capsys.readouterr()
    assert rc == 1
    assert f"{csvf}:14: time: bad time 'yesterday'" in err
    assert f"{csvf}:15: expected 6 columns" in err
    got = [ln.split()[:3] + [ln.split()[5]] for ln in out.splitlines() if not ln.startswith("#")]
    assert got == [[_iso(2) + ".000Z", "FIRING", "uplink-errors", "device=sw1"],
                   [_iso(2) + ".000Z", "FIRING", "hot", "device=sr"],
                   [_iso(3) + ".000Z", "RESOLVED", "uplink-errors", "device=sw1"],
                   [_iso(4) + ".000Z", "RESOLVED", "hot", "device=sr"]]
    assert "ifName=Te1/0/1" in out and "Gi1/0/2" not in out


def test_rules_test_bad_rules_file_and_csv_header(tmp_path, capsys):
    rules = tmp_path / "r.yaml"
    rules.write_text("rules:\n  - name: x\n    kind: threshold\n    measurement: t\n    value: high\n    op: '>'\n")
    s = _jsonl(tmp_path, [])
    assert main(["rules", "test", str(rules), "--samples", str(s)]) == 2
    err = capsys.readouterr().err
    assert f"{rules}:1" not in err and f"{rules}:" in err and "rule 'x' (rules[0])" in err
    good = _files(tmp_path)
    bad_csv = tmp_path / "b.csv"
    bad_csv.write_text("ts,device,value\n1,2,3\n")
    assert main(["rules", "test", str(good), "--samples", str(bad_csv)]) == 1
    assert "missing: time, measurement, field" in capsys.readouterr().err
    assert main(["rules", "test", str(good), "--samples", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_rules_check_and_console_entry_point(tmp_path):
    r = subprocess.run([sys.executable, "-m", "campus_sense", "rules", "check",
                        str(REPO / "firmware_configs" / "rules" / "campus-default.yaml")],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("OK: ")


def test_default_rules_on_a_recorded_day(tmp_path, capsys):
    """The shipped rules against a small recording: projector in eco standby stays quiet, the other goes stale."""
    devices = tmp_path / "devices.yaml"
    devices.write_text(textwrap.dedent("""
        proj-1: {type: projector, building: A, room: A-101, agent: ag-a}
        proj-2: {type: projector, building: A, room: A-102, agent: ag-a}
        """))
    day = 1_795_420_800_000  # 2026-11-23T08:00:00Z = 09:00 Berlin, a Monday (school day)
    lines = [{"m": "projector", "d": "proj-1", "t": day, "f": {"power_state": "eco_standby"}},
             {"m": "projector", "d": "proj-2", "t": day, "f": {"power_state": "on"}}]
    lines += [{"kind": "heartbeat", "agent": "ag-a", "t": day + m * MIN} for m in range(0, 61)]
    s = _jsonl(tmp_path, lines)
    rc = main(["rules", "test", str(REPO / "firmware_configs" / "rules" / "campus-default.yaml"), "--samples",
               str(s), "--devices", str(devices)])
    out = capsys.readouterr().out
    assert rc == 0
    firing = [ln for ln in out.splitlines() if " FIRING " in ln]
    assert len(firing) == 1 and "projector-stale" in firing[0] and "device=proj-2" in firing[0]
    assert firing[0].startswith("2026-11-23T08:30:00.000Z")


def test_rules_test_accepts_whole_wire_messages(tmp_path, capsys):
    rules = _files(tmp_path)
    msg = {"v": 1, "kind": "metrics", "agent": "ag-a", "epoch": "e", "seq": 1, "sent_ms": T0,
           "samples": [_fridge(m, 9.0) for m in range(0, 20)] + [{"m": "x"}]}
    ev = {"v": 1, "kind": "events", "agent": "ag-a", "epoch": "e", "seq": 2, "sent_ms": T0,
          "events": [{"d": "door-1", "type": "door_forced", "t": T0 + 21 * MIN}]}
    samples = _jsonl(tmp_path, [msg, ev])
    rc = main(["rules", "test", str(rules), "--samples", str(samples)])
    out, err = capsys.readouterr()
    assert rc == 1 and f"{samples}:1: samples[20]: 'd' (device id) must be a non-empty string" in err
    assert [ln.split()[1:3] for ln in out.splitlines() if not ln.startswith("#")] == [
        ["PENDING", "fridge-warm"], ["FIRING", "fridge-warm"], ["FIRING", "door-forced"]]
