"""The ``ui:`` block of collector.yaml (web UI: people's logins, language, time zone).

    ui:
      timezone: Asia/Shanghai          # every time on the pages and in the reports
      default_lang: zh-CN              # when the browser asks for neither zh nor en
      session_idle_minutes: 480        # a session unused this long ends
      session_max_hours: 168           # and every session ends after this long
      secure_cookies: auto             # auto: Secure when the request came over https; always | never
      ldap:                            # optional: log in with the school's directory (simple bind)
        url: ldaps://ldap.school.example:636      # or ldap://...:389 with start_tls: true
        start_tls: false
        ca_file: school-ca.pem
        user_dn: "uid={user},ou=people,dc=school,dc=cn"   # direct bind, or search with bind_dn below
        # bind_dn: "cn=campus-sense,ou=services,dc=school,dc=cn"
        # bind_password_file: ldap.pass
        # base_dn: "ou=people,dc=school,dc=cn"
        # user_filter: "(uid={user})"
        group_base_dn: "ou=groups,dc=school,dc=cn"
        groups: {admin: "cn=net-admins,ou=groups,dc=school,dc=cn", it: "cn=it,...", security: "cn=guards,..."}

A directory user gets the role of the first group (admin, security, it) that lists them
(``member``/``uniqueMember`` = their DN or ``memberUid`` = their name); one pre-created with
``campus-sense collector user add NAME --ldap --role R [--scope B]`` keeps that role and scope.
Nobody else gets in: there is no default role.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ConfigDict, Field, field_validator, model_validator

from campus_sense.secret import Secret, SecretFields


class LDAPSettings(SecretFields):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^ldaps?://")
    start_tls: bool = False
    ca_file: str | None = None
    timeout_s: float = Field(5, gt=0, le=60)
    #: direct bind: the user's DN from their login name ({user} is escaped)
    user_dn: str | None = None
    #: search bind: a service account finds the user's DN first
    bind_dn: str | None = None
    bind_password: Secret | None = None
    base_dn: str | None = None
    user_filter: str = "(uid={user})"
    #: where groups live and which group gives which role
    group_base_dn: str | None = None
    groups: dict[Literal["admin", "it", "security"], str] = Field(default_factory=dict)
    #: attribute with a display name
    name_attribute: str = "cn"

    @model_validator(mode="after")
    def _mode(self):
        if not self.user_dn and not (self.base_dn and self.bind_dn):
            raise ValueError("ldap: give user_dn (direct bind) or bind_dn + bind_password + base_dn (search)")
        if self.user_dn and "{user}" not in self.user_dn:
            raise ValueError("ldap.user_dn must contain {user}")
        if self.bind_dn and self.bind_password is None:
            raise ValueError("ldap.bind_password (or _file/_env) is required with bind_dn")
        return self


class UISettings(SecretFields):
    model_config = ConfigDict(extra="forbid")

    timezone: str = "Asia/Shanghai"
    default_lang: Literal["zh-CN", "en"] = "zh-CN"
    session_idle_minutes: float = Field(480, gt=0)
    session_max_hours: float = Field(168, gt=0)
    secure_cookies: Literal["auto", "always", "never"] = "auto"
    ldap: LDAPSettings | None = None

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (an IANA name such as Asia/Shanghai)") from None
        return v

    def resolve(self, base: Path) -> "UISettings":
        if self.ldap is not None and self.ldap.ca_file and not Path(self.ldap.ca_file).is_absolute():
            self.ldap.ca_file = str(base / self.ldap.ca_file)
        return self
