#!/usr/bin/env bash
# Install the campus-sense agent on Raspberry Pi OS (bookworm, arm64) or Debian 12, as root:
#
#   sudo ./packaging/install-agent.sh --bundle bldg-a.tar.gz            # from a source checkout
#   sudo ./packaging/install-agent.sh --source 'campus-sense[agent]' --bundle bldg-a.tar.gz   # from an index
#
# Steps (each skipped when already done, so running it again is safe):
#   1. apt: python3, python3-venv (Raspberry Pi OS bookworm ships Python 3.11)
#   2. system user campus-sense (no login, home /var/lib/campus-sense)
#   3. venv /opt/campus-sense/venv with campus-sense[agent<,EXTRAS>] (arm64 wheels exist for every
#      dependency of [agent]: pydantic-core, orjson, cryptography; pysnmp is pure Python)
#   4. systemd unit campus-sense-agent.service (hardened, Type=notify + watchdog), checked with
#      systemd-analyze verify
#   5. with --bundle: `campus-sense agent enrol BUNDLE` (agent.yaml, mqtt.pass 0600, CA)
#   6. systemctl daemon-reload + enable; started once agent.yaml has devices (campus-sense discover)
#
# Options: --extras camera,sensors (more drivers) --source SPEC (pip requirement, default: this
# checkout) --prefix DIR (install below DIR: no apt, no user, no systemctl; for tests and images)
# --venv DIR (use an existing venv) --no-pip --no-apt --no-user --no-systemctl
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
prefix="" bundle="" extras="" source="" venv="" pip=1 apt=1 user=1 sysctl=1
while (($#)); do
  case "$1" in
    --prefix) prefix=$(realpath -m "$2"); shift 2 ;;
    --bundle) bundle=$(realpath "$2"); shift 2 ;;
    --extras) extras=",$2"; shift 2 ;;
    --source) source="$2"; shift 2 ;;
    --venv) venv="$2"; shift 2 ;;
    --no-pip) pip=0; shift ;;
    --no-apt) apt=0; shift ;;
    --no-user) user=0; shift ;;
    --no-systemctl) sysctl=0; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "install-agent.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [[ -n $prefix ]]; then apt=0 user=0 sysctl=0; fi
venv=${venv:-$prefix/opt/campus-sense/venv}
etc=$prefix/etc/campus-sense
units=$prefix/etc/systemd/system
say() { echo "install-agent.sh: $*" >&2; }

if ((apt)); then
  missing=()
  for p in python3 python3-venv; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    say "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { say "Python >= 3.11 required (found $(python3 --version))"; exit 1; }

if ((user)) && ! id campus-sense >/dev/null 2>&1; then
  say "creating system user campus-sense"
  useradd --system --home-dir /var/lib/campus-sense --no-create-home --shell /usr/sbin/nologin campus-sense
fi

if ((pip)); then
  [[ -x $venv/bin/python ]] || { say "creating $venv"; python3 -m venv "$venv"; }
  spec=${source:-"$here[agent$extras]"}
  [[ -n $source && -n $extras && $source != *"["* ]] && spec="$source[agent$extras]"
  say "pip install $spec"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q "$spec"
fi
cs=$venv/bin/campus-sense
[[ -x $cs ]] || { say "$cs missing (pip install failed?)"; exit 1; }
if [[ -z $prefix ]]; then ln -sf "$cs" /usr/local/bin/campus-sense; fi   # `campus-sense ...` for the admin

mkdir -p "$units" "$etc"
chmod 0755 "$etc"   # read by the service user; mqtt.pass itself is 0600 campus-sense (agent enrol)
unit=$units/campus-sense-agent.service
sed "s#/opt/campus-sense/venv/bin/campus-sense#$cs#g" "$here/packaging/systemd/campus-sense-agent.service" > "$unit.tmp"
if [[ -n $prefix ]]; then   # a unit below a prefix must name the prefixed config folder
  sed -i "s#/etc/campus-sense/#$etc/#g" "$unit.tmp"
fi
mv "$unit.tmp" "$unit"
if command -v systemd-analyze >/dev/null; then
  out=$(systemd-analyze verify --man=no "$unit" 2>&1 || true)
  [[ -z $out ]] || { say "systemd-analyze verify $unit:"; echo "$out" >&2; exit 1; }
fi
say "unit $unit"

if [[ -n $bundle ]]; then
  args=(agent enrol "$bundle")
  [[ -n $prefix ]] && args+=(--prefix "$prefix")
  "$cs" "${args[@]}"
fi
if ((sysctl)); then
  systemctl daemon-reload
  systemctl enable campus-sense-agent.service >/dev/null
  say "enabled campus-sense-agent; after 'campus-sense discover <CIDR> ... --output $etc/agent.yaml':"
  say "  systemctl start campus-sense-agent && journalctl -u campus-sense-agent -f"
else
  say "done (no systemctl: prefix install)"
fi
