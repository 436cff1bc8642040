"""HTML building blocks for the server-rendered pages: escaping, times in the campus time zone,
the page frame (landmarks, skip link, navigation, where-is search, language switch, user)."""
from __future__ import annotations

import html
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from .i18n import LANGS, T

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
           "Cache-Control": "no-store", "X-Frame-Options": "DENY"}


def e(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def q(v: Any) -> str:
    return urllib.parse.quote(str(v), safe="")


@dataclass
class Ctx:
    t: T
    tz: str
    path: str
    principal: Any = None
    csrf: str = ""
    display: str = ""
    extra_head: list[str] = field(default_factory=list)

    @property
    def lang(self) -> str:
        return self.t.lang

    def time(self, ms: int | float | None, seconds: bool = False) -> str:
        if ms is None:
            return "–"
        dt = datetime.fromtimestamp(ms / 1000, ZoneInfo(self.tz))
        return dt.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")

    def iso_time(self, iso: str | None) -> str:
        if not iso:
            return "–"
        try:
            dt = datetime.fromisoformat(iso.replace("Z", "+00:00"))
        except ValueError:
            return e(iso)
        return dt.astimezone(ZoneInfo(self.tz)).strftime("%Y-%m-%d %H:%M")

    def ago(self, ms: int | None, now_ms: int) -> str:
        if ms is None:
            return self.t("never")
        s = max(0, (now_ms - ms) / 1000)
        if s < 90:
            return self.t("ago.s", n=int(s))
        if s < 5400:
            return self.t("ago.m", n=int(s // 60))
        if s < 172800:
            return self.t("ago.h", n=int(s // 3600))
        return self.t("ago.d", n=int(s // 86400))


def status_badge(ctx: Ctx, status: str | None) -> str:
    s = status or "unknown"
    return f'<span class="badge st-{e(s.replace("/", ""))}">{e(ctx.t("status." + s))}</span>'


def table(caption: str, head: Iterable[str], rows: Iterable[Iterable[str]], empty: str, cls: str = "",
          row_attrs: list[str] | None = None) -> str:
    """``row_attrs``: per row, attributes for its ``<tr>`` (already escaped)."""
    rows = list(rows)
    if not rows:
        return f'<p class="empty">{e(empty)}</p>'
    th = "".join(f'<th scope="col">{h}</th>' for h in head)
    attrs = row_attrs or [""] * len(rows)
    body = "".join(f"<tr{a}>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r, a in zip(rows, attrs))
    return (f'<div class="table-wrap"><table class="{cls}"><caption>{caption}</caption>'
            f"<thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>")


def fmt_bps(v: Any) -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return "–"
    for unit, div in (("Gb/s", 1e9), ("Mb/s", 1e6), ("kb/s", 1e3)):
        if abs(v) >= div:
            return f"{v / div:.1f} {unit}"
    return f"{v:.0f} b/s"


def fmt_num(v: Any, digits: int = 1) -> str:
    if isinstance(v, bool):
        return "✓" if v else "✗"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return "–" if v is None else e(v)


NAV = (("campus", "/ui/", ("admin", "it", "security")), ("alerts", "/ui/alerts", ("admin", "it", "security")),
       ("agents", "/ui/agents", ("admin", "it")), ("reports", "/ui/reports/coverage", ("admin", "it")))


def page(ctx: Ctx, title: str, body: str, crumbs: list[tuple[str, str | None]] | None = None,
         scripts: tuple[str, ...] = (), head: str = "", bare: bool = False) -> str:
    t = ctx.t
    nav = ""
    user = ""
    search = ""
    if ctx.principal is not None and not bare:
        items = []
        for key, href, roles in NAV:
            if ctx.principal.role in roles:
                cur = ' aria-current="page"' if (ctx.path == href or (href != "/ui/" and ctx.path.startswith(
                    href.rsplit("/", 1)[0] if key == "reports" else href))) else ""
                items.append(f'<li><a href="{href}"{cur}>{e(t("nav." + key))}</a></li>')
        nav = f'<nav class="main-nav" aria-label="{e(t("nav.label"))}"><ul>{"".join(items)}</ul></nav>'
        search = (f'<form class="where" role="search" action="/ui/search" method="get">'
                  f'<label for="where-q">{e(t("search.label"))}</label>'
                  f'<input id="where-q" name="q" type="search" required maxlength="200" '
                  f'placeholder="{e(t("search.placeholder"))}" autocomplete="off">'
                  f'<button type="submit">{e(t("search.go"))}</button></form>')
        scope = (f' <span class="scope">{e(t("user.scope", scope=", ".join(ctx.principal.scope)))}</span>'
                 if ctx.principal.scope else "")
        user = (f'<div class="user"><span id="who">{e(ctx.display or ctx.principal.user)} '
                f'({e(t("role." + ctx.principal.role))})</span>{scope}'
                f'<form method="post" action="/ui/logout"><input type="hidden" name="csrf" value="{e(ctx.csrf)}">'
                f'<button type="submit" class="link">{e(t("logout"))}</button></form></div>')
    here = q(ctx.path)
    langs = "".join(
        f'<a href="/ui/lang/{code}?next={here}" lang="{code}" hreflang="{code}"'
        + (' aria-current="true"' if code == ctx.lang else "") + f'>{e(t("lang." + code))}</a>'
        for code in LANGS)
    bc = ""
    if crumbs:
        parts = []
        for i, (label, href) in enumerate(crumbs):
            last = i == len(crumbs) - 1
            parts.append(f'<li><a href="{e(href)}">{e(label)}</a></li>' if href and not last else
                         f'<li><span aria-current="page">{e(label)}</span></li>')
        bc = f'<nav class="crumbs" aria-label="{e(t("crumbs"))}"><ol>{"".join(parts)}</ol></nav>'
    js = "".join(f'<script src="/ui/static/{s}" defer></script>' for s in ("ui.js",) + scripts)
    return f"""<!doctype html>
<html lang="{e(ctx.lang)}" data-tz="{e(ctx.tz)}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{e(ctx.csrf)}">
<title>{e(title)} · {e(t("app"))}</title>
<link rel="stylesheet" href="/ui/static/ui.css">
{head}{js}
</head>
<body>
<a class="skip" href="#main">{e(t("skip"))}</a>
<header class="top">
<a class="brand" href="/ui/">{e(t("app"))}</a>
{nav}
{search}
<div class="prefs"><span class="langs" role="group" aria-label="{e(t("lang.label"))}">{langs}</span>{user}</div>
</header>
{bc}
<main id="main" tabindex="-1">
<h1>{e(title)}</h1>
{body}
</main>
<footer class="foot"><p>{e(t("footer.tz", tz=ctx.tz))} · <a href="/docs">{e(t("footer.api"))}</a></p></footer>
<script type="application/json" id="i18n">{js_strings(ctx)}</script>
</body>
</html>"""


#: catalog keys the browser script needs
JS_KEYS = ("graph.loading", "graph.nodata", "graph.error", "graph.in", "graph.out", "graph.in_errors",
           "graph.out_errors", "graph.summary", "dialog.failed", "dialog.cancel", "range.label",
           "alerts.live.connecting", "alerts.live.on", "alerts.live.reconnecting", "alerts.new_critical",
           "alerts.updated")


def js_strings(ctx: Ctx) -> str:
    import json
    d = {k: ctx.t(k) for k in JS_KEYS}
    return json.dumps(d, ensure_ascii=False).replace("<", "\\u003c")
