-- web UI users and their browser sessions (collector/store/users.py has the SQLite form): shared by
-- every collector, so a login made through one collector is valid through all of them
CREATE TABLE IF NOT EXISTS ui_users(
  id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, password_hash TEXT, role TEXT NOT NULL,
  scope TEXT NOT NULL DEFAULT '[]', source TEXT NOT NULL DEFAULT 'local', display_name TEXT,
  disabled INTEGER NOT NULL DEFAULT 0, created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL,
  last_login_ms BIGINT);
CREATE TABLE IF NOT EXISTS ui_sessions(
  hash TEXT PRIMARY KEY, user_id BIGINT NOT NULL REFERENCES ui_users(id) ON DELETE CASCADE,
  csrf TEXT NOT NULL, created_ms BIGINT NOT NULL, last_seen_ms BIGINT NOT NULL, expires_ms BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS ui_sessions_user ON ui_sessions(user_id);
CREATE INDEX IF NOT EXISTS ui_sessions_expires ON ui_sessions(expires_ms);
