"""Coverage / compliance reports: build a JSON-able dict, render it as JSON, CSV
or a self-contained printable HTML page (audit evidence).

Report dict::

    {"kind": "coverage"|"compliance", "title", "generated_at" (ISO UTC), "generated_at_epoch",
     "observed_at", "building" (filter or None), "policy": {...thresholds...},
     "summary": {status, score, pass, fail, unknown, na},
     "categories": {category: summary},            # compliance: inventory / firmware / hardening
     "buildings": [{"id", "name", "site", "summary", "checks": [building-level results],
                    "rooms": [{"id", "name", "type", "floor", "status", "score", "pass", "fail",
                               "unknown", "na", "checks": [...]}]}],
     "history": {"campus": [...], "<building>": [...]},   # when a store is given
     "notes": [...]}                                    # import warnings, catalog errors

Each check is ``CheckResult.to_dict()``: check, title, ref (等保 area), status, severity,
subject, message, building, room, device, evidence (list of dicts).
"""
from __future__ import annotations

import csv
import html
import io
import json
import time
from typing import Any, Callable, Iterable

from collector.campus.model import CampusModel, Registry
from collector.compliance.coverage import evaluate_coverage
from collector.compliance.firmware import Catalog, evaluate_firmware, evaluate_hardening
from collector.compliance.inventory import evaluate_inventory
from collector.compliance.observations import Observations, iso
from collector.compliance.policy import Policy
from collector.compliance.results import CheckResult, summarize
from collector.ui.i18n import T

UNASSIGNED = "(unassigned)"
_STATUS_ORDER = {"fail": 0, "unknown": 1, "pass": 2, "n/a": 3}


def category(check: str) -> str:
    if check.startswith("inventory_"):
        return "inventory"
    if check == "firmware":
        return "firmware"
    if check in ("snmp_community", "telnet", "http_mgmt", "default_credentials", "clock_drift"):
        return "hardening"
    if check in ("wifi_coverage",):
        return "wireless"
    if check in ("ipv6", "agent_online"):
        return "network"
    if check in ("ap_client_load", "link_utilisation"):
        return "capacity"
    return "wired"


def _group(kind: str, title: str, campus: CampusModel, results: list[CheckResult], obs: Observations,
           policy: dict[str, Any], building: str | None, now: float, notes: list[str]) -> dict[str, Any]:
    by_b: dict[str, list[CheckResult]] = {}
    for r in results:
        by_b.setdefault(r.building or UNASSIGNED, []).append(r)
    if building:
        by_b.setdefault(building, [])
    elif kind == "coverage":
        for b in campus.buildings:
            by_b.setdefault(b, [])
    blds = []
    for bid in sorted(by_b, key=lambda x: (x == UNASSIGNED, x)):
        rs = sorted(by_b[bid], key=lambda r: (_STATUS_ORDER.get(r.status, 9), r.check, r.subject))
        b = campus.buildings.get(bid)
        rooms: dict[str, list[CheckResult]] = {}
        bl = []
        for r in rs:
            if r.room:
                rooms.setdefault(r.room, []).append(r)
            else:
                bl.append(r)
        room_rows = []
        for rid in sorted(rooms):
            rm = campus.rooms.get(rid)
            s = summarize(rooms[rid])
            room_rows.append(dict(id=rid, name=rm.name if rm else "", type=rm.type if rm else "",
                                  floor=rm.floor if rm else None, **s,
                                  checks=[r.to_dict() for r in rooms[rid]]))
        blds.append({"id": bid, "name": b.name if b else "", "site": b.site if b else None,
                     "summary": summarize(rs), "categories": _cats(rs),
                     "checks": [r.to_dict() for r in bl], "rooms": room_rows})
    return {"kind": kind, "title": title, "generated_at": iso(now), "generated_at_epoch": now,
            "observed_at": iso(obs.time), "building": building, "policy": policy,
            "summary": summarize(results), "categories": _cats(results), "buildings": blds,
            "history": {}, "notes": notes}


