"""HTTP routes for coverage / compliance (FastAPI), ready to mount on the collector API.

The router does not know where data comes from: ``provider()`` returns an
``Inputs`` (campus model, registry, observations snapshot, firmware catalog,
policy, optional CampusStore for history). The collector builds it from its
store; tests build it from fixtures. Auth is passed in as dependencies so the
collector can use its own ``require_role``::

    app.include_router(make_router(provider, read=[Depends(ALL)], write=[Depends(OPS)]), prefix="/api/v1")

Routes (under the prefix):
    GET  /compliance/coverage?building=&format=json|csv|html&lang=zh-CN|en
    GET  /compliance/report?building=&format=json|csv|html&lang=zh-CN|en
         (csv/html language: lang=, else the UI's language cookie, else Accept-Language, else en)
    GET  /compliance/buildings/{building}/health
    GET  /compliance/devices/{device_id}
    GET  /compliance/where?q=<mac|ip|serial|asset tag|device id>
    GET  /compliance/history?kind=coverage|compliance&building=&room=&device=&since=
    POST /compliance/snapshot      (compute both reports and append them to the history)
    POST /compliance/import        (only with ``importer``: re-import the configured campus files)

Optional hooks: ``alerts(building) -> int | None`` adds ``open_alerts`` to the building health;
``device_extra(device_id) -> dict | None`` adds collector-side detail (reachability, last poll,
recent events) under ``collector`` in the device detail; ``importer() -> dict`` serves
``POST /compliance/import``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from collector.campus.model import CampusModel, Registry
from collector.compliance import health, report
from collector.compliance.firmware import Catalog
from collector.compliance.inventory import where_is
from collector.compliance.observations import Observations
from collector.compliance.policy import Policy
from collector.ui.i18n import LANG_COOKIE, negotiate


@dataclass
class Inputs:
    campus: CampusModel
    registry: Registry
    obs: Observations
    catalog: Catalog
    policy: Policy
    store: Any = None          # collector.store.campus.CampusStore (history), optional


def record_snapshot(inp: Inputs) -> dict[str, Any]:
    """Compute coverage and compliance for the whole campus and append them to the history
    (for a periodic collector job). Returns both summaries."""
    cov = report.build_coverage_report(inp.campus, inp.obs, inp.policy)
    comp = report.build_compliance_report(inp.campus, inp.registry, inp.obs, inp.catalog, inp.policy)
    rows = 0
    if inp.store is not None:
        rows = inp.store.record_report(cov) + inp.store.record_report(comp)
    return {"coverage": cov["summary"], "compliance": comp["summary"], "history_rows": rows,
            "generated_at": cov["generated_at"]}


def _lang(request: Request, lang: str | None) -> str:
    """``lang=`` if given, else the UI's language cookie, else the browser's Accept-Language, else en."""
    return lang or negotiate(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"), "en")


def _render(rep: dict[str, Any], fmt: str, name: str, lang: str = "en") -> Response:
    body = report.render(rep, fmt, lang)
    if fmt == "html":
        return HTMLResponse(body)
    if fmt == "csv":
        return PlainTextResponse(body, media_type="text/csv; charset=utf-8",
                                 headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
    return Response(body, media_type="application/json")


def make_router(provider: Callable[[], Inputs], read: Sequence[Any] = (), write: Sequence[Any] = (),
                alerts: Callable[[str], int | None] | None = None,
                device_extra: Callable[[str], dict | None] | None = None,
                importer: Callable[[], dict] | None = None) -> APIRouter:
    r = APIRouter(prefix="/compliance", tags=["compliance"])

    def inputs(building: str | None = None) -> Inputs:
        inp = provider()
        if building and building not in inp.campus.buildings:
            raise HTTPException(404, f"unknown building {building!r}")
        return inp

    def with_history(rep: dict[str, Any], inp: Inputs) -> dict[str, Any]:
        if inp.store is not None:
            report.attach_history(rep, inp.store)
        return rep

    def in_scope(request: Request, inp: Inputs, building: str | None, rep: dict[str, Any]) -> dict[str, Any]:
        """A login scoped to sites/buildings (collector/ui/auth.py) gets its part of a campus report."""
        scope = getattr(request.state, "cs_scope", ())
        if not scope:
            return rep
        if building:
            b = inp.campus.buildings[building]
            if building not in scope and b.site not in scope:
                raise HTTPException(403, f"building {building!r} is outside your scope")
            return rep
        return report.restrict(rep, lambda b: b["id"] in scope or b.get("site") in scope)

    @r.get("/coverage", dependencies=list(read))
    def coverage(request: Request, building: str | None = None,
                 format: str = Query("json", pattern="^(json|csv|html)$"),
                 lang: str | None = Query(None, pattern="^(zh-CN|en)$")):
        inp = inputs(building)
        rep = in_scope(request, inp, building, report.build_coverage_report(inp.campus, inp.obs, inp.policy, building))
        return _render(with_history(rep, inp), format, f"coverage-{building or 'campus'}", _lang(request, lang))

    @r.get("/report", dependencies=list(read))
    def compliance(request: Request, building: str | None = None,
                   format: str = Query("json", pattern="^(json|csv|html)$"),
                   lang: str | None = Query(None, pattern="^(zh-CN|en)$")):
        inp = inputs(building)
        rep = in_scope(request, inp, building, report.build_compliance_report(
            inp.campus, inp.registry, inp.obs, inp.catalog, inp.policy, building))
        return _render(with_history(rep, inp), format, f"compliance-{building or 'campus'}",
                       _lang(request, lang))

    @r.get("/buildings/{building}/health", dependencies=list(read))
    def building_health(building: str):
        inp = inputs(building)
        out = health.building_health(building, inp.campus, inp.registry, inp.obs, inp.catalog, inp.policy,
                                     inp.store)
        if alerts is not None:
            n = alerts(building)
            if n is not None:
                out["open_alerts"] = n
        return JSONResponse(out)

    @r.get("/devices/{device_id}", dependencies=list(read))
    def device(device_id: str):
        inp = inputs()
        try:
            d = health.device_detail(device_id, inp.campus, inp.registry, inp.obs, inp.catalog, inp.policy,
                                     inp.store)
        except KeyError:
            raise HTTPException(404, f"unknown device {device_id!r}") from None
        if device_extra is not None:
            d["collector"] = device_extra(device_id)
        return JSONResponse(d)

    @r.get("/where", dependencies=list(read))
    def where(q: str = Query(..., min_length=1, max_length=200)):
        inp = inputs()
        return JSONResponse(where_is(q, inp.campus, inp.registry, inp.obs, inp.policy))

    @r.get("/history", dependencies=list(read))
    def history(kind: str | None = Query(None, pattern="^(coverage|compliance)$"), building: str | None = None,
                room: str | None = None, device: str | None = None,
                since: float | None = Query(None, ge=0, le=2**53 / 1000, description="epoch seconds"),
                limit: int = Query(500, ge=1, le=10000)):
        inp = provider()
        if inp.store is None:
            return JSONResponse([])
        return JSONResponse(inp.store.history(kind, building=building, room=room, device=device, since=since,
                                              limit=limit))

    @r.post("/snapshot", dependencies=list(write))
    def snapshot():
        return JSONResponse(record_snapshot(provider()))

    if importer is not None:
        @r.post("/import", dependencies=list(write))
        def import_files():
            return JSONResponse(importer())

    return r
