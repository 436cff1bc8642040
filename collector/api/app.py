"""FastAPI app: read API under /api/v1 with bearer tokens (roles admin|it|security).

``create_app(store, ingest=None, offline_after_s=180)`` returns the app; other
parts (alert engine) add routers with ``app.include_router(router, prefix="/api/v1")``
and protect them with ``Depends(require_role("admin", "it"))``. The store and
ingest are on ``app.state.store`` / ``app.state.ingest``.

Access (403 for a valid token of another role):
- ``/health``: no auth
- ``/agents``, ``/ingest/stats``: admin, it
- ``/devices``, ``/devices/{id}``, ``/devices/{id}/interfaces``, ``/series``, ``/events``: admin, it, security
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from campus_sense import __version__

from ..store.base import SeriesBackendError, SeriesQueryUnsupported
from ..store.budget import SERIES_MAX_ROWS, SERIES_MAX_POINTS, SERIES_MAX_VALUES, SeriesBudgetExceeded
from .bounds import MAX_MS, ms_query

#: /events answers at most this many events (the newest first)
EVENTS_MAX = 10_000

_bearer = HTTPBearer(auto_error=False, description="token from `campus-sense collector token create`")


#: what /health shows without a token of the disk budget (numbers only, never a path)
_DISK_PUBLIC = ("usage_bytes", "budget_bytes", "free_bytes", "growth_bytes_per_day", "days_to_full",
                "enforced_total", "over_warn")


def _disk(store, detail: bool = False) -> dict | None:
    """The store's disk budget (store/disk.py), None for a store without one."""
    f = getattr(store, "disk_status", None)
    if f is None:
        return None
    try:
        d = f()
    except Exception:  # noqa: BLE001 - health must answer
        return None
    return d if detail else {k: d.get(k) for k in _DISK_PUBLIC}


@dataclass(frozen=True)
class Principal:
    token_id: int
    role: str
    #: a person logged in to the UI (collector/ui/auth.py; token_id is then -user id), else None
    user: str | None = None
    #: sites/buildings a UI user is limited to (empty: the whole campus)
    scope: tuple[str, ...] = ()


def request_scope(request: Request) -> tuple[str, ...]:
    """Sites/buildings the caller is limited to: a scoped UI session (collector/ui/auth.py sets it);
    API tokens and unscoped people: () = the whole campus."""
    return getattr(request.state, "cs_scope", ())


def in_scope(scope: tuple[str, ...], building: str | None, site: str | None = None) -> bool:
    return not scope or building in scope or (site is not None and site in scope)


def scoped(scope: tuple[str, ...], rows: list[dict]) -> list[dict]:
    """Rows (with ``building``/``site``) a scoped caller may see; campus-wide lists are filtered, not refused."""
    return rows if not scope else [r for r in rows if in_scope(scope, r.get("building"), r.get("site"))]


