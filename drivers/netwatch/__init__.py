"""netwatch: passive network watch on the agent's LAN (and Wi-Fi survey).

A ``StreamingDriver``: sniffs one interface with scapy's ``AsyncSniffer`` (a
thread), feeds every frame to the pure detectors of
:mod:`drivers.netwatch.detectors` on the event loop and emits

- ``Event`` per finding (type ``rogue_dhcp`` | ``arp_spoof`` | ``ip_conflict`` |
  ``rogue_ap`` | ``evil_twin`` | ``rogue_ra`` | ``outside_ip_plan``; severity warning or
  critical; ``data`` = the finding's detail), repeated at most every ``realert_s``
  while the finding keeps occurring; ``new_station`` (info) after the learning period;
- ``Sample`` ``netwatch`` every ``sample_interval_s`` (station / server / BSS counts,
  packets, drops);
- ``Facts`` ``{"netwatch_stations": [{mac, ip, first_seen, last_seen}, ...]}`` when
  stations were added, so inventory can match MACs and IPs.

Optional: an ``iw`` scan or a monitor-mode sniffer for the Wi-Fi survey, and an
active ARP sweep of configured subnets (off by default, rate-limited).
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from campus_sense.secret import Secret, SecretError, SecretFields
from drivers.base import DeviceError, Event, Facts, Record, Sample
from drivers.netwatch.detectors import NetWatch, parse_allow, parse_ip_plan, parse_protected, parse_ssid_allow
from drivers.netwatch.sweep import MAX_RATE_PPS, validate_subnets

log = logging.getLogger(__name__)

DEFAULT_BPF = "arp or (udp and (port 67 or port 68 or port 546 or port 547)) or icmp6 or vlan"
MAX_FACT_STATIONS = 1500  # keeps one Facts record well under the wire size bound


class ArpSweepOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    subnets: list[str] = Field(default_factory=list)
    rate_pps: float = Field(10.0, gt=0, le=MAX_RATE_PPS)
    interval_s: float = Field(3600.0, ge=1)
    allow_large: bool = False

    @model_validator(mode="after")
    def _check(self):
        validate_subnets(self.subnets, self.allow_large)
        if self.enabled and not self.subnets:
            raise ValueError("arp_sweep.enabled needs arp_sweep.subnets (only configured subnets are swept)")
        return self


class WifiScanOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    interface: str | None = None
    via: Literal["iw", "monitor"] = "iw"
    interval_s: float = Field(300.0, ge=1)
    iw_path: str = "iw"

    @model_validator(mode="after")
    def _check(self):
        if self.enabled and not self.interface:
            raise ValueError("wifi_scan.enabled needs wifi_scan.interface")
        return self


class ProtectedArpSource(SecretFields):
    """The L3 switch (gateway) whose ARP table binds the protected IPs to their MACs (SNMPv2c,
    ipNetToMediaPhysAddress), read every ``interval_s``. A MAC from ``protected`` config wins."""
    model_config = ConfigDict(extra="forbid")
    host: str = Field(min_length=1)
    port: int = Field(161, ge=1, le=65535)
    #: secret grammar: community / community_file / community_env; read on every walk
    community: Secret
    interval_s: float = Field(300.0, ge=5)
    timeout_s: float = Field(2.0, gt=0)
    retries: int = Field(1, ge=0, le=5)


class DeauthOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: more than this many deauth/disassoc frames for one BSSID within window_s: deauth_flood
    threshold: int = Field(10, ge=1)
    window_s: float = Field(1.0, gt=0)


class Options(BaseModel):
    """The ``options:`` block of a ``driver: netwatch`` device in agent.yaml."""
    model_config = ConfigDict(extra="forbid")
    interface: str | None = None
    dhcp_allow: list[str] = Field(default_factory=list)
    ssid_allow: dict[str, list[str]] = Field(default_factory=dict)
    ip_plan: list[str] = Field(default_factory=list)
    ra_allow: list[str] = Field(default_factory=list)
    arp_sweep: ArpSweepOptions = Field(default_factory=ArpSweepOptions)
    wifi_scan: WifiScanOptions = Field(default_factory=WifiScanOptions)
    bpf: str | None = DEFAULT_BPF
    sample_interval_s: float = Field(60.0, gt=0)
    realert_s: float = Field(3600.0, ge=0)
    learn_s: float = Field(300.0, ge=0)
    new_station_events: bool = True
    max_stations: int = Field(65536, ge=1)
    queue_size: int = Field(10000, ge=10)
    #: gateways and servers: "10.20.0.1=00:11:22:33:44:55", "10.20.0.1" (MAC learned) or
    #: {ip, mac | macs, name}; any other MAC claiming one of these IPs is arp_spoof at once
    protected: list[str | dict[str, Any]] = Field(default_factory=list)
    protected_arp_from: ProtectedArpSource | None = None
    deauth: DeauthOptions = Field(default_factory=DeauthOptions)

    @field_validator("protected")
    @classmethod
    def _protected(cls, v):
        parse_protected(v)
        return v

    @field_validator("dhcp_allow", "ra_allow")
    @classmethod
    def _allow(cls, v, info):
        parse_allow(v, info.field_name)
        return v

    @field_validator("ip_plan")
    @classmethod
    def _plan(cls, v):
        parse_ip_plan(v)
        return v

    @field_validator("ssid_allow", mode="before")
    @classmethod
    def _ssids(cls, v):
        if isinstance(v, (list, tuple)):  # ["SSID=BSSID,BSSID", ...] form, as on the command line
            return {s: sorted(b) for s, b in parse_ssid_allow(v).items()}
        if isinstance(v, dict):
            out = {}
            for s, bs in v.items():
                bs = [bs] if isinstance(bs, str) else list(bs or [])
                out[str(s)] = sorted(parse_ssid_allow([f"{s}={','.join(map(str, bs))}"]).get(str(s), ()))
            return out
        return v

    @model_validator(mode="after")
    def _need_source(self):
        if not self.interface and not self.wifi_scan.enabled:
            raise ValueError("set interface (LAN sniffing) and/or wifi_scan.enabled")
        if self.arp_sweep.enabled and not self.interface:
            raise ValueError("arp_sweep needs interface")
        return self


def _iface_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
        return True
    except OSError:
        return False


class NetwatchDriver:
    name = "netwatch"

    def __init__(self, device_id: str, options: Options, tags: dict[str, str] | None = None):
        self.device_id = device_id
        self.options = options
        self.tags = dict(tags or {})
        self.watch = NetWatch(dhcp_allow=options.dhcp_allow, ssid_allow=options.ssid_allow,
                              ip_plan=options.ip_plan, ra_allow=options.ra_allow, max_stations=options.max_stations,
                              protected=options.protected, deauth_threshold=options.deauth.threshold,
                              deauth_window_s=options.deauth.window_s)
        self.arp_learned = 0       # protected bindings (re)learned from the L3 switch's ARP table
        self.arp_walk_errors = 0
        self.ready = asyncio.Event()  # set once every sniffer socket is open (tests wait on it)
        self.dropped = 0
        self.scan_errors = 0
        self.sweeps = 0
        self._queue: asyncio.Queue | None = None
        self._emitted: dict[tuple[str, str], tuple[float, int]] = {}
        self._stations_reported = 0
        self._survey_at = 0.0
        self._started = 0.0
        self._sniffers: list[Any] = []

    # ------------------------------------------------------------------ helpers
    def _tags(self, **extra: str) -> dict[str, str]:
        t = dict(self.tags)
        if self.options.interface:
            t.setdefault("interface", self.options.interface)
        t.update({k: v for k, v in extra.items() if v})
        return t

    def _enqueue(self, pkt) -> None:  # on the loop thread
        try:
            self._queue.put_nowait(pkt)
        except asyncio.QueueFull:
            self.dropped += 1

    def _start_sniffer(self, loop: asyncio.AbstractEventLoop, iface: str, bpf: str | None) -> None:
        from scapy.sendrecv import AsyncSniffer
        started = asyncio.Event()

        def on_pkt(pkt):  # sniffer thread
            loop.call_soon_threadsafe(self._enqueue, pkt)

        kwargs: dict[str, Any] = dict(iface=iface, prn=on_pkt, store=False,
                                      started_callback=lambda: loop.call_soon_threadsafe(started.set))
        if bpf:
            kwargs["filter"] = bpf
        sn = AsyncSniffer(**kwargs)
        sn.start()
        self._sniffers.append((iface, sn, started))

    async def _wait_started(self) -> None:
        for iface, sn, started in self._sniffers:
            while not started.is_set():
                if sn.exception is not None or (sn.thread is not None and not sn.thread.is_alive()):
                    raise DeviceError("config", f"netwatch: cannot sniff on {iface}: {sn.exception or 'sniffer exited'}")
                try:
                    async with asyncio.timeout(0.2):
                        await started.wait()
                except asyncio.TimeoutError:
                    pass
        self.ready.set()

    def _check_sniffers(self) -> None:
        for iface, sn, _ in self._sniffers:
            if sn.exception is not None or (sn.thread is not None and not sn.thread.is_alive()):
                raise DeviceError("error", f"netwatch: sniffer on {iface} stopped: {sn.exception or 'exited'}")

    def _stop_sniffers(self) -> None:
        for _, sn, _ in self._sniffers:
            try:
                if sn.running:
                    sn.stop(join=True)
            except Exception as e:  # noqa: BLE001 - shutting down anyway
                log.debug("netwatch: stopping sniffer: %s", e)
        self._sniffers.clear()

    # ------------------------------------------------------------------ records
    def _finding_events(self, emit: Callable[[Record], None], now: float) -> None:
        w = self.watch
        for f in w.findings.drain():
            self._emitted[(f.type, f.key)] = (now, f.count)
            emit(Event(self.device_id, f.type, f.severity, f.to_json()["detail"], self._tags()))
        if self.options.realert_s <= 0:
            return
        for f in w.findings:
            k = (f.type, f.key)
            last, count = self._emitted.get(k, (now, f.count))
            if f.count > count and now - last >= self.options.realert_s:
                self._emitted[k] = (now, f.count)
                emit(Event(self.device_id, f.type, f.severity, dict(f.to_json()["detail"], repeated=True),
                           self._tags()))

    def _station_records(self, emit: Callable[[Record], None], now: float) -> None:
        arp = self.watch.arp
        new, arp.new_stations = arp.new_stations, []
        if not new:
            return
        if self.options.new_station_events and now - self._started >= self.options.learn_s:
            for st in new:
                emit(Event(self.device_id, "new_station", "info",
                           {"ip": st["ip"], "mac": st["mac"], "first_seen": st["first_seen"]}, self._tags()))

    def _facts(self, emit: Callable[[Record], None]) -> None:
        pairs = self.watch.arp.pairs
        if len(pairs) == self._stations_reported:
            return
        self._stations_reported = len(pairs)
        stations = sorted(pairs.values(), key=lambda p: p["last_seen"] or 0, reverse=True)[:MAX_FACT_STATIONS]
        emit(Facts(self.device_id, {
            "netwatch_stations": [{"mac": p["mac"], "ip": p["ip"], "first_seen": p["first_seen"],
                                   "last_seen": p["last_seen"]} for p in stations],
            "netwatch_interface": self.options.interface,
            "netwatch_stations_total": len(pairs),
        }))

    def _sample(self, emit: Callable[[Record], None]) -> None:
        w = self.watch
        emit(Sample("netwatch", self.device_id, {
            "stations": len(w.arp.pairs), "ips": len(w.arp.current), "ip_conflicts": len(w.arp.conflicts()),
            "dhcp_servers": len(w.dhcp.servers), "ipv6_routers": len(w.ra.routers), "wifi_bss": len(w.wifi.bss),
            "findings": len(w.findings), "packets": w.packets, "dropped": self.dropped,
            "decode_errors": w.errors, "scan_errors": self.scan_errors, "sweeps": self.sweeps,
            "findings_suppressed": w.findings.suppressed, "stations_overflow": w.arp.overflow,
            "wifi_overflow": w.wifi.overflow, "wifi_disconnects": w.deauth.seen,
            "protected": len(w.arp.protected), "protected_learned": self.arp_learned,
            "arp_walk_errors": self.arp_walk_errors,
        }, self._tags()))
        self._survey(emit)

    def _survey(self, emit: Callable[[Record], None]) -> None:
        """One ``wifi_survey`` sample per BSS heard since the last report: the evidence the
        collector's coverage check uses (campus SSID heard in this room at what signal)."""
        since = self._survey_at
        self._survey_at = time.time()
        for b in self.watch.wifi.bss.values():
            if b.signal_dbm is None or (b.last_seen or 0) < since:
                continue
            tags = {**self._tags(), "ssid": b.ssid, "bssid": b.bssid, "security": b.security}
            if b.channel is not None:
                tags["channel"] = str(b.channel)
            fields: dict[str, Any] = {"signal_dbm": b.signal_dbm}
            if b.noise_dbm is not None:      # SNR = signal - noise (coverage needs it to pass)
                fields["noise_dbm"] = b.noise_dbm
            emit(Sample("wifi_survey", self.device_id, fields, tags, int((b.last_seen or time.time()) * 1000)))

    def _flush(self, emit: Callable[[Record], None]) -> None:
        now = time.monotonic()
        self._finding_events(emit, now)
        self._station_records(emit, now)

    # ------------------------------------------------------------------ tasks
    async def _iw_loop(self, emit: Callable[[Record], None]) -> None:
        from drivers.netwatch.iwscan import iw_noise, iw_scan
        ws = self.options.wifi_scan
        while True:
            try:
                found = await iw_scan(ws.interface, ws.iw_path)
                try:    # noise floor per channel (for the SNR); not every driver reports it
                    noise = await iw_noise(ws.interface, ws.iw_path)
                except (RuntimeError, OSError) as e:
                    log.debug("netwatch %s: iw survey dump: %s", self.device_id, e)
                    noise = {}
                for bss in found:
                    self.watch.wifi.observe(bss["bssid"], bss["ssid"], bss["channel"], bss["signal_dbm"],
                                            bss["security"], time.time(), akm=bss["akm"],
                                            ssid_encoding=bss["ssid_encoding"],
                                            noise_dbm=noise.get(bss["freq"]) if bss.get("freq") else None)
                self._flush(emit)
                self._survey(emit)
            except (RuntimeError, OSError) as e:
                self.scan_errors += 1
                log.warning("netwatch %s: Wi-Fi scan: %s", self.device_id, e)
            await asyncio.sleep(ws.interval_s)

    async def learn_protected(self) -> int:
        """One walk of the L3 switch's ipNetToMediaPhysAddress: bind the protected IPs it knows to
        their MACs (the bindings then hold even while the real owner is silent)."""
        from drivers.snmp.fastv2c import FastV2cSession
        src = self.options.protected_arp_from
        assert src is not None
        try:
            community = src.community.reveal()      # read per walk (rotation rule)
        except SecretError as e:
            raise DeviceError("config", f"netwatch: protected_arp_from.{e}") from None
        s = FastV2cSession(src.host, src.port, community, src.timeout_s, src.retries)
        try:
            col = "1.3.6.1.2.1.4.22.1.2"
            rows = (await s.walk([col])).get(col, {})
        finally:
            await s.close()
        n = 0
        arp = self.watch.arp
        for suffix, mac in rows.items():
            parts = suffix.split(".")
            if len(parts) < 5 or not isinstance(mac, (bytes, bytearray)) or len(mac) != 6:
                continue
            ip = ".".join(parts[-4:])
            if ip in arp.protected and arp.learn(ip, ":".join("%02x" % b for b in mac), "snmp"):
                n += 1
        self.arp_learned += n
        return n

    async def _learn_loop(self) -> None:
        while True:
            try:
                n = await self.learn_protected()
                if n:
                    log.info("netwatch %s: %d protected bindings from %s's ARP table", self.device_id, n,
                             self.options.protected_arp_from.host)
            except DeviceError as e:
                self.arp_walk_errors += 1
                log.warning("netwatch %s: ARP table of %s: %s", self.device_id, self.options.protected_arp_from.host, e)
            await asyncio.sleep(self.options.protected_arp_from.interval_s)

    async def _sweep_loop(self) -> None:
        from drivers.netwatch.sweep import ArpSender, arp_sweep
        sw = self.options.arp_sweep
        sender = ArpSender(self.options.interface)
        try:
            while True:
                await arp_sweep(sender.send, sw.subnets, sw.rate_pps, sw.allow_large)
                self.sweeps += 1
                await asyncio.sleep(sw.interval_s)
        finally:
            sender.close()

    async def run(self, emit: Callable[[Record], None]) -> None:
        o = self.options
        loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(o.queue_size)
        self._started = time.monotonic()
        self.ready.clear()  # run() is restarted by the agent after a failure; tables are kept
        for iface in filter(None, [o.interface, o.wifi_scan.interface if o.wifi_scan.enabled else None]):
            if not _iface_exists(iface):
                raise DeviceError("config", f"netwatch: no such network interface {iface!r}")
        if os.geteuid() != 0:
            log.warning("netwatch %s: not running as root; sniffing needs CAP_NET_RAW", self.device_id)
        tasks: list[asyncio.Task] = []
        try:
            if o.interface:
                self._start_sniffer(loop, o.interface, o.bpf)
            if o.wifi_scan.enabled and o.wifi_scan.via == "monitor":
                self._start_sniffer(loop, o.wifi_scan.interface, None)
            await self._wait_started()
            if o.wifi_scan.enabled and o.wifi_scan.via == "iw":
                tasks.append(asyncio.create_task(self._iw_loop(emit)))
            if o.arp_sweep.enabled:
                tasks.append(asyncio.create_task(self._sweep_loop()))
            if o.protected_arp_from is not None:
                tasks.append(asyncio.create_task(self._learn_loop()))
            next_tick = time.monotonic() + o.sample_interval_s
            while True:
                timeout = max(0.0, next_tick - time.monotonic())
                try:
                    async with asyncio.timeout(timeout):
                        pkt = await self._queue.get()
                    self.watch.feed(pkt)
                    while not self._queue.empty():  # drain a burst before emitting
                        self.watch.feed(self._queue.get_nowait())
                    self._flush(emit)
                except asyncio.TimeoutError:
                    pass
                for t in tasks:
                    if t.done() and not t.cancelled() and t.exception() is not None:
                        raise DeviceError("error", f"netwatch: {t.exception()}") from t.exception()
                if time.monotonic() >= next_tick:
                    self._check_sniffers()
                    self._flush(emit)
                    self._facts(emit)
                    self._sample(emit)
                    next_tick = time.monotonic() + o.sample_interval_s
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.to_thread(self._stop_sniffers)


def create(device_id: str, options: Options, tags: dict[str, str] | None = None) -> NetwatchDriver:
    if isinstance(options, dict):
        options = Options.model_validate(options)
    return NetwatchDriver(device_id, options, tags)
