"""The alerting core: rules, silences, inhibition, time intervals and notifications share one model.

    from collector.alertcore import load_rules, AlertStore, RuleEngine
    engine = RuleEngine(load_rules("rules.yaml"), AlertStore("rules.db"), device_meta=lookup)
    engine.listeners.append(notifier.on_alert_change)
    engine.on_samples(message.items, agent=message.agent)
    engine.tick()            # every few seconds

Where each concern lives: README.md in this directory.
"""
from __future__ import annotations

import importlib

#: public name -> module (imported on first use, so collector.store.alerts may import the model)
_EXPORTS = {
    "Alert": "model", "AlertChange": "model", "AlertError": "model", "HistoryEntry": "model", "Silence": "model",
    "SEVERITIES": "model", "SEVERITY_RANK": "model",
    "Matcher": "labels", "parse_matchers": "labels",
    "parse_duration": "timeinterval",
    "RuleSet": "config", "load_rules": "config",
    "RuleEngine": "engine",
    "AlertStore": "collector.store.alerts", "export_alerts_csv": "collector.store.alerts",
    "export_history_csv": "collector.store.alerts",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(mod if "." in mod else f"{__name__}.{mod}"), name)
