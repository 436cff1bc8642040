"""Maintenance windows made through the engine/API (persisted in the alert store, same schedule
grammar as rules.yaml), and "without data collection" (collect: false): absence / agent_offline
alerts are not raised inside such a window, staleness counts from its end; in YAML and the API."""
from __future__ import annotations

import datetime as dt
import textwrap
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from collector.alertcore import AlertStore, RuleEngine, load_rules
from collector.alertcore.model import AlertError

SH = ZoneInfo("Asia/Shanghai")
MIN = 60_000

RULES = """
calendars:
  nightly-sh: {timezone: Asia/Shanghai, hours: ["01:00-03:00"]}
  holidays-sh: {timezone: Asia/Shanghai, dates: ["2026-12-24"]}
maintenance:
  - {name: yaml-window, matchers: [building=Y], schedule: nightly-sh, collect: false}
rules:
  - {name: down, kind: event, event: down, clear_event: up, severity: critical}
  - {name: stale, kind: absence, after: 10m, scope: {type: sensor}}
  - {name: agent-off, kind: agent_offline, after: 5m}
"""


def _ms(*a, tz=SH):
    return int(dt.datetime(*a, tzinfo=tz).timestamp() * 1000)


def _engine(tmp_path, store=None):
    p = tmp_path / "rules.yaml"
    p.write_text(textwrap.dedent(RULES))
    clock = {"now": _ms(2026, 12, 1, 12, 0)}
    meta = {"sw": {"building": "A", "type": "switch"}, "s1": {"building": "A", "type": "sensor", "agent": "ag"},
            "s2": {"building": "Y", "type": "sensor"}}
    eng = RuleEngine(load_rules(p), store or AlertStore(str(tmp_path / "a.db")), device_meta=meta.get,
                     clock=lambda: clock["now"])
    return eng, clock


def test_api_window_inline_schedule_mutes_lists_persists_and_deletes(tmp_path):
    eng, clock = _engine(tmp_path)
    w = eng.maintenance_create("a-nightly", ["building=A"], {"timezone": "Asia/Shanghai", "hours": ["01:00-03:00"],
                                                             "exclude": ["holidays-sh"]}, "ops")
    assert w["source"] == "api" and w["collect"] is True and w["open"] is False and w["created_by"] == "ops"
    names = {x["name"]: x for x in eng.maintenance_list()}
    assert names["yaml-window"]["source"] == "rules" and names["yaml-window"]["collect"] is False
    # inside the window (Shanghai 02:00): a firing alert is muted
    clock["now"] = _ms(2026, 12, 2, 2, 0)
    eng.on_events([{"d": "sw", "type": "down", "t": clock["now"]}])
    assert eng.alerts()[0].suppressed == "maintenance:a-nightly"
    # the holiday excluded by the rules.yaml calendar: not muted
    clock["now"] = _ms(2026, 12, 24, 2, 0)
    eng.tick(clock["now"])
    assert eng.alerts()[0].suppressed is None
    # persisted: a new engine on the same store has it
    eng.store.close()
    eng2, clock2 = _engine(tmp_path, AlertStore(str(tmp_path / "a.db")))
    assert "a-nightly" in {x["name"] for x in eng2.maintenance_list()}
    clock2["now"] = _ms(2026, 12, 25, 2, 0)
    eng2.tick(clock2["now"])
    assert eng2.alerts()[0].suppressed == "maintenance:a-nightly"
    before = eng2.maintenance_delete("a-nightly", "ops")
    assert before["name"] == "a-nightly" and before["schedule"]["hours"] == ["01:00-03:00"]
    assert eng2.alerts()[0].suppressed is None
    assert "a-nightly" not in {x["name"] for x in eng2.maintenance_list()}


@pytest.mark.parametrize("name, matchers, schedule, msg", [
    ("x", ["building=A"], "no-such-calendar", "unknown calendar 'no-such-calendar'"),
    ("x", ["building=A"], {"days": ["monkey"]}, "schedule"),
    ("x", ["building=A"], {"exclude": ["nope"]}, "unknown calendar 'nope'"),
    ("x", [], "nightly-sh", "at least one matcher"),
    ("yaml-window", ["building=A"], "nightly-sh", "rules.yaml"),
])
def test_bad_windows_are_rejected_with_a_clear_error(tmp_path, name, matchers, schedule, msg):
    eng, _ = _engine(tmp_path)
    with pytest.raises(AlertError) as ei:
        eng.maintenance_create(name, matchers, schedule, "ops")
    assert msg in str(ei.value)
    eng.maintenance_create("ok", ["building=A"], "nightly-sh", "ops")
    with pytest.raises(AlertError, match="already exists"):
        eng.maintenance_create("ok", ["building=A"], "nightly-sh", "ops")


