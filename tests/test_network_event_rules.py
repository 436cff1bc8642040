"""Default network rules (firmware_configs/rules/campus-default.yaml) on events made by the real
drivers: SNMP traps (net-snmp snmptrap datagrams through drivers/snmp_trap) and syslog lines
(drivers/syslog) -> wire items -> the alert engine. Port flapping, repeated login failures, STP
topology changes, loops, PoE overload; the event_count rule kind itself; `campus-sense rules test`."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import drivers.snmp_trap as T
import drivers.syslog as S
from collector.alertcore import AlertStore, RuleEngine, load_rules
from edge_agent.batcher import to_item
from tests.peers_traps import capture, have_net_snmp

pytestmark = [pytest.mark.timeout(60), pytest.mark.skipif(not have_net_snmp(), reason="net-snmp tools missing")]

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "firmware_configs" / "rules" / "campus-default.yaml"
MIN = 60_000
T0 = 1_795_392_000_000          # 2026-11-23T00:00:00Z
COMMUNITY = "campus-trap-7f3a"


class Clock:
    def __init__(self):
        self.t = T0

    def __call__(self):
        return self.t


@pytest.fixture
def eng():
    clock = Clock()
    e = RuleEngine(load_rules(RULES), AlertStore(":memory:"), device_meta=lambda d: None, clock=clock)
    e.test_clock = clock
    return e


@pytest.fixture(scope="module")
def traps():
    drv = T.create("traps", T.Options.model_validate({"listen": "127.0.0.1:0", "communities": [COMMUNITY],
                                                      "devices": {"127.0.0.1": "access-sw-3"}}), {})
    link = {st: capture(["-v2c", "-c", COMMUNITY, "{target}", "", f"1.3.6.1.6.3.1.1.5.{3 if st == 'down' else 4}",
                         "1.3.6.1.2.1.2.2.1.1.5", "i", "5", "1.3.6.1.2.1.31.1.1.1.1.5", "s", "GigabitEthernet0/5"])
            for st in ("down", "up")}
    topo = capture(["-v1", "-c", COMMUNITY, "{target}", "1.3.6.1.2.1.17", "127.0.0.1", "6", "2", ""])
    loop = capture(["-v2c", "-c", COMMUNITY, "{target}", "", "1.3.6.1.4.1.2011.5.25.174.3.3",
                    "1.3.6.1.4.1.2011.5.25.174.1.1.7.1.2.9", "s", "GigabitEthernet0/0/9"])
    unloop = capture(["-v2c", "-c", COMMUNITY, "{target}", "", "1.3.6.1.4.1.2011.5.25.174.3.4",
                      "1.3.6.1.4.1.2011.5.25.174.1.1.7.1.2.9", "s", "GigabitEthernet0/0/9"])
    poe_on = capture(["-v2c", "-c", COMMUNITY, "{target}", "", "1.3.6.1.2.1.105.0.2", "1.3.6.1.2.1.105.1.3.1.4.1",
                      "u", "740"])
    poe_off = capture(["-v2c", "-c", COMMUNITY, "{target}", "", "1.3.6.1.2.1.105.0.3", "1.3.6.1.2.1.105.1.3.1.4.1",
                       "u", "610"])
    return drv, {"down": link["down"], "up": link["up"], "topo": topo, "loop": loop, "unloop": unloop,
                 "poe_on": poe_on, "poe_off": poe_off}


SYSLOG = S.create("syslog", S.Options.model_validate({"listen_udp": "127.0.0.1:0",
                                                      "devices": {"127.0.0.1": "access-sw-3"}}), {})


def trap(traps, name: str, minute: float) -> dict:
    drv, dg = traps
    e = drv.handle(dg[name], ("127.0.0.1", 162), now_ms=T0 + int(minute * MIN))
    assert e is not None
    return to_item(e)[1]


def syslog(line: str, minute: float, src: str = "127.0.0.1") -> list[dict]:
    recs = SYSLOG.line(line, src, now_ms=T0 + int(minute * MIN))
    return [to_item(r)[1] for r in recs if r is not None]


def feed(eng, items: list[dict], until: float | None = None) -> list:
    out = []
    for it in items:
        eng.test_clock.t = max(eng.test_clock.t, it["t"])
        out += eng.on_events([it], agent="bldg-a")
    if until is not None:
        for k in range(int((until * MIN - (eng.test_clock.t - T0)) // 10_000) + 1):
            eng.test_clock.t += 10_000
            out += eng.tick(eng.test_clock.t)
    return out


def fired(changes, rule: str) -> list:
    return [(c.kind, (c.t_ms - T0) / MIN, c.alert.subject) for c in changes
            if c.alert.rule == rule and c.kind in ("firing", "resolved")]


# ---------------------------------------------------------------------------------------- shipped rules

def test_port_flapping_from_traps_and_syslog_together(eng, traps):
    cisco = "<187>{n}: *Nov 23 00:0{m}:00: %LINK-3-UPDOWN: Interface GigabitEthernet0/5, changed state to {st}"
    items = [trap(traps, "down", 0), trap(traps, "up", 1), trap(traps, "down", 2)]
    for i, m in enumerate((3, 4, 5)):
        items += syslog(cisco.format(n=i, m=m, st="up" if i % 2 == 0 else "down"), m)
    ch = feed(eng, items, until=20)
    assert fired(ch, "port-flapping") == [
        ("firing", 5.0, {"id": "access-sw-3", "tags": {"ifName": "GigabitEthernet0/5"}}),
        ("resolved", 15.0, {"id": "access-sw-3", "tags": {"ifName": "GigabitEthernet0/5"}})]
    a = [c.alert for c in ch if c.alert.rule == "port-flapping"][0]
    assert a.labels["category"] == "network" and "GigabitEthernet0/5" in a.summary


def test_link_changes_spread_out_are_not_flapping(eng, traps):
    items = [trap(traps, "down" if k % 2 == 0 else "up", k * 3) for k in range(8)]    # one change every 3 min
    assert fired(feed(eng, items, until=30), "port-flapping") == []


def test_repeated_login_failures(eng):
    line = "<38>Nov 23 00:00:00 sw-core sshd[77]: Failed password for invalid user admin from 10.9.9.{k} port 22 ssh2"
    items = [x for k in range(4) for x in syslog(line.format(k=k), k)]
    assert fired(feed(eng, items), "repeated-login-failures") == []              # four: not yet
    h3c = "<188>Nov 23 00:04:30 2026 SW2 %%10SHELL/5/SHELL_LOGINFAIL: admin failed to log in from 192.168.1.2."
    ch = feed(eng, syslog(h3c, 4.5), until=12)
    assert [k for k, *_ in fired(ch, "repeated-login-failures")] == ["firing", "resolved"]
    assert [a.value for a in eng.alerts({"state": "all", "rule": "repeated-login-failures"})] == [5]


def test_stp_topology_changes(eng, traps):
    items = [trap(traps, "topo", k * 1.5) for k in range(5)]
    ch = feed(eng, items)
    assert fired(ch, "stp-topology-changes") == [("firing", 6.0, {"id": "access-sw-3"})]


def test_loop_detected_and_cleared_by_the_device(eng, traps):
    ch = feed(eng, [trap(traps, "loop", 0), trap(traps, "unloop", 3)])
    assert [(k, m) for k, m, _ in fired(ch, "network-loop")] == [("firing", 0.0), ("resolved", 3.0)]
    assert [c.alert.severity for c in ch if c.kind == "firing" and c.alert.rule == "network-loop"] == ["critical"]
    flap = "<188>1: Nov 23 00:1{k}:00: %SW_MATM-4-MACFLAP_NOTIF: Host 0011.2233.4455 in vlan 10 is flapping between port Gi0/1 and port Gi0/2"
    ch = feed(eng, [x for k in range(3) for x in syslog(flap.format(k=k), 10 + k)])
    assert [k for k, *_ in fired(ch, "mac-flapping")] == ["firing"]


def test_poe_overload(eng, traps):
    ch = feed(eng, [trap(traps, "poe_on", 0), trap(traps, "poe_off", 7)])
    assert [(k, m) for k, m, _ in fired(ch, "poe-overload")] == [("firing", 0.0), ("resolved", 7.0)]


# ---------------------------------------------------------------------------------------- the kind

KIND_RULES = """
rules:
  - name: bursts
    kind: event_count
    event: [x, y]
    clear_event: reset
    count: 3
    within: 5m
    by: [port]
    data: {who: "~a.*"}
    summary: "{value} on {port}"
