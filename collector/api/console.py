"""Security-office console: ``GET /console`` (one HTML page, one vanilla JS file, one CSS file,
served from ``collector/api/static``; no external CDN).

The page asks for an API token (kept in ``sessionStorage``), lists active alerts and keeps the
list live through ``/api/v1/alerts/stream`` (Server-Sent Events with a one-minute ticket), pins
critical alerts on top in red and beeps (WebAudio, mute toggle) when a new one fires. Filters by
building and severity; acknowledge / assign / silence (assign and silence in ``<dialog>``s); a detail panel with history and the
samples that fired the alert (inline SVG sparkline). What a role may do comes from ``/api/v1/me``.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC = Path(__file__).with_name("static")
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".html": "text/html; charset=utf-8"}
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'self'; style-src 'self'; script-src 'self'; "
                                       "connect-src 'self'; img-src 'self' data:"}


def router() -> APIRouter:
    r = APIRouter(tags=["console"], include_in_schema=False)

    @r.get("/console")
    def console():
        return FileResponse(STATIC / "console.html", media_type=_TYPES[".html"], headers=_HEADERS)

    @r.get("/console/static/{name}")
    def static(name: str):
        # no stat() of over-long names (ENAMETOOLONG escaped is_file(): a 500)
        p = STATIC / name if len(name) <= 100 and "/" not in name and not name.startswith(".") else None
        if p is None or p.suffix not in _TYPES or not p.is_file():
            raise HTTPException(404, f"no static file {name[:100]!r}")
        return FileResponse(p, media_type=_TYPES[p.suffix], headers=_HEADERS)

    return r
