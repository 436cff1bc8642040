"""agent.yaml: schema and loading.

Everything is validated before the agent starts anything, so a typo fails the
deploy with ``file:line: field: message`` instead of a half-running agent.
Loading is two passes: ``yamlconf.load_model`` checks the fixed shape, then each
device's ``options`` block is checked by its driver package's ``Options`` model
(driver packages are imported lazily: only the drivers a building uses must be
installed), with errors mapped back to ``devices.N.options.field`` and its line.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from campus_sense import wire
from campus_sense.secret import Secret, SecretError, SecretFields
from campus_sense.yamlconf import ConfigError, error_loc, load_model, load_yaml

#: driver name -> package exposing ``Options`` and ``create(device_id, options, tags)``.
DRIVERS: dict[str, str] = {
    "access": "drivers.access",
    "audit": "drivers.audit",
    "camera_health": "drivers.camera_health",
    "modbus": "drivers.modbus",
    "mqtt_sensors": "drivers.mqtt_sensors",
    "netwatch": "drivers.netwatch",
    "onvif": "drivers.onvif",
    "pjlink": "drivers.pjlink",
    "snmp": "drivers.snmp",
    "snmp_trap": "drivers.snmp_trap",
    "synthetic": "drivers.synthetic",
    "syslog": "drivers.syslog",
}


#: driver -> (package extra, modules beyond the core it needs): pyproject.toml optional-dependencies
DRIVER_EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "snmp": ("agent", ("pysnmp", "cryptography")),
    "audit": ("agent", ("pysnmp", "cryptography")),
    "onvif": ("camera", ("onvif", "zeep", "aiohttp")),
    "camera_health": ("camera", ("cv2", "numpy")),
    "netwatch": ("netwatch", ("scapy",)),
    "modbus": ("sensors", ("pymodbus",)),
}


class MissingExtra(ImportError):
    """A driver's package extra is not installed."""


def driver_module(name: str) -> ModuleType:
    """Import a driver package on first use (pysnmp etc. load only where needed); MissingExtra names
    the extra to install when the driver's dependencies are not there."""
    extra = DRIVER_EXTRAS.get(name)
    if extra is not None:
        from importlib.util import find_spec   # not `import importlib.util`: that makes importlib local
        for mod in extra[1]:
            try:
                found = find_spec(mod) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                raise MissingExtra(f"driver {name!r} needs the [{extra[0]}] extra (Python module {mod!r} is not "
                                   f"installed): pip install 'campus-sense[{extra[0]}]'", name=mod)
    return importlib.import_module(DRIVERS[name])


class _Strict(SecretFields):
    # A misspelt key must be an error, not silently ignored.
    model_config = ConfigDict(extra="forbid")


class AgentSection(_Strict):
    id: str
    site: str
    building: str

    @field_validator("id", "site", "building")
    @classmethod
    def _segment(cls, v: str, info) -> str:
        try:
            return wire.check_segment(v, info.field_name)
        except wire.WireError as e:
            raise ValueError(str(e)) from None


class TLSSection(_Strict):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _pair(self) -> "TLSSection":
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (client certificate)")
        return self


class MqttSection(_Strict):
    host: str
    port: int = Field(1883, ge=1, le=65535)
    # No defaults for credentials: the broker must never accept an anonymous agent.
    username: str = Field(min_length=1)
    #: campus_sense.secret grammar: password / password_file / password_env
    password: Secret | None = None
    tls: TLSSection | None = None
    #: MQTT 5 (default): a refused publish comes back as a PUBACK reason code; 3.1.1 brokers
    #: acknowledge a publish the ACL dropped as if it had been accepted
    protocol: Literal["3.1.1", "5"] = "5"
    keepalive_s: int = Field(30, ge=5, le=3600)
    client_id: str | None = None
    #: the broker's ACL model: ``username`` (the shipped docker/mosquitto/acl: an agent may write only
    #: under its own id, user name = agent id, client id = user name) or ``custom`` (your own ACL)
    acl: Literal["username", "custom"] = "username"

    @model_validator(mode="after")
    def _one_password(self) -> "MqttSection":
        if self.password is None:
            raise ValueError("set exactly one of password or password_file or password_env "
                             "(anonymous access is not allowed)")
        return self


