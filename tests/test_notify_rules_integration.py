"""The real rule engine's AlertChange(kind, alert, t_ms, ...) drives the Notifier end to end
(listener registration as documented in collector/alertcore)."""
from __future__ import annotations

import time

import pytest

from collector.notify import Notifier
from collector.notify.config import from_dict
from tests.test_notify_support import RobotServer, wait_until

rules = pytest.importorskip("collector.alertcore")

RULES = """\
rules:
  - name: fridge-warm
    kind: threshold
    scope: {type: fridge}
    measurement: temperature
    field: value
    op: ">"
    value: 5
    severity: critical
    summary: "{device} at {value}"
"""


async def test_rule_engine_changes_are_notified(tmp_path):
    (tmp_path / "rules.yaml").write_text(RULES)
    peer = RobotServer().start()
    try:
        engine = rules.RuleEngine(rules.load_rules(tmp_path / "rules.yaml"), rules.AlertStore(str(tmp_path / "a.db")),
                                  device_meta=lambda d: {"site": "north", "building": "A", "room": "A-1",
                                                         "type": "fridge"})
        cfg = from_dict({"channels": {"hook": {"type": "webhook", "url": peer.url("/hook/rules")}},
                         "route": {"channels": ["hook"], "group_wait": 0, "group_interval": 0,
                                   "routes": [{"building": "A", "severity": "critical"}]}})
        n = Notifier(cfg, tmp_path / "n.db")
        engine.listeners.append(n.on_alert_change)
        await n.start()
        try:
            t = int(time.time() * 1000)
            engine.on_samples([{"m": "temperature", "d": "fridge-1", "t": t, "tags": {}, "f": {"value": 9.0}}],
                              agent="bldg-a")
            engine.on_samples([{"m": "temperature", "d": "fridge-1", "t": t + 60_000, "tags": {},
                                "f": {"value": 3.0}}], agent="bldg-a")
            await wait_until(lambda: len(peer.accepted_on("/hook/rules")) == 2, what="firing + resolved")
        finally:
            await n.stop()
        firing, resolved = (r["body"] for r in peer.accepted_on("/hook/rules"))
        assert firing["status"] == "firing" and firing["route"] == "route.0"
        a = firing["alerts"][0]
        assert a["rule"] == "fridge-warm" and a["labels"]["device"] == "fridge-1" and a["value"] == 9.0
        assert a["summary"] == "fridge-1 at 9.0"
        assert resolved["status"] == "resolved" and resolved["alerts"][0]["id"] == a["id"]
        assert resolved["alerts"][0]["ended_at"]
        assert n.status()["rejected_changes"] == 0
        n.close()
    finally:
        peer.stop()
