"""FastAPI routes exposing notification delivery state (mounted by collector/api).

    from collector.notify.api import router as notify_router
    app.include_router(notify_router(notifier), prefix="/api/notify")

GET  /status                      per-channel counts, last error, recent failures
GET  /deliveries?limit=&state=&channel=   newest first
POST /deliveries/{id}/retry       re-queue a failed delivery
"""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException, Path, Query


def router(notifier) -> APIRouter:
    r = APIRouter(tags=["notify"])

    @r.get("/status")
    def status() -> dict:
        return notifier.status()

    @r.get("/deliveries")
    def deliveries(limit: int = Query(100, ge=1, le=1000),
                   state: Literal["pending", "sent", "failed"] | None = None,
                   channel: str | None = None) -> list[dict]:
        return notifier.deliveries(limit, state, channel)

    @r.post("/deliveries/{delivery_id}/retry")
    def retry(delivery_id: int = Path(ge=1, le=2**63 - 1, description="delivery id (1..2**63-1)")) -> dict:
        if not notifier.retry(delivery_id):
            raise HTTPException(404, f"no failed delivery {delivery_id}")
        return {"id": delivery_id, "state": "pending"}

    return r
