"""``/console``, the old security-office console: its live alert list, pinned critical alerts, beep,
filters and detail panel are now the web UI's ``/ui/alerts`` (collector/ui). The path stays for
bookmarks and answers with a redirect there (a person logs in to the UI; the API tokens the console
asked for still work for the API)."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import RedirectResponse


def router() -> APIRouter:
    r = APIRouter(tags=["console"], include_in_schema=False)

    @r.get("/console")
    @r.get("/console/")
    def console():
        return RedirectResponse("/ui/alerts", 303)

    return r
