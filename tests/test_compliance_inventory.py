from pathlib import Path

import pytest

from collector.campus.model import Asset, load_campus, load_registry
from collector.compliance.inventory import discover, evaluate_inventory, where_is
from collector.compliance.observations import ArpEntry, FdbEntry, Observations, Sighting, to_epoch

FIX = Path(__file__).parent / "fixtures" / "campus"
T = to_epoch("2026-11-20T10:00:00Z")


@pytest.fixture(scope="module")
def campus():
    return load_campus(FIX / "campus.yaml", strict=True).value


@pytest.fixture
def registry(campus):
    return load_registry(FIX / "assets.csv", strict=True, campus=campus).value


@pytest.fixture
def obs():
    return Observations.load(FIX / "observations.json")


def findings(res, check):
    return {r.subject: r for r in res if r.check == check}


def test_every_deliberate_inventory_gap_is_found(campus, registry, obs):
    res = evaluate_inventory(campus, registry, obs)
    missing = findings(res, "inventory_missing")
    assert set(missing) == {"AT-0014", "AT-0015"}
    assert "never seen" in missing["AT-0014"].message
    assert "20 days" in missing["AT-0015"].message and missing["AT-0015"].building == "A"
    assert missing["AT-0015"].evidence[1]["last_seen"] == "2026-10-31T10:00:00Z"

    unknown = findings(res, "inventory_unknown")
    assert set(unknown) == {"de:ad:be:ef:00:01"}
    u = unknown["de:ad:be:ef:00:01"]
    assert u.building == "A" and u.room == "A-201" and "a-acc2 Gi1/0/1" in u.message and "10.0.5.77" in u.message

    moved = findings(res, "inventory_moved")
    assert set(moved) == {"AT-0012"}
    m = moved["AT-0012"]
    assert "A-103 instead of A-102" in m.message
    loc = [e for e in m.evidence if e["what"] == "fdb location"][0]
    assert (loc["switch"], loc["port"], loc["room"]) == ("a-acc1", "GE0/0/5", "A-103")

    wrong = findings(res, "inventory_wrong_ip")
    assert set(wrong) == {"AT-0013"}
    assert "10.0.5.99" in wrong["AT-0013"].message and "10.0.5.30" in wrong["AT-0013"].message
    assert wrong["AT-0013"].building == "B"

    ok = findings(res, "inventory_ok")
    assert {"AT-0001", "AT-0002", "AT-0003", "AT-0004", "AT-0005", "AT-0006", "AT-0010", "AT-0011"} == set(ok)
    assert {r.status for r in res if r.check != "inventory_ok"} == {"fail"}


def test_trunk_ports_are_not_locations(campus, obs):
    seen = discover(campus, obs)
    pc = seen["00:1b:1c:00:00:12"]
    assert {(l.switch, l.edge) for l in pc.locations} == {("a-acc1", True), ("a-core", False)}
    assert pc.edge_location().switch == "a-acc1"
    assert "00:00:5e:00:01:32" not in seen      # VRRP virtual MAC ignored


def test_crowded_unmodelled_port_is_not_a_location(campus, registry, obs):
    for i in range(6):
        obs.fdb.append(FdbEntry(switch="b-acc1", port="Gi0/7", mac=f"02:00:00:00:00:0{i}", last_seen=T))
    seen = discover(campus, obs)
    assert not seen["02:00:00:00:00:01"].locations[0].edge
    # still unknown devices (seen, not registered), just without a location
    u = findings(evaluate_inventory(campus, registry, obs), "inventory_unknown")
    assert "02:00:00:00:00:03" in u and u["02:00:00:00:00:03"].room is None


def test_moved_by_registered_port(campus, registry, obs):
    for e in obs.fdb:
        if e.mac == "00:26:ab:00:00:11" and e.switch == "a-acc1":
            e.port, e.if_index = "GE0/0/4", 4
    r = findings(evaluate_inventory(campus, registry, obs), "inventory_moved")["AT-0011"]
    assert "a-acc1 GE0/0/4 instead of a-acc1 GE0/0/1" in r.message and "room A-104 instead of A-101" in r.message


def test_ip_conflict_and_mismatch(campus, registry, obs):
    # an unregistered host uses the printer's assigned address
    obs.arp.append(ArpEntry(ip="10.0.5.30", mac="de:ad:be:ef:00:02", last_seen=T))
    # the switch reports another serial than the registry
    obs.devices["a-acc1"].facts["serial"] = "2102351HLS10K9999999"
    res = evaluate_inventory(campus, registry, obs)
    conflicts = [r for r in res if r.check == "inventory_wrong_ip" and "used by" in r.message]
    assert len(conflicts) == 1 and "de:ad:be:ef:00:02" in conflicts[0].message
    mm = findings(res, "inventory_mismatch")
    assert "2102351HLS10K9999999" in mm["AT-0002"].message


def test_missing_window_is_configurable(campus, registry, obs):
    from collector.compliance.policy import Policy
    p = Policy.model_validate({"inventory": {"missing_after_days": 30}})
    res = evaluate_inventory(campus, registry, obs, p)
    assert set(findings(res, "inventory_missing")) == {"AT-0014"}
    assert "AT-0015" in findings(res, "inventory_ok")


