"""Campus model (sites -> buildings -> floors -> rooms, devices, ports) and the
asset registry, with YAML/CSV importers.

Importers never stop at the first bad row: every problem becomes an
``ImportIssue`` naming file, row (CSV line / YAML line) and column (CSV column
/ YAML field path); valid rows are still imported. ``strict=True`` raises
``CampusImportError`` carrying every issue instead of returning a partial
result.

File shapes (see firmware_configs/examples/):

campus YAML::

    sites:
      - id: north
        name: North campus
        buildings:
          - id: A
            name: Teaching building A
            floors:
              - id: A-1
                level: 1
                rooms:
                  - {id: A-101, name: Classroom 101, type: teaching}
    devices:
      - {id: a-acc1, type: switch, role: access, room: A-001, model: S5735-L24T4X-A1}
    ports:
      - {device: a-acc1, port: GE0/0/1, role: desk, room: A-101}
      - {device: a-acc1, port: XGE0/0/1, role: uplink, peer: a-core}

campus CSV (kind detected from the header): rooms
(``site,building,floor,room,name,type[,level,building_name,site_name]``),
devices (``id,type,role,room[,building,model,ip,mac,l3]``), ports
(``device,port,role[,room,peer,peer_port,if_index]``).

registry CSV/YAML: ``asset_tag,device_type,model,serial,mac,assigned_ip,room,owner``
plus optional ``device_id,switch,port,notes`` (YAML: ``assets: [...]``).
"""
from __future__ import annotations

import copy
import csv
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Iterable, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from campus_sense.yamlconf import ConfigError, load_yaml

RoomType = Literal["teaching", "office", "activity", "living", "canteen", "lab", "corridor",
                   "library", "meeting", "server", "storage", "outdoor", "other"]
DeviceType = Literal["switch", "router", "firewall", "ap", "controller", "camera", "projector",
                     "server", "agent", "printer", "phone", "pc", "sensor", "other"]
DeviceRole = Literal["access", "distribution", "core", "gateway", "border", "none"]
PortRole = Literal["desk", "uplink", "backbone", "interbuilding", "ap", "device", "other"]

ROOM_TYPES: tuple[str, ...] = RoomType.__args__  # type: ignore[attr-defined]

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:/@+-]*$"


# --------------------------------------------------------------------------- helpers

def normalize_mac(value: Any) -> str | None:
    """'AA-BB-CC-DD-EE-FF', 'aabb.ccdd.eeff', 'aabbccddeeff' -> 'aa:bb:cc:dd:ee:ff'."""
    if value is None:
        return None
    s = str(value).strip().lower()
    if not s:
        return None
    hexs = re.sub(r"[:\-.\s]", "", s)
    if not re.fullmatch(r"[0-9a-f]{12}", hexs):
        raise ValueError(f"not a MAC address: {value!r}")
    return ":".join(hexs[i:i + 2] for i in range(0, 12, 2))


def normalize_ip(value: Any) -> str | None:
    if value is None:
        return None
    s = str(value).strip()
    if not s:
        return None
    try:
        return str(ipaddress.ip_address(s.split("/")[0]))
    except ValueError:
        raise ValueError(f"not an IP address: {value!r}") from None


def _blank_to_none(v: Any) -> Any:
    if isinstance(v, str) and not v.strip():
        return None
    return v.strip() if isinstance(v, str) else v


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# --------------------------------------------------------------------------- campus model

class Site(_Base):
    id: str = Field(pattern=_ID)
    name: str = ""


class Building(_Base):
    id: str = Field(pattern=_ID)
    site: str
    name: str = ""


class Floor(_Base):
    id: str = Field(pattern=_ID)
    building: str
    name: str = ""
    level: int | None = None


ROOM_TYPE_ALIASES = {
    "classroom": "teaching", "教室": "teaching", "普通教室": "teaching", "多媒体教室": "teaching",
    "办公室": "office", "活动室": "activity", "体育馆": "activity", "功能室": "activity", "gym": "activity",
    "宿舍": "living", "dormitory": "living", "食堂": "canteen", "餐厅": "canteen", "实验室": "lab",
    "laboratory": "lab", "走廊": "corridor", "图书馆": "library", "阅览室": "library", "会议室": "meeting",
    "机房": "server", "弱电间": "server", "仓库": "storage", "室外": "outdoor", "其他": "other",
}


