"""Alert rules: YAML rule files, the evaluation engine, persistent alert lifecycle.

    from collector.rules import load_rules, AlertStore, RuleEngine
    engine = RuleEngine(load_rules("rules.yaml"), AlertStore("collector.db"), device_meta=lookup)
    engine.listeners.append(notify)
    engine.on_samples(message.items, agent=message.agent)
    engine.tick()            # every few seconds

See README.md in this directory.
"""
from .engine import AlertChange, RuleEngine
from .matchers import Matcher, parse_matchers
from .model import RuleSet, load_rules, parse_duration
from .store import Alert, AlertError, AlertStore, HistoryEntry, Silence, export_alerts_csv, export_history_csv

__all__ = ["Alert", "AlertChange", "AlertError", "AlertStore", "HistoryEntry", "Matcher", "RuleEngine", "RuleSet",
           "Silence", "export_alerts_csv", "export_history_csv", "load_rules", "parse_duration", "parse_matchers"]
