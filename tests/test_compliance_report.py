import csv
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from campus_sense.cli import main
from collector.campus.model import load_campus, load_registry
from collector.campus.store import CampusStore
from collector.compliance.firmware import load_catalog
from collector.compliance.health import building_health, device_detail
from collector.compliance.observations import Observations
from collector.compliance.policy import DEFAULT_FIRMWARE_DIR
from collector.compliance.report import (all_checks, attach_history, build_compliance_report, build_coverage_report,
                                         render, restrict)

FIX = Path(__file__).parent / "fixtures" / "campus"


@pytest.fixture(scope="module")
def inputs():
    campus = load_campus(FIX / "campus.yaml", strict=True).value
    return {"campus": campus, "registry": load_registry(FIX / "assets.csv", strict=True, campus=campus).value,
            "obs": Observations.load(FIX / "observations.json"), "catalog": load_catalog(DEFAULT_FIRMWARE_DIR)}


def cov(i, **kw):
    return build_coverage_report(i["campus"], i["obs"], **kw)


def comp(i, **kw):
    return build_compliance_report(i["campus"], i["registry"], i["obs"], i["catalog"], **kw)


def statuses(rep):
    return {(c["check"], c["subject"]): c["status"] for c in all_checks(rep)}


def test_coverage_report_finds_every_gap(inputs):
    rep = cov(inputs)
    st = statuses(rep)
    assert st[("wifi_coverage", "A-102")] == "fail"          # classroom without coverage
    assert st[("desk_port_speed", "a-acc1 GE0/0/2")] == "fail"  # 100 Mb/s desk port
    assert st[("uplink_redundancy", "a-acc2")] == "fail"     # single uplink
    assert st[("ipv6", "b-gw")] == "fail"
    assert st[("agent_online", "B")] == "fail"
    assert st[("wifi_coverage", "A-103")] == "unknown" and st[("wifi_coverage", "A-104")] == "unknown"
    a = next(b for b in rep["buildings"] if b["id"] == "A")
    rooms = {r["id"]: r for r in a["rooms"]}
    # wifi fail, desk port fail, its AP's client load (2 clients) pass
    assert rooms["A-102"]["status"] == "fail" and rooms["A-102"]["score"] == 33.3
    assert rooms["A-101"]["status"] == "pass" and rooms["A-101"]["score"] == 100
    assert rooms["A-103"]["status"] == "unknown"
    # + capacity: 3 AP loads pass, a-ap-103 down and 4 links without utilisation data unknown
    assert a["summary"] == {"status": "fail", "score": 61.5, "pass": 16, "fail": 3, "unknown": 7, "na": 1}
    assert rep["summary"]["score"] == round(100 * 23 / 38, 1)      # both buildings, capacity included
    assert rep["observed_at"] == "2026-11-20T10:00:00Z"


def test_compliance_report_finds_every_gap(inputs):
    st = statuses(comp(inputs))
    assert st[("inventory_unknown", "de:ad:be:ef:00:01")] == "fail"   # unknown device
    assert st[("firmware", "a-acc2")] == "fail"                       # outdated firmware
    assert st[("inventory_missing", "AT-0014")] == "fail"
    assert st[("inventory_moved", "AT-0012")] == "fail"
    assert st[("inventory_wrong_ip", "AT-0013")] == "fail"
    assert st[("telnet", "a-acc2")] == "fail" and st[("default_credentials", "a-cam-1")] == "fail"


def test_building_filter(inputs):
    rep = comp(inputs, building="B")
    assert [b["id"] for b in rep["buildings"]] == ["B"]
    assert {c["building"] for c in all_checks(rep)} == {"B"}
    assert ("firmware", "a-acc2") not in statuses(rep)


def test_restrict_to_a_scope(inputs):
    """A login scoped to building B gets the campus report's building B, summary recomputed."""
    for full, one in ((cov(inputs), cov(inputs, building="B")), (comp(inputs), comp(inputs, building="B"))):
        part = restrict(full, lambda b: b["id"] == "B")
        assert [b["id"] for b in part["buildings"]] == ["B"] and len(full["buildings"]) > 1
        assert part["summary"] == one["summary"] and part["categories"] == one["categories"]
        assert statuses(part) == statuses(one)
        assert restrict(full, lambda b: False)["summary"]["pass"] == 0


def test_json_and_csv_exports(inputs):
    rep = comp(inputs)
    back = json.loads(render(rep, "json"))
    assert back["summary"] == rep["summary"] and back["kind"] == "compliance"
    rows = list(csv.DictReader(io.StringIO(render(rep, "csv"))))
    assert len(rows) == len(all_checks(rep))
    fw = next(r for r in rows if r["check"] == "firmware" and r["subject"] == "a-acc2")
    assert fw["status"] == "fail" and fw["building"] == "A" and fw["category"] == "firmware"
    assert json.loads(fw["evidence"])[0]["firmware"] == "15.2(7)E9"
    assert fw["ref"].startswith("安全计算环境")
    with pytest.raises(ValueError):
        render(rep, "pdf")


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.text, self.tags, self.scripts = [], [], 0

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag in ("script", "link", "img"):
            self.scripts += 1

    def handle_data(self, data):
        self.text.append(data)


