"""Bodies of the pages (server-rendered HTML; graphs and dialogs via ui.js)."""
from __future__ import annotations

from typing import Any

from . import data
from .render import Ctx, e, fmt_bps, fmt_num, q, status_badge, table

RANGES = (("1h", 3600), ("6h", 6 * 3600), ("1d", 86400), ("7d", 7 * 86400), ("30d", 30 * 86400),
          ("1y", 365 * 86400))


def _dev_link(d: str | None) -> str:
    return f'<a href="/ui/devices/{q(d)}">{e(d)}</a>' if d else "–"


def _bld_link(b: str | None) -> str:
    return f'<a href="/ui/buildings/{q(b)}">{e(b)}</a>' if b else "–"


def _sev(ctx: Ctx, s: str | None) -> str:
    return f'<span class="sev sev-{e(s)}">{e(ctx.t("sev." + (s or "info")))}</span>'


def _reach(ctx: Ctx, r: Any) -> str:
    return status_badge(ctx, "ok" if r is True else "down" if r is False else "unknown")


# ------------------------------------------------------------------ login
def login(ctx: Ctx, token: str, next_url: str, error: str | None, ldap: bool) -> str:
    t = ctx.t
    err = f'<p class="error" role="alert" id="login-error">{e(error)}</p>' if error else ""
    hint = f'<p class="hint">{e(t("login.ldap_hint"))}</p>' if ldap else ""
    return f"""<form class="login" method="post" action="/ui/login" aria-describedby="{'login-error' if error else ''}">
{err}
<input type="hidden" name="csrf" value="{e(token)}"><input type="hidden" name="next" value="{e(next_url)}">
<p><label for="username">{e(t("login.user"))}</label>
<input id="username" name="username" autocomplete="username" required maxlength="256" autofocus></p>
<p><label for="password">{e(t("login.password"))}</label>
<input id="password" name="password" type="password" autocomplete="current-password" required maxlength="1024"></p>
{hint}
<p><button type="submit">{e(t("login.submit"))}</button></p>
</form>"""


# ------------------------------------------------------------------ campus
def campus(ctx: Ctx, app, p) -> str:
    t = ctx.t
    now = data.now_ms()
    blds = data.buildings(app, p)
    cards = []
    for b in blds:
        cards.append(
            f'<li class="card st-{e(b["status"])}"><h3><a href="/ui/buildings/{q(b["id"])}">{e(b["name"])}</a></h3>'
            f'{status_badge(ctx, b["status"])}<dl>'
            f'<dt>{e(t("col.devices"))}</dt><dd>{b["devices"]}'
            + (f' <span class="warn">({e(t("bld.unreachable", n=b["unreachable"]))})</span>' if b["unreachable"] else "")
            + f'</dd><dt>{e(t("col.alerts"))}</dt><dd>{b["alerts"]}'
            + (f' <span class="crit">({e(t("bld.critical", n=b["critical"]))})</span>' if b["critical"] else "")
            + f'</dd><dt>{e(t("col.agents"))}</dt><dd>{b["agents_online"]}/{b["agents"]}</dd></dl></li>')
    out = [f'<section aria-labelledby="h-blds"><h2 id="h-blds">{e(t("campus.buildings"))}</h2>']
    out.append(f'<ul class="cards">{"".join(cards)}</ul>' if cards else f'<p class="empty">{e(t("campus.none"))}</p>')
    out.append("</section>")
    als = data.alerts(app, p, {"state": "active"})[:20]
    out.append(f'<section aria-labelledby="h-al"><h2 id="h-al">{e(t("campus.open_alerts"))}</h2>')
    out.append(alert_table(ctx, als, now, caption=t("campus.open_alerts"), actions=False))
    out.append(f'<p><a href="/ui/alerts">{e(t("campus.all_alerts"))}</a></p></section>')
    if p.role in ("admin", "it"):
        ags = data.agents_list(app, p.scope)
        out.append(f'<section aria-labelledby="h-ag"><h2 id="h-ag">{e(t("nav.agents"))}</h2>')
        out.append(agent_table(ctx, ags, now))
        out.append("</section>")
    return "".join(out)


def pinned(a) -> bool:
    """Pinned on top of the alerts page, in red: critical, firing and not silenced."""
    return a.severity == "critical" and a.state == "firing" and not a.suppressed


def _alert_buttons(ctx: Ctx, a, can: dict | None) -> str:
    t = ctx.t
    if a.state not in ("pending", "firing"):
        return ""
    b = []
    if not a.acked:
        b.append(("ack", t("alert.ack")))
    b.append(("comment", t("alert.comment")))
    for k in ("assign", "silence", "resolve"):
        if can and can.get(k):
            b.append((k, t("alert." + k)))
    lb = a.labels
    return "".join(f'<button type="button" class="small" data-action="{k}" data-alert="{a.id}" '
                   f'data-summary="{e(a.summary)}" data-rule="{e(a.rule)}" data-device="{e(lb.get("device", ""))}" '
                   f'data-building="{e(lb.get("building", ""))}">{e(label)}</button>' for k, label in b)


def _alert_state(ctx: Ctx, a) -> str:
    t = ctx.t
    state = t("state." + a.state) + (f' · {t("alert.acked_by", who=a.acked_by)}' if a.acked else "")
    if a.assignee:
        state += " · " + t("alert.assigned_to", who=a.assignee)
    if a.suppressed and a.state in ("pending", "firing"):
        state += " · " + t("alert.suppressed", by=a.suppressed)
    return state


