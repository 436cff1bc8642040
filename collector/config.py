"""Collector configuration (collector.yaml), loaded with ``yamlconf.load_model``.

Example::

    mqtt:
      host: 127.0.0.1
      port: 1883
      username: collector
      password_file: /etc/campus-sense/collector-mqtt.pass
      client_id: campus-collector-1      # fixed: the broker keeps this session
    store:
      kind: sqlite                       # or influxdb (time series only)
      path: /var/lib/campus-sense/collector.db
      retention: {raw_days: 14, rollup_5m_days: 400, rollup_1h_days: 1825, events_days: 180}
    api: {host: 127.0.0.1, port: 8080}
    agents: {offline_after_s: 180}
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from campus_sense import wire
from campus_sense.secret import Secret, SecretFields
from campus_sense.yamlconf import load_model
from collector.compliance.settings import CampusSettings
from collector.ui.settings import UISettings
from collector.enrol import EnrolSettings


class _Strict(SecretFields):
    model_config = ConfigDict(extra="forbid")


class TLS(_Strict):
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    #: only for lab setups with self-signed certificates without the right name
    insecure: bool = False


class MQTT(_Strict):
    host: str
    port: int = Field(1883, ge=1, le=65535)
    username: str = Field(min_length=1)
    #: campus_sense.secret grammar: password / password_file / password_env (file relative to this file)
    password: Secret | None = None
    client_id: str = Field("campus-collector", min_length=1, max_length=64)
    #: how long the broker keeps our session (subscription + queued messages) while we are down
    session_expiry_s: int = Field(7 * 86400, ge=60)
    #: MQTT5 Receive Maximum: unacknowledged QoS 1 messages the broker may have in flight to us
    receive_maximum: int = Field(1000, ge=1, le=65535)
    keepalive_s: int = Field(30, ge=5)
    #: "5" (default: session expiry, receive maximum) or "3.1.1" for brokers without MQTT 5
    #: (e.g. the demo's embedded amqtt); 3.1.1 keeps the session with clean_session=False.
    protocol: Literal["5", "3.1.1"] = "5"
    tls: TLS | None = None
    max_message_bytes: int = Field(wire.MAX_MESSAGE_BYTES, ge=1024)

    @model_validator(mode="after")
    def _need_password(self):
        if self.password is None:
            raise ValueError("password or password_file is required (or password_env; anonymous MQTT "
                             "is not supported)")
        return self

    def read_password(self) -> str:
        """Read now: called on every (re)connect, so a rotated password file is picked up.
        Raises SecretError (a ConfigError/ValueError) naming the key when it became unreadable."""
        return self.password.reveal()  # type: ignore[union-attr]


class Retention(_Strict):
    """Days kept per class (collector/README.md, "Storage"). Time series are deleted per chunk: a raw
    or 5-minute hour, a 1-hour or 1-day day, once its end is older than the class's days."""
    raw_days: float = Field(14, gt=0)
    rollup_5m_days: float = Field(400, gt=0)
    rollup_1h_days: float = Field(1825, gt=0)
    #: null: forever
    rollup_1d_days: float | None = Field(None, gt=0)
    events_days: float = Field(180, gt=0)
    #: FDB/ARP/LLDP/address intervals, by last seen
    topology_days: float = Field(400, gt=0)
    #: syslog archive (collector/store/syslog.py, GET /api/v1/syslog)
    syslog_days: float = Field(180, gt=0)


class Disk(_Strict):
    """Disk budget of the embedded store (collector/store/disk.py): usage = database file + -wal.
    Above ``warn_at`` x the nearer of ``max_bytes`` and the free-space floor, the oldest data is
    deleted early (raw > 2 days, oldest 5m, events > 30 days, oldest 1h; never the newest day)."""
    #: null: no fixed size, only the free-space floor
    max_bytes: int | None = Field(None, gt=0)
    #: keep at least this much free on the file system holding the database
    min_free_bytes: int = Field(1 << 30, ge=0)
    warn_at: float = Field(0.9, gt=0, le=1)


