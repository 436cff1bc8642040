"""What every notification channel shares: the config base class (``ChannelConfig``: secrets,
send_resolved, timeout, retry), ``DeliveryError`` and the HTTP sender helpers.

A channel is one module in this package exposing ``TYPE`` (the ``type:`` value in notify.yaml),
``Config`` (a ``ChannelConfig`` subclass with ``type: Literal[TYPE]``) and ``Sender``
(``Sender(name, cfg)``; ``await send(notification, delivery_id)`` returns when the peer accepted the
message and raises ``DeliveryError`` otherwise, ``permanent=True`` when retrying cannot help;
``await close()``). It is registered in ``CHANNELS`` in ``__init__.py`` - the one place to touch.
"""
from __future__ import annotations

import re
import ssl
import urllib.parse
from typing import Annotated, Any, ClassVar

import httpx
import orjson
from pydantic import BeforeValidator, ConfigDict, Field, model_validator

from campus_sense.secret import Secret, SecretError, SecretFields  # noqa: F401  (Secret: for channel modules)
from collector.alertcore.timeinterval import Seconds

#: durations in notify.yaml are float seconds, same grammar as everywhere (alertcore.timeinterval)
Duration = Seconds

USER_AGENT = "campus-sense-notify/1"


def _str_list(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


StrList = Annotated[list[str], BeforeValidator(_str_list)]


class DeliveryError(Exception):
    """A failed attempt. ``permanent`` errors are not retried (bad key, 4xx, sign mismatch)."""

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


class _Strict(SecretFields):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Secrets(_Strict):
    """Channels: ``Secret`` fields (campus_sense.secret grammar), looked up by their YAML name."""

    #: secrets that must be present (subclasses override)
    required_secrets: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _required(self):
        for name in self.required_secrets:
            if not self.has_secret(name):
                raise ValueError(f"{name}, {name}_file or {name}_env is required")
        return self

    def _secret_field(self, name: str) -> Secret | None:
        for attr, f in type(self).model_fields.items():
            if (f.alias or attr) == name:
                return getattr(self, attr)
        raise AttributeError(f"{type(self).__name__} has no secret {name!r}")

    def has_secret(self, name: str) -> bool:
        return self._secret_field(name) is not None

    def secret(self, name: str) -> str | None:
        """Read the secret now (files and variables are re-read on every call: rotation works).
        Raises SecretError naming the key when it became unreadable."""
        s = self._secret_field(name)
        return s.reveal() if s is not None else None



class Retry(_Strict):
    #: attempts before a delivery is marked failed
    max_attempts: int = Field(8, ge=1)
    #: first retry delay; doubles per attempt (with jitter) up to max_backoff
    initial_backoff: Duration = Field(5.0, gt=0)
    max_backoff: Duration = Field(300.0, gt=0)
    #: a delivery whose attempt fails when it is older than this is marked failed
    max_age: Duration = Field(6 * 3600.0, gt=0)



class ChannelConfig(_Secrets):
    """Base of every channel's ``Config``."""
    #: also notify when alerts resolve
    send_resolved: bool = True
    #: per-attempt timeout
    timeout: Duration = Field(10.0, gt=0)
    #: overrides outbox.retry for this channel
    retry: Retry | None = None



def channel_secret(ch, name: str) -> str | None:
    try:
        return ch.secret(name)
    except SecretError as e:
        raise DeliveryError(str(e)) from None


class HTTPSender:
    def __init__(self, name: str, cfg):
        self.name = name
        self.cfg = cfg
        verify: bool | str | ssl.SSLContext = True
        if getattr(cfg, "ca_file", None):
            verify = ssl.create_default_context(cafile=cfg.ca_file)
        self.client = httpx.AsyncClient(timeout=cfg.timeout, verify=verify,
                                        headers={"User-Agent": USER_AGENT}, follow_redirects=False)

    async def _post(self, url: str, body: dict, headers: dict | None = None) -> httpx.Response:
        try:
            r = await self.client.post(url, content=orjson.dumps(body),
                                       headers={"Content-Type": "application/json", **(headers or {})})
        except httpx.TimeoutException as e:
            raise DeliveryError(f"POST {_where(url)}: timeout ({type(e).__name__})") from None
        except httpx.HTTPError as e:
            raise DeliveryError(f"POST {_where(url)}: {_redact(str(e)) or type(e).__name__}") from None
        if r.status_code >= 300:
            permanent = 400 <= r.status_code < 500 and r.status_code not in (408, 425, 429)
            raise DeliveryError(f"POST {_where(url)}: HTTP {r.status_code}: {r.text[:200]}", permanent=permanent)
        return r

    async def close(self) -> None:
        await self.client.aclose()


def _where(url: str) -> str:
    u = urllib.parse.urlsplit(url)
    return f"{u.scheme}://{u.netloc}{u.path}"


def _redact(s: str) -> str:
    """Never put robot keys / tokens / signatures into error messages."""
    return re.sub(r"((?:key|access_token|sign|token|corpsecret)=)[^&\s'\"]+", r"\1***", s)



# errcodes that are worth retrying; any other non-zero errcode is permanent
_ROBOT_RETRY = {-1, 45009, 45033, 130101, 410100}


def check_errcode(r: httpx.Response, what: str) -> None:
    try:
        j = r.json()
    except ValueError:
        raise DeliveryError(f"{what}: reply is not JSON: {r.text[:200]!r}") from None
    code = j.get("errcode") if isinstance(j, dict) else None
    if code is None:
        raise DeliveryError(f"{what}: reply has no errcode: {r.text[:200]!r}")
    if code != 0:
        raise DeliveryError(f"{what} errcode {code}: {j.get('errmsg', '')}",
                            permanent=code not in _ROBOT_RETRY)


class CallbackUsers(_Secrets):
    """Two-way acknowledgement: the chat user id (WeCom userid, DingTalk staffId) -> the campus-sense
    user recorded as the acknowledger. Chat users not in the map cannot acknowledge (403)."""
    users: dict[str, str] = Field(min_length=1)


def ack_key(alert_id: Any) -> str:
    """The acknowledge action carried by a button / message: ``ack:<alert id>``."""
    return f"ack:{alert_id}"


def parse_ack(text: str | None) -> int | None:
    """``ack:123``, ``ack 123``, ``确认 123`` -> 123; anything else None."""
    m = re.fullmatch(r"\s*(?:ack|确认)[:\s#]*(\d{1,18})\s*", text or "", flags=re.IGNORECASE)
    return int(m.group(1)) if m else None
