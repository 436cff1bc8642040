#!/usr/bin/env bash
# First-run setup of docker/ (idempotent: keeps whatever exists). Usage: ./bootstrap.sh BROKER_NAME
#   BROKER_NAME: the name (or IP) agents use to reach the broker; goes into the server certificate
#   and collector.yaml enrol.broker_host. Options: --no-docker (never call docker).
# Creates: .env (random Grafana admin credentials), secrets/collector-mqtt.pass, secrets/postgres.pass
# and secrets/collector.dsn (profile "district": the collector's libpq URL with that password),
# mosquitto/passwd with the broker user "collector", a private CA and the broker's server
# certificate in mosquitto/certs/ (SAN: mosquitto, BROKER_NAME), bundles/, agent/.
# VictoriaMetrics (profile "metrics") has no credentials: it is on the compose network only.
set -euo pipefail
cd "$(dirname "$0")"
name="" docker=1
for a in "$@"; do
  case "$a" in --no-docker) docker=0 ;; -*) echo "bootstrap.sh: unknown option $a" >&2; exit 2 ;; *) name=$a ;; esac
done
[[ -n $name ]] || { echo "usage: ./bootstrap.sh BROKER_NAME [--no-docker]" >&2; exit 2; }
MOSQ_UID=1883   # the eclipse-mosquitto image's user: it must read passwd, acl and the server key
umask 077
rnd() { openssl rand -base64 "${1:-24}" | tr -d '/+=\n' | cut -c1-"${2:-32}"; }
mkdir -p secrets bundles agent mosquitto/certs
chmod 700 secrets bundles

[[ -s secrets/collector-mqtt.pass ]] || rnd > secrets/collector-mqtt.pass
if [[ ! -f .env ]]; then
  sed -e "s/^GRAFANA_ADMIN_USER=.*/GRAFANA_ADMIN_USER=admin-$(rnd 6 6)/" \
      -e "s/^GRAFANA_ADMIN_PASSWORD=.*/GRAFANA_ADMIN_PASSWORD=$(rnd)/" env.example > .env
fi
# profile "district": postgres (POSTGRES_PASSWORD_FILE, read at the volume's first start) and the
# collector's store.dsn_file. rnd is [A-Za-z0-9] only: nothing to percent-encode in the URL.
[[ -s secrets/postgres.pass ]] || rnd > secrets/postgres.pass
[[ -s secrets/collector.dsn ]] ||
  printf 'postgresql://campus:%s@postgres:5432/campus\n' "$(cat secrets/postgres.pass)" > secrets/collector.dsn

if [[ ! -s mosquitto/passwd ]] || ! grep -q '^collector:' mosquitto/passwd; then
  touch mosquitto/passwd
  pw=$(cat secrets/collector-mqtt.pass)
  if command -v mosquitto_passwd >/dev/null; then
    printf '%s\n%s\n' "$pw" "$pw" | mosquitto_passwd mosquitto/passwd collector >/dev/null
  elif ((docker)); then
    printf '%s\n%s\n' "$pw" "$pw" | docker run --rm -i -v "$PWD/mosquitto:/m" eclipse-mosquitto:2 \
      mosquitto_passwd /m/passwd collector >/dev/null
  else
    echo "bootstrap.sh: mosquitto_passwd not found (apt-get install mosquitto, or drop --no-docker)" >&2; exit 1
  fi
fi

c=mosquitto/certs
if [[ ! -f $c/ca.crt ]]; then
  openssl req -x509 -newkey rsa:3072 -nodes -days 3650 -subj "/CN=campus-sense CA" \
    -keyout $c/ca.key -out $c/ca.crt 2>/dev/null
fi
if [[ ! -f $c/server.crt ]]; then
  if [[ $name =~ ^[0-9.]+$|: ]]; then san="DNS:mosquitto,IP:$name"; else san="DNS:mosquitto,DNS:$name"; fi
  openssl req -newkey rsa:3072 -nodes -subj "/CN=$name" -keyout $c/server.key -out $c/server.csr 2>/dev/null
  openssl x509 -req -in $c/server.csr -CA $c/ca.crt -CAkey $c/ca.key -CAcreateserial -days 825 \
    -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san") -out $c/server.crt 2>/dev/null
  rm -f $c/server.csr
fi
chmod 644 $c/ca.crt $c/server.crt mosquitto/mosquitto.conf
chmod 600 $c/ca.key $c/server.key mosquitto/passwd mosquitto/acl
if [[ $(id -u) == 0 ]]; then chown "$MOSQ_UID:$MOSQ_UID" mosquitto/passwd mosquitto/acl $c/server.key; fi
sed -i "s/^\(  broker_host: \)[^ #]*/\1$name/" collector.yaml
echo "bootstrap.sh: done. Next: docker compose up -d; ./enrol.sh AGENT --site SITE --building BUILDING" >&2
