"""Result records shared by every check, and how they roll up into scores."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

PASS, FAIL, UNKNOWN, NA = "pass", "fail", "unknown", "n/a"

#: check -> (title, 等保 2.0 (GB/T 22239-2019) control area it gives evidence for)
CHECKS: dict[str, tuple[str, str]] = {
    "wifi_coverage": ("Wireless coverage", "安全通信网络-网络架构"),
    "desk_port_speed": ("Gigabit to the desk", "安全通信网络-网络架构"),
    "uplink_speed": ("10G uplink", "安全通信网络-网络架构"),
    "backbone_speed": ("10G backbone", "安全通信网络-网络架构"),
    "interbuilding_speed": ("10G between buildings", "安全通信网络-网络架构"),
    "uplink_redundancy": ("Redundant uplinks", "安全通信网络-网络架构 (冗余)"),
    "ap_client_load": ("AP client load (concurrent use)", "安全通信网络-网络架构 (业务高峰期容量)"),
    "link_utilisation": ("Uplink/backbone utilisation (concurrent use)", "安全通信网络-网络架构 (业务高峰期带宽)"),
    "ipv6": ("IPv6 on gateways/L3", "安全通信网络-网络架构"),
    "agent_online": ("Monitoring agent online", "安全管理中心-集中管控"),
    "inventory_missing": ("Registered asset not seen", "安全运维管理-资产管理"),
    "inventory_unknown": ("Unregistered device seen", "安全区域边界-边界防护"),
    "inventory_moved": ("Asset moved", "安全运维管理-资产管理"),
    "inventory_wrong_ip": ("Not its assigned IP", "安全运维管理-资产管理"),
    "inventory_mismatch": ("Registry data differs", "安全运维管理-资产管理"),
    "inventory_ok": ("Asset seen where registered", "安全运维管理-资产管理"),
    "firmware": ("Approved firmware", "安全计算环境-入侵防范 (漏洞修补)"),
    "snmp_community": ("SNMP v1/v2c default community", "安全计算环境-身份鉴别"),
    "telnet": ("Telnet management open", "安全计算环境-身份鉴别 (远程管理防窃听)"),
    "http_mgmt": ("HTTP management without TLS", "安全计算环境-身份鉴别 (远程管理防窃听)"),
    "default_credentials": ("Default credentials accepted", "安全计算环境-身份鉴别"),
    "clock_drift": ("Clock drift", "安全管理中心-集中管控 (时钟同步)"),
}


def said(key: str, text: str, **args: Any) -> dict[str, Any]:
    """{"message": English text, "msg": {"key", "args"}} for records that are not CheckResults
    (firmware status): the same translation path as ``CheckResult.say``."""
    return {"message": text.format(**args), "msg": {"key": key, "args": args}}


@dataclass
class CheckResult:
    check: str                  # key of CHECKS
    status: str                 # pass | fail | unknown | n/a (n/a is listed, never scored)
    subject: str                # room id, "switch port", device id, asset tag, MAC
    message: str
    building: str | None = None
    room: str | None = None
    device: str | None = None
    severity: str = "warning"   # info | warning | critical
    evidence: list[dict[str, Any]] = field(default_factory=list)
    #: the message as a template key + arguments: the web UI and reports render it in the reader's
    #: language (``msg.<key>`` in collector/ui/i18n/*.json); ``message`` is the English text
    msg: dict[str, Any] | None = None

    def say(self, key: str, text: str, prefix: str | None = None, parts: list[tuple[str, str, dict]] = (),
            **args: Any) -> None:
        """Set the message: ``text`` (English, ``str.format`` template) with ``args``, kept as key +
        arguments too, so a zh-CN reader gets ``msg.<key>`` of the catalog with the same arguments;
        ``prefix`` (a device id) goes in front as ``<prefix>: ``. ``parts``: sub-messages (key,
        English template, args), joined by "; " into the ``{parts}`` placeholder (each translated)."""
        if parts:
            args = dict(args, parts="; ".join(tx.format(**a) for _, tx, a in parts))
        self.message = (f"{prefix}: " if prefix else "") + text.format(**args)
        self.msg = said(key, text, **args)["msg"]
        if parts:
            self.msg["parts"] = [{"key": k, "args": a} for k, _, a in parts]
        if prefix:
            self.msg["prefix"] = prefix

    @property
    def title(self) -> str:
        return CHECKS.get(self.check, (self.check, ""))[0]

    @property
    def ref(self) -> str:
        return CHECKS.get(self.check, ("", ""))[1]

    def to_dict(self) -> dict[str, Any]:
        d = {"check": self.check, "status": self.status, "subject": self.subject, "message": self.message,
             "building": self.building, "room": self.room, "device": self.device, "severity": self.severity,
             "evidence": [dict(e) for e in self.evidence]}
        if self.status in (PASS, NA):
            d["severity"] = "info"
        d["title"] = self.title
        d["ref"] = self.ref
        if self.msg is not None:
            d["msg"] = {**self.msg, "args": dict(self.msg["args"])}
        return d


def summarize(results: Iterable[CheckResult | dict]) -> dict[str, Any]:
    """Counts, score (% pass of pass+fail+unknown; unknown is not a pass) and worst status."""
    c = {PASS: 0, FAIL: 0, UNKNOWN: 0, NA: 0}
    for r in results:
        s = r["status"] if isinstance(r, dict) else r.status
        c[s] = c.get(s, 0) + 1
    scored = c[PASS] + c[FAIL] + c[UNKNOWN]
    status = FAIL if c[FAIL] else UNKNOWN if c[UNKNOWN] else PASS if c[PASS] else NA
    return {"status": status, "score": round(100.0 * c[PASS] / scored, 1) if scored else None,
            "pass": c[PASS], "fail": c[FAIL], "unknown": c[UNKNOWN], "na": c[NA]}