def test_html_report_is_self_contained_with_evidence(inputs):
    rep = cov(inputs, building="A")
    page = render(rep, "html")
    p = _Text()
    p.feed(page)
    text = " ".join(p.text)
    assert page.startswith("<!DOCTYPE html>") and "@media print" in page
    assert p.scripts == 0                           # no external resources, no JS
    assert "Campus network coverage report — building A" in text
    assert "2026-11-20T10:00:00Z" in text and rep["generated_at"] in text
    assert "61.5%" in text      # 16 pass of 26 scored (unknown never counts as a pass)
    assert "a-ap-101: 31 clients (policy: <= 50 clients)" in text          # capacity evidence
    # the evidence of each gap: port + speed, AP + reading + time, single uplink port
    assert "a-acc1 GE0/0/2 up at 100 Mb/s" in text
    assert "10:4f:58:00:01:02" in text and "-78" in text and "2026-11-20T08:00:00Z" in text
    assert "a-acc2: 1 uplink(s) configured" in text and "Te1/0/1" in text
    assert "AP a-ap-103 down" in text
    assert "Sign-off" in text and "min_signal_dbm" in text


def test_html_escapes_untrusted_values(inputs):
    obs = Observations.load(FIX / "observations.json")
    obs.devices["a-acc1"].facts["firmware"] = "<script>alert(1)</script>"
    rep = build_compliance_report(inputs["campus"], inputs["registry"], obs, inputs["catalog"])
    page = render(rep, "html")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_history_over_time(tmp_path, inputs):
    store = CampusStore(tmp_path / "h.db")
    r1 = cov(inputs, now=1000.0)
    store.record_report(r1)
    obs2 = Observations.load(FIX / "observations.json")
    for i in obs2.interfaces:
        if i.device == "a-acc1" and i.name == "GE0/0/2":
            i.speed_mbps = 1000
    r2 = build_coverage_report(inputs["campus"], obs2, now=2000.0)
    store.record_report(r2)
    attach_history(r2, store)
    h = r2["history"]["A"]
    assert [x["time"] for x in h] == [1000.0, 2000.0]
    assert h[1]["score"] > h[0]["score"] and h[1]["fail"] == h[0]["fail"] - 1
    room = store.history("coverage", building="A", room="A-102")
    assert [x["failed_checks"] for x in room] == [["desk_port_speed", "wifi_coverage"], ["wifi_coverage"]]
    dev = store.history("coverage", device="a-acc2")
    assert dev and dev[-1]["status"] == "fail"
    assert len(r2["history"]["campus"]) == 2
    assert "<svg" in render(r2, "html")


def test_building_health_and_device_detail(tmp_path, inputs):
    i = inputs
    h = building_health("A", i["campus"], i["registry"], i["obs"], i["catalog"])
    assert h["aps"]["down"] == ["a-ap-103"] and h["aps"]["total"] == 4
    assert h["agents"][0]["id"] == "agent-a" and h["agents"][0]["online"]
    assert h["coverage"]["fail"] == 3 and h["compliance"]["fail"] > 0
    assert h["findings"][0]["status"] == "fail"
    assert h["devices"]["not_polled"] == ["a-ap-102", "a-ap-103", "a-ap-201"]
    with pytest.raises(KeyError):
        building_health("Z", i["campus"], i["registry"], i["obs"], i["catalog"])
    store = CampusStore(tmp_path / "d.db")
    store.record_report(comp(i))
    d = device_detail("a-acc2", i["campus"], i["registry"], i["obs"], i["catalog"], store=store)
    assert d["asset"]["asset_tag"] == "AT-0003" and d["firmware"]["status"] == "expired"
    checks = {c["check"]: c["status"] for c in d["checks"]}
    assert checks["uplink_redundancy"] == "fail" and checks["telnet"] == "fail" and checks["inventory_ok"] == "pass"
    assert {x["name"] for x in d["interfaces"]} == {"Gi1/0/1", "Gi1/0/2", "Te1/0/1"}
    assert d["lldp"][0]["remote_device"] == "a-core"
    assert d["history"] and d["history"][0]["kind"] == "compliance"


# --------------------------------------------------------------------------- CLI