class Room(_Base):
    id: str = Field(pattern=_ID)
    building: str
    floor: str | None = None
    name: str = ""
    type: RoomType

    @field_validator("type", mode="before")
    @classmethod
    def _type_alias(cls, v: Any) -> Any:
        if isinstance(v, str):
            t = v.strip().lower()
            return ROOM_TYPE_ALIASES.get(t, ROOM_TYPE_ALIASES.get(v.strip(), t))
        return v


class Device(_Base):
    """A network/IoT device the campus model places somewhere (switch, AP, camera...)."""
    id: str = Field(pattern=_ID)
    type: DeviceType
    role: DeviceRole = "none"
    room: str | None = None
    building: str | None = None   # derived from room when omitted
    model: str | None = None
    ip: str | None = None
    mac: str | None = None
    l3: bool = False              # routes (gateway / L3 switch): IPv6 is checked on it
    bssids: list[str] = Field(default_factory=list)   # APs: radios' BSSIDs (for survey mapping)

    _n_ip = field_validator("ip", mode="before")(lambda v: normalize_ip(_blank_to_none(v)))
    _n_mac = field_validator("mac", mode="before")(lambda v: normalize_mac(_blank_to_none(v)))
    _n_bssids = field_validator("bssids", mode="before")(
        lambda v: [normalize_mac(x) for x in (v.split(";") if isinstance(v, str) else (v or [])) if str(x).strip()])
    _n_opt = field_validator("room", "building", "model", mode="before")(_blank_to_none)

    @property
    def routes(self) -> bool:
        return self.l3 or self.role in ("gateway", "core", "border") or self.type in ("router", "firewall")


class Port(_Base):
    """A switch port with its role: desk (wall socket in a room), uplink (access ->
    distribution/core), backbone (core <-> distribution), interbuilding, ap, device."""
    device: str
    port: str                      # ifName as the switch reports it (GigabitEthernet0/0/1)
    role: PortRole
    room: str | None = None        # desk / ap / device ports: the room the socket is in
    peer: str | None = None        # uplinks / backbone: the device at the other end
    peer_port: str | None = None
    if_index: int | None = None

    _n_opt = field_validator("room", "peer", "peer_port", "if_index", mode="before")(_blank_to_none)

    @property
    def key(self) -> tuple[str, str]:
        return (self.device, self.port)


@dataclass
class CampusModel:
    sites: dict[str, Site] = field(default_factory=dict)
    buildings: dict[str, Building] = field(default_factory=dict)
    floors: dict[str, Floor] = field(default_factory=dict)
    rooms: dict[str, Room] = field(default_factory=dict)
    devices: dict[str, Device] = field(default_factory=dict)
    ports: dict[tuple[str, str], Port] = field(default_factory=dict)

    # ---- queries
    def rooms_in(self, building: str) -> list[Room]:
        return [r for r in self.rooms.values() if r.building == building]

    def devices_in(self, building: str) -> list[Device]:
        return [d for d in self.devices.values() if self.device_building(d.id) == building]

    def device_building(self, device_id: str) -> str | None:
        d = self.devices.get(device_id)
        if d is None:
            return None
        if d.building:
            return d.building
        if d.room and d.room in self.rooms:
            return self.rooms[d.room].building
        return None

    def room_building(self, room_id: str | None) -> str | None:
        r = self.rooms.get(room_id or "")
        return r.building if r else None

    def ports_of(self, device_id: str) -> list[Port]:
        return list(self._index()["dev"].get(device_id, []))

    def _index(self) -> dict[str, dict]:
        """Lookup tables, rebuilt when the number of ports/devices changes (or by reindex())."""
        sig = (len(self.ports), len(self.devices))
        idx = self.__dict__.get("_idx")
        if idx is None or idx["sig"] != sig:
            by_name: dict[tuple[str, str], Port] = {}
            by_if: dict[tuple[str, int], Port] = {}
            by_dev: dict[str, list[Port]] = {}
            for p in self.ports.values():
                by_dev.setdefault(p.device, []).append(p)
                by_name[(p.device, p.port.lower())] = p
                if p.if_index is not None:
                    by_if[(p.device, p.if_index)] = p
            bssid = {b: d for d in self.devices.values() for b in d.bssids}
            idx = {"sig": sig, "name": by_name, "if": by_if, "bssid": bssid, "dev": by_dev}
            self.__dict__["_idx"] = idx
        return idx

    def reindex(self) -> None:
        self.__dict__.pop("_idx", None)

    def port(self, device: str, port: str | None = None, if_index: int | None = None) -> Port | None:
        if port is not None and (device, port) in self.ports:
            return self.ports[(device, port)]
        idx = self._index()
        if port is not None:
            p = idx["name"].get((device, port.lower()))
            if p is not None:
                return p
        if if_index is not None:
            return idx["if"].get((device, if_index))
        return None

    def ap_for_bssid(self, bssid: str | None) -> Device | None:
        if not bssid:
            return None
        try:
            b = normalize_mac(bssid)
        except ValueError:
            return None
        return self._index()["bssid"].get(b)

    def merge(self, other: "CampusModel") -> None:
        """Upsert everything of ``other`` into this model (re-import updates in place)."""
        for name in ("sites", "buildings", "floors", "rooms", "devices", "ports"):
            getattr(self, name).update(getattr(other, name))
        self.reindex()


