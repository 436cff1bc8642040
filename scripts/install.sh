#!/usr/bin/env bash
# Idempotent installer for a fresh Debian 12 machine (run as root).
#   scripts/install.sh          -> Python venv with campus-sense (enough for the demo)
#   scripts/install.sh --test   -> also the real peers the tests start: Mosquitto, net-snmp,
#                                  snmpsim, victoria-metrics, the Go snmp_exporter, Chromium
# Skips whatever is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

want=(python3 python3-venv python3-dev gcc)
if [[ "${1:-}" == "--test" ]]; then
  want+=(mosquitto mosquitto-clients snmpd snmp snmpsim victoria-metrics prometheus-snmp-exporter
         chromium chromium-driver iproute2 iw tcpdump ffmpeg faketime
         snmptrapd rsyslog rsyslog-gnutls slapd ldap-utils fonts-noto-cjk postgresql
         systemd)   # systemd-analyze verify checks packaging/systemd units
fi
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install.sh: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Package installs start system daemons; our tests start their own on free loopback ports.
  for svc in mosquitto snmpd victoria-metrics prometheus-snmp-exporter snmptrapd rsyslog slapd postgresql; do
    systemctl disable --now "$svc" >/dev/null 2>&1 || service "$svc" stop >/dev/null 2>&1 || true
  done
fi

PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "install.sh: Python >= 3.11 required (found $("$PY" --version))" >&2; exit 1; }
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.campus-sense-installed
want_stamp=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -f $stamp || "$(cat $stamp)" != "$want_stamp" ]]; then
  echo "install.sh: installing Python dependencies into .venv"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[all,test]'
  echo "$want_stamp" > "$stamp"
fi
