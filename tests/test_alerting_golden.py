"""Golden outputs of `campus-sense rules test` (pinned before the alerting core was restructured).

Each case replays a recording in tests/golden/rules/ through a fresh engine and compares stdout,
stderr and the exit status byte for byte with the recorded files (`<case>.out`, `.json.out`).
A deliberate behaviour change: re-record with `GOLDEN_RECORD=1 pytest tests/test_alerting_golden.py`
and review the diff.
"""
import os
from pathlib import Path

import pytest

from campus_sense.cli import main

REPO = Path(__file__).resolve().parent.parent
G = REPO / "tests" / "golden" / "rules"
DEFAULT = G / "campus-default.yaml"   # frozen copy of the shipped rules

CASES = {
    # name: (rules, samples, devices, --until)
    "cli": (G / "cli.yaml", G / "cli.jsonl", None, None),
    "cli-until": (G / "cli.yaml", G / "cli.jsonl", None, "+30m"),
    "campus-day": (DEFAULT, G / "campus-day.jsonl", G / "campus-day.devices.yaml", "+20m"),
    "kinds": (G / "kinds.yaml", G / "kinds.jsonl", G / "kinds.devices.yaml", "+10m"),
}


def _run(capsys, rules, samples, devices, until, json_out):
    argv = ["rules", "test", str(rules), "--samples", str(samples)]
    if devices:
        argv += ["--devices", str(devices)]
    if until:
        argv += ["--until", until]
    if json_out:
        argv.append("--json")
    rc = main(argv)
    out, err = capsys.readouterr()
    return f"exit {rc}\n--- stdout\n{out}--- stderr\n{err.replace(str(REPO) + '/', '')}"


@pytest.mark.parametrize("json_out", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_rules_test_golden(case, json_out, capsys):
    got = _run(capsys, *CASES[case], json_out)
    path = G / f"{case}{'.json' if json_out else ''}.out"
    if os.environ.get("GOLDEN_RECORD"):
        path.write_text(got, encoding="utf-8")
    assert got == path.read_text(encoding="utf-8")


def test_rules_check_golden(capsys):
    for rules in (DEFAULT, G / "kinds.yaml", G / "cli.yaml"):
        assert main(["rules", "check", str(rules)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "OK: 19 rules, 3 calendars, 2 inhibit rules",
        "OK: 9 rules, 4 calendars, 1 inhibit rules",
        "OK: 4 rules, 0 calendars, 1 inhibit rules",
    ]
    assert main(["rules", "check", str(REPO / "firmware_configs" / "rules" / "campus-default.yaml")]) == 0