class QueueSection(_Strict):
    path: Path
    max_messages: int = Field(200_000, ge=1)
    max_bytes: int | None = Field(None, ge=1024)
    #: free-space reserve on the queue's filesystem: below it the queue stops growing (the oldest
    #: messages make room). Default: 8 MiB, or 5 % of a filesystem smaller than 160 MiB.
    min_free_bytes: int | None = Field(None, ge=0)
    #: items kept in memory while the queue cannot be written (full disk); beyond, the oldest are dropped
    overflow_max_items: int = Field(10_000, ge=1)


class PublishSection(_Strict):
    batch_interval_s: float = Field(1.0, gt=0)
    batch_max_items: int = Field(500, ge=1)
    max_message_bytes: int = Field(wire.MAX_MESSAGE_BYTES, ge=1024)
    heartbeat_s: float = Field(30.0, gt=0)
    selfmetrics_s: float = Field(30.0, gt=0)
    inflight: int = Field(32, ge=1, le=1000)
    reconnect_max_s: float = Field(30.0, ge=0.1)
    publish_timeout_s: float = Field(30.0, gt=0)
    shutdown_drain_s: float = Field(2.0, ge=0)
    #: delete a queued message when the collector has committed it (its commit watermark), or, for a
    #: collector that publishes none, on the broker's PUBACK (a broker crash can then lose it)
    delete_on: Literal["commit", "puback"] = "commit"
    #: what stays unconfirmed this long (and the watermark did not move) is sent again
    confirm_timeout_s: float = Field(60.0, ge=1)


class PollingSection(_Strict):
    #: polling cycles running at once across all devices (a cycle waits for a slot before its
    #: deadline starts); bounds sockets, memory and CPU bursts on a small agent box
    max_concurrent: int = Field(32, ge=1, le=10000)


class DeviceSection(_Strict):
    id: str = Field(min_length=1, max_length=128)
    driver: str
    interval_s: float = Field(60.0, gt=0)
    deadline_s: float | None = Field(None, gt=0)
    room: str | None = None
    type: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("driver")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in DRIVERS:
            raise ValueError(f"unknown driver {v!r} (known: {', '.join(sorted(DRIVERS))})")
        return v

    @property
    def deadline(self) -> float:
        """Per-cycle deadline: a cycle must end before the next one is due."""
        return self.deadline_s if self.deadline_s is not None else min(0.8 * self.interval_s, 30.0)

    def driver_tags(self) -> dict[str, str]:
        t = dict(self.tags)
        if self.room:
            t.setdefault("room", self.room)
        if self.type:
            t.setdefault("type", self.type)
        return t


class AgentConfig(_Strict):
    agent: AgentSection
    mqtt: MqttSection
    queue: QueueSection
    publish: PublishSection = Field(default_factory=PublishSection)
    polling: PollingSection = Field(default_factory=PollingSection)
    devices: list[DeviceSection] = Field(default_factory=list)

    @model_validator(mode="after")
    def _identity(self) -> "AgentConfig":
        if self.mqtt.acl == "username" and self.mqtt.username != self.agent.id:
            raise ValueError(
                f"mqtt.username {self.mqtt.username!r} differs from agent.id {self.agent.id!r}: under the shipped "
                "broker ACL (mqtt.acl: username) an agent may only publish under its own user name, so the broker "
                "would refuse (or, with MQTT 3.1.1, silently drop) everything; use the agent id as user name, or "
                "set mqtt.acl: custom if your broker's ACL differs")
        return self