def alert_table(ctx: Ctx, als: list, now: int, caption: str, actions: bool, can: dict | None = None) -> str:
    t = ctx.t
    rows, attrs = [], []
    for a in als:
        lb = a.labels
        row = [_sev(ctx, a.severity), f'<a href="/ui/alerts/{a.id}">{e(a.summary or a.rule)}</a>',
               _dev_link(lb.get("device")), _bld_link(lb.get("building")), e(_alert_state(ctx, a)),
               f'<time datetime="{a.started_ms}">{e(ctx.time(a.fired_ms or a.started_ms))}</time>']
        if actions:
            row.append(e(ctx.time(a.resolved_ms)) if a.resolved_ms else _alert_buttons(ctx, a, can))
        rows.append(row)
        attrs.append(f' data-alert-id="{a.id}" data-severity="{e(a.severity)}"' + (' class="pinned"' if pinned(a) else ""))
    head = [e(t(k)) for k in ("col.severity", "col.summary", "col.device", "col.building", "col.state", "col.since")]
    if actions:
        head.append(e(t("col.actions")))
    return table(e(caption), head, rows, t("alerts.none"), cls="alerts", row_attrs=attrs)


def agent_table(ctx: Ctx, ags: list[dict], now: int) -> str:
    t = ctx.t
    rows = []
    for a in ags:
        off = a.get("clock_offset_s")
        rows.append([e(a["id"]), e(a.get("site")), _bld_link(a.get("building")),
                     status_badge(ctx, "online" if a.get("online") else "offline"),
                     e(ctx.ago(a.get("last_seen_ms"), now)), fmt_num(a.get("queue_depth")),
                     fmt_num(a.get("oldest_age_s"), 0), "–" if off is None else f"{off:+.2f} s",
                     e(a.get("version")), fmt_num(a.get("missing_total"))])
    head = [e(t(k)) for k in ("col.agent", "col.site", "col.building", "col.state", "col.last_seen", "col.queue",
                              "col.oldest", "col.clock", "col.version", "col.missing")]
    return table(e(t("nav.agents")), head, rows, t("agents.none"))


# ------------------------------------------------------------------ building
def building(ctx: Ctx, app, p, bid: str) -> str:
    t = ctx.t
    now = data.now_ms()
    v = data.building(app, p, bid)
    b = v["building"]
    out = []
    if b:
        out.append(f'<p class="summary">{status_badge(ctx, b["status"])} '
                   f'{e(t("bld.summary", devices=b["devices"], unreachable=b["unreachable"], alerts=b["alerts"], agents=b["agents_online"], agents_total=b["agents"]))}</p>')
    # devices by floor and room
    out.append(f'<section aria-labelledby="h-floors"><h2 id="h-floors">{e(t("bld.by_floor"))}</h2>')
    if not v["devices"]:
        out.append(f'<p class="empty">{e(t("bld.no_devices"))}</p>')
    for floor in sorted(v["floors"]):
        rooms = v["floors"][floor]
        out.append(f'<h3>{e(t("bld.floor", floor=floor) if floor else t("bld.no_floor"))}</h3><ul class="rooms">')
        for room in sorted(rooms):
            items = "".join(f'<li>{_reach(ctx, d.get("reachable"))} {_dev_link(d["id"])} '
                            f'<span class="type">{e(t("group." + d["group"]))}{" · " + e(d["type"]) if d.get("type") else ""}</span></li>'
                            for d in sorted(rooms[room], key=lambda x: x["id"]))
            out.append(f'<li><span class="room">{e(room or t("bld.no_room"))}</span><ul>{items}</ul></li>')
        out.append("</ul>")
    out.append("</section>")
    # ports
    rows = [[_dev_link(x["device"]), f'<a href="/ui/devices/{q(x["device"])}/ports/{q(x["ifIndex"])}">{e(x["name"])}</a>',
             status_badge(ctx, "down" if x["problem"] == "down" else "warning"), e(t("port." + x["problem"])),
             fmt_num((x.get("fields") or {}).get("in_errors_ps"), 2)] for x in v["ports"]]
    out.append(f'<section aria-labelledby="h-ports"><h2 id="h-ports">{e(t("bld.ports"))}</h2>')
    out.append(table(e(t("bld.ports")), [e(t(k)) for k in ("col.device", "col.port", "col.state", "col.problem", "col.errors_ps")],
                     rows, t("bld.ports_none")))
    out.append("</section>")
    # wifi
    rows = [[e(a["ap"]), e(a.get("mac")), status_badge(ctx, "ok" if a.get("up") else "down"), fmt_num(a.get("clients")),
             _dev_link(a["controller"])] for a in v["aps"]]
    out.append(f'<section aria-labelledby="h-wifi"><h2 id="h-wifi">{e(t("bld.wifi"))}</h2>')
    out.append(table(e(t("bld.wifi")), [e(t(k)) for k in ("col.ap", "col.mac", "col.state", "col.clients", "col.controller")],
                     rows, t("bld.wifi_none")))
    out.append("</section>")
    # cameras, sensors, projectors, doors
    for grp in ("camera", "sensor", "projector", "access"):
        devs = [d for d in v["devices"] if d["group"] == grp]
        rows = [[_dev_link(d["id"]), e(d.get("room")), _reach(ctx, d.get("reachable")),
                 e(", ".join(f"{k.split('.', 1)[1]}={fmt_num(x)}" for k, x in v["values"].get(d["id"], {}).items())),
                 e(ctx.ago(d.get("last_seen_ms"), now))] for d in devs]
        out.append(f'<section aria-labelledby="h-{grp}"><h2 id="h-{grp}">{e(t("group." + grp + "s"))}</h2>')
        out.append(table(e(t("group." + grp + "s")), [e(t(k)) for k in ("col.device", "col.room", "col.state", "col.values", "col.last_seen")],
                         rows, t("bld.group_none")))
        out.append("</section>")
    out.append(f'<section aria-labelledby="h-bal"><h2 id="h-bal">{e(t("campus.open_alerts"))}</h2>')
    out.append(alert_table(ctx, v["alerts"], now, t("campus.open_alerts"), actions=False))
    out.append("</section>")
    if p.role in ("admin", "it"):
        out.append(f'<p><a href="/ui/reports/coverage?building={q(bid)}">{e(t("reports.coverage"))}</a> · '
                   f'<a href="/ui/reports/compliance?building={q(bid)}">{e(t("reports.compliance"))}</a></p>')
    return "".join(out)


