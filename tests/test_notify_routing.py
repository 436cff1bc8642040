"""Routing, grouping and timing (group_wait / group_interval / repeat_interval, time windows,
resolved notifications). Uses the Notifier without starting dispatchers: routing decisions
are visible as outbox rows; the routing clock is driven explicitly (no sleeping)."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from collector.notify import Notifier as _Notifier
from collector.notify import load_config
from tests.pg_fixture import pg_server, store_target  # noqa: F401 - both backends
from tests.test_notify_support import alert_change

# ------------------------------------------------------------------ both backends (SQLite, PostgreSQL)
_BACKEND: dict = {}


@pytest.fixture(autouse=True)
def backend(store_target):
    _BACKEND["new"] = store_target
    yield store_target
    _BACKEND.clear()


def Notifier(config, db, **kw):
    """The outbox on the test's backend: a SQLite path, or the PostgreSQL database named after it."""
    new = _BACKEND["new"]
    return _Notifier(config, db if new.kind == "sqlite" else new(Path(str(db)).stem), **kw)


SH = ZoneInfo("Asia/Shanghai")
MON_0900 = datetime(2026, 11, 23, 9, 0, tzinfo=SH).timestamp()    # Monday, office hours
SUN_0300 = datetime(2026, 11, 22, 3, 0, tzinfo=SH).timestamp()    # Sunday night

CONFIG = """\
channels:
  default: {type: webhook, url: "http://127.0.0.1:9/default"}
  noc:     {type: webhook, url: "http://127.0.0.1:9/noc"}
  bldg-a:  {type: webhook, url: "http://127.0.0.1:9/a"}
  bldg-b:  {type: webhook, url: "http://127.0.0.1:9/b", send_resolved: false}
  office:  {type: webhook, url: "http://127.0.0.1:9/office"}
  disk:    {type: webhook, url: "http://127.0.0.1:9/disk"}
  quiet:   {type: webhook, url: "http://127.0.0.1:9/quiet"}
time_windows:
  office_hours:
    - {days: [mon-fri], hours: ["08:00-18:00"], timezone: Asia/Shanghai}
route:
  channels: [default]
  group_by: [rule, building]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
  routes:
    - severity: critical
      channels: [noc]
      group_by: ["..."]
      group_wait: 0s
      repeat_interval: 1h
      continue: true
    - rule: disk_full
      channels: [disk]
    - building: A
      channels: [bldg-a]
      routes:
        - matchers: ["room=~A-1.*", "type!=camera"]
          channels: [office]
          active_time_windows: [office_hours]
    - building: B
      channels: [bldg-b]
    - building: Q
      channels: [quiet]
      mute_time_windows: [office_hours]
"""


@pytest.fixture
def cfg(tmp_path):
    p = tmp_path / "notify.yaml"
    p.write_text(CONFIG)
    return load_config(p)


@pytest.fixture
def notifier(cfg, tmp_path):
    clock = {"now": MON_0900}
    n = Notifier(cfg, tmp_path / "notify.db", clock=lambda: clock["now"])
    n.clock_state = clock
    yield n
    n.close()


def ch(aid, state="firing", severity="warning", building="C", rule="cpu_high", room=None, **kw):
    return alert_change(aid, rule, severity, state,
                        labels={"site": "north", "building": building, "room": room or f"{building}-201",
                               "device": f"dev-{aid}", "type": kw.pop("type", "switch")},
                       summary=f"{rule} on dev-{aid}", started_at=MON_0900 - 60, value=1.0, **kw)


def sent(n: Notifier, channel: str | None = None) -> list[dict]:
    """Notifications enqueued so far (oldest first)."""
    return [d["payload"] for d in reversed(n.deliveries(1000, channel=channel, payload=True))]


def at(n: Notifier, t: float):
    n.clock_state["now"] = t


