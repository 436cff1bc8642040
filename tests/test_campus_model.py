from pathlib import Path

import pytest

from campus_sense.yamlconf import ConfigError
from collector.campus.model import (Asset, CampusImportError, Registry, load_campus, load_registry,
                                    normalize_mac)
from collector.campus.store import CampusStore
from tests.pg_fixture import pg_server, store_target  # noqa: F401 - store tests on both backends

FIX = Path(__file__).parent / "fixtures" / "campus"
EXAMPLES = Path(__file__).parent.parent / "firmware_configs" / "examples"


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_yaml_campus_imports_hierarchy():
    res = load_campus(FIX / "campus.yaml", strict=True)
    m = res.value
    assert res.ok and not res.issues
    assert set(m.buildings) == {"A", "B"}
    assert m.rooms["A-102"].type == "teaching"
    assert m.rooms["A-102"].building == "A" and m.rooms["A-102"].floor == "A-1"
    assert m.floors["A-2"].level == 2
    assert m.device_building("a-ap-101") == "A"
    assert m.port("a-acc1", "ge0/0/2").room == "A-102"
    assert m.ap_for_bssid("10-4F-58-00-01-03").id == "a-ap-103"
    assert m.devices["a-core"].routes and not m.devices["a-acc1"].routes


def test_examples_import_cleanly():
    c = load_campus([EXAMPLES / "campus.yaml"], strict=True).value
    load_registry(EXAMPLES / "assets.csv", strict=True, campus=c)
    csv = load_campus([EXAMPLES / "rooms.csv", EXAMPLES / "devices.csv", EXAMPLES / "ports.csv"], strict=True).value
    assert set(csv.rooms) == set(c.rooms)
    assert set(csv.ports) == set(c.ports)


ROOMS_CSV = """site,building,floor,room,name,type
north,A,A-1,A-101,Classroom 101,teaching
north,A,A-1,A-102,Classroom 102,clasroom
north,A,A-1,A-103,Classroom 103,teaching
north,A,A-1,,No id,office
north,A,A-1,A 104,Bad id,office
"""

DEVICES_CSV = """id,type,role,room,model,ip,mac,l3
sw1,switch,access,A-101,S5735-L24T4X-A1,10.0.0.2,00:e0:fc:00:00:02,
sw2,switch,access,A-999,S5735,,,
sw3,swich,access,A-101,,,,
gw1,router,gateway,A-103,,10.0.0.300,,yes
gw2,router,gateway,A-103,,10.0.0.1,zz:zz,true
core,switch,core,A-103,,10.0.0.1,,true
"""

PORTS_CSV = """device,port,role,room,peer
sw1,GE0/0/1,desk,A-101,
sw1,GE0/0/2,desk,A-102,
sw1,GE0/0/3,desk,,
sw1,XGE0/0/1,uplink,,core
sw1,XGE0/0/2,uplink,,nosuch
ghost,GE1,desk,A-101,
sw1,GE0/0/9,deks,A-101,
"""


def test_csv_bad_rows_are_named_and_valid_rows_imported(tmp_path):
    files = [write(tmp_path, "rooms.csv", ROOMS_CSV), write(tmp_path, "devices.csv", DEVICES_CSV),
             write(tmp_path, "ports.csv", PORTS_CSV)]
    res = load_campus(files)
    m = res.value
    msgs = [str(i) for i in res.errors]
    text = "\n".join(msgs)
    # rooms.csv: bad type on row 3, missing id on row 5, bad id on row 6
    assert any("rooms.csv: row 3, column 'type'" in s and "teaching" in s for s in msgs), text
    assert any("rooms.csv: row 5, column 'room'" in s for s in msgs), text
    assert any("rooms.csv: row 6, column 'room'" in s for s in msgs), text
    assert set(m.rooms) == {"A-101", "A-103"}
    # devices.csv
    assert any("devices.csv: row 3, column 'room'" in s and "A-999" in s for s in msgs), text
    assert any("devices.csv: row 4, column 'type'" in s for s in msgs), text
    assert any("devices.csv: row 5, column 'ip'" in s and "10.0.0.300" in s for s in msgs), text
    assert any("devices.csv: row 6, column 'mac'" in s for s in msgs), text
    assert set(m.devices) == {"sw1", "core"}
    assert m.devices["core"].l3 is True
    assert m.devices["sw1"].mac == "00:e0:fc:00:00:02"
    # ports.csv: unknown room A-102 (its row was bad), desk without room, unknown peer, unknown device, bad role
    assert any("ports.csv: row 3, column 'room'" in s and "A-102" in s for s in msgs), text
    assert any("ports.csv: row 4, column 'room'" in s and "desk port" in s for s in msgs), text
    assert any("ports.csv: row 6, column 'peer'" in s and "nosuch" in s for s in msgs), text
    assert any("ports.csv: row 7, column 'device'" in s and "ghost" in s for s in msgs), text
    assert any("ports.csv: row 8, column 'role'" in s for s in msgs), text
    assert set(m.ports) == {("sw1", "GE0/0/1"), ("sw1", "XGE0/0/1")}
    assert res.rows_bad == len(res.errors)


