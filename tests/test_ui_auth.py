"""Web UI logins (collector/ui/auth.py, collector/store/users.py, `collector user`): scrypt-hashed
local users made by the CLI (no default user), cookie sessions (HttpOnly, SameSite=Strict, Secure
over https), CSRF on state-changing requests, API tokens unchanged, scope, lock-out, logout,
disable and password change ending sessions. Every test that uses ``env`` runs on the embedded
SQLite store and on PostgreSQL (``store.kind: postgres``: users and sessions in the shared database)."""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi import Depends
from fastapi.testclient import TestClient

from campus_sense import wire
from collector.api.app import ALL, Principal, create_app
from collector.store.sqldb import shared_target
from collector.store.sqlite import SQLiteStore
from collector.store.users import UserStore
from collector.ui import passwords
from tests.pg_fixture import pg_server, store_target  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
PW = "correct horse battery"


def msg(seq, items, agent, site, building, kind="metrics"):
    payload = wire.encode_durable(kind, agent, "e1", seq, 0, [wire.encode_item(i) for i in items])
    return wire.decode(wire.topic(site, building, agent, kind), payload)


def open_store(tmp_path: Path, kind: str, dsn: str | None):
    """The collector store of ``collector.yaml`` in ``tmp_path``: SQLite, or PostgreSQL (a second call
    = another collector on the same database)."""
    db = tmp_path / "c.db"
    if kind == "postgres":
        from collector.store.postgres import PostgresStore
        return PostgresStore(dsn, path=str(db))
    return SQLiteStore(str(db))


def make_app(store):
    app = create_app(store)

    @app.post("/api/v1/test-change")
    def change(p: Principal = Depends(ALL)) -> dict:       # a state-changing endpoint for the CSRF checks
        return {"role": p.role, "user": p.user}

    return app


@pytest.fixture
def env(tmp_path, store_target):
    db = tmp_path / "c.db"
    cfg = tmp_path / "collector.yaml"
    dsn = None
    if store_target.kind == "postgres":
        dsn = store_target().dsn
        (tmp_path / "c.dsn").write_text(dsn + "\n")
        # url: VictoriaMetrics, required by the config and never reached by `collector user`
        cfg.write_text("mqtt: {host: 127.0.0.1, username: c, password: x}\n"
                       f"store: {{kind: postgres, dsn_file: c.dsn, url: 'http://127.0.0.1:9', path: {db}}}\n")
    else:
        cfg.write_text(f"mqtt: {{host: 127.0.0.1, username: c, password: x}}\nstore: {{path: {db}}}\n")
    store = open_store(tmp_path, store_target.kind, dsn)
    now = int(time.time() * 1000)
    store.apply([msg(1, [wire.sample("system", "sw-a", now, {"uptime_s": 5})], "ag-a", "north", "A"),
                 msg(1, [wire.sample("system", "sw-b", now, {"uptime_s": 5})], "ag-b", "south", "B")], [])
    app = make_app(store)
    yield app, store, cfg
    app.state.ui_auth.close()
    store.close()


def cli(cfg: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "campus_sense", "collector", "user", *args, "--config", str(cfg)],
                          cwd=ROOT, input=stdin, capture_output=True, text=True, timeout=60)


def login(c: TestClient, user: str, pw: str, follow: bool = False):
    page = c.get("/ui/login")
    tok = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    return c.post("/ui/login", data={"username": user, "password": pw, "csrf": tok, "next": "/ui/"},
                  follow_redirects=follow)


def csrf_of(c: TestClient) -> str:
    return re.search(r'<meta name="csrf-token" content="([^"]*)"', c.get("/ui/").text).group(1)


def test_passwords_are_scrypt_and_verified():
    h = passwords.hash_password(PW)
    assert h.startswith("scrypt$16384$8$1$") and PW not in h
    assert passwords.verify_password(PW, h) and not passwords.verify_password(PW + "x", h)
    assert not passwords.verify_password(PW, None) and not passwords.verify_password(PW, "md5$x")
    assert passwords.hash_password(PW) != h                        # salted
    assert passwords.check_new_password("short") and passwords.check_new_password(PW) is None


