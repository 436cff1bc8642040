"""Alert API (mounted under /api/v1 by ``collector.alerting.Alerting.mount``).

Roles (401 without/with a bad token, 403 wrong role or an alert the role may not see):
- security: sees every alert; ack/unack, assign, comment, resolve; silences.
- it: sees *network* alerts only (rules labelled ``category: network``, rules on the
  measurements interface/agent_poll/system/agent, link events, agent_offline); ack/unack and
  comment those.
- admin: everything, and the only role that may ``PUT /rules``.

Every change (alert actions, silences, maintenance windows, rule files) is recorded in the audit
log with the caller, before and after (``admin.py``: ``GET /audit``).

| endpoint | roles |
|---|---|
| GET /me | all |
| GET /alerts?state=&severity=&building=&rule=&device=&acked=&limit= | all (it: network) |
| GET /alerts/export.csv (same filters) | all (it: network; a scoped login: its sites/buildings) |
| GET /alerts/history.csv?alert_id=&since_ms= (audit: transitions and every human action) | all (it: network) |
| GET /alerts/{id} (alert, history, samples/events that fired it) | all (it: network) |
| POST /alerts/{id}/ack {comment, expires_ms} · /unack · /comment {text} | all (it: network) |
| POST /alerts/{id}/assign {assignee} · /resolve {comment} · /escalate {comment} | admin, security |
| GET /silences · POST /silences {matchers, comment, duration_ms or ends_ms} · DELETE /silences/{id} | GET all; admin, security |
| GET /maintenance · POST /maintenance {name, matchers, schedule, collect, comment} · DELETE /maintenance/{name} | GET all; admin, security |
| GET /rules · PUT /rules (YAML body; ?file=) | GET all; PUT admin |
| POST /alerts/stream/ticket | all (a token, or a UI session with its CSRF token): a one-minute ticket for the stream URL |
| GET /alerts/stream?ticket= or ?token= or Authorization header | all: Server-Sent Events (it: network alerts; a scoped session: its sites/buildings) |
| GET /notifications/status · /notifications/deliveries · POST /notifications/deliveries/{id}/retry | all; retry admin, it |
| GET /alerting/stats | admin, it |
"""
from __future__ import annotations

import asyncio
import io
import secrets
import threading
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from campus_sense.yamlconf import ConfigError

from ..alertcore.maintenance import MaintenanceSpec
from ..alertcore import AlertError, export_alerts_csv, export_history_csv
from ..store.base import SeriesQueryUnsupported
from ..store.budget import SeriesBudgetExceeded
from .admin import Auditor
from .app import Principal, in_scope, require_role
from .bounds import id_path, id_query, ms_field, ms_query

ALL = require_role("admin", "it", "security")
SEC = require_role("admin", "security")
ADMIN = require_role("admin")
OPS = require_role("admin", "it")


AlertId = Annotated[int, id_path("alert id")]
SilenceId = Annotated[int, id_path("silence id")]
#: free text (comments) and names stored with alerts/silences: bounded like every other input
TEXT_MAX = 10_000
NAME_MAX = 200


class AckBody(BaseModel):
    comment: str = Field("", max_length=TEXT_MAX)
    expires_ms: int | None = ms_field(None, "the ack lapses at this epoch ms")


class CommentBody(BaseModel):
    text: str = Field(min_length=1, max_length=TEXT_MAX)


class AssignBody(BaseModel):
    assignee: str | None = Field(None, max_length=NAME_MAX)
    comment: str = Field("", max_length=TEXT_MAX)


class ResolveBody(BaseModel):
    comment: str = Field("", max_length=TEXT_MAX)


class SilenceBody(BaseModel):
    matchers: list[str] | dict[str, str] = Field(description='e.g. ["building=A", "rule=~door.*"]', max_length=100)
    comment: str = Field("", max_length=TEXT_MAX)
    starts_ms: int | None = ms_field(None, "epoch ms (default now)")
    ends_ms: int | None = ms_field(None, "epoch ms")
    duration_ms: int | None = ms_field(None, "ms", gt_zero=True)


def _rule_texts(alerting) -> dict[str, str | None]:
    """Rule file texts for the audit log's before/after."""
    out: dict[str, str | None] = {}
    for f in alerting.rule_files():
        try:
            out[str(f)] = f.read_text(encoding="utf-8")
        except OSError:
            out[str(f)] = None
    return out


