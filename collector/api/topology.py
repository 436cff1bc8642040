"""Topology API: FDB, ARP, LLDP and interface-address entries, kept by the store as intervals
(first/last seen per entry, ``collector/store/topology.py``). Roles admin, it, security (like
``/devices``); every parameter bounded (``bounds.py``), a bad one is a 4xx naming it.

- ``GET /api/v1/topology/mac/{mac}?start=&end=&limit=``: where was MAC X between start and end:
  ``fdb`` intervals (device, port, ifIndex, vlan, first/last seen) and ``arp`` intervals (its IPs)
- ``GET /api/v1/topology/ip/{ip}?start=&end=&limit=``: IP <-> MAC history (``arp``) and the
  devices that had the IP on an interface (``ip_address``)
- ``GET /api/v1/topology/{kind}?device=&since=&limit=``: current entries of a kind
  (fdb|arp|lldp|ip_address), optionally of one device, last seen at or after ``since``
- ``GET /api/v1/topology/{kind}/history?device=&start=&end=&limit=``: intervals of a kind seen
  inside [start, end) (``lldp``: neighbour history)

Each interval: {device, kind, mac, ip, ifIndex, port, vlan, remote, tags, first_seen_ms,
last_seen_ms, observations, superseded_ms, open}; ``truncated: true`` when ``limit`` cut the answer.
"""
from __future__ import annotations

import ipaddress
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from ..store.topology import norm_mac
from .app import ALL
from .bounds import ms_query

#: most intervals in one answer
TOPOLOGY_MAX = 10_000

Kind = Literal["fdb", "arp", "lldp", "ip_address"]


def _limit() -> Any:
    return Query(1000, gt=0, le=TOPOLOGY_MAX, description=f"max intervals per list (1..{TOPOLOGY_MAX})")


def _window(start: int | None, end: int | None) -> None:
    if start is not None and end is not None and end <= start:
        raise HTTPException(400, f"end: must be after start ({end} <= {start})")


def router(store) -> APIRouter:
    r = APIRouter(tags=["topology"], dependencies=[Depends(ALL)])

    @r.get("/topology/mac/{mac}", summary="where was a MAC between start and end (FDB ports, ARP IPs)")
    def mac_history(mac: str = Path(max_length=64, description="MAC in any usual notation"),
                    start: int | None = ms_query(None, "epoch ms, inclusive"),
                    end: int | None = ms_query(None, "epoch ms, exclusive"), limit: int = _limit()) -> dict:
        if norm_mac(mac) is None:
            raise HTTPException(422, f"mac: {mac!r} is not a MAC address (aa:bb:cc:dd:ee:ff, aabb.ccdd.eeff, "
                                     "aa-bb-cc-dd-ee-ff)")
        _window(start, end)
        h = store.mac_history(mac, start, end, limit)
        return {**h, "start": start, "end": end,
                "truncated": len(h["fdb"]) >= limit or len(h["arp"]) >= limit}

    @r.get("/topology/ip/{ip}", summary="IP <-> MAC history (ARP) and interface addresses")
    def ip_history(ip: str = Path(max_length=64, description="IPv4 or IPv6 address"),
                   start: int | None = ms_query(None, "epoch ms, inclusive"),
                   end: int | None = ms_query(None, "epoch ms, exclusive"), limit: int = _limit()) -> dict:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise HTTPException(422, f"ip: {ip!r} is not an IPv4 or IPv6 address") from None
        _window(start, end)
        h = store.ip_history(ip, start, end, limit)
        return {**h, "start": start, "end": end,
                "truncated": len(h["arp"]) >= limit or len(h["ip_address"]) >= limit}

    @r.get("/topology/{kind}", summary="current topology entries (open intervals)")
    def current(kind: Kind, device: str | None = Query(None, max_length=256),
                since: int | None = ms_query(None, "epoch ms: only entries last seen at or after it"),
                limit: int = _limit()) -> dict:
        rows = store.topology_current(kind, device, since, limit)
        return {"kind": kind, "device": device, "entries": rows, "truncated": len(rows) >= limit}

    @r.get("/topology/{kind}/history", summary="topology intervals seen inside [start, end)")
    def history(kind: Kind, device: str | None = Query(None, max_length=256),
                start: int | None = ms_query(None, "epoch ms, inclusive"),
                end: int | None = ms_query(None, "epoch ms, exclusive"), limit: int = _limit()) -> dict:
        _window(start, end)
        rows = store.topology_history(kind, device, start, end, limit=limit)
        return {"kind": kind, "device": device, "start": start, "end": end, "intervals": rows,
                "truncated": len(rows) >= limit}

    return r
