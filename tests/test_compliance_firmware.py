from pathlib import Path

import pytest

from campus_sense.yamlconf import ConfigError
from collector.campus.model import load_campus
from collector.compliance.firmware import evaluate_firmware, evaluate_hardening, firmware_status, load_catalog
from collector.compliance.observations import DeviceObs, Observations, to_epoch
from collector.compliance.policy import DEFAULT_FIRMWARE_DIR, Policy

FIX = Path(__file__).parent / "fixtures" / "campus"
T = to_epoch("2026-11-20T10:00:00Z")


@pytest.fixture(scope="module")
def cat():
    c = load_catalog(FIX / "firmware", strict=True)
    assert len(c.records) == 2
    return c


@pytest.mark.parametrize("model,version,status,ok", [
    ("ACME-SW-24", "2.0.1", "approved", True),
    ("acme-sw-48", "v2.0.1", "approved", True),          # model/version matching is case-insensitive
    ("ACME-SW-24", "1.9.0", "not_preferred", True),
    ("ACME-SW-24", "1.8.0", "expiring", True),           # valid until 2026-12-31, within 90 days
    ("ACME-SW-24", "1.5.0", "expired", False),
    ("ACME-SW-24", "1.2.7", "eol", False),               # software end of support 2025-06-30
    ("ACME-SW-24", "3.0.0", "not_yet_valid", False),
    ("ACME-SW-24", "1.7.3", "not_approved", False),
    ("ACME-OLD-8", "9.9", "eol", False),                 # hardware end of life 2026-01-31
    ("OTHER-1", "1.0", "unknown_model", None),
    ("ACME-SW-24", None, "unknown", None),
    (None, "2.0.1", "unknown", None),
])
def test_firmware_status(cat, model, version, status, ok):
    st = firmware_status(model, version, cat, T)
    assert (st["status"], st["ok"]) == (status, ok), st


def test_not_preferred_can_be_flagged(cat):
    p = Policy.model_validate({"firmware": {"flag_not_preferred": True}})
    st = firmware_status("ACME-SW-24", "1.9.0", cat, T, p)
    assert st["status"] == "not_preferred" and st["ok"] is False and "preferred: 2.0.1" in st["message"]


def test_repo_catalog_is_valid_and_covers_the_named_models():
    c = load_catalog(DEFAULT_FIRMWARE_DIR, strict=True)
    for model in ("S5735-L24T4X-A1", "S5130S-52S-HI", "C9300-48P", "WS-C2960X-24PS-L", "RG-S2910-24GT4XS-E",
                  "AP-515", "DS-2CD2143G2-I"):
        assert c.record_for(model) is not None, model
    assert firmware_status("C9300-48P", "17.9.5", c, T)["status"] == "approved"
    assert firmware_status("C9300-48P", "16.12.4", c, T)["status"] == "eol"
    assert firmware_status("WS-C2960X-24PS-L", "15.2(7)E10", c, T)["status"] == "approved"
    assert firmware_status("WS-C2960X-24PS-L", "15.2(7)E10", c, to_epoch("2027-11-01T00:00:00Z"))["status"] == "eol"
    assert firmware_status("S5130S-52S-HI", "Version 7.1.070, Release 3208P10", c, T)["status"] == "expired"


def test_bad_catalog_files_are_named_and_skipped(tmp_path):
    (tmp_path / "good.yaml").write_text((FIX / "firmware" / "acme-old.yaml").read_text())
    (tmp_path / "bad1.yaml").write_text("vendor: X\nmodels: [A]\nversions:\n  - version: '1'\n"
                                        "    valid_from: 2025-01-01\n    valid_until: 2024-01-01\n")
    (tmp_path / "bad2.yaml").write_text("vendor: X\nmodels: []\nversions:\n  - verison: '1'\n")
    (tmp_path / "bad3.yaml").write_text("vendor: X\nmodels: [A]\nversions:\n  - {version: '1', valid_until: someday}\n")
    (tmp_path / "bad4.yaml").write_text("vendor: X\nmodels: [A]\nversions:\n  - {version: '1'}\n  - {version: '1'}\n")
    c = load_catalog(tmp_path)
    assert len(c.records) == 1
    text = "\n".join(c.errors)
    assert f"{tmp_path / 'bad1.yaml'}:4: versions.0: " in text and "before valid_from" in text
    assert f"{tmp_path / 'bad2.yaml'}:2: models:" in text
    assert f"{tmp_path / 'bad2.yaml'}:4: versions.0.verison:" in text
    assert f"{tmp_path / 'bad3.yaml'}:4: versions.0.valid_until:" in text
    assert f"{tmp_path / 'bad4.yaml'}:" in text and "listed twice" in text
    with pytest.raises(ConfigError):
        load_catalog(tmp_path, strict=True)
    with pytest.raises(ConfigError, match="not found"):
        load_catalog(tmp_path / "nope")