def _cats(results: Iterable[CheckResult]) -> dict[str, dict[str, Any]]:
    cats: dict[str, list[CheckResult]] = {}
    for r in results:
        cats.setdefault(category(r.check), []).append(r)
    return {c: summarize(v) for c, v in sorted(cats.items())}


def build_coverage_report(campus: CampusModel, obs: Observations, policy: Policy | None = None,
                          building: str | None = None, now: float | None = None,
                          notes: list[str] | None = None) -> dict[str, Any]:
    policy = policy or Policy()
    res = evaluate_coverage(campus, obs, policy, building, now=obs.time)
    pol = {"wireless": policy.wireless.model_dump(), "wired": policy.wired.model_dump(),
           "capacity": policy.capacity.model_dump(), "ipv6": policy.ipv6.model_dump(), "agents": policy.agents.model_dump()}
    return _group("coverage", "Campus network coverage report", campus, res, obs, pol, building,
                  time.time() if now is None else now, list(notes or []))


def build_compliance_report(campus: CampusModel, registry: Registry, obs: Observations, catalog: Catalog,
                            policy: Policy | None = None, building: str | None = None, now: float | None = None,
                            notes: list[str] | None = None) -> dict[str, Any]:
    policy = policy or Policy()
    res = (evaluate_inventory(campus, registry, obs, policy, building)
           + evaluate_firmware(campus, obs, catalog, policy, building)
           + evaluate_hardening(campus, obs, policy, building))
    pol = {"inventory": policy.inventory.model_dump(), "firmware": policy.firmware.model_dump(),
           "hardening": policy.hardening.model_dump(),
           "firmware_catalog": sorted({r.vendor + " " + "/".join(r.models) for _, r in catalog.records})}
    n = list(notes or []) + [f"firmware catalog: {e}" for e in catalog.errors]
    return _group("compliance", "Campus asset and security compliance report", campus, res, obs, pol, building,
                  time.time() if now is None else now, n)