# ------------------------------------------------------------------ device
def graph(ctx: Ctx, gid: str, title: str, device: str, fields: list[str], unit: str, tags: str = "",
          agg: str = "avg") -> str:
    t = ctx.t
    btns = "".join(f'<button type="button" data-range="{s}" aria-pressed="{"true" if k == "1h" else "false"}">'
                   f'{e(t("range." + k))}</button>' for k, s in RANGES)
    return (f'<figure class="graph" id="{e(gid)}" data-device="{e(device)}" data-measurement="interface" '
            f'data-fields="{e(",".join(fields))}" data-unit="{e(unit)}" data-tags="{e(tags)}" data-agg="{e(agg)}">'
            f'<figcaption><span class="gtitle">{e(title)}</span>'
            f'<span class="ranges" role="group" aria-label="{e(t("range.label"))}">{btns}</span></figcaption>'
            f'<div class="plot" role="img" aria-label="{e(title)}"></div>'
            f'<p class="gsummary" aria-live="polite">{e(t("graph.loading"))}</p></figure>')


def device(ctx: Ctx, app, p, dev: dict) -> str:
    t = ctx.t
    now = data.now_ms()
    did = dev["id"]
    facts = dev.get("facts") or {}
    out = []
    rows = [(t("col.building"), _bld_link(dev.get("building"))), (t("col.room"), e(dev.get("room"))),
            (t("col.type"), e(dev.get("type"))), (t("col.agent"), e(dev.get("agent"))),
            (t("col.driver"), e(dev.get("driver"))), (t("col.state"), _reach(ctx, dev.get("reachable"))
             + (f' <span class="warn">{e(dev.get("reason") or "")} {e(dev.get("error") or "")}</span>' if dev.get("reachable") is False else "")),
            (t("col.last_poll"), e(ctx.time(dev.get("last_poll_ms"), True)))]
    for k in ("sysName", "vendor", "model", "serial", "firmware", "mac", "ip", "sysDescr"):
        if facts.get(k) not in (None, ""):
            rows.append((t("fact." + k), e(facts[k])))
    out.append(f'<section aria-labelledby="h-facts"><h2 id="h-facts">{e(t("dev.facts"))}</h2><dl class="facts">'
               + "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl></section>")
    ifs = app.state.store.interfaces(did)
    if ifs:
        out.append(f'<section aria-labelledby="h-graphs"><h2 id="h-graphs">{e(t("dev.graphs"))}</h2>')
        out.append(graph(ctx, "g-traffic", t("graph.traffic"), did, ["in_bps", "out_bps"], "bps"))
        out.append(graph(ctx, "g-errors", t("graph.errors"), did, ["in_errors", "out_errors"], "count", agg="increase"))
        out.append("</section>")
        rows = []
        for i in ifs:
            f = i.get("fields") or {}
            st = ("up" if i.get("oper_up") else "down") if i.get("admin_up") is not False else "admin_down"
            util = max(i.get("util_in_pct") or 0, i.get("util_out_pct") or 0)
            rows.append([f'<a href="/ui/devices/{q(did)}/ports/{q(i["ifIndex"])}">{e(i["name"])}</a>',
                         status_badge(ctx, st), fmt_num(i.get("speed_mbps")), fmt_bps(i.get("in_bps")),
                         fmt_bps(i.get("out_bps")),
                         f'<meter min="0" max="100" value="{util:.1f}" aria-label="{e(t("col.util"))} {e(i["name"])}">'
                         f'{util:.1f}%</meter> {util:.1f}%',
                         fmt_num(f.get("in_errors_ps"), 2)])
        out.append(f'<section aria-labelledby="h-ifs"><h2 id="h-ifs">{e(t("dev.interfaces"))}</h2>')
        out.append(table(e(t("dev.interfaces")), [e(t(k)) for k in ("col.port", "col.state", "col.speed", "col.in", "col.out",
                                                                    "col.util", "col.errors_ps")], rows, ""))
        out.append("</section>")
    als = data.alerts(app, p, {"state": "all", "device": did, "limit": 50})
    out.append(f'<section aria-labelledby="h-dal"><h2 id="h-dal">{e(t("dev.alerts"))}</h2>')
    out.append(alert_table(ctx, als, now, t("dev.alerts"), actions=False))
    out.append("</section>")
    evs = app.state.store.events(did, None, None, None, None, 50)
    rows = [[e(ctx.time(x.get("ts_ms"), True)), _sev(ctx, x.get("severity")), e(x.get("type")),
             e(x.get("message") or ", ".join(f"{k}={v}" for k, v in (x.get("tags") or {}).items()))] for x in evs]
    out.append(f'<section aria-labelledby="h-ev"><h2 id="h-ev">{e(t("dev.events"))}</h2>')
    out.append(table(e(t("dev.events")), [e(t(k)) for k in ("col.time", "col.severity", "col.type", "col.detail")],
                     rows, t("dev.events_none")))
    out.append("</section>")
    if p.role in ("admin", "it"):
        fs = data.device_findings(app, did)
        rows = [[status_badge(ctx, c.get("status")), e(t.opt("check." + c["check"], c.get("title") or c["check"])),
                 e(c.get("subject")), e(t.message(c))] for c in fs]
        out.append(f'<section aria-labelledby="h-fi"><h2 id="h-fi">{e(t("dev.findings"))}</h2>')
        out.append(table(e(t("dev.findings")), [e(t(k)) for k in ("col.state", "col.check", "col.subject", "col.detail")],
                         rows, t("dev.findings_none")))
        out.append("</section>")
    return "".join(out)