def test_fixture_campus_outdated_firmware_found():
    campus = load_campus(FIX / "campus.yaml").value
    obs = Observations.load(FIX / "observations.json")
    res = {r.subject: r for r in evaluate_firmware(campus, obs, load_catalog(DEFAULT_FIRMWARE_DIR))}
    assert res["a-acc2"].status == "fail" and "expired 2025-03-31" in res["a-acc2"].message
    assert res["a-acc2"].evidence[0]["firmware"] == "15.2(7)E9" and res["a-acc2"].building == "A"
    assert res["a-cam-1"].status == "fail" and res["a-cam-1"].evidence[0]["status"] == "eol"
    assert res["a-cam-1"].severity == "critical"
    for ok in ("a-core", "a-acc1", "b-gw", "b-acc1", "a-ap-101"):
        assert res[ok].status == "pass", res[ok].message
    obs.devices["x"] = DeviceObs(id="x", facts={"model": "Mystery-1", "firmware": "1"}, building="B")
    res = {r.subject: r for r in evaluate_firmware(campus, obs, load_catalog(DEFAULT_FIRMWARE_DIR), building="B")}
    assert res["x"].status == "unknown" and "no approved-firmware record" in res["x"].message
    assert "a-acc2" not in res


def test_insecure_settings_flagged_from_facts():
    campus = load_campus(FIX / "campus.yaml").value
    obs = Observations.load(FIX / "observations.json")
    res = {(r.check, r.subject): r for r in evaluate_hardening(campus, obs)}
    r = res[("snmp_community", "a-acc2")]
    assert r.status == "fail" and "public" in r.message and r.evidence[0]["value"]["versions"] == ["1", "2c"]
    assert res[("telnet", "a-acc2")].status == "fail"
    r = res[("clock_drift", "a-acc2")]
    assert r.status == "fail" and "+12.5 s" in r.message
    assert res[("clock_drift", "a-acc1")].status == "pass"
    assert res[("http_mgmt", "a-cam-1")].status == "fail"
    r = res[("default_credentials", "a-cam-1")]
    assert r.status == "fail" and "admin" in r.message
    for check in ("snmp_community", "telnet", "http_mgmt", "default_credentials", "clock_drift"):
        assert res[(check, "a-core")].status == "pass"
    assert ("telnet", "b-gw") not in res      # no fact, nothing claimed


@pytest.mark.parametrize("facts,check,status", [
    ({"snmp_communities": ["private"], "snmp_versions": ["2c"]}, "snmp_community", "fail"),
    ({"snmp_communities": ["public"], "snmp_versions": ["3"]}, "snmp_community", "pass"),   # v3 only
    ({"snmp_communities": ["s3cr3t-Xy"]}, "snmp_community", "pass"),
    ({"http_mgmt": True, "https_mgmt": True, "http_redirects_to_https": True}, "http_mgmt", "pass"),
    ({"http_mgmt": True, "https_mgmt": True}, "http_mgmt", "fail"),
    ({"clock_offset_s": -5.5}, "clock_drift", "fail"),
    ({"clock_offset_s": 4.9}, "clock_drift", "pass"),
    ({"default_credentials": True}, "default_credentials", "fail"),
    ({"telnet_open": False}, "telnet", "pass"),
])
def test_hardening_rules(facts, check, status):
    campus = load_campus(FIX / "campus.yaml").value
    obs = Observations(time=T, devices={"d": DeviceObs(id="d", facts=facts, building="A")})
    res = [r for r in evaluate_hardening(campus, obs) if r.check == check]
    assert [r.status for r in res] == [status]


@pytest.mark.parametrize("model,reported,status", [
    ("S5735-L24T4X-A1", "Version 5.170 (S5735 V200R022C00SPC500)", "approved"),   # ENTITY-MIB style
    ("S5735-L24T4X-A1", "V200R022C00SPC500T", "not_approved"),                     # not the same build
    ("C9300-48P", "17.09.05", "approved"),                                         # zero-padded IOS XE
    ("C9300-48P", "17.9.5.1", "not_approved"),
    ("C9300-48P", "Cisco IOS XE Software, Version 16.12.04", "eol"),
    ("WS-C2960X-24PS-L", "Cisco IOS Software, C2960X Software (C2960X-UNIVERSALK9-M), Version 15.2(7)E9, "
                         "RELEASE SOFTWARE (fc2)", "expired"),
    ("WS-C2960X-24PS-L", "Cisco IOS Software, C2960X Software (C2960X-UNIVERSALK9-M), Version 15.2(7)E10, "
                         "RELEASE SOFTWARE (fc1)", "approved"),
    ("RG-S2910-24GT4XS-E", "Ruijie Full Layer 2 Switch (S2910-24GT4XS-E) By Ruijie Networks, RGOS 11.4(1)B12P10",
     "approved"),
])
def test_real_world_version_strings(model, reported, status):
    c = load_catalog(DEFAULT_FIRMWARE_DIR)
    assert firmware_status(model, reported, c, T)["status"] == status
