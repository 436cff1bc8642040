"""SNMP polling driver (v2c / v3): system group, IF-MIB interfaces, rates, link events.

agent.yaml::

    - id: core-sw1
      driver: snmp
      interval_s: 60
      options: {host: 10.0.0.1, version: "2c", community: "..."}

Records per poll: ``interface`` samples (tags ifIndex, ifName), one ``system`` sample
(uptime_s), ``Facts`` (sysObjectID, sysDescr, sysName, vendor, mac, ...: on the first poll,
when they change and at least every ``facts_interval_s``), and ``link_down``/``link_up`` events
when an interface's oper status changes between polls (``device_restart`` when sysUpTime went
backwards), and every ``topology_interval_s`` one ``fdb``/``arp``/``lldp``/``ip_address`` sample
per table entry (see README "Topology samples"). Other code (vendor profiles) builds on :mod:`drivers.snmp.client`.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from campus_sense.secret import Secret, SecretError, SecretFields
from drivers.base import DeviceError, Event, Facts, Record, Sample, device_slot, slot_free
from drivers.snmp.target import SnmpTarget, normalize_auth_protocol, normalize_priv_protocol
from drivers.snmp.ifmib import (Interface, RateTracker, SystemInfo, read_interfaces, read_system,
                                vendor_from_oid)

log = logging.getLogger("campus_sense.snmp")

__all__ = ["Options", "SnmpDriver", "create", "DeviceError", "topology_samples"]


class Options(SecretFields):
    """``options:`` of an snmp device in agent.yaml. ``community``, ``auth_key``, ``priv_key`` are
    secrets (campus_sense.secret): inline, ``<name>_file`` or ``<name>_env``."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1)
    port: int = Field(161, ge=1, le=65535)
    version: Literal["2c", "3"] = "2c"
    community: Secret | None = None
    user: str | None = None
    auth_protocol: str | None = None     # MD5 SHA SHA-224 SHA-256 SHA-384 SHA-512
    auth_key: Secret | None = None
    priv_protocol: str | None = None     # DES AES(-128) AES-192 AES-256 (AES-192-C/AES-256-C: Cisco)
    priv_key: Secret | None = None
    context: str | None = None
    timeout_s: float = Field(2.0, gt=0, le=60)
    retries: int = Field(1, ge=0, le=10)
    max_repetitions: int = Field(25, ge=1, le=200)
    facts_interval_s: float = Field(3600.0, gt=0)
    #: LLDP neighbours, bridge FDB, ARP/ND and own addresses as ``lldp``/``fdb``/``arp``/``ip_address``
    #: samples, at most this often (s); 0 disables. Collected in the background on its own session,
    #: inside one of the agent's polling slots (polling.max_concurrent).
    topology_interval_s: float = Field(300.0, ge=0)
    #: "auto": the lean BER paths, fastv2c for v2c and fastv3 (USM) for v3 (several times less
    #: CPU than pysnmp, see bench/snmp_vs_exporter.py); v3 3DES stays on pysnmp. "pysnmp" forces pysnmp.
    engine: Literal["auto", "pysnmp"] = "auto"

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> Any:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = str(int(v)) if float(v).is_integer() else str(v)
        if isinstance(v, str):
            v = v.strip().lower().lstrip("v")
            if v == "2":
                v = "2c"
        return v

    @field_validator("auth_protocol")
    @classmethod
    def _auth(cls, v: str | None) -> str | None:
        return normalize_auth_protocol(v)

    @field_validator("priv_protocol")
    @classmethod
    def _priv(cls, v: str | None) -> str | None:
        return normalize_priv_protocol(v)

    @model_validator(mode="after")
    def _consistent(self) -> "Options":
        v3_fields = [f for f in ("user", "auth_protocol", "auth_key", "priv_protocol", "priv_key", "context")
                     if getattr(self, f) is not None]
        if self.version == "2c":
            if not self.community:
                raise ValueError("version 2c requires 'community'")
            if v3_fields:
                raise ValueError(f"{', '.join(v3_fields)} only apply to version 3")
            return self
        if self.community is not None:
            raise ValueError("'community' does not apply to version 3")
        if not self.user:
            raise ValueError("version 3 requires 'user'")
        if (self.auth_protocol is None) != (self.auth_key is None):
            raise ValueError("'auth_protocol' and 'auth_key' go together")
        if (self.priv_protocol is None) != (self.priv_key is None):
            raise ValueError("'priv_protocol' and 'priv_key' go together")
        if self.priv_protocol and not self.auth_protocol:
            raise ValueError("privacy (priv_protocol) requires authentication (auth_protocol)")
        for f in ("auth_key", "priv_key"):
            k = getattr(self, f)
            if k is not None and len(k.reveal()) < 8:
                raise ValueError(f"'{f}' must be at least 8 characters (RFC 3414)")
        return self

    def target(self) -> SnmpTarget:
        """The session target with the secrets read now (re-read for every new session)."""
        def rv(s: Secret | None) -> str | None:
            try:
                return s.reveal() if s is not None else None
            except SecretError as e:  # the file/variable went away after the config was loaded
                raise DeviceError("config", str(e)) from None
        return SnmpTarget(host=self.host, port=self.port, version=self.version, community=rv(self.community),
                          user=self.user, auth_protocol=self.auth_protocol, auth_key=rv(self.auth_key),
                          priv_protocol=self.priv_protocol, priv_key=rv(self.priv_key), context=self.context,
                          timeout=self.timeout_s, retries=self.retries)

    def __repr__(self) -> str:  # keep secrets out of logs
        return f"Options(host={self.host!r}, port={self.port}, version={self.version!r})"

    __str__ = __repr__


