"""Routes of the web UI (mounted by ``collector.api.app.create_app`` through ``collector.ui.mount``).

| path | who |
|---|---|
| ``/`` | redirects to ``/ui/`` |
| ``GET/POST /ui/login``, ``POST /ui/logout`` | everyone (login form with its own CSRF token) |
| ``/ui/lang/{zh-CN,en}?next=`` | everyone: remembers the language in a cookie |
| ``/ui/`` campus, ``/ui/buildings/{id}``, ``/ui/devices/{id}``, ``/ui/devices/{id}/ports/{ifIndex}``, ``/ui/search?q=`` | admin, it, security |
| ``/ui/alerts?building=&severity=`` (live), ``/ui/alerts/{id}`` (detail), their fragments ``/ui/alerts/live``, ``/ui/alerts/{id}/live`` | admin, it, security (it: network alerts) |
| ``/ui/agents``, ``/ui/reports/{coverage,compliance}[.csv]`` | admin, it |
| ``/ui/static/...`` | everyone (CSS, JS, vendored uPlot / Swagger UI / ReDoc) |
| ``/docs``, ``/redoc`` | everyone (the OpenAPI spec is public, as before) |
"""
from __future__ import annotations

import mimetypes
import urllib.parse
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from . import data, pages
from .auth import Auth, LoginRefused
from .i18n import LANG_COOKIE, LANGS, T, negotiate
from .render import HEADERS, Ctx, page

STATIC = Path(__file__).with_name("static")
VENDOR = "/ui/static/vendor"
_STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".json": "application/json", ".png": "image/png", ".svg": "image/svg+xml",
                 ".txt": "text/plain; charset=utf-8", "": "text/plain; charset=utf-8"}


class NeedLogin(Exception):
    def __init__(self, url: str):
        self.url = url