# ------------------------------------------------------------------ port
def timeline(ctx: Ctx, macs: list[dict], start: int, end: int) -> str:
    t = ctx.t
    if not macs:
        return f'<p class="empty">{e(t("port.no_macs"))}</p>'
    span = max(1, end - start)
    rows = []
    for m in macs[:200]:
        a = max(start, m.get("first_seen_ms") or start)
        b = min(end, m.get("last_seen_ms") or end) if not m.get("open") else end
        x, w = (a - start) / span * 100, max(0.6, (b - a) / span * 100)
        label = t("port.seen", first=ctx.time(m.get("first_seen_ms")), last=ctx.time(m.get("last_seen_ms")))
        bar = (f'<svg class="tl" viewBox="0 0 100 10" preserveAspectRatio="none" role="img" aria-label="{e(label)}">'
               f'<rect x="0" y="0" width="100" height="10" class="tl-bg"/>'
               f'<rect x="{x:.2f}" y="1" width="{w:.2f}" height="8" class="tl-bar{" open" if m.get("open") else ""}"/></svg>')
        rows.append([f'<a href="/ui/search?q={q(m.get("mac"))}">{e(m.get("mac"))}</a>', e(m.get("vlan")),
                     e(ctx.time(m.get("first_seen_ms"))), e(ctx.time(m.get("last_seen_ms"))),
                     status_badge(ctx, "online" if m.get("open") else "gone"), bar])
    head = [e(t(k)) for k in ("col.mac", "col.vlan", "col.first_seen", "col.last_seen", "col.state")]
    head.append(e(t("port.timeline", start=ctx.time(start), end=ctx.time(end))))
    return table(e(t("port.macs")), head, rows, "")


def port(ctx: Ctx, app, p, dev: dict, iface: dict | None, if_index: str) -> str:
    t = ctx.t
    did = dev["id"]
    out = []
    if iface:
        f = iface.get("fields") or {}
        st = ("up" if iface.get("oper_up") else "down") if iface.get("admin_up") is not False else "admin_down"
        rows = [(t("col.state"), status_badge(ctx, st)), (t("col.speed"), fmt_num(iface.get("speed_mbps"))),
                (t("col.in"), fmt_bps(iface.get("in_bps"))), (t("col.out"), fmt_bps(iface.get("out_bps"))),
                (t("col.errors_ps"), fmt_num(f.get("in_errors_ps"), 2)),
                (t("col.last_seen"), e(ctx.time(iface.get("ts_ms"), True)))]
        out.append('<dl class="facts">' + "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>")
    out.append(f'<section aria-labelledby="h-pg"><h2 id="h-pg">{e(t("dev.graphs"))}</h2>')
    out.append(graph(ctx, "g-port-traffic", t("graph.traffic"), did, ["in_bps", "out_bps"], "bps", tags=f"ifIndex={if_index}"))
    out.append(graph(ctx, "g-port-errors", t("graph.errors"), did, ["in_errors", "out_errors"], "count",
                     tags=f"ifIndex={if_index}", agg="increase"))
    out.append("</section>")
    end = data.now_ms()
    start = end - 30 * 86400_000
    macs = data.port_macs(app, did, if_index, start, end)
    macs.sort(key=lambda m: (not m.get("open"), -(m.get("last_seen_ms") or 0)))
    out.append(f'<section aria-labelledby="h-macs"><h2 id="h-macs">{e(t("port.macs"))}</h2>')
    out.append(timeline(ctx, macs, start, end))
    out.append("</section>")
    evs = [x for x in app.state.store.events(did, start, None, None, None, 200)
           if str((x.get("tags") or {}).get("ifIndex")) == str(if_index)
           or (iface and (x.get("tags") or {}).get("ifName") == iface.get("name"))]
    rows = [[e(ctx.time(x.get("ts_ms"), True)), _sev(ctx, x.get("severity")), e(x.get("type"))] for x in evs[:50]]
    out.append(f'<section aria-labelledby="h-pev"><h2 id="h-pev">{e(t("port.history"))}</h2>')
    out.append(table(e(t("port.history")), [e(t(k)) for k in ("col.time", "col.severity", "col.type")], rows,
                     t("dev.events_none")))
    out.append("</section>")
    return "".join(out)


