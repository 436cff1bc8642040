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
from typing import Annotated, Any, Union

from pydantic import BeforeValidator, Field, PrivateAttr, ValidationError, field_validator

from campus_sense.secret import Secret, SecretError
from campus_sense.yamlconf import ConfigError, error_loc, load_yaml
from collector.alertcore.labels import match_all, parse_matcher
from collector.alertcore.model import SEVERITIES
from collector.alertcore.timeinterval import (Interval, TimeInterval, check_timezone, compile_intervals,
                                              parse_duration)

from .channels import CHANNELS, dingtalk, mqtt, smtp, webhook, wecom
from .channels.base import Duration, Retry, StrList, _Secrets, _Strict  # noqa: F401


def _one_or_list(v: Any) -> Any:
    return [v] if isinstance(v, dict) else v


# --------------------------------------------------------------------------- retry policy

class Outbox(_Strict):
    retry: Retry = Retry()
    #: sent/failed deliveries are kept this long for the API, then deleted
    keep: Duration = Field(7 * 86400.0, gt=0)
    #: how often grouped notifications are evaluated (group_wait/interval/repeat timers)
    evaluation_interval: Duration = Field(1.0, gt=0)


# --------------------------------------------------------------------------- channels

#: one discriminated union over the registered channel modules (collector/notify/channels)
Channel = Annotated[Union[tuple(m.Config for m in CHANNELS.values())], Field(discriminator="type")]
WebhookChannel, SMTPChannel, WeComChannel = webhook.Config, smtp.Config, wecom.Config
DingTalkChannel, MQTTChannel = dingtalk.Config, mqtt.Config


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


_TYPES = tuple(CHANNELS)


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
