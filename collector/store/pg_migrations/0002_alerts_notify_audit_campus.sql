-- campus-sense collector state in PostgreSQL, version 2: what was still in local SQLite files per
-- collector (collector/store/sqldb.py runs the same SQL on both): alerts, their history, last-seen
-- times, silences and maintenance windows (store/alerts.py), the audit log (store/audit.py), replay
-- keys of signed chat callbacks (store/callbacks.py), the notification outbox and groups
-- (store/outbox.py), the campus model, registry, compliance history and MAC sightings
-- (store/campus.py). Same columns as the SQLite schemas; JSON stays TEXT; BLOB -> BYTEA,
-- REAL -> DOUBLE PRECISION, ms INTEGER -> BIGINT, AUTOINCREMENT -> BIGSERIAL.

CREATE TABLE alerts(
  id BIGSERIAL PRIMARY KEY, fingerprint TEXT NOT NULL, rule TEXT NOT NULL, kind TEXT NOT NULL,
  subject TEXT NOT NULL, state TEXT NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
  severity TEXT NOT NULL, labels TEXT NOT NULL, summary TEXT NOT NULL DEFAULT '', value DOUBLE PRECISION,
  started_ms BIGINT NOT NULL, fired_ms BIGINT, resolved_ms BIGINT, updated_ms BIGINT NOT NULL,
  acked_by TEXT, acked_ms BIGINT, ack_comment TEXT, ack_expires_ms BIGINT, assignee TEXT,
  escalated_ms BIGINT, escalation_since_ms BIGINT, flapping INTEGER NOT NULL DEFAULT 0, suppressed TEXT,
  count BIGINT NOT NULL DEFAULT 1);
CREATE UNIQUE INDEX alerts_active_fingerprint ON alerts(fingerprint) WHERE state <> 'resolved';
CREATE INDEX alerts_state ON alerts(state, id);
CREATE INDEX alerts_started ON alerts(started_ms);
CREATE TABLE alert_history(
  id BIGSERIAL PRIMARY KEY, alert_id BIGINT NOT NULL REFERENCES alerts(id), t_ms BIGINT NOT NULL,
  action TEXT NOT NULL, actor TEXT, detail TEXT NOT NULL DEFAULT '{}');
CREATE INDEX alert_history_alert ON alert_history(alert_id, id);
CREATE TABLE alert_liveness(
  kind TEXT NOT NULL, key TEXT NOT NULL, t_ms BIGINT NOT NULL, extra TEXT, PRIMARY KEY (kind, key));
CREATE TABLE alert_silences(
  id BIGSERIAL PRIMARY KEY, matchers TEXT NOT NULL, starts_ms BIGINT NOT NULL, ends_ms BIGINT NOT NULL,
  created_by TEXT NOT NULL, comment TEXT NOT NULL DEFAULT '', created_ms BIGINT NOT NULL, expired_ms BIGINT,
  expired_by TEXT);
CREATE TABLE alert_maintenance(
  id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, matchers TEXT NOT NULL, schedule TEXT NOT NULL,
  collect INTEGER NOT NULL DEFAULT 1, comment TEXT NOT NULL DEFAULT '', created_by TEXT NOT NULL,
  created_ms BIGINT NOT NULL);

CREATE TABLE audit_log(
  id BIGSERIAL PRIMARY KEY, t_ms BIGINT NOT NULL, actor TEXT NOT NULL, actor_token_id BIGINT, actor_role TEXT,
  via TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, before TEXT, after TEXT, detail TEXT,
  hash TEXT NOT NULL);
CREATE INDEX audit_log_t ON audit_log(t_ms, id);

CREATE TABLE callback_replay(
  source TEXT NOT NULL, key TEXT NOT NULL, t_ms BIGINT NOT NULL, PRIMARY KEY (source, key));
CREATE INDEX callback_replay_t ON callback_replay(t_ms);

CREATE TABLE notify_outbox(
  id BIGSERIAL PRIMARY KEY, channel TEXT NOT NULL, route TEXT NOT NULL, group_key TEXT NOT NULL,
  status TEXT NOT NULL, title TEXT NOT NULL, payload BYTEA NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
  attempts INTEGER NOT NULL DEFAULT 0, created_at DOUBLE PRECISION NOT NULL,
  next_attempt_at DOUBLE PRECISION NOT NULL, last_attempt_at DOUBLE PRECISION, sent_at DOUBLE PRECISION,
  last_error TEXT);
CREATE INDEX notify_outbox_due ON notify_outbox(channel, state, next_attempt_at);
CREATE INDEX notify_outbox_state ON notify_outbox(state, id);
CREATE TABLE notify_groups(
  group_key TEXT PRIMARY KEY, route TEXT NOT NULL, group_labels BYTEA NOT NULL,
  created_at DOUBLE PRECISION NOT NULL, last_sent_at DOUBLE PRECISION, sends INTEGER NOT NULL DEFAULT 0,
  next_eval_at DOUBLE PRECISION);
CREATE INDEX notify_groups_next ON notify_groups(next_eval_at);
CREATE TABLE notify_group_alerts(
  group_key TEXT NOT NULL, alert_id TEXT NOT NULL, state TEXT NOT NULL, severity TEXT NOT NULL,
  acked INTEGER NOT NULL DEFAULT 0, silenced INTEGER NOT NULL DEFAULT 0, data BYTEA NOT NULL,
  notified_state TEXT, notified_severity TEXT, updated_at DOUBLE PRECISION NOT NULL,
  PRIMARY KEY (group_key, alert_id));
CREATE INDEX notify_group_alerts_alert ON notify_group_alerts(alert_id);

CREATE TABLE campus_sites(id TEXT PRIMARY KEY, data TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL);
CREATE TABLE campus_buildings(id TEXT PRIMARY KEY, site TEXT, data TEXT NOT NULL,
  updated_at DOUBLE PRECISION NOT NULL);
CREATE TABLE campus_floors(id TEXT PRIMARY KEY, building TEXT, data TEXT NOT NULL,
  updated_at DOUBLE PRECISION NOT NULL);
CREATE TABLE campus_rooms(id TEXT PRIMARY KEY, building TEXT, type TEXT, data TEXT NOT NULL,
  updated_at DOUBLE PRECISION NOT NULL);
CREATE TABLE campus_devices(id TEXT PRIMARY KEY, data TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL);
CREATE TABLE campus_ports(device TEXT NOT NULL, port TEXT NOT NULL, data TEXT NOT NULL,
  updated_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (device, port));
CREATE TABLE registry_assets(asset_tag TEXT PRIMARY KEY, mac TEXT, serial TEXT, assigned_ip TEXT, device_id TEXT,
  data TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL);
CREATE INDEX registry_assets_mac ON registry_assets(mac);
CREATE TABLE compliance_history(
  id BIGSERIAL PRIMARY KEY, time DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL, building TEXT, room TEXT,
  device TEXT, status TEXT NOT NULL, score DOUBLE PRECISION, passed INTEGER, failed INTEGER, unknown INTEGER,
  data TEXT);
CREATE INDEX compliance_history_q ON compliance_history(kind, building, room, time);
CREATE INDEX compliance_history_dev ON compliance_history(device, time);
CREATE TABLE inventory_seen(mac TEXT PRIMARY KEY, ip TEXT, building TEXT, source TEXT,
  last_seen DOUBLE PRECISION NOT NULL);
