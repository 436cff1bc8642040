-- campus-sense collector state in PostgreSQL (collector/store/postgres.py), version 1.
-- Time series are not here: they go to the time-series sink (VictoriaMetrics); the latest value
-- of each series is kept in `latest` (what /devices/{id}/interfaces shows).

-- RFC 7396 JSON merge patch (SQLite's json_patch): objects merge recursively, null deletes a key
CREATE OR REPLACE FUNCTION cs_merge_patch(target jsonb, patch jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  k text;
  v jsonb;
  res jsonb;
BEGIN
  IF patch IS NULL OR jsonb_typeof(patch) <> 'object' THEN
    RETURN patch;
  END IF;
  res := CASE WHEN target IS NOT NULL AND jsonb_typeof(target) = 'object' THEN target ELSE '{}'::jsonb END;
  FOR k, v IN SELECT key, value FROM jsonb_each(patch) LOOP
    IF jsonb_typeof(v) = 'null' THEN
      res := res - k;
    ELSE
      res := res || jsonb_build_object(k, cs_merge_patch(res -> k, v));
    END IF;
  END LOOP;
  RETURN res;
END $$;

CREATE TABLE agents(
  id TEXT PRIMARY KEY, site TEXT, building TEXT, state TEXT, version TEXT, config_hash TEXT,
  drivers TEXT, queue_depth BIGINT, oldest_age_s DOUBLE PRECISION, dropped_total BIGINT, published_total BIGINT,
  first_seen_ms BIGINT, last_seen_ms BIGINT, birth_ms BIGINT, death_ms BIGINT, heartbeat_ms BIGINT,
  info JSONB NOT NULL DEFAULT '{}', clock_offset_ms BIGINT, clock_ms BIGINT, revoked_ms BIGINT);
CREATE INDEX agents_site ON agents(site);

CREATE TABLE devices(
  id TEXT PRIMARY KEY, agent TEXT, site TEXT, building TEXT, facts JSONB NOT NULL DEFAULT '{}',
  facts_ms BIGINT, first_seen_ms BIGINT, last_seen_ms BIGINT, reachable BOOLEAN, last_poll_ms BIGINT,
  poll_duration_s DOUBLE PRECISION, driver TEXT, reason TEXT, error TEXT);
CREATE INDEX devices_agent ON devices(agent);

CREATE TABLE events(
  id BIGSERIAL PRIMARY KEY, agent TEXT NOT NULL, device TEXT NOT NULL, ts_ms BIGINT NOT NULL, type TEXT NOT NULL,
  severity TEXT NOT NULL, tags TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX events_ts ON events(ts_ms);
CREATE INDEX events_device_ts ON events(device, ts_ms);

-- latest value per series (measurement, device, tags as sorted JSON)
CREATE TABLE latest(
  measurement TEXT NOT NULL, device TEXT NOT NULL, tags TEXT NOT NULL, ts_ms BIGINT NOT NULL, fields TEXT NOT NULL,
  PRIMARY KEY(device, measurement, tags));

-- dedup: per (agent, epoch) the highest seq seen and the ranges below it not received yet
CREATE TABLE seq_state(
  agent TEXT NOT NULL, epoch TEXT NOT NULL, hwm BIGINT NOT NULL, first_ms BIGINT, last_ms BIGINT,
  PRIMARY KEY(agent, epoch));
CREATE TABLE gaps(
  agent TEXT NOT NULL, epoch TEXT NOT NULL, first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL,
  detected_ms BIGINT NOT NULL, PRIMARY KEY(agent, epoch, first_seq));

CREATE TABLE rejected(
  reason TEXT PRIMARY KEY, count BIGINT NOT NULL, last_topic TEXT, last_error TEXT, last_ms BIGINT);
CREATE TABLE dead_letters(
  id BIGSERIAL PRIMARY KEY, received_ms BIGINT NOT NULL, topic TEXT NOT NULL, agent TEXT, epoch TEXT, seq BIGINT,
  reason TEXT NOT NULL, error TEXT NOT NULL, payload BYTEA NOT NULL);

-- counters per collector node (no row every collector's commit waits for); read as sums
CREATE TABLE counters(name TEXT NOT NULL, node TEXT NOT NULL, value BIGINT NOT NULL, PRIMARY KEY(name, node));

CREATE TABLE tokens(
  id BIGSERIAL PRIMARY KEY, name TEXT, role TEXT NOT NULL, hash TEXT NOT NULL UNIQUE,
  created_ms BIGINT NOT NULL, revoked_ms BIGINT, last_used_ms BIGINT);

-- topology intervals (collector/store/topology.py)
CREATE TABLE topology_intervals(
  id BIGSERIAL PRIMARY KEY, device TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL,
  mac TEXT, ip TEXT, if_index TEXT, port TEXT, vlan TEXT, remote TEXT, tags TEXT NOT NULL,
  first_seen_ms BIGINT NOT NULL, last_seen_ms BIGINT NOT NULL, seen BIGINT NOT NULL, superseded_ms BIGINT);
CREATE INDEX topology_intervals_dev ON topology_intervals(device, kind, last_seen_ms);
CREATE INDEX topology_intervals_kind ON topology_intervals(kind, last_seen_ms);
CREATE INDEX topology_intervals_mac ON topology_intervals(mac, last_seen_ms) WHERE mac IS NOT NULL;
CREATE INDEX topology_intervals_ip ON topology_intervals(ip, last_seen_ms) WHERE ip IS NOT NULL;
CREATE TABLE topology_sources(
  device TEXT NOT NULL, kind TEXT NOT NULL, last_ms BIGINT NOT NULL, period_ms BIGINT, PRIMARY KEY(device, kind));

-- leases (collector/partitions.py): partitions and singletons; epoch = the fencing token
CREATE TABLE leases(
  name TEXT PRIMARY KEY, holder TEXT NOT NULL, epoch BIGINT NOT NULL, expires_at TIMESTAMPTZ NOT NULL,
  acquired_at TIMESTAMPTZ NOT NULL DEFAULT now());
