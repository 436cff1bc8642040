"""Security audit driver: does a device expose insecure management settings? Read-only probes.

agent.yaml::

    - id: core-sw1-audit
      driver: audit
      interval_s: 300                    # how often the agent asks; the audit itself runs every
      options:                           # options.interval_s (3600)
        host: 10.0.0.1
        report_as: core-sw1              # merge the findings into the switch's facts
        community_file: /etc/campus-sense/core-sw1.community   # optional: clock check

Probes (all concurrent, each bounded by ``timeout_s``; see README for why they are harmless):
SNMP v1 + v2c GET sysDescr.0 with each of ``communities`` (default public, private); SNMPv3 GET
at noAuthNoPriv as each of ``v3_users`` (default initial, public, private: no key); TCP 23
connect + banner read; HTTP ``GET /`` on 80 (served? redirect to https?); TLS handshake on 443;
HOST-RESOURCES-MIB hrSystemDate.0 with the configured ``community`` -> device clock offset.

Records per audit: ``Facts`` {"insecure": {snmp_communities, snmp_versions, snmpv3_noauth_users,
default_credentials, telnet_open, http_mgmt,
https_mgmt, http_redirects_to_https, clock_offset_s}, "audit_time": ISO-8601 UTC, "audit": details},
one ``Event("insecure_setting", "warning")`` per finding not present in the previous audit and
``Event("insecure_setting_cleared", "info")`` per finding gone since. Between audits poll() returns [].
"""
from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from campus_sense.secret import Secret, SecretError, SecretFields
from drivers.audit.probes import (HR_SYSTEM_DATE, SYS_DESCR, SnmpAnswer, decode_date_and_time, http_probe,
                                  snmp_get, snmpv3_noauth_get, telnet_probe, tls_probe)
from drivers.base import Event, Facts, Record

log = logging.getLogger("campus_sense.audit")

__all__ = ["Options", "Checks", "AuditDriver", "create"]


class Checks(BaseModel):
    model_config = ConfigDict(extra="forbid")

    snmp_default_communities: bool = True
    telnet: bool = True
    http: bool = True          # plain HTTP (80) and HTTPS (443)
    clock: bool = True         # needs ``community``
    snmpv3_default_users: bool = True   # SNMPv3 GET at noAuthNoPriv as each of ``v3_users``


