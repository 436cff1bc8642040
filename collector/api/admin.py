"""Admin API (mounted under /api/v1 by ``Alerting.mount``) and the audit helper every API change uses.

| endpoint | roles |
|---|---|
| GET /tokens · POST /tokens {role, name} (the token is shown once) · DELETE /tokens/{id or name} | admin |
| GET /audit?since=&until=&action=&limit=&format=json or csv | admin (CSV: 等保 evidence export) |

Every change made through the API - and the console, which is an API client sending
``X-Campus-Sense-Client: console`` - lands in the audit log (``collector/store/audit.py``): who
(token id, name, role), when, what (action, target), before/after as JSON, via (api | console).
"""
from __future__ import annotations

import io
import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel, Field

from .app import Principal, require_role
from .bounds import ms_query

ADMIN = require_role("admin")

#: header the console sends with every request (the audit log's ``via``)
CLIENT_HEADER = "X-Campus-Sense-Client"


def via_of(request: Request | None) -> str:
    h = request.headers.get(CLIENT_HEADER, "") if request is not None else ""
    return "console" if h.strip().lower() == "console" else "api"


class Auditor:
    """Names callers and records their changes in ``alerting.audit``."""

    def __init__(self, alerting):
        self.audit = alerting.audit
        self.store = alerting.store
        self._names: dict[int, str | None] = {}

    def actor(self, p: Principal) -> str:
        if p.user:                      # a person logged in to the web UI (collector/ui)
            return f"{p.user} ({p.role})"
        if p.token_id not in self._names:
            self._names[p.token_id] = self.store.token_name(p.token_id)
        n = self._names[p.token_id]
        return f"{n} ({p.role})" if n else f"{p.role}#{p.token_id}"

    def record(self, p: Principal, request: Request | None, action: str, target: str, before: Any = None,
               after: Any = None, detail: Any = None) -> dict:
        return self.audit.record(int(time.time() * 1000), self.actor(p), action, target, before, after,
                                 via=via_of(request), actor_token_id=p.token_id, actor_role=p.role, detail=detail)


class TokenBody(BaseModel):
    role: Literal["admin", "it", "security"]
    name: str | None = Field(None, max_length=200)


def router(alerting) -> APIRouter:
    store = alerting.store
    aud = Auditor(alerting)
    r = APIRouter(tags=["admin"])

    def token_row(ident: str) -> dict | None:
        for t in store.token_list():
            if str(t["id"]) == ident or (not ident.isdigit() and t["name"] == ident and t["revoked_ms"] is None):
                return t
        return None

    @r.get("/tokens", summary="API tokens (never the secret)")
    def tokens(p: Principal = Depends(ADMIN)) -> list[dict]:
        return store.token_list()

    @r.post("/tokens", status_code=201, summary="create a token; the secret is in this answer only")
    def token_create(body: TokenBody, request: Request, p: Principal = Depends(ADMIN)) -> dict:
        tid, secret = store.token_create(body.role, body.name)
        after = token_row(str(tid))
        aud.record(p, request, "token.create", f"token:{tid}", None, after)
        return {**(after or {"id": tid, "name": body.name, "role": body.role}), "token": secret}

    @r.delete("/tokens/{ident}", summary="revoke a token by id or name")
    def token_revoke(request: Request, ident: str = PathParam(max_length=200), p: Principal = Depends(ADMIN)) -> dict:
        before = token_row(ident)
        if before is None or before["revoked_ms"] is not None or not store.token_revoke(str(before["id"])):
            raise HTTPException(404, f"no active token {ident[:200]!r}")
        after = token_row(str(before["id"]))
        aud.record(p, request, "token.revoke", f"token:{before['id']}", before, after)
        return after or {}

    @r.get("/audit", summary="audit log: every change made through the API and the console (oldest first)",
           responses={200: {"content": {"text/csv": {}}}})
    def audit(since: int | None = ms_query(None, "epoch ms, inclusive"),
              until: int | None = ms_query(None, "epoch ms, exclusive"),
              action: str | None = Query(None, max_length=100), limit: int = Query(10_000, gt=0, le=100_000),
              format: Literal["json", "csv"] = "json", p: Principal = Depends(ADMIN)):
        if since is not None and until is not None and until <= since:
            raise HTTPException(400, "until must be after since")
        if format == "csv":
            buf = io.StringIO()
            alerting.audit.export_csv(buf, since, until)
            return Response(buf.getvalue().encode("utf-8-sig"), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": 'attachment; filename="audit.csv"'})
        return alerting.audit.entries(since, until, limit, action)

    return r