# --------------------------------------------------------------------------- registry

class Asset(_Base):
    """Expected inventory from the school's asset system."""
    asset_tag: str = Field(min_length=1)
    device_type: str = "other"
    model: str | None = None
    serial: str | None = None
    mac: str | None = None
    assigned_ip: str | None = None
    room: str | None = None
    owner: str | None = None
    device_id: str | None = None   # id used by the agents (agent.yaml devices[].id), if monitored
    switch: str | None = None      # expected access switch / port (optional; 'moved' check)
    port: str | None = None
    notes: str | None = None

    _n_ip = field_validator("assigned_ip", mode="before")(lambda v: normalize_ip(_blank_to_none(v)))
    _n_mac = field_validator("mac", mode="before")(lambda v: normalize_mac(_blank_to_none(v)))
    _n_opt = field_validator("model", "serial", "room", "owner", "device_id", "switch", "port", "notes",
                             mode="before")(_blank_to_none)


@dataclass
class UpsertStats:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


@dataclass
class Registry:
    assets: dict[str, Asset] = field(default_factory=dict)

    def upsert(self, assets: Iterable[Asset], prune: bool = False) -> UpsertStats:
        st = UpsertStats()
        seen = set()
        for a in assets:
            seen.add(a.asset_tag)
            old = self.assets.get(a.asset_tag)
            if old is None:
                st.added.append(a.asset_tag)
            elif old != a:
                st.updated.append(a.asset_tag)
            else:
                st.unchanged.append(a.asset_tag)
            self.assets[a.asset_tag] = a
        if prune:
            for tag in [t for t in self.assets if t not in seen]:
                del self.assets[tag]
                st.removed.append(tag)
        return st

    def by_mac(self, mac: str) -> Asset | None:
        return next((a for a in self.assets.values() if a.mac == mac), None)

    def by_serial(self, serial: str) -> Asset | None:
        s = serial.strip().lower()
        return next((a for a in self.assets.values() if a.serial and a.serial.lower() == s), None)

    def by_device_id(self, device_id: str) -> Asset | None:
        return next((a for a in self.assets.values() if a.device_id == device_id), None)


# --------------------------------------------------------------------------- import results

@dataclass(frozen=True)
class ImportIssue:
    file: str
    row: int | None          # CSV: line number in the file (header = 1); YAML: line number
    column: str | None       # CSV: column name; YAML: field path
    message: str
    severity: str = "error"  # error (row skipped) | warning (row imported)

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f": row {self.row}"
        if self.column:
            where += f", column '{self.column}'"
        return f"{where}: {self.message}"


