from pathlib import Path

import pytest
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.testclient import TestClient

from collector.campus.model import load_campus, load_registry
from collector.campus.store import CampusStore
from collector.compliance.api import Inputs, make_router
from collector.compliance.firmware import load_catalog
from collector.compliance.observations import Observations
from collector.compliance.policy import DEFAULT_FIRMWARE_DIR, Policy

FIX = Path(__file__).parent / "fixtures" / "campus"


def _auth(role: str):
    def dep(x_role: str | None = Header(None)):
        if x_role is None:
            raise HTTPException(401, "no token")
        if x_role not in role.split(","):
            raise HTTPException(403, "wrong role")
    return dep


@pytest.fixture
def client(tmp_path):
    campus = load_campus(FIX / "campus.yaml", strict=True).value
    inp = Inputs(campus=campus, registry=load_registry(FIX / "assets.csv", campus=campus).value,
                 obs=Observations.load(FIX / "observations.json"), catalog=load_catalog(DEFAULT_FIRMWARE_DIR),
                 policy=Policy(), store=CampusStore(tmp_path / "h.db"))
    app = FastAPI()
    app.include_router(make_router(lambda: inp, read=[Depends(_auth("admin,it,security"))],
                                   write=[Depends(_auth("admin"))]), prefix="/api/v1")
    return TestClient(app)


H = {"x-role": "security"}


def test_reports_over_http(client):
    r = client.get("/api/v1/compliance/coverage", params={"building": "A"}, headers=H)
    assert r.status_code == 200 and r.json()["summary"]["fail"] == 3
    r = client.get("/api/v1/compliance/report", params={"format": "csv"}, headers=H)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "inventory_unknown" in r.text
    r = client.get("/api/v1/compliance/report", params={"format": "html", "building": "B"}, headers=H)
    assert r.status_code == 200 and "text/html" in r.headers["content-type"] and "AT-0013" in r.text
    assert client.get("/api/v1/compliance/coverage", params={"building": "Z"}, headers=H).status_code == 404
    assert client.get("/api/v1/compliance/coverage", params={"format": "pdf"}, headers=H).status_code == 422


def test_reports_in_the_readers_language(client):
    zh = client.get("/api/v1/compliance/report", params={"format": "html", "lang": "zh-CN"}, headers=H).text
    assert "<html lang='zh-CN'>" in zh and "各楼宇汇总" in zh and "签字确认" in zh and "Summary by building" not in zh
    # no lang=: the browser's Accept-Language, else English
    hz = client.get("/api/v1/compliance/coverage", params={"format": "html"},
                    headers={**H, "accept-language": "zh-CN,zh;q=0.9,en;q=0.5"}).text
    assert "覆盖率报告" in hz and "无线覆盖" in hz
    assert "Summary by building" in client.get("/api/v1/compliance/coverage", params={"format": "html"}, headers=H).text
    csv_zh = client.get("/api/v1/compliance/report", params={"format": "csv", "lang": "zh-CN"}, headers=H).text
    assert "固件" in csv_zh and csv_zh.startswith("kind,generated_at,")      # header keys stay stable
    assert client.get("/api/v1/compliance/report", params={"format": "html", "lang": "fr"}, headers=H).status_code == 422


def test_auth_dependencies_apply(client):
    assert client.get("/api/v1/compliance/coverage").status_code == 401
    assert client.post("/api/v1/compliance/snapshot", headers=H).status_code == 403


def test_snapshot_history_health_device_where(client):
    for _ in range(2):
        r = client.post("/api/v1/compliance/snapshot", headers={"x-role": "admin"})
        assert r.status_code == 200 and r.json()["history_rows"] > 0
    h = client.get("/api/v1/compliance/history", params={"kind": "coverage", "building": "A"}, headers=H).json()
    assert len(h) == 2 and h[0]["fail"] == 3
    rep = client.get("/api/v1/compliance/coverage", headers=H).json()
    assert len(rep["history"]["campus"]) == 2
    r = client.get("/api/v1/compliance/buildings/A/health", headers=H)
    assert r.status_code == 200 and r.json()["aps"]["down"] == ["a-ap-103"]
    assert len(r.json()["history"]["coverage"]) == 2
    assert client.get("/api/v1/compliance/buildings/Z/health", headers=H).status_code == 404
    r = client.get("/api/v1/compliance/devices/a-acc2", headers=H)
    assert r.status_code == 200 and r.json()["firmware"]["status"] == "expired" and r.json()["history"]
    assert client.get("/api/v1/compliance/devices/nope", headers=H).status_code == 404
    r = client.get("/api/v1/compliance/where", params={"q": "FOC1930W0AB"}, headers=H)
    assert r.json()["matches"][0]["device"] == "a-acc2"