def test_without_data_collection_absence_not_raised_inside_counts_from_end(tmp_path):
    eng, clock = _engine(tmp_path)
    eng.maintenance_create("a-nocollect", ["building=A"], "nightly-sh", "ops", collect=False)
    t0 = _ms(2026, 12, 2, 0, 55)
    clock["now"] = t0
    eng.on_samples([{"m": "x", "d": "s1", "t": t0, "f": {"value": 1}}, {"m": "x", "d": "s2", "t": t0, "f": {"value": 1}}])
    # collection pauses 01:00-03:00: no absence alert while the window is open
    for k in range(0, 126):                     # ticks every minute up to 03:00
        clock["now"] = t0 + k * MIN
        eng.tick(clock["now"])
    assert not [a for a in eng.alerts() if a.rule == "stale"]
    # after the window, staleness counts from its end (last tick inside: 02:59, + 10m), not from the
    # last sample (00:55)
    clock["now"] = _ms(2026, 12, 2, 3, 8)
    eng.tick(clock["now"])
    assert not [a for a in eng.alerts() if a.rule == "stale"]
    clock["now"] = _ms(2026, 12, 2, 3, 11)
    eng.tick(clock["now"])
    stale = [a for a in eng.alerts() if a.rule == "stale"]
    assert sorted(a.labels["device"] for a in stale) == ["s1", "s2"]   # s2: the rules.yaml collect: false window
    assert all(a.suppressed is None for a in stale)


def test_collect_true_window_still_raises_absence_muted(tmp_path):
    eng, clock = _engine(tmp_path)
    eng.maintenance_create("a-collect", ["building=A"], "nightly-sh", "ops", collect=True)
    t0 = _ms(2026, 12, 2, 0, 55)
    clock["now"] = t0
    eng.on_samples([{"m": "x", "d": "s1", "t": t0, "f": {"value": 1}}])
    clock["now"] = t0 + 20 * MIN
    eng.tick(clock["now"])
    a = [a for a in eng.alerts() if a.rule == "stale"]
    assert a and a[0].suppressed == "maintenance:a-collect"


def test_without_data_collection_agent_offline(tmp_path):
    eng, clock = _engine(tmp_path)
    eng.maintenance_create("ag-nocollect", ["agent=ag"], {"timezone": "Asia/Shanghai", "hours": ["01:00-03:00"]},
                           "ops", collect=False)
    t0 = _ms(2026, 12, 2, 0, 58)
    clock["now"] = t0
    eng.on_agent_state("ag", True, t0)
    for k in range(0, 123):
        eng.tick(t0 + k * MIN)
    assert not [a for a in eng.alerts() if a.rule == "agent-off"]
    eng.tick(_ms(2026, 12, 2, 3, 6))
    assert [a for a in eng.alerts() if a.rule == "agent-off"]


# ---------------------------------------------------------------------------- HTTP API

@pytest.fixture
def api(tmp_path):
    from tests.test_api_fuzz import Env
    env = Env(tmp_path)
    yield env
    env.close()


def test_maintenance_api_create_list_delete_roles(api):
    c, h = api.client, api.h
    body = {"name": "b-nightly", "matchers": ["building=A"], "collect": False, "comment": "UPS work",
            "schedule": [{"timezone": "Asia/Shanghai", "days": ["sat", "sun"], "hours": ["22:00-04:00"]}]}
    assert c.post("/api/v1/maintenance", json=body, headers=h("it")).status_code == 403
    r = c.post("/api/v1/maintenance", json=body, headers=h("security"))
    assert r.status_code == 201, r.text
    assert r.json()["collect"] is False and r.json()["created_by"] == "security-user (security)"
    assert c.post("/api/v1/maintenance", json=body, headers=h("security")).status_code == 409
    bad = dict(body, name="bad", schedule={"days": ["mon-tue-wed"]})
    r = c.post("/api/v1/maintenance", json=bad, headers=h("admin"))
    assert r.status_code in (400, 422) and "mon-tue-wed" in r.text
    lst = c.get("/api/v1/maintenance", headers=h("it")).json()
    w = next(x for x in lst if x["name"] == "b-nightly")
    assert w["source"] == "api" and w["collect"] is False and w["schedule"][0]["hours"] == ["22:00-04:00"]
    assert c.delete("/api/v1/maintenance/b-nightly", headers=h("it")).status_code == 403
    assert c.delete("/api/v1/maintenance/b-nightly", headers=h("admin")).json()["name"] == "b-nightly"
    assert c.delete("/api/v1/maintenance/b-nightly", headers=h("admin")).status_code == 404