def test_severity_route_continues_to_building(notifier):
    n = notifier
    n.on_alert_change(ch("a1", severity="critical", building="A"))
    # critical route has group_wait 0: immediately on the listener call
    assert [p["channel"] for p in sent(n)] == ["noc"]
    n.tick(MON_0900 + 29)
    assert [p["channel"] for p in sent(n)] == ["noc"]
    n.tick(MON_0900 + 30)                      # building A route: group_wait 30s
    assert [p["channel"] for p in sent(n)] == ["noc", "bldg-a"]
    p = sent(n, "noc")[0]
    assert p["status"] == "firing" and p["route"] == "route.0" and p["alerts"][0]["id"] == "a1"


def test_building_and_rule_routes_first_match_wins(notifier):
    n = notifier
    n.on_alert_change(ch("b1", building="B"))
    n.on_alert_change(ch("d1", building="A", rule="disk_full"))   # disk route before building A
    n.on_alert_change(ch("c1", building="C"))                     # no child matches -> root
    n.on_alert_change(ch("i1", severity="info", building="A", room="A-301"))
    n.tick(MON_0900 + 30)
    got = {p["alerts"][0]["id"]: p["channel"] for p in sent(n)}
    assert got == {"b1": "bldg-b", "d1": "disk", "c1": "default", "i1": "bldg-a"}


def test_matchers_and_active_time_window(notifier):
    n = notifier
    at(n, SUN_0300)
    n.on_alert_change(ch("o1", building="A", room="A-101"))
    n.on_alert_change(ch("cam", building="A", room="A-102", type="camera"))  # type!=camera fails -> bldg-a
    n.tick(SUN_0300 + 3600)
    assert [p["channel"] for p in sent(n)] == ["bldg-a"]      # office route is outside its window
    assert sent(n)[0]["alerts"][0]["id"] == "cam"
    n.tick(MON_0900)                                           # window opens: pending group goes out
    office = sent(n, "office")
    assert len(office) == 1 and office[0]["alerts"][0]["id"] == "o1"


def test_mute_time_window(notifier):
    n = notifier
    n.on_alert_change(ch("q1", building="Q"))                  # Monday 09:00: muted
    n.tick(MON_0900 + 600)
    assert sent(n) == []
    n.tick(datetime(2026, 11, 23, 18, 0, tzinfo=SH).timestamp())   # window end is exclusive
    assert [p["channel"] for p in sent(n)] == ["quiet"]


def test_alert_fired_and_resolved_inside_quiet_period_is_dropped(notifier):
    n = notifier
    at(n, SUN_0300)
    n.on_alert_change(ch("o1", building="A", room="A-101"))
    at(n, SUN_0300 + 600)
    n.on_alert_change(ch("o1", state="resolved", building="A", room="A-101"))
    n.tick(MON_0900)
    assert sent(n) == []
    assert n.status()["groups"] == 0


def test_grouping_group_wait_and_group_interval(notifier):
    n = notifier
    t = MON_0900
    n.on_alert_change(ch("g1"))
    at(n, t + 10)
    n.on_alert_change(ch("g2"))
    at(n, t + 12)
    n.on_alert_change(ch("x1", rule="temp_high"))               # other rule -> other group
    n.tick(t + 30)
    ps = sent(n)
    assert len(ps) == 1                                         # temp_high group still waiting
    assert sorted(a["id"] for a in ps[0]["alerts"]) == ["g1", "g2"]
    assert ps[0]["group_labels"] == {"rule": "cpu_high", "building": "C"}
    assert ps[0]["title"].startswith("[FIRING:2]")
    n.tick(t + 42)
    assert len(sent(n)) == 2
    # a new alert joins the cpu group: next notification only after group_interval (5m)
    at(n, t + 40)
    n.on_alert_change(ch("g3"))
    n.tick(t + 100)
    assert len(sent(n)) == 2
    n.tick(t + 330)
    ps = sent(n)
    assert len(ps) == 3 and sorted(a["id"] for a in ps[2]["alerts"]) == ["g1", "g2", "g3"]
    assert ps[2]["repeat"] is False


