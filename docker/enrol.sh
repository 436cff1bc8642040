#!/usr/bin/env bash
# Enrol (or --revoke, or re-enrol) a building agent with the running compose stack:
#   ./enrol.sh bldg-a --site north --building A     -> bundles/bldg-a.tar.gz (copy it to the Pi)
#   ./enrol.sh bldg-a --revoke
# Runs `campus-sense enrol` in the collector container (as root: it edits ./mosquitto/passwd and
# ./mosquitto/acl, keeping their owner), then makes Mosquitto re-read them (SIGHUP).
set -euo pipefail
cd "$(dirname "$0")"
docker compose exec -T -u root collector campus-sense enrol "$@" --config /etc/campus-sense/collector.yaml
docker compose kill -s HUP mosquitto >/dev/null
echo "enrol.sh: broker reloaded" >&2
