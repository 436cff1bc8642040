"""The compliance service in the collector API: campus import from the config block, live
observations from the collector store, role checks, history, alerts hook, config loading."""
import shutil
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from collector.api import create_app
from collector.compliance.service import ComplianceService, attach
from collector.compliance.settings import CampusSettings
from collector.store.sqlite import SQLiteStore
from tests.test_compliance_store import fill

FIX = Path(__file__).parent / "fixtures" / "campus"


@pytest.fixture
def env(tmp_path):
    store = SQLiteStore(str(tmp_path / "c.db"))
    fill(store, int(time.time() * 1000))
    reg = tmp_path / "assets.csv"
    # one bad row (MAC) -> reported with file/row/column, the other rows are imported
    reg.write_text((FIX / "assets.csv").read_text() + "AT-0099,pc,X,S99,zz:zz,10.0.5.99,A-101,Nobody,,,\n")
    settings = CampusSettings(model=[str(FIX / "campus.yaml")], registry=[str(reg)],
                              firmware_dir=str(FIX / "firmware"), snapshot_interval_s=0, cache_s=0)
    app = create_app(store)
    svc = attach(app, store, settings)
    toks = {role: store.token_create(role)[1] for role in ("admin", "it", "security")}
    yield TestClient(app), svc, {r: {"Authorization": f"Bearer {t}"} for r, t in toks.items()}, app
    svc.stop()
    store.close()


def test_import_issues_name_file_row_column(env):
    _, svc, _, _ = env
    imp = svc.last_import
    bad = [i for i in imp["issues"] if i["severity"] == "error"]
    assert len(bad) == 1 and bad[0]["file"].endswith("assets.csv") and bad[0]["row"] == 14
    assert bad[0]["column"] == "mac" and "zz:zz" in bad[0]["text"]
    assert imp["counts"]["assets"] == 12 and imp["counts"]["buildings"] == 2


def test_roles_reports_health_device_where_history(env):
    c, svc, h, app = env
    base = "/api/v1/compliance"
    # security: 403 everywhere in compliance; it reads; admin reads and writes
    for path in ("/coverage", "/report", "/buildings/A/health", "/devices/a-acc1", "/where?q=10.0.5.12",
                 "/history"):
        assert c.get(base + path, headers=h["security"]).status_code == 403, path
        assert c.get(base + path, headers=h["it"]).status_code == 200, path
        assert c.get(base + path).status_code == 401
    assert c.post(base + "/snapshot", headers=h["it"]).status_code == 403
    assert c.post(base + "/import", headers=h["it"]).status_code == 403
    assert c.post(base + "/import", headers=h["security"]).status_code == 403

    cov = c.get(base + "/coverage", params={"building": "A"}, headers=h["it"]).json()
    checks = {(x["check"], x["subject"]): x["status"] for b in cov["buildings"]
              for x in b["checks"] + [y for r in b["rooms"] for y in r["checks"]]}
    assert checks[("desk_port_speed", "a-acc1 GE0/0/2")] == "fail"
    assert checks[("uplink_redundancy", "a-acc1")] == "fail"
    r = c.get(base + "/report", params={"format": "csv"}, headers=h["admin"])
    assert r.headers["content-type"].startswith("text/csv") and "inventory_moved" in r.text
    r = c.get(base + "/report", params={"format": "html", "building": "A"}, headers=h["admin"])
    assert "text/html" in r.headers["content-type"] and "<html" in r.text.lower()

    hl = c.get(base + "/buildings/A/health", headers=h["it"]).json()
    assert "open_alerts" not in hl                        # no alert engine wired
    assert hl["devices"]["offline"] == ["a-acc2"]
    assert hl["interfaces"]["with_errors"][0]["name"] == "GE0/0/5"
    assert hl["ap_load"]["clients_total"] == 23

    d = c.get(base + "/devices/a-acc1", headers=h["it"]).json()
    assert d["collector"]["reachable"] is True and d["facts"]["model"] == "S5735-L24T4X-A1"
    assert {i["name"] for i in d["interfaces"]} >= {"GE0/0/2", "XGE0/0/1"}
    assert c.get(base + "/devices/nope", headers=h["it"]).status_code == 404

    w = c.get(base + "/where", params={"q": "de:ad:be:ef:00:01"}, headers=h["it"]).json()
    assert (w["matches"][0]["switch"], w["matches"][0]["port"], w["matches"][0]["room"]) == \
        ("a-acc1", "GE0/0/2", "A-102")

    assert c.get(base + "/history", params={"kind": "coverage", "building": "A"}, headers=h["it"]).json() == []
    snap = c.post(base + "/snapshot", headers=h["admin"]).json()
    assert snap["history_rows"] > 0
    hist = c.get(base + "/history", params={"kind": "coverage", "building": "A"}, headers=h["it"]).json()
    assert len(hist) == 1 and hist[0]["fail"] >= 2
    dev_hist = c.get(base + "/devices/a-acc1", headers=h["admin"]).json()["history"]
    assert {x["kind"] for x in dev_hist} >= {"coverage"}

    imp = c.post(base + "/import", headers=h["admin"]).json()
    assert imp["counts"]["assets"] == 12 and imp["imported"]["registry"]["added"] == 0

    class Engine:           # the alert engine as collector.alerting mounts it: app.state.alerting.engine
        def alerts(self, flt=None):
            return [object()] * (3 if flt == {"building": "A"} else 0)

    app.state.alerting = type("Alerting", (), {"engine": Engine()})()
    assert c.get(base + "/buildings/A/health", headers=h["it"]).json()["open_alerts"] == 3
    assert c.get(base + "/buildings/B/health", headers=h["it"]).json()["open_alerts"] == 0


