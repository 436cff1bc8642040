"""Syslog archive API (store/syslog.py): ``GET /api/v1/syslog?host=&q=&since=&until=&limit=``.

Roles admin, it, security (like ``/events``). Newest first; ``host`` = the sender's hostname or the
campus device id; ``q`` = full-text terms (each a phrase of words, all required, case-insensitive:
``q=GigabitEthernet0/1 down``); ``severity`` = at most this syslog level (``err`` or 3: emerg..err);
``program``, ``mnemonic`` exact. Answer: ``{"lines": [...], "truncated": bool}``, each line
``{id, ts_ms, agent, device, host, facility, severity, program, mnemonic, msg, data}``.
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query

from .app import ALL
from .bounds import ms_query

#: most lines in one answer
SYSLOG_MAX = 10_000
_SEV = {"emerg": 0, "alert": 1, "crit": 2, "err": 3, "error": 3, "warning": 4, "warn": 4, "notice": 5, "info": 6,
        "debug": 7}


def router(store) -> APIRouter:
    r = APIRouter(tags=["syslog"], dependencies=[Depends(ALL)])

    @r.get("/syslog", summary="search the syslog archive (newest first)")
    def syslog(host: str | None = Query(None, max_length=256, description="sender hostname or device id"),
               q: str | None = Query(None, max_length=512, description="full-text terms, all required"),
               since: int | None = ms_query(None, "epoch ms, inclusive"),
               until: int | None = ms_query(None, "epoch ms, exclusive"),
               severity: str | None = Query(None, max_length=16, description="at most this level (name or 0..7)"),
               program: str | None = Query(None, max_length=256),
               mnemonic: str | None = Query(None, max_length=256),
               limit: int = Query(100, gt=0, le=SYSLOG_MAX, description=f"max lines (1..{SYSLOG_MAX})")) -> dict:
        if since is not None and until is not None and until <= since:
            raise HTTPException(400, f"until: must be after since ({until} <= {since})")
        sev: int | None = None
        if severity is not None:
            s = severity.strip().lower()
            sev = int(s) if s.isdigit() else _SEV.get(s)
            if sev is None or not 0 <= sev <= 7:
                raise HTTPException(422, f"severity: {severity!r} is not a syslog level (emerg..debug or 0..7)")
        f = getattr(store, "syslog", None)
        if f is None:
            raise HTTPException(501, "this store keeps no syslog archive")
        kw: dict[str, Any] = {"severity": sev, "program": program, "mnemonic": mnemonic}
        lines = f(host, q, since, until, limit, **kw)
        return {"lines": lines, "truncated": len(lines) >= limit}

    return r
