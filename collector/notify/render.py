"""Render a notification (the JSON payload stored in the outbox) as text or markdown."""
from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

_LABEL_ORDER = ("site", "building", "room", "device", "type")


def _ts(s: str | None, tz: str | None = None) -> str:
    """ISO timestamp -> ``2026-11-23 09:00:00 CST`` in the notification's display timezone."""
    if not s:
        return "?"
    try:
        d = datetime.fromisoformat(s.replace("Z", "+00:00"))
        z = ZoneInfo(tz) if tz else timezone.utc
    except (ValueError, KeyError):
        return s
    return d.astimezone(z).strftime("%Y-%m-%d %H:%M:%S %Z")


def _fmt_value(v) -> str:
    if v is None:
        return ""
    if float(v).is_integer():
        return str(int(v))
    return f"{v:.4g}"


def title(n: dict) -> str:
    c = n["counts"]
    if n["status"] == "firing":
        head = f"[FIRING:{c['firing']}]" + (f" [RESOLVED:{c['resolved']}]" if c["resolved"] else "")
    else:
        head = f"[RESOLVED:{c['resolved']}]"
    gl = n.get("group_labels") or {}
    if gl and "alert_id" not in gl:
        what = " ".join(f"{k}={v}" for k, v in gl.items() if k != "alert_id")
    else:
        a = n["alerts"][0] if n["alerts"] else {}
        lab = a.get("labels", {})
        what = a.get("rule", "") + (f" {lab['device']}" if lab.get("device") else "") + \
            (f" ({lab['building']})" if lab.get("building") else "")
    if n.get("repeat"):
        head += " [REPEAT]"
    return f"{head} {what}".strip()


def _where(a: dict) -> str:
    lab = a.get("labels", {})
    parts = [f"{k}: {lab[k]}" for k in _LABEL_ORDER if lab.get(k)]
    return " · ".join(parts)


def _extra_labels(a: dict) -> str:
    lab = a.get("labels", {})
    return ", ".join(f"{k}={v}" for k, v in sorted(lab.items()) if k not in _LABEL_ORDER)


def text(n: dict) -> str:
    """Plain text body (e-mail)."""
    lines = [title(n), ""]
    for status in ("firing", "resolved"):
        group = [a for a in n["alerts"] if a["status"] == status]
        if not group:
            continue
        lines.append(f"{status.upper()} ({len(group)}):")
        for a in group:
            lines.append(f"- [{a['severity'].upper()}] {a['rule']}: {a.get('summary') or '(no summary)'}")
            if a.get("description"):
                lines.append(f"  {a['description']}")
            w = _where(a)
            if w:
                lines.append(f"  {w}")
            ex = _extra_labels(a)
            if ex:
                lines.append(f"  labels: {ex}")
            lines.append(f"  started: {_ts(a.get('started_at'), n.get('display_timezone'))}"
                         + (f"  resolved: {_ts(a.get('ended_at'), n.get('display_timezone'))}" if status == "resolved" else "")
                         + (f"  value: {_fmt_value(a.get('value'))}" if a.get("value") is not None else "")
                         + ("  (acknowledged)" if a.get("acked") else ""))
            lines.append(f"  alert id: {a['id']}")
        lines.append("")
    lines.append(f"route: {n.get('route')}  group: {n.get('group_key')}")
    return "\n".join(lines) + "\n"


_WECOM_COLOR = {"critical": "warning", "warning": "comment", "info": "info"}


def _md_alerts(n: dict, limit_bytes: int, wecom: bool) -> str:
    out: list[str] = []
    size = 0
    shown = 0
    for a in n["alerts"]:
        if a["status"] == "resolved":
            sev = '<font color="info">RESOLVED</font>' if wecom else "**RESOLVED**"
        elif wecom:
            sev = f'<font color="{_WECOM_COLOR.get(a["severity"], "comment")}">{a["severity"].upper()}</font>'
        else:
            sev = f"**{a['severity'].upper()}**"
        block = [f"{'' if wecom else '- '}{sev} **{a['rule']}** {a.get('summary') or ''}".rstrip()]
        w = _where(a)
        details = [w] if w else []
        details.append(f"since {_ts(a.get('started_at'), n.get('display_timezone'))}")
        if a["status"] == "resolved":
            details.append(f"resolved {_ts(a.get('ended_at'), n.get('display_timezone'))}")
        if a.get("value") is not None:
            details.append(f"value {_fmt_value(a['value'])}")
        if a.get("acked"):
            details.append("acked")
        block.append(("> " if wecom else "  ") + " · ".join(details))
        s = "\n".join(block) + "\n"
        if size + len(s.encode()) > limit_bytes:
            break
        out.append(s)
        size += len(s.encode())
        shown += 1
    rest = len(n["alerts"]) - shown
    if rest:
        out.append(f"... and {rest} more\n")
    return "\n".join(out)


def wecom_markdown(n: dict, mention_users: list[str] = (), prefix: str = "") -> str:
    """WeCom robot markdown ``content`` (max 4096 bytes UTF-8)."""
    head = f"**{(prefix + ' ' if prefix else '') + title(n)}**\n"
    tail = "".join(f"<@{u}>" for u in mention_users)
    body = _md_alerts(n, 4096 - len(head.encode()) - len(tail.encode()) - 64, wecom=True)
    return (head + body + ("\n" + tail if tail else "")).strip()


def dingtalk_markdown(n: dict, at_mobiles: list[str] = (), at_user_ids: list[str] = (),
                      at_all: bool = False, prefix: str = "") -> tuple[str, str]:
    """DingTalk robot markdown -> (title, text). Mentions must appear in the text as @mobile."""
    t = (prefix + " " if prefix else "") + title(n)
    mentions = " ".join([f"@{m}" for m in at_mobiles] + [f"@{u}" for u in at_user_ids]
                        + (["@all"] if at_all else []))
    body = _md_alerts(n, 18000, wecom=False)
    text_ = f"#### {t}\n\n{body}" + (f"\n{mentions}" if mentions else "")
    return t[:64], text_.strip()
