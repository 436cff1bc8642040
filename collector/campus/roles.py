"""Port roles of the campus model for the rule engine (``device_meta(d)["ports"]``).

The campus model (``campus.yaml`` ``ports:``, imported into the collector DB, or proposed by
``campus-sense discover`` from LLDP) says which switch port is an uplink, a desk socket, an AP
port... Rules match them with ``item_tags: ["role=uplink"]`` (the shipped ``uplink-down`` rule).

``PortRoles(db_path)`` reads the stored model (``CampusStore``), at most every ``refresh_s``;
``view(device)`` is a live, read-only mapping ``port -> role`` for one device, looked up by
ifName (case-insensitive, as the switch reports it) or ``#<ifIndex>`` (the model's ``if_index``),
so the engine's cached device metadata never holds stale roles.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Iterator

log = logging.getLogger("collector.campus")


class PortRoles:
    def __init__(self, db_path: str | None, refresh_s: float = 15.0, clock=time.monotonic):
        self.db_path = db_path
        self.refresh_s = refresh_s
        self.clock = clock
        self._by_dev: dict[str, dict[str, str]] = {}
        self._at: float | None = None
        self._lock = threading.Lock()
        self._cs = None

    @classmethod
    def for_store(cls, store) -> "PortRoles | None":
        """Roles from the campus tables in the collector store's own SQLite file, or in its PostgreSQL
        database (``store.kind: postgres``); None without one."""
        if getattr(store, "kind", None) == "postgres":
            from collector.store.sqldb import shared_target
            return cls(shared_target(store))   # type: ignore[arg-type]
        path = getattr(store, "path", None)
        if not isinstance(path, str) or not path or path == ":memory:":
            return None
        return cls(path)

    def invalidate(self) -> None:
        self._at = None

    def _load(self) -> None:
        from collector.store.campus import CampusStore
        by_dev: dict[str, dict[str, str]] = {}
        try:
            if self._cs is None:
                self._cs = CampusStore(self.db_path)
            model = self._cs.load_campus()
        except Exception:  # noqa: BLE001 - no campus tables yet, a locked file: try again later
            log.debug("campus port roles: cannot read %s", self.db_path, exc_info=True)
            return
        for p in model.ports.values():
            m = by_dev.setdefault(p.device, {})
            m[p.port.lower()] = p.role
            if p.if_index is not None:
                m[f"#{p.if_index}"] = p.role
        self._by_dev = by_dev

    def roles(self, device: str) -> dict[str, str]:
        now = self.clock()
        with self._lock:
            if self._at is None or now - self._at >= self.refresh_s:
                self._at = now
                self._load()
            return self._by_dev.get(device, {})

    def view(self, device: str) -> "DevicePorts":
        return DevicePorts(self, device)


class DevicePorts(Mapping):
    """``{port: role}`` of one device, read through on every lookup (keys: lower-case ifName, ``#ifIndex``)."""

    __slots__ = ("_roles", "_device")

    def __init__(self, roles: PortRoles, device: str):
        self._roles, self._device = roles, device

    def __getitem__(self, key: str) -> str:
        if not isinstance(key, str):
            raise KeyError(key)
        return self._roles.roles(self._device)[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._roles.roles(self._device))

    def __len__(self) -> int:
        return len(self._roles.roles(self._device))

    def __repr__(self) -> str:
        return f"DevicePorts({self._device!r}, {self._roles.roles(self._device)!r})"
