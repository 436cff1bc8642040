-- rule state follows partitions (collector/README.md "District scale"): every last-seen row carries the
-- site of its device or agent, so a collector that takes a partition over loads only that partition's
-- sites. Old rows: agents from their extra ([dead_since, site, building]), devices from `devices`.
ALTER TABLE alert_liveness ADD COLUMN IF NOT EXISTS site TEXT;
UPDATE alert_liveness SET site = extra::jsonb ->> 1
  WHERE kind = 'agent' AND site IS NULL AND extra LIKE '[%';
UPDATE alert_liveness l SET site = d.site FROM devices d
  WHERE l.kind IN ('device', 'standby') AND l.site IS NULL AND d.id = l.key;