def test_repeat_interval_survives_restart(cfg, tmp_path):
    db = tmp_path / "notify.db"
    t = MON_0900
    n = Notifier(cfg, db, clock=lambda: t)
    n.on_alert_change(ch("r1", severity="critical", building="C"))
    n.on_alert_change(ch("w1", severity="warning", building="C"))
    n.tick(t + 30)
    # r1 matched the critical route (continue) and no other child: Alertmanager semantics,
    # the parent (default) does not take it; w1 goes to default
    assert [(p["channel"], p["alerts"][0]["id"]) for p in sent(n)] == [("noc", "r1"), ("default", "w1")]
    n.tick(t + 3599)
    assert len(sent(n)) == 2
    n.close()

    # new process: the last-sent times come from the database
    n2 = Notifier(cfg, db, clock=lambda: t)
    n2.tick(t + 3599)
    assert len(sent(n2)) == 2
    n2.tick(t + 3600)                                          # noc repeat_interval 1h
    ps = sent(n2)
    assert [p["channel"] for p in ps] == ["noc", "default", "noc"]
    assert ps[2]["repeat"] is True and "[REPEAT]" in ps[2]["title"]
    n2.tick(t + 30 + 4 * 3600 - 1)
    assert [p["channel"] for p in sent(n2)].count("default") == 1
    n2.tick(t + 30 + 4 * 3600)                                 # default route repeats after 4h
    assert [p["channel"] for p in sent(n2)].count("default") == 2
    n2.close()


def test_acked_alert_is_not_repeated(notifier):
    n = notifier
    t = MON_0900
    n.on_alert_change(ch("k1", severity="critical"))
    n.tick(t + 30)
    count = len(sent(n, "noc"))
    at(n, t + 60)
    n.on_alert_change(ch("k1", severity="critical", acked=True))
    n.tick(t + 3 * 3600)
    assert len(sent(n, "noc")) == count


def test_resolved_notification(notifier):
    n = notifier
    t = MON_0900
    n.on_alert_change(ch("z1", severity="critical", building="B"))
    n.tick(t + 30)
    assert sorted(p["channel"] for p in sent(n)) == ["bldg-b", "noc"]
    at(n, t + 60)
    n.on_alert_change(ch("z1", state="resolved", severity="critical", building="B"))
    n.tick(t + 200)                                           # resolved waits for group_interval
    assert len(sent(n)) == 2
    n.tick(t + 300)
    ps = sent(n, "noc")
    assert len(ps) == 2
    r = ps[1]
    assert r["status"] == "resolved" and r["alerts"][0]["status"] == "resolved"
    assert r["alerts"][0]["ended_at"] and r["title"].startswith("[RESOLVED:1]")
    n.tick(t + 400)
    assert len(sent(n, "bldg-b")) == 1                         # send_resolved: false
    assert n.status()["groups"] == 0


def test_pending_and_silenced_are_not_notified(notifier):
    n = notifier
    n.on_alert_change(ch("p1", state="pending", severity="critical"))
    n.on_alert_change(ch("s1", severity="critical", silenced=True))
    n.tick(MON_0900 + 3600)
    assert sent(n) == []


def test_bad_changes_are_rejected_not_raised(notifier):
    n = notifier
    n.on_alert_change(object())
    n.on_alert_change({"alert_id": "x", "rule_id": "r", "severity": "critical", "state": "firing"})  # not the model
    n.on_alert_change(ch("x", severity="fatal"))
    n.on_alert_change(ch("y", severity="critical"))
    st = n.status()
    assert st["rejected_changes"] == 3 and "fatal" in st["last_rejected"]
    assert [p["alerts"][0]["id"] for p in sent(n)] == ["y"]
    assert sent(n)[0]["alerts"][0]["started_at"] == "2026-11-23T00:59:00Z"