def _principal(request: Request, cred: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
    if cred is None or cred.scheme.lower() != "bearer" or not cred.credentials:
        ui = getattr(request.app.state, "ui_auth", None)   # a person's UI session cookie (collector/ui)
        p = ui.principal(request) if ui is not None else None
        if p is not None:
            return p
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    found = request.app.state.store.token_role(cred.credentials)
    if found is None:
        raise HTTPException(401, "invalid or revoked token", headers={"WWW-Authenticate": "Bearer"})
    return Principal(*found)


def require_role(*roles: str):
    """Dependency: a valid token whose role is one of ``roles`` (401 / 403 otherwise)."""
    def dep(p: Principal = Depends(_principal)) -> Principal:
        if p.role not in roles:
            raise HTTPException(403, f"role {p.role!r} may not use this endpoint (needs one of {', '.join(roles)})")
        return p
    return dep


OPS = require_role("admin", "it")
ALL = require_role("admin", "it", "security")


def _parse_tags(tags: str | None) -> dict[str, str] | None:
    if not tags:
        return None
    out = {}
    for part in tags.split(","):
        k, sep, v = part.partition("=")
        if not sep or not k:
            raise HTTPException(400, f"tags: {part!r} is not key=value (use tags=ifName=Gi0/1,role=core)")
        out[k] = v
    return out


def create_app(store, ingest=None, offline_after_s: float = 180.0, title: str = "campus-sense collector") -> FastAPI:
    # /docs and /redoc come from collector/ui with vendored assets (no CDN)
    app = FastAPI(title=title, version=__version__, docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    app.state.store = store
    app.state.ingest = ingest
    app.state.offline_after_s = offline_after_s
    r = APIRouter(prefix="/api/v1")

    @r.get("/health", summary="liveness: 200 when ingest commits, 503 while it is stalled (no auth)",
           responses={503: {"description": "ingest stalled (store unavailable) or broker unreachable"}})
    def health(response: Response) -> dict[str, Any]:
        ing = app.state.ingest
        ok, why = ing.health() if ing is not None else (True, None)
        if not ok:
            response.status_code = 503
        # no client ids or other session details without a token: they let a client take over a session
        return {"ok": ok, "reason": why, "version": __version__,
                "ingest": ing.snapshot(detail=False) if ing is not None else None,
                "counters": dict(store.counters), "disk": _disk(store)}

    @r.get("/agents", dependencies=[Depends(OPS)], summary="agents: online/offline, last seen, queue, gaps")
    def agents(request: Request) -> list[dict]:
        return scoped(request_scope(request), store.agents(int(time.time() * 1000), app.state.offline_after_s))

    @r.get("/devices", dependencies=[Depends(ALL)], summary="devices: facts, reachability, last poll")
    def devices(request: Request) -> list[dict]:
        return scoped(request_scope(request), store.devices())

    @r.get("/devices/{device_id}", dependencies=[Depends(ALL)])
    def device(device_id: str) -> dict:
        d = store.device(device_id)
        if d is None:
            raise HTTPException(404, f"unknown device {device_id!r}")
        return d

    @r.get("/devices/{device_id}/interfaces", dependencies=[Depends(ALL)],
           summary="latest interface values (name, speed, admin/oper, rates)")
    def interfaces(device_id: str) -> list[dict]:
        if store.device(device_id) is None:
            raise HTTPException(404, f"unknown device {device_id!r}")
        return store.interfaces(device_id)

    @r.get("/series", dependencies=[Depends(ALL)], summary="time-series query, optional aggregate per step",
           description=f"Budget: at most `limit` (<= {SERIES_MAX_POINTS:,}) points per answer (more: truncated, "
                       f"`truncated: true` on the last series), at most {SERIES_MAX_VALUES:,} values (a point "
                       f"without `field` counts one per field) and {SERIES_MAX_ROWS:,} stored rows read "
                       "(a raw sample or a rollup bucket of one series); beyond those 413: narrow the query. "
                       "With `step`, the coarsest rollup level (5m, 1h, 1d) whose resolution divides the step and "
                       "whose retention covers `start` is read (`resolution` in each series); raw samples only "
                       "for steps under 5 minutes.",
           responses={413: {"description": "over the series budget; the detail says how to narrow the query"}})
    def series(measurement: str, device: str | None = None, field: str | None = None,
               start: int | None = ms_query(None, "epoch ms, inclusive"),
               end: int | None = ms_query(None, "epoch ms, exclusive"),
               step: int | None = Query(None, gt=0, le=MAX_MS, description="bucket width in ms: one point per bucket"),
               agg: Literal["avg", "min", "max", "last", "sum", "count", "rate", "increase"] = Query(
                   "avg", description="per bucket (with step): rate and increase for counters (per second / "
                                      "total, across 32-bit wraps and device restarts)"),
               tags: str | None = Query(None, description="filter k=v,k2=v2"),
               limit: int = Query(10000, gt=0, le=SERIES_MAX_POINTS, description="max points in the answer")):
        if start is not None and end is not None and end <= start:
            raise HTTPException(400, "end must be after start")
        try:
            res = store.series(measurement, device, field, start, end, step, _parse_tags(tags), limit, agg)
        except SeriesQueryUnsupported as e:
            raise HTTPException(501, str(e)) from None
        except SeriesBackendError as e:
            raise HTTPException(503, str(e)) from None
        except SeriesBudgetExceeded as e:
            raise HTTPException(413, str(e)) from None
        except ValueError as e:      # e.g. agg=rate on a field that is not a counter
            raise HTTPException(400, str(e)) from None
        # orjson straight to bytes: no second copy of a large answer through jsonable_encoder
        return Response(orjson.dumps({"measurement": measurement, "start": start, "end": end, "step": step,
                                      "agg": agg, "series": res}), media_type="application/json")

    @r.get("/events", dependencies=[Depends(ALL)])
    def events(request: Request, device: str | None = None, since: int | None = ms_query(None, "epoch ms, inclusive"),
               until: int | None = ms_query(None, "epoch ms, exclusive"),
               severity: str | None = None, type: str | None = None,
               limit: int = Query(500, gt=0, le=EVENTS_MAX, description="max events (newest first)")) -> list[dict]:
        scope = request_scope(request)
        if not scope or device is not None:   # one device: its scope was checked (collector/ui/auth.py)
            return store.events(device, since, until, severity, type, limit)
        mine = {d["id"] for d in scoped(scope, store.devices())}
        mine |= {a["id"] for a in scoped(scope, store.agents(int(time.time() * 1000), app.state.offline_after_s))}
        rows = store.events(None, since, until, severity, type, EVENTS_MAX)
        return [e for e in rows if e["device"] in mine or e.get("agent") in mine][:limit]

    @r.get("/ingest/stats", dependencies=[Depends(OPS)], summary="rejected counts by reason, gaps, counters")
    def ingest_stats() -> dict:
        s = store.ingest_stats()
        ing = app.state.ingest
        s["ingest"] = ing.snapshot() if ing is not None else None
        s["disk"] = _disk(store, detail=True)
        return s

    app.include_router(r)
    from .topology import router as topology_router   # /topology/... (admin, it, security)
    app.include_router(topology_router(store), prefix="/api/v1")
    from .syslog import router as syslog_router       # /syslog: the syslog archive (admin, it, security)
    app.include_router(syslog_router(store), prefix="/api/v1")
    from ..ui import mount as mount_ui                 # web UI: /, /ui/..., /docs, /redoc (collector/ui)
    mount_ui(app)
    return app