def test_strict_mode_raises_with_every_error(tmp_path):
    f = write(tmp_path, "rooms.csv", ROOMS_CSV)
    with pytest.raises(CampusImportError) as e:
        load_campus(f, strict=True)
    assert len(e.value.issues) == 3
    assert "rooms.csv: row 3, column 'type'" in str(e.value)


def test_strict_mode_passes_on_clean_file():
    assert load_campus(FIX / "campus.yaml", strict=True).ok


BAD_YAML = """sites:
  - id: north
    buildings:
      - id: A
        floors:
          - id: A-1
            rooms:
              - {id: A-101, type: teaching}
              - id: A-102
                type: kitchen
              - {id: A-103, type: office, colour: red}
devices:
  - {id: sw1, type: switch, role: access, room: A-404}
  - {id: sw2, type: switch, role: access, room: A-101}
ports:
  - {device: sw2, port: GE1, role: desk, room: A-103}
"""


def test_yaml_errors_name_line_and_field(tmp_path):
    f = write(tmp_path, "campus.yaml", BAD_YAML)
    res = load_campus(f)
    msgs = [str(i) for i in res.errors]
    text = "\n".join(msgs)
    assert any("campus.yaml: row 10, column 'sites.0.buildings.0.floors.0.rooms.1.type'" in s for s in msgs), text
    assert any("row 11" in s and "colour" in s and "unknown field" in s for s in msgs), text
    assert any("row 13, column 'devices.0.room'" in s and "A-404" in s for s in msgs), text
    assert set(res.value.rooms) == {"A-101"}
    assert set(res.value.devices) == {"sw2"}
    # the port refers to A-103, which was rejected
    assert any("row 16, column 'ports.0.room'" in s for s in msgs), text
    with pytest.raises(CampusImportError):
        load_campus(f, strict=True)


def test_unparseable_files_raise_config_error(tmp_path):
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_campus(write(tmp_path, "x.yaml", "sites: [\n"))
    with pytest.raises(ConfigError, match="cannot tell what this CSV holds"):
        load_campus(write(tmp_path, "x.csv", "foo,bar\n1,2\n"))
    with pytest.raises(ConfigError, match="missing required column"):
        load_registry(write(tmp_path, "r.csv", "model,serial\nx,y\n"))
    with pytest.raises(ConfigError, match="unsupported"):
        load_campus(write(tmp_path, "x.txt", ""))


REG_CSV = """asset_tag,device_type,model,serial,mac,assigned_ip,room,owner,colour
AT-1,pc,OptiPlex,S1,00-1B-1C-00-00-01,10.0.5.1,A-101,Wang,red
AT-2,pc,OptiPlex,S2,not-a-mac,10.0.5.2,A-101,Li,
AT-3,pc,OptiPlex,S3,001b.1c00.0003,10.0.5.999,A-101,Li,
AT-1,pc,OptiPlex,S4,00:1b:1c:00:00:04,10.0.5.4,A-101,Li,
AT-5,pc,OptiPlex,S5,00:1b:1c:00:00:01,10.0.5.5,A-101,Li,
,pc,OptiPlex,S6,00:1b:1c:00:00:06,10.0.5.6,A-101,Li,
AT-7,printer,M404,S7,001B1C000007,10.0.5.7,Z-999,Office,
"""


