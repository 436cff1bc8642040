import copy
import json
from pathlib import Path

import pytest

from campus_sense.yamlconf import ConfigError
from collector.campus.model import load_campus
from collector.compliance.coverage import evaluate_coverage
from collector.compliance.observations import (AgentStatus, ApStatus, InterfaceObs, LldpLink, Observations,
                                               WifiReading, to_epoch)
from collector.compliance.policy import DEFAULT_POLICY_FILE, Policy, load_policy

FIX = Path(__file__).parent / "fixtures" / "campus"
T = to_epoch("2026-11-20T10:00:00Z")


@pytest.fixture(scope="module")
def campus():
    return load_campus(FIX / "campus.yaml", strict=True).value


@pytest.fixture
def obs():
    return Observations.load(FIX / "observations.json")


def by(results, check, subject):
    hits = [r for r in results if r.check == check and r.subject == subject]
    assert len(hits) == 1, (check, subject, [(r.check, r.subject) for r in results])
    return hits[0]


def test_policy_file_has_the_seed_values():
    assert load_policy(DEFAULT_POLICY_FILE) == Policy()
    p = Policy()
    assert (p.wireless.min_signal_dbm, p.wireless.min_snr_db) == (-67, 25)
    assert (p.wired.desk_min_mbps, p.wired.uplink_min_mbps, p.wired.min_uplinks_per_access_switch) == (1000, 10000, 2)
    assert p.hardening.max_clock_offset_s == 5