"""


def ev(typ, minute, port="p1", **data):
    return {"d": "dev", "type": typ, "t": T0 + int(minute * MIN), "severity": "info", "tags": {"port": port},
            "data": data}


def kind_engine(tmp_path, db=":memory:"):
    p = tmp_path / "r.yaml"
    p.write_text(textwrap.dedent(KIND_RULES))
    clock = Clock()
    e = RuleEngine(load_rules(p), AlertStore(db), device_meta=lambda d: None, clock=clock)
    e.test_clock = clock
    return e


def test_event_count_window_data_by_clear_and_late_events(tmp_path):
    eng = kind_engine(tmp_path)
    ch = feed(eng, [ev("x", 0, who="alice"), ev("y", 1, who="bob"), ev("x", 2, who="ann"),       # bob: no match
                    ev("x", 3, port="p2", who="al"), ev("x", 7, who="amy")])
    assert fired(ch, "bursts") == []                    # p1 has alice, ann, amy but never 3 within 5 min
    ch = feed(eng, [ev("y", 8, who="abe"), ev("x", 6.5, who="aaron")])   # the late one completes (3, 8]
    assert fired(ch, "bursts") == [("firing", 8.0, {"id": "dev", "tags": {"port": "p1"}})]
    ch = feed(eng, [ev("x", 9, who="ada")])
    a = eng.alerts({"rule": "bursts"})[0]
    assert a.count == 2 and a.value >= 3 and a.summary.endswith("on p1")
    ch = feed(eng, [ev("reset", 10)])
    assert [k for k, *_ in fired(ch, "bursts")] == ["resolved"]
    ch = feed(eng, [ev("x", 11, who="a1"), ev("x", 12, who="a2")])
    assert fired(ch, "bursts") == []                    # the window started over at the reset


def test_event_count_survives_a_restart(tmp_path):
    db = str(tmp_path / "alerts.db")
    eng = kind_engine(tmp_path, db)
    feed(eng, [ev("x", k, who="a") for k in range(3)])
    assert eng.alerts({"rule": "bursts"})[0].state == "firing"
    eng.flush()
    again = kind_engine(tmp_path, db)
    again.test_clock.t = T0 + 20 * MIN
    ch = again.tick(again.test_clock.t)
    assert [c.kind for c in ch if c.alert.rule == "bursts"] == ["resolved"]


def test_event_count_config_errors(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("rules:\n  - {name: b, kind: event_count, event: x, count: 1, within: 5m}\n")
    with pytest.raises(Exception, match="count"):
        load_rules(p)
    p.write_text("rules:\n  - {name: b, kind: event_count, event: x, count: 3, within: 5m, data: {a: '~('}}\n")
    with pytest.raises(Exception, match="regular expression"):
        load_rules(p)


def test_rules_test_cli_on_a_recording(tmp_path, traps):
    rec = tmp_path / "flaps.jsonl"
    items = [trap(traps, "down" if k % 2 == 0 else "up", k) for k in range(6)]
    rec.write_text("".join(json.dumps(it) + "\n" for it in items))
    r = subprocess.run([sys.executable, "-m", "campus_sense.cli", "rules", "test", str(RULES), "--samples", str(rec),
                        "--until", "+15m"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stdout.splitlines() if "port-flapping" in x]
    assert "FIRING" in lines[0] and "device=access-sw-3" in lines[0] and "RESOLVED" in lines[1]
