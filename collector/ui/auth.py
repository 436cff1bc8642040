"""People's logins for the web UI: sessions in a cookie, CSRF protection, scope.

- ``POST /ui/login`` checks a local user (scrypt hash, ``passwords.py``) or, for a user that is
  not local, the directory (``ldap.py``), then sets ``cs_session`` (random 256 bits; only its
  SHA-256 is stored): ``HttpOnly``, ``SameSite=Strict``, ``Path=/``, ``Secure`` when the request
  came over https (``ui.secure_cookies``). Sessions end after ``session_idle_minutes`` unused,
  after ``session_max_hours`` anyway, at logout, and when the user is disabled or their
  password, role or scope changes.
- Every state-changing request authenticated by the cookie (anything but GET/HEAD/OPTIONS) must
  carry the session's CSRF token in ``X-CSRF-Token`` (pages read it from
  ``<meta name="csrf-token">``) or, for HTML forms, a ``csrf`` field; an ``Origin`` header of
  another site is refused too. The login form has its own double-submit token (``cs_login``).
- API tokens (``Authorization: Bearer``) work as before and win over a cookie.
- Scope: a user limited to some sites/buildings sees only those on the pages; through the API
  the lists (``SCOPED_LISTS``: devices, agents, events, alerts, coverage and compliance reports)
  hold only what is in scope, ``/devices/{id}``, ``/series`` and ``/events?device=`` answer for
  its devices and it acts on alerts of its buildings; anything else campus-wide is refused (403).
- Failed logins: after 5 for one name within 15 minutes that name is refused for 15 minutes.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from typing import Any

from fastapi import HTTPException, Request, Response

from ..api.app import Principal
from ..store.sqldb import shared_target
from ..store.users import UserStore
from . import passwords
from .settings import UISettings

log = logging.getLogger("collector.ui.auth")

SESSION_COOKIE = "cs_session"
LOGIN_COOKIE = "cs_login"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
MAX_FAILURES, FAILURE_WINDOW_S = 5, 900


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now_ms() -> int:
    return int(time.time() * 1000)


#: campus-wide API lists a scoped session gets filtered to its sites/buildings (not refused)
SCOPED_LISTS = frozenset({"/devices", "/agents", "/events", "/alerts", "/alerts/export.csv",
                          "/compliance/coverage", "/compliance/report"})


class LoginRefused(Exception):
    """reason: bad_credentials | locked | directory_down | no_role | disabled"""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


class Auth:
    def __init__(self, app):
        self.app = app
        self._users: UserStore | None = None
        self._lock = threading.Lock()
        self._failures: dict[str, list[float]] = {}

    # ------------------------------------------------------------ wiring
    @property
    def settings(self) -> UISettings:
        s = getattr(self.app.state, "ui_settings", None)
        return s if s is not None else UISettings()

    @property
    def users(self) -> UserStore:
        with self._lock:
            if self._users is None:
                # the collector database, or the shared PostgreSQL one (store.kind postgres)
                self._users = UserStore(shared_target(self.app.state.store))
            return self._users

    def close(self) -> None:
        if self._users is not None:
            self._users.close()

    def secure(self, request: Request) -> bool:
        mode = self.settings.secure_cookies
        return mode == "always" or (mode == "auto" and request.url.scheme == "https")

    # ------------------------------------------------------------ login
    def _locked(self, name: str) -> bool:
        now = time.monotonic()
        with self._lock:
            f = [t for t in self._failures.get(name, []) if now - t < FAILURE_WINDOW_S]
            self._failures[name] = f
            return len(f) >= MAX_FAILURES

    def _failed(self, name: str) -> None:
        with self._lock:
            self._failures.setdefault(name, []).append(time.monotonic())

    def check_login(self, name: str, password: str) -> dict[str, Any]:
        """The user row of a successful login; raises LoginRefused."""
        name = name.strip()
        if not name or len(name) > 256 or len(password) > 1024:
            raise LoginRefused("bad_credentials")
        if self._locked(name):
            raise LoginRefused("locked")
        u = self.users.user(name)
        if u is not None and u["source"] == "local":
            ok = passwords.verify_password(password, u["password_hash"])
            if not ok:
                self._failed(name)
                raise LoginRefused("bad_credentials")
            if u["disabled"]:
                raise LoginRefused("disabled")
            return u
        ld = self.settings.ldap
        if ld is None:
            passwords.verify_password(password, passwords.DUMMY_HASH)   # same time as a real check
            self._failed(name)
            raise LoginRefused("bad_credentials")
        from .ldap import DirectoryError, authenticate
        try:
            d = authenticate(ld, name, password)
        except DirectoryError as e:
            log.warning("LDAP login of %r: %s", name, e)
            raise LoginRefused("directory_down", str(e)) from None
        if d is None:
            self._failed(name)
            raise LoginRefused("bad_credentials")
        if u is not None and u["disabled"]:
            raise LoginRefused("disabled")
        role = d.role or (u["role"] if u is not None else None)
        if role is None:
            raise LoginRefused("no_role")
        if u is None:
            self.users.user_add(name, role, None, [], source="ldap", display_name=d.display_name)
        elif d.role and (u["role"] != d.role or u["display_name"] != d.display_name):
            self.users.user_update(name, role=d.role, display_name=d.display_name)
        return self.users.user(name)  # type: ignore[return-value]

    def start_session(self, request: Request, response: Response, user: dict[str, Any]) -> str:
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24)
        s = self.settings
        self.users.session_create(_hash(token), user["id"], csrf, _now_ms() + int(s.session_max_hours * 3600_000))
        self.users.touch_login(user["id"])
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", secure=self.secure(request),
                            path="/", max_age=int(s.session_max_hours * 3600))
        response.delete_cookie(LOGIN_COOKIE, path="/ui/login")
        log.info("UI login: %s (%s, %s)", user["name"], user["role"], user["source"])
        return csrf

    def logout(self, request: Request, response: Response) -> None:
        tok = request.cookies.get(SESSION_COOKIE)
        if tok:
            self.users.session_delete(_hash(tok))
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                               secure=self.secure(request))

    def login_token(self, request: Request, response: Response) -> str:
        """The login form's double-submit token (cookie + hidden field)."""
        t = request.cookies.get(LOGIN_COOKIE)
        if not t or not re.fullmatch(r"[A-Za-z0-9_\-]{20,64}", t):
            t = secrets.token_urlsafe(24)
        response.set_cookie(LOGIN_COOKIE, t, httponly=True, samesite="strict", secure=self.secure(request),
                            path="/ui/login", max_age=3600)
        return t

    def login_token_ok(self, request: Request, field: str) -> bool:
        c = request.cookies.get(LOGIN_COOKIE) or ""
        return bool(c and field) and hmac.compare_digest(c, field) and self.origin_ok(request)

    # ------------------------------------------------------------ sessions
    def session(self, request: Request) -> dict[str, Any] | None:
        """The request's live session with its ``user`` (cached on the request), else None."""
        if "cs_session" in request.scope:
            return request.scope["cs_session"]
        out = None
        tok = request.cookies.get(SESSION_COOKIE)
        if tok and len(tok) <= 100:
            h = _hash(tok)
            s = self.users.session(h)
            now = _now_ms()
            if s is not None:
                idle = self.settings.session_idle_minutes * 60_000
                u = s["user"]
                if now >= s["expires_ms"] or now - s["last_seen_ms"] > idle or u is None or u["disabled"]:
                    self.users.session_delete(h)
                else:
                    if now - s["last_seen_ms"] > 60_000:
                        self.users.session_seen(h, now)
                    out = s
        request.scope["cs_session"] = out
        return out

    def origin_ok(self, request: Request) -> bool:
        origin = request.headers.get("origin")
        if not origin or origin == "null":
            return origin is None
        host = request.headers.get("host", "")
        return origin.split("://", 1)[-1] == host

    def csrf_ok(self, request: Request, sess: dict[str, Any], form_value: str | None = None) -> bool:
        got = request.headers.get(CSRF_HEADER) or form_value or ""
        return bool(got) and hmac.compare_digest(got, sess["csrf"]) and self.origin_ok(request)

    @staticmethod
    def principal_of(user: dict[str, Any]) -> Principal:
        return Principal(-int(user["id"]), user["role"], user=user["name"], scope=tuple(user["scope"] or ()))

    def principal(self, request: Request) -> Principal | None:
        """The API's principal for a cookie session (``collector.api.app._principal``): CSRF and scope
        are enforced here; None without a session."""
        s = self.session(request)
        if s is None:
            return None
        if request.method not in SAFE_METHODS and not self.csrf_ok(request, s):
            raise HTTPException(403, "CSRF check failed: send the X-CSRF-Token of this session from the same origin")
        p = self.principal_of(s["user"])
        if p.scope:
            request.state.cs_scope = p.scope     # campus-wide lists filter by it (collector.api.app.scoped)
            why = self.scope_refusal(request, p)
            if why:
                raise HTTPException(403, why)
        return p

    # ------------------------------------------------------------ scope
    def device_in_scope(self, scope: tuple[str, ...], device_id: str | None) -> bool:
        if not scope:
            return True
        if not device_id:
            return False
        d = self.app.state.store.device(device_id)
        return d is not None and (d.get("building") in scope or d.get("site") in scope)

    @staticmethod
    def building_in_scope(scope: tuple[str, ...], building: str | None, site: str | None = None) -> bool:
        return not scope or (building in scope) or (site is not None and site in scope)

    def scope_refusal(self, request: Request, p: Principal) -> str | None:
        path = request.url.path
        rest = path[len("/api/v1"):] if path.startswith("/api/v1") else path
        if rest in ("/me", "/health", "/alerts/stream/ticket") or (rest in SCOPED_LISTS and not (rest == "/events" and
                                                                       "device" in request.query_params)):
            return None       # filtered to the scope by the endpoint (the stream: by its ticket's scope)
        m = re.fullmatch(r"/devices/([^/]+)(/interfaces)?", rest)
        if m:
            return None if self.device_in_scope(p.scope, m.group(1)) else f"device {m.group(1)!r} is outside your scope"
        if rest in ("/series", "/events"):
            dev = request.query_params.get("device")
            return None if self.device_in_scope(p.scope, dev) else \
                "outside your scope: ask for one device of your sites/buildings (device=...)"
        m = re.fullmatch(r"/alerts/(\d+)(/[a-z]+)?", rest)
        if m:
            al = getattr(self.app.state, "alerting", None)
            a = al.engine.alert(int(m.group(1))) if al is not None and len(m.group(1)) < 19 else None
            if a is None:
                return None       # the endpoint answers 404
            return None if self.building_in_scope(p.scope, a.labels.get("building"), a.labels.get("site")) else \
                f"alert {a.id} is outside your scope"
        return f"{rest} is campus-wide; your login is limited to {', '.join(p.scope)}"
