"""Signed chat callbacks (no bearer token: the signature is the authentication), mounted under
/api/v1 by ``Alerting.mount``:

| endpoint | |
|---|---|
| GET /callbacks/wecom?msg_signature&timestamp&nonce&echostr | WeCom URL verification: the decrypted echostr |
| POST /callbacks/wecom?msg_signature&timestamp&nonce (XML with Encrypt) | button click / "ack <id>" text: acknowledge |
| POST /callbacks/dingtalk (headers timestamp, sign; robot message JSON) | "ack <id>" (actionCard button): acknowledge |

401 forged or stale, 409 replayed, 403 chat user not mapped, 404 no such channel configured.
A valid acknowledgement acks the alert as ``<mapped user> (wecom:<userid>)`` - in the alert's history
with who and when - and lands in the audit log (via wecom / dingtalk, before/after). An alert that
cannot be acknowledged (unknown, resolved) answers 200 with ``ok: false`` so the platform does not retry.
"""
from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import PlainTextResponse

from ..alertcore.model import AlertError
from ..notify.callbacks import MAX_BODY, Ack, CallbackError

log = logging.getLogger("collector.callbacks")


def router(alerting) -> APIRouter:
    r = APIRouter(tags=["callbacks"])

    def callbacks():
        cb = getattr(alerting, "callbacks", None)
        if cb is None:
            raise HTTPException(404, "notifications are not configured (no notify.yaml)")
        return cb

    async def body_of(request: Request) -> bytes:
        data = await request.body()
        if len(data) > MAX_BODY:
            raise HTTPException(413, f"callback body over {MAX_BODY} bytes")
        return data

    def acknowledge(ack: Ack) -> dict:
        eng = alerting.engine
        before = eng.alert(ack.alert_id)
        actor = f"{ack.user} ({ack.source}:{ack.chat_user})"
        try:
            after = eng.ack(ack.alert_id, actor, f"acknowledged in {ack.source}")
        except AlertError as e:
            log.info("%s callback: %s could not acknowledge alert %s: %s", ack.source, actor, ack.alert_id, e)
            return {"ok": False, "alert_id": ack.alert_id, "error": str(e)}
        alerting.audit.record(ack.t_ms, ack.user, "alert.ack", f"alert:{ack.alert_id}",
                              before.to_dict() if before else None, after.to_dict(), via=ack.source,
                              detail={"chat_user": ack.chat_user, "channel": ack.channel})
        return {"ok": True, "alert_id": ack.alert_id, "acked_by": after.acked_by, "acked_ms": after.acked_ms}

    def fail(e: CallbackError):
        log.warning("callback refused (%d): %s", e.status, e)
        raise HTTPException(e.status, str(e))

    @r.get("/callbacks/wecom", response_class=PlainTextResponse, summary="WeCom callback URL verification")
    def wecom_verify(request: Request) -> str:
        try:
            return callbacks().wecom_verify_url(dict(request.query_params))
        except CallbackError as e:
            fail(e)

    @r.post("/callbacks/wecom", summary="WeCom application callback (template_card button, text 'ack <id>')")
    async def wecom(request: Request) -> dict:
        body = await body_of(request)
        try:
            ack = callbacks().wecom(dict(request.query_params), body)
        except CallbackError as e:
            fail(e)
        return acknowledge(ack) if ack is not None else {"ok": True, "ignored": True}

    @r.post("/callbacks/dingtalk", summary="DingTalk robot callback (actionCard button sends 'ack <id>')")
    async def dingtalk(request: Request) -> dict:
        body = await body_of(request)
        try:
            ack = callbacks().dingtalk({"timestamp": request.headers.get("timestamp"),
                                        "sign": request.headers.get("sign")}, body)
        except CallbackError as e:
            fail(e)
        if ack is None:
            return {"msgtype": "text", "text": {"content": "send 'ack <alert id>' to acknowledge"}}
        res = acknowledge(ack)
        txt = (f"Alert #{ack.alert_id} acknowledged by {ack.user}" if res["ok"]
               else f"Alert #{ack.alert_id}: {res['error']}")
        return {"msgtype": "text", "text": {"content": txt}, **res}

    return r
