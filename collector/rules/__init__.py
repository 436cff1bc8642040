"""Compatibility name: the alert rules live in ``collector.alertcore`` (see its README.md)."""
from collector.alertcore import (Alert, AlertChange, AlertError, AlertStore, HistoryEntry, Matcher, RuleEngine,
                                 RuleSet, Silence, export_alerts_csv, export_history_csv, load_rules,
                                 parse_duration, parse_matchers)

__all__ = ["Alert", "AlertChange", "AlertError", "AlertStore", "HistoryEntry", "Matcher", "RuleEngine", "RuleSet",
           "Silence", "export_alerts_csv", "export_history_csv", "load_rules", "parse_duration", "parse_matchers"]