class CampusImportError(ValueError):
    """Strict import failed; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ImportIssue]):
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


T = TypeVar("T")


@dataclass
class ImportResult(Generic[T]):
    value: T
    issues: list[ImportIssue] = field(default_factory=list)
    rows_ok: int = 0
    rows_bad: int = 0

    @property
    def errors(self) -> list[ImportIssue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors


def _pyd_issues(file: str, row: int | None, err: ValidationError, columns: dict[str, str] | None = None,
                lines: dict[tuple, int] | None = None, prefix: tuple = ()) -> list[ImportIssue]:
    out = []
    for e in err.errors():
        loc = tuple(e["loc"])
        col = ".".join(str(x) for x in loc) or None
        r = row
        if lines is not None:
            full = prefix + loc
            while full and full not in lines:
                full = full[:-1]
            r = lines.get(full, row)
            col = ".".join(str(x) for x in prefix + loc) or None
        if columns and loc and str(loc[0]) in columns:
            col = columns[str(loc[0])]
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        out.append(ImportIssue(file, r, col, msg))
    return out


# --------------------------------------------------------------------------- CSV

#: header aliases accepted in CSV files (Chinese exports of asset systems, common synonyms)
COLUMN_ALIASES = {
    "资产编号": "asset_tag", "资产标签": "asset_tag", "asset": "asset_tag", "tag": "asset_tag",
    "设备类型": "device_type", "类型": "type", "型号": "model", "序列号": "serial", "sn": "serial",
    "mac地址": "mac", "mac address": "mac", "ip地址": "assigned_ip", "ip": "ip", "分配ip": "assigned_ip",
    "房间": "room", "房间号": "room", "位置": "room", "责任人": "owner", "使用人": "owner", "负责人": "owner",
    "设备": "device", "端口": "port", "用途": "role", "校区": "site", "楼宇": "building", "楼栋": "building",
    "楼层": "floor", "名称": "name", "备注": "notes",
}


def _read_csv(path: Path, issues: list[ImportIssue] | None = None
              ) -> tuple[list[str], list[tuple[int, dict[str, str]]], int]:
    """-> (header, [(line, row)], header line). UTF-8 (with or without BOM); GB18030 (Excel
    on a Chinese Windows) is accepted with a warning. Delimiter: comma, semicolon or tab."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = raw.decode("gb18030")
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: neither UTF-8 nor GB18030 text") from None
        if issues is not None:
            issues.append(ImportIssue(str(path), None, None, "file is GB18030-encoded, not UTF-8 (read anyway)",
                                      "warning"))
    lines = text.splitlines(keepends=True)
    first = next((ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), "")
    delim = max([",", ";", "\t"], key=first.count) if first else ","
    reader = csv.reader(lines, delimiter=delim)
    rows: list[tuple[int, dict[str, str]]] = []
    header: list[str] | None = None
    header_line = 1
    for rec in reader:
        line = reader.line_num
        if header is None:
            if not rec or all(not c.strip() for c in rec) or rec[0].lstrip().startswith("#"):
                continue
            header = [h.strip().lower() for h in rec]
            header = [COLUMN_ALIASES.get(h, h) for h in header]
            header_line = line
            continue
        if not rec or all(not c.strip() for c in rec) or rec[0].lstrip().startswith("#"):
            continue
        d = {}
        for i, h in enumerate(header):
            d[h] = rec[i] if i < len(rec) else ""
        if len(rec) > len(header) and any(c.strip() for c in rec[len(header):]):
            d["__extra__"] = delim.join(rec[len(header):])
        rows.append((line, d))
    if header is None:
        raise ConfigError(f"{path}: empty CSV (no header row)")
    return header, rows, header_line


ROOM_COLUMNS = {"site", "building", "floor", "room", "name", "type", "level", "building_name", "site_name",
                "floor_name"}
DEVICE_COLUMNS = {"id", "type", "role", "room", "building", "model", "ip", "mac", "l3", "bssids"}
PORT_COLUMNS = {"device", "port", "role", "room", "peer", "peer_port", "if_index"}
ASSET_COLUMNS = set(Asset.model_fields)


def detect_csv_kind(header: list[str]) -> str | None:
    h = set(header)
    if "asset_tag" in h:
        return "registry"
    if {"device", "port", "role"} <= h:
        return "ports"
    if {"room", "type", "building"} <= h:
        return "rooms"
    if {"id", "type"} <= h:
        return "devices"
    return None