def test_periodic_snapshot_records_history(tmp_path):
    store = SQLiteStore(str(tmp_path / "c.db"))
    fill(store, int(time.time() * 1000))
    svc = ComplianceService(store, CampusSettings(model=[str(FIX / "campus.yaml")], snapshot_interval_s=0.2,
                                                  firmware_dir=str(FIX / "firmware")))
    svc.import_files()
    svc.start()
    try:
        end = time.monotonic() + 30
        while time.monotonic() < end and len(svc.campus_store.history("coverage")) < 2:
            time.sleep(0.05)
        assert len(svc.campus_store.history("coverage")) >= 2
        # the inventory's last-seen memory was written into the collector DB by the snapshot
        seen = {r["mac"] for r in svc.campus_store.seen()}
        assert seen and all(r["last_seen"] > 0 for r in svc.campus_store.seen())
    finally:
        svc.stop()
        store.close()


def test_strict_import_keeps_stored_model_and_bad_files_do_not_stop(tmp_path):
    store = SQLiteStore(str(tmp_path / "c.db"))
    ok = ComplianceService(store, CampusSettings(model=[str(FIX / "campus.yaml")], firmware_dir=str(FIX / "firmware")))
    ok.import_files()
    bad = tmp_path / "rooms.csv"
    bad.write_text("room,building,floor,type\nX-1,A,A-1,teaching\nX-2,A,A-1,spaceship\n")
    svc = ComplianceService(store, CampusSettings(model=[str(bad)], strict=True, firmware_dir=str(FIX / "firmware")))
    imp = svc.import_files()
    assert imp["errors"] and any(i["row"] == 3 and i["column"] == "type" for i in imp["issues"])
    assert "X-1" not in svc.model()[0].rooms and "A-101" in svc.model()[0].rooms
    missing = ComplianceService(store, CampusSettings(model=[str(tmp_path / "nope.yaml")],
                                                      firmware_dir=str(FIX / "firmware")))
    imp = missing.import_files()
    assert imp["errors"] and "nope.yaml" in imp["errors"][0]
    store.close()


def test_collector_config_campus_block(tmp_path):
    from collector import config as cfgmod
    (tmp_path / "m").mkdir()
    shutil.copy(FIX / "campus.yaml", tmp_path / "m" / "campus.yaml")
    p = tmp_path / "collector.yaml"
    p.write_text("mqtt: {host: 127.0.0.1, username: c, password: x}\n"
                 "campus: {model: m/campus.yaml, registry: [a.csv], firmware_dir: fw, snapshot_interval_s: 60}\n")
    cfg = cfgmod.load(p)
    assert cfg.campus.model == [str(tmp_path / "m" / "campus.yaml")]
    assert cfg.campus.registry == [str(tmp_path / "a.csv")] and cfg.campus.firmware_dir == str(tmp_path / "fw")
    p.write_text("mqtt: {host: 127.0.0.1, username: c, password: x}\ncampus: {modle: x.yaml}\n")
    from campus_sense.yamlconf import ConfigError
    with pytest.raises(ConfigError, match="modle"):
        cfgmod.load(p)


def test_model_imported_elsewhere_replaces_the_cached_one(tmp_path):
    """Two collectors on one database (shared PostgreSQL in a district; here the SQLite file): a model
    or registry imported through one is what the other answers with after model_check_s, without a
    restart; rows removed by a pruning import disappear too."""
    store = SQLiteStore(str(tmp_path / "c.db"))
    fw = str(FIX / "firmware")
    reader = ComplianceService(store, CampusSettings(firmware_dir=fw, model_check_s=0))
    assert "A-101" not in reader.model()[0].rooms and not reader.model()[1].assets
    ComplianceService(store, CampusSettings(model=[str(FIX / "campus.yaml")], registry=[str(FIX / "assets.csv")],
                                            firmware_dir=fw)).import_files()
    campus, registry = reader.model()
    assert "A-101" in campus.rooms and registry.assets
    rooms = tmp_path / "rooms.csv"
    rooms.write_text("room,building,floor,type\nA-101,A,A-1,office\n")
    ComplianceService(store, CampusSettings(model=[str(rooms)], prune=True, firmware_dir=fw)).import_files()
    assert list(reader.model()[0].rooms) == ["A-101"] and reader.model()[0].rooms["A-101"].type == "office"
    # with the default check interval the cached model is reused in between (no query per request)
    slow = ComplianceService(store, CampusSettings(firmware_dir=fw))
    before = slow.model()
    rooms.write_text("room,building,floor,type\nA-101,A,A-1,teaching\n")
    ComplianceService(store, CampusSettings(model=[str(rooms)], firmware_dir=fw)).import_files()
    assert slow.model() is before
    store.close()