class LoadedConfig:
    """The validated config plus what the agent derives from the file itself."""

    def __init__(self, path: Path, model: AgentConfig, options: list[BaseModel], password: str, sha256: str):
        self.path, self.model, self.options, self.password, self.sha256 = path, model, options, password, sha256


def _line(lines: dict[tuple, int], loc: tuple) -> int | str:
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get((), "?")


def rebase_files(data: Any, base: Path) -> Any:
    """Driver options: every relative ``*_file`` value (at any depth) and a modbus ``profile`` given as a
    path become relative to ``base`` (agent.yaml's folder); absolute paths stay as they are."""
    if isinstance(data, list):
        return [rebase_files(x, base) for x in data]
    if not isinstance(data, dict):
        return data
    out = {}
    for k, v in data.items():
        if isinstance(v, str) and v and isinstance(k, str) and (
                k.endswith("_file") or (k == "profile" and ("/" in v or v.endswith((".yaml", ".yml"))))):
            p = Path(v).expanduser()
            v = str(p if p.is_absolute() else base / p)
        else:
            v = rebase_files(v, base)
        out[k] = v
    return out


def load(path: str | Path) -> LoadedConfig:
    """Validate ``path`` completely; raise ConfigError with one line per problem.

    Every relative path in agent.yaml (``mqtt.password_file``, ``mqtt.tls.*``, ``queue.path``, any
    ``*_file`` in driver options) is relative to agent.yaml's folder, not the working directory."""
    path = Path(path)
    base = path.resolve().parent
    cfg = load_model(path, AgentConfig, context={"base_dir": base})
    if not cfg.queue.path.is_absolute():
        cfg.queue.path = base / cfg.queue.path
    if cfg.mqtt.tls is not None:
        for name in ("ca_file", "cert_file", "key_file"):
            f = getattr(cfg.mqtt.tls, name)
            if f is not None and not f.is_absolute():
                setattr(cfg.mqtt.tls, name, base / f)
    _, lines = load_yaml(path)
    errors: list[str] = []

    def err(loc: tuple, msg: str) -> None:
        errors.append(f"{path}:{_line(lines, loc)}: {'.'.join(map(str, loc))}: {msg}")

    seen: dict[str, int] = {}
    options: list[BaseModel] = []
    for i, dev in enumerate(cfg.devices):
        if dev.id in seen:
            err(("devices", i, "id"), f"duplicate device id {dev.id!r} (first used by devices.{seen[dev.id]})")
        seen.setdefault(dev.id, i)
        try:
            mod = driver_module(dev.driver)
        except MissingExtra as e:
            err(("devices", i, "driver"), str(e))
            continue
        except Exception as e:  # ImportError, or a broken driver package
            err(("devices", i, "driver"), f"driver {dev.driver!r} is not available in this build ({e!r})")
            continue
        if not hasattr(mod, "Options") or not hasattr(mod, "create"):
            err(("devices", i, "driver"), f"driver package {DRIVERS[dev.driver]} lacks Options/create")
            continue
        try:
            options.append(mod.Options.model_validate(rebase_files(dev.options, base),
                                                       context={"base_dir": base}))
        except ValidationError as e:
            for d in e.errors():
                err(("devices", i, "options") + error_loc(d), d["msg"])

    password = ""
    try:  # read (again) now; see campus_sense.secret for the rotation rule
        password = cfg.mqtt.password.reveal()  # type: ignore[union-attr]
    except SecretError as e:
        err(("mqtt", e.key), e.reason)
    tls = cfg.mqtt.tls
    for name in ("ca_file", "cert_file", "key_file"):
        f = getattr(tls, name) if tls else None
        if f is not None and not f.is_file():
            err(("mqtt", "tls", name), f"{f} does not exist")
    if errors:
        raise ConfigError("\n".join(errors))
    return LoadedConfig(path, cfg, options, password, hashlib.sha256(path.read_bytes()).hexdigest())