class Store(_Strict):
    #: postgres: state in PostgreSQL (dsn), time series to url (VictoriaMetrics), read back from query_url
    kind: Literal["sqlite", "influxdb", "postgres"] = "sqlite"
    #: SQLite database: time series (kind sqlite) and always metadata (agents, devices, dedup, tokens)
    path: str = "collector.db"
    retention: Retention = Field(default_factory=Retention)
    disk: Disk = Field(default_factory=Disk)
    #: before retention classes: one number for everything. Still read as retention.raw_days
    #: (an error together with retention.raw_days)
    retention_days: float | None = Field(None, gt=0)
    #: FULL: what was acknowledged to the broker survives a power cut (one fsync per commit
    #: group); NORMAL: survives a collector crash only, fewer fsyncs
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    #: how often old samples are deleted
    retention_interval_s: float = Field(3600, gt=0)
    # influxdb (v2 write API)
    url: str | None = None
    #: Prometheus query API of the same data (VictoriaMetrics: its own URL): /series reads from it
    query_url: str | None = None
    #: campus_sense.secret grammar: token / token_file / token_env
    token: Secret | None = None
    org: str = "campus"
    bucket: str = "campus"
    timeout_s: float = Field(10, gt=0)
    #: writes in flight to url at once: each commit group waits for its own write, so the partitions
    #: of one collector (each its own ingest) send in parallel instead of queueing behind one another
    writers: int = Field(4, ge=1, le=64)
    #: kind postgres: libpq connection string or postgresql:// URL (secret grammar: dsn / dsn_file /
    #: dsn_env; re-read on every new connection)
    dsn: Secret | None = None
    #: kind postgres: this collector's name (per-node counters; partition lease holder). Default: host name
    node: str | None = Field(None, min_length=1, max_length=100)

    @model_validator(mode="after")
    def _influx(self):
        if self.kind == "influxdb" and not self.url:
            raise ValueError("store.url is required when kind is influxdb")
        if self.kind == "postgres" and (self.dsn is None or not self.url):
            raise ValueError("store.dsn (or dsn_file / dsn_env) and store.url (VictoriaMetrics) are required "
                             "when kind is postgres")
        if self.retention_days is not None:
            if "raw_days" in self.retention.model_fields_set:
                raise ValueError("store.retention_days and store.retention.raw_days both set; keep "
                                 "store.retention.raw_days only")
            self.retention.raw_days = self.retention_days
        return self

    def read_token(self) -> str:
        """Read now (see campus_sense.secret: re-read on every call)."""
        return self.token.reveal() if self.token is not None else ""


class API(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)


class Agents(_Strict):
    #: an agent without birth/heartbeat/data for this long is shown offline
    offline_after_s: float = Field(180, gt=0)


class Ingest(_Strict):
    #: group commit: at most this many messages per SQLite transaction
    batch_messages: int = Field(500, ge=1)
    #: ... or this many payload bytes (bounds memory and keeps groups cache-friendly: ~25k samples)
    batch_bytes: int = Field(8 * 2**20, ge=1)
    #: ... of whatever arrived within this many ms after the first message of the group
    batch_ms: float = Field(10, ge=0)
    #: publish each agent's commit watermark (campus_sense/wire.py) after every commit group;
    #: agents with ``publish.delete_on: commit`` (the default) delete queued messages only then
    commit_watermarks: bool = True
    #: a dead letter raises at most one ``ingest_dead_letter`` event per agent and reason this often
    dead_letter_event_s: float = Field(60, gt=0)


class Partitions(_Strict):
    """Partitioned ingest with leases (collector/partitions.py; needs store.kind postgres): sites
    hashed (crc32) to ``count`` partitions, one persistent MQTT session each (client id
    ``<mqtt.client_id>-pNN``), taken by the collectors through leases in PostgreSQL."""
    #: fixed for a deployment: changing it moves sites to other sessions (their queues stay behind)
    count: int = Field(64, ge=1, le=1000)
    #: a dead collector's partitions move to the others after this long; renewed every third
    lease_s: float = Field(15, ge=1)
    #: sites subscribed from the start (the sites of agents known to PostgreSQL are added)
    sites: list[str] = Field(default_factory=list)
    #: how often the sites of known agents are re-read
    refresh_s: float = Field(30, gt=0)