def run_cli(capsys, *argv):
    rc = main(["report", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_reports_offline(tmp_path, capsys):
    base = ["--campus", str(FIX / "campus.yaml"), "--observations", str(FIX / "observations.json")]
    rc, out, _ = run_cli(capsys, "coverage", "--building", "A", "--format", "json", *base)
    assert rc == 0
    rep = json.loads(out)
    assert rep["building"] == "A" and rep["summary"]["fail"] == 3
    rc, out, _ = run_cli(capsys, "compliance", "--format", "csv", "--registry", str(FIX / "assets.csv"), *base)
    assert rc == 0 and "inventory_unknown" in out and "de:ad:be:ef:00:01" in out
    html_file = tmp_path / "r.html"
    rc, out, _ = run_cli(capsys, "compliance", "--format", "html", "-o", str(html_file), "--registry",
                         str(FIX / "assets.csv"), *base)
    assert rc == 0 and out == "" and "15.2(7)E9" in html_file.read_text()
    rc, _, err = run_cli(capsys, "coverage", "--building", "Z", *base)
    assert rc == 2 and "unknown building 'Z'" in err
    rc, _, err = run_cli(capsys, "coverage", "--campus", str(FIX / "campus.yaml"))
    assert rc == 2 and "--observations" in err


def test_cli_db_import_history_where(tmp_path, capsys):
    db = str(tmp_path / "collector.db")
    obs = ["--observations", str(FIX / "observations.json")]
    rc, out, _ = run_cli(capsys, "import", "--db", db, "--campus", str(FIX / "campus.yaml"),
                         "--registry", str(FIX / "assets.csv"))
    assert rc == 0 and json.loads(out)["assets"] == 12
    for _ in range(2):
        rc, out, _ = run_cli(capsys, "coverage", "--db", db, *obs)
        assert rc == 0
    assert len(json.loads(out)["history"]["campus"]) == 2
    rc, out, _ = run_cli(capsys, "history", "--db", db, "--kind", "coverage", "--building", "A", "--room", "A-102")
    h = json.loads(out)
    assert rc == 0 and len(h) == 2 and h[-1]["status"] == "fail" and "wifi_coverage" in h[-1]["failed_checks"]
    rc, out, _ = run_cli(capsys, "where", "00:1b:1c:00:00:12", "--db", db, *obs)
    m = json.loads(out)["matches"][0]
    assert rc == 0 and (m["switch"], m["port"], m["room"]) == ("a-acc1", "GE0/0/5", "A-103")
    rc, out, _ = run_cli(capsys, "where", "10.9.9.9", "--db", db, *obs)
    assert rc == 1 and json.loads(out)["matches"] == []
    rc, out, _ = run_cli(capsys, "health", "--building", "B", "--db", db, *obs)
    assert rc == 0 and json.loads(out)["coverage"]["fail"] == 2
    rc, out, _ = run_cli(capsys, "device", "a-cam-1", "--db", db, *obs)
    assert rc == 0 and json.loads(out)["firmware"]["status"] == "eol"
    # re-import of a changed registry row updates in place
    f = tmp_path / "assets.csv"
    f.write_text((FIX / "assets.csv").read_text().replace("10.0.5.30,B-101", "10.0.5.99,B-101"))
    rc, out, _ = run_cli(capsys, "compliance", "--format", "json", "--db", db, "--registry", str(f), *obs)
    st = statuses(json.loads(out))
    assert ("inventory_wrong_ip", "AT-0013") not in st and st[("inventory_ok", "AT-0013")] == "pass"
    assert CampusStore(db).load_registry().assets["AT-0013"].assigned_ip == "10.0.5.99"


def test_cli_bad_rows_and_strict(tmp_path, capsys):
    f = tmp_path / "assets.csv"
    f.write_text((FIX / "assets.csv").read_text() + "AT-0099,pc,X,S99,zz:zz,10.0.5.99,A-101,Li,,,\n")
    args = ["compliance", "--campus", str(FIX / "campus.yaml"), "--registry", str(f),
            "--observations", str(FIX / "observations.json")]
    rc, out, err = run_cli(capsys, *args)
    assert rc == 0 and "assets.csv: row 14, column 'mac'" in err
    assert "row 14" in " ".join(json.loads(out)["notes"])
    rc, out, err = run_cli(capsys, *args, "--strict")
    assert rc == 2 and "strict" in err and "row 14, column 'mac'" in err and out == ""


def test_building_report_does_not_write_campus_history(tmp_path, inputs):
    store = CampusStore(tmp_path / "h.db")
    store.record_report(cov(inputs, building="B"))
    assert store.history("coverage") == []
    assert len(store.history("coverage", building="B")) == 1


def test_compliance_html_has_device_matrix(inputs):
    page = render(comp(inputs, building="A"), "html")
    assert "<h3>Devices</h3>" in page
    row = page[page.index("<tr><td>a-acc2</td>"):]
    row = row[:row.index("</tr>")]
    # firmware expired, SNMP public, telnet open -> fail; clock +12.5 s -> fail; inventory ok -> pass
    assert row.count("st fail") == 4 and row.count("st pass") == 1


def test_every_finding_message_reads_in_chinese(inputs):
    """Findings keep their message as a template key + arguments: a zh-CN reader (web UI pages and
    CSV) gets the catalog's msg.<key> with the same arguments, an English reader the English text."""
    import re

    from collector.ui.i18n import T, catalog
    zh, en = T("zh-CN"), T("en")
    checks = all_checks(cov(inputs)) + all_checks(comp(inputs))
    keys = set()
    for c in checks:
        assert c.get("msg"), c
        keys.add(c["msg"]["key"])
        text = zh.message(c)
        assert text != c["message"] and "{" not in text and re.search(r"[\u4e00-\u9fff]", text), (c["message"], text)
        if c["msg"].get("prefix"):
            assert text.startswith(c["msg"]["prefix"] + "：")
        assert en.message(c) == c["message"]
    assert len(keys) >= 20, keys                          # the fixture covers most kinds of finding
    # every key the code can produce has a Chinese template whose placeholders it fills
    src = "\n".join(p.read_text() for p in Path(__file__).parents[1].joinpath("collector/compliance").glob("*.py"))
    made = set(re.findall(r'(?:say|said)\("(\w+)"', src))
    made |= {f"{k}_pref" for k in ("fw_not_approved", "fw_eos", "fw_expired", "fw_expiring")}
    made |= {"fw_approved" + a + b for a in ("", "_until") for b in ("", "_preferred")}
    made |= {f"inv_moved_{k}" for k in ("room", "port", "room_port")}
    made |= {f"inv_mismatch_{k}" for k in ("device", "serial", "mac")} | {f"inv_diff_{k}" for k in ("serial", "model", "mac")}
    made |= {"inv_unknown" + a + b for a in ("", "_at") for b in ("", "_ip")}
    made |= {"hd_snmp_weak", "hd_snmp_ok", "hd_telnet_open", "hd_telnet_closed", "hd_http", "hd_http_only",
             "hd_http_none", "hd_http_redirect", "hd_cred_users", "hd_cred", "hd_cred_ok", "hd_clock_off",
             "hd_clock_ok", "inv_never_seen", "inv_not_seen", "inv_wrong_ip", "inv_ip_conflict", "inv_ok_at", "inv_ok"}
    made = {k for k in made if not k.endswith("_")}
    missing = sorted(k for k in made if "msg." + k not in catalog("zh-CN"))
    assert not missing, missing


def test_html_and_csv_reports_in_chinese(inputs, tmp_path, capsys):
    from collector.ui.i18n import catalog
    zh = catalog("zh-CN")
    rep = comp(inputs, building="A")
    page = render(rep, "html", "zh-CN")
    p = _Text()
    p.feed(page)
    text = " ".join(p.text)
    assert "<html lang='zh-CN'>" in page and "合规报告 — 楼宇 A" in text
    for key in ("rpt.by_building", "rpt.signoff", "rpt.policy", "check.firmware", "check.telnet", "status.fail"):
        assert zh[key] in text, key
    for english in ("Summary by building", "Sign-off", "Findings (", "Approved firmware", "Evidence"):
        assert english not in text, english
    # every finding reads as the catalog says (the same text the web UI shows)
    from collector.ui.i18n import T
    for c in all_checks(rep):
        if c["status"] in ("fail", "unknown"):
            assert T("zh-CN").message(c) in text
    import copy
    other = dict(inputs, obs=copy.deepcopy(inputs["obs"]))
    other["obs"].devices["a-acc1"].facts.update(serial="2102351HLS10K9999999", model="S5735-L48T4X-A1")
    mm = [c for c in all_checks(comp(other)) if c["check"] == "inventory_mismatch"]
    assert len(mm) == 1
    said = T("zh-CN").message(mm[0])
    assert "与登记不符" in said and "序列号 2102351HLS10K9999999（登记为" in said and "型号 S5735-L48T4X-A1" in said
    assert "serial 2102351HLS10K9999999 (registered" in mm[0]["message"] and "; model " in mm[0]["message"]
    csv_zh = render(rep, "csv", "zh-CN").splitlines()
    assert csv_zh[0].startswith("kind,generated_at,") and any("固件" in line for line in csv_zh[1:])
    base = ["--campus", str(FIX / "campus.yaml"), "--observations", str(FIX / "observations.json")]
    out = tmp_path / "zh.html"
    rc, _, _ = run_cli(capsys, "coverage", "--format", "html", "--lang", "zh-CN", "-o", str(out), *base)
    assert rc == 0 and "覆盖率报告" in out.read_text(encoding="utf-8")
