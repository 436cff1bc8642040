"""Web UI for IT staff, admins and security: server-rendered pages in zh-CN and en, people's
logins (local users, LDAP), graphs with vendored uPlot, /docs and /redoc with local assets.

``mount(app)`` is called by ``collector.api.app.create_app``; ``collector.main.serve`` puts the
``ui:`` settings on ``app.state.ui_settings``. Layout: ``auth.py`` (sessions, CSRF, scope),
``ldap.py``, ``passwords.py``, ``settings.py``, ``i18n.py`` + ``i18n/*.json``, ``render.py``
(page frame), ``data.py`` (reads), ``pages.py`` (bodies), ``routes.py``, ``cli.py`` (users),
``static/`` (CSS, JS, ``vendor/`` with licences). Users and sessions: ``collector/store/users.py``.
"""
from __future__ import annotations

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse


def mount(app) -> None:
    from .auth import Auth
    from .routes import NeedLogin, router

    auth = Auth(app)
    app.state.ui_auth = auth
    app.include_router(router(auth))

    @app.exception_handler(NeedLogin)
    async def _need_login(request: Request, exc: NeedLogin):
        return RedirectResponse(exc.url, 303)

    from starlette.exceptions import HTTPException as StarletteHTTPException
    from fastapi.exception_handlers import http_exception_handler

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        # pages get an HTML error page; the API keeps its JSON errors
        if request.url.path.startswith("/ui/") and request.method == "GET":
            from .i18n import LANG_COOKIE, T, negotiate
            from .render import HEADERS, Ctx, e, page
            t = T(negotiate(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"),
                            auth.settings.default_lang))
            s = auth.session(request)
            c = Ctx(t=t, tz=auth.settings.timezone, path=request.url.path,
                    principal=auth.principal_of(s["user"]) if s else None, csrf=s["csrf"] if s else "")
            title = t("error.title", code=exc.status_code)
            return HTMLResponse(page(c, title, f'<p class="error">{e(exc.detail)}</p>'
                                               f'<p><a href="/ui/">{e(t("nav.campus"))}</a></p>'),
                                status_code=exc.status_code, headers=HEADERS)
        return await http_exception_handler(request, exc)