def _fast_session_cls(options: Options):
    """The lean session class for "auto" (fastv2c / fastv3), or None for pysnmp
    (engine: pysnmp, or 3DES, which only pysnmp implements)."""
    if options.engine != "auto":
        return None
    if options.version == "2c":
        from drivers.snmp.fastv2c import FastV2cSession
        return FastV2cSession
    from drivers.snmp.fastv3 import PRIV, FastV3Session
    return FastV3Session if options.priv_protocol in (None, *PRIV) else None


def open_session(options: Options):
    """The session for a device: the fast v2c/v3 path when allowed, pysnmp otherwise."""
    cls = _fast_session_cls(options)
    if cls:
        return cls.from_target(options.target())
    from drivers.snmp.client import SnmpSession   # pysnmp: only when the fast path cannot serve it
    return SnmpSession(options.target())


def open_vlan_session_factory(options: Options):
    """``vlan -> session`` for Cisco per-VLAN bridge tables, same engine choice as open_session."""
    from drivers.snmp.tables import vlan_session_factory
    cls = _fast_session_cls(options)
    if cls is None:
        from drivers.snmp.client import SnmpSession
        return vlan_session_factory(options.target(), SnmpSession)
    return vlan_session_factory(options.target(), cls.from_target)


class SnmpDriver:
    """PollingDriver for one SNMP device."""

    name = "snmp"

    def __init__(self, device_id: str, options: Options, tags: dict[str, str] | None = None):
        self.device_id = device_id
        self.options = options
        self.tags = dict(tags or {})
        self.session = open_session(options)
        self.rates = RateTracker()
        self._oper: dict[int, bool | None] = {}
        self._facts: dict[str, Any] | None = None
        self._facts_at = 0.0
        self.system: SystemInfo | None = None
        self.interfaces: list[Interface] = []
        self._depth_facts: dict[str, Any] = {}   # drivers.snmp.tables: model, serial, firmware, ipv6...
        self._depth_entity: dict | None = None
        self._depth_at = float("-inf")
        self._topo_task: asyncio.Task | None = None
        self._topo_at = float("-inf")
        self.topology_errors: dict[str, str] = {}

    async def poll(self) -> list[Record]:
        system = await read_system(self.session)
        if system.object_id is None and system.descr is None and system.uptime_ticks is None:
            raise DeviceError("protocol", "agent has no SNMPv2-MIB system group (sysDescr/sysObjectID/sysUpTime)")
        interfaces = await read_interfaces(self.session, self.options.max_repetitions)
        wall = time.monotonic()
        rates = self.rates.update(system.uptime_ticks, interfaces, wall)
        self.system, self.interfaces = system, interfaces
        records: list[Record] = []
        dev = self.device_id

        if system.uptime_s is not None:
            records.append(Sample("system", dev, {"uptime_s": system.uptime_s,
                                                   "interfaces": len(interfaces)}, dict(self.tags)))
        if self.rates.last_reboot:
            records.append(Event(dev, "device_restart", "warning",
                                 {"uptime_s": system.uptime_s}, dict(self.tags)))

        for itf in interfaces:
            f: dict[str, Any] = {}
            for k in ("in_octets", "out_octets", "in_errors", "out_errors", "in_discards", "out_discards"):
                v = getattr(itf, k)
                if v is not None:
                    f[k] = v
            if itf.speed_mbps is not None:
                f["speed_mbps"] = itf.speed_mbps
            if itf.admin_up is not None:
                f["admin_up"] = itf.admin_up
            if itf.oper_up is not None:
                f["oper_up"] = itf.oper_up
            f["counter_bits"] = itf.counter_bits
            f.update(rates.get(itf.index, {}))
            tags = dict(self.tags)
            tags.update({"ifIndex": str(itf.index), "ifName": itf.name or str(itf.index)})
            records.append(Sample("interface", dev, f, tags))

            prev = self._oper.get(itf.index, "unknown")
            if prev != "unknown" and prev is not None and itf.oper_up is not None and prev != itf.oper_up:
                records.append(Event(
                    dev, "link_up" if itf.oper_up else "link_down", "info" if itf.oper_up else "warning",
                    {"ifIndex": itf.index, "ifName": itf.name, "ifAlias": itf.alias, "admin_up": itf.admin_up,
                     "oper_status": itf.oper_status}, tags))
        self._oper = {i.index: i.oper_up for i in interfaces}

        records.extend(await self._depth(system.object_id))
        records.extend(await self._topology(system.object_id))
        facts = self._make_facts(system, interfaces)
        facts.update({k: v for k, v in self._depth_facts.items() if k not in facts})
        now = time.monotonic()
        if facts != self._facts or now - self._facts_at >= self.options.facts_interval_s:
            records.append(Facts(dev, facts))
            self._facts, self._facts_at = facts, now
        return records

    async def _depth(self, sys_object_id: str | None) -> list[Record]:
        """Network-depth sections (drivers.snmp.tables): health/PoE/Wi-Fi samples every poll,
        entity/IP facts every facts_interval_s. Failures never fail the IF-MIB poll."""
        from drivers.snmp.tables import collect_sections, stable_facts, to_records
        now = time.monotonic()
        full = now - self._depth_at >= self.options.facts_interval_s
        try:
            sec = await collect_sections(
                self.session, sys_object_id,
                (["entity", "ip_addresses", "health", "poe", "wifi", "custom"] if full
                 else ["health", "poe", "wifi", "custom"]),
                sys_descr=self.system.descr if self.system else None,
                deadline_s=4 * self.options.timeout_s * (self.options.retries + 1),
                max_repetitions=self.options.max_repetitions, entity=None if full else self._depth_entity)
        except Exception as e:  # noqa: BLE001 - isolation: report and keep the interface data
            log.warning("%s: network-depth sections failed: %s", self.device_id, e)
            return []
        if full:
            self._depth_at = now
            self._depth_entity = sec.get("entity")
            self._depth_facts = stable_facts(sec)
        tags = dict(self.tags)
        recs = [r for r in to_records(self.device_id, sec) if isinstance(r, Sample)]
        for r in recs:
            r.tags = {**tags, **r.tags}
        return recs

    # ------------------------------------------------------------------ topology
    #: how long poll() waits for a topology collection it just started before leaving it to run
    #: in the background (its samples then come with the next poll)
    TOPOLOGY_WAIT_S = 2.0

    async def _topology(self, sys_object_id: str | None) -> list[Record]:
        """Topology samples (lldp/fdb/arp/ip_address) every ``topology_interval_s``.

        Collected by a background task on its own session, so a slow or failing table never
        delays or fails the IF-MIB poll: poll() waits at most TOPOLOGY_WAIT_S for a collection it
        starts; otherwise the samples (stamped with the collection time) come with a later poll.
        The task holds an agent polling slot of its own (drivers.base.device_slot); when none is
        free poll() does not wait at all: it may hold the last slot itself (max_concurrent: 1), and
        waiting would only keep that slot idle."""
        if self.options.topology_interval_s <= 0:
            return []
        out: list[Record] = []
        try:
            task = self._topo_task
            if task is not None and task.done():
                self._topo_task = None
                out.extend(self._topology_result(task))
            now = time.monotonic()
            if self._topo_task is None and not out and now - self._topo_at >= self.options.topology_interval_s:
                self._topo_at = now
                starts_now = slot_free()
                task = asyncio.create_task(self._collect_topology(sys_object_id),
                                           name=f"snmp-topology-{self.device_id}")
                self._topo_task = task
                if starts_now:
                    done, _ = await asyncio.wait({task}, timeout=min(self.TOPOLOGY_WAIT_S, self.options.timeout_s))
                    if task in done:
                        self._topo_task = None
                        out.extend(self._topology_result(task))
        except Exception as e:  # noqa: BLE001 - isolation: the poll keeps its records
            log.warning("%s: topology collection failed: %s", self.device_id, e)
        return out

    def _topology_result(self, task: asyncio.Task) -> list[Record]:
        if task.cancelled():
            return []
        e = task.exception()
        if e is not None:
            log.warning("%s: topology collection failed: %s", self.device_id, e)
            self.topology_errors = {"topology": f"{type(e).__name__}: {e}"}
            return []
        return task.result()

    async def _collect_topology(self, sys_object_id: str | None) -> list[Record]:
        """The walks, inside an agent polling slot; the deadline starts when the slot is granted."""
        from drivers.snmp.tables import collect_sections
        o = self.options
        async with device_slot(f"device {self.device_id} topology"):
            session = open_session(o)
            vlan = open_vlan_session_factory(o)
            deadline = max(30.0, 8 * o.timeout_s * (o.retries + 1))
            try:
                sec = await collect_sections(session, sys_object_id, ["lldp", "fdb", "arp", "ip_addresses"],
                                             sys_descr=self.system.descr if self.system else None,
                                             deadline_s=deadline, vlan_session=vlan,
                                             max_repetitions=o.max_repetitions)
            finally:
                await session.close()
        self.topology_errors = dict(sec.get("_errors") or {})
        if self.topology_errors:
            log.info("%s: topology tables incomplete: %s", self.device_id, self.topology_errors)
        return topology_samples(self.device_id, sec, self.tags)

    def _make_facts(self, system: SystemInfo, interfaces: list[Interface]) -> dict[str, Any]:
        facts: dict[str, Any] = {"sysObjectID": system.object_id, "sysDescr": system.descr,
                                 "sysName": system.name}
        if system.contact:
            facts["sysContact"] = system.contact
        if system.location:
            facts["sysLocation"] = system.location
        vendor = vendor_from_oid(system.object_id)
        if vendor:
            facts["vendor"] = vendor
        mac = next((i.mac for i in interfaces if i.mac and i.type == 6), None) or \
            next((i.mac for i in interfaces if i.mac), None)
        if mac:
            facts["mac"] = mac
        facts["interfaces"] = len(interfaces)
        return facts

    async def close(self) -> None:
        task, self._topo_task = self._topo_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.session.close()


