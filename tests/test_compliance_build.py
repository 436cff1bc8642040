"""Observations built from collector-shaped rows give the same findings as the JSON fixture."""
from pathlib import Path

from collector.campus.model import load_campus
from collector.compliance.build import observations_from_collector, observations_from_store
from collector.compliance.coverage import evaluate_coverage
from collector.compliance.inventory import evaluate_inventory
from collector.campus.model import load_registry

FIX = Path(__file__).parent / "fixtures" / "campus"
NOW = 1795168800.0            # 2026-11-20T10:00:00Z
MS = int(NOW * 1000)


def rows():
    devices = [
        {"id": "a-acc1", "agent": "agent-a", "building": "A", "facts_ms": MS - 60000, "last_seen_ms": MS - 5000,
         "reachable": True,
         "facts": {"model": "S5735-L24T4X-A1", "firmware": "V200R022C00SPC500", "serial": "2102351HLS10K1000001",
                   "mac": "00:e0:fc:00:00:02", "sysName": "a-acc1.campus.example",
                   "lldp": [{"local_port": "XGE0/0/1", "ifIndex": 25, "sys_name": "A-CORE.campus.example",
                             "port_id": "Te1/0/1"},
                            {"local_port": "XGE0/0/2", "ifIndex": 26, "chassis_id": "00:a0:c9:00:00:01",
                             "port_id": "Te1/0/2"}],
                   "fdb": [{"mac": "00:1b:1c:00:00:12", "vlan": 50, "ifIndex": 5, "ifName": "GE0/0/5",
                            "status": "learned"},
                           {"mac": "00:e0:fc:00:00:02", "vlan": 1, "ifIndex": None, "status": "self"}]}},
        {"id": "a-core", "agent": "agent-a", "building": "A", "facts_ms": MS - 60000, "last_seen_ms": MS - 5000,
         "reachable": True,
         "facts": {"model": "C9300-48P", "sysName": "a-core", "mac": "00:a0:c9:00:00:01",
                   "ip_addresses": [{"ip": "10.0.0.1", "family": 4}, {"ip": "fe80::1", "family": 6},
                                    {"ip": "2001:db8:1::1", "family": 6}],
                   "arp": [{"ip": "10.0.5.12", "mac": "00:1b:1c:00:00:12"}]}},
        {"id": "wlc-1", "agent": "agent-a", "building": "A", "facts_ms": MS, "last_seen_ms": MS, "reachable": True,
         "facts": {"model": "Aruba 7210"}},
        {"id": "probe-a102", "agent": "agent-a", "building": "A", "facts_ms": MS, "last_seen_ms": MS,
         "reachable": True, "facts": {}},
    ]
    latest_rows = {
        ("a-acc1", "interface"): [({"ifIndex": "2", "ifName": "GE0/0/2"}, MS - 1000,
                                   {"speed_mbps": 100, "oper_up": True, "admin_up": True}),
                                  ({"ifIndex": "25", "ifName": "XGE0/0/1"}, MS - 1000,
                                   {"speed_mbps": 10000, "oper_up": True}),
                                  ({"ifIndex": "26", "ifName": "XGE0/0/2"}, MS - 1000,
                                   {"speed_mbps": 10000, "oper_up": False})],
        ("wlc-1", "wifi_ap"): [({"ap": "a-ap-103", "ap_mac": "10:4f:58:00:01:03"}, MS, {"up": False}),
                               ({"ap": "AP-201-NAME", "ap_mac": "10:4f:58:00:02:01"}, MS, {"up": True})],
        ("wlc-1", "wifi_client"): [({"mac": "aa:aa:aa:00:00:01", "ap": "a-ap-201"}, MS,
                                    {"rssi_dbm": -58, "snr_db": 33})],
        ("probe-a102", "wifi_survey"): [({"ssid": "Campus", "bssid": "10:4f:58:00:01:02", "room": "A-102"}, MS,
                                         {"signal_dbm": -79, "noise_dbm": -90})],
    }
    agents = [{"id": "agent-a", "building": "A", "online": True, "last_seen_ms": MS - 2000},
              {"id": "agent-b", "building": "B", "online": False, "last_seen_ms": MS - 7200000}]
    return devices, agents, lambda d, m: latest_rows.get((d, m), [])