class Clock(_Strict):
    """Agent clocks: the collector estimates each agent's offset from birth/heartbeat messages
    (sent time vs. receive time, the minimum delay over ``window_s``)."""
    window_s: float = Field(300, ge=30, le=86400)
    #: item times of an agent off by more than this are stored corrected (agent time - offset)
    correct_above_s: float = Field(2.0, ge=0)
    #: an offset beyond this raises an ``agent_clock_skew`` event (cleared below 80 % of it)
    skew_alert_s: float = Field(30.0, gt=0)


class Rules(_Strict):
    #: rule files or directories (collector/alertcore/README.md); relative to this file
    paths: list[str] = Field(min_length=1)
    #: alerts, history, silences: a separate SQLite file so alert writes don't wait on sample commits
    db: str = "alerts.db"
    #: how often durations (for, staleness, escalation, expiry) are advanced
    tick_s: float = Field(1, gt=0)
    #: committed messages waiting for the engine; beyond this they are dropped (counted, logged)
    queue_max: int = Field(10000, ge=1)
    #: after a start and a partition take-over the engine re-evaluates the stored events of its sites
    #: from this many seconds back (committed but not evaluated before a kill or a pause; idempotent:
    #: collector/README.md "Alerts"); 0: off
    replay_s: float = Field(600, ge=0)


class Notify(_Strict):
    #: notify.yaml (collector/notify/README.md); the outbox lives in rules.db
    config: str


class CollectorConfig(_Strict):
    mqtt: MQTT
    store: Store = Store()
    api: API = API()
    agents: Agents = Agents()
    ingest: Ingest = Ingest()
    clock: Clock = Clock()
    #: several collectors sharing the sites (store.kind postgres)
    partitions: Partitions | None = None
    #: coverage/compliance inputs (collector.compliance.settings): campus model, registry, policy, firmware
    campus: CampusSettings | None = None
    rules: Rules | None = None
    notify: Notify | None = None
    #: web UI: time zone, language, sessions, LDAP login (collector/ui/settings.py)
    ui: UISettings = Field(default_factory=UISettings)
    #: `campus-sense enrol`: broker files, bundle contents (collector/enrol.py)
    enrol: EnrolSettings | None = None

    @model_validator(mode="after")
    def _partitions_need_postgres(self):
        if self.partitions is not None and self.store.kind != "postgres":
            raise ValueError("partitions need store.kind postgres (the leases and the dedup state are shared there)")
        return self


def load(path: str | Path) -> CollectorConfig:
    base = Path(path).resolve().parent
    # relative secret files (password_file, token_file) are relative to the config file, too
    cfg = load_model(path, CollectorConfig, context={"base_dir": base})
    # relative paths are relative to the config file
    if not Path(cfg.store.path).is_absolute() and cfg.store.path != ":memory:":
        cfg.store.path = str(base / cfg.store.path)
    if cfg.rules:
        cfg.rules.paths = [p if Path(p).is_absolute() else str(base / p) for p in cfg.rules.paths]
        if not Path(cfg.rules.db).is_absolute() and cfg.rules.db != ":memory:":
            cfg.rules.db = str(base / cfg.rules.db)
    if cfg.notify and not Path(cfg.notify.config).is_absolute():
        cfg.notify.config = str(base / cfg.notify.config)
    if cfg.campus is not None:
        cfg.campus.resolve(base)
    cfg.ui.resolve(base)
    if cfg.enrol is not None:
        cfg.enrol.resolve(base)
    tls = cfg.mqtt.tls
    if tls:
        for k in ("ca_file", "cert_file", "key_file"):
            v = getattr(tls, k)
            if v and not Path(v).is_absolute():
                setattr(tls, k, str(base / v))
    return cfg