def test_registry_csv_bad_rows(tmp_path):
    campus = load_campus(FIX / "campus.yaml").value
    res = load_registry(write(tmp_path, "assets.csv", REG_CSV), campus=campus)
    msgs = [str(i) for i in res.issues]
    text = "\n".join(msgs)
    assert any("row 1, column 'colour'" in s and "unknown column" in s for s in msgs), text
    assert any("assets.csv: row 3, column 'mac'" in s and "not-a-mac" in s for s in msgs), text
    assert any("assets.csv: row 4, column 'assigned_ip'" in s for s in msgs), text
    assert any("assets.csv: row 5, column 'asset_tag'" in s and "duplicate" in s for s in msgs), text
    assert any("assets.csv: row 6, column 'mac'" in s and "AT-1" in s for s in msgs), text
    assert any("assets.csv: row 7, column 'asset_tag'" in s for s in msgs), text
    assert any(i.severity == "warning" and i.row == 8 and i.column == "room" and "Z-999" in i.message
               for i in res.issues), text
    reg = res.value
    assert set(reg.assets) == {"AT-1", "AT-7"}
    assert reg.assets["AT-1"].mac == "00:1b:1c:00:00:01"
    assert reg.assets["AT-7"].mac == "00:1b:1c:00:00:07"
    with pytest.raises(CampusImportError) as e:
        load_registry(write(tmp_path, "assets.csv", REG_CSV), strict=True)
    assert len(e.value.issues) == 5


def test_registry_yaml(tmp_path):
    f = write(tmp_path, "assets.yaml", """assets:
  - {asset_tag: AT-1, device_type: pc, mac: "00:1b:1c:00:00:01", assigned_ip: 10.0.5.1, room: A-101}
  - asset_tag: AT-2
    device_type: pc
    assigned_ip: 10.0.5
""")
    res = load_registry(f)
    assert set(res.value.assets) == {"AT-1"}
    assert any(i.row == 5 and i.column == "assets.1.assigned_ip" for i in res.errors), [str(i) for i in res.issues]


def test_reimport_updates_in_place(tmp_path, store_target):
    db = CampusStore(store_target("c"))     # SQLite and PostgreSQL
    v1 = write(tmp_path, "a1.csv", "asset_tag,device_type,mac,assigned_ip,room,owner\n"
                                   "AT-1,pc,00:1b:1c:00:00:01,10.0.5.1,A-101,Wang\n"
                                   "AT-2,pc,00:1b:1c:00:00:02,10.0.5.2,A-101,Li\n")
    st = db.save_registry(load_registry(v1).value)
    assert sorted(st.added) == ["AT-1", "AT-2"]
    v2 = write(tmp_path, "a2.csv", "asset_tag,device_type,mac,assigned_ip,room,owner\n"
                                   "AT-1,pc,00:1b:1c:00:00:01,10.0.5.1,A-102,Wang\n"
                                   "AT-3,pc,00:1b:1c:00:00:03,10.0.5.3,A-101,Zhao\n")
    st = db.save_registry(load_registry(v2).value)
    assert st.updated == ["AT-1"] and st.added == ["AT-3"] and not st.removed
    reg = db.load_registry()
    assert set(reg.assets) == {"AT-1", "AT-2", "AT-3"}
    assert reg.assets["AT-1"].room == "A-102"
    st = db.save_registry(load_registry(v2).value, prune=True)
    assert st.removed == ["AT-2"] and sorted(st.unchanged) == ["AT-1", "AT-3"]
    assert set(db.load_registry().assets) == {"AT-1", "AT-3"}
    # in-memory registry behaves the same
    r = Registry()
    r.upsert([Asset(asset_tag="X", room="A")])
    s = r.upsert([Asset(asset_tag="X", room="B")])
    assert s.updated == ["X"] and r.assets["X"].room == "B"


def test_campus_store_roundtrip_and_reimport(tmp_path, store_target):
    db = CampusStore(store_target("c"))
    m = load_campus(FIX / "campus.yaml").value
    st = db.save_campus(m)
    assert len(st["rooms"].added) == len(m.rooms)
    back = db.load_campus()
    assert back.rooms == m.rooms and back.ports == m.ports and back.devices == m.devices
    # re-import with one room retyped, via CSV on top of the stored model
    f = write(tmp_path, "rooms.csv", "site,building,floor,room,name,type\nnorth,A,A-1,A-105,Corridor 1F,teaching\n")
    upd = load_campus(f).value
    st = db.save_campus(upd)
    assert st["rooms"].updated == ["A-105"]
    back = db.load_campus()
    assert back.rooms["A-105"].type == "teaching" and len(back.rooms) == len(m.rooms)
    assert CampusStore(store_target("c")).load_campus().rooms["A-105"].type == "teaching"