def _csv_rows(path: Path, header: list[str], rows, allowed: set[str], required: set[str],
              issues: list[ImportIssue], header_line: int = 1) -> list[tuple[int, dict[str, str]]]:
    unknown = [h for h in header if h and h not in allowed]
    for h in unknown:
        issues.append(ImportIssue(str(path), header_line, h, "unknown column (ignored)", "warning"))
    missing = sorted(required - set(header))
    if missing:
        raise ConfigError(f"{path}: row {header_line}: missing required column(s): {', '.join(missing)}")
    out = []
    for line, d in rows:
        if "__extra__" in d:
            issues.append(ImportIssue(str(path), line, None,
                                      f"more values than header columns: {d.pop('__extra__')!r} (ignored)",
                                      "warning"))
        out.append((line, {k: v for k, v in d.items() if k in allowed}))
    return out


def _nz(d: dict[str, str], k: str) -> str | None:
    v = d.get(k)
    return v.strip() if isinstance(v, str) and v.strip() else None


class _CampusBuilder:
    """Accumulates validated objects and their origin (file, row) for cross-checks."""

    def __init__(self, base: CampusModel | None = None, declared: CampusModel | None = None) -> None:
        self.model = CampusModel()
        if base is not None:    # existing model: lets files refer to what is already there
            self.model.merge(copy.deepcopy(base))
        #: devices as the agents declare them (collector.campus.declared): a file's device entry may
        #: leave out type and room, they come from agent.yaml
        self.declared = dict(declared.devices) if declared is not None else {}
        self.issues: list[ImportIssue] = []
        self.origin: dict[tuple[str, Any], tuple[str, int | None, str]] = {}
        self.ok = 0
        self.bad = 0

    def _device_fill(self, raw: Any) -> dict[str, Any]:
        """Defaults for a file's device entry: type, room and building from the agent's declaration
        (type also from the device already in the model) when the entry leaves them out."""
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
            return {}
        dec = self.declared.get(raw["id"])
        old = self.model.devices.get(raw["id"])
        out: dict[str, Any] = {}
        if "type" not in raw and (dec or old):
            out["type"] = (dec or old).type
        if dec is not None and "room" not in raw and "building" not in raw:
            if dec.room:
                out["room"] = dec.room
            elif dec.building:
                out["building"] = dec.building
        return out

    def _dup(self, kind: str, key: Any, file: str, row: int | None, col: str, new: Any, old: Any) -> bool:
        if old is not None and (kind, key) in self.origin and self.origin[(kind, key)][0] == file and old != new:
            f0, r0, _ = self.origin[(kind, key)]
            self.issues.append(ImportIssue(file, row, col, f"duplicate {kind} {key!r} (first defined at row {r0})"))
            self.bad += 1
            return True
        return False

    def add(self, kind: str, obj: Any, file: str, row: int | None, col: str) -> None:
        store = getattr(self.model, kind)
        key = obj.key if kind == "ports" else obj.id
        if self._dup(kind[:-1], key, file, row, col, obj, store.get(key)):
            return
        store[key] = obj
        self.origin[(kind[:-1], key)] = (file, row, col)
        self.ok += 1

    # ---- cross references, run once after every file is read
    def crosscheck(self) -> None:
        m = self.model
        drop: list[tuple[str, Any]] = []

        def err(kind: str, key: Any, field_: str, msg: str) -> None:
            if (kind, key) not in self.origin:
                return          # from the base model (already stored), not from these files
            f, r, c = self.origin[(kind, key)]
            col = f"{c}.{field_}" if c else field_
            self.issues.append(ImportIssue(f, r, col, msg))
            drop.append((kind, key))

        for b in list(m.buildings.values()):
            if b.site not in m.sites:
                m.sites[b.site] = Site(id=b.site, name=b.site)
        for fl in list(m.floors.values()):
            if fl.building not in m.buildings:
                err("floor", fl.id, "building", f"unknown building {fl.building!r}")
        for r in list(m.rooms.values()):
            if r.building not in m.buildings:
                err("room", r.id, "building", f"unknown building {r.building!r}")
            elif r.floor and r.floor in m.floors and m.floors[r.floor].building != r.building:
                err("room", r.id, "floor", f"floor {r.floor!r} belongs to building {m.floors[r.floor].building!r}")
        for d in list(m.devices.values()):
            if d.room and d.room not in m.rooms:
                err("device", d.id, "room", f"unknown room {d.room!r}")
            elif d.building and d.building not in m.buildings:
                err("device", d.id, "building", f"unknown building {d.building!r}")
            elif d.room and d.building and m.rooms[d.room].building != d.building:
                err("device", d.id, "building",
                    f"room {d.room!r} is in building {m.rooms[d.room].building!r}, not {d.building!r}")
        for p in list(m.ports.values()):
            if p.device not in m.devices:
                err("port", p.key, "device", f"unknown device {p.device!r}")
            elif p.room and p.room not in m.rooms:
                err("port", p.key, "room", f"unknown room {p.room!r}")
            elif p.peer and p.peer not in m.devices:
                err("port", p.key, "peer", f"unknown peer device {p.peer!r}")
            elif p.role == "desk" and not p.room:
                err("port", p.key, "room", "a desk port needs the room its socket is in")
        store_of = {"floor": m.floors, "room": m.rooms, "device": m.devices, "port": m.ports}
        for kind, key in drop:
            if store_of[kind].pop(key, None) is not None:
                self.ok -= 1
                self.bad += 1

    def result(self, strict: bool) -> ImportResult[CampusModel]:
        self.crosscheck()
        res = ImportResult(self.model, self.issues, self.ok, self.bad)
        if strict and res.errors:
            raise CampusImportError(res.errors)
        return res

    # ---- readers
    def read_yaml(self, path: Path) -> None:
        data, lines = load_yaml(path)
        f = str(path)
        if data is None:
            raise ConfigError(f"{f}: file is empty")
        if not isinstance(data, dict):
            raise ConfigError(f"{f}:1: (top level): expected a mapping with sites/devices/ports")
        for k in data:
            if k not in ("sites", "devices", "ports", "campus"):
                self.issues.append(ImportIssue(f, lines.get((k,)), k, "unknown key (ignored)", "warning"))

        def line(*loc) -> int | None:
            loc = tuple(loc)
            while loc and loc not in lines:
                loc = loc[:-1]
            return lines.get(loc)

        def items(v: Any, loc: tuple) -> list:
            if v is None:
                return []
            if not isinstance(v, list):
                self.issues.append(ImportIssue(f, line(*loc), ".".join(map(str, loc)), "expected a list"))
                return []
            return v

        def take(kind: str, cls: type, raw: Any, loc: tuple, extra: dict[str, Any], children: tuple[str, ...]):
            col = ".".join(map(str, loc))
            if not isinstance(raw, dict):
                self.issues.append(ImportIssue(f, line(*loc), col, "expected a mapping"))
                self.bad += 1
                return None
            body = {k: v for k, v in raw.items() if k not in children}
            body.update({k: v for k, v in extra.items() if k not in body})
            try:
                obj = cls.model_validate(body)
            except ValidationError as e:
                self.issues.extend(_pyd_issues(f, line(*loc), e, lines=lines, prefix=loc))
                self.bad += 1
                return None
            self.add(kind, obj, f, line(*loc), col)
            return obj

        for si, s in enumerate(items(data.get("sites"), ("sites",))):
            site = take("sites", Site, s, ("sites", si), {}, ("buildings",))
            if site is None:
                continue
            for bi, b in enumerate(items(s.get("buildings"), ("sites", si, "buildings"))):
                bl = ("sites", si, "buildings", bi)
                bld = take("buildings", Building, b, bl, {"site": site.id}, ("floors", "rooms"))
                if bld is None:
                    continue
                for ri, r in enumerate(items(b.get("rooms"), bl + ("rooms",))):
                    take("rooms", Room, r, bl + ("rooms", ri), {"building": bld.id}, ())
                for fi, fl in enumerate(items(b.get("floors"), bl + ("floors",))):
                    fll = bl + ("floors", fi)
                    flo = take("floors", Floor, fl, fll, {"building": bld.id}, ("rooms",))
                    if flo is None:
                        continue
                    for ri, r in enumerate(items(fl.get("rooms"), fll + ("rooms",))):
                        take("rooms", Room, r, fll + ("rooms", ri), {"building": bld.id, "floor": flo.id}, ())
        for di, d in enumerate(items(data.get("devices"), ("devices",))):
            take("devices", Device, d, ("devices", di), self._device_fill(d), ())
        for pi, p in enumerate(items(data.get("ports"), ("ports",))):
            take("ports", Port, p, ("ports", pi), {}, ())

    def read_csv(self, path: Path, kind: str | None = None) -> None:
        header, rows, hl = _read_csv(path, self.issues)
        kind = kind or detect_csv_kind(header)
        f = str(path)
        if kind not in ("rooms", "devices", "ports"):
            raise ConfigError(f"{f}: row {hl}: cannot tell what this CSV holds from its header "
                              f"({', '.join(header)}); expected rooms, devices or ports columns")
        if kind == "rooms":
            rows = _csv_rows(path, header, rows, ROOM_COLUMNS, {"building", "room", "type"}, self.issues, hl)
            for line, d in rows:
                self._room_row(f, line, d)
        elif kind == "devices":
            rows = _csv_rows(path, header, rows, DEVICE_COLUMNS, {"id", "type"}, self.issues, hl)
            for line, d in rows:
                body = {k: v for k, v in d.items() if v.strip()}
                if "l3" in body:
                    body["l3"] = body["l3"].strip().lower() in ("1", "true", "yes", "y")
                self._validate_row("devices", Device, f, line, body)
        else:
            rows = _csv_rows(path, header, rows, PORT_COLUMNS, {"device", "port", "role"}, self.issues, hl)
            for line, d in rows:
                body = {k: v for k, v in d.items() if v.strip()}
                self._validate_row("ports", Port, f, line, body)

    def _validate_row(self, kind: str, cls: type, f: str, line: int, body: dict, columns=None):
        try:
            obj = cls.model_validate(body)
        except ValidationError as e:
            self.issues.extend(_pyd_issues(f, line, e, columns=columns))
            self.bad += 1
            return None
        self.add(kind, obj, f, line, "")
        return obj

    def _room_row(self, f: str, line: int, d: dict[str, str]) -> None:
        m = self.model
        bid = _nz(d, "building")
        site = _nz(d, "site") or (m.buildings[bid].site if bid in m.buildings else "default")
        # each row carries its parents; create them on first sight
        try:
            if site not in m.sites:
                m.sites[site] = Site(id=site, name=_nz(d, "site_name") or site)
                self.origin[("site", site)] = (f, line, "site")
            if bid and bid not in m.buildings:
                m.buildings[bid] = Building(id=bid, site=site, name=_nz(d, "building_name") or bid)
                self.origin[("building", bid)] = (f, line, "building")
            fid = _nz(d, "floor")
            if fid and bid and fid not in m.floors:
                lvl = _nz(d, "level")
                m.floors[fid] = Floor(id=fid, building=bid, name=_nz(d, "floor_name") or fid,
                                      level=int(lvl) if lvl and re.fullmatch(r"-?\d+", lvl) else None)
                self.origin[("floor", fid)] = (f, line, "floor")
        except ValidationError as e:
            col = "site" if site not in m.sites else "building" if bid not in m.buildings else "floor"
            self.issues.extend(ImportIssue(f, line, col, x["msg"]) for x in e.errors())
            self.bad += 1
            return
        body = {"id": _nz(d, "room"), "building": bid, "floor": _nz(d, "floor"), "name": d.get("name", ""),
                "type": (d.get("type") or "").strip().lower()}
        body = {k: v for k, v in body.items() if v is not None}
        self._validate_row("rooms", Room, f, line, body, columns={"id": "room"})


