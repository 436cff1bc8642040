"""Compatibility name: the campus model's SQLite persistence lives in ``collector.store.campus``
(no SQL outside ``collector/store/``)."""
from collector.store.campus import SCHEMA, CampusStore  # noqa: F401

__all__ = ["CampusStore", "SCHEMA"]
