"""Bearer tokens with roles; token CLI."""
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from collector.api import create_app
from collector.store.sqlite import SQLiteStore, hash_token


@pytest.fixture
def app_store(tmp_path):
    store = SQLiteStore(str(tmp_path / "c.db"))
    yield create_app(store), store
    store.close()


def test_auth_and_roles(app_store):
    app, store = app_store
    _, admin = store.token_create("admin", "ops")
    _, sec = store.token_create("security", "guard")
    _, it = store.token_create("it")
    c = TestClient(app)
    assert c.get("/api/v1/health").status_code == 200
    for path in ("/api/v1/agents", "/api/v1/devices", "/api/v1/events", "/api/v1/ingest/stats",
                 "/api/v1/series?measurement=interface"):
        r = c.get(path)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
        assert c.get(path, headers={"Authorization": "Bearer cs_wrong"}).status_code == 401
        assert c.get(path, headers={"Authorization": f"Bearer {admin}"}).status_code == 200, path
        assert c.get(path, headers={"Authorization": f"Bearer {it}"}).status_code == 200, path
    h = {"Authorization": f"Bearer {sec}"}
    assert c.get("/api/v1/devices", headers=h).status_code == 200
    assert c.get("/api/v1/events", headers=h).status_code == 200
    r = c.get("/api/v1/agents", headers=h)
    assert r.status_code == 403 and "security" in r.json()["detail"]
    assert c.get("/api/v1/ingest/stats", headers=h).status_code == 403
    # stored hashed only
    hashes = [r[0] for r in store.reader().execute("SELECT hash FROM tokens")]
    assert hash_token(admin) in hashes and admin not in hashes
    assert store.token_revoke("ops") == 1
    assert c.get("/api/v1/devices", headers={"Authorization": f"Bearer {admin}"}).status_code == 401
    assert "/api/v1/series" in c.get("/openapi.json").json()["paths"]
    assert c.get("/docs").status_code == 200


def test_token_cli(tmp_path):
    cfg = tmp_path / "collector.yaml"
    (tmp_path / "pw").write_text("secret\n")
    cfg.write_text("mqtt: {host: 127.0.0.1, username: c, password_file: pw}\nstore: {path: c.db}\n")
    run = lambda *a: subprocess.run([sys.executable, "-m", "campus_sense", "collector", *a], capture_output=True,
                                    text=True, timeout=60)
    r = run("token", "create", "--role", "security", "--name", "guard", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("cs_") and "not shown again" in r.stderr
    r = run("--config", str(cfg), "token", "list")
    assert "security" in r.stdout and "guard" in r.stdout and token not in r.stdout
    store = SQLiteStore(str(tmp_path / "c.db"))
    assert store.token_role(token)[1] == "security"
    assert run("token", "revoke", "guard", "-c", str(cfg)).returncode == 0
    assert store.token_role(token) is None
    assert run("token", "revoke", "guard", "-c", str(cfg)).returncode == 1
    r = run("token", "create", "--role", "root", "-c", str(cfg))
    assert r.returncode == 2 and "invalid choice" in r.stderr
    store.close()


def test_config_errors_name_file_line_field(tmp_path):
    cfg = tmp_path / "collector.yaml"
    cfg.write_text("mqtt:\n  host: 127.0.0.1\n  username: c\nstore:\n  kind: mongo\n")
    r = subprocess.run([sys.executable, "-m", "campus_sense", "collector", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert f"{cfg}:2: mqtt: Value error, password or password_file is required" in r.stderr
    assert f"{cfg}:5: store.kind" in r.stderr