def _put(tags: dict[str, str], key: str, v: Any) -> None:
    if v is not None and v != "":
        tags[key] = str(v)


def _scope(ip: str) -> str | None:
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if a.is_loopback:
        return "host"
    if a.is_link_local:
        return "link"
    return "global"


def topology_samples(device: str, sections: dict, tags: dict[str, str] | None = None,
                     time_ms: int | None = None) -> list[Sample]:
    """collect_sections() lldp/fdb/arp/ip_addresses -> one Sample per entry, fields {"seen": 1}.

    Tags (absent when the device does not say): fdb: mac, ifIndex, ifName, vlan; arp: ip, mac,
    ifIndex; lldp: ifIndex, local_port, remote_chassis, remote_port, remote_name; ip_address: ip,
    family (ipv4|ipv6), ifIndex, prefix, scope (host|link|global). Device tags come first, the
    entry's tags win."""
    base = dict(tags or {})
    out: list[Sample] = []

    def add(measurement: str, t: dict[str, str]) -> None:
        s = Sample(measurement, device, {"seen": 1}, {**base, **t})
        if time_ms is not None:
            s.time_ms = time_ms
        out.append(s)

    for r in sections.get("fdb") or []:
        t: dict[str, str] = {}
        for k in ("mac", "ifIndex", "ifName", "vlan"):
            _put(t, k, r.get(k))
        add("fdb", t)
    for r in sections.get("arp") or []:
        t = {}
        for k in ("ip", "mac", "ifIndex"):
            _put(t, k, r.get(k))
        add("arp", t)
    for r in sections.get("lldp") or []:
        t = {}
        _put(t, "ifIndex", r.get("ifIndex"))
        _put(t, "local_port", r.get("local_port"))
        _put(t, "remote_chassis", r.get("chassis_id"))
        _put(t, "remote_port", r.get("port_id"))
        _put(t, "remote_name", r.get("sys_name"))
        add("lldp", t)
    for r in sections.get("ip_addresses") or []:
        t = {}
        _put(t, "ip", r.get("ip"))
        _put(t, "family", {4: "ipv4", 6: "ipv6"}.get(r.get("family")))
        _put(t, "ifIndex", r.get("ifIndex"))
        _put(t, "prefix", r.get("prefix_len"))
        if r.get("ip"):
            _put(t, "scope", _scope(str(r["ip"])))
        add("ip_address", t)
    return out


def create(device_id: str, options: Options, tags: dict[str, str]) -> SnmpDriver:
    if not isinstance(options, Options):
        options = Options.model_validate(options)
    return SnmpDriver(device_id, options, tags)