def test_sightings_make_devices_seen(campus, registry, obs):
    registry.upsert([Asset(asset_tag="AT-0099", device_type="camera", mac="44:19:b6:00:00:99",
                           assigned_ip="10.0.6.9", room="B-101")])
    obs.sightings.append(Sighting(mac="44:19:b6:00:00:99", ip="10.0.6.9", source="onvif", time=T - 60,
                                  building="B", facts={"model": "DS-2CD2043G2-I", "serial": "X99"}))
    res = evaluate_inventory(campus, registry, obs)
    assert "AT-0099" in findings(res, "inventory_ok")
    obs.sightings.append(Sighting(mac="44:19:b6:00:00:98", ip="10.0.6.8", source="watch", time=T, building="B"))
    u = findings(evaluate_inventory(campus, registry, obs, building="B"), "inventory_unknown")
    assert u["44:19:b6:00:00:98"].building == "B"


def test_building_filter(campus, registry, obs):
    res = evaluate_inventory(campus, registry, obs, building="B")
    assert res and {r.building for r in res} == {"B"}
    assert "AT-0014" in findings(res, "inventory_missing")


def test_where_is_mac_ip_serial_asset_device(campus, registry, obs):
    w = where_is("00-1B-1C-00-00-12", campus, registry, obs)
    assert w["kind"] == "mac"
    m = w["matches"][0]
    assert (m["switch"], m["port"], m["room"], m["building"]) == ("a-acc1", "GE0/0/5", "A-103", "A")
    assert m["asset_tag"] == "AT-0012" and m["registered_room"] == "A-102"
    assert m["last_seen"] == "2026-11-20T09:54:00Z" and m["ips"] == ["10.0.5.12"]
    assert [l["switch"] for l in m["locations"]] == ["a-core", "a-acc1"]   # newest first, trunk included

    w = where_is("10.0.5.77", campus, registry, obs)
    assert w["kind"] == "ip" and w["matches"][0]["mac"] == "de:ad:be:ef:00:01"
    assert w["matches"][0]["port"] == "Gi1/0/1" and w["matches"][0]["asset_tag"] is None

    w = where_is("FOC1930W0AB", campus, registry, obs)
    assert w["kind"] == "serial" and w["matches"][0]["device"] == "a-acc2"
    assert w["matches"][0]["asset_tag"] == "AT-0003"

    w = where_is("AT-0011", campus, registry, obs)
    assert w["kind"] == "asset" and w["matches"][0]["room"] == "A-101"
    assert w["matches"][0]["port"] == "GE0/0/1"

    w = where_is("a-cam-1", campus, registry, obs)
    assert w["kind"] == "device" and w["matches"][0]["switch"] == "a-acc2"

    w = where_is("AT-0014", campus, registry, obs)
    assert w["matches"][0]["note"].startswith("registered but never seen")
    assert where_is("00:00:00:00:00:42", campus, registry, obs)["matches"] == []
    assert where_is("nothing-like-this", campus, registry, obs)["kind"] == "none"


def test_where_is_assigned_ip_of_asset_seen_elsewhere(campus, registry, obs):
    # AT-0013 is assigned 10.0.5.30 but uses 10.0.5.99: the lookup by its assigned IP still finds it
    w = where_is("10.0.5.30", campus, registry, obs)
    assert w["kind"] == "ip" and w["matches"][0]["asset_tag"] == "AT-0013"
    assert w["matches"][0]["ips"] == ["10.0.5.99"] and w["matches"][0]["switch"] == "b-acc1"


def test_missing_for_n_days_remembers_last_seen_beyond_the_live_window(tmp_path, campus, registry, obs):
    """Live FDB/ARP only reach back topology_fresh_s (minutes); the CampusStore remembers when each
    MAC was last discovered, so an endpoint switched off overnight is not "never seen", and one
    gone longer than inventory.missing_after_days (7) is "not seen for N days"."""
    from collector.campus.store import CampusStore
    from collector.compliance.build import with_remembered
    DAY = 86400.0
    mac = "00:1b:1c:00:00:12"
    tag = next(a.asset_tag for a in registry.assets.values() if a.mac == mac)
    store = CampusStore(tmp_path / "c.db")
    with_remembered(obs, campus, store)                          # day 0: seen in FDB/ARP, remembered
    row = next(r for r in store.seen() if r["mac"] == mac)
    assert row["ip"] == "10.0.5.12" and abs(row["last_seen"] - T) < 3600

    def later(days: float, memory: bool = True) -> dict:
        o = Observations.load(FIX / "observations.json")
        o.time = T + days * DAY
        o.fdb = [e for e in o.fdb if e.mac != mac]               # gone from the live tables
        o.arp = [e for e in o.arp if e.mac != mac]
        o.sightings = [s for s in o.sightings if s.mac != mac]
        if memory:
            with_remembered(o, campus, store)
        return {r.subject: r for r in evaluate_inventory(campus, registry, o) if r.subject == tag
                and r.check == "inventory_missing"}

    assert "never seen" in later(1, memory=False)[tag].message  # without memory: missing at once
    assert later(1) == {}                                        # remembered: seen yesterday, not missing
    r = later(10)[tag]
    assert r.status == "fail" and "not seen for 10 days" in r.message
    assert any(e.get("source") == "remembered" or "remembered" in str(e) for e in r.evidence)
    # a new discovery moves the memory forward; an older one never moves it back
    store.remember_seen([(mac, "10.0.5.12", "A", "fdb", T + 20 * DAY)])
    store.remember_seen([(mac, "10.0.5.99", "A", "fdb", T + 5 * DAY)])
    assert [r["last_seen"] for r in store.seen() if r["mac"] == mac] == [T + 20 * DAY]
    assert later(21) == {}