# ------------------------------------------------------------------ where-is
def search(ctx: Ctx, app, p, query: str) -> str:
    t = ctx.t
    out = [f'<form class="where-big" role="search" action="/ui/search" method="get">'
           f'<label for="q2">{e(t("search.label"))}</label>'
           f'<input id="q2" name="q" type="search" value="{e(query)}" maxlength="200" required>'
           f'<button type="submit">{e(t("search.go"))}</button></form>']
    if not query:
        out.append(f'<p class="hint">{e(t("search.help"))}</p>')
        return "".join(out)
    r = data.search(app, p, query)
    found = 0
    if r["fdb"]:
        found += len(r["fdb"])
        rows = [[_dev_link(x.get("device")),
                 f'<a href="/ui/devices/{q(x.get("device"))}/ports/{q(x.get("ifIndex"))}">{e(x.get("port") or x.get("ifIndex"))}</a>',
                 e(x.get("vlan")), e(ctx.time(x.get("first_seen_ms"))), e(ctx.time(x.get("last_seen_ms"))),
                 status_badge(ctx, "online" if x.get("open") else "gone")]
                for x in sorted(r["fdb"], key=lambda x: -(x.get("last_seen_ms") or 0))]
        out.append(f'<section aria-labelledby="h-sf"><h2 id="h-sf">{e(t("search.fdb"))}</h2>')
        out.append(table(e(t("search.fdb")), [e(t(k)) for k in ("col.device", "col.port", "col.vlan", "col.first_seen",
                                                               "col.last_seen", "col.state")], rows, ""))
        out.append("</section>")
    if r["arp"]:
        found += len(r["arp"])
        rows = [[e(x.get("ip")), f'<a href="/ui/search?q={q(x.get("mac"))}">{e(x.get("mac"))}</a>', _dev_link(x.get("device")),
                 e(ctx.time(x.get("first_seen_ms"))), e(ctx.time(x.get("last_seen_ms")))] for x in r["arp"]]
        out.append(f'<section aria-labelledby="h-sa"><h2 id="h-sa">{e(t("search.arp"))}</h2>')
        out.append(table(e(t("search.arp")), [e(t(k)) for k in ("col.ip", "col.mac", "col.device", "col.first_seen",
                                                               "col.last_seen")], rows, ""))
        out.append("</section>")
    if r["ip_address"]:
        found += len(r["ip_address"])
        rows = [[_dev_link(x.get("device")), e(x.get("ip")), e(x.get("port") or x.get("ifIndex")),
                 e(ctx.time(x.get("last_seen_ms")))] for x in r["ip_address"]]
        out.append(f'<section aria-labelledby="h-si"><h2 id="h-si">{e(t("search.ipaddr"))}</h2>')
        out.append(table(e(t("search.ipaddr")), [e(t(k)) for k in ("col.device", "col.ip", "col.port", "col.last_seen")],
                         rows, ""))
        out.append("</section>")
    if r["where"]:
        found += len(r["where"])
        rows = [[e(m.get("mac")), e(", ".join(m.get("ips") or [])), e(m.get("asset_tag")), e(m.get("serial")),
                 _dev_link(m.get("switch")), e(m.get("port")), e(m.get("room")), _bld_link(m.get("building")),
                 e(ctx.iso_time(m.get("last_seen")))] for m in r["where"]]
        out.append(f'<section aria-labelledby="h-sw"><h2 id="h-sw">{e(t("search.where"))}</h2>')
        out.append(table(e(t("search.where")), [e(t(k)) for k in ("col.mac", "col.ip", "col.asset", "col.serial",
                                                                 "col.switch", "col.port", "col.room", "col.building",
                                                                 "col.last_seen")], rows, ""))
        out.append("</section>")
    if r["devices"]:
        found += len(r["devices"])
        rows = [[_dev_link(d["id"]), _bld_link(d.get("building")), e(d.get("room")),
                 e((d.get("facts") or {}).get("serial")), e((d.get("facts") or {}).get("ip")), _reach(ctx, d.get("reachable"))]
                for d in r["devices"]]
        out.append(f'<section aria-labelledby="h-sd"><h2 id="h-sd">{e(t("search.devices"))}</h2>')
        out.append(table(e(t("search.devices")), [e(t(k)) for k in ("col.device", "col.building", "col.room", "col.serial",
                                                                   "col.ip", "col.state")], rows, ""))
        out.append("</section>")
    out.insert(1, f'<p class="result-count" role="status">{e(t("search.found", n=found, q=query))}</p>')
    return "".join(out)


# ------------------------------------------------------------------ alerts (live, filters, detail)
SEVERITIES = ("critical", "warning", "info")


def alert_filter_query(flt: dict) -> str:
    return "&".join(f"{k}={q(v)}" for k, v in sorted(flt.items()) if v)