def load_campus(paths: str | Path | Iterable[str | Path], strict: bool = False,
                base: CampusModel | None = None, declared: CampusModel | None = None) -> ImportResult[CampusModel]:
    """Import one or more campus files (YAML and/or rooms/devices/ports CSV) into one model.

    Raises ConfigError for unreadable/unparseable files, CampusImportError in strict
    mode when any row is bad. Later files upsert over earlier ones. With ``base`` (e.g.
    the stored model) the files are applied on top of it: rows may refer to rooms and
    devices already there, and the result is the merged model (``base`` is not modified). With
    ``declared`` (collector.campus.declared.declared_model: what the agents say), device entries may
    leave out type/room/building: the agents' values fill them."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    b = _CampusBuilder(base, declared)
    for p in paths:
        p = Path(p)
        if p.suffix.lower() in (".yaml", ".yml"):
            b.read_yaml(p)
        elif p.suffix.lower() == ".csv":
            b.read_csv(p)
        else:
            raise ConfigError(f"{p}: unsupported campus file type (use .yaml/.yml or .csv)")
    return b.result(strict)


def load_registry(paths: str | Path | Iterable[str | Path], strict: bool = False,
                  campus: CampusModel | None = None) -> ImportResult[Registry]:
    """Import assets from CSV/YAML. Bad rows are reported and skipped (or raise in strict
    mode). With ``campus``, unknown rooms are reported as warnings (the asset is kept)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    reg = Registry()
    issues: list[ImportIssue] = []
    ok = bad = 0
    for p in paths:
        p = Path(p)
        f = str(p)
        origin: dict[str, int | None] = {}
        seen_mac: dict[str, tuple[str, int | None]] = {}
        seen_serial: dict[str, tuple[str, int | None]] = {}
        rows: list[tuple[int | None, dict, dict[tuple, int] | None, tuple]] = []
        if p.suffix.lower() in (".yaml", ".yml"):
            data, lines = load_yaml(p)
            if data is None:
                raise ConfigError(f"{f}: file is empty")
            lst = data.get("assets") if isinstance(data, dict) else data
            if not isinstance(lst, list):
                raise ConfigError(f"{f}:1: assets: expected a list of assets (or a mapping with 'assets:')")
            base = ("assets",) if isinstance(data, dict) else ()
            for i, raw in enumerate(lst):
                loc = base + (i,)
                rows.append((lines.get(loc), raw, lines, loc))
        elif p.suffix.lower() == ".csv":
            header, crow, hl = _read_csv(p, issues)
            crow = _csv_rows(p, header, crow, ASSET_COLUMNS, {"asset_tag"}, issues, hl)
            for line, d in crow:
                rows.append((line, {k: v for k, v in d.items() if v.strip()}, None, ()))
        else:
            raise ConfigError(f"{p}: unsupported registry file type (use .csv, .yaml or .yml)")
        for line, raw, lines, loc in rows:
            if not isinstance(raw, dict):
                issues.append(ImportIssue(f, line, ".".join(map(str, loc)) or None, "expected a mapping"))
                bad += 1
                continue
            try:
                a = Asset.model_validate(raw)
            except ValidationError as e:
                issues.extend(_pyd_issues(f, line, e, lines=lines, prefix=loc) if lines is not None
                              else _pyd_issues(f, line, e))
                bad += 1
                continue
            if a.asset_tag in origin:
                issues.append(ImportIssue(f, line, "asset_tag",
                                          f"duplicate asset_tag {a.asset_tag!r} (first at row {origin[a.asset_tag]})"))
                bad += 1
                continue
            dup = None
            if a.mac and a.mac in seen_mac:
                dup = ("mac", a.mac, seen_mac[a.mac])
            elif a.serial and a.serial.lower() in seen_serial:
                dup = ("serial", a.serial, seen_serial[a.serial.lower()])
            if dup:
                issues.append(ImportIssue(f, line, dup[0], f"{dup[0]} {dup[1]!r} already used by asset "
                                                           f"{dup[2][0]!r} (row {dup[2][1]})"))
                bad += 1
                continue
            if campus is not None and a.room and a.room not in campus.rooms:
                issues.append(ImportIssue(f, line, "room", f"unknown room {a.room!r} (asset kept)", "warning"))
            origin[a.asset_tag] = line
            if a.mac:
                seen_mac[a.mac] = (a.asset_tag, line)
            if a.serial:
                seen_serial[a.serial.lower()] = (a.asset_tag, line)
            reg.upsert([a])
            ok += 1
    res = ImportResult(reg, issues, ok, bad)
    if strict and res.errors:
        raise CampusImportError(res.errors)
    return res
