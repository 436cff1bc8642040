"""The discovery run: workers over the scope's addresses (LLDP/CDP neighbours first), classification."""
from __future__ import annotations

import asyncio
import logging
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable

from edge_agent.discover import classify as cl
from edge_agent.discover.probes import (Found, RateLimiter, Scope, WsdClient, modbus_probe, pjlink_probe,
                                        snmp_neighbours, snmp_probe)

log = logging.getLogger("campus_sense.discover")


@dataclass
class Settings:
    snmp_port: int = 161
    onvif_port: int = 3702
    pjlink_port: int = 4352
    modbus_port: int = 502
    modbus: bool = False
    snmp: bool = True
    onvif: bool = True
    pjlink: bool = True
    multicast: bool = True
    rate: float = 100.0
    concurrency: int = 32
    timeout: float = 1.0
    lldp: bool = True
    cdp: bool = True


@dataclass
class Result:
    scope: list[str]
    found: dict[str, Found] = field(default_factory=dict)
    probed: int = 0
    packets: int = 0
    seconds: float = 0.0
    outside: list[dict] = field(default_factory=list)   # LLDP/CDP neighbours / XAddrs beyond the CIDRs (not contacted)


class Discovery:
    def __init__(self, scope: Scope, creds, settings: Settings, progress: Callable[[int, int, int], None] | None = None):
        self.scope, self.creds, self.s = scope, creds, settings
        self.progress = progress or (lambda done, total, found: None)
        self.limiter = RateLimiter(settings.rate, burst=max(1, min(10, int(settings.rate))))
        self.result = Result([str(n) for n in scope.nets])
        self._priority: list[str] = []
        self._done: set[str] = set()
        self._wsd: WsdClient | None = None
        self._named: dict[str, str] = {}   # neighbour address -> protocol that named it (lldp | cdp)

    @property
    def snmp_creds(self) -> list:
        return list(self.creds.snmp.v2c) + list(self.creds.snmp.v3)

    async def run(self) -> Result:
        t0 = time.monotonic()
        total = self.scope.size()
        hosts = self.scope.hosts()
        if self.s.onvif:
            self._wsd = await WsdClient(self.scope, self.s.onvif_port).open()
            if self.s.multicast and not self.scope.loopback_only:
                try:
                    await self._wsd.probe_multicast(self.limiter)
                except OSError as e:
                    log.info("multicast WS-Discovery probe not sent: %s", e)

        def next_ip() -> str | None:
            while self._priority:
                ip = self._priority.pop(0)
                if ip not in self._done:
                    return ip
            for ip in hosts:
                if ip not in self._done:
                    return ip
            return None

        async def worker() -> None:
            while True:
                ip = next_ip()
                if ip is None:
                    return
                self._done.add(ip)
                try:
                    await self.probe(ip)
                except Exception:  # noqa: BLE001 - one odd host must not end the run
                    log.exception("%s: probe failed", ip)
                self.result.probed += 1
                self.progress(self.result.probed, total, len(self.result.found))

        try:
            await asyncio.gather(*(worker() for _ in range(max(1, self.s.concurrency))))
            if self._wsd is not None:
                for src, m in self._wsd.multicast:
                    f = self.result.found.get(src) or Found(src, via="multicast")
                    if f.onvif is None:
                        self._onvif(f, m)
                        self.result.found[src] = f
        finally:
            if self._wsd is not None:
                self._wsd.close()
        for f in self.result.found.values():
            self._classify(f)
        self.result.packets = self.limiter.count
        self.result.seconds = time.monotonic() - t0
        return self.result

    async def probe(self, ip: str) -> None:
        f = Found(ip, via=self._named.get(ip, "sweep"))
        s, tasks = self.s, []
        if s.snmp and self.snmp_creds:
            tasks.append(self._snmp(f))
        if s.onvif and self._wsd is not None:
            tasks.append(self._probe_onvif(f))
        if s.pjlink:
            tasks.append(self._pjlink(f))
        if s.modbus:
            tasks.append(self._modbus(f))
        await asyncio.gather(*tasks)
        if f.snmp or f.onvif or f.pjlink or f.modbus:
            self.result.found[ip] = f

    async def _snmp(self, f: Found) -> None:
        r = await snmp_probe(self.scope, f.ip, self.s.snmp_port, self.snmp_creds, self.limiter, self.s.timeout)
        if r is None:
            return
        i, sysg = r
        f.snmp = {**sysg, "cred": i, "port": self.s.snmp_port}
        try:
            prof = _profiles().select(sysg["object_id"], sysg["descr"])
            f.profile, f.vendor = prof.name, prof.vendor
        except Exception:  # noqa: BLE001 - a broken profile directory must not stop discovery
            log.exception("SNMP profiles")
        kind, _routes = cl.classify_snmp(sysg["object_id"], sysg["descr"], f.profile, sysg["services"],
                                         sysg["bridge_ports"], sysg["ip_forwarding"])
        if (self.s.lldp or self.s.cdp) and kind in ("switch", "router", "firewall", "controller"):
            f.neighbours = await snmp_neighbours(self.scope, f.ip, self.s.snmp_port, self.snmp_creds[i],
                                                 self.limiter, self.s.timeout, sysg["object_id"], sysg["descr"],
                                                 lldp=self.s.lldp, cdp=self.s.cdp)
            for n in f.neighbours:
                ipx = n.get("mgmt_ip")
                if not ipx:
                    continue
                proto = "/".join(p.upper() for p in n["protocols"])
                if ipx in self.scope:
                    if ipx not in self._done and ipx not in self._priority:
                        self._priority.append(ipx)   # probed next
                        self._named[ipx] = n["protocols"][0]
                else:
                    self.result.outside.append({"from": f.ip, "port": n.get("local_port"), "neighbour":
                                                n.get("sys_name") or n.get("chassis_id"), "ip": ipx,
                                                "protocols": n["protocols"],
                                                "why": f"{proto} neighbour outside the CIDRs: not contacted"})

    async def _probe_onvif(self, f: Found) -> None:
        matches = await self._wsd.probe(f.ip, self.limiter, self.s.timeout)
        if matches:
            self._onvif(f, matches[0])

    def _onvif(self, f: Found, m: dict) -> None:
        scopes = cl.onvif_scopes(m.get("scopes") or [])
        xaddr = None
        for x in m.get("xaddrs") or []:
            u = urllib.parse.urlsplit(x)
            if u.hostname and u.hostname in self.scope:
                xaddr = x
                break
            self.result.outside.append({"from": f.ip, "xaddr": x, "why": "ONVIF XAddr outside the CIDRs: not used"})
        f.onvif = {"types": m.get("types", ""), "scopes": scopes, "xaddr": xaddr, "address": m.get("address")}

    async def _pjlink(self, f: Found) -> None:
        r = await pjlink_probe(self.scope, f.ip, self.s.pjlink_port, self.limiter, self.s.timeout,
                               [p.password for p in self.creds.pjlink])
        if r is not None:
            f.pjlink = r

    async def _modbus(self, f: Found) -> None:
        r = await modbus_probe(self.scope, f.ip, self.s.modbus_port, self.limiter, self.s.timeout)
        if r is not None:
            f.modbus = r

    def _classify(self, f: Found) -> None:
        if f.snmp:
            sg = f.snmp
            f.kind, f.routes = cl.classify_snmp(sg["object_id"], sg["descr"], f.profile, sg["services"],
                                                sg["bridge_ports"], sg["ip_forwarding"])
            f.name, f.location = sg["name"], sg["location"]
        if f.onvif:
            k = cl.classify_onvif(f.onvif["types"], f.onvif["scopes"])
            if not f.snmp or f.kind in ("other", "server"):
                f.kind = k
            f.name = f.name or next(iter(f.onvif["scopes"].get("name", [])), None)
            loc = f.onvif["scopes"].get("location", [])
            f.location = f.location or (loc[-1] if loc else None)
            hw = f.onvif["scopes"].get("hardware", [])
            if hw and not f.vendor:
                f.vendor = hw[0]
        if f.pjlink and not f.snmp:
            f.kind = "projector"
            f.location = f.location or f.pjlink.get("name")   # projectors are often named after their room
            room = cl.room_from_location(f.location)
            f.name = f.name or (f"projector-{room}" if room else None)
            f.vendor = f.vendor or f.pjlink.get("inf1")
        if f.modbus and not (f.snmp or f.onvif or f.pjlink):
            f.kind = "sensor"
            f.vendor = f.modbus.get("vendor")
        f.room = cl.room_from_location(f.location)


_PROFILES: Any = None


def _profiles():
    global _PROFILES
    if _PROFILES is None:
        from drivers.snmp.profiles import load_profiles
        _PROFILES = load_profiles()
    return _PROFILES


def run(scope: Scope, creds, settings: Settings, progress=None) -> Result:
    async def main() -> Result:
        try:
            return await Discovery(scope, creds, settings, progress).run()
        finally:
            if "drivers.snmp.client" in sys.modules:   # the pysnmp path was used
                try:
                    await sys.modules["drivers.snmp.client"].close_engines()
                except Exception:  # noqa: BLE001
                    pass
    return asyncio.run(main())