def test_normalize_mac():
    assert normalize_mac("AABB.CCDD.EEFF") == "aa:bb:cc:dd:ee:ff"
    assert normalize_mac("aa-bb-cc-dd-ee-ff") == "aa:bb:cc:dd:ee:ff"
    assert normalize_mac("") is None
    with pytest.raises(ValueError):
        normalize_mac("aa:bb")


def test_partial_reimport_on_top_of_stored_model(tmp_path, store_target):
    db = CampusStore(store_target("c"))
    db.save_campus(load_campus(FIX / "campus.yaml").value)
    # a ports file alone refers to devices and rooms that are only in the DB
    f = write(tmp_path, "ports.csv", "device,port,role,room,peer\n"
                                     "a-acc1,GE0/0/2,desk,A-101,\n"
                                     "a-acc1,GE0/0/30,desk,A-105,\n"
                                     "a-acc1,GE0/0/31,desk,Z-1,\n")
    assert load_campus(f).errors          # standalone: unknown devices
    res = load_campus(f, base=db.load_campus())
    assert [(i.row, i.column) for i in res.errors] == [(4, "room")]
    st = db.save_campus(res.value)
    assert st["ports"].added == ["a-acc1/GE0/0/30"] and st["ports"].updated == ["a-acc1/GE0/0/2"]
    back = db.load_campus()
    assert back.ports[("a-acc1", "GE0/0/2")].room == "A-101" and len(back.rooms) == 10
    # prune only touches the kinds the new model has
    rooms_only = load_campus(write(tmp_path, "rooms.csv", "building,room,type\nA,A-101,teaching\n")).value
    st = db.save_campus(rooms_only, prune=True)
    after = db.load_campus()
    assert set(after.rooms) == {"A-101"} and len(after.ports) == len(back.ports)


def test_csv_from_a_chinese_asset_system(tmp_path):
    """GB18030, semicolons, Chinese headers and room types: read, with a warning for the encoding."""
    reg = tmp_path / "资产.csv"
    reg.write_bytes("资产编号;设备类型;型号;序列号;MAC地址;IP地址;房间;责任人\n"
                    "AT-1;投影仪;EB-2247U;X4JE;00:26:ab:00:00:11;10.0.5.20;A-101;王老师\n"
                    "AT-2;电脑;OptiPlex;CN0;zz;10.0.5.21;A-101;李老师\n".encode("gb18030"))
    res = load_registry(reg)
    assert set(res.value.assets) == {"AT-1"} and res.value.assets["AT-1"].owner == "王老师"
    assert any(i.severity == "warning" and "GB18030" in i.message for i in res.issues)
    assert [(i.row, i.column) for i in res.errors] == [(3, "mac")]
    rooms = write(tmp_path, "rooms.csv", "# exported 2026-11-20\n楼宇,房间,名称,类型\nA,A-101,一年级一班,教室\n"
                                         "A,A-102,机房,弱电间\nA,A-103,x,厕所\n")
    res = load_campus(rooms)
    assert res.value.rooms["A-101"].type == "teaching" and res.value.rooms["A-102"].type == "server"
    assert [(i.row, i.column) for i in res.errors] == [(5, "type")]


def test_compliance_history_and_seen_macs(store_target):
    """Compliance history rows and remembered MACs (SQLite and PostgreSQL)."""
    db = CampusStore(store_target("h"))
    rep = {"kind": "coverage", "generated_at_epoch": 1000.0, "summary": {"status": "fail", "score": 50},
           "buildings": [{"id": "A", "summary": {"status": "pass", "score": 100}, "rooms": [], "checks": []}]}
    assert db.record_report(rep) == 2
    assert [h["score"] for h in db.history("coverage")] == [50]                    # campus-wide
    assert [h["status"] for h in db.history("coverage", building="A")] == ["pass"]
    db.remember_seen([("m1", "10.0.0.1", "A", "fdb", 5.0)])
    db.remember_seen([("m1", None, None, "arp", 6.0), ("m2", "10.0.0.2", "B", "arp", 1.0)], forget_before=2.0)
    assert db.seen() == [{"mac": "m1", "ip": "10.0.0.1", "building": "A", "source": "arp", "last_seen": 6.0}]
