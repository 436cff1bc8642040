"""campus-sense: campus infrastructure monitoring (edge agents, collector, CLI)."""
__version__ = "0.1.0"