def test_collector_rows_to_observations():
    campus = load_campus(FIX / "campus.yaml").value
    devices, agents, latest = rows()
    obs = observations_from_collector(devices, agents, latest, campus, NOW)
    assert {(l.local_port, l.remote_device) for l in obs.lldp} == {("XGE0/0/1", "a-core"), ("XGE0/0/2", "a-core")}
    assert [(e.switch, e.port, e.mac) for e in obs.fdb] == [("a-acc1", "GE0/0/5", "00:1b:1c:00:00:12")]
    assert obs.ipv6["a-core"] == ["fe80::1", "2001:db8:1::1"] and "a-acc1" not in obs.ipv6
    assert obs.aps["a-ap-103"].up is False and obs.aps["a-ap-201"].up is True    # name resolved via BSSID
    assert "lldp" not in obs.devices["a-acc1"].facts and obs.devices["a-acc1"].facts_time == NOW - 60
    assert obs.interface("a-acc1", "ge0/0/2").speed_mbps == 100

    res = {(r.check, r.subject): r for r in evaluate_coverage(campus, obs)}
    assert res[("desk_port_speed", "a-acc1 GE0/0/2")].status == "fail"
    assert res[("uplink_redundancy", "a-acc1")].status == "fail"          # one of two uplinks down
    assert res[("wifi_coverage", "A-102")].status == "fail"               # survey probe: -79 dBm
    assert res[("wifi_coverage", "A-201")].status == "pass"               # AP client RSSI, no SSID tag
    assert res[("wifi_coverage", "A-103")].status == "unknown"
    assert res[("ipv6", "a-core")].status == "pass"
    assert res[("agent_online", "A")].status == "pass" and res[("agent_online", "B")].status == "fail"

    reg = load_registry(FIX / "assets.csv", campus=campus).value
    inv = {(r.check, r.subject): r for r in evaluate_inventory(campus, reg, obs)}
    assert inv[("inventory_moved", "AT-0012")].status == "fail"           # FDB from facts: A-103, not A-102


def test_from_store_wrapper():
    campus = load_campus(FIX / "campus.yaml").value
    devices, agents, latest = rows()

    class FakeStore:
        def devices(self):
            return devices

        def agents(self, now_ms, offline_after_s):
            assert now_ms == MS and offline_after_s == 180
            return agents

        def latest(self, d, m):
            return latest(d, m)

    obs = observations_from_store(FakeStore(), campus, NOW)
    assert len(obs.devices) == 4 and len(obs.agents) == 2 and obs.time == NOW


def test_survey_without_room_tag_takes_the_surveying_devices_room():
    """A survey sample without a ``room`` tag: the room of the surveying device in the campus model
    (here an AP scanning its neighbours); channel may come as a tag (netwatch) or a field."""
    campus = load_campus(FIX / "campus.yaml").value
    devices = [{"id": "a-ap-101", "agent": "agent-a", "building": "A", "facts": {}, "reachable": True},
               {"id": "probe-x", "agent": "agent-a", "building": "A", "facts": {}, "reachable": True}]
    survey = {"a-ap-101": [({"ssid": "Campus", "bssid": "10:4f:58:00:02:01", "channel": "11", "security": "WPA2"},
                            MS, {"signal_dbm": -52, "noise_dbm": -95})],
              "probe-x": [({"ssid": "Campus", "bssid": "10:4f:58:00:02:01"}, MS, {"signal_dbm": -52})]}
    obs = observations_from_collector(devices, [], lambda d, m: survey.get(d, []) if m == "wifi_survey" else [],
                                      campus, NOW)
    got = {(w.agent, w.room, w.channel, w.snr) for w in obs.wifi}
    # probe-x is not in the campus model and sent no room: the reading has no room (not guessed)
    assert got == {("agent-a", "A-101", 11, 43), ("agent-a", None, None, None)}
    r = next(r for r in evaluate_coverage(campus, obs, building="A") if r.subject == "A-101")
    assert r.status == "pass" and r.evidence[0]["signal_dbm"] == -52
