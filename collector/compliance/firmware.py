"""Approved firmware (like Nautobot's "validated software") and insecure-settings checks.

Catalog files ``firmware_configs/firmware/*.yaml``, one per platform/model family::

    vendor: Huawei
    platform: huawei-vrp
    models: ["S5735-L*", "S5735-S*"]      # fnmatch patterns, case-insensitive, vs facts.model
    end_of_sale: 2027-12-31                # hardware milestones (optional)
    end_of_life: 2031-12-31                # after this date every version is flagged 'eol'
    versions:
      - version: V200R022C00SPC500         # exact (case-insensitive); or `match: "V200R022C00SPC5*"`
        valid_from: 2023-06-01
        valid_until: 2027-06-30            # approval window; after it: 'expired'
        preferred: true
        end_of_support: 2028-12-31         # software end of support: 'eol' after it
        notes: ...

Per device the status is one of: approved, not_preferred (approved, another is
preferred; flagged only when the policy says so), expiring (approved, expires
within the warning window), expired, not_yet_valid, eol, not_approved (model
known, version not listed), unknown_model (no record matches the model),
unknown (no firmware or model fact).
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from campus_sense.yamlconf import ConfigError, load_model
from collector.campus.model import CampusModel
from collector.compliance.observations import DeviceObs, Observations, iso
from collector.compliance.policy import Policy
from collector.compliance.results import FAIL, PASS, UNKNOWN, CheckResult, said


class SoftwareVersion(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str | None = None
    match: str | None = None
    valid_from: date | None = None
    valid_until: date | None = None
    preferred: bool = False
    end_of_support: date | None = None
    notes: str | None = None
    advisories: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> "SoftwareVersion":
        if not self.version and not self.match:
            raise ValueError("needs 'version' (exact) or 'match' (pattern)")
        if self.valid_from and self.valid_until and self.valid_until < self.valid_from:
            raise ValueError(f"valid_until {self.valid_until} is before valid_from {self.valid_from}")
        return self

    def matches(self, v: str) -> bool:
        """Exact version: the whole reported string or one of its tokens ("Version 5.170 (S5735
        V200R022C00SPC500)" matches V200R022C00SPC500); leading zeros of numbers are ignored
        (17.09.05 == 17.9.5). ``match``: fnmatch pattern over the whole string or one token."""
        vl = _norm_version(v)
        tokens = {_norm_version(t.strip("()")) for t in re.split(r"[\s,;\[\]]+", str(v)) if t.strip("()")}
        if self.version:
            want = _norm_version(self.version)
            if want == vl or want in tokens:
                return True
        if self.match:
            pat = _norm_version(self.match)
            return fnmatch.fnmatchcase(vl, pat) or any(fnmatch.fnmatchcase(t, pat) for t in tokens)
        return False

    @property
    def label(self) -> str:
        return self.version or self.match or "?"


class FirmwareRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vendor: str
    platform: str | None = None
    models: list[str] = Field(min_length=1)
    end_of_sale: date | None = None
    end_of_life: date | None = None
    versions: list[SoftwareVersion] = Field(default_factory=list)
    source: str | None = None          # where the approval came from (advisory, vendor recommended release)

    @model_validator(mode="after")
    def _check(self) -> "FirmwareRecord":
        seen = set()
        for v in self.versions:
            k = _norm_version(v.label)
            if k in seen:
                raise ValueError(f"version {v.label!r} listed twice")
            seen.add(k)
        return self

    def matches_model(self, model: str) -> bool:
        m = model.strip().lower()
        return any(fnmatch.fnmatchcase(m, p.strip().lower()) for p in self.models)


def _norm_version(v: str) -> str:
    s = str(v).strip().lower()
    s = re.sub(r"^(version|ver\.?|v(?=\d))\s*", "", s)
    s = re.sub(r"(?<![0-9])0+(?=[0-9])", "", s)      # 17.09.05 -> 17.9.5
    return re.sub(r"\s+", " ", s)


@dataclass
class Catalog:
    records: list[tuple[str, FirmwareRecord]] = field(default_factory=list)   # (file, record)
    errors: list[str] = field(default_factory=list)

    def record_for(self, model: str | None) -> tuple[str, FirmwareRecord] | None:
        if not model:
            return None
        best = None
        for f, r in self.records:
            for p in r.models:
                if fnmatch.fnmatchcase(model.strip().lower(), p.strip().lower()):
                    # the most specific pattern wins (longest without wildcards)
                    score = len(p.replace("*", "").replace("?", ""))
                    if best is None or score > best[0]:
                        best = (score, f, r)
        return (best[1], best[2]) if best else None


def load_catalog(directory: str | Path, strict: bool = False) -> Catalog:
    """Load every *.yaml in ``directory``. A bad file is reported (``file:line: key: message``)
    and skipped, unless ``strict`` (then ConfigError with all messages)."""
    cat = Catalog()
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(f"{d}: firmware catalog directory not found")
    for p in sorted(list(d.glob("*.yaml")) + list(d.glob("*.yml"))):
        try:
            cat.records.append((str(p), load_model(p, FirmwareRecord)))
        except ConfigError as e:
            cat.errors.append(str(e))
    if strict and cat.errors:
        raise ConfigError("\n".join(cat.errors))
    return cat


def _today(now: float) -> date:
    return datetime.fromtimestamp(now, timezone.utc).date()


def firmware_status(model: str | None, version: str | None, catalog: Catalog, now: float,
                    policy: Policy | None = None) -> dict[str, Any]:
    """Classify one (model, version). Returns {status, ok(bool|None), message, record, version_record}."""
    policy = policy or Policy()
    today = _today(now)
    if not model or not version:
        return {"status": "unknown", "ok": None, "record": None, "version_record": None,
                **(said("fw_no_model", "no model fact") if not model else said("fw_no_version", "no firmware fact"))}
    hit = catalog.record_for(model)
    if hit is None:
        return {"status": "unknown_model", "ok": None, "record": None, "version_record": None,
                **said("fw_no_record", "no approved-firmware record for model {model}", model=model)}
    f, rec = hit
    base = {"record": Path(f).name, "vendor": rec.vendor}
    preferred = ", ".join(v.label for v in rec.versions if v.preferred)
    if rec.end_of_life and today > rec.end_of_life:
        return dict(base, status="eol", ok=False, version_record=None,
                    **said("fw_hw_eol", "{model} hardware end of life since {date}", model=model,
                           date=str(rec.end_of_life)))
    v = next((v for v in rec.versions if v.matches(version)), None)

    def say(key: str, text: str, **args: Any) -> dict[str, Any]:   # "; preferred: ..." when the record has any
        return said(key + "_pref", text + "; preferred: {preferred}", preferred=preferred, **args) if preferred \
            else said(key, text, **args)
    if v is None:
        return dict(base, status="not_approved", ok=False, version_record=None,
                    **say("fw_not_approved", "{version} is not an approved version for {model}", version=version,
                          model=model))
    vb = dict(base, version_record=v.label, valid_from=str(v.valid_from) if v.valid_from else None,
              valid_until=str(v.valid_until) if v.valid_until else None, preferred=v.preferred)
    if v.end_of_support and today > v.end_of_support:
        return dict(vb, status="eol", ok=False, **say("fw_eos", "{version} end of support since {date}",
                                                      version=version, date=str(v.end_of_support)))
    if v.valid_until and today > v.valid_until:
        return dict(vb, status="expired", ok=False, **say("fw_expired", "approval of {version} expired {date}",
                                                          version=version, date=str(v.valid_until)))
    if v.valid_from and today < v.valid_from:
        return dict(vb, status="not_yet_valid", ok=False, **said("fw_not_yet", "{version} approved only from {date}",
                                                                 version=version, date=str(v.valid_from)))
    if v.valid_until and (v.valid_until - today).days <= policy.firmware.expiry_warning_days:
        return dict(vb, status="expiring", ok=True, **say("fw_expiring", "{version} approved until {date} ({days} days)",
                                                          version=version, date=str(v.valid_until),
                                                          days=(v.valid_until - today).days))
    if not v.preferred and preferred:
        return dict(vb, status="not_preferred", ok=not policy.firmware.flag_not_preferred,
                    **said("fw_not_preferred", "{version} approved, not preferred; preferred: {preferred}",
                           version=version, preferred=preferred))
    key = "fw_approved" + ("_until" if v.valid_until else "") + ("_preferred" if v.preferred else "")
    return dict(vb, status="approved", ok=True,
                **said(key, "{version} approved" + (" until {date}" if v.valid_until else "") +
                       (" (preferred)" if v.preferred else ""), version=version, date=str(v.valid_until)))


def _dev_building(campus: CampusModel, d: DeviceObs) -> tuple[str | None, str | None]:
    cm = campus.devices.get(d.id)
    room = d.room or (cm.room if cm else None)
    return d.building or campus.device_building(d.id) or campus.room_building(room), room


def evaluate_firmware(campus: CampusModel, obs: Observations, catalog: Catalog, policy: Policy | None = None,
                      building: str | None = None, now: float | None = None) -> list[CheckResult]:
    policy = policy or Policy()
    now = obs.time if now is None else now
    out = []
    for d in sorted(obs.devices.values(), key=lambda x: x.id):
        bld, room = _dev_building(campus, d)
        if building and bld != building:
            continue
        f = d.facts or {}
        model = f.get("model") or (campus.devices[d.id].model if d.id in campus.devices else None)
        st = firmware_status(model, f.get("firmware"), catalog, now, policy)
        status = UNKNOWN if st["ok"] is None else PASS if st["ok"] else FAIL
        sev = "critical" if st["status"] == "eol" else "warning" if status == FAIL else "info"
        ev = {"what": "firmware", "device": d.id, "model": model, "firmware": f.get("firmware"),
              "status": st["status"], "record": st.get("record"), "approved_version": st.get("version_record"),
              "valid_until": st.get("valid_until"), "facts_time": iso(d.facts_time or d.last_seen)}
        r = CheckResult("firmware", status, d.id, f"{d.id}: {st['message']}", building=bld, room=room,
                        device=d.id, severity=sev, evidence=[ev])
        r.msg = dict(st["msg"], prefix=d.id)
        out.append(r)
    return out


# --------------------------------------------------------------------------- insecure settings

def _fact(f: dict[str, Any], key: str) -> Any:
    ins = f.get("insecure")
    if isinstance(ins, dict) and key in ins:
        return ins[key]
    return f.get(key)


def evaluate_hardening(campus: CampusModel, obs: Observations, policy: Policy | None = None,
                       building: str | None = None) -> list[CheckResult]:
    """Flag insecure settings the agent found (facts): SNMP v1/v2c answering to a default
    community, telnet open, clock drift, HTTP management without TLS, default credentials.
    A check whose fact is absent is not reported (nothing known); a fact saying 'fine' is a pass."""
    policy = policy or Policy()
    hp = policy.hardening
    weak = {c.lower() for c in hp.weak_snmp_communities}
    out = []
    for d in sorted(obs.devices.values(), key=lambda x: x.id):
        bld, room = _dev_building(campus, d)
        if building and bld != building:
            continue
        f = d.facts or {}
        t = iso(d.facts_time or d.last_seen)

        def add(check: str, bad: bool, msg_bad: tuple, msg_ok: tuple, value: Any, sev: str = "critical") -> None:
            """msg_bad / msg_ok: (key, English template, {args})."""
            r = CheckResult(check, FAIL if bad else PASS, d.id, "", building=bld, room=room, device=d.id,
                            severity=sev if bad else "info",
                            evidence=[{"what": "fact", "device": d.id, "check": check, "value": value, "time": t}])
            key, text, args = msg_bad if bad else msg_ok
            r.say(key, text, prefix=d.id, **args)
            out.append(r)

        comms = _fact(f, "snmp_communities")
        if comms is not None:
            if isinstance(comms, str):
                comms = [comms]
            vers = [str(v).lower().lstrip("v") for v in (_fact(f, "snmp_versions") or ["1", "2c"])]
            v12 = [v for v in vers if v in ("1", "2c", "2")]
            hits = sorted({c for c in comms if str(c).lower() in weak}) if v12 else []
            add("snmp_community", bool(hits),
                ("hd_snmp_weak", "SNMP v{versions} answers to community {communities}",
                 {"versions": "/v".join(v12), "communities": ", ".join(hits)}),
                ("hd_snmp_ok", "no default SNMP community accepted", {}), {"communities": comms, "versions": vers})
        tel = _fact(f, "telnet_open")
        if tel is not None and not hp.telnet_allowed:
            add("telnet", bool(tel), ("hd_telnet_open", "telnet (23/tcp) management open", {}),
                ("hd_telnet_closed", "telnet closed", {}), tel)
        http = _fact(f, "http_mgmt")
        if http is not None and not hp.http_mgmt_allowed:
            redirect = bool(_fact(f, "http_redirects_to_https"))
            bad = bool(http) and not redirect
            add("http_mgmt", bad,
                ("hd_http", "HTTP management without TLS", {}) if _fact(f, "https_mgmt") else
                ("hd_http_only", "HTTP management without TLS (no HTTPS either)", {}),
                ("hd_http_none", "no plain-HTTP management", {}) if not http else
                ("hd_http_redirect", "HTTP redirects to HTTPS", {}),
                {"http_mgmt": http, "https_mgmt": _fact(f, "https_mgmt"), "redirects": redirect}, "warning")
        cred = _fact(f, "default_credentials")
        if cred is not None:
            users = cred if isinstance(cred, list) else []
            add("default_credentials", bool(cred),
                ("hd_cred_users", "default credentials accepted (user {users})", {"users": ", ".join(map(str, users))})
                if users else ("hd_cred", "default credentials accepted", {}),
                ("hd_cred_ok", "default credentials rejected", {}), cred)
        off = _fact(f, "clock_offset_s")
        if off is not None:
            try:
                offv = float(off)
            except (TypeError, ValueError):
                offv = None
            if offv is not None:
                args = {"offset": offv, "max": hp.max_clock_offset_s}
                add("clock_drift", abs(offv) > hp.max_clock_offset_s,
                    ("hd_clock_off", "clock off by {offset:+.1f} s (policy: <= {max:g} s)", args),
                    ("hd_clock_ok", "clock within {max:g} s ({offset:+.1f} s)", args), offv, "warning")
    return out