def test_login_session_csrf_and_tokens(env):
    app, store, cfg = env
    c = TestClient(app)
    # no default credentials: nobody can log in before an admin is made with the CLI
    assert login(c, "admin", "admin").status_code == 401
    r = cli(cfg, "add", "wang", "--role", "it", "--name", "王老师", "--password-stdin", stdin=PW + "\n")
    assert r.returncode == 0, r.stderr
    assert cli(cfg, "add", "wang", "--role", "it", "--password-stdin", stdin=PW + "\n").returncode == 1
    assert cli(cfg, "add", "weak", "--role", "it", "--password-stdin", stdin="123\n").returncode == 2
    listed = cli(cfg, "list").stdout
    assert "wang\tit\tlocal\tactive\t*" in listed and PW not in listed
    # the hash, not the password, is stored
    us = UserStore(shared_target(store))
    assert us.user("wang")["password_hash"].startswith("scrypt$")
    us.close()

    # the login form needs its own CSRF token
    assert c.post("/ui/login", data={"username": "wang", "password": PW}).status_code == 403
    r = login(c, "wang", "nope")
    assert r.status_code == 401 and "用户名或密码错误" in r.text       # zh-CN without Accept-Language
    r = login(c, "wang", PW)
    assert r.status_code == 303 and r.headers["location"] == "/ui/"
    sc = r.headers["set-cookie"]
    assert "cs_session=" in sc and "HttpOnly" in sc and "SameSite=strict" in sc.replace("Strict", "strict")
    assert "Secure" not in sc                                       # plain http
    page = c.get("/ui/")
    assert page.status_code == 200 and "王老师" in page.text

    # the session works for the API; a GET needs no CSRF token, a POST does
    assert c.get("/api/v1/devices").status_code == 200
    assert c.get("/api/v1/agents").status_code == 200               # role it
    assert c.post("/api/v1/test-change").status_code == 403
    tok = csrf_of(c)
    assert c.post("/api/v1/test-change", headers={"X-CSRF-Token": "wrong"}).status_code == 403
    r = c.post("/api/v1/test-change", headers={"X-CSRF-Token": tok})
    assert r.status_code == 200 and r.json() == {"role": "it", "user": "wang"}
    # another site's Origin is refused even with the token
    assert c.post("/api/v1/test-change", headers={"X-CSRF-Token": tok, "Origin": "http://evil.example"}
                  ).status_code == 403

    # API tokens keep working, and a bearer wins over the cookie
    _, token = store.token_create("security", "robot")
    r = c.post("/api/v1/test-change", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json() == {"role": "security", "user": None}
    bare = TestClient(app)
    assert bare.get("/api/v1/devices").status_code == 401
    assert bare.get("/api/v1/devices", headers={"Authorization": f"Bearer {token}"}).status_code == 200

    # logout needs the CSRF field, then the cookie is dead
    old = c.cookies.get("cs_session")
    assert c.post("/ui/logout", data={"csrf": "x"}).status_code == 403
    r = c.post("/ui/logout", data={"csrf": tok}, follow_redirects=False)
    assert r.status_code == 303
    replay = TestClient(app, cookies={"cs_session": old})
    assert replay.get("/api/v1/devices").status_code == 401
    assert replay.get("/ui/", follow_redirects=False).headers["location"].startswith("/ui/login")


def test_secure_cookie_over_https(env):
    app, store, cfg = env
    assert cli(cfg, "add", "li", "--role", "admin", "--password-stdin", stdin=PW + "\n").returncode == 0
    c = TestClient(app, base_url="https://campus.example")
    r = login(c, "li", PW)
    assert r.status_code == 303 and "Secure" in r.headers["set-cookie"]


def test_password_change_and_disable_end_sessions_lockout(env):
    app, store, cfg = env
    assert cli(cfg, "add", "zhao", "--role", "security", "--password-stdin", stdin=PW + "\n").returncode == 0
    c = TestClient(app)
    assert login(c, "zhao", PW).status_code == 303
    assert c.get("/api/v1/devices").status_code == 200
    assert c.get("/api/v1/agents").status_code == 403                # security: not ops
    assert c.get("/ui/agents").status_code == 403
    r = cli(cfg, "passwd", "zhao", "--generate")
    assert r.returncode == 0
    new = r.stdout.strip()
    assert c.get("/api/v1/devices").status_code == 401                # the session ended
    assert login(c, "zhao", PW).status_code == 401
    assert login(c, "zhao", new).status_code == 303
    assert cli(cfg, "disable", "zhao").returncode == 0
    assert c.get("/api/v1/devices").status_code == 401
    r = login(c, "zhao", new)
    assert r.status_code == 401 and "停用" in r.text
    assert cli(cfg, "enable", "zhao").returncode == 0
    # five failures (one above with the old password) lock the name for 15 minutes, even for the right one
    for _ in range(4):
        assert login(c, "zhao", "wrong password").status_code == 401
    assert login(c, "zhao", new).status_code == 429


def test_scope_limits_pages_and_api(env, store_target):
    app, store, cfg = env
    assert cli(cfg, "add", "guard-a", "--role", "it", "--scope", "A", "--password-stdin",
               stdin=PW + "\n").returncode == 0
    c = TestClient(app)
    assert login(c, "guard-a", PW).status_code == 303
    assert c.get("/api/v1/devices/sw-a").status_code == 200
    assert c.get("/api/v1/devices/sw-b").status_code == 403
    # in scope: answered (PostgreSQL without store.query_url: 501, no time series to read, not a refusal)
    assert c.get("/api/v1/series", params={"measurement": "system", "device": "sw-a"}).status_code == \
        (200 if store_target.kind == "sqlite" else 501)
    assert c.get("/api/v1/series", params={"measurement": "system", "device": "sw-b"}).status_code == 403
    assert c.get("/api/v1/series", params={"measurement": "system"}).status_code == 403
    # campus-wide lists are filtered to the scope, not refused
    assert [d["id"] for d in c.get("/api/v1/devices").json()] == ["sw-a"]
    assert [a["id"] for a in c.get("/api/v1/agents").json()] == ["ag-a"]
    now = int(time.time() * 1000)
    store.apply([msg(2, [wire.event("sw-a", "link_down", now, "warning")], "ag-a", "north", "A", "events"),
                 msg(2, [wire.event("sw-b", "link_down", now, "warning")], "ag-b", "south", "B", "events")], [])
    assert [e["device"] for e in c.get("/api/v1/events").json()] == ["sw-a"]
    assert [e["device"] for e in c.get("/api/v1/events", params={"type": "link_down", "limit": 1}).json()] == ["sw-a"]
    assert c.get("/api/v1/events", params={"device": "sw-b"}).status_code == 403
    assert c.get("/api/v1/ingest/stats").status_code == 403           # anything else campus-wide: refused
    _, token = store.token_create("it", "robot")                       # tokens: the whole campus
    assert len(TestClient(app).get("/api/v1/events", headers={"Authorization": f"Bearer {token}"}).json()) == 2
    page = c.get("/ui/").text
    assert "/ui/buildings/A" in page and "/ui/buildings/B" not in page
    assert c.get("/ui/devices/sw-a").status_code == 200
    assert c.get("/ui/devices/sw-b").status_code == 404
    assert c.get("/ui/buildings/B").status_code == 404
    assert c.get("/ui/search", params={"q": "sw-"}).text.count("/ui/devices/sw-b") == 0


def test_users_and_sessions_shared_by_two_collectors(env, store_target, tmp_path):
    """Two collectors on the same database (PostgreSQL: the district case; SQLite: the same file): a
    user made by the CLI logs in through either, a session made through one is valid through the other,
    and a logout or a disable through one ends it in both."""
    app, store, cfg = env
    assert cli(cfg, "add", "sun", "--role", "it", "--password-stdin", stdin=PW + "\n").returncode == 0
    store2 = open_store(tmp_path, store_target.kind, store_target().dsn if store_target.kind == "postgres" else None)
    app2 = make_app(store2)
    try:
        c1 = TestClient(app)
        assert login(c1, "sun", PW).status_code == 303
        cookie = c1.cookies.get("cs_session")
        c2 = TestClient(app2, cookies={"cs_session": cookie})
        assert c2.get("/api/v1/devices").status_code == 200          # made by collector 1, valid on 2
        tok = csrf_of(c2)                                             # the session's CSRF token, from 2
        assert tok == csrf_of(c1)
        r = c2.post("/api/v1/test-change", headers={"X-CSRF-Token": tok})
        assert r.status_code == 200 and r.json() == {"role": "it", "user": "sun"}
        c3 = TestClient(app2)
        assert login(c3, "sun", PW).status_code == 303              # the CLI's user, through collector 2
        assert TestClient(app, cookies={"cs_session": c3.cookies.get("cs_session")}
                          ).get("/api/v1/devices").status_code == 200
        assert c2.post("/ui/logout", data={"csrf": tok}, follow_redirects=False).status_code == 303
        assert TestClient(app, cookies={"cs_session": cookie}).get("/api/v1/devices").status_code == 401
        assert cli(cfg, "disable", "sun").returncode == 0
        assert TestClient(app, cookies={"cs_session": c3.cookies.get("cs_session")}
                          ).get("/api/v1/devices").status_code == 401
        if store_target.kind == "postgres":                           # not in the local file at all
            local = UserStore(str(tmp_path / "c.db"))
            assert local.user("sun") is None
            local.close()
    finally:
        app2.state.ui_auth.close()
        store2.close()
