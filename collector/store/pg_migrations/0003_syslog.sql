-- the syslog archive (collector/store/syslog.py has the SQLite form): lines of the agents' syslog
-- drivers, kept store.retention.syslog_days, searchable by host/device, time and words
CREATE TABLE IF NOT EXISTS syslog(
  id BIGSERIAL PRIMARY KEY, ts_ms BIGINT NOT NULL, agent TEXT NOT NULL, device TEXT NOT NULL, host TEXT,
  facility INTEGER, severity INTEGER, program TEXT, mnemonic TEXT, msg TEXT NOT NULL, data TEXT);
CREATE INDEX IF NOT EXISTS syslog_ts ON syslog(ts_ms);
CREATE INDEX IF NOT EXISTS syslog_device_ts ON syslog(device, ts_ms);
CREATE INDEX IF NOT EXISTS syslog_host_ts ON syslog(host, ts_ms);
CREATE INDEX IF NOT EXISTS syslog_words ON syslog USING gin (to_tsvector('simple', msg));