def test_policy_errors_name_file_line_field(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("wireless:\n  min_signal_dbm: loud\nwired:\n  desk_speed: 1\n")
    with pytest.raises(ConfigError) as e:
        load_policy(f)
    msg = str(e.value)
    assert f"{f}:2: wireless.min_signal_dbm" in msg
    assert f"{f}:4: wired.desk_speed" in msg


def test_classroom_without_coverage_fails(campus, obs):
    r = by(evaluate_coverage(campus, obs), "wifi_coverage", "A-102")
    assert r.status == "fail" and r.building == "A" and r.room == "A-102"
    assert "-78" in r.message
    ev = r.evidence[0]
    assert ev["bssid"] == "10:4f:58:00:01:02" and ev["ap"] == "a-ap-102" and ev["signal_dbm"] == -78
    assert ev["time"] == "2026-11-20T08:00:00Z"


def test_covered_rooms_pass_with_evidence(campus, obs):
    res = evaluate_coverage(campus, obs)
    r = by(res, "wifi_coverage", "A-101")
    assert r.status == "pass" and r.evidence[0]["ap"] == "a-ap-101" and r.evidence[0]["snr_db"] == 35
    # AP-reported client RSSI, room taken from the AP
    r = by(res, "wifi_coverage", "A-201")
    assert r.status == "pass" and r.evidence[0]["source"] == "ap_client"
    # SNR computed from noise floor: -62 - (-92) = 30
    r = by(res, "wifi_coverage", "B-101")
    assert r.status == "pass" and r.evidence[0]["snr_db"] == 30


def test_ap_down_or_no_data_is_unknown_not_pass(campus, obs):
    res = evaluate_coverage(campus, obs)
    r = by(res, "wifi_coverage", "A-103")   # good reading, but from an AP that is down now
    assert r.status == "unknown" and "a-ap-103" in r.message
    assert any(e.get("ap") == "a-ap-103" and e.get("up") is False for e in r.evidence)
    r = by(res, "wifi_coverage", "A-104")
    assert r.status == "unknown" and "no survey data" in r.message


def test_only_covered_room_types_are_checked(campus, obs):
    rooms = {r.subject for r in evaluate_coverage(campus, obs) if r.check == "wifi_coverage"}
    assert rooms == {"A-101", "A-102", "A-103", "A-104", "A-201", "B-101"}   # no corridor, lab, server room
    p = Policy.model_validate({"wireless": {"room_types": ["lab"]}})
    assert {r.subject for r in evaluate_coverage(campus, obs, p) if r.check == "wifi_coverage"} == {"B-102"}


def test_thresholds_are_configurable(campus, obs):
    p = Policy.model_validate({"wireless": {"min_signal_dbm": -80, "min_snr_db": 10}})
    assert by(evaluate_coverage(campus, obs, p), "wifi_coverage", "A-102").status == "pass"
    p = Policy.model_validate({"wireless": {"min_signal_dbm": -50}})
    assert by(evaluate_coverage(campus, obs, p), "wifi_coverage", "A-101").status == "fail"
    p = Policy.model_validate({"wired": {"desk_min_mbps": 100}})
    assert by(evaluate_coverage(campus, obs, p), "desk_port_speed", "a-acc1 GE0/0/2").status == "pass"


def test_survey_without_campus_ssid_fails_and_stale_data_is_unknown(campus, obs):
    obs.wifi = [WifiReading(ssid="eduroam", bssid="20:4f:58:00:09:09", signal_dbm=-50, snr_db=40, room="A-101",
                            time=T - 3600),
                WifiReading(ssid="Campus", bssid="10:4f:58:00:01:02", signal_dbm=-50, snr_db=40, room="A-102",
                            time=T - 90 * 86400)]
    res = evaluate_coverage(campus, obs)
    r = by(res, "wifi_coverage", "A-101")
    assert r.status == "fail" and "not heard" in r.message and "eduroam" in r.message
    r = by(res, "wifi_coverage", "A-102")
    assert r.status == "unknown" and "older than" in r.message


def test_missing_snr_is_unknown(campus, obs):
    obs.wifi = [WifiReading(ssid="Campus", bssid=None, signal_dbm=-50, room="A-101", time=T)]
    r = by(evaluate_coverage(campus, obs), "wifi_coverage", "A-101")
    assert r.status == "unknown" and "SNR" in r.message


def test_slow_desk_port_fails_and_down_ports_do_not_count(campus, obs):
    res = evaluate_coverage(campus, obs)
    r = by(res, "desk_port_speed", "a-acc1 GE0/0/2")
    assert r.status == "fail" and r.room == "A-102" and "100 Mb/s" in r.message
    assert r.evidence[0]["speed_mbps"] == 100 and r.evidence[0]["oper_up"] is True
    assert r.evidence[0]["time"] == "2026-11-20T09:54:00Z"
    r = by(res, "desk_port_speed", "a-acc1 GE0/0/3")
    assert r.status == "n/a" and "down" in r.message
    assert by(res, "desk_port_speed", "a-acc1 GE0/0/1").status == "pass"


def test_port_without_data_is_unknown(campus, obs):
    obs.interfaces = [i for i in obs.interfaces if not (i.device == "a-acc1" and i.name == "GE0/0/1")]
    assert by(evaluate_coverage(campus, obs), "desk_port_speed", "a-acc1 GE0/0/1").status == "unknown"


def test_single_uplink_fails(campus, obs):
    res = evaluate_coverage(campus, obs)
    r = by(res, "uplink_redundancy", "a-acc2")
    assert r.status == "fail" and "1 uplink" in r.message and r.severity == "critical"
    assert [e["port"] for e in r.evidence] == ["Te1/0/1"]
    assert by(res, "uplink_redundancy", "a-acc1").status == "pass"
    assert by(res, "uplink_redundancy", "b-acc1").status == "pass"


def test_uplink_down_breaks_redundancy_and_slow_uplink_fails(campus, obs):
    for i in obs.interfaces:
        if i.device == "b-acc1" and i.name == "Te0/26":
            i.oper_up = False
        if i.device == "a-acc1" and i.name == "XGE0/0/2":
            i.speed_mbps = 1000
    res = evaluate_coverage(campus, obs)
    r = by(res, "uplink_redundancy", "b-acc1")
    assert r.status == "fail" and "only 1 of 2" in r.message
    assert by(res, "uplink_speed", "b-acc1 Te0/26").status == "n/a"
    r = by(res, "uplink_speed", "a-acc1 XGE0/0/2")
    assert r.status == "fail" and "1 Gb/s" in r.message


def test_lldp_discovered_uplink_counts(campus, obs):
    obs.lldp.append(LldpLink(device="a-acc2", local_port="Te1/0/2", remote_device="a-core", remote_port="Te1/0/9"))
    obs.interfaces.append(InterfaceObs(device="a-acc2", if_index=10202, name="Te1/0/2", speed_mbps=10000,
                                       oper_up=True, time=T))
    r = by(evaluate_coverage(campus, obs), "uplink_redundancy", "a-acc2")
    assert r.status == "pass"
    assert {e["source"] for e in r.evidence} == {"campus model", "lldp"}


def test_interbuilding_links(campus, obs):
    res = evaluate_coverage(campus, obs)
    assert by(res, "interbuilding_speed", "a-core Te1/1/1").status == "pass"
    for i in obs.interfaces:
        if i.device == "b-gw":
            i.speed_mbps = 1000
    assert by(evaluate_coverage(campus, obs), "interbuilding_speed", "b-gw XGE1/0/1").status == "fail"


def test_ipv6_on_l3_devices(campus, obs):
    res = evaluate_coverage(campus, obs)
    assert by(res, "ipv6", "a-core").status == "pass"
    r = by(res, "ipv6", "b-gw")
    assert r.status == "fail" and "link-local" in r.message
    assert not [r for r in res if r.check == "ipv6" and r.subject == "a-acc1"]   # access switch: not L3
    del obs.ipv6["a-core"]
    assert by(evaluate_coverage(campus, obs), "ipv6", "a-core").status == "unknown"


def test_agent_online_per_building(campus, obs):
    res = evaluate_coverage(campus, obs)
    assert by(res, "agent_online", "A").status == "pass"
    r = by(res, "agent_online", "B")
    assert r.status == "fail" and "agent-b" in r.message
    obs.agents = [AgentStatus(id="agent-a", building="A", online=True, last_seen=T - 3600)]
    res = evaluate_coverage(campus, obs)
    assert by(res, "agent_online", "A").status == "fail"    # silent for an hour
    assert "no monitoring agent" in by(res, "agent_online", "B").message


def test_building_filter_and_observations_roundtrip(campus, obs):
    res = evaluate_coverage(campus, obs, building="B")
    assert res and {r.building for r in res} == {"B"}
    again = Observations.from_dict(json.loads(obs.to_json()))
    assert [r.to_dict() for r in evaluate_coverage(campus, again)] == \
        [r.to_dict() for r in evaluate_coverage(campus, obs)]


def test_bad_observations_json_names_the_item(tmp_path):
    data = json.loads((FIX / "observations.json").read_text())
    bad = copy.deepcopy(data)
    bad["fdb"][2]["mac"] = "nope"
    with pytest.raises(ValueError, match=r"fdb\[2\]: not a MAC address"):
        Observations.from_dict(bad)
    bad = copy.deepcopy(data)
    bad["interfaces"][0]["speed"] = 1
    with pytest.raises(ValueError, match=r"interfaces\[0\]: unknown field\(s\) speed"):
        Observations.from_dict(bad)
    f = tmp_path / "o.json"
    f.write_text("{\n oops")
    with pytest.raises(ValueError, match="o.json:2: invalid JSON"):
        Observations.load(f)
    assert Observations.from_dict({"time": 1763632800000, "aps": {"x": False}}).aps["x"] == ApStatus("x", False)


def test_capacity_peak_concurrent_use(campus, obs):
    """"Supports peak concurrent use": clients per AP and uplink/backbone/inter-building
    utilisation against the policy, with evidence; no data / AP down is unknown, port down n/a."""
    obs.aps["a-ap-201"] = ApStatus(ap="a-ap-201", up=True, clients=64, time=T - 60)      # crowded lecture hall
    for i in obs.interfaces:
        if (i.device, i.name) == ("a-acc1", "XGE0/0/1"):
            i.util_in_pct, i.util_out_pct = 35.0, 93.5                                    # saturated uplink
        if (i.device, i.name) == ("a-acc1", "XGE0/0/2"):
            i.util_in_pct, i.util_out_pct = 12.0, 20.0
        if (i.device, i.name) == ("a-core", "Te1/1/1"):
            i.oper_up = False
            i.util_in_pct = 0.0
    res = evaluate_coverage(campus, obs, building="A")
    r = by(res, "ap_client_load", "a-ap-201")
    assert r.status == "fail" and r.room == "A-201" and "64 clients (policy: <= 50 clients)" in r.message
    assert r.evidence == [{"what": "ap load", "ap": "a-ap-201", "room": "A-201", "up": True, "clients": 64,
                           "time": "2026-11-20T09:59:00Z"}]
    assert by(res, "ap_client_load", "a-ap-101").status == "pass"                        # 31 clients
    assert by(res, "ap_client_load", "a-ap-103").status == "unknown"                     # AP down
    r = by(res, "link_utilisation", "a-acc1 XGE0/0/1")
    assert r.status == "fail" and "93.5 %" in r.message
    assert r.evidence[0]["util_out_pct"] == 93.5 and r.evidence[0]["port"] == "XGE0/0/1"
    assert by(res, "link_utilisation", "a-acc1 XGE0/0/2").status == "pass"
    assert by(res, "link_utilisation", "a-core Te1/1/1").status == "n/a"                # interbuilding link down
    assert by(res, "link_utilisation", "a-acc2 Te1/0/1").status == "unknown"            # no utilisation collected
    assert not [r for r in res if r.check == "link_utilisation" and "GE0/0/" in r.subject
                and "XGE" not in r.subject]                                                # desk ports not judged
    p = Policy.model_validate({"capacity": {"max_clients_per_ap": 80, "max_link_util_pct": 95}})
    res = evaluate_coverage(campus, obs, p, building="A")
    assert by(res, "ap_client_load", "a-ap-201").status == "pass"
    assert by(res, "link_utilisation", "a-acc1 XGE0/0/1").status == "pass"
    p = Policy.model_validate({"capacity": {"enabled": False}})
    assert not [r for r in evaluate_coverage(campus, obs, p) if r.check in ("ap_client_load", "link_utilisation")]
