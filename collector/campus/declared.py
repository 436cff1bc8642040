"""Declare things once: what agents say about their devices flows into the campus model.

Each agent's birth message lists its devices with ``room`` and ``type`` from agent.yaml (or from
``campus-sense discover``); the agent is bound to its site and building (enrolment / first
message). From that, :func:`declared_model` builds sites, buildings, rooms and devices, and
:func:`sync` adds to the stored campus model what it does not have yet:

* sites, buildings, rooms (a room only an agent names gets type ``other`` until campus.yaml gives
  its real type) and devices (type from agent.yaml, ``other`` for types the model does not know);
* a stored device without room/building gets the agent's.

Nothing the campus files say is overwritten: campus.yaml adds only what an agent cannot know (room
types, floors, device roles, port roles, desks, uplinks). A campus.yaml device entry may leave out
``type`` (and ``room``) -- the importer fills them from the agents (``load_campus(declared=...)``).
"""
from __future__ import annotations

import logging
import time
from typing import Any

from pydantic import ValidationError

from collector.campus.model import Building, CampusModel, Device, DeviceType, Room, Site

log = logging.getLogger("collector.campus")

DEVICE_TYPES = set(DeviceType.__args__)  # type: ignore[attr-defined]
#: agent.yaml type spellings -> campus model device types
TYPE_ALIASES = {"wlc": "controller", "wifi_controller": "controller", "wifi-controller": "controller",
                "access-switch": "switch", "core-switch": "switch", "distribution-switch": "switch",
                "core": "switch", "distribution": "switch", "access_point": "ap", "access-point": "ap",
                "nvr": "server", "ups": "other", "fridge": "sensor", "gas": "sensor", "door": "other"}


def device_type(t: Any) -> str:
    s = str(t or "").strip().lower()
    s = TYPE_ALIASES.get(s, s)
    return s if s in DEVICE_TYPES else "other"


def declared_model(store) -> CampusModel:
    """Sites, buildings, rooms and devices as the agents declare them (store: agents + birth info)."""
    m = CampusModel()
    try:
        agents = store.agents(int(time.time() * 1000), 1e9)
    except Exception:  # noqa: BLE001
        log.exception("agents of the store")
        return m
    for a in agents:
        site, bld = a.get("site"), a.get("building")
        if a.get("state") == "revoked":
            continue
        try:
            if site and site not in m.sites:
                m.sites[site] = Site(id=site, name=site)
            if site and bld and bld not in m.buildings:
                m.buildings[bld] = Building(id=bld, site=site, name=bld)
        except ValidationError:
            continue
        info = a.get("info") if isinstance(a.get("info"), dict) else {}
        for d in info.get("devices") or []:
            if not isinstance(d, dict) or not isinstance(d.get("id"), str):
                continue
            room = d.get("room") if isinstance(d.get("room"), str) and d.get("room") else None
            try:
                if room and bld in m.buildings and room not in m.rooms:
                    m.rooms[room] = Room(id=room, building=bld, type="other")
                m.devices[d["id"]] = Device(id=d["id"], type=device_type(d.get("type")), room=room,
                                            building=bld if bld in m.buildings else None)
            except ValidationError as e:
                log.warning("agent %s device %r: not in the campus model (%s)", a.get("id"), d.get("id"),
                            e.errors()[0].get("msg"))
    return m


def sync(campus_store, store) -> dict[str, int]:
    """Add what the agents declare and the stored model lacks; -> counts of objects written."""
    decl = declared_model(store)
    have = campus_store.load_campus()
    delta = CampusModel()
    for kind in ("sites", "buildings", "rooms"):
        for k, obj in getattr(decl, kind).items():
            if k not in getattr(have, kind):
                getattr(delta, kind)[k] = obj
    for k, dev in decl.devices.items():
        old = have.devices.get(k)
        if old is None:
            delta.devices[k] = dev
        elif old.room is None and old.building is None and (dev.room or dev.building):
            delta.devices[k] = old.model_copy(update={"room": dev.room, "building": dev.building})
    if any(getattr(delta, k) for k in ("sites", "buildings", "rooms", "devices")):
        campus_store.save_campus(delta)
    return {k: len(getattr(delta, k)) for k in ("sites", "buildings", "rooms", "devices")}