def _now() -> int:
    return int(time.time() * 1000)


def router(alerting) -> APIRouter:
    engine = alerting.engine
    store = alerting.store
    r = APIRouter(tags=["alerts"])
    tickets: dict[str, tuple[Principal, int]] = {}
    tlock = threading.Lock()
    aud = Auditor(alerting)
    actor = aud.actor

    def visible(p: Principal, a) -> bool:
        return p.role != "it" or alerting.is_network(a)

    def adict(a) -> dict:
        d = a.to_dict()
        d["acked"] = a.acked
        d["network"] = alerting.is_network(a)
        return d

    def get_alert(p: Principal, alert_id: int):
        a = engine.alert(alert_id)
        if a is None:
            raise HTTPException(404, f"no alert {alert_id}")
        if not visible(p, a):
            raise HTTPException(403, f"role {p.role!r} sees network alerts only; alert {alert_id} "
                                     f"(rule {a.rule}) is not one")
        return a

    def human(fn, *args, **kw):
        try:
            return adict(fn(*args, **kw))
        except AlertError as e:
            raise HTTPException(409, str(e)) from None

    def act(p: Principal, request: Request, action: str, alert_id: int, fn, *args, detail: Any = None) -> dict:
        """A human action on an alert, recorded in the audit log with the alert before and after."""
        before = adict(get_alert(p, alert_id))
        after = human(fn, alert_id, actor(p), *args)
        aud.record(p, request, f"alert.{action}", f"alert:{alert_id}", before, after, detail)
        return after

    def flt_of(state, severity, building, rule, device, acked, limit, p: Principal) -> dict:
        flt: dict[str, Any] = {"state": state if state != "active" else "active"}
        if state and "," in state:
            flt["state"] = state.split(",")
        for k, v in (("severity", severity), ("rule", rule)):
            if v:
                flt[k] = v.split(",") if "," in v else v
        if building:
            flt["building"] = building
        if device:
            flt["device"] = device
        if acked is not None:
            flt["acked"] = acked
        if p.role == "it":
            allowed = sorted(alerting.network_rules)
            want = flt.get("rule")
            if want is not None:
                want = [want] if isinstance(want, str) else want
                allowed = [x for x in want if x in alerting.network_rules]
            flt["rule"] = allowed or ["\x00none"]
        elif limit:
            flt["limit"] = limit
        return flt

    # ------------------------------------------------------------ who am I
    @r.get("/me", summary="role of the token and what it may do")
    def me(p: Principal = Depends(ALL)) -> dict:
        return {"role": p.role, "name": actor(p),
                "can": {"view": "network" if p.role == "it" else "all", "ack": True,
                        "assign": p.role in ("admin", "security"), "resolve": p.role in ("admin", "security"),
                        "silence": p.role in ("admin", "security"), "edit_rules": p.role == "admin"}}

    # ------------------------------------------------------------ alerts
    @r.get("/alerts", summary="alerts, newest first (default: active ones)")
    def alerts(state: str = Query("active", description="active | all | pending | firing | resolved (comma list)"),
               severity: str | None = None, building: str | None = None, rule: str | None = None,
               device: str | None = None, acked: bool | None = None,
               limit: int = Query(500, gt=0, le=10000), p: Principal = Depends(ALL)) -> list[dict]:
        try:
            out = engine.alerts(flt_of(state, severity, building, rule, device, acked, None if p.scope else limit, p))
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        if p.scope:   # a scoped login: the alerts of its sites/buildings
            out = [a for a in out if in_scope(p.scope, a.labels.get("building"), a.labels.get("site"))]
        return [adict(a) for a in out[:limit]]

    @r.get("/alerts/export.csv", summary="alerts as CSV (same filters as GET /alerts, default all states)",
           response_class=PlainTextResponse)
    def export(state: str = "all", severity: str | None = None, building: str | None = None,
               rule: str | None = None, device: str | None = None, acked: bool | None = None,
               p: Principal = Depends(ALL)) -> Response:
        buf = io.StringIO()
        try:
            export_alerts_csv(engine.store, buf, flt_of(state, severity, building, rule, device, acked, None, p),
                              keep=(lambda a: in_scope(p.scope, a.labels.get("building"), a.labels.get("site")))
                              if p.scope else None)     # a scoped login: the alerts of its sites/buildings
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        return Response(buf.getvalue(), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="alerts.csv"'})

    @r.get("/alerts/history.csv", summary="audit history (every transition and human action) as CSV",
           response_class=PlainTextResponse)
    def history_csv(alert_id: int | None = id_query(None, "alert id"), since_ms: int | None = ms_query(None),
                    p: Principal = Depends(ALL)) -> Response:
        if alert_id is not None:
            get_alert(p, alert_id)  # 404 / 403
        buf = io.StringIO()
        export_history_csv(engine.store, buf, alert_id=alert_id, since_ms=since_ms)
        text = buf.getvalue()
        if p.role == "it" and alert_id is None:  # network alerts only
            import csv
            rows = list(csv.reader(io.StringIO(text)))
            out = io.StringIO()
            w = csv.writer(out)
            w.writerow(rows[0])
            ri = rows[0].index("rule")
            w.writerows(x for x in rows[1:] if x[ri] in alerting.network_rules)
            text = out.getvalue()
        return Response(text, media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="alert-history.csv"'})

    # ------------------------------------------------------------ live stream
    @r.post("/alerts/stream/ticket", summary="one-minute ticket for GET /alerts/stream?ticket= (EventSource)")
    def ticket(p: Principal = Depends(ALL)) -> dict:
        t = secrets.token_urlsafe(24)
        exp = _now() + 60_000
        with tlock:
            now = _now()
            for k in [k for k, (_, e) in tickets.items() if e < now]:
                del tickets[k]
            tickets[t] = (p, exp)
        return {"ticket": t, "expires_ms": exp}

    def stream_principal(request: Request, ticket: str | None, token: str | None) -> Principal:
        if ticket:
            with tlock:
                got = tickets.pop(ticket, None)  # single use
            if got is None or got[1] < _now():
                raise HTTPException(401, "invalid or expired stream ticket")
            return got[0]
        cred = token
        h = request.headers.get("authorization", "")
        if not cred and h.lower().startswith("bearer "):
            cred = h[7:].strip()
        if not cred:
            raise HTTPException(401, "missing token (Authorization: Bearer, ?ticket= or ?token=)",
                                headers={"WWW-Authenticate": "Bearer"})
        found = store.token_role(cred)
        if found is None:
            raise HTTPException(401, "invalid or revoked token", headers={"WWW-Authenticate": "Bearer"})
        return Principal(*found)

    @r.get("/alerts/stream", summary="Server-Sent Events: one `alert` event per AlertChange",
           response_class=StreamingResponse)
    async def stream(request: Request, ticket: str | None = None, token: str | None = None,
                     heartbeat_s: float = Query(15, gt=0, le=300)):
        p = stream_principal(request, ticket, token)
        loop = asyncio.get_running_loop()
        def visible_to(a) -> bool:      # it: network alerts; a scoped UI session: its sites/buildings
            return (p.role != "it" or alerting.is_network(a)) and \
                in_scope(p.scope, a.labels.get("building"), a.labels.get("site"))
        accept = visible_to if p.role == "it" or p.scope else None
        sid, q = alerting.hub.subscribe(loop, accept)

        async def gen():
            try:
                yield f"event: hello\ndata: {{\"role\":\"{p.role}\"}}\n\n"
                while True:
                    try:
                        async with asyncio.timeout(heartbeat_s):
                            data = await q.get()
                    except asyncio.TimeoutError:
                        if await request.is_disconnected():
                            break
                        yield ": keepalive\n\n"
                        continue
                    yield f"event: alert\ndata: {data}\n\n"
            finally:
                alerting.hub.unsubscribe(sid)

        return StreamingResponse(gen(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # ------------------------------------------------------------ one alert
    @r.get("/alerts/{alert_id}", summary="alert with history and the samples/events that fired it")
    def alert(alert_id: AlertId, p: Principal = Depends(ALL)) -> dict:
        a = get_alert(p, alert_id)
        out = adict(a)
        out["history"] = [h.to_dict() for h in engine.history(alert_id)]
        out.update(evidence(a))
        return out

    def evidence(a) -> dict:
        m = next((x for x in engine.ruleset.rules if x.name == a.rule), None)
        device = a.labels.get("device")
        t0 = a.fired_ms or a.started_ms
        before = max(getattr(m, "for_", 0) or 0, 15 * 60_000) if m is not None else 15 * 60_000
        start = a.started_ms - before
        end = (a.resolved_ms or max(t0, a.updated_ms)) + 5 * 60_000
        res: dict[str, Any] = {"samples": None, "events": None, "evidence_window": [start, end]}
        if m is None or not device:
            return res
        meas = getattr(m, "measurement", None)
        if meas:
            field = getattr(m, "field", None)
            tags = (a.subject or {}).get("tags") or None
            try:
                series = store.series(meas, device, field, start, end, None, tags, 2000)
            except (SeriesQueryUnsupported, SeriesBudgetExceeded) as e:
                res["samples_error"] = str(e)
                series = []
            thr = getattr(m, "value", None)
            res["samples"] = {"measurement": meas, "field": field, "series": series,
                              "threshold": thr if isinstance(thr, (int, float)) and not isinstance(thr, bool)
                              and m.kind == "threshold" else None}
        events = getattr(m, "event", None)
        if events:
            evs = []
            for typ in list(events) + list(getattr(m, "clear_event", None) or []):
                evs += store.events(device, start, end, None, typ, 200)
            evs.sort(key=lambda e: e.get("ts_ms", 0))
            res["events"] = evs
        return res

    @r.post("/alerts/{alert_id}/ack")
    def ack(alert_id: AlertId, request: Request, body: AckBody = Body(default_factory=AckBody),
            p: Principal = Depends(ALL)) -> dict:
        return act(p, request, "ack", alert_id, engine.ack, body.comment, body.expires_ms, detail=body.model_dump())

    @r.post("/alerts/{alert_id}/unack")
    def unack(alert_id: AlertId, request: Request, body: ResolveBody = Body(default_factory=ResolveBody),
              p: Principal = Depends(ALL)) -> dict:
        return act(p, request, "unack", alert_id, engine.unack, body.comment, detail=body.model_dump())

    @r.post("/alerts/{alert_id}/comment")
    def comment(alert_id: AlertId, body: CommentBody, request: Request, p: Principal = Depends(ALL)) -> dict:
        return act(p, request, "comment", alert_id, engine.comment, body.text, detail=body.model_dump())

    @r.post("/alerts/{alert_id}/assign")
    def assign(alert_id: AlertId, body: AssignBody, request: Request, p: Principal = Depends(SEC)) -> dict:
        return act(p, request, "assign", alert_id, engine.assign, body.assignee or None, body.comment,
                   detail=body.model_dump())

    @r.post("/alerts/{alert_id}/resolve")
    def resolve(alert_id: AlertId, request: Request, body: ResolveBody = Body(default_factory=ResolveBody),
                p: Principal = Depends(SEC)) -> dict:
        return act(p, request, "resolve", alert_id, engine.resolve, body.comment, detail=body.model_dump())

    @r.post("/alerts/{alert_id}/escalate", summary="raise an active alert to critical by hand")
    def escalate(alert_id: AlertId, request: Request, body: ResolveBody = Body(default_factory=ResolveBody),
                 p: Principal = Depends(SEC)) -> dict:
        return act(p, request, "escalate", alert_id, engine.escalate, body.comment, detail=body.model_dump())

    # ------------------------------------------------------------ silences
    @r.get("/silences")
    def silences(active: bool = False, p: Principal = Depends(ALL)) -> list[dict]:
        return [s.to_dict() for s in engine.silence_list(active_only=active)]

    @r.post("/silences", status_code=201)
    def silence_create(body: SilenceBody, request: Request, p: Principal = Depends(SEC)) -> dict:
        try:
            s = engine.silence_create(body.matchers, actor(p), body.comment, starts_ms=body.starts_ms,
                                      ends_ms=body.ends_ms, duration_ms=body.duration_ms)
        except (AlertError, ValueError) as e:
            raise HTTPException(400, str(e)) from None
        out = s.to_dict()
        aud.record(p, request, "silence.create", f"silence:{s.id}", None, out)
        return out

    @r.delete("/silences/{silence_id}")
    def silence_expire(silence_id: SilenceId, request: Request, p: Principal = Depends(SEC)) -> dict:
        before = next((x.to_dict() for x in engine.silence_list() if x.id == silence_id), None)
        try:
            out = engine.silence_expire(silence_id, actor(p)).to_dict()
        except (AlertError, ValueError, KeyError) as e:
            raise HTTPException(404, str(e)) from None
        aud.record(p, request, "silence.expire", f"silence:{silence_id}", before, out)
        return out

    # ------------------------------------------------------------ maintenance windows (recurring)
    @r.get("/maintenance", summary="maintenance windows (rules.yaml: source rules; made here: source api), "
                                   "open now, collect false = data gaps expected")
    def maintenance(p: Principal = Depends(ALL)) -> list[dict]:
        return engine.maintenance_list()

    @r.post("/maintenance", status_code=201,
            summary="a recurring maintenance window: schedule = a rules.yaml calendar name or an inline calendar")
    def maintenance_create(body: MaintenanceSpec, request: Request, p: Principal = Depends(SEC)) -> dict:
        try:
            out = engine.maintenance_create(body.name, body.matchers, body.schedule, actor(p), body.collect,
                                            body.comment)
        except AlertError as e:
            raise HTTPException(409 if "already exists" in str(e) or "rules.yaml" in str(e) else 400,
                                str(e)) from None
        aud.record(p, request, "maintenance.create", f"maintenance:{body.name}", None, out)
        return out

    @r.delete("/maintenance/{name}")
    def maintenance_delete(request: Request, name: str = PathParam(max_length=128),
                           p: Principal = Depends(SEC)) -> dict:
        try:
            before = engine.maintenance_delete(name, actor(p))
        except AlertError as e:
            raise HTTPException(409 if "rules.yaml" in str(e) else 404, str(e)) from None
        aud.record(p, request, "maintenance.delete", f"maintenance:{name}", before, None)
        return before

    # ------------------------------------------------------------ rules
    @r.get("/rules")
    def rules(p: Principal = Depends(ALL)) -> dict:
        files = []
        for f in alerting.rule_files():
            try:
                text = f.read_text(encoding="utf-8") if p.role == "admin" else None
            except OSError as e:
                text = f"# cannot read: {e.strerror}"
            files.append({"path": str(f), "text": text})
        return {"files": files,
                "rules": [{"name": m.name, "kind": m.kind, "severity": m.severity, "enabled": m.enabled,
                           "network": m.name in alerting.network_rules, "labels": m.labels,
                           "summary": m.summary} for m in engine.ruleset.rules]}

    @r.put("/rules", summary="replace a rule file (YAML body), validate, write, reload the engine")
    async def put_rules(request: Request, file: str | None = None, p: Principal = Depends(ADMIN)) -> dict:
        raw = await request.body()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPException(400, "rule file must be UTF-8 YAML") from None
        before = {"rules": sorted(m.name for m in engine.ruleset.rules), "files": _rule_texts(alerting)}
        try:
            rs = await asyncio.to_thread(alerting.replace_rules, text, file)
        except ConfigError as e:
            raise HTTPException(422, str(e)) from None
        except FileNotFoundError as e:
            raise HTTPException(404, str(e)) from None
        after = {"rules": sorted(m.name for m in rs.rules), "files": _rule_texts(alerting)}
        aud.record(p, request, "rules.replace", f"rules:{file or 'default'}", before, after)
        return {"ok": True, "rules": len(rs.rules), "by": actor(p)}

    # ------------------------------------------------------------ notifications / stats
    n = alerting.notifier
    if n is not None:
        from ..notify.api import router as notify_router
        nr = notify_router(n)
        # status/deliveries for everyone who sees alerts; retry for admin/it
        for route in nr.routes:
            path = getattr(route, "path", "")
            deps = [Depends(OPS)] if path.endswith("/retry") else [Depends(ALL)]
            r.add_api_route("/notifications" + path, route.endpoint, methods=list(route.methods),
                            dependencies=deps, tags=["notify"])
    else:
        @r.get("/notifications/status")
        def notifications_off(p: Principal = Depends(ALL)) -> dict:
            return {"enabled": False, "running": False, "channels": {}}

        @r.get("/notifications/deliveries")
        def deliveries_off(p: Principal = Depends(ALL)) -> list[dict]:
            return []

    @r.get("/alerting/stats", summary="engine queue, drops, SSE clients")
    def stats(p: Principal = Depends(OPS)) -> dict:
        return alerting.snapshot()

    _ = Literal
    return r
