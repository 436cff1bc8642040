"""E-mail channel (smtplib in a worker thread: starttls / ssl / none, optional AUTH)."""
from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Literal

from pydantic import Field, model_validator

from .. import render
from .base import ChannelConfig, DeliveryError, Secret, StrList, channel_secret

TYPE = "smtp"


class Config(ChannelConfig):
    type: Literal["smtp"]
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    #: starttls (submission, 587), ssl (implicit TLS, 465) or none (local relay only)
    security: Literal["starttls", "ssl", "none"]
    username: str | None = None
    password: Secret | None = None
    #: allow AUTH over an unencrypted connection (security: none); for local test relays only
    insecure_auth: bool = False
    ca_file: str | None = None
    #: skip certificate verification (lab only)
    insecure_skip_verify: bool = False
    from_: str = Field(alias="from", min_length=3)
    to: StrList = Field(min_length=1)
    subject_prefix: str = "[campus-sense]"
    #: EHLO name (default: local host name)
    hello: str | None = None

    @model_validator(mode="after")
    def _auth(self):
        if self.username and not self.has_secret("password"):
            raise ValueError("username given: password, password_file or password_env is required")
        if self.has_secret("password") and not self.username:
            raise ValueError("password given without username")
        if self.username and self.security == "none" and not self.insecure_auth:
            raise ValueError("refusing SMTP AUTH without TLS: use security starttls/ssl "
                             "(or insecure_auth: true for a local relay)")
        return self


class Sender:
    """E-mail via smtplib in a worker thread (starttls / ssl / none, optional AUTH)."""

    def __init__(self, name: str, cfg: Config):
        self.name = name
        self.cfg = cfg

    def message(self, n: dict, delivery_id: int) -> EmailMessage:
        c = self.cfg
        m = EmailMessage()
        m["Subject"] = f"{c.subject_prefix} {n.get('title') or render.title(n)}".strip()
        m["From"] = c.from_
        m["To"] = ", ".join(c.to)
        m["Date"] = formatdate(localtime=False)
        m["Message-ID"] = make_msgid(domain=c.from_.rpartition("@")[2] or None)
        m["X-Campus-Sense-Delivery"] = str(delivery_id)
        m.set_content(render.text(n))
        return m

    def _context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.cfg.ca_file) if self.cfg.ca_file else ssl.create_default_context()
        if self.cfg.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _send_sync(self, msg: EmailMessage, password: str | None) -> None:
        c = self.cfg
        try:
            if c.security == "ssl":
                s = smtplib.SMTP_SSL(c.host, c.port, local_hostname=c.hello, timeout=c.timeout,
                                     context=self._context())
            else:
                s = smtplib.SMTP(c.host, c.port, local_hostname=c.hello, timeout=c.timeout)
            try:
                s.ehlo()
                if c.security == "starttls":
                    if not s.has_extn("starttls"):
                        raise DeliveryError(f"smtp {c.host}:{c.port} does not offer STARTTLS")
                    s.starttls(context=self._context())
                    s.ehlo()
                if c.username:
                    s.login(c.username, password or "")
                s.send_message(msg)
            finally:
                try:
                    s.quit()
                except (smtplib.SMTPException, OSError):
                    s.close()
        except DeliveryError:
            raise
        except smtplib.SMTPAuthenticationError as e:
            raise DeliveryError(f"smtp auth failed: {e.smtp_code} {_b(e.smtp_error)}", permanent=True) from None
        except smtplib.SMTPRecipientsRefused as e:
            raise DeliveryError(f"smtp recipients refused: {', '.join(e.recipients)}",
                                permanent=all(v[0] >= 500 for v in e.recipients.values())) from None
        except smtplib.SMTPResponseException as e:
            raise DeliveryError(f"smtp {e.smtp_code} {_b(e.smtp_error)}", permanent=e.smtp_code >= 500) from None
        except (smtplib.SMTPException, OSError, ssl.SSLError) as e:
            raise DeliveryError(f"smtp {c.host}:{c.port}: {type(e).__name__}: {e}") from None

    async def send(self, n: dict, delivery_id: int) -> None:
        pw = channel_secret(self.cfg, "password") if self.cfg.username else None
        await asyncio.to_thread(self._send_sync, self.message(n, delivery_id), pw)

    async def close(self) -> None:
        pass


def _b(x) -> str:
    return x.decode(errors="replace") if isinstance(x, bytes) else str(x)