def alerts(ctx: Ctx, app, p, can: dict, flt: dict) -> str:
    """The alerts page: filters (building, severity; server side), the live status and sound switch,
    the tables (re-fetched from ``/ui/alerts/live`` by alerts.js on every change) and the dialogs."""
    t = ctx.t
    if data.engine(app) is None:
        return f'<p class="empty">{e(t("alerts.no_engine"))}</p>'
    blds = sorted({b["id"] for b in data.buildings(app, p)}
                  | {a.labels["building"] for a in data.alerts(app, p, {"state": "active"}) if a.labels.get("building")}
                  | ({flt["building"]} if flt.get("building") else set()))
    opt = lambda v, label, cur: (f'<option value="{e(v)}"' + (" selected" if v == (cur or "") else "")  # noqa: E731
                                 + f">{e(label)}</option>")
    qs = alert_filter_query(flt)
    tables = alert_tables(ctx, app, p, can, flt)
    return "".join([
        f'<form class="filter noprint" method="get" action="/ui/alerts">'
        f'<label for="f-building">{e(t("col.building"))}</label><select id="f-building" name="building">'
        + opt("", t("alerts.filter.all"), flt.get("building")) + "".join(opt(b, b, flt.get("building")) for b in blds)
        + f'</select><label for="f-severity">{e(t("col.severity"))}</label><select id="f-severity" name="severity">'
        + opt("", t("alerts.filter.all"), flt.get("severity"))
        + "".join(opt(v, t("sev." + v), flt.get("severity")) for v in SEVERITIES)
        + f'</select><button type="submit">{e(t("alerts.filter.apply"))}</button>'
        + (f' <a href="/ui/alerts">{e(t("alerts.filter.clear"))}</a>' if qs else "") + "</form>",
        f'<div class="live-bar noprint"><p id="live-status" class="live" role="status" aria-live="polite" hidden></p>'
        f'<button type="button" id="mute" class="toggle" aria-pressed="false" hidden>{e(t("alerts.mute"))}</button>'
        f'<a href="/api/v1/alerts/export.csv{"?" + qs if qs else ""}">{e(t("alerts.csv"))}</a></div>',
        '<div id="flash" role="status" aria-live="polite"></div>',
        f'<div id="alert-live" data-live="/ui/alerts/live{"?" + qs if qs else ""}" data-digest="{digest(tables)}">'
        f"{tables}</div>",
        dialogs(ctx)])


def digest(html: str) -> str:
    """Of a fragment: alerts.js replaces the page's copy only when it changed."""
    import hashlib
    return hashlib.sha1(html.encode()).hexdigest()[:16]


def alert_tables(ctx: Ctx, app, p, can: dict, flt: dict) -> str:
    """Active alerts (critical firing pinned on top) and the recently resolved ones, filtered."""
    t = ctx.t
    now = data.now_ms()
    f = {k: v for k, v in flt.items() if v}
    active = data.alerts(app, p, {"state": "active", "limit": 500, **f})
    resolved = data.alerts(app, p, {"state": ["resolved"], "since_ms": now - 7 * 86400_000, "limit": 100, **f})
    resolved.sort(key=lambda a: -(a.resolved_ms or 0))
    sev = {s: i for i, s in enumerate(SEVERITIES)}
    active.sort(key=lambda a: (not pinned(a), sev.get(a.severity, 9), -(a.fired_ms or a.started_ms)))
    n = sum(1 for a in active if pinned(a))
    return "".join([
        f'<p class="counts" data-critical="{n}">{e(t("alerts.counts", n=len(active), critical=n))}</p>',
        f'<section aria-labelledby="h-act"><h2 id="h-act">{e(t("alerts.active"))}</h2>',
        alert_table(ctx, active, now, t("alerts.active"), actions=True, can=can), "</section>",
        f'<section aria-labelledby="h-res"><h2 id="h-res">{e(t("alerts.resolved"))}</h2>',
        alert_table(ctx, resolved[:50], now, t("alerts.resolved"), actions=True, can=can), "</section>"])


def _num(v: float) -> str:
    return f"{v:.4g}"


def sparkline(ctx: Ctx, points: list, threshold: float | None) -> str:
    """An inline SVG line of the samples (no script), with a text summary for screen readers."""
    pts = [(float(x[0]), float(x[1])) for x in points
           if isinstance(x, (list, tuple)) and len(x) > 1 and isinstance(x[1], (int, float))]
    if not pts:
        return f'<p class="empty">{e(ctx.t("alert.samples_none"))}</p>'
    w, h, pad = 320, 60, 4
    ys = [y for _, y in pts] + ([threshold] if threshold is not None else [])
    x0, x1, y0, y1 = pts[0][0], pts[-1][0], min(ys), max(ys)
    px = lambda x: pad + ((x - x0) / (x1 - x0) * (w - 2 * pad) if x1 > x0 else (w - 2 * pad) / 2)  # noqa: E731
    py = lambda y: h - pad - ((y - y0) / (y1 - y0) * (h - 2 * pad) if y1 > y0 else (h - 2 * pad) / 2)  # noqa: E731
    label = ctx.t("alert.range", min=_num(min(y for _, y in pts)), max=_num(max(y for _, y in pts)),
                  last=_num(pts[-1][1]))
    if threshold is not None:
        label += " · " + ctx.t("alert.limit", v=_num(threshold))
    line = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
    thr = (f'<line class="threshold" x1="{pad}" x2="{w - pad}" y1="{py(threshold):.1f}" y2="{py(threshold):.1f}" '
           f'stroke="#57606a" stroke-dasharray="4 3"/>' if threshold is not None else "")
    return (f'<svg class="spark" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{e(label)}">'
            f'{thr}<polyline points="{line}" fill="none" stroke="#cf222e" stroke-width="1.5"/>'
            f'<circle cx="{px(pts[-1][0]):.1f}" cy="{py(pts[-1][1]):.1f}" r="2.5" fill="#cf222e"/></svg>'
            f'<p class="meta">{e(label)}</p>')