async def _form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (login/logout forms; no multipart dependency)."""
    body = await request.body()
    if len(body) > 16384:
        raise HTTPException(413, "form too large")
    return {k: v[0] for k, v in urllib.parse.parse_qs(body.decode("utf-8", "replace"), max_num_fields=20).items()}


def _safe_next(v: str | None) -> str:
    v = v or "/ui/"
    if not v.startswith("/") or v.startswith("//") or "\\" in v or len(v) > 2000:
        return "/ui/"
    return v


def router(auth: Auth) -> APIRouter:
    r = APIRouter(include_in_schema=False)

    def lang_of(request: Request) -> T:
        return T(negotiate(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"),
                           auth.settings.default_lang))

    def ctx_of(request: Request, roles: tuple[str, ...] = ("admin", "it", "security")) -> Ctx:
        t = lang_of(request)
        s = auth.session(request)
        if s is None:
            nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise NeedLogin("/ui/login?next=" + urllib.parse.quote(nxt, safe=""))
        p = auth.principal_of(s["user"])
        c = Ctx(t=t, tz=auth.settings.timezone, path=request.url.path, principal=p, csrf=s["csrf"],
                display=s["user"].get("display_name") or s["user"]["name"])
        if p.role not in roles:
            raise HTTPException(403, t("forbidden.role", role=t("role." + p.role)))
        return c

    def html(body: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(body, status_code=status, headers=HEADERS)

    def not_found(c: Ctx, what: str) -> HTMLResponse:
        return html(page(c, c.t("notfound"), f'<p class="error">{pages.e(what)}</p>'), 404)

    @r.get("/")
    def root():
        return RedirectResponse("/ui/", 303)

    @r.get("/ui")
    def ui_root():
        return RedirectResponse("/ui/", 303)

    # ------------------------------------------------------------ login / logout / language
    @r.get("/ui/login")
    def login_form(request: Request, next: str | None = None):
        t = lang_of(request)
        if auth.session(request) is not None:
            return RedirectResponse(_safe_next(next), 303)
        resp = HTMLResponse("", headers=HEADERS)
        tok = auth.login_token(request, resp)
        c = Ctx(t=t, tz=auth.settings.timezone, path="/ui/login")
        resp.body = page(c, t("login.title"), pages.login(c, tok, _safe_next(next), None, auth.settings.ldap is not None),
                         bare=True).encode()
        resp.headers["content-length"] = str(len(resp.body))
        return resp

    @r.post("/ui/login")
    async def login(request: Request):
        t = lang_of(request)
        form = await _form(request)
        name, pw = str(form.get("username") or ""), str(form.get("password") or "")
        nxt = _safe_next(str(form.get("next") or ""))
        c = Ctx(t=t, tz=auth.settings.timezone, path="/ui/login")
        err, status = None, 200
        if not auth.login_token_ok(request, str(form.get("csrf") or "")):
            err, status = t("login.csrf"), 403
        else:
            try:
                user = auth.check_login(name, pw)
            except LoginRefused as ex:
                err = t("login.err." + ex.reason)
                status = {"locked": 429, "directory_down": 503}.get(ex.reason, 401)
            else:
                resp = RedirectResponse(nxt, 303)
                auth.start_session(request, resp, user)
                return resp
        resp = HTMLResponse("", status_code=status, headers=HEADERS)
        tok = auth.login_token(request, resp)
        resp.body = page(c, t("login.title"), pages.login(c, tok, nxt, err, auth.settings.ldap is not None),
                         bare=True).encode()
        resp.headers["content-length"] = str(len(resp.body))
        return resp

    @r.post("/ui/logout")
    async def logout(request: Request):
        s = auth.session(request)
        form = await _form(request)
        if s is not None and not auth.csrf_ok(request, s, str(form.get("csrf") or "")):
            raise HTTPException(403, "CSRF check failed")
        resp = RedirectResponse("/ui/login", 303)
        auth.logout(request, resp)
        return resp

    @r.get("/ui/lang/{code}")
    def set_lang(request: Request, code: str, next: str | None = None):
        if code not in LANGS:
            raise HTTPException(404, f"no language {code[:20]!r} (zh-CN, en)")
        resp = RedirectResponse(_safe_next(next), 303)
        resp.set_cookie(LANG_COOKIE, code, max_age=400 * 86400, samesite="strict", path="/",
                        secure=auth.secure(request))
        return resp

    # ------------------------------------------------------------ pages
    @r.get("/ui/")
    def campus(request: Request):
        c = ctx_of(request)
        return html(page(c, c.t("campus.title"), pages.campus(c, request.app, c.principal)))

    @r.get("/ui/buildings/{bid}")
    def building(request: Request, bid: str):
        c = ctx_of(request)
        if not any(b["id"] == bid for b in data.buildings(request.app, c.principal)):
            return not_found(c, c.t("notfound.building", id=bid))
        title = c.t("bld.title", id=bid)
        return html(page(c, title, pages.building(c, request.app, c.principal, bid),
                         crumbs=[(c.t("nav.campus"), "/ui/"), (title, None)]))

    def get_device(c: Ctx, request: Request, did: str) -> dict | None:
        d = next((x for x in data.devices(request.app, c.principal.scope) if x["id"] == did), None)
        return d

    @r.get("/ui/devices/{did}")
    def device(request: Request, did: str):
        c = ctx_of(request)
        d = get_device(c, request, did)
        if d is None:
            return not_found(c, c.t("notfound.device", id=did))
        crumbs = [(c.t("nav.campus"), "/ui/")]
        if d.get("building"):
            crumbs.append((c.t("bld.title", id=d["building"]), f"/ui/buildings/{urllib.parse.quote(d['building'])}"))
        crumbs.append((did, None))
        return html(page(c, c.t("dev.title", id=did), pages.device(c, request.app, c.principal, d), crumbs=crumbs,
                         scripts=("vendor/uplot/uPlot.iife.min.js", "graph.js"),
                         head=f'<link rel="stylesheet" href="{VENDOR}/uplot/uPlot.min.css">'))

    @r.get("/ui/devices/{did}/ports/{if_index}")
    def port(request: Request, did: str, if_index: str):
        c = ctx_of(request)
        d = get_device(c, request, did)
        if d is None:
            return not_found(c, c.t("notfound.device", id=did))
        iface = next((i for i in request.app.state.store.interfaces(did) if str(i["ifIndex"]) == if_index), None)
        name = iface["name"] if iface else if_index
        crumbs = [(c.t("nav.campus"), "/ui/")]
        if d.get("building"):
            crumbs.append((c.t("bld.title", id=d["building"]), f"/ui/buildings/{urllib.parse.quote(d['building'])}"))
        crumbs += [(did, f"/ui/devices/{urllib.parse.quote(did)}"), (str(name), None)]
        return html(page(c, c.t("port.title", device=did, port=name),
                         pages.port(c, request.app, c.principal, d, iface, if_index), crumbs=crumbs,
                         scripts=("vendor/uplot/uPlot.iife.min.js", "graph.js"),
                         head=f'<link rel="stylesheet" href="{VENDOR}/uplot/uPlot.min.css">'))

    @r.get("/ui/search")
    def search(request: Request, q: str = ""):
        c = ctx_of(request)
        q = q[:200]
        return html(page(c, c.t("search.title"), pages.search(c, request.app, c.principal, q)))

    @r.get("/ui/agents")
    def agents(request: Request):
        c = ctx_of(request, ("admin", "it"))
        return html(page(c, c.t("nav.agents"), pages.agent_table(c, data.agents_list(request.app, c.principal.scope),
                                                                  data.now_ms())))

    # ------------------------------------------------------------ alerts: live list, filters, detail
    def alert_ctx(request: Request) -> tuple[Ctx, dict]:
        c = ctx_of(request)
        sec = c.principal.role in ("admin", "security")
        return c, {"assign": sec, "resolve": sec, "silence": sec}

    def part_ctx(request: Request) -> tuple[Ctx, dict]:
        """For the fragments alerts.js fetches: 401 (not a redirect to the login form) once the session ended."""
        try:
            return alert_ctx(request)
        except NeedLogin:
            raise HTTPException(401, "not logged in (the session ended)") from None

    def fragment(body: str) -> HTMLResponse:
        return HTMLResponse(body, headers={**HEADERS, "X-Digest": pages.digest(body)})

    def alert_filter(building: str, severity: str) -> dict:
        return {"building": building[:200] or None, "severity": severity if severity in pages.SEVERITIES else None}

    @r.get("/ui/alerts")
    def alerts(request: Request, building: str = "", severity: str = ""):
        c, can = alert_ctx(request)
        body = pages.alerts(c, request.app, c.principal, can, alert_filter(building, severity))
        return html(page(c, c.t("nav.alerts"), body, scripts=("alerts.js",)))

    @r.get("/ui/alerts/live")
    def alerts_live(request: Request, building: str = "", severity: str = ""):
        c, can = part_ctx(request)
        return fragment(pages.alert_tables(c, request.app, c.principal, can, alert_filter(building, severity)))

    def alert_detail(request: Request, c: Ctx, alert_id: int) -> dict:
        if data.engine(request.app) is None or alert_id > 2**62:
            raise HTTPException(404, c.t("notfound.alert", id=alert_id))
        d = data.alert_detail(request.app, c.principal, alert_id)   # the API's answer (404, 403 for it)
        lb = d.get("labels") or {}
        if not data.in_scope(c.principal.scope, lb.get("building"), lb.get("site")):
            raise HTTPException(404, c.t("notfound.alert", id=alert_id))
        return d

    @r.get("/ui/alerts/{alert_id:int}")
    def alert_page(request: Request, alert_id: int):
        c, can = alert_ctx(request)
        d = alert_detail(request, c, alert_id)
        body = pages.alert_detail(c, d, can)
        title = c.t("alert.title", id=alert_id, rule=d["rule"])
        return html(page(c, title, '<p id="live-status" class="live" role="status" aria-live="polite" hidden></p>'
                                   '<div id="flash" role="status" aria-live="polite"></div>'
                                   f'<div id="alert-live" data-live="/ui/alerts/{alert_id}/live" data-alert-id="{alert_id}" '
                                   f'data-digest="{pages.digest(body)}">{body}</div>' + pages.dialogs(c),
                         crumbs=[(c.t("nav.alerts"), "/ui/alerts"), (title, None)], scripts=("alerts.js",)))

    @r.get("/ui/alerts/{alert_id:int}/live")
    def alert_live(request: Request, alert_id: int):
        c, can = part_ctx(request)
        return fragment(pages.alert_detail(c, alert_detail(request, c, alert_id), can))

    def report_of(request: Request, c: Ctx, kind: str, building: str | None):
        svc = data.compliance(request.app)
        if svc is None:
            raise HTTPException(404, c.t("reports.off"))
        if kind not in ("coverage", "compliance"):
            raise HTTPException(404, f"no report {kind[:40]!r}")
        from ..compliance import report as rp
        inp = svc.inputs()
        blds = [b for b in sorted(inp.campus.buildings) if data.in_scope(c.principal.scope, b,
                                                                         inp.campus.buildings[b].site)]
        if c.principal.scope and not building:
            building = blds[0] if blds else "\x00"
        if building and building not in blds:
            raise HTTPException(404, c.t("notfound.building", id=building))
        if kind == "coverage":
            rep = rp.build_coverage_report(inp.campus, inp.obs, inp.policy, building)
        else:
            rep = rp.build_compliance_report(inp.campus, inp.registry, inp.obs, inp.catalog, inp.policy, building)
        return rep, blds, building

    @r.get("/ui/reports/{kind}.csv")
    def report_csv(request: Request, kind: str, building: str | None = None):
        c = ctx_of(request, ("admin", "it"))
        rep, _, building = report_of(request, c, kind, building or None)
        body = "\ufeff" + pages.report_csv(c, rep)       # BOM: Excel opens UTF-8 Chinese correctly
        name = f"{kind}-{building or 'campus'}-{c.lang}.csv"
        return Response(body.encode("utf-8"), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"', **HEADERS})

    @r.get("/ui/reports/{kind}")
    def report(request: Request, kind: str, building: str | None = None):
        c = ctx_of(request, ("admin", "it"))
        rep, blds, building = report_of(request, c, kind, building or None)
        title = c.t("reports." + kind) + (f" · {building}" if building else "")
        return html(page(c, title, pages.report(c, rep, kind, building, blds), scripts=("report.js",)))

    # ------------------------------------------------------------ static + docs
    @r.get("/ui/static/{path:path}")
    def static(path: str):
        p = (STATIC / path).resolve() if len(path) <= 200 else None
        if p is None or not p.is_relative_to(STATIC.resolve()) or not p.is_file() or \
                any(part.startswith(".") for part in Path(path).parts) or p.suffix == ".map":
            raise HTTPException(404, "no such file")
        typ = _STATIC_TYPES.get(p.suffix) or mimetypes.guess_type(p.name)[0] or "application/octet-stream"
        return FileResponse(p, media_type=typ, headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    @r.get("/docs")
    def docs(request: Request):
        return get_swagger_ui_html(openapi_url=request.app.openapi_url, title=request.app.title + " · API",
                                   swagger_js_url=f"{VENDOR}/swagger-ui/swagger-ui-bundle.js",
                                   swagger_css_url=f"{VENDOR}/swagger-ui/swagger-ui.css",
                                   swagger_favicon_url="/ui/static/favicon.svg")

    @r.get("/redoc")
    def redoc(request: Request):
        return get_redoc_html(openapi_url=request.app.openapi_url, title=request.app.title + " · API",
                              redoc_js_url=f"{VENDOR}/redoc/redoc.standalone.js",
                              redoc_favicon_url="/ui/static/favicon.svg", with_google_fonts=False)

    return r