class Options(SecretFields):
    """``options:`` of an audit device in agent.yaml."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1)
    checks: Checks = Field(default_factory=Checks)
    interval_s: float = Field(3600.0, gt=0)
    timeout_s: float = Field(2.0, gt=0, le=30)
    retries: int = Field(1, ge=0, le=5)
    #: community strings tried read-only with v1 and v2c GET sysDescr.0
    communities: list[str] = Field(default_factory=lambda: ["public", "private"], min_length=1)
    #: SNMPv3 user names tried with noAuthNoPriv (no key: a user that answers without
    #: authentication is a default credential accepted)
    v3_users: list[str] = Field(default_factory=lambda: ["initial", "public", "private"])
    #: the device's real (v2c) community, only for the clock check (hrSystemDate.0); a secret
    #: (campus_sense.secret): community / community_file / community_env
    community: Secret | None = None
    snmp_port: int = Field(161, ge=1, le=65535)
    telnet_port: int = Field(23, ge=1, le=65535)
    http_port: int = Field(80, ge=1, le=65535)
    https_port: int = Field(443, ge=1, le=65535)
    #: |device clock - agent clock| above this is a finding (event); the fact is always the offset
    max_clock_offset_s: float = Field(5.0, gt=0)
    #: device id the records are emitted under (e.g. the switch's snmp device id) so the findings
    #: merge into that device's facts; default: this audit device's own id
    report_as: str | None = Field(None, min_length=1, max_length=128)

    def __repr__(self) -> str:  # keep the community out of logs
        return f"Options(host={self.host!r}, checks={self.checks!r})"

    __str__ = __repr__


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class AuditDriver:
    """PollingDriver: one audit every ``options.interval_s``; poll() in between returns []."""

    name = "audit"

    def __init__(self, device_id: str, options: Options, tags: dict[str, str] | None = None):
        self.device_id = device_id
        self.options = options
        self.tags = dict(tags or {})
        self._last_at = float("-inf")
        self._findings: dict[str, dict[str, Any]] | None = None   # key -> event data, previous audit
        self.last_result: dict[str, Any] | None = None

    @property
    def report_device(self) -> str:
        return self.options.report_as or self.device_id

    async def poll(self) -> list[Record]:
        now = time.monotonic()
        if now - self._last_at < self.options.interval_s:
            return []
        records = await self.audit()
        self._last_at = now      # only after a complete audit: a cancelled one is retried next poll
        return records

    async def audit(self) -> list[Record]:
        o = self.options
        started = time.time()
        insecure: dict[str, Any] = {}
        details: dict[str, Any] = {"host": o.host}
        errors: dict[str, str] = {}
        tasks: dict[str, asyncio.Task] = {}
        if o.checks.snmp_default_communities:
            for c in o.communities:
                for v in ("1", "2c"):
                    tasks[f"snmp:{v}:{c}"] = asyncio.ensure_future(
                        snmp_get(o.host, o.snmp_port, v, c, SYS_DESCR, timeout=o.timeout_s, retries=o.retries))
        if o.checks.snmpv3_default_users:
            for u in o.v3_users:
                tasks[f"snmpv3:{u}"] = asyncio.ensure_future(
                    snmpv3_noauth_get(o.host, o.snmp_port, u, SYS_DESCR, timeout=o.timeout_s, retries=o.retries))
        if o.checks.telnet:
            tasks["telnet"] = asyncio.ensure_future(
                telnet_probe(o.host, o.telnet_port, timeout=o.timeout_s, banner_s=min(1.5, o.timeout_s)))
        if o.checks.http:
            tasks["http"] = asyncio.ensure_future(http_probe(o.host, o.http_port, timeout=o.timeout_s))
            tasks["https"] = asyncio.ensure_future(tls_probe(o.host, o.https_port, timeout=o.timeout_s))
        if o.checks.clock and o.community:
            tasks["clock"] = asyncio.ensure_future(self._clock())
        try:
            await asyncio.gather(*tasks.values(), return_exceptions=True)
        finally:
            for t in tasks.values():
                t.cancel()
        res: dict[str, Any] = {}
        for k, t in tasks.items():
            if t.cancelled():
                errors[k] = "cancelled"
            elif t.exception() is not None:
                e = t.exception()
                log.warning("%s: audit probe %s failed: %r", self.device_id, k, e)
                errors[k] = f"{type(e).__name__}: {e}"
            else:
                res[k] = t.result()

        findings: dict[str, dict[str, Any]] = {}
        if o.checks.snmp_default_communities:
            accepted: dict[str, list[str]] = {}
            for c in o.communities:
                for v in ("1", "2c"):
                    a: SnmpAnswer | None = res.get(f"snmp:{v}:{c}")
                    if a is not None and a.accepted:
                        accepted.setdefault(c, []).append(v)
            insecure["snmp_communities"] = [c for c in o.communities if c in accepted]
            insecure["snmp_versions"] = [v for v in ("1", "2c") if any(v in vs for vs in accepted.values())]
            details["snmp"] = accepted
            for c, vs in accepted.items():
                findings[f"snmp_community:{c}"] = {"setting": "snmp_community", "community": c, "versions": vs,
                                                   "port": o.snmp_port}
        # judged only when the SNMP engine spoke (an answer or a USM report): silence is not "rejected"
        if o.checks.snmpv3_default_users and all(f"snmpv3:{u}" in res for u in o.v3_users) and any(
                res[f"snmpv3:{u}"].answered or (res[f"snmpv3:{u}"].error or "").startswith("agent report")
                for u in o.v3_users):
            users = [u for u in o.v3_users if res[f"snmpv3:{u}"].accepted]
            insecure["snmpv3_noauth_users"] = users
            insecure["default_credentials"] = users     # compliance check default_credentials
            details["snmpv3"] = {u: ("accepted" if res[f"snmpv3:{u}"].accepted else
                                     res[f"snmpv3:{u}"].error or f"error-status {res[f'snmpv3:{u}'].error_status}")
                                 for u in o.v3_users}
            for u in users:
                findings[f"default_credentials:{u}"] = {"setting": "default_credentials", "protocol": "snmpv3",
                                                        "user": u, "security_level": "noAuthNoPriv",
                                                        "port": o.snmp_port}
        if o.checks.telnet and "telnet" in res:
            t = res["telnet"]
            insecure["telnet_open"] = t.open
            details["telnet"] = {"open": t.open, "banner": t.banner, "error": t.error}
            if t.open:
                findings["telnet_open"] = {"setting": "telnet_open", "port": o.telnet_port, "banner": t.banner}
        if o.checks.http and "http" in res and "https" in res:
            h, s = res["http"], res["https"]
            http_mgmt = bool(h.info.get("http"))
            redirect = bool(h.info.get("redirects_to_https"))
            insecure["http_mgmt"] = http_mgmt
            insecure["https_mgmt"] = s.open
            insecure["http_redirects_to_https"] = redirect
            details["http"] = {"open": h.open, "error": h.error, **{k: v for k, v in h.info.items() if k != "http"}}
            details["https"] = {"open": s.open, "error": s.error, **s.info}
            if http_mgmt and not redirect:
                findings["http_mgmt"] = {"setting": "http_mgmt", "port": o.http_port, "status": h.info.get("status"),
                                         "https_mgmt": s.open}
        if o.checks.clock:
            off = None
            if not o.community:
                details["clock"] = {"skipped": "no 'community' configured"}
            elif "clock" in res:
                off, clock = res["clock"]
                details["clock"] = clock
            insecure["clock_offset_s"] = off
            if off is not None and abs(off) > o.max_clock_offset_s:
                findings["clock_offset"] = {"setting": "clock_offset", "offset_s": off,
                                            "max_offset_s": o.max_clock_offset_s}
        if errors:
            details["errors"] = errors

        dev = self.report_device
        tags = dict(self.tags)
        records: list[Record] = [Facts(dev, {"insecure": insecure, "audit_time": _iso(started), "audit": details})]
        prev = self._findings or {}
        for key, data in findings.items():
            if key not in prev:
                records.append(Event(dev, "insecure_setting", "warning", {"host": o.host, **data}, tags))
        if self._findings is not None:
            # a finding whose probe could not run this time (error) is not "cleared"
            for key, data in prev.items():
                if key not in findings and not self._unknown(key, res):
                    records.append(Event(dev, "insecure_setting_cleared", "info", {"host": o.host, **data}, tags))
        kept = {k: v for k, v in prev.items() if k not in findings and self._unknown(k, res)}
        self._findings = {**kept, **findings}
        self.last_result = {"insecure": insecure, "audit": details}
        return records

    def _unknown(self, key: str, res: dict[str, Any]) -> bool:
        """True when this audit could not tell whether the finding ``key`` still holds."""
        o = self.options
        if key.startswith("snmp_community:"):
            c = key.split(":", 1)[1]
            return not o.checks.snmp_default_communities or c not in o.communities or \
                any(f"snmp:{v}:{c}" not in res for v in ("1", "2c"))
        if key.startswith("default_credentials:"):
            u = key.split(":", 1)[1]
            a = res.get(f"snmpv3:{u}")
            return not o.checks.snmpv3_default_users or u not in o.v3_users or a is None or not (
                a.answered or (a.error or "").startswith("agent report"))
        if key == "telnet_open":
            return not o.checks.telnet or "telnet" not in res
        if key == "http_mgmt":
            return not o.checks.http or "http" not in res
        if key == "clock_offset":
            return not o.checks.clock or "clock" not in res or res["clock"][0] is None
        return True

    async def _clock(self) -> tuple[float | None, dict[str, Any]]:
        """Device clock minus agent clock from hrSystemDate.0 (midpoint of the request)."""
        o = self.options
        try:  # read now: a rotated community file is used by the next audit
            community = o.community.reveal() if o.community is not None else ""
        except SecretError as e:
            return None, {"error": str(e)}
        t0 = time.time()
        a = await snmp_get(o.host, o.snmp_port, "2c", community, HR_SYSTEM_DATE,
                           timeout=o.timeout_s, retries=o.retries)
        t1 = time.time()
        if not a.answered:
            return None, {"error": a.error}
        if a.error_status or not isinstance(a.value, (bytes, bytearray)):
            return None, {"error": f"no hrSystemDate.0 (error-status {a.error_status}, value {a.value!r})"}
        try:
            dt = decode_date_and_time(a.value)
        except ValueError as e:
            return None, {"error": str(e), "raw": bytes(a.value).hex()}
        agent = (t0 + t1) / 2
        off = round(dt.timestamp() - agent, 3)
        return off, {"device_time": dt.isoformat(), "timezone_known": len(a.value) == 11,
                     "rtt_s": round(t1 - t0, 3)}

    async def close(self) -> None:
        return None


def create(device_id: str, options: Options, tags: dict[str, str]) -> AuditDriver:
    if not isinstance(options, Options):
        options = Options.model_validate(options)
    return AuditDriver(device_id, options, tags)