def _detail_text(d: dict) -> str:
    d = d or {}
    parts = [str(d[k]) for k in ("comment", "text", "assignee", "reason") if d.get(k)]
    if not parts:
        parts = [f"{k}={v}" for k, v in sorted(d.items()) if v not in (None, "", [], {})][:6]
    return "; ".join(parts)


def alert_detail(ctx: Ctx, d: dict, can: dict) -> str:
    """One alert (the answer of GET /api/v1/alerts/{id}): facts, actions, the samples or events that
    fired it, its history."""
    from types import SimpleNamespace
    t = ctx.t
    a = SimpleNamespace(**{k: d.get(k) for k in ("id", "rule", "severity", "state", "summary", "labels", "acked",
                                                 "acked_by", "assignee", "suppressed")})
    lb = d.get("labels") or {}
    facts = [("alert.rule", e(d.get("rule"))), ("col.severity", _sev(ctx, d.get("severity"))),
             ("col.state", e(_alert_state(ctx, a))), ("col.device", _dev_link(lb.get("device"))),
             ("col.building", _bld_link(lb.get("building"))), ("col.room", e(lb.get("room") or "–")),
             ("alert.started", e(ctx.time(d.get("started_ms"), True))),
             ("alert.fired", e(ctx.time(d.get("fired_ms"), True))),
             ("alert.resolved_at", e(ctx.time(d.get("resolved_ms"), True))),
             ("alert.count", e(d.get("count") or 1))]
    if d.get("acked"):
        facts.append(("alert.ack", e(" · ".join(x for x in (
            d.get("acked_by"), d.get("ack_comment"),
            t("alert.ack_until", t=ctx.time(d["ack_expires_ms"])) if d.get("ack_expires_ms") else "") if x))))
    other = {k: v for k, v in lb.items() if k not in ("device", "building", "room")}
    if other:
        facts.append(("alert.labels", e(", ".join(f"{k}={v}" for k, v in sorted(other.items())))))
    out = [f'<p class="summary sev-box sev-{e(d.get("severity"))}">{_sev(ctx, d.get("severity"))} {e(d.get("summary"))}</p>',
           '<dl class="facts">' + "".join(f"<dt>{e(t(k))}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>",
           f'<p class="actions">{_alert_buttons(ctx, a, can)}</p>']
    smp = d.get("samples")
    if smp is not None:
        what = smp["measurement"] + ("." + smp["field"] if smp.get("field") else "")
        out.append(f'<section aria-labelledby="h-smp"><h2 id="h-smp">{e(t("alert.samples", what=what))}</h2>')
        series = smp.get("series") or []
        if not series:
            out.append(f'<p class="empty">{e(d.get("samples_error") or t("alert.samples_none"))}</p>')
        for sr in series[:4]:
            tags = ", ".join(f"{k}={v}" for k, v in sorted((sr.get("tags") or {}).items()))
            out.append(f'<figure class="series">{f"<figcaption>{e(tags)}</figcaption>" if tags else ""}'
                       f'{sparkline(ctx, sr.get("points") or [], smp.get("threshold"))}</figure>')
        out.append("</section>")
    if d.get("events"):
        rows = [[e(ctx.time(x.get("ts_ms"), True)), e(x.get("type")), _sev(ctx, x.get("severity")),
                 e(_detail_text(x.get("data") or {}))] for x in d["events"][-20:]]
        out.append(f'<section aria-labelledby="h-evs"><h2 id="h-evs">{e(t("alert.events"))}</h2>')
        out.append(table(e(t("alert.events")), [e(t(k)) for k in ("col.time", "col.type", "col.severity", "col.detail")],
                         rows, ""))
        out.append("</section>")
    rows = [[e(ctx.time(h["t_ms"], True)), e(t.opt("hist." + h["action"], h["action"])), e(h.get("actor") or "–"),
             e(_detail_text(h.get("detail")))] for h in d.get("history") or []]
    out.append(f'<section aria-labelledby="h-hist"><h2 id="h-hist">{e(t("alert.history"))}</h2>')
    out.append(table(e(t("alert.history")), [e(t(k)) for k in ("col.time", "col.action", "col.actor", "col.detail")],
                     rows, t("alerts.none"), cls="history"))
    out.append("</section>")
    return "".join(out)


def dialogs(ctx: Ctx) -> str:
    t = ctx.t

    def dlg(kind: str, fields: str) -> str:
        return (f'<dialog id="dlg-{kind}" aria-labelledby="dlg-{kind}-h" class="dlg">'
                f'<form method="dialog" data-kind="{kind}"><h2 id="dlg-{kind}-h">{e(t("alert." + kind))}</h2>'
                f'<p class="dlg-summary"></p>{fields}<p class="dlg-error error" role="alert" hidden></p>'
                f'<p class="buttons"><button type="submit" value="ok">{e(t("dialog.ok." + kind))}</button> '
                f'<button type="button" value="cancel" class="cancel">{e(t("dialog.cancel"))}</button></p></form></dialog>')

    comment = lambda req="": (f'<p><label for="{{id}}">{e(t("dialog.comment"))}</label>'  # noqa: E731
                              f'<textarea id="{{id}}" name="comment" rows="3" maxlength="10000"{req}></textarea></p>')
    return "".join([
        dlg("ack", comment().format(id="ack-comment")),
        dlg("comment", comment(" required").format(id="comment-text")),
        dlg("assign", f'<p><label for="assignee">{e(t("dialog.assignee"))}</label>'
                      f'<input id="assignee" name="assignee" maxlength="200" required></p>'
                      + comment().format(id="assign-comment")),
        dlg("resolve", comment().format(id="resolve-comment")),
        dlg("silence", f'<p><label for="silence-matchers">{e(t("dialog.matchers"))}</label>'
                       f'<input id="silence-matchers" name="matchers" maxlength="1000" required></p>'
                       f'<p><label for="silence-hours">{e(t("dialog.hours"))}</label>'
                       f'<input id="silence-hours" name="hours" type="number" min="0.25" max="720" step="0.25" value="2" required></p>'
                       + comment(" required").format(id="silence-comment")),
    ])


# ------------------------------------------------------------------ reports
def report(ctx: Ctx, rep: dict, kind: str, building: str | None, buildings: list[str]) -> str:
    t = ctx.t
    s = rep.get("summary") or {}
    opts = "".join(f'<option value="{e(b)}"{" selected" if b == building else ""}>{e(b)}</option>' for b in buildings)
    tabs = "".join(f'<a href="/ui/reports/{k}{"?building=" + q(building) if building else ""}"'
                   + (' aria-current="page"' if k == kind else "") + f'>{e(t("reports." + k))}</a>'
                   for k in ("coverage", "compliance"))
    csv = f'/ui/reports/{kind}.csv' + (f'?building={q(building)}' if building else "")
    out = [f'<nav class="tabs noprint" aria-label="{e(t("reports.kind"))}">{tabs}</nav>',
           f'<form class="noprint filter" method="get"><label for="rb">{e(t("col.building"))}</label>'
           f'<select id="rb" name="building"><option value="">{e(t("reports.all"))}</option>{opts}</select>'
           f'<button type="submit">{e(t("reports.show"))}</button> '
           f'<a class="button" href="{csv}" download>{e(t("reports.csv"))}</a> '
           f'<button type="button" id="print">{e(t("reports.print"))}</button></form>',
           f'<p class="meta">{e(t("reports.generated", at=ctx.iso_time(rep.get("generated_at")), tz=ctx.tz))}</p>',
           f'<p class="score">{status_badge(ctx, s.get("status"))} '
           f'{e(t("reports.score", score=fmt_num(s.get("score")), passed=s.get("pass", 0), failed=s.get("fail", 0), unknown=s.get("unknown", 0)))}</p>']
    if rep.get("categories"):
        rows = [[e(t.opt("cat." + c, c)), status_badge(ctx, v.get("status")), fmt_num(v.get("score")), str(v.get("pass", 0)),
                 str(v.get("fail", 0)), str(v.get("unknown", 0))] for c, v in rep["categories"].items()]
        out.append(table(e(t("reports.categories")), [e(t(k)) for k in ("col.category", "col.state", "col.score", "col.pass",
                                                                       "col.fail", "col.unknown")], rows, ""))
    for b in rep.get("buildings") or []:
        bs = b.get("summary") or {}
        out.append(f'<section class="rep-b" aria-labelledby="rb-{e(b["id"])}"><h2 id="rb-{e(b["id"])}">'
                   f'{e(t("col.building"))} {e(b.get("name") or b["id"])} {status_badge(ctx, bs.get("status"))}</h2>')
        checks = list(b.get("checks") or []) + [c for r in b.get("rooms") or [] for c in r.get("checks") or []]
        rows = [[status_badge(ctx, c.get("status")), e(t.opt("check." + c["check"], c.get("title") or c["check"])),
                 e(c.get("ref")), e(c.get("room")), e(c.get("subject")), e(t.message(c))] for c in checks]
        out.append(table(e(t("reports.checks", b=b["id"])), [e(t(k)) for k in ("col.state", "col.check", "col.ref",
                                                                              "col.room", "col.subject", "col.detail")],
                         rows, t("reports.none"), cls="report"))
        out.append("</section>")
    return "".join(out)


REPORT_CSV_COLS = ("building", "room", "check", "title", "ref", "status", "severity", "subject", "message")


def report_csv(ctx: Ctx, rep: dict) -> str:
    import csv
    import io
    t = ctx.t
    from ..compliance import report as rp
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([t("csv." + c) for c in REPORT_CSV_COLS])
    for c in rp.all_checks(rep):
        w.writerow([c.get("building"), c.get("room"), c.get("check"),
                    t.opt("check." + c["check"], c.get("title") or c["check"]), c.get("ref"),
                    t("status." + (c.get("status") or "unknown")), t("sev." + (c.get("severity") or "info")),
                    c.get("subject"), t.message(c)])
    return buf.getvalue()
