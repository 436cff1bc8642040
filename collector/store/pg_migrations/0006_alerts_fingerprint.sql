-- stored events are replayed after a restart or a take-over (collector/README.md "Alerts"): for each
-- replayed rule x subject the engine reads the newest alert of its fingerprint, resolved ones too
-- (the partial unique index covers only active alerts)
CREATE INDEX IF NOT EXISTS alerts_fingerprint ON alerts(fingerprint, id);