def all_checks(report: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for b in report.get("buildings", []):
        out.extend(b.get("checks", []))
        for r in b.get("rooms", []):
            out.extend(r.get("checks", []))
    return out


def restrict(report: dict[str, Any], keep: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The report limited to the buildings ``keep`` accepts (a login scoped to some sites/buildings);
    summary and categories are recomputed from the checks left."""
    rep = dict(report, buildings=[b for b in report.get("buildings", []) if keep(b)])
    checks = all_checks(rep)
    cats: dict[str, list[dict[str, Any]]] = {}
    for c in checks:
        cats.setdefault(category(c["check"]), []).append(c)
    rep["summary"] = summarize(checks)
    rep["categories"] = {k: summarize(v) for k, v in sorted(cats.items())}
    return rep


# --------------------------------------------------------------------------- renderers

def render_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False, default=str)


CSV_COLUMNS = ["kind", "generated_at", "building", "room", "category", "check", "title", "status", "severity",
               "subject", "device", "message", "ref", "evidence"]


def render_csv(report: dict[str, Any], lang: str = "en") -> str:
    """One row per check; ``title`` and ``message`` in ``lang`` (zh-CN or en), the other columns
    as stable keys."""
    t = T(lang)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for c in all_checks(report):
        ev = json.dumps(c.get("evidence") or [], ensure_ascii=False, separators=(",", ":"), default=str)
        w.writerow([report["kind"], report["generated_at"], c.get("building") or "", c.get("room") or "",
                    category(c["check"]), c["check"], _title(t, c), c["status"], c.get("severity", ""),
                    c.get("subject", ""), c.get("device") or "", t.message(c), c.get("ref", ""), ev])
    return buf.getvalue()


_CSS = """
body{font:13px/1.4 -apple-system,"Segoe UI","Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:24px;color:#111}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 6px;border-bottom:2px solid #333}
h3{font-size:14px;margin:16px 0 4px}
table{border-collapse:collapse;width:100%;margin:6px 0 12px}
th,td{border:1px solid #999;padding:3px 6px;vertical-align:top;text-align:left}
th{background:#eee} .meta td{border:none;padding:1px 8px 1px 0}
.st{font-weight:bold;text-transform:uppercase;white-space:nowrap}
.pass{color:#0a6b24} .fail{color:#b00020} .unknown{color:#a15c00} .na{color:#666}
.ev{font-size:11px;margin:1px 0;padding:1px 0;border-top:1px dotted #ccc;word-break:break-word} .ev:first-child{border-top:none}
.ev b{font-weight:600;color:#444}
.score{font-size:18px;font-weight:bold} .small{font-size:11px;color:#555}
.sign td{height:40px;width:33%} .brk{page-break-inside:avoid}
@media print{body{margin:10mm} h2{page-break-before:auto} tr{page-break-inside:avoid} .noprint{display:none}}
"""


def _title(t: T, c: dict[str, Any]) -> str:
    return t.opt("check." + c["check"], c.get("title") or c["check"]) if t.lang != "en" else c.get("title", "")


def _th(t: T, *keys: str) -> str:
    """A table's header row: the catalog's text of each key."""
    return "<tr>" + "".join(f"<th>{_e(t(k))}</th>" for k in keys) + "</tr>"


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def _st(s: str, t: T) -> str:
    return f'<span class="st {s.replace("/", "")}">{_e(t("status." + s))}</span>'


def _ev_html(ev: list[dict[str, Any]]) -> str:
    parts = []
    for e in ev or []:
        what = e.get("what")
        kv = " · ".join(f"<b>{_e(k)}</b> {_e(v)}" for k, v in e.items()
                        if k != "what" and v not in (None, "", []))
        parts.append(f'<div class="ev">{"<i>" + _e(what) + "</i>: " if what else ""}{kv}</div>')
    return "".join(parts)


def _score(s: dict[str, Any]) -> str:
    return "–" if s.get("score") is None else f"{s['score']:g}%"


def _spark(points: list[dict[str, Any]]) -> str:
    pts = [p for p in points if p.get("score") is not None]
    if len(pts) < 2:
        return ""
    w, h = 240, 40
    n = len(pts)
    coords = " ".join(f"{i * (w - 4) / (n - 1) + 2:.1f},{h - 2 - p['score'] * (h - 4) / 100:.1f}"
                      for i, p in enumerate(pts))
    return (f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="score history">'
            f'<rect width="{w}" height="{h}" fill="#f6f6f6"/><polyline fill="none" stroke="#1f5fbf" '
            f'stroke-width="2" points="{coords}"/></svg>'
            f'<span class="small"> {_e(iso(pts[0]["time"]))} → {_e(iso(pts[-1]["time"]))}: '
            f'{pts[0]["score"]:g}% → {pts[-1]["score"]:g}%</span>')


def _check_rows(checks: list[dict[str, Any]], t: T, with_room: bool = True) -> str:
    rows = []
    for c in checks:
        rows.append("<tr>" + (f"<td>{_e(c.get('room'))}</td>" if with_room else "") +
                    f"<td>{_e(_title(t, c))}<div class='small'>{_e(c.get('ref'))}</div></td>"
                    f"<td>{_st(c['status'], t)}</td><td>{_e(c.get('subject'))}</td><td>{_e(t.message(c))}</td>"
                    f"<td>{_ev_html(c.get('evidence'))}</td></tr>")
    head = _th(t, *(("col.room",) if with_room else ()), "col.check", "rpt.status", "col.subject", "rpt.finding",
               "rpt.evidence")
    return f"<table>{head}{''.join(rows)}</table>" if rows else f"<p class='small'>{_e(t('rpt.none'))}</p>"


_MATRIX = [("firmware", "Firmware"), ("snmp_community", "SNMP community"), ("telnet", "Telnet"),
           ("http_mgmt", "HTTP mgmt"), ("default_credentials", "Default creds"), ("clock_drift", "Clock"),
           ("inventory", "Inventory")]


def _device_matrix(checks: list[dict[str, Any]], t: T) -> str:
    """One row per device: the status of each security/inventory check (worst wins)."""
    rank = {"fail": 0, "unknown": 1, "pass": 2, "n/a": 3}
    devs: dict[str, dict[str, str]] = {}
    for c in checks:
        if not c.get("device"):
            continue
        col = "inventory" if c["check"].startswith("inventory_") else c["check"]
        row = devs.setdefault(c["device"], {})
        if col not in row or rank.get(c["status"], 9) < rank.get(row[col], 9):
            row[col] = c["status"]
    if not devs:
        return ""
    head = f"<tr><th>{_e(t('col.device'))}</th>" + "".join(
        f"<th>{_e(t('cat.inventory') if k == 'inventory' else _title(t, {'check': k, 'title': label}))}</th>"
        for k, label in _MATRIX) + "</tr>"
    dash = "<span class='small'>–</span>"
    rows = "".join("<tr><td>" + _e(d) + "</td>" + "".join(
        f"<td>{_st(row[k], t) if k in row else dash}</td>" for k, _ in _MATRIX) + "</tr>"
        for d, row in sorted(devs.items()))
    return (f"<h3>{_e(t('col.devices'))}</h3><table>{head}{rows}</table>"
            f"<p class='small'>{_e(t('rpt.nodata'))}</p>")


def render_html(report: dict[str, Any], lang: str = "en") -> str:
    """The printable report (audit evidence) in ``lang``: zh-CN or en (collector/ui/i18n)."""
    t = T(lang)
    s = report["summary"]
    title = t("reports." + report["kind"]) if t.lang != "en" else report["title"]
    if report.get("building"):
        title = t("rpt.in_building", title=title, b=report["building"])

    out = [f"<!DOCTYPE html><html lang='{t.lang}'><head><meta charset='utf-8'><title>{_e(title)}</title>"
           f"<style>{_CSS}</style></head><body>",
           f"<h1>{_e(title)}</h1>",
           "<table class='meta'>"
           f"<tr><td>{_e(t('rpt.generated'))}</td><td>{_e(report['generated_at'])}</td></tr>"
           f"<tr><td>{_e(t('rpt.observed'))}</td><td>{_e(report.get('observed_at'))}</td></tr>"
           f"<tr><td>{_e(t('rpt.scope'))}</td><td>{_e(report.get('building') or t('rpt.campus'))}</td></tr>"
           f"<tr><td>{_e(t('rpt.overall'))}</td><td>{_st(s['status'], t)} <span class='score'>{_score(s)}</span> "
           f"<span class='small'>{_e(t('rpt.counts', p=s['pass'], f=s['fail'], u=s['unknown'], n=s['na']))}"
           f"</span></td></tr></table>",
           f"<p class='small'>{_e(t('rpt.score_note'))}</p>"]
    if report.get("history", {}).get("campus"):
        out.append(f"<p>{_e(t('rpt.history'))}: {_spark(report['history']['campus'])}</p>")
    # policy
    out.append(f"<h2>{_e(t('rpt.policy'))}</h2><table>" + _th(t, "rpt.area", "rpt.setting", "rpt.value"))
    for area, vals in report.get("policy", {}).items():
        if isinstance(vals, dict):
            for k, v in vals.items():
                out.append(f"<tr><td>{_e(area)}</td><td>{_e(k)}</td><td>{_e(v)}</td></tr>")
        else:
            out.append(f"<tr><td>{_e(area)}</td><td></td><td>{_e(', '.join(map(str, vals)))}</td></tr>")
    out.append("</table>")
    # summary per building and category
    out.append(f"<h2>{_e(t('rpt.by_building'))}</h2><table>" + _th(
        t, "col.building", "rpt.name", "rpt.status", "col.score", "col.pass", "col.fail", "col.unknown",
        "rpt.by_category"))
    for b in report["buildings"]:
        bs = b["summary"]
        cats = "; ".join(f"{t('cat.' + c)}: {_score(v)}" for c, v in b.get("categories", {}).items())
        out.append(f"<tr><td>{_e(b['id'])}</td><td>{_e(b.get('name'))}</td><td>{_st(bs['status'], t)}</td>"
                   f"<td>{_score(bs)}</td><td>{bs['pass']}</td><td>{bs['fail']}</td><td>{bs['unknown']}</td>"
                   f"<td>{_e(cats)}</td></tr>")
    out.append("</table>")
    for b in report["buildings"]:
        bs = b["summary"]
        out.append(f"<h2>{_e(t('rpt.building', id=b['id'], name=b.get('name') or ''))} — {_st(bs['status'], t)} "
                   f"{_score(bs)}</h2>")
        hist = report.get("history", {}).get(b["id"])
        if hist:
            out.append(f"<p>{_e(t('rpt.history'))}: {_spark(hist)}</p>")
        if b["rooms"]:
            out.append(f"<h3>{_e(t('rpt.rooms'))}</h3><table>" + _th(
                t, "col.room", "rpt.name", "col.type", "rpt.status", "col.score", "rpt.bad_checks"))
            for r in b["rooms"]:
                bad = "; ".join(f"{_title(t, c)}: {t.message(c)}" for c in r["checks"]
                                if c["status"] in ("fail", "unknown"))
                out.append(f"<tr><td>{_e(r['id'])}</td><td>{_e(r['name'])}</td><td>{_e(r['type'])}</td>"
                           f"<td>{_st(r['status'], t)}</td><td>{_score(r)}</td><td>{_e(bad)}</td></tr>")
            out.append("</table>")
        checks = list(b["checks"]) + [c for r in b["rooms"] for c in r["checks"]]
        if report["kind"] == "compliance":
            out.append(_device_matrix(checks, t))
        checks.sort(key=lambda c: (_STATUS_ORDER.get(c["status"], 9), c["check"], c.get("subject") or ""))
        findings = [c for c in checks if c["status"] in ("fail", "unknown")]
        out.append(f"<h3>{_e(t('rpt.findings', n=len(findings)))}</h3>" + _check_rows(findings, t))
        passed = [c for c in checks if c["status"] in ("pass", "n/a")]
        out.append(f"<h3>{_e(t('rpt.passed', n=len(passed)))}</h3>" + _check_rows(passed, t))
    if report.get("notes"):
        out.append(f"<h2>{_e(t('rpt.notes'))}</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in report["notes"])
                   + "</ul>")
    footer = t("rpt.footer", kind=t("reports." + report["kind"]), at=report["generated_at"])
    out.append(f"<h2>{_e(t('rpt.signoff'))}</h2><table class='sign brk'>"
               + _th(t, "rpt.checked_by", "rpt.reviewed_by", "rpt.date")
               + f"<tr><td></td><td></td><td></td></tr></table><p class='small'>{_e(footer)}</p></body></html>")
    return "\n".join(out)


def render(report: dict[str, Any], fmt: str, lang: str = "en") -> str:
    """``fmt`` json (language-neutral: messages in English plus ``msg`` key + arguments), csv or
    html; ``lang`` zh-CN or en for csv and html."""
    if fmt == "json":
        return render_json(report)
    if fmt == "csv":
        return render_csv(report, lang)
    if fmt == "html":
        return render_html(report, lang)
    raise ValueError(f"unknown format {fmt!r} (json, csv, html)")


def attach_history(report: dict[str, Any], store: Any, limit: int = 60) -> dict[str, Any]:
    """Fill ``report['history']`` from a CampusStore (campus and per-building score series).
    Call after ``store.record_report(report)`` to include the current run."""
    kind = report["kind"]
    h: dict[str, Any] = {}
    if not report.get("building"):
        h["campus"] = store.history(kind, limit=limit)
    for b in report["buildings"]:
        h[b["id"]] = store.history(kind, building=b["id"], limit=limit)
    report["history"] = h
    return report
