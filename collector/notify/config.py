"""Notification configuration (notify.yaml), loaded with ``campus_sense.yamlconf``.

Example (see README.md in this package for the full reference)::

    channels:
      ops-webhook: {type: webhook, url: "http://127.0.0.1:9000/hook"}
      noc-mail:
        type: smtp
        host: smtp.example.edu
        port: 587
        security: starttls
        username: campus-sense
        password_file: /etc/campus-sense/smtp.pass
        from: campus-sense@example.edu
        to: [noc@example.edu]
      bldg-a-wecom: {type: wecom, key_file: /etc/campus-sense/wecom-a.key}
      noc-dingtalk: {type: dingtalk, access_token_env: DT_TOKEN, secret_env: DT_SECRET}
      bus: {type: mqtt, host: 127.0.0.1, port: 1883, username: notify,
            password_file: /etc/campus-sense/notify-mqtt.pass, topic: "campus/alerts/{building}"}
    time_windows:
      office_hours:
        - {days: [mon-fri], hours: ["08:00-18:00"], timezone: Asia/Shanghai}
    route:
      channels: [ops-webhook]
      group_by: [rule, building]
      routes:
        - severity: [critical]
          channels: [noc-dingtalk, noc-mail]
          repeat_interval: 1h
          continue: true
        - building: [A]
          channels: [bldg-a-wecom]
          active_time_windows: [office_hours]

Secrets (passwords, robot keys/tokens/secrets, bearer tokens) use the one grammar of
``campus_sense.secret``: exactly one of ``<name>`` (inline; better kept out of the file),
``<name>_file`` (path, relative to the config file) or ``<name>_env`` (environment
variable). Files and variables are re-read on every send, so rotation needs no restart.
There are no default credentials.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError,
                      field_validator, model_validator)

from campus_sense.secret import Secret, SecretError, SecretFields
from campus_sense.yamlconf import ConfigError, error_loc, load_yaml
from collector.alertcore.labels import match_all, parse_matcher
from collector.alertcore.model import SEVERITIES
from collector.alertcore.timeinterval import (Interval, Seconds, TimeInterval, check_timezone, compile_intervals,
                                              parse_duration)

#: durations in notify.yaml are float seconds, same grammar as everywhere (alertcore.timeinterval)
Duration = Seconds


def _str_list(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


StrList = Annotated[list[str], BeforeValidator(_str_list)]


def _one_or_list(v: Any) -> Any:
    return [v] if isinstance(v, dict) else v


class _Strict(SecretFields):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --------------------------------------------------------------------------- secrets

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


# --------------------------------------------------------------------------- retry policy

class Retry(_Strict):
    #: attempts before a delivery is marked failed
    max_attempts: int = Field(8, ge=1)
    #: first retry delay; doubles per attempt (with jitter) up to max_backoff
    initial_backoff: Duration = Field(5.0, gt=0)
    max_backoff: Duration = Field(300.0, gt=0)
    #: a delivery whose attempt fails when it is older than this is marked failed
    max_age: Duration = Field(6 * 3600.0, gt=0)


class Outbox(_Strict):
    retry: Retry = Retry()
    #: sent/failed deliveries are kept this long for the API, then deleted
    keep: Duration = Field(7 * 86400.0, gt=0)
    #: how often grouped notifications are evaluated (group_wait/interval/repeat timers)
    evaluation_interval: Duration = Field(1.0, gt=0)


# --------------------------------------------------------------------------- channels

class _Channel(_Secrets):
    #: also notify when alerts resolve
    send_resolved: bool = True
    #: per-attempt timeout
    timeout: Duration = Field(10.0, gt=0)
    #: overrides outbox.retry for this channel
    retry: Retry | None = None


class WebhookChannel(_Channel):
    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = {}
    #: optional ``Authorization: Bearer <token>``
    bearer_token: Secret | None = None
    #: verify TLS certificates (https URLs); ca_file for a private CA
    ca_file: str | None = None


class SMTPChannel(_Channel):
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


class WeComChannel(_Channel):
    """WeCom (企业微信) group robot: POST {base_url}/cgi-bin/webhook/send?key=KEY."""
    type: Literal["wecom"]
    base_url: str = Field("https://qyapi.weixin.qq.com", pattern=r"^https?://")
    key: Secret | None = None
    #: user ids mentioned as <@userid> in the markdown
    mention_users: list[str] = []
    #: text put in front of the title (e.g. a robot keyword)
    title_prefix: str = ""
    required_secrets: ClassVar[tuple[str, ...]] = ("key",)


class DingTalkChannel(_Channel):
    """DingTalk (钉钉) group robot: POST {base_url}/robot/send?access_token=T[&timestamp&sign]."""
    type: Literal["dingtalk"]
    base_url: str = Field("https://oapi.dingtalk.com", pattern=r"^https?://")
    access_token: Secret | None = None
    #: the robot's "加签" secret (SEC...); when given, requests are signed (YAML key ``secret``)
    sign_secret: Secret | None = Field(None, alias="secret")
    at_mobiles: list[str] = []
    at_user_ids: list[str] = []
    at_all: bool = False
    #: text put in front of the title; robots in "custom keyword" mode need the keyword here
    title_prefix: str = ""
    required_secrets: ClassVar[tuple[str, ...]] = ("access_token",)


class MQTTChannel(_Channel):
    type: Literal["mqtt"]
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    username: str = Field(min_length=1)
    password: Secret | None = None
    #: may contain {label} placeholders filled from the group's common labels
    topic: str = Field(min_length=1)
    qos: Literal[1, 2] = 1
    retain: bool = False
    client_id: str | None = None
    tls: bool = False
    ca_file: str | None = None
    required_secrets: ClassVar[tuple[str, ...]] = ("password",)

    @field_validator("topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        if "+" in v or "#" in v:
            raise ValueError("publish topic must not contain wildcards + or #")
        return v


Channel = Annotated[Union[WebhookChannel, SMTPChannel, WeComChannel, DingTalkChannel, MQTTChannel],
                    Field(discriminator="type")]


# --------------------------------------------------------------------------- routes

class Route(_Strict):
    #: shorthand matchers (any of the listed values)
    severity: StrList | None = None
    building: StrList | None = None
    site: StrList | None = None
    rule: StrList | None = None
    #: exact label matches
    labels: dict[str, str] = {}
    #: Alertmanager-style matchers: ["room=~A-1.*", "type!=camera"]
    matchers: StrList = []
    #: channels notified by this route (inherited by child routes when not set)
    channels: StrList | None = None
    #: labels the alerts are grouped by; "..." = every label (one group per alert)
    group_by: StrList | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    #: keep matching sibling routes after this one matched
    continue_: bool = Field(False, alias="continue")
    #: notify only while one of these windows is active (inherited)
    active_time_windows: StrList | None = None
    #: do not notify while one of these windows is active (inherited)
    mute_time_windows: StrList | None = None
    routes: list["Route"] = []

    _matchers: list = PrivateAttr(default_factory=list)

    @field_validator("severity")
    @classmethod
    def _sev(cls, v):
        for s in v or []:
            if s not in SEVERITIES:
                raise ValueError(f"invalid severity {s!r} (use {', '.join(SEVERITIES)})")
        return v

    @field_validator("matchers")
    @classmethod
    def _m(cls, v):
        for t in v:
            parse_matcher(t)
        return v

    def model_post_init(self, _ctx: Any) -> None:
        self._matchers = [parse_matcher(t) for t in self.matchers]

    def matches(self, labels: dict[str, str]) -> bool:
        for name, allowed in (("severity", self.severity), ("building", self.building),
                              ("site", self.site), ("rule", self.rule)):
            if allowed is not None and labels.get(name, "") not in allowed:
                return False
        for k, v in self.labels.items():
            if labels.get(k, "") != v:
                return False
        return match_all(self._matchers, labels)


class NotifyConfig(_Strict):
    channels: dict[str, Channel] = Field(min_length=1)
    #: named intervals (alertcore.timeinterval grammar, ``timezone`` required); one mapping or a list
    time_windows: dict[str, Annotated[list[TimeInterval], BeforeValidator(_one_or_list)]] = {}
    route: Route
    outbox: Outbox = Outbox()
    #: timezone for times shown in e-mails and robot messages (payload times stay UTC ISO 8601)
    display_timezone: str = "UTC"

    _windows: dict[str, Interval] = PrivateAttr(default_factory=dict)

    @field_validator("display_timezone")
    @classmethod
    def _dtz(cls, v: str) -> str:
        return check_timezone(v)

    @field_validator("time_windows")
    @classmethod
    def _tzreq(cls, v):
        for name, parts in v.items():
            for p in parts:
                if "timezone" not in p.model_fields_set and p.not_ is None:
                    raise ValueError(f"{name}: timezone is required (an IANA name like Asia/Shanghai or UTC)")
        return v

    @property
    def windows(self) -> dict[str, Interval]:
        """Compiled ``time_windows`` (``contains(t_ms)``); unknown references: see ``check()``."""
        if len(self._windows) != len(self.time_windows):
            self._windows = compile_intervals(self.time_windows, "time window")
        return self._windows

    @field_validator("channels")
    @classmethod
    def _names(cls, v):
        for n in v:
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", n):
                raise ValueError(f"invalid channel name {n!r} (letters, digits, _ . -)")
        return v

    def retry_for(self, channel: str) -> Retry:
        return self.channels[channel].retry or self.outbox.retry

    def check(self, base_dir: Path | None = None, read_secrets: bool = True) -> list[tuple[tuple, str]]:
        """Cross-reference checks and secret availability. Returns ``[(loc, message)]``.
        (Secrets are read while validating: ``model_validate(data, context={"base_dir": ...,
        "read_secrets": ...})``; ``read_secrets`` here re-reads them now.)"""
        errs: list[tuple[tuple, str]] = []
        for name, ch in self.channels.items():
            if read_secrets:
                for attr, fld in type(ch).model_fields.items():
                    s = getattr(ch, attr)
                    if isinstance(s, Secret):
                        try:
                            s.reveal()
                        except SecretError as e:
                            errs.append((("channels", name, e.key), e.reason))
            for f in ("ca_file",):
                p = getattr(ch, f, None)
                if p:
                    pp = Path(p) if Path(p).is_absolute() or base_dir is None else base_dir / p
                    if not pp.is_file():
                        errs.append((("channels", name, f), f"{pp}: no such file"))
                    else:
                        setattr(ch, f, str(pp))

        def walk(r: Route, loc: tuple, inherited_channels: list[str] | None):
            chans = r.channels if r.channels is not None else inherited_channels
            for i, c in enumerate(r.channels or []):
                if c not in self.channels:
                    errs.append((loc + ("channels", i), f"unknown channel {c!r} (defined: {', '.join(self.channels)})"))
            for key in ("active_time_windows", "mute_time_windows"):
                for i, w in enumerate(getattr(r, key) or []):
                    if w not in self.time_windows:
                        errs.append((loc + (key, i), f"unknown time window {w!r}"))
            if not r.routes and not chans:
                errs.append((loc, "route has no channels (set channels here or on a parent route)"))
            for i, c in enumerate(r.routes):
                walk(c, loc + ("routes", i), chans)

        walk(self.route, ("route",), None)
        try:
            self._windows = compile_intervals(self.time_windows, "time window")
        except ValueError as e:
            errs.append((("time_windows",), str(e)))
        return errs


def _line_for(lines: dict[tuple, int], loc: tuple) -> int | None:
    loc = tuple(x for x in loc)
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


_TYPES = ("webhook", "smtp", "wecom", "dingtalk", "mqtt")


def _clean_loc(e: dict) -> tuple:
    """Drop pydantic's discriminator tag from channel locations so the YAML line is exact:
    ('channels', 'x', 'smtp', 'port') -> ('channels', 'x', 'port')."""
    loc = error_loc(e)
    if len(loc) >= 3 and loc[0] == "channels" and loc[2] in _TYPES:
        loc = loc[:2] + loc[3:]
    if e.get("type") in ("union_tag_invalid", "union_tag_not_found") and loc[:1] == ("channels",):
        loc = loc + ("type",)
    return loc


def _format(path: Path | str, err: ValidationError, lines: dict[tuple, int]) -> str:
    out = []
    for e in err.errors():
        loc = _clean_loc(e)
        line = _line_for(lines, loc)
        out.append(f"{path}:{line if line else '?'}: {'.'.join(map(str, loc)) or '(top level)'}: {e['msg']}")
    return "\n".join(out)


def load(path: str | Path, *, read_secrets: bool = True) -> NotifyConfig:
    """Load and check ``notify.yaml``; raise ConfigError naming ``file:line: key: message``."""
    path = Path(path)
    data, lines = load_yaml(path)
    if data is None:
        raise ConfigError(f"{path}: file is empty")
    base = path.resolve().parent
    try:  # secret files relative to this file; read now unless read_secrets is False
        cfg = NotifyConfig.model_validate(data, context={"base_dir": base, "read_secrets": read_secrets})
    except ValidationError as e:
        raise ConfigError(_format(path, e, lines)) from None
    errs = cfg.check(base, read_secrets=False)
    if errs:
        raise ConfigError("\n".join(
            f"{path}:{_line_for(lines, loc) or '?'}: {'.'.join(str(x) for x in loc)}: {msg}" for loc, msg in errs))
    return cfg


def from_dict(data: dict, base_dir: str | Path | None = None) -> NotifyConfig:
    """Build a config from a dict (tests, embedding); raises ConfigError on problems."""
    base = Path(base_dir) if base_dir else None
    try:
        cfg = NotifyConfig.model_validate(data, context={"base_dir": base})
    except ValidationError as e:
        raise ConfigError(_format("<dict>", e, {})) from None
    errs = cfg.check(base, read_secrets=False)
    if errs:
        raise ConfigError("\n".join(f"<dict>: {'.'.join(map(str, loc))}: {msg}" for loc, msg in errs))
    return cfg


__all__ = ["NotifyConfig", "Route", "Retry", "Outbox", "WebhookChannel",
           "SMTPChannel", "WeComChannel", "DingTalkChannel", "MQTTChannel", "ConfigError",
           "SecretError", "load", "from_dict", "parse_duration", "SEVERITIES"]
